package dashboard

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// page is what every template gets.
type page struct {
	Title string
	// Nav is the header tab to mark current.
	Nav string
	// Live names the deployment whose page refreshes itself, if any.
	Live string
	// CSRF goes into every form.
	CSRF             string
	Flash            string
	Cluster, Version string
	Now              time.Time
	Data             any
}

// pages are the parsed templates, one set per page: each defines
// "content" inside the shared layout.
type pages struct {
	sets map[string]*template.Template
}

var funcs = template.FuncMap{
	"age":      age,
	"dur":      orDash,
	"stamp":    func(t time.Time) string { return stamp(t) },
	"iso":      func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
	"join":     strings.Join,
	"phase":    func(p string) string { return strings.ToLower(p) },
	"fileLine": fileLine,
	"plural":   manifests.Plural,
	"users": func(refs []manifests.ObjectRef) []string {
		out := make([]string, len(refs))
		for i, r := range refs {
			out[i] = r.Name
		}
		return out
	},
	"sortedKeys": func(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) },
	"versions": func(m map[string]int64) string {
		var out []string
		for _, k := range slices.Sorted(maps.Keys(m)) {
			out = append(out, fmt.Sprintf("%s@%d", k, m[k]))
		}
		return strings.Join(out, ", ")
	},
}

func parsePages() (*pages, error) {
	names, err := fs.Glob(assets, "templates/page_*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{sets: map[string]*template.Template{}}
	for _, n := range names {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/parts.html", n)
		if err != nil {
			return nil, fmt.Errorf("dashboard: parse %s: %w", n, err)
		}
		key := strings.TrimSuffix(strings.TrimPrefix(n, "templates/page_"), ".html")
		p.sets[key] = t
	}
	return p, nil
}

// render writes a whole page, or with the "live" template only the part
// that a deployment page refreshes. It renders into a buffer first, so a
// template error is a clean 500 and not half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, name string, p page) {
	s.renderTemplate(w, r, code, name, "layout", p)
}

func (s *Server) renderTemplate(w http.ResponseWriter, r *http.Request, code int, set, tmpl string, p page) {
	p.Cluster, p.Version, p.Now = s.opts.Cluster, s.opts.Version, s.opts.Now()
	if sess := sessionOf(r); sess != nil {
		p.CSRF = sess.csrf
	}
	t := s.pages.sets[set]
	var buf bytes.Buffer
	if t == nil {
		s.opts.Log.Error(fmt.Errorf("no page %q", set), "render dashboard page")
		http.Error(w, "internal error; see the control plane log", 500)
		return
	}
	if err := t.ExecuteTemplate(&buf, tmpl, p); err != nil {
		s.opts.Log.Error(err, "render dashboard page", "page", set)
		http.Error(w, "internal error; see the control plane log", 500)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// fail shows an error page. Store and API errors never carry a secret
// value (their contract), so their messages are shown as they are.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *api.Error
	code := api.StatusFor(err).Code
	if errors.As(err, &ae) && ae.Status.Code >= 400 {
		code = ae.Status.Code
	}
	if code == http.StatusInternalServerError {
		s.opts.Log.Error(err, "dashboard request failed", "path", r.URL.Path)
	}
	s.render(w, r, code, "error", page{Title: http.StatusText(code), Data: err.Error()})
}

// deploymentsPage is the list. Rows are rendered here, then kept current
// by the page's script from the event stream.
func (s *Server) deploymentsPage(w http.ResponseWriter, r *http.Request) {
	objs, _, err := s.opts.Store.List(r.Context(), manifests.KindDeployment)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query().Get("q")
	type data struct {
		Rows   []Row
		Total  int
		Filter string
	}
	d := data{Total: len(objs), Filter: q}
	for _, o := range objs {
		if row := RowOf(o.(*manifests.Deployment)); row.matches(q) {
			d.Rows = append(d.Rows, row)
		}
	}
	s.render(w, r, 200, "deployments", page{Title: "Deployments", Nav: "deployments", Data: d})
}

// detail is one deployment's page.
type detail struct {
	D          *manifests.Deployment
	Row        Row
	Spec       string
	Events     []state.Event
	Spans      []Span
	Recoveries []Recovery
	Chart      Chart
	Gone       bool
}

func (s *Server) loadDetail(r *http.Request) (*detail, error) {
	name := r.PathValue("name")
	o, err := s.opts.Store.Get(r.Context(), manifests.KindDeployment, name)
	if err != nil {
		return nil, err
	}
	d := o.(*manifests.Deployment)
	evs, err := s.opts.Store.Events(r.Context(), manifests.Ref(d))
	if err != nil {
		return nil, err
	}
	spec, err := yaml.Marshal(d.Spec)
	if err != nil {
		return nil, fmt.Errorf("encode the spec of %s: %w", name, err)
	}
	spans, recs := Timeline(d, evs)
	slices.Reverse(evs) // newest first, as people read them
	return &detail{D: d, Row: RowOf(d), Spec: string(spec), Events: evs, Spans: spans, Recoveries: recs,
		Chart: timelineChart(spans, s.opts.Now())}, nil
}

func (s *Server) deploymentPage(w http.ResponseWriter, r *http.Request) {
	d, err := s.loadDetail(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	flash := map[string]string{
		"resubmitted": "Resubmitted: the VM is being replaced; the new one gets freshly resolved secrets.",
		"terminating": "Deleting: the deployment goes once its VM is terminated.",
	}[r.URL.Query().Get("done")]
	s.render(w, r, 200, "deployment", page{Title: d.D.Metadata.Name, Nav: "deployments", Live: d.D.Metadata.Name, Flash: flash, Data: d})
}

// deploymentLive is the part of a deployment's page that its script
// swaps in when the deployment changes.
func (s *Server) deploymentLive(w http.ResponseWriter, r *http.Request) {
	d, err := s.loadDetail(r)
	if errors.Is(err, state.ErrNotFound) {
		s.renderTemplate(w, r, 200, "deployment", "live", page{Data: &detail{Gone: true}})
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.renderTemplate(w, r, 200, "deployment", "live", page{Live: d.D.Metadata.Name, Data: d})
}

func (s *Server) bundlesPage(w http.ResponseWriter, r *http.Request) {
	objs, _, err := s.opts.Store.List(r.Context(), manifests.KindSecretBundle)
	if err == nil {
		err = state.ShowUsers(r.Context(), s.opts.Store, objs...)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var bs []*manifests.SecretBundle
	for _, o := range objs {
		bs = append(bs, o.(*manifests.SecretBundle))
	}
	s.render(w, r, 200, "bundles", page{Title: "Secret bundles", Nav: "secretbundles", Data: bs})
}

// credRow is what the credentials page shows: never a key, not even the
// access key id.
type credRow struct {
	Name, Provider, Region, Auth, Endpoint, Phase string
	Users                                         []manifests.ObjectRef
	Created                                       time.Time
	Builtin                                       bool
}

func (s *Server) credentialsPage(w http.ResponseWriter, r *http.Request) {
	objs, _, err := s.opts.Store.List(r.Context(), manifests.KindCredentials)
	if err == nil {
		err = state.ShowUsers(r.Context(), s.opts.Store, objs...)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var rows []credRow
	for _, o := range objs {
		c := o.(*manifests.Credentials)
		row := credRow{Name: c.Metadata.Name, Provider: c.Spec.Provider, Phase: c.Status.Phase, Users: c.Status.UsedBy,
			Created: c.Metadata.CreationTimestamp, Builtin: c.Metadata.Name == manifests.LocalCredentials, Auth: "this machine's Docker engine"}
		if a := c.Spec.AWS; a != nil {
			row.Region, row.Endpoint = a.Region, a.EndpointURL
			switch {
			case a.Profile != "":
				row.Auth = "profile " + a.Profile
			case a.AccessKeyID != "":
				row.Auth = "static keys (stored sealed)"
			default:
				row.Auth = "the default AWS credential chain"
			}
		}
		rows = append(rows, row)
	}
	s.render(w, r, 200, "credentials", page{Title: "Credentials", Nav: "credentials", Data: rows})
}

// sourceView is a watched directory with its recent history.
type sourceView struct {
	api.SourceStatus
	Events []state.Event
}

func (s *Server) sourcesPage(w http.ResponseWriter, r *http.Request) {
	var views []sourceView
	if s.opts.Sources != nil {
		for _, src := range s.opts.Sources() {
			evs, err := s.opts.Store.Events(r.Context(), manifests.ObjectRef{Kind: "ApplySet", Name: src.ApplySet})
			if err != nil {
				s.fail(w, r, err)
				return
			}
			slices.Reverse(evs)
			views = append(views, sourceView{SourceStatus: src, Events: evs})
		}
	}
	s.render(w, r, 200, "sources", page{Title: "GitOps sources", Nav: "sources", Data: views})
}

// recoveriesPage charts recoveries and how fast they were. It reads the
// events of the deployments that were ever recovered, when the page is
// shown: a cost paid by the person looking, not by the controller.
func (s *Server) recoveriesPage(w http.ResponseWriter, r *http.Request) {
	objs, _, err := s.opts.Store.List(r.Context(), manifests.KindDeployment)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var (
		recs   []Recovery
		counts []Count
	)
	for _, o := range objs {
		d := o.(*manifests.Deployment)
		if d.Status.Recoveries == 0 {
			continue
		}
		counts = append(counts, Count{Name: d.Metadata.Name, Count: d.Status.Recoveries})
		evs, err := s.opts.Store.Events(r.Context(), manifests.Ref(d))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		_, rs := Timeline(d, evs)
		recs = append(recs, rs...)
	}
	st := statsOf(recs, counts)
	type data struct {
		Stats
		Times, Counts Chart
		Table         []Recovery
	}
	table := slices.Clone(st.Recent)
	slices.Reverse(table)
	s.render(w, r, 200, "recoveries", page{Title: "Recoveries", Nav: "recoveries",
		Data: data{Stats: st, Times: recoveryChart(st.Recent), Counts: countChart(st.ByDeployment), Table: table}})
}

// age is how long ago t was, as kubectl prints it.
func age(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.Local().Format("2006-01-02 15:04:05.000")
}

var reFileLine = regexp.MustCompile(`^(\S+?:\d+):\s*`)

// located is one line of a message, with the file:line it names set
// apart.
type located struct{ At, Text string }

// fileLine splits a source's message into lines, each with the file:line
// it names, for the sources page to show the place of each problem.
func fileLine(msg string) []located {
	var out []located
	for _, line := range strings.Split(msg, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if m := reFileLine.FindStringSubmatch(line); m != nil {
			out = append(out, located{At: m[1], Text: line[len(m[0]):]})
		} else {
			out = append(out, located{Text: line})
		}
	}
	return out
}
