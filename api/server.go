package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/seal"
	"github.com/anycloud/anycloud/state"
)

// maxBody bounds a request body (manifests.MaxRequestBytes): 10,000
// manifests fit, a 200 MB value does not reach memory.
const maxBody = manifests.MaxRequestBytes

// Server serves the local API over HTTP. It holds no state of its own.
type Server struct {
	Store state.Store
	// Sealing opens values made by `anycloud secrets seal`.
	Sealing *seal.BoxKey
	Log     logr.Logger
	// Version is reported by /v1/version.
	Version string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Logs streams a deployment's workload log; nil when no controller
	// runs.
	Logs func(ctx context.Context, name string, follow bool, w io.Writer) error
	// SSH says how to reach a deployment's VM; nil when no controller runs.
	SSH func(ctx context.Context, name string) (provider.SSHInfo, error)
	// Sources reports the directories the control plane applies itself.
	Sources func() []SourceStatus
	// Dashboard mints a sign-in link to the dashboard; nil when none is
	// served.
	Dashboard func() (DashboardTicket, error)
	// Metrics serves /metrics (Prometheus); nil serves none.
	Metrics http.Handler
	// ControlPlane says who leads a shared store; nil: a single control
	// plane on bbolt.
	ControlPlane func(context.Context) (ControlPlaneStatus, error)
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", s.version)
	mux.HandleFunc("POST /v1/apply", s.apply)
	mux.HandleFunc("GET /v1/sealing-key", s.sealingKey)
	mux.HandleFunc("GET /v1/sources", s.sources)
	mux.HandleFunc("GET /v1/controlplane", s.controlPlane)
	mux.HandleFunc("POST /v1/users", s.addUser)
	mux.HandleFunc("GET /v1/users", s.listUsers)
	mux.HandleFunc("DELETE /v1/users/{name}", s.removeUser)
	mux.HandleFunc("POST /v1/dashboard/tickets", s.dashboardTicket)
	mux.HandleFunc("GET /v1/{resource}", s.list)
	mux.HandleFunc("GET /v1/{resource}/{name}", s.get)
	mux.HandleFunc("GET /v1/{resource}/{name}/events", s.events)
	mux.HandleFunc("DELETE /v1/{resource}/{name}", s.delete)
	mux.HandleFunc("POST /v1/deployments/{name}/resubmit", s.resubmit)
	mux.HandleFunc("GET /v1/deployments/{name}/logs", s.logs)
	mux.HandleFunc("GET /v1/deployments/{name}/ssh", s.ssh)
	mux.HandleFunc("GET /v1/backup", s.backup)
	mux.HandleFunc("POST /v1/keys/rotate", s.rotateKey)
	if s.Metrics != nil {
		mux.Handle("GET /metrics", s.Metrics)
	}
	return s.logged(mux)
}

// ServeListener serves on ln until ctx ends.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	return serve(ctx, ln, s.Handler())
}

// ServeRemote serves a TCP listener (ListenRemote) until ctx ends: every
// request needs a user's bearer token (RemoteHandler).
func (s *Server) ServeRemote(ctx context.Context, ln net.Listener) error {
	return serve(ctx, ln, s.RemoteHandler())
}

func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Listen opens the API socket with mode 0600. A stale socket left by a
// killed control plane is replaced; a live one is an error.
func Listen(path string) (net.Listener, error) {
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("a control plane is already serving %s", path)
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
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

// logged logs each request's method, path and status; never a body.
func (s *Server) logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		defer func() {
			if p := recover(); p != nil {
				s.Log.Error(fmt.Errorf("panic: %v", p), "request panicked", "method", r.Method, "path", r.URL.Path)
				writeStatus(rec, Status{Code: 500, Reason: ReasonInternal, Message: "internal error; see the control plane log"})
			}
			s.Log.V(1).Info("request", "method", r.Method, "path", r.URL.Path, "status", rec.code, "duration", time.Since(start).String())
		}()
		next.ServeHTTP(rec, r)
	})
}
