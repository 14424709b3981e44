// Package seal encrypts secret values at rest.
//
// There is one type, Keyring: the 32-byte key in $ANYCLOUD_HOME/cipher.key,
// and two operations, Seal and Open. A sealed value is
//
//	nonce (24 random bytes) || secretbox(identity-length || identity || value)
//
// where identity names the record the value belongs to ("SecretBundle/hf/
// HF_TOKEN"). Open checks the identity, so a ciphertext copied into another
// record does not open.
package seal

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/nacl/secretbox"
)

// KeyFile is the key's file name inside the home directory.
const KeyFile = "cipher.key"

const (
	keySize   = 32
	nonceSize = 24
)

// Sentinel errors.
var (
	// ErrKeyMissing: sealed data exists but the key file does not.
	ErrKeyMissing = errors.New("cipher key missing")
	// ErrOpen: the value did not open under this key (wrong key or
	// tampered data).
	ErrOpen = errors.New("sealed value does not open under this key")
	// ErrIdentity: the value opened but belongs to another record.
	ErrIdentity = errors.New("sealed value belongs to another record")
)

// Keyring holds the store key. It is safe for concurrent use.
type Keyring struct {
	key  [keySize]byte
	path string
}

// Path is the key file the keyring was loaded from.
func (k *Keyring) Path() string { return k.path }

// Load reads the key in home. When the file is absent it makes a new key
// only if create is true; the caller passes create=false when sealed data
// already exists, so that a lost key is a hard error rather than a silent
// new key that makes the old data unreadable.
func Load(home string, create bool) (*Keyring, error) {
	if err := EnsureHome(home); err != nil {
		return nil, err
	}
	path := filepath.Join(home, KeyFile)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !create:
		return nil, fmt.Errorf("%w: %s is absent but the store holds sealed data; restore the key file (a new key cannot open the existing data)", ErrKeyMissing, path)
	case errors.Is(err, fs.ErrNotExist):
		return createKey(path)
	case err != nil:
		return nil, fmt.Errorf("read cipher key: %w", err)
	}
	if len(data) != keySize {
		return nil, fmt.Errorf("cipher key %s: want %d bytes, found %d", path, keySize, len(data))
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("cipher key %s: mode %v is readable by others; run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	k := &Keyring{path: path}
	copy(k.key[:], data)
	return k, nil
}

// NewKeyFile is where a key rotation writes the new key, until the store
// re-sealed under it has committed and it replaces KeyFile.
const NewKeyFile = "cipher.key.new"

// LoadFile reads a key from path, with the checks of Load.
func LoadFile(path string) (*Keyring, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read cipher key: %w", err)
	}
	if len(data) != keySize {
		return nil, fmt.Errorf("cipher key %s: want %d bytes, found %d", path, keySize, len(data))
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("cipher key %s: mode %v is readable by others; run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	k := &Keyring{path: path}
	copy(k.key[:], data)
	clear(data)
	return k, nil
}

// CreateKey makes a new random key in a new file at path (0600, synced,
// and the directory synced), refusing to replace an existing file.
func CreateKey(path string) (*Keyring, error) {
	k, err := createKey(path)
	if err != nil {
		return nil, err
	}
	return k, syncDir(filepath.Dir(path))
}

// Install moves the key's file to home's KeyFile, replacing what is
// there in one atomic rename, and syncs the directory so that the rename
// survives a crash.
func (k *Keyring) Install(home string) error {
	dst := filepath.Join(home, KeyFile)
	if err := os.Rename(k.path, dst); err != nil {
		return fmt.Errorf("install cipher key: %w", err)
	}
	k.path = dst
	return syncDir(home)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func createKey(path string) (*Keyring, error) {
	k := &Keyring{path: path}
	if _, err := rand.Read(k.key[:]); err != nil {
		return nil, fmt.Errorf("make cipher key: %w", err)
	}
	// O_EXCL: never replace a key that appeared meanwhile.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create cipher key: %w", err)
	}
	if _, err := f.Write(k.key[:]); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("write cipher key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("sync cipher key: %w", err)
	}
	return k, f.Close()
}

// EnsureHome makes the home directory with mode 0700, and tightens an
// existing one.
func EnsureHome(home string) error {
	if err := os.MkdirAll(home, 0o700); err != nil {
		return fmt.Errorf("make home %s: %w", home, err)
	}
	fi, err := os.Stat(home)
	if err != nil {
		return err
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(home, 0o700); err != nil {
			return fmt.Errorf("chmod home %s: %w", home, err)
		}
	}
	return nil
}

// Seal encrypts value for the record named identity, with a fresh random
// nonce.
func (k *Keyring) Seal(identity string, value []byte) ([]byte, error) {
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	plain := make([]byte, 0, 4+len(identity)+len(value))
	plain = binary.BigEndian.AppendUint32(plain, uint32(len(identity)))
	plain = append(plain, identity...)
	plain = append(plain, value...)
	out := secretbox.Seal(nonce[:], plain, &nonce, &k.key)
	clear(plain)
	return out, nil
}

// Open decrypts a sealed value and checks that it belongs to identity.
func (k *Keyring) Open(identity string, sealed []byte) ([]byte, error) {
	if len(sealed) < nonceSize+secretbox.Overhead {
		return nil, fmt.Errorf("open %s: %w", identity, ErrOpen)
	}
	var nonce [nonceSize]byte
	copy(nonce[:], sealed[:nonceSize])
	plain, ok := secretbox.Open(nil, sealed[nonceSize:], &nonce, &k.key)
	if !ok {
		return nil, fmt.Errorf("open %s: %w", identity, ErrOpen)
	}
	if len(plain) < 4 {
		return nil, fmt.Errorf("open %s: %w", identity, ErrIdentity)
	}
	n := binary.BigEndian.Uint32(plain)
	if uint64(n) > uint64(len(plain)-4) || !bytes.Equal(plain[4:4+n], []byte(identity)) {
		clear(plain)
		return nil, fmt.Errorf("open %s: %w", identity, ErrIdentity)
	}
	return plain[4+n:], nil
}
