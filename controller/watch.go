package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/reconcile"
	"github.com/anycloud/anycloud/state"
)

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
		users, err := c.store.Users(ctx, manifests.KindSecretBundle, ev.Object.GetMeta().Name)
		if err != nil {
			c.log.Error(err, "users of a changed bundle", "bundle", ev.Object.GetMeta().Name)
			return
		}
		for _, u := range users {
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

// watchCredentials asks for a resync when credentials appear, change or
// go: the scopes in use, and what goes with them (the interruption
// queues), follow without waiting for the period.
func (c *Controller) watchCredentials(ctx context.Context) {
	c.watch(ctx, manifests.KindCredentials, func(state.WatchEvent) {
		c.forgetCredentials()
		select {
		case c.resyncNow <- struct{}{}:
		default:
		}
	})
}
