package local_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os/exec"
	"testing"

	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/provider/local"
)

// randomUID is a deployment uid of this test run: container names hold
// the uid, and two test runs on one machine (two checkouts, or make test
// beside go test -race) must not take each other's containers.
func randomUID(t *testing.T) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

func newProvider(t *testing.T, cluster string) *local.Provider {
	t.Helper()
	testenv.RequireDocker(t)
	// The cleanup below ends every container of the cluster: the name is
	// this run's alone.
	p, err := local.New(cluster + "-" + randomUID(t)[:6])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vms, _ := p.List(context.Background())
		for _, vm := range vms {
			p.Terminate(context.Background(), vm.ID)
		}
		p.Close()
	})
	return p
}

func TestLaunchIsIdempotentPerTokenAndListSeesOnlyItsCluster(t *testing.T) {
	image := testenv.RequireDemoImage(t)
	ctx := context.Background()
	a := newProvider(t, "cluster-a-"+t.Name()[:8])
	b := newProvider(t, "cluster-b-"+t.Name()[:8])
	uid := randomUID(t)
	req := provider.LaunchRequest{Deployment: "web", UID: uid, Attempt: 1, Token: provider.Token(uid, 1),
		Image: image, Env: map[string]string{"K": "v"}}
	first, err := a.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := a.Launch(ctx, req)
	if err != nil || again.ID != first.ID {
		t.Fatalf("second launch with the same token: %v %v, want %s", again.ID, err, first.ID)
	}
	if first.State != provider.StateRunning || first.Attempt != 1 || first.UID != req.UID || first.Market != "local" {
		t.Errorf("vm = %+v", first)
	}
	vms, err := a.List(ctx)
	if err != nil || len(vms) != 1 {
		t.Fatalf("cluster a lists %d VMs (%v), want 1", len(vms), err)
	}
	if vms, _ := b.List(ctx); len(vms) != 0 {
		t.Errorf("cluster b sees %d VMs of cluster a", len(vms))
	}
	if err := a.Terminate(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	if err := a.Terminate(ctx, first.ID); err != nil {
		t.Errorf("terminating a gone VM: %v", err)
	}
}

func TestMissingImageIsAnInvalidLaunch(t *testing.T) {
	p := newProvider(t, "cluster-img")
	uid := randomUID(t)
	_, err := p.Launch(context.Background(), provider.LaunchRequest{Deployment: "x", UID: uid, Attempt: 1, Token: provider.Token(uid, 1), Image: "no-such-image:nope"})
	if !errors.Is(err, provider.ErrInvalid) {
		t.Errorf("err = %v, want ErrInvalid", err)
	}
}

// A container killed from outside (`docker kill`, the local stand-in for
// a preemption) is taken away; one whose workload exits is a crash. Only
// crashes count towards recovery back-off.
func TestAKilledContainerIsTakenAwayAndAnExitedOneCrashed(t *testing.T) {
	image := testenv.RequireDemoImage(t)
	ctx := context.Background()
	p := newProvider(t, "cluster-crash")
	launch := func(name string, env map[string]string) provider.VM {
		t.Helper()
		uid := randomUID(t)
		vm, err := p.Launch(ctx, provider.LaunchRequest{Deployment: name, UID: uid, Attempt: 1, Token: provider.Token(uid, 1), Image: image, Env: env})
		if err != nil {
			t.Fatal(err)
		}
		return vm
	}
	killed := launch("killed", nil)
	docker(t, "kill", killed.ID)
	// The demo cannot listen on this address, so it exits with code 1.
	crashed := launch("crashed", map[string]string{"DEMO_ADDR": "no-such-host.invalid:1"})
	docker(t, "wait", crashed.ID)

	listed := func(id string) provider.VM {
		t.Helper()
		vms, err := p.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, vm := range vms {
			if vm.ID == id {
				return vm
			}
		}
		t.Fatalf("list lacks %s", id)
		return provider.VM{}
	}
	if vm := listed(killed.ID); vm.State != provider.StateStopped || vm.Crashed || vm.Reason != "container exited with code 137" {
		t.Errorf("the killed container: %+v, want stopped, not crashed, exit code 137", vm)
	}
	if vm := listed(crashed.ID); vm.State != provider.StateStopped || !vm.Crashed || vm.Reason != "container exited with code 1" {
		t.Errorf("the exited container: %+v, want stopped, crashed, exit code 1", vm)
	}
}

// docker runs the Docker CLI, failing the test on error.
func docker(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("docker", args...).CombinedOutput(); err != nil {
		t.Fatalf("docker %v: %v: %s", args, err, out)
	}
}
