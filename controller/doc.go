// Package controller is the control loop: it keeps every Deployment's VM
// matching its manifest, for as long as the control plane runs.
//
// The vocabulary: a Queue of deployment names (deduplicated, with per-key
// exponential back-off and a global token bucket); workers, bounded in
// number, that take a name and Reconcile it; a VM cache filled by one
// listing per provider scope (credentials and region) at each resync and
// shared by every deployment; and Providers, which hand out the provider
// for a deployment's credentials. Decisions are made by package reconcile;
// this package does the I/O: it reads the store, resolves secrets at each
// VM creation, calls providers, writes status and records events.
//
// What triggers a reconcile: a change to the deployment (store watch), a
// bundle appearing or changing (its users are queued), a provider
// notification (the Docker engine reports a dead container), the periodic
// resync, and a RequeueAfter. Cloud-side short retries belong to the
// providers; reconcile-level retries belong to the queue.
package controller
