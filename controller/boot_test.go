package controller

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/reconcile"
	"github.com/anycloud/anycloud/state"
)

// bootingCloud is a provider whose VMs run at once but refuse SSH until
// up is set: a VM that takes long to boot. It counts the dials.
type bootingCloud struct {
	clock *fakeClock
	// pendingFor is how long a launched VM stays pending.
	pendingFor time.Duration

	mu        sync.Mutex
	vms       map[string]provider.VM
	seq       int
	up        bool
	dials     int
	firstDial time.Time
	describes int
	lists     int
}

// now is vm as the cloud sees it now: pending for a while after launch.
func (b *bootingCloud) now(vm provider.VM) provider.VM {
	if vm.State == provider.StateRunning && b.clock.Now().Before(vm.LaunchedAt.Add(b.pendingFor)) {
		vm.State = provider.StatePending
	}
	return vm
}

func (b *bootingCloud) Key() string { return "booting" }

func (b *bootingCloud) Launch(_ context.Context, req provider.LaunchRequest) (provider.VM, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, vm := range b.vms {
		if vm.UID == req.UID && vm.Attempt == req.Attempt {
			return vm, nil
		}
	}
	b.seq++
	vm := provider.VM{ID: fmt.Sprintf("i-%d", b.seq), Deployment: req.Deployment, UID: req.UID, Attempt: req.Attempt,
		State: provider.StateRunning, Market: "on-demand", Address: "127.0.0.1", LaunchedAt: b.clock.Now()}
	b.vms[vm.ID] = vm
	return b.now(vm), nil
}

func (b *bootingCloud) List(context.Context) ([]provider.VM, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lists++
	var out []provider.VM
	for _, vm := range b.vms {
		out = append(out, b.now(vm))
	}
	return out, nil
}

func (b *bootingCloud) Describe(_ context.Context, ids []string) ([]provider.VM, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.describes++
	var out []provider.VM
	for _, id := range ids {
		if vm, ok := b.vms[id]; ok {
			out = append(out, b.now(vm))
		}
	}
	return out, nil
}

func (b *bootingCloud) Terminate(_ context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if vm, ok := b.vms[id]; ok {
		vm.State = provider.StateTerminated
		b.vms[id] = vm
	}
	return nil
}

func (b *bootingCloud) Bootstrap(_ context.Context, vm provider.VM, _ provider.LaunchRequest) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dials++
	if b.firstDial.IsZero() {
		b.firstDial = b.clock.Now()
	}
	if !b.up {
		return fmt.Errorf("ssh %s:22: connect: connection refused: %w", vm.Address, provider.ErrUnavailable)
	}
	return nil
}

func (b *bootingCloud) counts() (dials int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dials
}

// countingStore counts the writes the controller makes.
type countingStore struct {
	state.Store
	writes atomic.Int64
}

func (s *countingStore) Update(ctx context.Context, o manifests.Object) (manifests.Object, error) {
	s.writes.Add(1)
	return s.Store.Update(ctx, o)
}

func (s *countingStore) UpdateStatus(ctx context.Context, o manifests.Object) (manifests.Object, error) {
	s.writes.Add(1)
	return s.Store.UpdateStatus(ctx, o)
}

func (s *countingStore) RecordEvent(ctx context.Context, ref manifests.ObjectRef, ev state.Event) error {
	s.writes.Add(1)
	return s.Store.RecordEvent(ctx, ref, ev)
}

// step advances the clock by d in one-second ticks, handing every key that
// falls due to the controller, as a worker would, and resyncing every 30s.
func step(ctx context.Context, c *Controller, clock *fakeClock, d time.Duration, elapsed *time.Duration) {
	for end := *elapsed + d; *elapsed < end; *elapsed += time.Second {
		if *elapsed%(30*time.Second) == 0 {
			c.Resync(ctx)
		}
		c.close.pollAll(ctx)
		for {
			key, ok := c.queue.TryGet()
			if !ok {
				break
			}
			c.ProcessKey(ctx, key)
		}
		clock.Step(time.Second)
	}
}

func TestAVMThatCannotBeReachedForAMinuteIsDialledAFewTimesThenBecomesReady(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	bolt, err := state.OpenBolt(t.TempDir(), state.BoltOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	store := &countingStore{Store: bolt}
	cloud := &bootingCloud{clock: clock, vms: map[string]provider.VM{}}
	c := New(Options{Store: store, Providers: fixed{cloud}, Log: logr.Discard(), Clock: clock})
	c.close.manual = true
	d := &manifests.Deployment{
		TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindDeployment},
		Metadata: manifests.ObjectMeta{Name: "train"},
		Spec:     manifests.DeploymentSpec{Image: "demo", Credentials: manifests.LocalCredentials},
	}
	if _, err := bolt.Apply(ctx, []state.Write{{Object: d}}, state.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}

	var elapsed time.Duration
	// The store's own watch would queue every change; what matters here
	// is that the controller's reactions to its own writes do not.
	c.queue.Add("train")
	step(ctx, c, clock, time.Minute, &elapsed)
	if got := cloud.counts(); got < 3 || got > 10 {
		t.Errorf("SSH dials in a minute of an unreachable VM: %d, want a handful (2s doubling to 30s)", got)
	}
	t.Logf("in a minute: %d dials, %d store writes", cloud.counts(), store.writes.Load())
	if got := store.writes.Load(); got > 20 {
		t.Errorf("store writes in that minute: %d, want at most 20", got)
	}
	obj, _ := bolt.Get(ctx, manifests.KindDeployment, "train")
	ready := manifests.FindCondition(obj.(*manifests.Deployment).Status.Conditions, manifests.ConditionReady)
	if ready == nil || ready.Reason != reconcile.ReasonBootstrapFailed {
		t.Fatalf("Ready while unreachable = %+v, want BootstrapFailed", ready)
	}
	evs, _ := bolt.Events(ctx, manifests.Ref(obj))
	for _, e := range evs {
		if e.Reason == reconcile.ReasonBootstrapFailed && e.Count > 1 {
			t.Errorf("the same failure was recorded %d times: %+v", e.Count, e)
		}
	}

	cloud.mu.Lock()
	cloud.up = true
	cloud.mu.Unlock()
	step(ctx, c, clock, 45*time.Second, &elapsed)
	obj, _ = bolt.Get(ctx, manifests.KindDeployment, "train")
	got := obj.(*manifests.Deployment)
	ready = manifests.FindCondition(got.Status.Conditions, manifests.ConditionReady)
	if ready == nil || ready.Status != manifests.ConditionTrue || !got.Status.VM.Bootstrapped {
		t.Fatalf("after the VM came up: Ready %+v, VM %+v", ready, got.Status.VM)
	}
	if got.Status.VM.ID != "i-1" {
		t.Errorf("the VM was replaced (%s) although it came up within the boot timeout", got.Status.VM.ID)
	}
}

func TestAVMThatNeverBootsIsReplacedAfterTheBootTimeout(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	bolt, err := state.OpenBolt(t.TempDir(), state.BoltOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	cloud := &bootingCloud{clock: clock, vms: map[string]provider.VM{}}
	c := New(Options{Store: bolt, Providers: fixed{cloud}, Log: logr.Discard(), Clock: clock})
	c.close.manual = true
	d := &manifests.Deployment{
		TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindDeployment},
		Metadata: manifests.ObjectMeta{Name: "train"},
		Spec:     manifests.DeploymentSpec{Image: "demo", Credentials: manifests.LocalCredentials, AWS: &manifests.DeploymentAWS{BootTimeout: "3m"}},
	}
	if _, err := bolt.Apply(ctx, []state.Write{{Object: d}}, state.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	var elapsed time.Duration
	c.queue.Add("train")
	step(ctx, c, clock, 4*time.Minute, &elapsed)
	obj, _ := bolt.Get(ctx, manifests.KindDeployment, "train")
	got := obj.(*manifests.Deployment)
	if got.Status.Attempt != 2 {
		t.Fatalf("attempt %d after 4 minutes of a VM that never boots (boot timeout 3m), want 2", got.Status.Attempt)
	}
	cloud.mu.Lock()
	first := cloud.vms["i-1"]
	cloud.mu.Unlock()
	if first.State != provider.StateTerminated {
		t.Errorf("the VM that timed out is %s, want terminated", first.State)
	}
	evs, _ := bolt.Events(ctx, manifests.Ref(obj))
	found := false
	for _, e := range evs {
		found = found || e.Reason == reconcile.ReasonBootstrapTimeout
	}
	if !found {
		t.Errorf("no %s event: %+v", reconcile.ReasonBootstrapTimeout, evs)
	}
}

// TestALaunchedVMIsDialledSoonAfterItRunsNotAtTheNextResync: the VM is
// pending for 5s; the close watch sees it running within a second and the
// first SSH attempt follows, long before the next resync at 30s. Once the
// workload runs, the close watch stops asking.
func TestALaunchedVMIsDialledSoonAfterItRunsNotAtTheNextResync(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	start := clock.Now()
	bolt, err := state.OpenBolt(t.TempDir(), state.BoltOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	cloud := &bootingCloud{clock: clock, vms: map[string]provider.VM{}, pendingFor: 5 * time.Second, up: true}
	c := New(Options{Store: bolt, Providers: fixed{cloud}, Log: logr.Discard(), Clock: clock})
	c.close.manual = true
	d := &manifests.Deployment{
		TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindDeployment},
		Metadata: manifests.ObjectMeta{Name: "train"},
		Spec:     manifests.DeploymentSpec{Image: "demo", Credentials: manifests.LocalCredentials},
	}
	if _, err := bolt.Apply(ctx, []state.Write{{Object: d}}, state.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	var elapsed time.Duration
	c.queue.Add("train")
	step(ctx, c, clock, 20*time.Second, &elapsed)
	cloud.mu.Lock()
	first, describes := cloud.firstDial, cloud.describes
	cloud.mu.Unlock()
	if first.IsZero() || first.Sub(start) > 8*time.Second {
		t.Fatalf("first SSH attempt at %v after launch (VM running at 5s, resync at 30s), want within a few seconds of it running", first.Sub(start))
	}
	obj, _ := bolt.Get(ctx, manifests.KindDeployment, "train")
	if got := obj.(*manifests.Deployment); got.Status.VM == nil || !got.Status.VM.Bootstrapped {
		t.Fatalf("not bootstrapped: %+v", got.Status)
	}
	if c.close.watched() != 0 {
		t.Errorf("%d VMs still watched closely after the workload started", c.close.watched())
	}
	step(ctx, c, clock, 60*time.Second, &elapsed)
	cloud.mu.Lock()
	later := cloud.describes
	cloud.mu.Unlock()
	if later != describes {
		t.Errorf("an idle deployment was described %d more times by the close watch", later-describes)
	}
}

// TestManyStartingVMsAreListedNotDescribedByID: past 200 VMs, the close
// watch lists the scope (1000 a page) instead of describing 200 ids a
// call, and waits longer between polls.
func TestManyStartingVMsAreListedNotDescribedByID(t *testing.T) {
	clock := newFakeClock()
	cloud := &bootingCloud{clock: clock, vms: map[string]provider.VM{}, pendingFor: time.Hour}
	c := New(Options{Providers: fixed{cloud}, Log: logr.Discard(), Clock: clock})
	c.close.manual = true
	ctx := context.Background()
	for i := range 2500 {
		vm, _ := cloud.Launch(ctx, provider.LaunchRequest{Deployment: fmt.Sprintf("d%d", i), UID: fmt.Sprintf("u%d", i), Attempt: 1})
		c.close.watch(ctx, cloud, vm.ID)
	}
	c.close.pollAll(ctx)
	if cloud.describes != 0 || cloud.lists != 1 {
		t.Errorf("2,500 starting VMs: %d describes and %d listings, want one listing", cloud.describes, cloud.lists)
	}
	if got := c.close.period(c.close.scopes[cloud.Key()]); got != 3*WatchPeriod {
		t.Errorf("pause between polls of 2,500 VMs = %v, want %v", got, 3*WatchPeriod)
	}
}
