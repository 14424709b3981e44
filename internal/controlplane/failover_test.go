package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/internal/etcdtest"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/seal"
)

// gate stands between one control plane and etcd: a loopback proxy per
// etcd member that can pause (bytes wait, as for a process stopped with
// SIGSTOP: its lease keepalives stop reaching etcd, and what it sent
// arrives when it wakes) or cut (every connection dropped for good, as
// for a process killed with SIGKILL).
type gate struct {
	mu     sync.Mutex
	cond   *sync.Cond
	paused bool
	cut    bool
	lns    []net.Listener
	conns  []net.Conn
	addrs  []string
}

func newGate(t testing.TB, targets []string) *gate {
	g := &gate{}
	g.cond = sync.NewCond(&g.mu)
	for _, target := range targets {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		g.lns = append(g.lns, ln)
		g.addrs = append(g.addrs, ln.Addr().String())
		go g.serve(ln, target)
	}
	t.Cleanup(func() {
		g.cutAll()
		for _, ln := range g.lns {
			ln.Close()
		}
	})
	return g
}

func (g *gate) serve(ln net.Listener, target string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", target)
		g.mu.Lock()
		if err != nil || g.cut {
			g.mu.Unlock()
			c.Close()
			if up != nil {
				up.Close()
			}
			continue
		}
		g.conns = append(g.conns, c, up)
		g.mu.Unlock()
		go g.pipe(c, up)
		go g.pipe(up, c)
	}
}

// pipe copies src to dst, holding each chunk while the gate is paused.
func (g *gate) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			g.mu.Lock()
			for g.paused && !g.cut {
				g.cond.Wait()
			}
			cut := g.cut
			g.mu.Unlock()
			if cut {
				break
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
}

func (g *gate) pause() {
	g.mu.Lock()
	g.paused = true
	g.mu.Unlock()
}

func (g *gate) resume() {
	g.mu.Lock()
	g.paused = false
	g.cond.Broadcast()
	g.mu.Unlock()
}

func (g *gate) cutAll() {
	g.mu.Lock()
	g.cut = true
	g.cond.Broadcast()
	conns := g.conns
	g.conns = nil
	g.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// fakeCloud is one cloud that every control plane's provider reaches: a
// launch is idempotent for its token, as EC2's ClientToken is. It records
// who made each call, and when.
type fakeCloud struct {
	mu    sync.Mutex
	seq   int
	vms   map[string]provider.VM
	token map[string]string
	calls []cloudCall
}

type cloudCall struct {
	replica, method string
	at              time.Time
}

func newFakeCloud() *fakeCloud {
	return &fakeCloud{vms: map[string]provider.VM{}, token: map[string]string{}}
}

func (c *fakeCloud) record(replica, method string) {
	c.calls = append(c.calls, cloudCall{replica, method, time.Now()})
}

// callsBy lists the calls replica made at or after since.
func (c *fakeCloud) callsBy(replica string, since time.Time) []cloudCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []cloudCall
	for _, call := range c.calls {
		if call.replica == replica && !call.at.Before(since) {
			out = append(out, call)
		}
	}
	return out
}

// live counts, per deployment uid, the VMs not terminated.
func (c *fakeCloud) live() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for _, vm := range c.vms {
		if vm.State != provider.StateTerminated {
			out[vm.UID]++
		}
	}
	return out
}

// cloudProviders is the Providers of one control plane.
type cloudProviders struct {
	cloud   *fakeCloud
	replica string
}

func (p cloudProviders) For(context.Context, *manifests.Credentials, map[string]string, string) (provider.Provider, error) {
	return &cloudProvider{p}, nil
}

type cloudProvider struct{ cloudProviders }

func (p *cloudProvider) Key() string { return "fake" }

func (p *cloudProvider) Launch(_ context.Context, req provider.LaunchRequest) (provider.VM, error) {
	c := p.cloud
	c.mu.Lock()
	defer c.mu.Unlock()
	c.record(p.replica, "Launch")
	if id, ok := c.token[req.Token]; ok {
		return c.vms[id], nil
	}
	c.seq++
	vm := provider.VM{ID: fmt.Sprintf("vm-%d", c.seq), Deployment: req.Deployment, UID: req.UID, Attempt: req.Attempt,
		State: provider.StateRunning, Market: "on-demand", Address: "127.0.0.1:1", LaunchedAt: time.Now()}
	c.vms[vm.ID], c.token[req.Token] = vm, vm.ID
	return vm, nil
}

func (p *cloudProvider) List(context.Context) ([]provider.VM, error) {
	c := p.cloud
	c.mu.Lock()
	defer c.mu.Unlock()
	c.record(p.replica, "List")
	out := make([]provider.VM, 0, len(c.vms))
	for _, vm := range c.vms {
		out = append(out, vm)
	}
	return out, nil
}

func (p *cloudProvider) Terminate(_ context.Context, id string) error {
	c := p.cloud
	c.mu.Lock()
	defer c.mu.Unlock()
	c.record(p.replica, "Terminate")
	if vm, ok := c.vms[id]; ok {
		vm.State = provider.StateTerminated
		c.vms[id] = vm
	}
	return nil
}

// plane is one control plane of the test, run in this process.
type plane struct {
	name    string
	home    string
	gate    *gate
	client  *api.Client
	cancel  context.CancelFunc
	done    chan error
	commits atomic.Int64
	fenced  atomic.Int64
	// lastFenced is the etcd revision of its latest fenced write.
	lastFenced atomic.Int64
}

// team is a 3-member etcd cluster, one cloud and the keys that every
// control plane on them is given.
type team struct {
	etcd    *etcdtest.Cluster
	cloud   *fakeCloud
	keyFile string
	boxKey  []byte
}

func newTeam(t testing.TB) *team {
	dir, err := os.MkdirTemp("", "etcd-")
	if err != nil {
		t.Fatal(err)
	}
	c, err := etcdtest.Start(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	keys := t.TempDir()
	keyFile := filepath.Join(keys, seal.KeyFile)
	if _, err := seal.CreateKey(keyFile); err != nil {
		t.Fatal(err)
	}
	if _, err := seal.OpenBoxKey(keys, true); err != nil {
		t.Fatal(err)
	}
	box, err := os.ReadFile(filepath.Join(keys, seal.BoxKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return &team{etcd: c, cloud: newFakeCloud(), keyFile: keyFile, boxKey: box}
}

// revision is etcd's current revision, read straight from the cluster.
func (tm *team) revision(t testing.TB) int64 {
	t.Helper()
	c, err := tm.etcd.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, "anycloud-test-revision")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// start runs a control plane named name on the team's store, through its
// own gate, and waits until it serves.
func (tm *team) start(t testing.TB, name string, lease time.Duration) *plane {
	t.Helper()
	home, err := os.MkdirTemp("", "ac")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	if err := os.WriteFile(filepath.Join(home, seal.BoxKeyFile), tm.boxKey, 0o600); err != nil {
		t.Fatal(err)
	}
	p := &plane{name: name, home: home, gate: newGate(t, tm.etcd.Endpoints()), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	ready := make(chan struct{})
	cfg := Config{
		Home: home, Log: testLog(name), Version: "test", Ready: func() { close(ready) },
		Resync: 2 * time.Second, OrphanGrace: time.Hour,
		Store: "etcd://" + strings.Join(p.gate.addrs, ","), CipherKeyFile: tm.keyFile,
		LeaderLease: lease, Name: name, Providers: cloudProviders{tm.cloud, name},
		onCommit: func(fenced bool, rev int64) {
			p.commits.Add(1)
			if fenced {
				p.fenced.Add(1)
				for {
					last := p.lastFenced.Load()
					if rev <= last || p.lastFenced.CompareAndSwap(last, rev) {
						break
					}
				}
			}
		},
	}
	go func() { p.done <- Run(ctx, cfg) }()
	select {
	case <-ready:
	case err := <-p.done:
		t.Fatalf("control plane %s: %v", name, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("control plane %s not serving within 30s", name)
	}
	p.client = api.NewClient(filepath.Join(home, api.SocketFile))
	t.Cleanup(func() {
		p.gate.cutAll()
		p.cancel()
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			buf := make([]byte, 1<<22)
			buf = buf[:runtime.Stack(buf, true)]
			os.WriteFile(filepath.Join(os.TempDir(), "anycloud-stuck-"+name+".txt"), buf, 0o600)
			t.Errorf("control plane %s did not stop within 20s (goroutines in %s)", name, filepath.Join(os.TempDir(), "anycloud-stuck-"+name+".txt"))
		}
	})
	return p
}

func testLog(name string) logr.Logger {
	if path := os.Getenv("ANYCLOUD_FAILOVER_LOG"); path != "" {
		f, err := os.OpenFile(path+"."+name, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err == nil {
			return NewLogger(f, 1)
		}
	}
	return logr.Discard()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, within time.Duration, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Now()
}

// waitUntil polls cond until it holds (true) or the deadline passes.
func waitUntil(within time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// pending describes the named deployments that have no VM yet.
func pending(c *api.Client, names []string) string {
	var out []string
	for _, n := range names {
		o, err := c.Get(context.Background(), manifests.KindDeployment, n)
		if err != nil {
			out = append(out, n+": "+err.Error())
			continue
		}
		d := o.(*manifests.Deployment)
		if d.Status.VM == nil {
			b, _ := json.Marshal(d.Status)
			out = append(out, n+": "+string(b))
		}
	}
	return strings.Join(out, "; ")
}

// leader is who p says leads, or "".
func leader(p *plane) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := p.client.ControlPlane(ctx)
	if err != nil {
		return ""
	}
	return st.Leader
}

func deploymentItem(t testing.TB, name string) api.ApplyItem {
	d := &manifests.Deployment{
		TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindDeployment},
		Metadata: manifests.ObjectMeta{Name: name},
		Spec:     manifests.DeploymentSpec{Image: "ghcr.io/me/train:latest", Credentials: manifests.LocalCredentials, VMType: "t3.micro"},
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return api.ApplyItem{Object: b}
}

// stormSize bounds a storm: what a controller on etcd converges in a few
// seconds on this machine.
const stormSize = 80

// storm applies deployments storm-0 … storm-(stormSize-1) through the
// clients in turn, one every 20ms, and returns the names whose apply
// succeeded.
func storm(t testing.TB, clients func() []*api.Client) <-chan []string {
	out := make(chan []string, 1)
	go func() {
		var ok []string
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			<-tick.C
			if i >= stormSize {
				out <- ok
				return
			}
			cs := clients()
			name := fmt.Sprintf("storm-%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, err := cs[i%len(cs)].Apply(ctx, api.ApplyRequest{Items: []api.ApplyItem{deploymentItem(t, name)}})
			cancel()
			if err == nil {
				ok = append(ok, name)
			}
		}
	}()
	return out
}

// converged reports whether every named deployment has its VM, as seen
// through c.
func converged(c *api.Client, names []string) bool {
	objs, err := c.List(context.Background(), manifests.KindDeployment)
	if err != nil {
		return false
	}
	byName := map[string]*manifests.Deployment{}
	for _, o := range objs {
		byName[o.GetMeta().Name] = o.(*manifests.Deployment)
	}
	for _, n := range names {
		d := byName[n]
		if d == nil || d.Status.VM == nil || d.Status.VM.ID == "" {
			return false
		}
	}
	return true
}

// checkNoDuplicates fails t unless every deployment has exactly one live
// VM in the cloud.
func checkNoDuplicates(t testing.TB, c *api.Client, cloud *fakeCloud, names []string) {
	t.Helper()
	live := cloud.live()
	for _, n := range names {
		o, err := c.Get(context.Background(), manifests.KindDeployment, n)
		if err != nil {
			t.Errorf("deployment %s lost: %v", n, err)
			continue
		}
		if k := live[o.GetMeta().UID]; k != 1 {
			t.Errorf("deployment %s has %d live VMs, want 1", n, k)
		}
	}
}

// failover runs two control planes on a 3-member etcd, kills the leader
// (every connection cut: its lease is never renewed again) during a storm
// of applies, and returns how long the other took to lead.
func failover(t testing.TB, lease time.Duration) time.Duration {
	tm := newTeam(t)
	a := tm.start(t, "a", lease)
	b := tm.start(t, "b", lease)
	planes := map[string]*plane{"a": a, "b": b}
	var first string
	waitFor(t, "a leader", 15*time.Second, func() bool { first = leader(a); return first != "" })
	old := planes[first]
	other := a
	if old == a {
		other = b
	}
	var killed atomic.Bool
	applied := storm(t, func() []*api.Client {
		if killed.Load() {
			return []*api.Client{other.client}
		}
		return []*api.Client{a.client, b.client}
	})
	waitFor(t, "the first deployments to run", 15*time.Second, func() bool {
		return converged(other.client, []string{"storm-0", "storm-1", "storm-2"})
	})
	killed.Store(true)
	cutAt := time.Now()
	old.gate.cutAll()
	tookOver := waitFor(t, "the other control plane to lead", 15*time.Second, func() bool { return leader(other) == other.name })
	takeover := tookOver.Sub(cutAt)
	// The storm carries on under the new leader.
	names := <-applied
	if len(names) < stormSize/2 {
		t.Fatalf("only %d applies succeeded during the storm", len(names))
	}
	if !waitUntil(30*time.Second, func() bool { return converged(other.client, names) }) {
		t.Fatalf("not every applied deployment has its VM within 30s: %s", pending(other.client, names))
	}
	checkNoDuplicates(t, other.client, tm.cloud, names)
	if calls := tm.cloud.callsBy(old.name, tookOver); len(calls) > 0 {
		t.Errorf("the killed leader made %d cloud calls after the other took over: %v", len(calls), calls)
	}
	t.Logf("%d deployments applied during the storm; takeover %.2fs after the leader was cut off (lease %s)", len(names), takeover.Seconds(), lease)
	return takeover
}

// Two control planes on a 3-member etcd: the leader is killed during a
// storm of applies; the other leads within 15 s, every applied object is
// kept and gets exactly one VM.
func TestFailoverWhenTheLeaderIsKilled(t *testing.T) {
	t.Parallel()
	if takeover := failover(t, 2*time.Second); takeover > 15*time.Second {
		t.Errorf("takeover took %s, want under 15s", takeover)
	}
}

// BenchmarkEtcdFailover measures, with the default leader lease, how long
// after the leader is cut off another control plane leads.
func BenchmarkEtcdFailover(b *testing.B) {
	var total time.Duration
	for range b.N {
		total += failover(b, DefaultLeaderLease)
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s-takeover")
}

// A leader paused past its lease (its connection to etcd frozen, as
// SIGSTOP would) is replaced; when it wakes, what it had in flight and
// anything it tries next is refused: it commits no write and makes no
// cloud call, and it follows the new leader.
func TestPausedLeaderMakesNoWriteAndNoCloudCallAfterItWakes(t *testing.T) {
	t.Parallel()
	tm := newTeam(t)
	a := tm.start(t, "a", 2*time.Second)
	waitFor(t, "a to lead", 15*time.Second, func() bool { return leader(a) == "a" })
	b := tm.start(t, "b", 2*time.Second)
	apply := func(c *api.Client, names ...string) {
		t.Helper()
		var items []api.ApplyItem
		for _, n := range names {
			items = append(items, deploymentItem(t, n))
		}
		if _, err := c.Apply(context.Background(), api.ApplyRequest{Items: items}); err != nil {
			t.Fatal(err)
		}
	}
	apply(b.client, "one", "two")
	waitFor(t, "a's deployments to run", 15*time.Second, func() bool { return converged(b.client, []string{"one", "two"}) })
	if a.fenced.Load() == 0 {
		t.Fatalf("the leader made no fenced write while leading")
	}

	a.gate.pause()
	pausedAt := time.Now()
	bLeads := waitFor(t, "b to lead", 15*time.Second, func() bool { return leader(b) == "b" })
	t.Logf("b leads %.2fs after a was paused", bLeads.Sub(pausedAt).Seconds())
	// b's leadership began at or before this revision: no fenced write of
	// a's may commit after it. (A write a sent before its lease lapsed may
	// be answered only once a wakes: when a hears back does not order it.)
	bSince := tm.revision(t)
	// Work that a, paused, would have done: b does it.
	apply(b.client, "three")
	waitFor(t, "b to launch three", 15*time.Second, func() bool { return converged(b.client, []string{"one", "two", "three"}) })

	wokeAt := time.Now()
	a.gate.resume()
	// a finds out, and follows.
	waitFor(t, "a to see b lead", 15*time.Second, func() bool { return leader(a) == "b" })
	apply(a.client, "four") // a follower's API still writes (unfenced)
	waitFor(t, "b to launch four", 15*time.Second, func() bool { return converged(b.client, []string{"one", "two", "three", "four"}) })
	if last := a.lastFenced.Load(); last > bSince {
		t.Errorf("the paused leader committed a fenced write at revision %d, after b led (by revision %d)", last, bSince)
	}
	if calls := tm.cloud.callsBy("a", bLeads); len(calls) > 0 {
		t.Errorf("the paused leader made %d cloud calls after b took over (it woke %s after): %v", len(calls), wokeAt.Sub(bLeads), calls)
	}
	checkNoDuplicates(t, b.client, tm.cloud, []string{"one", "two", "three", "four"})
}
