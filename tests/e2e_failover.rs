//! Two real `tandem` processes as an RFC 8156 failover pair over mutual
//! TLS, in network namespaces (primary, secondary, clients on a bridge; a
//! separate link between the servers). Needs root; CI runs it as root.

mod common;

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use common::pair::*;
use common::*;

/// Addresses granted to clients, as clients saw them: no address may be
/// held by two clients at once (a grant holds from its request until its
/// valid lifetime ends; MCLT-capped first grants end early and may be reused).
fn check_unique(grants: &[Granted]) {
    let mut by_addr: HashMap<Ipv6Addr, Vec<&Granted>> = HashMap::new();
    for g in grants {
        by_addr.entry(g.addr).or_default().push(g);
    }
    for (a, gs) in by_addr {
        for x in &gs {
            for y in &gs {
                if x.client != y.client {
                    let overlap = x.sent_at <= y.sent_at + y.valid as u64 + 1 && y.sent_at <= x.sent_at + x.valid as u64 + 1;
                    assert!(!overlap, "{a} held by clients {} and {} at once: {x:?} {y:?}", x.client, y.client);
                }
            }
        }
    }
}

/// Rebind clients (each with its address) and return what they were given.
fn rebind_all(pair: &Pair, held: Vec<(u64, Ipv6Addr)>, xid_base: u32) -> Vec<(u64, Ipv6Addr, Vec<Answer>)> {
    let ifx = pair.client_ifindex();
    in_netns(&pair.ns[2], move || {
        let s = client_socket(546);
        held.iter().map(|(c, a)| (*c, *a, exchange(&s, ifx, &rebind(*c, xid_base + *c as u32, *a), Duration::from_secs(2)))).collect()
    })
}

fn granted_from(answers: &[(u64, Ipv6Addr, Vec<Answer>)], at: u64) -> Vec<Granted> {
    let mut v = Vec::new();
    for (c, _, ans) in answers {
        for an in ans {
            for (addr, valid) in &an.addrs {
                if *valid > 0 {
                    v.push(Granted { client: *c, addr: *addr, valid: *valid, sent_at: at });
                }
            }
        }
    }
    v
}

fn load(pair: &Pair, first: u64, count: u64) -> (Vec<Granted>, usize) {
    let ifx = pair.client_ifindex();
    in_netns(&pair.ns[2], move || {
        let s = client_socket(546);
        rapid_commit_load(&s, all_servers(ifx), first, count, 16, Instant::now() + Duration::from_secs(30))
    })
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
    // First grants are capped at the MCLT (§4.4); once the partner has
    // acked, a renewal gets the full lifetime. Rebind ten clients now.
    let held: Vec<(u64, Ipv6Addr)> = grants.iter().take(10).map(|g| (g.client, g.addr)).collect();
    let t = unix_now();
    let answers = rebind_all(&pair, held.clone(), 0x400000);
    for (c, a, ans) in &answers {
        assert!(ans.iter().any(|x| x.addrs.iter().any(|(y, v)| y == a && *v > 60)), "client {c} renews {a} for its full lifetime: {ans:?}");
    }
    grants.extend(granted_from(&answers, t));
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
    let t = unix_now();
    let answers = rebind_all(&pair, held, 0x500000);
    for (c, a, ans) in &answers {
        assert_eq!(ans.len(), 1, "client {c}: one answer expected from the secondary: {ans:?}\n{}", pair.logs());
        assert!(ans[0].addrs.iter().any(|(x, v)| x == a && *v > 0), "client {c} keeps {a}: {ans:?}");
    }
    grants.extend(granted_from(&answers, t));
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
    let (more, _) = load(&pair, 2000, 20);
    assert_eq!(more.len(), 20);
    grants.extend(more);
    check_unique(&grants);
    let log = pair.log(PRIMARY);
    assert!(log.contains("RECOVER"), "the restarted primary went through recovery:\n{log}");
    assert_eq!(pair.stop(PRIMARY, false), Some(0));
    assert_eq!(pair.stop(SECONDARY, false), Some(0));
}

/// Rapid-commit Solicits for clients `first..first+count`; every Reply from
/// every server within a few seconds, as (client, address).
fn solicit_all(pair: &Pair, first: u64, count: u64) -> Vec<Granted> {
    let ifx = pair.client_ifindex();
    in_netns(&pair.ns[2], move || {
        let t0 = unix_now();
        let s = client_socket(546);
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let to = all_servers(ifx);
        let mut got: Vec<Granted> = Vec::new();
        let mut answered = std::collections::HashSet::new();
        for round in 0..3 {
            for c in first..first + count {
                if round == 0 || !answered.contains(&c) {
                    let _ = s.send_to(&solicit(c, c as u32, true, false).encode().unwrap(), to);
                }
            }
            let end = Instant::now() + Duration::from_secs(2);
            let mut buf = [0u8; 2048];
            while Instant::now() < end {
                let Ok((n, _)) = s.recv_from(&mut buf) else { continue };
                let Ok(tandem::wire::Message::Client(m)) = tandem::wire::Message::decode(&buf[..n]) else { continue };
                let c = m.transaction_id as u64;
                if m.msg_type != tandem::wire::MessageType::Reply || c < first || c >= first + count {
                    continue;
                }
                answered.insert(c);
                for ia in m.options.ia_nas() {
                    for a in ia.options.ia_addrs().filter(|a| a.valid > 0) {
                        got.push(Granted { client: c, addr: a.addr, valid: a.valid, sent_at: t0 });
                    }
                }
            }
        }
        got
    })
}

#[test]
fn cut_failover_link_then_heal_and_operator_partner_down() {
    require_root!();
    let mut pair = Pair::new("cut");
    let certs = pair.gen_tls("tls");
    let pcfg = pair.config(PRIMARY, "", &pair.tls(PRIMARY, &certs));
    let scfg = pair.config(SECONDARY, "", &pair.tls(SECONDARY, &certs));
    pair.start(SECONDARY, &scfg, &[]);
    pair.start(PRIMARY, &pcfg, &[]);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    let (mut grants, _) = load(&pair, 1, 40);
    assert_eq!(grants.len(), 40);

    // d. Cut the link between the servers: both lose contact (keepalive
    //    4 s) and go COMMUNICATIONS-INTERRUPTED; clients talk to both.
    pair.fo_link(false);
    pair.wait_state(PRIMARY, "COMMUNICATIONS-INTERRUPTED", 30);
    pair.wait_state(SECONDARY, "COMMUNICATIONS-INTERRUPTED", 30);
    let during = solicit_all(&pair, 100, 30);
    let servers_answering: std::collections::HashSet<bool> = during.iter().map(|g| u128::from(g.addr) & 1 == 1).collect();
    assert_eq!(servers_answering.len(), 2, "both servers serve new clients, each from its own half: {during:?}");
    grants.extend(during);
    check_unique(&grants);

    //    Heal: both back to NORMAL, the stores agree, no duplicates.
    pair.fo_link(true);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    assert!(
        eventually(30, || active(&pair.lease_set(SECONDARY)) == active(&pair.lease_set(PRIMARY))),
        "stores differ after the partition:\n{:?}\n{:?}",
        pair.lease_set(PRIMARY),
        pair.lease_set(SECONDARY)
    );
    let mut seen: HashMap<String, String> = HashMap::new();
    for (l, d) in active(&pair.lease_set(PRIMARY)) {
        assert!(seen.insert(l.clone(), d).is_none(), "{l} twice");
    }
    let (more, _) = load(&pair, 200, 10);
    grants.extend(more);
    check_unique(&grants);

    // g. The primary dies; without auto-partner-down the secondary waits in
    //    COMMUNICATIONS-INTERRUPTED until the operator says the partner is down.
    pair.stop(PRIMARY, true);
    pair.wait_state(SECONDARY, "COMMUNICATIONS-INTERRUPTED", 20);
    let st = pair.ctl(SECONDARY, "status");
    assert_eq!(st["failover"]["communications"], "interrupted", "{st}");
    assert_eq!(st["failover"]["role"], "secondary");
    let r = pair.ctl(SECONDARY, "partner-down");
    assert_eq!(r["ok"], true, "{r}");
    pair.wait_state(SECONDARY, "PARTNER-DOWN", 10);
    assert_eq!(pair.ctl(SECONDARY, "status")["failover"]["state"], "PARTNER-DOWN");
    let (new, _) = load(&pair, 300, 10);
    assert_eq!(new.len(), 10, "{}", pair.logs());
    grants.extend(new);
    check_unique(&grants);
}

/// A TLS client that connects from `from` to the secondary's failover port,
/// does STARTTLS, and then a handshake without a client certificate.
fn tls_without_client_cert(from: Ipv6Addr, ca: &std::path::Path) -> Result<(), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
    s.bind(&std::net::SocketAddr::new(from.into(), 0).into()).map_err(|e| e.to_string())?;
    s.connect(&"[2001:db8:ffff::2]:647".parse::<std::net::SocketAddr>().unwrap().into()).map_err(|e| e.to_string())?;
    let mut tcp: std::net::TcpStream = s.into();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(&[0, 4, 23, 0, 0, 1]).map_err(|e| e.to_string())?;
    let mut reply = [0u8; 6];
    tcp.read_exact(&mut reply).map_err(|e| format!("no REPLY to STARTTLS: {e}"))?;
    assert_eq!(reply[2], 7, "REPLY");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), "secondary.test".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // A CONNECT-sized write, then a read: the server must refuse us.
    tls.write_all(&[0, 8, 31, 0, 0, 1, 0, 0, 0, 0]).map_err(|e| e.to_string())?;
    let mut b = [0u8; 16];
    match tls.read(&mut b) {
        Ok(0) => Err("closed".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn refuses_another_ca_no_client_certificate_unknown_address_and_plain_tcp() {
    require_root!();
    let mut pair = Pair::new("refuse");
    let certs = pair.gen_tls("tls");
    let other = pair.gen_tls("other-ca");
    let scfg = pair.config(SECONDARY, "", &pair.tls(SECONDARY, &certs));
    pair.start(SECONDARY, &scfg, &[]);
    std::thread::sleep(Duration::from_secs(4));
    let before = pair.state(SECONDARY);
    let refused = |p: &Pair| p.ctl(SECONDARY, "status")["failover"]["connections-refused"].as_u64().unwrap();
    assert_eq!(refused(&pair), 0);

    // 1. A primary whose certificate comes from another CA.
    let pcfg = pair.config(PRIMARY, "", &pair.tls(PRIMARY, &other));
    pair.start(PRIMARY, &pcfg, &[]);
    assert!(eventually(20, || refused(&pair) >= 1), "{}", pair.logs());
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(pair.state(PRIMARY), "NORMAL");
    pair.stop(PRIMARY, true);
    let n1 = refused(&pair);
    assert!(pair.log(SECONDARY).contains("TLS handshake"), "{}", pair.log(SECONDARY));

    // 2. A client with no certificate (from the partner's address).
    let ca = certs.join("ca.pem");
    let r = in_netns(&pair.ns[0], move || tls_without_client_cert("2001:db8:ffff::1".parse().unwrap(), &ca));
    assert!(r.is_err(), "a connection without a client certificate must be refused");
    assert!(eventually(10, || refused(&pair) > n1));
    let n2 = refused(&pair);

    // 3. A connection from an address that is not the partner's.
    let ca = certs.join("ca.pem");
    let r = in_netns(&pair.ns[0], move || tls_without_client_cert("2001:db8:1::1".parse().unwrap(), &ca));
    assert!(r.is_err());
    assert!(eventually(10, || refused(&pair) > n2));
    assert!(pair.log(SECONDARY).contains("not the partner"), "{}", pair.log(SECONDARY));
    let n3 = refused(&pair);

    // 4. A primary configured for plain TCP: CONNECT without STARTTLS is closed.
    let pcfg = pair.config(PRIMARY, "", "insecure = true");
    pair.start(PRIMARY, &pcfg, &[]);
    assert!(eventually(20, || refused(&pair) > n3), "{}", pair.logs());
    pair.stop(PRIMARY, true);

    // The secondary's endpoint never moved because of any of them.
    let st = pair.ctl(SECONDARY, "status");
    assert_eq!(st["failover"]["state"].as_str().unwrap(), before, "{st}");
    assert_eq!(st["failover"]["connected"], false);
    assert!(!pair.log(SECONDARY).contains("failover: connected"), "{}", pair.log(SECONDARY));
}

#[test]
fn clock_skew_rejects_connect_until_the_clocks_agree() {
    require_root!();
    let mut pair = Pair::new("skew");
    let certs = pair.gen_tls("tls");
    let pcfg = pair.config(PRIMARY, "", &pair.tls(PRIMARY, &certs));
    let scfg = pair.config(SECONDARY, "", &pair.tls(SECONDARY, &certs));
    // f. The secondary's clock runs 30 s ahead: CONNECT is rejected with ExcessiveTimeSkew.
    pair.start(SECONDARY, &scfg, &[("TANDEM_TEST_CLOCK_OFFSET", "30")]);
    pair.start(PRIMARY, &pcfg, &[]);
    assert!(eventually(30, || pair.log(PRIMARY).contains("ExcessiveTimeSkew")), "{}", pair.logs());
    assert_ne!(pair.state(PRIMARY), "NORMAL");
    assert_ne!(pair.state(SECONDARY), "NORMAL");
    // The skew is gone: the pair connects and reaches NORMAL.
    pair.stop(SECONDARY, false);
    pair.start(SECONDARY, &scfg, &[]);
    pair.wait_state(PRIMARY, "NORMAL", 90);
    pair.wait_state(SECONDARY, "NORMAL", 60);
}
