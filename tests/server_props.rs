//! Property test of the engine: random client populations send random
//! message sequences over simulated time. After every step: no address or
//! prefix is held by two clients, T1 ≤ T2 ≤ preferred ≤ valid in every IA,
//! and every reply encodes and decodes. With classes, reservations and a
//! shared network: a class-restricted pool serves only its class, and a
//! reserved address or prefix goes to its client only.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use proptest::prelude::*;
use tandem::config::Config;
use tandem::lease::Time;
use tandem::pool::Slice;
use tandem::server::{Arrival, Engine, EngineConfig, Outcome, Standalone};
use tandem::wire::*;

const CONFIG: &str = r#"
interfaces = ["eth1"]
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "eth1"
pools = ["2001:db8:1::10-2001:db8:1::1f"]
pd-pools = [{ prefix = "2001:db8:100::/60", delegated-length = 62 }]
preferred-lifetime = 300
valid-lifetime = 500
rapid-commit = true
"#;

/// Client c is in class "a" (c % 3 == 0), "b" (1) or none (2); clients 0
/// and 1 have reservations; the second subnet shares the link.
const PROVISIONED: &str = r#"
interfaces = ["eth1"]
[[class]]
name = "a"
match = { user-class = "a" }
[[class]]
name = "b"
match = { user-class = "b" }
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "eth1"
shared-network = "lan"
pools = [{ range = "2001:db8:1::10-2001:db8:1::13", client-classes = ["a"] }, { range = "2001:db8:1::20-2001:db8:1::23", client-classes = ["b"] }, "2001:db8:1::30-2001:db8:1::31"]
pd-pools = [{ prefix = "2001:db8:100::/60", delegated-length = 62, client-classes = ["a"] }]
reservations = [{ duid = "00030001020000000000", address = "2001:db8:1::12", prefix = "2001:db8:100::/62" }, { duid = "00030001020000000001", address = "2001:db8:1::99" }]
preferred-lifetime = 300
valid-lifetime = 500
rapid-commit = true
[[subnet]]
prefix = "2001:db8:3::/64"
shared-network = "lan"
pools = ["2001:db8:3::10-2001:db8:3::13"]
preferred-lifetime = 200
valid-lifetime = 400
"#;

#[derive(Debug, Clone, Copy)]
enum Act {
    Solicit,
    RapidSolicit,
    Request,
    Renew,
    Rebind,
    Release,
    Decline,
    Confirm,
    InfoRequest,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        Just(Act::Solicit),
        Just(Act::RapidSolicit),
        Just(Act::Request),
        Just(Act::Request),
        Just(Act::Renew),
        Just(Act::Renew),
        Just(Act::Rebind),
        Just(Act::Release),
        Just(Act::Decline),
        Just(Act::Confirm),
        Just(Act::InfoRequest),
    ]
}

/// What one simulated client believes it holds, with when it ends.
#[derive(Default, Clone)]
struct ClientView {
    addrs: HashMap<Ipv6Addr, Time>,
    prefixes: HashMap<(Ipv6Addr, u8), Time>,
}

fn duid(n: usize) -> Duid {
    Duid::ll(1, &[2, 0, 0, 0, 0, n as u8])
}

fn ia_na(v: &ClientView) -> DhcpOption {
    DhcpOption::IaNa(IaNa {
        iaid: 1,
        t1: 0,
        t2: 0,
        options: v
            .addrs
            .keys()
            .map(|a| DhcpOption::IaAddr(IaAddr { addr: *a, preferred: 0, valid: 0, options: Options::new() }))
            .collect::<Vec<_>>()
            .into(),
    })
}

fn ia_pd(v: &ClientView) -> DhcpOption {
    DhcpOption::IaPd(IaPd {
        iaid: 1,
        t1: 0,
        t2: 0,
        options: v
            .prefixes
            .keys()
            .map(|(p, l)| {
                DhcpOption::IaPrefix(IaPrefix { preferred: 0, valid: 0, prefix_len: *l, prefix: *p, options: Options::new() })
            })
            .collect::<Vec<_>>()
            .into(),
    })
}

fn check_ia_times(m: &ClientMessage) -> Result<(), TestCaseError> {
    let mut min_pref = u32::MAX;
    let mut t2s = Vec::new();
    for o in &m.options {
        let (t1, t2, opts) = match o {
            DhcpOption::IaNa(ia) => (ia.t1, ia.t2, &ia.options),
            DhcpOption::IaPd(ia) => (ia.t1, ia.t2, &ia.options),
            _ => continue,
        };
        prop_assert!(t1 <= t2, "T1 {t1} > T2 {t2}");
        for a in opts.ia_addrs() {
            prop_assert!(a.preferred <= a.valid);
            if a.valid > 0 {
                min_pref = min_pref.min(a.preferred);
            }
        }
        for p in opts.ia_prefixes() {
            prop_assert!(p.preferred <= p.valid);
            if p.valid > 0 {
                min_pref = min_pref.min(p.preferred);
            }
        }
        t2s.push((t1, t2));
    }
    for (_, t2) in &t2s {
        prop_assert!(min_pref == u32::MAX || *t2 <= min_pref, "T2 {t2} > preferred {min_pref}");
    }
    let leased: Vec<_> = t2s.iter().filter(|(a, b)| *a != 0 || *b != 0).collect();
    prop_assert!(leased.windows(2).all(|w| w[0] == w[1]), "T1/T2 differ across IAs: {t2s:?}");
    Ok(())
}

fn run(config: &str, clients: usize, steps: Vec<(usize, Act, u16, bool)>) -> Result<(), TestCaseError> {
    let cfg = Config::parse(config).unwrap();
    let provisioned = !cfg.provisioning.classes.is_empty();
    let server = Duid::llt(1, 1, &[0xaa; 6]);
    let mut e = Engine::new(EngineConfig { server_duid: server.clone(), subnets: cfg.subnets, slice: Slice::WHOLE, hash_key: 1, naming: None, limits: Default::default(), unicast_listen: Vec::new(), provisioning: cfg.provisioning });
    let in_range = |a: Ipv6Addr, lo: &str, hi: &str| (lo.parse::<Ipv6Addr>().unwrap()..=hi.parse().unwrap()).contains(&a);
    let arrival = Arrival { interface: Some("eth1"), source: "fe80::1".parse().unwrap(), destination: "ff02::1:2".parse().unwrap() };
    let mut views = vec![ClientView::default(); clients];
    let mut now: Time = 1_800_000_000;
    for (xid, (c, act, dt, pd)) in steps.into_iter().enumerate() {
        let c = c % clients;
        now += dt as Time;
        e.expire(now, usize::MAX, &tandem::server::Standalone);
        for v in &mut views {
            v.addrs.retain(|_, end| *end > now);
            v.prefixes.retain(|_, end| *end > now);
        }
        let v = &mut views[c];
        let mut opts = vec![DhcpOption::ClientId(duid(c))];
        if provisioned && c % 3 < 2 {
            opts.push(DhcpOption::UserClass(vec![if c.is_multiple_of(3) { b"a".to_vec() } else { b"b".to_vec() }]));
        }
        let with_server = matches!(act, Act::Request | Act::Renew | Act::Release | Act::Decline);
        if with_server {
            opts.push(DhcpOption::ServerId(server.clone()));
        }
        let t = match act {
            Act::Solicit => MessageType::Solicit,
            Act::RapidSolicit => {
                opts.push(DhcpOption::RapidCommit);
                MessageType::Solicit
            }
            Act::Request => MessageType::Request,
            Act::Renew => MessageType::Renew,
            Act::Rebind => MessageType::Rebind,
            Act::Release => MessageType::Release,
            Act::Decline => MessageType::Decline,
            Act::Confirm => MessageType::Confirm,
            Act::InfoRequest => MessageType::InformationRequest,
        };
        if !matches!(act, Act::InfoRequest) {
            opts.push(ia_na(v));
            if pd && !matches!(act, Act::Decline | Act::Confirm) {
                opts.push(ia_pd(v));
            }
        }
        let msg = Message::Client(ClientMessage { msg_type: t, transaction_id: xid as u32 & 0xffffff, options: opts.into() });
        if matches!(act, Act::Release | Act::Decline) {
            // The client stops using what it gives back, whatever the answer.
            v.addrs.clear();
            if matches!(act, Act::Release) && pd {
                v.prefixes.clear();
            }
        }
        let out = e.handle(now, &msg, &arrival, &Standalone);
        let Outcome::Reply(r) = out else { continue };
        let bytes = r.message.encode().unwrap();
        let back = Message::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &r.message);
        let Message::Client(m) = back else { unreachable!() };
        check_ia_times(&m)?;
        let binding = m.msg_type == MessageType::Reply && matches!(act, Act::Request | Act::Renew | Act::Rebind | Act::RapidSolicit);
        // An Advertise must not offer what another client holds.
        for ia in m.options.ia_nas() {
            for a in ia.options.ia_addrs() {
                if a.valid == 0 {
                    views[c].addrs.remove(&a.addr);
                    continue;
                }
                for (o, ov) in views.iter().enumerate() {
                    prop_assert!(o == c || !ov.addrs.contains_key(&a.addr), "{} offered/given to {c} while {o} holds it", a.addr);
                }
                if provisioned {
                    let reserved_for = match a.addr.to_string().as_str() {
                        "2001:db8:1::12" => Some(0),
                        "2001:db8:1::99" => Some(1),
                        _ => None,
                    };
                    prop_assert!(reserved_for.is_none_or(|r| r == c), "{} reserved for {reserved_for:?} given to {c}", a.addr);
                    prop_assert!(reserved_for.is_some() || !in_range(a.addr, "2001:db8:1::10", "2001:db8:1::13") || c.is_multiple_of(3), "class a pool gave {} to {c}", a.addr);
                    prop_assert!(!in_range(a.addr, "2001:db8:1::20", "2001:db8:1::23") || c % 3 == 1, "class b pool gave {} to {c}", a.addr);
                }
                if binding {
                    views[c].addrs.insert(a.addr, now + a.valid as Time);
                }
            }
        }
        for ia in m.options.ia_pds() {
            for p in ia.options.ia_prefixes() {
                let k = (p.prefix, p.prefix_len);
                if p.valid == 0 {
                    views[c].prefixes.remove(&k);
                    continue;
                }
                for (o, ov) in views.iter().enumerate() {
                    prop_assert!(o == c || !ov.prefixes.contains_key(&k), "{:?} given to {c} while {o} holds it", k);
                }
                if provisioned {
                    let reserved = k == ("2001:db8:100::".parse().unwrap(), 62);
                    prop_assert!(if reserved { c == 0 } else { c.is_multiple_of(3) }, "{:?} (class a pool, or reserved for 0) given to {c}", k);
                }
                if binding {
                    views[c].prefixes.insert(k, now + p.valid as Time);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn no_address_or_prefix_is_ever_held_by_two_clients(
        clients in 1usize..24,
        steps in prop::collection::vec((0usize..24, act(), 0u16..200, any::<bool>()), 1..300),
    ) {
        run(CONFIG, clients, steps)?;
    }

    #[test]
    fn class_pools_and_reservations_serve_only_their_clients(
        clients in 1usize..24,
        steps in prop::collection::vec((0usize..24, act(), 0u16..200, any::<bool>()), 1..300),
    ) {
        run(PROVISIONED, clients, steps)?;
    }
}
