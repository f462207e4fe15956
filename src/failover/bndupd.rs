//! Binding updates: building a BNDUPD from a lease (§7.4), deciding and
//! storing a received one (§7.5), and building the BNDREPLY (§7.6).

use super::{Bindings, SKEW_TOLERANCE};
use crate::config::Role;
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
        lease_opts.push(DhcpOption::PartnerLifetime(to_abs(l.partner_lifetime)));
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
    let cd: Options = vec![
        DhcpOption::ClientId(l.binding.duid.clone()), // MUST
        DhcpOption::LqBaseTime(base),                 // MUST
        ia,
    ]
    .into();
    FailoverMessage::new(MessageType::BndUpd, xid, base).with(DhcpOption::ClientData(cd))
}

/// The outcome of one received BNDUPD.
pub struct Processed {
    pub reply: FailoverMessage,
    /// Accepted leases, to store durably before the reply is sent.
    pub accepted: Vec<Lease>,
    /// Leases rejected as outdated: our own data is newer (§7.5.4).
    pub outdated: Vec<LeaseKey>,
}

fn reject(code: StatusCode, why: &str) -> DhcpOption {
    DhcpOption::StatusCode(Status::new(code, why))
}

/// §7.5.4 Figure 4, with the digest §18 item 7 decision for ties.
#[allow(clippy::too_many_arguments)]
fn decide(local: &Lease, recv: BindingStatus, upd_time: Time, clt: Option<Time>, duid_same: bool, role: Role, now: Time, mclt: u32) -> Result<(), StatusCode> {
    use BindingStatus as B;
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
    // safe outcome: no lease is freed while a client may hold it) and accept
    // an identical status (a retransmission), so both sides converge.
    let by_time = || -> Result<(), StatusCode> {
        if upd_time > local_time + SKEW_TOLERANCE {
            Ok(())
        } else if upd_time + SKEW_TOLERANCE < local_time {
            outdated
        } else if recv == local.status || (recv == B::Active && local.status != B::Active) {
            Ok(())
        } else if matches!(recv, B::Free | B::FreeBackup) && matches!(local.status, B::Free | B::FreeBackup) {
            // Who owns a free prefix is the primary's call (§4.2.2).
            if role == Role::Secondary { Ok(()) } else { outdated }
        } else {
            outdated
        }
    };
    // time(1): accept if the local state has expired. For an ACTIVE lease
    // that is not before the lifetime we acked to the partner plus the MCLT
    // either (§4.4, §7.3): the partner may have extended the client that
    // far, and may since have lost its own record of doing so.
    let acked_horizon = if local.expiration_time == 0 { 0 } else { local.expiration_time + mclt as Time };
    let expires = local.state_expiration_time.max(acked_horizon);
    let time1 = || if expires != 0 && now >= expires { Ok(()) } else { outdated };
    // time(2): accept if the received CLT is later than the local start of state.
    let time2 = || clt.is_some_and(|c| c > local.start_time_of_state);
    match (local.status, recv) {
        (B::Active, B::Active) => {
            // accept(3)
            if duid_same || time2() || role == Role::Secondary {
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

/// §7.5: decide and store a received BNDUPD; build its BNDREPLY (§7.6).
pub fn process(m: &FailoverMessage, now: Time, role: Role, mclt: u32, b: &dyn Bindings) -> Processed {
    let mut accepted = Vec::new();
    let mut outdated = Vec::new();
    let base_opt = |o: &Options| o.u32_of(opt::LQ_BASE_TIME).map(from_abs);
    let mut reply = FailoverMessage::new(MessageType::BndReply, m.transaction_id, to_abs(now));
    match crate::wire::failover::BindingBody::of(m) {
        Err(_) => {
            // §7.5.3: not exactly one CLIENT_DATA or IAPREFIX.
            reply.options.push(reject(StatusCode::MISSING_BINDING_INFORMATION, "need one CLIENT_DATA or IAPREFIX"));
        }
        Ok(crate::wire::failover::BindingBody::Prefix(p)) => {
            let mut out = p.options.clone();
            out.0.retain(|o| matches!(o.code(), opt::F_BINDING_STATUS | opt::F_STATE_EXPIRATION_TIME | opt::VSS));
            let key = Prefix::new(p.prefix, p.prefix_len).map(LeaseKey::Prefix);
            let status = p.options.iter().find_map(|o| match o {
                DhcpOption::BindingStatus(s) => Some(*s),
                _ => None,
            });
            let start = p.options.u32_of(opt::F_START_TIME_OF_STATE).map(from_abs);
            let verdict = match (key, status, start, base_opt(&p.options)) {
                (Some(k), Some(s), Some(start), Some(_)) if b.owns(&k) => {
                    let local = b.lease(&k);
                    // §4.2.2: a prefix delegated to a client cannot be moved;
                    // otherwise the §7.5.4 rules decide, as for client data.
                    let verdict = match &local {
                        Some(l) => decide(l, s, start, None, false, role, now, mclt),
                        None => Ok(()),
                    };
                    if local.as_ref().is_some_and(Lease::is_active) {
                        Err(StatusCode::ADDRESS_IN_USE)
                    } else if !matches!(s, BindingStatus::Free | BindingStatus::FreeBackup) {
                        Err(StatusCode::MISSING_BINDING_INFORMATION)
                    } else if let Err(c) = verdict {
                        if c == StatusCode::OUTDATED_BINDING_INFORMATION {
                            outdated.push(k);
                        }
                        Err(c)
                    } else {
                        let mut l = local.unwrap_or_else(|| Lease::pool_record(k, now));
                        l.status = s;
                        l.start_time_of_state = start;
                        l.state_expiration_time = 0;
                        if let Some(e) = p.options.u32_of(opt::F_PARTNER_LIFETIME) {
                            l.expiration_time = from_abs(e);
                        }
                        l.update_partner = false;
                        accepted.push(l);
                        Ok(())
                    }
                }
                (Some(_), Some(_), Some(_), Some(_)) => Err(StatusCode::CONFIGURATION_CONFLICT),
                _ => Err(StatusCode::MISSING_BINDING_INFORMATION),
            };
            if let Err(c) = verdict {
                out.0.insert(0, reject(c, c.name()));
            }
            if let Some(pl) = p.options.u32_of(opt::F_PARTNER_LIFETIME) {
                out.push(DhcpOption::PartnerLifetimeSent(pl));
            }
            reply.options.push(DhcpOption::IaPrefix(IaPrefix { options: out, ..p.clone() }));
        }
        Ok(crate::wire::failover::BindingBody::ClientData(cd)) => {
            let mut rcd = Options::new();
            let (Some(duid), Some(base)) = (cd.client_id().cloned(), base_opt(cd)) else {
                rcd.push(reject(StatusCode::MISSING_BINDING_INFORMATION, "CLIENTID and LQ_BASE_TIME are required"));
                reply.options.push(DhcpOption::ClientData(rcd));
                return Processed { reply, accepted, outdated };
            };
            rcd.push(DhcpOption::ClientId(duid.clone()));
            for o in cd.iter() {
                let (ia_type, iaid, t1, t2, inner) = match o {
                    DhcpOption::IaNa(ia) => (IaType::Na, ia.iaid, ia.t1, ia.t2, &ia.options),
                    DhcpOption::IaPd(ia) => (IaType::Pd, ia.iaid, ia.t1, ia.t2, &ia.options),
                    _ => continue,
                };
                let mut rinner = Options::new();
                for lo in inner.iter() {
                    let (key, preferred, valid, lopts) = match lo {
                        DhcpOption::IaAddr(a) if ia_type == IaType::Na => (Some(LeaseKey::Addr(a.addr)), a.preferred, a.valid, &a.options),
                        DhcpOption::IaPrefix(p) if ia_type == IaType::Pd => {
                            (Prefix::new(p.prefix, p.prefix_len).map(LeaseKey::Prefix), p.preferred, p.valid, &p.options)
                        }
                        _ => continue,
                    };
                    let status = lopts.iter().find_map(|o| match o {
                        DhcpOption::BindingStatus(s) => Some(*s),
                        _ => None,
                    });
                    // §5.5.17 vs §7.4: accept START_TIME_OF_STATE at either level.
                    let start = lopts.u32_of(opt::F_START_TIME_OF_STATE).or_else(|| inner.u32_of(opt::F_START_TIME_OF_STATE)).map(from_abs);
                    // CLT_TIME is relative to LQ_BASE_TIME (digest §18 item 6).
                    let clt = lopts.u32_of(opt::CLT_TIME).map(|c| base.saturating_sub(c as u64));
                    let verdict = match (key, status, start) {
                        (Some(k), Some(s), Some(start)) => {
                            if !b.owns(&k) {
                                // §7.5.4: not ours to know about.
                                Err(StatusCode::CONFIGURATION_CONFLICT)
                            } else {
                                let upd_time = match s {
                                    BindingStatus::Active | BindingStatus::Expired | BindingStatus::Released => clt.unwrap_or(start),
                                    _ => clt.unwrap_or(0).max(start),
                                };
                                let local = b.lease(&k);
                                let v = match &local {
                                    None => Ok(()),
                                    Some(l) => decide(l, s, upd_time, clt, l.binding.duid == duid, role, now, mclt),
                                };
                                if v.is_ok() {
                                    accepted.push(store_received(local, k, Binding { duid: duid.clone(), ia_type, iaid }, s, start, clt, preferred, valid, t1, t2, lopts));
                                } else if v == Err(StatusCode::OUTDATED_BINDING_INFORMATION) {
                                    outdated.push(k);
                                }
                                v
                            }
                        }
                        _ => Err(StatusCode::MISSING_BINDING_INFORMATION),
                    };
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
                        _ => unreachable!(),
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
    Processed { reply, accepted, outdated }
}


/// §7.5.5: store an accepted lease.
#[allow(clippy::too_many_arguments)]
fn store_received(
    local: Option<Lease>,
    key: LeaseKey,
    binding: Binding,
    status: BindingStatus,
    start: Time,
    clt: Option<Time>,
    preferred: u32,
    valid: u32,
    t1: u32,
    t2: u32,
    o: &Options,
) -> Lease {
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
    l.binding = binding;
    l.status = status;
    l.start_time_of_state = start;
    l.preferred_lifetime = preferred;
    l.valid_lifetime = valid;
    (l.t1, l.t2) = (t1, t2);
    l.state_expiration_time = o.u32_of(opt::F_STATE_EXPIRATION_TIME).map(from_abs).unwrap_or(0);
    if let Some(pl) = o.u32_of(opt::F_PARTNER_LIFETIME) {
        l.expiration_time = from_abs(pl); // F_PARTNER_LIFETIME → expiration-time
    }
    if let Some(c) = clt {
        l.partner_raw_clt_time = c; // CLT_TIME → partner-raw-clt-time
    }
    if status == BindingStatus::Active {
        let sent_end = if l.state_expiration_time != 0 {
            l.state_expiration_time
        } else {
            clt.map(|c| c + valid as u64).unwrap_or(0)
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
    if let Some(r) = o.u32_of(opt::F_PARTNER_RAW_CLT_TIME).map(from_abs)
        && r > l.cltt
    {
        l.cltt = r; // replaces CLTT only if later
    }
    if let Some(e) = o.u32_of(opt::F_EXPIRATION_TIME).map(from_abs)
        && e > l.partner_lifetime
    {
        l.partner_lifetime = e; // replaces partner-lifetime only if later
    }
    l.update_partner = partner_needs_ours;
    received_dns(&mut l, o);
    l
}

/// The zone a name was entered in: the name without its first label.
fn parent_zone(name: &crate::wire::DomainName) -> Option<crate::wire::DomainName> {
    let w = name.as_wire();
    let first = *w.first()? as usize;
    crate::wire::DomainName::decode(w.get(1 + first..)?).ok().filter(|z| !z.is_empty())
}

/// §9.2: take the partner's name and DNS state. Our own to-do bits survive
/// only for the same client and name while the lease stays active (an add
/// we started); the partner never makes us add (§9.1) — except that a
/// removal we owe for records we added is kept if the lease has ended.
fn received_dns(l: &mut Lease, o: &Options) {
    use crate::lease::{DnsInfo, dns_flags as F};
    let fqdn = o.client_fqdn();
    let flags = o.iter().find_map(|x| match x {
        DhcpOption::DnsRemovalInfo(r) => r.iter().find_map(|y| match y {
            DhcpOption::DnsFlags(f) => Some(*f),
            _ => None,
        }),
        _ => None,
    });
    let Some(f) = fqdn else {
        if l.dns.is_some() && flags.is_none() {
            // The partner knows no name for this lease (any more).
            l.dns = l.dns.take().filter(|d| d.dns_flags & F::PENDING_REMOVE != 0 && !l.is_active());
        }
        return;
    };
    let before = l.dns.take();
    let same = before.as_ref().is_some_and(|b| b.name.as_ref() == Some(&f.name));
    let mut keep = 0;
    if let Some(b) = &before
        && same
    {
        keep = if l.is_active() { b.dns_flags & (F::PENDING_ADD | F::CONFLICT) } else { b.dns_flags & F::PENDING_REMOVE };
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
