#!/usr/bin/env bash
# Checks scripts/start.sh the way a user runs it: the stack comes up, the
# demo burst becomes orders visible through the API, and a stop signal ends
# all three roles with exit 0. Everything it touches is its own: database,
# RabbitMQ names, Redis prefix, ports.
#
# Usage: scripts/check-start.sh [--kafka]
#        scripts/check-start.sh --stops
#   --stops  instead: the other two ways a user stops the stack, without the
#            demo burst: SIGINT to start.sh's whole process group, and Ctrl-C
#            typed in a real terminal (tmux), the latter on the default ports
#            while the test suite's Kafka broker holds 9092. Each must end with
#            every role exiting 0 and start.sh exiting 0.
set -euo pipefail

say() { printf '==> check-start: %s\n' "$*"; }

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "${script_dir}/.."

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

id="start_$$"
export ORDER__DATABASE__DBNAME="ordertest_${id}"
export ORDER__RABBITMQ__EXCHANGE="ordertest.${id}.seckill"
export ORDER__RABBITMQ__QUEUE="ordertest.${id}.orders"
export ORDER__RABBITMQ__DEAD_LETTER_EXCHANGE="ordertest.${id}.dlx"
export ORDER__RABBITMQ__DEAD_LETTER_QUEUE="ordertest.${id}.dlq"
export ORDER__KAFKA__TOPIC="ordertest-${id}"
export ORDER__EVENTS__EXCHANGE="ordertest.${id}.events"
export ORDER__EVENTS__TOPIC="ordertest-${id}-events"
export ORDER__KAFKA__GROUP_ID="ordertest-${id}"
export ORDER__REDIS__KEY_PREFIX="ordertest:${id}:"
export ORDER__API__ADMIN_TOKEN="check-${id}"
ORDER__SERVER__PORT=$(free_port)
START_WORKER_PORT=$(free_port)
START_COMPENSATOR_PORT=$(free_port)
export ORDER__SERVER__PORT START_WORKER_PORT START_COMPENSATOR_PORT

log=$(mktemp)
start_pid=
cleanup() {
    if [[ -n "$start_pid" ]]; then kill -TERM "$start_pid" 2>/dev/null || true; fi
    psql -w -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"${ORDER__DATABASE__DBNAME}\" WITH (FORCE)" >/dev/null 2>&1 || true
    for q in "$ORDER__RABBITMQ__QUEUE" "$ORDER__RABBITMQ__DEAD_LETTER_QUEUE"; do
        rabbitmqctl delete_queue "$q" >/dev/null 2>&1 || true
    done
    rm -f "$log"
}
trap cleanup EXIT

# A start.sh run that ended: exit 0, every role logged its clean stop, and no
# role exited non-zero or panicked.
check_clean_stop() {
    local code=$1 log=$2 how=$3 role
    if [[ $code -ne 0 ]] || grep -qE "exited with|panicked" "$log"; then
        tail -50 "$log"
        say "${how}: start.sh exited with ${code}"
        exit 1
    fi
    for role in api worker compensator; do
        grep -q "\[${role}\].*order-${role} stopped" "$log" || {
            tail -50 "$log"
            say "${how}: order-${role} did not log a clean stop"
            exit 1
        }
    done
    say "${how}: all three roles stopped cleanly; start.sh exited 0"
}

# Waits until every probe of a start.sh run answers ready (up to 25 minutes:
# a first run builds).
wait_ready() {
    local api=$1 worker=$2 compensator=$3 pid=${4:-} port
    for port in "$api" "$worker" "$compensator"; do
        for _ in $(seq 1 3000); do
            curl -fsS --connect-timeout 1 --max-time 2 "http://127.0.0.1:${port}/health/ready" >/dev/null 2>&1 && continue 2
            if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
            sleep 0.5
        done
        return 1
    done
}

if [[ "${1:-}" == --stops ]]; then
    # A taken port stops the start before anything runs, naming its holder.
    say "a taken port is named with its holder"
    python3 -c 'import socket, time
s = socket.socket(); s.bind(("127.0.0.1", int(__import__("sys").argv[1]))); s.listen(); time.sleep(60)' \
        "$START_WORKER_PORT" &
    holder_pid=$!
    for _ in $(seq 1 50); do
        [[ -n "$(ss -Hltn "sport = :${START_WORKER_PORT}" 2>/dev/null)" ]] && break
        sleep 0.1
    done
    code=0
    timeout -k 30 1800 "${script_dir}/start.sh" --no-demo >"$log" 2>&1 || code=$?
    kill "$holder_pid" 2>/dev/null || true
    wait "$holder_pid" 2>/dev/null || true
    if [[ $code -ne 1 ]] || ! grep -q "port ${START_WORKER_PORT}, for order-worker probes (START_WORKER_PORT), is taken by python3" "$log"; then
        cat "$log"
        say "start.sh with a taken port: exit ${code}, holder not named"
        exit 1
    fi
    say "a taken port: start.sh exits 1 naming python3"

    # A role that dies during start-up stops the script with its last lines.
    say "a role that dies at start stops the script"
    code=0
    # With no source and no relay the worker ends at once (the others start
    # fine). Bounded (a first run builds, as in wait_ready): a worker that
    # stays up instead must fail this check, not hang the suite.
    ORDER__RABBITMQ__ENABLED=false ORDER__EVENTS__RELAY=false \
        timeout -k 30 1800 "${script_dir}/start.sh" --no-demo >"$log" 2>&1 || code=$?
    if [[ $code -ne 1 ]] || ! grep -q "order-worker exited with 1 during start-up; its last lines" "$log" ||
        ! grep -q "nothing to do: set rabbitmq.enabled or kafka.enabled, or events.relay" "$log"; then
        cat "$log"
        say "a role dying at start: start.sh exited ${code} without naming it"
        exit 1
    fi
    say "a role dying at start: start.sh exits 1 with its last lines"

    # SIGINT to the process group, as a supervisor or a terminal sends it.
    # Started with SIGINT at its default (a background job of a script
    # would inherit it ignored), in a session and process group of its own.
    say "SIGINT to start.sh's process group"
    python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.setsid()
os.execvp(sys.argv[1], sys.argv[1:])' "${script_dir}/start.sh" --no-demo >"$log" 2>&1 &
    start_pid=$!
    wait_ready "$ORDER__SERVER__PORT" "$START_WORKER_PORT" "$START_COMPENSATOR_PORT" "$start_pid" ||
        { tail -50 "$log"; say "start.sh did not come up"; exit 1; }
    kill -INT -- "-${start_pid}"
    code=0
    wait "$start_pid" || code=$?
    start_pid=
    check_clean_stop "$code" "$log" "SIGINT to the process group"

    # Ctrl-C typed in a terminal: tmux gives start.sh a real pseudo-terminal.
    # Default ports: this runs after the test suite, whose Kafka broker keeps 9092.
    if ! command -v tmux >/dev/null 2>&1; then
        if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tmux >/dev/null
        else
            say "tmux is needed (apt-get install tmux)"
            exit 1
        fi
    fi
    unset ORDER__SERVER__PORT START_WORKER_PORT START_COMPENSATOR_PORT
    say "Ctrl-C in a terminal (tmux), default ports 8082, 8084, 8085"
    socket="check-start-$$"
    exit_file=$(mktemp)
    go_file="${exit_file}.go"
    rm -f "$exit_file"
    : >"$log"
    tmux_cleanup() { tmux -L "$socket" kill-server 2>/dev/null || true; rm -f "$exit_file" "$go_file"; }
    trap 'tmux_cleanup; cleanup' EXIT
    tmux -L "$socket" -f /dev/null new-session -d -s start -x 200 -y 50 \
        "exec bash -c \"while [ ! -e '${go_file}' ]; do sleep 0.1; done; '${script_dir}/start.sh' --no-demo; echo \\\$? >'${exit_file}'; sleep 600\""
    tmux -L "$socket" pipe-pane -t start "cat >>'${log}'"
    touch "$go_file"
    if ! wait_ready 8082 8084 8085; then
        tail -50 "$log"
        say "start.sh on the default ports did not come up after the test suite"
        exit 1
    fi
    tmux -L "$socket" send-keys -t start C-c
    for _ in $(seq 1 120); do
        [[ -s "$exit_file" ]] && break
        sleep 0.5
    done
    [[ -s "$exit_file" ]] || { tail -50 "$log"; say "start.sh did not end within 60 s of Ctrl-C"; exit 1; }
    sleep 0.5 # the last lines through pipe-pane
    check_clean_stop "$(cat "$exit_file")" "$log" "Ctrl-C in a terminal"
    exit 0
fi

say "running scripts/start.sh $*"
"${script_dir}/start.sh" "$@" >"$log" 2>&1 &
start_pid=$!

# Up to 25 minutes: the first run builds in release mode (on a slow machine,
# from nothing, that alone can take over 15).
summary=
for _ in $(seq 1 3000); do
    if ! kill -0 "$start_pid" 2>/dev/null; then
        cat "$log"
        say "start.sh ended before the demo burst"
        exit 1
    fi
    summary=$(sed -n 's/^==> demo burst sent: //p' "$log")
    [[ -n "$summary" ]] && break
    sleep 0.5
done
[[ -n "$summary" ]] || { tail -50 "$log"; say "no demo burst within 25 minutes"; exit 1; }
say "demo burst: ${summary}"
if ! jq -e .distinct_pairs >/dev/null 2>&1 <<<"$summary"; then
    tail -50 "$log"
    say "the demo burst was not published"
    exit 1
fi
expected=$(jq -r .distinct_pairs <<<"$summary")
poison=$(jq -r .poison <<<"$summary")

today=$(date -u +%F)
count=-1
for _ in $(seq 1 120); do
    count=$(curl -fsS -H "Authorization: Bearer ${ORDER__API__ADMIN_TOKEN}" \
        "http://127.0.0.1:${ORDER__SERVER__PORT}/api/v1/stats/orders?date=${today}" | jq -r .order_count)
    [[ "$count" == "$expected" ]] && break
    sleep 0.5
done
if [[ "$count" != "$expected" ]]; then
    tail -50 "$log"
    say "the API shows ${count} orders, expected ${expected}"
    exit 1
fi
say "the API shows all ${count} orders of the burst"
failed=$(curl -fsS -H "Authorization: Bearer ${ORDER__API__ADMIN_TOKEN}" \
    "http://127.0.0.1:${ORDER__SERVER__PORT}/api/v1/failures?status=failed" | jq -r .total)
if [[ "$failed" != "$poison" ]]; then
    say "the API lists ${failed} failed messages, ${poison} poison were sent"
    exit 1
fi
say "the API lists the ${poison} poison messages as failures"
user_token=
for _ in $(seq 1 20); do
    user_token=$(sed -n 's/^    user token  *\([^ ]*\)$/\1/p' "$log" | head -1)
    [[ -n "$user_token" ]] && break
    sleep 0.5
done
[[ -n "$user_token" ]] || { tail -20 "$log"; say "start.sh printed no user token"; exit 1; }
own=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${user_token}" \
    "http://127.0.0.1:${ORDER__SERVER__PORT}/api/v1/users/1/orders")
other=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${user_token}" \
    "http://127.0.0.1:${ORDER__SERVER__PORT}/api/v1/users/2/orders")
anonymous=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:${ORDER__SERVER__PORT}/api/v1/users/1/orders")
if [[ "$own/$other/$anonymous" != "200/403/401" ]]; then
    say "with the printed user token: own orders ${own}, another user's ${other}, no token ${anonymous} (expected 200/403/401)"
    exit 1
fi
say "the printed user token reads user 1's orders only"
for port in "$START_WORKER_PORT" "$START_COMPENSATOR_PORT"; do
    curl -fsS "http://127.0.0.1:${port}/health/ready" >/dev/null || { say "probe on ${port} not ready"; exit 1; }
done

say "sending SIGTERM to start.sh"
kill -TERM "$start_pid"
code=0
wait "$start_pid" || code=$?
start_pid=
check_clean_stop "$code" "$log" "SIGTERM to start.sh"
