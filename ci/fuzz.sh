#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer, AddressSanitizer): every target in fuzz/ runs over
# its committed corpus (fuzz/corpus/<target>) and then for SECONDS more on new inputs.
# New inputs go to a scratch folder, so the committed corpus only changes by hand.
#   bash ci/fuzz.sh [SECONDS] [TARGET...]    CI: 6 s each; bench/fuzz.sh: as long as asked
# Limits on every run: no input may take 10 s, the process may not pass 1 GiB of memory,
# and no single allocation may pass 600 MiB (a length field claiming 4 GiB must not be
# believed; the largest legitimate allocation is a 256 MiB object, doubled while read).
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the run; rerun it with
#   (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O TARGET artifacts/TARGET/crash-...)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-10}
shift || true
if ! command -v cargo-fuzz >/dev/null && [ ! -x "$HOME/.cargo/bin/cargo-fuzz" ]; then
    echo "installing cargo-fuzz once (cargo install cargo-fuzz)..." >&2
    cargo install cargo-fuzz --locked --quiet
fi
cd fuzz
# The stable toolchain takes the -Z flags libFuzzer's instrumentation needs.
export RUSTC_BOOTSTRAP=1 CARGO_TERM_COLOR=never
build=$(mktemp)
if ! cargo fuzz build -O >"$build" 2>&1; then
    grep -v "^\s*Compiling" "$build" | tail -40 >&2
    rm -f "$build"
    echo "fuzz targets did not build" >&2
    exit 1
fi
rm -f "$build"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "artifacts/$t"
    log="$scratch/$t.log"
    start=$(date +%s)
    if cargo fuzz run -O "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=600 \
        -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
        echo "fuzz $t: ok, $runs inputs in $(( $(date +%s) - start )) s, corpus $(ls "corpus/$t" | wc -l) + $(ls "$scratch/$t" | wc -l) new"
    else
        status=1
        echo "fuzz $t: FAILED"
        # (not `| head`: under pipefail grep's SIGPIPE would end the script with 141)
        grep -m 20 -E "ERROR|panicked|SUMMARY|Test unit written|artifact_prefix|Running" "$log" || true
    fi
done
exit "$status"
