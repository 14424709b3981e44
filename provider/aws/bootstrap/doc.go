// Package bootstrap is how the AWS provider reaches its VMs and starts a
// workload on them: over SSH, with keys made on the user's machine.
//
// There are only a few things in bootstrap: Keys, UserData, Target,
// Workload, and the calls Dial, Run and Logs.
//
//   - Keys is a deployment's client key pair, made once by EnsureKeys under
//     $ANYCLOUD_HOME/.ssh and named by the deployment's uid, and the host
//     keys pinned for its VMs (<uid>.known_hosts, one line per instance).
//   - UserData is the cloud-init document a VM is launched with: the
//     authorized client key and Docker. The VM makes its own host key and
//     cloud-init prints it to the console; HostKeysFromConsole reads it
//     from the console output the cloud's API returns (authenticated by
//     the account's credentials) and PinHostKey pins it before anything is
//     sent to the VM. User-data never carries a private key or a secret
//     value: anyone allowed to describe the instance can read it.
//   - A Target is where to connect: address, login user, client signer and
//     the pinned host key. Dial refuses any host that does not present the
//     pinned key (ErrHostKeyMismatch).
//   - A Workload is the container to run: name, image, command and its
//     resolved environment. Run writes the environment to a root-only file
//     on the VM (sent over the session's standard input, never on a command
//     line) and restarts the container with `docker run --env-file`. Logs
//     streams `docker logs` back.
//
// Secret values travel only inside the SSH channel's standard input. They
// never appear in user-data, command lines, errors or logs.
package bootstrap
