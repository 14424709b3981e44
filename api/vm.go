package api

import (
	"net/http"

	"github.com/anycloud/anycloud/manifests"
)

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
