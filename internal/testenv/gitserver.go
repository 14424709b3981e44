package testenv

import (
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// GitServer is git's own smart HTTP server, git-http-backend, behind Go's
// CGI handler, serving the bare repositories under Root. Every repository
// is private: a request without the password (any user name) gets 401
// and a Basic challenge, as GitHub answers git for a private repository.
// It is an http.Handler, so a fake GitHub can serve it on its own host.
type GitServer struct {
	Root     string
	Password string
	// Hold, when set, is called with every authorised request before it
	// is served: a test pauses the client there to look at its
	// processes while its fetch is in flight.
	Hold func(*http.Request)

	backend *cgi.Handler
	mu      sync.Mutex
	log     []string
}

// NewGitServer returns a git server for bare repositories in a temp dir,
// or skips t (fails it under CI=true) when git or its http-backend is
// missing.
func NewGitServer(t testing.TB, password string) *GitServer {
	t.Helper()
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		Missing(t, "git is not installed")
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		Missing(t, "git-http-backend is not installed: "+err.Error())
	}
	root := t.TempDir()
	return &GitServer{Root: root, Password: password, backend: &cgi.Handler{
		Path: backend,
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + root},
	}}
}

// ServeHTTP serves git's smart HTTP protocol to clients with the password.
func (g *GitServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, pass, ok := r.BasicAuth()
	authorised := ok && pass == g.Password && g.Password != ""
	g.mu.Lock()
	mark := "anonymous"
	if ok && !authorised {
		mark = "wrong password"
	} else if authorised {
		mark = "authorised"
	}
	g.log = append(g.log, r.Method+" "+r.URL.RequestURI()+" "+mark)
	g.mu.Unlock()
	if !authorised {
		w.Header().Set("WWW-Authenticate", `Basic realm="anycloud-test-git"`)
		http.Error(w, "authentication required", http.StatusUnauthorized)
		return
	}
	if g.Hold != nil {
		g.Hold(r)
	}
	g.backend.ServeHTTP(w, r)
}

// Requests lists what the server was asked, as "METHOD URI anonymous|
// wrong password|authorised". Never a password.
func (g *GitServer) Requests() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.log...)
}

// CreateRepo makes the bare repository name.git with one commit per
// entry of commits (each a map of file name to content, applied in
// order), and returns the commits' SHAs, oldest first. Fetching any of
// them by SHA is allowed, as on GitHub.
func (g *GitServer) CreateRepo(t testing.TB, name string, commits ...map[string]string) []string {
	t.Helper()
	work := t.TempDir()
	gitRun(t, work, "init", "-q", "-b", "main")
	var shas []string
	for i, files := range commits {
		for f, content := range files {
			p := filepath.Join(work, f)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		gitRun(t, work, "add", "-A")
		gitRun(t, work, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", "commit "+string(rune('1'+i)))
		shas = append(shas, gitRun(t, work, "rev-parse", "HEAD"))
	}
	bare := filepath.Join(g.Root, name+".git")
	gitRun(t, g.Root, "clone", "-q", "--bare", work, bare)
	gitRun(t, bare, "config", "uploadpack.allowReachableSHA1InWant", "true")
	gitRun(t, bare, "config", "http.receivepack", "false")
	return shas
}

func gitRun(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}
