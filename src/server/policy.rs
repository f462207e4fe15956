//! What the failover endpoint (or its absence) lets the engine do. The
//! engine asks; it never knows about RFC 8156 states itself.

use crate::lease::{Binding, Lease, LeaseKey, Time};
use crate::wire::BindingStatus;

/// RFC 8156 §3 responsiveness of a server in its current failover state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Responsiveness {
    /// Answers every client message.
    Responsive,
    /// Answers only messages carrying its own Server Identifier (the
    /// secondary in NORMAL).
    RenewResponsive,
    /// Answers nothing (STARTUP, RECOVER, POTENTIAL-CONFLICT, …).
    Unresponsive,
}

pub trait Policy {
    fn responsiveness(&self) -> Responsiveness {
        Responsiveness::Responsive
    }

    /// May this server make new allocations at all in its current state?
    fn allocates(&self) -> bool {
        true
    }

    /// May never-used slots of this kind be allocated (or only slots handed
    /// back)? The failover secondary owns only the prefixes it was given
    /// (RFC 8156 §4.2.2), never a fresh one.
    fn fresh_slots(&self, _kind: crate::lease::IaType) -> bool {
        true
    }

    /// Does a lease's DNS removal wait for the failover partner's
    /// acknowledgement of its end (RFC 8156 §9.4)?
    fn defer_dns_removal(&self) -> bool {
        false
    }

    /// May this server newly grant `key` to `client` now? `existing` is the
    /// stored lease for it, if any (never an ACTIVE lease of another client:
    /// the engine filters those out first).
    fn may_allocate(&self, key: &LeaseKey, existing: Option<&Lease>, client: &Binding, now: Time) -> bool;

    /// May this server grant a key reserved for `client` now? Reserved
    /// keys are outside the failover split (README "Reservations"): any
    /// state that allocates may grant one, whoever's half it is in. The
    /// reserved client's own record may be revived unless it declined it; a
    /// record another client held goes by the rules for a free lease (the
    /// partner's acknowledgement of its end, the MCLT after PARTNER-DOWN),
    /// since that client may still hold it at the partner.
    fn may_grant_reserved(&self, key: &LeaseKey, existing: Option<&Lease>, client: &Binding, now: Time) -> bool {
        if !self.allocates() {
            return false;
        }
        match existing {
            None => true,
            Some(l) if l.binding.duid == client.duid => l.status != BindingStatus::Abandoned,
            Some(_) => self.may_reuse(key, existing, client, now),
        }
    }

    /// May a record another client held be given out again (its status,
    /// and any hold), whoever's half or pool share it is in?
    fn may_reuse(&self, key: &LeaseKey, existing: Option<&Lease>, client: &Binding, now: Time) -> bool {
        self.may_allocate(key, existing, client, now)
    }

    /// The longest valid lifetime this lease may be given now (the MCLT rule,
    /// RFC 8156 §4.4); None when there is no cap.
    fn lifetime_cap(&self, _lease: &Lease, _now: Time) -> Option<u32> {
        None
    }

    /// The partner lifetime to propose for a lease just granted with
    /// `valid` seconds when policy wanted `desired` (RFC 8156 §4.4.1); 0
    /// without a partner.
    fn partner_lifetime(&self, _lease: &Lease, _desired: u32, _now: Time) -> Time {
        0
    }

    /// May a renewal add DNS records that are missing for a lease (one that
    /// predates DNS updates, or whose add the partner did not finish)?
    /// RFC 8156 §9.3: renewals normally do not update; with a partner, only
    /// in PARTNER-DOWN.
    fn completes_dns(&self) -> bool {
        true
    }
}

/// The policies a server serves under, by failover relationship (README
/// "Several relationships"): `of(None)` for a subnet served standalone.
/// A single `Policy` serves every subnet.
pub trait Policies {
    fn of(&self, relationship: Option<usize>) -> &dyn Policy;
}

impl<P: Policy> Policies for P {
    fn of(&self, _relationship: Option<usize>) -> &dyn Policy {
        self
    }
}

/// A server without a failover partner: every free lease may be granted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Standalone;

impl Policy for Standalone {
    fn may_allocate(&self, _key: &LeaseKey, existing: Option<&Lease>, _client: &Binding, _now: Time) -> bool {
        match existing {
            None => true,
            Some(l) => matches!(
                l.status,
                BindingStatus::Expired
                    | BindingStatus::Released
                    | BindingStatus::Free
                    | BindingStatus::FreeBackup
                    | BindingStatus::PendingFree
                    | BindingStatus::Reset
            ),
        }
    }
}
