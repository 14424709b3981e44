package api

import (
	"net/http"
	"os"
	"strconv"

	"github.com/anycloud/anycloud/state"
)

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
