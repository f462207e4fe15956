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
    pub cfg: Ddns,
    pub shared: Arc<Shared>,
    pub stop: Arc<AtomicBool>,
    pub work: crossbeam_channel::Receiver<DnsWork>,
    /// One sender per shard, for the outcomes.
    pub done: Vec<crossbeam_channel::Sender<DnsDone>>,
    /// The CPU to run on (the failover core's), if one is set.
    pub cpu: Option<usize>,
}

struct Worker {
    cfg: Ddns,
    zones: Zones,
    signer: Option<TSigner>,
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

pub fn spawn(init: DdnsInit) -> Result<std::thread::JoinHandle<()>, String> {
    let zones = Zones {
        forward: Name::from_ascii(init.cfg.forward_zone.to_string()).map_err(|e| format!("ddns.forward-zone: {e}"))?,
        reverse: Name::from_ascii(init.cfg.reverse_zone.to_string()).map_err(|e| format!("ddns.reverse-zone: {e}"))?,
        ttl: 600,
    };
    let signer = match &init.cfg.tsig {
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
    let mut w = Worker {
        cfg: init.cfg,
        zones,
        signer,
        done: init.done,
        shared: init.shared,
        leases: HashMap::new(),
        queue: VecDeque::new(),
        queued: HashSet::new(),
        later: HashMap::new(),
        next_id: (unix_now() & 0xffff) as u16,
    };
    let (stop, rx, cpu) = (init.stop, init.work, init.cpu);
    std::thread::Builder::new()
        .name("ddns".into())
        .spawn(move || {
            // The design card: the DNS queue shares the failover core's CPU.
            if let Some(c) = cpu {
                super::sys::pin_current_thread(c);
            }
            tracing::info!(server = %w.cfg.server, "DNS update queue started");
            while !stop.load(Ordering::Relaxed) {
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
                let due: Vec<Intent> = w.later.iter().filter(|(_, (t, _))| *t <= now).map(|(i, _)| *i).collect();
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
        tracing::warn!(lease = %i.1, retry_in = ?backoff, "DNS update failed: {why}");
        self.later.insert(i, (Instant::now() + backoff, backoff));
    }

    fn process(&mut self, i: Intent) {
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
            self.zones.ttl = (lease.valid_lifetime / 3).max(600);
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
        let mut m = job.message(step, &self.zones, id)?;
        let mut verifier = match &self.signer {
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

    fn exchange_udp(&self, bytes: &[u8], id: u16) -> Result<Vec<u8>, String> {
        let bind: SocketAddr = if self.cfg.server.is_ipv6() { "[::]:0".parse().unwrap() } else { "0.0.0.0:0".parse().unwrap() };
        let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        s.connect(self.cfg.server).map_err(|e| format!("{}: {e}", self.cfg.server))?;
        s.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        for _ in 0..2 {
            s.send(bytes).map_err(|e| format!("{}: {e}", self.cfg.server))?;
            let deadline = Instant::now() + TIMEOUT;
            while Instant::now() < deadline {
                match s.recv(&mut buf) {
                    Ok(n) if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id => return Ok(buf[..n].to_vec()),
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
        }
        Err(format!("no answer from {} (timeout)", self.cfg.server))
    }

    fn exchange_tcp(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let mut s = TcpStream::connect_timeout(&self.cfg.server, TIMEOUT).map_err(|e| format!("{} (TCP): {e}", self.cfg.server))?;
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
