//! A configured subnet with its allocators, and how a message finds it.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use crate::config::{PdPool, Subnet};
use crate::lease::LeaseKey;
use crate::pool::{AddrRange, Prefix, Slice, SlotAllocator};
use crate::wire::Duid;

pub(crate) struct AddrPoolState {
    pub range: AddrRange,
    pub alloc: SlotAllocator,
}

pub(crate) struct PdPoolState {
    pub pool: PdPool,
    pub alloc: SlotAllocator,
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
    /// Reservations by client DUID.
    pub reservations: HashMap<Duid, (Option<Ipv6Addr>, Option<Prefix>)>,
    /// The same, by reserved address or prefix (checked on every allocation probe).
    reserved_keys: HashMap<LeaseKey, Duid>,
}

impl SubnetState {
    pub fn new(cfg: Subnet, slice: Slice) -> SubnetState {
        let addr_pools = cfg
            .pools
            .iter()
            .map(|r| AddrPoolState { range: *r, alloc: SlotAllocator::new(r.size(), u128::from(r.first), 1, slice) })
            .collect();
        let pd_pools = cfg
            .pd_pools
            .iter()
            .map(|p| {
                let bits = (p.delegated_length - p.prefix.len) as u32;
                let size = if bits >= 128 { u128::MAX } else { 1u128 << bits };
                PdPoolState { pool: p.clone(), alloc: SlotAllocator::new(size, 0, 0, slice) }
            })
            .collect();
        let reservations = cfg.reservations.iter().map(|r| (r.duid.clone(), (r.address, r.prefix))).collect();
        let mut reserved_keys = HashMap::new();
        for r in &cfg.reservations {
            if let Some(a) = r.address {
                reserved_keys.insert(LeaseKey::Addr(a), r.duid.clone());
            }
            if let Some(p) = r.prefix {
                reserved_keys.insert(LeaseKey::Prefix(p), r.duid.clone());
            }
        }
        SubnetState { cfg, addr_pools, pd_pools, reservations, reserved_keys }
    }

    /// Is this address appropriate for the subnet's link?
    pub fn on_link(&self, a: Ipv6Addr) -> bool {
        self.cfg.prefix.contains(a)
    }

    /// Is this delegated prefix one this subnet hands out (a pool or a reservation)?
    pub fn prefix_on_link(&self, p: &Prefix) -> bool {
        self.pd_pools.iter().any(|pp| pp.pool.prefix.contains_prefix(p)) || self.reserved_keys.contains_key(&LeaseKey::Prefix(*p))
    }

    /// Is this lease key reserved for a client other than `duid`?
    pub fn reserved_for_other(&self, key: &LeaseKey, duid: &Duid) -> bool {
        self.reserved_keys.get(key).is_some_and(|d| d != duid)
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
