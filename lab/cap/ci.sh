#!/usr/bin/env bash
# CI for the capability layer (lab/cap): the unit, conformance (attack) and property tests, then
# a short libFuzzer run of each cargo-fuzz target on the decoder and the verifier.
#
# Usage: bash lab/cap/ci.sh            (from anywhere; CAP_FUZZ_SECONDS=N changes the fuzz time)
# Needs: the stable Rust toolchain and crates.io. cargo-fuzz is installed if missing; it wants
# nightly-only `-Z` flags, which RUSTC_BOOTSTRAP=1 enables on the stable compiler.
set -euo pipefail

cap_directory="$(cd "$(dirname "$0")" && pwd)"
workspace_directory="$(cd "$cap_directory/../.." && pwd)"
fuzz_seconds="${CAP_FUZZ_SECONDS:-20}"

echo "== cap: cargo test -p cxl-lab-cap"
(cd "$workspace_directory" && cargo test -p cxl-lab-cap)

echo "== cap: cargo-fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
scratch_directory="$(mktemp -d)"
trap 'rm -rf "$scratch_directory"' EXIT
for fuzz_target in decode verify; do
    corpus_directory="$scratch_directory/corpus-$fuzz_target"
    log_file="$scratch_directory/fuzz-$fuzz_target.log"
    mkdir -p "$corpus_directory"
    echo "-- fuzzing $fuzz_target for ${fuzz_seconds}s"
    # libFuzzer prints a line per new input; keep that in the log and show only the summary,
    # or the whole tail when it finds a crash.
    if ! (cd "$cap_directory/fuzz" && cargo fuzz run -O "$fuzz_target" "$corpus_directory" -- \
        -max_total_time="$fuzz_seconds" -print_final_stats=1) >"$log_file" 2>&1; then
        tail -n 60 "$log_file"
        echo "fuzz target $fuzz_target failed; reproduce with the artifact named above:"
        echo "  cd lab/cap/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $fuzz_target <artifact>"
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' "$log_file"
done
echo "== cap: ok"
