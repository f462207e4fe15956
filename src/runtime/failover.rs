//! The failover core: one glommio executor (the dedicated core) that runs
//! the sans-IO `Endpoint` against the real world.
//!
//! - Transport (RFC 8156 §6.1, §10): the primary connects to the secondary's
//!   port 647, retrying for ever; in secure mode it sends STARTTLS, expects
//!   a REPLY without a status code, and then runs a mutually authenticated
//!   TLS handshake (RFC 7653 §8.2). The secondary listens, accepts only the
//!   configured peer address, caps concurrent connections and handshake
//!   time, and closes anything that does not start with STARTTLS.
//! - Leases: the endpoint reads and writes the shards' tables through
//!   `ShardDb`, which locks each shard's `Core` it touches for the length of
//!   one endpoint step (so a decision and its write are atomic with respect
//!   to that shard's clients). Writes join the shard's next group commit;
//!   the messages of a batch of steps leave only after every write of the
//!   batch is durable (a BNDREPLY never precedes its commit, §7.5.2).
//! - The shards report each durable commit: the leases they changed are
//!   queued for BNDUPDs (lazy update, §7.4).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard, mpsc};
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};
use glommio::net::{TcpListener, TcpStream};

use super::observe::{FailoverStatus, Shared};
use super::shard::{Core, PolicyCell, ShardNote, SharedCore};
use super::store::LmdbStore;
use super::sys::unix_now;
use super::tls::TlsSetup;
use crate::config::Role;
use crate::failover::{Bindings, Endpoint, FailoverConfig, Output, Persistent};
use crate::lease::store::{LeaseStore, meta};
use crate::lease::{Lease, LeaseChange, LeaseKey};
use crate::pool::Prefix;
use crate::pool::hash::shard_of;
use crate::server::SliceMap;
use crate::wire::{FailoverMessage, FrameDecoder, MAX_FRAME_LEN, MessageType, StatusCode};

/// At most this many connections in their handshake at once (§10).
const MAX_HANDSHAKING: usize = 2;
/// A connection must finish STARTTLS and the TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Steps handled before the batch's writes are committed and its messages sent.
const MAX_BATCH: usize = 512;

/// Operator commands from the control socket.
pub enum Command {
    PartnerDown(mpsc::Sender<String>),
}

pub struct FailoverInit {
    pub cfg: FailoverConfig,
    pub listen: Option<SocketAddr>,
    pub peer: SocketAddr,
    /// None: plain TCP (`insecure = true`).
    pub tls: Option<TlsSetup>,
    pub meta: LmdbStore,
    pub persisted: Option<Persistent>,
    pub cores: Vec<SharedCore>,
    pub slices: SliceMap,
    /// Records that live in a shard other than their key's slice owner.
    pub strays: HashMap<LeaseKey, usize>,
    pub notes: Vec<SharedReceiver<ShardNote>>,
    pub kicks: Vec<SharedSender<()>>,
    pub policy: Arc<PolicyCell>,
    pub shared: Arc<Shared>,
    pub stop: Arc<AtomicBool>,
    pub ready: mpsc::Sender<Result<usize, String>>,
    pub commands: mpsc::Receiver<Command>,
}

trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}
type Io = Box<dyn Stream>;

enum Event {
    Note(ShardNote),
    Connected { id: u64, io: Io, decoder: FrameDecoder, peer: SocketAddr },
    ConnectFailed(String),
    Frame { id: u64, msg: FailoverMessage },
    Closed { id: u64, why: String },
    Tick,
    Command(Command),
}

struct Conn {
    id: u64,
    writer: WriteHalf<Io>,
    _reader: glommio::Task<()>,
}

/// The endpoint's view of the shards' lease tables for one step.
struct ShardDb<'a> {
    cores: &'a [SharedCore],
    guards: RefCell<Vec<Option<MutexGuard<'a, Core>>>>,
    slices: &'a SliceMap,
    strays: &'a mut HashMap<LeaseKey, usize>,
    seq: u64,
    /// Per shard: the latest write batch it must make durable (0: none).
    want: &'a mut [u64],
}

impl<'a> ShardDb<'a> {
    fn new(cores: &'a [SharedCore], slices: &'a SliceMap, strays: &'a mut HashMap<LeaseKey, usize>, seq: u64, want: &'a mut [u64]) -> Self {
        ShardDb { cores, guards: RefCell::new((0..cores.len()).map(|_| None).collect()), slices, strays, seq, want }
    }

    fn with<R>(&self, i: usize, f: impl FnOnce(&mut Core) -> R) -> R {
        let mut g = self.guards.borrow_mut();
        let guard = g[i].get_or_insert_with(|| self.cores[i].lock().unwrap());
        f(guard)
    }

    fn lock_all(&self) {
        for i in 0..self.cores.len() {
            self.with(i, |_| ());
        }
    }

    fn home(&self, key: &LeaseKey) -> Option<usize> {
        self.strays.get(key).copied().or_else(|| self.slices.owner(key))
    }
}

impl Bindings for ShardDb<'_> {
    fn lease(&self, key: &LeaseKey) -> Option<Lease> {
        let h = self.home(key)?;
        self.with(h, |c| c.engine.leases().get(key).cloned())
    }

    fn store(&mut self, lease: Lease) {
        let key = lease.key;
        let owner = self.slices.owner(&key);
        let home = match self.strays.get(&key) {
            Some(h) => *h,
            None => match owner {
                Some(s) if !lease.is_active() || self.with(s, |c| c.engine.leases().get(&key).is_some()) => s,
                // A new binding from the partner lives with its client's
                // shard, so that the client's renewals find it here.
                _ => shard_of(lease.binding.duid.as_bytes(), self.cores.len() as u32) as usize,
            },
        };
        if Some(home) != owner && !self.strays.contains_key(&key) {
            self.strays.insert(key, home);
            if let Some(s) = owner {
                self.with(s, |c| c.engine.block(key));
            }
        }
        let seq = self.seq;
        self.with(home, |c| {
            c.engine.load(lease.clone());
            c.pending.push(LeaseChange::Upsert(lease));
            c.fo_seq = seq;
        });
        self.want[home] = seq;
    }

    fn all_keys(&self) -> Vec<LeaseKey> {
        self.lock_all();
        let g = self.guards.borrow();
        let mut v: Vec<LeaseKey> = g.iter().flatten().flat_map(|c| c.engine.leases().iter().map(|l| l.key)).collect();
        v.sort();
        v.dedup();
        v
    }

    fn flagged(&self) -> Vec<LeaseKey> {
        self.lock_all();
        let g = self.guards.borrow();
        let mut v: Vec<LeaseKey> =
            g.iter().flatten().flat_map(|c| c.engine.leases().iter().filter(|l| l.update_partner).map(|l| l.key)).collect();
        v.sort();
        v.dedup();
        v
    }

    fn owns(&self, key: &LeaseKey) -> bool {
        self.slices.in_pool(key)
    }

    fn free_prefixes(&self, limit: usize) -> Vec<Prefix> {
        crate::failover::free_prefixes(self, self.slices.delegable(), limit)
    }

    fn prefix_counts(&self) -> (u64, u64) {
        crate::failover::prefix_counts(self, self.slices.delegable())
    }
}

/// The failover core's state, owned by its executor.
struct FailoverCore {
    ep: Endpoint,
    cfg: FailoverConfig,
    cores: Vec<SharedCore>,
    slices: SliceMap,
    strays: HashMap<LeaseKey, usize>,
    meta: LmdbStore,
    policy: Arc<PolicyCell>,
    shared: Arc<Shared>,
    /// Write batch counter; `durable[i]` is shard i's latest durable batch.
    seq: u64,
    durable: Vec<u64>,
    want: Vec<u64>,
    conn: Option<Conn>,
    connecting: bool,
    next_conn_id: u64,
    events: async_channel::Sender<Event>,
    tls: Option<Rc<TlsSetup>>,
    listen: Option<SocketAddr>,
    peer: SocketAddr,
    refused: Rc<Cell<u64>>,
}

pub async fn run(init: FailoverInit) {
    let FailoverInit {
        cfg,
        listen,
        peer,
        tls,
        meta,
        persisted,
        cores,
        slices,
        strays,
        notes,
        kicks,
        policy,
        shared,
        stop,
        ready,
        commands,
    } = init;
    let n = cores.len();
    let (ep, out) = Endpoint::new(cfg.clone(), persisted, unix_now());
    let (tx, rx) = async_channel::unbounded::<Event>();
    let tls = tls.map(Rc::new);
    let refused = Rc::new(Cell::new(0));
    let mut fo = FailoverCore {
        ep,
        cfg: cfg.clone(),
        cores,
        slices,
        strays,
        meta,
        policy,
        shared,
        seq: 0,
        durable: vec![0; n],
        want: vec![0; n],
        conn: None,
        connecting: false,
        next_conn_id: 1,
        events: tx.clone(),
        tls,
        listen,
        peer,
        refused: refused.clone(),
    };
    // Channels to and from the shards (keep the executor awake while they connect).
    let connecting = super::shard::keep_awake();
    for rx in notes {
        let tx = tx.clone();
        glommio::spawn_local(async move {
            let rx = rx.connect().await;
            while let Some(note) = rx.recv().await {
                if tx.try_send(Event::Note(note)).is_err() {
                    break;
                }
            }
        })
        .detach();
    }
    let mut kick_tx: Vec<ConnectedSender<()>> = Vec::new();
    for k in kicks {
        kick_tx.push(k.connect().await);
    }
    connecting.set(false);

    if fo.cfg.role == Role::Secondary {
        let addr = listen.unwrap_or(SocketAddr::new(IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED), crate::wire::FAILOVER_PORT));
        let l = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("failover.listen {addr}: {e}")));
                return;
            }
        };
        tracing::info!(listen = %addr, peer = %peer.ip(), tls = fo.tls.is_some(), "failover: listening for the primary");
        glommio::spawn_local(listener(l, peer.ip(), fo.tls.clone(), tx.clone(), refused.clone())).detach();
    }
    {
        let tx = tx.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(1000)).await;
                if tx.try_send(Event::Tick).is_err() {
                    break;
                }
            }
        })
        .detach();
    }
    {
        let tx = tx.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(20)).await;
                while let Ok(c) = commands.try_recv() {
                    let _ = tx.try_send(Event::Command(c));
                }
            }
        })
        .detach();
    }
    tracing::info!(role = ?fo.cfg.role, state = fo.ep.state().name(), "failover endpoint started");
    fo.finish(out, &kick_tx, &rx, &mut VecDeque::new()).await;
    fo.publish();
    let _ = ready.send(Ok(usize::MAX));

    let mut deferred: VecDeque<Event> = VecDeque::new();
    loop {
        let first = match deferred.pop_front() {
            Some(e) => e,
            None => match rx.recv().await {
                Ok(e) => e,
                Err(_) => break,
            },
        };
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match deferred.pop_front() {
                Some(e) => batch.push(e),
                None => break,
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let mut out = Vec::new();
        for ev in batch {
            fo.handle(ev, &mut out);
        }
        fo.finish(out, &kick_tx, &rx, &mut deferred).await;
        fo.publish();
    }
    // SIGTERM/SIGINT: DISCONNECT (ServerShuttingDown) to the partner, persist.
    let out = fo.ep.shutdown(unix_now());
    fo.finish(out, &kick_tx, &rx, &mut deferred).await;
    fo.publish();
    tracing::info!("failover endpoint stopped");
}

impl FailoverCore {
    /// Run one endpoint step with the shards' tables.
    fn step(&mut self, f: impl FnOnce(&mut Endpoint, &mut ShardDb<'_>) -> Vec<Output>) -> Vec<Output> {
        let before = self.ep.policy();
        self.seq += 1;
        let seq = self.seq;
        let mut db = ShardDb::new(&self.cores, &self.slices, &mut self.strays, seq, &mut self.want);
        let out = f(&mut self.ep, &mut db);
        let after = self.ep.policy();
        if after.state != before.state || after.mclt != before.mclt {
            // Publish the new state while every shard is locked, so no
            // client is served under the old state after this step.
            db.lock_all();
            self.policy.set(after);
        }
        drop(db);
        out
    }

    fn handle(&mut self, ev: Event, out: &mut Vec<Output>) {
        let now = unix_now();
        match ev {
            Event::Note(note) => self.note(note, out),
            Event::Tick => out.extend(self.step(|ep, db| ep.on_tick(now, db))),
            Event::Frame { id, msg } => {
                if self.conn.as_ref().is_some_and(|c| c.id == id) {
                    tracing::trace!(msg = %msg.msg_type, xid = msg.transaction_id, "failover: received");
                    out.extend(self.step(|ep, db| ep.on_message(now, &msg, db)));
                }
            }
            Event::Connected { id, io, decoder, peer } => {
                self.connecting = false;
                let (reader, writer) = futures_lite::io::split(io);
                let task = glommio::spawn_local(read_frames(id, reader, decoder, self.events.clone()));
                if self.conn.take().is_some() {
                    tracing::info!("failover: a new connection from the partner replaces the old one");
                }
                tracing::info!(%peer, tls = self.tls.is_some(), "failover: connected");
                self.conn = Some(Conn { id, writer, _reader: task });
                out.extend(self.step(|ep, db| ep.on_connected(now, db)));
            }
            Event::ConnectFailed(why) => {
                self.connecting = false;
                tracing::debug!(peer = %self.peer, "failover: connect failed: {why}");
                self.ep.on_connect_failed(now);
            }
            Event::Closed { id, why } => {
                if self.conn.as_ref().is_some_and(|c| c.id == id) {
                    tracing::warn!("failover: connection to the partner lost: {why}");
                    self.conn = None;
                    out.extend(self.step(|ep, db| ep.on_disconnected(now, db)));
                }
            }
            Event::Command(Command::PartnerDown(reply)) => {
                let mut err = None;
                out.extend(self.step(|ep, db| match ep.partner_down(now, db) {
                    Ok(o) => o,
                    Err(e) => {
                        err = Some(e);
                        Vec::new()
                    }
                }));
                let answer = match err {
                    None => serde_json::json!({"ok": true, "action": "partner-down", "state": self.ep.state().name()}),
                    Some(e) => serde_json::json!({"ok": false, "error": e}),
                };
                let _ = reply.send(answer.to_string());
            }
        }
    }

    fn republish_policy(&mut self) {
        let p = self.ep.policy();
        if self.policy.get().is_none_or(|q| q.state != p.state || q.mclt != p.mclt) {
            let guards: Vec<_> = self.cores.iter().map(|c| c.lock().unwrap()).collect();
            self.policy.set(p);
            drop(guards);
        }
    }

    fn note(&mut self, note: ShardNote, out: &mut Vec<Output>) {
        self.durable[note.shard] = self.durable[note.shard].max(note.durable);
        if note.changed.is_empty() {
            return;
        }
        for k in &note.changed {
            if self.slices.owner(k) != Some(note.shard) {
                self.strays.insert(*k, note.shard);
            }
            self.ep.lease_changed(*k);
        }
        // Send what can be sent now rather than at the next tick.
        let now = unix_now();
        out.extend(self.step(|ep, db| ep.on_tick(now, db)));
    }

    /// Make the batch's writes durable, then carry out its outputs in order.
    async fn finish(&mut self, out: Vec<Output>, kicks: &[ConnectedSender<()>], rx: &async_channel::Receiver<Event>, deferred: &mut VecDeque<Event>) {
        for (i, k) in kicks.iter().enumerate() {
            if self.want[i] > self.durable[i] {
                let _ = k.try_send(());
            }
        }
        while (0..self.want.len()).any(|i| self.durable[i] < self.want[i]) {
            match rx.recv().await {
                Ok(Event::Note(n)) => {
                    self.durable[n.shard] = self.durable[n.shard].max(n.durable);
                    if !n.changed.is_empty() {
                        deferred.push_back(Event::Note(ShardNote { shard: n.shard, durable: 0, changed: n.changed }));
                    }
                }
                Ok(e) => deferred.push_back(e),
                Err(_) => return,
            }
        }
        // The endpoint's own state, durable before any message that depends on it (§6.3).
        if let Some(p) = out.iter().rev().find_map(|o| if let Output::Persist(p) = o { Some(p.clone()) } else { None })
            && let Err(e) = self.meta.put_meta(meta::FAILOVER_STATE, &p.encode())
        {
            tracing::error!("failover: cannot persist the endpoint state, messages withheld: {e}");
            return;
        }
        for o in out {
            match o {
                Output::Persist(_) => {}
                Output::Transition { from, to } => {
                    tracing::info!(from = from.name(), to = to.name(), "failover state change");
                }
                Output::Send(m) => self.send(&m).await,
                Output::Close(why) => {
                    if let Some(mut c) = self.conn.take() {
                        tracing::info!("failover: closing the connection: {why}");
                        let _ = c.writer.close().await;
                    }
                }
                Output::Connect => self.connect(),
            }
        }
        self.republish_policy();
    }

    async fn send(&mut self, m: &FailoverMessage) {
        let Some(c) = self.conn.as_mut() else { return };
        let frame = match m.encode_frame() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("failover: cannot encode {}: {e}", m.msg_type);
                return;
            }
        };
        tracing::trace!(msg = %m.msg_type, xid = m.transaction_id, "failover: sending");
        let r = async {
            c.writer.write_all(&frame).await?;
            c.writer.flush().await
        }
        .await;
        if let Err(e) = r {
            let id = c.id;
            let _ = self.events.try_send(Event::Closed { id, why: format!("write: {e}") });
        }
    }

    fn connect(&mut self) {
        if self.connecting || self.conn.is_some() {
            return;
        }
        self.connecting = true;
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        let (peer, bind, tls, tx) = (self.peer, self.listen.map(|l| l.ip()), self.tls.clone(), self.events.clone());
        glommio::spawn_local(async move {
            let r = futures_lite::future::or(connect_to(peer, bind, tls), async {
                glommio::timer::sleep(CONNECT_TIMEOUT + HANDSHAKE_TIMEOUT).await;
                Err("timed out".to_string())
            })
            .await;
            let _ = tx.try_send(match r {
                Ok(io) => Event::Connected { id, io, decoder: FrameDecoder::new(MAX_FRAME_LEN), peer },
                Err(e) => Event::ConnectFailed(e),
            });
        })
        .detach();
    }

    fn publish(&self) {
        let st = FailoverStatus {
            role: match self.cfg.role {
                Role::Primary => "primary",
                Role::Secondary => "secondary",
            },
            state: self.ep.state(),
            partner_state: self.ep.partner_state(),
            communications_ok: self.ep.communications_ok(),
            unacked: self.ep.unacked() as u64,
            backlog: self.ep.backlog() as u64,
            mclt: self.ep.mclt(),
            connected: self.conn.is_some(),
            refused: self.refused.get(),
        };
        *self.shared.failover.lock().unwrap() = Some(st);
    }
}

async fn read_frames(id: u64, mut r: ReadHalf<Io>, mut dec: FrameDecoder, tx: async_channel::Sender<Event>) {
    let mut buf = vec![0u8; 16384];
    let why = 'outer: loop {
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => match FailoverMessage::decode(f) {
                    Ok(msg) => {
                        let _ = tx.try_send(Event::Frame { id, msg });
                    }
                    // §6.1: a malformed message ends the connection.
                    Err(e) => break 'outer format!("malformed message from the partner: {e}"),
                },
                Ok(None) => break,
                Err(e) => break 'outer format!("bad frame from the partner: {e}"),
            }
        }
        match r.read(&mut buf).await {
            Ok(0) => break "closed by the partner".to_string(),
            Ok(n) => {
                if let Err(e) = dec.push(&buf[..n]) {
                    break format!("{e}");
                }
            }
            Err(e) => break format!("read: {e}"),
        }
    };
    let _ = tx.try_send(Event::Closed { id, why });
}

/// A plain TCP connection with TCP_NODELAY (without it each handshake
/// round trip waits for delayed ACKs: ~43 ms, stack-spike Q4).
async fn tcp_connect(peer: SocketAddr, bind: Option<IpAddr>) -> Result<TcpStream, String> {
    let sock = glommio::executor()
        .spawn_blocking(move || -> std::io::Result<socket2::Socket> {
            let s = socket2::Socket::new(socket2::Domain::for_address(peer), socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
            if let Some(ip) = bind {
                // Connect from the address the secondary expects (`listen`).
                s.bind(&SocketAddr::new(ip, 0).into())?;
            }
            s.connect_timeout(&peer.into(), CONNECT_TIMEOUT)?;
            s.set_tcp_nodelay(true)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .await
        .map_err(|e| format!("connect {peer}: {e}"))?;
    // SAFETY: we own the fd; the glommio stream takes it over.
    Ok(unsafe { TcpStream::from_raw_fd(sock.into_raw_fd()) })
}

async fn read_one_frame(s: &mut TcpStream, dec: &mut FrameDecoder) -> Result<Vec<u8>, String> {
    let mut buf = [0u8; 512];
    loop {
        if let Some(f) = dec.next_frame().map_err(|e| e.to_string())? {
            return Ok(f.to_vec());
        }
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        dec.push(&buf[..n]).map_err(|e| e.to_string())?;
    }
}

/// RFC 8415-format message (STARTTLS, REPLY): type, transaction id, options.
fn plain_frame(msg_type: MessageType, xid: u32, status: Option<StatusCode>) -> Vec<u8> {
    let mut m = vec![msg_type.code(), (xid >> 16) as u8, (xid >> 8) as u8, xid as u8];
    if let Some(code) = status {
        let text = b"TLS is not available";
        m.extend_from_slice(&13u16.to_be_bytes());
        m.extend_from_slice(&((2 + text.len()) as u16).to_be_bytes());
        m.extend_from_slice(&code.0.to_be_bytes());
        m.extend_from_slice(text);
    }
    let mut f = (m.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(&m);
    f
}

/// The status code a REPLY carries, if any.
fn reply_status(m: &[u8]) -> Result<Option<u16>, String> {
    if m.len() < 4 || m[0] != MessageType::Reply.code() {
        return Err(format!("expected REPLY to STARTTLS, got message type {}", m.first().copied().unwrap_or(0)));
    }
    let opts = crate::wire::Options::decode(&m[4..]).map_err(|e| e.to_string())?;
    Ok(opts.status().map(|s| s.code.0))
}

/// The primary's side of RFC 7653 §8.2 (RFC 8156 §10).
async fn connect_to(peer: SocketAddr, bind: Option<IpAddr>, tls: Option<Rc<TlsSetup>>) -> Result<Io, String> {
    let mut s = tcp_connect(peer, bind).await?;
    let Some(tls) = tls else { return Ok(Box::new(s)) };
    s.write_all(&plain_frame(MessageType::StartTls, 1, None)).await.map_err(|e| e.to_string())?;
    let mut dec = FrameDecoder::new(MAX_FRAME_LEN);
    let reply = read_one_frame(&mut s, &mut dec).await.map_err(|e| format!("no answer to STARTTLS: {e}"))?;
    match reply_status(&reply)? {
        None | Some(0) => {}
        // TLSConnectionRefused (or anything else): never fall back to plain text.
        Some(c) => return Err(format!("the partner refused TLS (status {c}); closing (RFC 7653 §8.2)")),
    }
    let connector = futures_rustls::TlsConnector::from(tls.client.clone());
    let t = connector.connect(tls.server_name.clone(), s).await.map_err(|e| format!("TLS handshake: {e}"))?;
    Ok(Box::new(t))
}

/// The secondary: accept, check the source, cap concurrency, handshake.
async fn listener(l: TcpListener, peer: IpAddr, tls: Option<Rc<TlsSetup>>, tx: async_channel::Sender<Event>, refused: Rc<Cell<u64>>) {
    let handshaking = Rc::new(Cell::new(0usize));
    let mut next_id = 1u64 << 32;
    loop {
        let s = match l.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("failover: accept: {e}");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let from = match s.peer_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        if canonical(from.ip()) != canonical(peer) {
            refused.set(refused.get() + 1);
            tracing::warn!(%from, expected = %peer, "failover: connection from an address that is not the partner: closed");
            continue;
        }
        if handshaking.get() >= MAX_HANDSHAKING {
            refused.set(refused.get() + 1);
            tracing::warn!(%from, "failover: too many connections in their handshake: closed");
            continue;
        }
        let _ = s.set_nodelay(true);
        handshaking.set(handshaking.get() + 1);
        let (tls, tx, hs, refused) = (tls.clone(), tx.clone(), handshaking.clone(), refused.clone());
        let id = next_id;
        next_id += 1;
        glommio::spawn_local(async move {
            let r = futures_lite::future::or(accept_from(s, tls), async {
                glommio::timer::sleep(HANDSHAKE_TIMEOUT).await;
                Err("handshake timed out".to_string())
            })
            .await;
            hs.set(hs.get() - 1);
            match r {
                Ok((io, decoder)) => {
                    let _ = tx.try_send(Event::Connected { id, io, decoder, peer: from });
                }
                Err(e) => {
                    refused.set(refused.get() + 1);
                    tracing::warn!(%from, "failover: connection refused: {e}");
                }
            }
        })
        .detach();
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

async fn accept_from(mut s: TcpStream, tls: Option<Rc<TlsSetup>>) -> Result<(Io, FrameDecoder), String> {
    let mut dec = FrameDecoder::new(MAX_FRAME_LEN);
    // The first message decides: STARTTLS (secure) or CONNECT (insecure mode only).
    let mut buf = [0u8; 512];
    let first_type = loop {
        if dec.buffered() >= 3 {
            break dec_peek_type(&dec);
        }
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the first message".into());
        }
        dec.push(&buf[..n]).map_err(|e| e.to_string())?;
    };
    match (tls, first_type) {
        (Some(tls), Some(t)) if t == MessageType::StartTls.code() => {
            let frame = read_one_frame(&mut s, &mut dec).await?;
            if dec.buffered() > 0 {
                return Err("data after STARTTLS before the handshake".into());
            }
            let xid = u32::from_be_bytes([0, frame[1], frame[2], frame[3]]);
            s.write_all(&plain_frame(MessageType::Reply, xid, None)).await.map_err(|e| e.to_string())?;
            let acceptor = futures_rustls::TlsAcceptor::from(tls.server.clone());
            let t = acceptor.accept(s).await.map_err(|e| format!("TLS handshake: {e}"))?;
            Ok((Box::new(t), FrameDecoder::new(MAX_FRAME_LEN)))
        }
        // §10 / RFC 7653 §8.2: a secure secondary closes connections not secured by TLS.
        (Some(_), t) => Err(format!("first message is type {t:?}, not STARTTLS: not secured by TLS")),
        (None, Some(t)) if t == MessageType::StartTls.code() => {
            let frame = read_one_frame(&mut s, &mut dec).await?;
            let xid = u32::from_be_bytes([0, frame[1], frame[2], frame[3]]);
            let _ = s.write_all(&plain_frame(MessageType::Reply, xid, Some(StatusCode::TLS_CONNECTION_REFUSED))).await;
            Err("STARTTLS received but this server is configured insecure: TLSConnectionRefused".into())
        }
        (None, _) => Ok((Box::new(s), dec)),
    }
}

/// The message type of the first buffered frame (after its 2-octet length).
fn dec_peek_type(dec: &FrameDecoder) -> Option<u8> {
    dec.peek(2)
}
