#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what the tests need (skipping what
# is already there), builds once in release for Linux and once for Windows (tests and
# benchmarks share those builds), type-checks for macOS (ci/macos.sh), then runs every unit and end-to-end test on Linux and
# the unit tests of the engine, fs and cli under Wine; the Windows end-to-end tests
# (tests/tests/windows.rs) drive backazon.exe under Wine from the Linux run; then every
# fuzz target over its corpus and a short burst (ci/fuzz.sh).
# CI runs this through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh

export CARGO_TERM_COLOR=never
export WINEPREFIX="${WINEPREFIX:-$HOME/.wine-backazon}" WINEDEBUG=-all
df -h . | awk 'NR == 2 { print "disk at the start: " $4 " free of " $2 }'
cargo build --release --workspace --bins
bash ci/windows.sh build
bash ci/macos.sh check
# The macOS check's metadata (1.2 GB) serves nothing after it; CI's disk is not large.
[ "${CI:-}" != true ] || rm -rf target/macos
linux=$(mktemp)
windows=$(mktemp)
# The tests' files (repositories, trees, restores: 1.7 GB at once at most, sampled) go
# to a tmpfs of their own when this runs as root: memory is plentiful, disk is not, and
# everything in it goes at the end even if a test leaves a mount or a read-only file.
scratch=""
if [ "$(id -u)" = 0 ] && [ -z "${BACKAZON_TEST_TMP:-}" ]; then
    scratch=$(mktemp -d /tmp/bz-tests.XXXXXX)
    if mount -t tmpfs -o size=12g,mode=1777 tmpfs "$scratch"; then
        export TMPDIR="$scratch"
    else
        echo "no tmpfs for the tests' files (mount refused): they go to /tmp" >&2
        rmdir "$scratch"
        scratch=""
    fi
fi
# One Wine server for the whole run: each program under Wine then starts in milliseconds.
bash ci/windows.sh start
trap 'rm -f "$linux" "$windows"; bash ci/windows.sh stop
      [ -z "$scratch" ] || { umount -l "$scratch"; rmdir "$scratch"; }' EXIT
status=0
cargo test --release --workspace --no-fail-fast 2>&1 | tee "$linux" || status=$?
echo "--- unit tests of the Windows build (engine, fs, cli), under Wine"
bash ci/windows.sh test --no-fail-fast 2>&1 | tee "$windows" || status=$?
echo "--- fuzz targets (fuzz/): each over its corpus, then 6 s of new inputs"
bash ci/fuzz.sh 6 || status=$?
# One closing line over every test binary, Linux and Windows, for people and for CI.
# tests/windows.rs runs in the Linux pass but every test in it drives backazon.exe.
awk '/Running / { exe = (FILENAME == ARGV[2] || $0 ~ /tests\/windows\.rs/) ? "w" : "l" }
     /^test result:/ { for (i = 1; i <= NF; i++) {
         if ($(i+1) ~ /^passed/) { p[exe] += $i; tp += $i }
         if ($(i+1) ~ /^failed/) { f[exe] += $i; tf += $i } } }
     END { printf "tests: %d passed, %d failed (Linux: %d passed, %d failed; Windows under Wine: %d passed, %d failed)\n",
                  tp, tf, p["l"], f["l"], p["w"], f["w"] }' "$linux" "$windows"
df -h . | awk 'NR == 2 { print "disk at the end: " $4 " free of " $2 }'
exit "$status"
