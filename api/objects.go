package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

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
	if err == nil {
		err = state.ShowUsers(r.Context(), s.Store, o)
	}
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
	if err == nil {
		err = state.ShowUsers(r.Context(), s.Store, items...)
	}
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
	if err == nil {
		err = state.ShowUsers(r.Context(), s.Store, snapshot...)
	}
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
		if ev.Type != state.Deleted && (k == manifests.KindSecretBundle || k == manifests.KindCredentials) {
			// Watch events are shared with other watchers: fill a copy.
			ev.Object = manifests.DeepCopy(ev.Object)
			if state.ShowUsers(r.Context(), s.Store, ev.Object) != nil {
				return
			}
		}
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
