#!/usr/bin/env bash
# Run the order service locally, the one command for a fresh machine:
#  1. make sure PostgreSQL (or MariaDB), Redis and RabbitMQ run (starting or
#     installing what is missing, or saying how to get it);
#  2. check that the ports are free (naming what holds a taken one), build in
#     release mode and migrate;
#  3. run order-api, order-worker and order-compensator together, each log
#     line prefixed by its role;
#  4. publish a small demo burst with order-loadgen and print what to try.
# Ctrl-C (or SIGTERM) stops all three cleanly; the script exits 0 when they did.
#
# Usage: scripts/start.sh [--kafka] [--mysql] [--no-demo]
#   --kafka    also start the local Kafka broker and consume from it
#   --mysql    use MariaDB/MySQL on 127.0.0.1:3306 instead of PostgreSQL
#   --no-demo  skip the demo burst
# Every ORDER__… environment variable is passed through (see README.md);
# ORDER__DATABASE__DBNAME picks the database (default order_db);
# ORDER__SERVER__PORT the API's port (8082); START_WORKER_PORT and
# START_COMPENSATOR_PORT the probe ports (8084, 8085); START_LOG_DIR where each
# role's log is kept (target/start-logs); START_READY_TIMEOUT how long the roles
# may take to become ready (120 s); ORDER_CARGO_PROFILE=dev builds and runs
# debug binaries (faster to build, slower to run).
set -euo pipefail

say() { printf '==> %s\n' "$*"; }

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "${script_dir}/.."

database=postgres
kafka=false
demo=true
for arg in "$@"; do
    case "$arg" in
        --kafka) kafka=true ;;
        --mysql) database=mysql ;;
        --no-demo) demo=false ;;
        -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "unknown option: $arg (see --help)" >&2; exit 2 ;;
    esac
done

dbname=${ORDER__DATABASE__DBNAME:-order_db}
if [[ "$database" == mysql ]]; then
    "${script_dir}/services.sh" ensure mysql redis rabbitmq
    mysql_client=$(command -v mariadb || command -v mysql)
    "$mysql_client" -h127.0.0.1 -uroot -e "CREATE DATABASE IF NOT EXISTS \`${dbname}\`"
    export ORDER__DATABASE__URL="${ORDER__DATABASE__URL:-mysql://root@127.0.0.1:3306/${dbname}}"
else
    "${script_dir}/services.sh" ensure postgres redis rabbitmq
    if ! psql -w -h 127.0.0.1 -U postgres -Atc "select 1 from pg_database where datname = '${dbname}'" | grep -q 1; then
        say "creating database ${dbname}"
        psql -w -h 127.0.0.1 -U postgres -qc "CREATE DATABASE \"${dbname}\""
    fi
    export ORDER__DATABASE__URL="${ORDER__DATABASE__URL:-postgres://postgres@127.0.0.1:5432/${dbname}}"
fi
if [[ "$kafka" == true ]]; then
    "${script_dir}/kafka.sh" start
    export ORDER__KAFKA__ENABLED=true
fi
if [[ -z "${ORDER__API__ADMIN_TOKEN:-}" ]]; then
    ORDER__API__ADMIN_TOKEN="local-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
    export ORDER__API__ADMIN_TOKEN
fi
# End users authenticate with JWTs signed with this secret (HS256, 32 bytes).
if [[ -z "${ORDER__API__AUTH__JWT_SECRET:-}" ]]; then
    ORDER__API__AUTH__JWT_SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    export ORDER__API__AUTH__JWT_SECRET
fi
port=${ORDER__SERVER__PORT:-8082}
export ORDER__SERVER__PORT=$port
worker_port=${START_WORKER_PORT:-8084}
compensator_port=${START_COMPENSATOR_PORT:-8085}

# Every port the roles need must be free before anything starts: a taken one
# is named with its holder, instead of a role dying in the background.
holder() {
    local who
    who=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(([^)]*))' | head -1 |
        sed 's/users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/')
    printf '%s' "${who:-another process}"
}
taken=false
command -v ss >/dev/null 2>&1 || say "ss (iproute2) is not installed: the ports are not checked before starting" >&2
for entry in "${port}:order-api (ORDER__SERVER__PORT)" \
    "${worker_port}:order-worker probes (START_WORKER_PORT)" \
    "${compensator_port}:order-compensator probes (START_COMPENSATOR_PORT)"; do
    p=${entry%%:*}
    if [[ -n "$(ss -Hltn "sport = :${p}" 2>/dev/null)" ]]; then
        say "port ${p}, for ${entry#*:}, is taken by $(holder "$p"); stop it or choose another port with that variable" >&2
        taken=true
    fi
done
[[ "$taken" == false ]] || exit 1

profile=${ORDER_CARGO_PROFILE:-release}
say "building (${profile})"
bin=$("${script_dir}/cargo-bins.sh" "$profile")

say "migrating"
"$bin/order-api" migrate >/dev/null
if [[ "$kafka" == true ]]; then
    say "creating the Kafka topic"
    "$bin/order-loadgen" --broker kafka --count 0 --quiet >/dev/null
fi

# Each role's output goes to the terminal, prefixed, and to its own log file.
log_dir=${START_LOG_DIR:-target/start-logs}
mkdir -p "$log_dir"
pids=()
roles=()
run() {
    local role=$1
    shift
    : >"${log_dir}/${role}.log"
    # The prefixer ignores SIGINT, SIGTERM and SIGHUP: Ctrl-C (or a signal
    # to the whole process group) reaches it too, and the roles' last lines
    # (their clean stop) must still be read; it ends when they close the pipe.
    # The process substitution keeps $! the binary's pid, not the prefixer's.
    "$bin/order-$role" "$@" > >(
        trap '' INT TERM HUP
        tee -a "${log_dir}/${role}.log" | sed -u "s/^/[$role] /"
    ) 2>&1 &
    pids+=($!)
    roles+=("$role")
}

stopping=false
# shellcheck disable=SC2317 # invoked by the trap
stop() {
    [[ "$stopping" == true ]] && return
    stopping=true
    say "stopping"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap stop INT TERM
# From here on a command cut short by Ctrl-C (a sleep, a curl) must not end
# the script before the roles have stopped: errors are handled one by one.
set +e

run api
run worker --set "observability.port=${worker_port}"
run compensator --set "observability.port=${compensator_port}"

# A role that ended during start-up stops everything, showing its last lines.
died_at_start() {
    local i code
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            code=0
            wait "${pids[$i]}" || code=$?
            sleep 0.2 # let the prefixer flush
            say "order-${roles[$i]} exited with ${code} during start-up; its last lines (${log_dir}/${roles[$i]}.log):" >&2
            tail -n 20 "${log_dir}/${roles[$i]}.log" >&2
            stop
            return 0
        fi
    done
    return 1
}

# Ready means: the API answers, and the worker has declared its queue and
# consumes. Each probe may take 2 s; all of them START_READY_TIMEOUT seconds.
say "waiting for the roles to be ready"
deadline=$((SECONDS + ${START_READY_TIMEOUT:-120}))
for url in "http://127.0.0.1:${port}/health/ready" \
    "http://127.0.0.1:${worker_port}/health/ready" \
    "http://127.0.0.1:${compensator_port}/health/ready"; do
    until curl -fsS --connect-timeout 1 --max-time 2 "$url" >/dev/null 2>&1; do
        [[ "$stopping" == true ]] && break
        if died_at_start; then
            wait
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            say "not ready within ${START_READY_TIMEOUT:-120} s: ${url}; the roles' last lines:" >&2
            for role in "${roles[@]}"; do tail -n 10 "${log_dir}/${role}.log" | sed "s/^/[$role] /" >&2; done
            stop
            wait
            exit 1
        fi
        sleep 0.2
    done
done

if [[ "$demo" == true && "$stopping" == false ]]; then
    say "publishing a demo burst (200 messages, 20 % duplicates, 2 % poison)"
    broker=rabbitmq
    [[ "$kafka" == true ]] && broker=kafka
    summary=$("$bin/order-loadgen" --broker "$broker" --count 200 --users 50 --products 20 \
        --duplicate-ratio 0.2 --poison-ratio 0.02 --seed "$RANDOM" --quiet) || summary="(publish failed)"
    say "demo burst sent: ${summary}"
fi

if [[ "$stopping" == false ]]; then
    today=$(date -u +%F)
    user_token=$("$bin/order-api" token --user 1 --ttl 12h 2>/dev/null) || user_token="(order-api token failed)"
    cat <<MSG
==> running. Ctrl-C stops everything.
    API            http://127.0.0.1:${port}   (operator token: ${ORDER__API__ADMIN_TOKEN})
    user token     ${user_token}
                   (user 1, 12 h; more with: ORDER__API__AUTH__JWT_SECRET=${ORDER__API__AUTH__JWT_SECRET} $bin/order-api token --user N)
    worker         http://127.0.0.1:${worker_port}/health/ready   (and /metrics)
    compensator    http://127.0.0.1:${compensator_port}/health/ready   (and /metrics)
    logs           ${log_dir}/{api,worker,compensator}.log
    OpenAPI        http://127.0.0.1:${port}/api/v1/openapi.json   (browsable: /api/docs/)
    console        http://127.0.0.1:${port}/console/   (sign in with the operator token)
  try:
    curl -s -H 'Authorization: Bearer ${user_token}' 'http://127.0.0.1:${port}/api/v1/users/1/orders?page=1&pageSize=5'
    curl -s -H 'Authorization: Bearer ${ORDER__API__ADMIN_TOKEN}' 'http://127.0.0.1:${port}/api/v1/stats/orders?date=${today}'
    curl -s -H 'Authorization: Bearer ${ORDER__API__ADMIN_TOKEN}' 'http://127.0.0.1:${port}/api/v1/failures?status=failed'
    curl -s 'http://127.0.0.1:${port}/health'
MSG
fi

# Wait for every role; report each one's exit status.
status=0
for i in "${!pids[@]}"; do
    # A trapped signal interrupts `wait` with 128+n without reaping the child,
    # so wait again: a real exit status comes back the same every time.
    for _ in 1 2 3; do
        code=0
        wait "${pids[$i]}" || code=$?
        [[ $code -le 128 ]] && break
    done
    if [[ $code -ne 0 ]]; then
        say "order-${roles[$i]} exited with ${code}"
        status=1
    fi
done
if [[ "$stopping" == false ]]; then
    say "a role stopped on its own"
    status=1
fi
sleep 0.3 # the prefixers' last lines
say "stopped"
exit "$status"
