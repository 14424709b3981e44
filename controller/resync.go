package controller

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
)

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
		if scopes != nil && ctx.Err() == nil {
			c.interruptions.sync(ctx, scopes)
		}
		select {
		case <-ctx.Done():
			return
		case <-after(c.clock, c.resync):
		case <-c.resyncNow:
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
// queues every deployment. It returns every scope in use, listed or not
// (nil when it could not tell). Its cost is
// linear in the deployments: each credentials is read and opened once,
// and every loop stops when ctx ends.
func (c *Controller) Resync(ctx context.Context) []provider.Provider {
	log := c.log.WithName("resync")
	objs, _, err := c.store.List(ctx, manifests.KindDeployment)
	if err != nil {
		log.Error(err, "list deployments")
		return nil
	}
	creds := c.forgetCredentials()
	scopes := map[string]provider.Provider{}
	// owner maps each deployment's uid to the scope its VM belongs in: a
	// VM elsewhere (a deployment that moved) is an orphan there.
	owner := make(map[string]string, len(objs))
	for _, o := range objs {
		if ctx.Err() != nil {
			return nil
		}
		d := o.(*manifests.Deployment)
		p, err := creds.providerFor(ctx, d)
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
	if list, _, err := c.store.List(ctx, manifests.KindCredentials); err == nil {
		names := make(map[string]bool, len(list))
		for _, o := range list {
			name := o.GetMeta().Name
			names[name] = true
			obj, secrets, err := creds.get(ctx, name)
			if err != nil {
				continue
			}
			if p, err := c.providers.For(ctx, obj, secrets, ""); err == nil {
				if _, ok := scopes[p.Key()]; !ok {
					scopes[p.Key()] = p
				}
			}
		}
		if r, ok := c.providers.(Retainer); ok {
			r.Retain(names)
		}
	}
	var listed, all []provider.Provider
	byKey := map[string]provider.Provider{}
	for _, k := range slices.Sorted(maps.Keys(scopes)) {
		if ctx.Err() != nil {
			return nil
		}
		all = append(all, scopes[k])
		p := scopes[k]
		if _, err := c.vms.relist(ctx, p); err != nil {
			log.V(1).Info("list VMs failed", "scope", k, "error", err.Error())
			continue
		}
		listed = append(listed, p)
		byKey[k] = p
	}
	// Every scope is listed before any is swept: two credentials of the
	// same account and region see the same VMs, and a VM that its own
	// deployment's scope lists is that deployment's, not an orphan of the
	// other scope.
	for _, p := range listed {
		c.sweepOrphans(ctx, p, owner, byKey)
		c.sweepKept(ctx, p, owner)
	}
	c.sweepLeftovers(ctx, listed, owner)
	for _, o := range objs {
		c.queue.Add(o.GetMeta().Name)
	}
	return all
}

// sweepOrphans terminates managed VMs that no deployment owns in this
// scope once they have been orphans for the grace period. Deployments are listed before
// VMs, so a VM launched meanwhile looks orphaned for one resync at most;
// the grace period covers that.
func (c *Controller) sweepOrphans(ctx context.Context, p provider.Provider, owner map[string]string, listed map[string]provider.Provider) {
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
		} else if other := listed[scope]; ok && other != nil {
			if _, seen := c.vms.byID(other, vm.ID); seen {
				continue // its deployment's scope sees it too: the same account and region
			}
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
