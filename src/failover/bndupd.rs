//! Binding updates: building a BNDUPD from a lease (§7.4); a received one
//! taken apart (`parse`), judged against the local record (`judge`, §7.5.4
//! Figure 4), merged into it (`merge`, §7.5.5) and answered (`reply`, §7.6);
//! and the verdicts read back from a BNDREPLY (`acks`, §7.7).

use super::{Role, SKEW_TOLERANCE};
use crate::lease::{Binding, IaType, Lease, LeaseKey, Time};
use crate::pool::Prefix;
use crate::wire::failover::{abs_time, unix_time};
use crate::wire::{
    BindingStatus, DhcpOption, FailoverMessage, IaAddr, IaNa, IaPd, IaPrefix, MessageType, Options, Status, StatusCode,
    opt,
};

/// Unix seconds → absolute time on the wire; 0 stays 0 ("not set").
pub fn to_abs(t: Time) -> u32 {
    if t == 0 { 0 } else { abs_time(t) }
}

pub fn from_abs(a: u32) -> Time {
    if a == 0 { 0 } else { unix_time(a) }
}

/// Only ACTIVE carries a timeout in this implementation (§7.2 leaves it open).
fn has_timeout(s: BindingStatus) -> bool {
    s == BindingStatus::Active
}

/// Is this a stand-alone delegable-prefix record (pool transfer, §7.4 (b))?
pub fn is_pool_record(l: &Lease) -> bool {
    matches!(l.key, LeaseKey::Prefix(_)) && matches!(l.status, BindingStatus::Free | BindingStatus::FreeBackup)
}

/// §7.4: one BNDUPD describing one lease.
pub fn build(l: &Lease, now: Time, xid: u32) -> FailoverMessage {
    let base = to_abs(now);
    let mut lease_opts = Options::new();
    lease_opts.push(DhcpOption::BindingStatus(l.status)); // MUST
    lease_opts.push(DhcpOption::StartTimeOfState(to_abs(l.start_time_of_state))); // MUST
    if has_timeout(l.status) {
        // For ACTIVE the state ends when the client's valid lifetime does.
        lease_opts.push(DhcpOption::StateExpirationTime(to_abs(l.state_expiration_time.max(l.valid_end))));
    }
    if is_pool_record(l) {
        let LeaseKey::Prefix(p) = l.key else { unreachable!() };
        let mut o = Options::new();
        o.push(DhcpOption::LqBaseTime(base)); // MUST (§7.4 (b))
        o.0.extend(lease_opts.0);
        return FailoverMessage::new(MessageType::BndUpd, xid, base).with(DhcpOption::IaPrefix(IaPrefix {
            preferred: 0,
            valid: 0,
            prefix_len: p.len,
            prefix: p.addr,
            options: o,
        }));
    }
    if l.cltt != 0 {
        // OPTION_CLT_TIME is relative to LQ_BASE_TIME (RFC 7653 §6.3.1).
        lease_opts.push(DhcpOption::CltTime(now.saturating_sub(l.cltt) as u32));
    }
    if has_timeout(l.status) {
        // Never less than what the partner already acked: an intact partner
        // keeps the greatest anyway (§7.3), and one that lost its store
        // relearns here the protection our MCLT cap counts on (§4.4).
        lease_opts.push(DhcpOption::PartnerLifetime(to_abs(l.partner_lifetime.max(l.acked_partner_lifetime))));
    }
    lease_opts.push(DhcpOption::PartnerRawCltTime(to_abs(l.partner_raw_clt_time)));
    if has_timeout(l.status) {
        lease_opts.push(DhcpOption::ExpirationTime(to_abs(l.expiration_time)));
    }
    // §9.2: the name given to the client, and what is in the DNS for it.
    if let Some(d) = &l.dns
        && let Some(name) = &d.name
    {
        lease_opts.push(DhcpOption::ClientFqdn(crate::wire::ClientFqdn { flags: d.flags, name: name.clone() }));
        let shared = d.dns_flags & crate::lease::dns_flags::SHARED;
        let mut removal = Options::new();
        removal.push(DhcpOption::DnsHostName(name.clone()));
        if let Some(zone) = parent_zone(name) {
            removal.push(DhcpOption::DnsZoneName(zone));
        }
        removal.push(DhcpOption::DnsFlags(shared));
        lease_opts.push(DhcpOption::DnsRemovalInfo(removal));
    }
    let ia = match l.key {
        LeaseKey::Addr(addr) => DhcpOption::IaNa(IaNa {
            iaid: l.binding.iaid,
            t1: l.t1,
            t2: l.t2,
            options: vec![DhcpOption::IaAddr(IaAddr {
                addr,
                preferred: l.preferred_lifetime,
                valid: l.valid_lifetime,
                options: lease_opts,
            })]
            .into(),
        }),
        LeaseKey::Prefix(p) => DhcpOption::IaPd(IaPd {
            iaid: l.binding.iaid,
            t1: l.t1,
            t2: l.t2,
            options: vec![DhcpOption::IaPrefix(IaPrefix {
                preferred: l.preferred_lifetime,
                valid: l.valid_lifetime,
                prefix_len: p.len,
                prefix: p.addr,
                options: lease_opts,
            })]
            .into(),
        }),
    };
    let mut cd: Options = vec![
        DhcpOption::ClientId(l.binding.duid.clone()), // MUST
        DhcpOption::LqBaseTime(base),                 // MUST
    ]
    .into();
    if let Some(r) = l.relay.as_ref().filter(|r| r.message.len() <= crate::lease::MAX_RELAY_DATA) {
        // "if any exists" (§7.4): the partner answers leasequeries the same.
        cd.push(DhcpOption::LqRelayData(crate::wire::LqRelayData { peer_address: r.peer, relay_message: r.message.clone() }));
    }
    cd.push(ia);
    FailoverMessage::new(MessageType::BndUpd, xid, base).with(DhcpOption::ClientData(cd))
}

/// One binding carried by a received BNDUPD (§7.4), as parsed: what the
/// partner says about one address or prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub key: LeaseKey,
    /// The client IA; None for a stand-alone IAPREFIX (a delegable prefix
    /// changing hands, §7.4 (b)).
    pub binding: Option<Binding>,
    pub status: BindingStatus,
    pub start: Time,
    /// OPTION_CLT_TIME as an absolute time (it is relative to LQ_BASE_TIME).
    pub clt: Option<Time>,
    pub preferred: u32,
    pub valid: u32,
    pub t1: u32,
    pub t2: u32,
    pub state_expiration: Option<Time>,
    /// F_PARTNER_LIFETIME: the lifetime the partner proposes to us.
    pub partner_lifetime: Option<Time>,
    /// F_EXPIRATION_TIME: the lifetime the partner acked to us before.
    pub expiration_time: Option<Time>,
    pub partner_raw_clt: Option<Time>,
    pub fqdn: Option<crate::wire::ClientFqdn>,
    /// OPTION_F_DNS_FLAGS inside OPTION_F_DNS_REMOVAL_INFO.
    pub dns_flags: Option<u16>,
    /// OPTION_LQ_RELAY_DATA of the client (RFC 5007 §4.1.2.4).
    pub relay: Option<Box<crate::lease::RelayData>>,
}

impl Received {
    /// §7.5.4: the time of the update: ACTIVE, EXPIRED and RELEASED by the
    /// client's last transaction, other states by the later of that and the
    /// start of the state.
    pub fn update_time(&self) -> Time {
        match self.status {
            BindingStatus::Active | BindingStatus::Expired | BindingStatus::Released => self.clt.unwrap_or(self.start),
            _ => self.clt.unwrap_or(0).max(self.start),
        }
    }
}

/// A received BNDUPD taken apart (§7.5.3): its bindings in message order,
/// each parsed or refused before any lookup (malformed, not in our pools,
/// an unknown VPN).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub items: Vec<Result<Received, StatusCode>>,
}

fn reject(code: StatusCode, why: &str) -> DhcpOption {
    DhcpOption::StatusCode(Status::new(code, why))
}

/// RFC 6607: a VSS option names the global VPN only with type 255; we
/// configure no other VPN, so anything else is a configuration conflict (§7.5.4).
fn foreign_vpn(o: &Options) -> bool {
    o.iter().any(|x| matches!(x, DhcpOption::Vss { vss_type, .. } if *vss_type != 255))
}

fn status_of(o: &Options) -> Option<BindingStatus> {
    o.iter().find_map(|x| match x {
        DhcpOption::BindingStatus(s) => Some(*s),
        _ => None,
    })
}

/// A binding-status value this version does not know (kept raw by the codec).
fn unknown_status(o: &Options) -> bool {
    o.iter().any(|x| matches!(x, DhcpOption::Unknown { code, .. } if *code == opt::F_BINDING_STATUS))
}

fn dns_flags_of(o: &Options) -> Option<u16> {
    o.iter().find_map(|x| match x {
        DhcpOption::DnsRemovalInfo(r) => r.iter().find_map(|y| match y {
            DhcpOption::DnsFlags(f) => Some(*f),
            _ => None,
        }),
        _ => None,
    })
}

/// §7.5.3–§7.5.4: take a BNDUPD apart. `owns` says whether a key is one we
/// share with the partner, in a pool or reserved (a lease of another key is
/// a ConfigurationConflict).
pub fn parse(m: &FailoverMessage, owns: impl Fn(&LeaseKey) -> bool) -> Parsed {
    let mut items = Vec::new();
    let base_of = |o: &Options| o.u32_of(opt::LQ_BASE_TIME).map(from_abs);
    match crate::wire::failover::BindingBody::of(m) {
        Err(_) => {}
        Ok(crate::wire::failover::BindingBody::Prefix(p)) => {
            let key = Prefix::new(p.prefix, p.prefix_len).map(LeaseKey::Prefix);
            let start = p.options.u32_of(opt::F_START_TIME_OF_STATE).map(from_abs);
            items.push(match (key, status_of(&p.options), start, base_of(&p.options)) {
                _ if foreign_vpn(&p.options) => Err(StatusCode::CONFIGURATION_CONFLICT),
                _ if unknown_status(&p.options) => Err(StatusCode::UNSPEC_FAIL),
                (Some(k), Some(s), Some(start), Some(_)) if owns(&k) => {
                    if matches!(s, BindingStatus::Free | BindingStatus::FreeBackup) {
                        Ok(Received {
                            key: k,
                            binding: None,
                            status: s,
                            start,
                            clt: None,
                            preferred: 0,
                            valid: 0,
                            t1: 0,
                            t2: 0,
                            state_expiration: None,
                            partner_lifetime: p.options.u32_of(opt::F_PARTNER_LIFETIME).map(from_abs),
                            expiration_time: None,
                            partner_raw_clt: None,
                            fqdn: None,
                            dns_flags: None,
                            relay: None,
                        })
                    } else {
                        // A stand-alone IAPREFIX only moves a delegable prefix.
                        Err(StatusCode::MISSING_BINDING_INFORMATION)
                    }
                }
                (Some(_), Some(_), Some(_), Some(_)) => Err(StatusCode::CONFIGURATION_CONFLICT),
                _ => Err(StatusCode::MISSING_BINDING_INFORMATION),
            });
        }
        Ok(crate::wire::failover::BindingBody::ClientData(cd)) => {
            let (Some(duid), Some(base)) = (cd.client_id().cloned(), base_of(cd)) else { return Parsed { items } };
            let vpn_conflict = foreign_vpn(cd);
            let relay = cd.iter().find_map(|o| match o {
                DhcpOption::LqRelayData(r) if r.relay_message.len() <= crate::lease::MAX_RELAY_DATA => {
                    Some(Box::new(crate::lease::RelayData { peer: r.peer_address, message: r.relay_message.clone() }))
                }
                _ => None,
            });
            for o in cd.iter() {
                let (ia_type, iaid, t1, t2, inner) = match o {
                    DhcpOption::IaNa(ia) => (IaType::Na, ia.iaid, ia.t1, ia.t2, &ia.options),
                    DhcpOption::IaPd(ia) => (IaType::Pd, ia.iaid, ia.t1, ia.t2, &ia.options),
                    _ => continue,
                };
                for lo in inner.iter() {
                    let (key, preferred, valid, lopts) = match lo {
                        DhcpOption::IaAddr(a) if ia_type == IaType::Na => (Some(LeaseKey::Addr(a.addr)), a.preferred, a.valid, &a.options),
                        DhcpOption::IaPrefix(p) if ia_type == IaType::Pd => {
                            (Prefix::new(p.prefix, p.prefix_len).map(LeaseKey::Prefix), p.preferred, p.valid, &p.options)
                        }
                        _ => continue,
                    };
                    // §5.5.17 vs §7.4: accept START_TIME_OF_STATE at either level.
                    let start = lopts.u32_of(opt::F_START_TIME_OF_STATE).or_else(|| inner.u32_of(opt::F_START_TIME_OF_STATE)).map(from_abs);
                    // CLT_TIME is relative to LQ_BASE_TIME (digest §18 item 6).
                    let clt = lopts.u32_of(opt::CLT_TIME).map(|c| base.saturating_sub(c as u64));
                    items.push(match (key, status_of(lopts), start) {
                        _ if vpn_conflict => Err(StatusCode::CONFIGURATION_CONFLICT),
                        // A status this version does not know: this binding
                        // is refused, the others are processed.
                        _ if unknown_status(lopts) => Err(StatusCode::UNSPEC_FAIL),
                        (Some(k), _, _) if !owns(&k) => Err(StatusCode::CONFIGURATION_CONFLICT),
                        (Some(k), Some(s), Some(start)) => Ok(Received {
                            key: k,
                            binding: Some(Binding { duid: duid.clone(), ia_type, iaid }),
                            status: s,
                            start,
                            clt,
                            preferred,
                            valid,
                            t1,
                            t2,
                            state_expiration: lopts.u32_of(opt::F_STATE_EXPIRATION_TIME).map(from_abs),
                            partner_lifetime: lopts.u32_of(opt::F_PARTNER_LIFETIME).map(from_abs),
                            expiration_time: lopts.u32_of(opt::F_EXPIRATION_TIME).map(from_abs),
                            partner_raw_clt: lopts.u32_of(opt::F_PARTNER_RAW_CLT_TIME).map(from_abs),
                            fqdn: lopts.client_fqdn().cloned(),
                            dns_flags: dns_flags_of(lopts),
                            relay: relay.clone(),
                        }),
                        _ => Err(StatusCode::MISSING_BINDING_INFORMATION),
                    });
                }
            }
        }
    }
    Parsed { items }
}

/// §7.6: the BNDREPLY for `m`, given one verdict per parsed item (in the
/// order `parse` returned them).
pub fn reply(m: &FailoverMessage, verdicts: &[Result<(), StatusCode>], now: Time) -> FailoverMessage {
    let mut reply = FailoverMessage::new(MessageType::BndReply, m.transaction_id, to_abs(now));
    let mut next = verdicts.iter();
    match crate::wire::failover::BindingBody::of(m) {
        Err(_) => {
            // §7.5.3: not exactly one CLIENT_DATA or IAPREFIX.
            reply.options.push(reject(StatusCode::MISSING_BINDING_INFORMATION, "need one CLIENT_DATA or IAPREFIX"));
        }
        Ok(crate::wire::failover::BindingBody::Prefix(p)) => {
            let mut out = p.options.clone();
            out.0.retain(|o| matches!(o.code(), opt::F_BINDING_STATUS | opt::F_STATE_EXPIRATION_TIME | opt::VSS));
            if let Some(Err(c)) = next.next() {
                out.0.insert(0, reject(*c, c.name()));
            }
            if let Some(pl) = p.options.u32_of(opt::F_PARTNER_LIFETIME) {
                out.push(DhcpOption::PartnerLifetimeSent(pl));
            }
            reply.options.push(DhcpOption::IaPrefix(IaPrefix { options: out, ..p.clone() }));
        }
        Ok(crate::wire::failover::BindingBody::ClientData(cd)) => {
            let mut rcd = Options::new();
            let (Some(duid), Some(_)) = (cd.client_id(), cd.u32_of(opt::LQ_BASE_TIME)) else {
                rcd.push(reject(StatusCode::MISSING_BINDING_INFORMATION, "CLIENTID and LQ_BASE_TIME are required"));
                reply.options.push(DhcpOption::ClientData(rcd));
                return reply;
            };
            rcd.push(DhcpOption::ClientId(duid.clone()));
            // §7.6: OPTION_VSS from the BNDUPD, if any.
            if let Some(v) = cd.get(opt::VSS) {
                rcd.push(v.clone());
            }
            for o in cd.iter() {
                let (ia_type, iaid, t1, t2, inner) = match o {
                    DhcpOption::IaNa(ia) => (IaType::Na, ia.iaid, ia.t1, ia.t2, &ia.options),
                    DhcpOption::IaPd(ia) => (IaType::Pd, ia.iaid, ia.t1, ia.t2, &ia.options),
                    _ => continue,
                };
                let mut rinner = Options::new();
                for lo in inner.iter() {
                    let lopts = match lo {
                        DhcpOption::IaAddr(a) if ia_type == IaType::Na => &a.options,
                        DhcpOption::IaPrefix(p) if ia_type == IaType::Pd => &p.options,
                        _ => continue,
                    };
                    let verdict = next.next().copied().unwrap_or(Err(StatusCode::MISSING_BINDING_INFORMATION));
                    // §7.6: status code (errors only), binding status and
                    // state expiration as received, partner lifetime echoed.
                    let mut ro = Options::new();
                    if let Err(c) = verdict {
                        ro.push(reject(c, c.name()));
                    }
                    for keep in [opt::F_BINDING_STATUS, opt::F_STATE_EXPIRATION_TIME] {
                        if let Some(x) = lopts.get(keep) {
                            ro.push(x.clone());
                        }
                    }
                    if let Some(pl) = lopts.u32_of(opt::F_PARTNER_LIFETIME) {
                        ro.push(DhcpOption::PartnerLifetimeSent(pl)); // exact copy (§7.6)
                    }
                    rinner.push(match lo {
                        DhcpOption::IaAddr(a) => DhcpOption::IaAddr(IaAddr { options: ro, ..a.clone() }),
                        DhcpOption::IaPrefix(p) => DhcpOption::IaPrefix(IaPrefix { options: ro, ..p.clone() }),
                        _ => continue,
                    });
                }
                rcd.push(match ia_type {
                    IaType::Na => DhcpOption::IaNa(IaNa { iaid, t1, t2, options: rinner }),
                    IaType::Pd => DhcpOption::IaPd(IaPd { iaid, t1, t2, options: rinner }),
                });
            }
            reply.options.push(DhcpOption::ClientData(rcd));
        }
    }
    reply
}

/// Who judges: the receiving server's role, its clock, the MCLT, and when
/// the partner last lost its store (0: never, as far as we know).
#[derive(Debug, Clone, Copy)]
pub struct Judge {
    pub role: Role,
    pub now: Time,
    pub mclt: u32,
    pub partner_lost_store_at: Time,
}

/// §7.5.4 Figure 4: accept `r` over the local record, or say why not.
/// OutdatedBindingInformation means our record is newer: the partner must
/// hear ours (§7.5.4, after the BNDREPLY).
pub fn judge(local: Option<&Lease>, r: &Received, ctx: Judge) -> Result<(), StatusCode> {
    let Some(l) = local else { return Ok(()) };
    match &r.binding {
        None => {
            // §4.2.2: a prefix delegated to a client cannot be moved;
            // otherwise the §7.5.4 rules decide, as for client data.
            if l.is_active() {
                Err(StatusCode::ADDRESS_IN_USE)
            } else {
                decide(l, r.status, r.start, None, false, &ctx)
            }
        }
        // §5.6: AddressInUse is about another client: another DUID or another IA.
        Some(b) => decide(l, r.status, r.update_time(), r.clt, l.binding == *b, &ctx),
    }
}

/// §7.5.5: the record to store for an accepted `r`.
pub fn merge(local: Option<Lease>, r: &Received, now: Time) -> Lease {
    match &r.binding {
        None => {
            let mut l = local.unwrap_or_else(|| Lease::pool_record(r.key, now));
            l.status = r.status;
            l.start_time_of_state = r.start;
            l.state_expiration_time = 0;
            if let Some(e) = r.partner_lifetime {
                l.expiration_time = e;
            }
            l.update_partner = false;
            l
        }
        Some(b) => store_received(local, r.key, b.clone(), r),
    }
}

/// §7.5.4 Figure 4, with the digest §18 item 7 decision for ties.
#[allow(clippy::too_many_arguments)]
fn decide(local: &Lease, recv: BindingStatus, upd_time: Time, clt: Option<Time>, same_client: bool, ctx: &Judge) -> Result<(), StatusCode> {
    use BindingStatus as B;
    let (role, now) = (ctx.role, ctx.now);
    let outdated = Err(StatusCode::OUTDATED_BINDING_INFORMATION);
    // §7.5.4 says "the client-last-transaction-time if one appears, or the
    // start-time-of-state": taken literally, a lease freed after its last
    // client contact would lose to a stale EXPIRED and the stores would
    // never agree. We time the local record as the update is timed: for
    // states other than ACTIVE/EXPIRED/RELEASED, the later of the two.
    let local_time = match local.status {
        B::Active | B::Expired | B::Released => {
            if local.cltt != 0 { local.cltt } else { local.start_time_of_state }
        }
        _ => local.cltt.max(local.start_time_of_state),
    };
    // "accept": the update must be later; times within ±5 s are the same
    // time (§7.1). On such a tie we keep whichever side says ACTIVE (the
    // safe outcome: no lease is freed while a client may hold it) — if the
    // ACTIVE comes from a client contact (a CLT_TIME): a partner's copy sent
    // back without one is not a grant and does not undo the granting
    // server's end of the lease (audit F3) — and accept an identical status
    // (a retransmission), so both sides converge.
    let by_time = || -> Result<(), StatusCode> {
        if upd_time > local_time + SKEW_TOLERANCE {
            Ok(())
        } else if upd_time + SKEW_TOLERANCE < local_time {
            outdated
        } else if recv == local.status || (recv == B::Active && clt.is_some() && local.status != B::Active) {
            Ok(())
        } else if matches!(local.status, B::Expired | B::Released | B::Reset | B::PendingFree) && matches!(recv, B::Free | B::FreeBackup) {
            // The lease's own next step (Figure 2 events 4–6): an ended
            // lease becomes free once acknowledged, usually within a second.
            Ok(())
        } else if matches!(recv, B::Free | B::FreeBackup) && matches!(local.status, B::Free | B::FreeBackup) {
            // Who owns a free prefix is the primary's call (§4.2.2).
            if role == Role::Secondary { Ok(()) } else { outdated }
        } else if matches!(recv, B::Expired | B::Released | B::Reset) && matches!(local.status, B::Expired | B::Released | B::Reset) {
            // Two ends of one lease (one side saw it expire, the other saw
            // the client release it): over either way. The primary's record
            // stands, or each side would refuse the other's for ever and
            // neither would ever free the lease (hub simulator seeds 20, 113).
            if role == Role::Secondary { Ok(()) } else { outdated }
        } else {
            outdated
        }
    };
    // time(1): accept once the local state has expired (§7.5.4: "if the
    // current time is later than the receiving server's
    // state-expiration-time"). The lease's end on this side is the latest
    // grant either server made that this side knows of; a granting server
    // that knows of a later grant of its own does not send EXPIRED (audit
    // F3: waiting longer only bounced updates back and forth). Except when
    // the partner lost its store since the client was last seen: it may
    // have extended the client up to what we acked plus the MCLT (§4.4)
    // and forgotten it, so its EXPIRED counts only after that.
    let last_seen = local.cltt.max(local.partner_raw_clt_time).max(local.start_time_of_state);
    let forgotten = ctx.partner_lost_store_at != 0 && last_seen < ctx.partner_lost_store_at && local.expiration_time != 0;
    let horizon = if forgotten { local.expiration_time + ctx.mclt as Time } else { 0 };
    let expires = local.state_expiration_time.max(horizon);
    let time1 = || if expires != 0 && now > expires { Ok(()) } else { outdated };
    // time(2): accept if the received CLT is later than the local start of state.
    let time2 = || clt.is_some_and(|c| c > local.start_time_of_state);
    match (local.status, recv) {
        (B::Active, B::Active) => {
            // accept(3)
            if same_client || time2() || role == Role::Secondary {
                Ok(())
            } else {
                Err(StatusCode::ADDRESS_IN_USE)
            }
        }
        (B::Active, B::Expired | B::Free | B::FreeBackup | B::PendingFree) => time1(),
        (B::Active, _) => by_time(),
        (B::Reset, B::Active) => {
            if time2() {
                Ok(())
            } else {
                outdated
            }
        }
        _ => by_time(),
    }
}

/// §7.5.5: store an accepted lease.
fn store_received(local: Option<Lease>, key: LeaseKey, binding: Binding, r: &Received) -> Lease {
    let (status, clt) = (r.status, r.clt);
    // The client's lifetime is what the latest grant told it: the partner's
    // end if its grant is the later one, ours if ours is, and on a tie (a
    // Rebind answered by both, within the ±5 s of §7.1) the later end, so
    // that neither side frees a lease a client may still use.
    // None: take the partner's end; Some((end, true)): ours is newer, keep
    // it; Some((end, false)): a tie, keep the later of the two.
    let ours = match &local {
        Some(x) if x.is_active() && x.binding == binding && status == BindingStatus::Active => {
            // Our own last contact with the client; what the partner told us
            // before (partner-raw-clt-time) is not a grant of ours.
            let ours_at = x.cltt;
            match clt {
                Some(c) if c > ours_at + SKEW_TOLERANCE => None,
                Some(c) if c + SKEW_TOLERANCE < ours_at => Some((x.valid_end, true)),
                Some(_) => Some((x.valid_end, false)),
                // No client contact time in the update: ours, if we have one, is newer.
                None if ours_at != 0 => Some((x.valid_end, true)),
                None => Some((x.valid_end, false)),
            }
        }
        _ => None,
    };
    let mut partner_needs_ours = false;
    let mut l = local.unwrap_or_else(|| {
        let mut l = Lease::active(key, binding.clone(), 0, 0, 0, 0, 0);
        l.cltt = 0;
        l.valid_end = 0;
        l
    });
    if l.binding != binding || (status == BindingStatus::Active && !l.is_active()) {
        // A new lease — another client, or the same one again after the
        // lease ended (§4.4.1, §7.3): what either side acked was about the
        // previous one (the granting server starts from 0 as well).
        l.acked_partner_lifetime = 0;
        l.expiration_time = 0;
        l.partner_lifetime = 0;
    }
    l.binding = binding;
    l.status = status;
    l.start_time_of_state = r.start;
    l.preferred_lifetime = r.preferred;
    l.valid_lifetime = r.valid;
    (l.t1, l.t2) = (r.t1, r.t2);
    l.state_expiration_time = r.state_expiration.unwrap_or(0);
    if let Some(pl) = r.partner_lifetime {
        // F_PARTNER_LIFETIME → expiration-time: "the greatest lifetime this
        // server has ever acked" (§7.3), so a smaller one (a lifetime
        // lowered since) never shortens what we protect.
        l.expiration_time = l.expiration_time.max(pl);
    }
    if let Some(c) = clt {
        l.partner_raw_clt_time = c; // CLT_TIME → partner-raw-clt-time
    }
    if status == BindingStatus::Active {
        let sent_end = if l.state_expiration_time != 0 {
            l.state_expiration_time
        } else {
            clt.map(|c| c + r.valid as u64).unwrap_or(0)
        };
        l.valid_end = match ours {
            None => sent_end,
            Some((end, true)) => end,
            Some((end, false)) => end.max(sent_end),
        };
        l.state_expiration_time = l.valid_end;
        // Our record is newer than what the partner sent: it must hear ours.
        partner_needs_ours = l.valid_end != sent_end;
    }
    if let Some(raw) = r.partner_raw_clt
        && raw > l.cltt
    {
        l.cltt = raw; // replaces CLTT only if later
    }
    if let Some(e) = r.expiration_time
        && e > l.partner_lifetime
    {
        l.partner_lifetime = e; // replaces partner-lifetime only if later
    }
    // The relay chain of the latest contact: ours when our grant is the
    // newer one, the partner's when its is. Grants within the ±5 s tie keep
    // the greater chain on both sides. Whenever we keep one the partner did
    // not send, it must hear ours, so that the stores agree.
    match ours {
        Some((_, true)) => {}
        Some((_, false)) => l.relay = l.relay.take().max(r.relay.clone()),
        None => l.relay = r.relay.clone(),
    }
    partner_needs_ours |= l.relay != r.relay;
    l.update_partner = partner_needs_ours;
    received_dns(&mut l, r);
    l
}

/// The zone a name was entered in: the name without its first label.
fn parent_zone(name: &crate::wire::DomainName) -> Option<crate::wire::DomainName> {
    let w = name.as_wire();
    let first = *w.first()? as usize;
    crate::wire::DomainName::decode(w.get(1 + first..)?).ok().filter(|z| !z.is_empty())
}

/// §9.2: take the partner's name and DNS state. Our own to-do bits survive
/// only for the same client and name: an add we started while the lease
/// stays active, a removal we owe once it has ended. The partner never
/// makes us add (§9.1) nor remove (§9.4: the acking partner does not delete).
fn received_dns(l: &mut Lease, r: &Received) {
    use crate::lease::{DnsInfo, dns_flags as F};
    let flags = r.dns_flags;
    let Some(f) = &r.fqdn else {
        if l.dns.is_some() && flags.is_none() {
            // The partner knows no name for this lease (any more).
            l.dns = l.dns.take().filter(|d| d.dns_flags & (F::PENDING_REMOVE | F::REMOVE_AFTER_ACK) != 0 && !l.is_active());
        }
        return;
    };
    let before = l.dns.take();
    let same = before.as_ref().is_some_and(|b| b.name.as_ref() == Some(&f.name));
    let mut keep = 0;
    if let Some(b) = &before
        && same
    {
        keep = if l.is_active() {
            b.dns_flags & (F::PENDING_ADD | F::CONFLICT)
        } else {
            b.dns_flags & (F::PENDING_REMOVE | F::REMOVE_AFTER_ACK)
        };
    }
    l.dns = Some(DnsInfo { flags: f.flags, name: Some(f.name.clone()), dns_flags: (flags.unwrap_or(0) & F::SHARED) | keep });
}

/// One lease's verdict in a BNDREPLY.
pub struct Ack {
    pub key: LeaseKey,
    pub accepted: bool,
    pub partner_lifetime_sent: Option<Time>,
}

/// §7.7: read every per-lease verdict from a BNDREPLY.
pub fn acks(m: &FailoverMessage) -> Vec<Ack> {
    let mut out = Vec::new();
    let ok = |o: &Options| o.status().is_none_or(|s| s.code == StatusCode::SUCCESS);
    for o in &m.options {
        match o {
            DhcpOption::IaPrefix(p) => {
                if let Some(pr) = Prefix::new(p.prefix, p.prefix_len) {
                    out.push(Ack {
                        key: LeaseKey::Prefix(pr),
                        accepted: ok(&p.options),
                        partner_lifetime_sent: p.options.u32_of(opt::F_PARTNER_LIFETIME_SENT).map(from_abs),
                    });
                }
            }
            DhcpOption::ClientData(cd) => {
                let whole = ok(cd);
                for ia in cd.iter() {
                    let (inner, ia_ok) = match ia {
                        DhcpOption::IaNa(x) => (&x.options, ok(&x.options)),
                        DhcpOption::IaPd(x) => (&x.options, ok(&x.options)),
                        _ => continue,
                    };
                    for lo in inner.iter() {
                        let (key, lopts) = match lo {
                            DhcpOption::IaAddr(a) => (Some(LeaseKey::Addr(a.addr)), &a.options),
                            DhcpOption::IaPrefix(p) => (Prefix::new(p.prefix, p.prefix_len).map(LeaseKey::Prefix), &p.options),
                            _ => continue,
                        };
                        if let Some(key) = key {
                            out.push(Ack {
                                key,
                                accepted: whole && ia_ok && ok(lopts),
                                partner_lifetime_sent: lopts.u32_of(opt::F_PARTNER_LIFETIME_SENT).map(from_abs),
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}
