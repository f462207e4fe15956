use std::net::Ipv6Addr;

use super::*;
use crate::config::Config;
use crate::lease::{Binding, RelayData};
use crate::server::LeaseTable;
use crate::wire::{IaAddr, LqQuery};

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn server() -> Duid {
    Duid::ll(1, &[0xaa; 6])
}

fn requestor() -> Duid {
    Duid::ll(1, &[0xbb; 6])
}

fn client(n: u8) -> Duid {
    Duid::ll(1, &[2, 0, 0, 0, 0, n])
}

const NOW: Time = 1_800_000_000;

const CONFIG: &str = r#"
data-dir = "/tmp/x"
[[subnet]]
prefix = "2001:db8:1::/64"
relay-links = ["2001:db8:ff::1"]
rapid-commit = true
pools = ["2001:db8:1::100-2001:db8:1::1ff"]
pd-pools = [{ prefix = "2001:db8:100::/40", delegated-length = 56 }]
shared-network = "lan"
[[subnet]]
prefix = "2001:db8:2::/64"
pools = ["2001:db8:2::100-2001:db8:2::1ff"]
shared-network = "lan"
[[subnet]]
prefix = "2001:db8:3::/64"
pools = ["2001:db8:3::100-2001:db8:3::1ff"]
"#;

fn links() -> Links {
    Links::new(&Config::parse(CONFIG).unwrap().subnets)
}

fn query(query_type: u8, link: &str, options: Vec<DhcpOption>, extra: Vec<DhcpOption>) -> Message {
    let mut o: Options = vec![DhcpOption::ClientId(requestor())].into();
    o.push(DhcpOption::LqQuery(LqQuery { query_type, link_address: a(link), options: options.into() }));
    o.0.extend(extra);
    Message::Client(ClientMessage { msg_type: MessageType::LeaseQuery, transaction_id: 77, options: o })
}

fn iaaddr(s: &str) -> DhcpOption {
    DhcpOption::IaAddr(IaAddr { addr: a(s), preferred: 0, valid: 0, options: Options::new() })
}

#[track_caller]
fn refused(p: Parsed) -> StatusCode {
    match p {
        Parsed::Refused { status, xid: 77, .. } => status,
        p => panic!("not refused: {p:?}"),
    }
}

#[test]
fn queries_are_checked_as_rfc_5007_and_5460_say() {
    let s = server();
    let q = parse(&query(QUERY_BY_ADDRESS, "::", vec![iaaddr("2001:db8:1::105"), DhcpOption::Oro(vec![47])], vec![]), &s, false);
    assert_eq!(
        q,
        Parsed::Query(Query { xid: 77, requestor: requestor(), target: Target::Address(a("2001:db8:1::105")), link: None, oro: vec![47] })
    );
    let q = parse(&query(QUERY_BY_CLIENTID, "2001:db8:1::", vec![DhcpOption::ClientId(client(1))], vec![]), &s, false);
    let Parsed::Query(q) = q else { panic!() };
    assert_eq!((q.target, q.link), (Target::Client(client(1)), Some(a("2001:db8:1::"))));
    // A required query option missing: MalformedQuery.
    assert_eq!(refused(parse(&query(QUERY_BY_ADDRESS, "::", vec![], vec![]), &s, false)), StatusCode::MALFORMED_QUERY);
    assert_eq!(refused(parse(&query(QUERY_BY_CLIENTID, "::", vec![iaaddr("::1")], vec![]), &s, false)), StatusCode::MALFORMED_QUERY);
    assert_eq!(refused(parse(&query(QUERY_BY_RELAY_ID, "::", vec![], vec![]), &s, true)), StatusCode::MALFORMED_QUERY);
    assert_eq!(refused(parse(&query(QUERY_BY_LINK_ADDRESS, "::", vec![], vec![]), &s, true)), StatusCode::MALFORMED_QUERY);
    let short_remote = DhcpOption::Unknown { code: opt::REMOTE_ID, data: vec![0, 0, 0, 9] };
    assert_eq!(refused(parse(&query(QUERY_BY_REMOTE_ID, "::", vec![short_remote], vec![]), &s, true)), StatusCode::MALFORMED_QUERY);
    // A type we do not know: UnknownQueryType.
    assert_eq!(refused(parse(&query(9, "::", vec![], vec![]), &s, false)), StatusCode::UNKNOWN_QUERY_TYPE);
    // RFC 5460 §4: the bulk types over UDP are NotAllowed, over TCP answered.
    let relay = DhcpOption::Unknown { code: opt::RELAY_ID, data: vec![0, 3, 0, 1, 9] };
    let remote = DhcpOption::Unknown { code: opt::REMOTE_ID, data: vec![0, 0, 0, 9, 7] };
    for (t, o) in [(QUERY_BY_RELAY_ID, vec![relay.clone()]), (QUERY_BY_LINK_ADDRESS, vec![]), (QUERY_BY_REMOTE_ID, vec![remote.clone()])] {
        let link = if t == QUERY_BY_LINK_ADDRESS { "2001:db8:2::1" } else { "::" };
        assert_eq!(refused(parse(&query(t, link, o.clone(), vec![]), &s, false)), StatusCode::NOT_ALLOWED);
        assert!(matches!(parse(&query(t, link, o, vec![]), &s, true), Parsed::Query(_)));
    }
    let Parsed::Query(q) = parse(&query(QUERY_BY_REMOTE_ID, "::", vec![remote], vec![]), &s, true) else { panic!() };
    assert_eq!(q.target, Target::RemoteId(vec![0, 0, 0, 9, 7]));
    // §4.2.1: discarded without an answer.
    let mut no_client = query(QUERY_BY_ADDRESS, "::", vec![iaaddr("::1")], vec![]);
    if let Message::Client(c) = &mut no_client {
        c.options.0.retain(|o| !matches!(o, DhcpOption::ClientId(_)));
    }
    assert!(matches!(parse(&no_client, &s, false), Parsed::Discard(_)));
    let other_server = query(QUERY_BY_ADDRESS, "::", vec![iaaddr("::1")], vec![DhcpOption::ServerId(Duid::ll(1, &[1]))]);
    assert!(matches!(parse(&other_server, &s, false), Parsed::Discard(_)));
    let ours = query(QUERY_BY_ADDRESS, "::", vec![iaaddr("::1")], vec![DhcpOption::ServerId(server())]);
    assert!(matches!(parse(&ours, &s, false), Parsed::Query(_)));
    let no_query = Message::Client(ClientMessage { msg_type: MessageType::LeaseQuery, transaction_id: 1, options: vec![DhcpOption::ClientId(requestor())].into() });
    assert!(matches!(parse(&no_query, &s, false), Parsed::Discard(_)));
    let solicit = Message::Client(ClientMessage { msg_type: MessageType::Solicit, transaction_id: 1, options: vec![DhcpOption::ClientId(requestor())].into() });
    assert!(matches!(parse(&solicit, &s, true), Parsed::Discard(_)));
    // A requestor not allowed: the query becomes a refusal.
    let q = parse(&query(QUERY_BY_ADDRESS, "::", vec![iaaddr("::1")], vec![]), &s, false);
    assert_eq!(refused(q.refuse(StatusCode::NOT_ALLOWED, "no")), StatusCode::NOT_ALLOWED);
}

#[test]
fn links_follow_subnets_shared_networks_and_relays() {
    let l = links();
    // Two links: "lan" (subnets 1 and 2) and subnet 3.
    assert_eq!(l.by_link_address(a("2001:db8:1::1")), Some(0));
    assert_eq!(l.by_link_address(a("2001:db8:2::9")), Some(0));
    assert_eq!(l.by_link_address(a("2001:db8:ff::1")), Some(0), "a relay-links address");
    assert_eq!(l.by_link_address(a("2001:db8:3::1")), Some(1));
    assert_eq!(l.by_link_address(a("2001:db8:9::1")), None);
    assert_eq!(l.get(0).address, a("2001:db8:1::"));
    assert_eq!(l.get(1).address, a("2001:db8:3::"));
    // An address inside a delegated prefix is on the link of its pd-pool.
    assert_eq!(l.of_address(a("2001:db8:100:500::1")), Some(0));
    assert_eq!(l.of_address(a("2001:db8:3::105")), Some(1));
    assert_eq!(l.of_address(a("2001:db8:9::1")), None);
    let p = LeaseKey::Prefix(Prefix::new(a("2001:db8:100:500::"), 56).unwrap());
    assert_eq!(l.of_key(&p), Some(0));
    assert!(l.get(0).holds(&p) && !l.get(1).holds(&p));
}

fn lease(key: LeaseKey, duid: Duid, iaid: u32, cltt: Time, valid: u32) -> Lease {
    let t = key.ia_type();
    Lease::active(key, Binding { duid, ia_type: t, iaid }, cltt, valid / 2, valid, 0, 0)
}

fn addr(s: &str) -> LeaseKey {
    LeaseKey::Addr(a(s))
}

fn pfx(s: &str, len: u8) -> LeaseKey {
    LeaseKey::Prefix(Prefix::new(a(s), len).unwrap())
}

/// A RELAY-FORW level (no client message): link-address and options.
fn relay_level(link: &str, options: Vec<DhcpOption>, inner: Option<Message>) -> Message {
    let mut o: Options = options.into();
    if let Some(m) = inner {
        o.push(DhcpOption::RelayMsg(Box::new(m)));
    }
    Message::Relay(crate::wire::RelayMessage { msg_type: MessageType::RelayForw, hop_count: 0, link_address: a(link), peer_address: a("fe80::9"), options: o })
}

#[test]
fn relay_data_yields_the_innermost_ids_and_link() {
    let inner = relay_level(
        "2001:db8:1::1",
        vec![DhcpOption::Unknown { code: opt::REMOTE_ID, data: vec![0, 0, 0, 9, 1] }, DhcpOption::InterfaceId(b"eth0".to_vec())],
        None,
    );
    let outer = relay_level(
        "::",
        vec![
            DhcpOption::Unknown { code: opt::RELAY_ID, data: vec![0, 3, 0, 1, 7] },
            DhcpOption::Unknown { code: opt::REMOTE_ID, data: vec![0, 0, 0, 9, 2] },
        ],
        Some(inner),
    );
    let r = RelayData { peer: a("2001:db8:ff::1"), message: outer.encode().unwrap() };
    assert_eq!(r.relay_id(), Some(&[0, 3, 0, 1, 7][..]));
    assert_eq!(r.remote_id(), Some(&[0, 0, 0, 9, 1][..]), "the level nearest the client wins");
    assert_eq!(r.link_address(), Some(a("2001:db8:1::1")));
    assert_eq!(r.option(opt::INTERFACE_ID), Some(&b"eth0"[..]));
    // Damaged octets read as nothing, never a panic.
    for n in 0..r.message.len() {
        let d = RelayData { peer: r.peer, message: r.message[..n].to_vec() };
        let _ = (d.relay_id(), d.remote_id(), d.link_address());
    }
}

#[test]
fn the_table_finds_an_address_its_prefix_and_a_client_without_walking() {
    let mut t = LeaseTable::new();
    t.upsert(lease(addr("2001:db8:1::105"), client(1), 1, NOW, 3600));
    t.upsert(lease(pfx("2001:db8:100:500::", 56), client(1), 2, NOW, 3600));
    t.upsert(lease(pfx("2001:db8:100:600::", 56), client(2), 1, NOW, 3600));
    t.upsert(lease(addr("2001:db8:3::105"), client(2), 1, NOW, 3600));
    let keys = |v: Vec<&Lease>| {
        let mut k: Vec<String> = v.into_iter().map(|l| l.key.to_string()).collect();
        k.sort();
        k
    };
    assert_eq!(keys(t.covering(a("2001:db8:1::105"))), ["2001:db8:1::105"]);
    assert_eq!(keys(t.covering(a("2001:db8:100:5ff::1"))), ["2001:db8:100:500::/56"]);
    assert_eq!(keys(t.covering(a("2001:db8:100:700::1"))), Vec::<String>::new());
    assert_eq!(keys(t.of_client(&client(1))), ["2001:db8:100:500::/56", "2001:db8:1::105"]);
    assert_eq!(keys(t.of_client(&client(3))), Vec::<String>::new());
    // Removing the last prefix of a length stops its lookups.
    assert!(t.remove(&pfx("2001:db8:100:500::", 56)).is_some());
    assert!(t.remove(&pfx("2001:db8:100:600::", 56)).is_some());
    assert_eq!(t.prefix_lengths_in_use(), Vec::<u8>::new());
}

#[test]
fn a_walk_in_chunks_gives_each_client_once_with_all_its_matching_leases() {
    let mut t = LeaseTable::new();
    let relayed = |via: u8| {
        Some(Box::new(RelayData {
            peer: a("fe80::1"),
            message: relay_level("2001:db8:1::1", vec![DhcpOption::Unknown { code: opt::RELAY_ID, data: vec![0, 3, 0, 1, via] }], None).encode().unwrap(),
        }))
    };
    // 300 clients, each an address and a prefix; relay 1 for even clients.
    for c in 0..300u32 {
        let d = Duid::en(9, &c.to_be_bytes());
        let mut l = lease(LeaseKey::Addr(Ipv6Addr::from(u128::from(a("2001:db8:1::1000")) + c as u128)), d.clone(), 1, NOW, 3600);
        l.relay = relayed(if c % 2 == 0 { 1 } else { 2 });
        t.upsert(l);
        let mut p = lease(LeaseKey::Prefix(Prefix::new(Ipv6Addr::from(u128::from(a("2001:db8:100::")) + ((c as u128) << 72)), 56).unwrap()), d, 2, NOW, 3600);
        p.relay = relayed(if c % 2 == 0 { 1 } else { 2 });
        t.upsert(p);
    }
    // An expired lease of relay 1 is not reported.
    let mut gone = lease(addr("2001:db8:1::9"), client(9), 1, NOW - 10_000, 3600);
    gone.relay = relayed(1);
    t.upsert(gone);
    let f = Filter { relay_id: Some(vec![0, 3, 0, 1, 1]), remote_id: None, link: None };
    let mut from = Some(0);
    let mut groups = Vec::new();
    let mut chunks = 0;
    while let Some(s) = from {
        let (g, next) = t.walk_clients(s, 37, usize::MAX, |l| f.matches(l, NOW));
        groups.extend(g.into_iter().map(|v| v.into_iter().cloned().collect::<Vec<_>>()));
        from = next;
        chunks += 1;
    }
    assert!(chunks > 10, "walked in chunks");
    // A client whose two records straddle a chunk boundary comes in both
    // chunks, each time whole; the caller keeps the first.
    assert!(groups.iter().all(|g| g.len() == 2 && g[0].binding.duid == g[1].binding.duid));
    let mut seen = std::collections::HashSet::new();
    groups.retain(|g| seen.insert(g[0].binding.duid.clone()));
    assert_eq!(groups.len(), 150, "each even client");
    // Grouped by client and link: an address on the subnet, a prefix from its pd-pool: one link.
    let all: Vec<Lease> = groups.into_iter().flatten().collect();
    let b = group(all, &links(), NOW);
    assert_eq!(b.len(), 150);
    assert!(b.iter().all(|x| x.link == Some(0) && x.leases.len() == 2));
    // A link filter: nothing of these is on subnet 3's link.
    let l = links();
    let f = Filter { relay_id: None, remote_id: None, link: Some(l.get(1).clone()) };
    assert!(t.walk_clients(0, usize::MAX, usize::MAX, |x| f.matches(x, NOW)).0.is_empty());
}

#[test]
fn a_client_granted_a_lease_behind_the_walk_is_still_reported() {
    // Review M1: a client's new lease may reuse a record's slot the walk has
    // passed; its other record ahead still reports it, with both leases.
    let mut t = LeaseTable::new();
    t.upsert(lease(addr("2001:db8:1::100"), client(8), 1, NOW - 9000, 3600)); // ended, slot 0
    for i in 0..100u32 {
        t.upsert(lease(LeaseKey::Addr(Ipv6Addr::from(u128::from(a("2001:db8:1::1000")) + i as u128)), client(10 + i as u8), 1, NOW, 3600));
    }
    t.upsert(lease(addr("2001:db8:1::200"), client(7), 1, NOW, 3600)); // slot 101
    let f = Filter { relay_id: None, remote_id: None, link: Some(links().get(0).clone()) };
    let (first, next) = t.walk_clients(0, 50, usize::MAX, |l| f.matches(l, NOW));
    assert_eq!(first.len(), 49);
    assert!(first.iter().all(|g| g[0].binding.duid != client(7)));
    // Meanwhile client 7 gets the address whose old record sits in slot 0.
    t.upsert(lease(addr("2001:db8:1::100"), client(7), 2, NOW, 3600));
    let (second, next) = t.walk_clients(next.unwrap(), 50, usize::MAX, |l| f.matches(l, NOW));
    assert_eq!(second.len(), 50);
    let (third, next) = t.walk_clients(next.unwrap(), 50, usize::MAX, |l| f.matches(l, NOW));
    assert_eq!(next, None);
    let seven: Vec<_> = third.iter().filter(|g| g[0].binding.duid == client(7)).collect();
    assert_eq!(seven.len(), 1, "reported in the chunk holding its other record");
    assert_eq!(seven[0].len(), 2, "with both of its leases");
    // A chunk stops after `max_clients` clients; the next starts after them.
    let (g, n) = t.walk_clients(0, usize::MAX, 3, |l| f.matches(l, NOW));
    assert_eq!((g.len(), n), (3, Some(3)), "slots 0 (client 7 now), 1 and 2");
}

#[test]
fn client_data_carries_lifetimes_left_clt_time_and_only_the_options_asked() {
    let mut l1 = lease(addr("2001:db8:1::105"), client(1), 1, NOW - 100, 3600);
    l1.dns = Some(crate::lease::DnsInfo { flags: 1, name: Some(crate::wire::DomainName::from_dotted("h.example.").unwrap()), dns_flags: 0 });
    let mut l2 = lease(pfx("2001:db8:100:500::", 56), client(1), 2, NOW - 40, 3600);
    l2.relay = Some(Box::new(RelayData { peer: a("fe80::1"), message: relay_level("2001:db8:1::1", vec![], None).encode().unwrap() }));
    let b = &group(vec![l1, l2], &links(), NOW)[0];
    let DhcpOption::ClientData(cd) = client_data(b, NOW, &[], &[]) else { panic!() };
    assert_eq!(cd.client_id(), Some(&client(1)));
    let ad = cd.ia_addrs().next().unwrap();
    assert_eq!((ad.valid, ad.preferred), (3500, 1700));
    let p = cd.ia_prefixes().next().unwrap();
    assert_eq!((p.valid, p.preferred, p.prefix_len), (3560, 1760, 56));
    assert_eq!(cd.u32_of(opt::CLT_TIME), Some(40), "the latest contact");
    assert!(!cd.has(opt::LQ_RELAY_DATA) && !cd.has(opt::CLIENT_FQDN), "not asked for");
    let DhcpOption::ClientData(cd) = client_data(b, NOW, &[opt::LQ_RELAY_DATA, opt::CLIENT_FQDN], &[]) else { panic!() };
    assert!(cd.has(opt::LQ_RELAY_DATA) && cd.has(opt::CLIENT_FQDN));
    let DhcpOption::ClientData(cd) = client_data(b, NOW, &[opt::LQ_RELAY_DATA, opt::CLIENT_FQDN], &[opt::LQ_RELAY_DATA]) else { panic!() };
    assert!(!cd.has(opt::LQ_RELAY_DATA) && cd.has(opt::CLIENT_FQDN), "sensitive options are never returned");
    // A lease the failover partner granted: its contact time is the partner's CLT.
    let mut p = lease(addr("2001:db8:1::109"), client(3), 1, NOW - 30, 3600);
    (p.cltt, p.partner_raw_clt_time) = (0, NOW - 30);
    let b = &group(vec![p], &links(), NOW)[0];
    let DhcpOption::ClientData(cd) = client_data(b, NOW, &[], &[]) else { panic!() };
    assert_eq!(cd.u32_of(opt::CLT_TIME), Some(30));
    assert_eq!(cd.ia_addrs().next().unwrap().preferred, 1770);
}

#[test]
fn group_keeps_bound_leases_once_by_client_and_link() {
    let l = links();
    let ended = {
        let mut x = lease(addr("2001:db8:1::107"), client(1), 1, NOW, 3600);
        x.set_status(crate::wire::BindingStatus::Released, NOW);
        x
    };
    let leases = vec![
        lease(addr("2001:db8:3::105"), client(1), 1, NOW, 3600),
        lease(addr("2001:db8:1::105"), client(1), 1, NOW, 3600),
        lease(addr("2001:db8:1::105"), client(1), 1, NOW, 3600),
        lease(addr("2001:db8:2::105"), client(1), 1, NOW, 3600),
        lease(addr("2001:db8:1::106"), client(2), 1, NOW - 4000, 3600),
        ended,
    ];
    let g = group(leases, &l, NOW);
    assert_eq!(g.len(), 2, "client 1 on two links; client 2's lease has ended");
    assert_eq!((g[0].link, g[0].leases.len()), (Some(0), 2));
    assert_eq!((g[1].link, g[1].leases.len()), (Some(1), 1));
}

#[test]
fn replies_and_frames() {
    let m = reply(5, &requestor(), &server(), Some((StatusCode::NOT_ALLOWED, "no")));
    let Message::Client(c) = &m else { panic!() };
    assert_eq!(c.msg_type, MessageType::LeaseQueryReply);
    assert_eq!((c.options.server_id(), c.options.client_id()), (Some(&server()), Some(&requestor())));
    assert_eq!(c.options.status().unwrap().code, StatusCode::NOT_ALLOWED);
    let f = frame(&done(5, None)).unwrap();
    assert_eq!(f, vec![0, 4, 16, 0, 0, 5]);
    let d = data(5, DhcpOption::ClientData(Options::new()));
    assert_eq!(frame(&d).unwrap(), vec![0, 8, 17, 0, 0, 5, 0, 45, 0, 0]);
}

#[test]
fn a_relayed_grant_keeps_the_chain_without_the_client_message() {
    use crate::server::{Arrival, Engine, EngineConfig, Outcome};
    let c = Config::parse(CONFIG).unwrap();
    let mut e = Engine::new(EngineConfig {
        server_duid: server(),
        subnets: c.subnets,
        slice: crate::pool::Slice::WHOLE,
        hash_key: 7,
        naming: None,
        limits: Default::default(),
        unicast_listen: Vec::new(),
        provisioning: Default::default(),
    });
    let solicit = Message::Client(ClientMessage {
        msg_type: MessageType::Solicit,
        transaction_id: 1,
        options: vec![
            DhcpOption::ClientId(client(4)),
            DhcpOption::RapidCommit,
            DhcpOption::IaNa(crate::wire::IaNa { iaid: 1, t1: 0, t2: 0, options: Options::new() }),
        ]
        .into(),
    });
    let relayed = relay_level(
        "2001:db8:1::1",
        vec![DhcpOption::Unknown { code: opt::RELAY_ID, data: vec![0, 3, 0, 1, 5] }, DhcpOption::InterfaceId(b"ge-0/0/1".to_vec())],
        Some(solicit),
    );
    let arrival = Arrival { interface: None, source: a("2001:db8:ff::1"), destination: a("2001:db8::547") };
    let Outcome::Reply(_) = e.handle(NOW, &relayed, &arrival, &crate::server::Standalone) else { panic!("no reply") };
    let l = e.leases().iter().next().unwrap();
    let r = l.relay.as_ref().expect("relay data kept");
    assert_eq!(r.peer, a("2001:db8:ff::1"));
    assert_eq!(r.relay_id(), Some(&[0, 3, 0, 1, 5][..]));
    assert_eq!(r.link_address(), Some(a("2001:db8:1::1")));
    let Message::Relay(kept) = Message::decode(&r.message).unwrap() else { panic!() };
    assert!(kept.options.relay_msg().is_none(), "the client's message is not kept");
    assert_eq!(kept.options.interface_id(), Some(&b"ge-0/0/1"[..]));
}
