//! Hub and spoke (issue 21): one hub server in two failover relationships,
//! "site-a" with server A and "site-b" with server B, each covering its own
//! subnet, both on one listen address. Site A dies and the hub takes over
//! its subnet alone (PARTNER-DOWN for site-a) while site-b stays NORMAL;
//! A returns, recovers, and learns the hub's grants. Three real `tandem`
//! processes in network namespaces. Needs root; CI runs it as root.

mod common;

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use common::hub::*;
use common::pair::{Answer, ask};
use common::*;
use tandem::wire::*;

/// What a client holds after an exchange (the shorter of the two valid lifetimes).
#[derive(Debug, Clone)]
struct Held {
    addr: Ipv6Addr,
    prefix: (Ipv6Addr, u8),
    valid: u32,
}

/// Every client of `clients` answered by `from` with an address and a
/// prefix (and, when `alone`, by no other server); what each got.
#[track_caller]
fn served_by(hub: &Hub, answers: &HashMap<u64, Vec<Answer>>, clients: RangeInclusive<u64>, from: &Duid, alone: bool, what: &str) -> HashMap<u64, Held> {
    clients
        .map(|c| {
            let ans = answers.get(&c).map(Vec::as_slice).unwrap_or_default();
            assert!(!alone || ans.iter().all(|a| &a.server == from), "{what}: client {c} answered by another server than {from:?}: {ans:?}\n{}", hub.logs());
            let a = ans.iter().find(|a| &a.server == from).unwrap_or_else(|| panic!("{what}: client {c} not answered by {from:?}: {ans:?}\n{}", hub.logs()));
            let (Some(&(addr, av)), Some(&(p, len, pv))) = (a.addrs.iter().find(|x| x.1 > 0), a.prefixes.iter().find(|x| x.2 > 0)) else {
                panic!("{what}: client {c} got no address and prefix: {a:?}\n{}", hub.logs())
            };
            (c, Held { addr, prefix: (p, len), valid: av.min(pv) })
        })
        .collect()
}

/// Rapid-commit Solicits (IA_NA + IA_PD) for `clients` on `link`.
fn solicit_na_pd(hub: &Hub, link: usize, clients: RangeInclusive<u64>) -> HashMap<u64, Vec<Answer>> {
    let msgs = clients.map(|c| (c, ask(MessageType::Solicit, c, 0x10_0000 | c as u32, None, None, None))).collect();
    hub.burst(link, msgs, 4)
}

/// Rebind (no Server ID) each client's address and prefix on `link`.
fn rebind(hub: &Hub, link: usize, held: &HashMap<u64, Held>, xid: u32) -> HashMap<u64, Vec<Answer>> {
    let msgs = held.iter().map(|(c, h)| (*c, ask(MessageType::Rebind, *c, xid | *c as u32, None, Some(h.addr), Some(h.prefix)))).collect();
    hub.burst(link, msgs, 3)
}

/// Link A or B: which client link an address or delegated prefix ("ADDR" or "PREFIX/LEN") belongs to.
fn link_of(lease: &str) -> Option<usize> {
    let a: Ipv6Addr = lease.split('/').next()?.parse().ok()?;
    match a.segments()[2] {
        1 | 0x100 => Some(LINK_A),
        2 | 0x200 => Some(LINK_B),
        _ => None,
    }
}

/// The address is in `link`'s pool and the prefix a /56 of its PD pool.
fn in_pools(link: usize, h: &Held) -> bool {
    let n = link as u16 + 1;
    let a = h.addr.segments();
    a[..3] == [0x2001, 0xdb8, n] && a[3..7] == [0; 4] && (0x1000..=0x1fff).contains(&a[7]) && h.prefix.0.segments()[..3] == [0x2001, 0xdb8, n << 8] && h.prefix.1 == 56
}

/// The dump entries of `held`: (lease, duid hex).
fn entries(held: &HashMap<u64, Held>) -> Vec<(String, String)> {
    held.iter()
        .flat_map(|(c, h)| {
            let d = duid(*c).to_hex().to_ascii_lowercase();
            [(h.addr.to_string(), d.clone()), (format!("{}/{}", h.prefix.0, h.prefix.1), d)]
        })
        .collect()
}

/// `who`'s dump comes to hold every lease of `held` ACTIVE, for its client.
#[track_caller]
fn wait_holds(hub: &Hub, who: usize, held: &HashMap<u64, Held>, what: &str) {
    let want = entries(held);
    let missing = |hub: &Hub| {
        let act = hub.active(who);
        want.iter().filter(|(l, d)| act.get(l).is_none_or(|(x, _)| x != d)).cloned().collect::<Vec<_>>()
    };
    if !eventually(30, || missing(hub).is_empty()) {
        panic!("{what}: {} lacks ACTIVE leases {:?}\n{}", SERVER_NAMES[who], missing(hub), hub.logs());
    }
}

/// site-b is NORMAL at the hub and at B.
#[track_caller]
fn site_b_normal(hub: &Hub, when: &str) {
    let r = hub.relationship(HUB, "site-b");
    assert_eq!(r["state"], "NORMAL", "{when}: the hub's site-b: {r}\n{}", hub.logs());
    assert_eq!(hub.state(B), "NORMAL", "{when}: B\n{}", hub.logs());
}

#[test]
fn hub_serves_a_dead_sites_subnet_while_the_other_relationship_stays_normal() {
    require_root!();
    if !tool("ip") {
        eprintln!("SKIPPED: this end-to-end test needs `ip` (iproute2); tests/run.sh installs it");
        return;
    }
    let mut hub = Hub::new("spokes");
    let certs = hub.gen_tls("tls");
    let hcfg = hub.hub_config(&certs, ["", ""]);
    let acfg = hub.site_config(A, &certs, "");
    let bcfg = hub.site_config(B, &certs, "");

    // a. Hub (2 shards), A (2 shards), B (1 shard): every relationship NORMAL.
    hub.start(HUB, &hcfg, 2);
    hub.start(A, &acfg, 2);
    hub.start(B, &bcfg, 1);
    hub.wait_relationship_state(HUB, "site-a", "NORMAL", 60);
    hub.wait_relationship_state(HUB, "site-b", "NORMAL", 60);
    hub.wait_state(A, "NORMAL", 30);
    hub.wait_state(B, "NORMAL", 30);
    let st = hub.status(HUB);
    for (l, name) in RELATIONSHIPS.iter().enumerate() {
        let r = hub.relationship(HUB, name);
        assert_eq!(r["role"], "secondary", "{st}");
        assert_eq!(r["partner-state"], "NORMAL", "{st}");
        assert_eq!(r["communications"], "ok", "{st}");
        assert!(r["unacked-bndupd"].is_u64(), "{st}");
        assert_eq!(r["subnets"], serde_json::json!([LINKS[l].0]), "{st}");
    }
    assert_eq!(st["failover"]["role"], "secondary", "the first relationship stays in `failover`: {st}");
    let (hd, ad, bd) = (hub.server_duid(HUB), hub.server_duid(A), hub.server_duid(B));

    // b. 8 clients per link, an address and a prefix each: A answers its
    //    link alone, B its own; the hub's store gets all 16 (BNDUPDs of both
    //    relationships). A Rebind once acked gets the full lifetime (first
    //    grants are capped at the MCLT), so nothing expires during the test.
    let mut sa = served_by(&hub, &solicit_na_pd(&hub, LINK_A, 1..=8), 1..=8, &ad, true, "link A in NORMAL");
    let mut sb = served_by(&hub, &solicit_na_pd(&hub, LINK_B, 101..=108), 101..=108, &bd, true, "link B in NORMAL");
    assert!(sa.values().all(|h| in_pools(LINK_A, h)), "link A's pools: {sa:?}");
    assert!(sb.values().all(|h| in_pools(LINK_B, h)), "link B's pools: {sb:?}");
    wait_holds(&hub, HUB, &sa, "site-a's BNDUPDs");
    wait_holds(&hub, HUB, &sb, "site-b's BNDUPDs");
    for (link, held, from, first) in [(LINK_A, &mut sa, &ad, 1), (LINK_B, &mut sb, &bd, 101)] {
        let mut full = HashMap::new();
        let ok = eventually(15, || {
            full = served_by(&hub, &rebind(&hub, link, held, 0x20_0000), first..=first + 7, from, false, "Rebind in NORMAL");
            full.values().all(|h| h.valid > 60)
        });
        assert!(ok, "link {link}: a Rebind gets the full lifetime once the hub acked: {full:?}\n{}", hub.logs());
        for (c, h) in &full {
            assert_eq!((h.addr, h.prefix), (held[c].addr, held[c].prefix), "client {c} keeps its address and prefix");
        }
        *held = full;
    }

    // c. A dies: the hub's site-a alone goes COMMUNICATIONS-INTERRUPTED.
    //    partner-down needs --relationship on a server with two.
    hub.stop(A, true);
    hub.wait_relationship_state(HUB, "site-a", "COMMUNICATIONS-INTERRUPTED", 20);
    assert_eq!(hub.relationship(HUB, "site-a")["communications"], "interrupted", "{}", hub.status(HUB));
    site_b_normal(&hub, "after A died");
    let r = hub.ctl(HUB, &["partner-down"]);
    assert_eq!(r["ok"], false, "partner-down without --relationship is refused with two relationships: {r}");
    assert_eq!(hub.relationship_state(HUB, "site-a"), "COMMUNICATIONS-INTERRUPTED", "{}", hub.logs());
    let r = hub.ctl(HUB, &["partner-down", "--relationship", "site-a"]);
    assert_eq!(r["ok"], true, "{r}\n{}", hub.logs());
    hub.wait_relationship_state(HUB, "site-a", "PARTNER-DOWN", 10);
    site_b_normal(&hub, "after partner-down for site-a");

    // d. site-b goes on: B serves new clients, the hub gets their leases.
    let nb = served_by(&hub, &solicit_na_pd(&hub, LINK_B, 201..=206), 201..=206, &bd, true, "link B, site-a down");
    assert!(nb.values().all(|h| in_pools(LINK_B, h)), "{nb:?}");
    wait_holds(&hub, HUB, &nb, "site-b's BNDUPDs while site-a is PARTNER-DOWN");

    // e. The hub serves link A alone: new clients from A's subnet and PD
    //    pool, and A's clients rebind at the hub keeping what they hold.
    let na = served_by(&hub, &solicit_na_pd(&hub, LINK_A, 301..=306), 301..=306, &hd, true, "link A at the hub in PARTNER-DOWN");
    assert!(na.values().all(|h| in_pools(LINK_A, h)), "the hub grants from A's subnet and PD pool: {na:?}");
    let kept = served_by(&hub, &rebind(&hub, LINK_A, &sa, 0x30_0000), 1..=8, &hd, true, "Rebind at the hub in PARTNER-DOWN");
    for (c, h) in &kept {
        assert_eq!((h.addr, h.prefix), (sa[c].addr, sa[c].prefix), "client {c} keeps its address and prefix at the hub\n{}", hub.logs());
    }
    site_b_normal(&hub, "after the hub served link A");

    // f. A returns (same store): recovery, then NORMAL on both ends of
    //    site-a; site-b stays NORMAL all along; A learns the hub's grants.
    hub.start(A, &acfg, 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(hub.state(A) == "NORMAL" && hub.relationship_state(HUB, "site-a") == "NORMAL") {
        assert!(
            Instant::now() < deadline,
            "site-a not back to NORMAL: A {}, hub {}\n{}",
            hub.state(A),
            hub.relationship(HUB, "site-a"),
            hub.logs()
        );
        site_b_normal(&hub, "during site-a's recovery");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(hub.log(A).contains("RECOVER"), "A went through recovery:\n{}", hub.logs());
    wait_holds(&hub, A, &na, "A learns the hub's PARTNER-DOWN grants");
    wait_holds(&hub, A, &kept, "A learns the hub's renewals");
    site_b_normal(&hub, "after site-a's recovery");

    // g. No address or prefix held by two clients in any store, and the
    //    hub and A agree on link A.
    let mut owner: HashMap<String, (String, u64, usize)> = HashMap::new();
    for who in [HUB, A, B] {
        for (l, (d, iaid)) in hub.active(who) {
            if let Some((d0, i0, w0)) = owner.get(&l) {
                assert_eq!((d0, i0), (&d, &iaid), "{l}: {} and {} disagree on its client\n{}", SERVER_NAMES[*w0], SERVER_NAMES[who], hub.logs());
            } else {
                owner.insert(l, (d, iaid, who));
            }
        }
    }
    let link_a = |who: usize| {
        let mut v: Vec<_> = hub.active(who).into_iter().filter(|(l, _)| link_of(l) == Some(LINK_A)).collect();
        v.sort();
        v
    };
    if !eventually(30, || link_a(HUB) == link_a(A)) {
        panic!("the hub and A disagree on link A:\nhub {:?}\nA {:?}\n{}", link_a(HUB), link_a(A), hub.logs());
    }
    assert!(link_a(A).len() >= 2 * 14, "A holds its 14 clients' addresses and prefixes: {:?}", link_a(A));

    assert_eq!(hub.stop(A, false), Some(0), "{}", hub.logs());
    assert_eq!(hub.stop(B, false), Some(0), "{}", hub.logs());
    assert_eq!(hub.stop(HUB, false), Some(0), "{}", hub.logs());
}

/// Two relationships between the same two servers (RFC 8156 §6.2 says
/// SHOULD NOT, check-config warns; it works): both connections arrive from
/// one address at one listener, which picks each one's relationship by the
/// name in its CONNECT. Site A's server is the primary of both; link B's
/// subnet is relay-only on both servers.
#[test]
fn one_partner_with_two_relationships_is_told_apart_by_the_name_in_connect() {
    require_root!();
    if !tool("ip") {
        eprintln!("SKIPPED: this end-to-end test needs `ip` (iproute2); tests/run.sh installs it");
        return;
    }
    let mut hub = Hub::new("onepartner");
    let certs = hub.gen_tls("tls");
    let hcfg = hub
        .hub_config(&certs, ["", ""])
        .replace("[2001:db8:ffff:2::1]:647", "[2001:db8:ffff:1::1]:647")
        .replace("peer-name = \"b.test\"", "peer-name = \"a.test\"");
    let ifa = hub.site_config(A, &certs, "").lines().nth(1).unwrap().to_string();
    let mut acfg = format!("data-dir = \"{}\"\n{ifa}\n", hub.data(A).display());
    let ifn = ifa.split('"').nth(1).unwrap().to_string();
    acfg += &Hub::subnet(LINK_A, &ifn);
    acfg += &Hub::subnet(LINK_B, "unused").replace("interface = \"unused\"\n", "");
    for (l, name) in RELATIONSHIPS.iter().enumerate() {
        acfg += &format!(
            "[[failover]]\nname = \"{name}\"\nrole = \"primary\"\nlisten = \"[2001:db8:ffff:1::1]:647\"\npeer = \"[2001:db8:ffff:1::2]:647\"\n{}subnets = [\"{}\"]\n{}",
            Hub::TIMERS,
            LINKS[l].0,
            Hub::tls(&certs, "a.test", "hub.test")
        );
    }
    hub.start(HUB, &hcfg, 2);
    hub.start(A, &acfg, 1);
    for name in RELATIONSHIPS {
        hub.wait_relationship_state(HUB, name, "NORMAL", 60);
        hub.wait_relationship_state(A, name, "NORMAL", 30);
    }
    assert!(hub.log(HUB).contains("SHOULD have one relationship"), "serve logs check-config's warning:\n{}", hub.logs());
    // Link A's clients are served by A, and the hub learns their leases
    // through site-a (the relationship of their subnet).
    let ad = hub.server_duid(A);
    let got = served_by(&hub, &solicit_na_pd(&hub, LINK_A, 1..=4), 1..=4, &ad, true, "link A");
    wait_holds(&hub, HUB, &got, "site-a's BNDUPDs");
    let st = hub.status(HUB);
    let conns: Vec<u64> = RELATIONSHIPS.iter().map(|n| hub.relationship(HUB, n)["connections"].as_u64().unwrap_or(0)).collect();
    assert_eq!(conns, vec![1, 1], "one connection each: {st}");
    // A partner-down of one (the partner is still connected, so it goes
    // PARTNER-DOWN → POTENTIAL-CONFLICT → NORMAL again, §8.4.2) leaves the
    // other alone: no state change of site-a meanwhile.
    let changes = |who: usize, name: &str| hub.log(who).lines().filter(|l| l.contains("failover state change") && l.contains(&format!("relationship={name} "))).count();
    let a_before = changes(HUB, "site-a");
    let r = hub.ctl(HUB, &["partner-down", "--relationship", "site-b"]);
    assert_eq!(r["ok"], true, "{r}\n{}", hub.logs());
    assert!(eventually(20, || hub.log(HUB).contains("relationship=site-b from=\"POTENTIAL-CONFLICT\" to=\"NORMAL\"")), "site-b back to NORMAL:\n{}", hub.logs());
    hub.wait_relationship_state(HUB, "site-b", "NORMAL", 10);
    assert_eq!(changes(HUB, "site-a"), a_before, "site-a untouched:\n{}", hub.logs());
    assert_eq!(hub.relationship_state(HUB, "site-a"), "NORMAL", "{}", hub.logs());
    let r = hub.ctl(HUB, &["partner-down", "--relationship", "nosuch"]);
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap_or("").contains("site-a, site-b"), "names the relationships: {r}");
    assert_eq!(hub.stop(A, false), Some(0), "{}", hub.logs());
    assert_eq!(hub.stop(HUB, false), Some(0), "{}", hub.logs());
}
