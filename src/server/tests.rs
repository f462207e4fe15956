//! RFC 9915 server rules (it obsoletes RFC 8415; §1–§21 keep their
//! numbers), one test each, named after the rule; the section is in the
//! comment. Plus reservations, expiry, shard slices and the
//! failover policy hooks.

use std::net::Ipv6Addr;

use super::*;
use crate::config::{Config, Reservation};
use crate::wire::{IaAddr, IaNa, IaPd, IaPrefix};

const CONFIG: &str = r#"
interfaces = ["eth1"]
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "eth1"
relay-links = ["2001:db8:9::1"]
pools = ["2001:db8:1::1000-2001:db8:1::ffff"]
pd-pools = [{ prefix = "2001:db8:100::/40", delegated-length = 56 }]
preferred-lifetime = 3000
valid-lifetime = 4000
renew-time = 1000
rebind-time = 2000
rapid-commit = true
dns-servers = ["2001:db8:1::53"]
domain-search = ["example.net"]
ntp-servers = ["2001:db8:1::123"]
preference = 7
[[subnet]]
prefix = "2001:db8:2::/64"
server-unicast = "2001:db8:2::1"
pools = ["2001:db8:2::10-2001:db8:2::11"]
"#;

const NOW: Time = 1_800_000_000;
const MCAST: &str = "ff02::1:2";
const LL: &str = "fe80::1";

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn server_duid() -> Duid {
    Duid::llt(1, 1, &[0xaa; 6])
}

fn client_duid(n: u8) -> Duid {
    Duid::ll(1, &[2, 0, 0, 0, 0, n])
}

fn engine_with(cfg: &str) -> Engine {
    let c = Config::parse(cfg).unwrap();
    Engine::new(EngineConfig { server_duid: server_duid(), subnets: c.subnets, slice: Slice::WHOLE, hash_key: 7, naming: None, limits: Default::default(), unicast_listen: Vec::new(), provisioning: Default::default() })
}

fn engine() -> Engine {
    engine_with(CONFIG)
}

fn direct() -> Arrival<'static> {
    Arrival { interface: Some("eth1"), source: a(LL), destination: a(MCAST) }
}

fn msg(t: MessageType, opts: Vec<DhcpOption>) -> Message {
    Message::Client(ClientMessage { msg_type: t, transaction_id: 0x010203, options: opts.into() })
}

fn ia_na(iaid: u32, addrs: &[&str]) -> DhcpOption {
    DhcpOption::IaNa(IaNa {
        iaid,
        t1: 0,
        t2: 0,
        options: addrs
            .iter()
            .map(|x| DhcpOption::IaAddr(IaAddr { addr: a(x), preferred: 0, valid: 0, options: Options::new() }))
            .collect::<Vec<_>>()
            .into(),
    })
}

fn ia_pd(iaid: u32) -> DhcpOption {
    DhcpOption::IaPd(IaPd { iaid, t1: 0, t2: 0, options: Options::new() })
}

fn cid(n: u8) -> DhcpOption {
    DhcpOption::ClientId(client_duid(n))
}

fn sid() -> DhcpOption {
    DhcpOption::ServerId(server_duid())
}

fn send(e: &mut Engine, m: Message) -> Outcome {
    e.handle(NOW, &m, &direct(), &Standalone)
}

fn reply(o: Outcome) -> Reply {
    match o {
        Outcome::Reply(r) => r,
        Outcome::Drop(d) => panic!("dropped: {d:?}"),
    }
}

fn client_msg(r: &Reply) -> &ClientMessage {
    match r.message.unwrap_relays().1 {
        Some(c) => c,
        None => panic!("no client message"),
    }
}

fn first_addr(r: &Reply) -> (Ipv6Addr, u32, u32) {
    let c = client_msg(r);
    let ia = c.options.ia_nas().next().expect("IA_NA");
    let x = ia.options.ia_addrs().next().expect("IAADDR");
    (x.addr, x.preferred, x.valid)
}

fn ia_status(r: &Reply) -> Option<StatusCode> {
    let c = client_msg(r);
    c.options.ia_nas().next().and_then(|ia| ia.options.status()).map(|s| s.code)
}

/// Solicit + Request for client n; returns the address.
fn lease_for(e: &mut Engine, n: u8) -> Ipv6Addr {
    let r = reply(send(e, msg(MessageType::Request, vec![cid(n), sid(), ia_na(1, &[])])));
    first_addr(&r).0
}

// ---- §16 discard rules -------------------------------------------------

#[test]
fn solicit_without_client_id_is_discarded() {
    // RFC 9915 §16
    let mut e = engine();
    assert_eq!(send(&mut e, msg(MessageType::Solicit, vec![ia_na(1, &[])])), Outcome::Drop(DropReason::MissingClientId));
    assert_eq!(e.stats.dropped(DropReason::MissingClientId), 1);
}

#[test]
fn solicit_with_server_id_is_discarded() {
    // RFC 9915 §16
    let mut e = engine();
    assert_eq!(send(&mut e, msg(MessageType::Solicit, vec![cid(1), sid()])), Outcome::Drop(DropReason::UnexpectedServerId));
}

#[test]
fn confirm_and_rebind_with_server_id_are_discarded() {
    // RFC 9915 §16
    let mut e = engine();
    for t in [MessageType::Confirm, MessageType::Rebind] {
        assert_eq!(send(&mut e, msg(t, vec![cid(1), sid(), ia_na(1, &["2001:db8:1::1"])])), Outcome::Drop(DropReason::UnexpectedServerId));
    }
}

#[test]
fn request_renew_release_decline_need_our_server_id() {
    // RFC 9915 §16
    let mut e = engine();
    for t in [MessageType::Request, MessageType::Renew, MessageType::Release, MessageType::Decline] {
        assert_eq!(send(&mut e, msg(t, vec![cid(1), ia_na(1, &[])])), Outcome::Drop(DropReason::MissingServerId));
        let other = DhcpOption::ServerId(Duid::ll(1, &[9]));
        assert_eq!(send(&mut e, msg(t, vec![cid(1), other, ia_na(1, &[])])), Outcome::Drop(DropReason::WrongServerId));
        assert_eq!(send(&mut e, msg(t, vec![sid(), ia_na(1, &[])])), Outcome::Drop(DropReason::MissingClientId));
    }
}

#[test]
fn information_request_with_ia_or_foreign_server_id_is_discarded() {
    // RFC 9915 §16
    let mut e = engine();
    assert_eq!(send(&mut e, msg(MessageType::InformationRequest, vec![ia_na(1, &[])])), Outcome::Drop(DropReason::IaInInformationRequest));
    let other = DhcpOption::ServerId(Duid::ll(1, &[9]));
    assert_eq!(send(&mut e, msg(MessageType::InformationRequest, vec![other])), Outcome::Drop(DropReason::WrongServerId));
}

#[test]
fn server_messages_and_unknown_types_are_discarded() {
    // RFC 9915 §16: Advertise, Reply, Reconfigure, Relay-reply, unknown types.
    let mut e = engine();
    for t in [MessageType::Advertise, MessageType::Reply, MessageType::Reconfigure, MessageType::Other(99), MessageType::BndUpd] {
        assert_eq!(send(&mut e, msg(t, vec![cid(1)])), Outcome::Drop(DropReason::NotForServer));
    }
    let relay_repl = Message::Relay(RelayMessage {
        msg_type: MessageType::RelayRepl,
        hop_count: 0,
        link_address: a("2001:db8:1::1"),
        peer_address: a(LL),
        options: vec![DhcpOption::RelayMsg(Box::new(msg(MessageType::Solicit, vec![cid(1)])))].into(),
    });
    assert_eq!(send(&mut e, relay_repl), Outcome::Drop(DropReason::NotForServer));
}

#[test]
fn solicit_confirm_rebind_by_unicast_are_discarded() {
    // RFC 9915 §16: these MUST NOT be accepted by unicast.
    let mut e = engine();
    let uni = Arrival { interface: Some("eth1"), source: a("2001:db8:1::77"), destination: a("2001:db8:1::1") };
    for t in [MessageType::Solicit, MessageType::Confirm, MessageType::Rebind] {
        let o = e.handle(NOW, &msg(t, vec![cid(1), ia_na(1, &["2001:db8:1::1001"])]), &uni, &Standalone);
        assert_eq!(o, Outcome::Drop(DropReason::UnicastNotAllowed));
    }
}

#[test]
fn unicast_request_without_server_unicast_gets_use_multicast() {
    // RFC 9915 §16 (legacy RFC 9915 §18.4 answer)
    let mut e = engine();
    let uni = Arrival { interface: Some("eth1"), source: a("2001:db8:1::77"), destination: a("2001:db8:1::1") };
    let r = reply(e.handle(NOW, &msg(MessageType::Request, vec![cid(1), sid(), ia_na(1, &[])]), &uni, &Standalone));
    let c = client_msg(&r);
    assert_eq!(c.options.status().unwrap().code, StatusCode::USE_MULTICAST);
    assert!(c.options.ia_nas().next().is_none(), "only SERVERID, CLIENTID and the status");
    assert!(r.changes.is_empty());
}

#[test]
fn unicast_request_to_configured_server_unicast_is_processed() {
    // RFC 9915 §16 (legacy RFC 9915 §18.4 answer)
    let mut e = engine();
    let uni = Arrival { interface: None, source: a("2001:db8:2::77"), destination: a("2001:db8:2::1") };
    let r = reply(e.handle(NOW, &msg(MessageType::Request, vec![cid(1), sid(), ia_na(1, &[])]), &uni, &Standalone));
    assert!(first_addr(&r).0 == a("2001:db8:2::10") || first_addr(&r).0 == a("2001:db8:2::11"));
}

// ---- Solicit / Advertise (§18.3.1, §18.3.9) ---------------------------------

#[test]
fn advertise_copies_transaction_id_and_carries_both_identifiers() {
    // RFC 9915 §18.3.9
    let mut e = engine();
    let r = reply(send(&mut e, msg(MessageType::Solicit, vec![cid(1), ia_na(1, &[])])));
    let c = client_msg(&r);
    assert_eq!(c.msg_type, MessageType::Advertise);
    assert_eq!(c.transaction_id, 0x010203);
    assert_eq!(c.options.server_id(), Some(&server_duid()));
    assert_eq!(c.options.client_id(), Some(&client_duid(1)));
    assert_eq!((r.to, r.port), (a(LL), CLIENT_PORT));
}

#[test]
fn advertise_offers_without_committing() {
    // RFC 9915 §18.3.9: the IAs with what would be assigned; nothing is bound yet.
    let mut e = engine();
    let r = reply(send(&mut e, msg(MessageType::Solicit, vec![cid(1), ia_na(1, &[]), ia_pd(2)])));
    let (addr, p, v) = first_addr(&r);
    assert!(a("2001:db8:1::1000") <= addr && addr <= a("2001:db8:1::ffff"));
    assert_eq!((p, v), (3000, 4000));
    let pd = client_msg(&r).options.ia_pds().next().unwrap().options.ia_prefixes().next().unwrap().clone();
    assert_eq!(pd.prefix_len, 56);
    assert!(r.changes.is_empty());
    assert!(e.leases().is_empty());
    // The Request that follows gets the same address.
    let r2 = reply(send(&mut e, msg(MessageType::Request, vec![cid(1), sid(), ia_na(1, &[])])));
    assert_eq!(first_addr(&r2).0, addr);
}

#[test]
fn advertise_includes_configured_preference() {
    // RFC 9915 §18.3.9: Preference option, default 0 (omitted).
    let mut e = engine();
    let r = reply(send(&mut e, msg(MessageType::Solicit, vec![cid(1), ia_na(1, &[])])));
    assert!(client_msg(&r).options.iter().any(|o| *o == DhcpOption::Preference(7)));
}

#[test]
fn advertise_with_no_addresses_puts_no_addrs_avail_in_the_ia() {
    // RFC 9915 §18.3.9
    let mut e = engine();
    let uni = Arrival { interface: None, source: a("2001:db8:2::77"), destination: a(MCAST) };
    for n in 1..=2 {
        reply(e.handle(NOW, &msg(MessageType::Request, vec![cid(n), sid(), ia_na(1, &[])]), &uni, &Standalone));
    }
    let r = reply(e.handle(NOW, &msg(MessageType::Solicit, vec![cid(3), ia_na(1, &[])]), &uni, &Standalone));
    let ia = client_msg(&r).options.ia_nas().next().unwrap().clone();
    assert_eq!(ia.options.status().unwrap().code, StatusCode::NO_ADDRS_AVAIL);
    assert_eq!(ia.options.ia_addrs().count(), 0);
    assert_eq!((ia.t1, ia.t2), (0, 0));
}

#[test]
fn advertise_does_not_echo_a_hint_it_will_not_assign() {
    // RFC 9915 §18.3.9
    let mut e = engine();
    let held = lease_for(&mut e, 1);
    let r = reply(send(&mut e, msg(MessageType::Solicit, vec![cid(2), ia_na(1, &[&held.to_string()])])));
    assert_ne!(first_addr(&r).0, held);
    let r = reply(send(&mut e, msg(MessageType::Solicit, vec![cid(3), ia_na(1, &["2001:db8:77::1"])])));
    assert_ne!(first_addr(&r).0, a("2001:db8:77::1"));
}

#[test]
fn address_hint_is_honoured_when_free() {
    // RFC 9915 §18.3.9: hints MAY be used.
    let mut e = engine();
    let r = reply(send(&mut e, msg(MessageType::Solicit, vec![cid(1), ia_na(1, &["2001:db8:1::1234"])])));
    assert_eq!(first_addr(&r).0, a("2001:db8:1::1234"));
}

#[test]
fn rapid_commit_solicit_gets_a_committed_reply_with_rapid_commit() {
    // RFC 9915 §18.3.1
    let mut e = engine();
    let r = reply(send(&mut e, msg(MessageType::Solicit, vec![cid(1), DhcpOption::RapidCommit, ia_na(1, &[])])));
    let c = client_msg(&r);
    assert_eq!(c.msg_type, MessageType::Reply);
    assert!(c.options.has(opt::RAPID_COMMIT));
    assert_eq!(r.changes.len(), 1);
    assert_eq!(e.leases().len(), 1);
}

#[test]
fn rapid_commit_is_ignored_where_the_subnet_does_not_allow_it() {
    // RFC 9915 §18.3.1
    let mut e = engine_with(&CONFIG.replace("rapid-commit = true", "rapid-commit = false"));
    let r = reply(send(&mut e, msg(MessageType::Solicit, vec![cid(1), DhcpOption::RapidCommit, ia_na(1, &[])])));
    assert_eq!(client_msg(&r).msg_type, MessageType::Advertise);
    assert!(!client_msg(&r).options.has(opt::RAPID_COMMIT));
    assert!(r.changes.is_empty());
}

// ---- Request (§18.3.2) ------------------------------------------------------

#[test]
fn request_assigns_and_commits_before_reply() {
    // RFC 9915 §18.3.2
    let mut e = engine();
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(1), sid(), ia_na(1, &[]), ia_pd(1)])));
    assert_eq!(client_msg(&r).msg_type, MessageType::Reply);
    assert_eq!(r.changes.len(), 2);
    for c in &r.changes {
        let l = c;
        assert_eq!(l.status, BindingStatus::Active);
        assert_eq!((l.cltt, l.valid_end, l.t1, l.t2), (NOW, NOW + 4000, 1000, 2000));
        assert_eq!(l.binding.duid, client_duid(1));
    }
}

#[test]
fn request_with_an_address_not_on_link_gets_not_on_link() {
    // RFC 9915 §18.3.2
    let mut e = engine();
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(1), sid(), ia_na(1, &["2001:db8:99::1"])])));
    assert_eq!(ia_status(&r), Some(StatusCode::NOT_ON_LINK));
    assert!(r.changes.is_empty());
}

#[test]
fn request_for_an_existing_binding_returns_the_same_lease() {
    // RFC 9915 §18.3.2: an IA we already have a binding for gets that binding back.
    let mut e = engine();
    let x = lease_for(&mut e, 1);
    assert_eq!(lease_for(&mut e, 1), x);
    assert_eq!(e.leases().len(), 1);
}

#[test]
fn t1_and_t2_are_the_same_in_every_ia() {
    // RFC 9915 §18.3.2, §18.1
    let mut e = engine();
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(1), sid(), ia_na(1, &[]), ia_na(2, &[]), ia_pd(3)])));
    let c = client_msg(&r);
    let times: Vec<(u32, u32)> = c
        .options
        .iter()
        .filter_map(|o| match o {
            DhcpOption::IaNa(ia) => Some((ia.t1, ia.t2)),
            DhcpOption::IaPd(ia) => Some((ia.t1, ia.t2)),
            _ => None,
        })
        .collect();
    assert_eq!(times, vec![(1000, 2000); 3]);
}

#[test]
fn options_in_the_oro_are_supplied() {
    // RFC 9915 §18.3: options in the ORO the server is configured for MUST be included.
    let mut e = engine();
    let oro = DhcpOption::Oro(vec![opt::DNS_SERVERS, opt::DOMAIN_LIST, opt::NTP_SERVER]);
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(1), sid(), oro, ia_na(1, &[])])));
    let o = &client_msg(&r).options;
    assert_eq!(o.get(opt::DNS_SERVERS), Some(&DhcpOption::DnsServers(vec![a("2001:db8:1::53")])));
    assert!(o.has(opt::DOMAIN_LIST) && o.has(opt::NTP_SERVER));
    // And nothing the client did not ask for.
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(2), sid(), ia_na(1, &[])])));
    assert!(!client_msg(&r).options.has(opt::DNS_SERVERS));
}

// ---- Renew / Rebind (§18.3.4, §18.3.5) ------------------------------------

#[test]
fn renew_extends_the_binding() {
    // RFC 9915 §18.3.4
    let mut e = engine();
    let x = lease_for(&mut e, 1);
    let later = NOW + 1000;
    let r = reply(e.handle(later, &msg(MessageType::Renew, vec![cid(1), sid(), ia_na(1, &[&x.to_string()])]), &direct(), &Standalone));
    assert_eq!(first_addr(&r), (x, 3000, 4000));
    assert_eq!(r.changes[0].valid_end, later + 4000);
}

#[test]
fn renew_returns_addresses_not_on_link_with_zero_lifetimes() {
    // RFC 9915 §18.3.4
    let mut e = engine();
    let x = lease_for(&mut e, 1);
    let r = reply(send(&mut e, msg(MessageType::Renew, vec![cid(1), sid(), ia_na(1, &[&x.to_string(), "2001:db8:99::5"])])));
    let ia = client_msg(&r).options.ia_nas().next().unwrap().clone();
    let zero = ia.options.ia_addrs().find(|a| a.addr == "2001:db8:99::5".parse::<Ipv6Addr>().unwrap()).unwrap();
    assert_eq!((zero.preferred, zero.valid), (0, 0));
    assert!(ia.options.ia_addrs().any(|y| y.addr == x && y.valid == 4000));
}

#[test]
fn renew_without_binding_creates_one() {
    // RFC 9915 §18.3.4: configured to create bindings from Renew (e.g. after losing the store).
    let mut e = engine();
    let r = reply(send(&mut e, msg(MessageType::Renew, vec![cid(1), sid(), ia_na(1, &["2001:db8:1::2222"])])));
    assert_eq!(first_addr(&r), (a("2001:db8:1::2222"), 3000, 4000));
    assert_eq!(r.changes.len(), 1);
}

#[test]
fn rebind_extends_a_known_binding() {
    // RFC 9915 §18.3.5
    let mut e = engine();
    let x = lease_for(&mut e, 1);
    let r = reply(send(&mut e, msg(MessageType::Rebind, vec![cid(1), ia_na(1, &[&x.to_string()])])));
    assert_eq!(first_addr(&r), (x, 3000, 4000));
}

#[test]
fn rebind_without_binding_gets_no_binding_unless_rapid_commit() {
    // RFC 9915 §18.3.5: create bindings from Rebind only if rapid commit is configured.
    let mut e = engine_with(&CONFIG.replace("rapid-commit = true", "rapid-commit = false"));
    let r = reply(send(&mut e, msg(MessageType::Rebind, vec![cid(1), ia_na(1, &["2001:db8:1::2222"])])));
    assert_eq!(ia_status(&r), Some(StatusCode::NO_BINDING));
    assert!(r.changes.is_empty());
    let mut e = engine();
    let r = reply(send(&mut e, msg(MessageType::Rebind, vec![cid(1), ia_na(1, &["2001:db8:1::2222"])])));
    assert_eq!(first_addr(&r).0, a("2001:db8:1::2222"));
}

#[test]
fn rebind_for_addresses_off_link_gets_zero_lifetimes() {
    // RFC 9915 §18.3.5
    let mut e = engine_with(&CONFIG.replace("rapid-commit = true", "rapid-commit = false"));
    let r = reply(send(&mut e, msg(MessageType::Rebind, vec![cid(1), ia_na(1, &["2001:db8:99::1"])])));
    assert_eq!(first_addr(&r), (a("2001:db8:99::1"), 0, 0));
}

// ---- Confirm (§18.3.3) ------------------------------------------------------

#[test]
fn confirm_answers_success_when_all_addresses_are_on_link() {
    // RFC 9915 §18.3.3
    let mut e = engine();
    let r = reply(send(&mut e, msg(MessageType::Confirm, vec![cid(1), ia_na(1, &["2001:db8:1::5"])])));
    assert_eq!(client_msg(&r).options.status().unwrap().code, StatusCode::SUCCESS);
}

#[test]
fn confirm_answers_not_on_link_when_any_address_is_off_link() {
    // RFC 9915 §18.3.3
    let mut e = engine();
    let r = reply(send(&mut e, msg(MessageType::Confirm, vec![cid(1), ia_na(1, &["2001:db8:1::5", "2001:db8:5::5"])])));
    assert_eq!(client_msg(&r).options.status().unwrap().code, StatusCode::NOT_ON_LINK);
}

#[test]
fn confirm_without_addresses_or_known_link_gets_no_reply() {
    // RFC 9915 §18.3.3
    let mut e = engine();
    assert_eq!(send(&mut e, msg(MessageType::Confirm, vec![cid(1), ia_na(1, &[])])), Outcome::Drop(DropReason::NothingToSay));
    let nowhere = Arrival { interface: Some("eth9"), source: a(LL), destination: a(MCAST) };
    let o = e.handle(NOW, &msg(MessageType::Confirm, vec![cid(1), ia_na(1, &["2001:db8:1::5"])]), &nowhere, &Standalone);
    assert_eq!(o, Outcome::Drop(DropReason::UnknownLink));
}

// ---- Release / Decline (§18.3.7, §18.3.8) ----------------------------------

#[test]
fn release_frees_the_lease_and_answers_success() {
    // RFC 9915 §18.3.7
    let mut e = engine();
    let x = lease_for(&mut e, 1);
    let r = reply(send(&mut e, msg(MessageType::Release, vec![cid(1), sid(), ia_na(1, &[&x.to_string()])])));
    assert_eq!(client_msg(&r).options.status().unwrap().code, StatusCode::SUCCESS);
    assert_eq!(r.changes[0].status, BindingStatus::Released);
    assert_eq!(e.leases().get(&LeaseKey::Addr(x)).unwrap().status, BindingStatus::Released);
}

#[test]
fn release_of_an_unknown_ia_gets_no_binding_in_that_ia() {
    // RFC 9915 §18.3.7
    let mut e = engine();
    let r = reply(send(&mut e, msg(MessageType::Release, vec![cid(1), sid(), ia_na(5, &["2001:db8:1::1005"])])));
    assert_eq!(ia_status(&r), Some(StatusCode::NO_BINDING));
    assert_eq!(client_msg(&r).options.status().unwrap().code, StatusCode::SUCCESS);
}

#[test]
fn the_same_client_gets_its_address_back_after_release() {
    // Operators expect stable addresses: a released lease is offered to its last client first.
    let mut e = engine();
    let x = lease_for(&mut e, 1);
    reply(send(&mut e, msg(MessageType::Release, vec![cid(1), sid(), ia_na(1, &[&x.to_string()])])));
    assert_eq!(lease_for(&mut e, 1), x);
}

#[test]
fn decline_marks_the_address_abandoned_and_it_is_not_reused() {
    // RFC 9915 §18.3.8
    let mut e = engine_with(&CONFIG.replace(
        "pools = [\"2001:db8:1::1000-2001:db8:1::ffff\"]",
        "pools = [\"2001:db8:1::1000-2001:db8:1::1001\"]",
    ));
    let x = lease_for(&mut e, 1);
    let r = reply(send(&mut e, msg(MessageType::Decline, vec![cid(1), sid(), ia_na(1, &[&x.to_string()])])));
    assert_eq!(client_msg(&r).options.status().unwrap().code, StatusCode::SUCCESS);
    assert_eq!(e.leases().get(&LeaseKey::Addr(x)).unwrap().status, BindingStatus::Abandoned);
    let y = lease_for(&mut e, 2);
    assert_ne!(x, y);
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(3), sid(), ia_na(1, &[])])));
    assert_eq!(ia_status(&r), Some(StatusCode::NO_ADDRS_AVAIL), "the abandoned address stays out");
}

// ---- Information-request (§18.3.6) ------------------------------------------

#[test]
fn information_request_gets_configuration_and_refresh_time() {
    // RFC 9915 §18.3.6, §21.23
    let mut e = engine();
    let oro = DhcpOption::Oro(vec![opt::DNS_SERVERS, opt::INFORMATION_REFRESH_TIME]);
    let r = reply(send(&mut e, msg(MessageType::InformationRequest, vec![cid(1), oro])));
    let o = &client_msg(&r).options;
    assert!(o.has(opt::DNS_SERVERS));
    assert_eq!(o.u32_of(opt::INFORMATION_REFRESH_TIME), Some(IRT_DEFAULT));
    assert!(r.changes.is_empty());
}

#[test]
fn information_request_without_client_id_is_still_answered() {
    // RFC 9915 §18.3.6
    let mut e = engine();
    let r = reply(send(&mut e, msg(MessageType::InformationRequest, vec![DhcpOption::Oro(vec![opt::DNS_SERVERS])])));
    assert!(client_msg(&r).options.client_id().is_none());
    assert!(client_msg(&r).options.has(opt::DNS_SERVERS));
}

// ---- Relays (§13.1, §18.3.10, §19.3) -----------------------------------------

fn relay(link: &str, peer: &str, hop: u8, ifid: Option<&[u8]>, inner: Message) -> Message {
    let mut o = Options::new();
    if let Some(i) = ifid {
        o.push(DhcpOption::InterfaceId(i.to_vec()));
    }
    o.push(DhcpOption::RelayMsg(Box::new(inner)));
    Message::Relay(RelayMessage {
        msg_type: MessageType::RelayForw,
        hop_count: hop,
        link_address: a(link),
        peer_address: a(peer),
        options: o,
    })
}

#[test]
fn relayed_request_gets_relay_reply_with_interface_id_to_port_547() {
    // RFC 9915 §18.3.10, §21.18: the Interface-Id is copied into the Relay-reply.
    let mut e = engine();
    let m = relay("2001:db8:1::1", "fe80::c", 0, Some(b"port7"), msg(MessageType::Solicit, vec![cid(1), ia_na(1, &[])]));
    let from_relay = Arrival { interface: Some("eth0"), source: a("2001:db8:ffff::7"), destination: a("2001:db8:ffff::1") };
    let r = reply(e.handle(NOW, &m, &from_relay, &Standalone));
    assert_eq!((r.to, r.port), (a("2001:db8:ffff::7"), SERVER_PORT));
    let Message::Relay(rr) = &r.message else { panic!("not a relay reply") };
    assert_eq!(rr.msg_type, MessageType::RelayRepl);
    assert_eq!((rr.hop_count, rr.link_address, rr.peer_address), (0, a("2001:db8:1::1"), a("fe80::c")));
    assert_eq!(rr.options.interface_id(), Some(&b"port7"[..]));
    assert_eq!(client_msg(&r).msg_type, MessageType::Advertise);
}

#[test]
fn nested_relays_are_answered_level_by_level() {
    // RFC 9915 §19.3: one Relay-reply per Relay-forward, each copying its level.
    let mut e = engine();
    let inner = relay("2001:db8:1::1", "fe80::c", 0, Some(b"A"), msg(MessageType::Solicit, vec![cid(1), ia_na(1, &[])]));
    let outer = relay("::", "2001:db8:5::a", 1, Some(b"B"), inner);
    let r = reply(e.handle(NOW, &outer, &Arrival { interface: None, source: a("2001:db8:5::b"), destination: a("2001:db8:ffff::1") }, &Standalone));
    let (chain, c) = r.message.unwrap_relays();
    assert_eq!(chain.len(), 2);
    assert_eq!((chain[0].hop_count, chain[0].peer_address), (1, a("2001:db8:5::a")));
    assert_eq!(chain[0].options.interface_id(), Some(&b"B"[..]));
    assert_eq!((chain[1].hop_count, chain[1].link_address), (0, a("2001:db8:1::1")));
    assert_eq!(chain[1].options.interface_id(), Some(&b"A"[..]));
    assert!(c.is_some());
}

#[test]
fn relayed_client_is_placed_by_link_address_or_relay_links() {
    // RFC 9915 §13.1; relay-links config.
    let mut e = engine();
    let via = Arrival { interface: None, source: a("2001:db8:9::1"), destination: a("2001:db8:ffff::1") };
    let m = relay("2001:db8:9::1", "fe80::c", 0, None, msg(MessageType::Solicit, vec![cid(1), ia_na(1, &[])]));
    let r = reply(e.handle(NOW, &m, &via, &Standalone));
    assert!(first_addr(&r).0 >= a("2001:db8:1::1000"));
    let m = relay("2001:db8:77::1", "fe80::c", 0, None, msg(MessageType::Solicit, vec![cid(1), ia_na(1, &[])]));
    assert_eq!(e.handle(NOW, &m, &via, &Standalone), Outcome::Drop(DropReason::UnknownLink));
}

#[test]
fn zero_link_address_of_a_lightweight_relay_is_ignored() {
    // RFC 9915 §13.1: link-address 0 MUST be ignored; an outer relay's value is used.
    let mut e = engine();
    let inner = relay("::", "fe80::c", 0, Some(b"x"), msg(MessageType::Solicit, vec![cid(1), ia_na(1, &[])]));
    let outer = relay("2001:db8:1::1", "2001:db8:1::2", 1, None, inner);
    let r = reply(e.handle(NOW, &outer, &Arrival { interface: None, source: a("2001:db8:1::2"), destination: a("2001:db8:1::1") }, &Standalone));
    assert!(first_addr(&r).0 >= a("2001:db8:1::1000"));
}

#[test]
fn relay_forward_without_relay_message_is_dropped() {
    let mut e = engine();
    let m = Message::Relay(RelayMessage {
        msg_type: MessageType::RelayForw,
        hop_count: 0,
        link_address: a("2001:db8:1::1"),
        peer_address: a(LL),
        options: Options::new(),
    });
    assert_eq!(send(&mut e, m), Outcome::Drop(DropReason::RelayWithoutMessage));
}

// ---- Prefix delegation ---------------------------------------------------------

#[test]
fn prefix_delegation_assigns_aligned_prefixes_and_no_prefix_avail_when_full() {
    // RFC 9915 §18.3.2, §18.3.9
    let mut e = engine_with(&CONFIG.replace("2001:db8:100::/40\", delegated-length = 56", "2001:db8:100::/55\", delegated-length = 56"));
    let mut got = Vec::new();
    for n in 1..=2 {
        let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(n), sid(), ia_pd(1)])));
        let p = client_msg(&r).options.ia_pds().next().unwrap().options.ia_prefixes().next().unwrap().clone();
        assert_eq!(p.prefix_len, 56);
        assert_eq!(u128::from(p.prefix) & 0xff_ffff_ffff_ffff_ffff, 0, "aligned /56");
        got.push(p.prefix);
    }
    assert_ne!(got[0], got[1]);
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(3), sid(), ia_pd(1)])));
    let ia = client_msg(&r).options.ia_pds().next().unwrap().clone();
    assert_eq!(ia.options.status().unwrap().code, StatusCode::NO_PREFIX_AVAIL);
}

#[test]
fn prefix_renew_and_release() {
    // RFC 9915 §18.3.4, §18.3.7 for IA_PD
    let mut e = engine();
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(1), sid(), ia_pd(4)])));
    let p = client_msg(&r).options.ia_pds().next().unwrap().options.ia_prefixes().next().unwrap().clone();
    let held = DhcpOption::IaPd(IaPd { iaid: 4, t1: 0, t2: 0, options: vec![DhcpOption::IaPrefix(p.clone())].into() });
    let r = reply(e.handle(NOW + 100, &msg(MessageType::Renew, vec![cid(1), sid(), held.clone()]), &direct(), &Standalone));
    assert_eq!(r.changes[0].valid_end, NOW + 4100);
    let r = reply(send(&mut e, msg(MessageType::Release, vec![cid(1), sid(), held])));
    assert_eq!(r.changes[0].status, BindingStatus::Released);
    let _ = IaPrefix { ..p };
}

// ---- Reservations, expiry, slices, policy --------------------------------------

#[test]
fn reserved_address_goes_to_its_client_only() {
    let mut c = Config::parse(CONFIG).unwrap();
    c.subnets[0].reservations.push(Reservation { client: crate::config::ReservedFor::Duid(client_duid(9)), addresses: vec![a("2001:db8:1::9")], prefixes: vec![], hostname: None, options: vec![] });
    let mut e = Engine::new(EngineConfig { server_duid: server_duid(), subnets: c.subnets, slice: Slice::WHOLE, hash_key: 7, naming: None, limits: Default::default(), unicast_listen: Vec::new(), provisioning: Default::default() });
    let r = reply(send(&mut e, msg(MessageType::Solicit, vec![cid(1), ia_na(1, &["2001:db8:1::9"])])));
    assert_ne!(first_addr(&r).0, a("2001:db8:1::9"));
    assert_eq!(lease_for(&mut e, 9), a("2001:db8:1::9"));
}

#[test]
fn leases_expire_when_their_valid_lifetime_ends_and_become_reusable() {
    let mut e = engine_with(&CONFIG.replace(
        "pools = [\"2001:db8:1::1000-2001:db8:1::ffff\"]",
        "pools = [\"2001:db8:1::1000-2001:db8:1::1000\"]",
    ));
    let x = lease_for(&mut e, 1);
    assert!(e.expire(NOW + 4000 + EXPIRY_GRACE - 1, 100, &Standalone).is_empty());
    let ch = e.expire(NOW + 4000 + EXPIRY_GRACE, 100, &Standalone);
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0].status, BindingStatus::Expired);
    let r = reply(e.handle(NOW + 4000 + EXPIRY_GRACE, &msg(MessageType::Request, vec![cid(2), sid(), ia_na(1, &[])]), &direct(), &Standalone));
    assert_eq!(first_addr(&r).0, x);
}

#[test]
fn shards_allocate_only_from_their_slice() {
    let c = Config::parse(CONFIG).unwrap();
    let mut seen = std::collections::HashSet::new();
    for shard in 0..3 {
        let slice = Slice { shards: 3, shard };
        let mut e = Engine::new(EngineConfig { server_duid: server_duid(), subnets: c.subnets.clone(), slice, hash_key: 7, naming: None, limits: Default::default(), unicast_listen: Vec::new(), provisioning: Default::default() });
        let probe = crate::pool::SlotAllocator::new(0xf000, 0x1000, 1, slice);
        for n in 0..50u8 {
            let x = lease_for(&mut e, n);
            let j = u128::from(x) - u128::from(a("2001:db8:1::1000"));
            assert!(probe.in_slice(j), "shard {shard} gave {x}");
            assert!(seen.insert(x), "{x} given by two shards");
        }
    }
}

struct Capped(u32, Responsiveness);

impl Policy for Capped {
    fn responsiveness(&self) -> Responsiveness {
        self.1
    }
    fn may_allocate(&self, k: &LeaseKey, l: Option<&Lease>, c: &crate::lease::Binding, now: Time) -> bool {
        Standalone.may_allocate(k, l, c, now)
    }
    fn lifetime_cap(&self, _: &Lease, _: Time) -> Option<u32> {
        Some(self.0)
    }
}

#[test]
fn lifetime_cap_shortens_lifetimes_and_t1_t2_follow() {
    // RFC 8156 §4.4 via the policy; T1 ≤ T2 ≤ preferred ≤ valid still hold.
    let mut e = engine();
    let m = msg(MessageType::Request, vec![cid(1), sid(), ia_na(1, &[])]);
    let r = reply(e.handle(NOW, &m, &direct(), &Capped(600, Responsiveness::Responsive)));
    let ia = client_msg(&r).options.ia_nas().next().unwrap().clone();
    let x = ia.options.ia_addrs().next().unwrap().clone();
    assert_eq!((x.preferred, x.valid), (600, 600));
    assert_eq!((ia.t1, ia.t2), (300, 480));
    assert_eq!(r.changes[0].valid_end, NOW + 600);
}

#[test]
fn unresponsive_server_answers_nothing_and_renew_responsive_only_its_own() {
    // RFC 8156 §3: responsiveness.
    let mut e = engine();
    let x = lease_for(&mut e, 1);
    let p = Capped(4000, Responsiveness::Unresponsive);
    assert_eq!(e.handle(NOW, &msg(MessageType::Solicit, vec![cid(2), ia_na(1, &[])]), &direct(), &p), Outcome::Drop(DropReason::NotResponsive));
    let p = Capped(4000, Responsiveness::RenewResponsive);
    assert_eq!(e.handle(NOW, &msg(MessageType::Solicit, vec![cid(2), ia_na(1, &[])]), &direct(), &p), Outcome::Drop(DropReason::NotResponsive));
    assert_eq!(e.handle(NOW, &msg(MessageType::Rebind, vec![cid(1), ia_na(1, &[&x.to_string()])]), &direct(), &p), Outcome::Drop(DropReason::NotResponsive));
    let r = reply(e.handle(NOW, &msg(MessageType::Renew, vec![cid(1), sid(), ia_na(1, &[&x.to_string()])]), &direct(), &p));
    assert_eq!(first_addr(&r).0, x);
}

#[test]
fn every_reply_encodes_and_decodes() {
    let mut e = engine();
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(1), sid(), ia_na(1, &[]), ia_pd(2), DhcpOption::Oro(vec![23, 24, 56])])));
    let bytes = r.message.encode().unwrap();
    assert_eq!(Message::decode(&bytes).unwrap(), r.message);
}

#[test]
fn a_key_whose_record_lives_in_another_shard_is_never_allocated_here() {
    // Re-sharding and partner grants can leave a record outside its key's
    // slice; the slice owner blocks the key so two shards never give it out.
    let mut e = engine_with(&CONFIG.replace(
        "pools = [\"2001:db8:1::1000-2001:db8:1::ffff\"]",
        "pools = [\"2001:db8:1::1000-2001:db8:1::1001\"]",
    ));
    e.block(LeaseKey::Addr(a("2001:db8:1::1000")));
    let x = lease_for(&mut e, 1);
    assert_eq!(x, a("2001:db8:1::1001"));
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(2), sid(), ia_na(1, &["2001:db8:1::1000"])])));
    assert_eq!(ia_status(&r), Some(StatusCode::NO_ADDRS_AVAIL), "the blocked address stays out");
}

fn engine_with_naming() -> Engine {
    let c = Config::parse(CONFIG).unwrap();
    let naming = fqdn::Naming {
        policy: crate::config::FqdnPolicy::Client,
        qualifying_suffix: crate::wire::DomainName::from_dotted("example.net.").unwrap(),
        synthesize_pattern: "dhcp-{addr}".into(),
        forward_zone: crate::wire::DomainName::from_dotted("example.net.").unwrap(),
    };
    Engine::new(EngineConfig { server_duid: server_duid(), subnets: c.subnets, slice: Slice::WHOLE, hash_key: 7, naming: Some(naming), limits: Default::default(), unicast_listen: Vec::new(), provisioning: Default::default() })
}

/// What the DNS queue writes back after adding the records of the lease in
/// `r`; the lease's address.
fn dns_add_done(e: &mut Engine, r: &Reply) -> String {
    use crate::lease::dns_flags as F;
    let mut l = r.changes[0].clone();
    let d = l.dns.as_mut().unwrap();
    d.dns_flags = (d.dns_flags | F::FWD_UPTODATE | F::REV_UPTODATE) & !F::PENDING_ADD;
    e.load(l.clone());
    match l.key {
        LeaseKey::Addr(a) => a.to_string(),
        _ => unreachable!(),
    }
}

fn fqdn_opt(name: &str) -> DhcpOption {
    DhcpOption::ClientFqdn(crate::wire::ClientFqdn { flags: crate::wire::FQDN_FLAG_S, name: crate::wire::DomainName::from_dotted(name).unwrap() })
}

#[test]
fn fqdn_option_is_answered_only_when_requested_in_the_oro() {
    // RFC 4704 §6: include OPTION_CLIENT_FQDN only if the client sent it and asked for it.
    let mut e = engine_with_naming();
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(1), sid(), ia_na(1, &[]), fqdn_opt("h1"), DhcpOption::Oro(vec![opt::CLIENT_FQDN])])));
    let f = client_msg(&r).options.client_fqdn().expect("FQDN in the Reply");
    assert_eq!(f.name.to_string(), "h1.example.net.");
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(2), sid(), ia_na(1, &[]), fqdn_opt("h2")])));
    assert!(client_msg(&r).options.client_fqdn().is_none(), "not asked for in the ORO");
    // The name is kept with the lease either way (RFC 8156 §9.5), with the add to do.
    let l = &r.changes[0];
    let d = l.dns.as_ref().unwrap();
    assert_eq!(d.name.as_ref().unwrap().to_string(), "h2.example.net.");
    assert_ne!(d.dns_flags & crate::lease::dns_flags::PENDING_ADD, 0);
}

#[test]
fn no_dns_update_for_an_advertise_and_none_for_a_plain_renewal() {
    // RFC 4704 §6.1 item 4 (never for an Advertise); RFC 8156 §9.3 (renewals do not update).
    use crate::lease::dns_flags as F;
    let mut e = engine_with_naming();
    let r = reply(send(&mut e, msg(MessageType::Solicit, vec![cid(1), ia_na(1, &[]), fqdn_opt("h1"), DhcpOption::Oro(vec![opt::CLIENT_FQDN])])));
    assert!(r.changes.is_empty());
    assert!(client_msg(&r).options.client_fqdn().is_some(), "the Advertise still tells the name");
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(1), sid(), ia_na(1, &[]), fqdn_opt("h1")])));
    let addr = dns_add_done(&mut e, &r);
    let r = reply(send(&mut e, msg(MessageType::Renew, vec![cid(1), sid(), ia_na(1, &[&addr]), fqdn_opt("h1")])));
    let d = r.changes[0].dns.clone().unwrap();
    assert_eq!(d.dns_flags & F::PENDING_ADD, 0, "a renewal with the same name adds nothing");
    assert_ne!(d.dns_flags & F::FWD_UPTODATE, 0, "what is in the DNS stays known");
    // Release: the server that ends the lease removes the records (RFC 4704 §6.1 item 5).
    let r = reply(send(&mut e, msg(MessageType::Release, vec![cid(1), sid(), ia_na(1, &[&addr])])));
    let d = r.changes[0].dns.clone().unwrap();
    assert_ne!(d.dns_flags & F::PENDING_REMOVE, 0);
}

#[test]
fn a_lease_keeps_the_name_its_records_carry() {
    // RFC 4704 §6 (the server chooses the name): a renewal asking for another
    // name gets the one in the DNS, so no record is left without a lease.
    use crate::lease::dns_flags as F;
    let mut e = engine_with_naming();
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(1), sid(), ia_na(1, &[]), fqdn_opt("first")])));
    let addr = dns_add_done(&mut e, &r);
    let r = reply(send(&mut e, msg(MessageType::Renew, vec![cid(1), sid(), ia_na(1, &[&addr]), fqdn_opt("second"), DhcpOption::Oro(vec![opt::CLIENT_FQDN])])));
    assert_eq!(client_msg(&r).options.client_fqdn().unwrap().name.to_string(), "first.example.net.");
    let d = r.changes[0].dns.clone().unwrap();
    assert_eq!(d.name.unwrap().to_string(), "first.example.net.");
    assert_eq!(d.dns_flags & F::PENDING_ADD, 0);
    assert_ne!(d.dns_flags & F::FWD_UPTODATE, 0);
}

// ---- RFC 9915 §13.1: reserved interface identifiers (RFC 5453) -------------

#[test]
fn rfc9915_13_1_reserved_interface_identifiers_are_never_assigned() {
    let mut e = engine_with(
        r#"
interfaces = ["eth1"]
[[subnet]]
prefix = "2001:db8:5::/64"
interface = "eth1"
pools = ["2001:db8:5::-2001:db8:5::7",
         "2001:db8:5::fdff:ffff:ffff:ff7c-2001:db8:5::fdff:ffff:ffff:ffff",
         "2001:db8:5::200:5eff:fdff:fffe-2001:db8:5::200:5eff:fe00:1"]
"#,
    );
    // A client asking for the subnet-router anycast address does not get it.
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(1), sid(), ia_na(1, &["2001:db8:5::"])])));
    let mut given = vec![first_addr(&r).0];
    // 7 + 4 + 2 usable addresses: the pools are exhausted without one reserved.
    for n in 2..=13 {
        given.push(lease_for(&mut e, n));
    }
    for x in &given {
        assert!(!crate::pool::reserved::is_reserved(u128::from(*x)), "{x} is reserved");
    }
    given.sort();
    given.dedup();
    assert_eq!(given.len(), 13);
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(14), sid(), ia_na(1, &[])])));
    assert_eq!(ia_status(&r), Some(StatusCode::NO_ADDRS_AVAIL));
}

// ---- RFC 9915 Security Considerations: per-client limits -------------------

fn ia_statuses(r: &Reply) -> Vec<Option<StatusCode>> {
    let c = client_msg(r);
    c.options
        .iter()
        .filter_map(|o| match o {
            DhcpOption::IaNa(ia) => Some(ia.options.status().map(|s| s.code)),
            DhcpOption::IaPd(ia) => Some(ia.options.status().map(|s| s.code)),
            _ => None,
        })
        .collect()
}

#[test]
fn rfc9915_security_considerations_leases_per_client_caps_each_ia_type() {
    use limits::{Limit, Limits};
    let mut e = engine();
    e.limits = limits::Tracker::new(Limits { leases_per_client: 4, declines_per_client_per_hour: 8 });
    let ten_na: Vec<DhcpOption> = (1..=10).map(|i| ia_na(i, &[])).collect();
    let ten_pd: Vec<DhcpOption> = (1..=10).map(ia_pd).collect();
    // An Advertise already shows the cap (it commits nothing, yet offers count).
    let r = reply(send(&mut e, msg(MessageType::Solicit, [vec![cid(1)], ten_na.clone()].concat())));
    let st = ia_statuses(&r);
    assert_eq!((st.iter().filter(|s| s.is_none()).count(), st.len()), (4, 10), "{st:?}");
    let r = reply(send(&mut e, msg(MessageType::Request, [vec![cid(1), sid()], ten_na.clone(), ten_pd.clone()].concat())));
    let st = ia_statuses(&r);
    assert_eq!(st[..4], [None; 4]);
    assert_eq!(st[4..10], [Some(StatusCode::NO_ADDRS_AVAIL); 6]);
    assert_eq!(st[10..14], [None; 4]);
    assert_eq!(st[14..], [Some(StatusCode::NO_PREFIX_AVAIL); 6]);
    assert_eq!(e.limits.hits(Limit::LeasesPerClient), 6 + 6 + 6);
    // Logged once a minute per client, however many hits.
    assert_eq!(e.limits.take_log(), vec![(client_duid(1), Limit::LeasesPerClient)]);
    // What it holds keeps renewing; another client is unaffected.
    let r = reply(send(&mut e, msg(MessageType::Renew, [vec![cid(1), sid()], ten_na[..4].to_vec()].concat())));
    assert_eq!(ia_statuses(&r), vec![None; 4]);
    assert_eq!(lease_for(&mut e, 2).segments()[0], 0x2001);
    // Releasing one makes room for one.
    let held = e.leases().iter().find(|l| l.binding.duid == client_duid(1) && l.binding.iaid == 1 && l.binding.ia_type == IaType::Na && l.is_active()).unwrap().key;
    let LeaseKey::Addr(x) = held else { panic!() };
    reply(send(&mut e, msg(MessageType::Release, vec![cid(1), sid(), ia_na(1, &[&x.to_string()])])));
    let r = reply(send(&mut e, msg(MessageType::Request, [vec![cid(1), sid()], ten_na[4..6].to_vec()].concat())));
    assert_eq!(ia_statuses(&r), vec![None, Some(StatusCode::NO_ADDRS_AVAIL)]);
}

#[test]
fn rfc9915_security_considerations_declines_over_the_cap_still_abandon_and_block_new_addresses() {
    use limits::{Limit, Limits};
    let mut e = engine();
    e.limits = limits::Tracker::new(Limits { leases_per_client: 16, declines_per_client_per_hour: 2 });
    for round in 0..3 {
        let x = lease_for(&mut e, 1);
        let r = reply(send(&mut e, msg(MessageType::Decline, vec![cid(1), sid(), ia_na(1, &[&x.to_string()])])));
        assert_eq!(client_msg(&r).options.status().unwrap().code, StatusCode::SUCCESS, "round {round}");
        assert_eq!(e.leases().get(&LeaseKey::Addr(x)).unwrap().status, BindingStatus::Abandoned);
    }
    // Three declines, two allowed: no new address within the hour…
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(1), sid(), ia_na(1, &[])])));
    assert_eq!(ia_status(&r), Some(StatusCode::NO_ADDRS_AVAIL));
    assert_eq!(e.limits.hits(Limit::DeclinesPerClientPerHour), 1);
    // …but prefixes are not addresses, and another client is served.
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(1), sid(), ia_pd(1)])));
    assert_eq!(ia_statuses(&r), vec![None]);
    lease_for(&mut e, 2);
    // An hour after the first decline it gets one again.
    let later = e.handle(NOW + 3600, &msg(MessageType::Request, vec![cid(1), sid(), ia_na(1, &[])]), &direct(), &Standalone);
    assert_eq!(ia_status(&reply(later)), None);
}

// ---- RFC 9915 deltas (shared/reviews/rfc9915-deltas.md §2) ------------------

#[test]
fn rfc9915_21_5_confirm_ignores_ia_ta() {
    let mut e = engine();
    let ta = |x: &str| {
        DhcpOption::IaTa(crate::wire::IaTa {
            iaid: 9,
            options: vec![DhcpOption::IaAddr(IaAddr { addr: a(x), preferred: 0, valid: 0, options: Options::new() })].into(),
        })
    };
    // Only temporary addresses: nothing to confirm, no Reply (§18.3.3).
    assert_eq!(send(&mut e, msg(MessageType::Confirm, vec![cid(1), ta("2001:db8:1::5")])), Outcome::Drop(DropReason::NothingToSay));
    // An off-link temporary address does not make the IA_NA's NotOnLink.
    let r = reply(send(&mut e, msg(MessageType::Confirm, vec![cid(1), ia_na(1, &["2001:db8:1::5"]), ta("2001:db8:77::5")])));
    assert_eq!(client_msg(&r).options.status().unwrap().code, StatusCode::SUCCESS);
}

#[test]
fn rfc9915_13_1_a_multicast_arrival_belongs_to_its_interfaces_subnet_not_its_sources() {
    let mut e = engine();
    // Multicast on eth1 (subnet 2001:db8:1::/64) from a global address of 2001:db8:2::/64.
    let m = msg(MessageType::Solicit, vec![cid(1), ia_na(1, &[])]);
    let from = Arrival { interface: Some("eth1"), source: a("2001:db8:2::99"), destination: a(MCAST) };
    let r = reply(e.handle(NOW, &m, &from, &Standalone));
    assert!(first_addr(&r).0 >= a("2001:db8:1::1000"), "{}", first_addr(&r).0);
    // On an interface without a subnet the source prefix still places it.
    let from = Arrival { interface: Some("eth9"), source: a("2001:db8:2::99"), destination: a(MCAST) };
    let r = reply(e.handle(NOW, &m, &from, &Standalone));
    assert_eq!(first_addr(&r).0.segments()[2], 2);
}

#[test]
fn rfc9915_16_legacy_unicast_from_a_client_gets_use_multicast_without_processing() {
    // RFC 9915 §16: servers SHOULD NOT accept unicast from clients; the
    // RFC 8415 answer (UseMulticast, nothing processed) is kept so a legacy
    // client falls back to multicast at once and its Release is not lost.
    let mut e = engine();
    let x = lease_for(&mut e, 1);
    let m = msg(MessageType::Release, vec![cid(1), sid(), ia_na(1, &[&x.to_string()])]);
    let r = reply(e.handle(NOW, &m, &Arrival { interface: Some("eth1"), source: a(LL), destination: a("2001:db8:1::1") }, &Standalone));
    assert_eq!(client_msg(&r).options.status().unwrap().code, StatusCode::USE_MULTICAST);
    assert!(e.leases().get(&LeaseKey::Addr(x)).unwrap().is_active(), "not processed");
}

#[test]
fn unicast_listen_limits_the_addresses_relays_may_send_to() {
    let c = Config::parse(CONFIG).unwrap();
    let mut e = Engine::new(EngineConfig {
        server_duid: server_duid(),
        subnets: c.subnets,
        slice: Slice::WHOLE,
        hash_key: 7,
        naming: None,
        limits: Default::default(),
        unicast_listen: vec![a("2001:db8:ffff::1")],
        provisioning: Default::default(),
    });
    let m = relay("2001:db8:1::1", "fe80::c", 0, None, msg(MessageType::Solicit, vec![cid(1), ia_na(1, &[])]));
    let to = |d: &str| Arrival { interface: Some("eth0"), source: a("2001:db8:ffff::7"), destination: a(d) };
    assert!(matches!(e.handle(NOW, &m, &to("2001:db8:ffff::1"), &Standalone), Outcome::Reply(_)));
    assert_eq!(e.handle(NOW, &m, &to("2001:db8:ffff::2"), &Standalone), Outcome::Drop(DropReason::UnicastNotListening));
    assert_eq!(e.stats.dropped(DropReason::UnicastNotListening), 1);
    // Relays that multicast (All_DHCP_Servers) are not affected.
    assert!(matches!(e.handle(NOW, &m, &to("ff05::1:3"), &Standalone), Outcome::Reply(_)));
    // Unset: any local address.
    let mut open = engine();
    assert!(matches!(open.handle(NOW, &m, &to("2001:db8:ffff::2"), &Standalone), Outcome::Reply(_)));
}

#[test]
fn rfc8357_a_relay_on_its_own_port_gets_the_option_back_and_the_reply_on_that_port() {
    let mut e = engine();
    let with_port = |m: Message| {
        let Message::Relay(mut r) = m else { panic!() };
        r.options.push(DhcpOption::RelayPort(0));
        Message::Relay(r)
    };
    let solicit = || msg(MessageType::Solicit, vec![cid(1), ia_na(1, &[])]);
    let from_relay = Arrival { interface: Some("eth0"), source: a("2001:db8:ffff::7"), destination: a("2001:db8:ffff::1") };
    let m = with_port(relay("2001:db8:1::1", "fe80::c", 0, Some(b"p1"), solicit()));
    let r = reply(e.handle(NOW, &m, &from_relay, &Standalone));
    assert!(r.to_source_port);
    let Message::Relay(rr) = &r.message else { panic!("not a relay reply") };
    assert_eq!(rr.options.relay_port(), Some(0));
    assert_eq!(rr.options.interface_id(), Some(&b"p1"[..]));
    // RFC 9915 §7.2 without it: port 547.
    let r = reply(e.handle(NOW, &relay("2001:db8:1::1", "fe80::c", 0, None, solicit()), &from_relay, &Standalone));
    assert!(!r.to_source_port);
    assert_eq!(r.port, SERVER_PORT);
    // Nested: the inner relay's option is copied at its level; the outer
    // relay (on 547) gets the reply on 547 and forwards it by the option.
    let inner = with_port(relay("2001:db8:1::1", "fe80::c", 0, None, solicit()));
    let r = reply(e.handle(NOW, &relay("::", "2001:db8:5::a", 1, None, inner), &from_relay, &Standalone));
    assert!(!r.to_source_port);
    let (chain, _) = r.message.unwrap_relays();
    assert_eq!((chain[0].options.relay_port(), chain[1].options.relay_port()), (None, Some(0)));
}

// ---- Reload (README "Reload") ---------------------------------------------

fn reconfigure(e: &mut Engine, cfg: &str) {
    let c = Config::parse(cfg).unwrap();
    let ec = EngineConfig { server_duid: server_duid(), subnets: c.subnets, slice: Slice::WHOLE, hash_key: 7, naming: None, limits: c.limits, unicast_listen: Vec::new(), provisioning: Default::default() };
    e.reconfigure(ec, Vec::new());
}

#[test]
fn a_reload_that_moves_a_pool_renews_old_leases_with_lifetimes_zero_and_serves_from_the_new_one() {
    // RFC 9915 §18.3.4: an address no longer appropriate gets lifetimes 0.
    let mut e = engine();
    let old = lease_for(&mut e, 1);
    let held = DhcpOption::IaPd(IaPd { iaid: 4, t1: 0, t2: 0, options: Options::new() });
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(1), sid(), held])));
    let p = client_msg(&r).options.ia_pds().next().unwrap().options.ia_prefixes().next().unwrap().clone();
    reconfigure(
        &mut e,
        &CONFIG
            .replace("2001:db8:1::1000-2001:db8:1::ffff", "2001:db8:1::5:0-2001:db8:1::5:ffff")
            .replace("2001:db8:100::/40", "2001:db8:200::/40"),
    );
    // The lease stays until it ends; the client hears it is over.
    assert!(e.leases().get(&LeaseKey::Addr(old)).is_some_and(Lease::is_active));
    let r = reply(e.handle(NOW + 100, &msg(MessageType::Renew, vec![cid(1), sid(), ia_na(1, &[&old.to_string()])]), &direct(), &Standalone));
    let ia = client_msg(&r).options.ia_nas().next().unwrap().clone();
    let zero = ia.options.ia_addrs().find(|x| x.addr == old).expect("the old address, with lifetimes 0");
    assert_eq!((zero.preferred, zero.valid), (0, 0));
    let fresh = ia.options.ia_addrs().find(|x| x.addr != old).expect("an address from the new pool");
    assert!((0x5_0000..=0x5_ffff).contains(&(u128::from(fresh.addr) & 0xffff_ffff)), "{}", fresh.addr);
    assert_eq!(fresh.valid, 4000);
    let pd = DhcpOption::IaPd(IaPd { iaid: 4, t1: 0, t2: 0, options: vec![DhcpOption::IaPrefix(p.clone())].into() });
    let r = reply(e.handle(NOW + 100, &msg(MessageType::Renew, vec![cid(1), sid(), pd]), &direct(), &Standalone));
    let ia = client_msg(&r).options.ia_pds().next().unwrap().clone();
    assert_eq!(ia.options.ia_prefixes().find(|x| x.prefix == p.prefix).map(|x| x.valid), Some(0));
    assert!(ia.options.ia_prefixes().any(|x| x.valid == 4000 && "2001:db8:200::/40".parse::<Prefix>().unwrap().contains(x.prefix)));
}

#[test]
fn a_reload_keeps_the_allocators_of_unchanged_pools_and_fills_new_pools_free_lists_from_the_table() {
    // One address per pool: what is free after the reload must be found.
    let one = CONFIG.replace("2001:db8:1::1000-2001:db8:1::ffff", "2001:db8:1::1000-2001:db8:1::1000");
    let mut e = engine_with(&one);
    let x = lease_for(&mut e, 1);
    let r = reply(send(&mut e, msg(MessageType::Release, vec![cid(1), sid(), ia_na(1, &[&x.to_string()])])));
    assert_eq!(r.changes[0].status, BindingStatus::Released);
    // Remove the pool, then bring it back: it is new again, its free
    // address comes from the table.
    reconfigure(&mut e, &one.replace("2001:db8:1::1000-2001:db8:1::1000", "2001:db8:1::2000-2001:db8:1::2000"));
    reconfigure(&mut e, &one);
    assert!(e.free_listed(&LeaseKey::Addr(x)));
    assert_eq!(lease_for(&mut e, 2), x);
    // Unchanged: the pool is full and stays so.
    reconfigure(&mut e, &one.replace("valid-lifetime = 4000", "valid-lifetime = 5000"));
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(3), sid(), ia_na(1, &[])])));
    assert_eq!(ia_status(&r), Some(StatusCode::NO_ADDRS_AVAIL));
    let r = reply(e.handle(NOW + 10, &msg(MessageType::Renew, vec![cid(2), sid(), ia_na(1, &[&x.to_string()])]), &direct(), &Standalone));
    assert_eq!(first_addr(&r), (x, 3000, 5000), "the new lifetime applies at the next renewal");
}

#[test]
fn an_operator_reset_ends_the_lease_like_a_release() {
    // RFC 8156 §7.2: RESET, "made available by an operator command".
    let mut e = engine_with(&CONFIG.replace("2001:db8:1::1000-2001:db8:1::ffff", "2001:db8:1::1000-2001:db8:1::1000"));
    let x = lease_for(&mut e, 1);
    let l = e.reset(NOW + 5, &LeaseKey::Addr(x), &Standalone).expect("an ACTIVE lease");
    assert_eq!((l.status, l.cltt), (BindingStatus::Reset, NOW + 5));
    assert!(e.reset(NOW + 6, &LeaseKey::Addr(x), &Standalone).is_none(), "only an ACTIVE lease is reset");
    assert_eq!(lease_for(&mut e, 2), x, "standalone: reusable at once, as a released one");
}

#[test]
fn a_hint_in_the_second_pool_is_honoured_while_the_first_has_room() {
    // RFC 9915 §18.3.9: the hint's pool is tried first.
    let mut e = engine_with(&CONFIG.replace(
        "pools = [\"2001:db8:1::1000-2001:db8:1::ffff\"]",
        "pools = [\"2001:db8:1::1000-2001:db8:1::1fff\", \"2001:db8:1::3000-2001:db8:1::3fff\"]",
    ));
    let r = reply(send(&mut e, msg(MessageType::Solicit, vec![cid(1), ia_na(1, &["2001:db8:1::3001"])])));
    assert_eq!(first_addr(&r).0, a("2001:db8:1::3001"));
}

// ---- Options, classes, reservations, shared networks (README "Options" …) ----

/// An engine with everything the config holds (global options, classes).
fn engine_full(cfg: &str, naming: Option<fqdn::Naming>) -> Engine {
    let c = Config::parse(cfg).unwrap_or_else(|e| panic!("{e:?}"));
    Engine::new(EngineConfig {
        server_duid: server_duid(),
        subnets: c.subnets,
        slice: Slice::WHOLE,
        hash_key: 7,
        naming,
        limits: Default::default(),
        unicast_listen: Vec::new(),
        provisioning: c.provisioning,
    })
}

fn oro(codes: &[u16]) -> DhcpOption {
    DhcpOption::Oro(codes.to_vec())
}

/// The body of option `code` in the client message of `r` (None: absent).
fn opt_body(r: &Reply, code: u16) -> Option<Vec<u8>> {
    client_msg(r).options.iter().find(|o| o.code() == code).map(|o| {
        let mut b = Vec::new();
        o.encode(&mut b).unwrap();
        b[4..].to_vec()
    })
}

const PROVISIONED: &str = r#"
interfaces = ["eth1"]
options = [ { name = "sip-server-addresses", value = ["2001:db8::5"] },
            { name = "bootfile-url", value = "http://global/boot" },
            { code = 65000, type = "string", value = "hello", always-send = true } ]
[[class]]
name = "cm"
match = { vendor-class = { enterprise = 4491 } }
options = [ { name = "bootfile-url", value = "http://cm/boot" } ]
[[class]]
name = "cpe"
match = { user-class = "cpe" }
options = [ { name = "vendor-opts", enterprise = 3561, sub = [ { code = 1, type = "string", value = "http://acs" } ] } ]
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "eth1"
pools = [ { range = "2001:db8:1::100-2001:db8:1::1ff", client-classes = ["cm"], options = [ { name = "bootfile-url", value = "http://cmpool/boot" } ] }, { range = "2001:db8:1::200-2001:db8:1::2ff", client-classes = ["cpe"] }, "2001:db8:1::1000-2001:db8:1::1fff" ]
pd-pools = [ { prefix = "2001:db8:100::/48", delegated-length = 56, client-classes = ["cpe"] } ]
options = [ { name = "bootfile-url", value = "http://subnet/boot" }, { name = "aftr-name", value = "aftr.example.net" } ]
dns-servers = ["2001:db8:1::53"]
[[subnet.reservations]]
hw-address = "02:00:00:00:00:0c"
addresses = ["2001:db8:1::c", "2001:db8:1::d"]
[[subnet.reservations]]
duid = "0003000102000000000b"
address = "2001:db8:1::b"
hostname = "printer"
options = [ { name = "bootfile-url", value = "http://printer/boot" } ]
[runtime]
shards = 1
"#;

fn vendor_class(enterprise: u32) -> DhcpOption {
    DhcpOption::VendorClass(crate::wire::VendorClass { enterprise, data: vec![b"docsis3.0".to_vec()] })
}

fn user_class(s: &str) -> DhcpOption {
    DhcpOption::UserClass(vec![s.as_bytes().to_vec()])
}

#[test]
fn options_go_out_when_asked_or_always_sent_and_the_most_specific_scope_wins() {
    // RFC 9915 §18.3, §21.7: ORO; README "Options": reservation > class > pool > subnet > global.
    let mut e = engine_full(PROVISIONED, None);
    let boot = |r: &Reply| opt_body(r, 59).map(|b| String::from_utf8(b).unwrap());
    // A plain client: subnet wins over global; 22 from global; the always-send option unasked.
    let r = reply(send(&mut e, msg(MessageType::Solicit, vec![cid(1), ia_na(1, &[]), oro(&[59, 22, 23])])));
    assert_eq!(boot(&r).as_deref(), Some("http://subnet/boot"));
    assert_eq!(opt_body(&r, 22).unwrap(), a("2001:db8::5").octets().to_vec());
    assert_eq!(opt_body(&r, 23).unwrap(), a("2001:db8:1::53").octets().to_vec(), "the shorthand is the subnet's");
    assert_eq!(opt_body(&r, 65000).unwrap(), b"hello".to_vec());
    assert_eq!(opt_body(&r, 64), None, "not asked for, not always-send");
    assert_eq!(client_msg(&r).options.count(59), 1);
    // A cable modem: its class pool, whose option beats the class's.
    let r = reply(send(&mut e, msg(MessageType::Solicit, vec![cid(2), ia_na(1, &[]), vendor_class(4491), oro(&[59])])));
    assert!((a("2001:db8:1::100")..=a("2001:db8:1::1ff")).contains(&first_addr(&r).0));
    assert_eq!(boot(&r).as_deref(), Some("http://cm/boot"), "class over pool");
    // A reservation's option beats everything.
    let r = reply(send(&mut e, msg(MessageType::Solicit, vec![cid(11), ia_na(1, &[]), vendor_class(4491), oro(&[59])])));
    assert_eq!(first_addr(&r).0, a("2001:db8:1::b"));
    assert_eq!(boot(&r).as_deref(), Some("http://printer/boot"));
    // Information-request: the same scopes without leases.
    let r = reply(send(&mut e, msg(MessageType::InformationRequest, vec![cid(3), user_class("cpe"), oro(&[17, 59])])));
    let v = opt_body(&r, 17).unwrap();
    assert_eq!(&v[..4], &3561u32.to_be_bytes());
    assert_eq!(&v[4..8], &[0, 1, 0, 10]);
    assert_eq!(boot(&r).as_deref(), Some("http://subnet/boot"));
}

#[test]
fn class_restricted_pools_serve_only_their_classes() {
    let mut e = engine_full(PROVISIONED, None);
    let in_range = |x: Ipv6Addr, lo: &str, hi: &str| (a(lo)..=a(hi)).contains(&x);
    for n in 20..40u8 {
        let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(n), sid(), ia_na(1, &[])])));
        assert!(in_range(first_addr(&r).0, "2001:db8:1::1000", "2001:db8:1::1fff"), "a client in no class gets the open pool");
        // No class: the only pd-pool is for CPEs.
        let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(n), sid(), ia_pd(1)])));
        let ia = client_msg(&r).options.ia_pds().next().unwrap();
        assert_eq!(ia.options.status().map(|s| s.code), Some(StatusCode::NO_PREFIX_AVAIL));
        let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(n + 100), sid(), ia_na(1, &[]), ia_pd(1), user_class("cpe")])));
        assert!(in_range(first_addr(&r).0, "2001:db8:1::200", "2001:db8:1::2ff"));
        assert!(client_msg(&r).options.ia_pds().next().unwrap().options.ia_prefixes().next().is_some());
    }
    // A hint into a pool the client's classes do not open is not honoured.
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(99), sid(), ia_na(1, &["2001:db8:1::150"])])));
    assert!(!in_range(first_addr(&r).0, "2001:db8:1::100", "2001:db8:1::1ff"));
}

#[test]
fn reservations_by_duid_and_hardware_address_go_to_their_client_only() {
    let mut e = engine_full(PROVISIONED, None);
    // client_duid(12) is DUID-LL 02:00:00:00:00:0c: the hw-address reservation, both addresses, one per IA.
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(12), sid(), ia_na(1, &[]), ia_na(2, &[])])));
    let got: Vec<Ipv6Addr> = client_msg(&r).options.ia_nas().map(|ia| ia.options.ia_addrs().next().unwrap().addr).collect();
    assert_eq!(got, vec![a("2001:db8:1::c"), a("2001:db8:1::d")]);
    // Others never get a reserved address, even asking for it.
    for (n, x) in [(13u8, "2001:db8:1::b"), (14, "2001:db8:1::c")] {
        let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(n), sid(), ia_na(1, &[x])])));
        assert_ne!(first_addr(&r).0, a(x));
    }
    // A relayed client of another DUID type whose relay sends option 79 (RFC 6939) with the reserved MAC.
    // Decoded from bytes, as a datagram is.
    let relayed = |duid: Duid, iaid: u32| {
        let inner = msg(MessageType::Request, vec![DhcpOption::ClientId(duid), sid(), ia_na(iaid, &[])]);
        let Message::Relay(mut rm) = relay("2001:db8:1::1", "fe80::c", 0, None, inner) else { unreachable!() };
        rm.options.0.insert(0, DhcpOption::ClientLinkLayerAddr { hw_type: 1, address: vec![2, 0, 0, 0, 0, 0x0c] });
        Message::decode(&Message::Relay(rm).encode().unwrap()).unwrap()
    };
    let from_relay = Arrival { interface: Some("eth1"), source: a("2001:db8:1::7"), destination: a(MCAST) };
    // Both reserved addresses are held by client 12: this DUID-EN client (the
    // same host) gets a pool address, neither reserved one.
    let r = reply(e.handle(NOW, &relayed(Duid::en(9, b"box"), 7), &from_relay, &Standalone));
    let x = first_addr(&r).0;
    assert!(x != a("2001:db8:1::c") && x != a("2001:db8:1::d"), "{x}: held by the DUID-LL client");
    // Once client 12 released them, option 79 alone identifies the host.
    let rel = msg(MessageType::Release, vec![cid(12), sid(), ia_na(1, &["2001:db8:1::c"]), ia_na(2, &["2001:db8:1::d"])]);
    reply(send(&mut e, rel));
    let r = reply(e.handle(NOW, &relayed(Duid::en(9, b"box"), 8), &from_relay, &Standalone));
    assert_eq!(first_addr(&r).0, a("2001:db8:1::c"));
}

#[test]
fn a_key_reserved_for_another_is_renewed_with_lifetimes_0() {
    // RFC 9915 §18.3.4: an address no longer appropriate for the client.
    let mut e = engine_full(PROVISIONED, None);
    let x = lease_for(&mut e, 40);
    let mut e2 = engine_full(&PROVISIONED.replace("address = \"2001:db8:1::b\"", &format!("address = \"{x}\"")), None);
    for l in e.leases().iter() {
        e2.load(l.clone());
    }
    let r = reply(send(&mut e2, msg(MessageType::Renew, vec![cid(40), sid(), ia_na(1, &[&x.to_string()])])));
    let ia = client_msg(&r).options.ia_nas().next().unwrap();
    let zero = ia.options.ia_addrs().find(|i| i.addr == x).unwrap();
    assert_eq!((zero.preferred, zero.valid), (0, 0));
}

#[test]
fn a_reserved_host_name_names_the_lease() {
    let naming = fqdn::Naming {
        policy: fqdn::FqdnPolicy::Client,
        qualifying_suffix: crate::wire::DomainName::from_dotted("example.net.").unwrap(),
        synthesize_pattern: "dhcp-{addr}".into(),
        forward_zone: crate::wire::DomainName::from_dotted("example.net.").unwrap(),
    };
    let mut e = engine_full(PROVISIONED, Some(naming));
    let want = crate::wire::ClientFqdn { flags: crate::wire::FQDN_FLAG_S, name: crate::wire::DomainName::from_dotted("laptop").unwrap() };
    let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(11), sid(), ia_na(1, &[]), DhcpOption::ClientFqdn(want), oro(&[opt::CLIENT_FQDN])])));
    let name = r.changes[0].dns.as_ref().unwrap().name.as_ref().unwrap().to_string();
    assert_eq!(name, "printer.example.net.");
    assert_eq!(client_msg(&r).options.client_fqdn().unwrap().name.to_string(), "printer.example.net.");
}

#[test]
fn a_shared_network_spills_into_its_next_subnet_and_renews_there() {
    let cfg = r#"
interfaces = ["eth1"]
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "eth1"
shared-network = "lan"
pools = ["2001:db8:1::1000-2001:db8:1::1001"]
valid-lifetime = 4000
[[subnet]]
prefix = "2001:db8:3::/64"
shared-network = "lan"
pools = ["2001:db8:3::1000-2001:db8:3::10ff"]
preferred-lifetime = 500
valid-lifetime = 900
"#;
    let mut e = engine_full(cfg, None);
    let got: Vec<(Ipv6Addr, u32)> = (1..=4u8)
        .map(|n| {
            let r = reply(send(&mut e, msg(MessageType::Request, vec![cid(n), sid(), ia_na(1, &[])])));
            let (x, _, valid) = first_addr(&r);
            (x, valid)
        })
        .collect();
    assert!(got[..2].iter().all(|(x, v)| (a("2001:db8:1::1000")..=a("2001:db8:1::1001")).contains(x) && *v == 4000), "{got:?}");
    assert!(got[2..].iter().all(|(x, v)| (a("2001:db8:3::1000")..=a("2001:db8:3::10ff")).contains(x) && *v == 900), "{got:?}: the second subnet's lifetimes");
    // A Renew of a lease in the second subnet, arriving on the first's link, is extended.
    let x = got[3].0.to_string();
    let r = reply(send(&mut e, msg(MessageType::Renew, vec![cid(4), sid(), ia_na(1, &[&x])])));
    assert_eq!(first_addr(&r), (got[3].0, 500, 900));
    // Confirm: on link.
    let r = reply(send(&mut e, msg(MessageType::Confirm, vec![cid(4), ia_na(1, &[&x])])));
    assert_eq!(client_msg(&r).options.status().unwrap().code, StatusCode::SUCCESS);
}

#[test]
fn reserved_keys_are_outside_the_failover_split() {
    // README "Reservations": whichever partner the client reaches grants it,
    // in COMMUNICATIONS-INTERRUPTED too; the MCLT rule still caps it.
    use crate::failover::{EndpointPolicy, Role, address_owner};
    use crate::wire::ServerState;
    let reserved = a("2001:db8:1::b");
    for role in [Role::Primary, Role::Secondary] {
        let mut e = engine_full(PROVISIONED, None);
        let p = EndpointPolicy { role, state: ServerState::CommunicationsInterrupted, mclt: 60, partner_down_since: 0, partner_lost_store_at: 0 };
        let r = reply(e.handle(NOW, &msg(MessageType::Request, vec![cid(11), sid(), ia_na(1, &[])]), &direct(), &p));
        assert_eq!(first_addr(&r).0, reserved, "{role:?}");
        assert!(first_addr(&r).2 <= 60, "MCLT rule");
        // A client of the other half gets an address of this server's half only.
        let r = reply(e.handle(NOW, &msg(MessageType::Request, vec![cid(50), sid(), ia_na(1, &[])]), &direct(), &p));
        assert_eq!(address_owner(first_addr(&r).0), role);
    }
    // The secondary in NORMAL allocates nothing, reserved or not.
    let mut e = engine_full(PROVISIONED, None);
    let p = EndpointPolicy { role: Role::Secondary, state: ServerState::Normal, mclt: 60, partner_down_since: 0, partner_lost_store_at: 0 };
    let r = reply(e.handle(NOW, &msg(MessageType::Request, vec![cid(12), sid(), ia_na(1, &[])]), &direct(), &p));
    assert_eq!(ia_status(&r), Some(StatusCode::NO_ADDRS_AVAIL));
}

#[test]
fn a_reserved_key_another_client_held_is_reused_only_as_a_free_lease() {
    // RFC 8156 §7.2, §4.2.2.1: outside the split, but another client's
    // EXPIRED record waits for the partner's ack (that client may hold an
    // extension the partner gave); the reserved client's own record does not.
    use crate::failover::{EndpointPolicy, Role};
    use crate::wire::ServerState;
    let reserved = a("2001:db8:1::b");
    let ci = EndpointPolicy { role: Role::Secondary, state: ServerState::CommunicationsInterrupted, mclt: 60, partner_down_since: 0, partner_lost_store_at: 0 };
    let other = crate::lease::Binding { duid: client_duid(30), ia_type: crate::lease::IaType::Na, iaid: 1 };
    let own = crate::lease::Binding { duid: Duid::from_hex("0003000102000000000b").unwrap(), ia_type: crate::lease::IaType::Na, iaid: 1 };
    for (holder, status, granted) in [
        (&other, BindingStatus::Expired, false),
        (&other, BindingStatus::Released, false),
        (&other, BindingStatus::Free, true),
        (&own, BindingStatus::Expired, true),
        (&own, BindingStatus::Abandoned, false),
    ] {
        let mut e = engine_full(PROVISIONED, None);
        let mut l = Lease::active(LeaseKey::Addr(reserved), holder.clone(), NOW - 500, 100, 200, 50, 80);
        l.set_status(status, NOW - 100);
        e.load(l);
        let r = reply(e.handle(NOW, &msg(MessageType::Request, vec![cid(11), sid(), ia_na(1, &[])]), &direct(), &ci));
        let got = client_msg(&r).options.ia_nas().next().unwrap().options.ia_addrs().next().map(|x| x.addr);
        assert_eq!(got == Some(reserved), granted, "{status:?} of {}", holder.duid);
    }
}
