package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPruneWithoutRecursionLeavesTheSubdirectoriesOfARecursiveApply: the
// review found `apply -f DIR --prune` (no -R) sharing its apply set with
// `apply -f DIR -R` and pruning every app in the subdirectories.
func TestPruneWithoutRecursionLeavesTheSubdirectoriesOfARecursiveApply(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	writeFile(t, dir, "top.yaml", bundleYAML("sb-top", ""))
	writeFile(t, dir, "apps/app.yaml", bundleYAML("sb-app", "")+"---\n"+deploymentYAML("app", "img:1", "sb-app", "x"))
	e.must("apply", "-f", dir, "-R", "--prune")
	e.must("get", "deploy", "app")
	r := e.must("apply", "-f", dir, "--prune")
	if strings.Contains(r.stdout, "pruned") {
		t.Fatalf("a prune without -R pruned what -R applied:\n%s", r)
	}
	if r := e.run("diff", "-f", dir, "--prune"); strings.Contains(r.stdout, "prune)") {
		t.Errorf("diff without -R plans a prune of the subdirectories:\n%s", r)
	}
	e.must("get", "deploy", "app")
	e.must("get", "sb", "sb-app")
	// The recursive set still prunes its own.
	os.RemoveAll(filepath.Join(dir, "apps"))
	if r := e.must("apply", "-f", dir, "-R", "--prune"); !strings.Contains(r.stdout, "deployment/app pruned") {
		t.Errorf("the recursive apply no longer prunes its own:\n%s", r)
	}
}

// TestSecretsNewOnABundleFromGitKeepsItInItsApplySetAndSaysSo: rotating
// a value imperatively must not silently take the bundle out of the set
// that manages it (it would never be pruned again).
func TestSecretsNewOnABundleFromGitKeepsItInItsApplySetAndSaysSo(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	writeFile(t, dir, "b.yaml", bundleYAML("sb", ""))
	writeFile(t, dir, "keep.yaml", bundleYAML("other", ""))
	e.must("apply", "-f", dir, "-R", "--prune")
	r := e.must("secrets", "new", "sb", "TOKEN=rotated")
	if !strings.Contains(r.stderr, "secretbundle/sb belongs to apply set") || !strings.Contains(r.stderr, "the next apply of that source writes it again") {
		t.Errorf("no warning about the apply set:\n%s", r)
	}
	if got := e.must("get", "sb", "sb", "-o", "json").stdout; !strings.Contains(got, `"anycloud.dev/apply-set"`) {
		t.Errorf("the bundle left its apply set:\n%s", got)
	}
	// A bundle made imperatively belongs to no set and gets no warning.
	if r := e.must("secrets", "new", "mine", "K=v"); strings.Contains(r.stderr, "apply set") {
		t.Errorf("warning for a bundle in no set:\n%s", r)
	}
	// The source drops it: the prune removes it, as for any member.
	os.Remove(filepath.Join(dir, "b.yaml"))
	if r := e.must("apply", "-f", dir, "-R", "--prune"); !strings.Contains(r.stdout, "secretbundle/sb pruned") || strings.Contains(r.stdout, "mine") {
		t.Errorf("prune after the source dropped it:\n%s", r)
	}
}
