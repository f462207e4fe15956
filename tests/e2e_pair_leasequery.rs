//! Leasequery (RFC 5007, UDP) and Bulk Leasequery (RFC 5460, TCP) against a
//! failover pair, two real `tandem` processes with different shard counts:
//! once the BNDUPDs are acked, the primary and the secondary give the same
//! answers (client, address/prefix, lifetimes, CLT, and the relay chain with
//! its relay-id and remote-id, carried in the BNDUPD), for direct clients
//! and clients behind one or two relays; and with the primary gone
//! (COMMUNICATIONS-INTERRUPTED) the secondary still answers the same.
//! Needs root.

mod common;

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::{Duration, Instant};

use common::pair::*;
use common::*;
use serde_json::Value;
use tandem::wire::*;

/// The requestor's address, added to the clients' namespace.
const REQUESTOR: &str = "2001:db8:1::99";
/// A relay-links address of the pair's subnet (besides on-link 2001:db8:1::1).
const RELAY_LINK: &str = "2001:db8:9::1";

fn server_addr(who: usize) -> &'static str {
    if who == PRIMARY { "2001:db8:1::1" } else { "2001:db8:1::2" }
}

/// The pair's config with a relay link, an MCLT long enough that the first
/// grants (capped at the MCLT) outlive the test, and `[leasequery]`.
fn lq_config(cfg: String) -> String {
    let cfg = cfg
        .replacen("rapid-commit = true\n", &format!("rapid-commit = true\nrelay-links = [\"{RELAY_LINK}\"]\n"), 1)
        .replacen("mclt = 10\n", "mclt = 300\n", 1);
    format!("{cfg}\n[leasequery]\nallowed = [\"2001:db8:1::/64\"]\n")
}

/// One relay level: its link-address, the peer-address it writes, and the
/// Relay-ID / Remote-ID options it adds.
struct Level {
    link: &'static str,
    peer: &'static str,
    relay_id: Option<Vec<u8>>,
    remote_id: Option<Vec<u8>>,
}

/// `inner` wrapped in RELAY-FORWs, `levels` innermost (nearest the client) first.
fn relay_forw(levels: &[Level], inner: Message) -> Message {
    let mut m = inner;
    for (hop, l) in levels.iter().enumerate() {
        let mut options: Vec<DhcpOption> = Vec::new();
        if let Some(id) = &l.relay_id {
            options.push(DhcpOption::Unknown { code: 53, data: id.clone() });
        }
        if let Some(r) = &l.remote_id {
            options.push(DhcpOption::Unknown { code: 37, data: r.clone() });
        }
        options.push(DhcpOption::InterfaceId(format!("port-{hop}").into_bytes()));
        options.push(DhcpOption::RelayMsg(Box::new(m)));
        m = Message::Relay(RelayMessage {
            msg_type: MessageType::RelayForw,
            hop_count: hop as u8,
            link_address: l.link.parse().unwrap(),
            peer_address: l.peer.parse().unwrap(),
            options: options.into(),
        });
    }
    m
}

/// The client message inside a (possibly nested) RELAY-REPL.
fn unwrap_relay(m: &Message) -> Option<&ClientMessage> {
    match m {
        Message::Client(c) => Some(c),
        Message::Relay(r) => unwrap_relay(r.options.relay_msg()?),
    }
}

/// What a Reply grants: the address and the prefix (valid lifetime > 0).
fn grants(c: &ClientMessage) -> (Option<Ipv6Addr>, Option<(Ipv6Addr, u8)>) {
    let a = c.options.ia_nas().flat_map(|ia| ia.options.ia_addrs().filter(|a| a.valid > 0).map(|a| a.addr).collect::<Vec<_>>()).next();
    let p = c
        .options
        .ia_pds()
        .flat_map(|ia| ia.options.ia_prefixes().filter(|p| p.valid > 0).map(|p| (p.prefix, p.prefix_len)).collect::<Vec<_>>())
        .next();
    (a, p)
}

/// A rapid-commit Solicit (IA_NA + IA_PD) of `client` relayed through
/// `levels`, sent from the requestor's address (port 547) to the primary's
/// global address: what the Reply grants.
fn relayed(pair: &Pair, client: u64, levels: &[Level]) -> (Ipv6Addr, (Ipv6Addr, u8)) {
    relay(pair, ask(MessageType::Solicit, client, 0x40_0000 | client as u32, None, None, None), levels)
}

/// Relay the client message `inner` through `levels`: what the Reply grants.
fn relay(pair: &Pair, inner: Message, levels: &[Level]) -> (Ipv6Addr, (Ipv6Addr, u8)) {
    let Message::Client(c) = &inner else { unreachable!() };
    let (xid, client_id) = (c.transaction_id, c.options.client_id().cloned().unwrap());
    let m = relay_forw(levels, inner);
    let cid = client_id.clone();
    let got = in_netns(&pair.ns[2], move || {
        let s = std::net::UdpSocket::bind(SocketAddrV6::new(REQUESTOR.parse().unwrap(), 547, 0, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let to = SocketAddrV6::new(server_addr(PRIMARY).parse().unwrap(), 547, 0, 0);
        let bytes = m.encode().unwrap();
        let mut buf = [0u8; 4096];
        let end = Instant::now() + Duration::from_secs(6);
        let mut sent = Instant::now() - Duration::from_secs(10);
        while Instant::now() < end {
            if sent.elapsed() >= Duration::from_secs(1) {
                s.send_to(&bytes, to).unwrap();
                sent = Instant::now();
            }
            let Ok((n, _)) = s.recv_from(&mut buf) else { continue };
            let Ok(r) = Message::decode(&buf[..n]) else { continue };
            let Some(c) = unwrap_relay(&r) else { continue };
            if c.transaction_id == xid && c.msg_type == MessageType::Reply && c.options.client_id() == Some(&cid) {
                return Some(grants(c));
            }
        }
        None
    });
    match got {
        Some((Some(a), Some(p))) => (a, p),
        other => panic!("relayed {}: no address and prefix granted ({other:?})\n{}", client_id.to_hex(), pair.logs()),
    }
}

/// A direct rapid-commit Solicit (IA_NA + IA_PD) of `client`: what the primary grants.
fn direct(pair: &Pair, client: u64, primary: &Duid) -> (Ipv6Addr, (Ipv6Addr, u8)) {
    let ifx = pair.client_ifindex();
    let m = ask(MessageType::Solicit, client, 0x10_0000 | client as u32, None, None, None);
    let answers = in_netns(&pair.ns[2], move || exchange(&client_socket(546), ifx, &m, Duration::from_millis(1500)));
    let a = answers.iter().find(|a| &a.server == primary).unwrap_or_else(|| panic!("client {client}: no Reply from the primary: {answers:?}\n{}", pair.logs()));
    match a.held() {
        (Some(x), Some(p)) => (x, p),
        _ => panic!("client {client}: no address and prefix: {a:?}"),
    }
}

/// `tandem query ARGS --relay-data` from the requestor's address to `who`:
/// the bindings and the unix time the query was made at.
#[track_caller]
fn query(pair: &Pair, who: usize, args: &str) -> (Vec<Value>, u64) {
    let t = unix_now();
    let o = sh(&format!(
        "ip netns exec {} {BIN} query --server {} --source {REQUESTOR} --relay-data {args}",
        pair.ns[2],
        server_addr(who)
    ));
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "query {args} to server {who}: exit {:?}\n{out}\n{err}\n{}", o.status.code(), pair.logs());
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("query {args} to server {who}: {e}: {out}"));
    (v.as_array().unwrap().clone(), t)
}

/// One binding of an answer: the fields that must agree exactly, and the
/// times (absolute unix seconds) that may differ by a few seconds.
#[derive(Debug, Clone)]
struct Binding {
    exact: (String, String, String, Option<String>, Value),
    valid_end: i64,
    preferred_end: i64,
    cltt: i64,
}

fn bindings(v: &[Value], at: u64) -> Vec<Binding> {
    let mut out: Vec<Binding> = v
        .iter()
        .map(|b| Binding {
            exact: (
                b["lease"].as_str().unwrap().to_string(),
                b["type"].as_str().unwrap().to_string(),
                b["client-id"].as_str().unwrap().to_string(),
                b["hostname"].as_str().map(String::from),
                b.get("relay").cloned().unwrap_or(Value::Null),
            ),
            valid_end: at as i64 + b["valid-lifetime"].as_i64().unwrap(),
            preferred_end: at as i64 + b["preferred-lifetime"].as_i64().unwrap(),
            cltt: b["cltt"].as_i64().unwrap_or_else(|| panic!("no cltt: {b}")),
        })
        .collect();
    out.sort_by(|a, b| a.exact.0.cmp(&b.exact.0));
    out
}

/// The two answers hold the same bindings (times within `slack` seconds).
#[track_caller]
fn same(what: &str, a: &(Vec<Value>, u64), b: &(Vec<Value>, u64)) {
    let (x, y) = (bindings(&a.0, a.1), bindings(&b.0, b.1));
    let show = || format!("{what}:\n{}\nvs\n{}", serde_json::to_string_pretty(&a.0).unwrap(), serde_json::to_string_pretty(&b.0).unwrap());
    assert_eq!(x.len(), y.len(), "{}", show());
    // The query times are whole seconds: one more second of slack.
    let slack = 5;
    for (p, q) in x.iter().zip(&y) {
        assert_eq!(p.exact, q.exact, "{}", show());
        assert!((p.valid_end - q.valid_end).abs() <= slack, "valid lifetimes: {}", show());
        assert!((p.preferred_end - q.preferred_end).abs() <= slack, "preferred lifetimes: {}", show());
        assert!((p.cltt - q.cltt).abs() <= slack, "cltt: {}", show());
    }
}

/// The (client, lease) pairs of an answer, sorted.
fn leases_of(v: &[Value]) -> Vec<(String, String)> {
    let mut out: Vec<_> = v.iter().map(|b| (b["client-id"].as_str().unwrap().to_string(), b["lease"].as_str().unwrap().to_string())).collect();
    out.sort();
    out
}

/// The active leases of our clients in `who`'s store with their relay data.
fn store_view(pair: &Pair, who: usize) -> Vec<String> {
    let mut v: Vec<String> = pair
        .leases(who)
        .iter()
        .filter(|l| l["state"] == "ACTIVE")
        .map(|l| format!("{} {} {} {} {} {} {}", l["lease"], l["duid"], l["state"], l["relay-peer"], l["relay-link-address"], l["relay-id"], l["remote-id"]))
        .collect();
    v.sort();
    v
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An address inside a delegated prefix (not its first).
fn inside(p: (Ipv6Addr, u8)) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(p.0) | 0x1234_5678)
}

#[test]
fn both_partners_answer_the_same_leasequeries_and_the_secondary_alone_still_does() {
    require_root!();
    let t0 = Instant::now();
    let mut pair = Pair::new("lq");
    must(&format!("ip -n {} addr add {REQUESTOR}/64 dev {} nodad", pair.ns[2], pair.ifs[2]));
    let certs = pair.gen_tls("tls");
    let pcfg = lq_config(pair.config(PRIMARY, "", &pair.tls(PRIMARY, &certs)));
    let scfg = lq_config(pair.config(SECONDARY, "", &pair.tls(SECONDARY, &certs)));
    // Different shard counts: the primary 1, the secondary 2.
    pair.start_with(SECONDARY, &scfg, 2, "debug", &[]);
    pair.start_with(PRIMARY, &pcfg, 1, "debug", &[]);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    let p = Duid::from_hex(pair.ctl(PRIMARY, "status")["server-duid"].as_str().unwrap()).unwrap();

    // Relays: A (on-link link-address, one remote-id per line), B (the
    // subnet's relay link) alone and behind C (two levels: B's options,
    // nearest the client, are the ones that count).
    let ra = Duid::en(9, b"relay-A").as_bytes().to_vec();
    let rb = Duid::en(9, b"relay-B").as_bytes().to_vec();
    let rc = Duid::en(9, b"relay-C").as_bytes().to_vec();
    let remote = |id: &str| {
        let mut v = 9u32.to_be_bytes().to_vec();
        v.extend_from_slice(id.as_bytes());
        v
    };
    let (r1, r2, r3) = (remote("line-1"), remote("line-2"), remote("line-3"));
    let lvl = |link, peer, relay_id: &Vec<u8>, remote_id: Option<&Vec<u8>>| Level { link, peer, relay_id: Some(relay_id.clone()), remote_id: remote_id.cloned() };

    let mut held: Vec<(u64, Ipv6Addr, (Ipv6Addr, u8))> = Vec::new();
    for c in 1..=3 {
        let (a, pfx) = direct(&pair, c, &p);
        held.push((c, a, pfx));
    }
    for (c, r) in [(11, &r1), (12, &r1), (13, &r2)] {
        let (a, pfx) = relayed(&pair, c, &[lvl("2001:db8:1::1", "fe80::11", &ra, Some(r))]);
        held.push((c, a, pfx));
    }
    let (a, pfx) = relayed(&pair, 21, &[lvl(RELAY_LINK, "fe80::21", &rb, Some(&r3)), lvl("2001:db8:1::1", RELAY_LINK, &rc, None)]);
    held.push((21, a, pfx));
    let (a, pfx) = relayed(&pair, 22, &[lvl(RELAY_LINK, "fe80::22", &rb, None)]);
    held.push((22, a, pfx));
    // Client 13 moves behind relay B: its Renew there replaces its relay
    // data (on the partner too, by the BNDUPD of the renewal).
    let (_, a13, p13) = *held.iter().find(|h| h.0 == 13).unwrap();
    let renew = ask(MessageType::Renew, 13, 0x50_0013, Some(&p), Some(a13), Some(p13));
    assert_eq!(relay(&pair, renew, &[lvl(RELAY_LINK, "fe80::13", &rb, Some(&r2))]), (a13, p13), "client 13 keeps its lease");
    let clients: Vec<u64> = held.iter().map(|h| h.0).collect();
    let lease_keys = |cs: &[u64]| {
        let mut v: Vec<(String, String)> = held
            .iter()
            .filter(|h| cs.contains(&h.0))
            .flat_map(|h| [(duid(h.0).to_hex(), h.1.to_string()), (duid(h.0).to_hex(), format!("{}/{}", h.2.0, h.2.1))])
            .collect();
        v.sort();
        v
    };
    let of = |c: u64| *held.iter().find(|h| h.0 == c).unwrap();
    eprintln!("granted at {:?}: {held:?}", t0.elapsed());

    // The BNDUPDs acked: both stores hold the same active leases and relay data.
    let mut last = (Vec::new(), Vec::new());
    let synced = eventually(20, || {
        last = (store_view(&pair, PRIMARY), store_view(&pair, SECONDARY));
        last.0.len() == 2 * clients.len() && last.0 == last.1
    });
    assert!(synced, "stores differ:\n{:#?}\nvs\n{:#?}\n{}", last.0, last.1, pair.logs());
    eprintln!("synced at {:?}", t0.elapsed());

    // The queries, with what each must find (client, lease).
    let (a1, p2, a12, p21) = (of(1).1, of(2).2, of(12).1, of(21).2);
    let queries: Vec<(String, Vec<(String, String)>)> = vec![
        (format!("--address {a1}"), lease_keys(&[1])),
        (format!("--address {}", inside(p2)), lease_keys(&[2])),
        (format!("--address {a12}"), lease_keys(&[12])),
        (format!("--address {}", inside(p21)), lease_keys(&[21])),
        (format!("--client-id {}", duid(3).to_hex()), lease_keys(&[3])),
        (format!("--client-id {}", duid(13).to_hex()), lease_keys(&[13])),
        (format!("--client-id {}", duid(22).to_hex()), lease_keys(&[22])),
        (format!("--bulk --client-id {}", duid(11).to_hex()), lease_keys(&[11])),
        (format!("--bulk --address {}", inside(of(12).2)), lease_keys(&[12])),
        (format!("--bulk --relay-id {}", hexs(&ra)), lease_keys(&[11, 12])),
        (format!("--bulk --relay-id {}", hexs(&rb)), lease_keys(&[13, 21, 22])),
        (format!("--bulk --relay-id {}", hexs(&rc)), vec![]),
        (format!("--bulk --remote-id {}", hexs(&r1)), lease_keys(&[11, 12])),
        (format!("--bulk --remote-id {}", hexs(&r2)), lease_keys(&[13])),
        (format!("--bulk --remote-id {}", hexs(&r3)), lease_keys(&[21])),
        ("--bulk --link-address 2001:db8:1::1".to_string(), lease_keys(&clients)),
        (format!("--bulk --link-address {RELAY_LINK}"), lease_keys(&clients)),
    ];
    let mut from_primary = Vec::new();
    for (q, want) in &queries {
        let ap = query(&pair, PRIMARY, q);
        let asec = query(&pair, SECONDARY, q);
        assert_eq!(leases_of(&ap.0), *want, "primary: {q}: {:#?}", ap.0);
        same(&format!("primary vs secondary in NORMAL: {q}"), &ap, &asec);
        from_primary.push(ap);
    }
    eprintln!("NORMAL queries done at {:?}", t0.elapsed());

    // What the relay data says: the peer the server heard the relay from,
    // the innermost link-address, relay-id and remote-id.
    let relay_of = |c: u64| {
        let (v, _) = query(&pair, PRIMARY, &format!("--client-id {}", duid(c).to_hex()));
        assert!(!v.is_empty(), "client {c}");
        v[0]["relay"].clone()
    };
    let r = relay_of(12);
    assert_eq!(r["peer-address"], REQUESTOR, "{r}");
    assert_eq!(r["link-address"], "2001:db8:1::1", "{r}");
    assert_eq!(r["relay-id"], hexs(&ra), "{r}");
    assert_eq!(r["remote-id"], hexs(&r1), "{r}");
    let r = relay_of(21);
    assert_eq!(r["peer-address"], REQUESTOR, "{r}");
    assert_eq!(r["link-address"], RELAY_LINK, "{r}");
    assert_eq!(r["relay-id"], hexs(&rb), "{r}");
    assert_eq!(r["remote-id"], hexs(&r3), "{r}");
    let r = relay_of(13);
    assert_eq!(r["link-address"], RELAY_LINK, "{r}");
    assert_eq!(r["relay-id"], hexs(&rb), "{r}");
    assert_eq!(r["remote-id"], hexs(&r2), "{r}");
    let r = relay_of(22);
    assert_eq!(r["relay-id"], hexs(&rb), "{r}");
    assert_eq!(r["remote-id"], Value::Null, "{r}");
    let (v, _) = query(&pair, PRIMARY, &format!("--client-id {}", duid(1).to_hex()));
    assert!(v.iter().all(|b| b.get("relay").is_none()), "a direct client has no relay data: {v:?}");

    // The primary gone: the secondary in COMMUNICATIONS-INTERRUPTED answers the same.
    pair.stop(PRIMARY, true);
    pair.wait_state(SECONDARY, "COMMUNICATIONS-INTERRUPTED", 20);
    for ((q, _), ap) in queries.iter().zip(&from_primary) {
        let asec = query(&pair, SECONDARY, q);
        same(&format!("primary in NORMAL vs secondary in COMMUNICATIONS-INTERRUPTED: {q}"), ap, &asec);
    }
    eprintln!("done in {:?}", t0.elapsed());
}
