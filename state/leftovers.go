package state

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/anycloud/anycloud/manifests"
)

// Leftover VMs: what forced deletes of deployments left running, kept on
// their credentials until a sweep finds them gone.

func leftoversPrefix(creds string) string { return creds + "\x00" }

func listLeftovers(tx kvReader, creds string) ([]manifests.LeftoverVM, error) {
	var out []manifests.LeftoverVM
	err := tx.scan(bucketLeftovers, leftoversPrefix(creds), func(_, v []byte, _ int64) error {
		var l manifests.LeftoverVM
		if json.Unmarshal(v, &l) == nil {
			out = append(out, l)
		}
		return nil
	})
	return out, err
}

// recordLeftover notes, on d's credentials, the VM that a forced delete
// of d leaves behind.
func (t *txn) recordLeftover(d *manifests.Deployment) (*manifests.LeftoverVM, error) {
	if !d.Metadata.HasFinalizer(manifests.FinalizerVM) || (d.Status.Attempt == 0 && d.Status.VM == nil) {
		return nil, nil // nothing was ever launched, or its VM is already gone
	}
	l := &manifests.LeftoverVM{Deployment: d.Metadata.Name, UID: d.Metadata.UID, Since: t.s.now().UTC().Truncate(time.Second)}
	if d.Spec.AWS != nil {
		l.Region = d.Spec.AWS.Region
	}
	if vm := d.Status.VM; vm != nil {
		l.VMID, l.Scope = vm.ID, vm.Scope
	}
	if _, err := t.get(manifests.KindCredentials, d.Spec.Credentials); err != nil {
		return l, nil // no credentials to reach it by: nothing can sweep it
	}
	data, err := json.Marshal(l)
	if err != nil {
		return nil, err
	}
	return l, t.tx.put(bucketLeftovers, leftoversPrefix(d.Spec.Credentials)+d.Metadata.UID, data)
}

// ListLeftovers implements Leftovers.
func (s *core) ListLeftovers(ctx context.Context) (map[string][]manifests.LeftoverVM, error) {
	out := map[string][]manifests.LeftoverVM{}
	_, err := s.be.view(ctx, func(tx kvReader) error {
		return tx.scan(bucketLeftovers, "", func(k, v []byte, _ int64) error {
			creds, _, _ := strings.Cut(string(k), "\x00")
			var l manifests.LeftoverVM
			if err := json.Unmarshal(v, &l); err != nil {
				return err
			}
			out[creds] = append(out[creds], l)
			return nil
		})
	})
	return out, err
}

// ReleaseLeftovers implements Leftovers.
func (s *core) ReleaseLeftovers(ctx context.Context, creds string, gone func(manifests.LeftoverVM) bool) error {
	return s.update(ctx, func(t *txn) error {
		changed := false
		leftovers, err := listLeftovers(t.tx, creds)
		if err != nil {
			return err
		}
		for _, l := range leftovers {
			if !gone(l) {
				continue
			}
			if err := t.tx.del(bucketLeftovers, leftoversPrefix(creds)+l.UID); err != nil {
				return err
			}
			changed = true
		}
		if !changed {
			return nil
		}
		if err := t.release(manifests.KindCredentials, creds); err != nil {
			return err
		}
		// Its status (leftoverVMs) changed: watchers see it.
		if o, err := t.get(manifests.KindCredentials, creds); err == nil && !t.removed(creds) {
			return t.put(o, Modified)
		}
		return nil
	})
}

// removed reports whether the transaction removed credentials name.
func (t *txn) removed(name string) bool {
	for _, ev := range t.events {
		if ev.Type == Deleted && ev.Object.GetKind() == manifests.KindCredentials && ev.Object.GetMeta().Name == name {
			return true
		}
	}
	return false
}
