package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/reconcile"
	"github.com/anycloud/anycloud/state"
)

// Reconcile brings one deployment's VM in line with its manifest.
//
// Contract: a non-nil error is retried with back-off; an error wrapping
// ErrTerminal is not retried and the deployment is Stalled; nil with
// RequeueAfter asks to look again then; nil alone waits for the next
// change or resync.
//
// The body follows Flux's order: load; if deleting, finalize; ensure the
// finalizer; then the phases. Everything a pass changes in the status is
// kept in one pass value and written once, when the pass ends, joined
// with its error. There is one exception, the launch checkpoint: the
// attempt whose idempotency token a launch uses must be stored before the
// launch, so that a control plane that dies during it finds the VM again.
func (c *Controller) Reconcile(ctx context.Context, req Request) (res Result, err error) {
	obj, err := c.store.Get(ctx, manifests.KindDeployment, req.Name)
	if errors.Is(err, state.ErrNotFound) {
		return Result{}, nil
	}
	if err != nil {
		return Result{}, err
	}
	p := &pass{c: c, log: logr.FromContextOrDiscard(ctx)}
	p.set(obj.(*manifests.Deployment))
	defer func() {
		if werr := p.writeStatus(ctx); werr != nil {
			err = errors.Join(err, werr)
		}
	}()
	return p.run(ctx)
}

// pass is one Reconcile of one deployment. Its helpers change st, the
// status the pass will leave, and return what they did; none writes the
// status itself.
type pass struct {
	c   *Controller
	log logr.Logger
	// d is the deployment as stored (its resourceVersion current), never
	// changed in place: a copy of what the store returned.
	d *manifests.Deployment
	// st is the status being made.
	st   manifests.DeploymentStatus
	prov provider.Provider
	// gone: the pass let the object go (its last finalizer removed), so
	// there is no status to write.
	gone bool
}

// set makes obj the stored deployment and restarts st from its status.
func (p *pass) set(obj *manifests.Deployment) {
	p.d = manifests.DeepCopy(obj)
	p.st = copyStatus(p.d.Status)
}

// copyStatus is a status that shares no memory with st.
func copyStatus(st manifests.DeploymentStatus) manifests.DeploymentStatus {
	return manifests.DeepCopy(&manifests.Deployment{Status: st}).Status
}

// current is the deployment with the status made so far: what the next
// decision reads. It shares memory with the pass: reconcile.Decide only
// reads its input and makes its plan's status anew (its tests scribble
// over a plan to make sure).
func (p *pass) current() *manifests.Deployment {
	d := *p.d
	d.Status = p.st
	return &d
}

// maxDecisions bounds the decisions of one pass. A pass acts and then
// looks again, so that one event is answered in one pass: a preempted
// VM is recorded, then its replacement launched (two decisions), then
// the new VM recorded as starting (three). After that the pass waits for
// the VM to change.
const maxDecisions = 3

func (p *pass) run(ctx context.Context) (Result, error) {
	d := p.d
	deleting := d.Metadata.DeletionTimestamp != nil
	if deleting && !d.Metadata.HasFinalizer(manifests.FinalizerVM) {
		return Result{}, nil // nothing of ours holds it
	}
	// Ensure the finalizer before anything can be launched, so that a
	// delete always waits for the VM.
	if !deleting && !d.Metadata.HasFinalizer(manifests.FinalizerVM) {
		if err := p.updateMetadata(ctx, func(m *manifests.ObjectMeta) { m.AddFinalizer(manifests.FinalizerVM) }); err != nil {
			return Result{}, fmt.Errorf("add finalizer: %w", err)
		}
	}
	if deleting && d.Status.Attempt == 0 && d.Status.VM == nil {
		// Nothing was ever launched (an attempt is recorded before its
		// launch): no VM to wait for, and no need of a provider that may
		// never have worked.
		return Result{}, p.letGo(ctx, nil)
	}

	prov, err := p.c.providerFor(ctx, p.d)
	if err != nil {
		return p.providerFailed(ctx, err)
	}
	p.prov = prov
	observed, err := p.c.vms.observed(ctx, prov, p.d.Metadata.UID)
	if err != nil {
		return p.providerFailed(ctx, err)
	}
	if err := p.leaveOldScope(ctx); err != nil {
		return Result{}, err
	}
	p.c.watchClosely(ctx, prov, p.d, observed)
	p.warnExpiring(ctx)

	_, needsBootstrap := prov.(provider.Bootstrapper)
	missing := p.c.missingBundles(ctx, p.d)
	warning := p.c.interruptions.warning(p.d.Metadata.UID)
	var result Result
	for range maxDecisions {
		plan := reconcile.Decide(reconcile.Input{
			Deployment: p.current(), Observed: observed, Now: p.c.clock.Now(),
			NeedsBootstrap: needsBootstrap, BootTimeout: bootTimeout(p.d), MissingBundles: missing, Warning: warning,
		})
		warning = nil // one decision acts on it (durably: status.draining), or finds it stale
		p.st = plan.Status
		if plan.Lost != "" {
			p.c.metrics.recoveries.WithLabelValues(plan.Lost).Inc()
		}
		if plan.RecoveredAfter > 0 {
			p.c.metrics.replacementTime.Observe(plan.RecoveredAfter.Seconds())
		}
		if p.st.VM != nil && p.st.VM.Scope == "" {
			p.st.VM.Scope = prov.Key()
		}
		p.c.recordEvents(ctx, p.d, plan.Events)
		if dr := p.st.Draining; dr != nil && (p.d.Status.Draining == nil || p.d.Status.Draining.ID != dr.ID) {
			// Warned: the draining VM copies its buckets back while its
			// replacement starts (EC2 gives two minutes).
			go p.c.flush(context.WithoutCancel(ctx), prov, p.d, provider.VM{ID: dr.ID, Attempt: dr.Attempt, Address: dr.Address}, "at the interruption warning")
		}
		acted := false
		// A VM that is already dead (a preemption) is cleaned up after its
		// replacement is launched, not before: the replacement does not
		// wait for the cleanup. A live one goes first.
		var dead []provider.VM
		for _, vm := range plan.Terminate {
			if cur := p.d.Status.VM; deleting && vm.State == provider.StateRunning && cur != nil && cur.ID == vm.ID && (cur.Bootstrapped || !needsBootstrap) {
				p.c.flush(ctx, prov, p.d, vm, "before the deletion terminates it")
			}
			if plan.Launch != nil && !plan.RemoveFinalizer && !plan.Bootstrap && (vm.State == provider.StateStopped || vm.State == provider.StateTerminated) {
				dead = append(dead, vm)
				continue
			}
			if err := p.terminate(ctx, prov, vm); err != nil {
				return Result{}, err
			}
			acted = true
		}
		switch {
		case plan.RemoveFinalizer:
			return Result{}, p.letGo(ctx, prov)
		case plan.Bootstrap:
			// A VM still booting is tried on its own schedule, whatever
			// queued the deployment sooner.
			if wait := p.c.boot.wait(p.d.Metadata.UID, p.st.VM.ID, p.c.clock.Now()); wait > 0 {
				return Result{RequeueAfter: wait}, nil
			}
			res, started, err := p.bootstrap(ctx, prov.(provider.Bootstrapper))
			if err != nil || !started {
				return res, err // a missing bundle or a VM still booting: status says which
			}
			acted = true
		case plan.Launch != nil:
			if err := p.checkpoint(ctx); err != nil {
				return Result{}, err
			}
			vm, err := p.launch(ctx, plan.Launch)
			if vm != nil {
				observed = p.c.vms.put(prov, *vm)
			}
			for _, d := range dead {
				if terr := p.terminate(ctx, prov, d); terr != nil && err == nil {
					err = terr
				}
			}
			if err != nil || vm == nil {
				return Result{}, err // a nil VM waits for a bundle; status says why
			}
			p.c.watchClosely(ctx, prov, p.current(), observed)
			acted = true
		}
		result = Result{RequeueAfter: plan.RequeueAfter}
		if !acted {
			p.refreshBuckets(ctx, observed, needsBootstrap)
			return result, nil
		}
		observed = p.c.vms.cached(prov, p.d.Metadata.UID)
	}
	return result, nil
}

// terminate ends one VM, saying so when it cannot.
func (p *pass) terminate(ctx context.Context, prov provider.Provider, vm provider.VM) error {
	if err := prov.Terminate(ctx, vm.ID); err != nil {
		p.c.event(ctx, p.d, state.EventWarning, "TerminateFailed", fmt.Sprintf("terminate VM %s: %v", vm.ID, err))
		return fmt.Errorf("terminate VM %s: %w", vm.ID, err)
	}
	p.log.Info("VM terminated", "vm", vm.ID, "attempt", vm.Attempt)
	p.c.vms.markTerminated(prov, vm)
	return nil
}

// updateMetadata changes the deployment's metadata in the store now (a
// finalizer), keeping the status made so far.
func (p *pass) updateMetadata(ctx context.Context, change func(*manifests.ObjectMeta)) error {
	next := manifests.DeepCopy(p.d)
	change(&next.Metadata)
	o, err := p.c.store.Update(ctx, next)
	if err != nil {
		return err
	}
	st := p.st
	p.set(o.(*manifests.Deployment))
	p.st = st
	return nil
}

// letGo releases what the provider kept for a deleting deployment whose
// VMs are gone (prov may be nil), then removes the VM finalizer, which
// lets the store delete it. Release comes first so that whoever waits
// for the object to go (delete --wait) finds its keys and role gone too.
// A release that fails is logged and does not hold the deletion: the
// sweep of kept resources (kept.go) releases them later.
func (p *pass) letGo(ctx context.Context, prov provider.Provider) error {
	uid := p.d.Metadata.UID
	if r, ok := prov.(provider.Releaser); ok {
		if err := r.Release(ctx, uid); err != nil {
			p.log.Error(err, "release provider resources")
		}
	}
	if err := p.updateMetadata(ctx, func(m *manifests.ObjectMeta) { m.RemoveFinalizer(manifests.FinalizerVM) }); err != nil {
		return fmt.Errorf("remove finalizer: %w", err)
	}
	p.gone = true
	p.c.boot.forget(uid)
	p.c.buckets.forget(uid)
	if prov != nil {
		p.c.vms.forget(prov, uid)
	}
	p.log.Info("deployment deleted")
	return nil
}

// checkpoint writes the status made so far now: before a launch, whose
// token is the attempt recorded here.
func (p *pass) checkpoint(ctx context.Context) error { return p.writeStatus(ctx) }

// writeStatus stores st when it differs from what is stored.
func (p *pass) writeStatus(ctx context.Context) error {
	if p.gone || p.d == nil {
		return nil
	}
	// A shallow copy: the store reads what it is given and copies what it
	// keeps.
	next := *p.d
	next.Status = p.st
	if bytes.Equal(p.d.StatusJSON(), next.StatusJSON()) {
		return nil
	}
	o, err := p.c.store.UpdateStatus(ctx, &next)
	if err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	st := p.st
	p.set(o.(*manifests.Deployment))
	p.st = st
	return nil
}

// notReady sets Ready=False with a reason and message, with a warning
// event when they change (a deployment that keeps waiting does not repeat
// itself).
func (p *pass) notReady(ctx context.Context, reason, msg string) {
	prev := manifests.FindCondition(p.st.Conditions, manifests.ConditionReady)
	if prev == nil || prev.Reason != reason || prev.Message != msg {
		p.c.event(ctx, p.d, state.EventWarning, reason, msg)
		p.log.Info("not ready", "reason", reason, "message", msg)
	}
	reconcile.SetReady(&p.st, manifests.ConditionFalse, reason, msg, p.d.Metadata.Generation, p.c.clock.Now())
}

// stall records that the current attempt cannot succeed until the user
// changes something, and returns the terminal error, cause kept.
func (p *pass) stall(ctx context.Context, reason, msg, hint string, cause error) error {
	p.c.event(ctx, p.d, state.EventWarning, reason, msg)
	reconcile.SetStalled(&p.st, reason, msg+"; "+hint, p.d.Metadata.Generation, p.c.clock.Now())
	return fmt.Errorf("%w: %w", ErrTerminal, cause)
}

// providerFailed records why the provider cannot be used. A deleting
// deployment whose credentials are gone is let go: nothing could
// terminate its VM, and the orphan sweep takes over.
func (p *pass) providerFailed(ctx context.Context, err error) (Result, error) {
	d := p.d
	reason := reconcile.ReasonProviderUnavailable
	if errors.Is(err, state.ErrNotFound) {
		reason = reconcile.ReasonCredentialsNotFound
		if d.Metadata.DeletionTimestamp != nil {
			p.c.event(ctx, d, state.EventWarning, reason, fmt.Sprintf("%v; the VM, if any, is left to the orphan sweep", err))
			return Result{}, p.letGo(ctx, nil)
		}
	}
	if d.Metadata.DeletionTimestamp != nil {
		err = fmt.Errorf("%w; the deletion waits to terminate the VM (`anycloud delete deployment %s --force` stops waiting: its VM is then left to the orphan sweep)", err, d.Metadata.Name)
	}
	p.notReady(ctx, reason, err.Error())
	if reason == reconcile.ReasonCredentialsNotFound {
		return Result{}, nil // retried when the resync sees them
	}
	return Result{}, err
}

// leaveOldScope handles a deployment whose credentials or region changed
// under a running VM: the VM is terminated where it is (when that scope's
// provider is known; otherwise the orphan sweep of that scope ends it) and
// a new attempt starts in the new scope. Without this the old VM would
// leak, and the new scope's listing would make it look preempted.
func (p *pass) leaveOldScope(ctx context.Context) error {
	vm := p.st.VM
	if vm == nil || vm.Scope == "" || vm.Scope == p.prov.Key() {
		return nil
	}
	msg := fmt.Sprintf("the deployment moved from %s to %s; VM %s is left to the old scope's orphan sweep", vm.Scope, p.prov.Key(), vm.ID)
	if old := p.c.vms.provider(vm.Scope); old != nil {
		if err := old.Terminate(ctx, vm.ID); err != nil {
			return fmt.Errorf("terminate VM %s in %s: %w", vm.ID, vm.Scope, err)
		}
		p.c.vms.markTerminated(old, provider.VM{ID: vm.ID, UID: p.d.Metadata.UID, Attempt: vm.Attempt})
		msg = fmt.Sprintf("the deployment moved from %s to %s; terminated VM %s there", vm.Scope, p.prov.Key(), vm.ID)
	}
	p.c.event(ctx, p.d, state.EventNormal, "Moved", msg)
	st := &p.st
	st.VM = nil
	st.Attempt++
	st.AttemptGeneration = p.d.Metadata.Generation
	st.AttemptRestartedAt = reconcile.RestartMarker(p.d)
	st.Phase = manifests.PhaseLaunching
	reconcile.SetReady(st, manifests.ConditionFalse, reconcile.ReasonLaunching, fmt.Sprintf("moving to %s", p.prov.Key()), p.d.Metadata.Generation, p.c.clock.Now())
	return nil
}
