// Package manifests holds anycloud's API types and everything that turns
// user-written YAML into them, with no other I/O.
//
// There are only a few kinds: Deployment (a container workload on a VM),
// SecretBundle (named, write-only secret values) and Credentials (how to
// reach a cloud). Each is an Object: TypeMeta (apiVersion, kind), ObjectMeta
// (name, uid, resourceVersion, generation, timestamps, finalizers, labels,
// annotations), a Spec the user writes and a Status the control plane writes.
//
// Decode reads one stream of YAML documents strictly: an unknown field or a
// value of the wrong type is an error that names the file, the document
// index, the line and the field path. Load walks files and directories.
// Default fills in defaults and Validate reports every problem at once.
package manifests
