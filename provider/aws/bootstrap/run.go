package bootstrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// DefaultEnvFile is where Run writes a workload's environment on the VM: a
// tmpfs, so that it does not outlive the VM's power.
const DefaultEnvFile = "/run/anycloud-secrets.env"

// Workload is a container to run on a VM.
type Workload struct {
	Name    string            // container name
	Image   string            // image reference
	Command []string          // arguments after the image; may be empty
	Env     map[string]string // resolved environment, secrets included
	EnvFile string            // path on the VM; DefaultEnvFile if empty
	// GPUs gives the container every GPU of the VM (docker run --gpus
	// all); the VM's image must have the NVIDIA container toolkit.
	GPUs bool
	// GitHub is the signed-in token, for a pull from its registries and
	// a checkout under its git host (source.go); nil without a login.
	GitHub *GitHub
	// Source is checked out before the container starts and mounted
	// into it; nil for none.
	Source *Source
	// TokenFile is where the token is kept on the VM (a tmpfs) while it
	// is used; DefaultTokenFile if empty.
	TokenFile string
	// Buckets are copied to the VM before the container starts and
	// mounted into it (buckets.go).
	Buckets []Bucket

	mounts []string // bind mounts of the buckets' copies
}

// ErrInvalidEnv is wrapped by Run's error for an environment that cannot be
// written as a docker env file. The error names the key, never the value.
var ErrInvalidEnv = errors.New("invalid environment")

// containerNameRE is what Docker accepts as a container name.
var containerNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// maxStderr caps how much of a remote command's stderr an error quotes.
const maxStderr = 2048

// writeEnvScript replaces the file "$1" by its standard input, readable by
// root only, through a temporary file in the same directory.
const writeEnvScript = `set -eu
umask 077
mkdir -p -- "$(dirname -- "$1")"
t=$(mktemp -- "$1.XXXXXX")
trap 'rm -f -- "$t"' EXIT
cat > "$t"
chown 0:0 -- "$t"
chmod 600 -- "$t"
mv -f -- "$t" "$1"
trap - EXIT`

// waitCloudInit waits for cloud-init, when the VM has it, to finish
// installing Docker. Its own failure is not Run's: docker run says what is
// missing.
const waitCloudInit = `if command -v cloud-init >/dev/null 2>&1; then cloud-init status --wait >/dev/null 2>&1; fi; true`

// followLogs follows the logs of container "$1" until they end or the
// session's standard input does, so that closing the session stops it on
// the VM at once: `docker logs -f` alone would only notice at its next
// line, and sshd refuses SSH's signal request to root logins.
const followLogs = `exec 3<&0
docker logs -f -- "$1" </dev/null &
p=$!
{ cat >/dev/null; kill "$p" 2>/dev/null; } <&3 >/dev/null 2>&1 &
wait "$p"`

// Run (re)starts w on the VM behind client: it waits for cloud-init to
// finish if the VM has it, writes w.Env to w.EnvFile (mode 0600, owned by
// root; the content travels on the session's standard input), removes any
// container named w.Name, and runs w.Image detached under that name with
// --restart unless-stopped and --env-file. Commands run through `sudo -n`
// unless the client is logged in as root. Errors quote the remote stderr
// but never an environment value; a value that docker's env-file format
// cannot hold (a newline, a NUL byte, invalid UTF-8) is refused, naming the
// key, before anything is sent.
func Run(ctx context.Context, client *ssh.Client, w Workload) error {
	if !containerNameRE.MatchString(w.Name) {
		return fmt.Errorf("run workload: invalid container name %q", w.Name)
	}
	if w.Image == "" || strings.HasPrefix(w.Image, "-") {
		return fmt.Errorf("run workload %s: invalid image %q", w.Name, w.Image)
	}
	file := w.EnvFile
	if file == "" {
		file = DefaultEnvFile
	}
	env, err := envFile(w.Env)
	if err != nil {
		return fmt.Errorf("run workload %s: %w", w.Name, err)
	}
	if w.Source != nil {
		src := *w.Source
		if src.Dir == "" {
			src.Dir = DefaultSourceRoot + "/" + w.Name
		}
		if err := checkSource(&src); err != nil {
			return fmt.Errorf("run workload %s: %w", w.Name, err)
		}
		w.Source = &src
	}
	root := client.User() == "root"

	if _, err := command(ctx, client, root, nil, "sh", "-c", waitCloudInit); err != nil && ctx.Err() != nil {
		return fmt.Errorf("run workload %s: wait for cloud-init: %w", w.Name, err)
	}
	if _, err := command(ctx, client, root, env, "sh", "-c", writeEnvScript, "sh", file); err != nil {
		return fmt.Errorf("run workload %s: write env file %s: %w", w.Name, file, err)
	}
	if _, err := command(ctx, client, root, nil, "docker", "rm", "-f", w.Name); err != nil &&
		!strings.Contains(err.Error(), "No such container") {
		return fmt.Errorf("run workload %s: remove old container: %w", w.Name, err)
	}
	if w.mounts, err = syncBuckets(ctx, client, root, w); err != nil {
		return fmt.Errorf("run workload %s: %w", w.Name, err)
	}
	if err := prepare(ctx, client, root, &w); err != nil {
		return fmt.Errorf("run workload %s: %w", w.Name, err)
	}
	if w.Source != nil {
		return startWithSource(ctx, client, root, w, file)
	}
	if _, err := command(ctx, client, root, nil, runArgs(w, file)...); err != nil {
		return fmt.Errorf("run workload %s: docker run: %w", w.Name, runError(w.Image, err))
	}
	return nil
}

// runArgs is the docker run command line of w, with its env file at file.
func runArgs(w Workload, file string) []string {
	args := []string{"docker", "run", "-d", "--name", w.Name, "--restart", "unless-stopped", "--env-file", file}
	if w.GPUs {
		args = append(args, "--gpus", "all")
	}
	if w.Source != nil {
		args = append(args, "--workdir", w.Source.Path)
	}
	for _, m := range w.mounts {
		args = append(args, "-v", m)
	}
	args = append(args, w.Image)
	return append(args, w.Command...)
}

// Logs writes the output (stdout and stderr) of the container name to w:
// what it has so far, then, if follow, what comes until ctx ends. The end
// of ctx is not an error.
func Logs(ctx context.Context, client *ssh.Client, name string, follow bool, w io.Writer) error {
	if !containerNameRE.MatchString(name) {
		return fmt.Errorf("logs: invalid container name %q", name)
	}
	argv := []string{"docker", "logs", name}
	if follow {
		argv = []string{"sh", "-c", followLogs, "sh", name}
	}
	s, err := client.NewSession()
	if err != nil {
		return fmt.Errorf("logs of %s: %w", name, err)
	}
	defer s.Close()
	if follow {
		// Held open until wait returns; its EOF ends followLogs.
		stdin, err := s.StdinPipe()
		if err != nil {
			return fmt.Errorf("logs of %s: %w", name, err)
		}
		defer stdin.Close()
	}
	err = wait(ctx, s, remote(client.User() == "root", argv), w, w)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("logs of %s: %w", name, err)
	}
	return nil
}

// envFile renders env in docker's --env-file format, keys sorted.
func envFile(env map[string]string) ([]byte, error) {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b bytes.Buffer
	for _, k := range keys {
		if k == "" || strings.HasPrefix(k, "#") || strings.ContainsAny(k, "= \t\r\n\v\f\x00") || !utf8.ValidString(k) {
			return nil, fmt.Errorf("%w: key %q is not a valid variable name", ErrInvalidEnv, k)
		}
		v := env[k]
		if strings.ContainsAny(v, "\r\n") {
			return nil, fmt.Errorf("%w: the value of %s contains a newline, which an env file cannot hold", ErrInvalidEnv, k)
		}
		if strings.ContainsRune(v, 0) || !utf8.ValidString(v) {
			return nil, fmt.Errorf("%w: the value of %s contains a NUL byte or invalid UTF-8", ErrInvalidEnv, k)
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v)
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

// command runs argv on the VM in a session of its own, with stdin (which
// may be nil) as its standard input, and returns its standard output. Its
// error quotes the command's stderr.
func command(ctx context.Context, client *ssh.Client, root bool, stdin []byte, argv ...string) ([]byte, error) {
	s, err := client.NewSession()
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var stdout bytes.Buffer
	stderr := &capped{max: maxStderr}
	if stdin != nil {
		s.Stdin = bytes.NewReader(stdin)
	}
	if err := wait(ctx, s, remote(root, argv), &stdout, stderr); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, fmt.Errorf("%w: %s", err, msg)
		}
		return nil, err
	}
	return stdout.Bytes(), nil
}

// wait runs cmd in s, its output going to stdout and stderr, until it ends
// or ctx does. Then the remote command is sent SIGTERM (a no-op for root
// logins) and the session is closed, without waiting for the far side.
// Nothing is written to stdout or stderr once wait
// has returned.
func wait(ctx context.Context, s *ssh.Session, cmd string, stdout, stderr io.Writer) error {
	var mu sync.Mutex // serializes the session's copiers, and ends them
	done := false
	guard := func(w io.Writer) io.Writer {
		return writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			if done {
				return 0, io.ErrClosedPipe
			}
			return w.Write(p)
		})
	}
	defer func() {
		mu.Lock()
		done = true
		mu.Unlock()
	}()
	s.Stdout, s.Stderr = guard(stdout), guard(stderr)
	if err := s.Start(cmd); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- s.Wait() }()
	select {
	case err := <-exited:
		return err
	case <-ctx.Done():
		s.Signal(ssh.SIGTERM)
		s.Close()
		return context.Cause(ctx)
	}
}

// remote is argv as one command line for the login shell, through sudo -n
// unless the login user is root.
func remote(root bool, argv []string) string {
	if !root {
		argv = append([]string{"sudo", "-n", "--"}, argv...)
	}
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = shellQuote(a)
	}
	return strings.Join(quoted, " ")
}

// shellQuote makes s one word for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// capped keeps the first max bytes written to it.
type capped struct {
	buf bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capped) String() string { return c.buf.String() }

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
