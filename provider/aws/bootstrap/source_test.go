package bootstrap

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/moby/client"

	"github.com/anycloud/anycloud/internal/testenv"
)

// tokenCanary is the GitHub token of these tests: the registry's password
// and the git server's.
const tokenCanary = "gho_CANARYbootstrapToken7e1f0c3d9a5b"

// cmdlines returns the command lines of every process of this machine
// (the VM, for the sshd these tests use), as ps shows them.
func cmdlines(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range dirs {
		c, err := os.ReadFile(f)
		if err == nil {
			b.Write(bytes.ReplaceAll(c, []byte{0}, []byte{' '}))
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// noexecTmpfs mounts a tmpfs as a VM's /run often is (noexec, nosuid,
// nodev) for the test, or, where mounting is not allowed, takes a
// directory in /dev/shm (a tmpfs on Linux).
func noexecTmpfs(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "run")
	os.MkdirAll(dir, 0o755)
	if err := exec.Command("mount", "-t", "tmpfs", "-o", "noexec,nosuid,nodev,mode=755,size=16m", "tmpfs", dir).Run(); err == nil {
		t.Cleanup(func() { exec.Command("umount", dir).Run() })
		return filepath.Join(dir, "anycloud")
	}
	dir = filepath.Join("/dev/shm", "anycloud-test-"+randomHex(t, 6))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func containsToken(s string) bool {
	return strings.Contains(s, tokenCanary) || strings.Contains(s, base64.StdEncoding.EncodeToString([]byte(tokenCanary)))
}

// sourceEnv is a private registry holding the demo image, a private git
// repository with two commits, and a workload that uses both.
type sourceEnv struct {
	*demo
	registry *testenv.Registry
	git      *testenv.GitServer
	gitURL   string
	commits  []string
	// psDuringFetch is every command line of the machine while the
	// clone's first authorised request was in flight.
	psDuringFetch string
	tokenDir      string
}

func newSourceEnv(t *testing.T) (*sourceEnv, context.Context) {
	t.Helper()
	d, _ := newDemo(t)
	s := &sourceEnv{demo: d}
	s.registry = testenv.StartRegistry(t, "octocat", tokenCanary)
	ref := s.registry.Push(t, d.w.Image, "me/private:v1")
	s.git = testenv.NewGitServer(t, tokenCanary)
	s.commits = s.git.CreateRepo(t, "me/train",
		map[string]string{"train.py": "print('first')\n", "data/a.txt": "a\n"},
		map[string]string{"train.py": "print('second')\n"})
	var once sync.Once
	s.git.Hold = func(*http.Request) { once.Do(func() { s.psDuringFetch = cmdlines(t) }) }
	srv := httptest.NewServer(s.git)
	t.Cleanup(srv.Close)
	s.gitURL = srv.URL
	s.tokenDir = noexecTmpfs(t)
	d.w.Image = ref
	d.w.TokenFile = filepath.Join(s.tokenDir, "github-token")
	d.w.GitHub = &GitHub{Token: tokenCanary, User: "octocat", Registries: []string{s.registry.Host}, GitURL: srv.URL}
	d.w.Source = &Source{Git: srv.URL + "/me/train.git", Commit: s.commits[0], Path: "/workspace", Dir: filepath.Join(t.TempDir(), "src")}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return s, ctx
}

// copied reads a file of the running workload's container.
func (s *sourceEnv) copied(ctx context.Context, t *testing.T, path string) string {
	t.Helper()
	res, err := s.docker.CopyFromContainer(ctx, s.w.Name, client.CopyFromContainerOptions{SourcePath: path})
	if err != nil {
		t.Fatalf("copy %s from the container: %v", path, err)
	}
	defer res.Content.Close()
	var buf bytes.Buffer
	buf.ReadFrom(res.Content)
	return buf.String()
}

func TestRunPullsPrivatelyAndChecksOutTheCommitWithTheTokenOnlyOnTmpfs(t *testing.T) {
	s, ctx := newSourceEnv(t)
	if err := Run(ctx, s.ssh, s.w); err != nil {
		t.Fatalf("run: %v", err)
	}

	// The image came from the registry, with the token.
	ins := s.inspect(ctx, t)
	if ins.Container.State == nil || !ins.Container.State.Running {
		t.Fatalf("container not running: %+v", ins.Container.State)
	}
	if ins.Container.Config.Image != s.w.Image {
		t.Errorf("container runs %s, want %s", ins.Container.Config.Image, s.w.Image)
	}
	if ins.Container.Config.WorkingDir != "/workspace" {
		t.Errorf("working directory %q, want /workspace", ins.Container.Config.WorkingDir)
	}
	if !strings.Contains(s.registry.Log(), "me/private") {
		t.Errorf("the registry served no pull of me/private:\n%s", s.registry.Log())
	}

	// The checkout is exactly the first commit (not the branch's tip),
	// in the container at /workspace.
	if got := gitRunIn(t, s.w.Source.Dir, "rev-parse", "HEAD"); got != s.commits[0] {
		t.Errorf("checked out %s, want %s", got, s.commits[0])
	}
	if got := s.copied(ctx, t, "/workspace/train.py"); !strings.Contains(got, "print('first')") {
		t.Errorf("the container's /workspace/train.py is not the first commit's:\n%q", got)
	}
	if got := s.copied(ctx, t, "/workspace/data/a.txt"); !strings.Contains(got, "a\n") {
		t.Errorf("the container's /workspace/data/a.txt: %q", got)
	}

	// The token reached git only through the helper: the server saw an
	// anonymous request, then authorised ones; never in a command line.
	reqs := s.git.Requests()
	if len(reqs) < 2 || !strings.HasSuffix(reqs[0], "anonymous") || !strings.HasSuffix(reqs[len(reqs)-1], "authorised") {
		t.Errorf("git server requests: %v", reqs)
	}
	if s.psDuringFetch == "" {
		t.Fatal("the clone's fetch was never seen in flight")
	}
	if !strings.Contains(s.psDuringFetch, "git") {
		t.Errorf("no git process in flight during the fetch:\n%s", s.psDuringFetch)
	}
	if containsToken(s.psDuringFetch) {
		t.Errorf("the token is in a command line during the fetch:\n%s", s.psDuringFetch)
	}

	// Nothing of the token is left: not in the tmpfs (the token file,
	// the helper and the docker config are gone), not in the checkout,
	// not in docker's or git's configuration, not in the sshd log.
	if entries, _ := os.ReadDir(s.tokenDir); len(entries) != 0 {
		t.Errorf("left on the tmpfs: %v", entries)
	}
	filepath.WalkDir(s.w.Source.Dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); containsToken(string(b)) {
				t.Errorf("the token is in %s", p)
			}
		}
		return nil
	})
	if cfg := readFile(t, filepath.Join(s.w.Source.Dir, ".git", "config")); strings.Contains(cfg, "credential") || strings.Contains(cfg, "@") {
		t.Errorf("the checkout's git config keeps credentials or a helper:\n%s", cfg)
	}
	home, _ := os.UserHomeDir()
	for _, f := range []string{filepath.Join(home, ".docker", "config.json"), filepath.Join(home, ".git-credentials"), filepath.Join(home, ".gitconfig")} {
		if b, err := os.ReadFile(f); err == nil && containsToken(string(b)) {
			t.Errorf("the token is in %s", f)
		}
	}
	s.checkClean(t, "the sshd log", s.sshd.Log())
	if containsToken(readFile(t, s.w.EnvFile)) {
		t.Error("the env file holds the token: GITHUB_TOKEN is the caller's to add")
	}

	// Again on the same VM: a fresh checkout, the same commit.
	s.w.Source.Commit = s.commits[1]
	if err := Run(ctx, s.ssh, s.w); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if got := s.copied(ctx, t, "/workspace/train.py"); !strings.Contains(got, "print('second')") {
		t.Errorf("after the second run /workspace/train.py is %q", got)
	}
}

func TestRunSaysToLogInWhenARegistryOrGitServerRefuses(t *testing.T) {
	s, ctx := newSourceEnv(t)
	tests := []struct {
		name   string
		change func(w *Workload)
		want   []string
	}{
		{
			name: "a wrong token for the registry",
			change: func(w *Workload) {
				w.GitHub = &GitHub{Token: "gho_wrong", User: "octocat", Registries: w.GitHub.Registries}
				w.Source = nil
			},
			want: []string{"pull", "refused the GitHub token", "anycloud login"},
		},
		{
			name:   "no login, a private image",
			change: func(w *Workload) { w.GitHub = nil; w.Source = nil },
			want:   []string{"pull", "wants credentials", "anycloud login"},
		},
		{
			name: "no login, a private repository",
			change: func(w *Workload) {
				w.GitHub.Registries = []string{s.registry.Host}
				w.GitHub.GitURL = "https://github.com" // the token is not for this git server
			},
			want: []string{"check out", "wants credentials", "anycloud login"},
		},
		{
			name: "a wrong token for git",
			change: func(w *Workload) {
				w.GitHub = &GitHub{Token: "gho_wrong", GitURL: w.GitHub.GitURL}
				w.Image = testenv.DemoImage
			},
			want: []string{"check out", "refused the GitHub token", "anycloud login"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := s.w
			gh, src := *s.w.GitHub, *s.w.Source
			w.GitHub, w.Source = &gh, &src
			tt.change(&w)
			s.registry.RemoveLocal(t, s.w.Image)
			before := len(s.git.Requests())
			err := Run(ctx, s.ssh, w)
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("got %v, want ErrUnauthorized", err)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q: %v", want, err)
				}
			}
			if containsToken(err.Error()) {
				t.Errorf("the error holds the token: %v", err)
			}
			if tt.name == "no login, a private repository" {
				for _, r := range s.git.Requests()[before:] {
					if !strings.HasSuffix(r, "anonymous") {
						t.Errorf("the token went to a git server it is not for: %v", r)
					}
				}
			}
			if entries, _ := os.ReadDir(s.tokenDir); len(entries) != 0 {
				t.Errorf("left on the tmpfs after a failure: %v", entries)
			}
		})
	}
}

func TestRunRefusesToWriteTheTokenOutsideATmpfs(t *testing.T) {
	s, ctx := newSourceEnv(t)
	w := s.w
	w.TokenFile = filepath.Join(t.TempDir(), "github-token") // a disk
	err := Run(ctx, s.ssh, w)
	if err == nil || !strings.Contains(err.Error(), "not a tmpfs") {
		t.Fatalf("got %v, want a refusal", err)
	}
	if _, err := os.Stat(w.TokenFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the token file exists on disk: %v", err)
	}
}

func TestPrepareSendsTheTokenOnlyWhereItBelongs(t *testing.T) {
	g := &GitHub{Token: tokenCanary, Registries: []string{"ghcr.io", "127.0.0.1:5000"}, GitURL: "https://github.com"}
	for _, tt := range []struct {
		image string
		want  bool
	}{
		{"ghcr.io/me/train:latest", true},
		{"127.0.0.1:5000/me/x", true},
		{"ghcr.io.evil.example/me/x", false},
		{"docker.io/library/ubuntu", false},
		{"ubuntu", false},
		{"me/ghcr.io", false},
	} {
		if _, got := g.forImage(tt.image); got != tt.want {
			t.Errorf("forImage(%q) = %v", tt.image, got)
		}
	}
	for _, tt := range []struct {
		repo string
		want bool
	}{
		{"https://github.com/me/train", true},
		{"https://GitHub.com/me/train.git", true},
		{"http://github.com/me/train", false},
		{"https://github.com.evil.example/me/train", false},
		{"https://gitlab.com/me/train", false},
		{"https://github.com:8443/me/train", false},
	} {
		if got := g.forGit(tt.repo); got != tt.want {
			t.Errorf("forGit(%q) = %v", tt.repo, got)
		}
	}
	var none *GitHub
	if _, ok := none.forImage("ghcr.io/x/y"); ok || none.forGit("https://github.com/x") {
		t.Error("a nil GitHub sends a token")
	}
	if s := (GitHub{Token: tokenCanary}).String(); containsToken(s) {
		t.Errorf("String: %s", s)
	}
}

func TestRunArgsOfASourceSetTheWorkingDirectory(t *testing.T) {
	w := Workload{Name: "n", Image: "img", Command: []string{"python", "train.py"}, Source: &Source{Path: "/src", Dir: "/var/lib/anycloud/source/n"}}
	want := []string{"docker", "run", "-d", "--name", "n", "--restart", "unless-stopped", "--env-file", "/run/e", "--workdir", "/src", "img", "python", "train.py"}
	if diff := cmp.Diff(want, runArgs(w, "/run/e")); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestCheckSourceRefusesWhatTheScriptsCannotCarry(t *testing.T) {
	ok := Source{Git: "https://github.com/me/train", Commit: strings.Repeat("a", 40), Path: "/workspace", Dir: "/var/lib/anycloud/source/x"}
	for name, change := range map[string]func(*Source){
		"short commit":     func(s *Source) { s.Commit = "abc" },
		"option commit":    func(s *Source) { s.Commit = "--upload-pack=touch /tmp/x" },
		"credentials":      func(s *Source) { s.Git = "https://u:p@github.com/me/train" },
		"ssh":              func(s *Source) { s.Git = "ssh://github.com/me/train" },
		"quote in the dir": func(s *Source) { s.Dir = "/var/lib/it's" },
		"relative dir":     func(s *Source) { s.Dir = "src" },
		"root path":        func(s *Source) { s.Path = "/" },
		"colon path":       func(s *Source) { s.Path = "/a:b" },
	} {
		s := ok
		change(&s)
		if err := checkSource(&s); err == nil {
			t.Errorf("%s: accepted %+v", name, s)
		}
	}
	if err := checkSource(&ok); err != nil {
		t.Errorf("refused a good source: %v", err)
	}
}

func gitRunIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}
