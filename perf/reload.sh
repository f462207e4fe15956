#!/usr/bin/env bash
# What a reload and the lease API cost at scale (issue 19), standalone:
# fill the store with LEASES rapid-commit clients (tandem-load), then time
# `ctl reload` adding a pool (every shard walks its table once), a reload
# that changes only lifetimes, `ctl lease get --duid` (a table walk), and
# `ctl lease wipe` of the whole subnet; load keeps running during the
# reloads, and the shard loop lag and dropped counters show what they cost.
# As root. Usage: perf/reload.sh [LEASES] (default 300000). Builds release.
set -euo pipefail
cd "$(dirname "$0")/.."
LEASES=${1:-300000}
SHARDS=${SHARDS:-2}
cargo build --release --locked --bins >/dev/null
BIN=$PWD/target/release/tandem
LOAD=$PWD/target/release/tandem-load
WORK=$(mktemp -d /tmp/tandem-reload.XXXX)
NS_S=trl-s NS_C=trl-c
cleanup() {
    for ns in $NS_S $NS_C; do
        ip netns pids $ns 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del $ns 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
cleanup
mkdir -p "$WORK"
ip netns add $NS_S && ip netns add $NS_C
ip link add trl0 type veth peer name trl1
ip link set trl0 netns $NS_S && ip link set trl1 netns $NS_C
for ns in $NS_S $NS_C; do
    ip -n $ns link set lo up
    ip netns exec $ns sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
done
ip -n $NS_S link set trl0 name eth0 && ip -n $NS_C link set trl1 name eth0
ip netns exec $NS_S sysctl -qw net.ipv6.conf.eth0.accept_dad=0
ip netns exec $NS_C sysctl -qw net.ipv6.conf.eth0.accept_dad=0
ip -n $NS_S addr add 2001:db8:1::1/64 dev eth0 nodad
ip -n $NS_S link set eth0 up && ip -n $NS_C link set eth0 up
for _ in $(seq 50); do
    ip -n $NS_C -6 addr show dev eth0 scope link | grep -v tentative | grep -q fe80 && break
    sleep 0.1
done

config() { # extra-pool valid
    cat <<EOF
data-dir = "$WORK/data"
interfaces = ["eth0"]
[runtime]
shards = $SHARDS
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "eth0"
pools = ["2001:db8:1::1:0-2001:db8:1::ffff:ffff"$1]
valid-lifetime = $2
preferred-lifetime = 3000
rapid-commit = true
EOF
}
CFG=$WORK/tandem.toml
config "" 86400 > "$CFG"
ip netns exec $NS_S "$BIN" serve --config "$CFG" --ready-file "$WORK/ready" --log-level info,tandem::runtime::shard=debug 2> "$WORK/server.log" &
for _ in $(seq 300); do [ -e "$WORK/ready" ] && break; sleep 0.1; done
SOCK=$WORK/data/control.sock
ctl() { "$BIN" ctl --socket "$SOCK" "$@"; }
ms() { date +%s%3N; }

t0=$(ms)
ip netns exec $NS_C "$LOAD" --interface eth0 --mode rapid --window 256 --count "$LEASES" --duration 600 > "$WORK/fill.txt"
echo "fill: $LEASES leases in $(( $(ms) - t0 )) ms"

# Load during the reloads: a second client population renewing.
ip netns exec $NS_C "$LOAD" --interface eth0 --mode rapid --window 64 --first-client 50000000 --duration 8 > "$WORK/during.txt" &
LOADPID=$!
sleep 1
config ', "2001:db8:1::1:0:0-2001:db8:1::1:ffff:ffff"' 86400 > "$CFG"
t0=$(ms); ctl reload > "$WORK/r1.json"; t1=$(ms)
echo "reload adding a pool: $((t1 - t0)) ms: $(cat "$WORK/r1.json")"
sleep 1
config ', "2001:db8:1::1:0:0-2001:db8:1::1:ffff:ffff"' 43200 > "$CFG"
t0=$(ms); ctl reload > "$WORK/r2.json"; t1=$(ms)
echo "reload changing lifetimes: $((t1 - t0)) ms: $(cat "$WORK/r2.json")"
wait $LOADPID || true
echo "load during the reloads: $(tail -1 "$WORK/during.txt")"
echo "per shard, in the server's log:"
grep -E "records new pools cover|configuration applied" "$WORK/server.log" | sed 's/^[^ ]* *[A-Z]* [^ ]* //' 
t0=$(ms); ctl lease get --duid 000200007ed90000000000000001 > /dev/null; t1=$(ms)
echo "lease get --duid (a table walk): $((t1 - t0)) ms"
ctl status > "$WORK/status.json"
python3 - "$WORK/status.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print("active leases:", s["leases"]["active"], "dropped:", s["dropped"], s["dropped-by-reason"])
print("loop lag max bucket per shard (s):", [p["loop-lag-max-bucket"] for p in s["per-shard"]])
PY
t0=$(ms); ctl lease wipe --subnet 2001:db8:1::/64 --yes > "$WORK/wipe.json"; t1=$(ms)
echo "wipe: $((t1 - t0)) ms: $(cat "$WORK/wipe.json" | tr -d ' \n')"
