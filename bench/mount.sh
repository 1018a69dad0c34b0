#!/usr/bin/env bash
# `backazon mount` side by side with `restic mount` and `borg mount`, same machine, same
# run, on the Linux kernel source tree: time from starting the mount to the first
# listing, `find` over the snapshot, `cat` of every file, the mount's RSS after that,
# and a sequential read of a 1 GiB file with the page cache dropped first. Median of RUNS.
#   bash bench/mount.sh
#   MOUNT_TOOLS="backazon restic" RUNS=1 bash bench/mount.sh
# Each run starts with the page cache dropped (as root) and a fresh mount, so every
# tool begins cold; the repositories are made once, outside the timings.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR="${BENCH_DIR:-/var/tmp/backazon-bench}"
RUNS="${RUNS:-3}"
TOOLS="${MOUNT_TOOLS:-backazon restic borg}"
mkdir -p "$BENCH_DIR"
W="$BENCH_DIR/mount-scratch"

need=()
command -v restic >/dev/null || need+=(restic)
command -v borg >/dev/null || need+=(borgbackup python3-llfuse)
command -v fusermount3 >/dev/null || need+=(fuse3)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
cargo build --release --bins --quiet
BZ="$PWD/target/release/backazon"
source bench/datasets.sh
KERNEL=$(dataset kernel)
BIG=$(dataset big)

export BACKAZON_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench
export BACKAZON_CACHE_DIR="$W/cache-backazon" RESTIC_CACHE_DIR="$W/cache-restic"
export BORG_BASE_DIR="$W/borg-base" BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

make_repo() { # tool name data
    local tool=$1 repo="$W/repo-$1-$2" data=$3
    [ -e "$repo/.done" ] && return
    rm -rf "$repo"
    case $tool in
    backazon) "$BZ" init -q --repo "$repo" && "$BZ" backup -q --repo "$repo" "$data" ;;
    restic) restic init -q --repo "$repo" >/dev/null && restic -q --repo "$repo" backup "$data" >/dev/null ;;
    borg) borg init -e repokey "$repo" && borg create --compression zstd,3 "$repo::snap" "$data" ;;
    esac
    touch "$repo/.done"
}

start_mount() { # tool name mountpoint -> pid in MPID
    local tool=$1 repo="$W/repo-$1-$2" mnt=$3
    mkdir -p "$mnt"
    case $tool in
    backazon) "$BZ" mount -q --repo "$repo" "$mnt" 2>>"$W/mount.log" & ;;
    restic) restic -q --repo "$repo" mount "$mnt" >>"$W/mount.log" 2>&1 & ;;
    borg) borg mount -f "$repo" "$mnt" >>"$W/mount.log" 2>&1 & ;;
    esac
    MPID=$!
}

snapshot_dir() { # tool mountpoint data -> the data folder inside the mounted snapshot
    local tool=$1 mnt=$2 data=$3
    case $tool in
    backazon) echo "$mnt/latest/$(ls "$mnt/latest" | head -1)$data" ;;
    restic) echo "$mnt/snapshots/latest$data" ;;
    borg) echo "$mnt/snap$data" ;;
    esac
}

listing() { # tool mountpoint: the top of the drive shows a snapshot
    case $1 in
    backazon) [ -n "$(ls "$2/by-date" 2>/dev/null)" ] ;;
    restic) [ -n "$(ls "$2/snapshots" 2>/dev/null)" ] ;;
    borg) [ -n "$(ls "$2" 2>/dev/null)" ] ;;
    esac
}

stop_mount() { # mountpoint
    kill -TERM "$MPID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$MPID" 2>/dev/null || break; sleep 0.1; done
    fusermount3 -u -z "$1" 2>/dev/null || true
    wait "$MPID" 2>/dev/null || true
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

mkdir -p "$W"
results="$BENCH_DIR/mount-results.jsonl"
: > "$results"
for tool in $TOOLS; do
    echo "preparing $tool repositories" >&2
    make_repo "$tool" kernel "$KERNEL"
    make_repo "$tool" big "$BIG"
done
for n in $(seq 1 "$RUNS"); do
    for tool in $TOOLS; do
        mnt="$W/mnt-$tool"
        drop_caches
        t0=$(now)
        start_mount "$tool" kernel "$mnt"
        until listing "$tool" "$mnt"; do sleep 0.01; done
        first=$(since "$t0")
        dir=$(snapshot_dir "$tool" "$mnt" "$KERNEL")
        t0=$(now); entries=$(find "$dir" | wc -l); find_s=$(since "$t0")
        t0=$(now); find "$dir" -type f -print0 | xargs -0 cat >/dev/null; cat_s=$(since "$t0")
        rss=$(rss_kib "$MPID")
        stop_mount "$mnt"

        drop_caches
        start_mount "$tool" big "$mnt"
        until listing "$tool" "$mnt"; do sleep 0.01; done
        big=$(snapshot_dir "$tool" "$mnt" "$BIG")/1g.bin
        t0=$(now); dd if="$big" of=/dev/null bs=1M status=none; seq_s=$(since "$t0")
        stop_mount "$mnt"
        line="{\"tool\":\"$tool\",\"run\":$n,\"first_listing\":$first,\"find\":$find_s,\"entries\":$entries,\"cat\":$cat_s,\"rss_kib\":$rss,\"seq_1g\":$seq_s}"
        echo "$line" | tee -a "$results" >&2
    done
done
python3 bench/mount_report.py "$results"
