#!/usr/bin/env bash
# The crash test of tests/tests/crash.rs over many more points: the real binary killed
# (SIGKILL) at seeded random moments of backup, forget, prune, key add, passwd and remove,
# and restore, each followed by a backup, `check --read-data` and a restore compared byte
# for byte; at the end, one prune and the repository's size beside a fresh one's.
#   bash bench/crash.sh              # 1,000 points from seed 0
#   POINTS=5000 FIRST=20000 bash bench/crash.sh
# A failure prints its seed; BACKAZON_CRASH_SEED=S cargo test --release --test crash
# reruns that point alone.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --quiet
start=$(date +%s)
BACKAZON_CRASH_POINTS="${POINTS:-1000}" BACKAZON_CRASH_FIRST="${FIRST:-0}" \
    cargo test --release --quiet -p backazon-e2e --test crash -- --nocapture 2>&1 |
    grep -E 'crash point|the command|after the points|panicked|test result' |
    awk '/crash point/ { op = $4 } /the command/ { n[op " " $NF]++ } !/crash point|the command/ { print }
         END { for (k in n) print "  " k ": " n[k] }'
echo "$(( $(date +%s) - start )) s for ${POINTS:-1000} points"
