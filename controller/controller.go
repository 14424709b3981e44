package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/reconcile"
	"github.com/anycloud/anycloud/state"
)

// Request names the deployment to reconcile.
type Request struct{ Name string }

// Result says when to look again; zero means "when something changes".
type Result struct{ RequeueAfter time.Duration }

// ErrTerminal marks an error that retrying cannot fix; the deployment is
// Stalled until the user changes it.
var ErrTerminal = errors.New("terminal")

// Providers hands out the provider for a deployment's credentials.
type Providers interface {
	// For returns the provider for creds (whose secret fields are in
	// secrets) and the region override, if any.
	For(ctx context.Context, creds *manifests.Credentials, secrets map[string]string, region string) (provider.Provider, error)
}

// Options configure a Controller; zero values take defaults.
type Options struct {
	Store     state.Store
	Providers Providers
	Log       logr.Logger
	Clock     Clock
	// Resync is how often every deployment is looked at, with one VM
	// listing per provider scope. Default 30s.
	Resync time.Duration
	// Workers bounds concurrent reconciles. Default 8.
	Workers int
	// OrphanGrace is how long a managed VM that no deployment owns is
	// left alone before it is terminated. Default 2m.
	OrphanGrace time.Duration
	Queue       QueueOptions
	// GitHub reads the signed-in GitHub token at each VM creation (nil
	// result: not logged in); nil when there is no login to read.
	GitHub func(context.Context) (*provider.GitHubAuth, error)
}

// Controller keeps every Deployment's VM matching its manifest.
type Controller struct {
	store     state.Store
	providers Providers
	log       logr.Logger
	clock     Clock
	resync    time.Duration
	workers   int
	grace     time.Duration

	queue *Queue
	vms   *vmCache
	boot  *bootBackoff
	close *closeWatch
	seq   atomic.Uint64
	// github reads the GitHub login (Options.GitHub).
	github func(context.Context) (*provider.GitHubAuth, error)
	// seen is, per deployment name, what the controller last saw of it
	// that calls for a reconcile (changeKey): a watch event that changes
	// nothing of that — the controller's own status writes — is dropped,
	// as controller-runtime's generation predicate drops them.
	seenMu sync.Mutex
	seen   map[string]string

	mu sync.Mutex
	// orphans maps, per provider scope, the VM ids that no deployment
	// owns to when they were first seen so.
	orphans map[string]map[string]time.Time
}

// New returns a controller; Run starts it.
func New(o Options) *Controller {
	if o.Clock == nil {
		o.Clock = RealClock{}
	}
	if o.Resync == 0 {
		o.Resync = 30 * time.Second
	}
	if o.Workers == 0 {
		o.Workers = 8
	}
	if o.OrphanGrace == 0 {
		o.OrphanGrace = 2 * time.Minute
	}
	c := &Controller{
		store: o.Store, providers: o.Providers, log: o.Log, clock: o.Clock,
		resync: o.Resync, workers: o.Workers, grace: o.OrphanGrace,
		queue: NewQueue(o.Clock, o.Queue), vms: newVMCache(), boot: newBootBackoff(), seen: map[string]string{},
		orphans: map[string]map[string]time.Time{}, github: o.GitHub,
	}
	c.close = newCloseWatch(c)
	return c
}

// Queue exposes the work queue, for tests that drive it synchronously.
func (c *Controller) Queue() *Queue { return c.queue }

// Run watches the store, resyncs and reconciles until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer c.queue.ShutDown()
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	run(c.watchDeployments)
	run(c.watchBundles)
	run(c.resyncLoop)
	for range c.workers {
		run(c.worker)
	}
	c.log.Info("controller started", "workers", c.workers, "resync", c.resync.String())
	<-ctx.Done()
	c.queue.ShutDown()
	return nil
}

func (c *Controller) worker(ctx context.Context) {
	for {
		key, ok := c.queue.Get()
		if !ok {
			return
		}
		c.ProcessKey(ctx, key)
	}
}

// ProcessKey reconciles one key and tells the queue how it went: a
// failure comes back after its back-off, a success is forgotten, a
// RequeueAfter comes back then. A panic is logged and retried, never
// fatal.
func (c *Controller) ProcessKey(ctx context.Context, key string) {
	defer c.queue.Done(key)
	res, err := c.safeReconcile(ctx, key)
	switch {
	case err != nil && !errors.Is(err, ErrTerminal):
		c.queue.AddRateLimited(key)
	case res.RequeueAfter > 0:
		c.queue.Forget(key)
		c.queue.AddAfter(key, res.RequeueAfter)
	default:
		c.queue.Forget(key)
	}
}

func (c *Controller) safeReconcile(ctx context.Context, key string) (res Result, err error) {
	log := c.log.WithValues("deployment", key, "reconcileID", c.seq.Add(1))
	ctx = logr.NewContext(ctx, log)
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in reconcile: %v", p)
			log.Error(err, "reconcile panicked", "stack", string(debug.Stack()))
		}
	}()
	start := time.Now()
	res, err = c.Reconcile(ctx, Request{Name: key})
	if err != nil && !errors.Is(err, ErrTerminal) {
		log.Error(err, "reconcile failed", "retries", c.queue.Failures(key))
	} else {
		log.V(1).Info("reconciled", "duration", time.Since(start).String(), "requeueAfter", res.RequeueAfter.String())
	}
	return res, err
}

// Reconcile brings one deployment's VM in line with its manifest.
//
// Contract: a non-nil error is retried with back-off; an error wrapping
// ErrTerminal is not retried and the deployment is Stalled; nil with
// RequeueAfter asks to look again then; nil alone waits for the next
// change or resync.
func (c *Controller) Reconcile(ctx context.Context, req Request) (Result, error) {
	log := logr.FromContextOrDiscard(ctx)
	obj, err := c.store.Get(ctx, manifests.KindDeployment, req.Name)
	if errors.Is(err, state.ErrNotFound) {
		return Result{}, nil
	}
	if err != nil {
		return Result{}, err
	}
	d := manifests.DeepCopy(obj.(*manifests.Deployment))

	// Ensure the finalizer before anything can be launched, so that a
	// delete always waits for the VM.
	if d.Metadata.DeletionTimestamp == nil && !d.Metadata.HasFinalizer(manifests.FinalizerVM) {
		d.Metadata.AddFinalizer(manifests.FinalizerVM)
		o, err := c.store.Update(ctx, d)
		if err != nil {
			return Result{}, fmt.Errorf("add finalizer: %w", err)
		}
		d = o.(*manifests.Deployment)
	}
	if d.Metadata.DeletionTimestamp != nil && !d.Metadata.HasFinalizer(manifests.FinalizerVM) {
		return Result{}, nil // nothing of ours holds it
	}
	if d.Metadata.DeletionTimestamp != nil && d.Status.Attempt == 0 && d.Status.VM == nil {
		// Nothing was ever launched (an attempt is recorded before its
		// launch): no VM to wait for, and no need of a provider that may
		// never have worked.
		d.Metadata.RemoveFinalizer(manifests.FinalizerVM)
		if _, err := c.store.Update(ctx, d); err != nil {
			return Result{}, fmt.Errorf("remove finalizer: %w", err)
		}
		return Result{}, nil
	}

	prov, err := c.providerFor(ctx, d)
	if err != nil {
		return c.providerFailed(ctx, d, err)
	}
	observed, err := c.vms.observed(ctx, prov, d.Metadata.UID)
	if err != nil {
		return c.providerFailed(ctx, d, err)
	}

	if d, err = c.leaveOldScope(ctx, d, prov); err != nil {
		return Result{}, err
	}
	c.watchClosely(ctx, prov, d, observed)

	var result Result
	missing := c.missingBundles(ctx, d)
	for round := 0; ; round++ {
		_, needsBootstrap := prov.(provider.Bootstrapper)
		plan := reconcile.Decide(reconcile.Input{
			Deployment: d, Observed: observed, Now: c.clock.Now(),
			NeedsBootstrap: needsBootstrap, BootTimeout: bootTimeout(d), MissingBundles: missing,
		})
		if plan.Status.VM != nil && plan.Status.VM.Scope == "" {
			plan.Status.VM.Scope = prov.Key()
		}
		c.recordEvents(ctx, d, plan.Events)
		acted := false
		for _, vm := range plan.Terminate {
			if err := prov.Terminate(ctx, vm.ID); err != nil {
				c.event(ctx, d, state.EventWarning, "TerminateFailed", fmt.Sprintf("terminate VM %s: %v", vm.ID, err))
				return Result{}, fmt.Errorf("terminate VM %s: %w", vm.ID, err)
			}
			log.Info("VM terminated", "vm", vm.ID, "attempt", vm.Attempt)
			c.vms.markTerminated(prov, vm)
			acted = true
		}
		if plan.RemoveFinalizer {
			d.Status = plan.Status
			d.Metadata.RemoveFinalizer(manifests.FinalizerVM)
			if _, err := c.store.Update(ctx, d); err != nil {
				return Result{}, fmt.Errorf("remove finalizer: %w", err)
			}
			c.vms.forget(prov, d.Metadata.UID)
			c.boot.forget(d.Metadata.UID)
			if r, ok := prov.(provider.Releaser); ok {
				if err := r.Release(ctx, d.Metadata.UID); err != nil {
					log.Error(err, "release provider resources")
				}
			}
			log.Info("deployment deleted")
			return Result{}, nil
		}
		if plan.Bootstrap {
			// A VM still booting is tried on its own schedule, whatever
			// queued the deployment sooner.
			if wait := c.boot.wait(d.Metadata.UID, plan.Status.VM.ID, c.clock.Now()); wait > 0 {
				return Result{RequeueAfter: wait}, nil
			}
			res, ok, err := c.bootstrap(ctx, prov.(provider.Bootstrapper), d, plan.Status)
			if err != nil || !ok {
				return res, err // a missing bundle or a VM still booting: status says which
			}
			obj, err := c.store.Get(ctx, manifests.KindDeployment, d.Metadata.Name)
			if err != nil {
				return Result{}, err
			}
			d = manifests.DeepCopy(obj.(*manifests.Deployment))
			acted = true
		} else if plan.Launch != nil {
			d, err = c.writeStatus(ctx, d, plan.Status)
			if err != nil {
				return Result{}, err
			}
			vm, err := c.launch(ctx, prov, d, plan.Launch)
			if err != nil {
				return Result{}, err
			}
			if vm == nil {
				return Result{}, nil // waiting for a bundle; status says why
			}
			observed = c.vms.put(prov, *vm)
			c.watchClosely(ctx, prov, d, observed)
			acted = true
		} else if d, err = c.writeStatus(ctx, d, plan.Status); err != nil {
			return Result{}, err
		}
		result = Result{RequeueAfter: plan.RequeueAfter}
		if !acted || round >= 2 {
			return result, nil
		}
		observed = c.vms.cached(prov, d.Metadata.UID)
	}
}

// watchClosely has the close watch follow the VMs that are changing on
// their own (starting, stopping) and those whose workload is not started
// yet: their next state matters within a second, not a resync.
func (c *Controller) watchClosely(ctx context.Context, prov provider.Provider, d *manifests.Deployment, observed []provider.VM) {
	_, bootstraps := prov.(provider.Bootstrapper)
	for _, vm := range observed {
		started := d.Status.VM != nil && d.Status.VM.ID == vm.ID && d.Status.VM.Bootstrapped
		switch {
		case vm.State == provider.StatePending || vm.State == provider.StateStopping:
			c.close.watch(ctx, prov, vm.ID)
		case vm.State == provider.StateRunning && bootstraps && !started:
			c.close.watch(ctx, prov, vm.ID)
		default:
			c.close.unwatch(prov, vm.ID) // steady, or gone
		}
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
	if err := c.withGitHub(ctx, d, &req); err != nil {
		clear(env)
		return nil, err
	}
	vm, err := prov.Launch(ctx, req)
	err = newScrubber(env, d.Spec.Env).Error(err) // before it reaches a condition, an event or the log
	clear(env)
	err = scrubGitHub(err, req.GitHub)
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
	if err := c.withGitHub(ctx, d, &req); err != nil {
		clear(env)
		return Result{}, false, err
	}
	err = b.Bootstrap(ctx, provider.VM{ID: vm.ID, Deployment: d.Metadata.Name, UID: d.Metadata.UID, Attempt: vm.Attempt, Address: vm.Address}, req)
	err = newScrubber(env, d.Spec.Env).Error(err) // before it reaches a condition, an event or the log
	clear(env)
	err = scrubGitHub(err, req.GitHub)
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

// providerFor finds the deployment's credentials and their provider.
func (c *Controller) providerFor(ctx context.Context, d *manifests.Deployment) (provider.Provider, error) {
	obj, err := c.store.Get(ctx, manifests.KindCredentials, d.Spec.Credentials)
	if err != nil {
		return nil, fmt.Errorf("credentials %q: %w", d.Spec.Credentials, err)
	}
	secrets, _, err := c.store.OpenSecrets(ctx, manifests.KindCredentials, d.Spec.Credentials)
	if err != nil {
		return nil, fmt.Errorf("credentials %q: %w", d.Spec.Credentials, err)
	}
	region := ""
	if d.Spec.AWS != nil {
		region = d.Spec.AWS.Region
	}
	return c.providers.For(ctx, obj.(*manifests.Credentials), secrets, region)
}

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

// Logs streams the workload log of a deployment's current VM.
func (c *Controller) Logs(ctx context.Context, name string, follow bool, w io.Writer) error {
	obj, err := c.store.Get(ctx, manifests.KindDeployment, name)
	if err != nil {
		return err
	}
	d := obj.(*manifests.Deployment)
	if d.Status.VM == nil {
		return fmt.Errorf("deployment %s has no VM yet (phase %s): %w", name, d.Status.Phase, state.ErrNotFound)
	}
	prov, err := c.providerFor(ctx, d)
	if err != nil {
		return err
	}
	lg, ok := prov.(provider.Logger)
	if !ok {
		return fmt.Errorf("provider %s cannot stream logs", prov.Key())
	}
	vm := provider.VM{ID: d.Status.VM.ID, Address: d.Status.VM.Address, Deployment: name, UID: d.Metadata.UID, Attempt: d.Status.VM.Attempt}
	return lg.Logs(ctx, vm, follow, w)
}

// SSHInfo says how to reach a deployment's current VM over SSH.
func (c *Controller) SSHInfo(ctx context.Context, name string) (provider.SSHInfo, error) {
	obj, err := c.store.Get(ctx, manifests.KindDeployment, name)
	if err != nil {
		return provider.SSHInfo{}, err
	}
	d := obj.(*manifests.Deployment)
	if d.Status.VM == nil {
		return provider.SSHInfo{}, fmt.Errorf("deployment %s has no VM yet (phase %s): %w", name, d.Status.Phase, state.ErrNotFound)
	}
	prov, err := c.providerFor(ctx, d)
	if err != nil {
		return provider.SSHInfo{}, err
	}
	sa, ok := prov.(provider.SSHAccess)
	if !ok {
		return provider.SSHInfo{}, fmt.Errorf("deployment %s runs on provider %s, which has no SSH (for local containers use docker exec): %w", name, prov.Key(), state.ErrInvalid)
	}
	vm := provider.VM{ID: d.Status.VM.ID, Address: d.Status.VM.Address, Deployment: name, UID: d.Metadata.UID, Attempt: d.Status.VM.Attempt}
	return sa.SSHInfo(ctx, vm)
}

// watchDeployments queues every change of a deployment that calls for a
// reconcile: not the controller's own status writes, which would cancel
// a pending back-off and make a failing step loop as fast as the machine
// allows.
func (c *Controller) watchDeployments(ctx context.Context) {
	c.watch(ctx, manifests.KindDeployment, func(ev state.WatchEvent) {
		if c.changed(ev) {
			c.queue.Add(ev.Object.GetMeta().Name)
		}
	})
}

// changed reports whether a watch event changes what the controller acts
// on, remembering what it saw.
func (c *Controller) changed(ev state.WatchEvent) bool {
	name := ev.Object.GetMeta().Name
	c.seenMu.Lock()
	defer c.seenMu.Unlock()
	if ev.Type == state.Deleted {
		delete(c.seen, name)
		return true
	}
	key := changeKey(ev.Object.(*manifests.Deployment))
	if c.seen[name] == key {
		return false
	}
	c.seen[name] = key
	return true
}

// changeKey is what of a deployment calls for a reconcile when it
// changes: its identity, its spec (through the generation), its deletion,
// its finalizers and its resubmit marker. Status is the controller's own.
func changeKey(d *manifests.Deployment) string {
	m := d.Metadata
	deleting := ""
	if m.DeletionTimestamp != nil {
		deleting = m.DeletionTimestamp.String()
	}
	return fmt.Sprintf("%s|%d|%s|%s|%s", m.UID, m.Generation, deleting, strings.Join(m.Finalizers, ","), reconcile.RestartMarker(d))
}

// watchBundles queues the users of a bundle that appears or changes, so
// that a deployment waiting for it is retried at once.
func (c *Controller) watchBundles(ctx context.Context) {
	c.watch(ctx, manifests.KindSecretBundle, func(ev state.WatchEvent) {
		if ev.Type == state.Deleted {
			return
		}
		for _, u := range ev.Object.(*manifests.SecretBundle).Status.UsedBy {
			c.queue.Add(u.Name)
		}
	})
}

// watch follows a kind, watching again when the store drops a watcher
// that fell behind.
func (c *Controller) watch(ctx context.Context, k manifests.Kind, fn func(state.WatchEvent)) {
	for ctx.Err() == nil {
		snapshot, ch, err := c.store.Watch(ctx, k)
		if err != nil {
			c.log.Error(err, "watch", "kind", k)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		for _, o := range snapshot {
			fn(state.WatchEvent{Type: state.Added, Object: o})
		}
		for ev := range ch {
			fn(ev)
		}
	}
}

// resyncLoop resyncs at once and then every period; providers that can
// tell about changes sooner trigger a relist of their scope.
func (c *Controller) resyncLoop(ctx context.Context) {
	notified := map[string]bool{}
	for {
		scopes := c.Resync(ctx)
		for _, p := range scopes {
			if n, ok := p.(provider.Notifier); ok && !notified[p.Key()] {
				notified[p.Key()] = true
				go c.followNotifications(ctx, n, p)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-after(c.clock, c.resync):
		}
	}
}

func after(clock Clock, d time.Duration) <-chan struct{} {
	ch := make(chan struct{})
	clock.AfterFunc(d, func() { close(ch) })
	return ch
}

// notifyRelists are the pauses before each relisting that follows a
// provider notification (cumulative: about 20ms, 200ms and 1s after it).
var notifyRelists = []time.Duration{20 * time.Millisecond, 180 * time.Millisecond, 800 * time.Millisecond}

// followNotifications relists a scope when its provider reports a change
// and queues the deployments whose VMs changed.
func (c *Controller) followNotifications(ctx context.Context, n provider.Notifier, p provider.Provider) {
	kick := make(chan struct{}, 1)
	go func() {
		for ctx.Err() == nil {
			if err := n.Notify(ctx, func() {
				select {
				case kick <- struct{}{}:
				default:
				}
			}); err != nil {
				c.log.V(1).Info("provider notifications ended; retrying", "scope", p.Key(), "error", err.Error())
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		// The engine's listing can lag its events by a little: list a few
		// times over the next second, and queue whatever changed.
		for _, wait := range notifyRelists {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			changed, err := c.vms.relist(ctx, p)
			if err != nil {
				c.log.V(1).Info("relist after notification failed", "scope", p.Key(), "error", err.Error())
				continue
			}
			c.queueOwners(ctx, changed)
		}
	}
}

// queueOwners queues the deployments that own the given uids.
func (c *Controller) queueOwners(ctx context.Context, uids []string) {
	if len(uids) == 0 {
		return
	}
	objs, _, err := c.store.List(ctx, manifests.KindDeployment)
	if err != nil {
		return
	}
	want := map[string]bool{}
	for _, u := range uids {
		want[u] = true
	}
	for _, o := range objs {
		if want[o.GetMeta().UID] {
			c.queue.Add(o.GetMeta().Name)
		}
	}
}

// Resync lists every provider scope in use once, sweeps orphans and
// queues every deployment. It returns the scopes it listed.
func (c *Controller) Resync(ctx context.Context) []provider.Provider {
	log := c.log.WithName("resync")
	objs, _, err := c.store.List(ctx, manifests.KindDeployment)
	if err != nil {
		log.Error(err, "list deployments")
		return nil
	}
	scopes := map[string]provider.Provider{}
	// owner maps each deployment's uid to the scope its VM belongs in: a
	// VM elsewhere (a deployment that moved) is an orphan there.
	owner := map[string]string{}
	for _, o := range objs {
		d := o.(*manifests.Deployment)
		p, err := c.providerFor(ctx, d)
		if err != nil {
			owner[d.Metadata.UID] = "" // unknown: sweep no VM of it
			continue                   // the deployment's reconcile reports it
		}
		owner[d.Metadata.UID] = p.Key()
		scopes[p.Key()] = p
	}
	// Every credentials' scope is swept, used or not, so that a VM whose
	// deployment is gone is found wherever it was left. The local engine is
	// among them (the built-in credentials).
	if creds, _, err := c.store.List(ctx, manifests.KindCredentials); err == nil {
		for _, o := range creds {
			cr := o.(*manifests.Credentials)
			secrets, _, err := c.store.OpenSecrets(ctx, manifests.KindCredentials, cr.Metadata.Name)
			if err != nil {
				continue
			}
			if p, err := c.providers.For(ctx, cr, secrets, ""); err == nil {
				if _, ok := scopes[p.Key()]; !ok {
					scopes[p.Key()] = p
				}
			}
		}
	}
	keys := make([]string, 0, len(scopes))
	for k := range scopes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var listed []provider.Provider
	for _, k := range keys {
		p := scopes[k]
		if _, err := c.vms.relist(ctx, p); err != nil {
			log.V(1).Info("list VMs failed", "scope", k, "error", err.Error())
			continue
		}
		listed = append(listed, p)
		c.sweepOrphans(ctx, p, owner)
	}
	c.sweepLeftovers(ctx, listed, owner)
	for _, o := range objs {
		c.queue.Add(o.GetMeta().Name)
	}
	return listed
}

// sweepOrphans terminates managed VMs that no deployment owns in this
// scope once they have been orphans for the grace period. Deployments are listed before
// VMs, so a VM launched meanwhile looks orphaned for one resync at most;
// the grace period covers that.
func (c *Controller) sweepOrphans(ctx context.Context, p provider.Provider, owner map[string]string) {
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	orphans := c.orphans[p.Key()]
	if orphans == nil {
		orphans = map[string]time.Time{}
		c.orphans[p.Key()] = orphans
	}
	seen := map[string]bool{}
	for _, vm := range c.vms.all(p) {
		if vm.State == provider.StateTerminated {
			continue
		}
		if scope, ok := owner[vm.UID]; ok && (scope == p.Key() || scope == "") {
			continue // owned here, or by a deployment whose scope is unknown now
		}
		seen[vm.ID] = true
		first, ok := orphans[vm.ID]
		if !ok {
			orphans[vm.ID] = now
			c.log.Info("VM owned by no deployment; terminating it after the grace period", "vm", vm.ID, "deployment", vm.Deployment, "grace", c.grace.String())
			continue
		}
		if now.Sub(first) < c.grace {
			continue
		}
		if err := p.Terminate(ctx, vm.ID); err != nil {
			c.log.Error(err, "terminate orphan", "vm", vm.ID)
			continue
		}
		c.vms.markTerminated(p, vm)
		delete(orphans, vm.ID)
		c.log.Info("orphan VM terminated", "vm", vm.ID, "deployment", vm.Deployment, "uid", vm.UID)
	}
	for id := range orphans {
		if !seen[id] {
			delete(orphans, id)
		}
	}
}
