package cli

import (
	"strings"
	"testing"
	"time"
)

// TestSubmitWaitWithAMissingBundleFailsFast: the condition says
// SecretBundleNotFound at once; the wait must not run out its timeout.
func TestSubmitWaitWithAMissingBundleFailsFast(t *testing.T) {
	e := newDockerEnv(t)
	start := time.Now()
	r := e.run("submit", e.image, "--name", "d", "--secret", "nope", "--wait", "--timeout", "5m")
	if r.err == nil || !strings.Contains(r.stderr, "secret bundle(s) nope not found") {
		t.Fatalf("want a failure naming the bundle:\n%s", r)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %v to fail", d)
	}
	// apply --wait fails the same way.
	dir := t.TempDir()
	writeFile(t, dir, "d.yaml", "apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata: {name: d2}\nspec: {image: "+e.image+", secrets: [nope2]}\n")
	if r := e.run("apply", "-f", dir, "--wait", "--timeout", "5m"); r.err == nil || !strings.Contains(r.stderr, "nope2 not found") {
		t.Errorf("apply --wait:\n%s", r)
	}
}

// TestResubmitWithoutItsBundleKeepsTheRunningVM: the review found that
// resubmitting a deployment whose bundle had been force-deleted removed
// the working VM and left none.
func TestResubmitWithoutItsBundleKeepsTheRunningVM(t *testing.T) {
	e := newDockerEnv(t)
	e.must("secrets", "new", "hf", "HF_TOKEN=first")
	e.must("submit", e.image, "--name", "train", "--secret", "hf", "--wait", "--timeout", "60s")
	first := e.running("train")
	e.must("secrets", "delete", "hf", "--force")
	start := time.Now()
	r := e.run("resubmit", "train", "--wait", "--timeout", "5m")
	if r.err == nil || !strings.Contains(r.stderr, "keeps running") {
		t.Fatalf("resubmit --wait: want a quick failure saying the VM keeps running:\n%s", r)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %v to fail", d)
	}
	if c := e.running("train"); c.ID != first.ID {
		t.Fatalf("the running VM was replaced without its bundle: %s, was %s", c.ID, first.ID)
	}
	if ev := e.events("train"); !strings.Contains(ev, "keeps running until a replacement can be given them") {
		t.Errorf("no event says why:\n%s", ev)
	}
	// The bundle is back: the pending resubmit replaces the VM.
	e.must("secrets", "new", "hf", "HF_TOKEN=second")
	e.eventually("the replacement with the new value", func() bool {
		for _, c := range e.containers("train") {
			if c.State == "running" && c.ID != first.ID && c.Env["HF_TOKEN"] == "second" {
				return true
			}
		}
		return false
	})
	e.ready("train")
}
