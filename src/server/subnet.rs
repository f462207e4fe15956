//! A configured subnet with its allocators, and how a message finds it.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use super::classes::mask_of;
use super::settings::{ClassDef, PdPool, PoolScope, ReservedFor, Subnet, duid_link_layer};
use crate::lease::LeaseKey;
use crate::pool::{AddrRange, Prefix, Slice, SlotAllocator};
use crate::wire::Duid;

pub(crate) struct AddrPoolState {
    pub range: AddrRange,
    pub alloc: SlotAllocator,
    /// The classes it is restricted to (0: every client).
    pub classes: u64,
}

pub(crate) struct PdPoolState {
    pub pool: PdPool,
    pub alloc: SlotAllocator,
    pub classes: u64,
}

/// May a client in `classes` get new leases from a pool restricted to `pool`?
pub(crate) fn admits(pool: u64, classes: u64) -> bool {
    pool == 0 || pool & classes != 0
}

impl AddrPoolState {
    pub fn addr(&self, j: u128) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.range.first) + j)
    }

    pub fn slot(&self, a: Ipv6Addr) -> Option<u128> {
        self.range.contains(a).then(|| u128::from(a) - u128::from(self.range.first))
    }
}

impl PdPoolState {
    fn shift(&self) -> u32 {
        128 - self.pool.delegated_length as u32
    }

    pub fn prefix(&self, j: u128) -> Prefix {
        let v = self.pool.prefix.first() + if self.shift() == 128 { 0 } else { j << self.shift() };
        Prefix { addr: Ipv6Addr::from(v), len: self.pool.delegated_length }
    }

    pub fn slot(&self, p: &Prefix) -> Option<u128> {
        if p.len != self.pool.delegated_length || !self.pool.prefix.contains(p.addr) {
            return None;
        }
        let off = p.first() - self.pool.prefix.first();
        Some(if self.shift() == 128 { 0 } else { off >> self.shift() })
    }
}

pub(crate) struct SubnetState {
    pub cfg: Subnet,
    pub addr_pools: Vec<AddrPoolState>,
    pub pd_pools: Vec<PdPoolState>,
    /// Reservations (indexes into `cfg.reservations`) by client DUID and by
    /// link-layer address.
    by_duid: HashMap<Duid, usize>,
    by_hw: HashMap<Vec<u8>, usize>,
    /// The same, by reserved address or prefix.
    reserved_keys: HashMap<LeaseKey, usize>,
}

impl SubnetState {
    pub fn new(cfg: Subnet, slice: Slice, classes: &[ClassDef]) -> SubnetState {
        let scope_mask = |scopes: &[PoolScope], i: usize| scopes.get(i).map_or(0, |s| mask_of(classes, &s.client_classes));
        let addr_pools = cfg
            .pools
            .iter()
            .enumerate()
            .map(|(i, r)| AddrPoolState {
                range: *r,
                // RFC 9915 §13.1: never the reserved interface identifiers.
                alloc: SlotAllocator::new(r.size(), u128::from(r.first), 1, slice).skipping(crate::pool::reserved::run_end),
                classes: scope_mask(&cfg.pool_scopes, i),
            })
            .collect();
        let pd_pools = cfg
            .pd_pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let bits = (p.delegated_length - p.prefix.len) as u32;
                let size = if bits >= 128 { u128::MAX } else { 1u128 << bits };
                PdPoolState { pool: p.clone(), alloc: SlotAllocator::new(size, pd_slot_base(p), 0, slice), classes: scope_mask(&cfg.pd_pool_scopes, i) }
            })
            .collect();
        let (mut by_duid, mut by_hw, mut reserved_keys) = (HashMap::new(), HashMap::new(), HashMap::new());
        for (i, r) in cfg.reservations.iter().enumerate() {
            match &r.client {
                ReservedFor::Duid(d) => by_duid.insert(d.clone(), i),
                ReservedFor::HwAddress(h) => by_hw.insert(h.clone(), i),
            };
            for a in &r.addresses {
                reserved_keys.insert(LeaseKey::Addr(*a), i);
            }
            for p in &r.prefixes {
                reserved_keys.insert(LeaseKey::Prefix(*p), i);
            }
        }
        SubnetState { cfg, addr_pools, pd_pools, by_duid, by_hw, reserved_keys }
    }

    /// The reservation for a client with this DUID (or link-layer address).
    pub fn reservation(&self, duid: &Duid, hw: Option<&[u8]>) -> Option<usize> {
        self.by_duid.get(duid).or_else(|| hw.or_else(|| duid_link_layer(duid)).and_then(|h| self.by_hw.get(h))).copied()
    }

    /// Is `key` reserved in this subnet?
    pub fn reserves(&self, key: &LeaseKey) -> bool {
        self.reserved_keys.contains_key(key)
    }

    /// Is this address appropriate for the subnet's link?
    pub fn on_link(&self, a: Ipv6Addr) -> bool {
        self.cfg.prefix.contains(a)
    }

    /// Is this delegated prefix one this subnet hands out (a pool or a reservation)?
    pub fn prefix_on_link(&self, p: &Prefix) -> bool {
        self.pd_pools.iter().any(|pp| pp.pool.prefix.contains_prefix(p)) || self.reserved_keys.contains_key(&LeaseKey::Prefix(*p))
    }

    /// Is `key` still ours to give this client: reserved for it, or in one
    /// of the subnet's pools and reserved for nobody else? (After a reload
    /// removed a pool or reserved the key for another, its leases are renewed
    /// with lifetimes 0, RFC 9915 §18.3.4.)
    pub fn serves(&self, key: &LeaseKey, duid: &Duid, hw: Option<&[u8]>) -> bool {
        match self.reserved_keys.get(key) {
            Some(i) => self.cfg.reservations[*i].client.is(duid, hw),
            None => self.in_pools(key),
        }
    }

    /// Is `key` in one of this subnet's pools (any shard's slice)?
    pub fn in_pools(&self, key: &LeaseKey) -> bool {
        match key {
            LeaseKey::Addr(a) => self.addr_pools.iter().any(|p| p.range.contains(*a)),
            LeaseKey::Prefix(pfx) => self.pd_pools.iter().any(|p| p.slot(pfx).is_some()),
        }
    }

    /// Is `key` in one of this subnet's pools, in our shard's slice?
    pub fn in_slice(&self, key: &LeaseKey) -> bool {
        match key {
            LeaseKey::Addr(a) => self.addr_pools.iter().any(|p| p.slot(*a).is_some_and(|j| p.alloc.in_slice(j))),
            LeaseKey::Prefix(pfx) => self.pd_pools.iter().any(|p| p.slot(pfx).is_some_and(|j| p.alloc.in_slice(j))),
        }
    }

    /// Delegable prefixes of this subnet's pools in our slice (saturating).
    pub fn delegable_in_slice(&self) -> u64 {
        self.pd_pools.iter().map(|p| p.alloc.slice_len()).fold(0u64, |a, b| a.saturating_add(u64::try_from(b).unwrap_or(u64::MAX)))
    }

    /// Hand a key back to its allocator's free list.
    pub fn release(&mut self, key: &LeaseKey) {
        match key {
            LeaseKey::Addr(a) => {
                for p in &mut self.addr_pools {
                    if let Some(j) = p.slot(*a) {
                        p.alloc.release(j);
                    }
                }
            }
            LeaseKey::Prefix(pfx) => {
                for p in &mut self.pd_pools {
                    if let Some(j) = p.slot(pfx) {
                        p.alloc.release(j);
                    }
                }
            }
        }
    }
}

/// The slicing value of a pool's first delegable prefix: prefixes are dealt
/// to shards by their own number (the prefix shifted right by its host
/// bits), not by their place in the pool, so a pool that grows or moves at a
/// reload keeps every existing prefix with the same shard.
pub(crate) fn pd_slot_base(p: &PdPool) -> u128 {
    let shift = 128 - p.delegated_length as u32;
    if shift >= 128 { 0 } else { p.prefix.first() >> shift }
}

/// Which shard's allocator owns each pool address and delegable prefix.
/// Mirrors `SlotAllocator`'s grouping (addresses in pairs, prefixes one by
/// one), so it agrees with every shard's `in_slice` without asking them.
/// The owner of a key depends on the key and the shard count only; the
/// pools decide whether it has one.
#[derive(Debug, Clone)]
pub struct SliceMap {
    shards: u32,
    addr: Vec<AddrRange>,
    pd: Vec<PdPool>,
    /// Pools a reload removed: their records keep their owner (where they
    /// live) until the next start places them again, but the pools are no
    /// longer ours (`in_pool`).
    retired_addr: Vec<AddrRange>,
    retired_pd: Vec<PdPool>,
    /// Reserved addresses and prefixes, and for whom: shared with the
    /// failover partner whether in a pool or not.
    reserved: HashMap<LeaseKey, ReservedFor>,
}

impl SliceMap {
    pub fn new(subnets: &[Subnet], shards: usize) -> SliceMap {
        let mut reserved = HashMap::new();
        for r in subnets.iter().flat_map(|s| &s.reservations) {
            for k in r.addresses.iter().map(|a| LeaseKey::Addr(*a)).chain(r.prefixes.iter().map(|p| LeaseKey::Prefix(*p))) {
                reserved.insert(k, r.client.clone());
            }
        }
        SliceMap {
            shards: shards.max(1) as u32,
            addr: subnets.iter().flat_map(|s| s.pools.iter().copied()).collect(),
            pd: subnets.iter().flat_map(|s| s.pd_pools.iter().cloned()).collect(),
            retired_addr: Vec::new(),
            retired_pd: Vec::new(),
            reserved,
        }
    }

    /// Is the key one the failover partner shares with us (RFC 8156
    /// §7.5.4): in a pool, or reserved?
    pub fn shared(&self, key: &LeaseKey) -> bool {
        self.reserved.contains_key(key) || self.in_pool(key)
    }

    /// Whom the key is reserved for, if anyone.
    pub fn reserved_for(&self, key: &LeaseKey) -> Option<&ReservedFor> {
        self.reserved.get(key)
    }

    /// Is the key reserved for a client that cannot be `duid`? (A partner
    /// granting it so has another configuration: ConfigurationConflict.)
    pub fn reserved_against(&self, key: &LeaseKey, duid: &crate::wire::Duid) -> bool {
        self.reserved.get(key).is_some_and(|r| !r.may_be(duid))
    }

    /// The map after a reload to `subnets`: pools no longer configured are
    /// retired, not forgotten.
    pub fn reloaded(&self, subnets: &[Subnet]) -> SliceMap {
        let mut m = SliceMap::new(subnets, self.shards as usize);
        for r in self.addr.iter().chain(&self.retired_addr) {
            if !m.addr.contains(r) && !m.retired_addr.contains(r) {
                m.retired_addr.push(*r);
            }
        }
        for p in self.pd.iter().chain(&self.retired_pd) {
            if !m.pd.contains(p) && !m.retired_pd.contains(p) {
                m.retired_pd.push(p.clone());
            }
        }
        m
    }

    /// The pools and reservations relationship `rel` (of `relationships`)
    /// shares with its partner: all of them when it covers every subnet,
    /// else its subnets' (a partner's update for a key of another
    /// relationship, or of a standalone subnet, is refused).
    pub fn for_relationship(&self, subnets: &[Subnet], rel: usize, relationships: usize) -> SliceMap {
        // One relationship over every subnet (the single `[failover]`):
        // everything, retired pools included, as it always was.
        if relationships <= 1 && subnets.iter().all(|s| s.relationship == Some(rel)) {
            return self.clone();
        }
        let mine: Vec<Subnet> = subnets.iter().filter(|s| s.relationship == Some(rel)).cloned().collect();
        self.restricted(&mine)
    }

    /// The part of this map that `subnets` cover (one failover
    /// relationship's, when a server has several): their pools and
    /// reservations, and retired address pools inside their prefixes.
    pub fn restricted(&self, subnets: &[Subnet]) -> SliceMap {
        let addr: Vec<AddrRange> = subnets.iter().flat_map(|s| s.pools.iter().copied()).filter(|r| self.addr.contains(r)).collect();
        let pd: Vec<PdPool> = subnets.iter().flat_map(|s| s.pd_pools.iter().cloned()).filter(|p| self.pd.contains(p)).collect();
        let mine = |k: &LeaseKey| {
            subnets.iter().flat_map(|s| &s.reservations).any(|r| match k {
                LeaseKey::Addr(a) => r.addresses.contains(a),
                LeaseKey::Prefix(p) => r.prefixes.contains(p),
            })
        };
        SliceMap {
            shards: self.shards,
            addr,
            pd,
            retired_addr: self.retired_addr.iter().copied().filter(|r| subnets.iter().any(|s| s.prefix.contains(r.first))).collect(),
            retired_pd: Vec::new(),
            reserved: self.reserved.iter().filter(|(k, _)| mine(k)).map(|(k, v)| (*k, v.clone())).collect(),
        }
    }

    /// The shard that may allocate `key`; None for keys outside every pool
    /// (reservations), which only the client's own shard ever grants.
    pub fn owner(&self, key: &LeaseKey) -> Option<usize> {
        self.owner_among(key, true)
    }

    fn owner_among(&self, key: &LeaseKey, retired: bool) -> Option<usize> {
        let n = self.shards as u128;
        match key {
            LeaseKey::Addr(a) => {
                let mut pools = self.addr.iter().chain(self.retired_addr.iter().filter(|_| retired));
                pools.find(|r| r.contains(*a))?;
                Some((u128::from(*a) >> 1) % n)
            }
            LeaseKey::Prefix(p) => {
                let mut pools = self.pd.iter().chain(self.retired_pd.iter().filter(|_| retired));
                let pool = pools.find(|pp| p.len == pp.delegated_length && pp.prefix.contains_prefix(p))?;
                let shift = 128 - pool.delegated_length as u32;
                Some(if shift >= 128 { 0 } else { (p.first() >> shift) % n })
            }
        }
        .map(|g| g as usize)
    }

    /// During a reload: this map, with `old`'s current pools counted as
    /// ours too (`in_pool`) until every shard serves the new ones.
    pub fn widened(&self, old: &SliceMap) -> SliceMap {
        let mut m = self.clone();
        for r in &old.addr {
            if !m.addr.contains(r) {
                m.addr.push(*r);
            }
        }
        for p in &old.pd {
            if !m.pd.contains(p) {
                m.pd.push(p.clone());
            }
        }
        m.retired_addr.retain(|r| !m.addr.contains(r));
        m.retired_pd.retain(|p| !m.pd.contains(p));
        m
    }

    /// A pd-pool of `subnets` overlapping a running or retired one with
    /// another delegated-length: the running delegations would overlap the
    /// new ones (a prefix is checked only against records of its own length).
    pub fn pd_overlap(&self, subnets: &[Subnet]) -> Option<String> {
        let new = subnets.iter().flat_map(|s| s.pd_pools.iter());
        for p in new {
            for q in self.pd.iter().chain(&self.retired_pd) {
                let overlap = p.prefix.contains_prefix(&q.prefix) || q.prefix.contains_prefix(&p.prefix);
                if overlap && p.delegated_length != q.delegated_length {
                    return Some(format!(
                        "{} (delegated-length {}) overlaps {} (delegated-length {}), whose delegations may still be in use: restart once they have ended",
                        p.prefix, p.delegated_length, q.prefix, q.delegated_length
                    ));
                }
            }
        }
        None
    }

    /// Does this map have a pool `old` never had (current or retired)?
    pub fn adds_to(&self, old: &SliceMap) -> bool {
        self.addr.iter().any(|r| !old.addr.contains(r) && !old.retired_addr.contains(r))
            || self.pd.iter().any(|p| !old.pd.contains(p) && !old.retired_pd.contains(p))
    }

    /// Is the key in one of the configured pools (RFC 8156 §7.5.4)?
    pub fn in_pool(&self, key: &LeaseKey) -> bool {
        self.owner_among(key, false).is_some()
    }

    /// Every delegable prefix of every pool, in order.
    pub fn delegable(&self) -> impl Iterator<Item = Prefix> + '_ {
        self.pd.iter().flat_map(|pp| {
            let bits = (pp.delegated_length - pp.prefix.len) as u32;
            let n: u128 = if bits >= 127 { u128::MAX } else { 1u128 << bits };
            let shift = 128 - pp.delegated_length as u32;
            (0..n).map(move |j| Prefix {
                addr: Ipv6Addr::from(pp.prefix.first() + if shift == 128 { 0 } else { j << shift }),
                len: pp.delegated_length,
            })
        })
    }
}

#[cfg(test)]
mod slice_map_tests {
    use super::*;

    #[test]
    fn slice_map_agrees_with_every_shard_allocator() {
        let cfg: crate::config::Config = crate::config::Config::parse(
            "data-dir = \"/tmp/x\"\ninterfaces = []\n[[subnet]]\nprefix = \"2001:db8:1::/64\"\npools = [\"2001:db8:1::1003-2001:db8:1::10ff\"]\npd-pools = [{ prefix = \"2001:db8:101::/48\", delegated-length = 56 }]\n",
        )
        .unwrap();
        for shards in 1..5usize {
            let map = SliceMap::new(&cfg.subnets, shards);
            let states: Vec<SubnetState> = (0..shards)
                .map(|i| SubnetState::new(cfg.subnets[0].clone(), Slice { shards: shards as u32, shard: i as u32 }, &[]))
                .collect();
            let pool = &states[0].addr_pools[0];
            for j in 0..pool.range.size() {
                let a = pool.addr(j);
                let owners: Vec<usize> = (0..shards).filter(|i| states[*i].addr_pools[0].alloc.in_slice(j)).collect();
                assert_eq!(owners, vec![map.owner(&LeaseKey::Addr(a)).unwrap()], "{a} with {shards} shards");
            }
            for (j, p) in map.delegable().enumerate() {
                let owners: Vec<usize> = (0..shards).filter(|i| states[*i].pd_pools[0].alloc.in_slice(j as u128)).collect();
                assert_eq!(owners, vec![map.owner(&LeaseKey::Prefix(p)).unwrap()]);
            }
            assert_eq!(map.owner(&LeaseKey::Addr("2001:db8:2::1".parse().unwrap())), None);
        }
    }
}

#[cfg(test)]
mod reload_tests {
    use super::*;

    #[test]
    fn a_reload_retires_removed_pools_and_keeps_every_owner() {
        let pd = |p: &str| PdPool { prefix: p.parse().unwrap(), delegated_length: 56 };
        let s = |pools: &str, pd_pool: &str| Subnet {
            pools: vec![pools.parse().unwrap()],
            pd_pools: vec![pd(pd_pool)],
            ..Subnet::test_default()
        };
        let old = SliceMap::new(&[s("2001:db8:1::1000-2001:db8:1::1fff", "2001:db8:100::/48")], 3);
        // The PD pool grows to a /44 and the address pool moves.
        let new = old.reloaded(&[s("2001:db8:1::5000-2001:db8:1::5fff", "2001:db8:100::/44")]);
        assert!(new.adds_to(&old));
        let a = LeaseKey::Addr("2001:db8:1::1234".parse().unwrap());
        assert!(!new.in_pool(&a), "a removed pool is no longer ours (ConfigurationConflict)");
        assert_eq!(new.owner(&a), old.owner(&a), "its records keep their home");
        for p in ["2001:db8:100:ff00::/56", "2001:db8:100:1200::/56"] {
            let k = LeaseKey::Prefix(p.parse().unwrap());
            assert_eq!(new.owner(&k), old.owner(&k), "{p}: a grown pool keeps every prefix's shard");
        }
        let k = LeaseKey::Prefix("2001:db8:10f:100::/56".parse().unwrap());
        assert_eq!((old.owner(&k), new.in_pool(&k)), (None, true));
        // Another delegated-length over a running pool is refused.
        let mut other = s("2001:db8:1::5000-2001:db8:1::5fff", "2001:db8:100::/44");
        other.pd_pools[0].delegated_length = 60;
        assert!(new.pd_overlap(std::slice::from_ref(&other)).is_some_and(|e| e.contains("overlaps")));
        assert_eq!(new.pd_overlap(&[s("2001:db8:1::5000-2001:db8:1::5fff", "2001:db8:100::/44")]), None);
        // Reloading the same pools again adds nothing.
        assert!(!new.reloaded(&[s("2001:db8:1::5000-2001:db8:1::5fff", "2001:db8:100::/44")]).adds_to(&new));
    }
}
