//! End to end: Leasequery (RFC 5007, UDP) and Bulk Leasequery (RFC 5460,
//! TCP) against the real binary in network namespaces; needs root.
//!
//! The requestor sits in the client namespace at 2001:db8:1::99 (the one
//! address in `leasequery.allowed`); 2001:db8:1::98 is a requestor that is
//! not allowed. Leases come from real clients (dhclient -6), rapid-commit
//! load clients, and a relay built by the test (the relay, too, sends from
//! 2001:db8:1::99, port 547).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tandem::wire::*;

const SERVER: &str = "2001:db8:1::1";
const REQUESTOR: &str = "2001:db8:1::99";
const STRANGER: &str = "2001:db8:1::98";

fn ip(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn server547() -> SocketAddrV6 {
    SocketAddrV6::new(ip(SERVER), 547, 0, 0)
}

fn lq_section(extra: &str) -> String {
    format!("\n[leasequery]\nallowed = [\"{REQUESTOR}\"]\n{extra}\n")
}

/// A Lab whose client namespace has the requestor's address and a second
/// one that is not allowed; the server started with `config` (2 shards).
fn lab_with(name: &str, config: impl FnOnce(&Lab) -> String) -> Lab {
    lab_and_pid(name, config).0
}

/// `lab_with`, and the server's process id.
fn lab_and_pid(name: &str, config: impl FnOnce(&Lab) -> String) -> (Lab, u32) {
    let mut lab = Lab::new(name);
    for a in [REQUESTOR, STRANGER] {
        must(&format!("ip -n {} addr add {a}/64 dev {} nodad", lab.cli, lab.cli_if));
    }
    let cfg = config(&lab);
    let pid = lab.start_server(&cfg, &["--shards", "2"]);
    (lab, pid)
}

// ---------------------------------------------------------------- the CLI

/// `tandem query --source SRC ARGS` in the client namespace: exit code,
/// stdout, stderr, and how long it took.
fn query_from(lab: &Lab, source: &str, args: &str) -> (i32, String, String, Duration) {
    let t = Instant::now();
    let o = lab.exec(&lab.cli, &format!("{BIN} query --server {SERVER} --source {source} {args}"));
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into(), t.elapsed())
}

/// A query that must succeed: its JSON array.
#[track_caller]
fn query_ok(lab: &Lab, args: &str) -> Vec<Value> {
    let (rc, out, err, _) = query_from(lab, REQUESTOR, args);
    assert_eq!(rc, 0, "tandem query {args}: rc {rc}\nstdout: {out}\nstderr: {err}\nserver log:\n{}", lab.server_log());
    match serde_json::from_str::<Value>(&out) {
        Ok(Value::Array(v)) => v,
        _ => panic!("tandem query {args}: not a JSON array:\n{out}"),
    }
}

/// (client-id, type, lease) of each object of a query's answer.
fn triples(v: &[Value]) -> BTreeSet<(String, String, String)> {
    let set: BTreeSet<_> = v.iter().map(|o| (s(&o["client-id"]), s(&o["type"]), s(&o["lease"]))).collect();
    assert_eq!(set.len(), v.len(), "an address or prefix reported twice: {v:#?}");
    set
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}")).to_string()
}

fn t(duid: &Duid, ty: &str, lease: impl ToString) -> (String, String, String) {
    (duid.to_hex(), ty.to_string(), lease.to_string())
}

/// The server's ACTIVE leases from its lease dump, by (duid, type, lease).
fn dump(lab: &Lab) -> BTreeMap<(String, String, String), Value> {
    lab.leases_json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["state"] == "ACTIVE")
        .map(|l| ((s(&l["duid"]), s(&l["type"]), s(&l["lease"])), l.clone()))
        .collect()
}

/// The lifetimes and CLTT of an answered binding agree with the dump.
#[track_caller]
fn check_times(o: &Value, dump: &BTreeMap<(String, String, String), Value>) {
    let key = (s(&o["client-id"]), s(&o["type"]), s(&o["lease"]));
    let d = dump.get(&key).unwrap_or_else(|| panic!("{key:?} is not an ACTIVE lease in the dump"));
    let now = unix_now();
    let valid_left = d["valid-lifetime-end"].as_u64().unwrap().saturating_sub(now);
    let valid = o["valid-lifetime"].as_u64().unwrap();
    assert!(valid <= 4000 && valid + 3 >= valid_left && valid <= valid_left + 3, "valid {valid}, dump says {valid_left} left: {o}");
    let preferred = o["preferred-lifetime"].as_u64().unwrap();
    assert!(preferred <= 3000 && preferred + 1000 <= valid + 3 && preferred + 110 >= 3000, "preferred {preferred}: {o}");
    let cltt = o["cltt"].as_u64().unwrap();
    let dcltt = d["cltt"].as_u64().unwrap();
    assert!(cltt.abs_diff(dcltt) <= 2, "cltt {cltt}, dump {dcltt}");
}

// ------------------------------------------------------------ raw messages

fn requestor_duid() -> Duid {
    Duid::en(9, b"lq-e2e-requestor")
}

fn leasequery(xid: u32, query_type: u8, link: &str, options: Vec<DhcpOption>) -> Message {
    Message::Client(ClientMessage {
        msg_type: MessageType::LeaseQuery,
        transaction_id: xid,
        options: vec![
            DhcpOption::ClientId(requestor_duid()),
            DhcpOption::LqQuery(LqQuery { query_type, link_address: ip(link), options: options.into() }),
        ]
        .into(),
    })
}

fn by_address(xid: u32, a: Ipv6Addr) -> Message {
    leasequery(xid, 1, "::", vec![DhcpOption::IaAddr(IaAddr { addr: a, preferred: 0, valid: 0, options: Options::new() })])
}

fn by_client(xid: u32, d: &Duid) -> Message {
    leasequery(xid, 2, "::", vec![DhcpOption::ClientId(d.clone())])
}

fn by_link(xid: u32, link: &str) -> Message {
    leasequery(xid, 4, link, vec![])
}

/// A LEASEQUERY over UDP from `source`: the first LEASEQUERY-REPLY to it
/// (sent up to 3 times, a second apart).
fn udp_query(lab: &Lab, source: &str, m: Message) -> Option<ClientMessage> {
    let src = ip(source);
    in_netns(&lab.cli, move || {
        let Message::Client(c) = &m else { unreachable!() };
        let xid = c.transaction_id;
        let sock = UdpSocket::bind(SocketAddrV6::new(src, 0, 0, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let bytes = m.encode().unwrap();
        let mut buf = vec![0u8; 65536];
        for _ in 0..3 {
            sock.send_to(&bytes, server547()).unwrap();
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until {
                let Ok((n, _)) = sock.recv_from(&mut buf) else { continue };
                if let Ok(Message::Client(r)) = Message::decode(&buf[..n])
                    && r.transaction_id == xid
                {
                    return Some(r);
                }
            }
        }
        None
    })
}

/// The OPTION_CLIENT_DATAs of a reply.
fn client_datas(c: &ClientMessage) -> Vec<&Options> {
    c.options
        .iter()
        .filter_map(|o| match o {
            DhcpOption::ClientData(d) => Some(d),
            _ => None,
        })
        .collect()
}

fn status_of(o: &Options) -> StatusCode {
    o.status().map(|s| s.code).unwrap_or(StatusCode::SUCCESS)
}

// ---------------------------------------------------------- TCP (RFC 5460)

/// A Bulk Leasequery connection from the client namespace.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

/// What the next read of a connection gave.
#[derive(Debug)]
enum Got {
    Msg(ClientMessage),
    /// EOF or reset: the server closed the connection.
    Closed,
    /// Nothing within the wait.
    Silent,
}

fn connect(lab: &Lab, source: &str) -> std::io::Result<Conn> {
    connect_with(lab, source, None)
}

/// `connect`, with a receive buffer of `rcvbuf` octets when given (a
/// requestor that takes its time).
fn connect_with(lab: &Lab, source: &str, rcvbuf: Option<usize>) -> std::io::Result<Conn> {
    let src = ip(source);
    let stream: TcpStream = in_netns(&lab.cli, move || -> std::io::Result<TcpStream> {
        let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        if let Some(n) = rcvbuf {
            s.set_recv_buffer_size(n)?;
        }
        s.bind(&SocketAddr::V6(SocketAddrV6::new(src, 0, 0, 0)).into())?;
        s.connect_timeout(&SocketAddr::V6(server547()).into(), Duration::from_secs(5))?;
        Ok(s.into())
    })?;
    stream.set_nodelay(true)?;
    Ok(Conn { w: stream.try_clone()?, r: BufReader::new(stream) })
}

#[track_caller]
fn conn(lab: &Lab) -> Conn {
    connect(lab, REQUESTOR).unwrap_or_else(|e| panic!("connect to [{SERVER}]:547: {e}\n{}", lab.server_log()))
}

fn frame(m: &Message) -> Vec<u8> {
    let body = m.encode().unwrap();
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe)
}

impl Conn {
    fn send(&mut self, m: &Message) {
        self.send_raw(&frame(m));
    }

    /// Octets as they are; a connection the server already closed may
    /// refuse them (the read that follows tells).
    fn send_raw(&mut self, b: &[u8]) {
        if let Err(e) = self.w.write_all(b) {
            assert!(is_closed(&e), "write: {e}");
        }
    }

    /// The next framed message, waiting up to `wait` for its first octet.
    fn next(&mut self, wait: Duration) -> Got {
        self.r.get_ref().set_read_timeout(Some(wait)).unwrap();
        let mut head = [0u8; 2];
        match self.r.read(&mut head[..1]) {
            Ok(0) => return Got::Closed,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return Got::Silent,
            Err(e) if is_closed(&e) => return Got::Closed,
            Err(e) => panic!("read: {e}"),
        }
        // The rest of a frame the server started comes at once.
        self.r.get_ref().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        self.r.read_exact(&mut head[1..]).expect("a frame's second length octet");
        let mut body = vec![0u8; u16::from_be_bytes(head) as usize];
        self.r.read_exact(&mut body).expect("a whole frame");
        match Message::decode(&body) {
            Ok(Message::Client(c)) => Got::Msg(c),
            other => panic!("not a client-format message from the server: {other:?}"),
        }
    }

    #[track_caller]
    fn msg(&mut self) -> ClientMessage {
        match self.next(Duration::from_secs(20)) {
            Got::Msg(c) => c,
            g => panic!("expected a message, got {g:?}"),
        }
    }

    /// How long until the server closes the connection (None: not within `wait`).
    fn closed_within(&mut self, wait: Duration) -> Option<Duration> {
        let t = Instant::now();
        self.r.get_ref().set_read_timeout(Some(wait)).unwrap();
        let mut b = [0u8; 64];
        match self.r.read(&mut b) {
            Ok(0) => Some(t.elapsed()),
            Ok(n) => panic!("unexpected {n} octets from the server: {:02x?}", &b[..n]),
            Err(e) if is_closed(&e) => Some(t.elapsed()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => None,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// One bulk answer: the REPLY, then DATA frames until DONE. Checks the
/// framing (REPLY first with CLIENT_DATA, DATA only between, exactly one
/// DONE at the end, the query's xid throughout) and returns the
/// OPTION_CLIENT_DATAs in order.
#[track_caller]
fn bulk_answer(c: &mut Conn, xid: u32) -> Vec<Options> {
    let first = c.msg();
    assert_eq!(first.msg_type, MessageType::LeaseQueryReply, "{first:?}");
    assert_eq!(first.transaction_id, xid);
    assert_eq!(status_of(&first.options), StatusCode::SUCCESS, "{first:?}");
    assert_eq!(first.options.client_id(), Some(&requestor_duid()));
    assert!(first.options.server_id().is_some());
    let mut out: Vec<Options> = client_datas(&first).into_iter().cloned().collect();
    assert_eq!(out.len(), 1, "the REPLY carries the first binding: {first:?}");
    loop {
        let m = c.msg();
        assert_eq!(m.transaction_id, xid, "{m:?}");
        match m.msg_type {
            MessageType::LeaseQueryData => {
                let cd = client_datas(&m);
                assert_eq!(cd.len(), 1, "{m:?}");
                out.push(cd[0].clone());
            }
            MessageType::LeaseQueryDone => {
                assert_eq!(status_of(&m.options), StatusCode::SUCCESS, "{m:?}");
                break;
            }
            t => panic!("unexpected {t:?} inside a bulk answer"),
        }
    }
    // Exactly one DONE: nothing follows it.
    assert!(matches!(c.next(Duration::from_millis(300)), Got::Silent), "a frame after LEASEQUERY-DONE");
    out
}

/// A bulk query that finds nothing: one REPLY without CLIENT_DATA, no DONE.
#[track_caller]
fn empty_answer(c: &mut Conn, xid: u32) {
    let m = c.msg();
    assert_eq!((m.msg_type, m.transaction_id), (MessageType::LeaseQueryReply, xid), "{m:?}");
    assert_eq!(status_of(&m.options), StatusCode::SUCCESS, "{m:?}");
    assert!(client_datas(&m).is_empty(), "{m:?}");
    assert!(matches!(c.next(Duration::from_millis(300)), Got::Silent), "a frame after an empty REPLY (no DONE expected)");
}

/// The (client-id, type, lease) of the addresses and prefixes in client data.
fn cd_triples(cds: &[Options]) -> BTreeSet<(String, String, String)> {
    let mut set = BTreeSet::new();
    for cd in cds {
        let d = cd.client_id().expect("CLIENT_DATA has the CLIENTID").clone();
        assert!(cd.u32_of(opt::CLT_TIME).is_some(), "CLIENT_DATA without CLT_TIME: {cd:?}");
        for a in cd.ia_addrs() {
            assert!(a.valid > 0 && a.valid <= 4000 && a.preferred <= a.valid, "{a:?}");
            set.insert(t(&d, "na", a.addr));
        }
        for p in cd.ia_prefixes() {
            set.insert(t(&d, "pd", format!("{}/{}", p.prefix, p.prefix_len)));
        }
    }
    set
}

// ------------------------------------------------------------ the relay

/// One relay level: its link-address, the peer it heard from, its options
/// (OPTION_RELAY_MSG added when sent).
#[derive(Clone)]
struct Level {
    link: Ipv6Addr,
    peer: Ipv6Addr,
    options: Vec<DhcpOption>,
}

fn remote_id(enterprise: u32, id: &str) -> Vec<u8> {
    let mut v = enterprise.to_be_bytes().to_vec();
    v.extend_from_slice(id.as_bytes());
    v
}

/// A relay agent on `link` with OPTION_RELAY_ID `relay_id` and, for this
/// client, OPTION_REMOTE_ID `remote` (enterprise number first).
fn level(link: &str, relay_id: &Duid, remote: &[u8]) -> Level {
    Level {
        link: ip(link),
        peer: ip("fe80::7"),
        options: vec![
            DhcpOption::InterfaceId(b"ge-0/0/1".to_vec()),
            DhcpOption::Unknown { code: 53, data: relay_id.as_bytes().to_vec() },
            DhcpOption::Unknown { code: 37, data: remote.to_vec() },
        ],
    }
}

/// Relay `inner` through `levels` (innermost first), sent from
/// [2001:db8:1::99]:547 to the server; the client message of the answer.
fn relay(lab: &Lab, levels: &[Level], inner: Message) -> Option<ClientMessage> {
    let mut m = inner;
    for (hop, l) in levels.iter().enumerate() {
        let mut options = l.options.clone();
        options.push(DhcpOption::RelayMsg(Box::new(m)));
        m = Message::Relay(RelayMessage {
            msg_type: MessageType::RelayForw,
            hop_count: hop as u8,
            link_address: l.link,
            peer_address: l.peer,
            options: options.into(),
        });
    }
    let bytes = m.encode().unwrap();
    in_netns(&lab.cli, move || {
        let s = UdpSocket::bind(SocketAddrV6::new(ip(REQUESTOR), 547, 0, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0u8; 4096];
        for _ in 0..10 {
            s.send_to(&bytes, server547()).unwrap();
            let Ok((n, _)) = s.recv_from(&mut buf) else { continue };
            let Ok(mut m) = Message::decode(&buf[..n]) else { continue };
            while let Message::Relay(r) = m {
                m = r.options.relay_msg()?.clone();
            }
            if let Message::Client(c) = m {
                return Some(c);
            }
        }
        None
    })
}

/// Client `n` (DUID-EN 32473, IAID 1) gets an address through `levels`:
/// Solicit, then Request for the advertised address. The address.
#[track_caller]
fn relayed_client(lab: &Lab, n: u64, levels: &[Level]) -> Ipv6Addr {
    let xid = (n as u32) << 4;
    let sol = Message::Client(ClientMessage {
        msg_type: MessageType::Solicit,
        transaction_id: xid,
        options: vec![
            DhcpOption::ClientId(duid(n)),
            DhcpOption::ElapsedTime(0),
            DhcpOption::IaNa(IaNa { iaid: 1, t1: 0, t2: 0, options: Options::new() }),
        ]
        .into(),
    });
    let adv = relay(lab, levels, sol).unwrap_or_else(|| panic!("no Advertise for client {n}\n{}", lab.server_log()));
    assert_eq!(adv.msg_type, MessageType::Advertise, "{adv:?}");
    let sid = adv.options.server_id().expect("server id").clone();
    let offered = adv.options.ia_nas().flat_map(|ia| ia.options.ia_addrs().map(|a| a.addr).collect::<Vec<_>>()).next().expect("an address offered");
    let req = Message::Client(ClientMessage {
        msg_type: MessageType::Request,
        transaction_id: xid + 1,
        options: vec![
            DhcpOption::ClientId(duid(n)),
            DhcpOption::ServerId(sid),
            DhcpOption::ElapsedTime(0),
            DhcpOption::IaNa(IaNa {
                iaid: 1,
                t1: 0,
                t2: 0,
                options: vec![DhcpOption::IaAddr(IaAddr { addr: offered, preferred: 0, valid: 0, options: Options::new() })].into(),
            }),
        ]
        .into(),
    });
    let rep = relay(lab, levels, req).unwrap_or_else(|| panic!("no Reply for client {n}"));
    assert_eq!(rep.msg_type, MessageType::Reply, "{rep:?}");
    let got: Vec<Ipv6Addr> = rep.options.ia_nas().flat_map(|ia| ia.options.ia_addrs().filter(|a| a.valid > 0).map(|a| a.addr).collect::<Vec<_>>()).collect();
    assert_eq!(got, vec![offered], "client {n}: {rep:?}");
    offered
}

/// Direct rapid-commit clients `first..first+count` on the lab link: client
/// number → address.
fn direct_clients(lab: &Lab, first: u64, count: u64, pd: bool) -> BTreeMap<u64, Ipv6Addr> {
    let ifindex = lab.cli_ifindex();
    let (granted, dups) = in_netns(&lab.cli, move || {
        let s = client_socket(546);
        rapid_commit_load_with(&s, all_servers(ifindex), first, count, 64, Instant::now() + Duration::from_secs(60), pd)
    });
    assert_eq!(dups, 0);
    let m: BTreeMap<u64, Ipv6Addr> = granted.into_iter().map(|g| (g.client, g.addr)).collect();
    assert_eq!(m.len() as u64, count, "not every load client got an address\n{}", lab.server_log());
    m
}

/// Send `m` from port 546 to ff02::1:2 on the lab link: the answer to its
/// transaction.
fn direct(lab: &Lab, m: Message) -> Option<ClientMessage> {
    let ifindex = lab.cli_ifindex();
    in_netns(&lab.cli, move || {
        let Message::Client(c) = &m else { unreachable!() };
        let xid = c.transaction_id;
        let s = client_socket(546);
        let mut buf = [0u8; 2048];
        for _ in 0..10 {
            s.send_to(&m.encode().unwrap(), all_servers(ifindex)).unwrap();
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                let Ok((n, _)) = s.recv_from(&mut buf) else { continue };
                if let Ok(Message::Client(r)) = Message::decode(&buf[..n])
                    && r.transaction_id == xid
                {
                    return Some(r);
                }
            }
        }
        None
    })
}

/// Client `n` releases `addr` (its IA_NA 1).
fn release(n: u64, server: &Duid, addr: Ipv6Addr) -> Message {
    Message::Client(ClientMessage {
        msg_type: MessageType::Release,
        transaction_id: 0x5e1e00 + n as u32,
        options: vec![
            DhcpOption::ClientId(duid(n)),
            DhcpOption::ServerId(server.clone()),
            DhcpOption::ElapsedTime(0),
            DhcpOption::IaNa(IaNa {
                iaid: 1,
                t1: 0,
                t2: 0,
                options: vec![DhcpOption::IaAddr(IaAddr { addr, preferred: 0, valid: 0, options: Options::new() })].into(),
            }),
        ]
        .into(),
    })
}

// ------------------------------------------------------------ dhclient

/// Run dhclient -6 with `flags` until bound, then stop it (-x, no Release):
/// the addresses and prefixes in its lease file.
fn dhclient(lab: &Lab, name: &str, flags: &str) -> (Vec<Ipv6Addr>, Vec<String>) {
    let hook = lab.path("hook.sh");
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
    must(&format!("chmod +x {}", hook.display()));
    let (lf, pf) = (lab.path(&format!("{name}.leases")), lab.path(&format!("{name}.pid")));
    let o = lab.exec(&lab.cli, &format!("timeout 30 dhclient -6 {flags} -1 -v -sf {} -lf {} -pf {} {}", hook.display(), lf.display(), pf.display(), lab.cli_if));
    let _ = lab.exec(&lab.cli, &format!("dhclient -6 -x -pf {}", pf.display()));
    // Gone before the next client binds port 546.
    assert!(eventually(10, || must(&format!("ip netns pids {}", lab.cli)).trim().is_empty()), "dhclient still running");
    assert!(o.status.success(), "dhclient {flags}: {}\nserver: {}", String::from_utf8_lossy(&o.stderr), lab.server_log());
    let text = std::fs::read_to_string(&lf).unwrap();
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |kw: &str| -> Vec<String> { words.windows(2).filter(|w| w[0] == kw).map(|w| w[1].to_string()).collect::<BTreeSet<_>>().into_iter().collect() };
    let addrs = after("iaaddr").iter().map(|a| a.parse().unwrap()).collect();
    (addrs, after("iaprefix"))
}

// ================================================================ tests

/// RFC 5007 over UDP: real dhclient clients (one with an address and a
/// prefix, one with a prefix only) and rapid-commit clients; by address,
/// by an address inside a delegated prefix, by client-id; nothing found,
/// not on any link, requestor not allowed.
#[test]
fn udp_queries_answer_for_real_clients() {
    require_root!();
    assert!(tool("dhclient"), "dhclient missing: tests/run.sh installs isc-dhcp-client");
    let lab = lab_with("lq-udp", |lab| format!("{}{}", lab.config(""), lq_section("")));

    // dhclient -N -P: an address and a prefix for one DUID (DUID-LL); then
    // dhclient -P alone (DUID-LLT, another client): a prefix.
    let (na_addrs, na_prefixes) = dhclient(&lab, "napd", "-N -P -D LL");
    assert_eq!((na_addrs.len(), na_prefixes.len()), (1, 1), "dhclient -N -P: {na_addrs:?} {na_prefixes:?}");
    let (pd_addrs, pd_prefixes) = dhclient(&lab, "pd", "-P -D LLT");
    assert_eq!((pd_addrs.len(), pd_prefixes.len()), (0, 1), "dhclient -P: {pd_addrs:?} {pd_prefixes:?}");
    let load = direct_clients(&lab, 1, 20, true);
    let d = dump(&lab);
    let owner = |ty: &str, lease: &str| -> String {
        let k: Vec<_> = d.keys().filter(|(_, t, l)| t == ty && l == lease).collect();
        assert_eq!(k.len(), 1, "{ty} {lease} in the dump: {d:#?}");
        k[0].0.clone()
    };
    let na_client = owner("na", &na_addrs[0].to_string());
    assert_eq!(owner("pd", &na_prefixes[0]), na_client, "dhclient -N -P: one client");
    let pd_client = owner("pd", &pd_prefixes[0]);
    assert_ne!(pd_client, na_client);

    // By the dhclient's address: its address AND its prefix.
    let v = query_ok(&lab, &format!("--address {}", na_addrs[0]));
    let want: BTreeSet<_> = [(na_client.clone(), "na".into(), na_addrs[0].to_string()), (na_client.clone(), "pd".into(), na_prefixes[0].clone())].into();
    assert_eq!(triples(&v), want, "{v:#?}");
    for o in &v {
        check_times(o, &d);
        assert!(o.get("relay").is_none(), "a direct client has no relay data: {o}");
    }

    // By an address inside the other dhclient's delegated prefix.
    let (p, len) = pd_prefixes[0].split_once('/').unwrap();
    assert_eq!(len, "56");
    let inside = Ipv6Addr::from(u128::from(ip(p)) | 0x00ab_0000_0000_0000_1234);
    let v = query_ok(&lab, &format!("--address {inside}"));
    assert_eq!(triples(&v), [(pd_client.clone(), "pd".into(), pd_prefixes[0].clone())].into(), "{inside}: {v:#?}");
    check_times(&v[0], &d);
    // Over TCP, the same.
    let v = query_ok(&lab, &format!("--bulk --address {inside}"));
    assert_eq!(triples(&v), [(pd_client.clone(), "pd".into(), pd_prefixes[0].clone())].into(), "{v:#?}");

    // By client-id: a load client's address and prefix.
    let c3 = duid(3);
    let pd3: Vec<_> = d.keys().filter(|(c, ty, _)| *c == c3.to_hex() && ty == "pd").map(|k| k.2.clone()).collect();
    assert_eq!(pd3.len(), 1);
    let v = query_ok(&lab, &format!("--client-id {}", c3.to_hex()));
    assert_eq!(triples(&v), [t(&c3, "na", load[&3]), t(&c3, "pd", &pd3[0])].into(), "{v:#?}");
    v.iter().for_each(|o| check_times(o, &d));
    // And the raw reply: one CLIENT_DATA with the client's id, both leases, CLT_TIME.
    let r = udp_query(&lab, REQUESTOR, by_client(0x3003, &c3)).expect("no LEASEQUERY-REPLY");
    assert_eq!(r.msg_type, MessageType::LeaseQueryReply);
    assert_eq!(r.options.client_id(), Some(&requestor_duid()));
    let cds = client_datas(&r);
    assert_eq!(cds.len(), 1, "{r:?}");
    assert_eq!(cds[0].client_id(), Some(&c3));
    assert!(cds[0].u32_of(opt::CLT_TIME).is_some_and(|x| x < 60), "{r:?}");
    assert_eq!(cd_triples(&[cds[0].clone()]), [t(&c3, "na", load[&3]), t(&c3, "pd", &pd3[0])].into());

    // The whole link over TCP: every ACTIVE address and prefix of the dump.
    let v = query_ok(&lab, "--bulk --link-address 2001:db8:1::1");
    assert_eq!(triples(&v), d.keys().cloned().collect(), "bulk by link vs the lease dump");
    assert_eq!(v.len(), 2 + 1 + 2 * 20);

    // A released address is no longer reported; the client's prefix still is.
    let sid = r.options.server_id().expect("the reply names the server").clone();
    let released = direct(&lab, release(5, &sid, load[&5])).expect("no Reply to the Release");
    assert_eq!((released.msg_type, status_of(&released.options)), (MessageType::Reply, StatusCode::SUCCESS), "{released:?}");
    assert!(query_ok(&lab, &format!("--address {}", load[&5])).is_empty(), "a released address is reported");
    let v = query_ok(&lab, &format!("--client-id {}", duid(5).to_hex()));
    assert_eq!(v.len(), 1, "{v:#?}");
    assert_eq!((s(&v[0]["client-id"]), s(&v[0]["type"])), (duid(5).to_hex(), "pd".into()));

    // Malformed queries and unknown query types get their status codes.
    for (what, m, code) in [
        ("type 99", leasequery(0x3101, 99, "::", vec![]), StatusCode::UNKNOWN_QUERY_TYPE),
        ("by address without IAADDR", leasequery(0x3102, 1, "::", vec![]), StatusCode::MALFORMED_QUERY),
        ("by client-id without CLIENTID", leasequery(0x3103, 2, "::", vec![]), StatusCode::MALFORMED_QUERY),
        ("by address, link on no link", leasequery(0x3104, 1, "2001:db8:77::1", vec![DhcpOption::IaAddr(IaAddr { addr: load[&1], preferred: 0, valid: 0, options: Options::new() })]), StatusCode::NOT_CONFIGURED),
    ] {
        let r = udp_query(&lab, REQUESTOR, m).unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!((r.msg_type, status_of(&r.options)), (MessageType::LeaseQueryReply, code), "{what}: {r:?}");
        assert!(client_datas(&r).is_empty(), "{what}: {r:?}");
    }

    // A link-address names the client's link (RFC 5007 §4.4.1): the address's
    // holder on its own link is found, on the other configured link it is not.
    let on = |xid, link| {
        let m = leasequery(xid, 1, link, vec![DhcpOption::IaAddr(IaAddr { addr: load[&1], preferred: 0, valid: 0, options: Options::new() })]);
        let r = udp_query(&lab, REQUESTOR, m).expect("an answer");
        assert_eq!(status_of(&r.options), StatusCode::SUCCESS, "{r:?}");
        client_datas(&r).len()
    };
    assert_eq!(on(0x3105, "2001:db8:1::1"), 1);
    assert_eq!(on(0x3106, "2001:db8:2::1"), 0);

    // An address on the link that nobody holds: [] and exit 0.
    assert!(query_ok(&lab, "--address 2001:db8:1::5").is_empty());
    assert!(query_ok(&lab, &format!("--client-id {}", duid(65535).to_hex())).is_empty());
    // On no link of the server: NotConfigured.
    let (rc, out, err, _) = query_from(&lab, REQUESTOR, "--address 2001:db8:77::1");
    assert_eq!(rc, 3, "{out}{err}");
    assert!(err.starts_with("NotConfigured"), "{err}");
    assert!(out.is_empty(), "{out}");
    // A requestor not in leasequery.allowed: NotAllowed, nothing disclosed.
    let (rc, out, err, _) = query_from(&lab, STRANGER, &format!("--address {}", na_addrs[0]));
    assert_eq!(rc, 3, "{out}{err}");
    assert!(err.starts_with("NotAllowed"), "{err}");
    assert!(!out.contains(&na_addrs[0].to_string()), "{out}");
    let r = udp_query(&lab, STRANGER, by_address(0x3004, na_addrs[0])).expect("a refusal");
    assert_eq!(status_of(&r.options), StatusCode::NOT_ALLOWED);
    assert!(client_datas(&r).is_empty());
}

/// Relayed clients: LQ_RELAY_DATA when asked for, relay-id / remote-id
/// queries, a nested relay (innermost wins), and one DUID on two links.
#[test]
fn relayed_clients_relay_data_and_client_links() {
    require_root!();
    let lab = lab_with("lq-relay", |lab| format!("{}{}", lab.config(""), lq_section("")));
    let ra = Duid::en(9, b"relay-A");
    let rb = Duid::en(9, b"relay-B");
    let rc = Duid::en(9, b"relay-C");
    let ro = Duid::en(9, b"relay-outer");
    let (c1, c2, c3) = (remote_id(4491, "circuit-1"), remote_id(4491, "circuit-2"), remote_id(4491, "circuit-3"));
    // Relay A on link 2 (2001:db8:2::1): clients 101, 102 (circuit-1), 103 (circuit-2).
    let a101 = relayed_client(&lab, 101, &[level("2001:db8:2::1", &ra, &c1)]);
    let a102 = relayed_client(&lab, 102, &[level("2001:db8:2::1", &ra, &c1)]);
    let a103 = relayed_client(&lab, 103, &[level("2001:db8:2::1", &ra, &c2)]);
    // Relay B on link 1 (its relay-link 2001:db8:9::1): client 104 (circuit-2).
    let a104 = relayed_client(&lab, 104, &[level("2001:db8:9::1", &rb, &c2)]);
    // Client 106 behind two relays: relay C on link 2 (nearest the client)
    // and an outer relay with its own relay-id and remote-id.
    let nested = [level("2001:db8:2::1", &rc, &c3), Level { link: Ipv6Addr::UNSPECIFIED, peer: ip("2001:db8:2::1"), ..level("::", &ro, &remote_id(4491, "outer")) }];
    let a106 = relayed_client(&lab, 106, &nested);
    // Client 105: direct on link 1, and relayed by relay A on link 2 (circuit-3).
    let a105d = direct_clients(&lab, 105, 1, false)[&105];
    let a105r = relayed_client(&lab, 105, &[level("2001:db8:2::1", &ra, &c3)]);
    for a in [a101, a102, a103, a105r, a106] {
        assert!(a >= ip("2001:db8:2::1000") && a <= ip("2001:db8:2::1fff"), "{a} is not from link 2's pool");
    }
    for a in [a104, a105d] {
        assert!(a >= ip("2001:db8:1::1000") && a <= ip("2001:db8:1::ffff"), "{a} is not from link 1's pool");
    }
    let d = dump(&lab);
    assert!(d.contains_key(&t(&duid(105), "na", a105d)), "the direct lease of 105 is still active: {d:#?}");
    assert!(d.contains_key(&t(&duid(105), "na", a105r)));
    let hex = tandem::wire::hex::encode;

    // --relay-data: the relay chain of the client's last relayed message.
    let v = query_ok(&lab, &format!("--address {a101} --relay-data"));
    assert_eq!(triples(&v), [t(&duid(101), "na", a101)].into());
    check_times(&v[0], &d);
    let r = &v[0]["relay"];
    assert_eq!(r["peer-address"], REQUESTOR, "{r}");
    assert_eq!(r["link-address"], "2001:db8:2::1", "{r}");
    assert_eq!(r["relay-id"], hex(ra.as_bytes()), "{r}");
    assert_eq!(r["remote-id"], hex(&c1), "{r}");
    let msg = tandem::wire::hex::decode(&s(&r["message"])).unwrap();
    match Message::decode(&msg) {
        Ok(Message::Relay(m)) => {
            assert_eq!((m.msg_type, m.hop_count, m.link_address, m.peer_address), (MessageType::RelayForw, 0, ip("2001:db8:2::1"), ip("fe80::7")));
            assert_eq!(m.options.interface_id(), Some(&b"ge-0/0/1"[..]));
            assert!(m.options.has(53) && m.options.has(37), "{m:?}");
            assert!(m.options.relay_msg().is_none(), "the client's message is not kept: {m:?}");
        }
        other => panic!("relay message {}: {other:?}", s(&r["message"])),
    }
    // Without --relay-data: no "relay" key.
    let v = query_ok(&lab, &format!("--address {a101}"));
    assert_eq!(triples(&v), [t(&duid(101), "na", a101)].into());
    assert!(v[0].get("relay").is_none(), "{v:#?}");
    // Relay B's client on link 1.
    let v = query_ok(&lab, &format!("--address {a104} --relay-data"));
    assert_eq!(triples(&v), [t(&duid(104), "na", a104)].into());
    let r = &v[0]["relay"];
    assert_eq!((s(&r["link-address"]), s(&r["relay-id"]), s(&r["remote-id"])), ("2001:db8:9::1".into(), hex(rb.as_bytes()), hex(&c2)));
    // The nested relay: the level nearest the client gives relay-id, remote-id and link.
    let v = query_ok(&lab, &format!("--bulk --address {a106} --relay-data"));
    assert_eq!(triples(&v), [t(&duid(106), "na", a106)].into());
    let r = &v[0]["relay"];
    assert_eq!((s(&r["link-address"]), s(&r["relay-id"]), s(&r["remote-id"]), s(&r["peer-address"])), ("2001:db8:2::1".into(), hex(rc.as_bytes()), hex(&c3), REQUESTOR.into()), "{r}");
    // The lease dump agrees.
    let l = &d[&t(&duid(106), "na", a106)];
    assert_eq!((s(&l["relay-id"]), s(&l["remote-id"]), s(&l["relay-link-address"]), s(&l["relay-peer"])), (hex(rc.as_bytes()), hex(&c3), "2001:db8:2::1".into(), REQUESTOR.into()));

    // One DUID on two links: over UDP by client-id, OPTION_LQ_CLIENT_LINK
    // with both links and no client data.
    let r = udp_query(&lab, REQUESTOR, by_client(0x105, &duid(105))).expect("no LEASEQUERY-REPLY");
    assert_eq!((r.msg_type, status_of(&r.options)), (MessageType::LeaseQueryReply, StatusCode::SUCCESS), "{r:?}");
    assert!(client_datas(&r).is_empty(), "{r:?}");
    let links: BTreeSet<Ipv6Addr> = r
        .options
        .iter()
        .filter_map(|o| match o {
            DhcpOption::LqClientLink(l) => Some(l.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(links, [ip("2001:db8:1::"), ip("2001:db8:2::")].into(), "{r:?}");
    // The CLI asks again per link and merges: the bindings of both links.
    let v = query_ok(&lab, &format!("--client-id {} --relay-data", duid(105).to_hex()));
    assert_eq!(triples(&v), [t(&duid(105), "na", a105d), t(&duid(105), "na", a105r)].into(), "{v:#?}");
    for o in &v {
        let relayed = o["lease"] == a105r.to_string();
        assert_eq!(o.get("relay").is_some(), relayed, "relay data only for the relayed binding: {o}");
    }
    // Over TCP the same query answers both bindings (one CLIENT_DATA per link).
    let v = query_ok(&lab, &format!("--bulk --client-id {}", duid(105).to_hex()));
    assert_eq!(triples(&v), [t(&duid(105), "na", a105d), t(&duid(105), "na", a105r)].into(), "{v:#?}");

    // Bulk by relay-id and remote-id: exactly the clients behind them.
    let bulk = |args: &str| triples(&query_ok(&lab, &format!("--bulk {args}")));
    assert_eq!(
        bulk(&format!("--relay-id {}", hex(ra.as_bytes()))),
        [t(&duid(101), "na", a101), t(&duid(102), "na", a102), t(&duid(103), "na", a103), t(&duid(105), "na", a105r)].into()
    );
    assert_eq!(bulk(&format!("--relay-id {}", hex(rb.as_bytes()))), [t(&duid(104), "na", a104)].into());
    assert_eq!(bulk(&format!("--relay-id {}", hex(rc.as_bytes()))), [t(&duid(106), "na", a106)].into());
    assert_eq!(bulk(&format!("--relay-id {}", hex(ro.as_bytes()))), BTreeSet::new(), "the innermost relay-id wins");
    assert_eq!(bulk(&format!("--relay-id {}", hex(Duid::en(9, b"nobody").as_bytes()))), BTreeSet::new());
    assert_eq!(bulk(&format!("--remote-id {}", hex(&c1))), [t(&duid(101), "na", a101), t(&duid(102), "na", a102)].into());
    assert_eq!(bulk(&format!("--remote-id {}", hex(&c2))), [t(&duid(103), "na", a103), t(&duid(104), "na", a104)].into());
    assert_eq!(bulk(&format!("--remote-id {}", hex(&c3))), [t(&duid(105), "na", a105r), t(&duid(106), "na", a106)].into());
    // By link: relay-link 2001:db8:2::1 is link 2; 2001:db8:9::1 is link 1.
    assert_eq!(
        bulk("--link-address 2001:db8:2::1"),
        [t(&duid(101), "na", a101), t(&duid(102), "na", a102), t(&duid(103), "na", a103), t(&duid(105), "na", a105r), t(&duid(106), "na", a106)].into()
    );
    assert_eq!(bulk("--link-address 2001:db8:9::1"), [t(&duid(104), "na", a104), t(&duid(105), "na", a105d)].into());
    // And relay data in bulk answers, when asked.
    let v = query_ok(&lab, &format!("--bulk --remote-id {} --relay-data", hex(&c1)));
    assert_eq!(v.len(), 2);
    for o in &v {
        assert_eq!((s(&o["relay"]["relay-id"]), s(&o["relay"]["remote-id"])), (hex(ra.as_bytes()), hex(&c1)), "{o}");
    }

    // sensitive-options = [47], reloaded: relay data is never returned, the
    // bindings still are.
    std::fs::write(lab.path("tandem.toml"), format!("{}{}", lab.config(""), lq_section("sensitive-options = [47]"))).unwrap();
    let sock = lab.path("data").join("control.sock");
    let o = lab.exec(&lab.srv, &format!("{BIN} ctl --socket {} reload", sock.display()));
    assert!(o.status.success(), "reload: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    for args in [format!("--address {a101} --relay-data"), format!("--bulk --remote-id {} --relay-data", hex(&c1))] {
        let v = query_ok(&lab, &args);
        assert!(!v.is_empty() && v.iter().all(|o| o.get("relay").is_none()), "{args}: {v:#?}");
    }
}

/// RFC 5460 over TCP with 10,000 bindings: the CLI and a raw reader get
/// them all (REPLY, DATA…, one DONE); two queries on one connection; an
/// empty answer; bulk query types refused over UDP; SIGTERM while an
/// answer is in flight.
#[test]
fn bulk_leasequery_streams_ten_thousand_bindings() {
    require_root!();
    let (mut lab, pid) = lab_and_pid("lq-bulk", |lab| format!("{}{}", lab.config(""), lq_section("")));
    const N: u64 = 10_000;
    let t0 = Instant::now();
    let load = direct_clients(&lab, 1, N, false);
    eprintln!("{N} clients in {:?}", t0.elapsed());
    let want: BTreeSet<_> = load.iter().map(|(n, a)| t(&duid(*n), "na", a)).collect();
    assert_eq!(want.len() as u64, N);

    // The CLI.
    let t0 = Instant::now();
    let v = query_ok(&lab, "--bulk --link-address 2001:db8:1::1");
    eprintln!("CLI bulk query: {} bindings in {:?}", v.len(), t0.elapsed());
    assert_eq!(v.len() as u64, N);
    assert_eq!(triples(&v), want);

    // A raw reader: REPLY with CLIENT_DATA, DATA frames, exactly one DONE.
    let mut c = conn(&lab);
    c.send(&by_link(0x10001, "2001:db8:1::1"));
    let cds = bulk_answer(&mut c, 0x10001);
    assert_eq!(cds.len() as u64, N, "one CLIENT_DATA per client");
    let clients: BTreeSet<_> = cds.iter().map(|cd| cd.client_id().unwrap().clone()).collect();
    assert_eq!(clients.len() as u64, N);
    assert_eq!(cd_triples(&cds), want);
    // A second query on the same connection: by client-id.
    c.send(&by_client(0x10002, &duid(77)));
    let cds = bulk_answer(&mut c, 0x10002);
    assert_eq!(cd_triples(&cds), [t(&duid(77), "na", load[&77])].into());
    // A third, by address.
    c.send(&by_address(0x10003, load[&4242]));
    let cds = bulk_answer(&mut c, 0x10003);
    assert_eq!(cd_triples(&cds), [t(&duid(4242), "na", load[&4242])].into());
    // Finding nothing: one REPLY without CLIENT_DATA, no DONE.
    c.send(&by_address(0x10004, ip("2001:db8:1::5")));
    empty_answer(&mut c, 0x10004);
    c.send(&by_link(0x10005, "2001:db8:2::1"));
    empty_answer(&mut c, 0x10005);
    // A refusal on the connection: a status in the REPLY, the connection stays.
    c.send(&by_link(0x10006, "2001:db8:77::1"));
    let m = c.msg();
    assert_eq!((m.msg_type, m.transaction_id, status_of(&m.options)), (MessageType::LeaseQueryReply, 0x10006, StatusCode::NOT_CONFIGURED), "{m:?}");
    c.send(&by_client(0x10007, &duid(1)));
    assert_eq!(cd_triples(&bulk_answer(&mut c, 0x10007)), [t(&duid(1), "na", load[&1])].into());
    drop(c);

    // The bulk query types over UDP: NotAllowed.
    let ra = Duid::en(9, b"relay-A");
    for (xid, m) in [
        (0x20003, leasequery(0x20003, 3, "::", vec![DhcpOption::Unknown { code: 53, data: ra.as_bytes().to_vec() }])),
        (0x20004, by_link(0x20004, "2001:db8:1::1")),
        (0x20005, leasequery(0x20005, 5, "::", vec![DhcpOption::Unknown { code: 37, data: remote_id(4491, "circuit-1") }])),
    ] {
        let r = udp_query(&lab, REQUESTOR, m).unwrap_or_else(|| panic!("no answer to {xid:x}"));
        assert_eq!((r.msg_type, r.transaction_id, status_of(&r.options)), (MessageType::LeaseQueryReply, xid, StatusCode::NOT_ALLOWED), "{r:?}");
        assert!(client_datas(&r).is_empty());
    }
    // And the CLI says so.
    let (rc, _, err, _) = query_from(&lab, REQUESTOR, "--link-address 2001:db8:1::1");
    assert_eq!(rc, 3);
    assert!(err.starts_with("NotAllowed"), "{err}");

    // SIGTERM while a bulk answer is in flight (the requestor reads
    // nothing for a while, the server waits on a full window): the answer
    // ends with LEASEQUERY-DONE and QueryTerminated, then the connection
    // closes and the server exits 0.
    let mut c = connect_with(&lab, REQUESTOR, Some(4096)).unwrap();
    c.send(&by_link(0x30001, "2001:db8:1::1"));
    let first = c.msg();
    assert_eq!((first.msg_type, client_datas(&first).len()), (MessageType::LeaseQueryReply, 1), "{first:?}");
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    // SAFETY: signalling the server this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    let mut n = 1u64;
    loop {
        match c.next(Duration::from_secs(5)) {
            Got::Msg(m) if m.msg_type == MessageType::LeaseQueryData => n += 1,
            Got::Msg(m) if m.msg_type == MessageType::LeaseQueryDone => {
                assert_eq!(status_of(&m.options), StatusCode::QUERY_TERMINATED, "after {n} of {N} bindings, at shutdown: {m:?}");
                break;
            }
            g => panic!("{g:?} after {n} of {N} bindings: expected LEASEQUERY-DONE with QueryTerminated"),
        }
    }
    assert!(n < N, "the whole answer came ({n}) although the server was stopping");
    assert!(c.closed_within(Duration::from_secs(3)).is_some(), "the connection stays open at shutdown");
    assert_eq!(lab.stop_server(false), Some(0), "SIGTERM exits 0\n{}", lab.server_log());
    assert!(t0.elapsed() < Duration::from_secs(6), "exit took {:?}", t0.elapsed());
    eprintln!("terminated after {n} of {N} bindings");
}

/// Hostile Bulk Leasequery connections: malformed frames, a stalled frame,
/// too many connections, a requestor not allowed.
#[test]
fn hostile_tcp_connections_are_closed() {
    require_root!();
    let lab = lab_with("lq-hostile", |lab| format!("{}{}", lab.config(""), lq_section("bulk-data-timeout = 2\nbulk-max-connections = 2")));
    let load = direct_clients(&lab, 1, 3, false);
    let all: BTreeSet<_> = load.iter().map(|(n, a)| t(&duid(*n), "na", a)).collect();
    let works = |why: &str| {
        let mut c = conn(&lab);
        c.send(&by_link(0x42, "2001:db8:1::1"));
        assert_eq!(cd_triples(&bulk_answer(&mut c, 0x42)), all, "after {why}");
    };
    works("start");

    // Malformed frames: the connection is closed; a new one is answered.
    let mut garbage = vec![0u8, 40];
    let mut x: u32 = 0x9e37_79b9;
    for _ in 0..40 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        garbage.push(x as u8);
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a 1-octet frame", vec![0, 1, 14]),
        ("a 0-octet frame", vec![0, 0]),
        ("random octets", garbage),
        ("a Solicit", frame(&solicit(9, 9, false, false))),
        ("a LEASEQUERY-REPLY", frame(&Message::Client(ClientMessage { msg_type: MessageType::LeaseQueryReply, transaction_id: 1, options: vec![DhcpOption::ClientId(requestor_duid())].into() }))),
        ("a LEASEQUERY without OPTION_LQ_QUERY", frame(&Message::Client(ClientMessage { msg_type: MessageType::LeaseQuery, transaction_id: 2, options: vec![DhcpOption::ClientId(requestor_duid())].into() }))),
    ];
    for (what, bytes) in cases {
        let mut c = conn(&lab);
        c.send_raw(&bytes);
        let closed = c.closed_within(Duration::from_secs(1));
        assert!(closed.is_some(), "{what}: the connection stays open");
        works(what);
    }
    // A query after a good one, then garbage: the good one is answered first.
    let mut c = conn(&lab);
    c.send(&by_client(0x43, &duid(2)));
    c.send_raw(&[0, 1, 0]);
    assert_eq!(cd_triples(&bulk_answer_until_close(&mut c, 0x43)), [t(&duid(2), "na", load[&2])].into());

    // Half a frame, then silence; and a connection that never sends: both
    // closed after bulk-data-timeout (2 s).
    std::thread::sleep(Duration::from_millis(300));
    let mut half = conn(&lab);
    let mut idle = conn(&lab);
    let q = frame(&by_link(0x44, "2001:db8:1::1"));
    half.send_raw(&q[..q.len() / 2]);
    let h = std::thread::spawn(move || half.closed_within(Duration::from_secs(10)));
    let i = idle.closed_within(Duration::from_secs(10));
    let h = h.join().unwrap();
    for (what, d) in [("half a frame", h), ("an idle connection", i)] {
        let d = d.unwrap_or_else(|| panic!("{what}: not closed within 10 s"));
        assert!(d >= Duration::from_millis(1500) && d <= Duration::from_secs(6), "{what}: closed after {d:?} (bulk-data-timeout = 2)");
    }
    works("timeouts");

    // bulk-max-connections = 2: a third connection is closed at once; the
    // first two still work.
    std::thread::sleep(Duration::from_millis(500));
    let mut c1 = conn(&lab);
    let mut c2 = conn(&lab);
    let mut c3 = conn(&lab);
    c3.send(&by_link(0x45, "2001:db8:1::1"));
    let d = c3.closed_within(Duration::from_secs(1)).expect("a third connection stays open");
    assert!(d < Duration::from_secs(1));
    c1.send(&by_link(0x46, "2001:db8:1::1"));
    c2.send(&by_client(0x47, &duid(3)));
    assert_eq!(cd_triples(&bulk_answer(&mut c1, 0x46)), all);
    assert_eq!(cd_triples(&bulk_answer(&mut c2, 0x47)), [t(&duid(3), "na", load[&3])].into());
    drop((c1, c2));
    // Their slots are free again.
    assert!(
        eventually(3, || {
            let mut c = conn(&lab);
            c.send(&by_client(0x48, &duid(1)));
            matches!(c.next(Duration::from_secs(1)), Got::Msg(_))
        }),
        "connections refused after the first two closed"
    );

    // A requestor not in leasequery.allowed: closed at once, no answer.
    std::thread::sleep(Duration::from_millis(300));
    let mut c = connect(&lab, STRANGER).expect("the TCP connection itself is accepted");
    c.send(&by_link(0x49, "2001:db8:1::1"));
    let d = c.closed_within(Duration::from_secs(1)).expect("a stranger's connection stays open");
    assert!(d < Duration::from_secs(1));
    works("a stranger");
    let log = lab.server_log();
    assert!(log.contains("bulk-max-connections reached"), "{log}");
    assert!(log.contains("connection closed: requestor not in leasequery.allowed"), "{log}");
}

/// Like `bulk_answer`, but the server then closes the connection (it was
/// sent garbage after the query).
#[track_caller]
fn bulk_answer_until_close(c: &mut Conn, xid: u32) -> Vec<Options> {
    let first = c.msg();
    assert_eq!((first.msg_type, first.transaction_id), (MessageType::LeaseQueryReply, xid), "{first:?}");
    let mut out: Vec<Options> = client_datas(&first).into_iter().cloned().collect();
    loop {
        match c.next(Duration::from_secs(5)) {
            Got::Msg(m) if m.msg_type == MessageType::LeaseQueryData => out.extend(client_datas(&m).into_iter().cloned()),
            Got::Msg(m) if m.msg_type == MessageType::LeaseQueryDone => break,
            g => panic!("{g:?} before LEASEQUERY-DONE"),
        }
    }
    assert!(c.closed_within(Duration::from_secs(1)).is_some(), "the garbage after the query closes the connection");
    out
}

/// No [leasequery]: no UDP answer, no TCP listener. A reload adds it: both
/// answer. SIGTERM with an idle connection open: exit 0 promptly.
#[test]
fn reload_turns_leasequery_on_and_sigterm_closes_connections() {
    require_root!();
    let mut lab = lab_with("lq-reload", |lab| lab.config(""));
    let load = direct_clients(&lab, 1, 3, false);
    let a1 = load[&1];

    let (rc, out, err, took) = query_from(&lab, REQUESTOR, &format!("--address {a1}"));
    assert_eq!(rc, 1, "no [leasequery]: no answer\n{out}{err}");
    assert!(err.contains("no answer"), "{err}");
    assert!(out.is_empty());
    assert!(took < Duration::from_secs(9), "the CLI gave up after {took:?}");
    match connect(&lab, REQUESTOR) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("a TCP listener without [leasequery]"),
    }

    assert!(!lab.server_log().contains("bulk leasequery: listening"), "{}", lab.server_log());

    // Add [leasequery] and reload.
    std::fs::write(lab.path("tandem.toml"), format!("{}{}", lab.config(""), lq_section(""))).unwrap();
    let sock = lab.path("data").join("control.sock");
    let o = lab.exec(&lab.srv, &format!("{BIN} ctl --socket {} reload", sock.display()));
    assert!(o.status.success(), "reload: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let v = query_ok(&lab, &format!("--address {a1}"));
    assert_eq!(triples(&v), [t(&duid(1), "na", a1)].into());
    assert!(eventually(5, || connect(&lab, REQUESTOR).is_ok()), "no TCP listener after the reload\n{}", lab.server_log());
    let v = query_ok(&lab, "--bulk --link-address 2001:db8:1::1");
    assert_eq!(triples(&v), load.iter().map(|(n, a)| t(&duid(*n), "na", a)).collect());

    // SIGTERM with an idle connection open (bulk-data-timeout is 300 s).
    let mut idle = conn(&lab);
    let mut used = conn(&lab);
    used.send(&by_client(0x51, &duid(2)));
    assert_eq!(cd_triples(&bulk_answer(&mut used, 0x51)), [t(&duid(2), "na", load[&2])].into());
    let t0 = Instant::now();
    assert_eq!(lab.stop_server(false), Some(0), "SIGTERM exits 0\n{}", lab.server_log());
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    for c in [&mut idle, &mut used] {
        assert!(c.closed_within(Duration::from_millis(500)).is_some(), "a connection outlived the server");
    }
}

