#!/usr/bin/env bash
# The source stack's check (README): QEMU, the kernel with its test modules and ndctl with its
# tests, built from source into the cache (tens of minutes on two cores when the cache is cold,
# seconds when it holds them), then `lab up --stack source` on seed and the guest check: a region
# commits, cxl_test loads, ndctl's `cxl` suite runs against it (tests/source_stack.rs); then the
# lab's own suites on the interleaved profile, regions included, and on the dcd profile, dynamic
# capacity included (results in target/suite-results).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo xtask build all --stack source
cargo test -p xtask --test source_stack -- --ignored --nocapture
cargo xtask lab --lab ci-suites run --stack source --profile interleave --suite smoke,topology,region,poison \
    --out target/suite-results/interleave-source
cargo xtask lab --lab ci-dcd run --stack source --profile dcd --suite smoke,topology,dcd \
    --out target/suite-results/dcd-source
