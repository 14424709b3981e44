package cli

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var reLink = regexp.MustCompile(`http://127\.0\.0\.1:\d+/login\?ticket=[A-Za-z0-9_-]+`)

// signInWith fetches a sign-in link as a browser would and reports its
// status and cookie.
func signInWith(t *testing.T, link string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Set-Cookie")
}

func TestDashboardPrintURLPrintsALinkThatSignsInOnce(t *testing.T) {
	e := newEnv(t)
	r := e.must("dashboard", "--print-url")
	link := strings.TrimSpace(r.stdout)
	if !reLink.MatchString(link) || link != reLink.FindString(link) {
		t.Fatalf("stdout %q is not one sign-in link", r.stdout)
	}
	if !strings.Contains(r.stderr, "once") {
		t.Errorf("stderr does not say the link works once: %q", r.stderr)
	}
	code, cookie := signInWith(t, link)
	if code != 200 || !strings.Contains(cookie, "HttpOnly") || !strings.Contains(cookie, "SameSite=Strict") {
		t.Errorf("first use: %d, cookie %q", code, cookie)
	}
	if code, cookie := signInWith(t, link); code != http.StatusUnauthorized || cookie != "" {
		t.Errorf("second use: %d, cookie %q", code, cookie)
	}
	// Each run mints another.
	if other := strings.TrimSpace(e.must("dashboard", "--print-url").stdout); other == link {
		t.Error("two runs printed the same link")
	}
	if strings.Contains(e.log.String(), "ticket=") {
		t.Error("the control plane logged a ticket")
	}
}

// runDashboard runs the verb with a stand-in for the browser.
func (e *env) runDashboard(open func(ctx context.Context, path string) error) (string, string, error) {
	e.t.Helper()
	var out, errOut bytes.Buffer
	f := &Factory{IO: &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut, Getenv: func(k string) string { return e.vars[k] }}, Home: e.home, NoAutostart: true}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := NewCmdDashboard(f, func(o *DashboardOptions) error {
		o.Open = open
		return o.Run(ctx)
	})
	cmd.SetArgs(nil)
	err := cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// TestDashboardOpensALauncherFileNotTheLink: the browser is started with
// a 0600 file in the home, so the link never shows in a process's
// arguments.
func TestDashboardOpensALauncherFileNotTheLink(t *testing.T) {
	e := newEnv(t)
	var opened string
	out, _, err := e.runDashboard(func(_ context.Context, path string) error { opened = path; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(opened) != e.home || strings.Contains(opened, "ticket") {
		t.Fatalf("opened %q, want a file in the home", opened)
	}
	fi, err := os.Stat(opened)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("launcher mode %v, want 0600", fi.Mode().Perm())
	}
	if strings.Contains(out, "ticket=") || !strings.Contains(out, "http://127.0.0.1:") {
		t.Errorf("stdout %q: want the dashboard's address, not the link", out)
	}
	page, _ := os.ReadFile(opened)
	link := reLink.FindString(string(page))
	if link == "" {
		t.Fatalf("no sign-in link in the launcher:\n%s", page)
	}
	if code, _ := signInWith(t, link); code != 200 {
		t.Errorf("the launcher's link: %d", code)
	}

	// No browser: the link is printed instead, and the run succeeds.
	out, errOut, err := e.runDashboard(func(context.Context, string) error { return errors.New("xdg-open is not installed; set BROWSER") })
	if err != nil || !reLink.MatchString(out) || !strings.Contains(errOut, "Could not open a browser") {
		t.Errorf("without a browser: err %v, stdout %q, stderr %q", err, out, errOut)
	}
}
