package dashboard_test

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/dashboard"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/reconcile"
	"github.com/anycloud/anycloud/state"
)

// routes are every page and file the dashboard serves behind the cookie.
var routes = []string{
	"/", "/?q=web", "/events", "/deployments/web", "/deployments/web/live", "/secretbundles", "/credentials",
	"/sources", "/recoveries", "/deployments/web/resubmit", "/deployments/web/delete", "/secretbundles/demo/delete",
	"/credentials/aws1/delete", "/static/app.js", "/static/app.css",
}

func TestDashboardTicketSignsInOnceWithAStrictHttpOnlyCookie(t *testing.T) {
	f := newFixture(t)
	tk, err := f.client.DashboardTicket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tk.URL, "http://127.0.0.1:") || time.Until(tk.ExpiresAt) > dashboard.TicketTTL {
		t.Errorf("ticket %s expiring %s", tk.URL, tk.ExpiresAt)
	}
	b := f.anonymous()
	resp, _ := b.get(tk.URL)
	if resp.StatusCode != 200 {
		t.Fatalf("first use: %s", resp.Status)
	}
	set := resp.Header.Get("Set-Cookie")
	for _, attr := range []string{"HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(set, attr) {
			t.Errorf("cookie %q lacks %s", set, attr)
		}
	}
	if resp, _ := b.get("/"); resp.StatusCode != 200 {
		t.Errorf("signed in, GET / = %s", resp.Status)
	}
	other := f.anonymous()
	if resp, _ := other.get(tk.URL); resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Set-Cookie") != "" {
		t.Errorf("second use of a ticket: %s, cookie %q", resp.Status, resp.Header.Get("Set-Cookie"))
	}
	if resp, _ := other.get("/login?ticket=made-up"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("made-up ticket: %s", resp.Status)
	}
}

func TestDashboardRefusesEveryRouteWithoutTheCookie(t *testing.T) {
	f := newFixture(t)
	f.apply(item(deploymentJSON("web"), nil))
	b := f.anonymous()
	forged := f.anonymous()
	u, _ := url.Parse(f.base)
	forged.hc.Jar.SetCookies(u, []*http.Cookie{{Name: "anycloud-session-" + u.Port(), Value: "made-up"}})
	for _, c := range []*browser{b, forged} {
		for _, p := range routes {
			resp, body := c.get(p)
			if resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, "<html") {
				t.Errorf("GET %s without a session: %s\n%s", p, resp.Status, body)
			}
		}
		for _, p := range []string{"/deployments/web/resubmit", "/deployments/web/delete"} {
			if resp, _ := c.post(p, url.Values{"confirm": {"web"}}, nil); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("POST %s without a session: %s", p, resp.Status)
			}
		}
	}
	d := f.deployment("web")
	if d.Metadata.Annotations[manifests.AnnotationRestartedAt] != "" || d.Metadata.DeletionTimestamp != nil {
		t.Errorf("a request without a session changed the deployment: %+v", d.Metadata)
	}
}

func TestDashboardRefusesOtherHostNames(t *testing.T) {
	f := newFixture(t)
	b := f.signIn()
	u, _ := url.Parse(f.base)
	for _, host := range []string{"evil.example:" + u.Port(), "127.0.0.1:1", "attacker.localtest.me:" + u.Port()} {
		req, _ := http.NewRequest("GET", f.base+"/", nil)
		req.Host = host
		if resp, _ := b.do(req); resp.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("Host %s: %s, want 421 (DNS rebinding)", host, resp.Status)
		}
	}
	// The same session under the name localhost (a browser keeps cookies
	// per host name, and so does the jar).
	lu, _ := url.Parse("http://localhost:" + u.Port())
	b.hc.Jar.SetCookies(lu, b.hc.Jar.Cookies(u))
	req, _ := http.NewRequest("GET", f.base+"/", nil)
	req.Host = lu.Host
	if resp, _ := b.do(req); resp.StatusCode != 200 {
		t.Errorf("Host localhost: %s", resp.Status)
	}
}

func TestDashboardResubmitNeedsSameOriginCSRFAndConfirmation(t *testing.T) {
	f := newFixture(t)
	f.apply(item(deploymentJSON("web"), nil))
	b := f.signIn()
	token := b.csrf("/deployments/web/resubmit")
	good := url.Values{"csrf": {token}, "confirm": {"web"}}
	for _, tc := range []struct {
		name    string
		form    url.Values
		headers map[string]string
		want    int
	}{
		{"another site's page", good, map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, 403},
		{"another port of this machine (same site)", good, map[string]string{"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"}, 403},
		{"a foreign Origin without fetch metadata", good, map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": ""}, 403},
		{"no CSRF token", url.Values{"confirm": {"web"}}, nil, 403},
		{"a wrong CSRF token", url.Values{"csrf": {"x" + token}, "confirm": {"web"}}, nil, 403},
		{"no confirmation", url.Values{"csrf": {token}}, nil, 422},
		{"the confirmation of another deployment", url.Values{"csrf": {token}, "confirm": {"other"}}, nil, 422},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := b.post("/deployments/web/resubmit", tc.form, tc.headers)
			if resp.StatusCode != tc.want {
				t.Errorf("%s, want %d\n%s", resp.Status, tc.want, body)
			}
			if m := f.deployment("web").Metadata.Annotations[manifests.AnnotationRestartedAt]; m != "" {
				t.Fatalf("refused resubmit happened: marker %q", m)
			}
		})
	}
	resp, _ := b.post("/deployments/web/resubmit", good, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/deployments/web?done=resubmitted" {
		t.Fatalf("resubmit: %s → %s", resp.Status, resp.Header.Get("Location"))
	}
	if f.deployment("web").Metadata.Annotations[manifests.AnnotationRestartedAt] == "" {
		t.Error("resubmit did not set the restart marker")
	}
	if _, body := b.get("/deployments/web?done=resubmitted"); !strings.Contains(body, "Resubmitted") {
		t.Error("no word of the resubmit on the page")
	}
}

func TestDashboardDeleteGoesThroughTheAPIsInUseCheck(t *testing.T) {
	f := newFixture(t)
	f.apply(item(bundleJSON("demo"), map[string]string{"TOKEN": canaries[0]}), item(deploymentJSON("web", "demo"), nil))
	b := f.signIn()
	token := b.csrf("/secretbundles/demo/delete")
	resp, body := b.post("/secretbundles/demo/delete", url.Values{"csrf": {token}, "confirm": {"demo"}}, nil)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "in use") || !strings.Contains(body, "web") {
		t.Errorf("deleting a bundle in use: %s\n%s", resp.Status, body)
	}
	if _, err := f.store.Get(context.Background(), manifests.KindSecretBundle, "demo"); err != nil {
		t.Fatalf("the bundle in use is gone: %v", err)
	}
	resp, body = b.post("/credentials/local/delete", url.Values{"csrf": {token}, "confirm": {"local"}}, nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("deleting the built-in credentials: %s\n%s", resp.Status, body)
	}
	resp, _ = b.post("/deployments/web/delete", url.Values{"csrf": {token}, "confirm": {"web"}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("delete deployment: %s", resp.Status)
	}
	if o, err := f.store.Get(context.Background(), manifests.KindDeployment, "web"); err == nil && o.GetMeta().DeletionTimestamp == nil {
		t.Error("the deployment is neither gone nor terminating")
	}
}

// TestDashboardNeverShowsSecretValues stores canary values in a bundle and
// in credentials, then reads every page, file and the event stream.
func TestDashboardNeverShowsSecretValues(t *testing.T) {
	f := newFixture(t)
	f.apply(
		item(bundleJSON("demo"), map[string]string{"API_TOKEN": canaries[0]}),
		item(`{"apiVersion":"anycloud.dev/v1","kind":"Credentials","metadata":{"name":"aws1"},"spec":{"provider":"aws","aws":{"region":"eu-west-1","accessKeyId":"AKIDEXAMPLE","secretAccessKeyFromEnv":"X"}}}`,
			map[string]string{"secretAccessKey": canaries[1]}),
		item(deploymentJSON("web", "demo"), nil),
	)
	f.apply(item(bundleJSON("demo"), map[string]string{"API_TOKEN": canaries[2]})) // an overwrite
	ctx := context.Background()
	ref := manifests.ObjectRef{Kind: manifests.KindDeployment, Name: "web"}
	f.store.RecordEvent(ctx, ref, state.Event{Type: "Normal", Reason: reconcile.ReasonLaunched, Message: "launched VM aaa (attempt 1, local) with bundles demo@2"})
	b := f.signIn()
	s := b.stream()
	s.next(t, "reset", `"name":"web"`)
	for _, p := range routes {
		if p == "/events" {
			continue
		}
		resp, body := b.get(p)
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %s", p, resp.Status)
		}
		if l := leaks([]byte(body)); len(l) > 0 {
			t.Errorf("GET %s shows secret value(s) %v", p, l)
		}
	}
	// A change while the stream is open.
	f.apply(item(deploymentJSON("web", "demo"), nil), item(deploymentJSON("api", "demo"), nil))
	s.next(t, "row", `"name":"api"`)
	if l := leaks(s.bytes()); len(l) > 0 {
		t.Errorf("the event stream carries secret value(s) %v", l)
	}
	_, bundles := b.get("/secretbundles")
	for _, want := range []string{"API_TOKEN", `href="/deployments/web"`} {
		if !strings.Contains(bundles, want) {
			t.Errorf("bundles page lacks %s", want)
		}
	}
	_, creds := b.get("/credentials")
	if strings.Contains(creds, "AKIDEXAMPLE") || !strings.Contains(creds, "eu-west-1") || !strings.Contains(creds, "static keys") {
		t.Errorf("credentials page shows a key id or lacks the region:\n%s", creds)
	}
}

func TestDashboardStreamSendsChangesAsTheyAreWritten(t *testing.T) {
	f := newFixture(t)
	f.apply(item(deploymentJSON("web"), nil))
	b := f.signIn()
	s := b.stream()
	s.next(t, "reset", `"name":"web"`)
	start := time.Now()
	f.apply(item(deploymentJSON("api"), nil))
	ev := s.next(t, "row", `"name":"api"`)
	t.Logf("write → event on the stream: %s", ev.at.Sub(start))
	// A second page shares the one watch and starts from a reset.
	s2 := b.stream()
	s2.next(t, "reset", `"name":"api"`)
	if _, err := f.client.Delete(context.Background(), manifests.KindDeployment, "api", state.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	s.next(t, "gone", `"name":"api"`)
	s2.next(t, "gone", `"name":"api"`)
}

func TestDashboardShowsTheTimelineWithTheTimeEachStepTook(t *testing.T) {
	f := newFixture(t)
	f.apply(item(deploymentJSON("web"), nil))
	ctx := context.Background()
	ref := manifests.ObjectRef{Kind: manifests.KindDeployment, Name: "web"}
	for _, e := range []state.Event{
		{Type: "Normal", Reason: reconcile.ReasonLaunched, Message: "launched VM aaa (attempt 1, local)"},
		{Type: "Warning", Reason: reconcile.ReasonPreempted, Message: "VM aaa was taken away: exited (137)"},
		{Type: "Normal", Reason: reconcile.ReasonRecovering, Message: "launching attempt 2 with freshly resolved secrets"},
		{Type: "Normal", Reason: reconcile.ReasonLaunched, Message: "launched replacement VM bbb (attempt 2, local)"},
		{Type: "Normal", Reason: reconcile.ReasonRecovered, Message: "replacement VM bbb is running"},
	} {
		if err := f.store.RecordEvent(ctx, ref, e); err != nil {
			t.Fatal(err)
		}
	}
	b := f.signIn()
	_, page := b.get("/deployments/web")
	for _, want := range []string{"first launch", "recovery", "preempted: exited (137)", `id="timeline"`, `id="recovery-times"`, "<svg", "anycloud-demo:test", "GREETING"} {
		if !strings.Contains(page, want) {
			t.Errorf("deployment page lacks %q", want)
		}
	}
	_, rec := b.get("/recoveries")
	for _, want := range []string{`id="total-recoveries">0<`, "no deployment has been recovered"} {
		if !strings.Contains(rec, want) {
			t.Errorf("recoveries page lacks %q (no status recoveries counted yet)", want)
		}
	}
}

func TestDashboardSourcesShowTheFileAndLineAtFault(t *testing.T) {
	f := newFixture(t)
	b := f.signIn()
	if _, body := b.get("/sources"); !strings.Contains(body, `id="no-sources"`) {
		t.Error("no word that nothing is watched")
	}
	f.mu.Lock()
	f.sources = func() []api.SourceStatus {
		return []api.SourceStatus{{Dir: "/src/gitops", ApplySet: "gitops-1a2b", Message: "/src/gitops/apps/web.yaml:7: document 1 (Deployment/web): spec.imagee: unknown field", LastAttempt: time.Now()}}
	}
	f.mu.Unlock()
	_, body := b.get("/sources")
	for _, want := range []string{`<code class="at">/src/gitops/apps/web.yaml:7</code>`, "spec.imagee: unknown field", "gitops-1a2b", "ready-False"} {
		if !strings.Contains(body, want) {
			t.Errorf("sources page lacks %q:\n%s", want, body)
		}
	}
}

// TestDashboardCodeNeverOpensSecrets: the package's types keep secret
// values out of reach (Reader has no OpenSecrets); this keeps the code
// from going around them.
func TestDashboardCodeNeverOpensSecrets(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		file, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			if id, ok := n.(*ast.Ident); ok && (id.Name == "OpenSecrets" || id.Name == "Apply" || id.Name == "Sealing") {
				t.Errorf("%s: the dashboard names %s", fset.Position(id.Pos()), id.Name)
			}
			return true
		})
	}
}
