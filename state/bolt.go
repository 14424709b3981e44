package state

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/seal"
)

// DBFile is the store's file name inside the home directory.
const DBFile = "state.db"

// Bolt is the Store in a bbolt file.
type Bolt struct {
	core
	db      *bolt.DB
	home    string
	cluster string
	box     *seal.BoxKey

	// onRotateStep, when set, is called at each step of RotateKey.
	onRotateStep func(rotateStep)

	// mu orders writes with their watch notifications.
	mu       sync.Mutex
	watchers map[manifests.Kind]map[*watcher]struct{}
}

// BoltOptions tune OpenBolt.
type BoltOptions struct {
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// NoSync skips fsync per transaction. Only benchmarks of what is not
	// the disk set it.
	NoSync bool
}

// initialMmapSize is the address space bbolt maps at first. Each time the
// file outgrows its mapping, bbolt remaps and copies every node the
// transaction has touched onto the heap: an apply of 10,000 objects
// remapped several times and half its allocations were those copies.
// Mapping is address space, not memory: pages count towards the resident
// size only once read, and the file grows only as data does.
const initialMmapSize = 256 << 20

// OpenBolt opens (or makes) the store in home: state.db and the cipher key.
// A store that holds sealed data and a missing or different key is a hard
// error; a new key is made only for a store without sealed data.
//
// Before anything is written, the file is checked (see preflight): a
// store that is missing, empty, truncated or inconsistent while the home
// shows it held data is refused with ErrDamaged and left as it is.
func OpenBolt(home string, opts BoltOptions) (*Bolt, error) {
	if err := seal.EnsureHome(home); err != nil {
		return nil, err
	}
	path := filepath.Join(home, DBFile)
	if err := preflight(home, path); err != nil {
		return nil, err
	}
	db, err := openBoltFile(path, &bolt.Options{Timeout: time.Second, NoSync: opts.NoSync, InitialMmapSize: initialMmapSize})
	if err != nil {
		return nil, err
	}
	s := &Bolt{db: db, home: home, watchers: map[manifests.Kind]map[*watcher]struct{}{}}
	s.core.now = opts.Now
	if s.now == nil {
		s.core.now = time.Now
	}
	s.be = boltBackend{s}
	if err := s.init(home); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Bolt) init(home string) error {
	var check, sealPub []byte
	// Read-only until the keys are known to be right: a write transaction,
	// even an empty one, rewrites the file's meta page, and a refused open
	// must leave the store as it was.
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(bucketMeta)); b != nil {
			check = bytes.Clone(b.Get([]byte(keyCheck)))
			sealPub = bytes.Clone(b.Get([]byte(keySealPub)))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("init store: %w", err)
	}
	keys, err := loadCipherKey(home, check)
	if err != nil {
		return err
	}
	box, err := seal.OpenBoxKey(home, sealPub == nil)
	if err != nil {
		return err
	}
	if sealPub != nil && !bytes.Equal(sealPub, box.Public[:]) {
		return fmt.Errorf("sealing key %s is not the one this control plane made: the SecretBundle manifests sealed for it would not open; restore the right seal.key (nothing was changed)", filepath.Join(home, seal.BoxKeyFile))
	}
	s.keys, s.box = keys, box
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{bucketMeta, bucketSealed, bucketUsers, bucketEvents, bucketLeftovers, bucketTokens, bucketTokenHashes} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return fmt.Errorf("init store: %w", err)
			}
		}
		for _, k := range manifests.Kinds {
			if _, err := tx.CreateBucketIfNotExists([]byte(kindBucket(k))); err != nil {
				return fmt.Errorf("init store: %w", err)
			}
		}
		meta := tx.Bucket([]byte(bucketMeta))
		if id := meta.Get([]byte(keyCluster)); id != nil {
			s.cluster = string(id)
		} else {
			var b [8]byte
			rand.Read(b[:])
			s.cluster = fmt.Sprintf("%x", b)
			if err := meta.Put([]byte(keyCluster), []byte(s.cluster)); err != nil {
				return err
			}
		}
		if sealPub == nil {
			if err := meta.Put([]byte(keySealPub), bytes.Clone(box.Public[:])); err != nil {
				return err
			}
		}
		if check == nil {
			sealed, err := keys.Seal(keyCheckIdentity, []byte("anycloud"))
			if err != nil {
				return err
			}
			if err := meta.Put([]byte(keyCheck), sealed); err != nil {
				return err
			}
		}
		// The local credentials always exist.
		if tx.Bucket([]byte(kindBucket(manifests.KindCredentials))).Get([]byte(manifests.LocalCredentials)) == nil {
			w := &txn{s: &s.core, tx: boltTx{tx}, rv: nextRV(tx)}
			if _, err := w.create(Write{Object: localCredentials()}); err != nil {
				return err
			}
		}
		return nil
	})
}

// ClusterID implements Store.
func (s *Bolt) ClusterID() string { return s.cluster }

// SealingKey is the control plane's key pair for `secrets seal`, checked
// against the one recorded in the store.
func (s *Bolt) SealingKey() *seal.BoxKey { return s.box }

// Close closes the file and ends every watch.
func (s *Bolt) Close() error {
	s.mu.Lock()
	for _, ws := range s.watchers {
		for w := range ws {
			w.close()
		}
	}
	s.watchers = map[manifests.Kind]map[*watcher]struct{}{}
	s.mu.Unlock()
	return s.db.Close()
}

func nextRV(tx *bolt.Tx) string {
	b := tx.Bucket([]byte(bucketMeta))
	var rv uint64
	if v := b.Get([]byte(keyRV)); len(v) == 8 {
		rv = binary.BigEndian.Uint64(v)
	}
	rv++
	b.Put([]byte(keyRV), binary.BigEndian.AppendUint64(nil, rv))
	return strconv.FormatUint(rv, 10)
}

func currentRV(tx *bolt.Tx) string {
	if v := tx.Bucket([]byte(bucketMeta)).Get([]byte(keyRV)); len(v) == 8 {
		return strconv.FormatUint(binary.BigEndian.Uint64(v), 10)
	}
	return "0"
}

// boltBackend runs the core's transactions in bbolt: one writer at a
// time (bbolt's own lock, and mu, which orders commits with their watch
// notifications), so a transaction never conflicts and runs once.
type boltBackend struct{ s *Bolt }

func (b boltBackend) view(ctx context.Context, fn func(kvReader) error) (string, error) {
	var rv string
	err := b.s.db.View(func(tx *bolt.Tx) error {
		rv = currentRV(tx)
		return fn(boltTx{tx})
	})
	return rv, err
}

func (b boltBackend) update(ctx context.Context, fn func(kvWriter, string) ([]WatchEvent, error)) (string, error) {
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	var (
		rv     string
		events []WatchEvent
	)
	err := s.db.Update(func(tx *bolt.Tx) error {
		rv = nextRV(tx)
		var err error
		events, err = fn(boltTx{tx}, rv)
		return err
	})
	if err != nil {
		return "", err
	}
	s.publish(events)
	return rv, nil
}

// boltTx is a bbolt transaction as the core reads and writes it.
type boltTx struct{ tx *bolt.Tx }

func (t boltTx) bucket(name string) (*bolt.Bucket, error) {
	b := t.tx.Bucket([]byte(name))
	if b == nil {
		return nil, fmt.Errorf("store bucket %q is missing", name)
	}
	return b, nil
}

func (t boltTx) get(bucket, key string) ([]byte, int64, error) {
	b, err := t.bucket(bucket)
	if err != nil {
		return nil, 0, err
	}
	return b.Get([]byte(key)), 0, nil
}

func (t boltTx) scan(bucket, prefix string, fn func(key, val []byte, rev int64) error) error {
	b, err := t.bucket(bucket)
	if err != nil {
		return err
	}
	c := b.Cursor()
	p := []byte(prefix)
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if err := fn(k, v, 0); err != nil {
			return err
		}
	}
	return nil
}

func (t boltTx) count(bucket string) int {
	if b := t.tx.Bucket([]byte(bucket)); b != nil {
		return b.Stats().KeyN
	}
	return 0
}

func (t boltTx) put(bucket, key string, val []byte) error {
	b, err := t.bucket(bucket)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), val)
}

func (t boltTx) del(bucket, key string) error {
	b, err := t.bucket(bucket)
	if err != nil {
		return err
	}
	return b.Delete([]byte(key))
}

// RecordEvent implements Store.
func (s *Bolt) RecordEvent(ctx context.Context, ref manifests.ObjectRef, ev Event) error {
	now := s.now().UTC().Truncate(time.Millisecond)
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketEvents))
		key := []byte(sealedKey(ref.Kind, ref.Name))
		data, err := addEvent(b.Get(key), ev, now)
		if err != nil {
			return err
		}
		return b.Put(key, data)
	})
}

var _ Store = (*Bolt)(nil)
