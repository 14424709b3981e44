package seal

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/box"
)

// BoxKeyFile holds the control plane's private sealing key (for values
// sealed by `anycloud secrets seal`), beside the store key.
const BoxKeyFile = "seal.key"

// boxPrefix marks a value sealed to a control plane, so that a plaintext
// pasted into spec.sealed is refused instead of being taken for ciphertext.
const boxPrefix = "box:v1:"

// ErrNotSealed: a value in spec.sealed was not made by `secrets seal`.
var ErrNotSealed = errors.New("not a value made by `anycloud secrets seal`")

// BoxKey is the control plane's sealing key pair. Anyone with the public
// key can seal a value that only this control plane opens; the sealed
// value names the bundle and key it belongs to, so it cannot be renamed or
// moved. It is made on first use, private part 0600.
type BoxKey struct {
	Public  [32]byte
	private [32]byte
}

// ErrBoxKeyMissing: the sealing key that this control plane's sealed
// manifests were made for is gone.
var ErrBoxKeyMissing = errors.New("sealing key missing")

// LoadBoxKey reads or makes the sealing key pair in home.
func LoadBoxKey(home string) (*BoxKey, error) { return OpenBoxKey(home, true) }

// OpenBoxKey reads the sealing key pair in home. When the file is absent
// it makes a new one only if create is true: the store passes false once
// it has recorded a key, because a new key silently makes every sealed
// manifest in Git unopenable.
func OpenBoxKey(home string, create bool) (*BoxKey, error) {
	if err := EnsureHome(home); err != nil {
		return nil, err
	}
	path := filepath.Join(home, BoxKeyFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !create {
		return nil, fmt.Errorf("%w: %s is absent, but this control plane made one before: the SecretBundle manifests sealed for it (anycloud secrets seal) open only with that key; restore the file from a backup (a new key cannot open them; nothing was changed)", ErrBoxKeyMissing, path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		pub, priv, err := box.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("make sealing key: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("create sealing key: %w", err)
		}
		_, werr := f.Write(priv[:])
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			os.Remove(path)
			return nil, fmt.Errorf("write sealing key: %w", werr)
		}
		return &BoxKey{Public: *pub, private: *priv}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read sealing key: %w", err)
	}
	if len(data) != 32 {
		return nil, fmt.Errorf("sealing key %s: want 32 bytes, found %d", path, len(data))
	}
	k := &BoxKey{}
	copy(k.private[:], data)
	pub, err := publicFromPrivate(k.private)
	if err != nil {
		return nil, err
	}
	k.Public = pub
	return k, nil
}

// PublicString is the public key as printed by `secrets seal --public-key`.
func (k *BoxKey) PublicString() string { return base64.StdEncoding.EncodeToString(k.Public[:]) }

// ParsePublicKey reads a key printed by PublicString.
func ParsePublicKey(s string) ([32]byte, error) {
	var pub [32]byte
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != 32 {
		return pub, errors.New("public key: want 32 bytes of base64, as printed by `anycloud secrets seal --public-key`")
	}
	copy(pub[:], b)
	if lowOrder(pub) {
		return [32]byte{}, errors.New("public key: not a usable key (a low-order point, so anyone could open what is sealed to it); use the key printed by `anycloud secrets seal --public-key`")
	}
	return pub, nil
}

// lowOrder reports whether pub is a low-order curve25519 point (such as all
// zeros): every shared key with it is zero, so a value sealed to it opens
// for anyone.
func lowOrder(pub [32]byte) bool {
	_, err := curve25519.X25519(curve25519.Basepoint, pub[:])
	return err != nil
}

// SealTo seals value for bundle/key to the public key pub.
func SealTo(pub [32]byte, bundle, key string, value []byte) (string, error) {
	if lowOrder(pub) {
		return "", errors.New("seal: public key is a low-order point; refusing to seal to it")
	}
	plain := append([]byte(BoxIdentity(bundle, key)+"\x00"), value...)
	out, err := box.SealAnonymous(nil, plain, &pub, rand.Reader)
	clear(plain)
	if err != nil {
		return "", err
	}
	return boxPrefix + base64.StdEncoding.EncodeToString(out), nil
}

// BoxIdentity is what a box-sealed value is bound to.
func BoxIdentity(bundle, key string) string { return "SecretBundle/" + bundle + "/" + key }

// OpenSealed opens a value made by SealTo for bundle/key.
func (k *BoxKey) OpenSealed(bundle, key, sealed string) ([]byte, error) {
	if !strings.HasPrefix(sealed, boxPrefix) {
		return nil, ErrNotSealed
	}
	raw, err := base64.StdEncoding.DecodeString(sealed[len(boxPrefix):])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotSealed, err)
	}
	plain, ok := box.OpenAnonymous(nil, raw, &k.Public, &k.private)
	if !ok {
		return nil, fmt.Errorf("%w (sealed for another control plane, or tampered)", ErrOpen)
	}
	id, value, found := strings.Cut(string(plain), "\x00")
	clear(plain)
	if !found || id != BoxIdentity(bundle, key) {
		return nil, fmt.Errorf("%w: it was sealed for another bundle or key", ErrIdentity)
	}
	return []byte(value), nil
}

func publicFromPrivate(priv [32]byte) ([32]byte, error) {
	var pub [32]byte
	b, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		return pub, fmt.Errorf("sealing key: %w", err)
	}
	copy(pub[:], b)
	return pub, nil
}
