#!/usr/bin/env bash
# Checks scripts/start.sh the way a user runs it: the stack comes up, the
# demo burst becomes orders visible through the API, and a stop signal ends
# all three roles with exit 0. Everything it touches is its own: database,
# RabbitMQ names, Redis prefix, ports.
#
# Usage: scripts/check-start.sh [--kafka]
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
if [[ $code -ne 0 ]] || grep -q "exited with" "$log"; then
    tail -50 "$log"
    say "start.sh exited with ${code}"
    exit 1
fi
for role in api worker compensator; do
    grep -q "^\[${role}\].*order-${role} stopped" "$log" || { tail -50 "$log"; say "order-${role} did not log a clean stop"; exit 1; }
done
say "all three roles stopped cleanly; start.sh exited 0"
