package api

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// SocketFile is the API socket's name inside the home directory.
const SocketFile = "api.sock"

// ApplyRequest writes objects in one transaction.
type ApplyRequest struct {
	Items  []ApplyItem `json:"items"`
	DryRun bool        `json:"dryRun,omitempty"`
	// ApplySet names the set the items belong to; each is annotated with
	// it.
	ApplySet string `json:"applySet,omitempty"`
	// Prune deletes, in the same transaction, the objects of ApplySet
	// that the items do not name.
	Prune bool `json:"prune,omitempty"`
	// AllowEmpty lets a prune with no items delete the whole set.
	AllowEmpty bool `json:"allowEmpty,omitempty"`
}

// ApplyItem is one object and, for bundles and credentials, its secret
// values (resolved by the client from its environment and files). Values
// travel only in requests, never in responses.
type ApplyItem struct {
	Object json.RawMessage `json:"object"`
	// Secrets are plaintext values, key → value.
	Secrets map[string]string `json:"secrets,omitempty"`
	// Source locates the object in the user's files, for errors.
	Source *Source `json:"source,omitempty"`
}

// Source is where an object was read from.
type Source struct {
	File string `json:"file,omitempty"`
	Doc  int    `json:"doc,omitempty"`
	Line int    `json:"line,omitempty"`
}

// ApplyResponse says what happened to each item, in request order.
type ApplyResponse struct {
	Results  []state.ApplyResult `json:"results"`
	Warnings []string            `json:"warnings,omitempty"`
}

// List is the answer to a list request.
type List struct {
	Kind            manifests.Kind    `json:"kind"`
	ResourceVersion string            `json:"resourceVersion"`
	Items           []json.RawMessage `json:"items"`
}

// DeleteResponse says whether the object is gone or Terminating.
type DeleteResponse struct {
	Deleted bool            `json:"deleted"`
	Object  json.RawMessage `json:"object"`
	// Users are the deployments left without a bundle deleted with force.
	Users []manifests.ObjectRef `json:"users,omitempty"`
	// Leftover is the VM a forced delete of a deployment left behind.
	Leftover *manifests.LeftoverVM `json:"leftover,omitempty"`
}

// SourceStatus is the state of a directory the control plane applies by
// itself (`anycloud controller --watch-dir`).
type SourceStatus struct {
	Dir      string `json:"dir"`
	ApplySet string `json:"applySet"`
	// Ready is true when the last attempt applied the directory.
	Ready bool `json:"ready"`
	// Message says what the last attempt did, or why it failed (file,
	// document, line and field for bad input).
	Message     string    `json:"message,omitempty"`
	Objects     int       `json:"objects"`
	LastAttempt time.Time `json:"lastAttempt,omitzero"`
	LastApplied time.Time `json:"lastApplied,omitzero"`
}

// DashboardTicket is a one-time sign-in link to the control plane's
// dashboard. Only a client of the API socket can get one; the link works
// once, before ExpiresAt, and the browser that opens it gets a session
// cookie in exchange.
type DashboardTicket struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// SealingKey is the control plane's public key for `secrets seal`.
type SealingKey struct {
	PublicKey string `json:"publicKey"`
}

// Status is the body of every error response, shaped like Kubernetes'
// metav1.Status so that scripts can read the reason.
type Status struct {
	Code    int            `json:"code"`
	Reason  string         `json:"reason"`
	Message string         `json:"message"`
	Details *StatusDetails `json:"details,omitempty"`
}

// StatusDetails carries structured detail for some reasons.
type StatusDetails struct {
	// Users lists the deployments that block a delete (reason InUse).
	Users []manifests.ObjectRef `json:"users,omitempty"`
	// Errors lists every problem of an invalid request (reason Invalid).
	Errors []*manifests.FieldError `json:"errors,omitempty"`
}

// Reasons.
const (
	ReasonNotFound    = "NotFound"
	ReasonConflict    = "Conflict"
	ReasonInUse       = "InUse"
	ReasonTerminating = "Terminating"
	ReasonInvalid     = "Invalid"
	ReasonForbidden   = "Forbidden"
	ReasonBadRequest  = "BadRequest"
	ReasonTooLarge    = "RequestEntityTooLarge"
	ReasonInternal    = "InternalError"
	// ReasonUnauthorized: a remote request without a valid token.
	ReasonUnauthorized = "Unauthorized"
)

// Error is a Status returned by the control plane, as a Go error.
type Error struct{ Status Status }

func (e *Error) Error() string {
	if e.Status.Reason == ReasonInvalid && e.Status.Details != nil && len(e.Status.Details.Errors) > 0 {
		return manifests.ErrorList(e.Status.Details.Errors).Error()
	}
	return e.Status.Message
}

// Is maps statuses back to the store's sentinel errors, so that callers
// test errors.Is(err, state.ErrInUse) on either side of the socket.
func (e *Error) Is(target error) bool {
	switch e.Status.Reason {
	case ReasonNotFound:
		return target == state.ErrNotFound
	case ReasonConflict:
		return target == state.ErrConflict
	case ReasonInUse:
		return target == state.ErrInUse
	case ReasonTerminating:
		return target == state.ErrTerminating
	case ReasonInvalid:
		return target == state.ErrInvalid
	case ReasonForbidden:
		return target == state.ErrProtected
	}
	return false
}

// IsConflict reports whether err is a 409 of any reason: the exit status 3
// kind of failure.
func IsConflict(err error) bool {
	var e *Error
	if ok := asError(err, &e); ok {
		return e.Status.Code == 409
	}
	return false
}

func plural(k manifests.Kind) string { return manifests.Plural(k) }

func kindFromPlural(p string) (manifests.Kind, error) {
	for _, k := range manifests.Kinds {
		if manifests.Plural(k) == p {
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown resource %q", p)
}
