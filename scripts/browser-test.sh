#!/usr/bin/env bash
# Browser test of the pages order-api serves: starts order-api against a
# fresh PostgreSQL database, with an operator token and a read-only token,
# seeds failures (and orders, by retrying some of them through the API) and
# runs each tests/browser/*.test.mjs (Node, playwright-core driving Debian's
# chromium) against it:
# - the API docs page, GET /api/docs (tests/browser/docs.test.mjs), which must
#   render every operation, load nothing from outside the server and log no
#   error; its screenshot is target/browser/docs.png;
# - the operator console, GET /console/ (tests/browser/console.test.mjs):
#   sign-in, overview, filters, retries, hostile messages, the read-only
#   token, narrow screens; its screenshots are docs/console/*.png.
# The tests get the server as their argument and the tokens in
# CONSOLE_OPERATOR_TOKEN, CONSOLE_READONLY_TOKEN and CONSOLE_USER_TOKEN.
#
# Usage: scripts/browser-test.sh [--build]
#   --build  run `cargo build -p order-api` first (otherwise only when
#            target/debug/order-api is missing)
# Needs: node >= 20 and npm, PostgreSQL on 127.0.0.1:5432 (user postgres,
# trust) and Redis on 127.0.0.1:6379. As root with apt-get, installs chromium
# when /usr/bin/chromium is missing; runs `npm ci` in tests/browser/ when its
# node_modules do not hold the pinned playwright-core.
set -euo pipefail

say() { printf '==> %s\n' "$*"; }
die() { printf 'browser test: %s\n' "$*" >&2; exit 1; }

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "${script_dir}/.."

build=false
while [[ $# -gt 0 ]]; do
    case "$1" in
        --build) build=true; shift ;;
        *) echo "usage: $0 [--build]" >&2; exit 2 ;;
    esac
done

# ------------------------------------------------------------- chromium ---
chromium=/usr/bin/chromium
if [[ ! -x "$chromium" ]]; then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing chromium (Debian package)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        die "${chromium} is missing: install Debian's chromium (apt-get install chromium)"
    fi
fi

# ------------------------------------------------------- node packages ---
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    die "node and npm are needed (node >= 20)"
fi
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
    || die "node >= 20 is needed, found $(node --version)"
pinned=$(node -p 'require(process.argv[1]).packages["node_modules/playwright-core"].version' \
    "$PWD/tests/browser/package-lock.json")
installed=$(node -p 'require(process.argv[1]).version' \
    "$PWD/tests/browser/node_modules/playwright-core/package.json" 2>/dev/null || true)
if [[ "$installed" != "$pinned" ]]; then
    say "npm ci in tests/browser (playwright-core ${pinned})"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

# -------------------------------------------------------------- order-api ---
binary=target/debug/order-api
if $build || [[ ! -x "$binary" ]]; then
    say "cargo build -p order-api"
    cargo build -p order-api
fi

db="ordertest_browser_$$"
token="browser-$$-$RANDOM"
readonly_token="browser-readonly-$$-$RANDOM"
jwt_secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
log=$(mktemp)
api_pid=
cleanup() {
    local rc=$?
    if [[ -n "$api_pid" ]]; then
        kill -TERM "$api_pid" 2>/dev/null || true
        wait "$api_pid" 2>/dev/null || true
    fi
    psql -w -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS ${db} WITH (FORCE)" >/dev/null 2>&1 || true
    if [[ $rc -ne 0 && -s "$log" ]]; then
        echo "--- order-api log (last 40 lines) ---" >&2
        tail -n 40 "$log" >&2
    fi
    rm -f "$log"
    if [[ $rc -ne 0 ]]; then
        printf '==> browser test FAILED (exit code %d)\n' "$rc" >&2
    fi
}
trap cleanup EXIT

psql -w -h 127.0.0.1 -U postgres -qc "CREATE DATABASE ${db}" \
    || die "cannot create database ${db} on 127.0.0.1:5432 (is PostgreSQL running? scripts/services.sh ensure postgres)"
say "starting order-api on a free port (database ${db})"
# Port 0: the system picks a free port, which order-api logs at start.
ORDER__DATABASE__URL="postgres://postgres@127.0.0.1:5432/${db}" \
ORDER__SERVER__HOST=127.0.0.1 \
ORDER__SERVER__PORT=0 \
ORDER__API__ADMIN_TOKEN="$token" \
ORDER__API__READONLY_TOKEN="$readonly_token" \
ORDER__API__AUTH__JWT_SECRET="$jwt_secret" \
ORDER__REDIS__KEY_PREFIX="ordertest:${db}:" \
ORDER__LOG__LEVEL="warn,order_api=info" \
ORDER__LOG__FORMAT=json \
    "$binary" >"$log" 2>&1 &
api_pid=$!
port=
for _ in $(seq 1 300); do
    port=$(grep -o '"server.port":[0-9]*' "$log" | head -n 1 | cut -d: -f2 || true)
    [[ -n "$port" ]] && break
    kill -0 "$api_pid" 2>/dev/null || die "order-api exited at start"
    sleep 0.2
done
[[ -n "$port" ]] || die "order-api did not log its port within 60 s"
base="http://127.0.0.1:${port}"
say "order-api is up at ${base}"

# ---------------------------------------------------------------- seed ---
# Failures as the worker records them (order-api migrated the database at
# start): poison messages whose reasons group (the same reason with other
# values), one whose body and reason carry HTML and script, one that is not
# UTF-8, and pending retryable ones whose message is a valid seckill-success
# message, so that retrying them creates orders. Kept pending for an hour:
# no compensator runs here anyway.
say "seeding failures into ${db}"
psql -w -h 127.0.0.1 -U postgres -d "$db" -v ON_ERROR_STOP=1 -q <<'SQL'
CREATE TEMP TABLE seed (msg text, reason text, status text, retryable boolean, source text, age_min int);
INSERT INTO seed VALUES
  ('{"user_id":9101,"product_id":1,"quantity":1,"unit_price":1.234,"seckill_id":"poison_a","timestamp":"2026-12-01T12:00:00Z"}',
   'unit_price: must have at most 2 decimal places (got 1.234)', 'failed', false, 'rabbitmq', 50),
  ('{"user_id":9102,"product_id":1,"quantity":1,"unit_price":5.001,"seckill_id":"poison_b","timestamp":"2026-12-01T12:00:00Z"}',
   'unit_price: must have at most 2 decimal places (got 5.001)', 'failed', false, 'kafka', 49),
  ('{"user_id":9103,"product_id":1,"quantity":1,"unit_price":0.125,"seckill_id":"poison_c","timestamp":"2026-12-01T12:00:00Z"}',
   'unit_price: must have at most 2 decimal places (got 0.125)', 'failed', false, 'rabbitmq', 48),
  ('{"user_id":9104,"product_id":1,"quantity":0,"unit_price":10,"seckill_id":"poison_d","timestamp":"2026-12-01T12:00:00Z"}',
   'quantity: must be between 1 and 1000 (got 0)', 'failed', false, 'rabbitmq', 47),
  ('{"user_id":9105,"product_id":1,"quantity":5000,"unit_price":10,"seckill_id":"poison_e","timestamp":"2026-12-01T12:00:00Z"}',
   'quantity: must be between 1 and 1000 (got 5000)', 'failed', false, 'kafka', 46),
  ('{"user_id":"<img src=x onerror=alert(1)>","product_id":1,"note":"<script>alert(2)</script>","seckill_id":"hostile"}',
   'user_id: invalid type: string "<img src=x onerror=alert(1)><script>alert(3)</script>", expected i64', 'failed', false, 'kafka', 45),
  ('{"user_id":9201,"product_id":7,"quantity":1,"unit_price":"19.99","seckill_id":"seed_order_1","timestamp":"2026-12-01T12:00:00Z"}',
   'database error: deadlock detected', 'pending', true, 'rabbitmq', 40),
  ('{"user_id":9202,"product_id":7,"quantity":2,"unit_price":"25.50","seckill_id":"seed_order_2","timestamp":"2026-12-01T12:00:00Z"}',
   'database error: deadlock detected', 'pending', true, 'rabbitmq', 39),
  ('{"user_id":9203,"product_id":8,"quantity":3,"unit_price":"9.99","seckill_id":"seed_order_3","timestamp":"2026-12-01T12:00:00Z"}',
   'database error: deadlock detected', 'pending', true, 'kafka', 38),
  ('{"user_id":9301,"product_id":9,"quantity":1,"unit_price":"49.00","seckill_id":"single_retry","timestamp":"2026-12-01T12:00:00Z"}',
   'database error: statement timeout', 'pending', true, 'rabbitmq', 30),
  ('{"user_id":9401,"product_id":10,"quantity":1,"unit_price":"12.00","seckill_id":"bulk_retry_1","timestamp":"2026-12-01T12:00:00Z"}',
   'database error: connection reset', 'pending', true, 'rabbitmq', 20),
  ('{"user_id":9402,"product_id":10,"quantity":2,"unit_price":"12.00","seckill_id":"bulk_retry_2","timestamp":"2026-12-01T12:00:00Z"}',
   'database error: connection reset', 'pending', true, 'kafka', 19),
  ('{"user_id":9403,"product_id":10,"quantity":3,"unit_price":"12.00","seckill_id":"bulk_retry_3","timestamp":"2026-12-01T12:00:00Z"}',
   'database error: connection reset', 'pending', true, 'rabbitmq', 18),
  ('{"user_id":9501,"product_id":11,"quantity":1,"unit_price":"30.00","seckill_id":"readonly_pending","timestamp":"2026-12-01T12:00:00Z"}',
   'database error: connection reset', 'pending', true, 'api', 10);
INSERT INTO order_failures
    (message_data, message_digest, message_size, error_message, status, retryable, source,
     next_retry_at, created_at, updated_at)
SELECT convert_to(msg, 'UTF8'), encode(sha256(convert_to(msg, 'UTF8')), 'hex'),
       octet_length(convert_to(msg, 'UTF8')), reason, status, retryable, source,
       now() + interval '1 hour', now() - make_interval(mins => age_min), now() - make_interval(mins => age_min)
  FROM seed ORDER BY age_min DESC;
-- Bytes that are not UTF-8 (the API shows them as base64).
INSERT INTO order_failures
    (message_data, message_digest, message_size, error_message, status, retryable, source,
     next_retry_at, created_at, updated_at)
SELECT b, encode(sha256(b), 'hex'), octet_length(b), 'message is not UTF-8 JSON: invalid utf-8 sequence at byte 0', 'failed', false, 'rabbitmq',
        now() + interval '1 hour', now() - interval '44 minutes', now() - interval '44 minutes'
  FROM (SELECT '\xfffe00016e6f74207574662d38'::bytea AS b) AS bytes;
SQL
# Orders of today, made the way operators make them: retrying the seed_order
# failures through the API (which writes the day's statistics too); then one
# of them cancelled.
api_call() { # METHOD PATH [BODY]
    curl -fsS -X "$1" -H "Authorization: Bearer ${token}" -H 'Content-Type: application/json' \
        ${3:+--data "$3"} "${base}/api/v1/$2"
}
for id in $(psql -w -h 127.0.0.1 -U postgres -d "$db" -At -c \
        "SELECT id FROM order_failures WHERE position('seed_order_'::bytea IN message_data) > 0 ORDER BY id" 2>/dev/null); do
    api_call POST "failures/${id}/retry" >/dev/null || die "retrying seeded failure ${id} failed"
done
first_order=$(psql -w -h 127.0.0.1 -U postgres -d "$db" -At -c \
    "SELECT order_id FROM orders WHERE seckill_id = 'seed_order_1'")
[[ -n "$first_order" ]] || die "retrying the seeded failures made no order"
api_call PUT "orders/${first_order}/cancel" >/dev/null || die "cancelling order ${first_order} failed"
user_token=$(ORDER__API__AUTH__JWT_SECRET="$jwt_secret" "$binary" token --user 9202 --ttl 1h 2>/dev/null | tail -n 1) \
    || die "order-api token did not mint a user token"

failed=0
for t in tests/browser/*.test.mjs; do
    say "node ${t} ${base}"
    CONSOLE_OPERATOR_TOKEN="$token" CONSOLE_READONLY_TOKEN="$readonly_token" CONSOLE_USER_TOKEN="$user_token" \
        node "$t" "$base" || { failed=1; echo "browser test: ${t} FAILED" >&2; }
done
[[ $failed -eq 0 ]] || exit 1
say "browser tests passed (screenshots in target/browser/ and docs/console/)"
