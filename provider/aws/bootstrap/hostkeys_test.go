package bootstrap

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// console is what cloud-init 22.4 printed on an emulated VM's console,
// around the keys block, with an ECDSA key added as other images print.
func console(keys ...ssh.PublicKey) []byte {
	var b strings.Builder
	b.WriteString("Cloud-init v. 22.4.2 running 'modules:final'\nci-info: no authorized SSH keys fingerprints found for user debian.\n")
	b.WriteString(consoleKeysBegin + "\n")
	for i, k := range keys {
		prefix := ""
		if i%2 == 1 {
			prefix = "ec2: "
		}
		b.WriteString(prefix + AuthorizedLine(k) + " root@i-0123\n")
	}
	b.WriteString(consoleKeysEnd + "\nCloud-init v. 22.4.2 finished\n")
	return []byte(b.String())
}

func TestHostKeysFromConsoleReadsTheLastBlock(t *testing.T) {
	first, second, ecdsa := freshHostKey(t), freshHostKey(t), ecdsaKey(t)
	out := append(console(first), console(ecdsa, second)...)
	keys, err := HostKeysFromConsole(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || !sameKey(keys[0], ecdsa) || !sameKey(keys[1], second) {
		t.Fatalf("keys = %v, want the second block's two keys", keys)
	}
	if got := PreferredHostKey(keys); !sameKey(got, second) {
		t.Errorf("preferred key is %s, want the ED25519 one", got.Type())
	}
	if got := PreferredHostKey([]ssh.PublicKey{ecdsa}); !sameKey(got, ecdsa) {
		t.Errorf("with no ED25519 key, the first is preferred")
	}
}

func TestHostKeysFromConsoleWithoutKeysSaysSo(t *testing.T) {
	for name, out := range map[string]string{
		"booting":     "Cloud-init v. 22.4.2 running 'init-local'\n",
		"half block":  consoleKeysBegin + "\nssh-ed25519 AAAA",
		"empty block": consoleKeysBegin + "\n" + consoleKeysEnd + "\n",
		"garbage":     consoleKeysBegin + "\nnot a key\n" + consoleKeysEnd + "\n",
	} {
		if _, err := HostKeysFromConsole([]byte(out)); !errors.Is(err, ErrNoHostKeys) {
			t.Errorf("%s: err = %v, want ErrNoHostKeys", name, err)
		}
	}
}

func TestPinHostKeyPinsOncePerInstance(t *testing.T) {
	k, err := EnsureKeys(t.TempDir(), "uid")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k.PinnedHostKey("i-1"); err != nil || got != nil {
		t.Fatalf("a fresh deployment has a pin: %v %v", got, err)
	}
	a, b, c := freshHostKey(t), freshHostKey(t), freshHostKey(t)
	if got, err := k.PinHostKey("i-1", a); err != nil || !sameKey(got, a) {
		t.Fatalf("pin i-1: %v %v", got, err)
	}
	// A later console showing another key cannot move the pin.
	if got, err := k.PinHostKey("i-1", b); err != nil || !sameKey(got, a) {
		t.Errorf("second pin of i-1 returned another key (%v)", err)
	}
	if _, err := k.PinHostKey("i-2", c); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]ssh.PublicKey{"i-1": a, "i-2": c} {
		if got, err := k.PinnedHostKey(id); err != nil || got == nil || !sameKey(got, want) {
			t.Errorf("PinnedHostKey(%s) = %v, %v", id, got, err)
		}
	}
	// The file is OpenSSH known_hosts with instance ids as host names.
	data := readFile(t, k.KnownHostsPath)
	if want := "i-1 " + AuthorizedLine(a) + "\ni-2 " + AuthorizedLine(c) + "\n"; data != want {
		t.Errorf("known_hosts:\n%s\nwant:\n%s", data, want)
	}
	for _, bad := range []string{"", "i 1", "i-1\nx", "../x"} {
		if _, err := k.PinHostKey(bad, a); err == nil {
			t.Errorf("instance id %q accepted", bad)
		}
	}
	os.WriteFile(k.KnownHostsPath, []byte("i-1 not-a-key\n"), 0o644)
	if _, err := k.PinnedHostKey("i-1"); err == nil {
		t.Error("a corrupt known_hosts file was read as no pin")
	}
}

func ecdsaKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
