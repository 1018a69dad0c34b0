# A single-node Garage S3 server for the benchmark scripts (sourced, not run):
#   start_garage DIR           on 127.0.0.1
#   start_garage DIR NETNS     in network namespace NETNS made here, reached over a veth
#                              pair (10.211.0.1 here, 10.211.0.2 there); `link_delay MS`
#                              then puts MS each way between here and there (0: none)
# The delay is bz-slow-link, a proxy run in the namespace in front of Garage, not
# `tc netem`: this machine's kernel has no netem (CONFIG_NET_SCH_NETEM is not set).
# Sets ENDPOINT, ADMIN (its admin API, for /metrics), AWS_* and BACKAZON_S3_*, and makes
# the bucket `bench`. stop_garage ends it (and removes the namespace). `requests` prints
# the requests it has answered so far, by S3 operation, as JSON.
# Garage comes from ~/.cargo/bin (ci/setup.sh builds it once).

GARAGE_NS=""
LINK_PID=""
SLOW_LINK="${SLOW_LINK:-$PWD/target/release/bz-slow-link}"
start_garage() {
    local dir=$1 ns=${2:-} ip=127.0.0.1 run=()
    mkdir -p "$dir"
    if [ -n "$ns" ]; then
        GARAGE_NS=$ns
        ip netns del "$ns" 2>/dev/null || true
        ip link del bzveth0 2>/dev/null || true
        ip netns add "$ns"
        ip link add bzveth0 type veth peer name bzveth1 netns "$ns"
        ip addr add 10.211.0.1/24 dev bzveth0
        ip link set bzveth0 up
        ip netns exec "$ns" ip addr add 10.211.0.2/24 dev bzveth1
        ip netns exec "$ns" ip link set bzveth1 up
        ip netns exec "$ns" ip link set lo up
        ip=10.211.0.2
        run=(ip netns exec "$ns")
    fi
    local s3p rpcp admp
    s3p=$(garage_port); rpcp=$(garage_port); admp=$(garage_port)
    cat > "$dir/garage.toml" <<EOT
metadata_dir = "$dir/garage/meta"
data_dir = "$dir/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "$ip:$rpcp"
rpc_public_addr = "$ip:$rpcp"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "$ip:$s3p"
[admin]
api_bind_addr = "$ip:$admp"
EOT
    G=("${run[@]}" garage -c "$dir/garage.toml")
    "${G[@]}" server > "$dir/garage.log" 2>&1 &
    GPID=$!
    local node
    until node=$("${G[@]}" node id -q 2>/dev/null) && "${G[@]}" status >/dev/null 2>&1; do sleep 0.2; done
    "${G[@]}" layout assign -z dc1 -c 20G "${node%@*}" >/dev/null
    "${G[@]}" layout apply --version 1 >/dev/null
    local key
    key=$("${G[@]}" key create bench)
    export AWS_ACCESS_KEY_ID=$(echo "$key" | awk -F': *' '/Key ID/ {print $2}')
    export AWS_SECRET_ACCESS_KEY=$(echo "$key" | awk -F': *' '/Secret key/ {print $2}')
    export AWS_REGION=garage AWS_DEFAULT_REGION=garage
    "${G[@]}" bucket create bench >/dev/null
    "${G[@]}" bucket allow --read --write --owner bench --key bench >/dev/null
    ENDPOINT="http://$ip:$s3p"
    GARAGE_DIRECT=$ENDPOINT
    ADMIN="http://$ip:$admp"
    export BACKAZON_S3_ENDPOINT=$ENDPOINT BACKAZON_S3_PATH_STYLE=true
}

# Free ports are looked for here; in a namespace they are free there too (it has none).
garage_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

link_delay() { # MS: requests go through a link of MS each way (0: straight to Garage)
    local ms=$1
    [ -n "${LINK_PID:-}" ] && { kill "$LINK_PID" 2>/dev/null || true; wait "$LINK_PID" 2>/dev/null || true; }
    LINK_PID=""
    if [ "$ms" = 0 ]; then
        ENDPOINT=$GARAGE_DIRECT
    else
        local port
        port=$(garage_port)
        ip netns exec "$GARAGE_NS" "$SLOW_LINK" "10.211.0.2:$port" "${GARAGE_DIRECT#http://}" "$ms" > /dev/null &
        LINK_PID=$!
        until (exec 3<>"/dev/tcp/10.211.0.2/$port") 2>/dev/null; do sleep 0.05; done
        ENDPOINT="http://10.211.0.2:$port"
    fi
    export BACKAZON_S3_ENDPOINT=$ENDPOINT
}

stop_garage() {
    [ -n "${LINK_PID:-}" ] && kill "$LINK_PID" 2>/dev/null
    kill "$GPID" 2>/dev/null || true
    wait "$GPID" 2>/dev/null || true
    if [ -n "$GARAGE_NS" ]; then
        ip link del bzveth0 2>/dev/null || true
        ip netns del "$GARAGE_NS" 2>/dev/null || true
    fi
}

requests() {
    curl -s "$ADMIN/metrics" | python3 -c '
import json, re, sys
out = {}
for line in sys.stdin:
    m = re.match(r"api_s3_request_counter\{api_endpoint=\"(\w+)\"\} (\d+)", line)
    if m:
        out[m.group(1)] = out.get(m.group(1), 0) + int(m.group(2))
print(json.dumps(out))'
}
