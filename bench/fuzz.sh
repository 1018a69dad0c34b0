#!/usr/bin/env bash
# Fuzzes every target (or those named) for as long as asked:
#   bash bench/fuzz.sh SECONDS_PER_TARGET [TARGET...]     e.g. 3600 for an hour each
#   bash bench/fuzz.sh --seeds    rewrites the seed corpora from a real repository
# Limits and the handling of crashes are ci/fuzz.sh's.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--seeds" ]; then
    (cd fuzz && cargo run --release --example seeds)
    exit
fi
exec bash ci/fuzz.sh "${1:-600}" "${@:2}"
