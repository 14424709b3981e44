package state

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/seal"
)

// Etcd is the Store on an etcd v3 cluster, shared by the control planes of
// a team. Objects live under Prefix+"objects/KIND/NAME"; the other buckets
// of the core (sealed values, the in-use index, leftovers, events, meta)
// under Prefix+BUCKET+"/KEY".
//
// resourceVersions are etcd revisions: an object's is the revision of the
// transaction that last wrote it, a list's the revision it was read at.
// Each write is one etcd transaction that reads a snapshot (one revision),
// buffers its writes and commits them on the condition that no other write
// of the store committed meanwhile (a compare on the revision of the store's
// lock key, which every write transaction also writes), so writes are
// serializable as bbolt's are; on conflict the transaction runs again.
// Sealed values are sealed before they reach etcd, under the cipher key
// file each control plane is given: the key never enters etcd. Events are
// kept under a lease (EtcdOptions.EventTTL) and expire on their own.
type Etcd struct {
	core
	client *clientv3.Client
	// own: the store made its client and closes it.
	own     bool
	prefix  string
	cluster string
	box     *seal.BoxKey
	fence   *Fence
	ttl     time.Duration
	leases  *eventLeases
	closed  chan struct{}
	once    *sync.Once
	// onCommit is EtcdOptions.OnCommit.
	onCommit func(fenced bool, rev int64)
}

// EtcdOptions say where the store is and how to open it.
type EtcdOptions struct {
	// Endpoints are the cluster's client URLs (host:port or
	// https://host:port).
	Endpoints []string
	// TLS is the client's TLS configuration; nil dials in the clear.
	TLS *tls.Config
	// Client, when set, is used instead of dialling Endpoints; the store
	// does not close it.
	Client *clientv3.Client
	// Prefix is where the store's keys live; "/anycloud/" when empty.
	Prefix string
	// Home holds the sealing key (seal.key), and the cipher key unless
	// CipherKeyFile names it.
	Home string
	// CipherKeyFile is the cipher key; Home's cipher.key when empty. It is
	// made only for a store that holds no sealed data yet.
	CipherKeyFile string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// EventTTL is how long an object's events are kept after their last
	// change; 1h when zero.
	EventTTL time.Duration
	// OnCommit, when set, is called after each write the store (or a
	// fenced view of it) commits, objects and events alike, saying
	// whether it was fenced and at which etcd revision it committed: the
	// failover tests check that a leader's writes end where another's
	// leadership begins (the revision orders them; the moment the writer
	// hears back does not).
	OnCommit func(fenced bool, rev int64)
}

// Fence is a leader's hold on the store: the leader key of an etcd
// election and its create revision. A store fenced with it writes only
// while that key exists with that revision.
type Fence struct {
	Key string
	Rev int64
}

// ErrNotLeader: a fenced write was refused because its fence no longer
// holds (another control plane leads, or the lease lapsed).
var ErrNotLeader = errors.New("not the leader: leadership was lost")

// OpenEtcd opens (or makes) the store on etcd. A store that holds sealed
// data and a cipher key that does not open it is a hard error.
func OpenEtcd(ctx context.Context, opts EtcdOptions) (*Etcd, error) {
	if opts.Home == "" {
		return nil, errors.New("open etcd store: no home for the keys")
	}
	if err := seal.EnsureHome(opts.Home); err != nil {
		return nil, err
	}
	s := &Etcd{client: opts.Client, prefix: opts.Prefix, ttl: opts.EventTTL, leases: &eventLeases{}, closed: make(chan struct{}), once: &sync.Once{}, onCommit: opts.OnCommit}
	if s.prefix == "" {
		s.prefix = "/anycloud/"
	}
	if s.ttl == 0 {
		s.ttl = time.Hour
	}
	s.core.now = opts.Now
	if s.core.now == nil {
		s.core.now = time.Now
	}
	s.be = etcdBackend{s}
	if s.client == nil {
		c, err := NewEtcdClient(opts.Endpoints, opts.TLS)
		if err != nil {
			return nil, err
		}
		s.client, s.own = c, true
	}
	if err := s.init(ctx, opts); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// NewEtcdClient dials an etcd cluster with the store's limits: a
// 10,000-object apply is one transaction of some megabytes (the cluster's
// --max-request-bytes and --max-txn-ops must allow it too).
func NewEtcdClient(endpoints []string, tlsConfig *tls.Config) (*clientv3.Client, error) {
	c, err := clientv3.New(clientv3.Config{
		Endpoints: endpoints, TLS: tlsConfig, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		MaxCallSendMsgSize: 64 << 20, MaxCallRecvMsgSize: 64 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %s: %w", strings.Join(endpoints, ","), err)
	}
	return c, nil
}

func (s *Etcd) key(bucket, key string) string { return s.prefix + bucket + "/" + key }

// Client is the store's etcd client: the control plane elects its leader
// with it.
func (s *Etcd) Client() *clientv3.Client { return s.client }

// Prefix is where the store's keys live.
func (s *Etcd) Prefix() string { return s.prefix }

// init checks the keys against the store, or records them in a new one,
// and makes the cluster id and the local credentials once.
func (s *Etcd) init(ctx context.Context, opts EtcdOptions) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	keyPath := opts.CipherKeyFile
	if keyPath == "" {
		keyPath = filepath.Join(opts.Home, seal.KeyFile)
	}
	check, err := s.metaGet(ctx, keyCheck)
	if err != nil {
		return fmt.Errorf("open etcd store: %w", err)
	}
	var keys *seal.Keyring
	switch _, statErr := os.Stat(keyPath); {
	case check == nil && errors.Is(statErr, os.ErrNotExist):
		if keys, err = seal.CreateKey(keyPath); err != nil {
			return err
		}
	case check != nil && errors.Is(statErr, os.ErrNotExist):
		return fmt.Errorf("cipher key %s is missing, but etcd %s holds sealed data: %w; give this control plane the key file the others use (--cipher-key-file); nothing was changed", keyPath, s.prefix, seal.ErrKeyMissing)
	default:
		if keys, err = seal.LoadFile(keyPath); err != nil {
			return err
		}
	}
	if check == nil {
		sealed, err := keys.Seal(keyCheckIdentity, []byte("anycloud"))
		if err != nil {
			return err
		}
		if check, err = s.metaCreate(ctx, keyCheck, sealed); err != nil {
			return err
		}
	}
	if _, err := keys.Open(keyCheckIdentity, check); err != nil {
		return fmt.Errorf("cipher key %s does not open the sealed data in etcd %s: it is not the key this store was made with; give every control plane the same key file (nothing was changed)", keyPath, s.prefix)
	}
	s.keys = keys
	sealPub, err := s.metaGet(ctx, keySealPub)
	if err != nil {
		return err
	}
	box, err := seal.OpenBoxKey(opts.Home, sealPub == nil)
	if err != nil {
		return err
	}
	if sealPub == nil {
		if sealPub, err = s.metaCreate(ctx, keySealPub, box.Public[:]); err != nil {
			return err
		}
	}
	if string(sealPub) != string(box.Public[:]) {
		return fmt.Errorf("sealing key %s is not the one this store's control planes use: the SecretBundle manifests sealed for it would not open; copy seal.key from the first control plane's home (nothing was changed)", filepath.Join(opts.Home, seal.BoxKeyFile))
	}
	s.box = box
	var b [8]byte
	rand.Read(b[:])
	id, err := s.metaCreate(ctx, keyCluster, fmt.Appendf(nil, "%x", b))
	if err != nil {
		return err
	}
	s.cluster = string(id)
	return s.update(ctx, func(t *txn) error {
		if _, err := t.get(manifests.KindCredentials, manifests.LocalCredentials); !errors.Is(err, ErrNotFound) {
			return err
		}
		_, err := t.create(Write{Object: localCredentials()})
		return err
	})
}

func (s *Etcd) metaGet(ctx context.Context, key string) ([]byte, error) {
	resp, err := s.client.Get(ctx, s.key(bucketMeta, key))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0].Value, nil
}

// metaCreate writes a meta key unless it exists, and returns what it
// holds: the value of whichever control plane wrote it first.
func (s *Etcd) metaCreate(ctx context.Context, key string, val []byte) ([]byte, error) {
	k := s.key(bucketMeta, key)
	resp, err := s.client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(val))).Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return nil, err
	}
	if resp.Succeeded {
		return val, nil
	}
	return resp.Responses[0].GetResponseRange().Kvs[0].Value, nil
}

// ClusterID implements Store.
func (s *Etcd) ClusterID() string { return s.cluster }

// SealingKey is the control plane's key pair for `secrets seal`, checked
// against the one recorded in the store.
func (s *Etcd) SealingKey() *seal.BoxKey { return s.box }

// Fenced returns the store as a leader writes it: every write (objects
// and events) commits only while f holds, and fails with ErrNotLeader once
// it does not. Reads are as the store's.
func (s *Etcd) Fenced(f Fence) *Etcd {
	c := &Etcd{client: s.client, prefix: s.prefix, cluster: s.cluster, box: s.box, fence: &f, ttl: s.ttl, leases: s.leases, closed: s.closed, once: s.once, onCommit: s.onCommit}
	c.core.now, c.keys = s.now, s.keys
	c.be = etcdBackend{c}
	return c
}

// CheckFence reports ErrNotLeader unless the store's fence holds now, as
// a linearizable read of the leader key sees it. A store without a fence
// always holds.
func (s *Etcd) CheckFence(ctx context.Context) error {
	if s.fence == nil {
		return nil
	}
	resp, err := s.client.Get(ctx, s.fence.Key)
	if err != nil {
		return fmt.Errorf("check leadership: %w", err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != s.fence.Rev {
		return ErrNotLeader
	}
	return nil
}

// Close ends every watch and, when the store dialled it, the client. A
// fenced view shares its store's client and closing it closes the store.
func (s *Etcd) Close() error {
	var err error
	s.once.Do(func() {
		close(s.closed)
		if s.own {
			err = s.client.Close()
		}
	})
	return err
}

func (s *Etcd) committed(rev int64) {
	if s.onCommit != nil {
		s.onCommit(s.fence != nil, rev)
	}
}

// maxAttempts bounds how often a write transaction runs again after
// conflicts before it gives up with ErrConflict.
const maxAttempts = 200

// etcdBackend runs the core's transactions on etcd.
type etcdBackend struct{ s *Etcd }

func (b etcdBackend) view(ctx context.Context, fn func(kvReader) error) (string, error) {
	// The snapshot's revision is the first read's: a read of one key costs
	// one round trip.
	tx := &etcdTx{ctx: ctx, s: b.s}
	if err := fn(tx); err != nil {
		return "", err
	}
	if tx.rev == 0 {
		resp, err := b.s.client.Get(ctx, b.s.key(bucketMeta, keyRV))
		if err != nil {
			return "", fmt.Errorf("read etcd: %w", err)
		}
		tx.rev = resp.Header.Revision
	}
	return strconv.FormatInt(tx.rev, 10), nil
}

func (b etcdBackend) update(ctx context.Context, fn func(kvWriter, string) ([]WatchEvent, error)) (string, error) {
	s := b.s
	lock := s.key(bucketMeta, keyRV)
	for attempt := 0; ; attempt++ {
		resp, err := s.client.Get(ctx, lock)
		if err != nil {
			return "", fmt.Errorf("read etcd: %w", err)
		}
		var lockRev int64
		if len(resp.Kvs) > 0 {
			lockRev = resp.Kvs[0].ModRevision
		}
		tx := &etcdTx{ctx: ctx, s: s, rev: resp.Header.Revision, writes: map[string]*etcdWrite{}}
		if _, err := fn(tx, ""); err != nil {
			return "", err
		}
		if len(tx.order) == 0 {
			return strconv.FormatInt(tx.rev, 10), nil
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(lock), "=", lockRev)}
		if s.fence != nil {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.fence.Key), "=", s.fence.Rev))
		}
		ops := make([]clientv3.Op, 0, len(tx.order)+1)
		for _, k := range tx.order {
			w := tx.writes[k]
			if w.del {
				ops = append(ops, clientv3.OpDelete(k))
			} else {
				ops = append(ops, clientv3.OpPut(k, string(w.val)))
			}
		}
		ops = append(ops, clientv3.OpPut(lock, ""))
		cresp, err := s.client.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return "", fmt.Errorf("write etcd: %w", err)
		}
		if cresp.Succeeded {
			s.committed(cresp.Header.Revision)
			return strconv.FormatInt(cresp.Header.Revision, 10), nil
		}
		if err := s.CheckFence(ctx); err != nil {
			return "", err
		}
		if attempt >= maxAttempts {
			return "", fmt.Errorf("write etcd: %d attempts met concurrent writes: %w", attempt+1, ErrConflict)
		}
		if err := backoffSleep(ctx, attempt); err != nil {
			return "", err
		}
	}
}

// backoffSleep waits a random while that grows with the attempt, so that
// writers that keep meeting one another spread out.
func backoffSleep(ctx context.Context, attempt int) error {
	limit := int64(time.Millisecond) << min(attempt, 6)
	n, _ := rand.Int(rand.Reader, big.NewInt(limit))
	t := time.NewTimer(time.Duration(n.Int64()))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

type etcdWrite struct {
	val []byte
	del bool
}

// etcdTx reads etcd at one revision (the first read's, when rev is 0)
// and buffers its writes, reading them back before the snapshot.
type etcdTx struct {
	ctx    context.Context
	s      *Etcd
	rev    int64
	order  []string
	writes map[string]*etcdWrite
}

func (t *etcdTx) get(bucket, key string) ([]byte, int64, error) {
	k := t.s.key(bucket, key)
	if w, ok := t.writes[k]; ok {
		if w.del {
			return nil, 0, nil
		}
		return w.val, 0, nil
	}
	resp, err := t.s.client.Get(t.ctx, k, t.at()...)
	if err != nil {
		return nil, 0, fmt.Errorf("read etcd: %w", err)
	}
	t.pin(resp.Header.Revision)
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	return resp.Kvs[0].Value, resp.Kvs[0].ModRevision, nil
}

func (t *etcdTx) scan(bucket, prefix string, fn func(key, val []byte, rev int64) error) error {
	base := t.s.key(bucket, "")
	full := base + prefix
	resp, err := t.s.client.Get(t.ctx, full, append(t.at(), clientv3.WithPrefix())...)
	if err != nil {
		return fmt.Errorf("read etcd: %w", err)
	}
	t.pin(resp.Header.Revision)
	if len(t.writes) == 0 {
		for _, kv := range resp.Kvs {
			if err := fn(kv.Key[len(base):], kv.Value, kv.ModRevision); err != nil {
				return err
			}
		}
		return nil
	}
	type entry struct {
		val []byte
		rev int64
	}
	merged := map[string]entry{}
	for _, kv := range resp.Kvs {
		merged[string(kv.Key)] = entry{kv.Value, kv.ModRevision}
	}
	for _, k := range t.order {
		if !strings.HasPrefix(k, full) {
			continue
		}
		if w := t.writes[k]; w.del {
			delete(merged, k)
		} else {
			merged[k] = entry{w.val, 0}
		}
	}
	keys := make([]string, 0, len(merged))
	for k := range merged {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		e := merged[k]
		if err := fn([]byte(k[len(base):]), e.val, e.rev); err != nil {
			return err
		}
	}
	return nil
}

func (t *etcdTx) count(string) int { return 0 }

// at reads at the snapshot's revision, once it is pinned.
func (t *etcdTx) at() []clientv3.OpOption {
	if t.rev == 0 {
		return nil
	}
	return []clientv3.OpOption{clientv3.WithRev(t.rev)}
}

func (t *etcdTx) pin(rev int64) {
	if t.rev == 0 {
		t.rev = rev
	}
}

func (t *etcdTx) write(bucket, key string, w *etcdWrite) error {
	if t.writes == nil {
		return errors.New("write in a read-only etcd transaction")
	}
	k := t.s.key(bucket, key)
	if _, ok := t.writes[k]; !ok {
		t.order = append(t.order, k)
	}
	t.writes[k] = w
	return nil
}

func (t *etcdTx) put(bucket, key string, val []byte) error {
	return t.write(bucket, key, &etcdWrite{val: val})
}

func (t *etcdTx) del(bucket, key string) error {
	return t.write(bucket, key, &etcdWrite{del: true})
}

// eventLeases hands out the lease events are written under: one lease at
// a time, replaced when half its TTL has passed, so that an object's
// events live between TTL/2 and TTL after their last change.
type eventLeases struct {
	mu      sync.Mutex
	id      clientv3.LeaseID
	granted time.Time
}

func (s *Etcd) eventLease(ctx context.Context) (clientv3.LeaseID, error) {
	l := s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.id != 0 && time.Since(l.granted) < s.ttl/2 {
		return l.id, nil
	}
	resp, err := s.client.Grant(ctx, int64(max(s.ttl/time.Second, 1)))
	if err != nil {
		return 0, fmt.Errorf("grant the events lease: %w", err)
	}
	l.id, l.granted = resp.ID, time.Now()
	return l.id, nil
}

// RecordEvent implements Store: a read, a merge and a write conditioned
// on the events' key not having changed since (and, fenced, on the fence).
func (s *Etcd) RecordEvent(ctx context.Context, ref manifests.ObjectRef, ev Event) error {
	now := s.now().UTC().Truncate(time.Millisecond)
	k := s.key(bucketEvents, sealedKey(ref.Kind, ref.Name))
	lease, err := s.eventLease(ctx)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		resp, err := s.client.Get(ctx, k)
		if err != nil {
			return fmt.Errorf("read etcd: %w", err)
		}
		var old []byte
		var mod int64
		if len(resp.Kvs) > 0 {
			old, mod = resp.Kvs[0].Value, resp.Kvs[0].ModRevision
		}
		data, err := addEvent(old, ev, now)
		if err != nil {
			return err
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k), "=", mod)}
		if s.fence != nil {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.fence.Key), "=", s.fence.Rev))
		}
		cresp, err := s.client.Txn(ctx).If(cmps...).Then(clientv3.OpPut(k, string(data), clientv3.WithLease(lease))).Commit()
		if err != nil {
			return fmt.Errorf("write etcd: %w", err)
		}
		if cresp.Succeeded {
			s.committed(cresp.Header.Revision)
			return nil
		}
		if err := s.CheckFence(ctx); err != nil {
			return err
		}
		if attempt >= maxAttempts {
			return fmt.Errorf("record event: %w", ErrConflict)
		}
		if err := backoffSleep(ctx, attempt); err != nil {
			return err
		}
	}
}

// Watch implements Store: the objects as of one revision, then etcd's
// watch from the next. A watch that breaks (a member lost, the connection
// reset) resumes from the revision after the last event sent; one whose
// revision was compacted away, or whose reader falls behind, is closed,
// and the caller watches again.
func (s *Etcd) Watch(ctx context.Context, k manifests.Kind) ([]manifests.Object, <-chan WatchEvent, error) {
	objs, rv, err := s.List(ctx, k)
	if err != nil {
		return nil, nil, err
	}
	rev, _ := strconv.ParseInt(rv, 10, 64)
	out := make(chan WatchEvent, watchBuffer)
	go s.watch(ctx, k, rev+1, out)
	return objs, out, nil
}

func (s *Etcd) watch(ctx context.Context, k manifests.Kind, from int64, out chan<- WatchEvent) {
	defer close(out)
	prefix := s.key(kindBucket(k), "")
	for attempt := 0; ; attempt++ {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		ch := s.client.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithPrevKV())
		ok := s.forward(k, ch, out, &from)
		cancel()
		if !ok {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-s.closed:
			return
		default:
		}
		if backoffSleep(ctx, attempt) != nil {
			return
		}
	}
}

// forward sends the events of one etcd watch; it reports whether the
// watch may resume.
func (s *Etcd) forward(k manifests.Kind, ch clientv3.WatchChan, out chan<- WatchEvent, from *int64) bool {
	for {
		var resp clientv3.WatchResponse
		var open bool
		select {
		case resp, open = <-ch:
		case <-s.closed:
			return false
		}
		if !open {
			return true
		}
		if resp.CompactRevision != 0 {
			return false
		}
		if resp.Err() != nil {
			return true
		}
		for _, ev := range resp.Events {
			var we WatchEvent
			var err error
			switch {
			case ev.Type == clientv3.EventTypeDelete && ev.PrevKv != nil:
				we.Type = Deleted
				we.Object, err = unmarshalObject(k, ev.PrevKv.Value, ev.Kv.ModRevision)
			case ev.Type == clientv3.EventTypeDelete:
				continue
			default:
				we.Type = Modified
				if ev.IsCreate() {
					we.Type = Added
				}
				we.Object, err = unmarshalObject(k, ev.Kv.Value, ev.Kv.ModRevision)
				if err == nil {
					decorate(we.Object)
				}
			}
			*from = ev.Kv.ModRevision + 1
			if err != nil {
				continue
			}
			select {
			case out <- we:
			default:
				return false // fell behind: the caller watches again
			}
		}
	}
}

var (
	_ Store     = (*Etcd)(nil)
	_ Leftovers = (*Etcd)(nil)
)
