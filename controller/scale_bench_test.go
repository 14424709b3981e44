package controller

// Benchmarks of the control loop's own cost at scale (issue: the control
// loop at scale): a real bbolt store with N deployments, and a cloud in
// memory whose calls cost nothing, so that what is measured is the
// controller alone — resync, fan-out, detection.

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/state"
)

// memCloud is a provider in memory: VMs run at launch, List is one call.
type memCloud struct {
	mu    sync.Mutex
	vms   map[string]provider.VM
	seq   int
	lists int
	now   func() time.Time
	// launched, when set, is told of each launch.
	launched func(provider.VM)
}

func (m *memCloud) Key() string { return "mem" }

func (m *memCloud) Launch(_ context.Context, req provider.LaunchRequest) (provider.VM, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, vm := range m.vms {
		if vm.UID == req.UID && vm.Attempt == req.Attempt {
			return vm, nil
		}
	}
	m.seq++
	vm := provider.VM{ID: fmt.Sprintf("vm-%d", m.seq), Deployment: req.Deployment, UID: req.UID, Attempt: req.Attempt,
		State: provider.StateRunning, Market: "spot", Address: "127.0.0.1:1", LaunchedAt: m.now()}
	m.vms[vm.ID] = vm
	if m.launched != nil {
		m.launched(vm)
	}
	return vm, nil
}

func (m *memCloud) List(context.Context) ([]provider.VM, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lists++
	out := make([]provider.VM, 0, len(m.vms))
	for _, vm := range m.vms {
		out = append(out, vm)
	}
	return out, nil
}

func (m *memCloud) Terminate(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if vm, ok := m.vms[id]; ok {
		vm.State = provider.StateTerminated
		m.vms[id] = vm
	}
	return nil
}

// kill takes one running VM away and returns it.
func (m *memCloud) kill() provider.VM {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, vm := range m.vms {
		if vm.State == provider.StateRunning {
			vm.State, vm.Reason = provider.StateTerminated, "Server.SpotInstanceTermination"
			m.vms[vm.ID] = vm
			return vm
		}
	}
	return provider.VM{}
}

// converged is a store with n deployments on one credentials, each with
// its VM running in cloud, and a controller that has seen them all.
func converged(b testing.TB, n int, clock Clock) (*Controller, *state.Bolt, *memCloud) {
	return convergedOn(b, n, clock, nil)
}

// convergedOn is converged with the controller reading the store through
// wrap, when set.
func convergedOn(b testing.TB, n int, clock Clock, wrap func(*state.Bolt) state.Store) (*Controller, *state.Bolt, *memCloud) {
	b.Helper()
	store, err := state.OpenBolt(b.TempDir(), state.BoltOptions{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	writes := make([]state.Write, 0, n)
	for i := range n {
		writes = append(writes, state.Write{Object: &manifests.Deployment{
			TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindDeployment},
			Metadata: manifests.ObjectMeta{Name: fmt.Sprintf("job-%d", i), Labels: map[string]string{"team": "ml"}},
			Spec:     manifests.DeploymentSpec{Image: "ghcr.io/me/train:latest", Credentials: manifests.LocalCredentials, Spot: manifests.SpotSpec{Enabled: true}, Env: map[string]string{"EPOCHS": "3"}},
		}})
	}
	if _, err := store.Apply(context.Background(), writes, state.ApplyOptions{}); err != nil {
		b.Fatal(err)
	}
	cloud := &memCloud{vms: map[string]provider.VM{}, now: clock.Now}
	var through state.Store = store
	if wrap != nil {
		through = wrap(store)
	}
	c := New(Options{Store: through, Providers: fixed{cloud}, Log: logr.Discard(), Clock: clock, OrphanGrace: time.Hour})
	c.Resync(context.Background())
	drainQueue(c)
	return c, store, cloud
}

// drainQueue reconciles every queued key, as the workers would.
func drainQueue(c *Controller) int {
	n := 0
	for {
		key, ok := c.queue.TryGet()
		if !ok {
			return n
		}
		c.ProcessKey(context.Background(), key)
		n++
	}
}

// cpu is this process's user+system CPU time.
func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIdleResync measures one resync of N converged deployments — the
// listing, the orphan sweep and the fan-out of one reconcile per
// deployment — in wall time and CPU, and the idle CPU a minute costs at
// the default 30s resync. Goal: linear in N; 10,000 under 2 CPU-seconds a
// minute.
func BenchmarkIdleResync(b *testing.B) {
	for _, n := range []int{1000, 2000, 4000, 8000, 10000} {
		b.Run(fmt.Sprintf("deployments=%d", n), func(b *testing.B) {
			c, _, cloud := converged(b, n, RealClock{})
			var wall, used time.Duration
			rounds := 0
			for b.Loop() {
				start, cpu0 := time.Now(), cpu()
				c.Resync(context.Background())
				if got := drainQueue(c); got != n {
					b.Fatalf("a resync reconciled %d deployments, want %d", got, n)
				}
				wall += time.Since(start)
				used += cpu() - cpu0
				rounds++
			}
			if cloud.lists < rounds {
				b.Fatalf("%d listings for %d resyncs", cloud.lists, rounds)
			}
			b.ReportMetric(wall.Seconds()/float64(rounds), "s-resync")
			b.ReportMetric(used.Seconds()/float64(rounds), "cpu-s-resync")
			b.ReportMetric(2*used.Seconds()/float64(rounds), "cpu-s-per-min-idle")
			b.ReportMetric(float64(used.Microseconds())/float64(rounds)/float64(n), "cpu-us-per-deployment")
		})
	}
}

// BenchmarkTerminateToReplacementResyncOnly kills one VM at a time with no
// event to tell (as an EC2 termination without the events queue) and
// measures until its replacement is launched, with the controller
// running on the real clock and a 5s resync, at 6, 200 and 1,000
// deployments. Goal: bounded by the resync period, not growing with N.
func BenchmarkTerminateToReplacementResyncOnly(b *testing.B) {
	const resync = 5 * time.Second
	for _, n := range []int{6, 200, 1000} {
		b.Run(fmt.Sprintf("deployments=%d", n), func(b *testing.B) {
			_, store, cloud := converged(b, n, RealClock{})
			launched := make(chan provider.VM, 16)
			cloud.mu.Lock()
			cloud.launched = func(vm provider.VM) {
				select {
				case launched <- vm:
				default:
				}
			}
			cloud.mu.Unlock()
			c := New(Options{Store: store, Providers: fixed{cloud}, Log: logr.Discard(), Resync: resync, OrphanGrace: time.Hour})
			cloud.mu.Lock()
			lists := cloud.lists
			cloud.mu.Unlock()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			defer func() { cancel(); <-done }()
			// Let the first resync of this controller pass.
			for {
				cloud.mu.Lock()
				listed := cloud.lists > lists
				cloud.mu.Unlock()
				if listed {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			var took []time.Duration
			for b.Loop() {
				for range 4 {
					victim := cloud.kill()
					start := time.Now()
					for {
						vm := <-launched
						if vm.UID == victim.UID {
							break
						}
					}
					took = append(took, time.Since(start))
				}
			}
			slices.Sort(took)
			b.ReportMetric(took[len(took)/2].Seconds(), "s-p50")
			b.ReportMetric(took[len(took)-1].Seconds(), "s-max")
			b.ReportMetric(resync.Seconds(), "s-resync-period")
		})
	}
}

// BenchmarkLaunchToFirstSSH: a VM that is pending for 3s; with the close
// watch, the first SSH attempt follows EC2 reporting it running within
// about a second, not at the next resync (30s).
func BenchmarkLaunchToFirstSSH(b *testing.B) {
	var took []time.Duration
	for b.Loop() {
		store, err := state.OpenBolt(b.TempDir(), state.BoltOptions{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		cloud := &bootingCloud{vms: map[string]provider.VM{}, pendingFor: 3 * time.Second, up: true}
		rc := &realBooting{bootingCloud: cloud, first: make(chan time.Time, 1)}
		c := New(Options{Store: store, Providers: fixed{rc}, Log: logr.Discard(), Resync: 30 * time.Second})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		d := &manifests.Deployment{
			TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindDeployment},
			Metadata: manifests.ObjectMeta{Name: "train"},
			Spec:     manifests.DeploymentSpec{Image: "demo", Credentials: manifests.LocalCredentials},
		}
		if _, err := store.Apply(ctx, []state.Write{{Object: d}}, state.ApplyOptions{}); err != nil {
			b.Fatal(err)
		}
		first := <-rc.first
		took = append(took, first.Sub(rc.runningAt()))
		cancel()
		<-done
		store.Close()
	}
	slices.Sort(took)
	b.ReportMetric(took[len(took)/2].Seconds(), "s-running-to-first-ssh")
}

// realBooting is a bootingCloud on the real clock that reports its first
// SSH attempt.
type realBooting struct {
	*bootingCloud
	mu       sync.Mutex
	launched time.Time
	first    chan time.Time
	once     sync.Once
}

func (r *realBooting) state(vm provider.VM) provider.VM {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Now().Before(r.launched.Add(r.pendingFor)) {
		vm.State = provider.StatePending
	}
	return vm
}

func (r *realBooting) runningAt() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.launched.Add(r.pendingFor)
}

func (r *realBooting) Launch(_ context.Context, req provider.LaunchRequest) (provider.VM, error) {
	r.mu.Lock()
	if r.launched.IsZero() {
		r.launched = time.Now()
	}
	r.mu.Unlock()
	vm := provider.VM{ID: "i-1", Deployment: req.Deployment, UID: req.UID, Attempt: req.Attempt, State: provider.StateRunning, Address: "127.0.0.1", LaunchedAt: time.Now()}
	r.bootingCloud.mu.Lock()
	r.vms[vm.ID] = vm
	r.bootingCloud.mu.Unlock()
	return r.state(vm), nil
}

func (r *realBooting) List(context.Context) ([]provider.VM, error) {
	r.bootingCloud.mu.Lock()
	defer r.bootingCloud.mu.Unlock()
	var out []provider.VM
	for _, vm := range r.vms {
		out = append(out, r.state(vm))
	}
	return out, nil
}

func (r *realBooting) Describe(_ context.Context, ids []string) ([]provider.VM, error) {
	return r.List(context.Background())
}

func (r *realBooting) Bootstrap(context.Context, provider.VM, provider.LaunchRequest) error {
	r.once.Do(func() { r.first <- time.Now() })
	return nil
}
