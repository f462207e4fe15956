//! `tandem query`: a leasequery requestor for operators (RFC 5007 over UDP,
//! RFC 5460 over TCP with `--bulk`). Prints the bindings as a JSON array.

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use crate::leasequery as lq;
use crate::wire::{ClientMessage, DhcpOption, Duid, IaAddr, LqQuery, Message, MessageType, Options, StatusCode, opt};

/// What to ask (exactly one).
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct QueryTarget {
    /// Which client holds this address, or a delegated prefix containing it (QUERY_BY_ADDRESS).
    #[arg(long, value_name = "ADDR")]
    pub address: Option<Ipv6Addr>,
    /// What this client (its DUID) holds (QUERY_BY_CLIENTID).
    #[arg(long, value_name = "HEX")]
    pub client_id: Option<String>,
    /// What clients behind this relay (its DUID, OPTION_RELAY_ID) hold; needs --bulk.
    #[arg(long, value_name = "HEX")]
    pub relay_id: Option<String>,
    /// What clients on the link of this address hold; needs --bulk.
    #[arg(long, value_name = "ADDR")]
    pub link_address: Option<Ipv6Addr>,
    /// What clients with this Remote-ID hold: the 4-octet enterprise number,
    /// then the remote-id (RFC 4649); needs --bulk.
    #[arg(long, value_name = "HEX")]
    pub remote_id: Option<String>,
}

/// Why a query gave no bindings: the server refused (exit 3) or never
/// answered properly (exit 1).
enum Failed {
    Refused(StatusCode, String),
    Error(String),
}

impl From<std::io::Error> for Failed {
    fn from(e: std::io::Error) -> Failed {
        Failed::Error(e.to_string())
    }
}

pub fn run(server: &str, target: &QueryTarget, bulk: bool, source: Option<Ipv6Addr>, relay_data: bool) -> ExitCode {
    let out = (|| {
        let server = server_addr(server).map_err(Failed::Error)?;
        let q = build(target, relay_data).map_err(Failed::Error)?;
        if bulk { tcp(server, source, &q) } else { udp(server, source, &q) }
    })();
    match out {
        Ok(bindings) => {
            println!("{}", serde_json::to_string_pretty(&Value::Array(bindings)).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(Failed::Refused(code, text)) => {
            eprintln!("{}{}", code.name(), if text.is_empty() { String::new() } else { format!(": {text}") });
            if code == StatusCode::NOT_ALLOWED && !bulk && (target.relay_id.is_some() || target.link_address.is_some() || target.remote_id.is_some()) {
                eprintln!("(relay-id, link-address and remote-id queries are answered over TCP only: add --bulk)");
            }
            ExitCode::from(3)
        }
        Err(Failed::Error(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `ADDR` or `[ADDR]:PORT`; the port defaults to 547.
fn server_addr(s: &str) -> Result<SocketAddrV6, String> {
    if let Ok(a) = s.parse::<Ipv6Addr>() {
        return Ok(SocketAddrV6::new(a, crate::server::SERVER_PORT, 0, 0));
    }
    match s.parse::<SocketAddr>() {
        Ok(SocketAddr::V6(a)) => Ok(a),
        _ => Err(format!("--server {s:?}: give an IPv6 address or [ADDR]:PORT")),
    }
}

/// The query's type, link-address and options.
struct Ask {
    requestor: Duid,
    query: LqQuery,
}

fn build(t: &QueryTarget, relay_data: bool) -> Result<Ask, String> {
    let hex = |flag: &str, s: &str| crate::wire::hex::decode(s).map_err(|e| format!("--{flag}: {e}"));
    let mut options = Options::new();
    let mut link = Ipv6Addr::UNSPECIFIED;
    let query_type = if let Some(a) = t.address {
        options.push(DhcpOption::IaAddr(IaAddr { addr: a, preferred: 0, valid: 0, options: Options::new() }));
        lq::QUERY_BY_ADDRESS
    } else if let Some(d) = &t.client_id {
        options.push(DhcpOption::ClientId(Duid::from_hex(d).map_err(|e| format!("--client-id: {e}"))?));
        lq::QUERY_BY_CLIENTID
    } else if let Some(d) = &t.relay_id {
        options.push(DhcpOption::Unknown { code: opt::RELAY_ID, data: hex("relay-id", d)? });
        lq::QUERY_BY_RELAY_ID
    } else if let Some(a) = t.link_address {
        link = a;
        lq::QUERY_BY_LINK_ADDRESS
    } else if let Some(r) = &t.remote_id {
        let data = hex("remote-id", r)?;
        if data.len() < 5 {
            return Err("--remote-id: the 4-octet enterprise number and at least one octet of remote-id".into());
        }
        options.push(DhcpOption::Unknown { code: opt::REMOTE_ID, data });
        lq::QUERY_BY_REMOTE_ID
    } else {
        return Err("say what to ask: --address, --client-id, --relay-id, --link-address or --remote-id".into());
    };
    let mut oro = vec![opt::CLIENT_FQDN];
    if relay_data {
        oro.push(opt::LQ_RELAY_DATA);
    }
    options.push(DhcpOption::Oro(oro));
    Ok(Ask { requestor: requestor_duid(), query: LqQuery { query_type, link_address: link, options } })
}

/// A DUID-UUID of random octets: this requestor for this run.
fn requestor_duid() -> Duid {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_err() {
        b[..8].copy_from_slice(&crate::runtime::sys::unix_now().to_be_bytes());
        b[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    }
    Duid::uuid(b)
}

fn message(ask: &Ask, xid: u32, link: Option<Ipv6Addr>) -> Message {
    let mut q = ask.query.clone();
    if let Some(l) = link {
        q.link_address = l;
    }
    Message::Client(ClientMessage {
        msg_type: MessageType::LeaseQuery,
        transaction_id: xid,
        options: vec![DhcpOption::ClientId(ask.requestor.clone()), DhcpOption::LqQuery(q)].into(),
    })
}

fn xid() -> u32 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    (n ^ std::process::id()) & crate::wire::message::MAX_TRANSACTION_ID
}

/// RFC 5007 over UDP: retransmitted after 1, 2 and 4 s (LQ_TIMEOUT
/// doubling); when the client is on several links (OPTION_LQ_CLIENT_LINK),
/// asked again once per link.
fn udp(server: SocketAddrV6, source: Option<Ipv6Addr>, ask: &Ask) -> Result<Vec<Value>, Failed> {
    let sock = UdpSocket::bind(SocketAddrV6::new(source.unwrap_or(Ipv6Addr::UNSPECIFIED), 0, 0, 0))?;
    let reply = udp_exchange(&sock, server, ask, None)?;
    let links: Vec<Ipv6Addr> = reply.options().iter().filter_map(|o| match o {
        DhcpOption::LqClientLink(l) => Some(l.clone()),
        _ => None,
    }).flatten().collect();
    if links.is_empty() {
        return Ok(bindings(reply.options()));
    }
    let mut out = Vec::new();
    for l in links {
        out.extend(bindings(udp_exchange(&sock, server, ask, Some(l))?.options()));
    }
    Ok(out)
}

fn udp_exchange(sock: &UdpSocket, server: SocketAddrV6, ask: &Ask, link: Option<Ipv6Addr>) -> Result<Message, Failed> {
    let xid = xid();
    let bytes = message(ask, xid, link).encode().map_err(|e| Failed::Error(e.to_string()))?;
    let mut buf = vec![0u8; 65536];
    for wait in [1, 2, 4] {
        sock.send_to(&bytes, server)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(wait);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let n = match sock.recv_from(&mut buf) {
                Ok((n, _)) => n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
                Err(e) => return Err(e.into()),
            };
            let Ok(Message::Client(m)) = Message::decode(&buf[..n]) else { continue };
            // RFC 5007 §4.2.2: ours, from a server.
            if m.msg_type != MessageType::LeaseQueryReply || m.transaction_id != xid || m.options.client_id() != Some(&ask.requestor) || m.options.server_id().is_none() {
                continue;
            }
            let m = Message::Client(m);
            refused(&m)?;
            return Ok(m);
        }
    }
    Err(Failed::Error(format!("no answer from {server} (tried 3 times over 7 s)")))
}

/// The status of a reply that failed, as an error.
fn refused(m: &Message) -> Result<(), Failed> {
    match m.options().status() {
        Some(s) if s.code != StatusCode::SUCCESS => Err(Failed::Refused(s.code, s.message.clone())),
        _ => Ok(()),
    }
}

/// RFC 5460: one query on a new connection; the bindings of the REPLY and
/// each DATA until DONE.
fn tcp(server: SocketAddrV6, source: Option<Ipv6Addr>, ask: &Ask) -> Result<Vec<Value>, Failed> {
    let sock = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if let Some(s) = source {
        sock.bind(&SocketAddr::V6(SocketAddrV6::new(s, 0, 0, 0)).into())?;
    }
    sock.connect_timeout(&SocketAddr::V6(server).into(), Duration::from_secs(10))
        .map_err(|e| Failed::Error(format!("connect to {server}: {e}")))?;
    let mut stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let xid = xid();
    let frame = lq::frame(&message(ask, xid, None)).map_err(|e| Failed::Error(e.to_string()))?;
    stream.write_all(&frame)?;
    let mut out = Vec::new();
    let mut first = true;
    loop {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).map_err(|e| Failed::Error(format!("connection ended before the answer was complete: {e}")))?;
        let mut body = vec![0u8; u16::from_be_bytes(head) as usize];
        stream.read_exact(&mut body)?;
        let m = Message::decode(&body).map_err(|e| Failed::Error(format!("malformed message from the server: {e}")))?;
        let Message::Client(c) = &m else { return Err(Failed::Error("a relay message on a leasequery connection".into())) };
        if c.transaction_id != xid {
            continue;
        }
        match (first, c.msg_type) {
            (true, MessageType::LeaseQueryReply) => {
                refused(&m)?;
                first = false;
                out.extend(bindings(&c.options));
                if !c.options.has(opt::CLIENT_DATA) {
                    return Ok(out);
                }
            }
            (false, MessageType::LeaseQueryData) => out.extend(bindings(&c.options)),
            (false, MessageType::LeaseQueryDone) => {
                refused(&m)?;
                return Ok(out);
            }
            (_, t) => return Err(Failed::Error(format!("unexpected {t} from the server"))),
        }
    }
}

/// One JSON object per address or prefix in the OPTION_CLIENT_DATAs.
fn bindings(o: &Options) -> Vec<Value> {
    let now = crate::runtime::sys::unix_now();
    let mut out = Vec::new();
    for cd in o.iter() {
        let DhcpOption::ClientData(cd) = cd else { continue };
        let client = cd.client_id().map(|d| d.to_hex()).unwrap_or_default();
        let cltt = cd.u32_of(opt::CLT_TIME).map(|c| now.saturating_sub(c as u64));
        let relay = cd.iter().find_map(|x| match x {
            DhcpOption::LqRelayData(r) => Some(relay_json(r)),
            _ => None,
        });
        let fqdn = cd.client_fqdn().map(|f| f.name.to_string());
        for x in cd.iter() {
            let (kind, lease, valid, preferred) = match x {
                DhcpOption::IaAddr(a) => ("na", a.addr.to_string(), a.valid, a.preferred),
                DhcpOption::IaPrefix(p) => ("pd", format!("{}/{}", p.prefix, p.prefix_len), p.valid, p.preferred),
                _ => continue,
            };
            let mut v = json!({"client-id": client, "type": kind, "lease": lease, "valid-lifetime": valid, "preferred-lifetime": preferred, "cltt": cltt});
            if let Some(f) = &fqdn {
                v["hostname"] = json!(f);
            }
            if let Some(r) = &relay {
                v["relay"] = r.clone();
            }
            out.push(v);
        }
    }
    out
}

fn relay_json(r: &crate::wire::LqRelayData) -> Value {
    let data = crate::lease::RelayData { peer: r.peer_address, message: r.relay_message.clone() };
    let hex = |b: Option<&[u8]>| b.map(crate::wire::hex::encode);
    json!({
        "peer-address": r.peer_address.to_string(),
        "link-address": data.link_address().map(|a| a.to_string()),
        "relay-id": hex(data.relay_id()),
        "remote-id": hex(data.remote_id()),
        "message": crate::wire::hex::encode(&r.relay_message),
    })
}
