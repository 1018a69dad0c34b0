#!/usr/bin/env bash
# Backazon side by side with restic, same machine, same run. Prints, per data set and
# tool, the median of RUNS runs of: initial backup wall time and peak RSS, no-change
# backup time and RSS, a backup with one file touched (time and RSS), restore time into
# ext4 and into a tmpfs, and repository size; Backazon's ratios to restic; and beside
# them the limits the machine sets, measured in the same run on the same data:
# `zstd -3 -T2` of the set as one tar (what compressing it costs at all), a `find` that
# stats every file (what looking at every file costs), `tar -x` of it into the tmpfs
# (what writing every file costs), and `zstd -dc | tar -x` of the compressed tar (what
# writing every file from compressed data costs).
#   bash bench/run.sh            # kernel tree and the generated set
#   BENCH_SETS=kernel bash bench/run.sh
#   BENCH_SETS=million RUNS=1 bash bench/run.sh   # 1,000,000 small files
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

if ! command -v restic >/dev/null || ! command -v zstd >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic zstd
fi
cargo build --release --bins --quiet
BZ="$PWD/target/release/backazon"
MEASURE="python3 $PWD/bench/measure.py"

source bench/datasets.sh

export BACKAZON_PASSWORD=bench RESTIC_PASSWORD=bench
step() { sync; $MEASURE "$@"; }
# Before a step that fills the tmpfs: the page cache emptied first, so its pages are not
# taken by reclaiming what earlier steps cached (that made tmpfs times vary 1.1-3.4 s).
drop_caches() { sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
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
    local init backup nochange touched restore restore_tmpfs
    local touch_file
    touch_file=$(find "$data" -type f -name '*.c' -print -quit)
    [ -n "$touch_file" ] || touch_file=$(find "$data" -type f -print -quit)
    if [ "$tool" = backazon ]; then
        export BACKAZON_CACHE_DIR="$BENCH_DIR/scratch/cache-$tag"
        "$BZ" init -q --repo "$repo"
        backup=$(step "$BZ" backup -q --repo "$repo" "$data")
        nochange=$(step "$BZ" backup -q --repo "$repo" "$data")
        touch "$touch_file"
        touched=$(step "$BZ" backup -q --repo "$repo" "$data")
        warm "$repo" "$BACKAZON_CACHE_DIR"
        restore=$(step "$BZ" restore -q --repo "$repo" latest --target "$out")
        drop_caches; warm "$repo" "$BACKAZON_CACHE_DIR"
        restore_tmpfs=$(step "$BZ" restore -q --repo "$repo" latest --target "$TMPFS/$tag")
    else
        export RESTIC_CACHE_DIR="$BENCH_DIR/scratch/cache-$tag"
        restic init -q --repo "$repo" >/dev/null
        backup=$(step restic -q --repo "$repo" backup "$data")
        nochange=$(step restic -q --repo "$repo" backup "$data")
        touch "$touch_file"
        touched=$(step restic -q --repo "$repo" backup "$data")
        warm "$repo" "$RESTIC_CACHE_DIR"
        restore=$(step restic -q --repo "$repo" restore latest --target "$out")
        drop_caches; warm "$repo" "$RESTIC_CACHE_DIR"
        restore_tmpfs=$(step restic -q --repo "$repo" restore latest --target "$TMPFS/$tag")
    fi
    rm -rf "${TMPFS:?}/$tag"
    local size
    size=$(du -sb "$repo" | cut -f1)
    echo "{\"tool\":\"$tool\",\"run\":$n,\"backup\":$backup,\"nochange\":$nochange,\"touched\":$touched,\"restore\":$restore,\"restore_tmpfs\":$restore_tmpfs,\"size\":$size}"
}

# The machine's own limits on the same data, same run (see the top of this file).
run_limits() { # data run -> JSON line
    local data=$1 n=$2 zstd find tarx
    sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
    warm "$data"
    zstd=$(step sh -c "tar -C '$data' -cf - . | zstd -3 -T2 -q -c > '$TMPFS/limits.tar.zst'")
    find=$(step find "$data" -printf '%s %T@ %C@ %i\n')
    tar -C "$data" -cf "$TMPFS/limits.tar" .
    mkdir -p "$TMPFS/limits"
    drop_caches
    tarx=$(step tar -C "$TMPFS/limits" -xf "$TMPFS/limits.tar")
    rm -rf "${TMPFS:?}/limits"
    # The same, from the compressed tar: what a restore of compressed data costs at least
    # (zstd decompresses on one core; a restore also decrypts and verifies every chunk).
    mkdir -p "$TMPFS/limits"
    drop_caches
    tarxz=$(step sh -c "zstd -dc -q '$TMPFS/limits.tar.zst' | tar -C '$TMPFS/limits' -xf -")
    rm -rf "${TMPFS:?}/limits" "$TMPFS/limits.tar" "$TMPFS/limits.tar.zst"
    echo "{\"tool\":\"limits\",\"run\":$n,\"zstd\":$zstd,\"find\":$find,\"tarx\":$tarx,\"tarxz\":$tarxz}"
}

# Repositories, caches and restores go to fresh folders, removed only at the end:
# ext4 searches slowly for free inodes for about 30 s after many files were deleted,
# which would penalise whichever tool restores right after a removal.
# Restores are timed into a tmpfs as well: the machine's ext4 slows down for minutes
# after mass deletes, which hides the tools' own speed.
TMPFS="$BENCH_DIR/tmpfs"
mkdir -p "$TMPFS"
mountpoint -q "$TMPFS" || mount -t tmpfs -o size=12g bench-tmpfs "$TMPFS"
clean_scratch() { rm -rf "$BENCH_DIR/scratch"; umount "$TMPFS" 2>/dev/null || true; }
if [ -d "$BENCH_DIR/scratch" ]; then rm -rf "$BENCH_DIR/scratch"; sync; sleep 35; fi
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
        line=$(run_limits "$data" "$n")
        echo "{\"set\":\"$set\",${line:1}" | tee -a "$results" >&2
    done
done
python3 bench/report.py "$results"
