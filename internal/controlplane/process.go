package controlplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The pid file holds "PID STARTTIME": the process id and its start time
// in clock ticks after boot (field 22 of /proc/PID/stat). A pid alone is
// not an identity: after a crash or a reboot the number is reused, and
// `anycloud down` signalled whatever process had it. The start time of a
// given pid changes with every new process.

// writePIDFile records this process in home.
func writePIDFile(home string) (string, error) {
	path := filepath.Join(home, PIDFile)
	line := strconv.Itoa(os.Getpid())
	if st, err := procStartTime(os.Getpid()); err == nil {
		line += " " + st
	}
	if err := os.WriteFile(path, []byte(line+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write pid file: %w", err)
	}
	return path, nil
}

// procStartTime reads a process's start time from /proc.
func procStartTime(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after its closing one.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", errors.New("unexpected /proc stat format")
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); starttime is field 22.
	if len(fields) < 20 {
		return "", errors.New("unexpected /proc stat format")
	}
	return fields[19], nil
}

// ReadPID returns the pid of the control plane recorded in home when that
// process is still the one that wrote the file, or 0: a pid file left by
// a killed control plane, whose number now belongs to another process,
// names no control plane.
func ReadPID(home string) int {
	pid, ok := recordedPID(home)
	if !ok {
		return 0
	}
	return pid
}

// recordedPID reads the pid file and checks the process it names.
func recordedPID(home string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(home, PIDFile))
	if err != nil {
		return 0, false
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0, false
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil || pid <= 0 {
		return 0, false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return 0, false
	}
	if len(fields) >= 2 {
		st, err := procStartTime(pid)
		if err != nil {
			// No /proc (not Linux): the start time cannot be checked;
			// fall back to the command line below, if there is one.
			return pid, isControlPlane(pid, home)
		}
		return pid, st == fields[1]
	}
	return pid, isControlPlane(pid, home)
}

// isControlPlane reports whether pid runs `anycloud controller` for home,
// by its command line. Without /proc it cannot tell and says no: the
// caller then relies on asking the control plane itself.
func isControlPlane(pid int, home string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	hasController, hasHome := false, false
	for i, a := range args {
		if a == "controller" {
			hasController = true
		}
		if a == "--home" && i+1 < len(args) && args[i+1] == home || a == "--home="+home {
			hasHome = true
		}
	}
	return hasController && hasHome
}

// RemoveStalePIDFile removes a pid file whose process is gone or is not
// the control plane that wrote it.
func RemoveStalePIDFile(home string) bool {
	if _, ok := recordedPID(home); ok {
		return false
	}
	return os.Remove(filepath.Join(home, PIDFile)) == nil
}

// passedEnv lists the variables an auto-started control plane keeps from
// the environment of the command that starts it: what locates the
// machine's tools, engines and configuration. Nothing else: the shell
// that runs `HF_TOKEN=… anycloud apply` must not leave HF_TOKEN in a
// daemon's environ for its lifetime (/proc/PID/environ, core dumps,
// child processes). AWS keys in the environment are secrets too: a
// control plane started in the background uses profiles, SSO or the
// instance role through the default chain, or keys stored sealed with
// `anycloud credentials new --access-key-id`.
var passedEnv = []string{
	"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TZ", "TMPDIR", "XDG_RUNTIME_DIR",
	"DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "DOCKER_API_VERSION",
	"AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_REGION", "AWS_DEFAULT_REGION",
	"AWS_CA_BUNDLE", "AWS_EC2_METADATA_DISABLED", "AWS_SDK_LOAD_CONFIG",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
	"SSL_CERT_FILE", "SSL_CERT_DIR",
	"GOMEMLIMIT", "GOGC", "GOTRACEBACK",
}

// MinimalEnv returns the entries of environ that a background control
// plane is started with (see passedEnv), plus the locale (LC_*).
func MinimalEnv(environ []string) []string {
	keep := map[string]bool{}
	for _, k := range passedEnv {
		keep[k] = true
	}
	var out []string
	for _, kv := range environ {
		k, _, ok := strings.Cut(kv, "=")
		if ok && (keep[k] || strings.HasPrefix(k, "LC_")) {
			out = append(out, kv)
		}
	}
	return out
}
