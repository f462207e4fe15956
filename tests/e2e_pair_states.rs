//! Two real `tandem` processes as a failover pair, clients asking for an
//! address (IA_NA) and a delegated prefix (IA_PD) together, in every state
//! that serves clients (RFC 8156 §8): NORMAL (the primary), COMMUNICATIONS-
//! INTERRUPTED and PARTNER-DOWN (each role that serves there), RECOVER-DONE
//! (renewals only); with a 256-prefix pool, with a /32 pool delegating /64s
//! (2^32 prefixes, never walked) and with partners that run different
//! shard counts. Needs root; CI runs it as root.

mod common;

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use common::pair::*;
use common::*;
use tandem::wire::*;

/// What one client holds after an exchange: address, prefix, the server
/// that answered, and until when (unix seconds) each is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    addr: Ipv6Addr,
    prefix: (Ipv6Addr, u8),
    server: Duid,
    /// When the answer arrived (unix seconds, at most a burst late).
    at: u64,
    addr_until: u64,
    prefix_until: u64,
}

impl Held {
    /// Both an address and a prefix from `a`, or None.
    fn from(a: &Answer) -> Option<Held> {
        let now = unix_now();
        let addr = a.addrs.iter().find(|(_, v)| *v > 0)?;
        let prefix = a.prefixes.iter().find(|(_, _, v)| *v > 0)?;
        Some(Held {
            addr: addr.0,
            prefix: (prefix.0, prefix.1),
            server: a.server.clone(),
            at: now,
            addr_until: now + addr.1 as u64,
            prefix_until: now + prefix.2 as u64,
        })
    }
}

/// Send every message at once (retransmitting the unanswered each second)
/// and collect every Reply for `secs`: per client, one answer per server.
fn burst(pair: &Pair, msgs: Vec<(u64, Message)>, secs: u64) -> HashMap<u64, Vec<Answer>> {
    let ifx = pair.client_ifindex();
    in_netns(&pair.ns[2], move || {
        let s = client_socket(546);
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let to = all_servers(ifx);
        let xid_of = |m: &Message| match m {
            Message::Client(c) => c.transaction_id,
            _ => unreachable!(),
        };
        let by_xid: HashMap<u32, u64> = msgs.iter().map(|(c, m)| (xid_of(m), *c)).collect();
        let mut got: HashMap<u64, HashMap<Duid, Answer>> = HashMap::new();
        let end = Instant::now() + Duration::from_secs(secs);
        let mut sent = Instant::now() - Duration::from_secs(10);
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            if sent.elapsed() >= Duration::from_secs(1) {
                for (c, m) in &msgs {
                    if !got.contains_key(c) {
                        let _ = s.send_to(&m.encode().unwrap(), to);
                    }
                }
                sent = Instant::now();
            }
            let Ok((n, _)) = s.recv_from(&mut buf) else { continue };
            let Ok(Message::Client(r)) = Message::decode(&buf[..n]) else { continue };
            let Some(c) = by_xid.get(&r.transaction_id) else { continue };
            if r.msg_type != MessageType::Reply || r.options.client_id() != Some(&duid(*c)) {
                continue;
            }
            let Some(server) = r.options.server_id().cloned() else { continue };
            let addrs = r.options.ia_nas().flat_map(|ia| ia.options.ia_addrs().map(|a| (a.addr, a.valid)).collect::<Vec<_>>()).collect();
            let prefixes = r
                .options
                .ia_pds()
                .flat_map(|ia| ia.options.ia_prefixes().map(|p| (p.prefix, p.prefix_len, p.valid)).collect::<Vec<_>>())
                .collect();
            got.entry(*c).or_default().insert(server.clone(), Answer { server, addrs, prefixes });
        }
        got.into_iter().map(|(c, m)| (c, m.into_values().collect())).collect()
    })
}

/// Rapid-commit Solicits (IA_NA + IA_PD) for `clients`.
fn solicit_na_pd(pair: &Pair, clients: impl IntoIterator<Item = u64>, secs: u64) -> HashMap<u64, Vec<Answer>> {
    let msgs = clients.into_iter().map(|c| (c, ask(MessageType::Solicit, c, 0x10_0000 | c as u32, None, None, None))).collect();
    burst(pair, msgs, secs)
}

/// Rebind (no Server ID) or Renew (to `server`) each client's address and prefix.
fn extend(pair: &Pair, kind: MessageType, held: &HashMap<u64, Held>, server: Option<&Duid>, secs: u64) -> HashMap<u64, Vec<Answer>> {
    let msgs = held
        .iter()
        .map(|(c, h)| {
            let xid = if kind == MessageType::Renew { 0x20_0000 } else { 0x30_0000 } | *c as u32;
            (*c, ask(kind, *c, xid, server.or(Some(&h.server)).filter(|_| kind != MessageType::Rebind), Some(h.addr), Some(h.prefix)))
        })
        .collect();
    burst(pair, msgs, secs)
}

/// Every answer of `from` grants an address and a prefix; returns them.
#[track_caller]
fn grants_both(pair: &Pair, answers: &HashMap<u64, Vec<Answer>>, from: &Duid, what: &str) -> HashMap<u64, Held> {
    let mut out = HashMap::new();
    for (c, ans) in answers {
        for a in ans.iter().filter(|a| &a.server == from) {
            match Held::from(a) {
                Some(h) => {
                    out.insert(*c, h);
                }
                None => panic!("{what}: client {c} got no address and prefix from {from}: {a:?}\n{}", pair.logs()),
            }
        }
    }
    out
}

/// The server DUID of `who` (from `ctl status`).
fn server_duid(pair: &Pair, who: usize) -> Duid {
    Duid::from_hex(pair.ctl(who, "status")["server-duid"].as_str().unwrap()).unwrap()
}

/// No address or prefix is held by two clients at once. A grant holds from
/// a few seconds before its answer arrived (the burst) to the end of its
/// valid lifetime; MCLT-capped first grants end early and may be reused.
#[track_caller]
fn check_unique(all: &[(u64, Held)]) {
    let overlap = |a: (u64, u64), b: (u64, u64)| a.0 <= b.1 + 1 && b.0 <= a.1 + 1;
    for (i, (c, x)) in all.iter().enumerate() {
        for (d, y) in &all[i + 1..] {
            if c == d {
                continue;
            }
            if x.addr == y.addr {
                assert!(!overlap((x.at - 5, x.addr_until), (y.at - 5, y.addr_until)), "{} held by clients {c} and {d} at once: {x:?} {y:?}", x.addr);
            }
            if x.prefix == y.prefix {
                assert!(!overlap((x.at - 5, x.prefix_until), (y.at - 5, y.prefix_until)), "{:?} held by clients {c} and {d} at once: {x:?} {y:?}", x.prefix);
            }
        }
    }
}

/// Answers of `from`: the clients given an address and a prefix; every
/// answer must carry a prefix (the address pool may run out).
#[track_caller]
fn split(pair: &Pair, answers: &HashMap<u64, Vec<Answer>>, from: &Duid, what: &str) -> HashMap<u64, Held> {
    let mut both = HashMap::new();
    for (c, ans) in answers {
        let a = ans.iter().find(|a| &a.server == from).unwrap_or_else(|| panic!("{what}: client {c} unanswered\n{}", pair.logs()));
        assert!(a.prefixes.iter().any(|p| p.2 > 0), "{what}: client {c} gets a prefix: {a:?}");
        if let Some(h) = Held::from(a) {
            both.insert(*c, h);
        }
    }
    both
}

fn active(set: &[(String, String, String)]) -> Vec<(String, String)> {
    set.iter().filter(|(_, _, s)| s == "ACTIVE").map(|(l, d, _)| (l.clone(), d.clone())).collect()
}

#[track_caller]
fn stores_agree(pair: &Pair, when: &str) {
    if eventually(30, || active(&pair.lease_set(SECONDARY)) == active(&pair.lease_set(PRIMARY))) {
        return;
    }
    let (p, s) = (pair.lease_set(PRIMARY), pair.lease_set(SECONDARY));
    let only_p: Vec<_> = p.iter().filter(|x| !s.contains(x)).collect();
    let only_s: Vec<_> = s.iter().filter(|x| !p.contains(x)).collect();
    panic!("stores differ {when}:\nonly at the primary {only_p:?}\nonly at the secondary {only_s:?}\n{}", pair.logs());
}

fn odd(a: Ipv6Addr) -> bool {
    u128::from(a) & 1 == 1
}

/// The pair's config with another PD pool.
fn with_pd(cfg: String, pools: &str) -> String {
    cfg.replace(r#"pd-pools = [{ prefix = "2001:db8:100::/48", delegated-length = 56 }]"#, &format!("pd-pools = [{pools}]"))
}

#[test]
fn na_and_pd_in_every_serving_state_with_256_prefixes() {
    require_root!();
    let mut pair = Pair::new("states");
    let certs = pair.gen_tls("tls");
    // A configured DUID: the primary keeps it when it loses its store.
    let p_duid = "000300010a0000000001";
    let pcfg = format!("server-duid = \"{p_duid}\"\n{}", pair.config(PRIMARY, "", &pair.tls(PRIMARY, &certs)));
    let scfg = pair.config(SECONDARY, "auto-partner-down = 6", &pair.tls(SECONDARY, &certs));
    pair.start(SECONDARY, &scfg, &[]);
    pair.start(PRIMARY, &pcfg, &[]);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    let (p, s) = (server_duid(&pair, PRIMARY), server_duid(&pair, SECONDARY));
    assert_eq!(p.to_hex(), p_duid);
    let mut all: Vec<(u64, Held)> = Vec::new();

    // NORMAL: the primary alone answers, with an odd address and a prefix.
    let normal = solicit_na_pd(&pair, 1..=16, 3);
    assert_eq!(normal.len(), 16, "{}", pair.logs());
    assert!(normal.values().all(|a| a.len() == 1 && a[0].server == p), "only the primary answers in NORMAL: {normal:?}");
    let first = grants_both(&pair, &normal, &p, "NORMAL");
    assert!(first.values().all(|h| odd(h.addr)));
    all.extend(first.clone());
    stores_agree(&pair, "in NORMAL");

    // kill -9 the primary: the secondary in COMMUNICATIONS-INTERRUPTED keeps
    // the primary's clients on their address and prefix (Rebind) and serves
    // new ones; in PARTNER-DOWN (auto after 6 s) it serves new ones too.
    pair.stop(PRIMARY, true);
    pair.wait_state(SECONDARY, "COMMUNICATIONS-INTERRUPTED", 20);
    let rebound = extend(&pair, MessageType::Rebind, &first, None, 2);
    let kept = grants_both(&pair, &rebound, &s, "Rebind at the secondary in COMMUNICATIONS-INTERRUPTED");
    assert_eq!(kept.len(), first.len(), "{rebound:?}\n{}", pair.logs());
    for (c, h) in &kept {
        assert_eq!((h.addr, h.prefix), (first[c].addr, first[c].prefix), "client {c} keeps its address and prefix");
    }
    let ci2 = grants_both(&pair, &solicit_na_pd(&pair, 201..=208, 3), &s, "secondary alone in COMMUNICATIONS-INTERRUPTED");
    assert_eq!(ci2.len(), 8, "{}", pair.logs());
    all.extend(ci2);
    pair.wait_state(SECONDARY, "PARTNER-DOWN", 30);
    let pd = grants_both(&pair, &solicit_na_pd(&pair, 301..=316, 3), &s, "PARTNER-DOWN");
    assert_eq!(pd.len(), 16, "the secondary in PARTNER-DOWN gives addresses and prefixes to every client\n{}", pair.logs());
    all.extend(pd);
    check_unique(&all);

    // The primary comes back having lost its store (same DUID): RECOVER,
    // UPDREQALL, RECOVER-WAIT (start + MCLT). Cut the link there: the timer
    // still runs (§8.6.2) and the primary stays in RECOVER-DONE (§8.7.2),
    // where it renews the leases it knows (§8.7.1) and allocates nothing.
    std::fs::remove_dir_all(pair.data(PRIMARY)).unwrap();
    pair.start(PRIMARY, &pcfg, &[]);
    pair.wait_state(PRIMARY, "RECOVER-WAIT", 30);
    pair.fo_link(false);
    pair.wait_state(PRIMARY, "RECOVER-DONE", 30);
    let renewed = extend(&pair, MessageType::Renew, &first, Some(&p), 3);
    let renewed = grants_both(&pair, &renewed, &p, "Renew in RECOVER-DONE");
    assert_eq!(renewed.len(), first.len(), "the primary renews in RECOVER-DONE\n{}", pair.logs());
    for (c, h) in &renewed {
        assert_eq!((h.addr, h.prefix), (first[c].addr, first[c].prefix), "client {c} renews its address and prefix");
    }
    let fresh = solicit_na_pd(&pair, 401..=404, 2);
    for (c, ans) in &fresh {
        for a in ans.iter().filter(|a| a.server == p) {
            assert_eq!(a.held(), (None, None), "client {c}: RECOVER-DONE allocates nothing: {a:?}");
        }
    }
    // (The secondary, still in PARTNER-DOWN, serves those clients.)
    for (c, ans) in &fresh {
        all.extend(ans.iter().filter(|a| a.server == s).filter_map(Held::from).map(|h| (*c, h)));
    }

    // The link heals: both NORMAL, the stores agree.
    pair.fo_link(true);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    stores_agree(&pair, "after recovery");

    // COMMUNICATIONS-INTERRUPTED (link cut): both serve new clients, each
    // from its own share, addresses and prefixes both.
    pair.fo_link(false);
    pair.wait_state(PRIMARY, "COMMUNICATIONS-INTERRUPTED", 30);
    pair.wait_state(SECONDARY, "COMMUNICATIONS-INTERRUPTED", 30);
    let ci = solicit_na_pd(&pair, 101..=116, 3);
    let from_s = grants_both(&pair, &ci, &s, "secondary in COMMUNICATIONS-INTERRUPTED");
    let from_p = grants_both(&pair, &ci, &p, "primary in COMMUNICATIONS-INTERRUPTED");
    assert_eq!(from_s.len(), 16, "the secondary serves every client in COMMUNICATIONS-INTERRUPTED: {ci:?}\n{}", pair.logs());
    assert_eq!(from_p.len(), 16, "the primary serves every client in COMMUNICATIONS-INTERRUPTED: {ci:?}");
    assert!(from_s.values().all(|h| !odd(h.addr)) && from_p.values().all(|h| odd(h.addr)));
    // A client holds both servers' grants; both stay unique across clients.
    all.extend(from_s.into_iter().chain(from_p));
    check_unique(&all);
    pair.fo_link(true);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    stores_agree(&pair, "after the partition");
    let again = grants_both(&pair, &solicit_na_pd(&pair, 501..=508, 3), &p, "NORMAL after the partition");
    assert_eq!(again.len(), 8);
    all.extend(again);
    check_unique(&all);

    assert_eq!(pair.stop(PRIMARY, false), Some(0));
    assert_eq!(pair.stop(SECONDARY, false), Some(0));
}

#[test]
fn a_32_pool_of_64s_reaches_normal_and_the_secondary_delegates() {
    require_root!();
    let mut pair = Pair::new("pd32");
    let certs = pair.gen_tls("tls");
    let pool = r#"{ prefix = "3fff:100::/32", delegated-length = 64 }"#;
    let pcfg = with_pd(pair.config(PRIMARY, "", &pair.tls(PRIMARY, &certs)), pool);
    let scfg = with_pd(pair.config(SECONDARY, "auto-partner-down = 6", &pair.tls(SECONDARY, &certs)), pool);
    pair.start(SECONDARY, &scfg, &[]);
    pair.start(PRIMARY, &pcfg, &[]);
    // 2^32 prefixes: counted and handed over without a walk.
    pair.wait_state(PRIMARY, "NORMAL", 30);
    pair.wait_state(SECONDARY, "NORMAL", 30);
    let (p, s) = (server_duid(&pair, PRIMARY), server_duid(&pair, SECONDARY));
    let mut all: Vec<(u64, Held)> = Vec::new();
    let normal = grants_both(&pair, &solicit_na_pd(&pair, 1..=8, 3), &p, "NORMAL");
    assert_eq!(normal.len(), 8);
    assert!(normal.values().all(|h| h.prefix.1 == 64));
    all.extend(normal);

    pair.fo_link(false);
    pair.wait_state(SECONDARY, "COMMUNICATIONS-INTERRUPTED", 30);
    let ci = grants_both(&pair, &solicit_na_pd(&pair, 101..=108, 3), &s, "secondary in COMMUNICATIONS-INTERRUPTED");
    assert_eq!(ci.len(), 8, "{}", pair.logs());
    all.extend(ci);
    pair.fo_link(true);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);

    pair.stop(PRIMARY, true);
    pair.wait_state(SECONDARY, "PARTNER-DOWN", 30);
    let pd = grants_both(&pair, &solicit_na_pd(&pair, 201..=216, 3), &s, "PARTNER-DOWN");
    assert_eq!(pd.len(), 16, "{}", pair.logs());
    all.extend(pd);
    check_unique(&all);
    assert!(all.iter().all(|(_, h)| h.prefix.0.segments()[0] == 0x3fff && h.prefix.1 == 64));
}

#[test]
fn partners_with_different_shard_counts_keep_clients_on_their_address_and_prefix() {
    require_root!();
    let mut pair = Pair::new("shards");
    let certs = pair.gen_tls("tls");
    // 16 addresses (8 per server, in slices over the shards), 256 prefixes.
    let small = |c: String| c.replace("2001:db8:1::1000-2001:db8:1::1fff", "2001:db8:1::1000-2001:db8:1::100f");
    let pcfg = small(pair.config(PRIMARY, "", &pair.tls(PRIMARY, &certs)));
    let scfg = small(pair.config(SECONDARY, "auto-partner-down = 4", &pair.tls(SECONDARY, &certs)));
    // Primary 1 shard, secondary 3.
    pair.start_with(SECONDARY, &scfg, 3, "debug", &[]);
    pair.start_with(PRIMARY, &pcfg, 1, "debug", &[]);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    let (p, s) = (server_duid(&pair, PRIMARY), server_duid(&pair, SECONDARY));
    let mut all: Vec<(u64, Held)> = Vec::new();
    // 30 clients use up the primary's 8 addresses (one shard); every one
    // gets a prefix. A Rebind gives the full lifetime (first grants are
    // capped at the MCLT).
    let from_p = split(&pair, &solicit_na_pd(&pair, 1..=30, 3), &p, "NORMAL, 1 vs 3 shards");
    assert_eq!(from_p.len(), 8, "{}", pair.logs());
    stores_agree(&pair, "1 vs 3 shards");
    let from_p = grants_both(&pair, &extend(&pair, MessageType::Rebind, &from_p, None, 2), &p, "Rebind at the primary");
    assert!(from_p.values().all(|h| h.addr_until > h.at + 60), "{from_p:?}");
    all.extend(from_p.clone());

    // The secondary alone (PARTNER-DOWN, 3 shards): its grants come from
    // records at each key's slice owner (FREE-BACKUP prefixes, never-used
    // addresses) and must land at the client's shard: a Rebind finds them.
    pair.stop(PRIMARY, true);
    pair.wait_state(SECONDARY, "PARTNER-DOWN", 30);
    let from_s = split(&pair, &solicit_na_pd(&pair, 31..=50, 3), &s, "PARTNER-DOWN, 3 shards");
    assert!(from_s.len() >= 4, "{from_s:?}\n{}", pair.logs());
    let rebound = grants_both(&pair, &extend(&pair, MessageType::Rebind, &from_s, None, 2), &s, "Rebind at the secondary");
    assert_eq!(rebound.len(), from_s.len());
    for (c, h) in &rebound {
        assert_eq!((h.addr, h.prefix), (from_s[c].addr, from_s[c].prefix), "client {c}");
    }
    all.extend(rebound.clone());
    check_unique(&all);
    let mut held: HashMap<u64, Held> = from_p.clone();
    held.extend(rebound);

    // The primary returns with 2 shards (a --shards change re-homes its
    // store): recovery, NORMAL; every client rebinds at the primary with
    // the address and prefix it holds.
    pair.start_with(PRIMARY, &pcfg, 2, "debug", &[]);
    pair.wait_state(PRIMARY, "NORMAL", 90);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    stores_agree(&pair, "2 vs 3 shards");
    let at_p = grants_both(&pair, &extend(&pair, MessageType::Rebind, &held, None, 3), &p, "Rebind at the primary, 2 shards");
    assert_eq!(at_p.len(), held.len(), "{}", pair.logs());
    for (c, h) in &at_p {
        assert_eq!((h.addr, h.prefix), (held[c].addr, held[c].prefix), "client {c}");
    }
    all.extend(at_p.clone());

    // A re-grant (H5 case 2): one of the primary's clients releases; its
    // record, homed at its client's shard since the --shards change, goes
    // back to its slice owner; the address is the primary's only free one,
    // so the next new client of that slice gets it, and keeps it on a Rebind.
    let (&x, hx) = from_p.iter().min_by_key(|(c, _)| **c).unwrap();
    let hx = hx.clone();
    let released = extend(&pair, MessageType::Release, &HashMap::from([(x, hx.clone())]), Some(&p), 2);
    assert!(released.contains_key(&x), "Release answered: {}", pair.logs());
    let mut regrant: Option<(u64, Held)> = None;
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut next = 100;
    while regrant.is_none() && Instant::now() < deadline {
        let r = solicit_na_pd(&pair, next..next + 10, 2);
        next += 10;
        regrant = r.iter().find_map(|(c, ans)| Some((*c, Held::from(ans.iter().find(|a| a.server == p)?)?)));
    }
    let (y, hy) = regrant.unwrap_or_else(|| panic!("nobody got the released address\n{}", pair.logs()));
    assert_eq!(hy.addr, hx.addr, "the released address is re-granted");
    let again = grants_both(&pair, &extend(&pair, MessageType::Rebind, &HashMap::from([(y, hy.clone())]), None, 2), &p, "Rebind of the re-grant");
    assert_eq!((again[&y].addr, again[&y].prefix), (hy.addr, hy.prefix));
    all.retain(|(c, _)| *c != x);
    all.push((y, hy.clone()));
    check_unique(&all);
    held.remove(&x);
    held.insert(y, hy);
    stores_agree(&pair, "after the re-grant");

    // The secondary returns with 1 shard (2 vs 1); then the primary dies and
    // the secondary, now one shard, renews everyone.
    assert_eq!(pair.stop(SECONDARY, false), Some(0));
    pair.start_with(SECONDARY, &scfg, 1, "debug", &[]);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    stores_agree(&pair, "2 vs 1 shards");
    pair.stop(PRIMARY, true);
    pair.wait_state(SECONDARY, "COMMUNICATIONS-INTERRUPTED", 20);
    let at_s = grants_both(&pair, &extend(&pair, MessageType::Rebind, &held, None, 3), &s, "Rebind at the secondary, 1 shard");
    assert_eq!(at_s.len(), held.len(), "{}", pair.logs());
    for (c, h) in &at_s {
        assert_eq!((h.addr, h.prefix), (held[c].addr, held[c].prefix), "client {c}");
    }
}
