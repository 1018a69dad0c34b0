#!/usr/bin/env bash
# The web console over a large set-up: JOBS jobs (90 runs of history each) and SNAPSHOTS
# snapshots in one repository, one of them holding a folder of WIDE entries. Prints,
# median of RUNS:
#   - the dashboard's first paint, and the time until every job's card is on the page
#     (headless chromium, a fresh page each time);
#   - the snapshot list of one job: the first look (the console opened the repository
#     in the background when it started) and again; and, at the server, the list of a
#     job whose repository is opened only when first looked at;
#   - the first page (500 entries) of the wide folder: time to its first byte and whole;
#   - the console process's memory (peak and now) after all of it.
#   bash bench/console.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR="${BENCH_DIR:-/var/tmp/backazon-bench}"
RUNS="${RUNS:-5}"
JOBS="${JOBS:-50}"
SNAPSHOTS="${SNAPSHOTS:-10000}"
WIDE="${WIDE:-100000}"
bash ci/setup.sh >/dev/null
cargo build --release --workspace --bins --quiet
BZ="$PWD/target/release/backazon"
W="$BENCH_DIR/console"
rm -rf "$W"; mkdir -p "$W/data/wide" "$W/state"
export BACKAZON_PASSWORD=bench BACKAZON_REPOSITORY="$W/repo" BACKAZON_CACHE_DIR="$W/cache"
export BACKAZON_CONFIG="$W/jobs.toml" BACKAZON_STATE_DIR="$W/state"
echo bench > "$W/pw"
python3 - "$W" "$JOBS" "$WIDE" <<'PY'
import json, os, sys, datetime
w, jobs, wide = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(wide):
    open(f"{w}/data/wide/f{i:06d}.txt", "w").close()
with open(f"{w}/jobs.toml", "w") as f:
    for j in range(jobs):
        f.write(f'[jobs.job{j:02d}]\nrepository = "{w}/repo"\npaths = ["{w}/data"]\n'
                f'password_file = "{w}/pw"\nschedule = "daily 02:30"\n\n')
now = datetime.datetime.now(datetime.timezone.utc)
for j in range(jobs):
    runs = []
    for r in range(90):
        t = now - datetime.timedelta(days=90 - r)
        runs.append({"started": t.isoformat(), "finished": (t + datetime.timedelta(seconds=40)).isoformat(),
                     "result": "failed" if r % 29 == 7 else "success", "trigger": "schedule", "pid": 1,
                     "summary": "12000 files (10 new, 3 changed), 20 MiB added, 0 errors, 40.0 s",
                     "stats": {"files": 12000, "bytes": 5_000_000_000 + r * 10_000_000,
                               "bytes_added": 20_000_000 + (r % 7) * 3_000_000, "errors": 0, "seconds": 30 + r % 13}})
    with open(f"{w}/state/job{j:02d}.history", "w") as f:
        f.writelines(json.dumps(x) + "\n" for x in runs)
    with open(f"{w}/state/job{j:02d}.json", "w") as f:
        json.dump({"last_slot": now.isoformat().replace("+00:00", "Z"), "last_run": runs[-1]}, f)
PY
"$BZ" init -q
"$BZ" backup -q --job job00 "$W/data"
target/release/bz-many-snapshots "$W/repo" "$SNAPSHOTS" "$JOBS"
SNAP=$("$BZ" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"][:8])')

"$BZ" ui --no-open --port 0 > "$W/ui.out" 2> "$W/ui.err" &
UI=$!
trap 'kill $UI 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$W/ui.out" ] && break; sleep 0.1; done
URL=$(head -1 "$W/ui.out")
HOST=${URL#http://}; HOST=${HOST%%/*}; TOKEN=${URL#*token=}

echo "console: $JOBS jobs (90 runs each), $SNAPSHOTS snapshots, a folder of $WIDE entries; median of $RUNS"
node bench/console.mjs "$URL" "$RUNS" job00 "$JOBS"

page() {
    curl -s -o /dev/null -w '%{time_starttransfer} %{time_total}\n' -H "Authorization: Bearer $TOKEN" \
        "http://$HOST/api/jobs/job00/ls?snapshot=$SNAP&path=$W/data/wide&offset=0&limit=500"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
times=$(for _ in $(seq "$RUNS"); do page; done)
printf 'first page of the %s-entry folder: first byte %.0f ms, whole %.0f ms\n' "$WIDE" \
    "$(echo "$times" | awk '{ print $1 * 1000 }' | median)" "$(echo "$times" | awk '{ print $2 * 1000 }' | median)"
# The page's first look above finds the repository opened already: the console opens
# every job's repository whose password is in a file, in the background, when it starts.
# A job whose password comes from a command is opened when first looked at: its list,
# as the server sends it (the page then draws it in about the "then" time above).
printf '\n[jobs.cold]\nrepository = "%s/repo"\npaths = ["%s/data"]\npassword_command = "cat %s/pw"\n' \
    "$W" "$W" "$W" >> "$W/jobs.toml"
printf 'snapshot list of a job not opened before (password from a command): %.0f ms at the server\n' \
    "$(curl -s -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $TOKEN" \
        "http://$HOST/api/jobs/cold/snapshots" | awk '{ print $1 * 1000 }')"
printf 'console memory: peak %s MiB, now %s MiB\n' \
    "$(awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' /proc/$UI/status)" "$(awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' /proc/$UI/status)"
