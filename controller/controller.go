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
	"github.com/prometheus/client_golang/prometheus"

	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/state"
)

// Request names the deployment to reconcile.
type Request struct{ Name string }

// Result says when to look again; zero means "when something changes".
type Result struct{ RequeueAfter time.Duration }

// ErrTerminal marks an error that retrying cannot fix; the deployment is
// Stalled until the user changes it.
var ErrTerminal = errors.New("terminal")

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
	// Metrics is where the controller's Prometheus series are registered
	// (the registry behind /metrics); nil keeps them unseen.
	Metrics prometheus.Registerer
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

	queue         *Queue
	vms           *vmCache
	boot          *bootBackoff
	buckets       *bucketReads
	close         *closeWatch
	interruptions *interruptions
	metrics       *metrics
	// resyncNow asks the resync loop for a resync before its period ends
	// (credentials changed: their scopes, and the interruption queues that
	// go with them, follow at once).
	resyncNow chan struct{}
	// creds is the credentials memo the passes read (providers.go).
	credsMu sync.Mutex
	creds   *credentials
	seq     atomic.Uint64
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
	// kept is, per provider scope, the uids with cloud resources of
	// their own (provider.Keeper) that no deployment owns, to when they
	// were first seen so, and when the scope was last listed.
	kept       map[string]map[string]time.Time
	keptListed map[string]time.Time
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
		queue: NewQueue(o.Clock, o.Queue), vms: newVMCache(), boot: newBootBackoff(), buckets: newBucketReads(), seen: map[string]string{},
		orphans: map[string]map[string]time.Time{}, github: o.GitHub,
		kept: map[string]map[string]time.Time{}, keptListed: map[string]time.Time{},
	}
	c.close = newCloseWatch(c)
	c.interruptions = newInterruptions(c)
	c.resyncNow = make(chan struct{}, 1)
	c.metrics = newMetrics(o.Metrics, c.queue)
	return c
}

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
	run(c.watchCredentials)
	run(c.resyncLoop)
	for range c.workers {
		run(c.worker)
	}
	c.log.Info("controller started", "workers", c.workers, "resync", c.resync.String())
	<-ctx.Done()
	c.queue.ShutDown()
	c.interruptions.stop()
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
	start := time.Now()
	c.metrics.inFlight.Inc()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in reconcile: %v", p)
			log.Error(err, "reconcile panicked", "stack", string(debug.Stack()))
		}
		result := resultSuccess
		switch {
		case errors.Is(err, ErrTerminal):
			result = resultTerminal
		case err != nil:
			result = resultError
		case res.RequeueAfter > 0:
			result = resultRequeue
		}
		c.metrics.reconciles.WithLabelValues(result).Inc()
		c.metrics.reconcileTime.Observe(time.Since(start).Seconds())
		c.metrics.inFlight.Dec()
	}()
	res, err = c.Reconcile(ctx, Request{Name: key})
	switch {
	case errors.Is(err, ErrTerminal):
		log.Error(err, "reconcile failed; not retried until the deployment changes")
	case err != nil:
		log.Error(err, "reconcile failed", "retries", c.queue.Failures(key))
	default:
		log.V(1).Info("reconciled", "duration", time.Since(start).String(), "requeueAfter", res.RequeueAfter.String())
	}
	return res, err
}
