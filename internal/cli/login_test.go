package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/anycloud/anycloud/internal/github"
	"github.com/anycloud/anycloud/internal/github/githubtest"
	"github.com/anycloud/anycloud/seal"
	"github.com/anycloud/anycloud/state"
)

// tokenCanary is a recognisable GitHub token; it must never show outside
// the sealed .token file.
const tokenCanary = "gho_CANARYcliToken5f3a9e1d7c2b8a6f4e0d"

// ghHome is a home directory and environment for the login verbs, which
// need no control plane.
type ghHome struct {
	t    *testing.T
	home string
	vars map[string]string
	// outputs is everything the commands printed, to search for the
	// token.
	outputs []string
}

func newGHHome(t *testing.T, s *githubtest.Server) *ghHome {
	t.Helper()
	home := t.TempDir()
	return &ghHome{t: t, home: home, vars: map[string]string{
		"ANYCLOUD_HOME": home, envGitHubURL: s.URL, envGitHubAPIURL: s.URL, envGitHubClientID: s.ClientID,
	}}
}

func (h *ghHome) factory(stdin string, out, errOut *bytes.Buffer) *Factory {
	return &Factory{
		IO:          &IOStreams{In: strings.NewReader(stdin), Out: out, ErrOut: errOut, Getenv: func(k string) string { return h.vars[k] }},
		NoAutostart: true,
	}
}

// run runs an anycloud command as the user would.
func (h *ghHome) run(stdin string, args ...string) result {
	h.t.Helper()
	var out, errOut bytes.Buffer
	cmd := NewRootCmd(h.factory(stdin, &out, &errOut))
	cmd.SetArgs(args)
	return h.exec(args, cmd.ExecuteContext, &out, &errOut)
}

// deviceLogin runs `anycloud login` with the device flow paced by a fake
// clock, and returns the waits between polls.
func (h *ghHome) deviceLogin(args ...string) (result, []time.Duration) {
	h.t.Helper()
	var out, errOut bytes.Buffer
	now := time.Now()
	var sleeps []time.Duration
	cmd := NewCmdLogin(h.factory("", &out, &errOut), func(o *LoginOptions) error {
		o.now = func() time.Time { return now }
		o.sleep = func(ctx context.Context, d time.Duration) error {
			sleeps = append(sleeps, d)
			now = now.Add(d)
			return ctx.Err()
		}
		return o.Run(context.Background())
	})
	cmd.SetArgs(args)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	return h.exec(append([]string{"login"}, args...), cmd.ExecuteContext, &out, &errOut), sleeps
}

func (h *ghHome) exec(args []string, execute func(context.Context) error, out, errOut *bytes.Buffer) result {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := execute(ctx)
	if err != nil {
		errOut.WriteString("error: " + err.Error() + "\n")
	}
	r := result{args: args, stdout: out.String(), stderr: errOut.String(), err: err, code: ExitCode(err)}
	h.outputs = append(h.outputs, r.String())
	return r
}

// checkNoToken fails the test if the token, in any common encoding, shows
// in any output or in any file of the home but the sealed .token.
func (h *ghHome) checkNoToken() {
	h.t.Helper()
	forms := []string{tokenCanary, base64.StdEncoding.EncodeToString([]byte(tokenCanary)), base64.RawURLEncoding.EncodeToString([]byte(tokenCanary)), hex.EncodeToString([]byte(tokenCanary))}
	check := func(what, data string) {
		for _, f := range forms {
			if strings.Contains(data, f) {
				h.t.Errorf("the token shows in %s:\n%s", what, data)
				return
			}
		}
	}
	for _, o := range h.outputs {
		check("command output", o)
	}
	filepath.WalkDir(h.home, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			check(p, string(b))
		}
		return nil
	})
}

func TestLoginDeviceFlowPrintsTheCodeAndKeepsTheTokenSealed(t *testing.T) {
	s := githubtest.NewServer(t, tokenCanary)
	s.Polls = []string{"authorization_pending", "slow_down", ""}
	h := newGHHome(t, s)

	r, sleeps := h.deviceLogin()
	if r.err != nil {
		t.Fatalf("%s\n%v", r, r.err)
	}
	for _, want := range []string{"WDJB-MJHT", s.URL + "/login/device"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("login does not print %q:\n%s", want, r)
		}
	}
	if !strings.Contains(r.stdout, "as octocat") || !strings.Contains(r.stdout, "repo, read:packages") {
		t.Errorf("login output:\n%s", r)
	}
	if diff := cmp.Diff([]time.Duration{5 * time.Second, 5 * time.Second, 10 * time.Second}, sleeps); diff != "" {
		t.Errorf("waits between polls (-want +got):\n%s", diff)
	}
	fi, err := os.Stat(filepath.Join(h.home, github.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf(".token mode %v", fi.Mode().Perm())
	}
	keys, err := seal.Load(h.home, false)
	if err != nil {
		t.Fatal(err)
	}
	l, err := github.Load(h.home, keys)
	if err != nil {
		t.Fatal(err)
	}
	if l.Token != tokenCanary || l.User != "octocat" || l.WebURL != s.URL || l.APIURL != s.URL || len(l.Registries) != 0 {
		t.Errorf("stored login %v", l)
	}

	// auth status asks the API, and shows the login and scopes.
	r = h.run("", "auth", "status")
	if r.err != nil {
		t.Fatalf("%s\n%v", r, r.err)
	}
	for _, want := range []string{"logged in as octocat", "token scopes: repo, read:packages", "sealed in " + filepath.Join(h.home, ".token")} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("auth status lacks %q:\n%s", want, r)
		}
	}
	r = h.run("", "auth", "status", "-o", "json")
	var st authStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("%s\n%v", r, err)
	}
	if st.User != "octocat" || !st.ScopesKnown || len(st.Scopes) != 2 {
		t.Errorf("auth status -o json: %+v", st)
	}
	// GitHub saw: one device code, three polls, and /user at login and
	// at each status.
	want := []string{"POST /login/device/code", "POST /login/oauth/access_token", "POST /login/oauth/access_token", "POST /login/oauth/access_token", "GET /user", "GET /user", "GET /user"}
	if diff := cmp.Diff(want, s.Requests()); diff != "" {
		t.Errorf("requests to GitHub (-want +got):\n%s", diff)
	}

	// The token, revoked on GitHub: status says so, exit 1.
	s.Token = "gho_another"
	r = h.run("", "auth", "status")
	if r.code != 1 || !strings.Contains(r.stderr, "no longer accepted") || !strings.Contains(r.stderr, "anycloud login") {
		t.Errorf("status of a revoked token (exit %d):\n%s", r.code, r)
	}

	// logout forgets it.
	r = h.run("", "logout")
	if r.err != nil || !strings.Contains(r.stdout, "Logged out") || !strings.Contains(r.stdout, "octocat") {
		t.Errorf("logout:\n%s", r)
	}
	if _, err := os.Stat(filepath.Join(h.home, github.TokenFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".token after logout: %v", err)
	}
	r = h.run("", "auth", "status")
	if r.code != 1 || !strings.Contains(r.stderr, "not logged in") {
		t.Errorf("status after logout (exit %d):\n%s", r.code, r)
	}
	if r := h.run("", "logout"); r.err != nil || !strings.Contains(r.stdout, "not logged in") {
		t.Errorf("second logout:\n%s", r)
	}
	h.checkNoToken()
}

func TestLoginDeviceFlowEndsWithWhatToDo(t *testing.T) {
	for _, tt := range []struct {
		name  string
		polls []string
		want  string
	}{
		{name: "denied", polls: []string{"authorization_pending", "access_denied"}, want: "declined"},
		{name: "expired", polls: []string{"expired_token"}, want: "for a new code"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := githubtest.NewServer(t, tokenCanary)
			s.Polls = tt.polls
			h := newGHHome(t, s)
			r, _ := h.deviceLogin()
			if r.code != 1 || !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, "anycloud login") {
				t.Errorf("exit %d:\n%s", r.code, r)
			}
			if _, err := os.Stat(filepath.Join(h.home, github.TokenFile)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf(".token written after a failed login: %v", err)
			}
		})
	}
}

func TestLoginWithTokenReadsStdinAndChecksTheToken(t *testing.T) {
	s := githubtest.NewServer(t, tokenCanary)
	s.Scopes = "repo"
	h := newGHHome(t, s)

	r := h.run("gho_not-the-token\n", "login", "--with-token")
	if r.code != 1 || !strings.Contains(r.stderr, "does not accept the token") {
		t.Errorf("a wrong token (exit %d):\n%s", r.code, r)
	}
	if _, err := os.Stat(filepath.Join(h.home, github.TokenFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".token written for a wrong token: %v", err)
	}
	if r := h.run("\n", "login", "--with-token"); r.code != 2 {
		t.Errorf("an empty stdin (exit %d):\n%s", r.code, r)
	}

	r = h.run(tokenCanary+"\n", "login", "--with-token", "--registry", "GHCR.io", "--registry", "127.0.0.1:5000")
	if r.err != nil {
		t.Fatalf("%s\n%v", r, r.err)
	}
	if !strings.Contains(r.stdout, "lacks read:packages") {
		t.Errorf("no warning about the missing scope:\n%s", r)
	}
	if !strings.Contains(r.stdout, "registries: ghcr.io, 127.0.0.1:5000") {
		t.Errorf("registries not shown:\n%s", r)
	}
	keys, _ := seal.Load(h.home, false)
	l, err := github.Load(h.home, keys)
	if err != nil || l.Token != tokenCanary || !l.ForRegistry("ghcr.io") || !l.ForRegistry("127.0.0.1:5000") {
		t.Errorf("stored %v, %v", l, err)
	}
	if slices := s.Requests(); len(slices) != 2 || slices[0] != "GET /user" {
		t.Errorf("requests: %v (want GET /user twice, no device flow)", slices)
	}
	if r := h.run("", "login", "--registry", "https://ghcr.io"); r.code != 2 {
		t.Errorf("a URL as --registry (exit %d):\n%s", r.code, r)
	}
	h.checkNoToken()
}

func TestLoginHostsComeFromFlagsThenEnvironmentThenDefaults(t *testing.T) {
	s := githubtest.NewServer(t, tokenCanary)
	h := newGHHome(t, s)
	h.vars[envGitHubURL] = "http://127.0.0.1:1" // nothing listens there
	h.vars[envGitHubAPIURL] = "http://127.0.0.1:1"
	r := h.run(tokenCanary, "login", "--with-token", "--github-url", s.URL, "--github-api-url", s.URL)
	if r.err != nil {
		t.Fatalf("flags do not win over the environment:\n%s", r)
	}

	f := &Factory{IO: &IOStreams{Getenv: func(string) string { return "" }}}
	for _, tt := range []struct{ web, api, wantWeb, wantAPI string }{
		{wantWeb: github.DefaultWebURL, wantAPI: github.DefaultAPIURL},
		{web: "https://ghe.example.com", wantWeb: "https://ghe.example.com", wantAPI: "https://ghe.example.com/api/v3"},
		{web: "https://ghe.example.com", api: "https://api.ghe.example.com", wantWeb: "https://ghe.example.com", wantAPI: "https://api.ghe.example.com"},
	} {
		web, api, _ := githubURLs(f, tt.web, tt.api, "")
		if web != tt.wantWeb || api != tt.wantAPI {
			t.Errorf("githubURLs(%q, %q) = %q, %q", tt.web, tt.api, web, api)
		}
	}
	if _, _, id := githubURLs(f, "", "", ""); id != "" {
		t.Errorf("client id %q: empty selects github.DefaultClientID", id)
	}
}

func TestLoginNeverMakesANewKeyBesideAStore(t *testing.T) {
	s := githubtest.NewServer(t, tokenCanary)
	h := newGHHome(t, s)
	// A store without its key: the key is lost, not new.
	if err := os.WriteFile(filepath.Join(h.home, state.DBFile), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := h.run(tokenCanary, "login", "--with-token")
	if r.code != 1 || !strings.Contains(r.stderr, "cipher key missing") {
		t.Errorf("exit %d:\n%s", r.code, r)
	}
	if _, err := os.Stat(filepath.Join(h.home, seal.KeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a new key was made beside the store: %v", err)
	}
}

func TestKeysRotateSealsTheGitHubLoginUnderTheNewKey(t *testing.T) {
	s := githubtest.NewServer(t, tokenCanary)
	e := newEnv(t)
	e.vars[envGitHubURL], e.vars[envGitHubAPIURL] = s.URL, s.URL
	e.must("secrets", "new", "hf", "HF_TOKEN=x") // something in the store to re-seal
	if r := e.runIn(tokenCanary, "login", "--with-token"); r.err != nil {
		t.Fatalf("%s\n%v", r, r.err)
	}
	before, _ := os.ReadFile(filepath.Join(e.home, github.TokenFile))
	r := e.must("keys", "rotate")
	if !strings.Contains(r.stderr, "GitHub login is sealed under the new key") {
		t.Errorf("keys rotate:\n%s", r)
	}
	after, _ := os.ReadFile(filepath.Join(e.home, github.TokenFile))
	if bytes.Equal(before, after) {
		t.Error(".token was not sealed again")
	}
	if r := e.run("auth", "status"); r.err != nil || !strings.Contains(r.stdout, "logged in as octocat") {
		t.Errorf("auth status after the rotation:\n%s", r)
	}
	if hasToken(after) || hasToken([]byte(r.String())) {
		t.Error("the token shows after the rotation")
	}
}
