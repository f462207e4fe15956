//! The DNS update queue: a thread (pinned to the failover core's CPU when
//! one is set) that carries out the DNS intents recorded in leases
//! (`dns_flags::PENDING_ADD` / `PENDING_REMOVE`), talks RFC 2136 UPDATE with
//! TSIG to the configured server (UDP, TCP when truncated), retries failures
//! with backoff, and sends the outcome to the shard that owns the lease,
//! which writes it and tells the failover partner (a second BNDUPD, RFC 8156
//! §9.2). DNS never delays a DHCP reply: the intent is committed with the
//! lease, and this queue works from committed snapshots the shards send. It
//! reads no lease table. When removals may happen is decided where the
//! intent is recorded (RFC 8156 §9.4: after the partner acknowledged the
//! end of the lease, or at FREE in PARTNER-DOWN).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::Name;
use hickory_proto::rr::TSigner;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;

use super::bus::{DnsDone, DnsWork};
use super::observe::Shared;
use super::sys::unix_now;
use crate::config::Ddns;
use crate::ddns::{Job, Next, Step, Zones, disambiguate};
use crate::lease::{Lease, LeaseKey, dns_flags as F};
use crate::shard::DnsOutcome;

const TIMEOUT: Duration = Duration::from_secs(2);
/// Steps per job before giving up for this round (RFC 4703 §5: loops are possible).
const MAX_STEPS: usize = 8;
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Where a lease lives: (shard, key).
pub type Intent = (usize, LeaseKey);

pub struct DdnsInit {
    /// None: no `[ddns]` (or `fqdn-policy = "none"`): the queue holds what
    /// shards send until a reload configures it.
    pub cfg: Option<Ddns>,
    /// A reload's new `[ddns]` (checked with `prepare` first).
    pub reconfig: crossbeam_channel::Receiver<Option<Ddns>>,
    pub shared: Arc<Shared>,
    pub stop: Arc<AtomicBool>,
    pub work: crossbeam_channel::Receiver<DnsWork>,
    /// One sender per shard, for the outcomes.
    pub done: Vec<crossbeam_channel::Sender<DnsDone>>,
    /// The CPU to run on (the failover core's), if one is set.
    pub cpu: Option<usize>,
}

/// Where updates go and how they are signed (from `[ddns]`).
pub struct Target {
    server: SocketAddr,
    zones: Zones,
    signer: Option<TSigner>,
}

struct Worker {
    target: Option<Target>,
    done: Vec<crossbeam_channel::Sender<DnsDone>>,
    shared: Arc<Shared>,
    /// The latest committed snapshot of each lease with DNS work.
    leases: HashMap<Intent, Lease>,
    queue: VecDeque<Intent>,
    queued: HashSet<Intent>,
    /// Intents waiting for a retry: when, and the backoff used.
    later: HashMap<Intent, (Instant, Duration)>,
    next_id: u16,
}

/// Check `[ddns]` and build what the queue sends with (start-up and reloads).
pub fn prepare(cfg: &Ddns) -> Result<Target, String> {
    let zones = Zones {
        forward: Name::from_ascii(cfg.forward_zone.to_string()).map_err(|e| format!("ddns.forward-zone: {e}"))?,
        reverse: Name::from_ascii(cfg.reverse_zone.to_string()).map_err(|e| format!("ddns.reverse-zone: {e}"))?,
        ttl: 600,
    };
    let signer = match &cfg.tsig {
        None => None,
        Some(t) => {
            let alg = match t.algorithm.as_str() {
                "hmac-sha256" => TsigAlgorithm::HmacSha256,
                "hmac-sha384" => TsigAlgorithm::HmacSha384,
                "hmac-sha512" => TsigAlgorithm::HmacSha512,
                other => return Err(format!("ddns.tsig-algorithm: {other:?} is not supported (hmac-sha256, hmac-sha384, hmac-sha512)")),
            };
            let name = Name::from_ascii(t.name.to_string()).map_err(|e| format!("ddns.tsig-name: {e}"))?;
            Some(TSigner::new(t.secret.clone(), alg, name, 300).map_err(|e| format!("ddns TSIG key: {e}"))?)
        }
    };
    Ok(Target { server: cfg.server, zones, signer })
}

/// Does this `[ddns]` update anything (a policy other than `none`)?
pub fn updates(cfg: Option<&Ddns>) -> Option<&Ddns> {
    cfg.filter(|d| d.fqdn_policy != crate::config::FqdnPolicy::None)
}

pub fn spawn(init: DdnsInit) -> Result<std::thread::JoinHandle<()>, String> {
    let target = updates(init.cfg.as_ref()).map(prepare).transpose()?;
    let mut w = Worker {
        target,
        done: init.done,
        shared: init.shared,
        leases: HashMap::new(),
        queue: VecDeque::new(),
        queued: HashSet::new(),
        later: HashMap::new(),
        next_id: (unix_now() & 0xffff) as u16,
    };
    let (stop, rx, cpu, reconfig) = (init.stop, init.work, init.cpu, init.reconfig);
    std::thread::Builder::new()
        .name("ddns".into())
        .spawn(move || {
            // The design card: the DNS queue shares the failover core's CPU.
            if let Some(c) = cpu {
                super::sys::pin_current_thread(c);
            }
            if let Some(t) = &w.target {
                tracing::info!(server = %t.server, "DNS update queue started");
            }
            while !stop.load(Ordering::Relaxed) {
                while let Ok(cfg) = reconfig.try_recv() {
                    w.reconfigure(cfg.as_ref());
                }
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(d) => {
                        w.take(d);
                        while let Ok(d) = rx.try_recv() {
                            w.take(d);
                        }
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                }
                let now = Instant::now();
                // Without `[ddns]` nothing is due: a reload re-queues everything.
                let due: Vec<Intent> =
                    if w.target.is_none() { Vec::new() } else { w.later.iter().filter(|(_, (t, _))| *t <= now).map(|(i, _)| *i).collect() };
                for i in due {
                    w.push(i);
                }
                while let Some(i) = w.queue.pop_front() {
                    w.queued.remove(&i);
                    w.process(i);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                w.publish();
            }
        })
        .map_err(|e| e.to_string())
}

impl Worker {
    /// A reload changed `[ddns]`: what waits goes to the new server, with
    /// the new key; without `[ddns]` it waits.
    fn reconfigure(&mut self, cfg: Option<&Ddns>) {
        match updates(cfg).map(prepare) {
            Some(Ok(t)) => {
                tracing::info!(server = %t.server, "DNS update queue: configuration reloaded");
                self.target = Some(t);
                let waiting: Vec<Intent> = self.leases.keys().copied().collect();
                for i in waiting {
                    self.later.remove(&i);
                    self.push(i);
                }
            }
            Some(Err(e)) => tracing::error!("DNS update queue: {e}; the previous configuration stays"),
            None => {
                tracing::info!("DNS update queue: no [ddns] any more; pending updates wait");
                self.target = None;
            }
        }
    }

    /// A shard committed a lease with DNS work (its latest snapshot wins).
    fn take(&mut self, d: DnsWork) {
        let i = (d.shard, d.lease.key);
        self.leases.insert(i, d.lease);
        self.later.remove(&i);
        self.push(i);
    }

    fn push(&mut self, i: Intent) {
        if self.queued.insert(i) {
            self.queue.push_back(i);
        }
    }

    fn publish(&self) {
        let depth = self.queue.len() + self.later.len();
        self.shared.ddns_queue.store(depth as u64, Ordering::Relaxed);
    }

    fn retry(&mut self, i: Intent, why: &str) {
        self.shared.ddns_failures.fetch_add(1, Ordering::Relaxed);
        let backoff = self.later.get(&i).map(|(_, b)| (*b * 2).min(BACKOFF_MAX)).unwrap_or(BACKOFF_MIN);
        tracing::warn!(lease = %i.1, retry_in = ?backoff, error = %why, "DNS update failed");
        self.later.insert(i, (Instant::now() + backoff, backoff));
    }

    fn process(&mut self, i: Intent) {
        if self.target.is_none() {
            return; // kept in `leases` until a reload configures `[ddns]`
        }
        let (shard, key) = i;
        let Some(lease) = self.leases.get(&i).cloned() else {
            self.later.remove(&i);
            return;
        };
        let LeaseKey::Addr(addr) = key else { return };
        let Some(dns) = lease.dns.clone() else { return };
        let Some(name) = dns.name.clone() else { return };
        let flags = dns.dns_flags;
        let mut new = dns.clone();
        if flags & F::PENDING_ADD != 0 && lease.is_active() {
            if let Some(t) = self.target.as_mut() {
                t.zones.ttl = (lease.valid_lifetime / 3).max(600);
            }
            let job = Job { name: name.clone(), addr, duid: lease.binding.duid.clone(), add: true };
            match self.run(&job) {
                Ok(true) => {
                    new.dns_flags = (flags | F::FWD_UPTODATE | F::REV_UPTODATE) & !F::PENDING_ADD;
                    tracing::info!(lease = %key, name = %name, "DNS records added");
                }
                Ok(false) => {
                    // §5.3.3: the name is another client's. Try once with a name of our own.
                    let alt = disambiguate(&name, &lease.binding.duid).filter(|n| *n != name);
                    let done = match &alt {
                        Some(alt) => self.run(&Job { name: alt.clone(), ..job.clone() }),
                        None => Ok(false),
                    };
                    match (done, alt) {
                        (Ok(true), Some(alt)) => {
                            tracing::info!(lease = %key, wanted = %name, name = %alt, "DNS name in use by another client: disambiguated");
                            new.name = Some(alt);
                            new.dns_flags = (flags | F::FWD_UPTODATE | F::REV_UPTODATE) & !(F::PENDING_ADD | F::USING_REQUESTED);
                        }
                        (Err(e), _) => return self.retry(i, &e),
                        _ => {
                            tracing::warn!(lease = %key, name = %name, "DNS name in use by another client: not updated (RFC 4703 §5.3.3)");
                            new.dns_flags = (flags | F::CONFLICT) & !F::PENDING_ADD;
                        }
                    }
                }
                Err(e) => return self.retry(i, &e),
            }
        } else if flags & F::PENDING_REMOVE != 0 && !lease.is_active() {
            let job = Job { name: name.clone(), addr, duid: lease.binding.duid.clone(), add: false };
            match self.run(&job) {
                Ok(_) => {
                    new.dns_flags = flags & !(F::PENDING_REMOVE | F::FWD_UPTODATE | F::REV_UPTODATE);
                    tracing::info!(lease = %key, name = %name, "DNS records removed");
                }
                Err(e) => return self.retry(i, &e),
            }
        } else {
            self.leases.remove(&i);
            return;
        }
        self.later.remove(&i);
        self.leases.remove(&i);
        self.shared.ddns_done.fetch_add(1, Ordering::Relaxed);
        // The shard records the outcome, unless the lease changed meanwhile
        // (then its new intent comes with its commit).
        if let Some(tx) = self.done.get(shard) {
            let _ = tx.send(DnsOutcome { key, was: lease, dns: new });
        }
    }

    /// Run a job's steps. Ok(true): done; Ok(false): the name is taken.
    fn run(&mut self, job: &Job) -> Result<bool, String> {
        let mut step: Step = job.first();
        for _ in 0..MAX_STEPS {
            let rcode = self.send(job, step)?;
            tracing::debug!(name = %job.name, ?step, %rcode, "DNS update");
            match job.next(step, rcode) {
                Next::Send(s) => step = s,
                Next::Done => return Ok(true),
                Next::Conflict => return Ok(false),
                Next::Retry(e) => return Err(e),
            }
        }
        Err("too many steps (the records keep changing)".into())
    }

    fn send(&mut self, job: &Job, step: Step) -> Result<ResponseCode, String> {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let t = self.target.as_ref().ok_or("no [ddns] configured")?;
        let mut m = job.message(step, &t.zones, id)?;
        let mut verifier = match &t.signer {
            Some(s) => m.finalize(s, unix_now()).map_err(|e| format!("TSIG: {e}"))?,
            None => None,
        };
        let bytes = m.to_vec().map_err(|e| e.to_string())?;
        let mut answer = self.exchange_udp(&bytes, id)?;
        if Message::from_vec(&answer).map(|r| r.metadata.truncation).unwrap_or(false) {
            answer = self.exchange_tcp(&bytes)?;
        }
        let plain = Message::from_vec(&answer).map_err(|e| format!("undecodable answer: {e}"))?;
        let rcode = plain.metadata.response_code;
        if let Some(v) = verifier.as_mut()
            && let Err(e) = v.verify(&answer)
        {
            // An unsigned NOTAUTH/REFUSED is the server rejecting our key.
            return Err(format!("answer {rcode} failed TSIG verification ({e}): check ddns.tsig-name and tsig-secret"));
        }
        Ok(rcode)
    }

    fn server(&self) -> Result<SocketAddr, String> {
        self.target.as_ref().map(|t| t.server).ok_or_else(|| "no [ddns] configured".to_string())
    }

    fn exchange_udp(&self, bytes: &[u8], id: u16) -> Result<Vec<u8>, String> {
        let server = self.server()?;
        let bind: SocketAddr = if server.is_ipv6() { "[::]:0".parse().unwrap() } else { "0.0.0.0:0".parse().unwrap() };
        let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        s.connect(server).map_err(|e| format!("{server}: {e}"))?;
        s.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        for _ in 0..2 {
            s.send(bytes).map_err(|e| format!("{server}: {e}"))?;
            let deadline = Instant::now() + TIMEOUT;
            while Instant::now() < deadline {
                match s.recv(&mut buf) {
                    Ok(n) if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id => return Ok(buf[..n].to_vec()),
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
        }
        Err(format!("no answer from {server} (timeout)"))
    }

    fn exchange_tcp(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let server = self.server()?;
        let mut s = TcpStream::connect_timeout(&server, TIMEOUT).map_err(|e| format!("{server} (TCP): {e}"))?;
        s.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(bytes);
        s.write_all(&framed).map_err(|e| e.to_string())?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).map_err(|e| e.to_string())?;
        let mut out = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }
}
