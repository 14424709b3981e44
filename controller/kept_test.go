package controller

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/anycloud/anycloud/manifests"
)

// keeperCloud is a fakeCloud that keeps something per deployment in the
// cloud (as the aws provider keeps IAM roles), listed by Kept.
type keeperCloud struct {
	*fakeCloud
	kept   []string
	listed int
}

func (k *keeperCloud) Kept(context.Context) ([]string, error) {
	k.listed++
	k.fakeCloud.mu.Lock()
	defer k.fakeCloud.mu.Unlock()
	var out []string
	for _, uid := range k.kept {
		if !slices.Contains(k.released, uid) {
			out = append(out, uid)
		}
	}
	return out, nil
}

func TestRolesOfDeploymentsThatAreGoneAreReleasedAfterTheGracePeriod(t *testing.T) {
	r := newRig(t)
	cloud := &keeperCloud{fakeCloud: r.cloud}
	r.c.providers = fixed{cloud}
	r.apply(deployment("train"))
	r.run(0)
	owned := r.get("train").Metadata.UID
	// A role whose deployment was deleted while the control plane was
	// down, and the role of a deployment that exists.
	cloud.kept = []string{"uid-gone", owned}
	r.c.Resync(r.ctx)
	if len(cloud.released) != 0 {
		t.Fatalf("released %v before the grace period", cloud.released)
	}
	r.clock.Step(61 * time.Second)
	r.c.Resync(r.ctx)
	if !slices.Equal(cloud.released, []string{"uid-gone"}) {
		t.Errorf("released %v, want just uid-gone", cloud.released)
	}
	// With nothing pending, the next resyncs do not list again until
	// KeptSweepEvery has passed.
	n := cloud.listed
	r.c.Resync(r.ctx)
	if cloud.listed != n {
		t.Errorf("listed again at once with nothing pending")
	}
	r.clock.Step(KeptSweepEvery)
	r.c.Resync(r.ctx)
	if cloud.listed != n+1 {
		t.Errorf("not listed again after %s", KeptSweepEvery)
	}
	if slices.Contains(cloud.released, owned) {
		t.Error("the role of a deployment that exists was released")
	}
}

func TestARoleIsKeptWhileAVMOfItsUIDIsAlive(t *testing.T) {
	r := newRig(t)
	cloud := &keeperCloud{fakeCloud: r.cloud, kept: []string{"uid-gone"}}
	r.c.providers = fixed{cloud}
	r.cloud.Launch(r.ctx, launchRequest(deployment("gone", func(d *manifests.Deployment) { d.Metadata.UID = "uid-gone" }), 1, nil))
	r.c.Resync(r.ctx)
	r.clock.Step(61 * time.Second)
	r.c.Resync(r.ctx) // the orphan VM is terminated now
	if slices.Contains(cloud.released, "uid-gone") {
		t.Error("released while its VM was alive")
	}
	r.clock.Step(61 * time.Second)
	r.c.Resync(r.ctx)
	r.clock.Step(61 * time.Second)
	r.c.Resync(r.ctx)
	if !slices.Contains(cloud.released, "uid-gone") {
		t.Errorf("not released after its VM was gone: %v", cloud.released)
	}
}
