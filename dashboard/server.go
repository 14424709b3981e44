package dashboard

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// Reader is what the dashboard reads: the store's read methods and
// nothing else. OpenSecrets is not among them, so no page can reach a
// secret value; *state.Bolt (any state.Store) satisfies it.
type Reader interface {
	Get(ctx context.Context, kind manifests.Kind, name string) (manifests.Object, error)
	List(ctx context.Context, kind manifests.Kind) ([]manifests.Object, string, error)
	Watch(ctx context.Context, kind manifests.Kind) ([]manifests.Object, <-chan state.WatchEvent, error)
	Events(ctx context.Context, ref manifests.ObjectRef) ([]state.Event, error)
	// Users lists the deployments that use a bundle or credentials
	// (state.ShowUsers).
	Users(ctx context.Context, kind manifests.Kind, name string) ([]manifests.ObjectRef, error)
}

// Actions are the dashboard's only writes, with *api.Client's signatures:
// a resubmit or delete from the browser is the same API request that
// `anycloud resubmit` and `anycloud delete` make, not a second way to do
// them.
type Actions interface {
	Resubmit(ctx context.Context, name string) (*manifests.Deployment, error)
	Delete(ctx context.Context, k manifests.Kind, name string, opts state.DeleteOptions) (bool, error)
}

// Options configure a Server.
type Options struct {
	// Addr is where to listen: a loopback address; "127.0.0.1:0" (a free
	// port) when empty.
	Addr    string
	Store   Reader
	Actions Actions
	// Sources reports the directories the control plane applies itself;
	// nil when it applies none.
	Sources func() []api.SourceStatus
	// Cluster and Version are shown in the header.
	Cluster, Version string
	Log              logr.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// DefaultAddr listens on a free loopback port.
const DefaultAddr = "127.0.0.1:0"

//go:embed templates static
var assets embed.FS

// Server serves the dashboard. Make one with New, then Listen and Serve.
type Server struct {
	opts  Options
	auth  *auth
	hub   *hub
	pages *pages
	// base ends every stream and watch when Serve returns.
	base context.Context
	stop context.CancelFunc

	ln     net.Listener
	origin string // http://127.0.0.1:PORT
	hosts  map[string]bool
	cookie string // the session cookie's name, per port
}

// New checks the options and parses the pages.
func New(opts Options) (*Server, error) {
	if opts.Store == nil || opts.Actions == nil {
		return nil, errors.New("dashboard: a store and actions are required")
	}
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	pg, err := parsePages()
	if err != nil {
		return nil, err
	}
	base, stop := context.WithCancel(context.Background())
	return &Server{
		opts: opts, auth: newAuth(opts.Now), pages: pg, base: base, stop: stop,
		hub: newHub(base, opts.Store, opts.Log.WithName("hub")),
	}, nil
}

// Listen opens the listener. The address must be a loopback one: the
// dashboard is for the person at this machine.
func (s *Server) Listen() error {
	host, _, err := net.SplitHostPort(s.opts.Addr)
	if err != nil {
		return fmt.Errorf("dashboard address %q: %w", s.opts.Addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("dashboard address %q: must be a loopback IP address such as 127.0.0.1", s.opts.Addr)
	}
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("dashboard: listen on %s: %w", s.opts.Addr, err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	s.ln = ln
	hostport := net.JoinHostPort(addr.IP.String(), strconv.Itoa(addr.Port))
	s.origin = "http://" + hostport
	s.hosts = map[string]bool{hostport: true}
	if addr.IP.To4() != nil {
		s.hosts[net.JoinHostPort("localhost", strconv.Itoa(addr.Port))] = true
	}
	// Cookies are not kept apart by port: the name is, so that two
	// control planes (two homes) on one machine do not sign each other
	// out.
	s.cookie = "anycloud-session-" + strconv.Itoa(addr.Port)
	return nil
}

// URL is the dashboard's address, http://127.0.0.1:PORT; empty before
// Listen.
func (s *Server) URL() string { return s.origin }

// Ticket mints a one-time sign-in link. The API serves it to clients of
// its socket.
func (s *Server) Ticket() (api.DashboardTicket, error) {
	if s.ln == nil {
		return api.DashboardTicket{}, errors.New("dashboard: not listening")
	}
	t, exp := s.auth.mintTicket()
	return api.DashboardTicket{URL: s.origin + "/login?ticket=" + t, ExpiresAt: exp.UTC()}, nil
}

// Serve serves on the listener until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		return errors.New("dashboard: Serve before Listen")
	}
	defer s.stop()
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return s.base },
	}
	go func() {
		<-ctx.Done()
		s.stop() // ends event streams, which Shutdown would wait for
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	err := srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Handler is the dashboard's routes behind its checks: a known Host
// header (no DNS rebinding), security headers, a session for everything
// but /login, and for every POST a same-origin browser and the session's
// CSRF token.
func (s *Server) Handler() http.Handler {
	static, _ := fs.Sub(assets, "static")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", s.login)
	authed := http.NewServeMux()
	authed.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	authed.HandleFunc("GET /{$}", s.deploymentsPage)
	authed.HandleFunc("GET /events", s.events)
	authed.HandleFunc("GET /deployments/{name}", s.deploymentPage)
	authed.HandleFunc("GET /deployments/{name}/live", s.deploymentLive)
	authed.HandleFunc("GET /secretbundles", s.bundlesPage)
	authed.HandleFunc("GET /credentials", s.credentialsPage)
	authed.HandleFunc("GET /sources", s.sourcesPage)
	authed.HandleFunc("GET /recoveries", s.recoveriesPage)
	authed.HandleFunc("GET /deployments/{name}/resubmit", s.confirmResubmit)
	authed.HandleFunc("POST /deployments/{name}/resubmit", s.doResubmit)
	for _, k := range manifests.Kinds {
		res := manifests.Plural(k)
		authed.HandleFunc("GET /"+res+"/{name}/delete", func(w http.ResponseWriter, r *http.Request) { s.confirmDelete(w, r, k) })
		authed.HandleFunc("POST /"+res+"/{name}/delete", func(w http.ResponseWriter, r *http.Request) { s.doDelete(w, r, k) })
	}
	mux.Handle("/", s.requireSession(authed))
	return s.logged(s.checkHost(secureHeaders(mux)))
}

// checkHost refuses a Host header other than our own address: a page on
// another name that resolves to 127.0.0.1 (DNS rebinding) gets nothing.
func (s *Server) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hosts[r.Host] {
			http.Error(w, "unknown host; open the dashboard with `anycloud dashboard`", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// csp allows only the dashboard's own files: no inline script or style,
// no framing, forms that post only here.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

type sessionKey struct{}

// requireSession lets through only requests that carry a live session
// cookie, static files and event streams included.
func (s *Server) requireSession(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
	}))
	protected := cop.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var sess *session
		if c, err := r.Cookie(s.cookie); err == nil {
			sess = s.auth.lookup(c.Value)
		}
		if sess == nil {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintln(w, "not signed in: run `anycloud dashboard` to open the dashboard")
			return
		}
		if !sameOriginFetch(r) {
			http.Error(w, "cross-origin request refused", http.StatusForbidden)
			return
		}
		protected.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)))
	})
}

// sameOriginFetch is a fetch-metadata resource isolation policy: a
// request from another origin is let through only as a top-level
// navigation (a link followed to the dashboard); another site's script,
// image, frame or fetch gets nothing. A browser that sends no fetch
// metadata is judged by the cookie and the CSRF token alone.
func sameOriginFetch(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
		return true
	}
	return r.Method == http.MethodGet && r.Header.Get("Sec-Fetch-Mode") == "navigate" && r.Header.Get("Sec-Fetch-Dest") == "document"
}

func sessionOf(r *http.Request) *session {
	s, _ := r.Context().Value(sessionKey{}).(*session)
	return s
}

// login redeems a ticket for a session cookie. It answers with a page
// that moves on to the list itself: a navigation from our own page is
// same-site, so the SameSite=Strict cookie goes with it even when the
// ticket link was opened from a terminal or a local file.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	cookie, ok := s.auth.redeem(r.URL.Query().Get("ticket"))
	if !ok {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintln(w, "this sign-in link was used already or has expired: run `anycloud dashboard` for a new one")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: s.cookie, Value: cookie, Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode,
		MaxAge: int(SessionTTL / time.Second),
	})
	s.opts.Log.Info("dashboard session opened")
	s.render(w, r, http.StatusOK, "login", page{Title: "Signed in"})
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// logged logs method, path and status at V(1), never a query (a ticket
// travels in one) and never a body.
func (s *Server) logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.opts.Log.Error(fmt.Errorf("panic: %v", p), "dashboard request panicked", "method", r.Method, "path", r.URL.Path)
				http.Error(rec, "internal error; see the control plane log", http.StatusInternalServerError)
				return
			}
			s.opts.Log.V(1).Info("dashboard request", "method", r.Method, "path", r.URL.Path, "status", rec.code, "duration", time.Since(start).String())
		}()
		next.ServeHTTP(rec, r)
	})
}
