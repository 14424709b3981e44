package dashboard_test

// The dashboard in a real browser: headless Chromium driven by chromedp,
// against a real control plane (bbolt store, controller, the local
// provider on the Docker engine). Under CI=true a missing Chromium or
// Docker fails the test; on a developer's machine it skips, saying why.
//
// With ANYCLOUD_SCREENSHOTS=DIR set (`make screenshots`), the test writes
// a PNG of each page into DIR: the README shows them.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/moby/moby/client"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/dashboard"
	"github.com/anycloud/anycloud/internal/controlplane"
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider/local"
)

// plane is a control plane running in-process on a fresh home.
type plane struct {
	home    string
	client  *api.Client
	cluster string
	log     *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

func startPlane(t *testing.T, docker *client.Client, watchDir string) *plane {
	t.Helper()
	home := testenv.ShortTempDir(t)
	p := &plane{home: home, client: api.NewClient(filepath.Join(home, api.SocketFile)), log: &lockedBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- controlplane.Run(ctx, controlplane.Config{
			Home: home, Log: controlplane.NewLogger(p.log, 1), Version: "test",
			Resync: 2 * time.Second, OrphanGrace: 3 * time.Second, WatchDir: watchDir, WatchInterval: time.Hour,
			Ready: func() { close(ready) },
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("control plane: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("control plane did not start")
	}
	_, cluster, err := p.client.Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p.cluster = cluster
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control plane: %v", err)
		}
		rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer rcancel()
		res, err := docker.ContainerList(rctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", local.LabelCluster+"="+cluster)})
		if err == nil {
			for _, c := range res.Items {
				docker.ContainerRemove(rctx, c.ID, client.ContainerRemoveOptions{Force: true})
			}
		}
	})
	return p
}

// runningContainer waits for the one running container of a deployment.
func (p *plane) runningContainer(t *testing.T, docker *client.Client, name string) (id string, env []string) {
	t.Helper()
	waitFor(t, "a running container of "+name, 60*time.Second, func() bool {
		res, err := docker.ContainerList(context.Background(), client.ContainerListOptions{Filters: make(client.Filters).
			Add("label", local.LabelCluster+"="+p.cluster, local.LabelDeployment+"="+name)})
		if err != nil || len(res.Items) != 1 {
			return false
		}
		in, err := docker.ContainerInspect(context.Background(), res.Items[0].ID, client.ContainerInspectOptions{})
		if err != nil {
			return false
		}
		id, env = res.Items[0].ID, in.Container.Config.Env
		return true
	})
	return id, env
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tab is a Chromium tab and the pages it has shown.
type tab struct {
	t    *testing.T
	ctx  context.Context
	base string
	// pages are the HTML of every page the test looked at.
	pages map[string]string
	shots string
}

func newTab(t *testing.T, chrome, base string) *tab {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox, // the tests run as root
		chromedp.WindowSize(1280, 820),
		chromedp.Flag("hide-scrollbars", true),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); acancel() })
	if err := chromedp.Do(ctx); err != nil { // start the browser now
		t.Fatalf("start %s: %v", chrome, err)
	}
	return &tab{t: t, ctx: ctx, base: base, pages: map[string]string{}, shots: os.Getenv("ANYCLOUD_SCREENSHOTS")}
}

func (b *tab) navigate(path string) {
	b.t.Helper()
	u := path
	if strings.HasPrefix(path, "/") {
		u = b.base + path
	}
	if err := chromedp.Do(b.ctx, chromedp.Navigate(u)); err != nil {
		b.t.Fatalf("navigate %s: %v", u, err)
	}
}

func eval[T any](b *tab, js string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](js))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// until evaluates a JavaScript condition until it holds.
func (b *tab) until(what, js string, limit time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](js))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			html, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
			b.t.Fatalf("timed out after %s waiting for %s (%s); the page says:\n%s", limit, what, js, html)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// keep records the page's HTML under name and, when asked for, its
// screenshot.
func (b *tab) keep(name string) {
	b.t.Helper()
	b.pages[name] = eval[string](b, `document.documentElement.outerHTML`)
	if b.shots == "" {
		return
	}
	// Rows just changed flash for a moment: not in the picture.
	eval[bool](b, `document.querySelectorAll('.changed').forEach((e) => e.classList.remove('changed')); true`)
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(b.shots, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func rowCell(name, cell string) string {
	return fmt.Sprintf(`(document.querySelector('#deployments tr[data-name=%q] td.%s') || {}).textContent`, name, cell)
}

func TestDashboardInABrowser(t *testing.T) {
	chrome := testenv.RequireChromium(t)
	docker := testenv.RequireDocker(t)
	image := testenv.RequireDemoImage(t)

	// A GitOps directory with a mistake in it, for the sources page.
	gitops := t.TempDir()
	if err := os.WriteFile(filepath.Join(gitops, "web.yaml"), []byte("apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  imagee: nginx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startPlane(t, docker, gitops)
	ctx := context.Background()
	apply := func(items ...api.ApplyItem) {
		t.Helper()
		if _, err := p.client.Apply(ctx, api.ApplyRequest{Items: items}); err != nil {
			t.Fatalf("apply: %v", err)
		}
	}
	apply(
		item(bundleJSON("demo"), map[string]string{"DEMO_TOKEN": canaries[0]}),
		item(`{"apiVersion":"anycloud.dev/v1","kind":"Credentials","metadata":{"name":"my-aws"},"spec":{"provider":"aws","aws":{"region":"us-east-1","accessKeyId":"AKIDEXAMPLE","secretAccessKeyFromEnv":"X"}}}`,
			map[string]string{"secretAccessKey": canaries[1]}),
	)
	hello := `{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"hello","labels":{"team":"demo"}},"spec":{"image":"` + image + `","env":{"GREETING":"hi"},"secrets":["demo"]}}`

	tk, err := p.client.DashboardTicket(ctx)
	if err != nil {
		t.Fatal(err)
	}
	base := strings.SplitN(tk.URL, "/login", 2)[0]
	b := newTab(t, chrome, base)

	t.Run("the launcher signs in and the list shows a deployment applied a moment earlier", func(t *testing.T) {
		apply(item(hello, nil))
		// The file `anycloud dashboard` opens: it forwards to the ticket
		// link, whose page moves on to the list with the cookie.
		launcher, err := dashboard.WriteLauncher(p.home, tk.URL)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		b.navigate("file://" + launcher)
		b.until("the list", `location.href === `+jsString(base+"/")+` && !!document.querySelector('#deployments tr[data-name="hello"]')`, 10*time.Second)
		t.Logf("launcher → list with the deployment: %s", time.Since(start))
		b.until("the stream to connect", `document.getElementById('live').textContent === 'live'`, 10*time.Second)
		b.until("hello Running and Ready, without a reload", rowCell("hello", "phase")+` === 'Running' && `+rowCell("hello", "readiness")+`.startsWith('True')`, 60*time.Second)
		if got := eval[string](b, rowCell("hello", "bundles")); got != "demo" {
			t.Errorf("bundles cell %q", got)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	// The canary reached the VM: what the pages must not show is there.
	oldID, env := p.runningContainer(t, docker, "hello")
	if !strings.Contains(strings.Join(env, "\n"), "DEMO_TOKEN="+canaries[0]) {
		t.Fatalf("the VM did not get the bundle value; env %v", env)
	}

	t.Run("docker kill shows as a preemption and recovery without a reload", func(t *testing.T) {
		oldVM := eval[string](b, rowCell("hello", "vm"))
		// A marker that a reload would wipe, and the moment the page shows
		// the recovery.
		eval[bool](b, `window.noReload = true; window.sawRecovery = 0;
			new MutationObserver(() => { if (!window.sawRecovery && `+rowCell("hello", "recoveries")+` === '1') window.sawRecovery = Date.now(); })
				.observe(document.querySelector('#deployments tbody'), {childList: true, subtree: true, characterData: true}); true`)
		killed := time.Now()
		if _, err := docker.ContainerKill(ctx, oldID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
			t.Fatal(err)
		}
		b.until("recoveries 1 and a new VM Running", rowCell("hello", "recoveries")+` === '1' && `+rowCell("hello", "phase")+` === 'Running' && `+rowCell("hello", "vm")+` !== `+jsString(oldVM), 30*time.Second)
		if !eval[bool](b, `window.noReload === true`) {
			t.Fatal("the page was reloaded")
		}
		seen := time.UnixMilli(int64(eval[float64](b, `window.sawRecovery`)))
		evs, err := p.client.Events(ctx, manifests.KindDeployment, "hello")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Reason == "Preempted" {
				t.Logf("docker kill → page shows the recovery: %s; preemption recorded → page shows it: %s", seen.Sub(killed), seen.Sub(e.FirstSeen))
			}
		}
		b.keep("deployments")
	})

	t.Run("the filter narrows the list as one types", func(t *testing.T) {
		// A deployment waiting for a bundle that does not exist: no VM.
		apply(item(`{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"batch","labels":{"team":"ml"}},"spec":{"image":"`+image+`","secrets":["hf"]}}`, nil))
		b.until("batch waiting for its bundle", rowCell("batch", "readiness")+` === 'False · SecretBundleNotFound'`, 30*time.Second)
		if err := chromedp.Do(b.ctx, chromedp.SendKeys(chromedp.ID("filter"), "team=ml")); err != nil {
			t.Fatal(err)
		}
		b.until("only batch shown", `[...document.querySelectorAll('#deployments tbody tr')].filter((tr) => !tr.hidden).map((tr) => tr.dataset.name).join() === 'batch'`, 5*time.Second)
		if got := eval[string](b, `location.search`); got != "?q=team%3Dml" {
			t.Errorf("the filter is not in the address: %q", got)
		}
		// The server applies the same filter to a page loaded with it.
		b.navigate("/?q=ready%3Dtrue")
		b.until("only hello shown", `[...document.querySelectorAll('#deployments tbody tr')].filter((tr) => !tr.hidden).map((tr) => tr.dataset.name).join() === 'hello'`, 5*time.Second)
		b.navigate("/")
		b.until("both rows", `document.querySelectorAll('#deployments tbody tr').length === 2`, 5*time.Second)
		t.Logf("deployments page load: %.0fms", eval[float64](b, `performance.getEntriesByType('navigation')[0].duration`))
		b.keep("deployments")
	})

	t.Run("the deployment page shows the timeline with the time each step took", func(t *testing.T) {
		b.navigate("/deployments/hello")
		b.until("the timeline", `document.querySelectorAll('#timeline tbody tr').length >= 2`, 10*time.Second)
		t.Logf("deployment page load: %.0fms", eval[float64](b, `performance.getEntriesByType('navigation')[0].duration`))
		timeline := eval[string](b, `document.getElementById('timeline').innerText`)
		for _, want := range []string{"first launch", "recovery", "preempted"} {
			if !strings.Contains(timeline, want) {
				t.Errorf("timeline lacks %q:\n%s", want, timeline)
			}
		}
		if rec := eval[string](b, `(document.getElementById('recovery-times') || {}).innerText || ''`); !strings.Contains(rec, "ms") && !strings.Contains(rec, "s") {
			t.Errorf("no recovery time shown:\n%s", rec)
		}
		b.keep("deployment")
	})

	t.Run("resubmit asks, then replaces the VM and the page follows", func(t *testing.T) {
		before := eval[string](b, `document.getElementById('vm').textContent`)
		if err := chromedp.Do(b.ctx, chromedp.Click(chromedp.ID("resubmit"))); err != nil {
			t.Fatal(err)
		}
		b.until("the confirmation", `!!document.getElementById('confirm-form')`, 10*time.Second)
		b.keep("confirm-resubmit")
		if err := chromedp.Do(b.ctx, chromedp.Click(chromedp.ID("confirm"))); err != nil {
			t.Fatal(err)
		}
		b.until("back on the deployment", `location.search === '?done=resubmitted'`, 10*time.Second)
		eval[bool](b, `window.noReload = true`)
		b.until("a new VM Running on the page, without a reload", `document.getElementById('vm').textContent !== `+jsString(before)+
			` && document.getElementById('vm').textContent !== '–' && document.getElementById('phase').textContent === 'Running' && window.noReload === true`, 60*time.Second)
		o, err := p.client.Get(ctx, manifests.KindDeployment, "hello")
		if err != nil {
			t.Fatal(err)
		}
		if o.GetMeta().Annotations[manifests.AnnotationRestartedAt] == "" {
			t.Error("no restart marker on the deployment")
		}
		b.until("the resubmit in the timeline", `document.getElementById('timeline').innerText.includes('resubmit')`, 10*time.Second)
	})

	t.Run("bundles, credentials, sources and recoveries", func(t *testing.T) {
		b.navigate("/secretbundles")
		if got := eval[string](b, `document.querySelector('#bundles tr[data-name="demo"]').innerText`); !strings.Contains(got, "DEMO_TOKEN") || !strings.Contains(got, "hello") {
			t.Errorf("bundle row %q lacks its key name or user", got)
		}
		b.keep("secretbundles")
		b.navigate("/credentials")
		if got := eval[string](b, `document.querySelector('#credentials tr[data-name="my-aws"]').innerText`); !strings.Contains(got, "us-east-1") || strings.Contains(got, "AKID") {
			t.Errorf("credentials row %q", got)
		}
		b.keep("credentials")
		b.navigate("/sources")
		if got := eval[string](b, `document.getElementById('source-message').innerText`); !strings.Contains(got, "web.yaml:5") || !strings.Contains(got, "imagee") {
			t.Errorf("source message %q lacks the file:line of the mistake", got)
		}
		b.keep("sources")
		b.navigate("/recoveries")
		if got := eval[string](b, `document.getElementById('total-recoveries').textContent`); got != "1" {
			t.Errorf("recoveries %q, want 1", got)
		}
		if n := eval[int](b, `document.querySelectorAll('svg.chart rect.reaction').length`); n != 1 {
			t.Errorf("%d reaction bars, want 1", n)
		}
		b.keep("recoveries")
	})

	t.Run("no page, response or event stream carries a secret value", func(t *testing.T) {
		for name, html := range b.pages {
			if l := leaks([]byte(html)); len(l) > 0 {
				t.Errorf("page %s shows %v", name, l)
			}
		}
		// Every route and file, and the stream, read raw with the
		// browser's own cookie (HttpOnly: only the protocol sees it).
		cookies, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/"}})
		if err != nil || len(cookies.Cookies) != 1 {
			t.Fatalf("cookies %+v, %v", cookies, err)
		}
		c := cookies.Cookies[0]
		if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict {
			t.Errorf("cookie HttpOnly=%v SameSite=%v", c.HTTPOnly, c.SameSite)
		}
		get := func(path string, limit time.Duration) []byte {
			rctx, cancel := context.WithTimeout(ctx, limit)
			defer cancel()
			req, _ := http.NewRequestWithContext(rctx, "GET", base+path, nil)
			req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body) // a stream ends at the deadline
			if resp.StatusCode != 200 {
				t.Errorf("GET %s: %s", path, resp.Status)
			}
			return body
		}
		for _, path := range []string{"/", "/deployments/hello", "/deployments/hello/live", "/secretbundles", "/credentials", "/sources",
			"/recoveries", "/deployments/hello/resubmit", "/deployments/hello/delete", "/secretbundles/demo/delete", "/static/app.js", "/static/app.css"} {
			if l := leaks(get(path, 5*time.Second)); len(l) > 0 {
				t.Errorf("GET %s carries %v", path, l)
			}
		}
		stream := get("/events", time.Second)
		if !strings.Contains(string(stream), `"name":"hello"`) {
			t.Errorf("the stream sent no rows: %s", stream)
		}
		if l := leaks(stream); len(l) > 0 {
			t.Errorf("the event stream carries %v", l)
		}
		if l := leaks([]byte(p.log.String())); len(l) > 0 {
			t.Errorf("the control plane log carries %v", l)
		}
	})

	t.Run("a cross-site POST is refused", func(t *testing.T) {
		marker := func() string {
			o, err := p.client.Get(ctx, manifests.KindDeployment, "hello")
			if err != nil {
				t.Fatal(err)
			}
			return o.GetMeta().Annotations[manifests.AnnotationRestartedAt]
		}
		before := marker()
		// Another origin on this machine (same site: the cookie goes
		// along) posts a resubmit form without the CSRF token, and with a
		// stolen one.
		token := csrfOf(b)
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, `<form id="f" method="post" action="%s/deployments/hello/resubmit"><input name="confirm" value="hello"><input name="csrf" value="%s"></form><script>document.getElementById('f').submit()</script>`,
				base, r.URL.Query().Get("csrf"))
		}))
		defer evil.Close()
		for _, q := range []string{"", "?csrf=" + token} {
			b.navigate(evil.URL + "/" + q)
			b.until("the answer to the forged form", `location.href.startsWith(`+jsString(base)+`) && document.readyState === 'complete'`, 10*time.Second)
			if body := eval[string](b, `document.body.innerText`); !strings.Contains(body, "refused") {
				t.Errorf("forged POST (%q) answered:\n%s", q, body)
			}
		}
		if got := marker(); got != before {
			t.Errorf("a forged form resubmitted the deployment: marker %q → %q", before, got)
		}
	})

	t.Run("a browser without the cookie gets nothing", func(t *testing.T) {
		if _, err := chromedp.Call(b.ctx, network.ClearBrowserCookies, struct{}{}); err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/", "/deployments/hello", "/static/app.js"} {
			b.navigate(path)
			if body := eval[string](b, `document.body.innerText`); !strings.Contains(body, "not signed in") {
				t.Errorf("%s without the cookie shows:\n%s", path, body)
			}
		}
		// The ticket is spent.
		b.navigate(tk.URL)
		if body := eval[string](b, `document.body.innerText`); !strings.Contains(body, "used already or has expired") {
			t.Errorf("a spent ticket shows:\n%s", body)
		}
	})
}

// csrfOf reads the CSRF token from a confirmation page in the tab, as a
// script of another origin cannot.
func csrfOf(b *tab) string {
	b.navigate("/deployments/hello/resubmit")
	return eval[string](b, `document.querySelector('input[name=csrf]').value`)
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
