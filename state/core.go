package state

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/seal"
)

// The store's logic is written once, over a small key-value interface
// that bbolt and etcd both implement: buckets of keys (a bucket is a
// bbolt bucket, or a key prefix in etcd), read in one consistent snapshot
// and written in one serializable transaction. Each backend keeps what
// only it can do: bbolt's watch (in process) and maintenance; etcd's
// watch (etcd's own) and fencing.

// Buckets.
const (
	bucketMeta   = "meta"
	bucketSealed = "sealed"
	bucketUsers  = "users"
	bucketEvents = "events"
	// bucketLeftovers holds, under "credentials\x00uid", the VMs that
	// forced deletes of deployments left behind (manifests.LeftoverVM).
	bucketLeftovers = "leftovers"
)

// Keys of the meta bucket.
const (
	keyRV      = "rv"
	keyCheck   = "keycheck"
	keyCluster = "cluster"
	// keySealPub records the public half of the sealing key (seal.key),
	// so that a lost seal.key is refused instead of silently replaced.
	keySealPub = "sealpub"
)

// kvReader reads one consistent snapshot.
type kvReader interface {
	// get returns a key's value, nil when it is absent, and the key's
	// revision when the backend versions keys (etcd; 0 for bbolt).
	get(bucket, key string) ([]byte, int64, error)
	// scan calls fn for every key of bucket that starts with prefix, in
	// key order. Values are valid only during fn.
	scan(bucket, prefix string, fn func(key, val []byte, rev int64) error) error
	// count is how many keys a bucket holds, or a guess (0): a capacity
	// hint.
	count(bucket string) int
}

// kvWriter is one write transaction: it reads its own writes.
type kvWriter interface {
	kvReader
	put(bucket, key string, val []byte) error
	del(bucket, key string) error
}

// backend runs the core's transactions.
type backend interface {
	// view runs fn on a snapshot and returns the store's resourceVersion
	// at it.
	view(ctx context.Context, fn func(kvReader) error) (string, error)
	// update runs fn in a write transaction, passing the transaction's
	// resourceVersion when it is known before the commit ("" otherwise),
	// and commits what fn wrote when fn returns nil; fn returns the watch
	// events of its writes. A backend with optimistic transactions runs fn
	// again after a conflict. update returns the resourceVersion of the
	// commit.
	update(ctx context.Context, fn func(kvWriter, string) ([]WatchEvent, error)) (string, error)
}

// core is the Store's logic over a backend.
type core struct {
	be  backend
	now func() time.Time

	// keyMu guards keys: a key rotation swaps it as its transaction
	// commits, and a reader must not open an old snapshot with the new
	// key.
	keyMu sync.RWMutex
	keys  *seal.Keyring
}

func kindBucket(k manifests.Kind) string { return "objects/" + string(k) }

func sealedKey(k manifests.Kind, name string) string { return string(k) + "/" + name }

func usersPrefix(k manifests.Kind, name string) string {
	return string(k) + "/" + name + "\x00"
}

// localCredentials is the built-in credentials object, made when a store
// is.
func localCredentials() *manifests.Credentials {
	return &manifests.Credentials{
		TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindCredentials},
		Metadata: manifests.ObjectMeta{Name: manifests.LocalCredentials},
		Spec:     manifests.CredentialsSpec{Provider: manifests.ProviderLocal},
	}
}

// txn is one write transaction: it assigns one resourceVersion to what it
// writes and collects the watch events to publish after commit.
type txn struct {
	s  *core
	tx kvWriter
	// rv is the transaction's resourceVersion when the backend knows it
	// before the commit (bbolt); "" when it is known only after (etcd:
	// the commit's revision), and set then.
	rv     string
	events []WatchEvent
}

func (t *txn) get(k manifests.Kind, name string) (manifests.Object, error) {
	return getObject(t.tx, k, name)
}

func getObject(tx kvReader, k manifests.Kind, name string) (manifests.Object, error) {
	if !knownKind(k) {
		return nil, fmt.Errorf("%s: %w", k, ErrNotFound)
	}
	v, rev, err := tx.get(kindBucket(k), name)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, fmt.Errorf("%s %q: %w", k, name, ErrNotFound)
	}
	return unmarshalObject(k, v, rev)
}

// unmarshalObject decodes a stored object; a backend that versions its
// keys (etcd) gives the key's revision, which is the resourceVersion.
func unmarshalObject(k manifests.Kind, v []byte, rev int64) (manifests.Object, error) {
	o, err := manifests.Unmarshal(k, v)
	if err != nil {
		return nil, err
	}
	if rev > 0 {
		o.GetMeta().ResourceVersion = strconv.FormatInt(rev, 10)
	}
	return o, nil
}

func knownKind(k manifests.Kind) bool {
	for _, kk := range manifests.Kinds {
		if kk == k {
			return true
		}
	}
	return false
}

func (t *txn) put(o manifests.Object, evType string) error {
	m := o.GetMeta()
	m.ResourceVersion = t.rv
	data, err := json.Marshal(o)
	if err != nil {
		return err
	}
	if err := t.tx.put(kindBucket(o.GetKind()), m.Name, data); err != nil {
		return err
	}
	// No copy: the object is the transaction's own and is not changed
	// after put; publish copies it for each watcher.
	t.events = append(t.events, WatchEvent{Type: evType, Object: o})
	return nil
}

// remove deletes an object for good, with its sealed values, events and
// (for a deployment) its references, releasing objects that waited for
// their last user.
func (t *txn) remove(o manifests.Object) error {
	k, name := o.GetKind(), o.GetMeta().Name
	if err := t.tx.del(kindBucket(k), name); err != nil {
		return err
	}
	if err := t.tx.del(bucketSealed, sealedKey(k, name)); err != nil {
		return err
	}
	if err := t.tx.del(bucketEvents, sealedKey(k, name)); err != nil {
		return err
	}
	gone := manifests.DeepCopy(o)
	gone.GetMeta().ResourceVersion = t.rv
	t.events = append(t.events, WatchEvent{Type: Deleted, Object: gone})
	if d, ok := o.(*manifests.Deployment); ok {
		return t.setReferences(d.Metadata.Name, d.Metadata.UID, d.References(), nil)
	}
	return nil
}

// decorate fills the phase of bundles and credentials. Their users and
// leftover VMs are not filled here: they grow with the number of
// deployments, and the control loop reads credentials once per deployment
// per resync without needing them. ShowUsers fills them where they are
// shown.
func decorate(o manifests.Object) {
	phase := manifests.PhaseActive
	if o.GetMeta().DeletionTimestamp != nil {
		phase = manifests.PhaseTerminating
	}
	switch o := o.(type) {
	case *manifests.SecretBundle:
		o.Status.Phase = phase
	case *manifests.Credentials:
		o.Status.Phase = phase
	}
}

// update runs fn in a write transaction and publishes its watch events
// after the commit.
func (s *core) update(ctx context.Context, fn func(t *txn) error) error {
	var t *txn
	rv, err := s.be.update(ctx, func(tx kvWriter, rv string) ([]WatchEvent, error) {
		t = &txn{s: s, tx: tx, rv: rv}
		if err := fn(t); err != nil {
			return nil, err
		}
		for _, ev := range t.events {
			if ev.Type != Deleted {
				decorate(ev.Object)
			}
		}
		return t.events, nil
	})
	if err != nil {
		return err
	}
	if rv != t.rv {
		// Known only now (the commit's revision): what the transaction
		// wrote, and returns, carries it.
		for _, ev := range t.events {
			ev.Object.GetMeta().ResourceVersion = rv
		}
	}
	return nil
}

// Get implements Store.
func (s *core) Get(ctx context.Context, k manifests.Kind, name string) (manifests.Object, error) {
	var o manifests.Object
	_, err := s.be.view(ctx, func(tx kvReader) error {
		var err error
		o, err = getObject(tx, k, name)
		if err == nil {
			decorate(o)
		}
		return err
	})
	return o, err
}

// List implements Store.
func (s *core) List(ctx context.Context, k manifests.Kind) ([]manifests.Object, string, error) {
	var out []manifests.Object
	rv, err := s.be.view(ctx, func(tx kvReader) error {
		var err error
		out, err = listObjects(tx, k)
		return err
	})
	return out, rv, err
}

func listObjects(tx kvReader, k manifests.Kind) ([]manifests.Object, error) {
	if !knownKind(k) {
		return nil, fmt.Errorf("unknown kind %q", k)
	}
	out := make([]manifests.Object, 0, tx.count(kindBucket(k)))
	err := tx.scan(kindBucket(k), "", func(_, v []byte, rev int64) error {
		o, err := unmarshalObject(k, v, rev)
		if err != nil {
			return err
		}
		decorate(o)
		out = append(out, o)
		return nil
	})
	return out, err
}

// Update implements Store.
func (s *core) Update(ctx context.Context, obj manifests.Object) (manifests.Object, error) {
	var out manifests.Object
	err := s.update(ctx, func(t *txn) error {
		k, name := obj.GetKind(), obj.GetMeta().Name
		existing, err := t.current(obj, "update")
		if err != nil {
			return err
		}
		em, im := existing.GetMeta(), obj.GetMeta()
		next := manifests.DeepCopy(existing)
		nm := next.GetMeta()
		nm.Labels = maps.Clone(im.Labels)
		nm.Annotations = maps.Clone(im.Annotations)
		setSpec(next, obj)
		specChanged := !bytes.Equal(existing.SpecJSON(), next.SpecJSON())
		if specChanged && k == manifests.KindCredentials && name == manifests.LocalCredentials {
			return fmt.Errorf("credentials %q: %w: it always selects the local Docker engine", name, ErrProtected)
		}
		if em.DeletionTimestamp != nil {
			if specChanged {
				return fmt.Errorf("update %s %q: spec cannot change while %w", k, name, ErrTerminating)
			}
			for _, f := range im.Finalizers {
				if !em.HasFinalizer(f) {
					return fmt.Errorf("update %s %q: finalizer %q cannot be added while %w", k, name, f, ErrTerminating)
				}
			}
		}
		nm.Finalizers = slices.Clone(im.Finalizers)
		if specChanged {
			nm.Generation++
		}
		if d, ok := next.(*manifests.Deployment); ok {
			ed := existing.(*manifests.Deployment)
			if specChanged || d.Terminal() != ed.Terminal() {
				if err := t.setReferences(name, nm.UID, liveReferences(ed), liveReferences(d)); err != nil {
					return err
				}
			}
		}
		if nm.DeletionTimestamp != nil && len(nm.Finalizers) == 0 {
			out = next
			return t.remove(next)
		}
		out = next
		return t.put(next, Modified)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// current returns the stored object that obj claims to be a write of: the
// resourceVersion (and uid, when given) must match, or the write is
// refused with ErrConflict (optimistic concurrency).
func (t *txn) current(obj manifests.Object, op string) (manifests.Object, error) {
	k, name := obj.GetKind(), obj.GetMeta().Name
	existing, err := t.get(k, name)
	if err != nil {
		return nil, err
	}
	em, im := existing.GetMeta(), obj.GetMeta()
	if im.ResourceVersion != em.ResourceVersion || (im.UID != "" && im.UID != em.UID) {
		return nil, fmt.Errorf("%s %s %q: %w", op, k, name, ErrConflict)
	}
	return existing, nil
}

// UpdateStatus implements Store.
func (s *core) UpdateStatus(ctx context.Context, obj manifests.Object) (manifests.Object, error) {
	var out manifests.Object
	err := s.update(ctx, func(t *txn) error {
		existing, err := t.current(obj, "update status of")
		if err != nil {
			return err
		}
		next := manifests.DeepCopy(existing)
		setStatus(next, obj)
		out = next
		return t.put(next, Modified)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func setStatus(o, from manifests.Object) {
	switch o := o.(type) {
	case *manifests.Deployment:
		o.Status = manifests.DeepCopy(from.(*manifests.Deployment)).Status
	case *manifests.SecretBundle:
		// Keys and times are the store's; nothing else is settable.
	case *manifests.Credentials:
	}
}
