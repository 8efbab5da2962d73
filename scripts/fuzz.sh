#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the seckill-message codec
# and the failure-record encoding: the target fuzz/fuzz_targets/seckill_message.rs.
#
# Usage: scripts/fuzz.sh [SECONDS]     (default 60)
#   e.g. scripts/fuzz.sh 30            the short run of scripts/test.sh
#        scripts/fuzz.sh 3600          a long run
#
# Installs cargo-fuzz 0.13 when missing, builds the target (with
# `cargo +nightly` when a nightly toolchain is installed, otherwise the
# default toolchain with RUSTC_BOOTSTRAP=1) and fuzzes for SECONDS. New corpus
# entries go to a scratch directory, so the committed seeds
# (fuzz/corpus/seckill_message, regenerated with
# `cargo run -p order-loadgen --example fuzz_seeds`) stay as they are.
#
# Exit code: 0 when nothing was found; non-zero when the fuzzer found a crash
# (the reproducer is written to fuzz/artifacts/seckill_message/ and printed)
# or the build failed.
set -euo pipefail

say() { printf '==> %s\n' "$*"; }

seconds=${1:-60}
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS]" >&2
    exit 2
fi

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "${script_dir}/.." && pwd)
cd "$repo_root"

target=seckill_message
seeds=fuzz/corpus/${target}
artifacts=fuzz/artifacts/${target}

# ------------------------------------------------------------- cargo-fuzz ---
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked --version '^0.13'
fi

# -------------------------------------------------------------- toolchain ---
# cargo fuzz needs nightly compiler flags (-Z...).
toolchain=()
if command -v rustup >/dev/null 2>&1 && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
    unset RUSTC_BOOTSTRAP
else
    say "no nightly toolchain: using $(rustc --version) with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
fi

# No sanitizer: the code under test has no unsafe code, and without
# AddressSanitizer the build is shorter, runs about 4x as many inputs a
# second and works on a stable toolchain with RUSTC_BOOTSTRAP as well.
# Panics, overflows and debug assertions are what the target checks. Only
# the crates on the fuzzed path are optimized (fuzz/Cargo.toml).
build_flags=(--sanitizer none)

say "cargo ${toolchain[*]} fuzz build ${build_flags[*]} ${target}"
cargo "${toolchain[@]}" fuzz build "${build_flags[@]}" "$target"

# -------------------------------------------------------------------- run ---
scratch=$(mktemp -d "${TMPDIR:-/tmp}/order-fuzz-corpus.XXXXXX")
marker=$(mktemp "${TMPDIR:-/tmp}/order-fuzz-start.XXXXXX") # artifacts newer than this are this run's
trap 'rm -rf "$scratch" "$marker"' EXIT
mkdir -p "$artifacts"

libfuzzer_flags=(
    -max_total_time="$seconds"
    -rss_limit_mb=2048
    -max_len=70000 # past the 64 KiB message limit; the seeds are cut to this
    -timeout=30
    -print_final_stats=1
)
say "fuzzing ${target} for ${seconds}s (new corpus entries in ${scratch}, seeds from ${seeds})"
set +e
cargo "${toolchain[@]}" fuzz run "${build_flags[@]}" "$target" "$scratch" "$seeds" -- "${libfuzzer_flags[@]}"
rc=$?
set -e

if [[ $rc -ne 0 ]]; then
    say "the fuzzer failed (exit code ${rc})" >&2
    cargo_cmd="cargo ${toolchain[*]}"
    [[ ${#toolchain[@]} -gt 0 ]] || cargo_cmd="RUSTC_BOOTSTRAP=1 cargo"
    while IFS= read -r -d '' file; do
        say "reproducer: ${file}" >&2
        say "  replay:   ${cargo_cmd} fuzz run ${build_flags[*]} ${target} ${file}" >&2
        say "  minimize: ${cargo_cmd} fuzz tmin ${build_flags[*]} ${target} ${file}" >&2
    done < <(find "$artifacts" -maxdepth 1 -type f -newer "$marker" \
        \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) -print0)
    exit "$rc"
fi
say "no crash in ${seconds}s"
