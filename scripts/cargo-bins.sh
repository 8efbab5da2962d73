#!/usr/bin/env bash
# Builds the workspace's binaries with one cargo profile and prints the folder
# they are in: the one place where ORDER_CARGO_PROFILE's values are known.
#
# Usage: bin_dir=$(scripts/cargo-bins.sh PROFILE [cargo build arguments...])
#   PROFILE  release (target/release) or dev (target/debug); anything else
#            exits 2 naming it
# cargo's own output goes to stderr, as cargo writes it.
set -euo pipefail

profile=${1:?usage: cargo-bins.sh release|dev [cargo build arguments...]}
shift
case "$profile" in
    release) dir=target/release ;;
    dev) dir=target/debug ;;
    *)
        echo "ORDER_CARGO_PROFILE must be release or dev, got '${profile}'" >&2
        exit 2
        ;;
esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --profile "$profile" --workspace --bins "$@" >&2
echo "$dir"
