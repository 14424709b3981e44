package seal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestKeyFileIsCreated0600InA0700Home(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	k, err := Load(home, true)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(k.Path())
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("key mode = %v, want 0600", got)
	}
	if fi.Size() != keySize {
		t.Errorf("key size = %d, want %d", fi.Size(), keySize)
	}
	hi, _ := os.Stat(home)
	if got := hi.Mode().Perm(); got != 0o700 {
		t.Errorf("home mode = %v, want 0700", got)
	}
}

func TestExistingKeyIsReusedNotReplaced(t *testing.T) {
	home := t.TempDir()
	k1, err := Load(home, true)
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := k1.Seal("SecretBundle/a/K", []byte("v"))
	k2, err := Load(home, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k2.Open("SecretBundle/a/K", sealed); err != nil {
		t.Fatalf("second load made a different key: %v", err)
	}
}

func TestMissingKeyWithoutCreateIsAHardError(t *testing.T) {
	home := t.TempDir()
	_, err := Load(home, false)
	if !errors.Is(err, ErrKeyMissing) {
		t.Fatalf("err = %v, want ErrKeyMissing", err)
	}
	if _, err := os.Stat(filepath.Join(home, KeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a key file was made: %v", err)
	}
}

func TestWorldReadableKeyIsRefused(t *testing.T) {
	home := t.TempDir()
	k, _ := Load(home, true)
	os.Chmod(k.Path(), 0o644)
	if _, err := Load(home, false); err == nil {
		t.Fatal("a 0644 key was accepted")
	}
}

func TestSealUsesAFreshNonceEachTime(t *testing.T) {
	k, _ := Load(t.TempDir(), true)
	a, _ := k.Seal("x", []byte("same"))
	b, _ := k.Seal("x", []byte("same"))
	if bytes.Equal(a[:nonceSize], b[:nonceSize]) || bytes.Equal(a, b) {
		t.Fatal("two sealings share a nonce")
	}
	if bytes.Contains(a, []byte("same")) {
		t.Fatal("plaintext visible in the sealed value")
	}
}

func TestOpenChecksIdentityAndKey(t *testing.T) {
	k, _ := Load(t.TempDir(), true)
	other, _ := Load(t.TempDir(), true)
	sealed, _ := k.Seal("SecretBundle/hf/HF_TOKEN", []byte("hf_abc"))

	got, err := k.Open("SecretBundle/hf/HF_TOKEN", sealed)
	if err != nil || string(got) != "hf_abc" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := k.Open("SecretBundle/other/HF_TOKEN", sealed); !errors.Is(err, ErrIdentity) {
		t.Errorf("moved ciphertext: err = %v, want ErrIdentity", err)
	}
	if _, err := other.Open("SecretBundle/hf/HF_TOKEN", sealed); !errors.Is(err, ErrOpen) {
		t.Errorf("wrong key: err = %v, want ErrOpen", err)
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	if _, err := k.Open("SecretBundle/hf/HF_TOKEN", tampered); !errors.Is(err, ErrOpen) {
		t.Errorf("tampered: err = %v, want ErrOpen", err)
	}
	if _, err := k.Open("x", []byte("short")); !errors.Is(err, ErrOpen) {
		t.Errorf("short: err = %v, want ErrOpen", err)
	}
}
