package controller

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/anycloud/anycloud/provider"
)

// The close watch follows VMs that are starting, stopping or being
// bootstrapped more closely than the resync does: while a scope has such
// VMs, one batched Describe of all of them every WatchPeriod (Karpenter
// batches its describes the same way), whose changes go into the VM cache
// and queue their deployments at once. A launched VM thus reaches its
// first SSH attempt within about a second of EC2 reporting it running,
// not at the next resync. The resync stays the full listing.
const (
	// WatchPeriod is the pause between two Describes of a scope.
	WatchPeriod = time.Second
	// watchFor is how long a VM stays watched after the last reconcile
	// that asked for it: longer than the boot back-off's longest pause.
	watchFor = 45 * time.Second
)

type closeWatch struct {
	c *Controller
	// manual: no loops are started; tests call pollAll with a fake clock.
	manual bool

	mu     sync.Mutex
	scopes map[string]*watchedScope
}

type watchedScope struct {
	prov provider.Provider
	// ids are the watched VMs with when they stop being watched.
	ids     map[string]time.Time
	running bool
}

func newCloseWatch(c *Controller) *closeWatch {
	return &closeWatch{c: c, scopes: map[string]*watchedScope{}}
}

// watch follows VM id of p's scope closely for a while, if p can describe
// VMs by id. The scope's loop starts with its first VM and ends with its
// last.
func (w *closeWatch) watch(ctx context.Context, p provider.Provider, id string) {
	if _, ok := p.(provider.Describer); !ok || id == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.scopes[p.Key()]
	if s == nil {
		s = &watchedScope{prov: p, ids: map[string]time.Time{}}
		w.scopes[p.Key()] = s
	}
	s.ids[id] = w.c.clock.Now().Add(watchFor)
	if !s.running && !w.manual {
		s.running = true
		go w.loop(ctx, s)
	}
}

// unwatch stops following VM id of p's scope.
func (w *closeWatch) unwatch(p provider.Provider, id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := w.scopes[p.Key()]; s != nil {
		delete(s.ids, id)
	}
}

// watched is the number of VMs watched closely, for tests.
func (w *closeWatch) watched() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, s := range w.scopes {
		n += len(s.ids)
	}
	return n
}

func (w *closeWatch) loop(ctx context.Context, s *watchedScope) {
	d := s.prov.(provider.Describer)
	for {
		select {
		case <-ctx.Done():
			w.mu.Lock()
			s.running = false
			w.mu.Unlock()
			return
		case <-after(w.c.clock, WatchPeriod):
		}
		if !w.poll(ctx, s, d) {
			return
		}
	}
}

// poll describes the scope's watched VMs once, records what changed and
// queues their deployments. It reports false when none is watched any
// more.
func (w *closeWatch) poll(ctx context.Context, s *watchedScope, d provider.Describer) bool {
	ids := w.due(s)
	if len(ids) == 0 {
		return false
	}
	vms, err := d.Describe(ctx, ids)
	if err != nil {
		w.c.log.V(1).Info("describe watched VMs failed", "scope", s.prov.Key(), "vms", len(ids), "error", err.Error())
		return true
	}
	for _, vm := range w.c.vms.merge(s.prov, vms) {
		w.c.queue.Add(vm.Deployment)
	}
	// A VM that is gone needs no close look any more; the resync and its
	// deployment's reconcile take it from there.
	w.mu.Lock()
	for _, vm := range vms {
		if vm.State == provider.StateTerminated {
			delete(s.ids, vm.ID)
		}
	}
	w.mu.Unlock()
	return true
}

// pollAll polls every scope once: the manual mode of tests.
func (w *closeWatch) pollAll(ctx context.Context) {
	w.mu.Lock()
	scopes := make([]*watchedScope, 0, len(w.scopes))
	for _, s := range w.scopes {
		scopes = append(scopes, s)
	}
	w.mu.Unlock()
	for _, s := range scopes {
		w.poll(ctx, s, s.prov.(provider.Describer))
	}
}

// due drops the VMs no longer watched and returns the others, sorted; with
// none left, the scope's loop is marked ended.
func (w *closeWatch) due(s *watchedScope) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.c.clock.Now()
	var ids []string
	for id, until := range s.ids {
		if now.After(until) {
			delete(s.ids, id)
			continue
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		s.running = false
	}
	slices.Sort(ids)
	return ids
}
