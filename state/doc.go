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
// Store is an interface so that an etcd backend can serve teams that share
// one control plane; Bolt (a bbolt file, $ANYCLOUD_HOME/state.db) is the
// default.
package state
