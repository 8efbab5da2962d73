#!/usr/bin/env bash
# The fault suite: the three binaries as processes (2 workers, 2 compensators,
# 1 API) under load and faults, then the invariants (nothing lost, nothing
# doubled). The harness is order-loadgen/examples/chaos; docs/RELIABILITY.md
# says what it does and holds the figures of the last full run.
#
# Usage: scripts/chaos.sh [--quick] [--broker rabbitmq|kafka|both] [harness options]
#   --quick     3,000 messages and shorter cuts (CI runs this)
#   --broker    where the stream goes (default: both, one run after the other)
#   harness options, e.g. --seed N, --messages N, --engine mysql,
#   --poison-flood N (N extra poison messages of about 60 KiB, in one burst):
#   see `target/debug/examples/chaos --help`
#
# Needs the local services (started here if they are down) and starts its own
# Kafka broker (Tansu, installed by scripts/kafka.sh). Each run writes every
# process's log to target/chaos/<broker>-<run id>/. Exit 0 when every
# invariant held on every run, 1 otherwise.
set -euo pipefail

say() { printf '==> %s\n' "$*"; }

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "${script_dir}/.."

brokers=(rabbitmq kafka)
args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --broker)
            [[ $# -ge 2 ]] || { echo "--broker needs a value" >&2; exit 2; }
            case "$2" in
                both) brokers=(rabbitmq kafka) ;;
                rabbitmq | kafka) brokers=("$2") ;;
                *) echo "--broker: rabbitmq, kafka or both, not '$2'" >&2; exit 2 ;;
            esac
            shift 2
            ;;
        -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
        *) args+=("$1"); shift ;;
    esac
done

"${script_dir}/services.sh" ensure postgres mysql redis rabbitmq
tansu=$("${script_dir}/kafka.sh" path)

# ORDER_CARGO_PROFILE=dev runs the suite on debug binaries (sooner to build);
# the default is release.
profile=${ORDER_CARGO_PROFILE:-release}
say "building the binaries (${profile}) and the harness"
bin_dir=$("${script_dir}/cargo-bins.sh" "$profile" -q)
cargo build -p order-loadgen --example chaos -q

failed=()
for broker in "${brokers[@]}"; do
    say "fault suite on ${broker}"
    if ! target/debug/examples/chaos --broker "$broker" --tansu "$tansu" \
        --bin-dir "$bin_dir" "${args[@]}"; then
        failed+=("$broker")
    fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
    say "fault suite FAILED on: ${failed[*]}"
    exit 1
fi
say "fault suite passed on: ${brokers[*]}"
