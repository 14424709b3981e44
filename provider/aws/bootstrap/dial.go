package bootstrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/crypto/ssh"
)

// ErrHostKeyMismatch is the error Dial wraps when the server presents a host
// key other than the one pinned for the VM: the address may belong to
// another machine now, or someone is in the middle.
var ErrHostKeyMismatch = errors.New("host key did not match the one pinned for this VM")

// DefaultDialTimeout bounds Dial (connection and handshake) when ctx has no
// earlier deadline: a VM that cannot be reached is reported as such
// within it.
const DefaultDialTimeout = 15 * time.Second

// Target is a VM to reach over SSH.
type Target struct {
	Addr    string        // host:port
	User    string        // login user
	Signer  ssh.Signer    // client key (Keys.Signer)
	HostKey ssh.PublicKey // the pinned host key (Keys.PinnedHostKey)
}

// Dial connects and authenticates to t, accepting only t.HostKey as the
// server's host key: any other key is refused with an error wrapping
// ErrHostKeyMismatch. Connecting and the SSH handshake end when ctx ends
// or after DefaultDialTimeout; the client returned outlives ctx.
func Dial(ctx context.Context, t Target) (*ssh.Client, error) {
	if t.Signer == nil || t.HostKey == nil {
		return nil, fmt.Errorf("ssh %s: target needs a signer and a host key", t.Addr)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, DefaultDialTimeout,
		fmt.Errorf("no SSH answer within %s (the VM may be down, or port 22 closed to this machine): %w", DefaultDialTimeout, context.DeadlineExceeded))
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", t.Addr, err)
	}
	// The handshake knows nothing of ctx: its end closes the connection.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	cfg := &ssh.ClientConfig{
		User:              t.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(t.Signer)},
		HostKeyCallback:   pinned(t.HostKey),
		HostKeyAlgorithms: hostKeyAlgorithms(t.HostKey),
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, t.Addr, cfg)
	ended := !stop() // ctx ended while handshaking: conn is closed
	var hk *hostKeyError
	switch {
	case errors.As(err, &hk):
		conn.Close()
		return nil, fmt.Errorf("ssh %s: %w", t.Addr, hk)
	case err != nil:
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ssh %s: %w", t.Addr, context.Cause(ctx))
		}
		return nil, fmt.Errorf("ssh %s: %w", t.Addr, err)
	case ended:
		c.Close()
		return nil, fmt.Errorf("ssh %s: %w", t.Addr, context.Cause(ctx))
	}
	return ssh.NewClient(c, chans, reqs), nil
}

// pinned accepts want only, and says clearly what else it saw.
func pinned(want ssh.PublicKey) ssh.HostKeyCallback {
	return func(hostname string, remote net.Addr, got ssh.PublicKey) error {
		if bytes.Equal(got.Marshal(), want.Marshal()) {
			return nil
		}
		return &hostKeyError{got: got, want: want}
	}
}

type hostKeyError struct{ got, want ssh.PublicKey }

func (e *hostKeyError) Error() string {
	return fmt.Sprintf("%v: server offered %s %s, expected %s %s", ErrHostKeyMismatch,
		e.got.Type(), ssh.FingerprintSHA256(e.got), e.want.Type(), ssh.FingerprintSHA256(e.want))
}

func (e *hostKeyError) Unwrap() error { return ErrHostKeyMismatch }

// hostKeyAlgorithms asks the server for the pinned key's own algorithm, so
// that a server holding several host keys presents the pinned one.
func hostKeyAlgorithms(k ssh.PublicKey) []string {
	switch k.Type() {
	case ssh.KeyAlgoRSA:
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	default:
		return []string{k.Type()}
	}
}
