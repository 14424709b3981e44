package controller

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
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
		orphans: map[string]map[string]time.Time{},
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
