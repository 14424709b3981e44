package controller

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/anycloud/anycloud/provider"
)

// vmCache holds the last listing of each provider scope, indexed by
// deployment uid, so that one List per scope serves every deployment.
// The controller's own launches and terminations are written into it at
// once, so that the next decision sees them before the next listing.
type vmCache struct {
	mu     sync.Mutex
	scopes map[string]*scopeVMs
}

type scopeVMs struct {
	// prov is the scope's provider, kept so that a VM left in a scope the
	// deployment moved away from can still be terminated.
	prov provider.Provider
	// listMu makes concurrent first reconciles share one listing.
	listMu sync.Mutex
	listed bool
	byUID  map[string][]provider.VM
	// fresh holds VMs we launched that no listing has shown yet, with
	// when: a listing that began before the launch, or a cloud whose
	// listings lag (EC2 is eventually consistent), must not make a new VM
	// look preempted.
	fresh map[string]freshVM
}

type freshVM struct {
	vm provider.VM
	at time.Time
}

// freshFor is how long a launched VM missing from listings is still
// believed to exist.
const freshFor = time.Minute

func newVMCache() *vmCache { return &vmCache{scopes: map[string]*scopeVMs{}} }

func (c *vmCache) scope(p provider.Provider) *scopeVMs {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.scopes[p.Key()]
	if s == nil {
		s = &scopeVMs{prov: p, byUID: map[string][]provider.VM{}, fresh: map[string]freshVM{}}
		c.scopes[p.Key()] = s
	}
	return s
}

// provider returns the provider of a scope seen before, or nil.
func (c *vmCache) provider(key string) provider.Provider {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.scopes[key]; s != nil {
		return s.prov
	}
	return nil
}

// observed returns the VMs of uid, listing the scope first if it has never
// been listed.
func (c *vmCache) observed(ctx context.Context, p provider.Provider, uid string) ([]provider.VM, error) {
	s := c.scope(p)
	s.listMu.Lock()
	listed := s.listed
	s.listMu.Unlock()
	if !listed {
		if _, err := c.relistIfNeeded(ctx, p); err != nil {
			return nil, err
		}
	}
	return c.cached(p, uid), nil
}

func (c *vmCache) relistIfNeeded(ctx context.Context, p provider.Provider) ([]string, error) {
	s := c.scope(p)
	s.listMu.Lock()
	defer s.listMu.Unlock()
	if s.listed {
		return nil, nil
	}
	return c.relistLocked(ctx, p, s)
}

// relist lists the scope and returns the uids whose VMs changed.
func (c *vmCache) relist(ctx context.Context, p provider.Provider) ([]string, error) {
	s := c.scope(p)
	s.listMu.Lock()
	defer s.listMu.Unlock()
	return c.relistLocked(ctx, p, s)
}

func (c *vmCache) relistLocked(ctx context.Context, p provider.Provider, s *scopeVMs) ([]string, error) {
	vms, err := p.List(ctx)
	if err != nil {
		return nil, err
	}
	next := map[string][]provider.VM{}
	seen := map[string]bool{}
	for _, vm := range vms {
		next[vm.UID] = append(next[vm.UID], vm)
		seen[vm.ID] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for id, f := range s.fresh {
		switch {
		case seen[id] || now.Sub(f.at) > freshFor:
			delete(s.fresh, id)
		default:
			next[f.vm.UID] = append(next[f.vm.UID], f.vm)
		}
	}
	var changed []string
	for uid, list := range next {
		if !slices.Equal(list, s.byUID[uid]) {
			changed = append(changed, uid)
		}
	}
	for uid := range s.byUID {
		if _, ok := next[uid]; !ok {
			changed = append(changed, uid)
		}
	}
	s.byUID = next
	s.listed = true
	return changed, nil
}

// cached returns a copy of the VMs of uid.
func (c *vmCache) cached(p provider.Provider, uid string) []provider.VM {
	s := c.scope(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(s.byUID[uid])
}

// all returns every VM of the scope.
func (c *vmCache) all(p provider.Provider) []provider.VM {
	s := c.scope(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []provider.VM
	for _, l := range s.byUID {
		out = append(out, l...)
	}
	return out
}

// put records a VM the controller launched and returns the uid's VMs.
func (c *vmCache) put(p provider.Provider, vm provider.VM) []provider.VM {
	s := c.scope(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	s.fresh[vm.ID] = freshVM{vm: vm, at: time.Now()}
	list := s.byUID[vm.UID]
	for i := range list {
		if list[i].ID == vm.ID {
			list[i] = vm
			return slices.Clone(list)
		}
	}
	s.byUID[vm.UID] = append(list, vm)
	return slices.Clone(s.byUID[vm.UID])
}

// byID finds a VM of the scope by its id.
func (c *vmCache) byID(p provider.Provider, id string) (provider.VM, bool) {
	s := c.scope(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, list := range s.byUID {
		for _, vm := range list {
			if vm.ID == id {
				return vm, true
			}
		}
	}
	if f, ok := s.fresh[id]; ok {
		return f.vm, true
	}
	return provider.VM{}, false
}

// merge records what a Describe said of some VMs and returns those that
// changed (state, address, reason) or were not known.
func (c *vmCache) merge(p provider.Provider, vms []provider.VM) []provider.VM {
	s := c.scope(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	var changed []provider.VM
	for _, vm := range vms {
		list := s.byUID[vm.UID]
		found := false
		for i := range list {
			if list[i].ID == vm.ID {
				found = true
				if list[i] != vm {
					list[i] = vm
					changed = append(changed, vm)
				}
			}
		}
		if !found {
			s.byUID[vm.UID] = append(list, vm)
			changed = append(changed, vm)
		}
		delete(s.fresh, vm.ID)
	}
	return changed
}

// markTerminated records a VM the controller terminated, adding it when
// no listing has shown it yet.
func (c *vmCache) markTerminated(p provider.Provider, vm provider.VM) {
	s := c.scope(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(s.fresh, vm.ID)
	for uid, list := range s.byUID {
		for i := range list {
			if list[i].ID == vm.ID {
				list[i].State = provider.StateTerminated
				s.byUID[uid] = list
				return
			}
		}
	}
	vm.State = provider.StateTerminated
	s.byUID[vm.UID] = append(s.byUID[vm.UID], vm)
}

// forget drops a deleted deployment's VMs.
func (c *vmCache) forget(p provider.Provider, uid string) {
	s := c.scope(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(s.byUID, uid)
}
