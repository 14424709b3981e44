// Package api is the control plane's local HTTP/JSON API and its client.
//
// The vocabulary: a Server serves a state.Store on the unix socket
// $ANYCLOUD_HOME/api.sock (mode 0600); a Client talks to it. Every write of
// user objects goes through one route, apply, which takes objects and, for
// bundles and credentials, their secret values, and writes them in one
// transaction. Secret values travel only in request bodies: no route, no
// response, no error and no log line ever carries one. Errors come back as
// a Status (code, reason, message, details), shaped like Kubernetes' own,
// and the Client turns them into *Error values that errors.Is matches
// against the state package's sentinels.
//
// Routes:
//
//	GET    /v1/version
//	POST   /v1/apply                          ApplyRequest → ApplyResponse
//	GET    /v1/{resource}[?watch=true]        List, or a stream of WatchEvents
//	GET    /v1/{resource}/{name}
//	GET    /v1/{resource}/{name}/events
//	DELETE /v1/{resource}/{name}[?force=true][&declarative=true][&uid=U]
//	POST   /v1/deployments/{name}/resubmit
//	GET    /v1/deployments/{name}/logs[?follow=true]   the workload's log, plain text
//	GET    /v1/deployments/{name}/ssh                  how to reach the VM (no secrets)
//	GET    /v1/sealing-key
//	GET    /v1/sources                        directories applied by the control plane
//	POST   /v1/dashboard/tickets              a one-time sign-in link to the dashboard
//
// where resource is deployments, secretbundles or credentials.
package api
