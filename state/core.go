package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
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

// keyCheckIdentity seals a known value at first use, so that opening the
// store with another key fails at once instead of when a secret is needed.
const keyCheckIdentity = "anycloud/keycheck"

// maxEvents is how many events are kept per object.
const maxEvents = 50

// localCredentials is the built-in credentials object, made when a store
// is.
func localCredentials() *manifests.Credentials {
	return &manifests.Credentials{
		TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindCredentials},
		Metadata: manifests.ObjectMeta{Name: manifests.LocalCredentials},
		Spec:     manifests.CredentialsSpec{Provider: manifests.ProviderLocal},
	}
}

// addEvent merges ev into an object's list of events (JSON, nil when
// none): a repeat of the last one bumps its count.
func addEvent(old []byte, ev Event, now time.Time) ([]byte, error) {
	var list []Event
	if old != nil {
		if err := json.Unmarshal(old, &list); err != nil {
			return nil, err
		}
	}
	if n := len(list); n > 0 && list[n-1].Type == ev.Type && list[n-1].Reason == ev.Reason && list[n-1].Message == ev.Message {
		list[n-1].Count++
		list[n-1].LastSeen = now
	} else {
		ev.Count, ev.FirstSeen, ev.LastSeen = 1, now, now
		list = append(list, ev)
		if len(list) > maxEvents {
			list = list[len(list)-maxEvents:]
		}
	}
	return json.Marshal(list)
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

// Apply implements Store.
func (s *core) Apply(ctx context.Context, writes []Write, opts ApplyOptions) ([]ApplyResult, error) {
	var results []ApplyResult
	errDryRun := errors.New("dry run")
	err := s.update(ctx, func(t *txn) error {
		// A backend may run this again after a conflict: start afresh.
		results = make([]ApplyResult, 0, len(writes))
		keep := map[manifests.ObjectRef]bool{}
		for i, w := range writes {
			r, err := t.apply(w, opts)
			if err != nil {
				return &ApplyError{Index: i, Err: err}
			}
			results = append(results, r)
			keep[manifests.ObjectRef{Kind: w.Object.GetKind(), Name: w.Object.GetMeta().Name}] = true
		}
		if opts.PruneSet != "" {
			pruned, err := t.prune(opts.PruneSet, keep)
			if err != nil {
				return err
			}
			results = append(results, pruned...)
		}
		if opts.DryRun {
			return errDryRun
		}
		return nil
	})
	if err != nil && !errors.Is(err, errDryRun) {
		return nil, err
	}
	return results, nil
}

func (t *txn) apply(w Write, opts ApplyOptions) (ApplyResult, error) {
	in := w.Object
	k, name := in.GetKind(), in.GetMeta().Name
	if msg := manifests.ValidateName(name); msg != "" {
		return ApplyResult{}, fmt.Errorf("%s metadata.name: %s: %w", k, msg, ErrInvalid)
	}
	if k == manifests.KindCredentials && name == manifests.LocalCredentials {
		return ApplyResult{}, fmt.Errorf("credentials %q: %w: it always selects the local Docker engine", name, ErrProtected)
	}
	existing, err := t.get(k, name)
	if errors.Is(err, ErrNotFound) {
		o, err := t.create(w)
		if err != nil {
			return ApplyResult{}, err
		}
		if err := t.checkReferences(o, opts); err != nil {
			return ApplyResult{}, err
		}
		res := ApplyResult{Ref: manifests.Ref(o), Action: ActionCreated, Generation: o.GetMeta().Generation}
		if opts.DryRun {
			res.Changes = changes(nil, o, false)
		}
		return res, nil
	}
	if err != nil {
		return ApplyResult{}, err
	}
	em := existing.GetMeta()
	if em.DeletionTimestamp != nil {
		return ApplyResult{}, fmt.Errorf("%s %q is %w (Terminating); wait until it is gone, then apply again", k, name, ErrTerminating)
	}
	next := manifests.DeepCopy(existing)
	nm := next.GetMeta()
	nm.Labels = maps.Clone(in.GetMeta().Labels)
	nm.Annotations = mergeAnnotations(em.Annotations, in.GetMeta().Annotations)
	setSpec(next, in)
	changed := !bytes.Equal(existing.SpecJSON(), next.SpecJSON())
	secretsChanged, err := t.writeSecrets(next, w.Secrets)
	if err != nil {
		return ApplyResult{}, err
	}
	if changed || secretsChanged {
		nm.Generation++
	}
	if !changed && !secretsChanged && maps.Equal(em.Labels, nm.Labels) && maps.Equal(em.Annotations, nm.Annotations) {
		return ApplyResult{Ref: manifests.Ref(existing), Action: ActionUnchanged, Generation: em.Generation, ApplySet: em.Annotations[manifests.AnnotationApplySet]}, nil
	}
	if d, ok := next.(*manifests.Deployment); ok {
		if err := t.checkReferences(d, opts); err != nil {
			return ApplyResult{}, err
		}
		if err := t.setReferences(name, nm.UID, existing.(*manifests.Deployment).References(), d.References()); err != nil {
			return ApplyResult{}, err
		}
	}
	if err := t.put(next, Modified); err != nil {
		return ApplyResult{}, err
	}
	res := ApplyResult{Ref: manifests.Ref(next), Action: ActionConfigured, Generation: nm.Generation, ApplySet: nm.Annotations[manifests.AnnotationApplySet]}
	if opts.DryRun {
		res.Changes = changes(existing, next, secretsChanged)
	}
	return res, nil
}

// create writes a new object with fresh system metadata.
func (t *txn) create(w Write) (manifests.Object, error) {
	in := w.Object
	o, err := manifests.New(in.GetKind())
	if err != nil {
		return nil, err
	}
	m := o.GetMeta()
	im := in.GetMeta()
	m.Name = im.Name
	m.Labels = maps.Clone(im.Labels)
	m.Annotations = maps.Clone(im.Annotations)
	m.UID = manifests.NewUID()
	m.CreationTimestamp = t.s.now().UTC().Truncate(time.Second)
	setSpec(o, in)
	// Generation is still 0 here: writeSecrets tells a new bundle (which
	// must bring values) from an existing one by it.
	if _, err := t.writeSecrets(o, w.Secrets); err != nil {
		return nil, err
	}
	m.Generation = 1
	if d, ok := o.(*manifests.Deployment); ok {
		d.Status.Phase = manifests.PhasePending
		if err := t.setReferences(m.Name, m.UID, nil, d.References()); err != nil {
			return nil, err
		}
	}
	return o, t.put(o, Added)
}

// setSpec copies the user-owned spec of in into o. Values that must not be
// stored (plaintext and box-sealed bundle values) are dropped: they reach
// the store only through Write.Secrets.
func setSpec(o, in manifests.Object) {
	switch o := o.(type) {
	case *manifests.Deployment:
		o.Spec = manifests.DeepCopy(in.(*manifests.Deployment)).Spec
	case *manifests.SecretBundle:
		o.Spec = manifests.SecretBundleSpec{FromEnv: slices.Clone(in.(*manifests.SecretBundle).Spec.FromEnv)}
	case *manifests.Credentials:
		o.Spec = manifests.DeepCopy(in.(*manifests.Credentials)).Spec
	}
}

// mergeAnnotations takes the user's annotations and keeps the system's
// (anycloud.dev/…) that the user did not set, such as the resubmit marker
// and the apply set.
//
// An imperative write (`secrets new`, `submit`, `credentials new`) to an
// object that an apply set holds keeps it in the set: the user rotated a
// value, say, and still expects the object to be managed from the source
// it came from, the next apply of which writes it again, and pruned when
// the source drops it. Silently taking it out of its set would leave it
// behind for ever. The API warns about it (ApplyResult.ApplySet). An
// apply set's write ends the imperative mark.
func mergeAnnotations(existing, in map[string]string) map[string]string {
	out := maps.Clone(in)
	for k, v := range existing {
		if k == manifests.AnnotationCreatedBy && in[manifests.AnnotationApplySet] != "" {
			continue
		}
		if strings.HasPrefix(k, "anycloud.dev/") {
			if _, set := in[k]; !set {
				if out == nil {
					out = map[string]string{}
				}
				out[k] = v
			}
		}
	}
	return out
}

// writeSecrets seals and stores values for o and records their key names
// in o's status. It reports whether the values changed. values == nil
// keeps what is stored.
func (t *txn) writeSecrets(o manifests.Object, values map[string]string) (bool, error) {
	k, name := o.GetKind(), o.GetMeta().Name
	if k == manifests.KindDeployment {
		if values != nil {
			return false, fmt.Errorf("deployment %q: secret values belong in a SecretBundle: %w", name, ErrInvalid)
		}
		return false, nil
	}
	if c, ok := o.(*manifests.Credentials); ok && values == nil {
		if c.Spec.AWS == nil || c.Spec.AWS.AccessKeyID == "" {
			values = map[string]string{} // no static keys: drop any stored
		} else if v, _, err := t.tx.get(bucketSealed, sealedKey(k, name)); err != nil {
			return false, err
		} else if v == nil {
			return false, fmt.Errorf("credentials %q spec.aws.accessKeyId: the secret access key is missing: %w", name, ErrInvalid)
		}
	}
	if b, ok := o.(*manifests.SecretBundle); ok && values == nil && b.Metadata.Generation == 0 {
		return false, fmt.Errorf("secret bundle %q: no values: %w", name, ErrInvalid)
	}
	if values == nil {
		return false, nil
	}
	// The last line of defence for every entry point: a value that cannot
	// be delivered as env never reaches the store, where the launch that
	// fails on it would quote it in an error.
	what := fmt.Sprintf("secret bundle %q", name)
	if k == manifests.KindCredentials {
		what = fmt.Sprintf("credentials %q", name)
	}
	if problems := manifests.CheckSecrets(what, values); len(problems) > 0 {
		return false, fmt.Errorf("%s: %w", strings.Join(problems, "; "), ErrInvalid)
	}
	if k == manifests.KindSecretBundle {
		for key := range values {
			if !manifests.ValidEnvKey(key) {
				return false, fmt.Errorf("%s: a key is not a valid environment variable name (not shown, as it may be a value): %w", what, ErrInvalid)
			}
		}
	}
	old, err := t.openSecrets(k, name)
	if err != nil {
		return false, err
	}
	changed := !maps.Equal(old, values)
	for k := range old {
		old[k] = ""
	}
	if !changed {
		return false, nil
	}
	sealed := make(map[string][]byte, len(values))
	keys := make([]string, 0, len(values))
	for key, v := range values {
		c, err := t.s.keys.Seal(secretIdentity(k, name, key), []byte(v))
		if err != nil {
			return false, err
		}
		sealed[key] = c
		keys = append(keys, key)
	}
	slices.Sort(keys)
	data, err := json.Marshal(sealed)
	if err != nil {
		return false, err
	}
	if err := t.tx.put(bucketSealed, sealedKey(k, name), data); err != nil {
		return false, err
	}
	switch o := o.(type) {
	case *manifests.SecretBundle:
		o.Status.Keys = keys
		o.Status.UpdatedAt = t.s.now().UTC().Truncate(time.Second)
	case *manifests.Credentials:
		o.Status.SecretKeys = keys
		if len(keys) == 0 {
			o.Status.SecretKeys = nil
		}
	}
	return true, nil
}

func secretIdentity(k manifests.Kind, name, key string) string {
	return string(k) + "/" + name + "/" + key
}

func (t *txn) openSecrets(k manifests.Kind, name string) (map[string]string, error) {
	return openSecrets(t.s.keys, t.tx, k, name)
}

func openSecrets(keys *seal.Keyring, tx kvReader, k manifests.Kind, name string) (map[string]string, error) {
	out := map[string]string{}
	data, _, err := tx.get(bucketSealed, sealedKey(k, name))
	if err != nil {
		return nil, err
	}
	if data == nil {
		return out, nil
	}
	var sealed map[string][]byte
	if err := json.Unmarshal(data, &sealed); err != nil {
		return nil, fmt.Errorf("%s %q: sealed values are corrupt: %w", k, name, err)
	}
	for key, c := range sealed {
		v, err := keys.Open(secretIdentity(k, name, key), c)
		if err != nil {
			return nil, err
		}
		out[key] = string(v)
	}
	return out, nil
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

// prune deletes, declaratively, every object of the apply set that keep
// does not name: deployments first, so that the bundles and credentials
// they release go in the same transaction when nothing else uses them.
func (t *txn) prune(set string, keep map[manifests.ObjectRef]bool) ([]ApplyResult, error) {
	var out []ApplyResult
	for i := len(manifests.Kinds) - 1; i >= 0; i-- {
		k := manifests.Kinds[i]
		objs, err := listObjects(t.tx, k)
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			m := o.GetMeta()
			if m.Annotations[manifests.AnnotationApplySet] != set || keep[manifests.ObjectRef{Kind: k, Name: m.Name}] {
				continue
			}
			if m.Annotations[manifests.AnnotationPrune] == manifests.PruneDisabled || m.DeletionTimestamp != nil {
				continue
			}
			if k == manifests.KindCredentials && m.Name == manifests.LocalCredentials {
				continue
			}
			res, err := t.delete(k, m.Name, DeleteOptions{Declarative: true})
			if err != nil {
				return nil, fmt.Errorf("prune %s %q: %w", k, m.Name, err)
			}
			out = append(out, ApplyResult{Ref: manifests.Ref(o), Action: ActionPruned, Generation: m.Generation, Terminating: !res.Deleted})
		}
	}
	return out, nil
}

// OpenSecrets implements Store.
func (s *core) OpenSecrets(ctx context.Context, k manifests.Kind, name string) (map[string]string, int64, error) {
	var (
		out map[string]string
		gen int64
	)
	s.keyMu.RLock()
	defer s.keyMu.RUnlock()
	_, err := s.be.view(ctx, func(tx kvReader) error {
		o, err := getObject(tx, k, name)
		if err != nil {
			return err
		}
		gen = o.GetMeta().Generation
		out, err = openSecrets(s.keys, tx, k, name)
		return err
	})
	return out, gen, err
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

// Events implements Store.
func (s *core) Events(ctx context.Context, ref manifests.ObjectRef) ([]Event, error) {
	var list []Event
	_, err := s.be.view(ctx, func(tx kvReader) error {
		v, _, err := tx.get(bucketEvents, sealedKey(ref.Kind, ref.Name))
		if err != nil || v == nil {
			return err
		}
		return json.Unmarshal(v, &list)
	})
	return list, err
}
