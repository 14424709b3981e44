package bootstrap

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestEnsureKeysMakesPrivateFilesOnceAndReusesThem(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	k, err := EnsureKeys(home, "uid-1")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(home, ".ssh")
	for path, want := range map[string]os.FileMode{
		dir:                         0o700 | os.ModeDir,
		filepath.Join(dir, "uid-1"): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
		}
	}
	if k.Path != filepath.Join(dir, "uid-1") || k.PublicPath != k.Path+".pub" || k.KnownHostsPath != k.Path+".known_hosts" {
		t.Errorf("paths: %+v", k)
	}
	// No host key is made here any more: each VM makes its own.
	for _, name := range []string{"uid-1.host", "uid-1.host.pub", "uid-1.known_hosts"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("%s exists after EnsureKeys (%v)", name, err)
		}
	}

	// The private key is OpenSSH PEM, as ssh -i reads it.
	data, err := os.ReadFile(k.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\n")) {
		t.Errorf("private key is not OpenSSH PEM:\n%.40s", data)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		t.Fatalf("parse private key: %v", err)
	}
	if signer.PublicKey().Type() != ssh.KeyAlgoED25519 || !sameKey(signer.PublicKey(), k.Signer.PublicKey()) {
		t.Errorf("private key file is not Keys.Signer's ED25519 key")
	}
	// The .pub file is the authorized_keys line of the same key.
	line := readFile(t, k.PublicPath)
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil || !sameKey(pub, k.Signer.PublicKey()) {
		t.Errorf("%s: %q does not hold the key (%v)", k.PublicPath, line, err)
	}
	if got := strings.TrimSpace(line); got != k.AuthorizedKey {
		t.Errorf("AuthorizedKey %q, .pub file %q", k.AuthorizedKey, got)
	}

	// A second call, even with a lost .pub and a loosened mode, gives the
	// same key and restores both.
	os.Remove(k.PublicPath)
	os.Chmod(k.Path, 0o644)
	again, err := EnsureKeys(home, "uid-1")
	if err != nil {
		t.Fatal(err)
	}
	if !sameKey(again.Signer.PublicKey(), k.Signer.PublicKey()) || again.AuthorizedKey != k.AuthorizedKey {
		t.Errorf("second EnsureKeys made a new key")
	}
	if fi, err := os.Stat(k.Path); err != nil || fi.Mode() != 0o600 {
		t.Errorf("private key mode after reuse: %v %v", fi.Mode(), err)
	}
	if got := strings.TrimSpace(readFile(t, k.PublicPath)); got != k.AuthorizedKey {
		t.Errorf(".pub file not restored: %q", got)
	}

	// Another deployment gets another key.
	other, err := EnsureKeys(home, "uid-2")
	if err != nil {
		t.Fatal(err)
	}
	if sameKey(other.Signer.PublicKey(), k.Signer.PublicKey()) {
		t.Errorf("two deployments share a key")
	}
}

func TestEnsureKeysConcurrentCallersGetTheSameKeys(t *testing.T) {
	home := t.TempDir()
	const n = 8
	keys := make([]*Keys, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { keys[i], errs[i] = EnsureKeys(home, "uid") })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !sameKey(keys[i].Signer.PublicKey(), keys[0].Signer.PublicKey()) {
			t.Fatalf("caller %d got a different key", i)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(home, ".ssh"))
	if len(entries) != 2 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("want 2 files, got %v", names)
	}
}

func TestEnsureKeysRefusesACorruptKeyAndABadUID(t *testing.T) {
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	if err := os.WriteFile(filepath.Join(home, ".ssh", "uid"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureKeys(home, "uid"); err == nil {
		t.Error("a corrupt key was accepted")
	}
	if got := readFile(t, filepath.Join(home, ".ssh", "uid")); got != "not a key" {
		t.Error("a corrupt key was replaced")
	}
	for _, uid := range []string{"", ".", "..", "a/b", "../x"} {
		if _, err := EnsureKeys(home, uid); err == nil {
			t.Errorf("uid %q accepted", uid)
		}
	}
}

func TestRemoveKeysDeletesKeysAndPinsAndToleratesAbsence(t *testing.T) {
	home := t.TempDir()
	k, err := EnsureKeys(home, "uid")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.PinHostKey("i-0abc", freshHostKey(t)); err != nil {
		t.Fatal(err)
	}
	// What anycloud made before VMs made their own host keys goes too.
	legacy := []string{filepath.Join(home, ".ssh", "uid.host"), filepath.Join(home, ".ssh", "uid.host.pub")}
	for _, p := range legacy {
		if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keep, err := EnsureKeys(home, "other")
	if err != nil {
		t.Fatal(err)
	}
	if err := RemoveKeys(home, "uid"); err != nil {
		t.Fatal(err)
	}
	for _, p := range append([]string{k.Path, k.PublicPath, k.KnownHostsPath}, legacy...) {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there", p)
		}
	}
	if _, err := os.Stat(keep.Path); err != nil {
		t.Errorf("another deployment's key went too: %v", err)
	}
	if err := RemoveKeys(home, "uid"); err != nil {
		t.Errorf("second RemoveKeys: %v", err)
	}
	if err := RemoveKeys(t.TempDir(), "never"); err != nil {
		t.Errorf("RemoveKeys without .ssh: %v", err)
	}
}

func sameKey(a, b ssh.PublicKey) bool { return bytes.Equal(a.Marshal(), b.Marshal()) }

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// freshHostKey is a host key that no server of the test serves.
func freshHostKey(t *testing.T) ssh.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
