package bootstrap

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/anycloud/anycloud/internal/testenv"
)

// sshdServer is a private sshd serving one deployment's keys.
type sshdServer struct {
	Addr string
	// HostKey is the server's own host key, made for the test as a VM
	// makes its own.
	HostKey ssh.PublicKey
	log     string // its log file
}

// Log is what sshd wrote so far.
func (s *sshdServer) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// startSSHD runs sshd on a free 127.0.0.1 port with a host key of its own
// and k's client key authorized for root, until the end of the test,
// logging at DEBUG so that tests can search the log for values.
func startSSHD(t *testing.T, k *Keys) *sshdServer {
	t.Helper()
	sshd := testenv.RequireSSHD(t)
	hostPEM, hostKey := newHostKey(t)
	dir := testenv.ShortTempDir(t)
	addr, stop, err := testenv.RunSSHD(sshd, dir, hostPEM, []string{k.AuthorizedKey}, "LogLevel DEBUG")
	if err != nil {
		t.Fatal(err)
	}
	s := &sshdServer{Addr: addr, HostKey: hostKey, log: filepath.Join(dir, "sshd.log")}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.Log())
		}
	})
	return s
}

// setup makes a deployment's keys, serves them with a private sshd and
// returns the keys, the server and a client logged in as root.
func setup(t *testing.T) (*Keys, *sshdServer, *ssh.Client) {
	t.Helper()
	k, err := EnsureKeys(t.TempDir(), "d-"+randomHex(t, 4))
	if err != nil {
		t.Fatal(err)
	}
	s := startSSHD(t, k)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, Target{Addr: s.Addr, User: "root", Signer: k.Signer, HostKey: s.HostKey})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return k, s, c
}

// newHostKey makes an ED25519 host key: its OpenSSH PEM and public key.
func newHostKey(t testing.TB) ([]byte, ssh.PublicKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "test-host")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(block), signer.PublicKey()
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
