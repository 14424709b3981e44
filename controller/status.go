package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/reconcile"
	"github.com/anycloud/anycloud/state"
	"github.com/go-logr/logr"
)

// providerFailed records why the provider cannot be used. A deleting
// deployment whose credentials are gone is let go: nothing could
// terminate its VM, and the orphan sweep takes over.
func (c *Controller) providerFailed(ctx context.Context, d *manifests.Deployment, err error) (Result, error) {
	reason := reconcile.ReasonProviderUnavailable
	if errors.Is(err, state.ErrNotFound) {
		reason = reconcile.ReasonCredentialsNotFound
		if d.Metadata.DeletionTimestamp != nil {
			c.event(ctx, d, state.EventWarning, reason, fmt.Sprintf("%v; the VM, if any, is left to the orphan sweep", err))
			d.Metadata.RemoveFinalizer(manifests.FinalizerVM)
			_, uerr := c.store.Update(ctx, d)
			return Result{}, uerr
		}
	}
	if d.Metadata.DeletionTimestamp != nil {
		err = fmt.Errorf("%w; the deletion waits to terminate the VM (`anycloud delete deployment %s --force` stops waiting: its VM is then left to the orphan sweep)", err, d.Metadata.Name)
	}
	st := manifests.DeepCopy(d).Status // never alias the stored conditions
	if werr := c.notReady(ctx, d, st, reason, err.Error()); werr != nil {
		return Result{}, errors.Join(err, werr)
	}
	if reason == reconcile.ReasonCredentialsNotFound {
		return Result{}, nil // retried when the resync sees them
	}
	return Result{}, err
}

// notReady records Ready=False with a reason and message, with a warning
// event when they change (a deployment that keeps waiting does not repeat
// itself), and writes the status.
func (c *Controller) notReady(ctx context.Context, d *manifests.Deployment, st manifests.DeploymentStatus, reason, msg string) error {
	prev := manifests.FindCondition(st.Conditions, manifests.ConditionReady)
	if prev == nil || prev.Reason != reason || prev.Message != msg {
		c.event(ctx, d, state.EventWarning, reason, msg)
		logr.FromContextOrDiscard(ctx).Info("not ready", "reason", reason, "message", msg)
	}
	reconcile.SetReady(&st, manifests.ConditionFalse, reason, msg, d.Metadata.Generation, c.clock.Now())
	_, err := c.writeStatus(ctx, d, st)
	return err
}

// writeStatus stores st when it differs from what is stored, and returns
// the object as stored.
func (c *Controller) writeStatus(ctx context.Context, d *manifests.Deployment, st manifests.DeploymentStatus) (*manifests.Deployment, error) {
	next := manifests.DeepCopy(d)
	next.Status = st
	if bytes.Equal(d.StatusJSON(), next.StatusJSON()) {
		return d, nil
	}
	o, err := c.store.UpdateStatus(ctx, next)
	if err != nil {
		return nil, fmt.Errorf("write status: %w", err)
	}
	return o.(*manifests.Deployment), nil
}

func (c *Controller) recordEvents(ctx context.Context, d *manifests.Deployment, evs []reconcile.Event) {
	for _, e := range evs {
		c.event(ctx, d, e.Type, e.Reason, e.Message)
	}
}

func (c *Controller) event(ctx context.Context, d *manifests.Deployment, typ, reason, msg string) {
	if err := c.store.RecordEvent(ctx, manifests.Ref(d), state.Event{Type: typ, Reason: reason, Message: msg}); err != nil {
		logr.FromContextOrDiscard(ctx).Error(err, "record event", "reason", reason)
	}
}

// leaveOldScope handles a deployment whose credentials or region changed
// under a running VM: the VM is terminated where it is (when that scope's
// provider is known; otherwise the orphan sweep of that scope ends it) and
// a new attempt starts in the new scope. Without this the old VM would
// leak, and the new scope's listing would make it look preempted.
func (c *Controller) leaveOldScope(ctx context.Context, d *manifests.Deployment, prov provider.Provider) (*manifests.Deployment, error) {
	vm := d.Status.VM
	if vm == nil || vm.Scope == "" || vm.Scope == prov.Key() {
		return d, nil
	}
	msg := fmt.Sprintf("the deployment moved from %s to %s; VM %s is left to the old scope's orphan sweep", vm.Scope, prov.Key(), vm.ID)
	if old := c.vms.provider(vm.Scope); old != nil {
		if err := old.Terminate(ctx, vm.ID); err != nil {
			return nil, fmt.Errorf("terminate VM %s in %s: %w", vm.ID, vm.Scope, err)
		}
		c.vms.markTerminated(old, provider.VM{ID: vm.ID, UID: d.Metadata.UID, Attempt: vm.Attempt})
		msg = fmt.Sprintf("the deployment moved from %s to %s; terminated VM %s there", vm.Scope, prov.Key(), vm.ID)
	}
	c.event(ctx, d, state.EventNormal, "Moved", msg)
	st := manifests.DeepCopy(d).Status
	st.VM = nil
	st.Attempt++
	st.AttemptGeneration = d.Metadata.Generation
	st.AttemptRestartedAt = reconcile.RestartMarker(d)
	st.Phase = manifests.PhaseLaunching
	reconcile.SetReady(&st, manifests.ConditionFalse, reconcile.ReasonLaunching, fmt.Sprintf("moving to %s", prov.Key()), d.Metadata.Generation, c.clock.Now())
	return c.writeStatus(ctx, d, st)
}
