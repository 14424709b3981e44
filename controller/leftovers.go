package controller

import (
	"context"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/state"
)

// sweepLeftovers looks after the VMs that forced deletes of deployments
// left behind (state.Leftovers). It lists the scopes they live in that
// this resync has not listed (a region that no deployment uses any more),
// where the orphan sweep then ends them as it ends any VM no deployment
// owns, and it forgets each leftover once its scope, just listed, shows no
// live VM of its uid: only then may its credentials go. Until then the
// credentials are kept, so that a VM is never forgotten while its account
// can be reached.
func (c *Controller) sweepLeftovers(ctx context.Context, listed []provider.Provider, owner map[string]string) {
	lt, ok := c.store.(state.Leftovers)
	if !ok {
		return
	}
	all, err := lt.ListLeftovers(ctx)
	if err != nil || len(all) == 0 {
		return
	}
	done := map[string]bool{}
	for _, p := range listed {
		done[p.Key()] = true
	}
	for name, leftovers := range all {
		obj, err := c.store.Get(ctx, manifests.KindCredentials, name)
		if err != nil {
			continue
		}
		secrets, _, err := c.store.OpenSecrets(ctx, manifests.KindCredentials, name)
		if err != nil {
			continue
		}
		// One scope per region override; nil when it cannot be listed now.
		byRegion := map[string]provider.Provider{}
		for _, l := range leftovers {
			if _, seen := byRegion[l.Region]; seen {
				continue
			}
			byRegion[l.Region] = nil
			p, err := c.providers.For(ctx, obj.(*manifests.Credentials), secrets, l.Region)
			if err != nil {
				continue
			}
			if !done[p.Key()] {
				if _, err := c.vms.relist(ctx, p); err != nil {
					c.log.V(1).Info("list VMs failed", "scope", p.Key(), "error", err.Error())
					continue
				}
				c.sweepOrphans(ctx, p, owner, nil) // leftovers are of deployments that are gone: no scope owns them
				done[p.Key()] = true
			}
			byRegion[l.Region] = p
		}
		err = lt.ReleaseLeftovers(ctx, name, func(l manifests.LeftoverVM) bool {
			p := byRegion[l.Region]
			if p == nil {
				return false
			}
			for _, vm := range c.vms.cached(p, l.UID) {
				if vm.State != provider.StateTerminated {
					return false
				}
			}
			c.log.Info("leftover VM of a forced delete is gone", "credentials", name, "deployment", l.Deployment, "uid", l.UID, "vm", l.VMID)
			return true
		})
		if err != nil {
			c.log.Error(err, "release leftover VMs", "credentials", name)
		}
	}
}
