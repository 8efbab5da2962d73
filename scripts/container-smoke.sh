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
set -Eeuo pipefail
# A command that fails unexpectedly is named, not just the exit.
trap 'printf "==> container-smoke: FAILED: line %d: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

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

# ---------------------------------------------------------------- podman ---
[[ "$(uname -s)" == Linux ]] || skip "containers need Linux, this is $(uname -s)"
missing=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        skip "${missing[*]} missing, and installing needs root and apt-get"
    fi
    say "installing podman runc debootstrap"
    apt_log=$(mktemp)
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        podman runc debootstrap >"$apt_log" 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update >>"$apt_log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            podman runc debootstrap >>"$apt_log" 2>&1 ||
            skip "apt-get install podman runc debootstrap failed: $(tail -1 "$apt_log")"
    fi
    rm -f "$apt_log"
fi

state=target/container-smoke
mkdir -p "$state"
# One run at a time on a machine: they share ports and logs. A broken-image
# run inside a run holds its parent's lock.
if [[ -z "${CONTAINER_SMOKE_NESTED:-}" ]]; then
    exec 9>"${state}/lock"
    if ! flock -n 9; then
        say "another run holds ${state}/lock; waiting for it"
        flock 9
    fi
fi
# crun refuses hybrid cgroups, and setting the default RLIMIT_NOFILE and
# RLIMIT_NPROC is not permitted here: runc and explicit ulimits.
cat >"${state}/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF="${repo_root}/${state}/containers.conf"
if ! info_err=$(podman info 2>&1 >/dev/null); then
    skip "podman cannot run here: $(tail -1 <<<"$info_err")"
fi
for tool in jq curl psql redis-cli rabbitmqctl; do
    command -v "$tool" >/dev/null 2>&1 || fail "${tool} is needed (scripts/test.sh installs the services and tools)"
done

# ----------------------------------------------------------- base images ---
# debootstrap --variant=minbase into a folder, imported as an image.
make_base() {
    local rootfs
    [[ "$(id -u)" -eq 0 ]] || skip "making ${BASE_IMAGE} with debootstrap needs root"
    say "making ${BASE_IMAGE} (debootstrap --variant=minbase bookworm, once)"
    rootfs=$(mktemp -d "${state}/rootfs.XXXXXX")
    if ! debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"${state}/debootstrap.log" 2>&1; then
        rm -rf "$rootfs"
        fail "debootstrap failed: $(tail -1 "${state}/debootstrap.log")"
    fi
    rm -rf "${rootfs}"/var/cache/apt/archives/*.deb "${rootfs}"/var/lib/apt/lists/*
    if ! tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null; then
        rm -rf "$rootfs"
        fail "podman import of the base image failed"
    fi
    rm -rf "$rootfs"
}
podman image exists "$BASE_IMAGE" || make_base

# The builder stage's stand-in: the base, this host's Rust toolchain (same
# Debian release, so the same glibc) and this host's CA certificates, which
# cargo needs to reach crates.io from here.
make_rust_base() {
    local ctx sysroot
    sysroot=$(rustc --print sysroot)
    say "making ${RUST_BASE_IMAGE} from ${BASE_IMAGE} and ${sysroot} (once)"
    ctx=$(mktemp -d "${state}/rust-base.XXXXXX")
    cp -a "$sysroot" "${ctx}/rust"
    rm -rf "${ctx}/rust/share/doc"
    mkdir -p "${ctx}/ca"
    cp /etc/ssl/certs/ca-certificates.crt "${ctx}/ca/"
    if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
        cp -a /usr/local/share/ca-certificates/. "${ctx}/ca/local/"
    else
        mkdir -p "${ctx}/ca/local"
    fi
    cat >"${ctx}/Containerfile" <<CONTAINERFILE
FROM ${BASE_IMAGE}
COPY rust/ /usr/local/rust/
COPY ca/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY ca/local/ /usr/local/share/ca-certificates/
ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN rustc --version && cargo --version
CONTAINERFILE
    if ! podman build --pull=never --network host -t "$RUST_BASE_IMAGE" "$ctx" >"${state}/rust-base.log" 2>&1; then
        rm -rf "$ctx"
        fail "building ${RUST_BASE_IMAGE} failed: $(tail -3 "${state}/rust-base.log")"
    fi
    rm -rf "$ctx"
}

# The test suite's Kafka broker, when one answers (the Compose part uses it).
kafka_brokers=
if [[ -n "${TEST_KAFKA_BROKERS:-}" ]]; then
    first=${TEST_KAFKA_BROKERS%%,*}
    if timeout 2 bash -c "exec 3<>/dev/tcp/${first%:*}/${first##*:}" 2>/dev/null; then
        kafka_brokers=$TEST_KAFKA_BROKERS
    fi
fi

# ------------------------------------------------------------------ image ---
id="smoke_$$"
built_images=()
if [[ "$mode" != given ]]; then
    image="localhost/order-service:${id}"
    built_images=("$image" "${image}-base")
fi
context="${state}/context-$$"

# Everything below is removed on exit.
project="ordersmoke-$$"
databases=()
rmq_names=()
redis_prefixes=()
cleanup() {
    local rc=$? c
    set +e
    trap - ERR
    podman ps -a --format '{{.Names}}' | grep -E "^${project}[-_]" | xargs -r podman rm -f -t 5 >/dev/null 2>&1
    if [[ -x .venv/bin/podman-compose ]]; then
        compose down -v -t 5 >/dev/null 2>&1
    fi
    for c in "${databases[@]}"; do
        psql -w -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"${c}\" WITH (FORCE)" >/dev/null 2>&1
    done
    for c in "${rmq_names[@]}"; do
        rabbitmqctl -q delete_queue "$c" >/dev/null 2>&1
        rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"${c}\">>), false, <<\"container-smoke\">>)." >/dev/null 2>&1
    done
    for c in "${redis_prefixes[@]}"; do
        redis-cli -h 127.0.0.1 --scan --pattern "${c}*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null 2>&1
    done
    # (The builds' intermediate layers stay: the next build's cache.)
    for c in "${built_images[@]}"; do podman rmi -f "$c" >/dev/null 2>&1; done
    rm -rf "$context" "${state}/override-$$.json" "${state}/spec-$$"
    # A base image's folder left by a failed step (runs hold the lock, so it is this run's).
    [[ -n "${CONTAINER_SMOKE_NESTED:-}" ]] || rm -rf "${state}"/rootfs.* "${state}"/rust-base.*
    if [[ $rc -eq 0 ]]; then say "cleaned up"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Leftovers of a run that was killed (its pid is gone): containers and images.
for stale in $(podman ps -a --format '{{.Names}}' | grep -E '^ordersmoke-[0-9]+[-_]' || true); do
    pid=${stale#ordersmoke-}
    pid=${pid%%[-_]*}
    kill -0 "$pid" 2>/dev/null || podman rm -f -t 0 "$stale" >/dev/null 2>&1 || true
done
for stale in $(podman images --format '{{.Repository}}:{{.Tag}}' | grep -E '^localhost/order-service:smoke_[0-9]+' || true); do
    pid=${stale#localhost/order-service:smoke_}
    pid=${pid%%[^0-9]*}
    kill -0 "$pid" 2>/dev/null || podman rmi -f "$stale" >/dev/null 2>&1 || true
done

build_log="${state}/build.log"
started=$SECONDS
case "$mode" in
    prebuilt)
        profile=${ORDER_CARGO_PROFILE:-release}
        say "building the binaries (${profile})"
        bin_dir=$("${script_dir}/cargo-bins.sh" "$profile" --locked --quiet)
        say "building ${image}: the Dockerfile's target runtime-base, plus this host's binaries"
        timeout 1800 podman build --pull=never --network host -f Dockerfile \
            --target runtime-base --build-arg RUNTIME_IMAGE="$BASE_IMAGE" \
            -t "${image}-base" . >"$build_log" 2>&1 || { tail -20 "$build_log"; fail "podman build failed (${build_log})"; }
        # The runtime stage's own step, on binaries from here instead of the builder's.
        mkdir -p "$context"
        for bin in order-api order-worker order-compensator order-loadgen; do
            objcopy --strip-debug "${bin_dir}/${bin}" "${context}/${bin}" 2>/dev/null ||
                cp "${bin_dir}/${bin}" "${context}/${bin}"
        done
        printf 'FROM %s\nCOPY order-api order-worker order-compensator order-loadgen /usr/local/bin/\n' \
            "${image}-base" >"${context}/Containerfile"
        timeout 600 podman build --pull=never -t "$image" "$context" >>"$build_log" 2>&1 ||
            { tail -20 "$build_log"; fail "podman build failed (${build_log})"; }
        ;;
    full)
        rust_version=$(rustc --version | awk '{print $2}')
        RUST_BASE_IMAGE="${RUST_BASE_IMAGE}:${rust_version}-bookworm"
        [[ "$rust_version" == 1.95.* ]] || say "note: the Dockerfile names rust:1.95; this host has ${rust_version}"
        podman image exists "$RUST_BASE_IMAGE" || make_rust_base
        say "building ${image}: the whole Dockerfile, builder stage included (about 8 minutes on two cores)"
        timeout 3600 podman build --pull=never --network host -f Dockerfile \
            --build-arg RUST_IMAGE="$RUST_BASE_IMAGE" --build-arg RUNTIME_IMAGE="$BASE_IMAGE" \
            -t "$image" . >"$build_log" 2>&1 || { tail -20 "$build_log"; fail "podman build failed (${build_log})"; }
        ;;
    given)
        podman image exists "$image" || fail "no image ${image}"
        ;;
esac
if [[ "$mode" != given ]]; then
    say "built in $((SECONDS - started)) s: $(podman image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')"
fi

# ------------------------------------------------------- what k8s/ asks ---
spec_dir="${state}/spec-$$"
rm -rf "$spec_dir"
mkdir -p "$spec_dir"
for workload in job-migrate deployment-api deployment-worker deployment-compensator; do
    python3 "${script_dir}/k8s_spec.py" "k8s/${workload}.yaml" >"${spec_dir}/${workload}.json" ||
        fail "k8s/${workload}.yaml: no container spec"
done

image_user=$(podman image inspect -f '{{.Config.User}}' "$image")
for workload in job-migrate deployment-api deployment-worker deployment-compensator; do
    want=$(jq -r '"\(.user):\(.group)"' "${spec_dir}/${workload}.json")
    [[ "$image_user" == "$want" ]] ||
        fail "the image runs as '${image_user}', k8s/${workload}.yaml as runAsUser:runAsGroup ${want}"
done
say "the image's user ${image_user} is the manifests' runAsUser:runAsGroup"

# The pids listening on a TCP port.
listeners() {
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true
}
# Every port the manifests probe must be free: the roles listen on them, on
# the host network.
ports_free() {
    local workload port holder
    for workload in deployment-api deployment-worker deployment-compensator; do
        for port in $(jq -r '[.probes[].port, (.scrape // {}).port] | map(select(. != null)) | unique | .[]' \
            "${spec_dir}/${workload}.json"); do
            if [[ -n "$(ss -Hltn "sport = :${port}" 2>/dev/null)" ]]; then
                holder=$(ss -Hltnp "sport = :${port}" 2>/dev/null | grep -o 'users:(("[^"]*",pid=[0-9]*' | head -1 |
                    sed 's/users:(("\([^"]*\)",pid=\([0-9]*\)/\1 (pid \2)/' || true)
                fail "port ${port}, which k8s/${workload}.yaml probes, is taken${holder:+ by ${holder}}"
            fi
        done
    done
}
ports_free

# ------------------------------------------------------- running a role ---
# The settings that point a manifest's container at this machine's services,
# under names of this run's own.
connection_env() {
    local tag=$1
    local db="ordertest_${id}_${tag}"
    printf '%s\n' \
        "ORDER__DATABASE__URL=postgres://postgres@127.0.0.1:5432/${db}" \
        "ORDER__REDIS__HOST=127.0.0.1" \
        "ORDER__REDIS__PORT=6379" \
        "ORDER__REDIS__KEY_PREFIX=ordertest:${id}_${tag}:" \
        "ORDER__RABBITMQ__HOST=127.0.0.1" \
        "ORDER__RABBITMQ__PORT=5672" \
        "ORDER__RABBITMQ__USERNAME=guest" \
        "ORDER__RABBITMQ__PASSWORD=guest" \
        "ORDER__RABBITMQ__EXCHANGE=ordertest.${id}_${tag}.seckill" \
        "ORDER__RABBITMQ__QUEUE=ordertest.${id}_${tag}.orders" \
        "ORDER__RABBITMQ__DEAD_LETTER_EXCHANGE=ordertest.${id}_${tag}.dlx" \
        "ORDER__RABBITMQ__DEAD_LETTER_QUEUE=ordertest.${id}_${tag}.dlq" \
        "ORDER__KAFKA__BROKERS=${kafka_brokers:-127.0.0.1:9092}" \
        "ORDER__KAFKA__TOPIC=ordertest-${id}_${tag}" \
        "ORDER__KAFKA__GROUP_ID=ordertest-${id}_${tag}" \
        "ORDER__KAFKA__DEAD_LETTER_TOPIC=ordertest-${id}_${tag}.dlq" \
        "ORDER__API__ADMIN_TOKEN=operator-${id}" \
        "ORDER__API__AUTH__JWT_SECRET=container-smoke-secret-${id}-0123456789abcdef"
}
# Registers a run's database, broker names and key prefix for removal, and
# creates its database.
throwaway() {
    local tag=$1
    databases+=("ordertest_${id}_${tag}")
    rmq_names+=("ordertest.${id}_${tag}.seckill" "ordertest.${id}_${tag}.orders"
        "ordertest.${id}_${tag}.dlx" "ordertest.${id}_${tag}.dlq")
    redis_prefixes+=("ordertest:${id}_${tag}:")
    psql -w -h 127.0.0.1 -U postgres -qc "CREATE DATABASE \"ordertest_${id}_${tag}\"" >/dev/null
}

# podman run options for a manifest's container: its hardening, limits, env
# (the connection settings of run TAG win), host network.
run_options() {
    local spec=$1 tag=$2
    local -n out=$3
    out=(--network host --pull=never --stop-signal SIGTERM)
    out+=(--user "$(jq -r '"\(.user):\(.group)"' "$spec")")
    if [[ "$(jq -r .read_only_root "$spec")" == true ]]; then
        # Only the manifest's emptyDir mounts are writable: no tmpfs of podman's own.
        out+=(--read-only --read-only-tmpfs=false)
    fi
    local path size
    while IFS=$'\t' read -r path size; do
        out+=(--tmpfs "${path}:rw,size=${size}m,mode=1777")
    done < <(jq -r '.tmpfs[] | [.path, (.size_mib // 64)] | @tsv' "$spec")
    local cap group
    for cap in $(jq -r '.cap_drop[]' "$spec"); do out+=(--cap-drop "$cap"); done
    for group in $(jq -r '.extra_groups[]' "$spec"); do out+=(--group-add "$group"); done
    if [[ "$(jq -r .no_new_privileges "$spec")" == true ]]; then
        out+=(--security-opt no-new-privileges)
    fi
    local memory cpus
    memory=$(jq -r '.memory_mib // empty' "$spec")
    cpus=$(jq -r '.cpus // empty' "$spec")
    [[ -z "$memory" ]] || out+=(--memory "${memory}m" --memory-swap "${memory}m")
    [[ -z "$cpus" ]] || out+=(--cpus "$cpus")
    local line
    while IFS= read -r line; do out+=(--env "$line"); done < <(jq -r '.env | to_entries[] | "\(.key)=\(.value)"' "$spec")
    while IFS= read -r line; do out+=(--env "$line"); done < <(connection_env "$tag")
}

# Prints a container's last log lines (on failure).
show_logs() {
    say "last lines of $1:" >&2
    podman logs --tail "${2:-30}" "$1" 2>&1 | sed 's/^/    /' >&2 || true
}

# start_role WORKLOAD TAG NAME: runs the manifest's container detached.
start_role() {
    local workload=$1 tag=$2 name=$3 spec="${spec_dir}/$1.json" opts=() args=() err
    run_options "$spec" "$tag" opts
    mapfile -t args < <(jq -r '.args[]' "$spec")
    if ! err=$(podman run -d --name "$name" "${opts[@]}" \
        --entrypoint "$(jq -c .command "$spec")" "$image" "${args[@]}" 2>&1 >/dev/null); then
        fail "podman run ${workload} failed: $(tail -1 <<<"$err")"
    fi
}

# http_status URL [TOKEN [SECONDS]]: the status code (000 when nothing
# answers within SECONDS, 3 by default).
http_status() {
    local url=$1 token=${2:-} seconds=${3:-3}
    curl -sS -o /dev/null -w '%{http_code}' --connect-timeout 1 --max-time "$seconds" \
        ${token:+-H "Authorization: Bearer ${token}"} "$url" 2>/dev/null || true
}

# wait_ready NAME PORT: the readiness path answers 200 within 60 s, and the
# container is still running.
wait_ready() {
    local name=$1 url=$2 status=
    for _ in $(seq 1 120); do
        status=$(http_status "$url")
        [[ "$status" == 200 ]] && return 0
        if [[ "$(podman inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != true ]]; then
            show_logs "$name"
            fail "${name} exited with $(podman inspect -f '{{.State.ExitCode}}' "$name") before it was ready"
        fi
        sleep 0.5
    done
    show_logs "$name"
    fail "${name}: ${url} answered ${status:-nothing} for 60 s"
}

# root_read_only NAME: a write to / fails inside the container with EROFS,
# even by root (who owns /, so nothing but a read-only root refuses it).
root_read_only() {
    local name=$1 out
    if out=$(podman exec --user 0 "$name" sh -c ': > /.write-probe' 2>&1); then
        fail "${name}: the root filesystem accepted a write"
    fi
    grep -q "Read-only file system" <<<"$out" ||
        fail "${name}: a write to / failed, but not for a read-only root: ${out}"
}

# check_role WORKLOAD NAME: every probe and scrape path answers 200 within
# the probe's timeout, from the container's own process, which runs as the
# manifest's user; and / refuses writes when the manifest says so.
check_role() {
    local workload=$1 name=$2 spec="${spec_dir}/$1.json" kind path port seconds status pid uids gids want note=
    pid=$(podman inspect -f '{{.State.Pid}}' "$name")
    while IFS=$'\t' read -r kind path port seconds; do
        status=$(http_status "http://127.0.0.1:${port}${path}" "" "$seconds")
        [[ "$status" == 200 ]] || { show_logs "$name"; fail "${name}: ${kind} ${path} on ${port} answered ${status}"; }
        listeners "$port" | grep -qx "$pid" ||
            fail "${name}: port ${port} is served by pid $(listeners "$port" | xargs), not by the container's ${pid}"
    done < <(jq -r '(.probes[] | [.kind, .path, .port, .timeout]),
        (.scrape // empty | ["scrape", .path, .port, 3]) | @tsv' "$spec")
    uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/${pid}/status")
    gids=$(awk '/^Gid:/ {print $2, $3, $4, $5}' "/proc/${pid}/status")
    want=$(jq -r .user "$spec")
    [[ "$uids" == "$want $want $want $want" ]] || fail "${name}: the process runs with uids ${uids}, not ${want}"
    want=$(jq -r .group "$spec")
    [[ "$gids" == "$want $want $want $want" ]] || fail "${name}: the process runs with gids ${gids}, not ${want}"
    if [[ "$(jq -r .read_only_root "$spec")" == true ]]; then
        root_read_only "$name"
        note="; / read-only"
    fi
    say "${name}: $(jq -r '[.probes[].path] + [(.scrape // {}).path // empty] | unique | join(", ")' "$spec") answer 200 from its process on $(jq -r '.probes[0].port' "$spec"); uid/gid $(jq -r '"\(.user)/\(.group)"' "$spec")${note}"
}

# stop_role NAME GRACE: SIGTERM, and exit 0 within the grace period.
stop_role() {
    local name=$1 grace=$2 code t0=$SECONDS out
    # (podman reports the health-check timers it cannot remove without systemd.)
    out=$(podman stop -t "$grace" "$name" 2>&1) || { printf '%s\n' "$out" >&2; fail "podman stop ${name} failed"; }
    code=$(podman inspect -f '{{.State.ExitCode}}' "$name")
    if [[ "$code" != 0 ]]; then
        show_logs "$name"
        fail "${name} exited with ${code} on SIGTERM"
    fi
    if podman logs "$name" 2>&1 | grep -q panicked; then
        show_logs "$name"
        fail "${name} panicked"
    fi
    # A role that crashed and was restarted (Compose's restart policy) hides nothing.
    code=$(podman inspect -f '{{.RestartCount}}' "$name")
    [[ "$code" == 0 ]] || { show_logs "$name"; fail "${name} was restarted ${code} times"; }
    say "${name}: SIGTERM, exit 0 in $((SECONDS - t0)) s"
}

# one_shot SPEC TAG ENTRYPOINT ARGS...: runs a manifest-hardened container to
# completion; its stdout is printed, its stderr kept for a failure.
one_shot() {
    local spec=$1 tag=$2 entry=$3 opts=() err name
    shift 3
    run_options "$spec" "$tag" opts
    # (Often run in a command substitution: cleanup finds it by its name.)
    name="${project}-once-${RANDOM}${RANDOM}"
    err=$(mktemp)
    if ! timeout 180 podman run --rm --name "$name" "${opts[@]}" --entrypoint "[\"${entry}\"]" "$image" "$@" 2>"$err"; then
        sed 's/^/    /' "$err" >&2
        rm -f "$err"
        fail "${entry} $* failed in a container"
    fi
    rm -f "$err"
}

# poll TOKEN URL FILTER WANT: the JSON at URL (asked with TOKEN) through the
# jq FILTER, until it is WANT (60 s at most); prints the last value.
poll() {
    local token=$1 url=$2 filter=$3 want=$4 got=
    for _ in $(seq 1 120); do
        got=$(curl -fsS -H "Authorization: Bearer ${token}" "$url" | jq -r "$filter") || got=
        [[ "$got" == "$want" ]] && break
        sleep 0.5
    done
    printf '%s' "$got"
}

# traffic TAG API_PORT WORKER_SPEC API_SPEC BROKER: a burst from order-loadgen
# in the image through BROKER, then the orders, stats and failures through the API.
traffic() {
    local tag=$1 api=$2 worker_spec=$3 api_spec=$4 broker=$5 summary distinct poison token total order count failed status
    # A fixed seed: the same stream every run, with duplicates and poison in it.
    summary=$(one_shot "$worker_spec" "$tag" order-loadgen --broker "$broker" --count 80 --users 1 \
        --products 1000 --duplicate-ratio 0.2 --poison-ratio 0.05 --seed 15 --quiet)
    distinct=$(jq -r .distinct_pairs <<<"$summary")
    poison=$(jq -r .poison <<<"$summary")
    [[ "$distinct" =~ ^[0-9]+$ && "$poison" =~ ^[0-9]+$ ]] || fail "order-loadgen printed no summary: ${summary}"
    ((poison > 0 && distinct + poison < $(jq -r .sent <<<"$summary"))) ||
        fail "the burst lacks poison or duplicates, so it proves little: ${summary}"
    token=$(one_shot "$api_spec" "$tag" order-api token --user 1 --ttl 10m)
    total=$(poll "$token" "http://127.0.0.1:${api}/api/v1/users/1/orders?page=1&pageSize=100" .total "$distinct")
    [[ "$total" == "$distinct" ]] || fail "user 1 has ${total} orders through the API, the burst made ${distinct}"
    order=$(curl -fsS -H "Authorization: Bearer ${token}" \
        "http://127.0.0.1:${api}/api/v1/users/1/orders?page=1&pageSize=1" | jq -r '.items[0].order_id // .items[0].id')
    status=$(http_status "http://127.0.0.1:${api}/api/v1/orders/${order}" "$token")
    [[ "$status" == 200 ]] || fail "GET /api/v1/orders/${order} with its user's token answered ${status}"
    # Yesterday too: a run across midnight (UTC) still counts every order.
    count=$(curl -fsS -H "Authorization: Bearer operator-${id}" \
        "http://127.0.0.1:${api}/api/v1/stats/orders?from=$(date -u -d yesterday +%F)&to=$(date -u +%F)" |
        jq -r .order_count)
    [[ "$count" == "$distinct" ]] || fail "the operator's stats count ${count} orders, the burst made ${distinct}"
    failed=$(poll "operator-${id}" "http://127.0.0.1:${api}/api/v1/failures?status=failed" .total "$poison")
    [[ "$failed" == "$poison" ]] || fail "the API lists ${failed} failures, the burst had ${poison} poison messages"
    say "traffic: $(jq -r .sent <<<"$summary") messages from order-loadgen in the image through ${broker}; ${distinct} orders and ${poison} failures through the API"
}

# ------------------------------------------------- as k8s/ runs the image ---
say "as the Kubernetes manifests run it"
throwaway k8s
mapfile -t migrate_args < <(jq -r '.args[]' "${spec_dir}/job-migrate.json")
one_shot "${spec_dir}/job-migrate.json" k8s "$(jq -r '.command[0]' "${spec_dir}/job-migrate.json")" \
    "${migrate_args[@]}" >/dev/null
say "k8s/job-migrate.yaml: $(jq -r '.command + .args | join(" ")' "${spec_dir}/job-migrate.json") exited 0"
declare -A running
for workload in deployment-api deployment-worker deployment-compensator; do
    running[$workload]="${project}-${workload#*-}"
    start_role "$workload" k8s "${running[$workload]}"
done
for workload in deployment-api deployment-worker deployment-compensator; do
    port=$(jq -r '[.probes[] | select(.kind == "readinessProbe")][0].port' "${spec_dir}/${workload}.json")
    path=$(jq -r '[.probes[] | select(.kind == "readinessProbe")][0].path' "${spec_dir}/${workload}.json")
    wait_ready "${running[$workload]}" "http://127.0.0.1:${port}${path}"
    check_role "$workload" "${running[$workload]}"
done
api_port=$(jq -r '.probes[0].port' "${spec_dir}/deployment-api.json")
traffic k8s "$api_port" "${spec_dir}/deployment-worker.json" "${spec_dir}/deployment-api.json" rabbitmq
# As the kubelet does: each preStop hook, then SIGTERM.
pre_stops=()
for workload in deployment-worker deployment-compensator deployment-api; do
    mapfile -t hook < <(jq -r '.pre_stop // [] | .[]' "${spec_dir}/${workload}.json")
    [[ ${#hook[@]} -gt 0 ]] || continue
    podman exec "${running[$workload]}" "${hook[@]}" &
    pre_stops+=("$!:${running[$workload]}:${hook[*]}")
done
for hook in "${pre_stops[@]}"; do
    wait "${hook%%:*}" || fail "${hook#*:}: the preStop hook failed"
    say "preStop ${hook#*:} exited 0"
done
for workload in deployment-worker deployment-compensator deployment-api; do
    stop_role "${running[$workload]}" "$(jq -r .grace_seconds "${spec_dir}/${workload}.json")"
done

# --------------------------------------------- as docker-compose.yml runs it ---
say "as docker-compose.yml runs it (podman-compose, host network)"
if ! .venv/bin/podman-compose --version 2>/dev/null | grep -q "$PODMAN_COMPOSE_VERSION"; then
    say "installing podman-compose ${PODMAN_COMPOSE_VERSION} into .venv"
    [[ -x .venv/bin/pip ]] || python3 -m venv .venv
    .venv/bin/pip install -q "podman-compose==${PODMAN_COMPOSE_VERSION}"
fi
# --read-only-tmpfs=false: read_only means what it means under Docker, with
# only the file's own tmpfs (/tmp) writable, not podman's /run and /var/tmp.
compose() {
    .venv/bin/podman-compose --project-name "$project" --podman-run-args=--read-only-tmpfs=false \
        -f docker-compose.yml -f "${state}/override-$$.json" "$@"
}
throwaway compose
# The Compose file consumes Kafka too: from the test suite's broker when one
# answers at TEST_KAFKA_BROKERS (scripts/kafka.sh), and the burst goes that
# way; else Kafka is turned off and the burst goes through RabbitMQ.
compose_broker=rabbitmq
kafka_enabled=false
if [[ -n "$kafka_brokers" ]]; then
    compose_broker=kafka
    kafka_enabled=true
    one_shot "${spec_dir}/deployment-worker.json" compose order-loadgen --broker kafka --count 0 --quiet >/dev/null
fi
# The app services on the host network, on this run's image and names; the
# backing services (postgres, redis, rabbitmq, kafka) are this machine's, so
# their images are never started (--no-deps).
overrides=$(connection_env compose | jq -R 'split("=") | {(.[0]): (.[1:] | join("="))}' |
    jq -s --arg kafka "$kafka_enabled" 'add + {"ORDER__KAFKA__ENABLED": $kafka}')
jq -n --arg image "$image" --argjson env "$overrides" '
    {services: (["migrate", "api", "worker", "compensator"]
        | map({key: ., value: {image: $image, network_mode: "host", environment: $env}})
        | from_entries)}' >"${state}/override-$$.json"

ports_free

compose_container() {
    podman ps -a --filter "label=io.podman.compose.project=${project}" \
        --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | head -1
}
compose up -d --no-build --no-deps migrate >"${state}/compose.log" 2>&1 ||
    { tail -20 "${state}/compose.log"; fail "podman-compose up migrate failed"; }
migrate=$(compose_container migrate)
[[ -n "$migrate" ]] || { tail -20 "${state}/compose.log"; fail "podman-compose made no migrate container"; }
code=$(podman wait "$migrate")
[[ "$code" == 0 ]] || { show_logs "$migrate"; fail "compose migrate exited with ${code}"; }
say "compose migrate exited 0"
compose up -d --no-build --no-deps api worker compensator >>"${state}/compose.log" 2>&1 ||
    { tail -20 "${state}/compose.log"; fail "podman-compose up api worker compensator failed"; }
declare -A compose_port=([api]=8082 [worker]=8084 [compensator]=8085)
for service in api worker compensator; do
    name=$(compose_container "$service")
    [[ -n "$name" ]] || fail "podman-compose made no ${service} container"
    running[compose-$service]=$name
    wait_ready "$name" "http://127.0.0.1:${compose_port[$service]}/health/ready"
    healthy=false
    for _ in $(seq 1 30); do
        if podman healthcheck run "$name" >/dev/null 2>&1; then healthy=true && break; fi
        sleep 1
    done
    [[ "$healthy" == true ]] || { show_logs "$name"; fail "${name}: the Compose health check does not pass"; }
    hardening=$(podman inspect -f '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}}' "$name")
    [[ "$hardening" == "10001:10001 true "*"CAP_"*" "*"no-new-privileges"* ]] ||
        fail "${name}: Compose did not run it as 10001:10001, read-only, without capabilities and new privileges: ${hardening}"
    [[ "$(podman inspect -f '{{len .HostConfig.CapAdd}}' "$name")" == 0 ]] || fail "${name}: capabilities added"
    pid=$(podman inspect -f '{{.State.Pid}}' "$name")
    [[ "$(awk '/^CapEff:/ {print $2}' "/proc/${pid}/status")" == 0000000000000000 ]] ||
        fail "${name}: the process has capabilities"
    listeners "${compose_port[$service]}" | grep -qx "$pid" ||
        fail "${name}: port ${compose_port[$service]} is not served by the container's process"
    root_read_only "$name"
    say "${name}: ready from its own process, Compose health check passes, 10001:10001, no capabilities, / read-only"
done
traffic compose 8082 "${spec_dir}/deployment-worker.json" "${spec_dir}/deployment-api.json" "$compose_broker"
for service in worker compensator api; do
    stop_role "${running[compose-$service]}" 40
done
say "the image passed in $((SECONDS - started)) s"

# ------------------------------------------------ broken images must fail ---
# The checks above can fail: three images broken on purpose, each made from
# the one just tested, must fail them with the reason named.
# broken WHAT EXPECTED: builds the tested image plus the Containerfile lines
# on stdin, and requires a run on it to fail with a line matching EXPECTED.
broken() {
    local what=$1 expect=$2 ref="localhost/order-service:${id}-broken" out code=0
    { printf 'FROM %s\n' "$image"; cat; } >"${state}/Containerfile.broken"
    podman build --pull=never --network host -t "$ref" -f "${state}/Containerfile.broken" "$state" \
        >"${state}/broken.log" 2>&1 || { tail -5 "${state}/broken.log"; fail "building the broken image (${what}) failed"; }
    out=$(CONTAINER_SMOKE_NESTED=1 "${script_dir}/container-smoke.sh" --image "$ref" 2>&1) || code=$?
    podman rmi -f "$ref" >/dev/null 2>&1 || true
    rm -f "${state}/Containerfile.broken"
    if [[ $code -eq 0 ]] || ! grep -qE "$expect" <<<"$out"; then
        printf '%s\n' "$out" | tail -15 | sed 's/^/    /' >&2
        fail "an image with ${what} was not refused for it (exit ${code})"
    fi
    say "refused, as it must be: an image with ${what}: $(grep -E "$expect" <<<"$out" | head -1 | sed 's/^==> container-smoke: FAILED: //; s/^ *//')"
}
if [[ "$mode" == prebuilt ]]; then
    broken "a role's binary missing" "podman run deployment-worker failed" <<'LINES'
USER 0:0
RUN rm /usr/local/bin/order-worker
USER 10001:10001
LINES
    # Writable by the role's user but for the read-only root: only that refuses it.
    broken "a role that writes to its root filesystem" "cannot create /app/state/started: Read-only file system" <<'LINES'
USER 0:0
RUN mkdir /app/state && chown 10001:10001 /app/state \
 && mv /usr/local/bin/order-compensator /usr/local/bin/order-compensator.real \
 && printf '#!/bin/sh\nset -e\ndate > /app/state/started\nexec order-compensator.real "$@"\n' \
    > /usr/local/bin/order-compensator \
 && chmod 0755 /usr/local/bin/order-compensator
USER 10001:10001
LINES
    broken "root as its user" "the image runs as '0:0'" <<'LINES'
USER 0:0
LINES
fi
say "all passed in $((SECONDS - started)) s"
