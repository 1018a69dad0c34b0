#!/usr/bin/env bash
# Every command (backup, a second backup, restore, forget + prune, check --read-data, a
# mount read whole) through a proxy that faults a share of the S3 requests: a reset, a
# 503 SlowDown, a response cut midway, or a stall. Prints, per seed, what was injected,
# what Backazon retried, and the time lost beside the same command without faults.
#   bash bench/s3faults.sh [SEEDS] [PERCENT] [STALL_SECONDS]     defaults: 5 10 10
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-5} percent=${2:-10} stall=${3:-10}
bash ci/setup.sh >/dev/null
cargo build --release --workspace --bins --quiet
for seed in $(seq 1 "$seeds"); do
    BACKAZON_FAULT_SEED=$seed BACKAZON_FAULT_PERCENT=$percent BACKAZON_FAULT_STALL_SECS=$stall \
        cargo test --release --quiet -p backazon-e2e --test s3 \
        every_command_completes_when_one_request_in_ten_fails -- --nocapture 2>&1 |
        grep -E '^\||^faults in|panicked|FAILED' || true
done
