//! Endpoint tests, each traced to its RFC 8156 section.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use super::*;
use crate::lease::{Binding, IaType, Lease, LeaseKey, Time};
use crate::wire::failover::{ConnectParams, StateParams};
use crate::wire::{
    BindingStatus, DhcpOption, Duid, FailoverMessage, MessageType, SERVER_FLAG_COMMUNICATED, SERVER_FLAG_STARTUP, ServerState, StatusCode,
};

/// A lease database for endpoint tests: BNDUPDs judged and stored the way
/// a shard does it (`bndupd::parse`, `judge`, `merge`, `reply`).
#[derive(Default)]
struct Mem(BTreeMap<LeaseKey, Lease>);

struct Processed {
    reply: FailoverMessage,
    accepted: Vec<Lease>,
    outdated: Vec<LeaseKey>,
}

fn process(m: &FailoverMessage, now: Time, role: Role, mclt: u32, db: &Mem) -> Processed {
    let parsed = bndupd::parse(m, |_| true);
    let (mut accepted, mut outdated, mut verdicts) = (Vec::new(), Vec::new(), Vec::new());
    for item in parsed.items {
        let v = item.and_then(|r| {
            let local = db.0.get(&r.key).cloned();
            let v = bndupd::judge(local.as_ref(), &r, bndupd::Judge { role, now, mclt, partner_lost_store_at: 0 });
            match v {
                Ok(()) => accepted.push(bndupd::merge(local, &r, now)),
                Err(StatusCode::OUTDATED_BINDING_INFORMATION) => outdated.push(r.key),
                Err(_) => {}
            }
            v
        });
        verdicts.push(v);
    }
    Processed { reply: bndupd::reply(m, &verdicts, now), accepted, outdated }
}

impl Mem {
    fn store(&mut self, l: Lease) {
        self.0.insert(l.key, l);
    }
}

const NOW: Time = 1_800_000_000;

fn cfg(role: Role) -> FailoverConfig {
    FailoverConfig {
        role,
        relationship_name: "t".into(),
        mclt: 60,
        keepalive_time: 20,
        max_unacked_bndupd: 4,
        auto_partner_down: 30,
        startup_time: 5,
        pd_secondary_share: 0.5,
        pd_secondary_max: 1000,
        connect_retry: 3,
        connect_retry_rejected: 10,
        updreq_timeout: 60,
        startup_partner_down: false,
        resync_all: false,
        min_mclt: 30,
    }
}

fn sent(out: &[Output]) -> Vec<&FailoverMessage> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn persisted(state: ServerState) -> Persistent {
    Persistent {
        state,
        start_time: NOW - 100,
        partner_state: Some(ServerState::Normal),
        partner_start_time: NOW - 100,
        last_contact: NOW - 10,
        last_operating: NOW - 10,
        partner_down_time: 0,
        partner_pd_time: 0,
        partner_lost_store_at: 0,
        communicated: true,
        mclt: 60,
        need_all: false,
    }
}

/// Bring a primary/secondary pair to NORMAL over a perfect link.
fn pair() -> (Endpoint, Endpoint) {
    let (mut p, _) = Endpoint::new(cfg(Role::Primary), Some(persisted(ServerState::Normal)), NOW);
    let (mut s, _) = Endpoint::new(cfg(Role::Secondary), Some(persisted(ServerState::Normal)), NOW);
    p.set_loaded();
    s.set_loaded();
    let mut to_s: Vec<FailoverMessage> = sent(&p.on_connected(NOW)).into_iter().cloned().collect();
    let mut to_p: Vec<FailoverMessage> = sent(&s.on_connected(NOW)).into_iter().cloned().collect();
    // Both restarted together: each sees the other in STARTUP, so both wait
    // out their STARTUP time (§8.3.2 step 6) before talking for real.
    for step in 0..10 {
        if step == 3 {
            let end = NOW + 5;
            to_s.extend(sent(&p.on_tick(end)).into_iter().cloned());
            to_p.extend(sent(&s.on_tick(end)).into_iter().cloned());
        }
        let now = if step < 3 { NOW } else { NOW + 5 };
        let a: Vec<_> = std::mem::take(&mut to_s);
        for m in a {
            to_p.extend(sent(&s.on_message(now, &m)).into_iter().cloned());
        }
        let b: Vec<_> = std::mem::take(&mut to_p);
        for m in b {
            to_s.extend(sent(&p.on_message(now, &m)).into_iter().cloned());
        }
    }
    (p, s)
}

#[test]
fn the_primary_connects_and_the_pair_reaches_normal() {
    // §6.1: CONNECT from the primary, CONNECTREPLY and STATE from the secondary.
    let (mut p, _) = Endpoint::new(cfg(Role::Primary), None, NOW);
    let out = p.on_connected(NOW);
    let m = sent(&out);
    assert_eq!(m[0].msg_type, MessageType::Connect);
    let c = ConnectParams::from_message(m[0]).unwrap();
    assert_eq!((c.mclt, c.relationship_name.as_deref()), (60, Some("t")));
    // §8.3.2 step 5, §8.8: from a persisted NORMAL, both end in NORMAL.
    let (p, s) = pair();
    assert_eq!((p.state(), s.state()), (ServerState::Normal, ServerState::Normal));
    assert!(p.communications_ok() && s.communications_ok());
}

#[test]
fn connect_with_excessive_skew_is_rejected() {
    // §6.1.2 / §7.1: more than 5 s apart → CONNECTREPLY ExcessiveTimeSkew.
    let (mut s, _) = Endpoint::new(cfg(Role::Secondary), None, NOW);
    s.on_connected(NOW);
    let cp = ConnectParams {
        protocol_version: (1, 0),
        mclt: 60,
        keepalive_time: 20,
        max_unacked_bndupd: 4,
        relationship_name: Some("t".into()),
        connect_flags: 1,
    };
    let m = cp.to_message(MessageType::Connect, 1, bndupd::to_abs(NOW - 30));
    let out = s.on_message(NOW, &m);
    let r = sent(&out);
    assert_eq!(r[0].msg_type, MessageType::ConnectReply);
    assert_eq!(r[0].status().unwrap().code, StatusCode::EXCESSIVE_TIME_SKEW);
    assert!(out.iter().any(|o| matches!(o, Output::Close(_))));
}

#[test]
fn unknown_relationship_and_wrong_mclt_are_refused() {
    // §6.1.2 (digest §18 item 9: ConfigurationConflict), §6.1.3 (MCLT must match).
    let (mut s, _) = Endpoint::new(cfg(Role::Secondary), None, NOW);
    s.on_connected(NOW);
    let cp = ConnectParams { protocol_version: (1, 0), mclt: 60, keepalive_time: 20, max_unacked_bndupd: 4, relationship_name: Some("other".into()), connect_flags: 1 };
    let out = s.on_message(NOW, &cp.to_message(MessageType::Connect, 1, bndupd::to_abs(NOW)));
    assert_eq!(sent(&out)[0].status().unwrap().code, StatusCode::CONFIGURATION_CONFLICT);
    let (mut p, _) = Endpoint::new(cfg(Role::Primary), None, NOW);
    p.on_connected(NOW);
    let reply = ConnectParams { mclt: 120, relationship_name: None, ..cp };
    let out = p.on_message(NOW, &reply.to_message(MessageType::ConnectReply, 1, bndupd::to_abs(NOW)));
    assert_eq!(sent(&out)[0].msg_type, MessageType::Disconnect);
}

#[test]
fn losing_the_partner_goes_to_communications_interrupted_then_auto_partner_down() {
    // §8.8.2 and §8.9.2 (auto-partner-down after 30 s here).
    let (mut p, _) = pair();
    let t = NOW + 5;
    p.on_disconnected(t + 1);
    assert_eq!(p.state(), ServerState::CommunicationsInterrupted);
    p.on_tick(t + 20);
    assert_eq!(p.state(), ServerState::CommunicationsInterrupted);
    p.on_tick(t + 31);
    assert_eq!(p.state(), ServerState::PartnerDown);
    assert_eq!(p.persistent().partner_down_time, t + 31);
}

#[test]
fn keepalive_silence_drops_the_connection() {
    // §6.6: nothing received for FO_KEEPALIVE_TIME → communications down.
    let (mut p, _) = pair();
    let out = p.on_tick(NOW + 5 + 21);
    assert!(out.iter().any(|o| matches!(o, Output::Close(_))));
    assert_eq!(p.state(), ServerState::CommunicationsInterrupted);
}

#[test]
fn contact_is_sent_when_nothing_else_was() {
    // §6.6: FO_SEND_TIME = partner keepalive / 4 = 5 s.
    let (mut p, _) = pair();
    let out = p.on_tick(NOW + 5 + 5);
    assert!(sent(&out).iter().any(|m| m.msg_type == MessageType::Contact));
}

#[test]
fn partner_down_meeting_a_normal_partner_is_a_potential_conflict() {
    // §8.4.2: PARTNER-DOWN + partner NORMAL → POTENTIAL-CONFLICT; the primary sends UPDREQ (§8.10).
    let (mut p, _) = Endpoint::new(cfg(Role::Primary), Some(persisted(ServerState::PartnerDown)), NOW);
    p.on_connected(NOW);
    let reply = ConnectParams { protocol_version: (1, 0), mclt: 60, keepalive_time: 20, max_unacked_bndupd: 4, relationship_name: None, connect_flags: 1 };
    p.on_message(NOW, &reply.to_message(MessageType::ConnectReply, 2, bndupd::to_abs(NOW)));
    let st = StateParams { state: ServerState::Normal, flags: crate::wire::SERVER_FLAG_COMMUNICATED, start_time_of_state: bndupd::to_abs(NOW - 50), partner_down_time: None };
    let out = p.on_message(NOW, &st.to_message(3, bndupd::to_abs(NOW)));
    assert_eq!(p.state(), ServerState::PotentialConflict);
    assert!(sent(&out).iter().any(|m| m.msg_type == MessageType::UpdReq));
}

/// A secondary with a lost (or restored) store meets a partner in
/// PARTNER-DOWN: RECOVER, UPDREQALL, and the partner's UPDDONE at NOW + 1.
fn resync_from_a_partner_in_partner_down(s: &mut Endpoint) {
    s.on_connected(NOW);
    let cp = ConnectParams { protocol_version: (1, 0), mclt: 60, keepalive_time: 20, max_unacked_bndupd: 4, relationship_name: Some("t".into()), connect_flags: 1 };
    s.on_message(NOW, &cp.to_message(MessageType::Connect, 1, bndupd::to_abs(NOW)));
    let st = StateParams { state: ServerState::PartnerDown, flags: 1, start_time_of_state: bndupd::to_abs(NOW - 500), partner_down_time: Some(bndupd::to_abs(NOW - 500)) };
    let out = s.on_message(NOW, &st.to_message(2, bndupd::to_abs(NOW)));
    assert_eq!(s.state(), ServerState::Recover);
    let req = sent(&out).into_iter().find(|m| m.msg_type == MessageType::UpdReqAll).expect("UPDREQALL");
    let done = FailoverMessage::new(MessageType::UpdDone, req.transaction_id, bndupd::to_abs(NOW + 1));
    s.on_message(NOW + 1, &done);
}

#[test]
fn a_fresh_server_recovers_with_updreqall_and_waits_the_mclt() {
    // §8.3.2 step 1 (no record → RECOVER), §8.5.2 (UPDREQALL), §8.6 (MCLT wait).
    let (mut s, _) = Endpoint::new(cfg(Role::Secondary), None, NOW);
    resync_from_a_partner_in_partner_down(&mut s);
    assert_eq!(s.state(), ServerState::RecoverWait);
    assert!(!s.persistent().need_all, "a completed UPDREQALL clears the need");
    s.on_tick(NOW + 59);
    assert_eq!(s.state(), ServerState::RecoverWait);
    s.on_tick(NOW + 61);
    assert_eq!(s.state(), ServerState::RecoverDone);
}

#[test]
fn a_restored_backup_waits_the_mclt_from_its_start_not_from_the_backup() {
    // --resync-all over a backup taken long ago: what the backup says about
    // the last time this server served is stale (it may have served until a
    // moment ago), so TIME-OF-FAILURE is unknown and the §8.6.2 wait counts
    // from this start.
    let mut old = persisted(ServerState::Normal);
    old.last_operating = NOW - 100_000;
    old.start_time = NOW - 100_000;
    let mut c = cfg(Role::Secondary);
    c.resync_all = true;
    let (mut s, _) = Endpoint::new(c, Some(old), NOW);
    resync_from_a_partner_in_partner_down(&mut s);
    s.on_tick(NOW + 2);
    assert_eq!(s.state(), ServerState::RecoverWait, "the backup's old TIME-OF-FAILURE must not end the wait");
    s.on_tick(NOW + 59);
    assert_eq!(s.state(), ServerState::RecoverWait);
    s.on_tick(NOW + 61);
    assert_eq!(s.state(), ServerState::RecoverDone);
}

fn active(addr: &str, duid: u8, cltt: Time, end: Time) -> Lease {
    let mut l = Lease::active(
        LeaseKey::Addr(addr.parse::<Ipv6Addr>().unwrap()),
        Binding { duid: Duid::ll(1, &[duid]), ia_type: IaType::Na, iaid: 1 },
        cltt,
        200,
        300,
        100,
        160,
    );
    l.valid_end = end;
    l.state_expiration_time = end;
    l
}

fn verdict(reply: &FailoverMessage) -> Option<StatusCode> {
    let DhcpOption::ClientData(cd) = &reply.options.0[0] else { panic!("no CLIENT_DATA") };
    let ia = cd.ia_nas().next().unwrap();
    ia.options.ia_addrs().next().unwrap().options.status().map(|s| s.code)
}

#[test]
fn accept_reject_rules_of_figure_4() {
    // §7.5.4: ACTIVE vs ACTIVE of another client: the primary rejects
    // (AddressInUse), the secondary accepts (accept(3)).
    let mut b = Mem::default();
    b.store(active("2001:db8::1", 1, NOW - 100, NOW + 200));
    let upd = bndupd::build(&active("2001:db8::1", 2, NOW - 200, NOW + 100), NOW, 7);
    let r = process(&upd, NOW, Role::Primary, 60, &b);
    assert_eq!(verdict(&r.reply), Some(StatusCode::ADDRESS_IN_USE));
    let r = process(&upd, NOW, Role::Secondary, 60, &b);
    assert_eq!(verdict(&r.reply), None);
    assert_eq!(r.reply.transaction_id, 7, "BNDREPLY copies the transaction id (§7.6)");
    // ACTIVE locally, EXPIRED received: time(1) — not before the local expiry.
    let mut exp = active("2001:db8::1", 1, NOW - 100, NOW + 200);
    exp.set_status(BindingStatus::Expired, NOW - 5);
    let upd = bndupd::build(&exp, NOW, 8);
    let r = process(&upd, NOW, Role::Primary, 60, &b);
    assert_eq!(verdict(&r.reply), Some(StatusCode::OUTDATED_BINDING_INFORMATION));
    assert_eq!(r.outdated.len(), 1);
    let r = process(&upd, NOW + 300, Role::Primary, 60, &b);
    assert_eq!(verdict(&r.reply), None);
    // Partner lifetime is echoed exactly (§7.6).
    let mut a = active("2001:db8::3", 3, NOW, NOW + 300);
    a.partner_lifetime = NOW + 450;
    let r = process(&bndupd::build(&a, NOW, 9), NOW, Role::Secondary, 60, &b);
    let DhcpOption::ClientData(cd) = &r.reply.options.0[0] else { panic!() };
    let lo = &cd.ia_nas().next().unwrap().options.ia_addrs().next().unwrap().options;
    assert_eq!(lo.u32_of(crate::wire::opt::F_PARTNER_LIFETIME_SENT), Some(bndupd::to_abs(NOW + 450)));
    // The accepted lease is stored with F_PARTNER_LIFETIME as expiration-time (§7.5.5).
    assert_eq!(r.accepted[0].expiration_time, NOW + 450);
}

#[test]
fn an_expiry_and_a_release_within_the_tie_go_the_primarys_way() {
    // One side expired the lease while the other saw its client release it,
    // within the ±5 s of §7.1: the lease is over either way. Each side
    // refused the other's update for ever, so neither ever freed the lease
    // (hub simulator seeds 20, 113); the primary's record stands.
    let mut released = active("2001:db8::1", 1, NOW, NOW + 200);
    released.set_status(BindingStatus::Released, NOW);
    // The secondary's copy of the primary's grant: no client contact of its own.
    let mut expired = active("2001:db8::1", 1, 0, NOW - 3);
    expired.set_status(BindingStatus::Expired, NOW - 3);
    let mut secondary = Mem::default();
    secondary.store(expired.clone());
    let r = process(&bndupd::build(&released, NOW, 1), NOW + 1, Role::Secondary, 60, &secondary);
    assert_eq!(verdict(&r.reply), None, "the secondary takes the primary's RELEASED");
    let mut primary = Mem::default();
    primary.store(released);
    let r = process(&bndupd::build(&expired, NOW, 2), NOW + 1, Role::Primary, 60, &primary);
    assert_eq!(verdict(&r.reply), Some(StatusCode::OUTDATED_BINDING_INFORMATION), "the primary keeps its RELEASED");
}

#[test]
fn bndupd_carries_the_name_and_dns_state_and_the_receiver_never_inherits_an_add() {
    // RFC 8156 §9.1, §9.2: the name and F_DNS_REMOVAL_INFO travel; only the
    // granting server adds, so our local to-do bits never cross.
    use crate::lease::{DnsInfo, dns_flags as F};
    let mut l = crate::lease::Lease::active(
        LeaseKey::Addr("2001:db8:1::1001".parse().unwrap()),
        crate::lease::Binding { duid: crate::wire::Duid::ll(1, &[9]), ia_type: crate::lease::IaType::Na, iaid: 1 },
        1_800_000_000,
        300,
        600,
        150,
        240,
    );
    l.dns = Some(DnsInfo {
        flags: crate::wire::FQDN_FLAG_S,
        name: Some(crate::wire::DomainName::from_dotted("h.example.net.").unwrap()),
        dns_flags: F::FWD_UPTODATE | F::REV_UPTODATE | F::USING_REQUESTED | F::PENDING_ADD,
    });
    let m = super::bndupd::build(&l, 1_800_000_000, 5);
    let frame = m.encode_frame().unwrap();
    let back = crate::wire::FailoverMessage::decode(&frame[2..]).unwrap();
    let db = Mem::default();
    let r = process(&back, 1_800_000_001, Role::Secondary, 3600, &db);
    let got = r.accepted[0].dns.clone().expect("the name arrived");
    assert_eq!(got.name.unwrap().to_string(), "h.example.net.");
    assert_eq!(got.dns_flags, F::FWD_UPTODATE | F::REV_UPTODATE | F::USING_REQUESTED, "shared bits only");
}

// ---- audit findings (shared/reviews/rfc8156-audit.md) ----------------------

fn connect_msg(mclt: u32, flags: u16) -> FailoverMessage {
    let cp = ConnectParams {
        protocol_version: (1, 0),
        mclt,
        keepalive_time: 20,
        max_unacked_bndupd: 4,
        relationship_name: Some("t".into()),
        connect_flags: flags,
    };
    cp.to_message(MessageType::Connect, 1, bndupd::to_abs(NOW))
}

fn state_msg(state: ServerState, flags: u8, start: Time, at: Time) -> FailoverMessage {
    let pd = (state == ServerState::PartnerDown).then(|| bndupd::to_abs(start));
    let st = StateParams { state, flags, start_time_of_state: bndupd::to_abs(start), partner_down_time: pd };
    st.to_message(2, bndupd::to_abs(at))
}

/// A secondary that accepted the primary's CONNECT at NOW.
fn secondary(persisted: Option<Persistent>) -> (Endpoint, Vec<Output>) {
    let (mut s, _) = Endpoint::new(cfg(Role::Secondary), persisted, NOW);
    s.set_loaded();
    s.on_connected(NOW);
    let out = s.on_message(NOW, &connect_msg(60, 1));
    (s, out)
}

fn serves(e: &Endpoint) -> bool {
    use crate::server::{Policy, Responsiveness};
    e.policy().responsiveness() != Responsiveness::Unresponsive
}

#[test]
fn a_lost_store_restarted_during_recovery_asks_for_everything_again_and_never_serves() {
    // Audit F1 (a), §8.3.2 step 5, §8.5.2: restarted in RECOVER before its
    // UPDREQALL finished, with a partner in PARTNER-DOWN since before our
    // last persisted time: not POTENTIAL-CONFLICT (and from there
    // RESOLUTION-INTERRUPTED) but RECOVER with UPDREQALL, on every path.
    let p = Persistent { state: ServerState::Recover, need_all: true, last_operating: NOW - 5, ..persisted(ServerState::Recover) };
    let (mut s, _) = secondary(Some(p));
    let out = s.on_message(NOW, &state_msg(ServerState::PartnerDown, SERVER_FLAG_COMMUNICATED, NOW - 100, NOW));
    assert_eq!(s.state(), ServerState::Recover);
    assert!(sent(&out).iter().any(|m| m.msg_type == MessageType::UpdReqAll));
    // The link drops: still RECOVER, still unresponsive.
    s.on_disconnected(NOW + 1);
    s.on_tick(NOW + 100);
    assert_eq!(s.state(), ServerState::Recover);
    assert!(!serves(&s));
    assert!(s.partner_down(NOW + 101).unwrap_err().contains("lost store"), "partner-down refused while the store is lost");
}

#[test]
fn a_partner_still_in_startup_does_not_move_us_out_of_startup() {
    // Audit F1 (b), §8.3.2 step 5 waits for "communications OK": a STATE with
    // the STARTUP flag (and its start time of STARTUP) decides nothing.
    let (mut s, _) = secondary(None);
    s.on_message(NOW, &state_msg(ServerState::PartnerDown, SERVER_FLAG_STARTUP, NOW, NOW));
    assert_eq!(s.state(), ServerState::Startup);
    assert!(!serves(&s));
    s.on_tick(NOW + 6);
    // The startup timer ran out: a store never received is recovered first.
    assert_eq!(s.state(), ServerState::Recover);
    assert!(!serves(&s));
}

#[test]
fn startup_partner_down_takes_over_only_without_contact_and_only_when_enabled() {
    // §8.3.2 step 1 (audit F7): configurable, default off.
    let on = FailoverConfig { startup_partner_down: true, ..cfg(Role::Primary) };
    let (mut p, _) = Endpoint::new(on.clone(), None, NOW);
    p.on_tick(NOW + 6);
    assert_eq!(p.state(), ServerState::PartnerDown);
    assert!(serves(&p));
    let (mut q, _) = Endpoint::new(cfg(Role::Primary), None, NOW);
    q.on_tick(NOW + 6);
    assert_eq!(q.state(), ServerState::Recover, "off by default");
    // A store known to be lost (a previous run asked for everything) never takes over.
    let lost = Persistent { need_all: true, ..persisted(ServerState::Recover) };
    let (mut r, _) = Endpoint::new(on, Some(lost), NOW);
    r.on_tick(NOW + 6);
    assert_eq!(r.state(), ServerState::Recover);
}

#[test]
fn operator_partner_down_from_recover_needs_the_store() {
    // Figure 6 (audit F7): accepted in RECOVER for a server with its store.
    let (mut s, _) = Endpoint::new(cfg(Role::Secondary), Some(persisted(ServerState::Recover)), NOW);
    s.on_tick(NOW + 6);
    assert_eq!(s.state(), ServerState::Recover);
    assert!(s.partner_down(NOW + 7).is_ok());
    assert_eq!(s.state(), ServerState::PartnerDown);
    // Elsewhere it is refused, naming the state.
    let (mut w, _) = Endpoint::new(cfg(Role::Secondary), Some(persisted(ServerState::RecoverWait)), NOW);
    w.on_tick(NOW + 6);
    let e = w.partner_down(NOW + 7).unwrap_err();
    assert!(e.contains("RECOVER-WAIT"), "{e}");
}

#[test]
fn a_brand_new_pair_skips_the_mclt_wait_but_a_lost_store_does_not() {
    // §8.6.2 (audit F7): a server that never ran failover need not wait the
    // MCLT — judged by the partner's information (its C flag).
    for (partner_flags, waits) in [(0u8, false), (SERVER_FLAG_COMMUNICATED, true)] {
        let (mut s, _) = secondary(None);
        let out = s.on_message(NOW, &state_msg(ServerState::Recover, partner_flags, NOW, NOW));
        let req = sent(&out).into_iter().find(|m| m.msg_type == MessageType::UpdReqAll).expect("UPDREQALL").clone();
        s.on_message(NOW + 1, &FailoverMessage::new(MessageType::UpdDone, req.transaction_id, bndupd::to_abs(NOW + 1)));
        s.on_tick(NOW + 2);
        // Without the wait it is through RECOVER-DONE already (and, with the
        // partner still in RECOVER, on to COMMUNICATIONS-INTERRUPTED, §8.7.2).
        assert_eq!(s.state() == ServerState::RecoverWait, waits, "partner flags {partner_flags}: {:?}", s.state());
    }
}

#[test]
fn the_partner_down_time_survives_a_restart() {
    // Audit F8, §6.3, §8.4: back in PARTNER-DOWN after a restart, the state
    // began when it began, and the partner's own PARTNER-DOWN time is kept apart.
    let before = Persistent { start_time: NOW - 900, partner_down_time: NOW - 900, ..persisted(ServerState::PartnerDown) };
    let (mut p, _) = Endpoint::new(cfg(Role::Primary), Some(before), NOW);
    p.on_tick(NOW + 6);
    assert_eq!(p.state(), ServerState::PartnerDown);
    assert_eq!((p.persistent().start_time, p.persistent().partner_down_time), (NOW - 900, NOW - 900));
    assert_eq!(p.policy().partner_down_since, NOW - 900);
    // Its STATE tells the partner so.
    let out = p.on_connected(NOW + 7);
    let reply = ConnectParams { protocol_version: (1, 0), mclt: 60, keepalive_time: 20, max_unacked_bndupd: 4, relationship_name: None, connect_flags: 1 };
    let out2 = p.on_message(NOW + 7, &reply.to_message(MessageType::ConnectReply, 1, bndupd::to_abs(NOW + 7)));
    let st = sent(&out).into_iter().chain(sent(&out2)).find(|m| m.msg_type == MessageType::State).expect("STATE").clone();
    let sp = StateParams::from_message(&st).unwrap();
    assert_eq!(sp.start_time_of_state, bndupd::to_abs(NOW - 900));
    // The partner's PARTNER-DOWN time does not overwrite ours.
    let (mut s, _) = secondary(Some(persisted(ServerState::CommunicationsInterrupted)));
    s.on_message(NOW, &state_msg(ServerState::PartnerDown, SERVER_FLAG_COMMUNICATED, NOW - 50, NOW));
    assert_eq!((s.persistent().partner_pd_time, s.persistent().partner_down_time), (NOW - 50, 0));
}

#[test]
fn connect_flags_and_a_short_mclt_are_refused() {
    // §6.1.2 (CONNECT_FLAGS F: we cannot process variable prefix lengths),
    // RFC 8156 §1 (no failover for leases under 30 s; a new lease gets at most the MCLT).
    for (mclt, flags, why) in [(60, 0u16, "variable"), (20, 1, "MCLT")] {
        let (mut s, _) = Endpoint::new(cfg(Role::Secondary), None, NOW);
        s.on_connected(NOW);
        let out = s.on_message(NOW, &connect_msg(mclt, flags));
        let r = sent(&out)[0];
        assert_eq!(r.msg_type, MessageType::ConnectReply);
        assert_eq!(r.status().unwrap().code, StatusCode::CONFIGURATION_CONFLICT, "{why}");
        assert!(out.iter().any(|o| matches!(o, Output::Close(_))), "{why}");
    }
}

#[test]
fn a_state_with_an_unknown_server_state_keeps_the_connection() {
    // Audit R042: a value this version does not know is not a reason to drop the link.
    let (mut s, _) = secondary(None);
    let mut m = FailoverMessage::new(MessageType::State, 9, bndupd::to_abs(NOW))
        .with(DhcpOption::Unknown { code: crate::wire::opt::F_SERVER_STATE, data: vec![42] })
        .with(DhcpOption::ServerFlags(0))
        .with(DhcpOption::StartTimeOfState(bndupd::to_abs(NOW)));
    let frame = m.encode_frame().unwrap();
    m = FailoverMessage::decode(&frame[2..]).unwrap();
    let out = s.on_message(NOW, &m);
    assert!(!out.iter().any(|o| matches!(o, Output::Close(_))));
    assert!(s.connected());
}

#[test]
fn address_in_use_compares_the_client_and_its_ia() {
    // §5.6, §7.5.4 accept(3): another IAID of the same DUID is another client.
    let mut b = Mem::default();
    b.store(active("2001:db8::1", 1, NOW - 100, NOW + 200));
    let mut other_ia = active("2001:db8::1", 1, NOW - 200, NOW + 100);
    other_ia.binding.iaid = 2;
    let r = process(&bndupd::build(&other_ia, NOW, 7), NOW, Role::Primary, 60, &b);
    assert_eq!(verdict(&r.reply), Some(StatusCode::ADDRESS_IN_USE));
}

#[test]
fn an_unknown_vpn_is_a_configuration_conflict_and_vss_is_echoed() {
    // §7.5.4 and §7.6 (audit F5): we configure no VPN but the global one (RFC 6607 type 255).
    let l = active("2001:db8::5", 5, NOW, NOW + 300);
    for (vss_type, refused) in [(0u8, true), (255, false)] {
        let mut m = bndupd::build(&l, NOW, 11);
        let DhcpOption::ClientData(cd) = &mut m.options.0[0] else { panic!() };
        cd.push(DhcpOption::Vss { vss_type, info: b"vpn1".to_vec() });
        let r = process(&m, NOW, Role::Secondary, 60, &Mem::default());
        let expect = refused.then_some(StatusCode::CONFIGURATION_CONFLICT);
        assert_eq!(verdict(&r.reply), expect, "VSS type {vss_type}");
        let DhcpOption::ClientData(rcd) = &r.reply.options.0[0] else { panic!() };
        assert!(rcd.iter().any(|o| matches!(o, DhcpOption::Vss { .. })), "OPTION_VSS echoed (§7.6)");
    }
}

#[test]
fn an_expired_from_a_partner_that_lost_its_store_waits_for_what_we_acked_plus_the_mclt() {
    // §7.5.4 time(1) as the RFC says (audit F3) — unless the partner lost
    // its store after the client was last seen: it may have extended the
    // client up to our ack plus the MCLT and forgotten (§4.4).
    let mut local = active("2001:db8::7", 7, NOW - 300, NOW - 10);
    local.expiration_time = NOW + 100; // what we acked to the partner
    let mut b = Mem::default();
    b.store(local.clone());
    let mut exp = local.clone();
    exp.set_status(BindingStatus::Expired, NOW);
    let upd = bndupd::build(&exp, NOW, 5);
    let judge = |lost: Time, now: Time| {
        let r = bndupd::parse(&upd, |_| true).items.remove(0).unwrap();
        bndupd::judge(Some(&local), &r, bndupd::Judge { role: Role::Secondary, now, mclt: 60, partner_lost_store_at: lost })
    };
    assert_eq!(judge(0, NOW), Ok(()), "past the state expiration: accepted");
    assert_eq!(judge(NOW - 100, NOW), Err(StatusCode::OUTDATED_BINDING_INFORMATION), "store lost since: not yet");
    assert_eq!(judge(NOW - 100, NOW + 161), Ok(()), "after the ack plus the MCLT");
    assert_eq!(judge(NOW - 400, NOW), Ok(()), "lost before the client was last seen: its records are whole");
}

#[test]
fn a_partner_shutting_down_is_called_again_at_the_usual_pace_a_refusal_later() {
    // §5.3.10: DISCONNECT with ServerShuttingDown is a restart, usually:
    // connect-retry (3 s here). Any other DISCONNECT: connect-retry-rejected (10 s).
    let connects = |p: &mut Endpoint, from: Time, to: Time| -> Option<Time> {
        (from..=to).find(|t| p.on_tick(*t).iter().any(|o| matches!(o, Output::Connect)))
    };
    for (code, wait) in [(StatusCode::SERVER_SHUTTING_DOWN, 3), (StatusCode::CONFIGURATION_CONFLICT, 10)] {
        let (mut p, _) = pair();
        let at = NOW + 10;
        let m = crate::wire::failover::disconnect(7, bndupd::to_abs(at), code, "bye");
        p.on_message(at, &m);
        p.on_disconnected(at);
        assert!(!p.communications_ok());
        assert_eq!(connects(&mut p, at, at + 30), Some(at + wait), "{}", code.name());
    }
}

#[test]
fn relay_data_travels_in_bndupd_and_the_newest_grant_keeps_its_own() {
    // RFC 8156 §7.4: OPTION_LQ_RELAY_DATA in the client data, so either
    // partner answers a leasequery the same.
    let now: Time = 1_800_000_000;
    let key = LeaseKey::Addr("2001:db8:1::105".parse().unwrap());
    let binding = Binding { duid: crate::wire::Duid::ll(1, &[7]), ia_type: IaType::Na, iaid: 1 };
    let mut l = Lease::active(key, binding.clone(), now, 1800, 3600, 900, 1440);
    let relay = crate::lease::RelayData { peer: "2001:db8:ff::1".parse().unwrap(), message: vec![12, 0, 0x20, 1, 0xd, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9] };
    l.relay = Some(Box::new(relay.clone()));
    let m = bndupd::build(&l, now, 3);
    let decoded = FailoverMessage::decode(&m.encode_frame().unwrap()[2..]).unwrap();
    let r = bndupd::parse(&decoded, |_| true).items.remove(0).unwrap();
    assert_eq!(r.relay.as_deref(), Some(&relay));
    let stored = bndupd::merge(None, &r, now);
    assert_eq!(stored.relay.as_deref(), Some(&relay));
    // Our own later grant (the client came directly since): ours is kept.
    let mut ours = l.clone();
    ours.relay = None;
    ours.cltt = now + 100;
    ours.valid_end = now + 3700;
    let kept = bndupd::merge(Some(ours), &r, now + 100);
    assert_eq!(kept.relay, None);
    assert!(kept.update_partner, "the partner must hear the chain we kept");
    // Without relay data the update says the client came directly.
    l.relay = None;
    let r = bndupd::parse(&bndupd::build(&l, now + 5, 4), |_| true).items.remove(0).unwrap();
    assert_eq!(bndupd::merge(Some(stored), &r, now + 5).relay, None);
}

#[test]
fn a_shared_listener_reads_the_relationship_name_from_the_first_connect() {
    let params = ConnectParams {
        protocol_version: (1, 0),
        mclt: 60,
        keepalive_time: 60,
        max_unacked_bndupd: 64,
        relationship_name: Some("site-b".into()),
        connect_flags: 0,
    };
    let frame = params.to_message(crate::wire::MessageType::Connect, 1, 0).encode_frame().unwrap();
    // Incomplete: wait for more; complete: the name (what follows stays for the driver).
    assert_eq!(super::connect_name(&frame[..frame.len() - 1]), Ok(None));
    let mut more = frame.clone();
    more.extend_from_slice(&frame);
    assert_eq!(super::connect_name(&more), Ok(Some(Some("site-b".into()))));
    let unnamed = ConnectParams { relationship_name: None, ..params }.to_message(crate::wire::MessageType::Connect, 1, 0).encode_frame().unwrap();
    assert_eq!(super::connect_name(&unnamed), Ok(Some(None)));
    // Anything but a CONNECT first is refused.
    let contact = crate::wire::FailoverMessage::new(crate::wire::MessageType::Contact, 1, 0).encode_frame().unwrap();
    assert!(super::connect_name(&contact).is_err());
    assert!(super::connect_name(&[0, 1, 2]).is_err(), "a frame shorter than the minimum");
}

#[test]
fn each_relationship_keeps_its_state_under_its_name() {
    // One relationship: its own key first, then the historic one (older
    // versions' stores); several: the own key only, never another's.
    assert_eq!(super::meta_keys("pair-1", false), vec!["failover-state/pair-1".to_string(), "failover-state".to_string()]);
    assert_eq!(super::meta_keys("site-b", true), vec!["failover-state/site-b".to_string()]);
}
