package controller

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// readCounter is the store as the controller sees it, counting how much
// it reads: every object returned, and every user reference returned with
// them (a bundle's or credentials' users, or Users itself).
type readCounter struct {
	*state.Bolt
	read atomic.Int64
}

func (r *readCounter) Get(ctx context.Context, k manifests.Kind, name string) (manifests.Object, error) {
	o, err := r.Bolt.Get(ctx, k, name)
	if err == nil {
		r.read.Add(1 + users(o))
	}
	return o, err
}

func (r *readCounter) List(ctx context.Context, k manifests.Kind) ([]manifests.Object, string, error) {
	objs, rv, err := r.Bolt.List(ctx, k)
	for _, o := range objs {
		r.read.Add(1 + users(o))
	}
	return objs, rv, err
}

func (r *readCounter) Users(ctx context.Context, k manifests.Kind, name string) ([]manifests.ObjectRef, error) {
	refs, err := r.Bolt.Users(ctx, k, name)
	r.read.Add(int64(len(refs)))
	return refs, err
}

func users(o manifests.Object) int64 {
	switch o := o.(type) {
	case *manifests.SecretBundle:
		return int64(len(o.Status.UsedBy))
	case *manifests.Credentials:
		return int64(len(o.Status.UsedBy) + len(o.Status.LeftoverVMs))
	}
	return 0
}

// TestAResyncReadsTheStoreInProportionToN: what one idle resync reads per
// deployment is the same at 50 and at 500 deployments that share one
// credentials. A read on the hot path that scans every deployment (as
// reading credentials once filled in their users) makes it grow with N.
func TestAResyncReadsTheStoreInProportionToN(t *testing.T) {
	perDeployment := map[int]float64{}
	for _, n := range []int{50, 500} {
		var counter *readCounter
		c, _, _ := convergedOn(t, n, RealClock{}, func(b *state.Bolt) state.Store {
			counter = &readCounter{Bolt: b}
			return counter
		})
		counter.read.Store(0)
		c.Resync(context.Background())
		if got := drainQueue(c); got != n {
			t.Fatalf("a resync reconciled %d deployments, want %d", got, n)
		}
		perDeployment[n] = float64(counter.read.Load()) / float64(n)
	}
	if perDeployment[500] > 1.5*perDeployment[50] {
		t.Errorf("one resync read %.1f objects per deployment at 50 deployments and %.1f at 500: a hot-path read scans", perDeployment[50], perDeployment[500])
	}
	if perDeployment[500] > 10 {
		t.Errorf("one resync read %.1f objects per deployment", perDeployment[500])
	}
	t.Logf("objects read per deployment per resync: %.1f at 50, %.1f at 500", perDeployment[50], perDeployment[500])
}
