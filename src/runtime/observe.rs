//! What operators see of a running server: Prometheus metrics over HTTP and
//! the status the control socket (`runtime::operator`) answers with. Shards
//! publish a snapshot of their counters about once a second; these threads
//! only read snapshots.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::wire::MessageType;

/// Upper bounds (seconds) of the reply-latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// One shard's counters.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub received: Vec<u64>,
    pub replies: Vec<u64>,
    pub dropped: BTreeMap<&'static str, u64>,
    /// New leases refused by a `[limits]` cap, by limit.
    pub limit_hits: BTreeMap<&'static str, u64>,
    /// (type "na"/"pd", state name) → count.
    pub leases: BTreeMap<(&'static str, &'static str), u64>,
    /// Kernel receipt of a request to the completion of its reply's send,
    /// by the client message's type code.
    pub latency: BTreeMap<u8, Histogram>,
    /// How late the shard's 10 ms timer fired (its executor was busy).
    pub lag: Histogram,
    /// Durable commits and the lease writes in them.
    pub commits: u64,
    pub changes_committed: u64,
    /// Bytes the store made the kernel write (journal and table merges).
    pub store_bytes: u64,
    /// Journal merge transactions, and the bytes the journal holds now.
    pub merge_steps: u64,
    pub journal_bytes: u64,
    /// The packet path this shard runs on.
    pub datapath: Option<super::datapath::Info>,
}

/// A histogram over `LATENCY_BUCKETS` (counts per bucket, not cumulative).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    pub buckets: [u64; LATENCY_BUCKETS.len()],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, secs: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
        self.sum += secs;
        self.count += 1;
    }

    /// (upper bound, observations at or below it), as Prometheus buckets.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        LATENCY_BUCKETS.iter().zip(&self.buckets).scan(0, |n, (b, c)| {
            *n += c;
            Some((*b, *n))
        })
    }

    /// The smallest bucket bound holding every observation (None when one
    /// was above the last bound).
    pub fn max_bucket(&self) -> Option<f64> {
        self.cumulative().find(|(_, n)| *n == self.count).map(|(b, _)| b)
    }

    pub fn add(&mut self, o: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.sum += o.sum;
        self.count += o.count;
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            received: vec![0; 256],
            replies: vec![0; 256],
            dropped: BTreeMap::new(),
            limit_hits: BTreeMap::new(),
            leases: BTreeMap::new(),
            latency: BTreeMap::new(),
            lag: Histogram::default(),
            commits: 0,
            changes_committed: 0,
            store_bytes: 0,
            merge_steps: 0,
            journal_bytes: 0,
            datapath: None,
        }
    }
}

impl Snapshot {
    pub fn observe_latency(&mut self, request_type: u8, secs: f64) {
        self.latency.entry(request_type).or_default().observe(secs);
    }

    pub fn observe_lag(&mut self, secs: f64) {
        self.lag.observe(secs);
    }
}

/// One labelled series of a Prometheus histogram.
fn histogram(o: &mut String, name: &str, labels: &str, h: &Histogram) {
    for (b, n) in h.cumulative() {
        o.push_str(&format!("{name}_bucket{{{labels},le=\"{b}\"}} {n}\n"));
    }
    o.push_str(&format!("{name}_bucket{{{labels},le=\"+Inf\"}} {}\n", h.count));
    o.push_str(&format!("{name}_sum{{{labels}}} {}\n", h.sum));
    o.push_str(&format!("{name}_count{{{labels}}} {}\n", h.count));
}

/// The failover endpoint as operators see it (published by the failover core).
#[derive(Debug, Clone)]
pub struct FailoverStatus {
    /// The relationship's name and its subnets' prefixes.
    pub name: String,
    pub subnets: Vec<String>,
    pub role: &'static str,
    pub state: crate::wire::ServerState,
    pub partner_state: Option<crate::wire::ServerState>,
    pub communications_ok: bool,
    pub unacked: u64,
    /// Leases queued for BNDUPD or waiting for their BNDREPLY.
    pub backlog: u64,
    pub mclt: u32,
    pub connected: bool,
    /// Connections refused (unknown address, over the cap, failed handshake).
    pub refused: u64,
    /// Connections established with the partner.
    pub connections: u64,
}

/// Everything the observers read.
pub struct Shared {
    pub shards: Vec<Mutex<Snapshot>>,
    pub server_duid: String,
    pub stop: Arc<AtomicBool>,
    /// Per failover relationship (empty: standalone).
    pub failover: Mutex<Vec<FailoverStatus>>,
    pub commands: Mutex<Option<crossbeam_channel::Sender<super::bus::Command>>>,
    /// DNS updates waiting (queued or waiting for a retry), failed tries, completed jobs.
    pub ddns_queue: std::sync::atomic::AtomicU64,
    pub ddns_failures: std::sync::atomic::AtomicU64,
    pub ddns_done: std::sync::atomic::AtomicU64,
    /// Operator requests to each shard (`ctl lease …`).
    pub ops: Mutex<Vec<crossbeam_channel::Sender<super::bus::ShardOp>>>,
    /// `ctl reload` → the main thread, which answers on the enclosed sender.
    pub reloads: Mutex<Option<crossbeam_channel::Sender<crossbeam_channel::Sender<String>>>>,
    /// Held by a reload and by `ctl lease add`: one operator change at a time.
    pub operator: Mutex<()>,
    /// The running pools' slice map (`ctl lease add` finds a key's owner).
    pub slices: Mutex<Option<crate::server::SliceMap>>,
    /// The running config file's digest and when it was loaded (unix s).
    pub config: Mutex<(String, u64)>,
    /// The reservations' count and digest (`ctl status` "reservations").
    pub reservations: Mutex<(usize, String)>,
    /// Reloads applied and refused.
    pub reloads_applied: std::sync::atomic::AtomicU64,
    pub reloads_refused: std::sync::atomic::AtomicU64,
    /// Leasequeries and Bulk Leasequery connections by outcome.
    pub leasequery: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Shared {
    pub fn new(shards: usize, server_duid: String, stop: Arc<AtomicBool>) -> Shared {
        Shared {
            shards: (0..shards).map(|_| Mutex::new(Snapshot::default())).collect(),
            server_duid,
            stop,
            failover: Mutex::new(Vec::new()),
            commands: Mutex::new(None),
            ddns_queue: Default::default(),
            ddns_failures: Default::default(),
            ddns_done: Default::default(),
            ops: Mutex::new(Vec::new()),
            reloads: Mutex::new(None),
            operator: Mutex::new(()),
            slices: Mutex::new(None),
            config: Mutex::new((String::new(), 0)),
            reservations: Mutex::new((0, String::new())),
            reloads_applied: Default::default(),
            reloads_refused: Default::default(),
            leasequery: Default::default(),
        }
    }

    /// A config file was loaded (at start or by a reload).
    /// A configuration is running: its file's digest, and its reservations'
    /// count and digest (`operator::reservations_digest`).
    pub fn config_loaded(&self, digest: String, reservations: (usize, String)) {
        *lock(&self.config) = (digest, super::sys::unix_now());
        *lock(&self.reservations) = reservations;
    }

    /// `ctl reload`: ask the main thread, wait for its answer.
    pub fn reload(&self) -> String {
        let Some(tx) = lock(&self.reloads).clone() else {
            return r#"{"result":"refused","changed":[],"errors":["the server is not running"]}"#.to_string();
        };
        let (rtx, rrx) = crossbeam_channel::bounded(1);
        if tx.send(rtx).is_err() {
            return r#"{"result":"refused","changed":[],"errors":["the server is stopping"]}"#.to_string();
        }
        rrx.recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| r#"{"result":"refused","changed":[],"errors":["no answer within 60 s"]}"#.to_string())
    }

    /// The first relationship (the only one, usually), as `failover`.
    fn failover_json(&self) -> serde_json::Value {
        match lock(&self.failover).first() {
            None => serde_json::Value::Null,
            Some(f) => Self::relationship_json(f),
        }
    }

    /// Every relationship, as `relationships`.
    fn relationships_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            lock(&self.failover)
                .iter()
                .map(|f| {
                    let mut v = Self::relationship_json(f);
                    v["name"] = f.name.clone().into();
                    v["subnets"] = f.subnets.clone().into();
                    v
                })
                .collect(),
        )
    }

    fn relationship_json(f: &FailoverStatus) -> serde_json::Value {
        serde_json::json!({
                "role": f.role,
                "state": f.state.name(),
                "partner-state": f.partner_state.map(|s| s.name()),
                "communications": if f.communications_ok { "ok" } else { "interrupted" },
                "unacked-bndupd": f.unacked,
                "pending-updates": f.backlog,
                "mclt": f.mclt,
                "connected": f.connected,
                "connections": f.connections,
                "connections-refused": f.refused,
        })
    }

    /// `ctl partner-down [--relationship NAME]`: ask the failover core,
    /// wait for its answer.
    pub fn partner_down(&self, relationship: Option<String>) -> String {
        let Some(tx) = lock(&self.commands).clone() else {
            return r#"{"ok":false,"error":"this server has no failover partner"}"#.to_string();
        };
        let (rtx, rrx) = crossbeam_channel::bounded(1);
        if tx.send(super::bus::Command::PartnerDown { relationship, reply: rtx }).is_err() {
            return r#"{"ok":false,"error":"the failover endpoint is not running"}"#.to_string();
        }
        rrx.recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| r#"{"ok":false,"error":"no answer from the failover endpoint"}"#.to_string())
    }
}

impl Shared {
    fn total(&self) -> Snapshot {
        let mut t = Snapshot::default();
        for s in &self.shards {
            let s = lock(s);
            for i in 0..256 {
                t.received[i] += s.received[i];
                t.replies[i] += s.replies[i];
            }
            for (k, v) in &s.dropped {
                *t.dropped.entry(k).or_default() += v;
            }
            for (k, v) in &s.limit_hits {
                *t.limit_hits.entry(k).or_default() += v;
            }
            for (k, v) in &s.leases {
                *t.leases.entry(*k).or_default() += v;
            }
            for (k, h) in &s.latency {
                t.latency.entry(*k).or_default().add(h);
            }
            t.commits += s.commits;
            t.changes_committed += s.changes_committed;
            t.store_bytes += s.store_bytes;
            t.merge_steps += s.merge_steps;
            t.journal_bytes += s.journal_bytes;
        }
        t
    }

    pub fn prometheus(&self) -> String {
        let t = self.total();
        let mut o = String::new();
        o.push_str("# HELP tandem_packets_received_total DHCPv6 messages received, by type.\n");
        o.push_str("# TYPE tandem_packets_received_total counter\n");
        for (i, v) in t.received.iter().enumerate().filter(|(_, v)| **v > 0) {
            o.push_str(&format!("tandem_packets_received_total{{type=\"{}\"}} {v}\n", MessageType::from(i as u8).label()));
        }
        o.push_str("# HELP tandem_packets_dropped_total Messages dropped without a reply, by reason.\n");
        o.push_str("# TYPE tandem_packets_dropped_total counter\n");
        for (k, v) in &t.dropped {
            o.push_str(&format!("tandem_packets_dropped_total{{reason=\"{k}\"}} {v}\n"));
        }
        o.push_str("# HELP tandem_limit_hits_total New leases refused by a per-client limit ([limits]), by limit.\n");
        o.push_str("# TYPE tandem_limit_hits_total counter\n");
        for l in crate::server::limits::Limit::ALL {
            let v = t.limit_hits.get(l.label()).copied().unwrap_or(0);
            o.push_str(&format!("tandem_limit_hits_total{{limit=\"{}\"}} {v}\n", l.label()));
        }
        o.push_str("# HELP tandem_replies_sent_total Replies sent, by type.\n");
        o.push_str("# TYPE tandem_replies_sent_total counter\n");
        for (i, v) in t.replies.iter().enumerate().filter(|(_, v)| **v > 0) {
            o.push_str(&format!("tandem_replies_sent_total{{type=\"{}\"}} {v}\n", MessageType::from(i as u8).label()));
        }
        o.push_str("# HELP tandem_leases Leases in the store, by type and binding status.\n");
        o.push_str("# TYPE tandem_leases gauge\n");
        for ((ty, st), v) in &t.leases {
            o.push_str(&format!("tandem_leases{{type=\"{ty}\",state=\"{st}\"}} {v}\n"));
        }
        // Per relationship, labelled; without failover one unlabelled 0 (standalone).
        let fo = lock(&self.failover).clone();
        let gauge = |o: &mut String, name: &str, kind: &str, help: &str, v: &dyn Fn(&FailoverStatus) -> u64| {
            o.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            if fo.is_empty() {
                o.push_str(&format!("{name} 0\n"));
            }
            for f in &fo {
                let label = f.name.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                o.push_str(&format!("{name}{{relationship=\"{label}\"}} {}\n", v(f)));
            }
        };
        gauge(&mut o, "tandem_failover_state", "gauge", "RFC 8156 server state code (0: standalone).", &|f| f.state as u64);
        gauge(&mut o, "tandem_failover_unacked_bndupd", "gauge", "Binding updates not yet acknowledged by the partner.", &|f| f.unacked);
        gauge(&mut o, "tandem_failover_pending_updates", "gauge", "Leases queued for a BNDUPD or waiting for its BNDREPLY.", &|f| f.backlog);
        gauge(&mut o, "tandem_failover_communications_ok", "gauge", "1 when the partner link is up and its state known.", &|f| f.communications_ok as u64);
        gauge(
            &mut o,
            "tandem_failover_connections_refused_total",
            "counter",
            "Partner connections refused (address, cap, handshake; counted at the listener, shared by the relationships that share it).",
            &|f| f.refused,
        );
        gauge(&mut o, "tandem_failover_connections_total", "counter", "Connections established with the partner.", &|f| f.connections);
        o.push_str("# HELP tandem_config_reloads_total Config reloads (SIGHUP, ctl reload), by result.\n");
        o.push_str("# TYPE tandem_config_reloads_total counter\n");
        o.push_str(&format!("tandem_config_reloads_total{{result=\"applied\"}} {}\n", self.reloads_applied.load(Ordering::Relaxed)));
        o.push_str(&format!("tandem_config_reloads_total{{result=\"refused\"}} {}\n", self.reloads_refused.load(Ordering::Relaxed)));
        o.push_str("# HELP tandem_store_commits_total Durable lease-store commits (group commits), all shards.\n");
        o.push_str(&format!("# TYPE tandem_store_commits_total counter\ntandem_store_commits_total {}\n", t.commits));
        o.push_str("# HELP tandem_store_bytes_written_total Bytes the lease store made the kernel write (journal appends and merges into LMDB), all shards.\n");
        o.push_str(&format!("# TYPE tandem_store_bytes_written_total counter\ntandem_store_bytes_written_total {}\n", t.store_bytes));
        o.push_str("# HELP tandem_store_merge_steps_total LMDB transactions that merged journaled changes into the lease table.\n");
        o.push_str(&format!("# TYPE tandem_store_merge_steps_total counter\ntandem_store_merge_steps_total {}\n", t.merge_steps));
        o.push_str("# HELP tandem_store_journal_bytes Bytes in the shards' journals, not yet merged or removed.\n");
        o.push_str(&format!("# TYPE tandem_store_journal_bytes gauge\ntandem_store_journal_bytes {}\n", t.journal_bytes));
        o.push_str("# HELP tandem_shard_loop_lag_seconds How late each shard's 10 ms timer fired (its executor was busy).\n");
        o.push_str("# TYPE tandem_shard_loop_lag_seconds histogram\n");
        for (i, s) in self.shards.iter().enumerate() {
            let s = lock(s);
            histogram(&mut o, "tandem_shard_loop_lag_seconds", &format!("shard=\"{i}\""), &s.lag);
        }
        o.push_str("# HELP tandem_leasequery_total Leasequeries (RFC 5007, RFC 5460) and bulk connections, by outcome.\n");
        o.push_str("# TYPE tandem_leasequery_total counter\n");
        for (k, v) in lock(&self.leasequery).iter() {
            o.push_str(&format!("tandem_leasequery_total{{result=\"{k}\"}} {v}\n"));
        }
        o.push_str("# HELP tandem_ddns_queue_depth DNS updates waiting.\n");
        o.push_str(&format!("# TYPE tandem_ddns_queue_depth gauge\ntandem_ddns_queue_depth {}\n", self.ddns_queue.load(Ordering::Relaxed)));
        o.push_str("# HELP tandem_ddns_failures_total DNS update attempts that failed (retried later).\n");
        o.push_str(&format!("# TYPE tandem_ddns_failures_total counter\ntandem_ddns_failures_total {}\n", self.ddns_failures.load(Ordering::Relaxed)));
        o.push_str("# HELP tandem_ddns_updates_total DNS add or remove jobs completed.\n");
        o.push_str(&format!("# TYPE tandem_ddns_updates_total counter\ntandem_ddns_updates_total {}\n", self.ddns_done.load(Ordering::Relaxed)));
        o.push_str("# HELP tandem_reply_latency_seconds From the kernel's receipt of a request to the completion of its reply's send (after the durable commit), by the client's message type.\n");
        o.push_str("# TYPE tandem_reply_latency_seconds histogram\n");
        for (ty, h) in &t.latency {
            histogram(&mut o, "tandem_reply_latency_seconds", &format!("type=\"{}\"", MessageType::from(*ty).label()), h);
        }
        let info = self.datapath();
        o.push_str("# HELP tandem_datapath_info The shards' packet path: io_uring, or the fallback (a syscall per datagram).\n");
        o.push_str(&format!("# TYPE tandem_datapath_info gauge\ntandem_datapath_info{{mode=\"{}\"}} 1\n", info.mode));
        o
    }

    /// (replies sent, packets dropped, active leases) over all shards.
    pub fn summary(&self) -> (u64, u64, u64) {
        let t = self.total();
        let active = t.leases.iter().filter(|((_, s), _)| *s == "ACTIVE").map(|(_, v)| v).sum();
        (t.replies.iter().sum(), t.dropped.values().sum(), active)
    }

    /// io_uring when every shard runs on it, else the fallback with the
    /// first reason a shard gave.
    pub fn datapath(&self) -> super::datapath::Info {
        let mut reason = None;
        for s in &self.shards {
            match &lock(s).datapath {
                Some(i) if i.mode == "fallback" => {
                    reason = Some(i.reason.clone().unwrap_or_default());
                    break;
                }
                Some(_) => {}
                None => reason = reason.or(Some("starting".to_string())),
            }
        }
        match reason {
            None => super::datapath::Info { mode: "io_uring", reason: None },
            Some(r) => super::datapath::Info { mode: "fallback", reason: Some(r) },
        }
    }

    pub fn status_json(&self) -> String {
        let t = self.total();
        let count = |pred: &dyn Fn(&str) -> bool| -> u64 { t.leases.iter().filter(|((_, s), _)| pred(s)).map(|(_, v)| v).sum() };
        let per_shard: Vec<serde_json::Value> = self
            .shards
            .iter()
            .map(|s| {
                let s = lock(s);
                serde_json::json!({
                    "received": s.received.iter().sum::<u64>(),
                    "replies": s.replies.iter().sum::<u64>(),
                    "leases": s.leases.values().sum::<u64>(),
                    "commits": s.commits,
                    "changes-committed": s.changes_committed,
                    "merge-steps": s.merge_steps,
                    "store-bytes-written": s.store_bytes,
                    "journal-bytes": s.journal_bytes,
                    "loop-lag-max-bucket": s.lag.max_bucket(),
                })
            })
            .collect();
        let dropped: u64 = t.dropped.values().sum();
        let datapath = self.datapath();
        let v = serde_json::json!({
            "server-duid": self.server_duid,
            "per-shard": per_shard,
            "dropped": dropped,
            "dropped-by-reason": t.dropped,
            "failover": self.failover_json(),
            "relationships": self.relationships_json(),
            "ddns": {
                "queue": self.ddns_queue.load(Ordering::Relaxed),
                "failures": self.ddns_failures.load(Ordering::Relaxed),
                "done": self.ddns_done.load(Ordering::Relaxed),
            },
            "shards": self.shards.len(),
            "config": {"digest": lock(&self.config).0, "loaded": lock(&self.config).1},
            "reservations": {"count": lock(&self.reservations).0, "digest": lock(&self.reservations).1},
            "datapath": {"mode": datapath.mode, "reason": datapath.reason},
            "leases": {
                "active": count(&|s| s == "ACTIVE"),
                "free": count(&|s| matches!(s, "FREE" | "FREE-BACKUP" | "EXPIRED" | "RELEASED")),
                "abandoned": count(&|s| s == "ABANDONED"),
            },
        });
        v.to_string()
    }
}

/// Changes the log filter (`log-level`), set once by whoever set up logging.
type LogLevelControl = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
static LOG_LEVEL: std::sync::OnceLock<LogLevelControl> = std::sync::OnceLock::new();

pub fn set_log_level_control(f: LogLevelControl) {
    let _ = LOG_LEVEL.set(f);
}

/// A reload's `log-level` (nothing when logging was set up elsewhere, as in tests).
pub fn set_log_level(level: &str) -> Result<(), String> {
    LOG_LEVEL.get().map_or(Ok(()), |f| f(level))
}

/// Lock a snapshot; a poisoned lock (a panicked writer) still holds the
/// last snapshot, which is what an observer wants.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serve `GET /metrics` on a plain thread.
pub fn spawn_metrics(addr: SocketAddr, shared: Arc<Shared>) -> Result<(), String> {
    let l = TcpListener::bind(addr).map_err(|e| format!("metrics-listen {addr}: {e}"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in l.incoming().flatten() {
                let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let mut conn = conn;
                let mut buf = [0u8; 1024];
                let n = conn.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if req.starts_with("GET /metrics") {
                    ("200 OK", shared.prometheus())
                } else {
                    ("404 Not Found", "see /metrics\n".to_string())
                };
                let _ = write!(
                    conn,
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_written_cumulative_with_their_labels() {
        let mut h = Histogram::default();
        for s in [0.00005, 0.0003, 0.0003, 0.02] {
            h.observe(s);
        }
        assert_eq!(h.max_bucket(), Some(0.025));
        let mut o = String::new();
        histogram(&mut o, "x", "type=\"solicit\"", &h);
        assert!(o.contains("x_bucket{type=\"solicit\",le=\"0.0001\"} 1\n"), "{o}");
        assert!(o.contains("x_bucket{type=\"solicit\",le=\"0.0005\"} 3\n"), "{o}");
        assert!(o.contains("x_bucket{type=\"solicit\",le=\"1\"} 4\n"), "{o}");
        assert!(o.contains("x_bucket{type=\"solicit\",le=\"+Inf\"} 4\n"), "{o}");
        assert!(o.contains("x_count{type=\"solicit\"} 4\n"), "{o}");
        h.observe(3.0);
        assert_eq!(h.max_bucket(), None, "an observation above the last bound");
    }
}
