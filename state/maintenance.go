package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/anycloud/anycloud/seal"
)

// ErrDamaged: the store file is missing, empty, truncated or inconsistent
// while the home shows that it held data. The control plane refuses to
// start and changes nothing: starting afresh would forget every object,
// and every running VM with them.
var ErrDamaged = errors.New("store damaged")

// Maintenance is implemented by stores that can be copied and re-keyed
// while they serve.
type Maintenance interface {
	// Backup writes a consistent copy of the whole store to w, as of one
	// moment, without stopping writers.
	Backup(ctx context.Context, w io.Writer) (int64, error)
	// RotateKey makes a new cipher key and re-seals every sealed record
	// under it in one transaction.
	RotateKey(ctx context.Context) (RotateResult, error)
}

// RotateResult says what a key rotation did.
type RotateResult struct {
	// Records is how many sealed values were re-sealed.
	Records int `json:"records"`
	// KeyFile is the new key's file.
	KeyFile string `json:"keyFile"`
}

// restoreHint is how to get out of a refused start, shown with every
// ErrDamaged.
const restoreHint = "restore state.db from a backup (`anycloud backup FILE` made one; see the README, \"Backup and restore\"), or move the damaged file away to start an empty store on purpose; nothing was changed"

// preflight checks the store file before bbolt opens it for writing. A
// home that holds a cipher key or a sealing key has had a store: its
// state.db missing or empty means it was lost, not that this is a first
// start (bbolt would silently make a new, empty store over an empty file).
// A file that exists is opened read-only and checked from end to end
// (bbolt's Tx.Check) before anything writes to it, so that a truncated
// file is refused with a message instead of a panic, and left untouched.
func preflight(home, path string) error {
	hadStore := exists(filepath.Join(home, seal.KeyFile)) || exists(filepath.Join(home, seal.BoxKeyFile))
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && hadStore:
		return fmt.Errorf("%s is missing, but %s holds the keys of a store that was here: %w; restore state.db from a backup (`anycloud backup FILE` made one; see the README, \"Backup and restore\"), or, to start an empty store on purpose, move %s and %s out of the home; nothing was changed", path, home, ErrDamaged, seal.KeyFile, seal.BoxKeyFile)
	case errors.Is(err, fs.ErrNotExist):
		return nil // a first start
	case err != nil:
		return fmt.Errorf("stat %s: %w", path, err)
	case fi.Size() == 0 && hadStore:
		return fmt.Errorf("%s is empty (0 bytes), but this home held a store: %w; %s", path, ErrDamaged, restoreHint)
	case fi.Size() == 0:
		return nil // a first start that died before bbolt wrote its pages
	}
	return checkFile(path)
}

// checkFile opens a bbolt file read-only and checks it: its pages all
// inside the file, and every page reachable once (Tx.Check).
func checkFile(path string) (err error) {
	db, err := openBoltFile(path, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	// A damaged file can make bbolt read past its end through the memory
	// map: a fault, made a recoverable panic here.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%s is damaged (%v): %w; %s", path, p, ErrDamaged, restoreHint)
		}
	}()
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return db.View(func(tx *bolt.Tx) error {
		if tx.Size() > fi.Size() {
			return fmt.Errorf("%s is truncated (%d bytes; its pages need %d): %w; %s", path, fi.Size(), tx.Size(), ErrDamaged, restoreHint)
		}
		var problems []string
		for err := range tx.Check() {
			if len(problems) < 5 {
				problems = append(problems, err.Error())
			}
		}
		if len(problems) > 0 {
			return fmt.Errorf("%s is damaged (%s): %w; %s", path, strings.Join(problems, "; "), ErrDamaged, restoreHint)
		}
		return nil
	})
}

// openBoltFile opens a bbolt file, turning bbolt's panics on a damaged
// file (an invalid freelist page) into ErrDamaged.
func openBoltFile(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("%s is damaged (%v): %w; %s", path, p, ErrDamaged, restoreHint)
		}
	}()
	db, err = bolt.Open(path, 0o600, opts)
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("open %s: locked by another control plane", path)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum), errors.Is(err, bolterrors.ErrVersionMismatch),
		err != nil && strings.Contains(err.Error(), "file size too small"):
		return nil, fmt.Errorf("%s is damaged (%v): %w; %s", path, err, ErrDamaged, restoreHint)
	case err != nil:
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// loadCipherKey loads the key that opens check (the store's sealed known
// value), finishing a key rotation that a crash interrupted: the store
// commits under the new key before cipher.key.new replaces cipher.key,
// so a store that opens only with the new key completes the rename, and
// a leftover new key that does not open it is from a rotation that never
// committed and is removed.
func loadCipherKey(home string, check []byte) (*seal.Keyring, error) {
	newPath := filepath.Join(home, seal.NewKeyFile)
	if check == nil {
		os.Remove(newPath)
		return seal.Load(home, true)
	}
	keys, err := seal.Load(home, false)
	if err == nil {
		if _, oerr := keys.Open(keyCheckIdentity, check); oerr == nil {
			os.Remove(newPath)
			return keys, nil
		}
	}
	if nk, nerr := seal.LoadFile(newPath); nerr == nil {
		if _, oerr := nk.Open(keyCheckIdentity, check); oerr == nil {
			if err := nk.Install(home); err != nil {
				return nil, fmt.Errorf("finish the interrupted key rotation: %w", err)
			}
			return nk, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("cipher key %s does not open the sealed data in %s: it is not the key this store was made with; restore the right key (nothing was changed)", keys.Path(), filepath.Join(home, DBFile))
}

// Backup implements Maintenance: bbolt writes the pages of one read
// transaction, so the copy is consistent while writers carry on.
func (s *Bolt) Backup(ctx context.Context, w io.Writer) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("back up the store: %w", err)
	}
	return n, nil
}

// rotateStep names the moments of a rotation, for crash tests.
type rotateStep string

const (
	stepKeyWritten rotateStep = "key-written" // cipher.key.new exists; nothing re-sealed
	stepResealed   rotateStep = "resealed"    // re-sealed in the transaction, not committed
	stepCommitted  rotateStep = "committed"   // committed under the new key; cipher.key is the old one
	stepInstalled  rotateStep = "installed"   // cipher.key is the new key
)

// RotateKey implements Maintenance. The new key is written (and synced)
// to cipher.key.new first; one transaction re-seals every sealed value
// and the key check under it; only after that commits does the new key
// replace cipher.key. A crash at any moment leaves a store that opens:
// before the commit, the old key opens it and the new file is dropped;
// after it, OpenBolt finds that only the new key opens it and finishes
// the rename.
func (s *Bolt) RotateKey(ctx context.Context) (RotateResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	newPath := filepath.Join(s.home, seal.NewKeyFile)
	os.Remove(newPath) // from a rotation that never committed (OpenBolt checked)
	nk, err := seal.CreateKey(newPath)
	if err != nil {
		return RotateResult{}, err
	}
	s.rotateHook(stepKeyWritten)
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	records := 0
	err = s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte(bucketMeta))
		check, err := s.keys.Open(keyCheckIdentity, meta.Get([]byte(keyCheck)))
		if err != nil {
			return fmt.Errorf("open the key check: %w", err)
		}
		sealedCheck, err := nk.Seal(keyCheckIdentity, check)
		if err != nil {
			return err
		}
		if err := meta.Put([]byte(keyCheck), sealedCheck); err != nil {
			return err
		}
		b := tx.Bucket([]byte(bucketSealed))
		type rec struct{ k, v []byte }
		var out []rec
		err = b.ForEach(func(k, v []byte) error {
			var sealed map[string][]byte
			if err := json.Unmarshal(v, &sealed); err != nil {
				return fmt.Errorf("sealed values of %s are corrupt: %w", k, err)
			}
			for key, c := range sealed {
				id := string(k) + "/" + key // secretIdentity: kind/name/key
				plain, err := s.keys.Open(id, c)
				if err != nil {
					return err
				}
				sealed[key], err = nk.Seal(id, plain)
				clear(plain)
				if err != nil {
					return err
				}
				records++
			}
			data, err := json.Marshal(sealed)
			if err != nil {
				return err
			}
			out = append(out, rec{bytes.Clone(k), data})
			return nil
		})
		if err != nil {
			return err
		}
		for _, r := range out {
			if err := b.Put(r.k, r.v); err != nil {
				return err
			}
		}
		s.rotateHook(stepResealed)
		return nil
	})
	if err != nil {
		os.Remove(newPath)
		return RotateResult{}, fmt.Errorf("rotate the cipher key (the old key still serves): %w", err)
	}
	s.rotateHook(stepCommitted)
	if err := nk.Install(s.home); err != nil {
		// The store is sealed under the new key: keep using it. The next
		// start finishes the rename (loadCipherKey).
		s.keys = nk
		return RotateResult{}, fmt.Errorf("the store is re-sealed, but the new key is still at %s: %w; it is installed at the next start", newPath, err)
	}
	s.keys = nk
	s.rotateHook(stepInstalled)
	return RotateResult{Records: records, KeyFile: nk.Path()}, nil
}

// rotateHook is called at each step of a rotation; crash tests kill the
// process there.
func (s *Bolt) rotateHook(step rotateStep) {
	if s.onRotateStep != nil {
		s.onRotateStep(step)
	}
}

// CheckBackup opens a backup read-only and checks it as a start would,
// without the keys: its pages, its consistency, and that it holds a store
// (the meta bucket and the sealed key check). It returns how many objects
// it holds.
func CheckBackup(path string) (int, error) {
	if err := checkFile(path); err != nil {
		return 0, err
	}
	db, err := openBoltFile(path, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	n := 0
	err = db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte(bucketMeta))
		if meta == nil || meta.Get([]byte(keyCheck)) == nil || meta.Get([]byte(keyCluster)) == nil {
			return fmt.Errorf("%s is not an anycloud store: %w", path, ErrDamaged)
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if bytes.HasPrefix(name, []byte("objects/")) {
				n += b.Stats().KeyN
			}
			return nil
		})
	})
	return n, err
}

var _ Maintenance = (*Bolt)(nil)
