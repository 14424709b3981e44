package state

import (
	"context"
	"errors"
	"fmt"

	"github.com/anycloud/anycloud/manifests"
)

// The in-use index: which deployments use a bundle or credentials,
// written in the same transaction as the deployment, and the finalizer it
// keeps on what is used.

// setReferences replaces the index entries of deployment name: old refs
// out, new refs in. An object deleted declaratively whose last user left
// is released here, in the same transaction.
func (t *txn) setReferences(name, uid string, old, cur []manifests.ObjectRef) error {
	keep := map[manifests.ObjectRef]bool{}
	for _, r := range cur {
		keep[manifests.ObjectRef{Kind: r.Kind, Name: r.Name}] = true
		if err := t.tx.put(bucketUsers, usersPrefix(r.Kind, r.Name)+name, []byte(uid)); err != nil {
			return err
		}
	}
	for _, r := range old {
		if keep[manifests.ObjectRef{Kind: r.Kind, Name: r.Name}] {
			continue
		}
		if err := t.tx.del(bucketUsers, usersPrefix(r.Kind, r.Name)+name); err != nil {
			return err
		}
		if err := t.release(r.Kind, r.Name); err != nil {
			return err
		}
	}
	return nil
}

// release drops the in-use finalizer of a terminating object that has no
// users left, and removes it when no finalizer remains.
func (t *txn) release(k manifests.Kind, name string) error {
	o, err := t.get(k, name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	m := o.GetMeta()
	if m.DeletionTimestamp == nil || !m.HasFinalizer(manifests.FinalizerInUse) {
		return nil
	}
	if users, err := t.users(k, name); err != nil || len(users) > 0 {
		return err
	}
	if k == manifests.KindCredentials {
		if l, err := listLeftovers(t.tx, name); err != nil || len(l) > 0 {
			return err
		}
	}
	m.RemoveFinalizer(manifests.FinalizerInUse)
	if len(m.Finalizers) == 0 {
		return t.remove(o)
	}
	return t.put(o, Modified)
}

// liveReferences lists what d holds in use: nothing once it is terminal
// (its deletion has finished terminating its VM), even while another
// finalizer keeps it stored.
func liveReferences(d *manifests.Deployment) []manifests.ObjectRef {
	if d.Terminal() {
		return nil
	}
	return d.References()
}

func (t *txn) users(k manifests.Kind, name string) ([]manifests.ObjectRef, error) {
	return listUsers(t.tx, k, name)
}

func listUsers(tx kvReader, k manifests.Kind, name string) ([]manifests.ObjectRef, error) {
	prefix := usersPrefix(k, name)
	var out []manifests.ObjectRef
	err := tx.scan(bucketUsers, prefix, func(key, v []byte, _ int64) error {
		out = append(out, manifests.ObjectRef{Kind: manifests.KindDeployment, Name: string(key[len(prefix):]), UID: string(v)})
		return nil
	})
	return out, err
}

// checkReferences refuses a deployment whose credentials do not exist
// (in the store, including this transaction's writes).
func (t *txn) checkReferences(o manifests.Object, opts ApplyOptions) error {
	d, ok := o.(*manifests.Deployment)
	if !ok || !opts.RequireReferences {
		return nil
	}
	c, err := t.get(manifests.KindCredentials, d.Spec.Credentials)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("deployment %q spec.credentials: credentials %q not found (make them with `anycloud credentials new` or apply a Credentials manifest): %w", d.Metadata.Name, d.Spec.Credentials, ErrInvalid)
	}
	if err != nil {
		return err
	}
	if c.GetMeta().DeletionTimestamp != nil {
		return fmt.Errorf("deployment %q spec.credentials: credentials %q are being deleted: %w", d.Metadata.Name, d.Spec.Credentials, ErrInvalid)
	}
	return nil
}

// Users implements Store.
func (s *core) Users(ctx context.Context, k manifests.Kind, name string) ([]manifests.ObjectRef, error) {
	var out []manifests.ObjectRef
	_, err := s.be.view(ctx, func(tx kvReader) error {
		var err error
		out, err = listUsers(tx, k, name)
		return err
	})
	return out, err
}
