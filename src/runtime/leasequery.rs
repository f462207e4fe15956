//! The leasequery service (RFC 5007 over UDP, RFC 5460 over TCP): plain
//! threads beside the shards. Shards hand it the LEASEQUERY datagrams they
//! receive; it asks the shards (`ShardOp::Leasequery`, each looks in its own
//! table, a bulk query a chunk at a time between packets) and answers from
//! a duplicate of shard 0's socket, or on the Bulk Leasequery connection.
//! The protocol itself is `crate::leasequery`.

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::bus::{Forwarded, LqAsk, LqFound, ShardOp};
use super::observe::lock;
use super::sys::unix_now;
use super::udp;
use crate::config::Leasequery;
use crate::leasequery::{self as lq, Bindings, Filter, Links, Parsed, Query, Target};
use crate::wire::{DhcpOption, Duid, Message, StatusCode};

/// How long a query waits for a shard's answer (shards read their requests
/// every 50 ms).
const SHARD_ANSWER: Duration = Duration::from_secs(10);
/// Table slots a shard looks at per request of a bulk walk.
const WALK_CHUNK: usize = 16384;
/// Clients a shard returns per request of a bulk walk (bounds the work and
/// the copies when nearly every lease matches).
const WALK_CLIENTS: usize = 1024;
/// LEASEQUERY datagrams waiting for the service, per queue; more are
/// dropped (counted).
pub const QUEUE: usize = 256;
/// Threads answering allowed UDP queries (each waits ~50–100 ms on the
/// shards per query).
const UDP_WORKERS: usize = 4;

/// What the service answers by, replaced whole by a reload.
#[derive(Clone, Default)]
pub struct Settings {
    /// `[leasequery]`; None: every LEASEQUERY is dropped.
    pub cfg: Option<Leasequery>,
    pub links: Arc<Links>,
}

impl Settings {
    pub fn new(cfg: Option<Leasequery>, subnets: &[crate::config::Subnet]) -> Settings {
        Settings { cfg, links: Arc::new(Links::new(subnets)) }
    }
}

/// Where a shard hands a LEASEQUERY datagram: allowed requestors to the
/// workers that ask the shards, everyone else to a thread that only
/// refuses, so that strangers can never crowd out a requestor's queries.
pub struct Gate {
    allowed: std::sync::RwLock<Option<Vec<crate::pool::Prefix>>>,
    queries: crossbeam_channel::Sender<Forwarded>,
    refusals: crossbeam_channel::Sender<Forwarded>,
}

/// The receiving ends of a gate's queues.
pub struct Queues {
    queries: crossbeam_channel::Receiver<Forwarded>,
    refusals: crossbeam_channel::Receiver<Forwarded>,
}

impl Gate {
    pub fn new() -> (Arc<Gate>, Queues) {
        let (queries, qrx) = crossbeam_channel::bounded(QUEUE);
        let (refusals, rrx) = crossbeam_channel::bounded(QUEUE);
        (Arc::new(Gate { allowed: std::sync::RwLock::new(None), queries, refusals }), Queues { queries: qrx, refusals: rrx })
    }

    /// Queue a datagram; Err with the drop reason when its queue is full.
    pub fn route(&self, f: Forwarded) -> Result<(), &'static str> {
        let ip = *f.rcv.source.ip();
        let allowed = self.allowed.read().map(|a| a.as_ref().is_some_and(|a| a.iter().any(|p| p.contains(ip)))).unwrap_or(false);
        let (q, why) = if allowed { (&self.queries, "leasequery_queue_full") } else { (&self.refusals, "leasequery_refusals_full") };
        q.try_send(f).map_err(|_| why)
    }

    fn set(&self, cfg: &Option<Leasequery>) {
        if let Ok(mut a) = self.allowed.write() {
            *a = cfg.as_ref().map(|c| c.allowed.clone());
        }
    }
}

/// Everything the service's threads share.
pub struct Service {
    settings: Mutex<Settings>,
    gate: Arc<Gate>,
    server: Duid,
    port: u16,
    ops: Vec<crossbeam_channel::Sender<ShardOp>>,
    /// Shard 0's socket (a duplicate): UDP answers leave from port 547.
    socket: socket2::Socket,
    stop: Arc<AtomicBool>,
    connections: AtomicUsize,
    shared: Arc<super::observe::Shared>,
}

impl Service {
    fn count(&self, what: &'static str) {
        *lock(&self.shared.leasequery).entry(what).or_default() += 1;
    }

    fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    /// New settings (a reload): the gate's allow-list with them.
    pub fn set_settings(&self, s: Settings) {
        self.gate.set(&s.cfg);
        *lock(&self.settings) = s;
    }
}

pub struct LqInit {
    pub settings: Settings,
    pub server: Duid,
    pub port: u16,
    pub ops: Vec<crossbeam_channel::Sender<ShardOp>>,
    pub socket: socket2::Socket,
    pub stop: Arc<AtomicBool>,
    pub gate: Arc<Gate>,
    pub queues: Queues,
    pub shared: Arc<super::observe::Shared>,
}

/// Start the UDP and TCP threads; join the handles after `stop` is set.
pub fn spawn(init: LqInit) -> Result<(Arc<Service>, Vec<std::thread::JoinHandle<()>>), String> {
    init.gate.set(&init.settings.cfg);
    let svc = Arc::new(Service {
        settings: Mutex::new(init.settings),
        gate: init.gate,
        server: init.server,
        port: init.port,
        ops: init.ops,
        socket: init.socket,
        stop: init.stop,
        connections: AtomicUsize::new(0),
        shared: init.shared,
    });
    let mut handles = Vec::new();
    let queues = [init.queues.refusals].into_iter().chain(std::iter::repeat_n(init.queues.queries, UDP_WORKERS));
    for (i, rx) in queues.enumerate() {
        let svc = svc.clone();
        let name = if i == 0 { "leasequery-refuse".to_string() } else { format!("leasequery-{i}") };
        let h = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                while !svc.stop.load(Ordering::Relaxed) {
                    if let Ok(f) = rx.recv_timeout(Duration::from_millis(200)) {
                        datagram(&svc, &f.data, f.rcv);
                    }
                }
            })
            .map_err(|e| format!("starting the leasequery threads: {e}"))?;
        handles.push(h);
    }
    let tcp = {
        let svc = svc.clone();
        std::thread::Builder::new().name("leasequery-tcp".into()).spawn(move || acceptor(&svc)).map_err(|e| format!("starting the bulk leasequery thread: {e}"))?
    };
    handles.push(tcp);
    Ok((svc, handles))
}

/// The leases each shard finds for `ask`, all together.
fn ask_all(svc: &Service, ask: impl Fn() -> LqAsk) -> Result<Vec<Lease>, &'static str> {
    let mut waiting = Vec::new();
    for tx in &svc.ops {
        let (reply, rx) = crossbeam_channel::bounded(1);
        tx.send(ShardOp::Leasequery { ask: ask(), reply }).map_err(|_| "a shard is not running")?;
        waiting.push(rx);
    }
    let mut out = Vec::new();
    for rx in waiting {
        let found: LqFound = recv(svc, &rx)?;
        out.extend(found.groups.into_iter().flatten());
    }
    Ok(out)
}

type Lease = crate::lease::Lease;

/// A shard's answer, or why none came (shutting down, or too slow).
fn recv<T>(svc: &Service, rx: &crossbeam_channel::Receiver<T>) -> Result<T, &'static str> {
    let deadline = Instant::now() + SHARD_ANSWER;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(v) => return Ok(v),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Err("a shard is not running"),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
        if svc.stop.load(Ordering::Relaxed) {
            return Err("the server is shutting down");
        }
        if Instant::now() > deadline {
            return Err("a shard did not answer in time");
        }
    }
}

/// What an RFC 5007 query finds: bindings, the client's links, or a refusal.
enum Answer {
    Bindings(Vec<Bindings>),
    Links(Vec<Ipv6Addr>),
    Refused(StatusCode, &'static str),
}

/// The query's link, when it names one: Err when no link of ours has it.
fn query_link(links: &Links, q: &Query) -> Result<Option<usize>, Answer> {
    match q.link {
        None => Ok(None),
        Some(a) => links.by_link_address(a).map(Some).ok_or(Answer::Refused(StatusCode::NOT_CONFIGURED, "no link of this server has that link-address")),
    }
}

/// QUERY_BY_ADDRESS and QUERY_BY_CLIENTID (RFC 5007 §4.4.1).
fn lookup(svc: &Service, links: &Links, q: &Query, tcp: bool) -> Answer {
    let link = match query_link(links, q) {
        Ok(l) => l,
        Err(a) => return a,
    };
    let now = unix_now();
    let failed = |why| Answer::Refused(StatusCode::QUERY_TERMINATED, why);
    match &q.target {
        Target::Address(a) => {
            if link.is_none() && links.of_address(*a).is_none() {
                return Answer::Refused(StatusCode::NOT_CONFIGURED, "the address is on no link of this server");
            }
            let found = match ask_all(svc, || LqAsk::Covering(*a)) {
                Ok(f) => f,
                Err(why) => return failed(why),
            };
            // The address's own lease first, else the longest delegated prefix containing it.
            let holder = found.iter().filter(|l| lq::bound(l, now)).max_by_key(|l| match l.key {
                crate::lease::LeaseKey::Addr(_) => 129,
                crate::lease::LeaseKey::Prefix(p) => p.len as u16,
            });
            let Some(holder) = holder else { return Answer::Bindings(Vec::new()) };
            let duid = holder.binding.duid.clone();
            let on = links.of_key(&holder.key);
            // §4.4.1: a link-address given names the link the client is on.
            if link.is_some() && on != link {
                return Answer::Bindings(Vec::new());
            }
            match ask_all(svc, || LqAsk::Client(duid.clone())) {
                Ok(all) => Answer::Bindings(lq::group(all, links, now).into_iter().filter(|b| b.link == on).collect()),
                Err(why) => failed(why),
            }
        }
        Target::Client(d) => {
            let all = match ask_all(svc, || LqAsk::Client(d.clone())) {
                Ok(f) => f,
                Err(why) => return failed(why),
            };
            let mut groups = lq::group(all, links, now);
            if link.is_some() {
                groups.retain(|b| b.link == link);
            }
            // §4.4.1: on several links, over UDP, the links and no data.
            if !tcp && groups.len() > 1 {
                let mut at: Vec<Ipv6Addr> = groups.iter().filter_map(|b| b.link.map(|i| links.get(i).address)).collect();
                at.dedup();
                return Answer::Links(at);
            }
            Answer::Bindings(groups)
        }
        _ => Answer::Refused(StatusCode::NOT_ALLOWED, "this query type is answered over TCP only (RFC 5460 section 4)"),
    }
}

/// A LEASEQUERY datagram: checked, answered from port 547.
fn datagram(svc: &Service, data: &[u8], rcv: udp::Received) {
    let settings = svc.settings();
    let Some(cfg) = settings.cfg else {
        svc.count("dropped_not_configured");
        return;
    };
    let msg = match Message::decode(data) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(from = %rcv.source, "malformed LEASEQUERY: {e}");
            svc.count("malformed");
            return;
        }
    };
    let mut parsed = lq::parse(&msg, &svc.server, false);
    if !cfg.allows(*rcv.source.ip()) && !matches!(parsed, Parsed::Discard(_)) {
        tracing::info!(from = %rcv.source, "leasequery refused: requestor not in leasequery.allowed");
        parsed = parsed.refuse(StatusCode::NOT_ALLOWED, "requestor not allowed");
    }
    let (xid, requestor, answer, oro) = match parsed {
        Parsed::Discard(why) => {
            tracing::debug!(from = %rcv.source, "LEASEQUERY dropped: {why}");
            svc.count("discarded");
            return;
        }
        Parsed::Refused { xid, requestor, status, text } => (xid, requestor, Answer::Refused(status, text), Vec::new()),
        Parsed::Query(q) => (q.xid, q.requestor.clone(), lookup(svc, &settings.links, &q, false), q.oro),
    };
    let (reply, outcome) = udp_reply(svc, xid, &requestor, answer, &oro, &cfg.sensitive_options);
    svc.count(outcome);
    let bytes = match reply.encode() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("cannot encode a LEASEQUERY-REPLY: {e}");
            return;
        }
    };
    let ip = *rcv.source.ip();
    let scope = if ip.is_unicast_link_local() { rcv.ifindex } else { 0 };
    let to = SocketAddrV6::new(ip, rcv.source.port(), 0, scope);
    let source = if rcv.destination.is_multicast() { Ipv6Addr::UNSPECIFIED } else { rcv.destination };
    if let Err(e) = udp::send(svc.socket.as_raw_fd(), &bytes, to, source, scope) {
        tracing::debug!(to = %to, "leasequery reply: {e}");
    }
}

/// The one LEASEQUERY-REPLY of a UDP query, and its outcome's label.
fn udp_reply(svc: &Service, xid: u32, requestor: &Duid, answer: Answer, oro: &[u16], sensitive: &[u16]) -> (Message, &'static str) {
    match answer {
        Answer::Refused(code, text) => (lq::reply(xid, requestor, &svc.server, Some((code, text))), refused_label(code)),
        Answer::Links(at) => (lq::reply_with(xid, requestor, &svc.server, vec![DhcpOption::LqClientLink(at)]), "client_links"),
        Answer::Bindings(b) => match b.first() {
            Some(first) => (lq::reply_with(xid, requestor, &svc.server, vec![lq::client_data(first, unix_now(), oro, sensitive)]), "answered"),
            None => (lq::reply(xid, requestor, &svc.server, None), "not_found"),
        },
    }
}

fn refused_label(code: StatusCode) -> &'static str {
    match code {
        StatusCode::NOT_ALLOWED => "not_allowed",
        StatusCode::MALFORMED_QUERY => "malformed_query",
        StatusCode::UNKNOWN_QUERY_TYPE => "unknown_query_type",
        StatusCode::NOT_CONFIGURED => "not_configured",
        _ => "terminated",
    }
}

/// Accept Bulk Leasequery connections while `[leasequery] bulk` is on
/// (bound and unbound as reloads turn it on and off).
fn acceptor(svc: &Arc<Service>) {
    let mut listener: Option<TcpListener> = None;
    let mut retry_at = Instant::now();
    let mut bind_failed = false;
    while !svc.stop.load(Ordering::Relaxed) {
        let want = svc.settings().cfg.is_some_and(|c| c.bulk);
        if !want && listener.take().is_some() {
            tracing::info!(port = svc.port, "bulk leasequery: stopped listening");
        }
        if want && listener.is_none() && Instant::now() >= retry_at {
            match bind(svc.port) {
                Ok(l) => {
                    tracing::info!(port = svc.port, "bulk leasequery: listening on TCP");
                    listener = Some(l);
                    bind_failed = false;
                }
                Err(e) => {
                    // Said once (and again once it works); retried quietly.
                    if !bind_failed {
                        tracing::error!(port = svc.port, "bulk leasequery: cannot listen on TCP [::]:{}: {e} (retrying every 10 s)", svc.port);
                        bind_failed = true;
                    }
                    retry_at = Instant::now() + Duration::from_secs(10);
                }
            }
        }
        let accepted = listener.as_ref().map(|l| l.accept());
        match accepted {
            Some(Ok((stream, peer))) => admit(svc, stream, peer),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(50)),
            Some(Err(e)) => {
                tracing::debug!("bulk leasequery accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    drop(listener);
    // Let the connections send QueryTerminated before the process ends.
    let deadline = Instant::now() + Duration::from_secs(3);
    while svc.connections.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn bind(port: u16) -> std::io::Result<TcpListener> {
    let l = TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// RFC 5460 §7.1: requestors not allowed, and connections past the limit,
/// are closed at once.
fn admit(svc: &Arc<Service>, stream: TcpStream, peer: SocketAddr) {
    let Some(cfg) = svc.settings().cfg else { return };
    let ip = match peer.ip() {
        std::net::IpAddr::V6(a) => a.to_ipv4_mapped().map(|v4| v4.to_ipv6_mapped()).unwrap_or(a),
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped(),
    };
    if !cfg.allows(ip) {
        tracing::info!(from = %peer, "bulk leasequery connection closed: requestor not in leasequery.allowed");
        svc.count("connection_not_allowed");
        return;
    }
    if svc.connections.load(Ordering::SeqCst) >= cfg.bulk_max_connections {
        tracing::warn!(from = %peer, max = cfg.bulk_max_connections, "bulk leasequery connection closed: leasequery.bulk-max-connections reached");
        svc.count("connection_over_limit");
        return;
    }
    svc.connections.fetch_add(1, Ordering::SeqCst);
    svc.count("connection");
    let guard = Held(svc.clone());
    let spawned = std::thread::Builder::new().name("leasequery-conn".into()).spawn(move || {
        let timeout = Duration::from_secs(cfg.bulk_data_timeout as u64);
        if let Err(why) = connection(&guard.0, stream, ip, timeout) {
            tracing::debug!(from = %peer, "bulk leasequery connection closed: {why}");
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("bulk leasequery: cannot start a connection thread: {e}");
    }
}

/// A connection's slot under `bulk-max-connections`, given back however
/// its thread ends.
struct Held(Arc<Service>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a connection ended.
type Closed = String;

/// One Bulk Leasequery connection: queries one after another (a query is
/// read only once the previous one is answered, §7.3).
fn connection(svc: &Service, mut stream: TcpStream, peer: Ipv6Addr, timeout: Duration) -> Result<(), Closed> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    loop {
        let Some(frame) = read_frame(svc, &mut stream, timeout)? else { return Ok(()) };
        let msg = match Message::decode(&frame) {
            Ok(m) => m,
            Err(e) => {
                svc.count("malformed");
                return Err(format!("malformed message: {e}"));
            }
        };
        let settings = svc.settings();
        // A reload may have turned bulk off or dropped this requestor.
        let Some(cfg) = settings.cfg.filter(|c| c.bulk && c.allows(peer)) else {
            svc.count("connection_not_allowed");
            return Err("no longer allowed (reload)".into());
        };
        match lq::parse(&msg, &svc.server, true) {
            // §4: nothing but leasequery messages on this connection.
            Parsed::Discard(why) => {
                svc.count("discarded");
                return Err(format!("not a valid LEASEQUERY: {why}"));
            }
            Parsed::Refused { xid, requestor, status, text } => {
                svc.count(refused_label(status));
                send(&mut stream, &lq::reply(xid, &requestor, &svc.server, Some((status, text))))?;
            }
            Parsed::Query(q) => {
                let outcome = bulk(svc, &settings.links, &cfg, &q, &mut stream)?;
                svc.count(outcome);
            }
        }
    }
}

/// Read one framed message (RFC 5460 §5.1); None when the requestor closed
/// the connection between messages. Closes a connection idle or stalled
/// for BULK_LQ_DATA_TIMEOUT, and at shutdown.
fn read_frame(svc: &Service, stream: &mut TcpStream, timeout: Duration) -> Result<Option<Vec<u8>>, Closed> {
    let mut head = [0u8; 2];
    if !read_full(svc, stream, &mut head, timeout, true)? {
        return Ok(None);
    }
    let n = u16::from_be_bytes(head) as usize;
    if n < 4 {
        svc.count("malformed");
        return Err(format!("a {n}-octet message"));
    }
    let mut body = vec![0u8; n];
    read_full(svc, stream, &mut body, timeout, false)?;
    Ok(Some(body))
}

/// Fill `buf`; false when the peer closed before its first octet and `may_end`.
fn read_full(svc: &Service, stream: &mut TcpStream, buf: &mut [u8], timeout: Duration, may_end: bool) -> Result<bool, Closed> {
    // One deadline for the whole read: a peer trickling octets is cut too.
    let mut got = 0;
    let start = Instant::now();
    while got < buf.len() {
        if svc.stop.load(Ordering::Relaxed) {
            return Err("shutting down".into());
        }
        match stream.read(&mut buf[got..]) {
            Ok(0) if got == 0 && may_end => return Ok(false),
            Ok(0) => return Err("closed inside a message".into()),
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => {
                if start.elapsed() >= timeout {
                    svc.count("timeout");
                    return Err("BULK_LQ_DATA_TIMEOUT".into());
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(true)
}

fn send(stream: &mut TcpStream, m: &Message) -> Result<(), Closed> {
    let bytes = lq::frame(m).map_err(|e| e.to_string())?;
    stream.write_all(&bytes).map_err(|e| format!("send: {e}"))
}

/// Stream one query's bindings: the first in LEASEQUERY-REPLY, the rest in
/// LEASEQUERY-DATA, then LEASEQUERY-DONE if any was sent (RFC 5460 §7.2).
/// An error after the reply ends it with LEASEQUERY-DONE and a status, and
/// closes the connection.
fn bulk(svc: &Service, links: &Links, cfg: &Leasequery, q: &Query, stream: &mut TcpStream) -> Result<&'static str, Closed> {
    let mut out = Stream { svc, q, cfg, stream, sent: 0 };
    let link = match query_link(links, q) {
        Ok(l) => l,
        Err(Answer::Refused(code, text)) => {
            out.refuse(code, text)?;
            return Ok(refused_label(code));
        }
        Err(_) => unreachable!("query_link refuses or names a link"),
    };
    let Some(filter) = Filter::of(q, link.map(|i| links.get(i))) else {
        // The RFC 5007 types: looked up, not walked.
        return match lookup(svc, links, q, true) {
            // §7.4: a query aborted closes the connection.
            Answer::Refused(StatusCode::QUERY_TERMINATED, why) => out.fail(why),
            Answer::Refused(code, text) => {
                out.refuse(code, text)?;
                Ok(refused_label(code))
            }
            Answer::Links(_) => unreachable!("client links are for UDP only"),
            Answer::Bindings(b) => {
                for x in &b {
                    out.binding(x)?;
                }
                out.finish()
            }
        };
    };
    let filter = Arc::new(filter);
    // Every shard walks its table at once, a chunk per request.
    let mut cursors: Vec<Option<usize>> = vec![Some(0); svc.ops.len()];
    // A client comes from a shard once per chunk holding its records: sent
    // once (per shard), the first time, whole.
    let mut sent: std::collections::HashSet<(usize, Duid)> = std::collections::HashSet::new();
    while cursors.iter().any(Option::is_some) {
        let now = unix_now();
        let mut waiting = Vec::new();
        for (i, c) in cursors.iter().enumerate() {
            let Some(from) = *c else { continue };
            let (reply, rx) = crossbeam_channel::bounded(1);
            let ask = LqAsk::Walk { filter: filter.clone(), from, max: WALK_CHUNK, max_clients: WALK_CLIENTS, now };
            if svc.ops[i].send(ShardOp::Leasequery { ask, reply }).is_err() {
                return out.fail("a shard is not running");
            }
            waiting.push((i, rx));
        }
        for (i, rx) in waiting {
            let found = match recv(svc, &rx) {
                Ok(f) => f,
                Err(why) => return out.fail(why),
            };
            cursors[i] = found.next;
            for g in found.groups {
                if !g.first().is_some_and(|l| sent.insert((i, l.binding.duid.clone()))) {
                    continue;
                }
                for b in lq::group(g, links, now) {
                    out.binding(&b)?;
                }
            }
        }
    }
    out.finish()
}

/// The messages of one bulk answer.
struct Stream<'a> {
    svc: &'a Service,
    q: &'a Query,
    cfg: &'a Leasequery,
    stream: &'a mut TcpStream,
    sent: u64,
}

impl Stream<'_> {
    fn binding(&mut self, b: &Bindings) -> Result<(), Closed> {
        if self.svc.stop.load(Ordering::Relaxed) {
            return self.fail("the server is shutting down").map(drop);
        }
        let cd = lq::client_data(b, unix_now(), &self.q.oro, &self.cfg.sensitive_options);
        let m = if self.sent == 0 { lq::reply_with(self.q.xid, &self.q.requestor, &self.svc.server, vec![cd]) } else { lq::data(self.q.xid, cd) };
        send(self.stream, &m)?;
        self.sent += 1;
        Ok(())
    }

    fn refuse(&mut self, code: StatusCode, text: &str) -> Result<(), Closed> {
        send(self.stream, &lq::reply(self.q.xid, &self.q.requestor, &self.svc.server, Some((code, text))))
    }

    fn finish(&mut self) -> Result<&'static str, Closed> {
        if self.sent == 0 {
            send(self.stream, &lq::reply(self.q.xid, &self.q.requestor, &self.svc.server, None))?;
            return Ok("not_found");
        }
        send(self.stream, &lq::done(self.q.xid, None))?;
        Ok("answered")
    }

    /// QueryTerminated (§5.5), then the connection closes (§7.4).
    fn fail(&mut self, why: &'static str) -> Result<&'static str, Closed> {
        self.svc.count("terminated");
        let m = if self.sent == 0 {
            lq::reply(self.q.xid, &self.q.requestor, &self.svc.server, Some((StatusCode::QUERY_TERMINATED, why)))
        } else {
            lq::done(self.q.xid, Some((StatusCode::QUERY_TERMINATED, why)))
        };
        let _ = send(self.stream, &m);
        Err(format!("query terminated: {why}"))
    }
}
