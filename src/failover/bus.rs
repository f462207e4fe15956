//! What the failover driver and the shards tell each other. Each shard owns
//! its lease table; the driver never reads one. It sends the shards what the
//! partner said (bindings to judge, acknowledgements, the failover state)
//! and they answer with durable facts (committed snapshots, verdicts given
//! after the verdict's write is on disk).

use crate::lease::{Lease, LeaseKey, Time};
use crate::wire::StatusCode;

use super::EndpointPolicy;
use super::bndupd::Received;

/// Delegable-prefix counts of one shard's slice (RFC 8156 §4.2.2), kept up
/// to date as records change: never counted by walking a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PdCounts {
    /// Delegable prefixes in the slice's pools.
    pub delegable: u64,
    /// Records that are neither FREE nor FREE-BACKUP (delegated, expired, …).
    pub used: u64,
    /// FREE-BACKUP records: the secondary's to delegate.
    pub free_backup: u64,
}

impl PdCounts {
    pub fn add(&mut self, o: &PdCounts) {
        self.delegable = self.delegable.saturating_add(o.delegable);
        self.used += o.used;
        self.free_backup += o.free_backup;
    }

    /// Available to the primary: FREE records and prefixes never used.
    pub fn primary_available(&self) -> u64 {
        self.delegable.saturating_sub(self.used).saturating_sub(self.free_backup)
    }
}

/// The partner acknowledged (or rejected) the BNDUPD built from `sent` (§7.7).
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    pub sent: Lease,
    pub accepted: bool,
    /// F_PARTNER_LIFETIME_SENT from the BNDREPLY.
    pub partner_lifetime_sent: Option<Time>,
    /// `sent` was a FREE-BACKUP prefix offered back as FREE (§4.2.2).
    pub take_back: bool,
}

/// The failover driver → one shard.
#[derive(Debug, Clone, PartialEq)]
pub enum ToShard {
    /// Judge received bindings against this shard's records (§7.5.4), store
    /// the accepted ones (§7.5.5) and answer `Judged` once they are durable.
    /// Items are (request, index in its BNDUPD, binding).
    Judge { items: Vec<(u64, usize, Received)> },
    /// BNDREPLY verdicts on updates this shard's records produced.
    Acks(Vec<Ack>),
    /// The state to serve under from now on; answer `StateApplied`.
    State { epoch: u64, policy: EndpointPolicy },
    /// Primary: hand up to `n` delegable prefixes to the secondary (§4.2.2).
    GiveBackup { n: u64 },
    /// Primary: offer up to `n` FREE-BACKUP prefixes to take back (§4.2.2).
    TakeBack { n: u64 },
    /// Read at most `max` durable records in key order from `from` (UPDREQALL).
    Scan { from: std::ops::Bound<LeaseKey>, max: usize },
    /// The record's home is this shard now (a move, see `router`).
    Adopt { lease: Lease },
    /// The record moved to another shard and is durable there: forget ours.
    Drop { key: LeaseKey },
}

/// One shard → the failover driver.
#[derive(Debug, Clone, PartialEq)]
pub enum ToFailover {
    /// Durable now: `leases`, snapshots the partner must hear of (lazy
    /// update, §7.4); `settled`, keys whose record needs nothing sent (acked,
    /// or the partner's own update): anything older queued about them is history.
    Committed { shard: usize, leases: Vec<Lease>, settled: Vec<LeaseKey>, counts: PdCounts },
    /// Start-up: every record flagged for the partner, in chunks; `done` on the last.
    Loaded { shard: usize, leases: Vec<Lease>, done: bool },
    /// Verdicts of a `Judge`, given after the accepted records are durable:
    /// (request, index, verdict).
    Judged { items: Vec<(u64, usize, Result<(), StatusCode>)> },
    StateApplied { shard: usize, epoch: u64, counts: PdCounts },
    /// A chunk of a `Scan`; `next` is None after the last record.
    ScanChunk { shard: usize, leases: Vec<Lease>, next: Option<LeaseKey> },
    /// This record belongs at another shard now (its client changed); it
    /// stays durable here until `Drop`.
    Handoff { shard: usize, lease: Lease },
    Adopted { shard: usize, key: LeaseKey },
    /// This shard handed these records on (they are on their way to shard
    /// `to`): pass the message there.
    Forward { to: usize, msg: ToShard },
    /// FREE-BACKUP prefixes offered for take-back (still the secondary's here).
    Offered { shard: usize, leases: Vec<Lease> },
}
