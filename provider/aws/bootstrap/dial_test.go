package bootstrap

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestDialWithThePinnedHostKeySucceeds(t *testing.T) {
	_, _, c := setup(t)
	out, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	got, err := out.Output("id -u")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(got)) != "0" {
		t.Errorf("id -u = %q, want 0", got)
	}
}

func TestDialRefusesAnotherHostKey(t *testing.T) {
	k, err := EnsureKeys(t.TempDir(), "uid")
	if err != nil {
		t.Fatal(err)
	}
	s := startSSHD(t, k)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	other := freshHostKey(t)
	c, err := Dial(ctx, Target{Addr: s.Addr, User: "root", Signer: k.Signer, HostKey: other})
	if err == nil {
		c.Close()
		t.Fatal("a host key other than the pinned one was accepted")
	}
	if !errors.Is(err, ErrHostKeyMismatch) {
		t.Errorf("error does not wrap ErrHostKeyMismatch: %v", err)
	}
	for _, want := range []string{s.Addr, "host key did not match the one pinned for this VM",
		ssh.FingerprintSHA256(s.HostKey), ssh.FingerprintSHA256(other)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "handshake failed") {
		t.Errorf("error %q keeps the library's noise", err)
	}
}

func TestDialGivesUpWhenTheContextEnds(t *testing.T) {
	// A server that accepts and then never speaks.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	k, err := EnsureKeys(t.TempDir(), "uid")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Dial(ctx, Target{Addr: l.Addr().String(), User: "root", Signer: k.Signer, HostKey: freshHostKey(t)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want one wrapping context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Dial took %v after its context ended", d)
	}
}
