package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RequireSSHD returns the path of OpenSSH's sshd, or skips t (fails it
// under CI=true) when the machine has none.
func RequireSSHD(t testing.TB) string {
	t.Helper()
	path := "/usr/sbin/sshd"
	if _, err := os.Stat(path); err != nil {
		p, err := exec.LookPath("sshd")
		if err != nil {
			Missing(t, "OpenSSH sshd not installed (Debian: openssh-server)")
		}
		path = p
	}
	if os.Geteuid() != 0 {
		Missing(t, "a private sshd that runs docker as root needs the tests to run as root")
	}
	return path
}

// RunSSHD is StartSSHD for code that cannot fail a test (a goroutine of
// the code under test): it returns the address and a stop function. sshd
// logs to dir/sshd.log; extra lines are appended to its configuration
// (for example "LogLevel DEBUG").
func RunSSHD(sshd, dir string, hostKeyPEM []byte, authorizedKeys []string, extra ...string) (string, func(), error) {
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // privilege separation
		return "", nil, err
	}
	hostKey := filepath.Join(dir, "host_key")
	auth := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(hostKey, hostKeyPEM, 0o600); err != nil {
		return "", nil, err
	}
	if err := os.WriteFile(auth, []byte(strings.Join(authorizedKeys, "\n")+"\n"), 0o600); err != nil {
		return "", nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := l.Addr().String()
	l.Close()
	config := filepath.Join(dir, "sshd_config")
	os.WriteFile(config, []byte(strings.Join([]string{
		"ListenAddress " + addr, "HostKey " + hostKey, "AuthorizedKeysFile " + auth,
		"PermitRootLogin prohibit-password", "PubkeyAuthentication yes", "PasswordAuthentication no",
		"KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
		"PidFile " + filepath.Join(dir, "sshd.pid"), strings.Join(extra, "\n"), "",
	}, "\n")), 0o600)
	logPath := filepath.Join(dir, "sshd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(sshd, "-D", "-e", "-f", config)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start sshd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	stop := func() { cmd.Process.Kill(); <-exited }
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr, stop, nil
		}
		select {
		case err := <-exited:
			out, _ := os.ReadFile(logPath)
			exited <- err
			return "", nil, fmt.Errorf("sshd exited: %v\n%s", err, out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			out, _ := os.ReadFile(logPath)
			return "", nil, fmt.Errorf("sshd does not accept connections on %s\n%s", addr, out)
		}
	}
}
