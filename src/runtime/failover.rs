//! The failover core: one glommio executor (the dedicated core) that moves
//! bytes and timers for the sans-IO `failover::Driver`. Everything that is
//! protocol — framing, the STARTTLS preamble, routing to shards, barriers —
//! is in the driver, which the simulator runs too.
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
use crate::lease::store::{LeaseStore, meta};

/// At most this many connections in their handshake at once (§10).
const MAX_HANDSHAKING: usize = 2;
/// A connection must finish STARTTLS and the TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Events handled before the driver's actions are carried out.
const MAX_BATCH: usize = 1024;

pub struct FailoverInit {
    pub driver: Driver,
    pub role: Role,
    pub listen: Option<SocketAddr>,
    pub peer: SocketAddr,
    /// None: plain TCP (`insecure = true`).
    pub tls: Option<TlsSetup>,
    pub meta: LmdbStore,
    pub to_shards: Vec<SharedSender<ToShard>>,
    pub from_shards: Vec<SharedReceiver<ToFailover>>,
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
    Shard(ToFailover),
    /// A connection finished its preamble (and TLS); `leftover`: failover
    /// bytes already read with the preamble (insecure mode).
    Connected { id: u64, io: Io, leftover: Vec<u8>, peer: SocketAddr },
    ConnectFailed(String),
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

struct Core {
    driver: Driver,
    role: Role,
    meta: Option<LmdbStore>,
    to_shards: Vec<ConnectedSender<ToShard>>,
    shared: Arc<Shared>,
    conn: Option<Conn>,
    connecting: bool,
    next_conn_id: u64,
    events: async_channel::Sender<Event>,
    /// The TLS material for the next connection (a reload re-reads it;
    /// the current connection keeps what it started with).
    tls: TlsSlot,
    listen: Option<SocketAddr>,
    peer: SocketAddr,
    refused: Rc<Cell<u64>>,
    connections: u64,
    /// Our UPDREQ/UPDREQALL in progress (for the log), and since when.
    resync: Option<bool>,
    resync_since: Option<std::time::Instant>,
}

pub async fn run(init: FailoverInit) {
    let FailoverInit { driver, role, listen, peer, tls, meta, to_shards, from_shards, shared, stop, ready, commands } = init;
    let (tx, rx) = async_channel::unbounded::<Event>();
    let tls: TlsSlot = Rc::new(RefCell::new(tls.map(Rc::new)));
    let refused = Rc::new(Cell::new(0));
    // Channels to and from the shards (keep the executor awake while they connect).
    let connecting = super::shard::keep_awake();
    for r in from_shards {
        let tx = tx.clone();
        glommio::spawn_local(async move {
            let r = r.connect().await;
            while let Some(m) = r.recv().await {
                if tx.send(Event::Shard(m)).await.is_err() {
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
    let mut core = Core {
        driver,
        role,
        meta: Some(meta),
        to_shards: senders,
        shared,
        conn: None,
        connecting: false,
        next_conn_id: 1,
        events: tx.clone(),
        tls,
        listen,
        peer,
        refused: refused.clone(),
        connections: 0,
        resync: None,
        resync_since: None,
    };
    if role == Role::Secondary {
        let addr = listen.unwrap_or(SocketAddr::new(IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED), crate::wire::FAILOVER_PORT));
        let l = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("failover.listen {addr}: {e}")));
                return;
            }
        };
        tracing::info!(listen = %addr, peer = %peer.ip(), tls = core.tls.borrow().is_some(), "failover: listening for the primary");
        glommio::spawn_local(listener(l, peer.ip(), core.tls.clone(), tx.clone(), refused.clone())).detach();
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
    tracing::info!(role = ?role, state = core.driver.endpoint().state().name(), "failover endpoint started");
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
    // (ServerShuttingDown) to the partner, persist.
    core.driver.shutdown(unix_now());
    core.act().await;
    core.publish();
    tracing::info!("failover endpoint stopped");
}

impl Core {
    fn handle(&mut self, ev: Event) {
        let now = unix_now();
        match ev {
            Event::Shard(m) => self.driver.from_shard(now, m),
            Event::Tick => self.driver.tick(now),
            Event::Bytes { id, data } => {
                if self.conn.as_ref().is_some_and(|c| c.id == id) {
                    self.driver.received(now, &data);
                }
            }
            Event::Connected { id, io, leftover, peer } => {
                self.connecting = false;
                if self.conn.take().is_some() {
                    tracing::info!("failover: a new connection from the partner replaces the old one");
                    self.driver.disconnected(now);
                }
                let (reader, writer) = futures_lite::io::split(io);
                let task = glommio::spawn_local(read_bytes(id, reader, self.events.clone()));
                tracing::info!(%peer, tls = self.tls.borrow().is_some(), "failover: connected");
                self.connections += 1;
                self.conn = Some(Conn { id, writer, _reader: task });
                self.driver.connected(now);
                if !leftover.is_empty() {
                    self.driver.received(now, &leftover);
                }
            }
            Event::ConnectFailed(why) => {
                self.connecting = false;
                tracing::debug!(peer = %self.peer, "failover: connect failed: {why}");
                self.driver.connect_failed(now);
            }
            Event::Closed { id, why } => {
                if self.conn.as_ref().is_some_and(|c| c.id == id) {
                    tracing::warn!(reason = %why, "failover: connection to the partner lost");
                    self.conn = None;
                    self.driver.disconnected(now);
                }
            }
            Event::Command(Command::Reconfigure { slices, away, tunables, tls, reply }) => {
                self.driver.reconfigure(*slices, away, tunables);
                if let Some(t) = tls {
                    *self.tls.borrow_mut() = Some(Rc::new(t));
                }
                let _ = reply.send(());
            }
            Event::Command(Command::HeldAt { key, shard }) => self.driver.held_at(key, shard),
            Event::Command(Command::PartnerDown(reply)) => {
                let answer = match self.driver.partner_down(now) {
                    Ok(()) => serde_json::json!({"ok": true, "action": "partner-down", "state": self.driver.endpoint().state().name()}),
                    Err(e) => serde_json::json!({"ok": false, "error": e}),
                };
                let _ = reply.send(answer.to_string());
            }
        }
    }

    /// Carry out the driver's actions, in order.
    async fn act(&mut self) {
        self.log_resync();
        while let Some(a) = self.driver.poll() {
            match a {
                Action::Transmit(bytes) => self.transmit(&bytes).await,
                Action::ToShard(i, m) => {
                    if let Some(s) = self.to_shards.get(i)
                        && s.send(m).await.is_err()
                    {
                        tracing::error!(shard = i, "failover: the shard is gone");
                    }
                }
                Action::Persist(p) => {
                    // §6.3, §8.1: durable before anything that follows is sent.
                    let Some(mut store) = self.meta.take() else { continue };
                    let bytes = p.encode();
                    let (store, r) = glommio::executor()
                        .spawn_blocking(move || {
                            let r = store.put_meta(meta::FAILOVER_STATE, &bytes);
                            (store, r)
                        })
                        .await;
                    self.meta = Some(store);
                    if let Err(e) = r {
                        // Sending on would let the partner act on a state we
                        // could lose: drop the connection until the disk heals.
                        tracing::error!(error = %e, "store error: cannot persist the failover state; closing the connection");
                        if let Some(mut c) = self.conn.take() {
                            let _ = c.writer.close().await;
                            self.driver.disconnected(unix_now());
                        }
                    }
                }
                Action::Transition { from, to } => {
                    tracing::info!(from = from.name(), to = to.name(), "failover state change");
                }
                Action::Close(why) => {
                    if let Some(mut c) = self.conn.take() {
                        tracing::info!(reason = %why, "failover: closing the connection");
                        let _ = c.writer.close().await;
                    }
                }
                Action::Connect => self.connect(),
            }
        }
    }

    /// Tell the operator when a resync with the partner starts and ends.
    fn log_resync(&mut self) {
        let now = self.driver.endpoint().requesting();
        match (self.resync, now) {
            (None, Some(all)) => {
                let what = if all { "every lease (UPDREQALL)" } else { "the updates it holds for us (UPDREQ)" };
                tracing::info!("failover: asked the partner for {what}");
                self.resync_since = Some(std::time::Instant::now());
            }
            (Some(all), None) => {
                let took = self.resync_since.take().map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
                let what = if all { "UPDREQALL" } else { "UPDREQ" };
                tracing::info!(seconds = took, "failover: the partner's answer to our {what} ended");
            }
            _ => {}
        }
        self.resync = now;
    }

    async fn transmit(&mut self, bytes: &[u8]) {
        let Some(c) = self.conn.as_mut() else { return };
        let r = async {
            c.writer.write_all(bytes).await?;
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
        let (peer, bind, tls, tx) = (self.peer, self.listen.map(|l| l.ip()), self.tls.borrow().clone(), self.events.clone());
        glommio::spawn_local(async move {
            let r = futures_lite::future::or(connect_to(peer, bind, tls), async {
                glommio::timer::sleep(CONNECT_TIMEOUT + HANDSHAKE_TIMEOUT).await;
                Err("timed out".to_string())
            })
            .await;
            let _ = tx.try_send(match r {
                Ok((io, leftover)) => Event::Connected { id, io, leftover, peer },
                Err(e) => Event::ConnectFailed(e),
            });
        })
        .detach();
    }

    fn publish(&self) {
        let ep = self.driver.endpoint();
        let st = FailoverStatus {
            role: match self.role {
                Role::Primary => "primary",
                Role::Secondary => "secondary",
            },
            state: ep.state(),
            partner_state: ep.partner_state(),
            communications_ok: ep.communications_ok(),
            unacked: ep.unacked() as u64,
            backlog: ep.backlog() as u64,
            mclt: ep.mclt(),
            connected: self.conn.is_some(),
            refused: self.refused.get(),
            connections: self.connections,
        };
        *lock(&self.shared.failover) = Some(st);
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

/// The secondary: accept, check the source, cap concurrency, handshake.
async fn listener(l: TcpListener, peer: IpAddr, tls: TlsSlot, tx: async_channel::Sender<Event>, refused: Rc<Cell<u64>>) {
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
        let (tls, tx, hs, refused) = (tls.borrow().clone(), tx.clone(), handshaking.clone(), refused.clone());
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
                Ok((io, leftover)) => {
                    let _ = tx.send(Event::Connected { id, io, leftover, peer: from }).await;
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
