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

# A single-node Garage with its admin API (for /metrics) on free ports.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
S3P=$(port); RPCP=$(port); ADMP=$(port)
cat > "$W/garage.toml" <<EOT
metadata_dir = "$W/garage/meta"
data_dir = "$W/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPCP"
rpc_public_addr = "127.0.0.1:$RPCP"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3P"
[admin]
api_bind_addr = "127.0.0.1:$ADMP"
EOT
G="garage -c $W/garage.toml"
$G server > "$W/garage.log" 2>&1 &
GPID=$!
trap 'kill $GPID 2>/dev/null || true; rm -rf "$RESTORE_DIR"' EXIT
until NODE=$($G node id -q 2>/dev/null) && $G status >/dev/null 2>&1; do sleep 0.2; done
$G layout assign -z dc1 -c 20G "${NODE%@*}" >/dev/null
$G layout apply --version 1 >/dev/null
KEY=$($G key create bench)
export AWS_ACCESS_KEY_ID=$(echo "$KEY" | awk -F': *' '/Key ID/ {print $2}')
export AWS_SECRET_ACCESS_KEY=$(echo "$KEY" | awk -F': *' '/Secret key/ {print $2}')
export AWS_REGION=garage AWS_DEFAULT_REGION=garage
$G bucket create bench >/dev/null
$G bucket allow --read --write --owner bench --key bench >/dev/null
ENDPOINT="http://127.0.0.1:$S3P"
export BACKAZON_S3_ENDPOINT=$ENDPOINT BACKAZON_S3_PATH_STYLE=true
export BACKAZON_PASSWORD=bench RESTIC_PASSWORD=bench

# Requests the server has answered so far, by S3 operation, as JSON.
requests() {
    curl -s "http://127.0.0.1:$ADMP/metrics" | python3 -c '
import json, re, sys
out = {}
for line in sys.stdin:
    m = re.match(r"api_s3_request_counter\{api_endpoint=\"(\w+)\"\} (\d+)", line)
    if m:
        out[m.group(1)] = out.get(m.group(1), 0) + int(m.group(2))
print(json.dumps(out))'
}
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
