#!/usr/bin/env bash
# backazon.exe under Wine beside the Linux binary, on the same generated tree (20,000
# files, about 1 GB, some large: bench/gen.py --windows), in the same run: initial backup,
# no-change backup, restore (into a tmpfs) and check --read-data; median of RUNS (3),
# the ratio Wine/native, and the cost per file. A script that prints figures, not a
# test. Needs the Windows build and Wine (bash ci/windows.sh setup && build).
#   bash bench/windows.sh
# BENCH_DIR (default /var/tmp/backazon-bench) holds the data set and repositories.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR="${BENCH_DIR:-/var/tmp/backazon-bench}"
RUNS="${RUNS:-3}"
export WINEPREFIX="${WINEPREFIX:-$HOME/.wine-backazon}" WINEDEBUG=-all LANG=C.UTF-8
cargo build --release --bins --quiet
bash ci/windows.sh build >/dev/null
BZ="$PWD/target/release/backazon"
EXE="$PWD/target/windows/x86_64-pc-windows-gnu/release/backazon.exe"
WINE=/usr/lib/wine/wine64
MEASURE="python3 $PWD/bench/measure.py"
DATA="$BENCH_DIR/windows-tree"
[ -d "$DATA" ] || python3 bench/gen.py "$DATA" --windows
OUT="$BENCH_DIR/windows-restore"
mkdir -p "$OUT"
mountpoint -q "$OUT" || mount -t tmpfs -o size=4g tmpfs "$OUT"
trap 'umount "$OUT" 2>/dev/null || true; bash ci/windows.sh stop' EXIT
bash ci/windows.sh start
export BACKAZON_PASSWORD=bench
win() { echo "Z:${1//\//\\}"; }
step() { sync; $MEASURE "$@"; }

results="$BENCH_DIR/windows-results.jsonl"
: > "$results"
for n in $(seq 1 "$RUNS"); do
    for tool in linux wine; do
        repo="$BENCH_DIR/scratch/win-repo-$tool-$n"
        rm -rf "$repo" "$OUT"/* "$BENCH_DIR/scratch/win-cache-$tool-$n"
        mkdir -p "$BENCH_DIR/scratch"
        sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
        tar -cf - "$DATA" 2>/dev/null | cat >/dev/null
        if [ "$tool" = linux ]; then
            run=("$BZ"); r=$repo; d=$DATA; o=$OUT/linux
            export BACKAZON_CACHE_DIR="$BENCH_DIR/scratch/win-cache-$tool-$n"
        else
            run=("$WINE" "$EXE"); r=$(win "$repo"); d=$(win "$DATA"); o=$(win "$OUT/wine")
            export BACKAZON_CACHE_DIR=$(win "$BENCH_DIR/scratch/win-cache-$tool-$n")
        fi
        "${run[@]}" init -q --repo "$r"
        backup=$(step "${run[@]}" backup -q --repo "$r" "$d")
        nochange=$(step "${run[@]}" backup -q --repo "$r" "$d")
        restore=$(step "${run[@]}" restore -q --repo "$r" latest --target "$o")
        check=$(step "${run[@]}" check -q --read-data --repo "$r")
        echo "{\"tool\":\"$tool\",\"run\":$n,\"backup\":$backup,\"nochange\":$nochange,\"restore\":$restore,\"check\":$check}" | tee -a "$results"
    done
done
python3 - "$results" "$DATA" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
files = sum(len(f) for _, _, f in os.walk(sys.argv[2]))
size = sum(os.path.getsize(os.path.join(d, x)) for d, _, fs in os.walk(sys.argv[2]) for x in fs)
print(f"\n{files} files, {size / 1e9:.2f} GB; median of {max(r['run'] for r in rows)} runs")
print(f"{'step':<10} {'Linux s':>9} {'Wine s':>9} {'Wine/Linux':>11} {'Linux ms/file':>14} {'Wine ms/file':>13}")
for step in ["backup", "nochange", "restore", "check"]:
    med = {t: statistics.median(r[step]["wall"] for r in rows if r["tool"] == t) for t in ("linux", "wine")}
    print(f"{step:<10} {med['linux']:>9.2f} {med['wine']:>9.2f} {med['wine'] / med['linux']:>10.2f}x "
          f"{med['linux'] * 1000 / files:>14.3f} {med['wine'] * 1000 / files:>13.3f}")
PY
