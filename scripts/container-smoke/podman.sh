# shellcheck shell=bash
# shellcheck disable=SC2154 # set by container-smoke.sh or a file sourced before this one
# container-smoke.sh, steps 1-3 and 10: podman (installed when missing, its
# own containers.conf, the lock that serialises runs), the base images made
# with debootstrap, the image built (or the one --image names), and the EXIT
# trap that removes what the run made.
# Sourced by scripts/container-smoke.sh into its own shell, first: it uses
# say, fail, skip, mode, image, script_dir and repo_root from there, and sets
# state, id, image, project, started, kafka_brokers, make_rust_base, cleanup
# and the cleanup lists (databases, rmq_names, redis_prefixes) for the files
# sourced after it.

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
        # shellcheck disable=SC2034 # used by roles.sh and compose.sh
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
