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
//!   shard ─(LEASEQUERY datagram)─▶ leasequery service ─(LqAsk)─▶ shards

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
    /// `ctl partner-down [--relationship NAME]`.
    PartnerDown { relationship: Option<String>, reply: crossbeam_channel::Sender<String> },
    /// `ctl lease add` placed the record of `key` at `shard`, away from its
    /// slice owner: route the partner's updates there.
    HeldAt { key: crate::lease::LeaseKey, shard: usize },
    /// A reload: the new pools, records new pools cover away from their
    /// owner, and per relationship (auto-partner-down, pd-secondary-share,
    /// pd-secondary-max) and the TLS material re-read for the next connection.
    Reconfigure {
        /// Per relationship (`SliceMap::for_relationship`).
        slices: Vec<crate::server::SliceMap>,
        away: Vec<(crate::lease::LeaseKey, usize)>,
        tunables: Vec<(u32, f64, u64)>,
        tls: Vec<Option<super::tls::TlsSetup>>,
        reply: crossbeam_channel::Sender<()>,
    },
}

/// Operator requests for one shard (a reload from the main thread, the
/// lease commands from the control socket), polled by the shard's ticker.
pub enum ShardOp {
    /// Reload step 1: the keys of records this shard holds that another
    /// shard could grant under the new configuration, and that shard
    /// (`ShardCore::covered_elsewhere`).
    Covered {
        slices: crate::server::SliceMap,
        reserved: std::collections::HashMap<crate::lease::LeaseKey, crate::wire::Duid>,
        reply: crossbeam_channel::Sender<Vec<(crate::lease::LeaseKey, usize)>>,
    },
    /// Reload step 2: serve from the new configuration.
    Reconfigure {
        engine: Box<crate::server::EngineConfig>,
        slices: crate::server::SliceMap,
        blocked: Vec<crate::lease::LeaseKey>,
        ifnames: Vec<(u32, String)>,
        reply: crossbeam_channel::Sender<()>,
    },
    /// A leasequery's lookup in this shard's table.
    Leasequery { ask: LqAsk, reply: crossbeam_channel::Sender<LqFound> },
    /// `ctl lease get`: the records matching, any state.
    Find { query: LeaseQuery, reply: crossbeam_channel::Sender<Vec<Lease>> },
    /// `ctl lease del` / `wipe`: reset the ACTIVE leases matching, a chunk
    /// per tick; the reply is how many.
    Reset { query: LeaseQuery, reply: crossbeam_channel::Sender<usize> },
    /// `ctl lease add`, at the key's slice owner when another shard serves
    /// the client: hand the key to shard `to` (`ShardCore::lend`).
    Lend {
        key: crate::lease::LeaseKey,
        binding: crate::lease::Binding,
        to: usize,
        reply: crossbeam_channel::Sender<Result<Option<Lease>, String>>,
    },
    /// The client's shard refused: take the key back.
    Unlend { key: crate::lease::LeaseKey, record: Option<Lease> },
    /// The client's shard holds the key's record now: forget ours.
    Handed { key: crate::lease::LeaseKey },
    /// `ctl lease add` at the client's shard.
    Add {
        key: crate::lease::LeaseKey,
        binding: crate::lease::Binding,
        valid: Option<u32>,
        lent: Option<Lease>,
        reply: crossbeam_channel::Sender<Result<Lease, crate::shard::AddRefused>>,
    },
}

/// A leasequery's question to one shard (`runtime::leasequery`).
pub enum LqAsk {
    /// The record of an address and of the prefixes containing it.
    Covering(Ipv6Addr),
    /// Every record of a client.
    Client(crate::wire::Duid),
    /// A bulk query: one chunk of a walk over the table.
    Walk { filter: std::sync::Arc<crate::leasequery::Filter>, from: usize, max: usize, max_clients: usize, now: u64 },
}

/// A shard's answer: records by client, and where a walk goes on.
#[derive(Debug, Default)]
pub struct LqFound {
    pub groups: Vec<Vec<Lease>>,
    pub next: Option<usize>,
}

/// Which leases an operator command means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseQuery {
    Key(crate::lease::LeaseKey),
    Client { duid: crate::wire::Duid, iaid: Option<u32> },
    /// Every lease inside this prefix (`wipe --subnet`).
    Within(crate::pool::Prefix),
}

impl LeaseQuery {
    pub fn matches(&self, l: &Lease) -> bool {
        match self {
            LeaseQuery::Key(k) => l.key == *k,
            LeaseQuery::Client { duid, iaid } => l.binding.duid == *duid && iaid.is_none_or(|i| l.binding.iaid == i),
            LeaseQuery::Within(p) => match &l.key {
                crate::lease::LeaseKey::Addr(a) => p.contains(*a),
                crate::lease::LeaseKey::Prefix(q) => p.contains_prefix(q),
            },
        }
    }
}
