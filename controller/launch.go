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
)

// launchRequest is what the provider needs to create (or bootstrap) the
// VM of attempt for d, with env resolved.
func launchRequest(d *manifests.Deployment, attempt int, env map[string]string) provider.LaunchRequest {
	req := provider.LaunchRequest{
		Deployment: d.Metadata.Name, UID: d.Metadata.UID, Attempt: attempt,
		Token: provider.Token(d.Metadata.UID, attempt), Image: d.Spec.Image, Command: d.Spec.Command,
		Env: env, VMType: d.Spec.VMType, Spot: d.Spec.Spot.Enabled,
		OnDemandFallback: d.Spec.Spot.Fallback == manifests.SpotFallbackOnDemand,
	}
	if d.Spec.AWS != nil {
		a := *d.Spec.AWS
		req.AWS = &a
		req.PolicyARNs = a.PolicyARNs
	}
	req.IAMRole = d.Spec.IAMRole()
	for _, b := range d.Spec.Buckets {
		bucket, prefix, _ := manifests.BucketAndPrefix(b.URI)
		req.Buckets = append(req.Buckets, provider.Bucket{
			URI: b.URI, Bucket: bucket, Prefix: prefix, Path: b.Path, ReadWrite: b.ReadWrite(), Interval: b.Interval(),
			OtherAccount: b.Credentials != "" && b.Credentials != d.Spec.Credentials,
		})
	}
	return req
}

// launch resolves secrets afresh and creates the VM of l.Attempt. A
// missing bundle is not an error: the deployment waits for it (nil VM,
// nil error).
func (p *pass) launch(ctx context.Context, l *reconcile.Launch) (*provider.VM, error) {
	d := p.d
	env, versions, missing, err := p.c.resolve(ctx, d)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		p.notReady(ctx, reconcile.ReasonSecretBundleNotFound,
			fmt.Sprintf("secret bundle(s) %s not found; no VM is created until they exist", strings.Join(missing, ", ")))
		return nil, nil
	}
	req := launchRequest(d, l.Attempt, env)
	if err := p.c.withGitHub(ctx, d, &req); err != nil {
		clear(env)
		return nil, err
	}
	vm, err := p.prov.Launch(ctx, req)
	err = newScrubber(env, d.Spec.Env).Error(err) // before it reaches a condition, an event or the log
	clear(env)
	err = scrubGitHub(err, req.GitHub)
	if err == nil {
		// Known to the cache before anything else can fail, so that a
		// delete racing this launch terminates it.
		p.c.vms.put(p.prov, vm)
	}
	switch {
	case errors.Is(err, provider.ErrAttemptSpent):
		p.st.Attempt++
		p.st.AttemptGeneration, p.st.AttemptRestartedAt = d.Metadata.Generation, reconcile.RestartMarker(d)
		p.c.event(ctx, d, state.EventWarning, reconcile.ReasonLaunchFailed, fmt.Sprintf("attempt %d's VM is already gone; starting attempt %d", l.Attempt, p.st.Attempt))
		return nil, err // requeued: the next reconcile launches the new attempt
	case errors.Is(err, provider.ErrInvalid):
		msg := fmt.Sprintf("launch attempt %d: %v", l.Attempt, err)
		return nil, p.stall(ctx, provider.Reason(err), msg, "fix the deployment, or `anycloud resubmit` once the cause is fixed", err)
	case err != nil:
		p.notReady(ctx, provider.Reason(err), fmt.Sprintf("launch attempt %d: %v", l.Attempt, err))
		return nil, err
	}
	p.st.VM = reconcile.VMStatusFromLaunch(vm, &p.st, versions)
	p.st.VM.Scope = p.prov.Key()
	p.st.IAM = nil
	if vm.InstanceProfile != "" {
		p.st.IAM = &manifests.IAMStatus{Role: vm.Role, InstanceProfile: vm.InstanceProfile, Managed: req.IAMRole == manifests.IAMRoleManaged}
	}
	what := "launched"
	if l.Recovery {
		what = "launched replacement"
	}
	if vm.Tried != "" {
		msg := "no capacity in " + vm.Tried + fmt.Sprintf("; placed VM %s (%s) elsewhere", vm.ID, vm.Market)
		if d.Spec.Spot.Enabled && vm.Market != "spot" {
			msg = "no spot capacity in any zone tried (" + vm.Tried + fmt.Sprintf("); fell back to on-demand: VM %s", vm.ID)
		}
		p.c.event(ctx, d, state.EventWarning, reconcile.ReasonCapacityFallback, msg)
	}
	p.c.event(ctx, d, state.EventNormal, reconcile.ReasonLaunched,
		fmt.Sprintf("%s VM %s (attempt %d, %s)", what, vm.ID, l.Attempt, vm.Market)+withBundles(d, versions))
	p.log.Info("VM launched", "vm", vm.ID, "attempt", l.Attempt, "recovery", l.Recovery)
	return &vm, nil
}

// bootstrap starts the workload on the running VM recorded in st, with
// secrets resolved now, and records that it did and which bundle versions
// went in. It reports false when the workload did not start: a bundle is
// missing (retried when it appears), or the VM cannot be reached yet
// (retried after the boot back-off, returned as RequeueAfter: a booting VM
// is expected, not an error).
func (p *pass) bootstrap(ctx context.Context, b provider.Bootstrapper) (Result, bool, error) {
	d := p.d
	env, versions, missing, err := p.c.resolve(ctx, d)
	if err != nil {
		return Result{}, false, err
	}
	if len(missing) > 0 {
		p.notReady(ctx, reconcile.ReasonSecretBundleNotFound,
			fmt.Sprintf("secret bundle(s) %s not found; the workload is started when they exist", strings.Join(missing, ", ")))
		return Result{}, false, nil
	}
	vm := p.st.VM
	req := launchRequest(d, vm.Attempt, env)
	if err := p.c.withGitHub(ctx, d, &req); err != nil {
		clear(env)
		return Result{}, false, err
	}
	sessions, expiry, err := p.c.withSessions(ctx, d, &req)
	for k, v := range sessions {
		env[k] = v // scrubbed as secrets are; never sent as env
	}
	scrub := newScrubber(env, d.Spec.Env)
	for k := range sessions {
		delete(env, k)
	}
	if err != nil {
		clear(env)
		err = scrub.Error(err)
		msg := fmt.Sprintf("mint the credentials of a bucket in another account: %v", err)
		if errors.Is(err, provider.ErrInvalid) {
			return Result{}, false, p.stall(ctx, reconcile.ReasonBootstrapFailed, msg, "fix the bucket's credentials, then `anycloud resubmit`", err)
		}
		p.notReady(ctx, reconcile.ReasonBootstrapFailed, msg)
		return Result{}, false, err
	}
	target := provider.VM{ID: vm.ID, Deployment: d.Metadata.Name, UID: d.Metadata.UID, Attempt: vm.Attempt, Address: vm.Address}
	err = b.Bootstrap(ctx, target, req)
	err = scrub.Error(err) // before it reaches a condition, an event or the log
	clear(env)
	err = scrubGitHub(err, req.GitHub)
	msg := fmt.Sprintf("start the workload on VM %s: %v", vm.ID, err)
	switch {
	case errors.Is(err, provider.ErrInvalid):
		// Retrying cannot help (a value docker's env file cannot carry).
		return Result{}, false, p.stall(ctx, reconcile.ReasonBootstrapFailed, msg, "fix the bundle or deployment, then `anycloud resubmit`", err)
	case err != nil:
		p.notReady(ctx, reconcile.ReasonBootstrapFailed, msg)
		delay := p.c.boot.failed(d.Metadata.UID, vm.ID, p.c.clock.Now())
		p.log.V(1).Info("workload not started yet; trying again", "vm", vm.ID, "after", delay.String(), "error", err.Error())
		return Result{RequeueAfter: delay}, false, nil
	}
	p.c.boot.forget(d.Metadata.UID)
	p.c.close.unwatch(p.prov, vm.ID)
	vm.Bootstrapped = true
	vm.BundleVersions = versions
	p.st.Buckets = p.bucketStatus(ctx, target, req, expiry, scrub)
	if every := copyBackInterval(d); every > 0 {
		p.c.buckets.read(d.Metadata.UID, vm.ID, p.c.clock.Now().Add(every))
	}
	clear(sessions)
	p.c.event(ctx, d, state.EventNormal, reconcile.ReasonBootstrapped, fmt.Sprintf("started the workload on VM %s", vm.ID)+withBundles(d, versions)+bucketsLine(p.st.Buckets))
	p.log.Info("workload started", "vm", vm.ID)
	return Result{}, true, nil
}

// withBundles is " with bundles a@3, b@1" for the bundle versions a VM
// got, or "".
func withBundles(d *manifests.Deployment, versions map[string]int64) string {
	var bv []string
	for _, b := range d.Spec.Secrets {
		bv = append(bv, fmt.Sprintf("%s@%d", b, versions[b]))
	}
	if len(bv) == 0 {
		return ""
	}
	return " with bundles " + strings.Join(bv, ", ")
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
