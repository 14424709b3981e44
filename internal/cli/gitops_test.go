package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anycloud/anycloud/internal/controlplane"
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/manifests"
)

func bundleYAML(name string, extraMeta string) string {
	return fmt.Sprintf("apiVersion: anycloud.dev/v1\nkind: SecretBundle\nmetadata:\n  name: %s\n%sspec: {stringData: {TOKEN: v-%s}}\n", name, extraMeta, name)
}

func deploymentYAML(name, image, bundle, mode string) string {
	return fmt.Sprintf("apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata: {name: %s}\nspec: {image: %s, secrets: [%s], env: {MODE: %s}}\n", name, image, bundle, mode)
}

func TestPruneRemovesADeploymentAndItsBundleInOneCommit(t *testing.T) {
	e := newDockerEnv(t)
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", bundleYAML("sb-a", "")+"---\n"+deploymentYAML("dep-a", e.image, "sb-a", "x"))
	writeFile(t, dir, "b.yaml", bundleYAML("sb-b", "")+"---\n"+deploymentYAML("dep-b", e.image, "sb-b", "x"))
	writeFile(t, dir, "keep.yaml", bundleYAML("sb-keep", "  annotations: {anycloud.dev/prune: disabled}\n"))
	e.must("secrets", "new", "imperative", "K=v") // not in any apply set
	r := e.must("apply", "-f", dir, "--prune", "--wait", "--timeout", "60s")
	for _, w := range []string{"deployment/dep-a created", "deployment/dep-b created", "secretbundle/sb-b created", "secretbundle/sb-keep created"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("apply lacks %q:\n%s", w, r.stdout)
		}
	}
	e.running("dep-b")

	// One commit removes dep-b and its bundle, and the kept bundle.
	os.Remove(filepath.Join(dir, "b.yaml"))
	os.Remove(filepath.Join(dir, "keep.yaml"))
	writeFile(t, dir, "a.yaml", bundleYAML("sb-a", "")+"---\n"+deploymentYAML("dep-a", e.image, "sb-a", "changed"))
	r = e.must("apply", "-f", dir, "--prune", "--wait", "--timeout", "60s") // waits for dep-a only
	if !strings.Contains(r.stdout, "deployment/dep-b pruned") || !strings.Contains(r.stdout, "secretbundle/sb-b pruned") {
		t.Fatalf("prune:\n%s", r)
	}
	if strings.Contains(r.stdout, "sb-keep") || strings.Contains(r.stdout, "imperative") || strings.Contains(r.stderr, "409") {
		t.Errorf("pruned what it must not:\n%s", r)
	}
	// The bundle waits, Terminating, for its deployment's VM to go.
	e.eventually("dep-b and sb-b gone", func() bool {
		return e.run("get", "deploy", "dep-b").code == 1 && e.run("get", "sb", "sb-b").code == 1
	})
	if n := len(e.containers("dep-b")); n != 0 {
		t.Errorf("%d container(s) of dep-b left", n)
	}
	for _, keep := range []string{"sb-keep", "imperative", "sb-a"} {
		if r := e.run("get", "sb", keep); r.code != 0 {
			t.Errorf("bundle %s was deleted", keep)
		}
	}
	e.running("dep-a")
}

func TestPruneWithAnEmptySourceIsRefused(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", bundleYAML("sb-a", ""))
	e.must("apply", "-f", dir, "--prune")
	os.Remove(filepath.Join(dir, "a.yaml"))
	r := e.run("apply", "-f", dir, "--prune")
	if r.code != 1 || !strings.Contains(r.stderr, "--allow-empty") {
		t.Fatalf("empty source with --prune: exit %d\n%s", r.code, r.stderr)
	}
	e.must("get", "sb", "sb-a") // nothing deleted
	// An unreadable source neither.
	if r := e.run("apply", "-f", filepath.Join(dir, "missing"), "--prune", "--apply-set", "x"); r.code != 1 {
		t.Errorf("unreadable source: exit %d", r.code)
	}
	e.must("get", "sb", "sb-a")
	r = e.must("apply", "-f", dir, "--prune", "--allow-empty")
	if !strings.Contains(r.stdout, "secretbundle/sb-a pruned") {
		t.Errorf("--allow-empty: %s", r)
	}
}

func TestDiffShowsThePlanAndExitsLikeKubectlDiff(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", deploymentYAML("dep-a", "img:1", "sb", "x")+"---\n"+bundleYAML("sb", ""))
	r := e.run("diff", "-f", dir)
	if r.code != 1 || !strings.Contains(r.stdout, "+ deployment/dep-a (create)") || !strings.Contains(r.stdout, "+ spec.image: img:1") ||
		!strings.Contains(r.stdout, "Plan: 2 to create, 0 to update, 0 to prune, 0 unchanged.") {
		t.Fatalf("diff of a new directory: exit %d\n%s", r.code, r)
	}
	if strings.Contains(r.stdout, "v-sb") {
		t.Errorf("diff showed a secret value:\n%s", r.stdout)
	}
	if got := e.must("get", "deploy", "-o", "name").stdout; got != "" {
		t.Errorf("diff wrote: %q", got)
	}
	e.must("apply", "-f", dir, "--prune")
	if r := e.run("diff", "-f", dir, "--prune"); r.code != 0 || !strings.Contains(r.stdout, "Plan: 0 to create, 0 to update, 0 to prune, 2 unchanged.") {
		t.Errorf("diff with nothing to do: exit %d\n%s", r.code, r)
	}
	// An update, field by field, and a rotated value without the value.
	writeFile(t, dir, "a.yaml", strings.Replace(deploymentYAML("dep-a", "img:2", "sb", "x"), "MODE: x", "MODE: y", 1)+"---\n"+strings.Replace(bundleYAML("sb", ""), "v-sb", "rotated", 1))
	r = e.run("diff", "-f", dir)
	for _, w := range []string{"~ deployment/dep-a (update)", "~ spec.image: img:1 -> img:2", "~ spec.env.MODE: x -> y", "~ secretbundle/sb (update)", "secret values: (changed)"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("update diff lacks %q:\n%s", w, r.stdout)
		}
	}
	if r.code != 1 || strings.Contains(r.stdout, "rotated") {
		t.Errorf("exit %d, or the value showed:\n%s", r.code, r.stdout)
	}
	// A prune; and apply --dry-run prints the same plan and writes nothing.
	os.Remove(filepath.Join(dir, "a.yaml"))
	writeFile(t, dir, "b.yaml", bundleYAML("other", ""))
	r = e.run("diff", "-f", dir, "--prune")
	if r.code != 1 || !strings.Contains(r.stdout, "- deployment/dep-a (prune") || !strings.Contains(r.stdout, "- secretbundle/sb (prune") {
		t.Errorf("prune diff: exit %d\n%s", r.code, r.stdout)
	}
	dry := e.must("apply", "-f", dir, "--prune", "--dry-run")
	if dry.stdout != r.stdout {
		t.Errorf("apply --dry-run plan differs from diff:\n%s\nvs\n%s", dry.stdout, r.stdout)
	}
	e.must("get", "deploy", "dep-a")
	// Errors are exit status 2.
	writeFile(t, dir, "bad.yaml", "kind: [\n")
	if r := e.run("diff", "-f", dir); r.code != 2 || !strings.Contains(r.stderr, "bad.yaml") {
		t.Errorf("diff of a bad directory: exit %d\n%s", r.code, r.stderr)
	}
}

func TestWatchDirAppliesChangesAndSurvivesABadFile(t *testing.T) {
	testenv.RequireDocker(t) // the deployments run on the local engine
	image := testenv.RequireDemoImage(t)
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", deploymentYAML("w-a", image, "sb-a", "x")+"---\n"+bundleYAML("sb-a", ""))
	e := newEnvWith(t, func(c *controlplane.Config) {
		c.Resync = 2 * time.Second
		c.WatchDir = dir
		c.WatchInterval = 30 * time.Second // fsnotify must do the work
	})
	ready := func(name string) func() bool {
		return func() bool {
			d, err := getDeployment(e, name)
			if err != nil {
				return false
			}
			c := manifests.FindCondition(d.Status.Conditions, manifests.ConditionReady)
			return c != nil && c.Status == manifests.ConditionTrue
		}
	}
	within := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("not within a minute: %s\n%s", what, tail(e.log.String(), 20))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	within("the first apply", ready("w-a"))

	// Added file.
	writeFile(t, dir, "sub/b.yaml", deploymentYAML("w-b", image, "sb-a", "x"))
	within("an added file applied", ready("w-b"))
	// Changed file.
	writeFile(t, dir, "sub/b.yaml", deploymentYAML("w-b", image, "sb-a", "changed"))
	var before *manifests.Deployment
	within("a changed file applied and its new VM Ready", func() bool {
		d, err := getDeployment(e, "w-b")
		if err != nil || d.Spec.Env["MODE"] != "changed" || d.Status.ObservedGeneration != d.Metadata.Generation || d.Status.VM == nil {
			return false
		}
		before = d
		return ready("w-b")()
	})
	// A malformed file: nothing is touched, the error is shown.
	writeFile(t, dir, "sub/b.yaml", "apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata: {name: w-b}\nspec: {imagee: x}\n")
	within("the bad file reported", func() bool {
		return strings.Contains(e.must("status").stdout, `unknown field "imagee"`)
	})
	st := e.must("status").stdout
	if !strings.Contains(st, "b.yaml") || !strings.Contains(st, "false") {
		t.Errorf("status does not name the bad file:\n%s", st)
	}
	// The watch applies a directory whole or not at all: by the time the
	// error shows, the refused apply is over, and nothing has moved.
	after, err := getDeployment(e, "w-b")
	if err != nil || after.Metadata.Generation != before.Metadata.Generation || after.Status.VM == nil || after.Status.VM.ID != before.Status.VM.ID || !ready("w-a")() {
		t.Errorf("a bad file disturbed running deployments: w-b generation %d → %d, VM %v → %v",
			before.Metadata.Generation, after.Metadata.Generation, before.Status.VM, after.Status.VM)
	}
	// Fixed by removing it: w-b is pruned, w-a stays.
	os.RemoveAll(filepath.Join(dir, "sub"))
	within("the removed file pruned", func() bool { return e.run("get", "deploy", "w-b").code == 1 })
	within("recovered", func() bool { return strings.Contains(e.must("status").stdout, "applied 2 object(s)") })
	if !ready("w-a")() {
		t.Error("w-a is not Ready")
	}
	// The same set as `apply -f DIR -R --prune` (the watch reads DIR
	// recursively): a manual apply changes nothing.
	if r := e.run("diff", "-f", dir, "-R", "--prune"); r.code != 0 {
		t.Errorf("the watch-dir's apply set differs from apply -f DIR's:\n%s", r)
	}
}
