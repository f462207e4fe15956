//! One shard, sans-IO: it owns its engine (lease table and allocators), the
//! changes waiting for its next group commit, and its side of the failover
//! bus. Production (`runtime::shard`) and the simulator drive the same code:
//! they deliver packets, bus messages and ticks, commit the batches it hands
//! out, and carry out what each finished commit releases.
//!
//! Nothing that depends on a change leaves before the change is durable:
//! client replies, the verdicts on the partner's updates (so a BNDREPLY
//! follows its commit, RFC 8156 §7.5.2), the snapshots the partner must
//! hear of (lazy update, §7.4) and the DNS work a lease records.

use std::collections::HashMap;

use crate::failover::bus::{Ack, PdCounts, ToFailover, ToShard};
use crate::failover::router::home_of;
use crate::failover::{EndpointPolicy, Role, bndupd, free_status};
use crate::lease::{DnsInfo, Lease, LeaseChange, LeaseKey, Time};
use crate::pool::Slice;
use crate::server::{Arrival, DropReason, Engine, EngineConfig, Outcome, Policies, Policy, Reply, SliceMap, Standalone, release_dns};
use crate::wire::{BindingStatus, Message, ServerState};

/// Leases moved to EXPIRED (or reclaimed) per tick.
pub const EXPIRE_PER_TICK: usize = 4096;
/// Changes that only need to be durable eventually (acknowledgement
/// bookkeeping) wait at most this long for a commit to join.
pub const LAZY_FLUSH: Time = 1;
/// Flagged records reported per `Loaded` message at start-up.
pub const LOADED_CHUNK: usize = 4096;

/// What became of a client message.
#[derive(Debug)]
pub enum Handled<C> {
    /// Send this now (nothing changed).
    Reply(C, Reply),
    /// The reply waits for the next commit.
    Deferred,
    Dropped(DropReason),
}

/// What a finished commit releases.
#[derive(Debug)]
pub struct Done<C> {
    pub replies: Vec<(C, Reply)>,
    /// For the failover driver of each relationship: (relationship, message).
    pub to_failover: Vec<(usize, ToFailover)>,
    /// Committed leases with DNS work to do (PENDING_ADD / PENDING_REMOVE).
    pub dns: Vec<Lease>,
}

impl<C> Default for Done<C> {
    fn default() -> Self {
        Done { replies: Vec::new(), to_failover: Vec::new(), dns: Vec::new() }
    }
}

/// A refused `ctl lease add`: the reason, and the record its slice owner
/// lent (to be handed back).
pub type AddRefused = (String, Option<Box<Lease>>);

/// What a batch waits to release.
struct Waiting<C> {
    replies: Vec<(C, Reply)>,
    /// (relationship, request, index, verdict).
    judged: Vec<(usize, u64, usize, Result<(), crate::wire::StatusCode>)>,
    adopted: Vec<(usize, LeaseKey)>,
}

impl<C> Waiting<C> {
    fn new() -> Self {
        Waiting { replies: Vec::new(), judged: Vec::new(), adopted: Vec::new() }
    }

    fn is_empty(&self) -> bool {
        self.replies.is_empty() && self.judged.is_empty() && self.adopted.is_empty()
    }
}

/// A DNS update finished: the lease's new DNS state, if the lease is still
/// what the update was for.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsOutcome {
    pub key: LeaseKey,
    /// The lease as the DNS worker saw it.
    pub was: Lease,
    pub dns: DnsInfo,
}

/// How every shard of a server is built.
#[derive(Debug, Clone)]
pub struct ShardsConfig {
    pub engine: EngineConfig,
    pub shards: usize,
    /// Per failover relationship (none: standalone): our role and its MCLT.
    pub failover: Vec<(Role, u32)>,
}

/// The policy each subnet serves under: its relationship's state, or
/// standalone (also every subnet when `ignore`: simulator sabotage).
struct Serving<'a> {
    policies: &'a [EndpointPolicy],
    ignore: bool,
}

impl Policies for Serving<'_> {
    fn of(&self, relationship: Option<usize>) -> &dyn Policy {
        match relationship.and_then(|r| self.policies.get(r)) {
            Some(p) if !self.ignore => p,
            _ => &Standalone,
        }
    }
}

pub struct ShardCore<C> {
    id: usize,
    shards: usize,
    slices: SliceMap,
    engine: Engine,
    /// Per failover relationship: the state we serve under (STARTUP until
    /// told); empty when standalone.
    policies: Vec<EndpointPolicy>,
    /// Changes not yet handed out in a batch, in order.
    pending: Vec<LeaseChange>,
    waiting: Waiting<C>,
    /// Some pending change must be committed soon (not only lazy ones).
    urgent: bool,
    /// When the oldest lazy change was made.
    lazy_since: Option<Time>,
    /// The batch being committed and what it releases.
    in_flight: Option<Waiting<C>>,
    ignore_policy: bool,
    /// Records handed on to another shard and not yet dropped here: what
    /// arrives for them is forwarded to their new home.
    moved: HashMap<LeaseKey, usize>,
    /// FREE-BACKUP prefixes offered back to the secondary (§4.2.2): a
    /// FREE-BACKUP record changes to FREE on the secondary's acceptance only
    /// if it is still this offer (any write to it withdraws the offer).
    offered: std::collections::HashSet<LeaseKey>,
    /// Free records no other client may take yet (a partner that lost its
    /// store may have extended them, `EndpointPolicy::held_after_partner_loss`),
    /// by when the hold ends: an allocator that met one during the hold
    /// dropped it from its free list, so it is handed back then.
    held: std::collections::BTreeSet<(Time, LeaseKey)>,
    /// The DNS intent last handed to the DNS queue, per lease with work
    /// left: a later commit of the same intent (an ack, a second BNDUPD)
    /// is not sent again, so each update runs once.
    dns_sent: HashMap<LeaseKey, DnsIntent>,
}

/// What a DNS update depends on: whose lease, its state, its DNS record.
type DnsIntent = (crate::lease::Binding, BindingStatus, Option<crate::lease::DnsInfo>);

fn dns_intent(l: &Lease) -> DnsIntent {
    (l.binding.clone(), l.status, l.dns.clone())
}

/// The shards of one server, built from their stored records.
pub struct Built<C> {
    pub cores: Vec<ShardCore<C>>,
    /// Records held by a shard other than their key's slice owner.
    pub away: Vec<(LeaseKey, usize)>,
    /// Per shard, start-up reports for the failover drivers (flagged
    /// records), as (relationship, report).
    pub loaded: Vec<Vec<(usize, ToFailover)>>,
    /// Per shard, leases with DNS work left by a previous run.
    pub dns: Vec<Vec<Lease>>,
}

/// The more recent of two copies of one record (an interrupted move or
/// re-sharding left both).
fn newer(a: &Lease, b: &Lease) -> bool {
    (a.cltt, a.start_time_of_state) > (b.cltt, b.start_time_of_state)
}

/// Every record of several stores, one copy per key (the most recent).
pub fn merge_stores(stores: Vec<Vec<Lease>>) -> Vec<Lease> {
    let mut all: HashMap<LeaseKey, Lease> = HashMap::new();
    for l in stores.into_iter().flatten() {
        match all.get(&l.key) {
            Some(o) if !newer(&l, o) => {}
            _ => {
                all.insert(l.key, l);
            }
        }
    }
    let mut v: Vec<Lease> = all.into_values().collect();
    v.sort_by_key(|l| l.key);
    v
}

/// Where each stored record must live before the shards start, and the
/// store writes that put it there: one copy per key (an interrupted move can
/// leave two; the more recent wins), each at its home (`failover::router`:
/// an ACTIVE record with its client's shard, any other with its key's slice
/// owner). Apply every `upserts` before any `deletes`: a crash in between
/// leaves a second copy, never none.
pub struct Placed {
    pub lists: Vec<Vec<Lease>>,
    pub upserts: Vec<Vec<LeaseChange>>,
    pub deletes: Vec<Vec<LeaseChange>>,
}

impl Placed {
    /// Records that changed shard (or a copy removed).
    pub fn moved(&self) -> usize {
        self.deletes.iter().map(Vec::len).sum()
    }
}

pub fn place(stored: Vec<Vec<Lease>>, slices: &SliceMap, shards: usize) -> Placed {
    let n = shards.max(1);
    if stored.len() <= n && stored.iter().enumerate().all(|(s, records)| records.iter().all(|l| home_of(slices, n, l) == s)) {
        // Everything at home (the usual start): the lists as they are, no copy.
        let mut lists = stored;
        lists.resize_with(n, Vec::new);
        return Placed { lists, upserts: vec![Vec::new(); n], deletes: vec![Vec::new(); n] };
    }
    let mut lists: Vec<Vec<Lease>> = vec![Vec::new(); n];
    let mut upserts: Vec<Vec<LeaseChange>> = vec![Vec::new(); n];
    let mut deletes: Vec<Vec<LeaseChange>> = vec![Vec::new(); n];
    // Misplaced records (rare): held here, looked at once all are known.
    let mut misplaced: Vec<(usize, Lease)> = Vec::new();
    for (s, records) in stored.into_iter().enumerate() {
        for l in records {
            let home = home_of(slices, n, &l);
            if home == s && s < n {
                lists[s].push(l);
            } else {
                misplaced.push((s, l));
            }
        }
    }
    if misplaced.is_empty() {
        return Placed { lists, upserts, deletes };
    }
    // A misplaced record may have a copy at its home (a move that finished
    // its first half): keep the more recent one.
    let keys: std::collections::HashSet<LeaseKey> = misplaced.iter().map(|(_, l)| l.key).collect();
    let mut at_home: HashMap<LeaseKey, (usize, usize)> = HashMap::new();
    for (s, list) in lists.iter().enumerate() {
        for (i, l) in list.iter().enumerate() {
            if keys.contains(&l.key) {
                at_home.insert(l.key, (s, i));
            }
        }
    }
    let mut best: HashMap<LeaseKey, Lease> = HashMap::new();
    for (s, l) in misplaced {
        if s < n {
            deletes[s].push(LeaseChange::Delete(l.key));
        }
        match best.get(&l.key) {
            Some(o) if !newer(&l, o) => {}
            _ => {
                best.insert(l.key, l);
            }
        }
    }
    let mut drop_at_home: Vec<(usize, usize)> = Vec::new();
    let mut placed: Vec<Lease> = best.into_values().collect();
    placed.sort_by_key(|l| l.key);
    for l in placed {
        if let Some(&(s, i)) = at_home.get(&l.key) {
            if !newer(&l, &lists[s][i]) {
                continue; // the copy at home is the one
            }
            drop_at_home.push((s, i));
        }
        let home = home_of(slices, n, &l);
        upserts[home].push(LeaseChange::Upsert(l.clone()));
        lists[home].push(l);
    }
    drop_at_home.sort_by(|a, b| b.cmp(a));
    for (s, i) in drop_at_home {
        lists[s].remove(i);
    }
    Placed { lists, upserts, deletes }
}

/// Build every shard from the records each shard's store holds. A record
/// held away from its key's slice owner blocks the key there.
/// Expects the records where `place` puts them.
pub fn build<C>(cfg: &ShardsConfig, mut stored: Vec<Vec<Lease>>) -> Built<C> {
    let n = cfg.shards.max(1);
    let slices = SliceMap::new(&cfg.engine.subnets, n);
    stored.resize_with(n, Vec::new);
    let mut cores = Vec::with_capacity(n);
    let mut away = Vec::new();
    let mut loaded = Vec::with_capacity(n);
    let mut dns = Vec::with_capacity(n);
    for (id, records) in stored.into_iter().enumerate().take(n) {
        let mut e = Engine::new(EngineConfig { slice: Slice { shards: n as u32, shard: id as u32 }, ..cfg.engine.clone() });
        // The expiry slack: the longest MCLT (a lease is kept ACTIVE at
        // least that long past what we acked; longer only delays EXPIRED).
        if let Some(mclt) = cfg.failover.iter().map(|(_, m)| *m).max() {
            e.set_failover_mclt(mclt);
        }
        let mut flagged: Vec<Vec<Lease>> = vec![Vec::new(); cfg.failover.len()];
        let mut todo = Vec::new();
        for l in &records {
            if slices.owner(&l.key).is_some_and(|o| o != id) {
                away.push((l.key, id));
            }
            if l.update_partner
                && let Some(r) = e.relationship_of(&l.key).filter(|r| *r < flagged.len())
            {
                flagged[r].push(l.clone());
            }
            if has_dns_work(l) {
                todo.push(l.clone());
            }
        }
        e.load_all(records);
        let mut reports = Vec::new();
        for (r, flagged) in flagged.iter().enumerate() {
            let chunks: Vec<Vec<Lease>> = flagged.chunks(LOADED_CHUNK).map(<[Lease]>::to_vec).collect();
            let last = chunks.len().saturating_sub(1);
            let before = reports.len();
            for (i, c) in chunks.into_iter().enumerate() {
                reports.push((r, ToFailover::Loaded { shard: id, leases: c, done: i == last }));
            }
            if reports.len() == before {
                reports.push((r, ToFailover::Loaded { shard: id, leases: Vec::new(), done: true }));
            }
        }
        loaded.push(reports);
        let dns_sent = todo.iter().map(|l| (l.key, dns_intent(l))).collect();
        dns.push(todo);
        cores.push(ShardCore {
            id,
            shards: n,
            slices: slices.clone(),
            engine: e,
            policies: cfg
                .failover
                .iter()
                .map(|&(role, mclt)| EndpointPolicy { role, state: ServerState::Startup, mclt, partner_down_since: 0, partner_lost_store_at: 0 })
                .collect(),
            pending: Vec::new(),
            waiting: Waiting::new(),
            urgent: false,
            lazy_since: None,
            in_flight: None,
            ignore_policy: false,
            moved: HashMap::new(),
            offered: Default::default(),
            held: Default::default(),
            dns_sent,
        });
    }
    for (key, _) in &away {
        if let Some(o) = slices.owner(key) {
            cores[o].engine.block(*key);
        }
    }
    // A key reserved for a client of another shard whose record is here
    // (placed before the reservation): that shard must not grant it yet.
    let reserved = reserved_keys(&cfg.engine.subnets);
    if !reserved.is_empty() {
        let mut blocks = Vec::new();
        for (id, c) in cores.iter().enumerate() {
            for k in reserved.keys() {
                if let Some(l) = c.engine.leases().get(k) {
                    blocks.extend(blockers(l, id, n, &SliceMap::new(&[], n), &reserved));
                }
            }
        }
        for (key, at) in blocks {
            cores[at].engine.block(key);
        }
    }
    Built { cores, away, loaded, dns }
}

/// Keys with a shard: where a record is held, or which shard must block it.
pub type KeyShards = Vec<(LeaseKey, usize)>;

/// Reload step 1's answers, per holding shard, as (the router's records
/// held away: key → holder, the blocks: key → shard that must block it).
pub fn plan_blocks(answers: impl IntoIterator<Item = (usize, KeyShards)>) -> (KeyShards, KeyShards) {
    let (mut away, mut blocks): (KeyShards, KeyShards) = (Vec::new(), Vec::new());
    for (holder, pairs) in answers {
        for (k, at) in pairs {
            if !away.iter().any(|(x, _)| *x == k) {
                away.push((k, holder));
            }
            blocks.push((k, at));
        }
    }
    (away, blocks)
}

/// Every key reserved in these subnets, and for whom.
pub fn reserved_keys(subnets: &[crate::server::settings::Subnet]) -> HashMap<LeaseKey, crate::wire::Duid> {
    let mut m = HashMap::new();
    // By DUID only: hw-address reservations run on one shard (config).
    for r in subnets.iter().flat_map(|s| &s.reservations) {
        let crate::server::settings::ReservedFor::Duid(d) = &r.client else { continue };
        for k in r.addresses.iter().map(|a| LeaseKey::Addr(*a)).chain(r.prefixes.iter().map(|p| LeaseKey::Prefix(*p))) {
            m.insert(k, d.clone());
        }
    }
    m
}

/// The shards other than `holder` that could grant `l`'s key and must not:
/// its slice owner, and the shard of the client the key is reserved for
/// (which grants it, and must see every record of it: until this one moves
/// there, at its next write, that shard blocks the key).
fn blockers(l: &Lease, holder: usize, shards: usize, slices: &SliceMap, reserved: &HashMap<LeaseKey, crate::wire::Duid>) -> Vec<(LeaseKey, usize)> {
    let mut out = Vec::new();
    if let Some(o) = slices.owner(&l.key).filter(|o| *o != holder) {
        out.push((l.key, o));
    }
    if let Some(d) = reserved.get(&l.key) {
        let c = crate::pool::hash::shard_of(d.as_bytes(), shards.max(1) as u32) as usize;
        if c != holder && !out.contains(&(l.key, c)) {
            out.push((l.key, c));
        }
    }
    out
}

fn has_dns_work(l: &Lease) -> bool {
    use crate::lease::dns_flags as F;
    l.dns.as_ref().is_some_and(|d| d.dns_flags & (F::PENDING_ADD | F::PENDING_REMOVE) != 0)
}

/// The fields a BNDUPD carries: equal means the partner has seen this version.
fn same_for_partner(a: &Lease, b: &Lease) -> bool {
    use crate::lease::dns_flags as F;
    let dns = |l: &Lease| l.dns.as_ref().map(|d| (d.flags, d.name.clone(), d.dns_flags & F::SHARED));
    a.binding == b.binding
        && a.status == b.status
        && a.start_time_of_state == b.start_time_of_state
        && a.cltt == b.cltt
        && a.valid_end == b.valid_end
        && a.state_expiration_time == b.state_expiration_time
        && a.preferred_lifetime == b.preferred_lifetime
        && a.valid_lifetime == b.valid_lifetime
        && a.partner_lifetime == b.partner_lifetime
        && a.expiration_time == b.expiration_time
        && a.partner_raw_clt_time == b.partner_raw_clt_time
        && dns(a) == dns(b)
        && a.relay == b.relay
}

impl<C> ShardCore<C> {
    pub fn id(&self) -> usize {
        self.id
    }

    /// The failover relationship `key` belongs to (None: standalone).
    pub fn relationship_of(&self, key: &LeaseKey) -> Option<usize> {
        if self.policies.is_empty() {
            return None;
        }
        self.engine.relationship_of(key).filter(|r| *r < self.policies.len())
    }

    /// The state `key`'s relationship serves under, if it has one.
    fn policy_of(&self, key: &LeaseKey) -> Option<EndpointPolicy> {
        self.relationship_of(key).map(|r| self.policies[r])
    }

    /// Per-client limit hits to log (at most one a minute per client).
    pub fn take_limit_log(&mut self) -> Vec<(crate::wire::Duid, crate::server::limits::Limit)> {
        self.engine.limits.take_log()
    }

    /// Reload, step 1: for every record this shard holds, the other shards
    /// that could grant its key under the new configuration and so must
    /// block it: its slice owner (a pool added, or a record held away), and
    /// the shard of the client the key is now reserved for. Pairs (key,
    /// shard that must block it).
    pub fn covered_elsewhere(&self, new: &SliceMap, reserved: &HashMap<LeaseKey, crate::wire::Duid>) -> Vec<(LeaseKey, usize)> {
        self.engine.leases().iter().flat_map(|l| blockers(l, self.id, self.shards, new, reserved)).collect()
    }

    /// Reload, step 2: serve from the new configuration. `blocked`: keys
    /// this shard now owns whose records live at another shard.
    pub fn reconfigure(&mut self, engine: EngineConfig, slices: SliceMap, blocked: Vec<LeaseKey>) {
        let slice = Slice { shards: self.shards as u32, shard: self.id as u32 };
        self.engine.reconfigure(EngineConfig { slice, ..engine }, blocked);
        self.slices = slices;
    }

    /// The records this shard holds that `pred` picks (`ctl lease get`, `wipe`).
    pub fn records_where(&self, pred: impl Fn(&Lease) -> bool) -> Vec<Lease> {
        self.engine.leases().iter().filter(|l| !self.moved.contains_key(&l.key) && pred(l)).cloned().collect()
    }

    /// The record of `key`, if this shard holds it.
    pub fn record(&self, key: &LeaseKey) -> Option<&Lease> {
        self.engine.leases().get(key).filter(|_| !self.moved.contains_key(key))
    }

    /// `ctl lease add` for a key this shard's slice owns, for a client
    /// another shard (`to`) serves: hand the key over. Refused if its lease
    /// is ACTIVE or the policy would not let us allocate it. The record (if
    /// any) leaves the table now and the store on `ToShard::Drop`; what
    /// arrives for it meanwhile is forwarded; the key is blocked here.
    pub fn lend(&mut self, now: Time, key: &LeaseKey, binding: &crate::lease::Binding, to: usize) -> Result<Option<Lease>, String> {
        if self.moved.contains_key(key) || self.engine.is_blocked(key) {
            return Err(format!("{key} is held by another shard (a move in progress): try again"));
        }
        let existing = self.engine.leases().get(key);
        if let Some(l) = existing.filter(|l| l.is_active()) {
            return Err(format!("{key} is leased to client {} (IAID {}) until {}: delete it first", l.binding.duid, l.binding.iaid, l.valid_end));
        }
        let allowed = match self.policy_of(key) {
            Some(p) if !self.ignore_policy => Policy::may_allocate(&p, key, existing, binding, now),
            _ => Policy::may_allocate(&Standalone, key, existing, binding, now),
        };
        if !allowed {
            return Err(format!("{key} may not be allocated by this server now (RFC 8156: in NORMAL only the primary allocates, each server takes only its own free leases, and a released lease waits for the partner's acknowledgement)"));
        }
        let record = self.engine.evict(key);
        self.engine.block(*key);
        if record.is_some() {
            self.moved.insert(*key, to);
        }
        Ok(record)
    }

    /// The client's shard refused the lent key: take it back.
    pub fn unlend(&mut self, key: &LeaseKey, record: Option<Lease>) {
        self.moved.remove(key);
        match record {
            Some(l) => self.engine.adopt(l),
            None => self.engine.unblock(key),
        }
    }

    /// `ctl lease add` at the client's shard (`lent`: the key's record,
    /// handed over by its slice owner). On a refusal the lent record comes
    /// back with the reason.
    pub fn add_lease(
        &mut self,
        now: Time,
        key: LeaseKey,
        binding: &crate::lease::Binding,
        valid: Option<u32>,
        lent: Option<Lease>,
    ) -> Result<Lease, AddRefused> {
        let had = lent.is_some();
        if let Some(l) = lent {
            self.engine.adopt(l);
        }
        let serving = Serving { policies: &self.policies, ignore: self.ignore_policy };
        let r = self.engine.add_lease(now, key, binding, valid, &serving);
        match r {
            Ok(l) => {
                self.push(l.clone(), true, now);
                Ok(l)
            }
            Err(e) => Err((e, if had { self.engine.take_back(&key).map(Box::new) } else { None })),
        }
    }

    /// `ctl lease del`: reset the ACTIVE lease of `key` if this shard holds it.
    pub fn reset_lease(&mut self, now: Time, key: &LeaseKey) -> Option<Lease> {
        if self.moved.contains_key(key) {
            return None;
        }
        let serving = Serving { policies: &self.policies, ignore: self.ignore_policy };
        let l = self.engine.reset(now, key, &serving)?;
        self.push(l.clone(), true, now);
        Some(l)
    }

    /// The engine settings this shard serves from (its slice included).
    pub fn engine_config(&self) -> EngineConfig {
        self.engine.config()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The state of the first relationship (the only one, usually).
    pub fn policy(&self) -> Option<EndpointPolicy> {
        self.policies.first().copied()
    }

    /// Per relationship, the state this shard serves under.
    pub fn policies(&self) -> &[EndpointPolicy] {
        &self.policies
    }

    /// Changes not yet handed out in a batch.
    pub fn uncommitted(&self) -> usize {
        self.pending.len()
    }

    /// The leases written by changes made since `uncommitted()` was `from`
    /// (what the last message changed, for the simulator's checks).
    pub fn pending_since(&self, from: usize) -> Vec<&Lease> {
        self.pending.get(from..).unwrap_or(&[]).iter().filter_map(LeaseChange::upserted).collect()
    }

    /// Simulator sabotage: serve as if there were no failover partner.
    pub fn set_ignore_policy(&mut self, on: bool) {
        self.ignore_policy = on;
    }

    pub fn committing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Nothing waits for a commit.
    pub fn idle(&self) -> bool {
        self.pending.is_empty() && self.waiting.is_empty() && self.in_flight.is_none()
    }

    fn push(&mut self, l: Lease, urgent: bool, now: Time) {
        self.offered.remove(&l.key);
        self.pending.push(LeaseChange::Upsert(l));
        if urgent {
            self.urgent = true;
        } else if self.lazy_since.is_none() {
            self.lazy_since = Some(now);
        }
    }

    /// A client message for this shard.
    pub fn handle(&mut self, now: Time, msg: &Message, arrival: &Arrival<'_>, ctx: C) -> Handled<C> {
        let serving = Serving { policies: &self.policies, ignore: self.ignore_policy };
        let out = self.engine.handle(now, msg, arrival, &serving);
        match out {
            Outcome::Drop(d) => Handled::Dropped(d),
            Outcome::Reply(mut r) if !r.changes.is_empty() => {
                for l in std::mem::take(&mut r.changes) {
                    if !self.offered.is_empty() {
                        self.offered.remove(&l.key);
                    }
                    self.pending.push(LeaseChange::Upsert(l));
                }
                self.urgent = true;
                self.waiting.replies.push((ctx, r));
                Handled::Deferred
            }
            Outcome::Reply(r) => Handled::Reply(ctx, r),
        }
    }

    /// Timers: expiry, PARTNER-DOWN reclamation, the lazy flush.
    pub fn tick(&mut self, now: Time) {
        let serving = Serving { policies: &self.policies, ignore: false };
        let expired = self.engine.expire(now, EXPIRE_PER_TICK, &serving);
        for l in expired {
            self.push(l, true, now);
        }
        for r in 0..self.policies.len() {
            let p = self.policies[r];
            if p.state == ServerState::PartnerDown {
                for l in self.engine.reclaim(now, p.mclt, p.partner_down_since, EXPIRE_PER_TICK, r) {
                    self.push(l, true, now);
                }
            }
        }
        if self.lazy_since.is_some_and(|t| now >= t + LAZY_FLUSH) {
            self.urgent = true;
        }
        while let Some(&(end, key)) = self.held.first()
            && end <= now
        {
            self.held.pop_first();
            self.engine.free_again(&key);
        }
    }

    /// A message from the failover driver of relationship `rel`; answers
    /// that need nothing durable come back at once, the rest after the next
    /// commit, each for that driver.
    pub fn bus(&mut self, now: Time, rel: usize, m: ToShard) -> Vec<(usize, ToFailover)> {
        self.bus_inner(now, rel, m).into_iter().map(|m| (rel, m)).collect()
    }

    fn bus_inner(&mut self, now: Time, rel: usize, m: ToShard) -> Vec<ToFailover> {
        match m {
            ToShard::Judge { items } => {
                let mut forward: HashMap<usize, Vec<(u64, usize, bndupd::Received)>> = HashMap::new();
                for (req, idx, r) in items {
                    if let Some(to) = self.moved.get(&r.key) {
                        forward.entry(*to).or_default().push((req, idx, r));
                        continue;
                    }
                    let v = self.judge(now, rel, &r);
                    self.waiting.judged.push((rel, req, idx, v));
                }
                self.urgent = true;
                let mut out: Vec<ToFailover> =
                    forward.into_iter().map(|(to, items)| ToFailover::Forward { to, msg: ToShard::Judge { items } }).collect();
                out.sort_by_key(|m| if let ToFailover::Forward { to, .. } = m { *to } else { 0 });
                out
            }
            ToShard::Acks(acks) => {
                let mut forward: HashMap<usize, Vec<Ack>> = HashMap::new();
                for a in acks {
                    if let Some(to) = self.moved.get(&a.sent.key) {
                        forward.entry(*to).or_default().push(a);
                        continue;
                    }
                    self.ack(now, a);
                }
                let mut out: Vec<ToFailover> = forward.into_iter().map(|(to, acks)| ToFailover::Forward { to, msg: ToShard::Acks(acks) }).collect();
                out.sort_by_key(|m| if let ToFailover::Forward { to, .. } = m { *to } else { 0 });
                out
            }
            ToShard::State { epoch, policy } => {
                let Some(cur) = self.policies.get_mut(rel) else { return Vec::new() };
                if cur.state != policy.state {
                    // Offers made in another state (over another connection)
                    // are over; the secondary's echo settles those it took.
                    let e = &self.engine;
                    self.offered.retain(|k| e.relationship_of(k) != Some(rel));
                }
                *cur = policy;
                vec![ToFailover::StateApplied { shard: self.id, epoch, counts: self.engine.pd_counts(rel) }]
            }
            ToShard::GiveBackup { n } => {
                for l in self.engine.give_backup(now, n, rel) {
                    self.push(l, true, now);
                }
                Vec::new()
            }
            ToShard::TakeBack { n } => {
                let mut leases = Vec::new();
                for l in self.engine.free_backup_prefixes() {
                    if leases.len() as u64 >= n {
                        break;
                    }
                    // Only prefixes the secondary has acknowledged as its own:
                    // an offer must not overtake the update that gave it. And
                    // only from pools we still serve (a reload may have retired one).
                    if !l.update_partner
                        && !self.offered.contains(&l.key)
                        && self.engine.in_pools(&l.key)
                        && self.engine.relationship_of(&l.key) == Some(rel)
                    {
                        leases.push(l.clone());
                    }
                }
                self.offered.extend(leases.iter().map(|l| l.key));
                vec![ToFailover::Offered { shard: self.id, leases }]
            }
            // Served by whoever drives the store (it reads durable records).
            ToShard::Scan { .. } => Vec::new(),
            ToShard::Adopt { lease } => {
                let key = lease.key;
                self.moved.remove(&key);
                let newer = self.engine.leases().get(&key).is_some_and(|l| l.start_time_of_state > lease.start_time_of_state);
                if !newer {
                    self.engine.adopt(lease.clone());
                    self.push(lease, true, now);
                }
                self.waiting.adopted.push((rel, key));
                self.urgent = true;
                Vec::new()
            }
            ToShard::Drop { key } => {
                self.moved.remove(&key);
                if self.engine.leases().get(&key).is_none() {
                    self.pending.push(LeaseChange::Delete(key));
                    if self.lazy_since.is_none() {
                        self.lazy_since = Some(now);
                    }
                }
                Vec::new()
            }
        }
    }

    /// §7.5.4–§7.5.5 for one received binding.
    fn judge(&mut self, now: Time, rel: usize, r: &bndupd::Received) -> Result<(), crate::wire::StatusCode> {
        let Some(p) = self.policies.get(rel).copied() else { return Err(crate::wire::StatusCode::CONFIGURATION_CONFLICT) };
        let local = self.engine.leases().get(&r.key).cloned();
        let ctx = bndupd::Judge { role: p.role, now, mclt: p.mclt, partner_lost_store_at: p.partner_lost_store_at };
        let v = bndupd::judge(local.as_ref(), r, ctx);
        match v {
            Ok(()) => {
                // A take-back offer; also one repeated (its BNDREPLY was lost)
                // while our own word that we gave the prefix back is still
                // waiting to go out: merging must not cancel that word, or
                // the primary keeps FREE-BACKUP while we hold FREE and
                // nobody uses the prefix (seed 60105333).
                let take_back = p.role == Role::Secondary
                    && r.binding.is_none()
                    && r.status == BindingStatus::Free
                    && local.as_ref().is_some_and(|l| {
                        l.status == BindingStatus::FreeBackup || (l.status == BindingStatus::Free && l.update_partner)
                    });
                let mut l = bndupd::merge(local, r, now);
                if take_back {
                    // §4.2.2: the primary took a prefix back. Say so in a
                    // BNDUPD of our own as well: if the BNDREPLY is lost, the
                    // primary would otherwise keep it as ours, and nobody
                    // would ever use it again.
                    l.start_time_of_state = now;
                    l.update_partner = true;
                }
                self.apply(l.clone(), now);
                self.push(l, true, now);
            }
            Err(code) if code == crate::wire::StatusCode::OUTDATED_BINDING_INFORMATION => {
                // §7.5.4: our record is newer; the partner gets it (after the
                // BNDREPLY). Sent at once only if it was not flagged already.
                if let Some(mut l) = local
                    && !l.update_partner
                {
                    l.update_partner = true;
                    self.apply(l.clone(), now);
                    self.push(l, true, now);
                }
            }
            Err(_) => {}
        }
        v
    }

    /// §7.7: the partner's verdict on an update built from `a.sent`.
    fn ack(&mut self, now: Time, a: Ack) {
        let Some(cur) = self.engine.leases().get(&a.sent.key) else { return };
        if !a.accepted {
            // Remembered only: the record stays flagged and is sent again.
            return;
        }
        let mut l = cur.clone();
        let same_binding = cur.binding == a.sent.binding;
        if a.take_back {
            // §4.2.2: the secondary gave the prefix back (our record stays
            // FREE-BACKUP until it accepts, and only this offer counts).
            if self.offered.remove(&a.sent.key) && cur.status == BindingStatus::FreeBackup {
                l.set_status(BindingStatus::Free, now);
                l.update_partner = false;
            }
        } else if same_for_partner(cur, &a.sent) {
            // §7.7: acked-partner-lifetime ← F_PARTNER_LIFETIME_SENT.
            if let Some(pls) = a.partner_lifetime_sent {
                l.acked_partner_lifetime = l.acked_partner_lifetime.max(pls);
            }
            l.update_partner = false;
            match a.sent.status {
                // Figure 2 event (4): EXPIRED/RELEASED/RESET → PENDING-FREE
                // once the partner acks, then at once FREE or FREE-BACKUP (5)/(6).
                BindingStatus::Expired | BindingStatus::Released | BindingStatus::Reset => {
                    l.set_status(free_status(&l.key), now);
                    // Both sides must agree: the partner hears of the FREE too.
                    l.update_partner = true;
                    // §9.4: the partner knows the lease ended: remove its records.
                    release_dns(&mut l);
                }
                BindingStatus::Abandoned => release_dns(&mut l),
                _ => {}
            }
        } else if same_binding
            && let Some(pls) = a.partner_lifetime_sent
        {
            // Changed since it was sent (the newer version is on its way),
            // but the partner did accept this lifetime for this client.
            l.acked_partner_lifetime = l.acked_partner_lifetime.max(pls);
        }
        if l != *cur {
            let urgent = l.status != cur.status || has_dns_work(&l);
            self.apply(l.clone(), now);
            self.push(l, urgent, now);
        }
    }

    /// The DNS worker finished a lease's update.
    pub fn dns_outcome(&mut self, now: Time, o: DnsOutcome) {
        if self.dns_sent.get(&o.key) == Some(&dns_intent(&o.was)) {
            self.dns_sent.remove(&o.key);
        }
        let Some(cur) = self.engine.leases().get(&o.key) else { return };
        let flags = |l: &Lease| l.dns.as_ref().map(|d| d.dns_flags);
        if cur.binding != o.was.binding || cur.status != o.was.status || flags(cur) != flags(&o.was) {
            // The lease changed meanwhile; its new intent comes with its commit.
            return;
        }
        let mut l = cur.clone();
        l.dns = Some(o.dns);
        // §9.2: the partner hears of the DNS state (a second BNDUPD).
        l.update_partner |= self.relationship_of(&o.key).is_some();
        self.apply(l.clone(), now);
        self.push(l, true, now);
    }

    /// A record from outside the engine (the partner, an ack, DNS) into the
    /// table; a free one on hold is noted for `tick`.
    fn apply(&mut self, l: Lease, now: Time) {
        if let Some(p) = self.policy_of(&l.key)
            && let Some(end) = p.hold_end(&l, now)
        {
            self.held.insert((end, l.key));
        }
        self.engine.apply_external(l);
    }

    /// The next batch to commit, if one is due and none is in flight.
    pub fn take_batch(&mut self, now: Time) -> Option<Vec<LeaseChange>> {
        if self.in_flight.is_some() {
            return None;
        }
        if self.lazy_since.is_some_and(|t| now >= t + LAZY_FLUSH) {
            self.urgent = true;
        }
        if !self.urgent || (self.pending.is_empty() && self.waiting.is_empty()) {
            return None;
        }
        self.urgent = false;
        self.lazy_since = None;
        self.in_flight = Some(std::mem::replace(&mut self.waiting, Waiting::new()));
        Some(std::mem::take(&mut self.pending))
    }

    /// The batch from `take_batch` is durable (Ok) or was not written (Err:
    /// its changes go back in front of what came since; its client replies
    /// are withheld — the clients retransmit — and returned for counting).
    pub fn batch_done(&mut self, ok: bool, changes: Vec<LeaseChange>) -> Done<C> {
        let mut done = Done::default();
        let Some(w) = self.in_flight.take() else { return done };
        if !ok {
            let newer = std::mem::replace(&mut self.pending, changes);
            self.pending.extend(newer);
            self.waiting.judged.splice(0..0, w.judged);
            self.waiting.adopted.splice(0..0, w.adopted);
            self.urgent = true;
            done.replies = w.replies;
            return done;
        }
        done.replies = w.replies;
        // The BNDREPLYs first: a newer record of ours follows its BNDREPLY (§7.5.4).
        let rels = self.policies.len();
        for r in 0..rels {
            let items: Vec<_> = w.judged.iter().filter(|j| j.0 == r).map(|&(_, req, i, v)| (req, i, v)).collect();
            if !items.is_empty() {
                done.to_failover.push((r, ToFailover::Judged { items }));
            }
        }
        // The latest version of each changed lease, in order.
        let mut last: HashMap<LeaseKey, usize> = HashMap::new();
        for (i, c) in changes.iter().enumerate() {
            last.insert(c.key(), i);
        }
        let mut report: Vec<Vec<Lease>> = vec![Vec::new(); rels];
        let mut settled: Vec<Vec<LeaseKey>> = vec![Vec::new(); rels];
        let mut handoffs = Vec::new();
        for (i, c) in changes.into_iter().enumerate() {
            let LeaseChange::Upsert(l) = c else { continue };
            if last.get(&l.key) != Some(&i) {
                continue;
            }
            if self.moved.contains_key(&l.key) && self.engine.leases().get(&l.key).is_none() {
                // Handed to another shard while this batch was being written
                // (`lend`): its new holder reports it; this version is history.
                continue;
            }
            if !has_dns_work(&l) {
                self.dns_sent.remove(&l.key);
            } else if self.dns_sent.get(&l.key) != Some(&dns_intent(&l)) {
                self.dns_sent.insert(l.key, dns_intent(&l));
                done.dns.push(l.clone());
            }
            let Some(rel) = self.relationship_of(&l.key) else { continue };
            let current = self.engine.leases().get(&l.key) == Some(&l);
            let home = home_of(&self.slices, self.shards, &l);
            if l.update_partner {
                report[rel].push(l.clone());
            } else if current {
                settled[rel].push(l.key);
            }
            if current && home != self.id {
                // Its client changed: the record belongs with another shard
                // now (see `failover::router`). Out of our table at once;
                // durable here until the new home has it.
                self.engine.evict(&l.key);
                self.moved.insert(l.key, home);
                handoffs.push((rel, ToFailover::Handoff { shard: self.id, lease: l }));
            }
        }
        for (r, (leases, settled)) in report.into_iter().zip(settled).enumerate() {
            done.to_failover.push((r, ToFailover::Committed { shard: self.id, leases, settled, counts: self.engine.pd_counts(r) }));
        }
        for (r, key) in w.adopted {
            done.to_failover.push((r, ToFailover::Adopted { shard: self.id, key }));
        }
        done.to_failover.extend(handoffs);
        done
    }

    /// Delegable-prefix counts of this shard's slice of `rel`'s pools.
    pub fn pd_counts(&self, rel: usize) -> PdCounts {
        self.engine.pd_counts(rel)
    }
}

#[cfg(test)]
mod tests;
