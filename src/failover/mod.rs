//! The RFC 8156 failover endpoint, sans-IO.
//!
//! Inputs: the time, messages from the partner, connection up/down, lease
//! changes from the engine, operator commands, timer ticks. Outputs:
//! messages to send, connections to open or close, state to persist. The
//! lease database is reached through the `Bindings` trait; the driver makes
//! every lease write of a step durable before it sends that step's messages
//! (so a BNDREPLY never precedes its commit, §7.5.2).

pub mod bndupd;
mod endpoint;
mod persist;
mod policy;

pub use endpoint::{Endpoint, Output};
pub use persist::Persistent;
pub use policy::EndpointPolicy;

use crate::config::Role;
use crate::lease::{Lease, LeaseKey};
use crate::pool::Prefix;

/// RFC 8156 §6.5 constants.
pub const FO_KEEPALIVE_TIME: u32 = 60;
pub const FO_CONTACT_PER_KEEPALIVE_TIME: u32 = 4;
/// Clocks within this many seconds count as the same time (§7.1).
pub const SKEW_TOLERANCE: u64 = 5;

#[derive(Debug, Clone)]
pub struct FailoverConfig {
    pub role: Role,
    pub relationship_name: String,
    pub mclt: u32,
    pub keepalive_time: u32,
    pub max_unacked_bndupd: u32,
    /// Seconds in COMMUNICATIONS-INTERRUPTED before PARTNER-DOWN; 0 = never.
    pub auto_partner_down: u32,
    /// How long STARTUP waits for the partner (§8.3.2 step 3).
    pub startup_time: u32,
    /// Share of the delegable prefixes the secondary should hold (§4.2.2).
    pub pd_secondary_share: f64,
    /// Seconds between connection attempts (primary), and after a rejection.
    pub connect_retry: u32,
    pub connect_retry_rejected: u32,
    /// Give up on an UPDREQ whose UPDDONE does not come (§8.5.2).
    pub updreq_timeout: u32,
}

impl FailoverConfig {
    pub fn from_config(f: &crate::config::Failover) -> FailoverConfig {
        FailoverConfig {
            role: f.role,
            relationship_name: f.name.clone(),
            mclt: f.mclt,
            keepalive_time: f.keepalive_time,
            max_unacked_bndupd: f.max_unacked_bndupd,
            auto_partner_down: f.auto_partner_down,
            startup_time: f.startup_time,
            pd_secondary_share: f.pd_secondary_share,
            connect_retry: 5,
            connect_retry_rejected: 30,
            updreq_timeout: 120,
        }
    }
}

/// The endpoint's window on the lease database. Writes must be durable
/// before the messages produced in the same step are sent.
pub trait Bindings {
    fn lease(&self, key: &LeaseKey) -> Option<Lease>;
    /// Record a lease (received from the partner, or a state change such as
    /// EXPIRED → FREE after the partner's ack).
    fn store(&mut self, lease: Lease);
    /// Every lease record (UPDREQALL, PARTNER-DOWN reclamation).
    fn all_keys(&self) -> Vec<LeaseKey>;
    /// Leases whose "update partner" flag is set.
    fn flagged(&self) -> Vec<LeaseKey>;
    /// Is this address or prefix in one of our configured pools (§7.5.4)?
    fn owns(&self, key: &LeaseKey) -> bool;
    /// Delegable prefixes available to the primary (FREE or never used), at most `limit`.
    fn free_prefixes(&self, limit: usize) -> Vec<Prefix>;
    /// (FREE or never used, FREE-BACKUP) delegable prefix counts.
    fn prefix_counts(&self) -> (u64, u64);
}

/// Delegable prefixes available to the primary (never recorded, or FREE),
/// at most `limit`, walking `all` (every delegable prefix) through `b`.
pub fn free_prefixes(b: &(impl Bindings + ?Sized), all: impl Iterator<Item = Prefix>, limit: usize) -> Vec<Prefix> {
    all.filter(|p| b.lease(&LeaseKey::Prefix(*p)).is_none_or(|l| l.status == crate::wire::BindingStatus::Free))
        .take(limit)
        .collect()
}

/// (FREE or never recorded, FREE-BACKUP) counts over `all` delegable prefixes.
pub fn prefix_counts(b: &(impl Bindings + ?Sized), all: impl Iterator<Item = Prefix>) -> (u64, u64) {
    use crate::wire::BindingStatus as S;
    let (mut free, mut backup) = (0, 0);
    for p in all {
        match b.lease(&LeaseKey::Prefix(p)).map(|l| l.status) {
            None | Some(S::Free) => free += 1,
            Some(S::FreeBackup) => backup += 1,
            _ => {}
        }
    }
    (free, backup)
}

/// Whether the address half or prefix belongs to this role when free
/// (§4.2.1.1: primary odd, secondary even addresses; §4.2.2 prefixes: FREE
/// is the primary's, FREE-BACKUP the secondary's).
pub fn address_owner(a: std::net::Ipv6Addr) -> Role {
    if u128::from(a) & 1 == 1 { Role::Primary } else { Role::Secondary }
}

#[cfg(test)]
mod tests;
