//! Two real `tandem` processes as an RFC 8156 failover pair over mutual
//! TLS, in network namespaces (primary, secondary, clients on a bridge; a
//! separate link between the servers). Needs root; CI runs it as root.

mod common;

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use common::pair::*;
use common::*;

/// Addresses granted to clients, as clients saw them: no address may ever
/// be held by two clients (every lifetime here outlasts the test).
fn check_unique(grants: &[Granted]) {
    let mut by_addr: HashMap<Ipv6Addr, u64> = HashMap::new();
    for g in grants {
        if let Some(c) = by_addr.insert(g.addr, g.client) {
            assert_eq!(c, g.client, "{} given to clients {c} and {}", g.addr, g.client);
        }
    }
}

fn load(pair: &Pair, first: u64, count: u64) -> (Vec<Granted>, usize) {
    let ifx = pair.client_ifindex();
    in_netns(&pair.ns[2], move || {
        let s = client_socket(546);
        rapid_commit_load(&s, all_servers(ifx), first, count, 16, Instant::now() + Duration::from_secs(30))
    })
}

fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let d = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < d {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

fn active(set: &[(String, String, String)]) -> Vec<(String, String)> {
    set.iter().filter(|(_, _, s)| s == "ACTIVE").map(|(l, d, _)| (l.clone(), d.clone())).collect()
}

#[test]
fn pair_over_tls_replicates_fails_over_and_recovers() {
    require_root!();
    let mut pair = Pair::new("failover");
    let certs = pair.gen_tls("tls");
    let pcfg = pair.config(PRIMARY, "", &pair.tls(PRIMARY, &certs));
    let scfg = pair.config(SECONDARY, "auto-partner-down = 6", &pair.tls(SECONDARY, &certs));
    pair.start(SECONDARY, &scfg, &[]);
    pair.start(PRIMARY, &pcfg, &[]);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);

    // a. Clients are served by the primary (odd addresses, RFC 8156 §4.2.1),
    //    and the secondary's store receives every lease.
    let (mut grants, dups) = load(&pair, 1, 200);
    assert_eq!(dups, 0, "a Solicit answered twice: the secondary must not answer in NORMAL");
    assert_eq!(grants.len(), 200, "{}", pair.logs());
    assert!(grants.iter().all(|g| u128::from(g.addr) & 1 == 1), "the primary gives odd addresses");
    assert!(
        eventually(30, || active(&pair.lease_set(SECONDARY)) == active(&pair.lease_set(PRIMARY))),
        "stores differ:\nprimary {:?}\nsecondary {:?}",
        pair.lease_set(PRIMARY).len(),
        pair.lease_set(SECONDARY).len()
    );
    assert_eq!(active(&pair.lease_set(SECONDARY)).len(), 200);
    // g (status part): role, state, partner state, communications, unacked BNDUPDs.
    let st = pair.ctl(PRIMARY, "status");
    let fo = &st["failover"];
    assert_eq!(fo["role"], "primary");
    assert_eq!(fo["state"], "NORMAL");
    assert_eq!(fo["partner-state"], "NORMAL");
    assert_eq!(fo["communications"], "ok");
    assert!(fo["unacked-bndupd"].is_u64(), "{st}");
    assert_eq!(pair.ctl(SECONDARY, "status")["failover"]["role"], "secondary");

    // b. kill -9 the primary: the secondary goes COMMUNICATIONS-INTERRUPTED
    //    and keeps renewing existing clients (Rebind: no Server ID).
    pair.stop(PRIMARY, true);
    pair.wait_state(SECONDARY, "COMMUNICATIONS-INTERRUPTED", 20);
    let ifx = pair.client_ifindex();
    let olds: Vec<(u64, Ipv6Addr)> = grants.iter().take(10).map(|g| (g.client, g.addr)).collect();
    let answers = in_netns(&pair.ns[2], move || {
        let s = client_socket(546);
        olds.iter().map(|(c, a)| (*c, *a, exchange(&s, ifx, &rebind(*c, 0x500000 + *c as u32, *a), Duration::from_secs(3)))).collect::<Vec<_>>()
    });
    for (c, a, ans) in &answers {
        assert_eq!(ans.len(), 1, "client {c}: one answer expected from the secondary: {ans:?}\n{}", pair.logs());
        assert!(ans[0].addrs.iter().any(|(x, v)| x == a && *v > 0), "client {c} keeps {a}: {ans:?}");
    }
    //    With auto-partner-down it enters PARTNER-DOWN and serves new
    //    clients from its own pool (even addresses).
    pair.wait_state(SECONDARY, "PARTNER-DOWN", 30);
    let (new, dups) = load(&pair, 1000, 50);
    assert_eq!(dups, 0);
    assert_eq!(new.len(), 50, "{}", pair.logs());
    assert!(new.iter().all(|g| u128::from(g.addr) & 1 == 0), "the secondary gives its own (even) addresses");
    grants.extend(new);
    check_unique(&grants);

    // c. Restart the primary: both back to NORMAL through the recovery
    //    states; the stores agree; no address held by two clients.
    pair.start(PRIMARY, &pcfg, &[]);
    pair.wait_state(PRIMARY, "NORMAL", 120);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    assert!(
        eventually(30, || active(&pair.lease_set(SECONDARY)) == active(&pair.lease_set(PRIMARY))),
        "stores differ after recovery:\n{:?}\n{:?}",
        pair.lease_set(PRIMARY),
        pair.lease_set(SECONDARY)
    );
    assert_eq!(active(&pair.lease_set(PRIMARY)).len(), 250);
    let (more, _) = load(&pair, 2000, 20);
    assert_eq!(more.len(), 20);
    grants.extend(more);
    check_unique(&grants);
    let log = pair.log(PRIMARY);
    assert!(log.contains("RECOVER"), "the restarted primary went through recovery:\n{log}");
    assert_eq!(pair.stop(PRIMARY, false), Some(0));
    assert_eq!(pair.stop(SECONDARY, false), Some(0));
}
