#!/usr/bin/env python3
"""Turn perf/run.sh's RESULT lines into perf/RESULTS.md (numbers only from the run)."""
import datetime, json, os, platform, re, subprocess, sys

results, out, duration, window, gen_cpu, srv_cpu = sys.argv[1:7]
status_file = sys.argv[7] if len(sys.argv) > 7 else None

runs = {}   # label -> list of dicts (one per generator)
order = []
for line in open(results):
    line = line.strip()
    if '|' not in line:
        continue
    label, rest = line.split('|', 1)
    if label in ('scale', 'resync', 'backlog', 'pdlag', 'store', 'flushes', 'restart', 'fill', 'dplat', 'dpidle', 'dpfloor', 'dpcommits'):
        continue  # reported below, not load rows
    kv = dict(re.findall(r'(\w+)=([^ ]+)', rest))
    if label not in runs:
        runs[label] = []
        order.append(label)
    runs[label].append(kv)

def total(label):
    rs = runs.get(label)
    if not rs:
        return None
    f = lambda k: sum(float(r.get(k, 0)) for r in rs)
    m = lambda k: max(float(r.get(k, 0)) for r in rs)
    return {
        'leases': f('leases_per_s'), 'timeouts': f('timeouts'), 'p50': m('p50_us'), 'p99': m('p99_us'),
        'p999': m('p999_us'), 'gen_cpu': f('cpu_pct'), 'srv_cpu': float(rs[0].get('server_cpu_pct', 0)), 'gens': len(rs),
        'window': rs[0].get('window'), 'rate': sum(float(r.get('rate', 0)) for r in rs),
    }

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return '?'

cpu = sh("lscpu | sed -n 's/^Model name: *//p' | head -1")
lines = []
w = lines.append
w('# perf results')
w('')
w(f'Produced by `perf/run.sh` on {datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}; '
  'every number below comes from that run. Re-run it to replace this file.')
w('')
mem = sh("free -g | awk '/Mem:/{print $2}'")
disk = sh("df --output=source target/ 2>/dev/null | tail -1")
w(f'- Machine: {cpu}, {os.cpu_count()} CPUs, {mem} GiB RAM, kernel {platform.release()}, data on `{disk}`.')
w(f'- Load: `tandem-load` (perf/load.rs), 4-message exchange (Solicit, Advertise, Request, Reply), IA_NA, '
  f'a new DUID per exchange, {window} exchanges in flight per generator (closed loop) unless a rate is shown, '
  f'{duration} s per run; generator(s) pinned to CPU {gen_cpu}, servers to CPU {srv_cpu} (both members of a pair on it).')
w('- tandem: 1 shard, LMDB commit with fsync before every reply (group commit). Kea 2.2 (Debian): memfile '
  '`persist=true` (appends, never fsyncs), logging at WARN. Pairs: tandem RFC 8156 over mutual TLS in NORMAL '
  '(lazy BNDUPDs); Kea HA hot-standby with lease_cmds + ha hooks, HTTP dedicated listener (Kea waits for the '
  "standby's ack before replying).")
w('')
w('| run | leases/s | timeouts | p50 µs | p99 µs | p99.9 µs | generator CPU % | server CPU % |')
w('|---|---:|---:|---:|---:|---:|---:|---:|')
for label in order:
    if label.startswith('dp '):
        continue  # the datapath section's own table
    t = total(label)
    rate = f' (offered {t["rate"]:.0f}/s)' if t['rate'] > 0 else ''
    w(f'| {label}{rate} | {t["leases"]:.0f} | {t["timeouts"]:.0f} | {t["p50"]:.0f} | {t["p99"]:.0f} | {t["p999"]:.0f} | '
      f'{t["gen_cpu"]:.0f} | {t["srv_cpu"]:.0f} |')
w('')

def ratio(a, b):
    ta, tb = total(a), total(b)
    if not ta or not tb or tb['leases'] == 0:
        return None
    return ta['leases'] / tb['leases']

w('## Ratios and targets')
w('')
rows = []
r = ratio('tandem 1 shard(s)', 'Kea 2.2 single-threaded')
if r is not None:
    rows.append(('durable leases/s vs Kea single-threaded (target ≥ 4×)', f'{r:.2f}×'))
r = ratio('tandem 1 shard(s)', 'Kea 2.2 multi-threaded (2)')
if r is not None:
    rows.append(('durable leases/s vs Kea multi-threaded', f'{r:.2f}×'))
r = ratio('tandem pair (failover, TLS)', 'tandem 1 shard(s)')
if r is not None:
    rows.append(('pair with BNDUPDs flowing vs standalone tandem (target ≥ 90 %)', f'{100 * r:.0f} %'))
r = ratio('tandem pair (failover, TLS)', 'Kea 2.2 HA hot-standby pair')
if r is not None:
    rows.append(('tandem pair vs Kea HA pair (target ≥ 4×)', f'{r:.2f}×'))
r = ratio('Kea 2.2 HA hot-standby pair', 'Kea 2.2 multi-threaded (2)')
if r is not None:
    rows.append(('Kea HA pair vs Kea multi-threaded alone', f'{100 * r:.0f} %'))
h = total('tandem 1 shard at half load')
if h:
    rows.append(('tandem p99 reply latency at half saturation (target ≤ 2 ms)', f'{h["p99"] / 1000:.2f} ms'))
k = total('Kea 2.2 single-threaded at half load')
if k:
    rows.append(('Kea p99 at half its saturation', f'{k["p99"] / 1000:.2f} ms'))
if status_file and os.path.exists(status_file):
    try:
        st = json.load(open(status_file))
        fo = st.get('failover') or {}
        rows.append(('primary after the pair run: state, BNDUPD backlog 2 s later',
                     f'{fo.get("state")}, {fo.get("pending-updates")} leases queued, {fo.get("unacked-bndupd")} unacked'))
    except Exception:
        pass
scaling = [l for l in order if re.fullmatch(r'tandem \d+ shard\(s\)', l)]
if len(scaling) > 1:
    base = total(scaling[0])['leases']
    n0 = int(re.match(r'tandem (\d+)', scaling[0]).group(1))
    for l in scaling[1:]:
        n = int(re.match(r'tandem (\d+)', l).group(1))
        t = total(l)['leases']
        rows.append((f'{n} shards: leases/s and scaling efficiency from {n0}', f'{t:.0f}/s, {t / (base * n / n0):.2f}'))
for line in open(results):
    if line.startswith('scale|'):
        kv = dict(re.findall(r'(\w+)=([^ ]+)', line))
        rows.append((f'RSS of the primary (1 shard, in NORMAL) after granting {kv["leases"]} leases (target ≤ 300 MiB for 1 M)',
                     f'{int(kv["rss_kib"]) / 1024:.0f} MiB'))
    if line.startswith('resync|'):
        kv = dict(re.findall(r'(\w+)=([^ ]+)', line))
        rows.append((f'a secondary that lost its store holds all {kv["leases"]} leases again after (UPDREQALL; target ≤ 10 s for 1 M)',
                     f'{float(kv["seconds"]):.1f} s (incl. start-up and STARTUP wait)'))
w('| measure | value |')
w('|---|---|')
for a, b in rows:
    w(f'| {a} | {b} |')
w('')

# ---- issue 14: the failover pipeline -------------------------------------
def per_lease_us(label, which=0):
    rs = runs.get(label)
    if not rs or 'server_cpu_s' not in rs[0]:
        return None
    cpu = float(rs[0]['server_cpu_s'].split(',')[which])
    done = sum(float(r.get('completed', 0)) for r in rs)
    return 1e6 * cpu / done if done else None

def kv_of(prefix):
    for line in open(results):
        if line.startswith(prefix + '|'):
            return dict(re.findall(r'(\w+)=([^ ]+)', line)), line
    return None, None

rows = []
alone = per_lease_us('tandem 1 shard, window 64')
pair_p = per_lease_us('tandem pair (failover, TLS), window 64', 0)
pair_s = per_lease_us('tandem pair (failover, TLS), window 64', 1)
if alone and pair_p:
    rows.append(('server CPU per lease, standalone, window 64', f'{alone:.1f} µs'))
    rows.append(('primary CPU per lease in NORMAL, window 64 (secondary beside it)', f'{pair_p:.1f} µs (secondary {pair_s:.1f} µs)'))
    rows.append(('primary vs standalone CPU per lease (target ≤ 1.15×)', f'{pair_p / alone:.2f}×'))
kv, _ = kv_of('backlog')
if kv:
    d = kv['drained_s']
    rows.append((f'BNDUPD backlog when a {kv["completed"]}-lease rapid-commit fill (window 512) stopped',
                 f'{kv["at_stop"]} (fill ran at {float(kv["leases_per_s"]):.0f} leases/s)'))
    rows.append(('backlog drained to 0 after (target ≤ 2 s)', f'{float(d):.2f} s' if d != 'never' else 'not within 60 s'))
kv, _ = kv_of('resync')
if kv:
    n, secs = int(kv['leases']), float(kv['seconds'])
    pc, sc = float(kv.get('primary_cpu_s', 0)), float(kv.get('secondary_cpu_s', 0))
    rows.append((f'resync of {n} leases to a secondary with an empty store, from its start (target ≤ 10 s for 1 M)',
                 f'{secs:.1f} s ({n / secs:.0f} leases/s)'))
    rows.append(('resync CPU: primary / secondary', f'{pc:.2f} s / {sc:.2f} s ({1e6 * pc / n:.1f} / {1e6 * sc / n:.1f} µs per lease)'))
    if 'secondary_write_bytes' in kv:
        wb = int(kv['secondary_write_bytes'])
        rows.append(('resync: bytes the secondary wrote to disk (/proc/PID/io write_bytes)',
                     f'{wb / 2**30:.1f} GiB ({wb / n / 1024:.1f} KiB per lease, {wb / secs / 2**20:.0f} MiB/s)'))
kv, line = kv_of('pdlag')
if kv:
    def buckets(name):
        m = re.search(name + r'=([^ ]+)', line)
        return [(float(le) if le != '+Inf' else float('inf'), int(c))
                for le, c in (x.split('=') for x in m.group(1).split(',') if '=' in x)] if m and m.group(1) else []
    b0, b1 = dict(buckets('before')), buckets('after')
    diff = [(le, c - b0.get(le, 0)) for le, c in b1]
    total_n = diff[-1][1] if diff else 0
    p99 = next((le for le, c in diff if total_n and c >= 0.99 * total_n), None)
    over = total_n - next((c for le, c in diff if le == 0.001), total_n)
    rows.append((f'shard loop lag in PARTNER-DOWN holding the leases, 20 s at {float(kv["rate"]):.0f} exchanges/s: p99 bucket (target ≤ 1 ms)',
                 f'≤ {p99 * 1000:g} ms ({total_n} loop turns, {over} above 1 ms); client p99 {float(kv["p99_us"]) / 1000:.1f} ms'))
def section(title, intro, rows):
    if not rows:
        return
    w(f'## {title}')
    w('')
    w(intro)
    w('')
    w('| measure | value |')
    w('|---|---|')
    for a, b in rows:
        w(f'| {a} | {b} |')
    w('')

section('Failover pipeline (issue 14)', 'Primary on CPU 0 and secondary on CPU 1 for the resync; otherwise both on the server CPU.', rows)
# ---- issue 15: the lease store ---------------------------------------------
rows = []
for line in open(results):
    kv = dict(re.findall(r'(\w+)=([^ ]+)', line))
    if line.startswith('store|'):
        ch = max(int(kv['changes']), 1)
        mode = re.match(r'store\|mode=(\S+)', line).group(1)
        rows.append((f'{mode}: bytes written per lease change, process / disk (target ≤ 1 KiB)',
                     f'{int(kv["write_bytes"]) / ch:.0f} B / {int(kv["dev_bytes"]) / ch:.0f} B '
                     f'({kv["changes"]} changes in {kv["commits"]} commits and {kv["merge_steps"]} merge steps, '
                     f'so {1 + 2 * int(kv["merge_steps"]) / max(int(kv["commits"]), 1):.2f} flushes per commit with a merge step\'s two, '
                     f'{float(kv["leases_per_s"]):.0f} exchanges/s, p99 {float(kv["p99_us"]) / 1000:.1f} ms, '
                     f'RSS {int(kv["rss_kib"]) / 1024:.0f} MiB at the end)'))
    if line.startswith('flushes|'):
        c = max(int(kv['commits']), 1)
        rows.append(('flushes per commit under strace, 4 s of the 4msg load: fdatasync, fsync, msync and O_DSYNC writes over journal appends (target ≤ 1.5)',
                     f'{int(kv["flushes"]) / c:.2f} ({kv["flushes"]} flushes, {kv["commits"]} appends)'))
    if line.startswith('restart|'):
        rows.append((f'restart from the store of the 4msg run ({kv["leases"]} leases): ready after, RSS once ready',
                     f'{float(kv["ready_s"]):.1f} s, {int(kv["rss_kib"]) / 1024:.0f} MiB'))
    if line.startswith('fill|'):
        n = int(kv['leases'])
        rows.append((f'{n} leases (rapid-commit fill): RSS after the fill / after a restart (target ≤ 300 MiB per 1 M, ≤ 3 GiB for 10 M)',
                     f'{int(kv["fill_rss_kib"]) / 1024:.0f} MiB / {int(kv["rss_kib"]) / 1024:.0f} MiB '
                     f'({int(kv["rss_kib"]) * 1024 / n:.0f} B per lease after the restart)'))
        rows.append((f'{n} leases: restart until ready (target ≤ 10 s for 10 M)', f'{float(kv["ready_s"]):.1f} s'))
    if line.startswith('kea-rss|'):
        rows.append((f'Kea 2.2 RSS with {kv["leases"]} leases', f'{int(kv["rss_kib"]) / 1024:.0f} MiB'))
section('Lease store (issue 15)',
        'One shard. Per lease change: the store\'s changes committed (`ctl status` changes-committed) over '
        '`/proc/PID/io` write_bytes and the data disk\'s written sectors (`/sys/block/DEV/stat`, the whole disk: '
        'other writers count too).', rows)
# ---- issue 16: the datapath -------------------------------------------------
def hist_p(line, q):
    m = re.search(r'buckets=(\S+)', line)
    pts = [(float(le) if le != '+Inf' else float('inf'), int(float(c))) for le, c in (x.split('=') for x in m.group(1).split(','))]
    n = pts[-1][1] if pts else 0
    return next((le for le, c in pts if n and c >= q * n), None), n

dp = [l for l in order if l.startswith('dp ')]
if dp:
    w('## Datapath (issue 16)')
    w('')
    w('One shard on io_uring (multishot recvmsg, batched sendmsg) vs Kea 2.2 single-threaded, a fresh server per row, '
      'same generator on its own CPU. Server CPU from /proc/PID/stat (user+system) over the run, per completed lease.')
    w('')
    w('| run | leases/s | server CPU µs per lease | server CPU % | p50 µs | p99 µs | timeouts | generator CPU % |')
    w('|---|---:|---:|---:|---:|---:|---:|---:|')
    for label in dp:
        t = total(label)
        us = per_lease_us(label)
        rate = f' (offered {t["rate"]:.0f}/s)' if t['rate'] > 0 else ''
        w(f'| {label[3:]}{rate} | {t["leases"]:.0f} | {us:.1f} | {t["srv_cpu"]:.0f} | {t["p50"]:.0f} | {t["p99"]:.0f} | '
          f'{t["timeouts"]:.0f} | {t["gen_cpu"]:.0f} |')
    w('')
    rows = []
    for mode, target in (('4msg w64', ' (target ≥ 4×)'), ('4msg w256', ''), ('rapid w64', ''), ('na+pd w64', '')):
        a, b = per_lease_us(f'dp tandem {mode}'), per_lease_us(f'dp Kea {mode}')
        if a and b:
            rows.append((f'{mode}: Kea CPU per lease / tandem\'s{target}', f'{b / a:.2f}× ({b:.1f} / {a:.1f} µs)'))
    a, b = per_lease_us('dp tandem 2000/s'), per_lease_us('dp Kea 2000/s')
    if a and b:
        rows.append(('at 2000 exchanges/s: tandem CPU per lease vs Kea\'s (target ≤ Kea)', f'{a:.1f} vs {b:.1f} µs'))
    kv, _ = kv_of('dpidle')
    if kv:
        rows.append(('idle for 30 s: CPU (target ≤ 1 % of a core)', f'{100 * float(kv["cpu_s"]) / float(kv["seconds"]):.2f} %'))
    kv, _ = kv_of('dpfloor')
    if kv:
        rows.append(('flush floor of the data disk: 4 KiB write + fdatasync, p50 / p99', f'{float(kv["p50_us"]) / 1000:.2f} / {float(kv["p99_us"]) / 1000:.2f} ms'))
    for line in open(results):
        if line.startswith('dplat|dp tandem half|'):
            ty = re.search(r'type=(\S+)', line).group(1)
            p50, n = hist_p(line, 0.5)
            p99, _ = hist_p(line, 0.99)
            t = total('dp tandem half')
            rows.append((f'half of saturation ({t["rate"]:.0f}/s offered): server-side {ty} reply latency p50 / p99 bucket '
                         '(tandem_reply_latency_seconds, kernel receipt to send completion; target p99 ≤ 1 ms)',
                         f'≤ {p50 * 1000:g} / ≤ {p99 * 1000:g} ms ({n} replies)'))
    a, b = total('dp tandem half'), total('dp Kea half')
    if a and b:
        rows.append(('half of saturation: client-side p50 / p99, tandem vs Kea (each at half its own saturation)',
                     f'{a["p50"] / 1000:.2f} / {a["p99"] / 1000:.2f} ms vs {b["p50"] / 1000:.2f} / {b["p99"] / 1000:.2f} ms'))
    w('| measure | value |')
    w('|---|---|')
    for a, b in rows:
        w(f'| {a} | {b} |')
    w('')

w('A generator whose CPU % is near 100 is the bottleneck of its row: the server may be faster than shown.')
open(out, 'w').write('\n'.join(lines) + '\n')
