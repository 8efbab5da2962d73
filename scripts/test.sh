#!/usr/bin/env bash
# Run the project's whole test suite.
#
# Usage: scripts/test.sh [extra cargo test arguments]
#   e.g. scripts/test.sh -p order-core
#        scripts/test.sh -- --nocapture
#
# Steps: install missing build tools (root + apt-get only), make sure
# PostgreSQL, MariaDB, Redis and RabbitMQ are running (scripts/services.sh)
# and a Kafka-protocol broker (scripts/kafka.sh),
# drop leftover ordertest_* databases, build every target, run every test,
# then the API contract test (scripts/api-contract.sh), the deployment files
# (scripts/validate-deploy.sh), the start script (scripts/check-start.sh), the
# image run for real in podman (scripts/container-smoke.sh), a short fuzzing
# run (scripts/fuzz.sh 30), a quick run of the fault suite (scripts/chaos.sh
# --quick), another on MariaDB with a flood of large poison messages, and a
# quick benchmark run (scripts/bench.sh --quick).
set -euo pipefail

say() { printf '==> %s\n' "$*"; }

on_exit() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        printf '==> FAILED (exit code %d)\n' "$rc" >&2
    fi
}
trap on_exit EXIT

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "${script_dir}/.." && pwd)
say "cd ${repo_root}"
cd "$repo_root"

# ------------------------------------------------------------ build tools ---
say "checking build tools"
missing=()
for tool in cc make pkg-config cmake; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "missing ${missing[*]}: installing build-essential pkg-config cmake python3-venv"
        DEBIAN_FRONTEND=noninteractive apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            build-essential pkg-config cmake python3-venv
    else
        say "warning: missing build tools: ${missing[*]} (install build-essential pkg-config cmake)" >&2
    fi
fi
if ! command -v cargo >/dev/null 2>&1; then
    say "cargo is not installed (or not on PATH); install Rust via https://rustup.rs" >&2
    exit 1
fi

# --------------------------------------------------------------- services ---
say "ensuring backing services: postgres mysql redis rabbitmq"
"${script_dir}/services.sh" ensure postgres mysql redis rabbitmq
say "ensuring the Kafka broker (Tansu)"
"${script_dir}/kafka.sh" start

# ------------------------------------------------- leftover test databases ---
say "dropping leftover ordertest_* databases"
pg_dbs=$(psql -w -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -Atc \
    "select datname from pg_database where datname like 'ordertest\_%'")
while IFS= read -r db; do
    [[ -n "$db" ]] || continue
    say "  PostgreSQL: DROP DATABASE ${db}"
    psql -w -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -qc \
        "DROP DATABASE IF EXISTS \"${db//\"/\"\"}\" WITH (FORCE)"
done <<<"$pg_dbs"

if command -v mariadb >/dev/null 2>&1; then
    mysql_client=mariadb
else
    mysql_client=mysql
fi
my_dbs=$("$mysql_client" -h127.0.0.1 -P3306 -uroot -N -B -e \
    "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'ordertest\_%'")
while IFS= read -r db; do
    [[ -n "$db" ]] || continue
    say "  MariaDB: DROP DATABASE ${db}"
    "$mysql_client" -h127.0.0.1 -P3306 -uroot -e "DROP DATABASE IF EXISTS \`${db//\`/\`\`}\`"
done <<<"$my_dbs"

# ------------------------------------------------------ test environment ---
export TEST_POSTGRES_URL="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export TEST_MYSQL_URL="${TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/mysql}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"
export TEST_KAFKA_BROKERS="${TEST_KAFKA_BROKERS:-127.0.0.1:9092}"
export TEST_AMQP_URL="${TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"

locked=()
if [[ -f Cargo.lock ]]; then
    locked=(--locked)
fi

# ------------------------------------------------------------------ build ---
build_args=(build --workspace --all-targets "${locked[@]}")
say "cargo ${build_args[*]}"
cargo "${build_args[@]}"

# ------------------------------------------------------------------- test ---
# `--workspace` overrides `-p`, so leave it out when the caller picks packages.
workspace=(--workspace)
for arg in "$@"; do
    case "$arg" in
        --) break ;;
        -p | --package | --package=* | -p?*) workspace=() ;;
    esac
done
test_args=(test "${workspace[@]}" "${locked[@]}" --no-fail-fast "$@")
say "cargo ${test_args[*]}"
test_log=$(mktemp)
set +e
cargo "${test_args[@]}" 2>&1 | tee "$test_log"
test_rc=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary).
read -r passed failed < <(awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($i == "passed;") p += $(i - 1)
            if ($i == "failed;") f += $(i - 1)
        }
    } END { print p + 0, f + 0 }' "$test_log")
rm -f "$test_log"
if [[ $test_rc -ne 0 ]]; then
    echo "tests: ${passed} passed, ${failed} failed"
    exit "$test_rc"
fi
if [[ $passed -eq 0 ]]; then
    say "no test ran" >&2
    exit 1
fi

# ------------------------------------------------------ end-to-end checks ---
# Only on a whole-workspace run: they use the binaries just built.
# A check that exits 77 could not run on this machine (it says why): skipped,
# and counted as such, not as passed.
skipped=0
check() {
    local what=$1 code=0 started=$SECONDS
    shift
    say "$what"
    "$@" || code=$?
    say "$((SECONDS - started))s: ${what}"
    case $code in
        0) passed=$((passed + 1)) ;;
        77)
            skipped=$((skipped + 1))
            say "SKIPPED: ${what}"
            ;;
        *)
            echo "tests: ${passed} passed, $((failed + 1)) failed"
            exit 1
            ;;
    esac
}
if [[ ${#workspace[@]} -gt 0 ]]; then
    # The checks below that run the roles (start.sh, the container smoke
    # test, the fault suite, the benchmarks) run the release binaries, the
    # profile the image ships: built once here, so that code only the
    # optimised build refuses fails the suite by name (the tests above build
    # debug only; the API contract and browser tests use that debug order-api).
    # ORDER_CARGO_PROFILE=dev runs them on debug binaries instead, sooner.
    export ORDER_CARGO_PROFILE="${ORDER_CARGO_PROFILE:-release}"
    check "the ${ORDER_CARGO_PROFILE} build of the binaries (release: what the image ships)" \
        cargo build --profile "$ORDER_CARGO_PROFILE" --locked --workspace --bins
    check "API contract (schemathesis against the OpenAPI document)" "${script_dir}/api-contract.sh"
    check "browser: the API docs page and the operator console in headless Chromium (Playwright)" "${script_dir}/browser-test.sh"
    check "vendored browser files (Swagger UI, uPlot) equal their pinned npm packages" "${script_dir}/vendor-ui.sh" --check
    check "deployment files (Kubernetes manifests, Compose, Dockerfile, dashboard, config keys; the checker's lint and unit tests)" \
        "${script_dir}/validate-deploy.sh"
    check "scripts/start.sh end to end (demo burst, clean stop on SIGTERM)" "${script_dir}/check-start.sh"
    check "scripts/start.sh --kafka end to end" "${script_dir}/check-start.sh" --kafka
    check "scripts/start.sh stopped by SIGINT to its process group and by Ctrl-C in a terminal (tmux, default ports)" \
        "${script_dir}/check-start.sh" --stops
    check "the image in podman: runtime stage, run as k8s/ and docker-compose.yml run it, traffic, clean stops; broken images refused" \
        "${script_dir}/container-smoke.sh"
    check "fuzzing, short run (message codec and failure records, cargo fuzz)" "${script_dir}/fuzz.sh" 30
    check "fault suite, quick run (RabbitMQ and Kafka: kills, cuts, bad input; invariants)" \
        "${script_dir}/chaos.sh" --quick
    check "fault suite, quick run on MariaDB with a flood of 400 large poison messages (RabbitMQ)" \
        "${script_dir}/chaos.sh" --quick --broker rabbitmq --engine mysql --poison-flood 400
    check "benchmarks, quick run (so the script cannot rot; figures are not judged here)" "${script_dir}/bench.sh" --quick
fi
say "all tests passed"
summary="tests: ${passed} passed, ${failed} failed"
((skipped == 0)) || summary+=", ${skipped} skipped"
echo "$summary"
