// Package state is the control plane's store of desired and observed state.
//
// The vocabulary: a Store holds Objects (manifests.Object) by kind and
// name, each with a uid, a resourceVersion that changes on every write
// (a write naming a stale one fails with ErrConflict) and a generation that
// changes only with the spec. Secret values of SecretBundles and Credentials
// are kept beside their objects, sealed with the home's cipher key (package
// seal), and never leave the store except through OpenSecrets, which only
// the controller calls when it creates a VM. Events are short notes kept per
// object. Watch streams changes.
//
// References: every Deployment names its Credentials and SecretBundles.
// The store keeps, in the same transaction as each Deployment write, the set
// of deployments that use each object; deleting a used object is refused
// (ErrInUse) or, when deleted declaratively, held by a finalizer until its
// last user is gone.
//
// Two Stores implement the contract with one logic (core.go) over a small
// key-value interface (kvReader, kvWriter, backend): Bolt, a bbolt file
// ($ANYCLOUD_HOME/state.db), the default; and Etcd, an etcd v3 cluster
// that the control planes of a team share, where resourceVersions are etcd
// revisions, each write is one etcd transaction conditioned on no other
// write having committed since its snapshot, and a Fence (a leader's
// election key) makes every write of the leader conditional on it still
// leading (Etcd.Fenced; ErrNotLeader once it does not). APIUsers are the
// people allowed to use the API remotely, each with a bearer token stored
// only as its SHA-256.
package state
