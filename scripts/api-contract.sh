#!/usr/bin/env bash
# Contract test of order-api: runs schemathesis (PyPI) against the OpenAPI
# document of a running API, with authentication configured: once with the
# operator token, once as an end user (a JWT from `order-api token`), and fails
# on any 5xx or any response the document does not describe (status, content
# type, schema, headers).
#
# Usage: scripts/api-contract.sh [--max-examples N]
# Needs: a built target/debug/order-api, PostgreSQL and Redis on localhost.
set -euo pipefail

say() { printf '==> %s\n' "$*"; }

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "${script_dir}/.."

max_examples=40
while [[ $# -gt 0 ]]; do
    case "$1" in
        --max-examples) max_examples=$2; shift 2 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done

schemathesis_version=4.32.5
venv=.venv
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$schemathesis_version"; then
    say "installing schemathesis ${schemathesis_version} into ${venv}"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "schemathesis==${schemathesis_version}"
fi

binary=target/debug/order-api
[[ -x "$binary" ]] || { echo "build first: cargo build -p order-api" >&2; exit 1; }

db="ordertest_contract_$$"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token="contract-$$-$RANDOM"
jwt_secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
log=$(mktemp)
api_pid=
cleanup() {
    [[ -n "$api_pid" ]] && kill -TERM "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null
    psql -w -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS ${db} WITH (FORCE)" >/dev/null 2>&1 || true
    rm -f "$log"
}
trap cleanup EXIT

psql -w -h 127.0.0.1 -U postgres -qc "CREATE DATABASE ${db}"
say "starting order-api on 127.0.0.1:${port} (database ${db})"
ORDER__DATABASE__URL="postgres://postgres@127.0.0.1:5432/${db}" \
ORDER__SERVER__PORT="$port" \
ORDER__API__ADMIN_TOKEN="$token" \
ORDER__API__AUTH__JWT_SECRET="$jwt_secret" \
ORDER__REDIS__KEY_PREFIX="ordertest:${db}:" \
ORDER__LOG__LEVEL=warn \
    "$binary" >"$log" 2>&1 &
api_pid=$!
for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then break; fi
    if ! kill -0 "$api_pid" 2>/dev/null; then cat "$log" >&2; exit 1; fi
    sleep 0.2
done

# The document's examples name these rows, so the examples phase reads real data.
say "seeding the orders and the failure the document's examples name"
message='{"user_id":1,"product_id":3,"quantity":1,"unit_price":"2.50","seckill_id":"seckill_demo","timestamp":"2026-01-01T00:00:00Z"}'
psql -w -h 127.0.0.1 -U postgres -d "$db" -v ON_ERROR_STOP=1 -q <<SQL
INSERT INTO orders (order_id, user_id, product_id, quantity, unit_price, total_amount, status, seckill_id)
VALUES ('0193a5e0-0000-7000-8000-000000000001', 1, 1, 2, 9.99, 19.98, 'pending', 'seckill_demo'),
       ('0193a5e0-0000-7000-8000-000000000002', 1, 2, 1, 5.00, 5.00, 'completed', 'seckill_demo');
INSERT INTO order_items (order_id, product_id, product_name, quantity, unit_price, total_price)
VALUES ('0193a5e0-0000-7000-8000-000000000001', 1, 'Phone', 2, 9.99, 19.98),
       ('0193a5e0-0000-7000-8000-000000000002', 2, NULL, 1, 5.00, 5.00);
INSERT INTO idempotency_records (user_id, product_id, order_id)
VALUES (1, 1, '0193a5e0-0000-7000-8000-000000000001'), (1, 2, '0193a5e0-0000-7000-8000-000000000002');
INSERT INTO order_failures (message_data, message_size, message_digest, error_message, status, retryable, source, next_retry_at)
VALUES (convert_to('${message}', 'UTF8'), octet_length('${message}'), repeat('a', 64), 'earlier write failed', 'pending', true, 'rabbitmq', now() + interval '1 hour');
-- Poison shown as base64 (not UTF-8) and one kept truncated, so listings show every form.
INSERT INTO order_failures (message_data, message_size, message_digest, error_message, status, retryable, source, next_retry_at)
VALUES (decode('7b22757365725f6964223aff007d', 'hex'), 14, repeat('b', 64), 'message is not UTF-8', 'failed', false, 'kafka', now()),
       (convert_to(repeat('x', 1024), 'UTF8'), 102400, repeat('c', 64), 'message larger than 64 KiB', 'failed', false, 'kafka', now());
SQL

# User 1 owns the seeded orders; the examples name them.
user_token=$(ORDER__API__AUTH__JWT_SECRET="$jwt_secret" "$binary" token --user 1 --ttl 1h)
for who in operator user; do
    if [[ $who == operator ]]; then bearer=$token; else bearer=$user_token; fi
    say "schemathesis as the ${who}: ${max_examples} examples per operation"
    "$venv/bin/schemathesis" run "http://127.0.0.1:${port}/api/v1/openapi.json" \
        --header "Authorization: Bearer ${bearer}" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
        --max-examples "$max_examples" \
        --seed 20261125 \
        --request-timeout 10 \
        --generation-database none \
        --no-color
done
say "contract test passed"
