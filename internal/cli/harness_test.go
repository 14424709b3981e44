package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/internal/controlplane"
	"github.com/anycloud/anycloud/provider/local"
)

// env is a control plane running in-process on a fresh home, and a way to
// run CLI commands against it as a user would.
type env struct {
	t    testing.TB
	home string
	// log is everything the control plane logged, at verbosity 1.
	log *syncBuffer
	// vars is the environment commands see.
	vars map[string]string
	// cluster is the control plane's id; its containers carry it.
	cluster string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newEnv starts a control plane. The home is short-named because unix
// socket paths are limited to about 100 bytes.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, nil)
}

// newEnvWith starts a control plane whose config tune may change. Every
// container the control plane made is removed when the test ends.
func newEnvWith(t *testing.T, tune func(*controlplane.Config)) *env {
	t.Helper()
	return newEnvFor(t, tune)
}

func newEnvFor(t testing.TB, tune func(*controlplane.Config)) *env {
	t.Helper()
	home, err := os.MkdirTemp("", "ac")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	e := &env{t: t, home: home, log: &syncBuffer{}, vars: map[string]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	cfg := controlplane.Config{
		Home: home, Log: controlplane.NewLogger(e.log, 1), Version: "test",
		Ready: func() { close(ready) },
	}
	if tune != nil {
		tune(&cfg)
	}
	go func() { done <- controlplane.Run(ctx, cfg) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("control plane: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("control plane did not start")
	}
	_, cluster, err := api.NewClient(filepath.Join(home, api.SocketFile)).Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e.cluster = cluster
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control plane: %v", err)
		}
		removeContainers(cluster)
	})
	return e
}

// removeContainers removes every container of a control plane, if an
// engine is there.
func removeContainers(cluster string) {
	c, err := client.New(client.FromEnv)
	if err != nil {
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A launch cut off by the shutdown may still be completing inside
	// the engine: sweep a few times.
	for round := 0; round < 3; round++ {
		res, err := c.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", local.LabelCluster+"="+cluster)})
		if err != nil {
			return
		}
		for _, ct := range res.Items {
			c.ContainerRemove(ctx, ct.ID, client.ContainerRemoveOptions{Force: true})
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// result is what one command did.
type result struct {
	args   []string
	stdout string
	stderr string
	err    error
	code   int
}

func (r result) String() string {
	return "anycloud " + strings.Join(r.args, " ") + "\nstdout:\n" + r.stdout + "\nstderr:\n" + r.stderr
}

// run runs one command with stdin and the env's variables.
func (e *env) runIn(stdin string, args ...string) result {
	e.t.Helper()
	var out, errOut bytes.Buffer
	f := &Factory{
		IO: &IOStreams{
			In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut,
			Getenv: func(k string) string { return e.vars[k] },
		},
		NoAutostart: true,
	}
	cmd := NewRootCmd(f)
	cmd.SetArgs(append([]string{"--home", e.home}, args...))
	// A safety net only: commands that wait (--wait, logs -f) carry their
	// own timeouts, and a loaded machine must not fail them.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	if msg := Message(err); msg != "" {
		errOut.WriteString("error: " + msg + "\n")
	}
	return result{args: args, stdout: out.String(), stderr: errOut.String(), err: err, code: ExitCode(err)}
}

func (e *env) run(args ...string) result {
	e.t.Helper()
	return e.runIn("", args...)
}

// must runs a command that has to succeed.
func (e *env) must(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.err != nil {
		e.t.Fatalf("%s\nfailed: %v", r, r.err)
	}
	return r
}

// write puts a file in a temp dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
