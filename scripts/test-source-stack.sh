#!/usr/bin/env bash
# The source stack's check (README): QEMU, the kernel with its test modules and ndctl with its
# tests, built from source into the cache (tens of minutes on two cores when the cache is cold,
# seconds when it holds them), then `lab up --stack source` on seed and the guest check: a region
# commits, cxl_test loads, ndctl's `cxl` suite runs against it (tests/source_stack.rs); then the
# lab's own suites on the interleaved profile (regions and the live decode check, every granule in
# its backing file), on the dcd profile (dynamic capacity) and the capability suite on shared
# (results in target/suite-results), each
# suite after the first on a machine restored from the snapshot the run saved (tests/lab_snapshot.rs
# first: a save and a faithful restore), and the matrix (see the end).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo xtask build all --stack source
cargo test -p xtask --test source_stack -- --ignored --nocapture
cargo test -p xtask --test lab_decode -- --ignored --nocapture
cargo test -p xtask --test lab_snapshot -- --ignored --nocapture
cargo xtask lab --lab ci-suites run --stack source --profile interleave --suite smoke,topology,region,poison,decode \
    --out target/suite-results/interleave-source
cargo xtask lab --lab ci-dcd run --stack source --profile dcd --suite smoke,topology,dcd \
    --out target/suite-results/dcd-source
# The capability lab (docs/capability-lab.md): two hosts on one capability-checked backend, tokens
# presented to the lab's patched device; on the distro stack (stock QEMU) the suite skips with why.
cargo xtask lab --lab ci-cap run --stack source --profile shared --suite capability \
    --out target/suite-results/capability-source
cargo xtask lab --lab ci-cap run --stack distro --profile shared --suite capability \
    --out target/suite-results/capability-distro
grep -q 'has no capability device' target/suite-results/capability-distro/results.json
# The matrix: one cell's QEMU killed during a run (tests/lab_matrix.rs), then every shipped profile
# on the source stack with smoke, topology and region (report in target/matrix-results/index.html).
# `--fail-on error`: only a cell that crashes, hangs or loses its QEMU fails CI; a suite's own
# failure is in the report (the runs above are where a suite failure fails CI).
cargo test -p xtask --test lab_matrix -- --ignored --nocapture
cargo xtask lab --lab ci-mx matrix matrices/nightly.yaml --fail-on error --out target/matrix-results
