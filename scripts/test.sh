#!/usr/bin/env bash
# The test command (README): every crate's unit, snapshot and integration tests (real QEMU under
# TCG), the profile validator over the shipped profiles, and the capability layer's CI (attack
# tests and a short fuzz run).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo xtask profile validate profiles/*.yaml
cargo test --workspace --no-fail-fast
if [ -f lab/cap/ci.sh ]; then
    bash lab/cap/ci.sh
fi
