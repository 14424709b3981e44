package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/reconcile"
	"github.com/anycloud/anycloud/state"
)

// interruptions follows the cloud's own events about the VMs of every
// scope in use (provider.Interrupter): a warning that a VM will be taken
// back is kept for its deployment's next reconcile, which starts the
// replacement at once (make before break); a state change nobody asked
// for goes into the VM cache, and the deployment is reconciled at once.
// Each event is also recorded against its deployment. The resync stays
// the safety net: events that never arrive cost only time.
type interruptions struct {
	c *Controller

	mu       sync.Mutex
	scopes   map[string]*followed         // by scope key
	warnings map[string]reconcile.Warning // by deployment uid
}

type followed struct {
	prov   provider.Provider
	cancel context.CancelFunc
	done   chan struct{}
}

func newInterruptions(c *Controller) *interruptions {
	return &interruptions{c: c, scopes: map[string]*followed{}, warnings: map[string]reconcile.Warning{}}
}

// sync follows the scopes in use, and only those: a new scope gets a
// consumer; a scope whose provider was made anew (its credentials were
// edited) gets a new one; a scope no longer in use (its credentials are
// gone) loses its consumer and what it made in the cloud, removed with
// the provider the controller still holds.
func (in *interruptions) sync(ctx context.Context, scopes []provider.Provider) {
	var stopped []*followed
	var gone []provider.Provider
	defer func() {
		// Outside the lock: a consumer that is handling an event takes it.
		for _, f := range stopped {
			f.cancel()
			<-f.done
		}
		for _, p := range gone {
			go in.remove(p)
		}
	}()
	in.mu.Lock()
	defer in.mu.Unlock()
	want := map[string]provider.Provider{}
	for _, p := range scopes {
		if _, ok := p.(provider.Interrupter); ok {
			want[p.Key()] = p
		}
	}
	for key, f := range in.scopes {
		p, ok := want[key]
		if ok && p == f.prov {
			continue
		}
		stopped = append(stopped, f)
		delete(in.scopes, key)
		if !ok {
			gone = append(gone, f.prov)
		}
	}
	for key, p := range want {
		if _, ok := in.scopes[key]; ok {
			continue
		}
		fctx, cancel := context.WithCancel(ctx)
		f := &followed{prov: p, cancel: cancel, done: make(chan struct{})}
		in.scopes[key] = f
		go in.follow(fctx, f)
	}
}

// follow consumes one scope's events until ctx ends, starting again after
// a pause when the provider gives up.
func (in *interruptions) follow(ctx context.Context, f *followed) {
	defer close(f.done)
	it := f.prov.(provider.Interrupter)
	for ctx.Err() == nil {
		err := it.Interruptions(ctx, func(ev provider.Interruption) { in.handle(ctx, f.prov, ev) })
		if errors.Is(err, provider.ErrInterruptionsOff) {
			return
		}
		if err != nil {
			in.c.log.Info("interruption events unavailable; the resync alone notices", "scope", f.prov.Key(), "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Minute):
		}
	}
}

// remove deletes what a scope no longer in use made in the cloud.
func (in *interruptions) remove(p provider.Provider) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.(provider.Interrupter).RemoveInterruptions(ctx); err != nil {
		in.c.log.Error(err, "remove the interruption queue and rules", "scope", p.Key())
		return
	}
	in.c.log.Info("interruption queue and rules removed", "scope", p.Key())
}

// handle maps one event to its deployment through the VM cache.
func (in *interruptions) handle(ctx context.Context, p provider.Provider, ev provider.Interruption) {
	vm, ok := in.c.vms.byID(p, ev.VMID)
	if !ok {
		return // not a VM of ours
	}
	in.c.metrics.interruptions.WithLabelValues(string(ev.Kind)).Inc()
	ref := manifests.ObjectRef{Kind: manifests.KindDeployment, Name: vm.Deployment, UID: vm.UID}
	switch ev.Kind {
	case provider.StateChange:
		if ev.State.Alive() {
			return // starting: the close watch follows those
		}
		if vm.State == provider.StateTerminated {
			return // known already (we ended it, or a listing showed it)
		}
		vm.State, vm.Reason = ev.State, ev.Detail
		in.c.vms.merge(p, []provider.VM{vm})
	default:
		kind := map[provider.InterruptionKind]string{
			provider.InterruptionWarning:     reconcile.WarningInterruption,
			provider.RebalanceRecommendation: reconcile.WarningRebalance,
			provider.ScheduledChange:         reconcile.WarningScheduled,
		}[ev.Kind]
		in.mu.Lock()
		in.warnings[vm.UID] = reconcile.Warning{VMID: vm.ID, Kind: kind, Detail: ev.Detail}
		in.mu.Unlock()
	}
	if err := in.c.store.RecordEvent(ctx, ref, state.Event{Type: state.EventNormal, Reason: "CloudEvent", Message: fmt.Sprintf("%s (VM %s)", ev.Detail, vm.ID)}); err != nil {
		in.c.log.Error(err, "record event", "deployment", vm.Deployment)
	}
	in.c.queue.Add(vm.Deployment)
}

// warning is the warning waiting for uid's next decision, if any; it is
// handed out once (the decision acts on it, durably, or finds it stale).
func (in *interruptions) warning(uid string) *reconcile.Warning {
	in.mu.Lock()
	defer in.mu.Unlock()
	w, ok := in.warnings[uid]
	if !ok {
		return nil
	}
	delete(in.warnings, uid)
	return &w
}

// stop ends every consumer.
func (in *interruptions) stop() {
	in.mu.Lock()
	scopes := in.scopes
	in.scopes = map[string]*followed{}
	in.mu.Unlock()
	for _, f := range scopes {
		f.cancel()
		<-f.done
	}
}
