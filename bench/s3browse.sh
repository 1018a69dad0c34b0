#!/usr/bin/env bash
# Browsing and restoring a backup that lives in S3, against the same from a local disk
# and against restic, same machine, same run. The kernel source tree (and one 1 GiB file)
# are backed up once to a Garage server in a network namespace made here; then, RUNS
# times (median printed):
#   - `cat` of every file through the mount (after a `find`): from a local repository,
#     from S3 straight over the namespace's link, and over a link with DELAY_MS added
#     each way; the GET requests the server answered during each cat (its metrics), the
#     mount's RSS after it;
#   - a sequential read of the 1 GiB file through the mount;
#   - restore of the whole tree (into a tmpfs): GET requests, and time over the slow
#     link beside restic's over the same link.
# Every run starts with the page cache dropped and an empty cache folder.
#   bash bench/s3browse.sh
# The delay is bench/garage.sh's `link_delay` (bz-slow-link, a delaying proxy in the
# namespace): this machine's kernel has no tc netem.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR="${BENCH_DIR:-/var/tmp/backazon-bench}"
RUNS="${RUNS:-3}"
DELAY_MS="${DELAY_MS:-20}"
mkdir -p "$BENCH_DIR"
command -v restic >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic; }
bash ci/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --workspace --bins --quiet
BZ="$PWD/target/release/backazon"
source bench/datasets.sh
KERNEL=$(dataset kernel)
BIG=$(dataset big)
W="$BENCH_DIR/s3browse"
rm -rf "$W"; mkdir -p "$W"
source bench/garage.sh
start_garage "$W" bzbench
OUT="$W/restore"
mkdir -p "$OUT" "$W/mnt"
mount -t tmpfs -o size=4g tmpfs "$OUT"
cleanup() {
    fusermount3 -u -z "$W/mnt" 2>/dev/null || true
    umount "$OUT" 2>/dev/null || true
    stop_garage
}
trap cleanup EXIT
export BACKAZON_PASSWORD=bench RESTIC_PASSWORD=bench
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
gets() { requests | python3 -c 'import json,sys; print(json.load(sys.stdin).get("GetObject", 0))'; }
fresh_cache() { export BACKAZON_CACHE_DIR="$W/cache-$RANDOM$RANDOM" RESTIC_CACHE_DIR="$W/restic-cache-$RANDOM$RANDOM"; }

echo "backing up (once)" >&2
link_delay 0
"$BZ" init -q --repo "$W/local"
"$BZ" backup -q --repo "$W/local" "$KERNEL"
for r in kernel big; do "$BZ" init -q --repo "s3://bench/$r"; done
"$BZ" backup -q --repo s3://bench/kernel "$KERNEL"
"$BZ" backup -q --repo s3://bench/big "$BIG"
restic_repo() { echo "s3:$ENDPOINT/bench/restic"; }
restic -q -r "$(restic_repo)" -o s3.region=garage init >/dev/null
restic -q -r "$(restic_repo)" -o s3.region=garage backup "$KERNEL" >/dev/null
DATA_PACKS=$("$BZ" check --json --repo s3://bench/kernel | python3 -c 'import json,sys; print(json.load(sys.stdin)["data_packs"])')
PACKS=$("$BZ" check --json --repo s3://bench/kernel | python3 -c 'import json,sys; print(json.load(sys.stdin)["packs"])')

# mount_cat REPO -> {"cat": s, "gets": n, "rss_kib": n}
mount_cat() {
    local repo=$1 mnt="$W/mnt" pid dir g0 t0 cat_s g1 rss
    fresh_cache; drop_caches
    "$BZ" mount -q --repo "$repo" "$mnt" 2>>"$W/mount.log" &
    pid=$!
    until [ -n "$(ls "$mnt/latest" 2>/dev/null)" ]; do sleep 0.02; done
    dir="$mnt/latest/$(ls "$mnt/latest" | head -1)$KERNEL"
    find "$dir" > /dev/null
    g0=$(gets); t0=$(now)
    find "$dir" -type f -print0 | xargs -0 cat > /dev/null
    cat_s=$(since "$t0"); g1=$(gets)
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    kill -TERM "$pid"; wait "$pid" || true
    echo "{\"cat\": $cat_s, \"gets\": $((g1 - g0)), \"rss_kib\": $rss}"
}

seq_read() { # -> MB/s reading the 1 GiB file through the mount
    local mnt="$W/mnt" pid f t0 s
    fresh_cache; drop_caches
    "$BZ" mount -q --repo s3://bench/big "$mnt" 2>>"$W/mount.log" &
    pid=$!
    until [ -n "$(ls "$mnt/latest" 2>/dev/null)" ]; do sleep 0.02; done
    f="$mnt/latest/$(ls "$mnt/latest" | head -1)$BIG/1g.bin"
    t0=$(now); dd if="$f" of=/dev/null bs=1M status=none; s=$(since "$t0")
    kill -TERM "$pid"; wait "$pid" || true
    python3 -c "import sys; print(f'{(1 << 30) / 1e6 / float(sys.argv[1]):.0f}')" "$s"
}

restore() { # TOOL -> {"time": s, "gets": n}
    local g0 t0 s g1
    fresh_cache; rm -rf "${OUT:?}"/*; drop_caches
    g0=$(gets); t0=$(now)
    if [ "$1" = backazon ]; then
        "$BZ" restore -q --repo s3://bench/kernel latest --target "$OUT"
    else
        restic -q -r "$(restic_repo)" -o s3.region=garage restore latest --target "$OUT" >/dev/null
    fi
    s=$(since "$t0"); g1=$(gets)
    diff -r "$OUT$KERNEL" "$KERNEL" >/dev/null || { echo "$1: restored tree differs" >&2; exit 1; }
    rm -rf "${OUT:?}"/*
    echo "{\"time\": $s, \"gets\": $((g1 - g0))}"
}

results="$BENCH_DIR/s3browse-results.jsonl"
: > "$results"
for n in $(seq 1 "$RUNS"); do
    link_delay 0
    local_cat=$(mount_cat "$W/local")
    s3_cat=$(mount_cat s3://bench/kernel)
    seq=$(seq_read)
    bz_restore=$(restore backazon)
    link_delay "$DELAY_MS"
    link_cat=$(mount_cat s3://bench/kernel)
    bz_link=$(restore backazon)
    restic_link=$(restore restic)
    line="{\"run\":$n,\"local\":$local_cat,\"s3\":$s3_cat,\"link\":$link_cat,\"seq_mb_s\":$seq,\"restore\":$bz_restore,\"restore_link\":$bz_link,\"restic_link\":$restic_link,\"packs\":$PACKS,\"data_packs\":$DATA_PACKS}"
    echo "$line" | tee -a "$results" >&2
done
python3 - "$results" "$DELAY_MS" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
delay = sys.argv[2]
med = lambda f: statistics.median(f(r) for r in runs)
local, s3, link = med(lambda r: r["local"]["cat"]), med(lambda r: r["s3"]["cat"]), med(lambda r: r["link"]["cat"])
dp, packs = runs[0]["data_packs"], runs[0]["packs"]
rows = [
    ("cat of every file, local repository (s)", f"{local:.2f}", ""),
    ("cat of every file through the mount, S3 (s)", f"{s3:.2f}", f"{s3 / local:.2f}x local (target <= 2x)"),
    (f"cat of every file, {delay} ms link (s)", f"{link:.2f}", "target <= 60 s"),
    ("GET requests during the S3 cat", f"{med(lambda r: r['s3']['gets']):.0f}", f"{dp} data packs: {med(lambda r: r['s3']['gets']) / dp:.2f}x (target <= 2x)"),
    (f"GET requests during the {delay} ms cat", f"{med(lambda r: r['link']['gets']):.0f}", ""),
    ("1 GiB file read sequentially, S3 (MB/s)", f"{med(lambda r: r['seq_mb_s']):.0f}", "target >= 500"),
    ("restore GETs", f"{med(lambda r: r['restore']['gets']):.0f}", f"{packs} packs + index, snapshot, config and key objects"),
    ("restore time, S3 (s)", f"{med(lambda r: r['restore']['time']):.2f}", ""),
    (f"restore time, {delay} ms link (s)", f"{med(lambda r: r['restore_link']['time']):.2f}",
     f"restic {med(lambda r: r['restic_link']['time']):.2f} s: {med(lambda r: r['restore_link']['time']) / med(lambda r: r['restic_link']['time']):.2f}x (target <= 0.5x)"),
    (f"restic restore GETs", f"{med(lambda r: r['restic_link']['gets']):.0f}", ""),
    ("mount RSS after the S3 cat (MiB)", f"{med(lambda r: r['s3']['rss_kib']) / 1024:.0f}", "target <= 150"),
]
print(f"\n### kernel tree in Garage (median of {len(runs)} runs)\n")
print("| metric | backazon | note |\n|---|---:|---|")
for m, v, note in rows:
    print(f"| {m} | {v} | {note} |")
PY
