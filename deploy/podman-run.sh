#!/usr/bin/env bash
# `podman run --rm` with what this project's machines need, then your arguments:
#   deploy/podman-run.sh [podman run options] IMAGE [COMMAND...]
#
# - runc, not Debian 12's crun: crun 1.8 refuses this kernel's hybrid cgroup v1/v2 layout ("cgroups in hybrid
#   mode not supported, drop all controllers from cgroupv2");
# - explicit ulimits: podman asks for RLIMIT_NOFILE 1048576 and RLIMIT_NPROC 4194304 by default, and without
#   CAP_SYS_RESOURCE raising them fails ("setrlimit `RLIMIT_NOFILE`: Operation not permitted");
# - the host's network: the stand-in and a test Prefect server listen on 127.0.0.1 only.
# OCI_RUNTIME, PODMAN_ULIMITS and PODMAN_NETWORK override these where a machine needs none of it.
set -euo pipefail
read -r -a ulimits <<<"${PODMAN_ULIMITS:---ulimit nofile=16384:16384 --ulimit nproc=16384:16384}"
exec podman run --rm --runtime "${OCI_RUNTIME:-runc}" --network "${PODMAN_NETWORK:-host}" "${ulimits[@]}" "$@"
