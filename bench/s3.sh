#!/usr/bin/env bash
# Backazon and restic backing up the kernel source tree to the same S3 server (Garage on
# loopback), same machine, same run: initial backup, no-change backup and restore times,
# and the requests each made, counted by the server (its Prometheus metrics). Median of
# RUNS runs. Garage comes from ~/.cargo/bin (ci/setup.sh builds it once).
#   bash bench/s3.sh
# Restores go to a tmpfs (/dev/shm) and are removed after each run: what is compared is
# getting the data out of S3, not the state of the local disk (ext4 here allocates inodes
# slowly for minutes after a large delete, which hit whichever tool restored next).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR="${BENCH_DIR:-/var/tmp/backazon-bench}"
RUNS="${RUNS:-3}"
mkdir -p "$BENCH_DIR"
command -v restic >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic; }
bash ci/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --bins --quiet
BZ="$PWD/target/release/backazon"
MEASURE="python3 $PWD/bench/measure.py"
source bench/datasets.sh
DATA=$(dataset kernel)
W="$BENCH_DIR/s3-scratch"
if [ -d "$W" ]; then
    # ext4 allocates inodes slowly for about 30 s after many were freed: wait that out,
    # or it lands on whichever restore runs first.
    rm -rf "$W"; sync; sleep 35
fi
mkdir -p "$W"
RESTORE_DIR=$(mktemp -d /dev/shm/backazon-s3-bench.XXXXXX)

source bench/garage.sh
start_garage "$W"
trap 'stop_garage; rm -rf "$RESTORE_DIR"' EXIT
export BACKAZON_PASSWORD=bench RESTIC_PASSWORD=bench

step() { # name command... -> {"wall":..,"rss_kib":..,"requests":{...}} (requests made by this step)
    local before after t
    sync
    before=$(requests)
    t=$($MEASURE "$@")
    after=$(requests)
    python3 -c 'import json,sys; t,b,a=(json.loads(x) for x in sys.argv[1:4]); t["requests"]={k:a[k]-b.get(k,0) for k in a if a[k]-b.get(k,0)}; print(json.dumps(t))' "$t" "$before" "$after"
}

results="$BENCH_DIR/s3-results.jsonl"
: > "$results"
for n in $(seq 1 "$RUNS"); do
    order="backazon restic"; [ $((n % 2)) -eq 0 ] && order="restic backazon"
    for tool in $order; do
        sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
        tar -cf - "$DATA" 2>/dev/null | cat >/dev/null
        out="$RESTORE_DIR/restore-$tool-$n"
        if [ "$tool" = backazon ]; then
            export BACKAZON_REPOSITORY="s3://bench/backazon-$n" BACKAZON_CACHE_DIR="$W/cache-$tool-$n"
            "$BZ" init -q
            backup=$(step "$BZ" backup -q "$DATA")
            nochange=$(step "$BZ" backup -q "$DATA")
            restore=$(step "$BZ" restore -q latest --target "$out")
        else
            export RESTIC_REPOSITORY="s3:$ENDPOINT/bench/restic-$n" RESTIC_CACHE_DIR="$W/cache-$tool-$n"
            restic init -q -o s3.region=garage >/dev/null
            backup=$(step restic -q -o s3.region=garage backup "$DATA")
            nochange=$(step restic -q -o s3.region=garage backup "$DATA")
            restore=$(step restic -q -o s3.region=garage restore latest --target "$out")
        fi
        line="{\"tool\":\"$tool\",\"run\":$n,\"backup\":$backup,\"nochange\":$nochange,\"restore\":$restore,\"data_bytes\":$(du -sb "$DATA" | cut -f1)}"
        echo "$line" | tee -a "$results" >&2
        rm -rf "$out"
    done
done
python3 bench/s3_report.py "$results"
