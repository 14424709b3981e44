package state

import (
	"context"
	"fmt"
	"time"

	"github.com/anycloud/anycloud/manifests"
)

// Deletes: refused while in use, declarative (terminating until the last
// user leaves) or forced.

// Delete implements Store.
func (s *core) Delete(ctx context.Context, k manifests.Kind, name string, opts DeleteOptions) (DeleteResult, error) {
	var res DeleteResult
	err := s.update(ctx, func(t *txn) error {
		var err error
		res, err = t.delete(k, name, opts)
		return err
	})
	if err != nil {
		return DeleteResult{}, err
	}
	return res, nil
}

// delete deletes an object within the transaction; see DeleteOptions.
func (t *txn) delete(k manifests.Kind, name string, opts DeleteOptions) (DeleteResult, error) {
	var res DeleteResult
	o, err := t.get(k, name)
	if err != nil {
		return res, err
	}
	m := o.GetMeta()
	if opts.UID != "" && opts.UID != m.UID {
		return res, fmt.Errorf("delete %s %q: uid %s does not match %s: %w", k, name, opts.UID, m.UID, ErrConflict)
	}
	if k == manifests.KindCredentials && name == manifests.LocalCredentials {
		return res, fmt.Errorf("credentials %q: %w and cannot be deleted", name, ErrProtected)
	}
	res.Object = o
	if k != manifests.KindDeployment {
		users, err := t.users(k, name)
		if err != nil {
			return res, err
		}
		var leftovers []manifests.LeftoverVM
		if k == manifests.KindCredentials {
			if leftovers, err = listLeftovers(t.tx, name); err != nil {
				return res, err
			}
			if opts.Force {
				// Forced: the user has ended those VMs, or given up on them.
				for _, l := range leftovers {
					if err := t.tx.del(bucketLeftovers, leftoversPrefix(name)+l.UID); err != nil {
						return res, err
					}
				}
				leftovers = nil
			}
		}
		if opts.Force {
			res.Users = users
		}
		// Credentials still in use are never removed, forced or not:
		// without them nothing can terminate their users' VMs, and the
		// next `delete deploy` would report a deployment gone while its VM
		// ran on, unswept. They wait, Terminating, like a declarative
		// delete.
		holdCreds := k == manifests.KindCredentials && len(users) > 0 && opts.Force
		switch {
		case len(users) == 0 && len(leftovers) == 0 || opts.Force && !holdCreds:
			res.Deleted = true
			return res, t.remove(o)
		case opts.Declarative || holdCreds:
			if m.DeletionTimestamp == nil {
				now := t.s.now().UTC().Truncate(time.Second)
				m.DeletionTimestamp = &now
			}
			m.AddFinalizer(manifests.FinalizerInUse)
			return res, t.put(o, Modified)
		case len(users) > 0:
			return res, &InUseError{Ref: manifests.Ref(o), Users: users}
		default:
			return res, &LeftoverError{Name: name, VMs: leftovers}
		}
	}
	if m.DeletionTimestamp == nil {
		now := t.s.now().UTC().Truncate(time.Second)
		m.DeletionTimestamp = &now
	}
	if opts.Force && len(m.Finalizers) > 0 {
		// Removed now, without waiting for the VM: for a deployment whose
		// cloud cannot be reached (credentials that never worked), which
		// would otherwise be Terminating for ever. Its VM, if it may have
		// one, is recorded on its credentials for the orphan sweep.
		l, err := t.recordLeftover(o.(*manifests.Deployment))
		if err != nil {
			return res, err
		}
		res.Leftover, res.Deleted = l, true
		m.Finalizers = nil
		return res, t.remove(o)
	}
	if len(m.Finalizers) == 0 {
		res.Deleted = true
		return res, t.remove(o)
	}
	if d := o.(*manifests.Deployment); d.Terminal() {
		if err := t.setReferences(name, m.UID, d.References(), nil); err != nil {
			return res, err
		}
	}
	return res, t.put(o, Modified)
}
