#!/usr/bin/env bash
# Browser test of the pages order-api serves: starts order-api against a
# fresh PostgreSQL database and runs each tests/browser/*.test.mjs (Node,
# playwright-core driving Debian's chromium) against it. Today: the API docs
# page, GET /api/docs (tests/browser/docs.test.mjs), which must render every
# operation, load nothing from outside the server and log no error; its
# screenshot is target/browser/docs.png.
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

failed=0
for t in tests/browser/*.test.mjs; do
    say "node ${t} ${base}"
    node "$t" "$base" || { failed=1; echo "browser test: ${t} FAILED" >&2; }
done
[[ $failed -eq 0 ]] || exit 1
say "browser tests passed (screenshots in target/browser/)"
