package state

import (
	"context"

	"github.com/anycloud/anycloud/manifests"
)

// UserIndex is the part of a Store that ShowUsers reads; a store that also
// implements Leftovers has its leftover VMs shown too.
type UserIndex interface {
	Users(ctx context.Context, kind manifests.Kind, name string) ([]manifests.ObjectRef, error)
}

// ShowUsers fills the status a person reads of bundles and credentials:
// the deployments that use each (UsedBy) and, for credentials, the VMs of
// force-deleted deployments left to terminate (LeftoverVMs). Reads from
// the store leave these empty because their cost grows with the number of
// users, and the control loop, which reads a deployment's credentials on
// every pass, never needs them; the API and the dashboard call this on what
// they are about to show. Objects of other kinds are left as they are.
// The objects are changed in place: pass copies of shared ones (watch
// events).
func ShowUsers(ctx context.Context, s UserIndex, objs ...manifests.Object) error {
	var leftovers map[string][]manifests.LeftoverVM
	for _, o := range objs {
		switch o := o.(type) {
		case *manifests.SecretBundle:
			users, err := s.Users(ctx, manifests.KindSecretBundle, o.Metadata.Name)
			if err != nil {
				return err
			}
			o.Status.UsedBy = users
		case *manifests.Credentials:
			users, err := s.Users(ctx, manifests.KindCredentials, o.Metadata.Name)
			if err != nil {
				return err
			}
			o.Status.UsedBy = users
			if l, ok := s.(Leftovers); ok && leftovers == nil {
				if leftovers, err = l.ListLeftovers(ctx); err != nil {
					return err
				}
			}
			o.Status.LeftoverVMs = leftovers[o.Metadata.Name]
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}
