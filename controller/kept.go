package controller

import (
	"context"
	"time"

	"github.com/anycloud/anycloud/provider"
)

// KeptSweepEvery is how often a scope's per-deployment resources (aws:
// IAM roles) are listed when none is pending: they leak only through a
// forced delete or a crash, so the first resync after a start and then a
// listing every few minutes find them; while one is pending, every resync
// looks again so that the grace period is all it waits.
const KeptSweepEvery = 10 * time.Minute

// sweepKept releases what a provider keeps per deployment (provider.Keeper)
// for uids that no deployment owns, anywhere (an account's IAM is shared
// by its regions), once they have been so for the grace period and no VM
// of theirs is alive in the scope: the same rule as the orphan sweep's.
func (c *Controller) sweepKept(ctx context.Context, p provider.Provider, owner map[string]string) {
	k, ok := p.(provider.Keeper)
	if !ok {
		return
	}
	now := c.clock.Now()
	c.mu.Lock()
	pending := c.kept[p.Key()]
	last, listed := c.keptListed[p.Key()]
	c.mu.Unlock()
	if listed && len(pending) == 0 && now.Sub(last) < KeptSweepEvery {
		return
	}
	uids, err := k.Kept(ctx)
	if err != nil {
		c.log.V(1).Info("list kept resources failed", "scope", p.Key(), "error", err.Error())
		return
	}
	c.mu.Lock()
	c.keptListed[p.Key()] = now
	if pending == nil {
		pending = map[string]time.Time{}
		c.kept[p.Key()] = pending
	}
	var release []string
	seen := map[string]bool{}
	waiting := false
	for _, uid := range uids {
		if _, owned := owner[uid]; owned {
			continue
		}
		alive := false
		for _, vm := range c.vms.cached(p, uid) {
			alive = alive || vm.State != provider.StateTerminated
		}
		if alive {
			waiting = true // the orphan sweep ends the VM first; look again next time
			continue
		}
		seen[uid] = true
		first, ok := pending[uid]
		switch {
		case !ok:
			pending[uid] = now
			c.log.Info("resources of no deployment; releasing them after the grace period", "scope", p.Key(), "uid", uid, "grace", c.grace.String())
		case now.Sub(first) >= c.grace:
			release = append(release, uid)
		}
	}
	for uid := range pending {
		if !seen[uid] {
			delete(pending, uid)
		}
	}
	if waiting {
		delete(c.keptListed, p.Key())
	}
	c.mu.Unlock()
	for _, uid := range release {
		if err := k.Release(ctx, uid); err != nil {
			c.log.Error(err, "release resources of no deployment", "scope", p.Key(), "uid", uid)
			continue
		}
		c.mu.Lock()
		delete(pending, uid)
		c.mu.Unlock()
		c.log.Info("resources of no deployment released", "scope", p.Key(), "uid", uid)
	}
}
