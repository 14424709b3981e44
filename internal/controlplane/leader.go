package controlplane

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/state"
)

// DefaultLeaderLease is the TTL of a control plane's session on etcd:
// a leader that stops renewing it (killed, paused, cut off) is replaced
// about this long after, and the replicas' keys go with it.
const DefaultLeaderLease = 5 * time.Second

// replica is one control plane of several on one etcd store. It
// registers itself under replicas/ with its session's lease, and
// campaigns under leader/ (etcd's concurrency.Election); while it leads,
// lead runs the controller with the store fenced on its leader key.
type replica struct {
	name  string
	addr  string
	store *state.Etcd
	ttl   time.Duration
	log   logr.Logger
	// lead runs the controller until ctx ends (leadership lost or the
	// control plane stopping).
	lead func(ctx context.Context, fenced *state.Etcd) error

	mu      sync.Mutex
	leading bool
	since   time.Time
}

func (r *replica) key(what string) string { return r.store.Prefix() + what }

// run campaigns, leads and campaigns again until ctx ends.
func (r *replica) run(ctx context.Context) {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		err := r.term(ctx)
		if ctx.Err() != nil {
			return
		}
		r.log.Error(err, "leadership or campaign ended; campaigning again")
		t := time.NewTimer(min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// errLeaseLapsed: the session's lease was not renewed in time.
var errLeaseLapsed = errors.New("this control plane's etcd lease lapsed")

// term is one session: register, campaign, lead until the session ends.
func (r *replica) term(ctx context.Context) error {
	secs := int(max(r.ttl/time.Second, 1))
	sess, err := concurrency.NewSession(r.store.Client(), concurrency.WithTTL(secs), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("etcd session: %w", err)
	}
	defer func() {
		// An orderly stop revokes the lease: another leads at once. (The
		// session's own Close revokes under ctx, which has ended.)
		sess.Orphan()
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		r.store.Client().Revoke(rctx, sess.Lease())
		rcancel()
	}()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-sctx.Done():
		}
	}()
	if _, err := r.store.Client().Put(sctx, r.key("replicas/"+r.name), r.addr, clientv3.WithLease(sess.Lease())); err != nil {
		return fmt.Errorf("register replica: %w", err)
	}
	el := concurrency.NewElection(sess, r.key("leader"))
	// A campaign that ends with its context cleans up under the client's
	// own context, which lasts until the store closes: do not wait for it.
	won := make(chan error, 1)
	go func() { won <- el.Campaign(sctx, r.name) }()
	select {
	case err := <-won:
		if err != nil {
			return fmt.Errorf("campaign: %w", err)
		}
	case <-sctx.Done():
		if ctx.Err() == nil {
			return errLeaseLapsed
		}
		return ctx.Err()
	}
	fence := state.Fence{Key: el.Key(), Rev: el.Rev()}
	r.setLeading(true)
	defer r.setLeading(false)
	r.log.Info("leading", "replica", r.name, "leaderKey", fence.Key, "revision", fence.Rev)
	err = r.lead(sctx, r.store.Fenced(fence))
	if ctx.Err() == nil && sctx.Err() != nil {
		err = errLeaseLapsed
	}
	r.log.Info("no longer leading", "replica", r.name)
	if ctx.Err() == nil {
		// Stepping down, not stopping: give up the key if it is still
		// ours, so that the next leader need not wait for the lease.
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		el.Resign(rctx)
		rcancel()
	}
	return err
}

func (r *replica) setLeading(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.leading = on
	if on {
		r.since = time.Now()
	}
}

// status says who leads and which replicas are up, as etcd sees it now.
func (r *replica) status(ctx context.Context) (api.ControlPlaneStatus, error) {
	st := api.ControlPlaneStatus{Store: "etcd", Prefix: r.store.Prefix(), Self: r.name}
	st.Endpoints = r.store.Client().Endpoints()
	resp, err := r.store.Client().Get(ctx, r.key("leader"), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil {
		return st, fmt.Errorf("read the leader: %w", err)
	}
	if len(resp.Kvs) > 0 {
		st.Leader = string(resp.Kvs[0].Value)
	}
	reps, err := r.store.Client().Get(ctx, r.key("replicas/"), clientv3.WithPrefix())
	if err != nil {
		return st, fmt.Errorf("read the replicas: %w", err)
	}
	for _, kv := range reps.Kvs {
		name := string(kv.Key[len(r.key("replicas/")):])
		st.Replicas = append(st.Replicas, api.Replica{Name: name, API: string(kv.Value), Leader: name == st.Leader})
	}
	sort.Slice(st.Replicas, func(i, j int) bool { return st.Replicas[i].Name < st.Replicas[j].Name })
	r.mu.Lock()
	if r.leading {
		st.LeadingSince = r.since.UTC()
	}
	r.mu.Unlock()
	return st, nil
}

// termGatherer serves the metrics of the controller of the current
// leadership term: each term's controller registers its series on a
// registry of its own, which replaces the last one's.
type termGatherer struct {
	mu  sync.Mutex
	reg *prometheus.Registry
}

func (g *termGatherer) next() *prometheus.Registry {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reg = prometheus.NewRegistry()
	return g.reg
}

func (g *termGatherer) Gather() ([]*dto.MetricFamily, error) {
	g.mu.Lock()
	reg := g.reg
	g.mu.Unlock()
	if reg == nil {
		return nil, nil
	}
	return reg.Gather()
}
