//! Everything that crosses a thread boundary in a running server, in one
//! place. Each shard owns its table; nobody else reads or writes it. The
//! executors (shards, the failover core) talk over glommio shared channels
//! (awaitable on both ends); the plain threads (the DNS queue, the control
//! socket) over crossbeam channels, which the executors poll without
//! blocking.
//!
//!   socket ─▶ shard ─(owner by DUID)─▶ shard ─▶ commit ─▶ reply
//!   shard ─(Committed, verdicts, chunks)─▶ failover core ─▶ partner
//!   partner ─▶ failover core ─(Judge, Acks, State, Scan)─▶ shard
//!   shard ─(DNS work)─▶ DNS queue ─(outcome)─▶ shard
//!   control socket ─(Command)─▶ failover core

use std::net::{Ipv6Addr, SocketAddrV6};

use crate::failover::bus;
use crate::lease::Lease;
use crate::shard::DnsOutcome;

/// A datagram handed from the shard that received it to the shard that
/// owns its client (a hash of the DUID).
pub struct Forwarded {
    /// The datagram as received (the owner decodes it).
    pub data: Vec<u8>,
    pub rcv: super::udp::Received,
}

/// Where a reply goes, kept with it while its commit is in flight.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTo {
    pub to: SocketAddrV6,
    /// The address the request came to (the reply's source), or unspecified for multicast.
    pub source: Ipv6Addr,
    pub ifindex: u32,
    /// Kernel receive time of the request (CLOCK_REALTIME ns; 0 unknown).
    pub received_ns: u64,
    /// The client message's type code (the latency histogram's label).
    pub request_type: u8,
}

/// The failover core → a shard.
pub type ToShard = bus::ToShard;
/// A shard → the failover core.
pub type ToFailover = bus::ToFailover;

/// A shard → the DNS queue: a committed lease with DNS work (its shard).
pub struct DnsWork {
    pub shard: usize,
    pub lease: Lease,
}

/// The DNS queue → a shard.
pub type DnsDone = DnsOutcome;

/// Operator commands for the failover core (from the control socket).
pub enum Command {
    PartnerDown(crossbeam_channel::Sender<String>),
}
