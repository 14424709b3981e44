package api

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

func invalid(errs manifests.ErrorList) Status {
	return Status{Code: 422, Reason: ReasonInvalid, Message: errs.Error(), Details: &StatusDetails{Errors: errs}}
}

// StatusFor is the status an error is answered with: the one table from
// store sentinels to HTTP codes and reasons, used by the API and the
// dashboard. Anything it does not know is a 500.
func StatusFor(err error) Status {
	var (
		inUse *state.InUseError
		list  manifests.ErrorList
	)
	switch {
	case errors.As(err, &inUse):
		return Status{Code: 409, Reason: ReasonInUse, Message: err.Error(), Details: &StatusDetails{Users: inUse.Users}}
	case errors.As(err, &list):
		return invalid(list)
	case errors.Is(err, state.ErrInUse):
		return Status{Code: 409, Reason: ReasonInUse, Message: err.Error()}
	case errors.Is(err, state.ErrNotFound):
		return Status{Code: 404, Reason: ReasonNotFound, Message: err.Error()}
	case errors.Is(err, state.ErrConflict):
		return Status{Code: 409, Reason: ReasonConflict, Message: err.Error()}
	case errors.Is(err, state.ErrTerminating):
		return Status{Code: 409, Reason: ReasonTerminating, Message: err.Error()}
	case errors.Is(err, state.ErrInvalid):
		return Status{Code: 422, Reason: ReasonInvalid, Message: err.Error()}
	case errors.Is(err, state.ErrProtected):
		return Status{Code: 403, Reason: ReasonForbidden, Message: err.Error()}
	}
	return Status{Code: 500, Reason: ReasonInternal, Message: err.Error()}
}

// writeError answers err with its status, logging what is not a known
// outcome.
func (s *Server) writeError(w http.ResponseWriter, err error) {
	st := StatusFor(err)
	if st.Code == 500 {
		s.Log.Error(err, "request failed")
	}
	writeStatus(w, st)
}

func writeStatus(w http.ResponseWriter, st Status) {
	writeJSON(w, st.Code, st)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
