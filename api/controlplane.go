package api

import (
	"context"
	"net/http"
	"time"
)

// ControlPlaneStatus says what store the control plane serves and, on a
// shared store, which replica leads and which are up.
type ControlPlaneStatus struct {
	// Store is "bolt" or "etcd".
	Store string `json:"store"`
	// Endpoints are etcd's client endpoints; Prefix is where the store's
	// keys live.
	Endpoints []string `json:"endpoints,omitempty"`
	Prefix    string   `json:"prefix,omitempty"`
	// Self is the replica that answered.
	Self   string `json:"self,omitempty"`
	Leader string `json:"leader,omitempty"`
	// LeadingSince is when Self began to lead, if it leads.
	LeadingSince time.Time `json:"leadingSince,omitzero"`
	Replicas     []Replica `json:"replicas,omitempty"`
}

// Replica is one control plane on a shared store.
type Replica struct {
	Name string `json:"name"`
	// API is where it serves the API (its --listen URL, or its socket).
	API    string `json:"api,omitempty"`
	Leader bool   `json:"leader,omitempty"`
}

func (s *Server) controlPlane(w http.ResponseWriter, r *http.Request) {
	st := ControlPlaneStatus{Store: "bolt"}
	if s.ControlPlane != nil {
		var err error
		if st, err = s.ControlPlane(r.Context()); err != nil {
			s.writeError(w, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, st)
}

// ControlPlane says what store the control plane serves, and who leads.
func (c *Client) ControlPlane(ctx context.Context) (ControlPlaneStatus, error) {
	var st ControlPlaneStatus
	err := c.do(ctx, "GET", "/v1/controlplane", nil, &st)
	return st, err
}
