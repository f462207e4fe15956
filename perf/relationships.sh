#!/usr/bin/env bash
# What one failover relationship costs (issue 21): a hub with N
# relationships (secondary of each, one listen address) and a spoke
# primary of the same N (one partner: the hub picks each connection's
# relationship by the name in its CONNECT), over TLS, one subnet each.
# Once every relationship is NORMAL, the hub's resident memory and its
# CPU time over IDLE seconds (keepalives, timers, no clients), from /proc.
# As root. Usage: perf/relationships.sh "1 8 32 64" [IDLE] (defaults:
# "1 8 32 64", 60). Builds release.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=${1:-"1 8 32 64"}
IDLE=${2:-60}
cargo build --release --locked --bins >/dev/null
BIN=$PWD/target/release/tandem
WORK=$(mktemp -d /tmp/tandem-rels.XXXX)
NS_H=trel-h NS_S=trel-s
cleanup() {
    for ns in $NS_H $NS_S; do
        ip netns pids $ns 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del $ns 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
cleanup
mkdir -p "$WORK"
ip netns add $NS_H && ip netns add $NS_S
ip link add trel0 type veth peer name trel1
ip link set trel0 netns $NS_H && ip link set trel1 netns $NS_S
for ns in $NS_H $NS_S; do
    ip -n $ns link set lo up
    ip netns exec $ns sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
done
ip -n $NS_H link set trel0 name eth0 && ip -n $NS_S link set trel1 name eth0
ip -n $NS_H addr add 2001:db8:fe::1/64 dev eth0 nodad && ip -n $NS_H link set eth0 up
ip -n $NS_S addr add 2001:db8:fe::2/64 dev eth0 nodad && ip -n $NS_S link set eth0 up
"$BIN" gen-tls --out "$WORK/tls" --name hub.test --name spoke.test >/dev/null

# config ROLE N: N relationships rel-K over subnets 2001:db8:K::/64.
config() {
    local role=$1 n=$2 me peer name peername
    if [ "$role" = secondary ]; then me=1 peer=2 name=hub.test peername=spoke.test; else me=2 peer=1 name=spoke.test peername=hub.test; fi
    echo "data-dir = \"$WORK/data-$role\""
    echo 'interfaces = ["eth0"]'
    for k in $(seq 1 "$n"); do
        printf '[[subnet]]\nprefix = "2001:db8:%x::/64"\npools = ["2001:db8:%x::1000-2001:db8:%x::1fff"]\n' "$k" "$k" "$k"
        printf 'pd-pools = [{ prefix = "2001:db8:%x00::/48", delegated-length = 56 }]\n' "$k"
    done
    for k in $(seq 1 "$n"); do
        printf '[[failover]]\nname = "rel-%d"\nrole = "%s"\nlisten = "[2001:db8:fe::%d]:647"\npeer = "[2001:db8:fe::%d]:647"\n' "$k" "$role" "$me" "$peer"
        printf 'subnets = ["2001:db8:%x::/64"]\n' "$k"
        printf '[failover.tls]\ncert = "%s"\nkey = "%s"\nca = "%s"\npeer-name = "%s"\n' \
            "$WORK/tls/$name.pem" "$WORK/tls/$name.key" "$WORK/tls/ca.pem" "$peername"
    done
}

ticks=$(getconf CLK_TCK)
printf '%-14s %-16s %-14s %-16s %-22s\n' relationships "s to all NORMAL" "hub RSS MiB" "RSS per rel KiB" "hub CPU ms/s idle"
base_rss=""
for n in $COUNTS; do
    rm -rf "$WORK"/data-*
    config secondary "$n" >"$WORK/hub.toml"
    config primary "$n" >"$WORK/spoke.toml"
    ip netns exec $NS_H "$BIN" serve --shards 1 --config "$WORK/hub.toml" --ready-file "$WORK/ready-h" --log-level warn 2>"$WORK/hub.log" &
    hub=$!
    ip netns exec $NS_S "$BIN" serve --shards 1 --config "$WORK/spoke.toml" --ready-file "$WORK/ready-s" --log-level warn 2>"$WORK/spoke.log" &
    spoke=$!
    t0=$(date +%s.%N)
    for _ in $(seq 1500); do
        normal=$("$BIN" ctl --socket "$WORK/data-secondary/control.sock" status 2>/dev/null | python3 -c 'import json,sys; print(sum(r["state"]=="NORMAL" for r in json.load(sys.stdin)["relationships"]))' 2>/dev/null || echo 0)
        [ "$normal" = "$n" ] && break
        sleep 0.2
    done
    if [ "$normal" != "$n" ]; then echo "only $normal of $n relationships NORMAL"; tail -20 "$WORK/hub.log"; exit 1; fi
    took=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
    sleep 5
    cpu0=$(awk '{print $14+$15}' /proc/$hub/stat)
    sleep "$IDLE"
    cpu1=$(awk '{print $14+$15}' /proc/$hub/stat)
    rss=$(awk '/VmRSS/ {print $2}' /proc/$hub/status)
    [ -z "$base_rss" ] && base_rss=$rss base_n=$n
    per=$([ "$n" -gt "$base_n" ] && echo $(( (rss - base_rss) / (n - base_n) )) || echo "-")
    printf '%-14s %-16s %-14s %-16s %-22s\n' "$n" "$took" "$(( rss / 1024 ))" "$per" "$(python3 -c "print(round(($cpu1 - $cpu0) * 1000 / $ticks / $IDLE, 2))")"
    kill $spoke $hub; wait $spoke $hub 2>/dev/null || true
done
