//! How the endpoint's state constrains the engine: responsiveness (§8 per
//! state), which leases may be granted (§4.2), and the MCLT cap (§4.4).

use super::address_owner;
use super::Role;
use crate::lease::{Binding, Lease, LeaseKey, Time};
use crate::server::{Policy, Responsiveness};
use crate::wire::{BindingStatus, ServerState};

/// The failover state as the engine sees it (published to every shard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointPolicy {
    pub role: Role,
    pub state: ServerState,
    pub mclt: u32,
    /// When this server entered PARTNER-DOWN (0 in other states): ended
    /// leases become free the MCLT after it at the earliest (§8.4.1).
    pub partner_down_since: Time,
    /// When the partner last asked for everything after losing its store.
    pub partner_lost_store_at: Time,
}

impl EndpointPolicy {
    /// States in which this server may make new allocations at all.
    fn may_allocate_in_state(&self) -> bool {
        use ServerState as S;
        match self.state {
            // §8.8.1: the primary serves in NORMAL; the secondary only renews.
            S::Normal => self.role == Role::Primary,
            // §8.9.1, §8.4.1, §8.11.1: responsive states allocate from their own pool.
            S::CommunicationsInterrupted | S::PartnerDown | S::ResolutionInterrupted => true,
            // §8.12: CONFLICT-DONE (primary only) works like NORMAL.
            S::ConflictDone => self.role == Role::Primary,
            // §8.7.1: RECOVER-DONE MUST NOT allocate; the rest are unresponsive.
            _ => false,
        }
    }

    /// Was `l` freed on the word of a partner that had lost its store, and
    /// may a client still hold an extension that partner gave and forgot?
    /// The partner may have extended the client, before its loss, up to
    /// max(what we acked, then) + MCLT (§4.4), and its ack of our EXPIRED or
    /// RELEASED says nothing about that. So a lease last used by a client
    /// before the loss and freed after it goes to no other client until
    /// max(expiration-time, loss) + MCLT (README, Conformance row (d)).
    pub fn held_after_partner_loss(&self, l: &Lease, now: Time) -> bool {
        self.hold_end(l, now).is_some()
    }

    /// When the hold of `held_after_partner_loss` ends, if `l` is on hold.
    pub fn hold_end(&self, l: &Lease, now: Time) -> Option<Time> {
        let lost = self.partner_lost_store_at;
        let end = l.expiration_time.max(lost) + self.mclt as Time;
        (lost != 0
            && matches!(l.status, BindingStatus::Free | BindingStatus::FreeBackup)
            && l.start_time_of_state >= lost
            && (1..lost).contains(&l.cltt.max(l.partner_raw_clt_time))
            && now < end)
            .then_some(end)
    }

    /// Does the lifetime of leases given in this state obey the MCLT rule?
    pub fn mclt_applies(&self) -> bool {
        // §8.4.1: not in PARTNER-DOWN. §8.8.1, §8.9.1, §8.11.1, §8.12; RECOVER-DONE
        // renewals too (digest §18 item 10: the safe reading).
        self.state != ServerState::PartnerDown
    }
}

impl Policy for EndpointPolicy {
    fn allocates(&self) -> bool {
        self.may_allocate_in_state()
    }

    fn fresh_slots(&self, kind: crate::lease::IaType) -> bool {
        // §4.2.2: never-used delegable prefixes are the primary's.
        kind == crate::lease::IaType::Na || self.role == Role::Primary
    }

    fn defer_dns_removal(&self) -> bool {
        true
    }

    fn responsiveness(&self) -> Responsiveness {
        use ServerState as S;
        match self.state {
            // §3: the secondary in NORMAL is renew responsive.
            S::Normal if self.role == Role::Secondary => Responsiveness::RenewResponsive,
            S::Normal | S::CommunicationsInterrupted | S::PartnerDown | S::ResolutionInterrupted => {
                Responsiveness::Responsive
            }
            S::ConflictDone => Responsiveness::Responsive,
            // §8.7.1: RECOVER-DONE SHOULD be renew responsive.
            S::RecoverDone => Responsiveness::RenewResponsive,
            // §8.3.1, §8.5.1, §8.6.1, §8.10.1: MUST NOT respond.
            S::Startup | S::Recover | S::RecoverWait | S::PotentialConflict => Responsiveness::Unresponsive,
        }
    }

    fn may_allocate(&self, key: &LeaseKey, existing: Option<&Lease>, client: &Binding, now: Time) -> bool {
        if !self.may_allocate_in_state() {
            return false;
        }
        if existing.is_some_and(|l| l.binding != *client && self.held_after_partner_loss(l, now)) {
            return false;
        }
        match key {
            LeaseKey::Addr(a) => {
                // §4.2.1: only our own half, in every state. The partner's half
                // in PARTNER-DOWN is a SHOULD NOT; we never use it.
                if address_owner(*a) != self.role {
                    return false;
                }
                match existing {
                    None => true,
                    // §7.2: only FREE/FREE-BACKUP leases are available; an
                    // EXPIRED/RELEASED lease waits for the partner's ack
                    // (§4.2.2.1, §8.8.1) or, in PARTNER-DOWN, for the MCLT.
                    Some(l) => matches!(l.status, BindingStatus::Free | BindingStatus::FreeBackup),
                }
            }
            LeaseKey::Prefix(_) => {
                // §4.2.2: FREE prefixes (and ones never recorded, which start
                // as the primary's) belong to the primary, FREE-BACKUP to
                // the secondary. The partner's pool is not used in
                // PARTNER-DOWN (its use is optional after the MCLT).
                let status = existing.map(|l| l.status);
                matches!(
                    (self.role, status),
                    (Role::Primary, None | Some(BindingStatus::Free)) | (Role::Secondary, Some(BindingStatus::FreeBackup))
                )
            }
        }
    }

    fn may_reuse(&self, _key: &LeaseKey, existing: Option<&Lease>, client: &Binding, now: Time) -> bool {
        // §7.2, §4.2.2.1: only FREE or FREE-BACKUP (an EXPIRED or RELEASED
        // record waits for the partner's ack, or in PARTNER-DOWN the MCLT),
        // and not while on hold after the partner lost its store.
        existing.is_none_or(|l| {
            matches!(l.status, BindingStatus::Free | BindingStatus::FreeBackup) && !(l.binding != *client && self.held_after_partner_loss(l, now))
        })
    }

    fn lifetime_cap(&self, lease: &Lease, now: Time) -> Option<u32> {
        if !self.mclt_applies() {
            return None;
        }
        // §4.4: valid ≤ max(acked_partner_lifetime, now) + MCLT − now.
        let limit = lease.acked_partner_lifetime.max(now) + self.mclt as u64;
        Some(limit.saturating_sub(now).min(u32::MAX as u64) as u32)
    }

    fn completes_dns(&self) -> bool {
        // §9.3: the PARTNER-DOWN case of completing an add the partner had not finished.
        self.state == ServerState::PartnerDown
    }

    fn partner_lifetime(&self, lease: &Lease, desired: u32, now: Time) -> Time {
        // §4.4.1: now + desired + T1 fraction (½) × actual, so the partner
        // leads the client and the next renewal can get the full lifetime.
        now + desired as u64 + lease.valid_lifetime as u64 / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::IaType;
    use crate::wire::Duid;

    fn lease(addr: &str, acked: Time) -> Lease {
        let mut l = Lease::active(
            LeaseKey::Addr(addr.parse().unwrap()),
            Binding { duid: Duid::ll(1, &[1]), ia_type: IaType::Na, iaid: 1 },
            1000,
            0,
            0,
            0,
            0,
        );
        l.acked_partner_lifetime = acked;
        l
    }

    #[test]
    fn mclt_rule_caps_lifetimes_except_in_partner_down() {
        // §4.4, §8.4.1
        let p = EndpointPolicy { role: Role::Primary, state: ServerState::Normal, mclt: 3600, partner_down_since: 0, partner_lost_store_at: 0 };
        assert_eq!(p.lifetime_cap(&lease("2001:db8::1", 0), 1000), Some(3600));
        assert_eq!(p.lifetime_cap(&lease("2001:db8::1", 1000 + 86400), 1000), Some(86400 + 3600));
        let pd = EndpointPolicy { state: ServerState::PartnerDown, ..p };
        assert_eq!(pd.lifetime_cap(&lease("2001:db8::1", 0), 1000), None);
    }

    #[test]
    fn address_halves_and_states() {
        // §4.2.1.1 and §8 responsiveness
        let b = Binding { duid: Duid::ll(1, &[1]), ia_type: IaType::Na, iaid: 1 };
        let k = |a: &str| LeaseKey::Addr(a.parse().unwrap());
        let prim = EndpointPolicy { role: Role::Primary, state: ServerState::Normal, mclt: 60, partner_down_since: 0, partner_lost_store_at: 0 };
        assert!(prim.may_allocate(&k("2001:db8::1"), None, &b, 0));
        assert!(!prim.may_allocate(&k("2001:db8::2"), None, &b, 0));
        let sec = EndpointPolicy { role: Role::Secondary, state: ServerState::Normal, mclt: 60, partner_down_since: 0, partner_lost_store_at: 0 };
        assert_eq!(sec.responsiveness(), Responsiveness::RenewResponsive);
        assert!(!sec.may_allocate(&k("2001:db8::2"), None, &b, 0), "secondary allocates nothing in NORMAL");
        let sec_ci = EndpointPolicy { state: ServerState::CommunicationsInterrupted, ..sec };
        assert!(sec_ci.may_allocate(&k("2001:db8::2"), None, &b, 0));
        assert!(!sec_ci.may_allocate(&k("2001:db8::3"), None, &b, 0));
        for s in [ServerState::Startup, ServerState::Recover, ServerState::RecoverWait, ServerState::PotentialConflict] {
            assert_eq!(EndpointPolicy { state: s, ..prim }.responsiveness(), Responsiveness::Unresponsive);
        }
        let mut released = lease("2001:db8::1", 0);
        released.status = BindingStatus::Released;
        assert!(!prim.may_allocate(&k("2001:db8::1"), Some(&released), &b, 0), "wait for the ack (§4.2.2.1)");
        released.status = BindingStatus::Free;
        assert!(prim.may_allocate(&k("2001:db8::1"), Some(&released), &b, 0));
    }

    #[test]
    fn a_lease_freed_on_the_word_of_a_partner_that_lost_its_store_waits_the_mclt_for_other_clients() {
        // README Conformance (d): the partner may have extended the client
        // (up to what we acked, or its then, plus the MCLT) and forgotten it.
        let holder = Binding { duid: Duid::ll(1, &[1]), ia_type: IaType::Na, iaid: 1 };
        let other = Binding { duid: Duid::ll(1, &[2]), ia_type: IaType::Na, iaid: 1 };
        let k = LeaseKey::Addr("2001:db8::1".parse().unwrap());
        let lost = 5000;
        let p = EndpointPolicy {
            role: Role::Primary,
            state: ServerState::CommunicationsInterrupted,
            mclt: 60,
            partner_down_since: 0,
            partner_lost_store_at: lost,
        };
        let mut l = lease("2001:db8::1", 0); // the client was last seen at 1000
        l.set_status(BindingStatus::Free, lost + 3); // the partner acked our EXPIRED after asking for everything
        assert!(!p.may_allocate(&k, Some(&l), &other, lost + 3));
        assert!(!p.may_allocate(&k, Some(&l), &other, lost + 59));
        assert!(p.may_allocate(&k, Some(&l), &holder, lost + 3), "the client that held it may have it back");
        assert!(p.may_allocate(&k, Some(&l), &other, lost + 60));
        l.expiration_time = lost + 100; // we had acked the partner's grant up to here
        assert!(!p.may_allocate(&k, Some(&l), &other, lost + 159));
        assert!(p.may_allocate(&k, Some(&l), &other, lost + 160));
        // Freed before the loss (acked by a partner that still knew), or
        // used by a client since: no hold.
        let mut before = lease("2001:db8::1", 0);
        before.set_status(BindingStatus::Free, lost - 1);
        assert!(p.may_allocate(&k, Some(&before), &other, lost + 3));
        let mut seen_since = lease("2001:db8::1", 0);
        seen_since.cltt = lost + 1;
        seen_since.set_status(BindingStatus::Free, lost + 2);
        assert!(p.may_allocate(&k, Some(&seen_since), &other, lost + 3));
        // A pool record no client ever used.
        let mut fresh = Lease::pool_record(k, lost + 1);
        fresh.set_status(BindingStatus::Free, lost + 1);
        assert!(p.may_allocate(&k, Some(&fresh), &other, lost + 3));
    }
}
