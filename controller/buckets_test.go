package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/reconcile"
	"github.com/anycloud/anycloud/state"
)

// syncerCloud is a fakeCloud whose VMs sync buckets: it records each
// flush.
type syncerCloud struct {
	*fakeCloud
	flushed chan string
}

func (s *syncerCloud) FlushBuckets(_ context.Context, vm provider.VM, buckets []provider.Bucket) error {
	s.flushed <- vm.ID
	return nil
}

func (s *syncerCloud) BucketStatus(context.Context, provider.VM, []provider.Bucket) ([]provider.BucketSync, error) {
	return nil, nil
}

func withBuckets(d *manifests.Deployment) {
	d.Spec.Buckets = []manifests.Bucket{{URI: "s3://out/run1", Path: "/out", Mode: manifests.BucketReadWrite}}
}

func flushOf(t *testing.T, s *syncerCloud) string {
	t.Helper()
	select {
	case id := <-s.flushed:
		return id
	case <-time.After(10 * time.Second):
		t.Fatal("no flush")
	}
	return ""
}

func TestReadWriteBucketsAreCopiedBackAtAWarningAndBeforeADeletion(t *testing.T) {
	r := newRig(t)
	cloud := &syncerCloud{fakeCloud: r.cloud, flushed: make(chan string, 4)}
	r.c.providers = fixed{cloud}
	r.apply(deployment("train", withBuckets))
	r.run(0)
	d := r.get("train")
	first := d.Status.VM.ID

	// EC2 warns: the VM copies its buckets back while it drains.
	r.c.interruptions.mu.Lock()
	r.c.interruptions.warnings[d.Metadata.UID] = reconcile.Warning{VMID: first, Kind: reconcile.WarningInterruption}
	r.c.interruptions.mu.Unlock()
	r.c.queue.Add("train")
	r.run(0)
	if id := flushOf(t, cloud); id != first {
		t.Errorf("flushed %s at the warning, want the draining %s", id, first)
	}
	d = r.get("train")
	if d.Status.VM == nil || d.Status.VM.ID == first {
		t.Fatalf("no replacement: %+v", d.Status.VM)
	}
	second := d.Status.VM.ID

	// Deleted: the current VM copies back before it is terminated.
	if _, err := r.store.Delete(r.ctx, manifests.KindDeployment, "train", state.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r.c.queue.Add("train")
	r.run(0)
	if id := flushOf(t, cloud); id != second {
		t.Errorf("flushed %s before the deletion, want %s", id, second)
	}
	if len(cloud.live(d.Metadata.UID)) != 0 {
		t.Error("the VM outlived the deletion")
	}
}

func TestAnEventWarnsAnHourBeforeBucketCredentialsExpire(t *testing.T) {
	r := newRig(t)
	r.apply(deployment("train", withBuckets))
	r.run(0)
	d := r.get("train")
	exp := r.clock.Now().Add(2 * time.Hour)
	d.Status.Buckets = []manifests.BucketStatus{{URI: "s3://theirs/x", Path: "/theirs", Result: manifests.SyncOK, CredentialsExpireAt: &exp}}
	if _, err := r.store.UpdateStatus(r.ctx, d); err != nil {
		t.Fatal(err)
	}
	r.c.queue.Add("train")
	r.run(0)
	if strings.Contains(r.events("train"), ReasonCredentialsExpiring) {
		t.Fatal("warned two hours before")
	}
	r.clock.Step(61 * time.Minute)
	for range 3 {
		r.c.queue.Add("train")
		r.run(0)
	}
	if n := strings.Count(r.events("train"), ReasonCredentialsExpiring); n != 1 {
		t.Errorf("%d expiry warnings, want 1:\n%s", n, r.events("train"))
	}
}
