package controller

import (
	"context"
	"slices"
	"strings"
	"sync"
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

// copyingCloud is a fakeCloud whose VMs are bootstrapped and copy their
// buckets back on their own: results is what the VM's sync last
// recorded, as BucketStatus reads it.
type copyingCloud struct {
	*fakeCloud
	mu      sync.Mutex
	results []provider.BucketSync
	reads   int
}

func (c *copyingCloud) Bootstrap(context.Context, provider.VM, provider.LaunchRequest) error {
	return nil
}

func (c *copyingCloud) FlushBuckets(context.Context, provider.VM, []provider.Bucket) error {
	return nil
}

func (c *copyingCloud) BucketStatus(context.Context, provider.VM, []provider.Bucket) ([]provider.BucketSync, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	return slices.Clone(c.results), nil
}

func (c *copyingCloud) set(r ...provider.BucketSync) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.results = r
}

func (c *copyingCloud) readCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads
}

// TestStatusFollowsTheCopiesBackAfterTheFirst: the VM copies its
// read-write bucket back every interval; the controller reads the result
// again at that pace (not at every reconcile: each read is an SSH
// session), status.buckets shows the last one, and a copy back that
// starts failing, or works again, is an event.
func TestStatusFollowsTheCopiesBackAfterTheFirst(t *testing.T) {
	r := newRig(t)
	cloud := &copyingCloud{fakeCloud: r.cloud}
	r.c.providers = fixed{cloud}
	cloud.set(provider.BucketSync{Path: "/out", At: r.clock.Now(), OK: true})
	r.apply(deployment("train", func(d *manifests.Deployment) {
		withBuckets(d)
		d.Spec.Buckets[0].SyncInterval = "5m"
	}))
	r.run(0)
	bucket := func() manifests.BucketStatus {
		t.Helper()
		st := r.get("train").Status.Buckets
		if len(st) != 1 {
			t.Fatalf("status.buckets = %+v", st)
		}
		return st[0]
	}
	if b := bucket(); b.Result != manifests.SyncOK || cloud.readCount() != 1 {
		t.Fatalf("after the bootstrap: %+v, %d reads", b, cloud.readCount())
	}

	// A reconcile within the interval does not dial the VM.
	r.clock.Step(time.Minute)
	r.c.queue.Add("train")
	r.run(0)
	if n := cloud.readCount(); n != 1 {
		t.Errorf("%d reads a minute after the bootstrap, want 1", n)
	}

	// The next copy back fails: status and a warning say so.
	failedAt := r.clock.Now().Add(4 * time.Minute)
	cloud.set(provider.BucketSync{Path: "/out", At: failedAt, Message: "AccessDenied: Access Denied"})
	r.clock.Step(5 * time.Minute)
	r.c.queue.Add("train")
	r.run(0)
	if b := bucket(); b.Result != manifests.SyncFailed || !b.LastSync.Equal(failedAt) || !strings.Contains(b.Message, "AccessDenied") {
		t.Errorf("after a failed copy back: %+v", b)
	}
	ev := r.events("train")
	if !strings.Contains(ev, ReasonBucketSync) || !strings.Contains(ev, "copying /out back to s3://out/run1 failed") {
		t.Errorf("no warning of the failed copy back:\n%s", ev)
	}

	// The same failure read again is not said again; a copy back that
	// works again is.
	r.clock.Step(5 * time.Minute)
	r.c.queue.Add("train")
	r.run(0)
	okAt := r.clock.Now()
	cloud.set(provider.BucketSync{Path: "/out", At: okAt, OK: true})
	r.clock.Step(5 * time.Minute)
	r.c.queue.Add("train")
	r.run(0)
	if b := bucket(); b.Result != manifests.SyncOK || b.Message != "" || !b.LastSync.Equal(okAt) {
		t.Errorf("after a copy back that works again: %+v", b)
	}
	ev = r.events("train")
	if n := strings.Count(ev, "failed on VM"); n != 1 {
		t.Errorf("%d failure events, want 1:\n%s", n, ev)
	}
	if !strings.Contains(ev, "works again") {
		t.Errorf("no event when the copy back works again:\n%s", ev)
	}
	if n := cloud.readCount(); n != 4 {
		t.Errorf("%d reads over 16 minutes at a 5m interval, want 4", n)
	}
}
