// Package bootstrap is how the AWS provider reaches its VMs and starts a
// workload on them: over SSH, with keys made on the user's machine.
//
// There are only a few things in bootstrap: Keys, UserData, Target,
// Workload, and the three calls Dial, Run and Logs.
//
//   - Keys is a deployment's key material, made once by EnsureKeys under
//     $ANYCLOUD_HOME/.ssh and named by the deployment's uid: a client key
//     pair that anycloud logs in with, and a host key pair that the VM
//     serves, so that the VM's identity is known before it boots.
//   - UserData is the cloud-init document a VM is launched with: the
//     authorized client key, the host key, and Docker. It never carries a
//     secret value; it has no way to receive one.
//   - A Target is where to connect: address, login user, client signer and
//     the pinned host key. Dial refuses any host that does not present the
//     host key anycloud generated for it (ErrHostKeyMismatch).
//   - A Workload is the container to run: name, image, command and its
//     resolved environment. Run writes the environment to a root-only file
//     on the VM (sent over the session's standard input, never on a command
//     line) and restarts the container with `docker run --env-file`. Logs
//     streams `docker logs` back.
//
// Secret values travel only inside the SSH channel's standard input. They
// never appear in user-data, command lines, errors or logs.
package bootstrap
