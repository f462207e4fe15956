//! The in-memory lease table a shard's engine works on: leases by key, by
//! client binding, and active leases by the end of their valid lifetime.

use std::collections::{BTreeSet, HashMap};

use hashbrown::HashTable;

use super::slab::Slab;

use crate::lease::{Binding, IaType, Lease, LeaseKey, Time};
use crate::wire::Duid;

/// When an active lease may be moved to EXPIRED: at the end of its valid
/// lifetime, but never before the lifetime this server acknowledged to its
/// failover partner (expiration-time, RFC 8156 §7.3) plus the MCLT: the
/// partner may have extended the client that far (§4.4) without our
/// knowing yet. `slack` is the MCLT (0 without failover).
fn expires(l: &Lease, slack: Time) -> Time {
    if l.expiration_time == 0 { l.valid_end } else { l.valid_end.max(l.expiration_time + slack) }
}

/// From when an ended lease (EXPIRED, RELEASED, RESET) may be reused in
/// PARTNER-DOWN, less the MCLT (RFC 8156 §4.2.2.1, §8.4.1): the latest of
/// every time the partner could rely on.
fn ended_base(l: &Lease) -> Option<Time> {
    use crate::wire::BindingStatus as S;
    matches!(l.status, S::Expired | S::Released | S::Reset).then(|| {
        [l.valid_end, l.partner_lifetime, l.acked_partner_lifetime, l.expiration_time, l.start_time_of_state]
            .into_iter()
            .max()
            .unwrap_or(0)
    })
}

/// A lease's place in the table: an index into `LeaseTable::slots`, stable
/// while the record is there.
type Slot = u32;

/// The lease table. Records live once, in `slots`; the indexes hold slot
/// numbers, not copies of keys or client DUIDs (a million leases cost the
/// records plus ~40 bytes each of index).
pub struct LeaseTable {
    slots: Slab,
    /// Slots emptied by `remove`, reused first.
    vacant: Vec<Slot>,
    /// Slot of each key, under a fast hash seeded per process (keys are
    /// addresses and prefixes from our own pools), with 32 bits of that
    /// hash: growing the index rehashes from those (`spread`), not from the
    /// records (a random read and a hash each: an 87 ms pause at 115 k).
    by_key: HashTable<(Slot, u32)>,
    /// Slots of each client's leases with the order they were listed in,
    /// under a keyed hash of (DUID, IA type) (clients choose their DUIDs;
    /// no one can aim a DUID at another's entries): `keys_of` picks one IA
    /// from them, `active_of_client` counts them. Pool bookkeeping records
    /// (no client) are not listed. The third field is 32 bits of the hash,
    /// as in `by_key`.
    by_binding: HashTable<(Slot, u32, u32)>,
    listed: u32,
    /// Active leases ordered by when they may expire (16 bytes each).
    expiry: BTreeSet<(Time, Slot)>,
    /// Ended leases ordered by `ended_base` (PARTNER-DOWN reclamation).
    ended: BTreeSet<(Time, LeaseKey)>,
    /// FREE-BACKUP prefixes (the secondary's, §4.2.2).
    free_backup: BTreeSet<LeaseKey>,
    slack: Time,
    /// Leases by (IA type, binding status), kept as leases change so that
    /// metrics never walk the table.
    counts: HashMap<(crate::lease::IaType, crate::wire::BindingStatus), u64>,
    /// With several failover relationships: the delegable pools of each
    /// (pool, relationship), and the prefix records by (relationship,
    /// status), for each relationship's proportional allocation (§4.2.2).
    pd_groups: Vec<(crate::pool::Prefix, u8)>,
    group_counts: HashMap<(u8, crate::wire::BindingStatus), u64>,
    client_hasher: std::hash::RandomState,
    key_seed: u64,
    /// Prefix records per prefix length: which lengths a leasequery for an
    /// address inside a delegated prefix must try.
    prefix_lengths: [u32; 129],
}

impl std::fmt::Debug for LeaseTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseTable").field("leases", &self.len()).finish_non_exhaustive()
    }
}

impl Default for LeaseTable {
    fn default() -> Self {
        use std::hash::BuildHasher;
        let client_hasher = std::hash::RandomState::new();
        LeaseTable {
            slots: Slab::default(),
            vacant: Vec::new(),
            by_key: HashTable::new(),
            by_binding: HashTable::new(),
            listed: 0,
            expiry: BTreeSet::new(),
            ended: BTreeSet::new(),
            free_backup: BTreeSet::new(),
            slack: 0,
            counts: HashMap::new(),
            pd_groups: Vec::new(),
            group_counts: HashMap::new(),
            key_seed: client_hasher.hash_one(0x6b65_7973u32) | 1,
            client_hasher,
            prefix_lengths: [0; 129],
        }
    }
}

/// A fast hash of a lease key (multiply-rotate over its 17 octets).
fn key_hash(seed: u64, k: &LeaseKey) -> u64 {
    let (a, len) = match k {
        LeaseKey::Addr(a) => (a.octets(), 128u8),
        LeaseKey::Prefix(p) => (p.addr.octets(), p.len),
    };
    const M: u64 = 0x9e37_79b9_7f4a_7c15;
    let hi = u64::from_le_bytes(a[..8].try_into().unwrap());
    let lo = u64::from_le_bytes(a[8..].try_into().unwrap());
    let mut h = (seed ^ hi).wrapping_mul(M);
    h = (h.rotate_left(29) ^ lo).wrapping_mul(M);
    h = (h.rotate_left(29) ^ len as u64).wrapping_mul(M);
    h
}

fn client_hash(h: &std::hash::RandomState, duid: &Duid, t: IaType) -> u32 {
    use std::hash::BuildHasher;
    fold(h.hash_one((duid.as_bytes(), t == IaType::Pd)))
}

/// 32 bits of a 64-bit hash, kept in the index entries.
fn fold(h: u64) -> u32 {
    (h ^ (h >> 32)) as u32
}

/// The 64-bit hash the indexes use, from the 32 bits an entry keeps (an
/// odd multiplier: distinct inputs stay distinct, and the top bits, which
/// hashbrown compares first, depend on every input bit).
fn spread(h: u32) -> u64 {
    (h as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ h as u64
}

/// A record that belongs to no client (see `Lease::pool_record`).
fn is_placeholder(b: &Binding) -> bool {
    b.iaid == 0 && b.duid.as_bytes() == [0, 3, 0, 0, 0]
}

impl LeaseTable {
    pub fn new() -> LeaseTable {
        LeaseTable::default()
    }

    /// Set the failover MCLT used in `expires` (before loading leases).
    pub fn set_slack(&mut self, slack: Time) {
        debug_assert!(self.is_empty());
        self.slack = slack;
    }

    /// Count prefix records per relationship from now on: `groups` maps
    /// each pd-pool to its relationship (a prefix in none counts as 255).
    /// Recounts what the table holds (a reload: records, never pools).
    pub fn set_pd_groups(&mut self, groups: Vec<(crate::pool::Prefix, u8)>) {
        if groups == self.pd_groups {
            return;
        }
        self.pd_groups = groups;
        self.group_counts.clear();
        if self.pd_groups.is_empty() {
            return;
        }
        let mut counts: HashMap<(u8, crate::wire::BindingStatus), u64> = HashMap::new();
        for l in self.iter().filter(|l| matches!(l.key, LeaseKey::Prefix(_))) {
            *counts.entry((self.group_of(&l.key), l.status)).or_default() += 1;
        }
        self.group_counts = counts;
    }

    fn group_of(&self, key: &LeaseKey) -> u8 {
        let LeaseKey::Prefix(p) = key else { return u8::MAX };
        self.pd_groups.iter().find(|(q, _)| q.len <= p.len && q.contains(p.addr)).map_or(u8::MAX, |(_, g)| *g)
    }

    fn count(&mut self, key: &LeaseKey, status: crate::wire::BindingStatus, up: bool) {
        let n = self.counts.entry((key.ia_type(), status)).or_default();
        if up {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
        }
        if !self.pd_groups.is_empty() && matches!(key, LeaseKey::Prefix(_)) {
            let g = self.group_of(key);
            let n = self.group_counts.entry((g, status)).or_default();
            if up {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Prefix records of relationship `group` by status (with `set_pd_groups`).
    pub fn group_counts(&self, group: u8) -> impl Iterator<Item = (crate::wire::BindingStatus, u64)> + '_ {
        self.group_counts.iter().filter(move |((g, _), n)| *g == group && **n > 0).map(|((_, st), n)| (*st, *n))
    }

    fn client_slot(&self, duid: &Duid, t: IaType) -> u32 {
        client_hash(&self.client_hasher, duid, t)
    }

    fn binding_hash(&self, b: &Binding) -> u32 {
        self.client_slot(&b.duid, b.ia_type)
    }

    /// How many ACTIVE leases of type `t` this client holds, whoever
    /// granted them (`[limits] leases-per-client`).
    pub fn active_of_client(&self, duid: &Duid, t: IaType) -> u32 {
        let slots = &self.slots;
        self.by_binding
            .iter_hash(spread(self.client_slot(duid, t)))
            .filter_map(|(s, _, _)| slots[*s].as_ref())
            .filter(|l| l.is_active() && l.key.ia_type() == t && l.binding.duid == *duid)
            .count() as u32
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Room for `n` leases, so that loading a large store does not rehash
    /// (a multi-millisecond pause at a million leases).
    fn reserve(&mut self, n: usize) {
        self.by_key.reserve(n, |(_, h)| spread(*h));
        self.by_binding.reserve(n, |(_, _, h)| spread(*h));
    }

    /// How many leases of each (IA type, status) there are.
    pub fn counts(&self) -> impl Iterator<Item = (&(crate::lease::IaType, crate::wire::BindingStatus), &u64)> {
        self.counts.iter().filter(|(_, n)| **n > 0)
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn slot_of(&self, key: &LeaseKey) -> Option<Slot> {
        let slots = &self.slots;
        self.by_key
            .find(spread(fold(key_hash(self.key_seed, key))), |(s, _)| slots[*s].as_ref().is_some_and(|l| l.key == *key))
            .map(|(s, _)| *s)
    }

    pub fn get(&self, key: &LeaseKey) -> Option<&Lease> {
        self.slot_of(key).and_then(|s| self.slots[s].as_ref())
    }

    /// Every lease (any status) last bound to this client IA, in the order
    /// they were first bound to it.
    pub fn keys_of(&self, b: &Binding) -> Vec<LeaseKey> {
        let slots = &self.slots;
        let mut v: Vec<(u32, LeaseKey)> = self
            .by_binding
            .iter_hash(spread(self.binding_hash(b)))
            .filter_map(|(s, order, _)| slots[*s].as_ref().filter(|l| l.binding == *b).map(|l| (*order, l.key)))
            .collect();
        v.sort_unstable_by_key(|(o, _)| *o);
        v.into_iter().map(|(_, k)| k).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.slots.iter().flatten()
    }

    /// The record of `addr` and those of the prefixes containing it, one
    /// lookup per prefix length in use (a leasequery by address, RFC 5007
    /// §4.1.2.1: never a walk).
    pub fn covering(&self, addr: std::net::Ipv6Addr) -> Vec<&Lease> {
        let mut out: Vec<&Lease> = self.get(&LeaseKey::Addr(addr)).into_iter().collect();
        for (len, n) in self.prefix_lengths.iter().enumerate() {
            if *n > 0
                && let Some(p) = crate::pool::Prefix::new(std::net::Ipv6Addr::from(u128::from(addr) & crate::pool::Prefix::mask(len as u8)), len as u8)
                && let Some(l) = self.get(&LeaseKey::Prefix(p))
            {
                out.push(l);
            }
        }
        out
    }

    /// The prefix lengths of the prefix records held.
    #[cfg(test)]
    pub fn prefix_lengths_in_use(&self) -> Vec<u8> {
        (0..=128u8).filter(|l| self.prefix_lengths[*l as usize] > 0).collect()
    }

    /// Every record last bound to this client, both IA types.
    pub fn of_client(&self, duid: &Duid) -> Vec<&Lease> {
        let slots = &self.slots;
        // `iter_hash` may also yield entries of other hashes (the other IA
        // type's among them): each type's pass keeps only its own.
        [IaType::Na, IaType::Pd]
            .into_iter()
            .flat_map(|t| self.by_binding.iter_hash(spread(self.client_slot(duid, t))).map(move |e| (t, e)))
            .filter_map(|(t, (s, _, _))| slots[*s].as_ref().filter(|l| l.binding.ia_type == t))
            .filter(|l| l.binding.duid == *duid)
            .collect()
    }

    /// One chunk of a walk for a bulk leasequery, over the slots from
    /// `from` on: for each record that `pred` picks, every record of its
    /// client that `pred` picks, given once per chunk (at the client's
    /// first picked slot in the chunk); at most `max` slots and `max_clients`
    /// clients. Returns where the next chunk starts (None at the end). A
    /// client whose records lie in several chunks comes once per such chunk
    /// (the caller drops repeats), so one that stays bound is never missed
    /// however its records move meanwhile.
    pub fn walk_clients(&self, from: usize, max: usize, max_clients: usize, pred: impl Fn(&Lease) -> bool) -> (Vec<Vec<&Lease>>, Option<usize>) {
        let mut end = from.saturating_add(max).min(self.slots.len());
        let mut out = Vec::new();
        for s in from..end {
            if out.len() >= max_clients {
                end = s;
                break;
            }
            let Some(l) = self.slots[s as Slot].as_ref() else { continue };
            if is_placeholder(&l.binding) || !pred(l) {
                continue;
            }
            let duid = &l.binding.duid;
            let mine: Vec<(Slot, &Lease)> = [IaType::Na, IaType::Pd]
                .into_iter()
                .flat_map(|t| self.by_binding.iter_hash(spread(self.client_slot(duid, t))).map(move |e| (t, e)))
                .filter_map(|(t, (x, _, _))| self.slots[*x].as_ref().filter(|m| m.binding.ia_type == t).map(|m| (*x, m)))
                .filter(|(_, m)| m.binding.duid == *duid && pred(m))
                .collect();
            if !mine.iter().any(|(x, _)| (from..s).contains(&(*x as usize))) {
                out.push(mine.into_iter().map(|(_, m)| m).collect());
            }
        }
        (out, (end < self.slots.len()).then_some(end))
    }

    /// Take a record's index entries out (before replacing or removing
    /// it), all but its listing under `keep_binding`.
    fn unindex(&mut self, slot: Slot, old: &Lease, keep_binding: Option<&Binding>) {
        let key = old.key;
        self.count(&key, old.status, false);
        if old.status == crate::wire::BindingStatus::Active {
            self.expiry.remove(&(expires(old, self.slack), slot));
        }
        if let Some(b) = ended_base(old) {
            self.ended.remove(&(b, key));
        }
        self.free_backup.remove(&key);
        if keep_binding != Some(&old.binding)
            && !is_placeholder(&old.binding)
            && let Ok(e) = self.by_binding.find_entry(spread(self.binding_hash(&old.binding)), |(s, _, _)| *s == slot)
        {
            e.remove();
        }
    }

    /// Insert or replace a lease, keeping the indexes right.
    pub fn upsert(&mut self, lease: Lease) {
        let key = lease.key;
        let slot = match self.slot_of(&key) {
            Some(s) => {
                let old = self.slots[s].take().expect("indexed slot");
                self.unindex(s, &old, Some(&lease.binding));
                // Listed already only if the old record had this binding.
                if old.binding != lease.binding {
                    self.list(s, &lease.binding);
                }
                s
            }
            None => {
                let s = match self.vacant.pop() {
                    Some(s) => s,
                    None => self.slots.push_empty(),
                };
                self.index_key(s, &key);
                self.list(s, &lease.binding);
                s
            }
        };
        self.index_state(slot, &lease);
        self.slots[slot] = Some(lease);
    }

    fn index_key(&mut self, s: Slot, key: &LeaseKey) {
        if let LeaseKey::Prefix(p) = key {
            self.prefix_lengths[p.len as usize] += 1;
        }
        let h = fold(key_hash(self.key_seed, key));
        self.by_key.insert_unique(spread(h), (s, h), |(_, h)| spread(*h));
    }

    /// The indexes that follow a record's state (expiry, reclamation,
    /// FREE-BACKUP, counts).
    fn index_state(&mut self, slot: Slot, lease: &Lease) {
        let key = lease.key;
        if lease.status == crate::wire::BindingStatus::Active {
            self.expiry.insert((expires(lease, self.slack), slot));
        }
        if let Some(b) = ended_base(lease) {
            self.ended.insert((b, key));
        }
        if lease.status == crate::wire::BindingStatus::FreeBackup && matches!(key, LeaseKey::Prefix(_)) {
            self.free_backup.insert(key);
        }
        self.count(&key, lease.status, true);
    }

    /// Take the records read from the store at start-up, in an empty
    /// table: their vector becomes the first slots (nothing copied).
    pub fn load(&mut self, records: Vec<Lease>) {
        assert!(self.slots.is_empty(), "load into an empty table");
        let n = records.len();
        self.reserve(n + n / 4);
        self.slots = Slab::from_records(records);
        let mut twice = Vec::new();
        let mut expiry = Vec::new();
        let mut ended = Vec::new();
        for s in 0..n as Slot {
            let l = self.slots[s].take().expect("a loaded record");
            if self.slot_of(&l.key).is_some() {
                twice.push((s, l));
                continue;
            }
            self.index_key(s, &l.key);
            self.list(s, &l.binding);
            // The ordered indexes are built once, from sorted lists: packed
            // B-tree nodes, no insert per lease.
            if l.status == crate::wire::BindingStatus::Active {
                expiry.push((expires(&l, self.slack), s));
            }
            if let Some(b) = ended_base(&l) {
                ended.push((b, l.key));
            }
            if l.status == crate::wire::BindingStatus::FreeBackup && matches!(l.key, LeaseKey::Prefix(_)) {
                self.free_backup.insert(l.key);
            }
            self.count(&l.key, l.status, true);
            self.slots[s] = Some(l);
        }
        self.expiry = expiry.into_iter().collect();
        self.ended = ended.into_iter().collect();
        // A key twice (never from one store): the later one wins.
        for (s, l) in twice {
            self.vacant.push(s);
            self.upsert(l);
        }
    }

    /// List `slot` under `binding`.
    fn list(&mut self, slot: Slot, binding: &Binding) {
        if is_placeholder(binding) {
            return;
        }
        let h = self.binding_hash(binding);
        self.listed = self.listed.wrapping_add(1);
        self.by_binding.insert_unique(spread(h), (slot, self.listed, h), |(_, _, h)| spread(*h));
    }

    /// Remove a record (it moved to another shard).
    pub fn remove(&mut self, key: &LeaseKey) -> Option<Lease> {
        let s = self.slot_of(key)?;
        let old = self.slots[s].take().expect("indexed slot");
        self.unindex(s, &old, None);
        if let Ok(e) = self.by_key.find_entry(spread(fold(key_hash(self.key_seed, key))), |(x, _)| *x == s) {
            e.remove();
        }
        if let LeaseKey::Prefix(p) = key {
            self.prefix_lengths[p.len as usize] -= 1;
        }
        self.vacant.push(s);
        Some(old)
    }

    /// Keys of ended leases whose reuse base is at or before `base`,
    /// earliest first, at most `max`.
    pub fn reclaimable(&self, base: Time, max: usize, pick: impl Fn(&LeaseKey) -> bool) -> Vec<LeaseKey> {
        self.ended.iter().take_while(|(t, _)| *t <= base).filter(|(_, k)| pick(k)).take(max).map(|(_, k)| *k).collect()
    }

    /// FREE-BACKUP prefixes, in order.
    pub fn free_backup_keys(&self) -> impl Iterator<Item = &LeaseKey> {
        self.free_backup.iter()
    }

    /// Record the T1/T2 sent with a lease (no index changes).
    pub fn set_t1_t2(&mut self, key: &LeaseKey, t1: u32, t2: u32) {
        if let Some(s) = self.slot_of(key)
            && let Some(l) = self.slots[s].as_mut()
        {
            (l.t1, l.t2) = (t1, t2);
        }
    }

    /// Keys of active leases whose valid lifetime ended at or before `now`,
    /// earliest first, at most `max`.
    /// (Ties in key order: the second that reaches `max` is taken whole,
    /// sorted, and cut.)
    pub fn due(&self, now: Time, max: usize) -> Vec<LeaseKey> {
        let mut out: Vec<(Time, LeaseKey)> = Vec::new();
        for (t, s) in self.expiry.iter().take_while(|(t, _)| *t <= now) {
            if out.len() >= max && out.last().is_some_and(|(last, _)| last != t) {
                break;
            }
            out.push((*t, self.slots[*s].as_ref().expect("indexed slot").key));
        }
        out.sort_unstable();
        out.truncate(max);
        out.into_iter().map(|(_, k)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::IaType;
    use crate::wire::{BindingStatus, Duid};

    fn lease(addr: &str, duid: u8, now: Time, valid: u32) -> Lease {
        Lease::active(
            LeaseKey::Addr(addr.parse().unwrap()),
            Binding { duid: Duid::ll(1, &[duid]), ia_type: IaType::Na, iaid: 1 },
            now,
            valid,
            valid,
            0,
            0,
        )
    }

    #[test]
    fn pool_records_are_not_listed_under_a_client() {
        let k = LeaseKey::Prefix(crate::pool::Prefix::new("2001:db8:100::".parse().unwrap(), 56).unwrap());
        let p = Lease::pool_record(k, 5);
        assert!(is_placeholder(&p.binding));
        let mut t = LeaseTable::new();
        t.upsert(p.clone());
        assert_eq!(t.keys_of(&p.binding), vec![]);
        assert_eq!(t.get(&k), Some(&p));
        // Given to a client, it is listed under the client.
        let mut l = lease("2001:db8::9", 4, 10, 10);
        l.key = k;
        l.binding.ia_type = IaType::Pd;
        t.upsert(l.clone());
        assert_eq!(t.keys_of(&l.binding), vec![k]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn many_leases_and_removals_keep_every_index() {
        let mut t = LeaseTable::new();
        t.reserve(100);
        for i in 0..5000u32 {
            let mut l = lease("2001:db8::", (i % 200) as u8, 100, 10 + i % 7);
            l.key = LeaseKey::Addr(std::net::Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + i as u128));
            l.binding.iaid = i % 3;
            t.upsert(l);
        }
        for i in (0..5000u32).step_by(3) {
            assert!(t.remove(&LeaseKey::Addr(std::net::Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + i as u128))).is_some());
        }
        assert_eq!(t.len(), 5000 - 1667);
        assert_eq!(t.iter().count(), t.len());
        let mut listed = 0;
        for d in 0..200u8 {
            for iaid in 0..3 {
                let b = Binding { duid: Duid::ll(1, &[d]), ia_type: IaType::Na, iaid };
                let keys = t.keys_of(&b);
                assert!(keys.windows(2).all(|w| w[0] < w[1]), "first-bound order is key order here");
                for k in &keys {
                    assert_eq!(t.get(k).unwrap().binding, b);
                }
                listed += keys.len();
            }
        }
        assert_eq!(listed, t.len());
        assert_eq!(t.due(u64::MAX, usize::MAX).len(), t.len());
    }

    #[test]
    fn loading_a_store_indexes_like_upserting_it() {
        let mut records: Vec<Lease> = (0..3000u32)
            .map(|i| {
                let mut l = lease("2001:db8::", (i % 97) as u8, 100, 10 + i % 11);
                l.key = LeaseKey::Addr(std::net::Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + i as u128));
                l.binding.iaid = i % 4;
                if i % 5 == 0 {
                    l.set_status(BindingStatus::Expired, 120);
                }
                l
            })
            .collect();
        // The same key twice: the later record wins, as with upserts.
        let mut dup = records[7].clone();
        dup.binding.iaid = 9;
        records.push(dup);
        let mut upserted = LeaseTable::new();
        for l in records.clone() {
            upserted.upsert(l);
        }
        let mut loaded = LeaseTable::new();
        loaded.load(records.clone());
        assert_eq!(loaded.len(), upserted.len());
        for l in &records[..] {
            assert_eq!(loaded.get(&l.key), upserted.get(&l.key));
        }
        for d in 0..97u8 {
            for iaid in [0, 1, 2, 3, 9] {
                let b = Binding { duid: Duid::ll(1, &[d]), ia_type: IaType::Na, iaid };
                assert_eq!(loaded.keys_of(&b), upserted.keys_of(&b));
            }
            assert_eq!(loaded.active_of_client(&Duid::ll(1, &[d]), IaType::Na), upserted.active_of_client(&Duid::ll(1, &[d]), IaType::Na));
        }
        assert_eq!(loaded.due(1000, 50), upserted.due(1000, 50));
        assert_eq!(loaded.reclaimable(1000, 5000, |_| true), upserted.reclaimable(1000, 5000, |_| true));
        let mut a: Vec<_> = loaded.counts().map(|(k, n)| (*k, *n)).collect();
        let mut b: Vec<_> = upserted.counts().map(|(k, n)| (*k, *n)).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        // It grows and shrinks like any table afterwards.
        let k = records[0].key;
        assert!(loaded.remove(&k).is_some());
        loaded.upsert(lease("2001:db8:ffff::1", 1, 100, 10));
        assert_eq!(loaded.len(), upserted.len());
    }

    #[test]
    fn expiry_ties_come_in_key_order() {
        let mut t = LeaseTable::new();
        for i in [5u32, 1, 4, 2, 3] {
            let mut l = lease("2001:db8::", i as u8, 100, 10);
            l.key = LeaseKey::Addr(std::net::Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + i as u128));
            t.upsert(l);
        }
        let mut l = lease("2001:db8::", 9, 100, 5);
        l.key = LeaseKey::Addr("2001:db8::9".parse().unwrap());
        t.upsert(l);
        let keys = |v: Vec<LeaseKey>| v.into_iter().map(|k| k.to_string()).collect::<Vec<_>>();
        assert_eq!(keys(t.due(110, 3)), ["2001:db8::9", "2001:db8::1", "2001:db8::2"]);
        assert_eq!(keys(t.due(105, 3)), ["2001:db8::9"]);
        assert_eq!(t.due(110, 100).len(), 6);
    }

    #[test]
    fn indexes_follow_upserts() {
        let mut t = LeaseTable::new();
        t.upsert(lease("2001:db8::1", 1, 100, 50));
        t.upsert(lease("2001:db8::2", 1, 100, 10));
        assert_eq!(t.due(120, 10).len(), 1);
        // Rebinding ::1 to another client moves it between bindings.
        t.upsert(lease("2001:db8::1", 2, 100, 50));
        let b1 = Binding { duid: Duid::ll(1, &[1]), ia_type: IaType::Na, iaid: 1 };
        assert_eq!(t.keys_of(&b1).len(), 1);
        // The same key for the same client again is listed once.
        t.upsert(lease("2001:db8::2", 1, 100, 20));
        t.upsert(lease("2001:db8::2", 1, 100, 10));
        assert_eq!(t.keys_of(&b1), vec![LeaseKey::Addr("2001:db8::2".parse().unwrap())]);
        // Expiring removes it from the expiry index.
        let mut l = t.get(&LeaseKey::Addr("2001:db8::2".parse().unwrap())).unwrap().clone();
        l.set_status(BindingStatus::Expired, 110);
        t.upsert(l);
        assert_eq!(t.due(1000, 10).len(), 1);
        assert_eq!(t.len(), 2);
        let counts: Vec<_> = t.counts().map(|(k, n)| (*k, *n)).collect();
        assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 2);
        assert!(counts.contains(&((IaType::Na, BindingStatus::Expired), 1)));
        // Ended leases are found by their reuse base; removal clears every index.
        assert_eq!(t.reclaimable(109, 10, |_| true), vec![]);
        assert_eq!(t.reclaimable(110, 10, |_| true).len(), 1);
        let k2 = LeaseKey::Addr("2001:db8::2".parse().unwrap());
        assert!(t.remove(&k2).is_some());
        assert_eq!((t.len(), t.reclaimable(u64::MAX, 10, |_| true).len()), (1, 0));
        assert_eq!(t.counts().map(|(_, n)| *n).sum::<u64>(), 1);
    }

    #[test]
    fn a_clients_leases_come_once_each_whatever_its_two_hashes_share() {
        // hashbrown's `iter_hash` may yield entries of other hashes; a
        // client's IA_NA and IA_PD passes met each other's entries now and
        // then, and leasequery answers carried a lease twice (1 run in ~400).
        // Thousands of clients, each with an address and a prefix.
        let mut t = LeaseTable::new();
        let n = 20_000u32;
        for c in 0..n {
            let duid = Duid::ll(1, &c.to_be_bytes());
            let a = std::net::Ipv6Addr::from(0x2001_0db8_0001_0000_0000_0000_0001_0000u128 + c as u128);
            t.upsert(Lease::active(LeaseKey::Addr(a), Binding { duid: duid.clone(), ia_type: IaType::Na, iaid: 1 }, 10, 60, 60, 0, 0));
            let p = crate::pool::Prefix::new(std::net::Ipv6Addr::from(0x2001_0db8_0100_0000_0000_0000_0000_0000u128 + ((c as u128) << 64)), 64).unwrap();
            t.upsert(Lease::active(LeaseKey::Prefix(p), Binding { duid, ia_type: IaType::Pd, iaid: 2 }, 10, 60, 60, 0, 0));
        }
        for c in 0..n {
            assert_eq!(t.of_client(&Duid::ll(1, &c.to_be_bytes())).len(), 2, "client {c}");
        }
        let (groups, next) = t.walk_clients(0, usize::MAX, usize::MAX, |_| true);
        assert_eq!(next, None);
        assert_eq!(groups.len(), n as usize);
        assert!(groups.iter().all(|g| g.len() == 2), "every client once, with its two leases");
    }
}
