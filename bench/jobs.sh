#!/usr/bin/env bash
# Jobs and prune, measured:
# 1. the daemon's CPU time while idle for 60 s (a job is scheduled, none is due);
# 2. prune after forgetting half of 10 snapshots of a changing kernel tree, side by
#    side with restic on the same history: `forget --keep-last 5 --prune` for both, time
#    (median of RUNS, each on a fresh copy of the repository, page cache dropped) and
#    repository size after.
#   bash bench/jobs.sh            # BENCH_DIR, RUNS as in bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR="${BENCH_DIR:-/var/tmp/backazon-bench}"
RUNS="${RUNS:-3}"
IDLE="${IDLE:-60}"
mkdir -p "$BENCH_DIR"
if ! command -v restic >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic
fi
cargo build --release --bins --quiet
BZ="$PWD/target/release/backazon"
MEASURE="python3 $PWD/bench/measure.py"
source bench/datasets.sh
export BACKAZON_PASSWORD=bench RESTIC_PASSWORD=bench
S="$BENCH_DIR/jobs-scratch"
rm -rf "$S" && mkdir -p "$S"

# --- 1. idle daemon -------------------------------------------------------------------
echo bench > "$S/pw"
export BACKAZON_CONFIG="$S/jobs.toml" BACKAZON_STATE_DIR="$S/state" BACKAZON_CACHE_DIR="$S/cache"
"$BZ" init -q --repo "$S/idle-repo"
"$BZ" job add idle --repo "$S/idle-repo" --password-file "$S/pw" --path "$PWD/docs" \
    --schedule 'monthly 1 03:00' --keep-daily 7 -q
"$BZ" daemon 2>/dev/null &
pid=$!
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$1/task/"*/stat | paste -sd+ | bc; }
t0=$(ticks $pid)
sleep "$IDLE"
t1=$(ticks $pid)
kill -TERM $pid; wait $pid || true
hz=$(getconf CLK_TCK)
idle_cpu=$(echo "scale=3; ($t1 - $t0) / $hz" | bc)
unset BACKAZON_CONFIG BACKAZON_STATE_DIR

# --- 2. prune ---------------------------------------------------------------------------
data=$(dataset kernel)
tree="$S/tree"
cp -a "$data" "$tree"
export BACKAZON_CACHE_DIR="$S/bz-cache" RESTIC_CACHE_DIR="$S/restic-cache"
"$BZ" init -q --repo "$S/bz"
restic init -q --repo "$S/restic" >/dev/null
for step in $(seq 1 10); do
    python3 bench/mutate.py "$tree" "$step"
    "$BZ" backup -q --repo "$S/bz" --job kernel "$tree"
    restic -q --repo "$S/restic" backup "$tree" >/dev/null
done
before_bz=$(du -sb "$S/bz" | cut -f1)
before_restic=$(du -sb "$S/restic" | cut -f1)
results="$S/prune.jsonl"
: > "$results"
for n in $(seq 1 "$RUNS"); do
    for tool in backazon restic; do
        rm -rf "$S/copy" "$S/copy-cache"
        if [ $tool = backazon ]; then cp -a "$S/bz" "$S/copy"; cp -a "$S/bz-cache" "$S/copy-cache"
        else cp -a "$S/restic" "$S/copy"; cp -a "$S/restic-cache" "$S/copy-cache"; fi
        sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
        if [ $tool = backazon ]; then
            r=$(BACKAZON_CACHE_DIR="$S/copy-cache" $MEASURE "$BZ" forget -q --repo "$S/copy" --keep-last 5 --prune)
        else
            r=$(RESTIC_CACHE_DIR="$S/copy-cache" $MEASURE restic -q --repo "$S/copy" forget --keep-last 5 --prune)
        fi
        size=$(du -sb "$S/copy" | cut -f1)
        echo "{\"tool\":\"$tool\",\"run\":$n,\"prune\":$r,\"size\":$size}" >> "$results"
    done
done
python3 - "$results" "$idle_cpu" "$IDLE" "$before_bz" "$before_restic" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
idle, secs, bbz, brs = float(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def med(tool, f):
    return statistics.median(f(r) for r in rows if r["tool"] == tool)
tb, tr = med("backazon", lambda r: r["prune"]["wall"]), med("restic", lambda r: r["prune"]["wall"])
sb, sr = med("backazon", lambda r: r["size"]), med("restic", lambda r: r["size"])
print(f"daemon CPU while idle for {secs} s: {idle:.3f} s (target < 0.05 s)")
print()
print(f"prune after forgetting 5 of 10 snapshots of a changing kernel tree (median of {len(rows)//2})")
print(f"| metric | backazon | restic | ratio | target |")
print(f"|---|---:|---:|---:|---|")
print(f"| repository before (MB) | {bbz/1e6:.1f} | {brs/1e6:.1f} | {bbz/brs:.2f}x | |")
print(f"| forget --prune (s) | {tb:.2f} | {tr:.2f} | {tb/tr:.2f}x | <= 0.5x |")
print(f"| repository after (MB) | {sb/1e6:.1f} | {sr/1e6:.1f} | {sb/sr:.2f}x | <= 1.0x |")
PY
