//! One packet shard: a glommio executor pinned to a core, owning its
//! engine, its slice of the lease store and a UDP socket.
//!
//! Flow: receive → decode → hand to the shard that owns the client (DUID
//! hash) → engine → if the reply needs lease changes, queue it for the next
//! group commit; replies leave only after their batch is durable. One commit
//! is in flight at a time; whatever arrives meanwhile forms the next batch,
//! so batches grow with load and an fsync is shared by many replies.

use std::cell::{Cell, RefCell};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use glommio::channels::local_channel;
use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};
use glommio::net::UdpSocket;

use super::observe::{Shared, Snapshot};
use super::store::LmdbStore;
use super::sys::unix_now;
use super::udp;
use crate::failover::EndpointPolicy;
use crate::lease::store::{LeaseStore, StoreError};
use crate::lease::{LeaseChange, LeaseKey};
use crate::pool::hash::shard_of;
use crate::server::{Arrival, Engine, Outcome, Policy, Standalone};
use crate::wire::Message;

/// A shard's lease table and its uncommitted changes. The shard's own
/// thread locks it per packet; the failover core locks it to read and
/// write leases (partner updates), so every change to a shard's table
/// goes through one lock and reaches LMDB in the order it was made.
pub struct Core {
    pub engine: Engine,
    /// Changes made to the table and not yet committed, in order.
    pub pending: Vec<LeaseChange>,
    /// Keys the engine itself changed in `pending` (grants, releases,
    /// expiries): the failover partner must hear of them after the commit.
    pub changed: Vec<LeaseKey>,
    /// The failover core's latest write batch in `pending`.
    pub fo_seq: u64,
}

pub type SharedCore = Arc<Mutex<Core>>;

impl Core {
    pub fn new(engine: Engine) -> SharedCore {
        Arc::new(Mutex::new(Core { engine, pending: Vec::new(), changed: Vec::new(), fo_seq: 0 }))
    }
}

/// The failover state as the shards see it (role, state, MCLT), published
/// by the failover core; `None` for a standalone server.
#[derive(Default)]
pub struct PolicyCell(std::sync::atomic::AtomicU64);

impl PolicyCell {
    pub fn set(&self, p: EndpointPolicy) {
        let role = (p.role == crate::config::Role::Secondary) as u64;
        let v = 1u64 << 63 | role << 62 | (p.state as u64) << 32 | p.mclt as u64;
        self.0.store(v, Ordering::SeqCst);
    }

    pub fn get(&self) -> Option<EndpointPolicy> {
        let v = self.0.load(Ordering::SeqCst);
        if v >> 63 == 0 {
            return None;
        }
        let role = if (v >> 62) & 1 == 1 { crate::config::Role::Secondary } else { crate::config::Role::Primary };
        let state = crate::wire::ServerState::from_code(((v >> 32) & 0xff) as u8)?;
        Some(EndpointPolicy { role, state, mclt: v as u32 })
    }
}

/// A shard's report to the failover core after each durable commit.
pub struct ShardNote {
    pub shard: usize,
    /// The failover write batches up to this one are durable.
    pub durable: u64,
    /// Leases the engine changed in this commit.
    pub changed: Vec<LeaseKey>,
}

/// The shard's end of the failover core's channels.
pub struct FailoverLink {
    pub notes: SharedSender<ShardNote>,
    pub kicks: SharedReceiver<()>,
}

/// A decoded message handed from the receiving shard to its owner.
pub struct Forwarded {
    pub msg: Message,
    pub rcv: udp::Received,
    pub at: Instant,
}

/// What a shard starts with (all Send, moved into the executor).
pub struct ShardInit {
    pub id: usize,
    pub shards: usize,
    pub socket: socket2::Socket,
    pub store: LmdbStore,
    pub core: SharedCore,
    pub policy: Arc<PolicyCell>,
    pub failover: Option<FailoverLink>,
    /// The DNS update queue, told of every committed lease with a DNS intent.
    pub dns: Option<mpsc::Sender<super::ddns::Intent>>,
    /// Sender to every other shard (None at our own index).
    pub to: Vec<Option<SharedSender<Forwarded>>>,
    /// Receivers from every other shard.
    pub from: Vec<SharedReceiver<Forwarded>>,
    /// ifindex → interface name, for subnet selection.
    pub ifnames: Vec<(u32, String)>,
    pub stop: Arc<AtomicBool>,
    pub ready: mpsc::Sender<Result<usize, String>>,
    pub shared: Arc<Shared>,
}


struct Outgoing {
    bytes: Vec<u8>,
    to: SocketAddrV6,
    source: Ipv6Addr,
    ifindex: u32,
    at: Instant,
    reply_type: u8,
}

struct State {
    id: usize,
    shards: usize,
    fd: RawFd,
    sock: UdpSocket,
    core: SharedCore,
    policy: Arc<PolicyCell>,
    /// Replies waiting for the commit of the changes queued before them.
    replies: RefCell<Vec<Outgoing>>,
    notes: RefCell<Option<Rc<ConnectedSender<ShardNote>>>>,
    dns: Option<mpsc::Sender<super::ddns::Intent>>,
    committing: Cell<bool>,
    store: RefCell<Option<LmdbStore>>,
    kick: local_channel::LocalSender<()>,
    ifnames: Vec<(u32, String)>,
    to: RefCell<Vec<Option<ConnectedSender<Forwarded>>>>,
    snap: RefCell<Snapshot>,
    shared: Arc<Shared>,
}

pub async fn run(init: ShardInit) {
    let ShardInit { id, shards, socket, store, core, policy, failover, dns, to, from, ifnames, stop, ready, shared } = init;
    let n = core.lock().unwrap().engine.leases().len();
    let fd = socket.into_raw_fd();
    // SAFETY: we own the fd; glommio takes it over.
    let sock = unsafe { UdpSocket::from_raw_fd(fd) };
    let (kick, kicked) = local_channel::new_bounded(1);
    let st = Rc::new(State {
        id,
        shards,
        fd,
        sock,
        core,
        policy,
        replies: RefCell::new(Vec::new()),
        notes: RefCell::new(None),
        dns,
        committing: Cell::new(false),
        store: RefCell::new(Some(store)),
        kick,
        ifnames,
        to: RefCell::new(Vec::new()),
        snap: RefCell::new(Snapshot::default()),
        shared,
    });
    // Receivers first (as tasks), so that peers' connects complete.
    for rx in from {
        let st = st.clone();
        glommio::spawn_local(async move {
            let rx = rx.connect().await;
            while let Some(f) = rx.recv().await {
                st.process(f.msg, f.rcv, f.at);
            }
        })
        .detach();
    }
    let connecting = keep_awake();
    if let Some(link) = failover {
        // Kicks from the failover core: it queued lease writes for us.
        let st2 = st.clone();
        glommio::spawn_local(async move {
            let rx = link.kicks.connect().await;
            while rx.recv().await.is_some() {
                let _ = st2.kick.try_send(());
            }
        })
        .detach();
        *st.notes.borrow_mut() = Some(Rc::new(link.notes.connect().await));
    }
    let mut connected = Vec::new();
    for tx in to {
        connected.push(match tx {
            Some(tx) => Some(tx.connect().await),
            None => None,
        });
    }
    *st.to.borrow_mut() = connected;
    connecting.set(false);
    glommio::spawn_local(committer(st.clone(), kicked)).detach();
    glommio::spawn_local(expiry(st.clone())).detach();
    glommio::spawn_local(publisher(st.clone())).detach();
    glommio::spawn_local(receiver(st.clone())).detach();
    tracing::info!(shard = id, leases = n, "shard started");
    let _ = ready.send(Ok(id));
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    // Stop: flush what is queued (bounded: a full disk must not hang shutdown).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let idle = !st.committing.get() && st.core.lock().unwrap().pending.is_empty() && st.replies.borrow().is_empty();
        if idle {
            break;
        }
        if Instant::now() > deadline {
            tracing::error!(shard = id, "shutdown: pending lease commits could not be written; their replies were never sent");
            break;
        }
        let _ = st.kick.try_send(());
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    st.publish();
    tracing::info!(shard = id, "shard stopped");
}

/// glommio re-polls a pending channel connect only when the executor wakes
/// for something else; a parked executor would wait forever (seen as a shard
/// that never started). Keeps the executor awake until the flag is cleared.
pub fn keep_awake() -> Rc<Cell<bool>> {
    let flag = Rc::new(Cell::new(true));
    let f = flag.clone();
    glommio::spawn_local(async move {
        while f.get() {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    })
    .detach();
    flag
}

async fn receiver(st: Rc<State>) {
    let mut buf = vec![0u8; 65536];
    let mut peek = [0u8; 1];
    loop {
        if let Err(e) = st.sock.peek_from(&mut peek).await {
            tracing::warn!(shard = st.id, "receive: {e}");
            glommio::timer::sleep(Duration::from_millis(10)).await;
            continue;
        }
        // Drain everything waiting before yielding.
        loop {
            match udp::recv(st.fd, &mut buf) {
                Ok(Some(r)) => {
                    let at = Instant::now();
                    if r.len > buf.len() {
                        st.count_drop("oversized");
                        continue;
                    }
                    st.dispatch(&buf[..r.len], r, at).await;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(shard = st.id, "recvmsg: {e}");
                    break;
                }
            }
            glommio::yield_if_needed().await;
        }
    }
}

impl State {
    async fn dispatch(&self, data: &[u8], rcv: udp::Received, at: Instant) {
        let msg = match Message::decode(data) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(shard = self.id, from = %rcv.source, "malformed packet: {e}");
                self.count_drop(e.reason());
                return;
            }
        };
        let owner = match msg.unwrap_relays().1.and_then(|c| c.options.client_id()) {
            Some(d) if self.shards > 1 => shard_of(d.as_bytes(), self.shards as u32) as usize,
            _ => self.id,
        };
        if owner == self.id {
            self.process(msg, rcv, at);
            return;
        }
        let tx = self.to.borrow()[owner].as_ref().map(|t| t.try_send(Forwarded { msg, rcv, at }));
        match tx {
            Some(Ok(())) => {}
            Some(Err(_)) => self.count_drop("forward_queue_full"),
            None => self.count_drop("no_route_to_shard"),
        }
    }

    fn process(&self, msg: Message, rcv: udp::Received, at: Instant) {
        let now = unix_now();
        let ifname = self.ifnames.iter().find(|(i, _)| *i == rcv.ifindex).map(|(_, n)| n.as_str());
        let arrival = Arrival { interface: ifname, source: *rcv.source.ip(), destination: rcv.destination };
        let mut core = self.core.lock().unwrap();
        let fo = self.policy.get();
        let policy: &dyn Policy = match &fo {
            Some(p) => p,
            None => &Standalone,
        };
        let out = core.engine.handle(now, &msg, &arrival, policy);
        drop(core);
        let r = match out {
            Outcome::Reply(r) => r,
            Outcome::Drop(d) => {
                tracing::debug!(shard = self.id, from = %rcv.source, "dropped {}: {}", msg.msg_type(), d.label());
                return;
            }
        };
        let bytes = match r.message.encode() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot encode reply: {e}");
                self.count_drop("encode_error");
                return;
            }
        };
        let scope = if r.to.is_unicast_link_local() { rcv.ifindex } else { 0 };
        let out = Outgoing {
            bytes,
            to: SocketAddrV6::new(r.to, r.port, 0, scope),
            source: if rcv.destination.is_multicast() { Ipv6Addr::UNSPECIFIED } else { rcv.destination },
            ifindex: scope,
            at,
            reply_type: r.reply_type.code(),
        };
        for c in &r.changes {
            let l = c.lease();
            tracing::debug!(shard = self.id, lease = %l.key, duid = %l.binding.duid, iaid = l.binding.iaid,
                state = l.status.name(), valid_end = l.valid_end, "lease");
        }
        if r.changes.is_empty() {
            self.send(out);
        } else {
            let mut core = self.core.lock().unwrap();
            core.changed.extend(r.changes.iter().map(|c| c.lease().key));
            core.pending.extend(r.changes);
            drop(core);
            self.replies.borrow_mut().push(out);
            let _ = self.kick.try_send(());
        }
    }

    fn send(&self, o: Outgoing) {
        match udp::send(self.fd, &o.bytes, o.to, o.source, o.ifindex) {
            Ok(true) => {
                let mut s = self.snap.borrow_mut();
                s.replies[o.reply_type as usize] += 1;
                s.observe_latency(o.at.elapsed().as_secs_f64());
            }
            Ok(false) => self.count_drop("send_buffer_full"),
            Err(e) => {
                tracing::debug!(to = %o.to, "send: {e}");
                self.count_drop("send_failed");
            }
        }
    }

    fn count_drop(&self, reason: &'static str) {
        *self.snap.borrow_mut().dropped.entry(reason).or_default() += 1;
    }

    /// Copy the engine's counters into the shared snapshot.
    fn publish(&self) {
        let core = self.core.lock().unwrap();
        let e = &core.engine;
        let mut s = self.snap.borrow_mut();
        s.received.copy_from_slice(&e.stats.received);
        for r in crate::server::DropReason::ALL {
            let v = e.stats.dropped(r);
            if v > 0 {
                s.dropped.insert(r.label(), v);
            }
        }
        s.leases.clear();
        for ((ty, st), n) in e.leases().counts() {
            s.leases.insert((ty.label(), st.name()), *n);
        }
        *self.shared.shards[self.id].lock().unwrap() = s.clone();
    }
}

/// Group commit: one durable LMDB transaction at a time on a blocking
/// thread; the replies of a batch go out only after it committed.
async fn committer(st: Rc<State>, kicked: local_channel::LocalReceiver<()>) {
    let mut backoff = Duration::from_millis(10);
    while kicked.recv().await.is_some() {
        loop {
            let (changes, changed, fo_seq, replies) = {
                let mut core = st.core.lock().unwrap();
                let mut replies = st.replies.borrow_mut();
                if core.pending.is_empty() && replies.is_empty() {
                    break;
                }
                let c = std::mem::take(&mut core.pending);
                let k = std::mem::take(&mut core.changed);
                (c, k, core.fo_seq, std::mem::take(&mut *replies))
            };
            st.committing.set(true);
            let mut store = st.store.borrow_mut().take().expect("store present between commits");
            let (store, res, changes) = glommio::executor()
                .spawn_blocking(move || {
                    let r = store.commit(&changes);
                    (store, r.map(|_| changes.len()), changes)
                })
                .await;
            *st.store.borrow_mut() = Some(store);
            st.committing.set(false);
            match res {
                Ok(_) => {
                    backoff = Duration::from_millis(10);
                    for r in replies {
                        st.send(r);
                    }
                    if let Some(dns) = &st.dns {
                        use crate::lease::dns_flags as F;
                        for c in &changes {
                            let l = c.lease();
                            if l.dns.as_ref().is_some_and(|d| d.dns_flags & (F::PENDING_ADD | F::PENDING_REMOVE) != 0) {
                                let _ = dns.send((st.id, l.key));
                            }
                        }
                    }
                    let tx = st.notes.borrow().clone();
                    if let Some(tx) = tx {
                        // The partner hears of these leases only now that
                        // they are durable (lazy update, RFC 8156 §7.4).
                        let _ = tx.send(ShardNote { shard: st.id, durable: fo_seq, changed }).await;
                    }
                }
                Err(e) => {
                    // Never a reply without a durable lease: these clients
                    // retransmit, and their leases are committed then.
                    let level_full = matches!(e, StoreError::Full(_));
                    tracing::error!(shard = st.id, dropped = replies.len(), full = level_full,
                        "lease commit failed, replies withheld: {e}");
                    for _ in &replies {
                        st.count_drop(if level_full { "store_full" } else { "store_error" });
                    }
                    // The leases stay in the table; queue them again so the
                    // store catches up once it can (the failover core waits).
                    {
                        let mut core = st.core.lock().unwrap();
                        let newer = std::mem::replace(&mut core.pending, changes);
                        core.pending.extend(newer);
                        let newer = std::mem::replace(&mut core.changed, changed);
                        core.changed.extend(newer);
                    }
                    glommio::timer::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Move leases past their valid lifetime to EXPIRED, in bounded steps.
async fn expiry(st: Rc<State>) {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let (expired, waiting) = {
            let mut core = st.core.lock().unwrap();
            let changes = core.engine.expire(unix_now(), 4096);
            let n = changes.len();
            core.changed.extend(changes.iter().map(|c| c.lease().key));
            core.pending.extend(changes);
            // Writes from other threads (the DNS queue's outcomes) ride the next commit.
            (n, !core.pending.is_empty())
        };
        if waiting && expired == 0 {
            let _ = st.kick.try_send(());
        }
        if expired > 0 {
            tracing::debug!(shard = st.id, n = expired, "leases expired");
            let _ = st.kick.try_send(());
        }
    }
}

async fn publisher(st: Rc<State>) {
    loop {
        st.publish();
        glommio::timer::sleep(Duration::from_secs(1)).await;
    }
}
