//! The failover core: one glommio executor (the dedicated core) that moves
//! bytes and timers for the sans-IO `failover::Driver`s, one per failover
//! relationship. Everything that is protocol — framing, the STARTTLS
//! preamble, routing to shards, barriers — is in the driver, which the
//! simulator runs too.
//!
//! - Relationships (README "Several relationships"): each has its own
//!   driver, connection, persisted state and shard messages (tagged with
//!   its index); secondaries that share a listen address share one
//!   listener, which picks the relationship by the partner's address and,
//!   when one partner has several, by the name in its CONNECT.
//!
//! - Transport (RFC 8156 §6.1, §10): the primary connects to the secondary's
//!   port 647, retrying for ever; the STARTTLS exchange is the driver's
//!   `Preamble`, then a mutually authenticated TLS handshake (RFC 7653
//!   §8.2). The secondary listens, accepts only the configured peer
//!   address, caps concurrent handshakes and their time.
//! - Shards: messages both ways over glommio shared channels; the driver's
//!   persisted state is written (on a blocking thread) before anything that
//!   follows it is sent.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};
use glommio::net::{TcpListener, TcpStream};

use super::bus::{Command, ToFailover, ToShard};
use super::observe::{FailoverStatus, Shared, lock};
use super::store::LmdbStore;
use super::sys::unix_now;
use super::tls::TlsSetup;

/// The TLS material new connections use.
type TlsSlot = Rc<RefCell<Option<Rc<TlsSetup>>>>;
use crate::failover::preamble::{Preamble, Step};
use crate::failover::{Action, Driver, Role};
use crate::lease::store::LeaseStore;

/// At most this many connections in their handshake at once per partner
/// address and relationship with it (§10).
const MAX_HANDSHAKING: usize = 2;
/// A write the partner takes nothing of for this long is given up and the
/// connection closed: every relationship shares this loop, and one partner
/// that stops reading must not hold up the others (its reader task reads
/// whatever arrives, so a live partner always drains the socket).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection must finish STARTTLS and the TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Events handled before the driver's actions are carried out.
const MAX_BATCH: usize = 1024;

/// One failover relationship of this server.
pub struct RelationshipInit {
    pub driver: Driver,
    pub name: String,
    pub role: Role,
    pub listen: Option<SocketAddr>,
    pub peer: SocketAddr,
    /// None: plain TCP (`insecure = true`).
    pub tls: Option<TlsSetup>,
    /// Its subnets' prefixes, for `ctl status`.
    pub subnets: Vec<String>,
    /// The store's meta keys its state is persisted under (`failover::meta_keys`).
    pub meta_keys: Vec<String>,
}

pub struct FailoverInit {
    pub relationships: Vec<RelationshipInit>,
    pub meta: LmdbStore,
    pub to_shards: Vec<SharedSender<(usize, ToShard)>>,
    pub from_shards: Vec<SharedReceiver<(usize, ToFailover)>>,
    pub shared: Arc<Shared>,
    /// Set after the shards have stopped: DISCONNECT, persist, exit.
    pub stop: Arc<AtomicBool>,
    pub ready: mpsc::Sender<Result<usize, String>>,
    pub commands: crossbeam_channel::Receiver<Command>,
}

trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}
type Io = Box<dyn Stream>;

enum Event {
    Shard(usize, ToFailover),
    /// A connection of relationship `rel` finished its preamble (and TLS);
    /// `leftover`: failover bytes already read (insecure mode, or the
    /// CONNECT a shared listener read to pick the relationship).
    Connected { rel: usize, id: u64, io: Io, leftover: Vec<u8>, peer: SocketAddr },
    ConnectFailed(usize, String),
    Bytes { id: u64, data: Vec<u8> },
    Closed { id: u64, why: String },
    Tick,
    Command(Command),
}

struct Conn {
    id: u64,
    writer: WriteHalf<Io>,
    _reader: glommio::Task<()>,
}

/// One relationship's endpoint and connection.
struct Rel {
    driver: Driver,
    name: String,
    role: Role,
    subnets: Vec<String>,
    meta_keys: Vec<String>,
    conn: Option<Conn>,
    connecting: bool,
    /// The TLS material for the next connection (a reload re-reads it;
    /// the current connection keeps what it started with).
    tls: TlsSlot,
    listen: Option<SocketAddr>,
    peer: SocketAddr,
    /// Connections refused at its listener (shared with relationships
    /// that share the listener).
    refused: Rc<Cell<u64>>,
    connections: u64,
    /// Our UPDREQ/UPDREQALL in progress (for the log), and since when.
    resync: Option<bool>,
    resync_since: Option<std::time::Instant>,
}

struct Core {
    rels: Vec<Rel>,
    meta: Option<LmdbStore>,
    to_shards: Vec<ConnectedSender<(usize, ToShard)>>,
    shared: Arc<Shared>,
    next_conn_id: u64,
    events: async_channel::Sender<Event>,
}

/// A relationship a shared listener may hand a connection to.
#[derive(Clone)]
struct Candidate {
    rel: usize,
    name: String,
    peer: IpAddr,
    tls: TlsSlot,
}

pub async fn run(init: FailoverInit) {
    let FailoverInit { relationships, meta, to_shards, from_shards, shared, stop, ready, commands } = init;
    let (tx, rx) = async_channel::unbounded::<Event>();
    // Channels to and from the shards (keep the executor awake while they connect).
    let connecting = super::shard::keep_awake();
    for r in from_shards {
        let tx = tx.clone();
        glommio::spawn_local(async move {
            let r = r.connect().await;
            while let Some((rel, m)) = r.recv().await {
                if tx.send(Event::Shard(rel, m)).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }
    let mut senders = Vec::new();
    for s in to_shards {
        senders.push(s.connect().await);
    }
    connecting.set(false);
    let rels: Vec<Rel> = relationships
        .into_iter()
        .map(|r| Rel {
            driver: r.driver,
            name: r.name,
            role: r.role,
            subnets: r.subnets,
            meta_keys: r.meta_keys,
            conn: None,
            connecting: false,
            tls: Rc::new(RefCell::new(r.tls.map(Rc::new))),
            listen: r.listen,
            peer: r.peer,
            refused: Rc::new(Cell::new(0)),
            connections: 0,
            resync: None,
            resync_since: None,
        })
        .collect();
    let mut core = Core { rels, meta: Some(meta), to_shards: senders, shared, next_conn_id: 1, events: tx.clone() };
    // Secondaries listen; those with one listen address share a listener.
    let mut listeners: Vec<(SocketAddr, Vec<Candidate>)> = Vec::new();
    for (i, r) in core.rels.iter().enumerate() {
        if r.role != Role::Secondary {
            continue;
        }
        let addr = r.listen.unwrap_or(SocketAddr::new(IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED), crate::wire::FAILOVER_PORT));
        let c = Candidate { rel: i, name: r.name.clone(), peer: r.peer.ip(), tls: r.tls.clone() };
        match listeners.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, cs)) => cs.push(c),
            None => listeners.push((addr, vec![c])),
        }
    }
    for (n, (addr, cands)) in listeners.into_iter().enumerate() {
        let l = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                let key = if core.rels.len() > 1 { format!("failover[{}].listen", cands[0].rel) } else { "failover.listen".into() };
                let _ = ready.send(Err(format!("{key} {addr}: {e}")));
                return;
            }
        };
        let refused = core.rels[cands[0].rel].refused.clone();
        for c in &cands {
            core.rels[c.rel].refused = refused.clone();
            tracing::info!(relationship = %c.name, listen = %addr, peer = %c.peer, tls = c.tls.borrow().is_some(), "failover: listening for the primary");
        }
        // Connection ids: each listener its own range, above the primary's.
        let first_id = ((n as u64) + 1) << 40;
        glommio::spawn_local(listener(l, cands, tx.clone(), refused, first_id)).detach();
    }
    {
        let tx = tx.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(1000)).await;
                if tx.send(Event::Tick).await.is_err() {
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
                    let _ = tx.send(Event::Command(c)).await;
                }
            }
        })
        .detach();
    }
    for r in &core.rels {
        tracing::info!(relationship = %r.name, role = ?r.role, state = r.driver.endpoint().state().name(), "failover endpoint started");
    }
    core.act().await;
    core.publish();
    let _ = ready.send(Ok(usize::MAX));

    loop {
        let first = futures_lite::future::or(async { rx.recv().await.ok() }, async {
            // Wake up to notice `stop` even without events.
            glommio::timer::sleep(Duration::from_millis(100)).await;
            Some(Event::Tick)
        })
        .await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Some(first) = first else { break };
        core.handle(first);
        for _ in 1..MAX_BATCH {
            match rx.try_recv() {
                Ok(e) => core.handle(e),
                Err(_) => break,
            }
        }
        core.act().await;
        core.publish();
    }
    // SIGTERM/SIGINT, after the shards have flushed: DISCONNECT
    // (ServerShuttingDown) to each partner, persist.
    for r in &mut core.rels {
        r.driver.shutdown(unix_now());
    }
    core.act().await;
    core.publish();
    tracing::info!("failover endpoint stopped");
}

impl Core {
    fn rel_of_conn(&self, id: u64) -> Option<usize> {
        self.rels.iter().position(|r| r.conn.as_ref().is_some_and(|c| c.id == id))
    }

    fn handle(&mut self, ev: Event) {
        let now = unix_now();
        match ev {
            Event::Shard(rel, m) => {
                if let Some(r) = self.rels.get_mut(rel) {
                    r.driver.from_shard(now, m);
                }
            }
            Event::Tick => {
                for r in &mut self.rels {
                    r.driver.tick(now);
                }
            }
            Event::Bytes { id, data } => {
                if let Some(i) = self.rel_of_conn(id) {
                    self.rels[i].driver.received(now, &data);
                }
            }
            Event::Connected { rel, id, io, leftover, peer } => {
                let events = self.events.clone();
                let r = &mut self.rels[rel];
                r.connecting = false;
                if r.conn.take().is_some() {
                    tracing::info!(relationship = %r.name, "failover: a new connection from the partner replaces the old one");
                    r.driver.disconnected(now);
                }
                let (reader, writer) = futures_lite::io::split(io);
                let task = glommio::spawn_local(read_bytes(id, reader, events));
                tracing::info!(relationship = %r.name, %peer, tls = r.tls.borrow().is_some(), "failover: connected");
                r.connections += 1;
                r.conn = Some(Conn { id, writer, _reader: task });
                r.driver.connected(now);
                if !leftover.is_empty() {
                    r.driver.received(now, &leftover);
                }
            }
            Event::ConnectFailed(rel, why) => {
                let r = &mut self.rels[rel];
                r.connecting = false;
                tracing::debug!(relationship = %r.name, peer = %r.peer, "failover: connect failed: {why}");
                r.driver.connect_failed(now);
            }
            Event::Closed { id, why } => {
                if let Some(i) = self.rel_of_conn(id) {
                    let r = &mut self.rels[i];
                    tracing::warn!(relationship = %r.name, reason = %why, "failover: connection to the partner lost");
                    r.conn = None;
                    r.driver.disconnected(now);
                }
            }
            Event::Command(Command::Reconfigure { slices, away, tunables, tls, reply }) => {
                let mut tls = tls.into_iter();
                for ((r, t), slices) in self.rels.iter_mut().zip(tunables).zip(slices) {
                    r.driver.reconfigure(slices, away.clone(), t);
                    if let Some(Some(t)) = tls.next() {
                        *r.tls.borrow_mut() = Some(Rc::new(t));
                    }
                }
                let _ = reply.send(());
            }
            Event::Command(Command::HeldAt { key, shard }) => {
                for r in &mut self.rels {
                    r.driver.held_at(key, shard);
                }
            }
            Event::Command(Command::PartnerDown { relationship, reply }) => {
                let answer = match self.pick(relationship.as_deref()) {
                    Err(e) => serde_json::json!({"ok": false, "error": e}),
                    Ok(i) => {
                        let r = &mut self.rels[i];
                        match r.driver.partner_down(now) {
                            Ok(()) => serde_json::json!({"ok": true, "action": "partner-down", "relationship": r.name, "state": r.driver.endpoint().state().name()}),
                            Err(e) => serde_json::json!({"ok": false, "relationship": r.name, "error": e}),
                        }
                    }
                };
                let _ = reply.send(answer.to_string());
            }
        }
    }

    /// The relationship an operator command names (the only one when it names none).
    fn pick(&self, name: Option<&str>) -> Result<usize, String> {
        match name {
            Some(n) => self.rels.iter().position(|r| r.name == n).ok_or_else(|| {
                let names: Vec<&str> = self.rels.iter().map(|r| r.name.as_str()).collect();
                format!("no failover relationship {n:?} (this server has {})", names.join(", "))
            }),
            None if self.rels.len() == 1 => Ok(0),
            None => {
                let names: Vec<&str> = self.rels.iter().map(|r| r.name.as_str()).collect();
                Err(format!("this server has {} failover relationships ({}): name one with --relationship", names.len(), names.join(", ")))
            }
        }
    }

    /// Carry out every driver's actions, in order.
    async fn act(&mut self) {
        for i in 0..self.rels.len() {
            self.act_one(i).await;
        }
    }

    async fn act_one(&mut self, i: usize) {
        self.rels[i].log_resync();
        while let Some(a) = self.rels[i].driver.poll() {
            match a {
                Action::Transmit(bytes) => self.transmit(i, &bytes).await,
                Action::ToShard(s, m) => {
                    if let Some(tx) = self.to_shards.get(s)
                        && tx.send((i, m)).await.is_err()
                    {
                        tracing::error!(shard = s, "failover: the shard is gone");
                    }
                }
                Action::Persist(p) => {
                    // §6.3, §8.1: durable before anything that follows is sent.
                    let Some(mut store) = self.meta.take() else { continue };
                    let bytes = p.encode();
                    let keys = self.rels[i].meta_keys.clone();
                    let (store, r) = glommio::executor()
                        .spawn_blocking(move || {
                            let r = keys.iter().try_for_each(|k| store.put_meta(k, &bytes));
                            (store, r)
                        })
                        .await;
                    self.meta = Some(store);
                    if let Err(e) = r {
                        // Sending on would let the partner act on a state we
                        // could lose: drop the connection until the disk heals.
                        let r = &mut self.rels[i];
                        tracing::error!(relationship = %r.name, error = %e, "store error: cannot persist the failover state; closing the connection");
                        if let Some(mut c) = r.conn.take() {
                            let _ = c.writer.close().await;
                            r.driver.disconnected(unix_now());
                        }
                    }
                }
                Action::Transition { from, to } => {
                    tracing::info!(relationship = %self.rels[i].name, from = from.name(), to = to.name(), "failover state change");
                }
                Action::Close(why) => {
                    let r = &mut self.rels[i];
                    if let Some(mut c) = r.conn.take() {
                        tracing::info!(relationship = %r.name, reason = %why, "failover: closing the connection");
                        let _ = futures_lite::future::or(async { c.writer.close().await.is_ok() }, async {
                            glommio::timer::sleep(WRITE_TIMEOUT).await;
                            false
                        })
                        .await;
                    }
                }
                Action::Connect => self.connect(i),
            }
        }
    }

    async fn transmit(&mut self, i: usize, bytes: &[u8]) {
        let Some(c) = self.rels[i].conn.as_mut() else { return };
        let r = futures_lite::future::or(
            async {
                c.writer.write_all(bytes).await?;
                c.writer.flush().await
            },
            async {
                glommio::timer::sleep(WRITE_TIMEOUT).await;
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the partner took nothing for 10 s"))
            },
        )
        .await;
        if let Err(e) = r {
            // Dropped here, not after the queued events: what follows in
            // this turn must not wait on the same stalled socket again.
            let r = &mut self.rels[i];
            r.conn = None;
            tracing::warn!(relationship = %r.name, reason = %format!("write: {e}"), "failover: connection to the partner lost");
            r.driver.disconnected(unix_now());
        }
    }

    fn connect(&mut self, i: usize) {
        let r = &mut self.rels[i];
        if r.connecting || r.conn.is_some() {
            return;
        }
        r.connecting = true;
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        let (peer, bind, tls, tx) = (r.peer, r.listen.map(|l| l.ip()), r.tls.borrow().clone(), self.events.clone());
        glommio::spawn_local(async move {
            let r = futures_lite::future::or(connect_to(peer, bind, tls), async {
                glommio::timer::sleep(CONNECT_TIMEOUT + HANDSHAKE_TIMEOUT).await;
                Err("timed out".to_string())
            })
            .await;
            let _ = tx.try_send(match r {
                Ok((io, leftover)) => Event::Connected { rel: i, id, io, leftover, peer },
                Err(e) => Event::ConnectFailed(i, e),
            });
        })
        .detach();
    }

    fn publish(&self) {
        let all: Vec<FailoverStatus> = self
            .rels
            .iter()
            .map(|r| {
                let ep = r.driver.endpoint();
                FailoverStatus {
                    name: r.name.clone(),
                    subnets: r.subnets.clone(),
                    role: match r.role {
                        Role::Primary => "primary",
                        Role::Secondary => "secondary",
                    },
                    state: ep.state(),
                    partner_state: ep.partner_state(),
                    communications_ok: ep.communications_ok(),
                    unacked: ep.unacked() as u64,
                    backlog: ep.backlog() as u64,
                    mclt: ep.mclt(),
                    connected: r.conn.is_some(),
                    refused: r.refused.get(),
                    connections: r.connections,
                }
            })
            .collect();
        *lock(&self.shared.failover) = all;
    }
}

impl Rel {
    /// Tell the operator when a resync with the partner starts and ends.
    fn log_resync(&mut self) {
        let now = self.driver.endpoint().requesting();
        match (self.resync, now) {
            (None, Some(all)) => {
                let what = if all { "every lease (UPDREQALL)" } else { "the updates it holds for us (UPDREQ)" };
                tracing::info!(relationship = %self.name, "failover: asked the partner for {what}");
                self.resync_since = Some(std::time::Instant::now());
            }
            (Some(all), None) => {
                let took = self.resync_since.take().map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
                let what = if all { "UPDREQALL" } else { "UPDREQ" };
                tracing::info!(seconds = took, relationship = %self.name, "failover: the partner's answer to our {what} ended");
            }
            _ => {}
        }
        self.resync = now;
    }
}

async fn read_bytes(id: u64, mut r: ReadHalf<Io>, tx: async_channel::Sender<Event>) {
    let mut buf = vec![0u8; 64 << 10];
    let why = loop {
        match r.read(&mut buf).await {
            Ok(0) => break "closed by the partner".to_string(),
            Ok(n) => {
                if tx.send(Event::Bytes { id, data: buf[..n].to_vec() }).await.is_err() {
                    return;
                }
            }
            Err(e) => break format!("read: {e}"),
        }
    };
    let _ = tx.send(Event::Closed { id, why }).await;
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

/// How a preamble ended on a plain stream.
enum Ended {
    /// Run the TLS handshake now.
    Tls,
    /// Insecure: failover messages follow (these bytes already read).
    Plain(Vec<u8>),
}

/// Run the STARTTLS preamble over the plain stream.
async fn preamble(s: &mut TcpStream, mut p: Preamble, first: Vec<Step>) -> Result<Ended, String> {
    let mut steps = first;
    let mut buf = [0u8; 512];
    loop {
        for st in steps.drain(..) {
            match st {
                Step::Send(b) => s.write_all(&b).await.map_err(|e| e.to_string())?,
                Step::StartTls => return Ok(Ended::Tls),
                Step::Established(left) => return Ok(Ended::Plain(left)),
                Step::Refuse(why) => return Err(why),
            }
        }
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed during the STARTTLS exchange".into());
        }
        steps = p.push(&buf[..n]);
    }
}

/// The primary's side of RFC 7653 §8.2 (RFC 8156 §10).
async fn connect_to(peer: SocketAddr, bind: Option<IpAddr>, tls: Option<Rc<TlsSetup>>) -> Result<(Io, Vec<u8>), String> {
    let mut s = tcp_connect(peer, bind).await?;
    let (p, first) = Preamble::requester(tls.is_some());
    match (preamble(&mut s, p, first).await?, tls) {
        (Ended::Tls, Some(tls)) => {
            let connector = futures_rustls::TlsConnector::from(tls.client.clone());
            let t = connector.connect(tls.server_name.clone(), s).await.map_err(|e| format!("TLS handshake: {e}"))?;
            Ok((Box::new(t), Vec::new()))
        }
        (Ended::Plain(left), None) => Ok((Box::new(s), left)),
        _ => Err("the STARTTLS exchange ended in the wrong mode".into()),
    }
}

/// The secondary: accept, pick the relationships by the source address,
/// cap concurrency, handshake (with that partner's TLS settings), and with
/// several relationships for one partner, pick by the name in CONNECT.
async fn listener(l: TcpListener, cands: Vec<Candidate>, tx: async_channel::Sender<Event>, refused: Rc<Cell<u64>>, first_id: u64) {
    let handshaking: Rc<RefCell<std::collections::HashMap<IpAddr, usize>>> = Default::default();
    let mut next_id = first_id;
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
        let mine: Vec<Candidate> = cands.iter().filter(|c| canonical(from.ip()) == canonical(c.peer)).cloned().collect();
        if mine.is_empty() {
            refused.set(refused.get() + 1);
            let expected: Vec<String> = cands.iter().map(|c| c.peer.to_string()).collect();
            tracing::warn!(%from, expected = %expected.join(", "), "failover: connection from an address that is not the partner of any relationship here: closed");
            continue;
        }
        // Per partner address: one partner's reconnect storm never starves another.
        let busy = handshaking.borrow().get(&canonical(from.ip())).copied().unwrap_or(0);
        if busy >= MAX_HANDSHAKING * mine.len() {
            refused.set(refused.get() + 1);
            tracing::warn!(%from, "failover: too many connections in their handshake: closed");
            continue;
        }
        let _ = s.set_nodelay(true);
        let ip = canonical(from.ip());
        *handshaking.borrow_mut().entry(ip).or_default() += 1;
        // One partner, one set of TLS settings (check-config enforces it).
        let (tls, tx, hs, refused) = (mine[0].tls.borrow().clone(), tx.clone(), handshaking.clone(), refused.clone());
        let id = next_id;
        next_id += 1;
        glommio::spawn_local(async move {
            let r = futures_lite::future::or(
                async {
                    let (io, leftover) = accept_from(s, tls).await?;
                    choose(io, leftover, &mine).await
                },
                async {
                    glommio::timer::sleep(HANDSHAKE_TIMEOUT).await;
                    Err("handshake timed out".to_string())
                },
            )
            .await;
            {
                let mut hs = hs.borrow_mut();
                if let Some(n) = hs.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        hs.remove(&ip);
                    }
                }
            }
            match r {
                Ok((rel, io, leftover)) => {
                    let _ = tx.send(Event::Connected { rel, id, io, leftover, peer: from }).await;
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

/// The relationship an accepted connection is for: the only candidate, or
/// the one named in the CONNECT it opens with (read here and handed on).
async fn choose(mut io: Io, mut buf: Vec<u8>, cands: &[Candidate]) -> Result<(usize, Io, Vec<u8>), String> {
    if let [only] = cands {
        return Ok((only.rel, io, buf));
    }
    let mut chunk = [0u8; 2048];
    let name = loop {
        if let Some(name) = crate::failover::connect_name(&buf)? {
            break name;
        }
        if buf.len() > crate::wire::MAX_FRAME_LEN + 2 {
            return Err("no CONNECT".into());
        }
        let n = io.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before its CONNECT".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    match cands.iter().find(|c| Some(&c.name) == name.as_ref()) {
        Some(c) => Ok((c.rel, io, buf)),
        None => {
            let names: Vec<&str> = cands.iter().map(|c| c.name.as_str()).collect();
            Err(format!("CONNECT names relationship {:?}; with this partner we have {}", name.unwrap_or_default(), names.join(", ")))
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

async fn accept_from(mut s: TcpStream, tls: Option<Rc<TlsSetup>>) -> Result<(Io, Vec<u8>), String> {
    let p = Preamble::responder(tls.is_some());
    match (preamble(&mut s, p, Vec::new()).await?, tls) {
        (Ended::Tls, Some(tls)) => {
            let acceptor = futures_rustls::TlsAcceptor::from(tls.server.clone());
            let t = acceptor.accept(s).await.map_err(|e| format!("TLS handshake: {e}"))?;
            Ok((Box::new(t), Vec::new()))
        }
        (Ended::Plain(left), None) => Ok((Box::new(s), left)),
        _ => Err("the STARTTLS exchange ended in the wrong mode".into()),
    }
}
