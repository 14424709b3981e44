package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

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
	return s.logged(mux)
}

// Serve listens on the unix socket at path (mode 0600) until ctx ends.
func (s *Server) Serve(ctx context.Context, path string) error {
	ln, err := Listen(path)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	return s.ServeListener(ctx, ln)
}

// ServeListener serves on ln until ctx ends.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
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

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	// The pid lets `anycloud down` check that the process its pid file
	// names is this control plane before it signals it.
	writeJSON(w, 200, map[string]string{"version": s.Version, "cluster": s.Store.ClusterID(), "pid": strconv.Itoa(os.Getpid())})
}

func (s *Server) maintenance(w http.ResponseWriter) (state.Maintenance, bool) {
	m, ok := s.Store.(state.Maintenance)
	if !ok {
		writeStatus(w, Status{Code: 404, Reason: ReasonNotFound, Message: "this store cannot be backed up or re-keyed online"})
	}
	return m, ok
}

// backup streams a consistent copy of the store: bbolt pages, sealed
// values still sealed.
func (s *Server) backup(w http.ResponseWriter, r *http.Request) {
	m, ok := s.maintenance(w)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(200)
	n, err := m.Backup(r.Context(), w)
	if err != nil {
		// The status is sent; the client sees a short copy and its check
		// refuses it.
		s.Log.Error(err, "backup failed", "bytes", n)
		return
	}
	s.Log.Info("store backed up", "bytes", n)
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request) {
	m, ok := s.maintenance(w)
	if !ok {
		return
	}
	res, err := m.RotateKey(r.Context())
	if err != nil {
		s.writeError(w, err)
		return
	}
	s.Log.Info("cipher key rotated", "records", res.Records)
	writeJSON(w, 200, res)
}

func (s *Server) sources(w http.ResponseWriter, r *http.Request) {
	out := []SourceStatus{}
	if s.Sources != nil {
		out = s.Sources()
	}
	writeJSON(w, 200, out)
}

// dashboardTicket mints a one-time sign-in link: the socket's mode 0600 is
// what decides who may open the dashboard.
func (s *Server) dashboardTicket(w http.ResponseWriter, r *http.Request) {
	if s.Dashboard == nil {
		writeStatus(w, Status{Code: 404, Reason: ReasonNotFound, Message: "this control plane serves no dashboard"})
		return
	}
	t, err := s.Dashboard()
	if err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, 200, t)
}

func (s *Server) sealingKey(w http.ResponseWriter, r *http.Request) {
	if s.Sealing == nil {
		writeStatus(w, Status{Code: 404, Reason: ReasonNotFound, Message: "this control plane has no sealing key"})
		return
	}
	writeJSON(w, 200, SealingKey{PublicKey: s.Sealing.PublicString()})
}

func (s *Server) resource(w http.ResponseWriter, r *http.Request) (manifests.Kind, bool) {
	k, err := kindFromPlural(r.PathValue("resource"))
	if err != nil {
		writeStatus(w, Status{Code: 404, Reason: ReasonNotFound, Message: err.Error()})
		return "", false
	}
	return k, true
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	k, ok := s.resource(w, r)
	if !ok {
		return
	}
	o, err := s.Store.Get(r.Context(), k, r.PathValue("name"))
	if err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, 200, o)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	k, ok := s.resource(w, r)
	if !ok {
		return
	}
	if r.URL.Query().Get("watch") == "true" {
		s.watch(w, r, k)
		return
	}
	items, rv, err := s.Store.List(r.Context(), k)
	if err != nil {
		s.writeError(w, err)
		return
	}
	out := List{Kind: k, ResourceVersion: rv, Items: make([]json.RawMessage, 0, len(items))}
	for _, o := range items {
		b, _ := json.Marshal(o)
		out.Items = append(out.Items, b)
	}
	writeJSON(w, 200, out)
}

// watch streams the current objects as ADDED events, then every change, as
// one JSON object per line.
func (s *Server) watch(w http.ResponseWriter, r *http.Request, k manifests.Kind) {
	snapshot, ch, err := s.Store.Watch(r.Context(), k)
	if err != nil {
		s.writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(200)
	enc := json.NewEncoder(w)
	flush := func() {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	for _, o := range snapshot {
		if err := enc.Encode(state.WatchEvent{Type: state.Added, Object: o}); err != nil {
			return
		}
	}
	flush()
	for ev := range ch {
		if err := enc.Encode(ev); err != nil {
			return
		}
		flush()
	}
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	k, ok := s.resource(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if _, err := s.Store.Get(r.Context(), k, name); err != nil {
		s.writeError(w, err)
		return
	}
	evs, err := s.Store.Events(r.Context(), manifests.ObjectRef{Kind: k, Name: name})
	if err != nil {
		s.writeError(w, err)
		return
	}
	if evs == nil {
		evs = []state.Event{}
	}
	writeJSON(w, 200, evs)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	k, ok := s.resource(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	opts := state.DeleteOptions{
		Force:       q.Get("force") == "true",
		Declarative: q.Get("declarative") == "true",
		UID:         q.Get("uid"),
	}
	res, err := s.Store.Delete(r.Context(), k, r.PathValue("name"), opts)
	if err != nil {
		s.writeError(w, err)
		return
	}
	b, _ := json.Marshal(res.Object)
	kv := []any{"kind", k, "name", r.PathValue("name"), "gone", res.Deleted, "force", opts.Force}
	if l := res.Leftover; l != nil {
		kv = append(kv, "leftoverVM", l.VMID, "leftoverScope", l.Scope)
	}
	s.Log.Info("object deleted", kv...)
	writeJSON(w, 200, DeleteResponse{Deleted: res.Deleted, Object: b, Users: res.Users, Leftover: res.Leftover})
}

// logs streams the workload's log as plain text, flushed as it comes.
func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	if s.Logs == nil {
		writeStatus(w, Status{Code: 404, Reason: ReasonNotFound, Message: "this control plane runs no controller"})
		return
	}
	name := r.PathValue("name")
	if _, err := s.Store.Get(r.Context(), manifests.KindDeployment, name); err != nil {
		s.writeError(w, err)
		return
	}
	fw := &flushWriter{w: w}
	err := s.Logs(r.Context(), name, r.URL.Query().Get("follow") == "true", fw)
	if err != nil && !fw.started {
		s.writeError(w, err)
		return
	}
	if err != nil {
		s.Log.V(1).Info("log stream ended", "deployment", name, "error", err.Error())
	}
}

// ssh returns how to reach the deployment's VM: address, user, the path
// of the private key on this machine and the pinned host key.
func (s *Server) ssh(w http.ResponseWriter, r *http.Request) {
	if s.SSH == nil {
		writeStatus(w, Status{Code: 404, Reason: ReasonNotFound, Message: "this control plane runs no controller"})
		return
	}
	info, err := s.SSH(r.Context(), r.PathValue("name"))
	if err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, 200, info)
}

// flushWriter sends each write to the client at once and notes whether
// the response has begun.
type flushWriter struct {
	w       http.ResponseWriter
	started bool
}

func (f *flushWriter) Write(p []byte) (int, error) {
	if !f.started {
		f.w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		f.w.WriteHeader(200)
		f.started = true
	}
	n, err := f.w.Write(p)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}

// resubmit bumps the deployment's restart marker; the controller replaces
// the VM, resolving secrets afresh.
func (s *Server) resubmit(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	for range 5 {
		o, err := s.Store.Get(r.Context(), manifests.KindDeployment, name)
		if err != nil {
			s.writeError(w, err)
			return
		}
		m := o.GetMeta()
		if m.DeletionTimestamp != nil {
			s.writeError(w, fmt.Errorf("deployment %q is %w", name, state.ErrTerminating))
			return
		}
		if m.Annotations == nil {
			m.Annotations = map[string]string{}
		}
		m.Annotations[manifests.AnnotationRestartedAt] = s.now().UTC().Format(time.RFC3339Nano)
		o, err = s.Store.Update(r.Context(), o)
		if errors.Is(err, state.ErrConflict) {
			continue
		}
		if err != nil {
			s.writeError(w, err)
			return
		}
		writeJSON(w, 200, o)
		return
	}
	s.writeError(w, fmt.Errorf("resubmit %q: %w", name, state.ErrConflict))
}

func (s *Server) apply(w http.ResponseWriter, r *http.Request) {
	var req ApplyRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		writeStatus(w, Status{Code: 413, Reason: ReasonTooLarge, Message: fmt.Sprintf("the apply request is larger than %d MiB, the limit per request; apply the objects in several parts", maxBody>>20)})
		return
	}
	if err != nil {
		writeStatus(w, Status{Code: 400, Reason: ReasonBadRequest, Message: "read apply request: " + err.Error()})
		return
	}
	// Checked before decoding: encoding/json would turn invalid UTF-8
	// into U+FFFD without a word, changing a secret value.
	if !utf8.Valid(body) {
		writeStatus(w, Status{Code: 400, Reason: ReasonBadRequest, Message: "decode apply request: not valid UTF-8 (a secret value that is binary data must be encoded, e.g. base64)"})
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		// encoding/json's messages quote neither values nor, here, keys
		// of ours; the request's own keys are fixed.
		writeStatus(w, Status{Code: 400, Reason: ReasonBadRequest, Message: "decode apply request: " + requestMessage(err)})
		return
	}
	out, err := s.Apply(r.Context(), req)
	if err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, 200, out)
}

// Apply validates, resolves and writes an apply request in one store
// transaction (prune included). The HTTP route and the watch-dir applier
// both use it.
func (s *Server) Apply(ctx context.Context, req ApplyRequest) (*ApplyResponse, error) {
	if req.Prune && req.ApplySet == "" {
		return nil, fmt.Errorf("prune needs an apply set: %w", state.ErrInvalid)
	}
	if req.Prune && len(req.Items) == 0 && !req.AllowEmpty {
		return nil, fmt.Errorf("refusing to prune apply set %q with a source that holds no objects: that would delete all of them; pass --allow-empty if that is what you want: %w", req.ApplySet, state.ErrInvalid)
	}
	writes, warnings, errs := s.prepare(req.Items)
	if len(errs) > 0 {
		return nil, errs
	}
	for _, w := range writes {
		m := w.Object.GetMeta()
		if req.ApplySet != "" {
			if m.Annotations == nil {
				m.Annotations = map[string]string{}
			}
			m.Annotations[manifests.AnnotationApplySet] = req.ApplySet
		}
	}
	// Credentials and bundles go before the deployments that name them.
	order := make([]int, len(writes))
	for i := range order {
		order[i] = i
	}
	rank := func(k manifests.Kind) int { return slices.Index(manifests.Kinds, k) }
	slices.SortStableFunc(order, func(a, b int) int {
		return rank(writes[a].Object.GetKind()) - rank(writes[b].Object.GetKind())
	})
	sorted := make([]state.Write, len(writes))
	for i, j := range order {
		sorted[i] = writes[j]
	}
	opts := state.ApplyOptions{DryRun: req.DryRun, RequireReferences: true}
	if req.Prune {
		opts.PruneSet = req.ApplySet
	}
	results, err := s.Store.Apply(ctx, sorted, opts)
	var aerr *state.ApplyError
	if errors.As(err, &aerr) && aerr.Index < len(order) {
		// Point at the file and document the failing object came from.
		it := req.Items[order[aerr.Index]]
		fe := &manifests.FieldError{Msg: aerr.Err.Error()}
		if it.Source != nil {
			fe.File, fe.Doc, fe.Line = it.Source.File, it.Source.Doc, it.Source.Line
		}
		if errors.Is(err, state.ErrInvalid) {
			return nil, manifests.ErrorList{fe}
		}
		// Keep the kind of failure (a conflict stays a 409).
		if it.Source == nil {
			return nil, err
		}
		fe.Msg = ""
		return nil, fmt.Errorf("%s: %w", strings.TrimSuffix(fe.Error(), ": "), aerr.Err)
	}
	if err != nil {
		return nil, err
	}
	// Results in request order, then what was pruned.
	out := ApplyResponse{Results: make([]state.ApplyResult, len(writes)), Warnings: warnings}
	for i, j := range order {
		out.Results[j] = results[i]
	}
	out.Results = append(out.Results, results[len(writes):]...)
	out.Warnings = append(out.Warnings, s.missingBundleWarnings(ctx, writes)...)
	if req.ApplySet == "" {
		for _, res := range out.Results {
			if res.ApplySet != "" && res.Action == state.ActionConfigured {
				out.Warnings = append(out.Warnings, fmt.Sprintf("%s/%s belongs to apply set %s (applied from a source, such as a Git directory): it stays in that set, so the next apply of that source writes it again (its values too, for a bundle) and a prune removes it when the source no longer holds it; change it in the source to make this last",
					strings.ToLower(string(res.Ref.Kind)), res.Ref.Name, res.ApplySet))
			}
		}
	}
	if !req.DryRun {
		for _, res := range out.Results {
			if res.Action != state.ActionUnchanged {
				s.Log.Info("object applied", "kind", res.Ref.Kind, "name", res.Ref.Name, "action", res.Action, "generation", res.Generation, "applySet", req.ApplySet)
			}
		}
	}
	return &out, nil
}

// prepare decodes, validates and resolves every item, reporting every
// problem at once.
func (s *Server) prepare(items []ApplyItem) ([]state.Write, []string, manifests.ErrorList) {
	var (
		writes   []state.Write
		warnings []string
		errs     manifests.ErrorList
	)
	for i, it := range items {
		src := it.Source
		if src == nil {
			src = &Source{Doc: i + 1}
		}
		fail := func(field, msg string, obj string) {
			errs = append(errs, &manifests.FieldError{File: src.File, Doc: src.Doc, Line: src.Line, Field: field, Object: obj, Msg: msg})
		}
		// As strict as YAML decoding: unknown fields, keys set twice and
		// wrong types are refused, not dropped.
		o, err := manifests.DecodeJSON(it.Object)
		var fe *manifests.FieldError
		if errors.As(err, &fe) {
			fail(fe.Field, fe.Msg, "")
			continue
		}
		if err != nil {
			fail("", err.Error(), "")
			continue
		}
		id := fmt.Sprintf("%s/%s", o.GetKind(), o.GetMeta().Name)
		manifests.Default(o)
		for _, e := range manifests.Validate(o) {
			e.File, e.Doc, e.Object = src.File, src.Doc, id
			if e.Line == 0 {
				e.Line = src.Line
			}
			errs = append(errs, e)
		}
		values, verrs := s.resolveSecrets(o, it.Secrets)
		for _, e := range verrs {
			fail(e.Field, e.Msg, id)
		}
		if d, ok := o.(*manifests.Deployment); ok {
			if keys := manifests.SensitiveEnvKeys(d.Spec.Env); len(keys) > 0 {
				warnings = append(warnings, fmt.Sprintf("deployment %s: env %v look(s) sensitive; keep secrets in a bundle: anycloud secrets new NAME KEY=VALUE, then list it in spec.secrets", d.Metadata.Name, keys))
			}
		}
		writes = append(writes, state.Write{Object: o, Secrets: values})
	}
	return writes, warnings, errs
}

// resolveSecrets gathers the values of a bundle (client-resolved fromEnv
// and stringData, plus spec.sealed opened here) or credentials.
func (s *Server) resolveSecrets(o manifests.Object, given map[string]string) (map[string]string, manifests.ErrorList) {
	var errs manifests.ErrorList
	fail := func(field, format string, args ...any) {
		errs = append(errs, &manifests.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	switch o := o.(type) {
	case *manifests.Deployment:
		if len(given) > 0 {
			fail("spec", "a Deployment carries no secret values; put them in a SecretBundle")
		}
		return nil, errs
	case *manifests.Credentials:
		if given == nil {
			return nil, nil
		}
		for k := range given {
			if k != "secretAccessKey" {
				fail("spec.aws", "unexpected secret field %s", manifests.KeyName(k))
			}
		}
		if o.Spec.AWS == nil || o.Spec.AWS.AccessKeyID == "" {
			fail("spec.aws.accessKeyId", "required with a secret access key")
		}
		for _, p := range manifests.CheckSecrets(fmt.Sprintf("credentials %q", o.Metadata.Name), given) {
			fail("spec.aws", "%s", p)
		}
		return given, errs
	case *manifests.SecretBundle:
		values := make(map[string]string, len(given)+len(o.Spec.StringData)+len(o.Spec.Sealed))
		for k, v := range given {
			values[k] = v
		}
		for k, v := range o.Spec.StringData {
			values[k] = v
		}
		for _, k := range slices.Sorted(maps.Keys(o.Spec.Sealed)) {
			if s.Sealing == nil {
				fail("spec.sealed."+k, "this control plane has no sealing key")
				continue
			}
			v, err := s.Sealing.OpenSealed(o.Metadata.Name, k, o.Spec.Sealed[k])
			if err != nil {
				fail("spec.sealed."+k, "%v", err)
				continue
			}
			values[k] = string(v)
		}
		for _, k := range o.Spec.FromEnv {
			if _, ok := values[k]; !ok {
				fail("spec.fromEnv", "%s was not resolved: it is read from the environment of the process that applies", k)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(values)) {
			if !manifests.ValidEnvKey(k) {
				fail("spec", "a key is not a valid environment variable name (not shown, as it may be a value)")
			}
		}
		if len(values) == 0 {
			fail("spec", "a bundle needs at least one value")
		}
		for _, p := range manifests.CheckSecrets(fmt.Sprintf("secret bundle %q", o.Metadata.Name), values) {
			fail("spec", "%s", p)
		}
		return values, errs
	}
	return nil, errs
}

// missingBundleWarnings tells the user about bundles that do not exist:
// the deployment is accepted and waits for them (DESIGN §3).
func (s *Server) missingBundleWarnings(ctx context.Context, writes []state.Write) []string {
	inApply := map[string]bool{}
	for _, w := range writes {
		if w.Object.GetKind() == manifests.KindSecretBundle {
			inApply[w.Object.GetMeta().Name] = true
		}
	}
	var out []string
	for _, w := range writes {
		d, ok := w.Object.(*manifests.Deployment)
		if !ok {
			continue
		}
		for _, b := range d.Spec.Secrets {
			if inApply[b] {
				continue
			}
			if _, err := s.Store.Get(ctx, manifests.KindSecretBundle, b); errors.Is(err, state.ErrNotFound) {
				out = append(out, fmt.Sprintf("deployment %s: secret bundle %q does not exist yet; no VM is created until it does", d.Metadata.Name, b))
			}
		}
	}
	return out
}

// requestMessage rewords a decode error of the request envelope without
// quoting what was sent.
func requestMessage(err error) string {
	var (
		te *json.UnmarshalTypeError
		se *json.SyntaxError
	)
	switch {
	case errors.As(err, &te):
		return fmt.Sprintf("field %s: wrong type (a JSON %s)", te.Field, te.Value)
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d", se.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "an unknown field (a request has items, dryRun, applySet, prune and allowEmpty; an item has object, secrets and source)"
	}
	return "malformed JSON"
}

func invalid(errs manifests.ErrorList) Status {
	return Status{Code: 422, Reason: ReasonInvalid, Message: errs.Error(), Details: &StatusDetails{Errors: errs}}
}

// writeError maps store errors to statuses.
func (s *Server) writeError(w http.ResponseWriter, err error) {
	var (
		inUse *state.InUseError
		list  manifests.ErrorList
	)
	switch {
	case errors.As(err, &inUse):
		writeStatus(w, Status{Code: 409, Reason: ReasonInUse, Message: err.Error(), Details: &StatusDetails{Users: inUse.Users}})
	case errors.As(err, &list):
		writeStatus(w, invalid(list))
	case errors.Is(err, state.ErrInUse):
		writeStatus(w, Status{Code: 409, Reason: ReasonInUse, Message: err.Error()})
	case errors.Is(err, state.ErrNotFound):
		writeStatus(w, Status{Code: 404, Reason: ReasonNotFound, Message: err.Error()})
	case errors.Is(err, state.ErrConflict):
		writeStatus(w, Status{Code: 409, Reason: ReasonConflict, Message: err.Error()})
	case errors.Is(err, state.ErrTerminating):
		writeStatus(w, Status{Code: 409, Reason: ReasonTerminating, Message: err.Error()})
	case errors.Is(err, state.ErrInvalid):
		writeStatus(w, Status{Code: 422, Reason: ReasonInvalid, Message: err.Error()})
	case errors.Is(err, state.ErrProtected):
		writeStatus(w, Status{Code: 403, Reason: ReasonForbidden, Message: err.Error()})
	default:
		s.Log.Error(err, "request failed")
		writeStatus(w, Status{Code: 500, Reason: ReasonInternal, Message: err.Error()})
	}
}

func writeStatus(w http.ResponseWriter, st Status) {
	writeJSON(w, st.Code, st)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
