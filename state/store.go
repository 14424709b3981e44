package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/anycloud/anycloud/manifests"
)

// Store is the control plane's state. Every method is safe for concurrent
// use. Objects passed in are not retained; objects returned are the
// caller's to change.
type Store interface {
	// Apply creates or updates every write in one transaction: either all
	// are written or none is. Only user-owned fields (labels, annotations,
	// spec and, for bundles and credentials, secret values) are taken from
	// the writes.
	Apply(ctx context.Context, writes []Write, opts ApplyOptions) ([]ApplyResult, error)
	// Get returns one object or ErrNotFound.
	Get(ctx context.Context, kind manifests.Kind, name string) (manifests.Object, error)
	// List returns every object of a kind, sorted by name, and the store's
	// resourceVersion at that moment.
	List(ctx context.Context, kind manifests.Kind) ([]manifests.Object, string, error)
	// Update writes metadata (finalizers, annotations, labels) and spec of
	// an existing object. The object's resourceVersion must be current.
	Update(ctx context.Context, obj manifests.Object) (manifests.Object, error)
	// UpdateStatus writes only the status. The resourceVersion must be
	// current.
	UpdateStatus(ctx context.Context, obj manifests.Object) (manifests.Object, error)
	// Delete deletes an object, or marks it deleting while finalizers hold
	// it. See DeleteOptions.
	Delete(ctx context.Context, kind manifests.Kind, name string, opts DeleteOptions) (DeleteResult, error)
	// OpenSecrets returns the plaintext values of a bundle or credentials
	// object and the object's generation. Only the controller calls it,
	// when it creates a VM; no API route does.
	OpenSecrets(ctx context.Context, kind manifests.Kind, name string) (map[string]string, int64, error)
	// Users lists the deployments that name an object.
	Users(ctx context.Context, kind manifests.Kind, name string) ([]manifests.ObjectRef, error)
	// Watch returns the current objects of a kind and a channel of every
	// change after them. The channel is closed when ctx ends or when the
	// watcher falls too far behind; the caller then watches again.
	Watch(ctx context.Context, kind manifests.Kind) ([]manifests.Object, <-chan WatchEvent, error)
	// RecordEvent notes something that happened to an object. A repeat of
	// the same reason and message bumps a count instead of adding a line.
	RecordEvent(ctx context.Context, ref manifests.ObjectRef, ev Event) error
	// Events lists an object's events, oldest first.
	Events(ctx context.Context, ref manifests.ObjectRef) ([]Event, error)
	// ClusterID names this control plane's state, made once with the
	// store. Providers tag VMs with it, so that two control planes sharing
	// a cloud account or a Docker engine never take each other's VMs for
	// orphans.
	ClusterID() string
	// Close releases the store.
	Close() error
}

// Write is one object to apply, with secret values for bundles (key →
// value) and credentials ("secretAccessKey" → value). Values are sealed
// before they are stored.
type Write struct {
	Object manifests.Object
	// Secrets replaces the object's stored values when non-nil. For a
	// bundle it is the whole set of keys.
	Secrets map[string]string
}

// ApplyOptions change how Apply writes.
type ApplyOptions struct {
	// DryRun computes the results and writes nothing.
	DryRun bool
	// RequireReferences refuses a Deployment whose credentials exist
	// neither in the store nor in the same apply.
	RequireReferences bool
	// PruneSet, when set, deletes declaratively, in the same transaction,
	// every object of that apply set (annotation anycloud.dev/apply-set)
	// that the writes do not name, except those annotated
	// anycloud.dev/prune: disabled.
	PruneSet string
}

// Apply actions.
const (
	ActionCreated    = "created"
	ActionConfigured = "configured"
	ActionUnchanged  = "unchanged"
	ActionPruned     = "pruned"
)

// ApplyResult says what Apply did with one write.
type ApplyResult struct {
	Ref    manifests.ObjectRef `json:"ref"`
	Action string              `json:"action"`
	// Generation is the object's generation after the write.
	Generation int64 `json:"generation"`
	// Terminating: a pruned object is held by finalizers (a VM being
	// terminated, deployments still using a bundle).
	Terminating bool `json:"terminating,omitempty"`
	// Changes lists what a created or configured object's write changes,
	// field by field, for a DryRun (the plan that diff and apply --dry-run
	// print; a real apply of 10,000 objects need not flatten each). Secret
	// values never appear: a bundle reports key names and that values
	// changed.
	Changes []Change `json:"changes,omitempty"`
	// ApplySet is the apply set the object belongs to after the write.
	ApplySet string `json:"applySet,omitempty"`
}

// Change is one field changed by a write.
type Change struct {
	Path string `json:"path"`
	Old  string `json:"old,omitempty"`
	New  string `json:"new,omitempty"`
}

// DeleteOptions say how an object is deleted.
type DeleteOptions struct {
	// Declarative is a deletion from a manifest (delete -f, apply
	// --prune): a bundle or credentials still in use is kept, Terminating,
	// until its last user is gone, instead of being refused.
	Declarative bool
	// Force deletes a bundle even while deployments use it. Credentials in
	// use are kept, Terminating, until their users are terminal (they are
	// needed to terminate those VMs); leftover VMs recorded on them are
	// forgotten. A deployment is removed at once, without waiting for its
	// VM: the VM is recorded on its credentials as a leftover for the
	// orphan sweep.
	Force bool
	// UID, when set, must match the stored object's uid.
	UID string
}

// DeleteResult says what Delete did.
type DeleteResult struct {
	// Deleted is true when the object is gone; false when it is kept,
	// Terminating, by finalizers.
	Deleted bool
	Object  manifests.Object
	// Users are the deployments that named a bundle or credentials when
	// it was deleted with Force: what the forced delete leaves without.
	Users []manifests.ObjectRef
	// Leftover is the VM a forced delete of a deployment left behind, if
	// it may have one; it is recorded on its credentials (LeftoverVMs)
	// until the orphan sweep has ended it.
	Leftover *manifests.LeftoverVM
}

// Watch event types.
const (
	Added    = "ADDED"
	Modified = "MODIFIED"
	Deleted  = "DELETED"
)

// WatchEvent is one change to an object.
type WatchEvent struct {
	Type   string           `json:"type"`
	Object manifests.Object `json:"object"`
}

// Event types.
const (
	EventNormal  = "Normal"
	EventWarning = "Warning"
)

// Event is a note about an object, shown by `describe`. Messages never
// contain secret values.
type Event struct {
	Type      string    `json:"type"`
	Reason    string    `json:"reason"`
	Message   string    `json:"message"`
	Count     int       `json:"count"`
	FirstSeen time.Time `json:"firstSeen"`
	LastSeen  time.Time `json:"lastSeen"`
}

// Sentinel errors. Test with errors.Is.
var (
	// ErrNotFound: no object of that kind and name.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the write named a resourceVersion that is no longer
	// current, or a uid that does not match.
	ErrConflict = errors.New("conflict: the object has been modified; read it again")
	// ErrInUse: the object is named by deployments that are not terminal.
	// The error is an *InUseError listing them.
	ErrInUse = errors.New("in use")
	// ErrTerminating: the object is being deleted and cannot be changed
	// except to release finalizers.
	ErrTerminating = errors.New("being deleted")
	// ErrInvalid: the write itself is wrong; the error is a
	// manifests.ErrorList or wraps a message naming the field.
	ErrInvalid = errors.New("invalid")
	// ErrProtected: the object is built in and cannot be changed.
	ErrProtected = errors.New("built in")
)

// ApplyError says which write of an Apply failed, by its index in the
// writes passed in.
type ApplyError struct {
	Index int
	Err   error
}

func (e *ApplyError) Error() string { return e.Err.Error() }
func (e *ApplyError) Unwrap() error { return e.Err }

// InUseError lists the deployments that block deleting an object.
type InUseError struct {
	Ref   manifests.ObjectRef
	Users []manifests.ObjectRef
}

func (e *InUseError) Error() string {
	names := make([]string, len(e.Users))
	for i, u := range e.Users {
		names[i] = u.String()
	}
	what := "secret bundle"
	if e.Ref.Kind == manifests.KindCredentials {
		what = "credentials"
	}
	return fmt.Sprintf("%s %q is in use by %d deployment(s): %s; delete them first, or use --force (their next VM creation will fail)",
		what, e.Ref.Name, len(e.Users), strings.Join(names, ", "))
}

// Is makes errors.Is(err, ErrInUse) true.
func (e *InUseError) Is(target error) bool { return target == ErrInUse }

// LeftoverError refuses to delete credentials that are the only way to
// reach VMs a forced delete left behind.
type LeftoverError struct {
	Name string
	VMs  []manifests.LeftoverVM
}

func (e *LeftoverError) Error() string {
	var what []string
	for _, l := range e.VMs {
		vm := l.VMID
		if vm == "" {
			vm = "a VM being launched"
		}
		what = append(what, fmt.Sprintf("%s of deployment %s (uid %s)", vm, l.Deployment, l.UID))
	}
	return fmt.Sprintf("credentials %q are the only way to reach %d VM(s) that forced deletes left behind: %s; the orphan sweep terminates them (see `anycloud describe creds %s`), or terminate them yourself and use --force (anycloud then forgets them)",
		e.Name, len(e.VMs), strings.Join(what, ", "), e.Name)
}

// Is makes errors.Is(err, ErrInUse) true.
func (e *LeftoverError) Is(target error) bool { return target == ErrInUse }

// Leftovers is implemented by stores that record the VMs of deployments
// deleted with Force; the controller's orphan sweep releases them.
type Leftovers interface {
	// ListLeftovers returns every recorded leftover VM by credentials
	// name.
	ListLeftovers(ctx context.Context) (map[string][]manifests.LeftoverVM, error)
	// ReleaseLeftovers forgets the leftovers of credentials for which
	// gone is true (the scope, just listed, shows no live VM of theirs),
	// and removes credentials, deleted meanwhile, that they held.
	ReleaseLeftovers(ctx context.Context, credentials string, gone func(manifests.LeftoverVM) bool) error
}
