package cli

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anycloud/anycloud/internal/controlplane"
)

func TestSecretsDeleteOfABundleInUseIsRefusedWithExit3(t *testing.T) {
	e := newEnv(t)
	e.must("secrets", "new", "hf", "HF_TOKEN=x")
	e.must("submit", "img:1", "--name", "train", "--secret", "hf")
	e.must("submit", "img:1", "--name", "eval", "--secret", "hf")
	r := e.run("secrets", "delete", "hf")
	if r.code != 3 {
		t.Fatalf("%s\nexit %d, want 3", r, r.code)
	}
	for _, w := range []string{"in use", "train (uid ", "eval (uid ", "--force"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("refusal does not mention %q:\n%s", w, r.stderr)
		}
	}
	e.must("get", "sb", "hf") // still there
	r = e.must("secrets", "delete", "hf", "--force")
	if !strings.Contains(r.stdout, "secretbundle/hf deleted") {
		t.Errorf("force: %s", r)
	}
	if r := e.run("get", "sb", "hf"); r.code != 1 {
		t.Errorf("bundle still there after --force: %s", r)
	}
	// The deployments are untouched.
	if got := e.must("get", "deploy", "-o", "name").stdout; got != "deployment/eval\ndeployment/train\n" {
		t.Errorf("deployments = %q", got)
	}
}

// TestDeletingADeploymentAndItsBundleTogetherJustWorks is the GitOps case:
// `delete -f` of a directory that holds a deployment and the bundle it
// uses succeeds, and the bundle goes with its last user.
func TestDeletingADeploymentAndItsBundleTogetherJustWorks(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	writeFile(t, dir, "all.yaml", `apiVersion: anycloud.dev/v1
kind: SecretBundle
metadata: {name: hf}
spec: {stringData: {HF_TOKEN: x}}
---
`+goodDeployment+`  secrets: [hf]
`)
	e.must("apply", "-f", dir)
	e.must("submit", "img:1", "--name", "other", "--secret", "hf")
	r := e.must("delete", "-f", dir)
	if !strings.Contains(r.stdout, "deployment/good") || !strings.Contains(r.stdout, "secretbundle/hf terminating (in use by ") {
		t.Fatalf("delete -f:\n%s", r)
	}
	waitFor(t, func() bool { return e.run("get", "deploy", "good").code == 1 })
	if got := e.must("get", "sb", "hf").stdout; !strings.Contains(got, "Terminating") {
		t.Errorf("bundle should be Terminating while other uses it:\n%s", got)
	}
	// A terminating bundle cannot be re-applied.
	if r := e.run("apply", "-f", dir); r.code != 3 || !strings.Contains(r.stderr, "Terminating") {
		t.Errorf("apply onto a terminating bundle: %s (exit %d)", r, r.code)
	}
	e.must("delete", "deploy", "other", "--wait", "--timeout", "30s")
	if r := e.run("get", "sb", "hf"); r.code != 1 {
		t.Errorf("bundle should be gone with its last user: %s", r)
	}
}

func TestDeleteOfAMissingObject(t *testing.T) {
	e := newEnv(t)
	if r := e.run("delete", "deploy", "nope"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("%s", r)
	}
	if r := e.run("delete", "deploy", "nope", "--ignore-not-found"); r.code != 0 {
		t.Errorf("%s", r)
	}
}

func TestBuiltInLocalCredentialsCannotBeDeleted(t *testing.T) {
	e := newEnv(t)
	r := e.run("credentials", "delete", "local")
	if r.code != 1 || !strings.Contains(r.stderr, "built in") {
		t.Errorf("%s (exit %d)", r, r.code)
	}
}

func TestDescribeShowsSpecStatusAndUsers(t *testing.T) {
	// The API and store only: with no control loop the deployment stays
	// Pending (img:1 does not exist, and a loop would fail it at once).
	e := newEnvFor(t, func(c *controlplane.Config) { c.APIOnly = true })
	e.must("secrets", "new", "hf", "HF_TOKEN=x", "OTHER=y")
	e.must("submit", "img:1", "--name", "train", "--secret", "hf", "--env", "EPOCHS=3")
	r := e.must("describe", "deploy", "train")
	for _, w := range []string{"Name:", "train", "Image:", "img:1", "EPOCHS=3", "Phase:", "Pending", "Conditions:", "Events:"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("describe deployment lacks %q:\n%s", w, r.stdout)
		}
	}
	r = e.must("describe", "sb", "hf")
	for _, w := range []string{"HF_TOKEN, OTHER", "train (uid"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("describe bundle lacks %q:\n%s", w, r.stdout)
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestGetWatchPrintsChangesAsTheyHappen(t *testing.T) {
	e := newEnv(t)
	e.must("submit", "img:1", "--name", "first")
	out := &lockedBuffer{}
	f := &Factory{IO: &IOStreams{In: strings.NewReader(""), Out: out, ErrOut: out, Getenv: func(string) string { return "" }}, NoAutostart: true}
	cmd := NewRootCmd(f)
	cmd.SetArgs([]string{"--home", e.home, "get", "deploy", "-w", "-o", "name"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	waitFor(t, func() bool { return strings.Contains(out.String(), "deployment/first") })
	e.must("submit", "img:1", "--name", "second")
	waitFor(t, func() bool { return strings.Contains(out.String(), "deployment/second") })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("watch ended with %v", err)
	}
}

// waitFor polls cond with a deadline: the thing happens in another
// goroutine talking to a real server.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDeleteByNameOfABundleInUseIsRefusedButByManifestWaits(t *testing.T) {
	e := newEnv(t)
	e.must("secrets", "new", "hf", "HF_TOKEN=x")
	e.must("submit", "img:1", "--name", "train", "--secret", "hf")
	r := e.run("delete", "sb", "hf")
	if r.code != 3 || !strings.Contains(r.stderr, "train (uid ") {
		t.Fatalf("delete sb by name while in use: exit %d\n%s", r.code, r.stderr)
	}
	e.must("get", "sb", "hf")
	if r := e.must("delete", "sb", "hf", "--force"); !strings.Contains(r.stdout, "secretbundle/hf deleted") {
		t.Errorf("--force: %s", r)
	}
}
