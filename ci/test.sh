#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what the tests need (skipping what
# is already there), builds once in release (tests and benchmarks share that build),
# then runs every unit and end-to-end test. CI runs this through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh

export CARGO_TERM_COLOR=never
cargo build --release --workspace --bins
cargo test --release --workspace --no-fail-fast
