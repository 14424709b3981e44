package testenv

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"

	"github.com/anycloud/anycloud/internal/cloudemu"
)

// RequireVMImage returns the tag of the cloud emulator's VM image, which
// scripts/vm-image.sh builds once per machine (`make test` and .ci/run
// build it first). Without it, or without root (the VMs publish sshd on
// port 22 of loopback addresses), t is Missing.
func RequireVMImage(t testing.TB) string {
	t.Helper()
	docker := RequireDocker(t)
	tag, err := cloudemu.ImageTag(context.Background(), RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := docker.ImageInspect(ctx, tag); err != nil {
		Missing(t, "the cloud emulator's VM image "+tag+" is not built: run scripts/vm-image.sh (needs root and debootstrap)")
	}
	return tag
}

// CloudOptions tune StartCloud.
type CloudOptions struct {
	Regions   []string
	BootDelay time.Duration
	// Quiet drops the emulator's log instead of writing it to the test's.
	Quiet bool
}

// StartCloud starts a cloud emulator of t's own (moto, the VM emulator
// and the fault proxy; package cloudemu) and closes it, removing every
// VM, when t ends. Clients use its Endpoint; outside observers (the AWS
// CLI) use its Moto.
func StartCloud(t testing.TB, o CloudOptions) *cloudemu.Emulator {
	t.Helper()
	image := RequireVMImage(t)
	docker := RequireDocker(t)
	if _, err := exec.LookPath("moto_server"); err != nil {
		Missing(t, cloudemu.ErrNoMoto.Error())
	}
	log := logr.Discard()
	if !o.Quiet {
		log = testr.NewWithInterface(t, testr.Options{})
	}
	e, err := cloudemu.Start(context.Background(), cloudemu.Options{
		Image: image, Docker: docker, Dir: ShortTempDir(t), Regions: o.Regions, BootDelay: o.BootDelay, Log: log,
	})
	if err != nil {
		t.Fatalf("start the cloud emulator: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}
