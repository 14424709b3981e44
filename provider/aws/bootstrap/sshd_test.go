package bootstrap

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/anycloud/anycloud/internal/testenv"
)

// RequireSSHD returns the absolute path of OpenSSH's sshd, or skips t
// (fails it under CI=true) when the machine has none.
func RequireSSHD(t testing.TB) string {
	t.Helper()
	path := "/usr/sbin/sshd"
	if _, err := os.Stat(path); err != nil {
		p, err := exec.LookPath("sshd")
		if err != nil || !filepath.IsAbs(p) {
			testenv.Missing(t, "OpenSSH sshd not installed (Debian: openssh-server)")
		}
		path = p
	}
	if os.Geteuid() != 0 {
		testenv.Missing(t, "a private sshd that runs docker as root needs the tests to run as root")
	}
	return path
}

// sshdServer is a private sshd serving one deployment's keys.
type sshdServer struct {
	Addr string
	log  *lockedBuffer
}

// Log is what sshd wrote so far.
func (s *sshdServer) Log() string { return s.log.String() }

// startSSHD runs sshd on a free 127.0.0.1 port with k's host key and k's
// client key authorized for root, until the end of the test.
func startSSHD(t *testing.T, k *Keys) *sshdServer {
	t.Helper()
	sshd := RequireSSHD(t)
	// The privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	auth := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(auth, []byte(k.AuthorizedKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	config := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(config, []byte(strings.Join([]string{
		"ListenAddress " + addr,
		"HostKey " + k.HostKeyPath,
		"AuthorizedKeysFile " + auth,
		"PermitRootLogin prohibit-password",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"StrictModes no",
		"PidFile " + filepath.Join(dir, "sshd.pid"),
		"LogLevel DEBUG",
		"",
	}, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &sshdServer{Addr: addr, log: &lockedBuffer{}}
	cmd := exec.Command(sshd, "-D", "-e", "-f", config)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.Log())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return s
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("sshd exited: %v\n%s", err, s.Log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd does not accept connections on %s: %v\n%s", addr, err, s.Log())
		}
	}
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
	c, err := Dial(ctx, Target{Addr: s.Addr, User: "root", Signer: k.Signer, HostKey: k.HostKey})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return k, s, c
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
