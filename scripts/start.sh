#!/usr/bin/env bash
# Run the order service locally: make sure the backing services are up,
# build in release mode, migrate, then run order-api, order-worker and
# order-compensator together, each log line prefixed by its role.
# Ctrl-C (or SIGTERM) stops all three.
#
# Usage: scripts/start.sh [--mysql]
#   --mysql   use MariaDB/MySQL on 127.0.0.1:3306 instead of PostgreSQL
# Every ORDER__… environment variable is passed through (see README.md).
set -euo pipefail

say() { printf '==> %s\n' "$*"; }

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "${script_dir}/.."

database=postgres
for arg in "$@"; do
    case "$arg" in
        --mysql) database=mysql ;;
        -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown option: $arg" >&2; exit 2 ;;
    esac
done
if [[ "$database" == mysql ]]; then
    export ORDER__DATABASE__URL="${ORDER__DATABASE__URL:-mysql://root@127.0.0.1:3306/order_db}"
    mysql_client=$(command -v mariadb || command -v mysql)
    "${script_dir}/services.sh" ensure mysql redis rabbitmq
    "$mysql_client" -h127.0.0.1 -uroot -e 'CREATE DATABASE IF NOT EXISTS order_db'
else
    "${script_dir}/services.sh" ensure postgres redis rabbitmq
    if ! psql -w -h 127.0.0.1 -U postgres -Atc "select 1 from pg_database where datname = 'order_db'" | grep -q 1; then
        say "creating database order_db"
        psql -w -h 127.0.0.1 -U postgres -qc 'CREATE DATABASE order_db'
    fi
fi

say "building (release)"
cargo build --release --workspace --bins

bin=target/release
say "migrating"
"$bin/order-api" migrate

pids=()
stop() {
    say "stopping"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait
    say "stopped"
}
trap stop INT TERM

run() {
    local role=$1
    shift
    # The process substitution keeps $! the binary's pid, not the prefixer's.
    "$bin/order-$role" "$@" > >(sed -u "s/^/[$role] /") 2>&1 &
    pids+=($!)
}
run api
run worker
run compensator
say "running: order-api on port ${ORDER__SERVER__PORT:-8082}; Ctrl-C stops everything"
wait || true
