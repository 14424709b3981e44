package dashboard

import (
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// keepAlive is how often an idle event stream gets a comment line, so
// that a closed page is noticed and proxies do not time it out.
const keepAlive = 20 * time.Second

// events is the stream of deployment rows: a reset with every row, then
// each change, as server-sent events.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", 500)
		return
	}
	sub := s.hub.subscribe()
	defer s.hub.unsubscribe(sub)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(200)
	// Reconnect soon after a drop; the reset that follows repairs the page.
	fmt.Fprint(w, "retry: 1000\n\n")
	flusher.Flush()
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			flusher.Flush()
		case m, ok := <-sub.ch:
			if !ok {
				return // dropped for falling behind: the browser reconnects
			}
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", m.event, m.data); err != nil {
				return
			}
			flusher.Flush()
		}
	}
}

// confirmation is the page that asks before an action.
type confirmation struct {
	Action   string // resubmit, delete
	Kind     manifests.Kind
	Resource string
	Name     string
	// What is the object as the page shows it, for the question.
	VM   string
	Back string
}

// checkForm parses a POST and checks its CSRF token and its
// confirmation: the name of the object, which the confirmation page
// carries (resubmit) or the person types (delete).
func (s *Server) checkForm(w http.ResponseWriter, r *http.Request, name string) bool {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return false
	}
	sess := sessionOf(r)
	if sess == nil || !sess.validCSRF(r.PostForm.Get("csrf")) {
		http.Error(w, "missing or wrong CSRF token; reload the page and try again", http.StatusForbidden)
		return false
	}
	if r.PostForm.Get("confirm") != name {
		s.render(w, r, http.StatusUnprocessableEntity, "error", page{Title: "Not confirmed",
			Data: fmt.Sprintf("not confirmed: type the name %q to confirm", name)})
		return false
	}
	return true
}

func (s *Server) confirmResubmit(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	o, err := s.opts.Store.Get(r.Context(), manifests.KindDeployment, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	c := confirmation{Action: "resubmit", Kind: manifests.KindDeployment, Resource: "deployments", Name: name, Back: "/deployments/" + url.PathEscape(name)}
	if vm := o.(*manifests.Deployment).Status.VM; vm != nil {
		c.VM = vm.ID
	}
	s.render(w, r, 200, "confirm", page{Title: "Resubmit " + name, Nav: "deployments", Data: c})
}

// doResubmit asks the API to replace the deployment's VM, exactly as
// `anycloud resubmit` does.
func (s *Server) doResubmit(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !s.checkForm(w, r, name) {
		return
	}
	if _, err := s.opts.Actions.Resubmit(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	s.opts.Log.Info("resubmitted from the dashboard", "deployment", name)
	http.Redirect(w, r, "/deployments/"+url.PathEscape(name)+"?done=resubmitted", http.StatusSeeOther)
}

func (s *Server) confirmDelete(w http.ResponseWriter, r *http.Request, k manifests.Kind) {
	res, name := manifests.Plural(k), r.PathValue("name")
	o, err := s.opts.Store.Get(r.Context(), k, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	c := confirmation{Action: "delete", Kind: k, Resource: res, Name: name, Back: "/" + res}
	if d, ok := o.(*manifests.Deployment); ok {
		c.Back = "/deployments/" + url.PathEscape(name)
		if d.Status.VM != nil {
			c.VM = d.Status.VM.ID
		}
	}
	s.render(w, r, 200, "confirm", page{Title: "Delete " + name, Nav: res, Data: c})
}

// doDelete deletes by name, as `anycloud delete KIND NAME` does without
// --force: a bundle or credentials still in use is refused, listing its
// users.
func (s *Server) doDelete(w http.ResponseWriter, r *http.Request, k manifests.Kind) {
	res, name := manifests.Plural(k), r.PathValue("name")
	if !s.checkForm(w, r, name) {
		return
	}
	gone, err := s.opts.Actions.Delete(r.Context(), k, name, state.DeleteOptions{})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.opts.Log.Info("deleted from the dashboard", "kind", k, "name", name, "gone", gone)
	switch {
	case k == manifests.KindDeployment && !gone:
		http.Redirect(w, r, "/deployments/"+url.PathEscape(name)+"?done=terminating", http.StatusSeeOther)
	case k == manifests.KindDeployment:
		http.Redirect(w, r, "/", http.StatusSeeOther)
	default:
		http.Redirect(w, r, "/"+res, http.StatusSeeOther)
	}
}
