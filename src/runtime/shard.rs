//! One packet shard: a glommio executor pinned to a core. It owns its
//! `ShardCore` (engine, lease table, changes waiting for a commit) and its
//! LMDB environment outright; nothing else reads or writes either. Other
//! threads send it messages (`bus`).
//!
//! Flow: receive → decode → hand to the shard that owns the client (DUID
//! hash) → engine → if the reply needs lease changes, it waits for the next
//! group commit; replies, verdicts for the failover partner and lease
//! snapshots leave only after their batch is durable. One commit is in
//! flight at a time; whatever arrives meanwhile forms the next batch, so
//! batches grow with load and an fsync is shared by many replies.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use glommio::channels::local_channel;
use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};
use glommio::io::BufferedFile;
use glommio::net::UdpSocket;

use super::bus::{DnsDone, DnsWork, Forwarded, LeaseQuery, LqAsk, LqFound, ReplyTo, ShardOp, ToFailover, ToShard};
use super::datapath::{self, Batch, Choice, SendTag, Uring};
use super::observe::{Shared, Snapshot};
use super::store::LmdbStore;
use super::sys::unix_now;
use super::udp;
use crate::lease::store::{LeaseStore, StoreError};
use crate::pool::hash::shard_of;
use crate::server::{Arrival, Reply};
use crate::shard::{Handled, ShardCore};
use crate::wire::Message;
use crate::wire::peek::peek;

/// Records read per chunk when the failover core streams a store.
const SCAN_MAX: usize = 4096;

/// The shard's end of the failover core's channels.
/// Messages carry their failover relationship (an index into the config's).
pub struct FailoverLink {
    pub to: SharedSender<(usize, ToFailover)>,
    pub from: SharedReceiver<(usize, ToShard)>,
}

/// The shard's end of the DNS queue's channels.
pub struct DnsLink {
    pub to: crossbeam_channel::Sender<DnsWork>,
    pub from: crossbeam_channel::Receiver<DnsDone>,
}

/// What a shard starts with (all Send, moved into the executor).
pub struct ShardInit {
    pub id: usize,
    pub shards: usize,
    pub socket: socket2::Socket,
    pub store: LmdbStore,
    pub core: ShardCore<ReplyTo>,
    /// Start-up reports for the failover core (flagged records).
    pub loaded: Vec<(usize, ToFailover)>,
    /// Leases with DNS work left by a previous run.
    pub dns_pending: Vec<crate::lease::Lease>,
    pub failover: Option<FailoverLink>,
    pub dns: Option<DnsLink>,
    /// Sender to every other shard (None at our own index).
    pub to: Vec<Option<SharedSender<Forwarded>>>,
    /// Receivers from every other shard.
    pub from: Vec<SharedReceiver<Forwarded>>,
    /// ifindex → interface name, for subnet selection.
    pub ifnames: Vec<(u32, String)>,
    /// Operator requests (reload, lease commands).
    pub ops: crossbeam_channel::Receiver<ShardOp>,
    pub stop: Arc<AtomicBool>,
    pub ready: mpsc::Sender<Result<usize, String>>,
    pub shared: Arc<Shared>,
    /// `--datapath`.
    pub datapath: Choice,
    /// LEASEQUERY datagrams go to the leasequery service.
    pub leasequery: Arc<super::leasequery::Gate>,
}

/// The shard's packet path.
enum Net {
    Uring(Box<Uring>),
    /// A recvmsg/sendmsg syscall per datagram.
    Fallback,
}

struct State {
    id: usize,
    shards: usize,
    fd: RawFd,
    /// Readiness for the fallback path (the io_uring path owns the socket's
    /// receive otherwise).
    sock: UdpSocket,
    net: RefCell<Net>,
    /// Completions reaped while sending (datagrams wait there for the
    /// receiver; finished sends are counted at once).
    io: RefCell<Batch>,
    /// The fallback path's encode buffer.
    scratch: RefCell<Vec<u8>>,
    core: RefCell<ShardCore<ReplyTo>>,
    /// The writer: moved to a blocking thread for each commit, merge step
    /// and read of the store.
    store: RefCell<Option<LmdbStore>>,
    /// Chunks of the store the failover core asked for (UPDREQALL
    /// answers), read by the committer between commits: the unmerged
    /// journal lives with the writer.
    scans: RefCell<VecDeque<(usize, std::ops::Bound<crate::lease::LeaseKey>, usize)>>,
    committing: Cell<bool>,
    /// A merge transaction's outcome, waiting for the committer.
    merge_done: RefCell<Option<super::store::MergeDone>>,
    kick: local_channel::LocalSender<()>,
    /// Wakes the task that submits replies queued outside a receive batch.
    flush_kick: local_channel::LocalSender<()>,
    /// Messages for the failover core, sent in order by one task.
    outbox: RefCell<VecDeque<(usize, ToFailover)>>,
    outbox_kick: local_channel::LocalSender<()>,
    has_failover: bool,
    dns: Option<crossbeam_channel::Sender<DnsWork>>,
    ifnames: RefCell<Vec<(u32, String)>>,
    /// `ctl lease del`/`wipe` in progress.
    resets: RefCell<VecDeque<Resetting>>,
    /// Batches taken for commit so far (numbers them).
    batches_taken: Cell<u64>,
    /// `ctl lease add` answers waiting for their lease to be durable: the
    /// batch that carries it.
    durable_waiters: RefCell<Vec<DurableWaiter>>,
    to: RefCell<Vec<Option<ConnectedSender<Forwarded>>>>,
    snap: RefCell<Snapshot>,
    shared: Arc<Shared>,
    leasequery: Arc<super::leasequery::Gate>,
}

pub async fn run(init: ShardInit) {
    let ShardInit {
        id,
        shards,
        socket,
        store,
        core,
        loaded,
        dns_pending,
        failover,
        dns,
        to,
        from,
        ifnames,
        ops,
        stop,
        ready,
        shared,
        datapath: choice,
        leasequery,
    } = init;
    let n = core.engine().leases().len();
    let fd = socket.into_raw_fd();
    // SAFETY: we own the fd; glommio takes it over.
    let sock = unsafe { UdpSocket::from_raw_fd(fd) };
    let (net, info) = open_datapath(choice, fd);
    match &info.reason {
        None => tracing::info!(shard = id, "datapath: io_uring (multishot recvmsg, batched sendmsg)"),
        Some(r) => tracing::warn!(shard = id, "datapath: fallback, a recvmsg/sendmsg syscall per datagram: {r}"),
    }
    let (kick, kicked) = local_channel::new_bounded(1);
    let (flush_kick, flush_kicked) = local_channel::new_bounded(1);
    let (outbox_kick, outbox_kicked) = local_channel::new_bounded(1);
    let (dns_to, dns_from) = match dns {
        Some(d) => (Some(d.to), Some(d.from)),
        None => (None, None),
    };
    let st = Rc::new(State {
        id,
        shards,
        fd,
        sock,
        net: RefCell::new(net),
        io: RefCell::new(Batch::default()),
        scratch: RefCell::new(Vec::with_capacity(1500)),
        core: RefCell::new(core),
        store: RefCell::new(Some(store)),
        scans: RefCell::new(VecDeque::new()),
        committing: Cell::new(false),
        merge_done: RefCell::new(None),
        kick,
        flush_kick,
        outbox: RefCell::new(loaded.into()),
        outbox_kick,
        has_failover: failover.is_some(),
        dns: dns_to,
        ifnames: RefCell::new(ifnames),
        resets: RefCell::new(VecDeque::new()),
        batches_taken: Cell::new(0),
        durable_waiters: RefCell::new(Vec::new()),
        to: RefCell::new(Vec::new()),
        snap: RefCell::new(Snapshot { datapath: Some(info), ..Snapshot::default() }),
        shared,
        leasequery,
    });
    let flusher = {
        let st = st.clone();
        async move {
            while flush_kicked.recv().await.is_some() {
                st.flush();
            }
        }
    };
    glommio::spawn_local(flusher).detach();
    // Receivers first (as tasks), so that peers' connects complete.
    for rx in from {
        let st = st.clone();
        glommio::spawn_local(async move {
            let rx = rx.connect().await;
            while let Some(f) = rx.recv().await {
                st.process_bytes(&f.data, f.rcv);
                // Replies to every datagram forwarded meanwhile leave together.
                let _ = st.flush_kick.try_send(());
            }
        })
        .detach();
    }
    let connecting = keep_awake();
    if let Some(link) = failover {
        let st2 = st.clone();
        glommio::spawn_local(async move {
            let rx = link.from.connect().await;
            while let Some(m) = rx.recv().await {
                st2.from_failover(m);
            }
        })
        .detach();
        let tx = link.to.connect().await;
        glommio::spawn_local(outbox(st.clone(), tx, outbox_kicked)).detach();
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
    if let Some(d) = &st.dns {
        for lease in dns_pending {
            let _ = d.send(DnsWork { shard: id, lease });
        }
    }
    glommio::spawn_local(committer(st.clone(), kicked)).detach();
    glommio::spawn_local(ticker(st.clone(), dns_from, ops)).detach();
    glommio::spawn_local(loop_lag(st.clone())).detach();
    let eventfd = match &*st.net.borrow() {
        Net::Uring(u) => Some(u.eventfd()),
        Net::Fallback => None,
    };
    match eventfd {
        Some(efd) => {
            glommio::spawn_local(uring_receiver(st.clone(), efd)).detach();
        }
        None => {
            glommio::spawn_local(receiver(st.clone())).detach();
        }
    }
    let _ = st.outbox_kick.try_send(());
    tracing::info!(shard = id, leases = n, "shard started");
    let _ = ready.send(Ok(id));
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    // Stop: flush what is queued (bounded: a full disk must not hang shutdown).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let idle = !st.committing.get() && st.core.borrow().idle();
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
    // The ring ends before the executor: nothing of it may outlive the
    // process and hold the port.
    let net = std::mem::replace(&mut *st.net.borrow_mut(), Net::Fallback);
    if let Net::Uring(mut u) = net {
        let mut io = st.io.borrow_mut();
        u.close(&mut io);
        st.account(&mut io);
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

/// The io_uring path or, when the kernel lacks it (or `--datapath
/// fallback`), the fallback, with the reason.
fn open_datapath(choice: Choice, fd: RawFd) -> (Net, datapath::Info) {
    if choice == Choice::Fallback {
        return (Net::Fallback, datapath::Info { mode: "fallback", reason: Some("--datapath fallback".into()) });
    }
    match Uring::new(fd) {
        Ok(u) => (Net::Uring(Box::new(u)), datapath::Info { mode: "io_uring", reason: None }),
        Err(e) => (Net::Fallback, datapath::Info { mode: "fallback", reason: Some(e.0) }),
    }
}

/// The io_uring receive loop: take what the ring completed, handle it,
/// submit the replies as one batch; when nothing is left, keep the executor
/// awake briefly if packets have been arriving closely (an eventfd wake-up
/// costs more than the gap), else park on the ring's eventfd.
async fn uring_receiver(st: Rc<State>, eventfd: RawFd) {
    // glommio reads the eventfd through its own ring, so a parked shard
    // wakes when ours completes something. A duplicate: glommio closes it.
    // SAFETY: dup of a live descriptor, owned by the BufferedFile.
    let efd = unsafe { BufferedFile::from_raw_fd(libc::dup(eventfd)) };
    let mut batch = Batch::default();
    let mut spin = Spin::new();
    loop {
        match st.take_batch(&mut batch) {
            Ok(0) => {}
            Ok(_) => {
                spin.arrived();
                st.handle_batch(&batch);
                st.flush();
                glommio::yield_if_needed().await;
                continue;
            }
            Err(e) => {
                // Only before anything arrived: run the fallback instead.
                tracing::warn!(shard = st.id, "datapath: fallback, a recvmsg/sendmsg syscall per datagram: {}", e.0);
                *st.net.borrow_mut() = Net::Fallback;
                st.snap.borrow_mut().datapath = Some(datapath::Info { mode: "fallback", reason: Some(e.0) });
                return receiver(st).await;
            }
        }
        if spin.keep_awake() {
            futures_lite::future::yield_now().await;
            continue;
        }
        spin.parked();
        if let Err(e) = efd.read_at(0, 8).await {
            tracing::warn!(shard = st.id, "reading the ring's eventfd: {e}");
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// When to spin instead of parking: while the gap between arrivals is
/// shorter than a wake-up, for at most about two gaps (so at low rates a
/// shard parks at once and costs nothing between packets).
struct Spin {
    last: Instant,
    /// Smoothed gap between batches, in µs.
    gap_us: f64,
    until: Option<Instant>,
}

/// Above this gap an idle shard parks at once.
const SPIN_GAP_MAX_US: f64 = 40.0;
const SPIN_MAX: Duration = Duration::from_micros(50);

impl Spin {
    fn new() -> Spin {
        Spin { last: Instant::now(), gap_us: f64::MAX, until: None }
    }

    fn arrived(&mut self) {
        let now = Instant::now();
        let gap = now.duration_since(self.last).as_secs_f64() * 1e6;
        self.gap_us = if self.gap_us == f64::MAX { gap } else { 0.75 * self.gap_us + 0.25 * gap };
        self.last = now;
        self.until = None;
    }

    fn keep_awake(&mut self) -> bool {
        if self.gap_us > SPIN_GAP_MAX_US {
            return false;
        }
        let now = Instant::now();
        let until = *self.until.get_or_insert_with(|| now + Duration::from_secs_f64(self.gap_us * 2e-6).min(SPIN_MAX));
        now < until
    }

    /// Parking: a gap that long counts as a slow arrival next time.
    fn parked(&mut self) {
        self.until = None;
        self.gap_us = self.gap_us.max(SPIN_GAP_MAX_US * 2.0);
    }
}

/// The fallback receive loop: glommio says the socket is readable, then a
/// recvmsg per datagram until it is drained.
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
                    if r.len > buf.len() {
                        st.count_drop("oversized");
                        continue;
                    }
                    st.dispatch(&buf[..r.len], r);
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

/// Sends the shard's messages to the failover core, in order.
async fn outbox(st: Rc<State>, tx: ConnectedSender<(usize, ToFailover)>, kicked: local_channel::LocalReceiver<()>) {
    while kicked.recv().await.is_some() {
        loop {
            let m = st.outbox.borrow_mut().pop_front();
            let Some(m) = m else { break };
            if tx.send(m).await.is_err() {
                return;
            }
        }
    }
}

impl State {
    /// Take what the ring completed into `batch` (plus datagrams reaped
    /// while sending); the number of datagrams.
    fn take_batch(&self, batch: &mut Batch) -> Result<usize, datapath::Unsupported> {
        batch.clear();
        std::mem::swap(batch, &mut *self.io.borrow_mut());
        if let Net::Uring(u) = &mut *self.net.borrow_mut() {
            u.poll(batch)?;
        }
        self.account(batch);
        Ok(batch.datagrams.len())
    }

    fn handle_batch(&self, batch: &Batch) {
        for d in &batch.datagrams {
            self.dispatch(&batch.arena[d.bytes.clone()], d.rcv);
        }
    }

    /// Count finished sends (replies, latency) and receive-side losses.
    fn account(&self, batch: &mut Batch) {
        if batch.sent.is_empty() && batch.oversized == 0 && batch.no_buffer == 0 {
            return;
        }
        let now = udp::realtime_ns();
        let mut s = self.snap.borrow_mut();
        for sent in batch.sent.drain(..) {
            if sent.result >= 0 {
                s.replies[sent.tag.reply_type as usize] += 1;
                if sent.tag.received_ns != 0 {
                    s.observe_latency(sent.tag.request_type, now.saturating_sub(sent.tag.received_ns) as f64 * 1e-9);
                }
            } else if -sent.result == libc::EAGAIN || -sent.result == libc::ENOBUFS {
                *s.dropped.entry("send_buffer_full").or_default() += 1;
            } else {
                *s.dropped.entry("send_failed").or_default() += 1;
            }
        }
        if batch.oversized > 0 {
            *s.dropped.entry("oversized").or_default() += batch.oversized;
        }
        if batch.no_buffer > 0 {
            *s.dropped.entry("no_receive_buffer").or_default() += batch.no_buffer;
        }
        batch.oversized = 0;
        batch.no_buffer = 0;
    }

    /// Submit the queued replies (one syscall on the io_uring path).
    fn flush(&self) {
        if let Net::Uring(u) = &mut *self.net.borrow_mut() {
            let mut io = self.io.borrow_mut();
            // An Unsupported here (a receive refused before any arrived)
            // is seen again by the receiver, which switches paths.
            let _ = u.flush(&mut io);
            self.account(&mut io);
        }
    }

    /// Route a datagram to the shard that owns its client (by DUID hash),
    /// reading only the message type and Client Identifier: the owner
    /// decodes it.
    fn dispatch(&self, data: &[u8], rcv: udp::Received) {
        if data.first() == Some(&crate::wire::MessageType::LeaseQuery.code()) {
            // Answered off the packet path: it may ask every shard.
            if let Err(why) = self.leasequery.route(Forwarded { data: data.to_vec(), rcv }) {
                self.count_drop(why);
            }
            return;
        }
        let owner = match peek(data).and_then(|p| p.client_id) {
            Some(d) if self.shards > 1 => shard_of(d, self.shards as u32) as usize,
            _ => self.id,
        };
        if owner == self.id {
            self.process_bytes(data, rcv);
            return;
        }
        let tx = self.to.borrow()[owner].as_ref().map(|t| t.try_send(Forwarded { data: data.to_vec(), rcv }).is_ok());
        match tx {
            Some(true) => {}
            Some(false) => self.count_drop("forward_queue_full"),
            None => self.count_drop("no_route_to_shard"),
        }
    }

    fn process_bytes(&self, data: &[u8], rcv: udp::Received) {
        match Message::decode(data) {
            Ok(m) => self.process(m, rcv),
            Err(e) => {
                tracing::debug!(shard = self.id, from = %rcv.source, "malformed packet: {e}");
                self.count_drop(e.reason());
            }
        }
    }

    fn process(&self, msg: Message, rcv: udp::Received) {
        let now = unix_now();
        let ifnames = self.ifnames.borrow();
        let ifname = ifnames.iter().find(|(i, _)| *i == rcv.ifindex).map(|(_, n)| n.as_str());
        let arrival = Arrival { interface: ifname, source: *rcv.source.ip(), destination: rcv.destination };
        let reply_to = ReplyTo {
            to: rcv.source,
            source: if rcv.destination.is_multicast() { Ipv6Addr::UNSPECIFIED } else { rcv.destination },
            ifindex: rcv.ifindex,
            received_ns: rcv.received_ns,
            request_type: msg.innermost().msg_type().code(),
        };
        let out = self.core.borrow_mut().handle(now, &msg, &arrival, reply_to);
        for (duid, limit) in self.core.borrow_mut().take_limit_log() {
            tracing::warn!(shard = self.id, client = %duid, limit = limit.label(), "client refused a new lease: per-client limit reached (RFC 9915 Security Considerations)");
        }
        match out {
            Handled::Reply(to, r) => self.send(&to, &r),
            Handled::Deferred => {
                let _ = self.kick.try_send(());
            }
            Handled::Dropped(d) => {
                tracing::debug!(shard = self.id, from = %rcv.source, "dropped {}: {}", msg.msg_type(), d.label());
            }
        }
    }

    /// A message from the failover core.
    fn from_failover(self: &Rc<Self>, (rel, m): (usize, ToShard)) {
        if let ToShard::Scan { from, max } = m {
            self.scans.borrow_mut().push_back((rel, from, max.min(SCAN_MAX)));
            let _ = self.kick.try_send(());
            return;
        }
        let answers = self.core.borrow_mut().bus(unix_now(), rel, m);
        for a in answers {
            self.to_failover(a);
        }
        let _ = self.kick.try_send(());
    }

    fn to_failover(&self, m: (usize, ToFailover)) {
        if self.has_failover {
            self.outbox.borrow_mut().push_back(m);
            let _ = self.outbox_kick.try_send(());
        }
    }

    /// Queue a reply (io_uring: it leaves with the next flush) or send it
    /// now (fallback).
    fn send(&self, o: &ReplyTo, r: &Reply) {
        let scope = if r.to.is_unicast_link_local() { o.ifindex } else { 0 };
        let port = if r.to_source_port { o.to.port() } else { r.port };
        let to = SocketAddrV6::new(r.to, port, 0, scope);
        let tag = SendTag { reply_type: r.reply_type.code(), request_type: o.request_type, received_ns: o.received_ns };
        let mut encode_failed = false;
        let mut fill = |buf: &mut Vec<u8>| match r.message.encode_into(buf) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("cannot encode reply: {e}");
                encode_failed = true;
                false
            }
        };
        let mut net = self.net.borrow_mut();
        match &mut *net {
            Net::Uring(u) => {
                let queued = u.send(&mut self.io.borrow_mut(), to, o.source, scope, tag, &mut fill);
                drop(net);
                if queued.is_err() {
                    self.count_drop("send_queue_full");
                }
            }
            Net::Fallback => {
                drop(net);
                let mut buf = self.scratch.borrow_mut();
                buf.clear();
                if fill(&mut buf) {
                    let result = match udp::send(self.fd, &buf, to, o.source, scope) {
                        Ok(true) => buf.len() as i32,
                        Ok(false) => -libc::EAGAIN,
                        Err(e) => {
                            tracing::debug!(to = %to, "send: {e}");
                            -e.raw_os_error().unwrap_or(libc::EIO)
                        }
                    };
                    let mut io = self.io.borrow_mut();
                    io.sent.push(datapath::Sent { tag, result });
                    self.account(&mut io);
                }
            }
        }
        if encode_failed {
            self.count_drop("encode_error");
        }
    }

    fn count_drop(&self, reason: &'static str) {
        *self.snap.borrow_mut().dropped.entry(reason).or_default() += 1;
    }

    /// Copy the engine's counters into the shared snapshot.
    fn publish(&self) {
        let core = self.core.borrow();
        let e = core.engine();
        let mut s = self.snap.borrow_mut();
        s.received.copy_from_slice(&e.stats.received);
        for r in crate::server::DropReason::ALL {
            let v = e.stats.dropped(r);
            if v > 0 {
                s.dropped.insert(r.label(), v);
            }
        }
        for l in crate::server::limits::Limit::ALL {
            s.limit_hits.insert(l.label(), e.limits.hits(l));
        }
        s.leases.clear();
        for ((ty, st), n) in e.leases().counts() {
            s.leases.insert((ty.label(), st.name()), *n);
        }
        if let Ok(mut shared) = self.shared.shards[self.id].lock() {
            *shared = s.clone();
        }
    }
}

/// Run `f` on the store on a blocking thread (the store is large and its
/// calls sync to disk); None if the store is away (never, with one owner).
async fn with_store<T: Send + 'static>(st: &State, f: impl FnOnce(&mut LmdbStore) -> T + Send + 'static) -> Option<T> {
    let mut store = st.store.borrow_mut().take()?;
    let (store, out) = glommio::executor()
        .spawn_blocking(move || {
            let out = f(&mut store);
            (store, out)
        })
        .await;
    {
        let mut s = st.snap.borrow_mut();
        s.store_bytes = store.bytes_written();
        s.journal_bytes = store.journal_bytes();
    }
    *st.store.borrow_mut() = Some(store);
    Some(out)
}

/// The store's one user on the shard: group commits (a durable journal
/// append on a blocking thread; what a batch releases goes out only after
/// it committed), chunks of the store for the failover core, and between
/// them the journal's merge into the LMDB table, a bounded step at a time.
async fn committer(st: Rc<State>, kicked: local_channel::LocalReceiver<()>) {
    let mut backoff = Duration::from_millis(10);
    let mut merge_error_logged = false;
    while kicked.recv().await.is_some() {
        loop {
            let scan = st.scans.borrow_mut().pop_front();
            if let Some((rel, from, max)) = scan {
                let res = with_store(&st, move |s| s.scan(from.as_ref(), max)).await;
                let leases = match res {
                    Some(Ok(l)) => l,
                    Some(Err(e)) => {
                        tracing::error!(shard = st.id, error = %e, "store error: reading the store for the partner");
                        Vec::new()
                    }
                    None => Vec::new(),
                };
                let next = if leases.len() < max { None } else { leases.last().map(|l| l.key) };
                // Only this relationship's records (the chunk's end stays where the read stopped).
                let mut leases = leases;
                {
                    let core = st.core.borrow();
                    leases.retain(|l| core.relationship_of(&l.key) == Some(rel));
                }
                st.to_failover((rel, ToFailover::ScanChunk { shard: st.id, leases, next }));
                continue;
            }
            let batch = st.core.borrow_mut().take_batch(unix_now());
            let Some(changes) = batch else { break };
            st.batches_taken.set(st.batches_taken.get() + 1);
            let this_batch = st.batches_taken.get();
            st.committing.set(true);
            let Some((res, changes)) = with_store(&st, move |s| (s.commit(&changes), changes)).await else { break };
            st.committing.set(false);
            let n = changes.len();
            let done = st.core.borrow_mut().batch_done(res.is_ok(), changes);
            match res {
                Ok(()) => {
                    backoff = Duration::from_millis(10);
                    st.durable_waiters.borrow_mut().retain(|(b, l, reply)| {
                        let due = *b <= this_batch;
                        if due {
                            let _ = reply.send(Ok(l.clone()));
                        }
                        !due
                    });
                    {
                        let mut s = st.snap.borrow_mut();
                        s.commits += 1;
                        s.changes_committed += n as u64;
                    }
                    for (to, r) in &done.replies {
                        st.send(to, r);
                    }
                    st.flush();
                    for m in done.to_failover {
                        st.to_failover(m);
                    }
                    if let Some(d) = &st.dns {
                        for lease in done.dns {
                            let _ = d.send(DnsWork { shard: st.id, lease });
                        }
                    }
                }
                Err(e) => {
                    // Never a reply without a durable lease: these clients
                    // retransmit, and their leases are committed then.
                    let full = matches!(e, StoreError::Full(_));
                    tracing::error!(shard = st.id, withheld = done.replies.len(), full, error = %e, "store error: lease commit failed, replies withheld");
                    for _ in &done.replies {
                        st.count_drop(if full { "store_full" } else { "store_error" });
                    }
                    glommio::timer::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
            // After each commit (a full table takes the journal again only
            // after a merge step makes room).
            merge(&st, &mut merge_error_logged);
        }
        // Idle (the ticker kicks every 50 ms): merging goes on.
        merge(&st, &mut merge_error_logged);
    }
}

/// Take back a finished merge transaction and hand out the next one if
/// the store wants it. The transaction runs on a blocking thread of its
/// own, so group commits (journal appends) go on meanwhile: a merge never
/// holds a reply back.
fn merge(st: &Rc<State>, error_logged: &mut bool) {
    let mut store = st.store.borrow_mut();
    let Some(s) = store.as_mut() else { return };
    if let Some(done) = st.merge_done.borrow_mut().take() {
        match s.merge_end(done) {
            Ok(()) => {
                st.snap.borrow_mut().merge_steps += 1;
                *error_logged = false;
            }
            Err(e) if !*error_logged => {
                tracing::error!(shard = st.id, error = %e, "store error: merging the journal into the lease table failed (the journal keeps every change; retried)");
                *error_logged = true;
            }
            Err(_) => {}
        }
    }
    let Some(job) = s.merge_begin() else { return };
    let st = st.clone();
    glommio::spawn_local(async move {
        let done = glommio::executor().spawn_blocking(move || job.run()).await;
        *st.merge_done.borrow_mut() = Some(done);
        let _ = st.kick.try_send(());
    })
    .detach();
}

/// Timers: expiry and PARTNER-DOWN reclamation once a second, DNS outcomes,
/// operator requests and the lazy flush more often, the shared snapshot
/// once a second.
async fn ticker(st: Rc<State>, dns: Option<crossbeam_channel::Receiver<DnsDone>>, ops: crossbeam_channel::Receiver<ShardOp>) {
    let mut last_second = 0;
    loop {
        glommio::timer::sleep(Duration::from_millis(50)).await;
        let now = unix_now();
        if let Some(rx) = &dns {
            let mut core = st.core.borrow_mut();
            while let Ok(o) = rx.try_recv() {
                core.dns_outcome(now, o);
            }
        }
        while let Ok(op) = ops.try_recv() {
            st.operator(op);
        }
        st.reset_chunk(now);
        if now != last_second {
            last_second = now;
            st.core.borrow_mut().tick(now);
            st.publish();
        }
        let _ = st.kick.try_send(());
    }
}

/// An added lease's answer, sent once batch `.0` is durable.
type DurableWaiter = (u64, crate::lease::Lease, crossbeam_channel::Sender<Result<crate::lease::Lease, crate::shard::AddRefused>>);

/// An operator's `del`/`wipe`: keys left to reset, how many were, where the count goes.
type Resetting = (Vec<crate::lease::LeaseKey>, usize, crossbeam_channel::Sender<usize>);

/// Leases an operator command resets per tick (a wipe of a large subnet
/// runs in chunks between packets).
const RESETS_PER_TICK: usize = 2048;

impl State {
    fn operator(&self, op: ShardOp) {
        match op {
            ShardOp::Covered { slices, reserved, reply } => {
                let t = Instant::now();
                let keys = self.core.borrow().covered_elsewhere(&slices, &reserved);
                tracing::debug!(shard = self.id, records = keys.len(), ms = t.elapsed().as_millis() as u64, "reload: records another shard must not grant");
                let _ = reply.send(keys);
            }
            ShardOp::Reconfigure { engine, slices, blocked, ifnames, reply } => {
                let t = Instant::now();
                self.core.borrow_mut().reconfigure(*engine, slices, blocked);
                *self.ifnames.borrow_mut() = ifnames;
                tracing::info!(shard = self.id, ms = t.elapsed().as_millis() as u64, "configuration applied");
                let _ = reply.send(());
            }
            ShardOp::Leasequery { ask, reply } => {
                let core = self.core.borrow();
                let t = core.engine().leases();
                let owned = |v: Vec<&crate::lease::Lease>| v.into_iter().cloned().collect::<Vec<_>>();
                let found = match ask {
                    LqAsk::Covering(a) => LqFound { groups: vec![owned(t.covering(a))], next: None },
                    LqAsk::Client(d) => LqFound { groups: vec![owned(t.of_client(&d))], next: None },
                    LqAsk::Walk { filter, from, max, max_clients, now } => {
                        let (groups, next) = t.walk_clients(from, max, max_clients, |l| filter.matches(l, now));
                        LqFound { groups: groups.into_iter().map(owned).collect(), next }
                    }
                };
                let _ = reply.send(found);
            }
            ShardOp::Find { query, reply } => {
                let core = self.core.borrow();
                let found = match &query {
                    LeaseQuery::Key(k) => core.record(k).cloned().into_iter().collect(),
                    q => core.records_where(|l| q.matches(l)),
                };
                let _ = reply.send(found);
            }
            ShardOp::Lend { key, binding, to, reply } => {
                let _ = reply.send(self.core.borrow_mut().lend(unix_now(), &key, &binding, to));
            }
            ShardOp::Unlend { key, record } => self.core.borrow_mut().unlend(&key, record),
            ShardOp::Handed { key } => {
                let _ = self.core.borrow_mut().bus(unix_now(), 0, ToShard::Drop { key });
            }
            ShardOp::Add { key, binding, valid, lent, reply } => {
                let r = self.core.borrow_mut().add_lease(unix_now(), key, &binding, valid, lent);
                match r {
                    Ok(l) => {
                        tracing::info!(shard = self.id, lease = %l.key, client = %l.binding.duid, iaid = l.binding.iaid, valid_lifetime = l.valid_lifetime, "lease added by an operator command");
                        // Answered once durable: the next batch carries it.
                        self.durable_waiters.borrow_mut().push((self.batches_taken.get() + 1, l, reply));
                        let _ = self.kick.try_send(());
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            ShardOp::Reset { query, reply } => {
                let core = self.core.borrow();
                let keys: Vec<_> = match &query {
                    LeaseQuery::Key(k) => core.record(k).filter(|l| l.is_active()).map(|l| l.key).into_iter().collect(),
                    q => core.records_where(|l| l.is_active() && q.matches(l)).into_iter().map(|l| l.key).collect(),
                };
                self.resets.borrow_mut().push_back((keys, 0, reply));
            }
        }
    }

    /// Reset the next chunk of an operator's `del`/`wipe`.
    fn reset_chunk(&self, now: u64) {
        let mut resets = self.resets.borrow_mut();
        let Some((keys, done, _)) = resets.front_mut() else { return };
        let mut core = self.core.borrow_mut();
        for _ in 0..RESETS_PER_TICK {
            let Some(k) = keys.pop() else { break };
            if let Some(l) = core.reset_lease(now, &k) {
                tracing::info!(shard = self.id, lease = %l.key, client = %l.binding.duid, "lease reset by an operator command");
                *done += 1;
            }
        }
        if keys.is_empty()
            && let Some((_, n, reply)) = resets.pop_front()
        {
            let _ = reply.send(n);
        }
    }
}

/// `tandem_shard_loop_lag_seconds`: how late a 10 ms timer fires, i.e. how
/// long the shard's executor was busy with something else.
async fn loop_lag(st: Rc<State>) {
    let period = Duration::from_millis(10);
    loop {
        let start = Instant::now();
        glommio::timer::sleep(period).await;
        let lag = start.elapsed().saturating_sub(period);
        st.snap.borrow_mut().observe_lag(lag.as_secs_f64());
    }
}

