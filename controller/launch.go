package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/reconcile"
	"github.com/anycloud/anycloud/state"
	"github.com/go-logr/logr"
)

// launch resolves secrets afresh and creates the VM. A missing bundle is
// not an error: the deployment waits for it (nil VM, nil error).
func (c *Controller) launch(ctx context.Context, prov provider.Provider, d *manifests.Deployment, l *reconcile.Launch) (*provider.VM, error) {
	log := logr.FromContextOrDiscard(ctx)
	st := manifests.DeepCopy(d).Status // never alias the stored conditions
	env, versions, missing, err := c.resolve(ctx, d)
	if err != nil {
		return nil, err
	}
	now := c.clock.Now()
	if len(missing) > 0 {
		msg := fmt.Sprintf("secret bundle(s) %s not found; no VM is created until they exist", strings.Join(missing, ", "))
		return nil, c.notReady(ctx, d, st, reconcile.ReasonSecretBundleNotFound, msg)
	}
	req := provider.LaunchRequest{
		Deployment: d.Metadata.Name, UID: d.Metadata.UID, Attempt: l.Attempt,
		Token: provider.Token(d.Metadata.UID, l.Attempt), Image: d.Spec.Image, Command: d.Spec.Command,
		Env: env, VMType: d.Spec.VMType, Spot: d.Spec.Spot,
	}
	if a := d.Spec.AWS; a != nil {
		req.ImageID, req.Region, req.SubnetID, req.SecurityGroupIDs = a.ImageID, a.Region, a.SubnetID, a.SecurityGroupIDs
		req.MetadataHopLimit = a.MetadataHopLimit
	}
	vm, err := prov.Launch(ctx, req)
	err = newScrubber(env, d.Spec.Env).Error(err) // before it reaches a condition, an event or the log
	clear(env)
	if err == nil {
		// Known to the cache before anything else can fail, so that a
		// delete racing this launch terminates it.
		c.vms.put(prov, vm)
	}
	if errors.Is(err, provider.ErrAttemptSpent) {
		st.Attempt++
		st.AttemptGeneration, st.AttemptRestartedAt = d.Metadata.Generation, reconcile.RestartMarker(d)
		c.event(ctx, d, state.EventWarning, reconcile.ReasonLaunchFailed, fmt.Sprintf("attempt %d's VM is already gone; starting attempt %d", l.Attempt, st.Attempt))
		if _, werr := c.writeStatus(ctx, d, st); werr != nil {
			return nil, werr
		}
		return nil, err // requeued: the next reconcile launches the new attempt
	}
	if err != nil {
		reason := provider.Reason(err)
		msg := fmt.Sprintf("launch attempt %d: %v", l.Attempt, err)
		if errors.Is(err, provider.ErrInvalid) {
			c.event(ctx, d, state.EventWarning, reconcile.ReasonLaunchFailed, msg)
			reconcile.SetStalled(&st, reason, msg+"; fix the deployment, or `anycloud resubmit` once the cause is fixed", d.Metadata.Generation, now)
			if _, werr := c.writeStatus(ctx, d, st); werr != nil {
				return nil, werr
			}
			return nil, fmt.Errorf("%w: %v", ErrTerminal, err)
		}
		if werr := c.notReady(ctx, d, st, reason, msg); werr != nil {
			return nil, errors.Join(err, werr)
		}
		return nil, err
	}
	st.VM = reconcile.VMStatusFromLaunch(vm, &st, versions)
	st.VM.Scope = prov.Key()
	var bv []string
	for _, b := range d.Spec.Secrets {
		bv = append(bv, fmt.Sprintf("%s@%d", b, versions[b]))
	}
	what := "launched"
	if l.Recovery {
		what = "launched replacement"
	}
	msg := fmt.Sprintf("%s VM %s (attempt %d, %s)", what, vm.ID, l.Attempt, vm.Market)
	if len(bv) > 0 {
		msg += " with bundles " + strings.Join(bv, ", ")
	}
	c.event(ctx, d, state.EventNormal, reconcile.ReasonLaunched, msg)
	log.Info("VM launched", "vm", vm.ID, "attempt", l.Attempt, "recovery", l.Recovery)
	nd, err := c.writeStatus(ctx, d, st)
	if err != nil {
		return nil, err
	}
	*d = *nd
	return &vm, nil
}

// bootstrap starts the workload on the running VM recorded in st, with
// secrets resolved now, and records that it did and which bundle versions
// went in. It reports false when the workload did not start: a bundle is
// missing (retried when it appears), or the VM cannot be reached yet
// (retried after the boot back-off, returned as RequeueAfter: a booting VM
// is expected, not an error).
func (c *Controller) bootstrap(ctx context.Context, b provider.Bootstrapper, d *manifests.Deployment, st manifests.DeploymentStatus) (Result, bool, error) {
	log := logr.FromContextOrDiscard(ctx)
	d, err := c.writeStatus(ctx, d, st)
	if err != nil {
		return Result{}, false, err
	}
	st = manifests.DeepCopy(d).Status
	env, versions, missing, err := c.resolve(ctx, d)
	if err != nil {
		return Result{}, false, err
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("secret bundle(s) %s not found; the workload is started when they exist", strings.Join(missing, ", "))
		return Result{}, false, c.notReady(ctx, d, st, reconcile.ReasonSecretBundleNotFound, msg)
	}
	vm := st.VM
	req := provider.LaunchRequest{
		Deployment: d.Metadata.Name, UID: d.Metadata.UID, Attempt: vm.Attempt, Token: provider.Token(d.Metadata.UID, vm.Attempt),
		Image: d.Spec.Image, Command: d.Spec.Command, Env: env, VMType: d.Spec.VMType, Spot: d.Spec.Spot,
	}
	err = b.Bootstrap(ctx, provider.VM{ID: vm.ID, Deployment: d.Metadata.Name, UID: d.Metadata.UID, Attempt: vm.Attempt, Address: vm.Address}, req)
	err = newScrubber(env, d.Spec.Env).Error(err) // before it reaches a condition, an event or the log
	clear(env)
	if errors.Is(err, provider.ErrInvalid) {
		// Retrying cannot help (a value docker's env file cannot carry).
		msg := fmt.Sprintf("start the workload on VM %s: %v", vm.ID, err)
		c.event(ctx, d, state.EventWarning, reconcile.ReasonBootstrapFailed, msg)
		reconcile.SetStalled(&st, reconcile.ReasonBootstrapFailed, msg+"; fix the bundle or deployment, then `anycloud resubmit`", d.Metadata.Generation, c.clock.Now())
		if _, werr := c.writeStatus(ctx, d, st); werr != nil {
			return Result{}, false, werr
		}
		return Result{}, false, fmt.Errorf("%w: %w", ErrTerminal, err)
	}
	if err != nil {
		msg := fmt.Sprintf("start the workload on VM %s: %v", vm.ID, err)
		if werr := c.notReady(ctx, d, st, reconcile.ReasonBootstrapFailed, msg); werr != nil {
			return Result{}, false, errors.Join(err, werr)
		}
		delay := c.boot.failed(d.Metadata.UID, vm.ID, c.clock.Now())
		log.V(1).Info("workload not started yet; trying again", "vm", vm.ID, "after", delay.String(), "error", err.Error())
		return Result{RequeueAfter: delay}, false, nil
	}
	c.boot.forget(d.Metadata.UID)
	if p, ok := b.(provider.Provider); ok {
		c.close.unwatch(p, vm.ID)
	}
	st.VM.Bootstrapped = true
	st.VM.BundleVersions = versions
	var bv []string
	for _, name := range d.Spec.Secrets {
		bv = append(bv, fmt.Sprintf("%s@%d", name, versions[name]))
	}
	msg := fmt.Sprintf("started the workload on VM %s", vm.ID)
	if len(bv) > 0 {
		msg += " with bundles " + strings.Join(bv, ", ")
	}
	c.event(ctx, d, state.EventNormal, reconcile.ReasonBootstrapped, msg)
	log.Info("workload started", "vm", vm.ID)
	_, err = c.writeStatus(ctx, d, st)
	return Result{}, err == nil, err
}

// bootTimeout is how long the deployment's VMs may take from launch to a
// started workload before they are replaced.
func bootTimeout(d *manifests.Deployment) time.Duration {
	if a := d.Spec.AWS; a != nil {
		if t := a.BootTimeoutDuration(); t > 0 {
			return t
		}
	}
	return reconcile.DefaultBootTimeout
}

// resolve reads every bundle the deployment names, as the store holds it
// now, and merges them in order; explicit env wins. It returns the bundle
// generations that went in and the names of missing bundles.
func (c *Controller) resolve(ctx context.Context, d *manifests.Deployment) (map[string]string, map[string]int64, []string, error) {
	env := map[string]string{}
	versions := map[string]int64{}
	var missing []string
	for _, b := range d.Spec.Secrets {
		values, gen, err := c.store.OpenSecrets(ctx, manifests.KindSecretBundle, b)
		if errors.Is(err, state.ErrNotFound) {
			missing = append(missing, b)
			continue
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("open secret bundle %s: %w", b, err)
		}
		for k, v := range values {
			env[k] = v
		}
		versions[b] = gen
	}
	for k, v := range d.Spec.Env {
		env[k] = v
	}
	return env, versions, missing, nil
}
