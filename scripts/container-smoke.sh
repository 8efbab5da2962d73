#!/usr/bin/env bash
# Runs the service's image for real, with podman, as the Kubernetes manifests
# and the Compose file run it, against the local PostgreSQL, Redis and
# RabbitMQ: a throwaway database, queues and Redis key prefix of its own.
#
# Usage: scripts/container-smoke.sh              the image's runtime stage built
#                                                from this host's binaries
#        scripts/container-smoke.sh --full       the whole Dockerfile, builder
#                                                stage included (about 8 minutes
#                                                on two cores, 4-5 GB of disk)
#        scripts/container-smoke.sh --image REF  an image already built (for
#                                                instance a deliberately broken one)
#
# Steps:
#   1. installs podman, runc and debootstrap when missing (root + apt-get) and
#      points CONTAINERS_CONF at its own containers.conf (runc, ulimits);
#   2. makes the base image(s) once, with debootstrap and `podman import`
#      (nothing is pulled from a registry), and keeps them for the next run:
#      localhost/order-service-base:bookworm stands for debian:bookworm-slim,
#      and with --full localhost/order-service-rust:1.95-bookworm (the base
#      plus this host's Rust toolchain and CA certificates) for rust:1.95-bookworm;
#   3. builds the image: the Dockerfile's target runtime-base plus this host's
#      binaries, their debug sections stripped, copied as the runtime stage
#      copies the builder's (ORDER_CARGO_PROFILE=release|dev picks which,
#      release by default); or with --full the default target, builder stage
#      included;
#   4. checks the image's USER against the manifests' runAsUser:runAsGroup;
#   5. runs k8s/job-migrate.yaml's container, then the three Deployments',
#      each as its manifest asks (scripts/k8s_spec.py): command, args,
#      ConfigMap and env, user, fsGroup, read-only root with tmpfs only where
#      the manifest mounts an emptyDir, no capabilities, no-new-privileges,
#      memory (no swap) and CPU limits; host network, on the manifests' own
#      ports;
#   6. checks every probe and scrape path of each manifest answers 200 within
#      the probe's timeout, from the container's own process, which runs as
#      that user, and that its root filesystem refuses a write even by root;
#   7. sends traffic: order-loadgen from the image publishes a burst
#      (duplicates and poison included), and the orders, the operator's stats
#      and the failures are checked through the API with a token that
#      `order-api token` from the image made;
#   8. runs the manifests' preStop commands, then stops each container
#      (SIGTERM, the manifest's grace period) and requires exit 0 and no
#      restart;
#   9. the same through docker-compose.yml with podman-compose (PyPI, pinned,
#      in .venv) and a host-network override: migrate, the three roles, the
#      Compose health checks (`podman healthcheck run`), traffic (through the
#      test suite's Kafka broker when TEST_KAFKA_BROKERS answers), stop;
#  10. removes its containers, image, database, queues, exchanges and keys
#      (the base images and the build's cached layers stay, for the next run).
#
# When podman cannot run on this machine, one line says why and the script
# exits 77 (skipped): scripts/test.sh reports the skip and goes on. Runs are
# serialised by a lock in target/container-smoke/.
# shellcheck source-path=SCRIPTDIR
set -Eeuo pipefail
# A command that fails unexpectedly is named, not just the exit.
trap 'printf "==> container-smoke: FAILED: %s line %d: %s\n" "${BASH_SOURCE[0]##*/}" "$LINENO" "$BASH_COMMAND" >&2' ERR

PODMAN_COMPOSE_VERSION=1.6.0
BASE_IMAGE=localhost/order-service-base:bookworm
# The builder stage's stand-in is tagged with the host's Rust version.
RUST_BASE_IMAGE=localhost/order-service-rust
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

say() { printf '==> container-smoke: %s\n' "$*"; }
fail() {
    printf '==> container-smoke: FAILED: %s\n' "$*" >&2
    exit 1
}
skip() {
    say "skipped: $*"
    exit 77
}

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "${script_dir}/.." && pwd)
cd "$repo_root"

mode=prebuilt
image=
case "${1:-}" in
    "") ;;
    --full) mode=full ;;
    --image)
        mode=given
        image=${2:?--image needs an image reference}
        ;;
    *)
        sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac

# The steps, in container-smoke/ next to this script, run in this shell in
# this order (they share its variables, functions and traps):
#   podman.sh   1-3 and 10: podman, the base images, the image, the cleanup
#   roles.sh    4-8: what k8s/ asks, running a role and its checks, traffic,
#               the run as the Kubernetes manifests ask
#   compose.sh  9: the same through docker-compose.yml
#   broken.sh   images broken on purpose must fail the checks
# shellcheck source=container-smoke/podman.sh
source "${script_dir}/container-smoke/podman.sh"
# shellcheck source=container-smoke/roles.sh
source "${script_dir}/container-smoke/roles.sh"
# shellcheck source=container-smoke/compose.sh
source "${script_dir}/container-smoke/compose.sh"
# shellcheck source=container-smoke/broken.sh
source "${script_dir}/container-smoke/broken.sh"
say "all passed in $((SECONDS - started)) s"
