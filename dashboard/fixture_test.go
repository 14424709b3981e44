package dashboard_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/dashboard"
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// fixture is a real store (a bbolt file), the real API server on its unix
// socket and the dashboard acting through an API client, as the control
// plane wires them, without a controller: these tests look at the web
// side alone.
type fixture struct {
	t       *testing.T
	store   *state.Bolt
	client  *api.Client
	dash    *dashboard.Server
	base    string
	sources func() []api.SourceStatus
	// mu guards sources, which a test may set after the start.
	mu sync.Mutex
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	home := testenv.ShortTempDir(t)
	store, err := state.OpenBolt(home, state.BoltOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, store: store}
	sock := filepath.Join(home, api.SocketFile)
	ln, err := api.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	f.client = api.NewClient(sock)
	srv := &api.Server{Store: store, Log: logr.Discard(), Version: "test"}
	f.dash, err = dashboard.New(dashboard.Options{
		Store: store, Actions: f.client, Log: logr.Discard(), Cluster: store.ClusterID(), Version: "test",
		Sources: func() []api.SourceStatus {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.sources == nil {
				return nil
			}
			return f.sources()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.dash.Listen(); err != nil {
		t.Fatal(err)
	}
	f.base = f.dash.URL()
	srv.Dashboard = f.dash.Ticket
	ctx, cancel := context.WithCancel(context.Background())
	apiDone, dashDone := make(chan error, 1), make(chan error, 1)
	go func() { apiDone <- srv.ServeListener(ctx, ln) }()
	go func() { dashDone <- f.dash.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		for _, ch := range []chan error{apiDone, dashDone} {
			if err := <-ch; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
		store.Close()
	})
	return f
}

// canaries are recognisable secret values; none may appear in anything
// the dashboard sends.
var canaries = []string{"CANARY-dash-bundle-5f1e2d3c", "CANARY-dash-awskey-9a8b7c6d", "CANARY-dash-overwrite-1234abcd"}

// leaks returns the canaries found in data, raw or base64 or hex encoded.
func leaks(data []byte) []string {
	var found []string
	for _, v := range canaries {
		for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v)), base64.RawURLEncoding.EncodeToString([]byte(v)), hex.EncodeToString([]byte(v))} {
			if bytes.Contains(data, []byte(form)) {
				found = append(found, v)
				break
			}
		}
	}
	return found
}

func (f *fixture) apply(items ...api.ApplyItem) {
	f.t.Helper()
	if _, err := f.client.Apply(context.Background(), api.ApplyRequest{Items: items}); err != nil {
		f.t.Fatalf("apply: %v", err)
	}
}

func item(obj string, secrets map[string]string) api.ApplyItem {
	return api.ApplyItem{Object: json.RawMessage(obj), Secrets: secrets}
}

func deploymentJSON(name string, bundles ...string) string {
	b, _ := json.Marshal(bundles)
	return `{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"` + name + `","labels":{"team":"web"}},"spec":{"image":"anycloud-demo:test","env":{"GREETING":"hi"},"secrets":` + string(b) + `}}`
}

func bundleJSON(name string) string {
	return `{"apiVersion":"anycloud.dev/v1","kind":"SecretBundle","metadata":{"name":"` + name + `"},"spec":{}}`
}

// browser is an HTTP client that keeps cookies, as a browser would.
type browser struct {
	f  *fixture
	hc *http.Client
}

// anonymous has no session.
func (f *fixture) anonymous() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{f: f, hc: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// signIn mints a ticket over the API socket and redeems it.
func (f *fixture) signIn() *browser {
	f.t.Helper()
	b := f.anonymous()
	tk, err := f.client.DashboardTicket(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	resp, body := b.get(tk.URL)
	if resp.StatusCode != 200 {
		f.t.Fatalf("sign in: %s\n%s", resp.Status, body)
	}
	return b
}

func (b *browser) do(req *http.Request) (*http.Response, string) {
	b.f.t.Helper()
	resp, err := b.hc.Do(req)
	if err != nil {
		b.f.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func (b *browser) get(u string) (*http.Response, string) {
	b.f.t.Helper()
	if strings.HasPrefix(u, "/") {
		u = b.f.base + u
	}
	req, _ := http.NewRequest("GET", u, nil)
	return b.do(req)
}

// post sends a form as a same-origin page would (Origin and fetch
// metadata); headers may change them.
func (b *browser) post(path string, form url.Values, headers map[string]string) (*http.Response, string) {
	b.f.t.Helper()
	req, _ := http.NewRequest("POST", b.f.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", b.f.base)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	return b.do(req)
}

var reCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the token from a confirmation page, as the form would.
func (b *browser) csrf(path string) string {
	b.f.t.Helper()
	resp, body := b.get(path)
	m := reCSRF.FindStringSubmatch(body)
	if resp.StatusCode != 200 || m == nil {
		b.f.t.Fatalf("GET %s: %s, no CSRF token in\n%s", path, resp.Status, body)
	}
	return m[1]
}

// sse is an open event stream.
type sse struct {
	events chan sseEvent
	cancel context.CancelFunc
	raw    *bytes.Buffer
	mu     *sync.Mutex
}

type sseEvent struct {
	name string
	data string
	at   time.Time
}

func (b *browser) stream() *sse {
	b.f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", b.f.base+"/events", nil)
	hc := &http.Client{Jar: b.hc.Jar}
	resp, err := hc.Do(req)
	if err != nil {
		b.f.t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b.f.t.Fatalf("GET /events: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	s := &sse{events: make(chan sseEvent, 1024), cancel: cancel, raw: &bytes.Buffer{}, mu: &sync.Mutex{}}
	go func() {
		defer resp.Body.Close()
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.raw.WriteString(line + "\n")
			s.mu.Unlock()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[len("data: "):]
			case line == "" && ev.name != "":
				ev.at = time.Now()
				s.events <- ev
				ev = sseEvent{}
			}
		}
	}()
	b.f.t.Cleanup(cancel)
	return s
}

// next waits for the next event named name whose data contains substr.
func (s *sse) next(t *testing.T, name, substr string) sseEvent {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatalf("the stream ended while waiting for %s %q", name, substr)
			}
			if ev.name == name && strings.Contains(ev.data, substr) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event with %q within 10s", name, substr)
		}
	}
}

func (s *sse) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.raw.Bytes())
}

func (f *fixture) deployment(name string) *manifests.Deployment {
	f.t.Helper()
	o, err := f.store.Get(context.Background(), manifests.KindDeployment, name)
	if err != nil {
		f.t.Fatal(err)
	}
	return o.(*manifests.Deployment)
}
