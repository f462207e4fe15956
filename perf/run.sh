#!/usr/bin/env bash
# perf/run.sh — side-by-side DHCPv6 load runs in one go, with one generator:
#
#   tandem (1 shard, fsync'd group commits)   vs  Kea 2.2 memfile persist=true,
#                                                  multi-threading off and on
#   tandem failover pair (TLS, NORMAL)         vs  Kea HA hot-standby pair
#   tandem at half its saturation rate (latency)
#
# Topology (made here, removed on exit): a bridge namespace joining
#   tperf-p  server / primary    2001:db8:1::1/64
#   tperf-s  secondary / standby 2001:db8:1::2/64
#   tperf-c  the generator (tandem-load), link-local only
# The failover link (tandem, TCP 647) and Kea's HA link (HTTP 8001) use the same
# link. Pinning: generator on CPU $GEN_CPU, every server process on CPU $SRV_CPU
# (both members of a pair share it, as Kea's pair does).
#
# Writes perf/RESULTS.md (machine, date, table with ratios). Needs root,
# iproute2, taskset; Kea rows need kea-dhcp6-server (Debian), and are skipped
# when it is missing (e.g. on a machine without apt for shard scaling:
# `perf/run.sh --scaling 1,2,4,8,12` runs only tandem with more shards).
#
# Usage: perf/run.sh [--duration S] [--window N] [--scaling LIST] [--scale N] [--no-kea] [--only-scale] [--no-build]
#   --scale N: the failover pipeline at scale (issue 14): fill a pair with N
#   leases (rapid commit, window 512) and time until the primary's BNDUPD
#   backlog is 0; the primary's RSS; a fresh secondary's full resync of them
#   (UPDREQALL, RFC 8156 §5.3.6) with the primary on CPU 0 and the secondary
#   on CPU 1, and both sides' CPU seconds; then the primary alone in
#   PARTNER-DOWN with the N leases: its shard loop lag (p99) under light load.
#   --no-kea: skip the Kea rows.
#   --only-scale: only the --scale block (no load rows, no Kea, no RESULTS.md);
#   MAX_UNACKED=N in the environment sets both servers' max-unacked-bndupd.
#   --store: the lease store (issue 15), one shard, each load mode (4msg,
#   rapid, renew, release) for $STORE_DURATION s (default 120, long enough
#   for several journal merges): bytes written per lease change (process
#   write_bytes from /proc/PID/io, and the data disk's sectors from
#   /sys/block/DEV/stat), commits and merge steps, RSS; then flushes per
#   commit under strace (fdatasync/fsync/msync calls and writes to O_DSYNC
#   descriptors); then RSS after a restart from the store, and start-up time.
#   STORE_FILL=N adds: N leases (rapid commit), RSS, restart time and RSS.
#   --only-store: only that block (no RESULTS.md; results in target/perf-work).
#   --datapath: the packet path (issue 16), tandem (1 shard) and Kea single-
#   threaded, a fresh server per row, $DATAPATH_DURATION s each (default 10):
#   CPU per lease at saturation (4msg window 64 and 256, rapid, NA+PD), at a
#   fixed 2000 exchanges/s ($DATAPATH_RATE_DURATION s, default 20), at half
#   of the window-64 saturation (with tandem's server-side latency histogram),
#   tandem idle for 30 s, and the data disk's fdatasync floor.
#   --only-datapath: only that block (and Kea's rows in it; no RESULTS.md).
#   DP_ONLY=REGEX runs only the rows whose server name matches (DP_SAT=N:
#   the saturation rate the half row uses when the w64 row did not run);
#   PROFILE=dp-tandem-w64 (a row's server name) records that server with
#   `perf record -g` into target/perf-work/NAME.perf.data.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=10
WINDOW=256
SCALING=""
SCALE=0
ONLY_SCALE=0
STORE=0
ONLY_STORE=0
DATAPATH=0
ONLY_DATAPATH=0
BUILD=1
NO_KEA=0
GEN_CPU=${GEN_CPU:-0}            # one generator per CPU listed (comma-separated)
SRV_CPU=${SRV_CPU:-1}
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --window) WINDOW=$2; shift 2 ;;
        --scaling) SCALING=$2; shift 2 ;;
        --scale) SCALE=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --no-kea) NO_KEA=1; shift ;;
        --only-scale) ONLY_SCALE=1; NO_KEA=1; shift ;;
        --store) STORE=1; shift ;;
        --only-store) STORE=1; ONLY_STORE=1; ONLY_SCALE=1; NO_KEA=1; shift ;;
        --datapath) DATAPATH=1; shift ;;
        --only-datapath) DATAPATH=1; ONLY_DATAPATH=1; ONLY_SCALE=1; shift ;;
        -h|--help) sed -n 2,46p "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "perf/run.sh needs root (network namespaces)" >&2; exit 2; }

if [ $BUILD = 1 ]; then
    cargo build --release --bins >&2
fi
# TANDEM_BIN: another build to measure (e.g. the commit before a change).
TANDEM=${TANDEM_BIN:-$ROOT/target/release/tandem}
LOAD=$ROOT/target/release/tandem-load
WORK=$ROOT/target/perf-work
rm -rf "$WORK"; mkdir -p "$WORK"
RESULTS=$WORK/results.txt
: > "$RESULTS"

NS_B=tperf-b NS_P=tperf-p NS_S=tperf-s NS_C=tperf-c
cleanup() {
    for ns in $NS_P $NS_S $NS_C $NS_B; do
        ip netns pids $ns 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del $ns 2>/dev/null || true
    done
}
trap cleanup EXIT
cleanup
ip netns add $NS_B
ip -n $NS_B link set lo up
ip -n $NS_B link add br0 type bridge
ip -n $NS_B link set br0 up
i=0
for ns in $NS_P $NS_S $NS_C; do
    ip netns add $ns
    ip -n $ns link set lo up
    ip link add tp$i type veth peer name tp${i}b
    ip link set tp$i netns $ns
    ip link set tp${i}b netns $NS_B
    ip -n $NS_B link set tp${i}b master br0
    ip -n $NS_B link set tp${i}b up
    ip netns exec $ns sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.tp$i.accept_dad=0
    ip -n $ns link set tp$i name eth0
    ip -n $ns link set eth0 up
    i=$((i + 1))
done
ip -n $NS_P addr add 2001:db8:1::1/64 dev eth0 nodad
ip -n $NS_S addr add 2001:db8:1::2/64 dev eth0 nodad
for _ in $(seq 50); do
    ip -n $NS_C -6 addr show dev eth0 scope link | grep -v tentative | grep -q fe80 && break
    sleep 0.1
done

# CPU seconds (user+system) of a process tree's main pid.
cpu_of() { awk '{print ($14 + $15) / 100}' /proc/$1/stat 2>/dev/null || echo 0; }

POOL='pools = ["2001:db8:1::1:0-2001:db8:1::ffff:ffff"]'
tandem_config() { # role data-dir [failover lines]
    local role=$1 data=$2
    cat <<EOF
data-dir = "$data"
interfaces = ["eth0"]
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "eth0"
$POOL
pd-pools = [{ prefix = "2001:db8:100::/40", delegated-length = 64 }]
preferred-lifetime = 5400
valid-lifetime = 7200
renew-time = 1800
rebind-time = 3600
rapid-commit = true
EOF
    if [ "$role" != standalone ]; then
        local me=1 peer=2
        [ "$role" = secondary ] && me=2 peer=1
        cat <<EOF
[failover]
name = "perf"
role = "$role"
listen = "[2001:db8:1::$me]:647"
peer = "[2001:db8:1::$peer]:647"
mclt = 3600
startup-time = 1
max-unacked-bndupd = ${MAX_UNACKED:-1024}
[failover.tls]
cert = "$WORK/tls/$role.perf.pem"
key = "$WORK/tls/$role.perf.key"
ca = "$WORK/tls/ca.pem"
EOF
    fi
}

start_tandem() { # ns role shards name [extra serve flags...]
    local ns=$1 role=$2 shards=$3 name=$4
    shift 4
    local d=$WORK/$name
    mkdir -p "$d"
    rm -f "$d/ready"
    tandem_config "$role" "$d/data" > "$d/tandem.toml"
    local cpus=$SRV_CPU
    if [ "$shards" -gt 1 ]; then cpus="$SRV_CPU-$((SRV_CPU + shards - 1))"; fi
    ip netns exec $ns taskset -c "$cpus" "$TANDEM" serve --config "$d/tandem.toml" --shards "$shards" --cpus "$cpus" \
        --failover-cpu "$SRV_CPU" --log-level warn --ready-file "$d/ready" ${SERVE_FLAGS:-} "$@" 2> "$d/server.log" &
    echo $! > "$d/pid"
    for _ in $(seq 1200); do [ -f "$d/ready" ] && return 0; sleep 0.1; done
    echo "tandem $name did not start:"; cat "$d/server.log"; exit 1
}

tandem_state() { "$TANDEM" ctl --socket "$WORK/$1/data/control.sock" status | python3 -c 'import json,sys; print(json.load(sys.stdin)["failover"]["state"])'; }

stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# run LABEL SERVER-PIDS... -- GENERATOR-ARGS...  (one generator per CPU in GEN_CPU;
# each gets its own client numbers)
run_load() {
    local label=$1; shift
    local pids=()
    while [ "$1" != -- ]; do pids+=("$1"); shift; done
    shift
    sleep 1
    local c0=0 c1=0 p k=0 gpids=() before=() each=""
    for p in "${pids[@]}"; do c0=$(echo "$c0 + $(cpu_of "$p")" | bc); before+=("$(cpu_of "$p")"); done
    for cpu in ${GEN_CPU//,/ }; do
        ip netns exec $NS_C taskset -c "$cpu" "$LOAD" --interface eth0 --duration "$DURATION" "$@" \
            --first-client $(( NEXT + k * 1000000 )) > "$WORK/gen-$k.out" &
        gpids+=($!)
        k=$((k + 1))
    done
    NEXT=$((NEXT + 100000000))
    for p in "${gpids[@]}"; do wait "$p"; done
    k=0
    for p in "${pids[@]}"; do
        c1=$(echo "$c1 + $(cpu_of "$p")" | bc)
        each="$each${each:+,}$(echo "$(cpu_of "$p") - ${before[$k]}" | bc)"
        k=$((k + 1))
    done
    local srv_pct
    srv_pct=$(echo "scale=0; 100 * ($c1 - $c0) / $DURATION" | bc)
    for i in $(seq 0 $(( $(echo "${GEN_CPU//,/ }" | wc -w) - 1 ))); do
        echo "$label|$(cat "$WORK/gen-$i.out") server_cpu_pct=$srv_pct server_cpu_s=$each" | tee -a "$RESULTS" >&2
    done
}

GEN_ARGS=(--mode 4msg --na true --pd false --window "$WINDOW")
NEXT=1

if [ $ONLY_SCALE = 0 ]; then
# ---- tandem standalone, and shard scaling ----------------------------------
SHARD_LIST=${SCALING:-1}
for shards in ${SHARD_LIST//,/ }; do
    start_tandem $NS_P standalone "$shards" "tandem-$shards"
    pid=$(cat "$WORK/tandem-$shards/pid")
    run_load "tandem $shards shard(s)" "$pid" -- "${GEN_ARGS[@]}"
    stop_pid "$pid"
done
if [ -n "$SCALING" ]; then
    python3 perf/report.py "$RESULTS" "$ROOT/perf/RESULTS-scaling.md" "$DURATION" "$WINDOW" "$GEN_CPU" "$SRV_CPU"
    exit 0
fi

# Window 64 (the CPU-per-lease comparison with the pair, issue 14).
GEN64=(--mode 4msg --na true --pd false --window 64)
start_tandem $NS_P standalone 1 tandem-w64
pid=$(cat "$WORK/tandem-w64/pid")
run_load "tandem 1 shard, window 64" "$pid" -- "${GEN64[@]}"
stop_pid "$pid"

# ---- tandem at half its saturation: latency ----------------------------------
sat=$(grep '^tandem 1 shard' "$RESULTS" | sed 's/.*leases_per_s=\([0-9]*\).*/\1/' | head -1)
NGEN=$(echo "${GEN_CPU//,/ }" | wc -w)
half=$(( sat / 2 / NGEN ))
start_tandem $NS_P standalone 1 tandem-half
pid=$(cat "$WORK/tandem-half/pid")
run_load "tandem 1 shard at half load" "$pid" -- --mode 4msg --na true --pd false --rate "$half" --window 100000
stop_pid "$pid"

# ---- tandem failover pair -----------------------------------------------------
"$TANDEM" gen-tls --out "$WORK/tls" --name primary.perf --name secondary.perf > /dev/null
start_tandem $NS_S secondary 1 pair-s
start_tandem $NS_P primary 1 pair-p
# A new pair takes the §8.6.2 shortcut through recovery (it never ran failover).
for _ in $(seq 600); do
    [ "$(tandem_state pair-p 2>/dev/null)" = NORMAL ] && [ "$(tandem_state pair-s 2>/dev/null)" = NORMAL ] && break
    sleep 0.2
done
echo "pair: primary $(tandem_state pair-p), secondary $(tandem_state pair-s)" >&2
pp=$(cat "$WORK/pair-p/pid"); ps_=$(cat "$WORK/pair-s/pid")
run_load "tandem pair (failover, TLS)" "$pp" "$ps_" -- "${GEN_ARGS[@]}"
# Let the BNDUPD backlog drain, then report how much was still queued.
sleep 2
"$TANDEM" ctl --socket "$WORK/pair-p/data/control.sock" status > "$WORK/pair-p/status.json"
run_load "tandem pair (failover, TLS), window 64" "$pp" "$ps_" -- "${GEN64[@]}"
stop_pid "$pp"; stop_pid "$ps_"

fi

# ---- scale: the failover pipeline with N leases (issue 14) ---------------------
status_of() { "$TANDEM" ctl --socket "$WORK/$1/data/control.sock" status 2>/dev/null; }
records_of() { status_of "$1" | python3 -c 'import json,sys; print(sum(s["leases"] for s in json.load(sys.stdin)["per-shard"]))' 2>/dev/null || echo 0; }
backlog_of() { status_of "$1" | python3 -c 'import json,sys; f=json.load(sys.stdin)["failover"]; print(f["unacked-bndupd"] + f["pending-updates"])' 2>/dev/null || echo -1; }
# Loop-lag histogram of every shard, summed: "le=count ..." (cumulative buckets).
lag_of() { ip netns exec "$1" python3 -c '
import sys, urllib.request
text = urllib.request.urlopen("http://" + sys.argv[1] + "/metrics", timeout=5).read().decode()
b = {}
for line in text.splitlines():
    if line.startswith("tandem_shard_loop_lag_seconds_bucket"):
        le = line.split("le=\"")[1].split("\"")[0]
        b[le] = b.get(le, 0) + int(float(line.rsplit(" ", 1)[1]))
print(" ".join(k + "=" + str(v) for k, v in b.items()))
' "$2"; }
# ---- store: bytes and flushes per lease change (issue 15) ---------------------
metric_of() { ip netns exec $NS_P python3 -c '
import sys, urllib.request
text = urllib.request.urlopen("http://[::1]:9464/metrics", timeout=5).read().decode()
print(sum(int(float(l.rsplit(" ", 1)[1])) for l in text.splitlines() if l.startswith(sys.argv[1] + " ")))
' "$1"; }
io_of() { awk -v k="$2" '$1 == k":" {print $2}' /proc/$1/io; }
rss_of() { awk '/VmRSS/{print $2}' /proc/$1/status; }
leases_of() { "$TANDEM" ctl --socket "$WORK/$1/data/control.sock" status | python3 -c 'import json,sys; print(sum(s["leases"] for s in json.load(sys.stdin)["per-shard"]))'; }
if [ $STORE = 1 ]; then
    SD=${STORE_DURATION:-120}
    dev=$(basename "$(findmnt -no SOURCE -T "$WORK")")
    dev_written() { awk '{printf "%.0f\n", $7 * 512}' "/sys/block/$dev/stat" 2>/dev/null || echo 0; }
    for mode in 4msg rapid renew release; do
        start_tandem $NS_P standalone 1 "store-$mode" --metrics-listen "[::1]:9464"
        pid=$(cat "$WORK/store-$mode/pid")
        wb0=$(io_of "$pid" write_bytes); d0=$(dev_written)
        c0=$(metric_of tandem_store_commits_total); ch0=$("$TANDEM" ctl --socket "$WORK/store-$mode/data/control.sock" status | python3 -c 'import json,sys; print(sum(s["changes-committed"] for s in json.load(sys.stdin)["per-shard"]))')
        ip netns exec $NS_C taskset -c "${GEN_CPU%%,*}" "$LOAD" --interface eth0 --mode "$mode" --window "$WINDOW" --duration "$SD" \
            --first-client $(( NEXT )) > "$WORK/store-$mode.out"
        NEXT=$((NEXT + 100000000))
        sleep 1
        st=$("$TANDEM" ctl --socket "$WORK/store-$mode/data/control.sock" status)
        ch1=$(echo "$st" | python3 -c 'import json,sys; print(sum(s["changes-committed"] for s in json.load(sys.stdin)["per-shard"]))')
        steps=$(echo "$st" | python3 -c 'import json,sys; print(sum(s["merge-steps"] for s in json.load(sys.stdin)["per-shard"]))')
        echo "store|mode=$mode changes=$((ch1 - ch0)) commits=$(( $(metric_of tandem_store_commits_total) - c0 )) merge_steps=$steps write_bytes=$(( $(io_of "$pid" write_bytes) - wb0 )) dev_bytes=$(( $(dev_written) - d0 )) store_bytes=$(metric_of tandem_store_bytes_written_total) journal_bytes=$(metric_of tandem_store_journal_bytes) rss_kib=$(rss_of "$pid") $(cat "$WORK/store-$mode.out")" | tee -a "$RESULTS" >&2
        if [ "$mode" = 4msg ]; then
            # Flushes per commit: 6 s of the same load under strace, counted
            # over the middle 4 s. O_DSYNC descriptors (LMDB's meta page
            # writer) from /proc/PID/fdinfo; every write on one is a flush.
            ip netns exec $NS_C taskset -c "${GEN_CPU%%,*}" "$LOAD" --interface eth0 --mode 4msg --window "$WINDOW" --duration 6 \
                --first-client $(( NEXT )) > /dev/null &
            gp=$!
            NEXT=$((NEXT + 100000000))
            sleep 1
            c0=$(metric_of tandem_store_commits_total)
            timeout -s INT 4 strace -f -qq -tt -e trace=fdatasync,fsync,msync,pwrite64,pwritev,write,io_uring_enter,sendmsg,sendmmsg -o "$WORK/strace.txt" $(ls /proc/$pid/task | sed "s/^/-p /") || true
            c1=$(metric_of tandem_store_commits_total)
            wait $gp
            dsync=$(for f in /proc/$pid/fdinfo/*; do fl=$(awk '/^flags/{print $2}' "$f"); [ $(( 0$fl & 010000 )) -ne 0 ] && basename "$f"; true; done | tr '\n' ' ')
            journal=$(for f in /proc/$pid/fd/*; do readlink "$f" | grep -q '/journal-.*\.log$' && basename "$f"; true; done | tr '\n' ' ')
            # Commits: appends to a journal; flushes: every fdatasync, fsync,
            # msync and write on an O_DSYNC descriptor (merges included).
            counts=$(python3 - "$WORK/strace.txt" "$dsync" "$journal" <<'PY'
import re, sys
dsync, journal = set(sys.argv[2].split()), set(sys.argv[3].split())
flushes = commits = 0
for line in open(sys.argv[1]):
    m = re.search(r'\b(fdatasync|fsync|msync|pwrite64|pwritev|write)\((\d+)', line)
    if not m or 'resumed' in line:
        continue
    if m.group(1) in ('fdatasync', 'fsync', 'msync') or m.group(2) in dsync:
        flushes += 1
    if m.group(1) == 'pwrite64' and m.group(2) in journal:
        commits += 1
print(commits, flushes)
PY
)
            echo "flushes|commits=${counts% *} flushes=${counts#* } metric_commits=$((c1 - c0)) dsync_fds=${dsync// /,} journal_fds=${journal// /,}" | tee -a "$RESULTS" >&2
            # The order for one commit: the journal write and its fdatasync
            # (blocking thread), then the replies (the shard's io_uring_enter).
            python3 - "$WORK/strace.txt" "$journal" > "$WORK/strace-order.txt" <<'PY' || true
import re, sys
lines, fds = open(sys.argv[1]).read().splitlines(), sys.argv[2].split()
for i, l in enumerate(lines):
    if not re.search(r'pwrite64\((%s),' % '|'.join(fds or ['-']), l):
        continue
    synced, replies = False, 0
    for m in lines[i:i + 400]:
        if 'pwrite64' in m or 'fdatasync' in m:
            print(m[:150])
            synced = synced or re.search(r'fdatasync.*= 0', m) is not None
        elif 'sendmsg(' in m and 'resumed' not in m:
            kind = re.search(r'iov_base="(\\\d+)', m)
            print(m[:40], '... message type', kind.group(1) if kind else '?')
            replies += synced
            if replies >= 3:
                break
    break
PY
            # Restart from the store (every lease of the 4msg run): start-up
            # time to the ready file, and RSS once ready.
            n=$(leases_of "store-$mode")
            stop_pid "$pid"
            t0=$(date +%s.%N)
            start_tandem $NS_P standalone 1 "store-$mode" --metrics-listen "[::1]:9464"
            t1=$(date +%s.%N)
            pid=$(cat "$WORK/store-$mode/pid")
            sleep 2
            echo "restart|leases=$n ready_s=$(echo "$t1 - $t0" | bc) rss_kib=$(rss_of "$pid")" | tee -a "$RESULTS" >&2
        fi
        stop_pid "$pid"
    done
    if [ "${STORE_FILL:-0}" -gt 0 ]; then
        # STORE_FILL leases (rapid commit, window 512): RSS after the fill,
        # then a restart from that store: time to ready, RSS.
        start_tandem $NS_P standalone 1 store-fill --metrics-listen "[::1]:9464"
        pid=$(cat "$WORK/store-fill/pid")
        ip netns exec $NS_C taskset -c "${GEN_CPU%%,*}" "$LOAD" --interface eth0 --mode rapid --window 512 --duration 3600 \
            --count "$STORE_FILL" --first-client 700000000 > "$WORK/store-fill.out"
        sleep 2
        n=$(leases_of store-fill)
        fill_rss=$(rss_of "$pid")
        stop_pid "$pid"
        t0=$(date +%s.%N)
        start_tandem $NS_P standalone 1 store-fill --metrics-listen "[::1]:9464"
        t1=$(date +%s.%N)
        pid=$(cat "$WORK/store-fill/pid")
        sleep 2
        echo "fill|leases=$n fill_rss_kib=$fill_rss ready_s=$(echo "$t1 - $t0" | bc) rss_kib=$(rss_of "$pid") $(cat "$WORK/store-fill.out")" | tee -a "$RESULTS" >&2
        stop_pid "$pid"
    fi
fi
[ $ONLY_STORE = 1 ] && { echo "only-store: results in $RESULTS" >&2; exit 0; }

if [ "$SCALE" -gt 0 ]; then
    [ -f "$WORK/tls/ca.pem" ] || "$TANDEM" gen-tls --out "$WORK/tls" --name primary.perf --name secondary.perf > /dev/null
    start_tandem $NS_S secondary 1 scale-s
    start_tandem $NS_P primary 1 scale-p --metrics-listen "[::1]:9464"
    sp=$(cat "$WORK/scale-p/pid")
    for _ in $(seq 600); do
        [ "$(tandem_state scale-p 2>/dev/null)" = NORMAL ] && [ "$(tandem_state scale-s 2>/dev/null)" = NORMAL ] && break
        sleep 0.2
    done
    # Fill (rapid commit, window 512); then how long until nothing is left
    # to send or to be acked (failover.unacked-bndupd + pending-updates).
    ip netns exec $NS_C taskset -c "${GEN_CPU%%,*}" "$LOAD" --interface eth0 --mode rapid --window 512 --duration 3600 \
        --count "$SCALE" --first-client 900000000 > "$WORK/scale-load.out"
    t0=$(date +%s.%N)
    at_stop=$(backlog_of scale-p)
    drained=never
    for _ in $(seq 1200); do
        [ "$(backlog_of scale-p)" = 0 ] && { drained=$(echo "$(date +%s.%N) - $t0" | bc); break; }
        sleep 0.05
    done
    echo "backlog|at_stop=$at_stop drained_s=$drained $(cat "$WORK/scale-load.out")" | tee -a "$RESULTS" >&2
    rss=$(awk '/VmRSS/{print $2}' /proc/$sp/status)
    echo "scale|leases=$SCALE rss_kib=$rss $(cat "$WORK/scale-load.out")" | tee -a "$RESULTS" >&2
    # The secondary loses its store: on restart it asks for everything
    # (UPDREQALL). Primary on CPU 0, secondary on CPU 1, no load. Timed from
    # the start of its process until it holds as many records as the primary.
    total=$(records_of scale-p)
    stop_pid "$(cat "$WORK/scale-s/pid")"
    rm -rf "$WORK/scale-s"
    taskset -a -p -c 0 "$sp" > /dev/null
    pc0=$(cpu_of "$sp")
    t0=$(date +%s.%N)
    SRV_CPU=1 start_tandem $NS_S secondary 1 scale-s
    n=0
    for _ in $(seq 36000); do
        n=$(records_of scale-s)
        [ "$n" -ge "$total" ] && break
        sleep 0.05
    done
    t1=$(date +%s.%N)
    ss=$(cat "$WORK/scale-s/pid")
    echo "resync|leases=$n seconds=$(echo "$t1 - $t0" | bc) primary_cpu_s=$(echo "$(cpu_of "$sp") - $pc0" | bc) secondary_cpu_s=$(cpu_of "$ss") secondary_write_bytes=$(awk '/^write_bytes/{print $2}' /proc/$ss/io)" | tee -a "$RESULTS" >&2
    # PARTNER-DOWN with the N leases: the secondary goes away, the operator
    # says so; the primary serves a light load (2,000 exchanges/s) while its
    # periodic work (expiry, reclamation) runs. Loop lag over 20 s.
    taskset -a -p -c "$SRV_CPU" "$sp" > /dev/null
    stop_pid "$ss"
    for _ in $(seq 100); do [ "$(tandem_state scale-p)" = COMMUNICATIONS-INTERRUPTED ] && break; sleep 0.2; done
    "$TANDEM" ctl --socket "$WORK/scale-p/data/control.sock" partner-down > /dev/null
    for _ in $(seq 100); do [ "$(tandem_state scale-p)" = PARTNER-DOWN ] && break; sleep 0.2; done
    before=$(lag_of $NS_P "[::1]:9464")
    ip netns exec $NS_C taskset -c "${GEN_CPU%%,*}" "$LOAD" --interface eth0 --mode 4msg --rate 2000 --window 100000 --duration 20 \
        --first-client 950000000 > "$WORK/pd-load.out"
    after=$(lag_of $NS_P "[::1]:9464")
    echo "pdlag|state=$(tandem_state scale-p) before=${before// /,} after=${after// /,} $(cat "$WORK/pd-load.out")" | tee -a "$RESULTS" >&2
    stop_pid "$sp"
fi

# ---- Kea ----------------------------------------------------------------------
KEA=0
if [ $NO_KEA = 0 ] && command -v kea-dhcp6 > /dev/null; then
    KEA=1
    HOOKS=$(dirname "$(find / -name libdhcp_ha.so -path '*kea*' 2>/dev/null | head -1)")
    kea_config() { # dir mt ha-role
        local d=$1 mt=$2 ha=$3 hooks="" mtcfg
        if [ "$mt" = on ]; then mtcfg='{ "enable-multi-threading": true, "thread-pool-size": 2, "packet-queue-size": 64 }'
        else mtcfg='{ "enable-multi-threading": false }'; fi
        if [ -n "$ha" ]; then
            hooks=$(cat <<EOF
  "hooks-libraries": [
    { "library": "$HOOKS/libdhcp_lease_cmds.so" },
    { "library": "$HOOKS/libdhcp_ha.so", "parameters": { "high-availability": [ {
        "this-server-name": "$ha", "mode": "hot-standby",
        "heartbeat-delay": 10000, "max-response-delay": 60000, "max-ack-delay": 5000, "max-unacked-clients": 0,
        "multi-threading": { "enable-multi-threading": true, "http-dedicated-listener": true,
                             "http-listener-threads": 1, "http-client-threads": 1 },
        "peers": [
          { "name": "server1", "url": "http://[2001:db8:1::1]:8001/", "role": "primary", "auto-failover": true },
          { "name": "server2", "url": "http://[2001:db8:1::2]:8001/", "role": "standby", "auto-failover": true } ] } ] } }
  ],
EOF
)
        fi
        cat <<EOF
{ "Dhcp6": {
  "data-directory": "$d",
  "interfaces-config": { "interfaces": [ "eth0" ] },
  "control-socket": { "socket-type": "unix", "socket-name": "$d/kea6.sock" },
  "lease-database": { "type": "memfile", "persist": true, "name": "$d/leases6.csv", "lfc-interval": 0 },
  "multi-threading": $mtcfg,
$hooks
  "valid-lifetime": 7200, "preferred-lifetime": 5400, "renew-timer": 1800, "rebind-timer": 3600,
  "subnet6": [ { "id": 1, "subnet": "2001:db8:1::/64", "interface": "eth0",
    "pools": [ { "pool": "2001:db8:1::1:0 - 2001:db8:1::ffff:ffff" } ],
    "pd-pools": [ { "prefix": "2001:db8:100::", "prefix-len": 40, "delegated-len": 64 } ] } ],
  "loggers": [ { "name": "kea-dhcp6", "severity": "WARN", "output_options": [ { "output": "$d/kea.log" } ] } ]
} }
EOF
    }
    start_kea() { # ns name mt ha-role
        local d=$WORK/$2
        mkdir -p "$d"
        kea_config "$d" "$3" "${4:-}" > "$d/kea.json"
        KEA_PIDFILE_DIR=$d KEA_LOCKFILE_DIR=$d ip netns exec "$1" taskset -c "$SRV_CPU" kea-dhcp6 -c "$d/kea.json" > "$d/stdout.log" 2>&1 &
        echo $! > "$d/pid"
        for _ in $(seq 100); do [ -S "$d/kea6.sock" ] && return 0; sleep 0.1; done
        echo "Kea $2 did not start:"; cat "$d/stdout.log" "$d/kea.log" 2>/dev/null; exit 1
    }
    kea_cmd() { # name json
        python3 - "$WORK/$1/kea6.sock" "$2" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode())
out = b""
while True:
    b = s.recv(65536)
    if not b: break
    out += b
print(out.decode())
EOF
    }
fi
if [ $KEA = 1 ] && [ $ONLY_DATAPATH = 0 ]; then
    start_kea $NS_P kea-st off
    pid=$(cat "$WORK/kea-st/pid")
    run_load "Kea 2.2 single-threaded" "$pid" -- "${GEN_ARGS[@]}"
    stop_pid "$pid"
    start_kea $NS_P kea-mt on
    pid=$(cat "$WORK/kea-mt/pid")
    run_load "Kea 2.2 multi-threaded (2)" "$pid" -- "${GEN_ARGS[@]}"
    stop_pid "$pid"
    # Kea half-load latency, for comparison.
    ksat=$(grep '^Kea 2.2 single' "$RESULTS" | sed 's/.*leases_per_s=\([0-9]*\).*/\1/' | head -1)
    start_kea $NS_P kea-half off
    pid=$(cat "$WORK/kea-half/pid")
    run_load "Kea 2.2 single-threaded at half load" "$pid" -- --mode 4msg --na true --pd false --rate $((ksat / 2 / NGEN)) --window 100000
    stop_pid "$pid"
    # HA hot-standby pair (needs Kea's multi-threading for the HA listener).
    start_kea $NS_S kea-ha-s on server2
    start_kea $NS_P kea-ha-p on server1
    for _ in $(seq 150); do
        kea_cmd kea-ha-p '{"command": "ha-heartbeat"}' 2>/dev/null | grep -q '"state": "hot-standby"' && break
        sleep 0.2
    done
    echo "Kea HA: $(kea_cmd kea-ha-p '{"command": "ha-heartbeat"}' 2>/dev/null | head -c 300)" >&2
    kp=$(cat "$WORK/kea-ha-p/pid"); ks=$(cat "$WORK/kea-ha-s/pid")
    run_load "Kea 2.2 HA hot-standby pair" "$kp" "$ks" -- "${GEN_ARGS[@]}"
    stop_pid "$kp"; stop_pid "$ks"
    if [ $STORE = 1 ]; then
        # Kea's RSS holding 1 M leases (issue 15's yardstick), multi-threaded.
        start_kea $NS_P kea-fill on
        pid=$(cat "$WORK/kea-fill/pid")
        ip netns exec $NS_C taskset -c "${GEN_CPU%%,*}" "$LOAD" --interface eth0 --mode 4msg --window 256 --duration 3600 \
            --count 1000000 --first-client 800000000 > "$WORK/kea-fill.out"
        echo "kea-rss|leases=$(sed 's/.*completed=\([0-9]*\).*/\1/' "$WORK/kea-fill.out") rss_kib=$(rss_of "$pid") $(cat "$WORK/kea-fill.out")" | tee -a "$RESULTS" >&2
        stop_pid "$pid"
    fi
fi
[ $KEA = 0 ] && echo "kea-dhcp6 not installed (or --no-kea): Kea rows skipped" >&2

# ---- datapath: CPU per lease, low load, idle, latency (issue 16) ---------------
if [ $DATAPATH = 1 ]; then
    DD=${DATAPATH_DURATION:-10}
    # dp_run LABEL SERVER(tandem|kea) NAME GENERATOR-ARGS...: a fresh server per row.
    dp_run() {
        local label=$1 server=$2 name=$3
        shift 3
        # DP_ONLY=REGEX: only the rows whose server name matches (profiling).
        if [ -n "${DP_ONLY:-}" ] && ! [[ $name =~ $DP_ONLY ]]; then return 0; fi
        if [ "$server" = tandem ]; then start_tandem $NS_P standalone 1 "$name" --metrics-listen "[::1]:9465"
        else start_kea $NS_P "$name" off; fi
        local pid perf_pid=""
        pid=$(cat "$WORK/$name/pid")
        # PROFILE=NAME: record this row's server with perf (call graphs).
        if [ "${PROFILE:-}" = "$name" ]; then
            perf record ${PERF_CALLGRAPH:--g} -p "$pid" -o "$WORK/$name.perf.data" -- sleep $((DD + 1)) 2> /dev/null &
            perf_pid=$!
        fi
        DURATION=$DD run_load "$label" "$pid" -- "$@"
        [ -n "$perf_pid" ] && wait "$perf_pid"
        if [ "$server" = tandem ]; then lat_of "$label" > /dev/null || true; fi
        stop_pid "$pid"
    }
    # Server-side reply latency (tandem_reply_latency_seconds) of the running
    # tandem on [::1]:9465, by request type: "dplat|label|type=... le=count,...".
    lat_of() { ip netns exec $NS_P python3 -c '
import sys, urllib.request
text = urllib.request.urlopen("http://[::1]:9465/metrics", timeout=5).read().decode()
b = {}
for line in text.splitlines():
    if line.startswith("tandem_reply_latency_seconds_bucket"):
        if "type=" not in line: continue
        ty = line.split("type=\"")[1].split("\"")[0]
        le = line.split("le=\"")[1].split("\"")[0]
        b.setdefault(ty, []).append(le + "=" + line.rsplit(" ", 1)[1])
for ty, v in b.items():
    print("dplat|" + sys.argv[1] + "|type=" + ty + " buckets=" + ",".join(v))
commits = sum(int(float(l.rsplit(" ", 1)[1])) for l in text.splitlines() if l.startswith("tandem_store_commits_total "))
lag = [l.split("le=\"")[1].split("\"")[0] + "=" + l.rsplit(" ", 1)[1] for l in text.splitlines() if l.startswith("tandem_shard_loop_lag_seconds_bucket")]
print("dpcommits|" + sys.argv[1] + "|commits=" + str(commits) + " lag=" + ",".join(lag))
' "$1" | tee -a "$RESULTS" >&2; }
    for srv in tandem kea; do
        [ $srv = kea ] && [ $KEA = 0 ] && continue
        name=$([ $srv = tandem ] && echo tandem || echo Kea)
        dp_run "dp $name 4msg w64" $srv "dp-$srv-w64" --mode 4msg --na true --pd false --window 64
        dp_run "dp $name 4msg w256" $srv "dp-$srv-w256" --mode 4msg --na true --pd false --window 256
        dp_run "dp $name rapid w64" $srv "dp-$srv-rapid" --mode rapid --na true --pd false --window 64
        dp_run "dp $name na+pd w64" $srv "dp-$srv-napd" --mode 4msg --na true --pd true --window 64
        DD=${DATAPATH_RATE_DURATION:-20} dp_run "dp $name 2000/s" $srv "dp-$srv-2k" --mode 4msg --na true --pd false --rate 2000 --window 100000
        sat=$(grep "^dp $name 4msg w64|" "$RESULTS" | sed 's/.*leases_per_s=\([0-9]*\).*/\1/' | head -1 || true)
        sat=${sat:-${DP_SAT:-40000}}
        dp_run "dp $name half" $srv "dp-$srv-half" --mode 4msg --na true --pd false --rate $(( sat / 2 )) --window 100000
    done
    # Idle: a server with nothing to do, 30 s of its CPU.
    if [ -z "${DP_ONLY:-}" ]; then
    start_tandem $NS_P standalone 1 dp-idle
    pid=$(cat "$WORK/dp-idle/pid")
    sleep 2
    c0=$(cpu_of "$pid"); sleep 30; c1=$(cpu_of "$pid")
    echo "dpidle|seconds=30 cpu_s=$(echo "$c1 - $c0" | bc)" | tee -a "$RESULTS" >&2
    stop_pid "$pid"
    # The flush floor on the data disk: 4 KiB write + fdatasync, 2000 times.
    python3 - "$WORK" <<'PY' | tee -a "$RESULTS" >&2
import os, sys, time
fd = os.open(os.path.join(sys.argv[1], "floor.bin"), os.O_WRONLY | os.O_CREAT, 0o600)
t = []
for i in range(2000):
    a = time.perf_counter(); os.pwrite(fd, b"x" * 4096, (i % 256) * 4096); os.fdatasync(fd); t.append(time.perf_counter() - a)
t.sort()
print(f"dpfloor|p50_us={t[len(t) // 2] * 1e6:.0f} p99_us={t[int(len(t) * 0.99)] * 1e6:.0f}")
PY
    fi
fi

if [ $ONLY_DATAPATH = 1 ]; then
    python3 perf/report.py "$RESULTS" "$WORK/RESULTS.md" "$DD" 64 "$GEN_CPU" "$SRV_CPU"
    echo "only-datapath: $WORK/RESULTS.md" >&2
fi
[ $ONLY_SCALE = 1 ] && { echo "only-scale: results in $RESULTS" >&2; exit 0; }
python3 perf/report.py "$RESULTS" "$ROOT/perf/RESULTS.md" "$DURATION" "$WINDOW" "$GEN_CPU" "$SRV_CPU" "$WORK/pair-p/status.json"
echo "wrote perf/RESULTS.md" >&2
