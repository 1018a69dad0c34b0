#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what the tests need (skipping what
# is already there), builds once in release (tests and benchmarks share that build),
# then runs every unit and end-to-end test. CI runs this through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh

export CARGO_TERM_COLOR=never
cargo build --release --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line over every test binary, for people and for CI.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
