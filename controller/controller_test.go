package controller

// Fast tests of the controller: a real bbolt store, a fake cloud and a
// fake clock, with the queue driven by hand — no Docker, no sleeps.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/reconcile"
	"github.com/anycloud/anycloud/state"
)

// fakeCloud is a provider whose VMs run as soon as they are launched. Its
// failures are set per test.
type fakeCloud struct {
	key   string
	clock *fakeClock

	mu          sync.Mutex
	vms         map[string]provider.VM
	seq         int
	launchErrs  []error // consumed one per Launch
	terminateEr error
	launches    int
	terminated  []string
	released    []string
	notify      func()
	onRelease   func(uid string) // called outside mu, before Release returns
}

func newFakeCloud(key string, clock *fakeClock) *fakeCloud {
	return &fakeCloud{key: key, clock: clock, vms: map[string]provider.VM{}}
}

func (f *fakeCloud) Key() string { return f.key }

func (f *fakeCloud) Launch(_ context.Context, req provider.LaunchRequest) (provider.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.launches++
	if len(f.launchErrs) > 0 {
		err := f.launchErrs[0]
		f.launchErrs = f.launchErrs[1:]
		if err != nil {
			return provider.VM{}, err
		}
	}
	for _, vm := range f.vms {
		if vm.UID == req.UID && vm.Attempt == req.Attempt {
			return vm, nil
		}
	}
	f.seq++
	vm := provider.VM{ID: fmt.Sprintf("%s-vm-%d", f.key, f.seq), Deployment: req.Deployment, UID: req.UID, Attempt: req.Attempt,
		State: provider.StateRunning, Market: "on-demand", Address: "127.0.0.1:1", LaunchedAt: f.clock.Now()}
	f.vms[vm.ID] = vm
	return vm, nil
}

func (f *fakeCloud) List(context.Context) ([]provider.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []provider.VM
	for _, vm := range f.vms {
		out = append(out, vm)
	}
	return out, nil
}

func (f *fakeCloud) Terminate(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.terminateEr != nil {
		return f.terminateEr
	}
	if vm, ok := f.vms[id]; ok {
		vm.State = provider.StateTerminated
		f.vms[id] = vm
	}
	f.terminated = append(f.terminated, id)
	return nil
}

func (f *fakeCloud) Release(_ context.Context, uid string) error {
	f.mu.Lock()
	f.released = append(f.released, uid)
	hook := f.onRelease
	f.mu.Unlock()
	if hook != nil {
		hook(uid)
	}
	return nil
}

func (f *fakeCloud) Logs(_ context.Context, vm provider.VM, _ bool, w io.Writer) error {
	_, err := fmt.Fprintf(w, "log of %s\n", vm.ID)
	return err
}

func (f *fakeCloud) SSHInfo(_ context.Context, vm provider.VM) (provider.SSHInfo, error) {
	return provider.SSHInfo{Addr: vm.Address, User: "root"}, nil
}

func (f *fakeCloud) Notify(ctx context.Context, notify func()) error {
	f.mu.Lock()
	f.notify = notify
	f.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

// kill takes a VM away behind the controller's back.
func (f *fakeCloud) kill(id, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	vm := f.vms[id]
	vm.State, vm.Reason = provider.StateTerminated, reason
	f.vms[id] = vm
}

func (f *fakeCloud) live(uid string) []provider.VM {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []provider.VM
	for _, vm := range f.vms {
		if vm.UID == uid && vm.State != provider.StateTerminated {
			out = append(out, vm)
		}
	}
	return out
}

// byRegion hands out one fake cloud per region override ("" is the
// credentials' own), and fails while err is set.
type byRegion struct {
	mu     sync.Mutex
	clouds map[string]provider.Provider
	err    error
}

func (b *byRegion) For(_ context.Context, creds *manifests.Credentials, _ map[string]string, region string) (provider.Provider, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return nil, b.err
	}
	if p, ok := b.clouds[region]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("no region %q: %w", region, provider.ErrUnavailable)
}

// rig is a controller over a real store, driven by hand.
type rig struct {
	t     *testing.T
	ctx   context.Context
	clock *fakeClock
	store *state.Bolt
	c     *Controller
	cloud *fakeCloud
	provs *byRegion
	logs  *bytes.Buffer
}

func newRig(t *testing.T) *rig {
	t.Helper()
	clock := newFakeClock()
	store, err := state.OpenBolt(t.TempDir(), state.BoltOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cloud := newFakeCloud("home", clock)
	provs := &byRegion{clouds: map[string]provider.Provider{"": cloud}}
	var logs bytes.Buffer
	c := New(Options{Store: store, Providers: provs, Log: logr.Discard(), Clock: clock, OrphanGrace: time.Minute})
	c.close.manual = true
	return &rig{t: t, ctx: context.Background(), clock: clock, store: store, c: c, cloud: cloud, provs: provs, logs: &logs}
}

func (r *rig) apply(d *manifests.Deployment, more ...state.Write) {
	r.t.Helper()
	writes := append([]state.Write{{Object: d}}, more...)
	if _, err := r.store.Apply(r.ctx, writes, state.ApplyOptions{}); err != nil {
		r.t.Fatal(err)
	}
	r.c.queue.Add(d.Metadata.Name)
}

func deployment(name string, mods ...func(*manifests.Deployment)) *manifests.Deployment {
	d := &manifests.Deployment{
		TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindDeployment},
		Metadata: manifests.ObjectMeta{Name: name},
		Spec:     manifests.DeploymentSpec{Image: "demo", Credentials: manifests.LocalCredentials},
	}
	for _, m := range mods {
		m(d)
	}
	return d
}

// run hands every due key to the controller, then steps the clock, for d.
func (r *rig) run(d time.Duration) {
	for end := r.clock.Now().Add(d); ; {
		for {
			key, ok := r.c.queue.TryGet()
			if !ok {
				break
			}
			r.c.ProcessKey(r.ctx, key)
		}
		if !r.clock.Now().Before(end) {
			return
		}
		r.clock.Step(time.Second)
	}
}

func (r *rig) get(name string) *manifests.Deployment {
	r.t.Helper()
	o, err := r.store.Get(r.ctx, manifests.KindDeployment, name)
	if err != nil {
		r.t.Fatalf("get %s: %v", name, err)
	}
	return o.(*manifests.Deployment)
}

func (r *rig) ready(name string) *manifests.Condition {
	return manifests.FindCondition(r.get(name).Status.Conditions, manifests.ConditionReady)
}

func (r *rig) events(name string) string {
	evs, _ := r.store.Events(r.ctx, manifests.Ref(r.get(name)))
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "%s %s: %s\n", e.Type, e.Reason, e.Message)
	}
	return b.String()
}

func TestALaunchIsRecordedAndAPreemptionRecoveredInOnePass(t *testing.T) {
	r := newRig(t)
	r.apply(deployment("train"))
	r.run(0)
	d := r.get("train")
	if c := r.ready("train"); c == nil || c.Status != manifests.ConditionTrue || d.Status.VM == nil {
		t.Fatalf("after one pass: Ready %+v, VM %+v", c, d.Status.VM)
	}
	first := d.Status.VM.ID
	r.cloud.kill(first, "Server.SpotInstanceTermination")
	r.c.Resync(r.ctx)
	r.run(0)
	d = r.get("train")
	if d.Status.VM == nil || d.Status.VM.ID == first || d.Status.Recoveries != 1 || d.Status.Attempt != 2 {
		t.Fatalf("after the preemption: %+v", d.Status)
	}
	if ev := r.events("train"); !strings.Contains(ev, "Preempted") || !strings.Contains(ev, "SpotInstanceTermination") || !strings.Contains(ev, "Recovered") {
		t.Errorf("events:\n%s", ev)
	}
}

func TestAnInvalidLaunchStallsAndIsNotRetried(t *testing.T) {
	r := newRig(t)
	r.cloud.launchErrs = []error{fmt.Errorf("RunInstances: InvalidAMIID.Malformed: %w", provider.ErrInvalid)}
	r.apply(deployment("train"))
	r.run(10 * time.Minute)
	d := r.get("train")
	stalled := manifests.FindCondition(d.Status.Conditions, manifests.ConditionStalled)
	if stalled == nil || stalled.Status != manifests.ConditionTrue || d.Status.Phase != manifests.PhaseFailed {
		t.Fatalf("status after an invalid launch: %+v", d.Status)
	}
	if r.cloud.launches != 1 {
		t.Errorf("launches = %d: a terminal failure was retried", r.cloud.launches)
	}
	if !strings.Contains(stalled.Message, "InvalidAMIID.Malformed") {
		t.Errorf("the stalled message lost its cause: %q", stalled.Message)
	}
	// A change of the spec starts over.
	d.Spec.Image = "demo:2"
	r.apply(d)
	r.run(0)
	if c := r.ready("train"); c == nil || c.Status != manifests.ConditionTrue {
		t.Errorf("after fixing the spec: Ready %+v", c)
	}
}

func TestTransientLaunchFailuresAreRetriedWithBackOff(t *testing.T) {
	r := newRig(t)
	capacity := fmt.Errorf("RunInstances: InsufficientInstanceCapacity: %w", provider.ErrCapacity)
	r.cloud.launchErrs = []error{capacity, capacity}
	r.apply(deployment("train"))
	r.run(0)
	if c := r.ready("train"); c == nil || c.Reason != "InsufficientCapacity" {
		t.Fatalf("Ready after a capacity failure: %+v", c)
	}
	r.run(5 * time.Second)
	if c := r.ready("train"); c == nil || c.Status != manifests.ConditionTrue || r.cloud.launches != 3 {
		t.Errorf("after the retries: Ready %+v, launches %d", c, r.cloud.launches)
	}
}

func TestASpentAttemptStartsTheNextOne(t *testing.T) {
	r := newRig(t)
	r.cloud.launchErrs = []error{fmt.Errorf("IdempotentInstanceTerminated: %w", provider.ErrAttemptSpent)}
	r.apply(deployment("train"))
	r.run(5 * time.Second)
	d := r.get("train")
	if d.Status.Attempt != 2 || d.Status.VM == nil || d.Status.VM.Attempt != 2 {
		t.Errorf("after a spent attempt: %+v", d.Status)
	}
}

func TestProviderFailuresAreReportedAndRetried(t *testing.T) {
	r := newRig(t)
	r.provs.err = fmt.Errorf("load AWS configuration: %w", provider.ErrUnavailable)
	r.apply(deployment("train"))
	r.run(0)
	if c := r.ready("train"); c == nil || c.Reason != reconcile.ReasonProviderUnavailable {
		t.Fatalf("Ready with no provider: %+v", c)
	}
	if r.c.queue.Failures("train") == 0 {
		t.Error("a provider failure was not retried with back-off")
	}
	r.provs.mu.Lock()
	r.provs.err = nil
	r.provs.mu.Unlock()
	r.run(time.Minute)
	if c := r.ready("train"); c == nil || c.Status != manifests.ConditionTrue {
		t.Errorf("after the provider came back: %+v", c)
	}
}

func TestMissingCredentialsWaitAndADeletionLetsGo(t *testing.T) {
	r := newRig(t)
	r.apply(deployment("train", func(d *manifests.Deployment) { d.Spec.Credentials = "gone" }))
	r.run(0)
	if c := r.ready("train"); c == nil || c.Reason != reconcile.ReasonCredentialsNotFound {
		t.Fatalf("Ready without credentials: %+v", c)
	}
	if r.c.queue.Failures("train") != 0 {
		t.Error("missing credentials were retried as a failure; they are waited for")
	}
	if _, err := r.store.Delete(r.ctx, manifests.KindDeployment, "train", state.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r.c.queue.Add("train")
	r.run(0)
	if _, err := r.store.Get(r.ctx, manifests.KindDeployment, "train"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("a deployment that never launched is still there after delete: %v", err)
	}
}

func TestDeleteTerminatesTheVMThenReleasesAndLetsGo(t *testing.T) {
	r := newRig(t)
	r.apply(deployment("train"))
	r.run(0)
	d := r.get("train")
	// Whoever waits for the object to go (delete --wait) must find what
	// was released gone too: Release runs while the object is still there.
	r.cloud.onRelease = func(uid string) {
		if _, err := r.store.Get(r.ctx, manifests.KindDeployment, "train"); err != nil {
			t.Errorf("Release of %s ran after the deployment was gone: %v", uid, err)
		}
	}
	if _, err := r.store.Delete(r.ctx, manifests.KindDeployment, "train", state.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r.c.queue.Add("train")
	r.run(0)
	if _, err := r.store.Get(r.ctx, manifests.KindDeployment, "train"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("deployment still there: %v", err)
	}
	if len(r.cloud.live(d.Metadata.UID)) != 0 || len(r.cloud.released) != 1 || r.cloud.released[0] != d.Metadata.UID {
		t.Errorf("after delete: live VMs %v, released %v", r.cloud.live(d.Metadata.UID), r.cloud.released)
	}
}

func TestATerminateThatFailsIsRetriedAndSaid(t *testing.T) {
	r := newRig(t)
	r.apply(deployment("train"))
	r.run(0)
	r.cloud.terminateEr = fmt.Errorf("TerminateInstances: %w", provider.ErrThrottled)
	if _, err := r.store.Delete(r.ctx, manifests.KindDeployment, "train", state.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r.c.queue.Add("train")
	r.run(0)
	if ev := r.events("train"); !strings.Contains(ev, "TerminateFailed") {
		t.Errorf("no TerminateFailed event:\n%s", ev)
	}
	r.cloud.mu.Lock()
	r.cloud.terminateEr = nil
	r.cloud.mu.Unlock()
	r.run(time.Minute)
	if _, err := r.store.Get(r.ctx, manifests.KindDeployment, "train"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("not deleted once terminate worked: %v", err)
	}
}

// TestADeploymentThatMovesRegionLeavesNoVMBehind: the VM is terminated in
// the old region and the new one launched in the new, as one move.
func TestADeploymentThatMovesRegionLeavesNoVMBehind(t *testing.T) {
	r := newRig(t)
	west := newFakeCloud("west", r.clock)
	r.provs.clouds["us-west-2"] = west
	r.apply(deployment("train"))
	r.run(0)
	d := r.get("train")
	old := d.Status.VM.ID
	d.Spec.AWS = &manifests.DeploymentAWS{Region: "us-west-2"}
	r.apply(d)
	r.run(0)
	d = r.get("train")
	if d.Status.VM == nil || d.Status.VM.Scope != "west" || len(west.live(d.Metadata.UID)) != 1 {
		t.Fatalf("after the move: %+v", d.Status.VM)
	}
	if len(r.cloud.live(d.Metadata.UID)) != 0 {
		t.Errorf("VM %s left running in the old region", old)
	}
	if d.Status.Recoveries != 0 {
		t.Errorf("a move counted as %d recoveries", d.Status.Recoveries)
	}
	if ev := r.events("train"); !strings.Contains(ev, "Moved") {
		t.Errorf("no Moved event:\n%s", ev)
	}
}

func TestOrphansAreTerminatedAfterTheGracePeriod(t *testing.T) {
	r := newRig(t)
	r.apply(deployment("train"))
	r.run(0)
	// A VM of this cluster that no deployment owns (its deployment was
	// deleted while the control plane was down).
	orphan, _ := r.cloud.Launch(r.ctx, provider.LaunchRequest{Deployment: "gone", UID: "uid-gone", Attempt: 1})
	r.c.Resync(r.ctx)
	if len(r.cloud.live("uid-gone")) != 1 {
		t.Fatal("an orphan was terminated before its grace period")
	}
	r.clock.Step(61 * time.Second)
	r.c.Resync(r.ctx)
	if len(r.cloud.live("uid-gone")) != 0 {
		t.Errorf("orphan %s still running after the grace period", orphan.ID)
	}
	if len(r.cloud.live(r.get("train").Metadata.UID)) != 1 {
		t.Error("the orphan sweep took a VM that has an owner")
	}
}

func TestAPanickingReconcileIsRetriedNotFatal(t *testing.T) {
	r := newRig(t)
	r.apply(deployment("train"))
	boom := &panicky{fakeCloud: r.cloud}
	r.provs.clouds[""] = nil
	r.c.providers = fixed{boom}
	r.run(0)
	if r.c.queue.Failures("train") == 0 {
		t.Error("a panic was not retried")
	}
	boom.calm = true
	r.run(time.Minute)
	if c := r.ready("train"); c == nil || c.Status != manifests.ConditionTrue {
		t.Errorf("after the panics stopped: %+v", c)
	}
}

type panicky struct {
	*fakeCloud
	calm bool
}

func (p *panicky) Launch(ctx context.Context, req provider.LaunchRequest) (provider.VM, error) {
	if !p.calm {
		panic("provider bug")
	}
	return p.fakeCloud.Launch(ctx, req)
}

// fixed hands every deployment the same provider.
type fixed struct{ p provider.Provider }

func (f fixed) For(context.Context, *manifests.Credentials, map[string]string, string) (provider.Provider, error) {
	return f.p, nil
}

func TestLogsAndSSHReachTheCurrentVM(t *testing.T) {
	r := newRig(t)
	r.apply(deployment("train"))
	r.run(0)
	id := r.get("train").Status.VM.ID
	var b bytes.Buffer
	if err := r.c.Logs(r.ctx, "train", false, &b); err != nil || b.String() != "log of "+id+"\n" {
		t.Errorf("logs = %q, %v", b.String(), err)
	}
	if info, err := r.c.SSHInfo(r.ctx, "train"); err != nil || info.Addr != "127.0.0.1:1" {
		t.Errorf("ssh info = %+v, %v", info, err)
	}
	r.apply(deployment("fresh"))
	if err := r.c.Logs(r.ctx, "fresh", false, &b); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("logs of a deployment without a VM: %v", err)
	}
	if _, err := r.c.SSHInfo(r.ctx, "nope"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("ssh info of a missing deployment: %v", err)
	}
}

// TestTheControllersOwnWritesDoNotRequeue: a status write by the
// controller comes back through the store's watch as a change; it must
// not queue the deployment again (which would cancel a back-off).
func TestTheControllersOwnWritesDoNotRequeue(t *testing.T) {
	r := newRig(t)
	r.apply(deployment("train"))
	d := r.get("train")
	if !r.c.changed(state.WatchEvent{Type: state.Added, Object: d}) {
		t.Fatal("a new deployment is not a change")
	}
	next := manifests.DeepCopy(d)
	next.Status.Phase = manifests.PhaseRunning
	next.Metadata.ResourceVersion = "99"
	if r.c.changed(state.WatchEvent{Type: state.Modified, Object: next}) {
		t.Error("a status-only change queued the deployment")
	}
	next.Metadata.Generation++
	if !r.c.changed(state.WatchEvent{Type: state.Modified, Object: next}) {
		t.Error("a spec change did not queue the deployment")
	}
	next = manifests.DeepCopy(next)
	next.Metadata.Annotations = map[string]string{manifests.AnnotationRestartedAt: "now"}
	if !r.c.changed(state.WatchEvent{Type: state.Modified, Object: next}) {
		t.Error("a resubmit did not queue the deployment")
	}
	if !r.c.changed(state.WatchEvent{Type: state.Deleted, Object: next}) {
		t.Error("a deletion did not queue the deployment")
	}
}

// TestWatchesQueueWhatChanged runs the store watches for real: a new
// deployment, and a bundle that appears for a deployment waiting for it.
func TestWatchesQueueWhatChanged(t *testing.T) {
	r := newRig(t)
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	go r.c.watchDeployments(ctx)
	go r.c.watchBundles(ctx)
	if _, err := r.store.Apply(r.ctx, []state.Write{{Object: deployment("train", func(d *manifests.Deployment) { d.Spec.Secrets = []string{"hf"} })}}, state.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	waitKey(t, r.c.queue, "train")
	b := &manifests.SecretBundle{TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindSecretBundle}, Metadata: manifests.ObjectMeta{Name: "hf"}}
	if _, err := r.store.Apply(r.ctx, []state.Write{{Object: b, Secrets: map[string]string{"HF_TOKEN": "x"}}}, state.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	waitKey(t, r.c.queue, "train")
}

// TestANotificationRelistsAndQueuesTheOwner: a provider that reports a
// change (a container died) has its scope relisted and the owner queued
// without waiting for the resync.
func TestANotificationRelistsAndQueuesTheOwner(t *testing.T) {
	r := newRig(t)
	r.apply(deployment("train"))
	r.run(0)
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	go r.c.followNotifications(ctx, r.cloud, r.cloud)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.cloud.mu.Lock()
		notify := r.cloud.notify
		r.cloud.mu.Unlock()
		if notify != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the provider was never asked for notifications")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.cloud.kill(r.get("train").Status.VM.ID, "exited with code 137")
	r.cloud.notify()
	waitKey(t, r.c.queue, "train")
	r.c.queue.Add("train") // waitKey took it
	r.run(0)
	if d := r.get("train"); d.Status.Recoveries != 1 {
		t.Errorf("recoveries after the notification: %d", d.Status.Recoveries)
	}
}

// waitKey waits until key is queued and takes it: the watches run in
// goroutines of their own.
func waitKey(t *testing.T, q *Queue, key string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if k, ok := q.TryGet(); ok {
			q.Done(k)
			if k == key {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not queued", key)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAForcedDeleteLeavesItsVMToTheSweepWhichEndsIt: the deployment goes
// at once; its VM is a leftover on the credentials until the orphan sweep
// has ended it, and then forgotten.
func TestAForcedDeleteLeavesItsVMToTheSweepWhichEndsIt(t *testing.T) {
	r := newRig(t)
	r.apply(deployment("train"))
	r.run(0)
	uid := r.get("train").Metadata.UID
	if _, err := r.store.Delete(r.ctx, manifests.KindDeployment, "train", state.DeleteOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	left, err := r.store.ListLeftovers(r.ctx)
	if err != nil || len(left[manifests.LocalCredentials]) != 1 {
		t.Fatalf("leftovers after a forced delete: %v %v", left, err)
	}
	r.c.Resync(r.ctx) // first seen as an orphan
	r.clock.Step(61 * time.Second)
	r.c.Resync(r.ctx) // terminated after the grace period
	if len(r.cloud.live(uid)) != 0 {
		t.Fatal("the VM of a forced delete is still running")
	}
	r.c.Resync(r.ctx) // the scope now shows it gone: forgotten
	if left, _ := r.store.ListLeftovers(r.ctx); len(left[manifests.LocalCredentials]) != 0 {
		t.Errorf("leftovers once the VM is gone: %v", left)
	}
}

// TestTheCloseWatchLoopFollowsAStartingVMThenStops runs the close watch's
// own loop on the fake clock.
func TestTheCloseWatchLoopFollowsAStartingVMThenStops(t *testing.T) {
	clock := newFakeClock()
	cloud := &bootingCloud{clock: clock, vms: map[string]provider.VM{}, pendingFor: 3 * time.Second, up: true}
	c := New(Options{Store: nil, Providers: fixed{cloud}, Log: logr.Discard(), Clock: clock})
	vm, _ := cloud.Launch(context.Background(), provider.LaunchRequest{Deployment: "train", UID: "uid", Attempt: 1})
	c.vms.put(cloud, vm)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.close.watch(ctx, cloud, vm.ID)
	describes := func() int {
		cloud.mu.Lock()
		defer cloud.mu.Unlock()
		return cloud.describes
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; describes() < 4; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("the close watch described %d times", describes())
		}
		if i%10 == 0 {
			clock.Step(WatchPeriod) // the loop waits on the fake clock
		}
		time.Sleep(time.Millisecond)
	}
	if got := c.vms.cached(cloud, "uid"); len(got) != 1 || got[0].State != provider.StateRunning {
		t.Errorf("the cache after the VM ran: %+v", got)
	}
	if k, ok := c.queue.TryGet(); !ok || k != "train" {
		t.Errorf("the owner was not queued when its VM started running (%q)", k)
	}
	c.close.unwatch(cloud, vm.ID)
	clock.Step(WatchPeriod)
	deadline = time.Now().Add(10 * time.Second)
	for {
		c.close.mu.Lock()
		running := c.close.scopes[cloud.Key()].running
		c.close.mu.Unlock()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the loop did not end with its last VM")
		}
		clock.Step(WatchPeriod)
		time.Sleep(time.Millisecond)
	}
}

// TestRunConvergesAndStops runs the whole controller (watches, resync
// loop, workers) on the real clock until a deployment is Ready, then
// stops it.
func TestRunConvergesAndStops(t *testing.T) {
	clock := newFakeClock()
	store, err := state.OpenBolt(t.TempDir(), state.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cloud := newFakeCloud("home", clock)
	c := New(Options{Store: store, Providers: fixed{cloud}, Log: logr.Discard(), Resync: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	if _, err := store.Apply(ctx, []state.Write{{Object: deployment("train")}}, state.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		o, err := store.Get(ctx, manifests.KindDeployment, "train")
		if err == nil {
			if c := manifests.FindCondition(o.(*manifests.Deployment).Status.Conditions, manifests.ConditionReady); c != nil && c.Status == manifests.ConditionTrue {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("not Ready under Run")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// sameAccount hands each credentials a view of one cloud under a scope of
// its own: two credentials of the same account and region.
type sameAccount struct{ cloud *fakeCloud }

type accountView struct {
	*fakeCloud
	key string
}

func (v accountView) Key() string { return v.key }

func (s sameAccount) For(_ context.Context, creds *manifests.Credentials, _ map[string]string, _ string) (provider.Provider, error) {
	return accountView{fakeCloud: s.cloud, key: "view/" + creds.Metadata.Name}, nil
}

// Two credentials of one account and region list the same VMs; each
// deployment's VM is its own scope's, not an orphan of the other's.
func TestTwoCredentialsOfOneAccountDoNotSweepEachOthersVMs(t *testing.T) {
	r := newRig(t)
	r.c.providers = sameAccount{r.cloud}
	for _, name := range []string{"one", "two"} {
		creds := &manifests.Credentials{
			TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindCredentials},
			Metadata: manifests.ObjectMeta{Name: name},
			Spec:     manifests.CredentialsSpec{Provider: manifests.ProviderLocal},
		}
		if _, err := r.store.Apply(r.ctx, []state.Write{{Object: creds}}, state.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		r.apply(deployment("on-"+name, func(d *manifests.Deployment) { d.Spec.Credentials = name }))
	}
	r.run(0)
	r.c.Resync(r.ctx)
	r.clock.Step(2 * time.Minute) // past the grace period
	r.c.Resync(r.ctx)
	r.run(0)
	for _, name := range []string{"on-one", "on-two"} {
		if live := r.cloud.live(r.get(name).Metadata.UID); len(live) != 1 {
			t.Errorf("%s has %d live VMs, want its one", name, len(live))
		}
	}
	if len(r.cloud.terminated) != 0 {
		t.Errorf("terminated %v: one credentials' sweep took the other's VMs", r.cloud.terminated)
	}
}
