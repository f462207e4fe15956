//! RFC 8156 failover, sans-IO.
//!
//! - `Endpoint`: the protocol state machine (§6, §8) and the binding-update
//!   pipeline (§7), driven by explicit inputs (time, messages, connection
//!   events, durable lease snapshots) and returning outputs.
//! - `Driver`: what production and the simulator both run around it:
//!   framing, the STARTTLS preamble, routing to the shards that own the
//!   leases (`router`), and the barriers that keep the protocol honest (a
//!   BNDREPLY only after the shard's commit, messages after a state change
//!   only once every shard serves under it).
//! - `bndupd`: BNDUPD/BNDREPLY contents and the Figure 4 rules; `policy`:
//!   what each state lets the engine do; `bus`: the messages between the
//!   driver and the shards.

pub mod bndupd;
pub mod bus;
pub mod driver;
mod endpoint;
mod persist;
mod policy;
pub mod preamble;
pub mod router;
mod updates;

pub use driver::{Action, Driver};
pub use endpoint::{Endpoint, Output, STREAM_AHEAD};
pub use persist::{Persistent, meta_keys};
pub use policy::EndpointPolicy;

use crate::lease::LeaseKey;
use crate::wire::BindingStatus;

/// RFC 8156 §6.5 constants.
pub const FO_KEEPALIVE_TIME: u32 = 60;
pub const FO_CONTACT_PER_KEEPALIVE_TIME: u32 = 4;
/// Clocks within this many seconds count as the same time (§7.1).
pub const SKEW_TOLERANCE: u64 = 5;

/// Which end of the relationship this server is (RFC 8156 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Secondary,
}

/// The endpoint's settings (validated by `config` from `[failover]`).
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
    /// At most this many delegable prefixes are moved to the secondary (a
    /// /32 pool of /64s has 2^32: half of them would be 2^31 records).
    pub pd_secondary_max: u64,
    /// Seconds between connection attempts (primary), and after a rejection.
    pub connect_retry: u32,
    pub connect_retry_rejected: u32,
    /// Give up on an UPDREQ whose UPDDONE does not come while no BNDUPD
    /// arrives either (§8.5.2).
    pub updreq_timeout: u32,
    /// §8.3.2 step 1: go to PARTNER-DOWN when STARTUP ends without any
    /// contact with the partner (a newly commissioned pair; one server only).
    pub startup_partner_down: bool,
    /// Start as a server that lost its store (a restored backup): ask for
    /// everything and serve nothing until it has it (§8.5.2).
    pub resync_all: bool,
    /// The shortest MCLT accepted from the primary (RFC 8156 §1: failover
    /// is not for leases shorter than 30 s).
    pub min_mclt: u32,
}

/// The relationship name in the CONNECT that opens `buf` (the first frame a
/// primary sends, §6.1.1): None while the frame is incomplete; the name (or
/// None without one) once it is there. A listener shared by several
/// relationships with one partner picks the relationship by it.
pub fn connect_name(buf: &[u8]) -> Result<Option<Option<String>>, String> {
    use crate::wire::{DhcpOption, FailoverMessage, MessageType};
    let mut d = crate::wire::FrameDecoder::new(crate::wire::MAX_FRAME_LEN);
    d.push(buf).map_err(|e| e.to_string())?;
    let Some(frame) = d.next_frame().map_err(|e| e.to_string())? else { return Ok(None) };
    let m = FailoverMessage::decode(frame).map_err(|e| e.to_string())?;
    if m.msg_type != MessageType::Connect {
        return Err(format!("the first message is {:?}, not CONNECT", m.msg_type));
    }
    Ok(Some(m.options.iter().find_map(|o| match o {
        DhcpOption::RelationshipName(n) => Some(n.clone()),
        _ => None,
    })))
}

/// RFC 8156 §1: failover is not for leases shorter than this (seconds).
pub const MIN_LEASE_TIME: u32 = 30;

/// Whether the address half or prefix belongs to this role when free
/// (§4.2.1.1: primary odd, secondary even addresses; §4.2.2 prefixes: FREE
/// is the primary's, FREE-BACKUP the secondary's).
pub fn address_owner(a: std::net::Ipv6Addr) -> Role {
    if u128::from(a) & 1 == 1 { Role::Primary } else { Role::Secondary }
}

/// Figure 2 events (5)/(6), following the prose over Figure 3 (digest §18
/// item 1): a freed prefix returns to the primary; an address to its half's owner.
pub fn free_status(k: &LeaseKey) -> BindingStatus {
    match k {
        LeaseKey::Prefix(_) => BindingStatus::Free,
        LeaseKey::Addr(a) => match address_owner(*a) {
            Role::Primary => BindingStatus::Free,
            Role::Secondary => BindingStatus::FreeBackup,
        },
    }
}

#[cfg(test)]
mod tests;
