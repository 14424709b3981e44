// Package cloudemu is a cloud on this machine, for tests and for trying
// the AWS path without an account: moto_server answers the EC2 API, a
// VM emulator boots a real VM for every instance moto reports, and the
// fault proxy (package ec2proxy) in front of moto makes the two look like
// one EC2.
//
// There are only a few things in cloudemu: Moto, VMs and Emulator.
//
//   - Moto is a moto_server of our own on a free port of 127.0.0.1.
//   - VMs is the VM emulator. For every instance moto reports pending or
//     running, it boots one container from the VM image (built from
//     Debian packages by scripts/vm-image.sh: real cloud-init with the
//     NoCloud datasource, OpenSSH's sshd, the docker CLI). The instance's
//     user-data is the NoCloud seed and its id the instance-id, so
//     cloud-init does on it what it does on EC2: makes the host key,
//     prints it to the console, authorizes the deployment's key, runs the
//     user-data's commands. VMs run in this machine's network namespace,
//     so they reach what tests serve on loopback (moto's S3, a registry)
//     as a real VM reaches its cloud's endpoints; each has a loopback
//     address of its own (127.X.Y.Z) where its sshd listens on port 22.
//     The host's Docker socket is mounted, so that `docker run` on the VM
//     starts the workload as a sibling container on this machine's
//     engine; containers a VM
//     starts are labelled with its instance id and die with it. A VM
//     stopped or terminated in moto is stopped or removed; a VM container
//     that dies on its own (docker kill) is a preemption, and the instance
//     is terminated in moto.
//   - Emulator ties them together: moto, the VMs, and a Proxy whose
//     answers carry each VM's loopback address instead of the public
//     address moto invented (an address of a stranger, which nothing may
//     dial) and whose GetConsoleOutput is the VM's real console. Clients
//     use Emulator.Endpoint as their EC2 endpoint.
//
// The emulator talks to moto directly, so the proxy counts only the
// calls of the code under test.
package cloudemu
