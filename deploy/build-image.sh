#!/usr/bin/env bash
# `make image`: build the Dockerfile with buildah, without Docker and without any container registry.
#
#   deploy/build-image.sh                      base: Debian bookworm + python3.11, made here with debootstrap
#   BASE_IMAGE=python:3.11-slim-bookworm deploy/build-image.sh   base: pulled from a registry, as a user would
#
# This project's machines reach PyPI, npm and Debian's mirror only, so `FROM python:3.11-slim-bookworm` cannot be
# pulled here. Unless BASE_IMAGE is given, the base is a Debian bookworm root filesystem (minbase, python3,
# python3-venv, ca-certificates) that debootstrap fetches from Debian's mirror, imported once as
# localhost/acr-transfer-base:bookworm-python3.11; the Dockerfile is the same either way (its BASE_IMAGE
# argument). The image is tagged localhost/acr-transfer:<version> and :latest, and its `acr-transfer --help`
# runs at the end.
#
# Environment: IMAGE (localhost/acr-transfer), BASE_IMAGE, DEBIAN_MIRROR (http://deb.debian.org/debian),
# REBUILD_BASE=1 (debootstrap again), BUILD_CA_BUNDLE (a CA bundle mounted over the build's
# /etc/ssl/certs/ca-certificates.crt, for a TLS-inspecting proxy; default: this machine's, if any; never
# stored in the image).
set -euo pipefail
cd "$(dirname "$0")/.."

LOCAL_BASE=localhost/acr-transfer-base:bookworm-python3.11
IMAGE=${IMAGE:-localhost/acr-transfer}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOTFS=build/image-rootfs

say() { echo "▶ $*"; }

# buildah, podman, debootstrap and runc from Debian when missing (as root), as `make tools` installs skopeo
need=()
for tool in buildah podman debootstrap runc; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${need[*]} (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || {
      apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    }
  else
    echo "make image needs ${need[*]}: install them (Debian: apt-get install ${need[*]}) and run it again" >&2
    exit 1
  fi
fi

if [ -z "${BASE_IMAGE:-}" ]; then
  BASE_IMAGE=$LOCAL_BASE
  if [ -n "${REBUILD_BASE:-}" ] || ! podman image exists "$LOCAL_BASE"; then
    say "debootstrap: Debian bookworm with python3.11 into $ROOTFS (from $MIRROR)"
    rm -rf "$ROOTFS"
    mkdir -p "$(dirname "$ROOTFS")"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOTFS" "$MIRROR" \
      >build/debootstrap.log 2>&1 || { tail -20 build/debootstrap.log >&2; exit 1; }
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb
    say "importing it as $LOCAL_BASE"
    tar -C "$ROOTFS" --numeric-owner -c . | podman import --quiet --change 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null
    rm -rf "$ROOTFS"
  fi
fi

# The machine's CA bundle, for RUN steps only: PyPI may be reached through a TLS-inspecting proxy
ca=${BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
mounts=()
[ -f "$ca" ] && mounts=(--volume "$ca:/etc/ssl/certs/ca-certificates.crt:ro")

# chroot isolation and the host's network: RUN steps need no runtime, cgroups or network namespace of their own
# the sources' hash as a label: the image test runs only against an image built from the tree it tests
sources=$(bash deploy/image-sources.sh)
say "buildah bud: $IMAGE:$VERSION on $BASE_IMAGE (sources ${sources:0:12})"
buildah bud --quiet --isolation chroot --network host "${mounts[@]}" --label "io.acr-transfer.sources=$sources" \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" --tag "$IMAGE:$VERSION" --tag "$IMAGE:latest" . >/dev/null

say "podman run $IMAGE:$VERSION acr-transfer --help"
deploy/podman-run.sh "$IMAGE:$VERSION" acr-transfer --help | head -3
echo "built $IMAGE:$VERSION ($IMAGE:latest); tests/stack/test_container_image.py runs a transfer in it"
