package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anycloud/anycloud/manifests"
)

func TestHTTPSRemote(t *testing.T) {
	for _, tt := range []struct{ in, want, err string }{
		{in: "https://github.com/me/train.git", want: "https://github.com/me/train.git"},
		{in: "https://x-access-token:gho_SECRET@github.com/me/train", want: "https://github.com/me/train"},
		{in: "http://127.0.0.1:8080/me/train", want: "http://127.0.0.1:8080/me/train"},
		{in: "git@github.com:me/train.git", want: "https://github.com/me/train.git"},
		{in: "github.com:me/train", want: "https://github.com/me/train"},
		{in: "ssh://git@github.com:22/me/train.git", want: "https://github.com/me/train.git"},
		{in: "git://github.com/me/train", want: "https://github.com/me/train"},
		{in: "/srv/git/train.git", err: "local path"},
		{in: "../train", err: "local path"},
		{in: "file:///srv/git/train.git", err: "local path"},
		{in: "ftp://example.com/x", err: "unsupported URL scheme"},
	} {
		got, err := httpsRemote(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("httpsRemote(%q) = %q, %v; want an error about %s", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("httpsRemote(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// gitRepo makes a working tree with one commit and returns it and its
// commit.
func gitRepo(t *testing.T, remote string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	gitIn(t, dir, "init", "-q", "-b", "main")
	writeFile(t, dir, "train.py", "print('hi')\n")
	gitIn(t, dir, "add", ".")
	gitIn(t, dir, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "one")
	if remote != "" {
		gitIn(t, dir, "remote", "add", "origin", remote)
	}
	return dir, gitIn(t, dir, "rev-parse", "HEAD")
}

func gitIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// submitSource runs `anycloud submit` up to the Deployment it would write.
func submitSource(t *testing.T, args ...string) (*manifests.Deployment, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	f := &Factory{IO: &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut, Getenv: func(string) string { return "" }}}
	var d *manifests.Deployment
	cmd := NewCmdSubmit(f, func(o *SubmitOptions) error {
		if err := o.resolveSource(context.Background()); err != nil {
			return err
		}
		d = o.Deployment()
		if errs := manifests.Validate(d); len(errs) > 0 {
			return errs
		}
		return nil
	})
	cmd.SetArgs(args)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.Execute()
	return d, errOut.String(), err
}

func TestSubmitGitFillsSourceFromTheRemoteAndHead(t *testing.T) {
	dir, head := gitRepo(t, "git@github.com:me/train.git")
	gitIn(t, dir, "update-ref", "refs/remotes/origin/main", "HEAD") // as if pushed

	d, stderr, err := submitSource(t, "ghcr.io/me/train:latest", "--git", dir, "--", "python", "train.py")
	if err != nil {
		t.Fatal(err)
	}
	src := d.Spec.Source
	if src == nil || src.Git != "https://github.com/me/train.git" || src.Commit != head || src.Path != "/workspace" || !src.TokenExposed() {
		t.Fatalf("source %+v", src)
	}
	if stderr != "" {
		t.Errorf("warnings for a clean, pushed tree: %s", stderr)
	}

	d, _, err = submitSource(t, "ghcr.io/me/train:latest", "--git", dir, "--source-path", "/src", "--expose-token=false")
	if err != nil {
		t.Fatal(err)
	}
	if d.Spec.Source.Path != "/src" || d.Spec.Source.TokenExposed() {
		t.Errorf("source %+v", d.Spec.Source)
	}

	// The subdirectory of a tree is the same tree.
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	if d, _, err = submitSource(t, "ghcr.io/me/train:latest", "--git", filepath.Join(dir, "sub")); err != nil || d.Spec.Source.Commit != head {
		t.Errorf("from a subdirectory: %v, %v", d, err)
	}
}

func TestSubmitGitRefusesADirtyTreeUnlessAllowed(t *testing.T) {
	dir, head := gitRepo(t, "https://github.com/me/train")
	gitIn(t, dir, "update-ref", "refs/remotes/origin/main", "HEAD")
	for _, change := range []func(){
		func() { writeFile(t, dir, "train.py", "print('changed')\n") },
		func() { gitIn(t, dir, "checkout", "-q", "train.py"); writeFile(t, dir, "new.py", "x\n") },
	} {
		change()
		_, _, err := submitSource(t, "ghcr.io/me/train:latest", "--git", dir)
		if err == nil || !strings.Contains(err.Error(), "--allow-dirty") || ExitCode(err) != 1 {
			t.Errorf("a dirty tree: %v", err)
		}
		d, stderr, err := submitSource(t, "ghcr.io/me/train:latest", "--git", dir, "--allow-dirty")
		if err != nil || d.Spec.Source.Commit != head || !strings.Contains(stderr, "without the working tree's changes") {
			t.Errorf("--allow-dirty: %v, %q", err, stderr)
		}
	}
}

func TestSubmitGitExplainsWhatItCannotUse(t *testing.T) {
	// No remote.
	dir, _ := gitRepo(t, "")
	if _, _, err := submitSource(t, "img", "--git", dir); err == nil || !strings.Contains(err.Error(), "no remote") {
		t.Errorf("no remote: %v", err)
	}
	// A local remote.
	dir, _ = gitRepo(t, "/srv/git/train.git")
	if _, _, err := submitSource(t, "img", "--git", dir); err == nil || !strings.Contains(err.Error(), "local path") {
		t.Errorf("a local remote: %v", err)
	}
	// Not a repository.
	if _, _, err := submitSource(t, "img", "--git", t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a git working tree") {
		t.Errorf("not a repository: %v", err)
	}
	// A token in the remote URL is dropped, never shown.
	dir, _ = gitRepo(t, "https://x-access-token:gho_SECRETinRemote@github.com/me/train")
	d, stderr, err := submitSource(t, "img", "--git", dir)
	if err != nil || d.Spec.Source.Git != "https://github.com/me/train" {
		t.Errorf("a remote with a token: %+v, %v", d, err)
	}
	// Not pushed: a warning, since the VM may not find the commit.
	if !strings.Contains(stderr, "push it") {
		t.Errorf("no warning about an unpushed commit: %q", stderr)
	}
	if b, _ := json.Marshal(d); strings.Contains(string(b)+stderr, "gho_SECRET") {
		t.Errorf("the remote's token shows: %s %s", b, stderr)
	}
	// Source flags without --git are bad usage.
	for _, args := range [][]string{{"img", "--allow-dirty"}, {"img", "--expose-token=false"}, {"img", "--source-path", "/x"}} {
		if _, _, err := submitSource(t, args...); ExitCode(err) != 2 {
			t.Errorf("%v: %v (exit %d), want bad usage", args, err, ExitCode(err))
		}
	}
}
