//! The DNS update queue: a thread that carries out the DNS intents recorded
//! in leases (`dns_flags::PENDING_ADD` / `PENDING_REMOVE`), talks RFC 2136
//! UPDATE with TSIG to the configured server (UDP, TCP when truncated),
//! retries failures with backoff, and writes the outcome back into the
//! lease, which then reaches the store and the failover partner (a second
//! BNDUPD, RFC 8156 §9.2). DNS never delays a DHCP reply: the intent is
//! committed with the lease, and this queue works from the committed state.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::Name;
use hickory_proto::rr::TSigner;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;

use super::observe::Shared;
use super::shard::{PolicyCell, SharedCore};
use super::sys::unix_now;
use crate::config::Ddns;
use crate::ddns::{Job, Next, Step, Zones, disambiguate};
use crate::lease::{Lease, LeaseChange, LeaseKey, dns_flags as F};
use crate::wire::ServerState;

const TIMEOUT: Duration = Duration::from_secs(2);
/// Steps per job before giving up for this round (RFC 4703 §5: loops are possible).
const MAX_STEPS: usize = 8;
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Where a lease lives: (shard, key).
pub type Intent = (usize, LeaseKey);

pub struct DdnsInit {
    pub cfg: Ddns,
    pub cores: Vec<SharedCore>,
    pub policy: Arc<PolicyCell>,
    pub shared: Arc<Shared>,
    pub stop: Arc<AtomicBool>,
    pub intents: mpsc::Receiver<Intent>,
}

struct Worker {
    cfg: Ddns,
    zones: Zones,
    signer: Option<TSigner>,
    cores: Vec<SharedCore>,
    policy: Arc<PolicyCell>,
    shared: Arc<Shared>,
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
        cores: init.cores,
        policy: init.policy,
        shared: init.shared,
        queue: VecDeque::new(),
        queued: HashSet::new(),
        later: HashMap::new(),
        next_id: (unix_now() & 0xffff) as u16,
    };
    let (stop, rx) = (init.stop, init.intents);
    std::thread::Builder::new()
        .name("ddns".into())
        .spawn(move || {
            // Intents left by a previous run (a crash between the commit and the update).
            w.scan();
            tracing::info!(server = %w.cfg.server, pending = w.queue.len(), "DNS update queue started");
            while !stop.load(Ordering::Relaxed) {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(i) => {
                        w.push(i);
                        while let Ok(i) = rx.try_recv() {
                            w.push(i);
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
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
    fn push(&mut self, i: Intent) {
        if self.queued.insert(i) {
            self.queue.push_back(i);
        }
    }

    fn scan(&mut self) {
        for (shard, core) in self.cores.iter().enumerate() {
            let c = core.lock().unwrap();
            for l in c.engine.leases().iter() {
                if l.dns.as_ref().is_some_and(|d| d.dns_flags & (F::PENDING_ADD | F::PENDING_REMOVE) != 0)
                    && self.queued.insert((shard, l.key))
                {
                    self.queue.push_back((shard, l.key));
                }
            }
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
        let Some(lease) = self.cores[shard].lock().unwrap().engine.leases().get(&key).cloned() else {
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
            // RFC 8156 §9.4: no deletes while the partner cannot be told.
            if let Some(p) = self.policy.get()
                && !matches!(p.state, ServerState::Normal | ServerState::PartnerDown)
            {
                self.later.insert(i, (Instant::now() + Duration::from_secs(5), BACKOFF_MIN));
                return;
            }
            // In NORMAL both partners expire the same lease; the server whose
            // half the address is in (the one that granted it, §4.2.1) deletes,
            // the other only forgets (§9.4: the acking partner does not delete).
            let partners = self.policy.get().filter(|p| p.state == ServerState::Normal && crate::failover::address_owner(addr) != p.role);
            let job = Job { name: name.clone(), addr, duid: lease.binding.duid.clone(), add: false };
            let result = if partners.is_some() { Ok(true) } else { self.run(&job) };
            match result {
                Ok(_) => {
                    new.dns_flags = flags & !(F::PENDING_REMOVE | F::FWD_UPTODATE | F::REV_UPTODATE);
                    tracing::info!(lease = %key, name = %name, "DNS records removed");
                }
                Err(e) => return self.retry(i, &e),
            }
        } else {
            return;
        }
        self.later.remove(&i);
        self.shared.ddns_done.fetch_add(1, Ordering::Relaxed);
        // Record the outcome, unless the lease changed meanwhile (then its
        // new intent is handled when the shard reports it).
        let mut c = self.cores[shard].lock().unwrap();
        let Some(cur) = c.engine.leases().get(&key) else { return };
        if cur.binding != lease.binding || cur.status != lease.status || cur.dns.as_ref().map(|d| d.dns_flags) != Some(flags) {
            drop(c);
            self.push(i);
            return;
        }
        let mut l: Lease = cur.clone();
        l.dns = Some(new);
        l.update_partner = true;
        c.engine.load(l.clone());
        c.pending.push(LeaseChange::Upsert(l));
        c.changed.push(key);
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
