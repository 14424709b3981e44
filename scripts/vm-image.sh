#!/usr/bin/env bash
# Builds the VM image of the cloud emulator (internal/cloudemu): a Docker
# image that boots like a cloud VM — real cloud-init (NoCloud datasource),
# OpenSSH's sshd and the docker CLI — from Debian packages, with no
# registry: debootstrap from the mirror apt already uses, then docker
# import. The image is tagged by a hash of its build inputs (this script,
# scripts/vm-image/, the suite, mirror and architecture), so it is built
# once per machine and reused.
#
#   scripts/vm-image.sh          build unless the image exists; print its tag
#   scripts/vm-image.sh --tag    print the tag only (nothing is built)
#   scripts/vm-image.sh --if-possible
#                                as the first, but a machine that cannot
#                                build (no debootstrap, not root) prints why
#                                and exits 0; under CI=true it fails.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
files="$here/vm-image"
repo_name=anycloud-vm

packages=openssh-server,cloud-init,docker.io,git,sudo,ca-certificates,python3-cffi-backend,rclone

# The mirror and suite apt uses here: deb822 sources first, then the
# one-line format.
mirror() {
  local u
  u=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  if [ -z "$u" ] && [ -f /etc/apt/sources.list ]; then
    u=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  fi
  echo "${u:-http://deb.debian.org/debian}"
}
suite() { . /etc/os-release; echo "${VERSION_CODENAME:-bookworm}"; }
arch() { dpkg --print-architecture 2>/dev/null || echo amd64; }

MIRROR="${ANYCLOUD_VM_MIRROR:-$(mirror)}"
SUITE="${ANYCLOUD_VM_SUITE:-$(suite)}"
ARCH="$(arch)"

tag() {
  {
    cat "$0"
    (cd "$files" && for f in $(ls | sort); do echo "== $f"; cat "$f"; done)
    echo "$MIRROR $SUITE $ARCH $packages"
  } | sha256sum | cut -c1-12
}
TAG="$repo_name:$(tag)"

case "${1:-}" in
--tag) echo "$TAG"; exit 0 ;;
--if-possible|"") ;;
*) echo "usage: $0 [--tag | --if-possible]" >&2; exit 2 ;;
esac

if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "$TAG"
  exit 0
fi

cannot() {
  if [ "${1:-}" = "--if-possible" ] && [ "${CI:-}" != "true" ]; then
    echo "vm-image: not built: $2 (the tests that boot emulated VMs will skip)" >&2
    exit 0
  fi
  echo "vm-image: cannot build: $2" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || cannot "${1:-}" "debootstrap needs root"
command -v debootstrap >/dev/null || cannot "${1:-}" "debootstrap is not installed (apt-get install debootstrap)"
docker info >/dev/null 2>&1 || cannot "${1:-}" "the Docker engine is unreachable"

work=$(mktemp -d /var/tmp/anycloud-vm-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root="$work/root"
echo "vm-image: debootstrap $SUITE from $MIRROR into $root (takes a few minutes)" >&2
debootstrap --variant=minbase --arch="$ARCH" --include="$packages" "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -n 40 "$work/debootstrap.log" >&2
  exit 1
}

# The image carries no host keys: each VM makes its own (cloud-init's ssh
# module), and prints them to the console for anycloud to pin.
rm -f "$root"/etc/ssh/ssh_host_*
# A container may not set its login uid: sshd's PAM session must not
# require it.
sed -i 's/^session\s\+required\s\+pam_loginuid.so/session optional pam_loginuid.so/' "$root/etc/pam.d/sshd"
install -m 0644 "$files/90-anycloud-emulator.cfg" "$root/etc/cloud/cloud.cfg.d/90-anycloud-emulator.cfg"
install -m 0755 "$files/boot" "$root/usr/local/sbin/anycloud-vm-boot"
install -m 0755 "$files/docker" "$root/usr/local/bin/docker"
# What the image does not need: apt's lists and caches, docs.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/*
: >"$root/etc/machine-id"
echo "LANG=C.UTF-8" >"$root/etc/default/locale"

echo "vm-image: docker import as $TAG" >&2
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENTRYPOINT ["/usr/local/sbin/anycloud-vm-boot"]' \
  --change 'LABEL dev.anycloud.vm-image=true' \
  - "$TAG" >/dev/null
echo "$TAG"
