#!/usr/bin/env bash
# Backazon side by side with restic, same machine, same run. Prints, per data set and
# tool, the median of RUNS runs of: initial backup wall time and peak RSS, no-change
# backup time, restore time, and repository size; then Backazon's ratios to restic.
#   bash bench/run.sh            # kernel tree and the generated set
#   BENCH_SETS=kernel bash bench/run.sh
# BENCH_DIR (default /var/tmp/backazon-bench) holds data sets, repositories, restores.
# Before each run the page cache is emptied (as root) and the data set read once, so
# backups start warm; before the restore the repository is read once, so restores start
# warm too (whatever the tool left in the page cache while writing it); `sync` runs
# before every timed step so one step's writeback does not land on the next.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR="${BENCH_DIR:-/var/tmp/backazon-bench}"
RUNS="${RUNS:-3}"
SETS="${BENCH_SETS:-kernel generated}"
mkdir -p "$BENCH_DIR"

if ! command -v restic >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic
fi
cargo build --release --bins --quiet
BZ="$PWD/target/release/backazon"
MEASURE="python3 $PWD/bench/measure.py"

source bench/datasets.sh

export BACKAZON_PASSWORD=bench RESTIC_PASSWORD=bench
step() { sync; $MEASURE "$@"; }
warm() { tar -cf - "$@" 2>/dev/null | cat >/dev/null; }

run_tool() { # tool data run -> JSON line
    local tool=$1 data=$2 n=$3 tag="$1-$(basename "$2")-$3"
    local repo="$BENCH_DIR/scratch/repo-$tag" out="$BENCH_DIR/scratch/restore-$tag"
    mkdir -p "$BENCH_DIR/scratch"
    # Every run starts from the same memory state: the earlier runs' restores and
    # repositories dropped from the page cache (as root), then the data set read once
    # (through a pipe: tar skips reading files when it writes to /dev/null itself).
    sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
    warm "$data"
    local init backup nochange restore
    if [ "$tool" = backazon ]; then
        export BACKAZON_CACHE_DIR="$BENCH_DIR/scratch/cache-$tag"
        "$BZ" init -q --repo "$repo"
        backup=$(step "$BZ" backup -q --repo "$repo" "$data")
        nochange=$(step "$BZ" backup -q --repo "$repo" "$data")
        warm "$repo" "$BACKAZON_CACHE_DIR"
        restore=$(step "$BZ" restore -q --repo "$repo" latest --target "$out")
    else
        export RESTIC_CACHE_DIR="$BENCH_DIR/scratch/cache-$tag"
        restic init -q --repo "$repo" >/dev/null
        backup=$(step restic -q --repo "$repo" backup "$data")
        nochange=$(step restic -q --repo "$repo" backup "$data")
        warm "$repo" "$RESTIC_CACHE_DIR"
        restore=$(step restic -q --repo "$repo" restore latest --target "$out")
    fi
    local size
    size=$(du -sb "$repo" | cut -f1)
    echo "{\"tool\":\"$tool\",\"run\":$n,\"backup\":$backup,\"nochange\":$nochange,\"restore\":$restore,\"size\":$size}"
}

# Repositories, caches and restores go to fresh folders, removed only at the end:
# ext4 searches slowly for free inodes for about 30 s after many files were deleted,
# which would penalise whichever tool restores right after a removal.
clean_scratch() { rm -rf "$BENCH_DIR/scratch"; }
if [ -d "$BENCH_DIR/scratch" ]; then clean_scratch; sync; sleep 35; fi
trap clean_scratch EXIT

results="$BENCH_DIR/results.jsonl"
: > "$results"
for set in $SETS; do
    data=$(dataset "$set")
    echo "data set $set: $data ($(du -sh "$data" | cut -f1), $(find "$data" -type f | wc -l) files)" >&2
    for n in $(seq 1 "$RUNS"); do
        # Alternate which tool goes first, so neither always meets the other's leftovers.
        order="backazon restic"; [ $((n % 2)) -eq 0 ] && order="restic backazon"
        for tool in $order; do
            line=$(run_tool "$tool" "$data" "$n")
            echo "{\"set\":\"$set\",${line:1}" | tee -a "$results" >&2
        done
    done
done
python3 bench/report.py "$results"
