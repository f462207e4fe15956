//! Reservations in a failover pair (README "Reservations"), two real
//! `tandem` processes: a reserved key is outside the RFC 8156 split, so
//! whichever partner the client reaches in COMMUNICATIONS-INTERRUPTED gives
//! the client its reserved address (even one of the primary's half) and its
//! reserved prefix (never FREE-BACKUP), with MCLT-capped lifetimes; and a
//! partner whose reservations differ answers a BNDUPD granting a key it
//! reserves for another client ConfigurationConflict (and stores it, so its
//! reserved client cannot get the key meanwhile). Needs root.

mod common;

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use common::pair::*;
use common::*;
use tandem::wire::*;

/// What a Reply or Advertise from one server grants.
#[derive(Debug, Clone)]
struct Got {
    server: Duid,
    /// (address, preferred, valid)
    addrs: Vec<(Ipv6Addr, u32, u32)>,
    /// (prefix, length, preferred, valid)
    prefixes: Vec<(Ipv6Addr, u8, u32, u32)>,
    raw: String,
}

/// Send `m` (multicast on the client link, retransmitted each second) from
/// the clients' namespace and return the first answer of type `want`.
fn talk(pair: &Pair, m: Message, want: MessageType, secs: u64) -> Option<Got> {
    let ifx = pair.client_ifindex();
    in_netns(&pair.ns[2], move || {
        let s = client_socket(546);
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let to = all_servers(ifx);
        let (xid, cid) = match &m {
            Message::Client(c) => (c.transaction_id, c.options.client_id().cloned()),
            _ => unreachable!(),
        };
        let bytes = m.encode().unwrap();
        let end = Instant::now() + Duration::from_secs(secs);
        let mut sent = Instant::now() - Duration::from_secs(10);
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            if sent.elapsed() >= Duration::from_secs(1) {
                let _ = s.send_to(&bytes, to);
                sent = Instant::now();
            }
            let Ok((n, _)) = s.recv_from(&mut buf) else { continue };
            let Ok(Message::Client(r)) = Message::decode(&buf[..n]) else { continue };
            if r.transaction_id != xid || r.msg_type != want || r.options.client_id().cloned() != cid {
                continue;
            }
            let Some(server) = r.options.server_id().cloned() else { continue };
            let addrs = r.options.ia_nas().flat_map(|ia| ia.options.ia_addrs().map(|a| (a.addr, a.preferred, a.valid)).collect::<Vec<_>>()).collect();
            let prefixes = r
                .options
                .ia_pds()
                .flat_map(|ia| ia.options.ia_prefixes().map(|p| (p.prefix, p.prefix_len, p.preferred, p.valid)).collect::<Vec<_>>())
                .collect();
            return Some(Got { server, addrs, prefixes, raw: format!("{r:?}") });
        }
        None
    })
}

fn ia_na(addr: Option<Ipv6Addr>) -> DhcpOption {
    let o: Vec<DhcpOption> = addr.map(|addr| DhcpOption::IaAddr(IaAddr { addr, preferred: 0, valid: 0, options: Options::new() })).into_iter().collect();
    DhcpOption::IaNa(IaNa { iaid: 1, t1: 0, t2: 0, options: o.into() })
}

fn ia_pd() -> DhcpOption {
    DhcpOption::IaPd(IaPd { iaid: 1, t1: 0, t2: 0, options: Options::new() })
}

fn msg(kind: MessageType, client: u64, xid: u32, server: Option<&Duid>, ias: Vec<DhcpOption>, rapid: bool) -> Message {
    let mut o = vec![DhcpOption::ClientId(duid(client)), DhcpOption::ElapsedTime(0)];
    if let Some(s) = server {
        o.push(DhcpOption::ServerId(s.clone()));
    }
    o.extend(ias);
    if rapid {
        o.push(DhcpOption::RapidCommit);
    }
    Message::Client(ClientMessage { msg_type: kind, transaction_id: xid & 0xff_ffff, options: o.into() })
}

/// Solicit → Advertise → Request → Reply for an IA_NA: the Reply.
#[track_caller]
fn solicit_request_na(pair: &Pair, client: u64, xid: u32, from: &Duid, what: &str) -> Got {
    let adv = talk(pair, msg(MessageType::Solicit, client, xid, None, vec![ia_na(None)], false), MessageType::Advertise, 4)
        .unwrap_or_else(|| panic!("{what}: no Advertise for client {client}\n{}", pair.logs()));
    assert_eq!(&adv.server, from, "{what}: the Advertise comes from the expected server: {adv:?}");
    let offered = adv.addrs.iter().find(|a| a.2 > 0).map(|a| a.0);
    assert!(offered.is_some(), "{what}: the Advertise offers an address: {adv:?}\n{}", pair.logs());
    let reply = talk(pair, msg(MessageType::Request, client, xid + 1, Some(&adv.server), vec![ia_na(offered)], false), MessageType::Reply, 4)
        .unwrap_or_else(|| panic!("{what}: no Reply to the Request of client {client}\n{}", pair.logs()));
    assert_eq!(&reply.server, from, "{what}: {reply:?}");
    reply
}

/// Rapid-commit Solicit with the given IAs: the Reply.
#[track_caller]
fn rapid(pair: &Pair, client: u64, xid: u32, ias: Vec<DhcpOption>, from: &Duid, what: &str) -> Got {
    let r = talk(pair, msg(MessageType::Solicit, client, xid, None, ias, true), MessageType::Reply, 4)
        .unwrap_or_else(|| panic!("{what}: no Reply for client {client}\n{}", pair.logs()));
    assert_eq!(&r.server, from, "{what}: {r:?}");
    r
}

fn server_duid(pair: &Pair, who: usize) -> Duid {
    Duid::from_hex(pair.ctl(who, "status")["server-duid"].as_str().unwrap()).unwrap()
}

fn odd(a: Ipv6Addr) -> bool {
    u128::from(a) & 1 == 1
}

/// Attach (or detach) `who`'s client-link port to the bridge: a server
/// the clients can (cannot) reach, its own interface staying up.
fn client_link(pair: &Pair, who: usize, up: bool) {
    let port = format!("{}b", pair.ifs[who]);
    let how = if up { "master br0" } else { "nomaster" };
    must(&format!("ip -n {} link set {port} {how}", pair.ns[3]));
    if up {
        must(&format!("ip -n {} link set {port} up", pair.ns[3]));
    }
}

/// (type, lease, duid, iaid, state) of `who`'s records of `keys`, sorted.
fn records_of(pair: &Pair, who: usize, keys: &[String]) -> Vec<(String, String, String, u64, String)> {
    let mut v: Vec<_> = pair
        .leases(who)
        .iter()
        .filter(|l| keys.iter().any(|k| l["lease"] == k.as_str()))
        .map(|l| {
            (
                l["type"].as_str().unwrap_or("?").to_string(),
                l["lease"].as_str().unwrap().to_string(),
                l["duid"].as_str().unwrap_or("").to_string(),
                l["iaid"].as_u64().unwrap_or(u64::MAX),
                l["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The pair's config with `[[subnet]]` keys added and another MCLT.
fn with_subnet_keys(cfg: String, keys: &str, mclt: u32) -> String {
    cfg.replacen("rapid-commit = true\n", &format!("rapid-commit = true\n{keys}\n"), 1).replacen("mclt = 10\n", &format!("mclt = {mclt}\n"), 1)
}

/// The address slice of `shard` of 2 (groups of two addresses, as the
/// shards' allocators slice a pool; see tests/e2e_operations.rs).
fn in_shard_slice(a: Ipv6Addr, shard: u32) -> bool {
    (u128::from(a) >> 1) % 2 == shard as u128
}

#[test]
fn a_reserved_address_is_granted_by_whichever_partner_the_client_reaches_in_communications_interrupted() {
    require_root!();
    let t0 = Instant::now();
    let mut pair = Pair::new("resv-ci");
    let certs = pair.gen_tls("tls");
    // D1 reserves an odd address (the primary's half, RFC 8156 §4.2.1.1),
    // chosen in the shard slice of the shard D1 does NOT hash to (both
    // servers run 2 shards): the reservation crosses slices.
    let (d1, d2, d3) = (1u64, 2u64, 3u64);
    let d1_shard = tandem::pool::hash::shard_of(duid(d1).as_bytes(), 2);
    let x1: Ipv6Addr = ["2001:db8:1::1a01", "2001:db8:1::1a03"].iter().map(|a| a.parse().unwrap()).find(|a: &Ipv6Addr| !in_shard_slice(*a, d1_shard)).unwrap();
    assert!(odd(x1));
    // D2 reserves one /56 of the pd-pool 2001:db8:100::/48.
    let p2: Ipv6Addr = "2001:db8:100:4d00::".parse().unwrap();
    let p2_key = format!("{p2}/56");
    let resv = format!(
        "reservations = [\n  {{ duid = \"{}\", address = \"{x1}\" }},\n  {{ duid = \"{}\", prefix = \"{p2_key}\" }},\n]",
        duid(d1).to_hex(),
        duid(d2).to_hex()
    );
    // An MCLT of 30 s: the CI grants (capped at it) outlive the resync.
    let mclt = 30;
    let pcfg = with_subnet_keys(pair.config(PRIMARY, "", &pair.tls(PRIMARY, &certs)), &resv, mclt);
    let scfg = with_subnet_keys(pair.config(SECONDARY, "", &pair.tls(SECONDARY, &certs)), &resv, mclt);
    pair.start(SECONDARY, &scfg, &[]);
    pair.start(PRIMARY, &pcfg, &[]);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    let (p, s) = (server_duid(&pair, PRIMARY), server_duid(&pair, SECONDARY));

    // Same reservations on both: same count and digest.
    let (rp, rs) = (pair.ctl(PRIMARY, "status")["reservations"].clone(), pair.ctl(SECONDARY, "status")["reservations"].clone());
    assert_eq!(rp["count"], 2, "{rp}");
    assert_eq!(rp, rs, "both partners report the same reservations");
    assert!(rp["digest"].as_str().is_some_and(|d| d.len() == 64), "{rp}");

    // The reserved prefix is never handed to the secondary as FREE-BACKUP:
    // wait until the primary has given it some, then look.
    let backup = |who: usize| pair.leases(who).iter().filter(|l| l["type"] == "pd" && l["state"] == "FREE-BACKUP").count();
    assert!(eventually(15, || backup(SECONDARY) > 0), "the secondary gets FREE-BACKUP prefixes in NORMAL:\n{}", pair.logs());
    let p2_at_s = pair.leases(SECONDARY).iter().find(|l| l["lease"] == p2_key.as_str()).map(|l| l["state"].clone());
    assert!(p2_at_s.as_ref().is_none_or(|st| st != "FREE-BACKUP"), "the reserved prefix is not the secondary's FREE-BACKUP: {p2_at_s:?}");
    eprintln!("NORMAL after {:?}; secondary FREE-BACKUP prefixes: {}; reserved prefix at the secondary: {p2_at_s:?}", t0.elapsed(), backup(SECONDARY));

    // Cut the failover link: both partners COMMUNICATIONS-INTERRUPTED.
    pair.fo_link(false);
    pair.wait_state(SECONDARY, "COMMUNICATIONS-INTERRUPTED", 30);
    pair.wait_state(PRIMARY, "COMMUNICATIONS-INTERRUPTED", 30);
    eprintln!("COMMUNICATIONS-INTERRUPTED after {:?}", t0.elapsed());

    // Only the secondary is reachable from the clients.
    client_link(&pair, PRIMARY, false);
    // D1: Solicit/Advertise/Request, IA_NA: its reserved (odd) address.
    let r1 = solicit_request_na(&pair, d1, 0x11_0000, &s, "D1 at the secondary in COMMUNICATIONS-INTERRUPTED");
    let a1: Vec<_> = r1.addrs.iter().filter(|a| a.2 > 0).collect();
    assert_eq!(a1.len(), 1, "D1 gets one address from the secondary: {}\n{}", r1.raw, pair.logs());
    assert_eq!(a1[0].0, x1, "D1 gets its reserved address (the primary's half) from the secondary: {}\n{}", r1.raw, pair.logs());
    assert!(a1[0].2 <= mclt && a1[0].1 <= a1[0].2, "the lifetimes are capped at the MCLT ({mclt} s): {:?}", a1[0]);
    // D2: rapid-commit Solicit, IA_PD: its reserved prefix.
    let r2 = rapid(&pair, d2, 0x12_0000, vec![ia_pd()], &s, "D2 at the secondary in COMMUNICATIONS-INTERRUPTED");
    let g2: Vec<_> = r2.prefixes.iter().filter(|p| p.3 > 0).collect();
    assert_eq!(g2.len(), 1, "D2 gets one prefix from the secondary: {}\n{}", r2.raw, pair.logs());
    assert_eq!((g2[0].0, g2[0].1), (p2, 56), "D2 gets its reserved prefix from the secondary: {}\n{}", r2.raw, pair.logs());
    assert!(g2[0].3 <= mclt && g2[0].2 <= g2[0].3, "the lifetimes are capped at the MCLT ({mclt} s): {:?}", g2[0]);
    // D3 (no reservation): an even address, the secondary's own half.
    let r3 = rapid(&pair, d3, 0x13_0000, vec![ia_na(None)], &s, "D3 at the secondary in COMMUNICATIONS-INTERRUPTED");
    let a3 = r3.addrs.iter().find(|a| a.2 > 0).unwrap_or_else(|| panic!("D3 gets an address: {}\n{}", r3.raw, pair.logs()));
    assert!(!odd(a3.0), "an unreserved client gets an even address from the secondary: {}", r3.raw);
    assert!(a3.2 <= mclt, "{a3:?}");
    eprintln!("secondary granted D1 {a1:?}, D2 {g2:?}, D3 {a3:?} after {:?}", t0.elapsed());

    // Now only the primary is reachable: the same client gets the same
    // reserved address and prefix from it (the same binding, on both).
    client_link(&pair, PRIMARY, true);
    client_link(&pair, SECONDARY, false);
    let q1 = solicit_request_na(&pair, d1, 0x21_0000, &p, "D1 at the primary in COMMUNICATIONS-INTERRUPTED");
    assert_eq!(q1.addrs.iter().filter(|a| a.2 > 0).map(|a| a.0).collect::<Vec<_>>(), [x1], "{}\n{}", q1.raw, pair.logs());
    let q2 = rapid(&pair, d2, 0x22_0000, vec![ia_pd()], &p, "D2 at the primary in COMMUNICATIONS-INTERRUPTED");
    assert_eq!(q2.prefixes.iter().filter(|p| p.3 > 0).map(|p| (p.0, p.1)).collect::<Vec<_>>(), [(p2, 56)], "{}\n{}", q2.raw, pair.logs());
    assert!(q1.addrs.iter().chain(&r1.addrs).all(|a| a.2 <= mclt) && q2.prefixes.iter().all(|p| p.3 <= mclt));
    client_link(&pair, SECONDARY, true);

    // The link heals: NORMAL on both, and both stores hold the reserved
    // leases with the same binding (client, IAID, state).
    pair.fo_link(true);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    eprintln!("NORMAL again after {:?}", t0.elapsed());
    let keys = [x1.to_string(), p2_key.clone()];
    let mut want = vec![
        ("na".to_string(), x1.to_string(), duid(d1).to_hex(), 1, "ACTIVE".to_string()),
        ("pd".to_string(), p2_key.clone(), duid(d2).to_hex(), 1, "ACTIVE".to_string()),
    ];
    want.sort();
    let agree = eventually(15, || records_of(&pair, PRIMARY, &keys) == want && records_of(&pair, SECONDARY, &keys) == want);
    assert!(
        agree,
        "the reserved leases agree on both partners:\nwant      {want:?}\nprimary   {:?}\nsecondary {:?}\n{}",
        records_of(&pair, PRIMARY, &keys),
        records_of(&pair, SECONDARY, &keys),
        pair.logs()
    );
    assert_eq!(pair.stop(PRIMARY, false), Some(0));
    assert_eq!(pair.stop(SECONDARY, false), Some(0));
    eprintln!("done after {:?}", t0.elapsed());
}

#[test]
fn a_partner_granting_a_key_reserved_for_another_client_gets_configuration_conflict() {
    require_root!();
    let t0 = Instant::now();
    let mut pair = Pair::new("resv-conflict");
    let certs = pair.gen_tls("tls");
    let (d1, d9) = (1u64, 9u64);
    // X: odd (the primary's half), in the pool, in the slice of D9's shard
    // at the primary (2 shards), so the primary honours it as a hint.
    let d9_shard = tandem::pool::hash::shard_of(duid(d9).as_bytes(), 2);
    let x: Ipv6Addr = ["2001:db8:1::1801", "2001:db8:1::1803"].iter().map(|a| a.parse().unwrap()).find(|a: &Ipv6Addr| in_shard_slice(*a, d9_shard)).unwrap();
    assert!(odd(x));
    let resv = format!("reservations = [{{ duid = \"{}\", address = \"{x}\" }}]", duid(d1).to_hex());
    // Only the secondary reserves X (for D1).
    let pcfg = pair.config(PRIMARY, "", &pair.tls(PRIMARY, &certs));
    let scfg = with_subnet_keys(pair.config(SECONDARY, "", &pair.tls(SECONDARY, &certs)), &resv, 10);
    pair.start(SECONDARY, &scfg, &[]);
    pair.start(PRIMARY, &pcfg, &[]);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    let p = server_duid(&pair, PRIMARY);

    // ctl status shows the difference: 0 vs 1 reservation, other digests.
    let (rp, rs) = (pair.ctl(PRIMARY, "status")["reservations"].clone(), pair.ctl(SECONDARY, "status")["reservations"].clone());
    assert_eq!(rp["count"], 0, "{rp}");
    assert_eq!(rs["count"], 1, "{rs}");
    assert!(rp["digest"].is_string() && rs["digest"].is_string(), "{rp} {rs}");
    assert_ne!(rp["digest"], rs["digest"], "the digests differ");

    // D9 asks the primary for X (a hint): the primary, which reserves
    // nothing, grants it and sends a BNDUPD.
    let r = talk(&pair, msg(MessageType::Solicit, d9, 0x19_0000, None, vec![ia_na(Some(x))], true), MessageType::Reply, 4)
        .unwrap_or_else(|| panic!("no Reply for D9\n{}", pair.logs()));
    assert_eq!(r.server, p, "only the primary answers in NORMAL: {r:?}");
    assert_eq!(r.addrs.iter().filter(|a| a.2 > 0).map(|a| a.0).collect::<Vec<_>>(), [x], "the primary grants the hint X: {}\n{}", r.raw, pair.logs());

    // The secondary answers the update ConfigurationConflict and says why.
    let needle = "partner granted a key reserved here for another client";
    assert!(eventually(15, || pair.log(SECONDARY).contains(needle)), "the secondary logs the conflict:\n{}", pair.logs());
    let line = pair.log(SECONDARY).lines().find(|l| l.contains(needle)).unwrap().to_string();
    eprintln!("secondary: {line}");
    assert!(line.contains(&x.to_string()), "the warning names the key: {line}");
    // It stores the binding all the same (README "Reservations"): while D9
    // may hold X, the secondary's reserved client must not get it. The
    // primary's record stays unacknowledged (it is sent again).
    std::thread::sleep(Duration::from_secs(2));
    let at_s: Vec<_> = pair.leases(SECONDARY).into_iter().filter(|l| l["lease"] == x.to_string().as_str()).collect();
    assert!(
        at_s.iter().any(|l| l["state"] == "ACTIVE" && l["duid"] == duid(d9).to_hex().as_str()),
        "the secondary stores X as D9's: {at_s:?}\n{}",
        pair.logs()
    );
    let at_p: Vec<_> = pair.leases(PRIMARY).into_iter().filter(|l| l["lease"] == x.to_string().as_str()).collect();
    assert!(at_p.iter().any(|l| l["state"] == "ACTIVE" && l["update-partner"] == true), "the primary's update is not acknowledged: {at_p:?}");
    eprintln!("X at the secondary: {at_s:?}\nX at the primary: {at_p:?}");
    let conflicts = pair.log(PRIMARY).lines().filter(|l| l.to_lowercase().contains("conflict")).map(str::to_string).collect::<Vec<_>>();
    eprintln!("primary's log lines on the conflict: {conflicts:?}");
    // An update answered ConfigurationConflict is not a reason to leave NORMAL.
    assert_eq!((pair.state(PRIMARY), pair.state(SECONDARY)), ("NORMAL".to_string(), "NORMAL".to_string()), "{}", pair.logs());
    assert_eq!(pair.stop(PRIMARY, false), Some(0));
    assert_eq!(pair.stop(SECONDARY, false), Some(0));
    eprintln!("done after {:?}", t0.elapsed());
}
