//! Which shard holds each lease record, and which shard it belongs at.
//!
//! A client's packets go to the shard its DUID hashes to, and each shard
//! allocates only from its slice of every pool. With the same shard count on
//! both partners the two coincide for every lease either of them grants.
//! They differ when the partners run different shard counts, or after a
//! `--shards` change: a partner grants a key of one shard's slice to a
//! client of another. The rule that keeps renewals working and pools whole:
//!
//! - an ACTIVE record lives with its client's shard (its renewals find it);
//! - any other record lives with its key's slice owner (it can be given out
//!   again); a key outside every pool stays with its client;
//! - every record of a key reserved by DUID lives with the reserved
//!   client's shard, the one shard that grants it;
//! - while a key's record lives elsewhere, its slice owner blocks the key.
//!
//! A shard whose record now belongs elsewhere hands it off (`Handoff`); the
//! driver has the new home adopt it and, once that is durable, the old
//! holder drop it. `ShardRouter` remembers the records that live away from
//! their slice owner, so partner updates and acknowledgements reach them.

use std::collections::HashMap;

use crate::lease::{Lease, LeaseKey};
use crate::pool::hash::shard_of;
use crate::server::SliceMap;
use crate::wire::Duid;

/// Where `lease` belongs among `shards` shards (see the module doc).
pub fn home_of(slices: &SliceMap, shards: usize, lease: &Lease) -> usize {
    if let Some(s) = reserved_home(slices, shards, &lease.key) {
        return s;
    }
    let client = || shard_of(lease.binding.duid.as_bytes(), shards as u32) as usize;
    match slices.owner(&lease.key) {
        Some(_) if lease.is_active() => client(),
        Some(owner) => owner,
        None => client(),
    }
}

/// Every record of a key reserved by DUID lives with the reserved client's
/// shard, whoever it binds: that shard alone grants the key, and must see
/// another client's lease on it (one the partner granted under another
/// configuration, or before a reload reserved it).
fn reserved_home(slices: &SliceMap, shards: usize, key: &LeaseKey) -> Option<usize> {
    match slices.reserved_for(key)? {
        crate::server::settings::ReservedFor::Duid(d) => Some(shard_of(d.as_bytes(), shards as u32) as usize),
        // hw-address reservations run on one shard (config).
        crate::server::settings::ReservedFor::HwAddress(_) => None,
    }
}

#[derive(Debug, Clone)]
pub struct ShardRouter {
    slices: SliceMap,
    shards: usize,
    /// Records held by a shard other than their key's slice owner.
    away: HashMap<LeaseKey, usize>,
}

impl ShardRouter {
    pub fn new(slices: SliceMap, shards: usize, away: impl IntoIterator<Item = (LeaseKey, usize)>) -> ShardRouter {
        let mut r = ShardRouter { slices, shards: shards.max(1), away: HashMap::new() };
        for (k, s) in away {
            r.held_at(k, s);
        }
        r
    }

    /// A reload's pools, and the records they cover held away from their owner.
    pub fn reconfigure(&mut self, slices: SliceMap, away: impl IntoIterator<Item = (LeaseKey, usize)>) {
        self.slices = slices;
        for (k, s) in away {
            self.held_at(k, s);
        }
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    pub fn slices(&self) -> &SliceMap {
        &self.slices
    }

    /// Is the key one we share with the partner (RFC 8156 §7.5.4): in one
    /// of our pools, or reserved?
    pub fn owns(&self, key: &LeaseKey) -> bool {
        self.slices.shared(key)
    }

    /// The shard holding `key`'s record (or that would create it); `client`
    /// places keys outside every pool.
    pub fn holder(&self, key: &LeaseKey, client: Option<&Duid>) -> usize {
        if let Some(s) = self.away.get(key) {
            return *s;
        }
        if let Some(s) = reserved_home(&self.slices, self.shards, key) {
            return s;
        }
        match (self.slices.owner(key), client) {
            (Some(o), _) => o,
            (None, Some(d)) => shard_of(d.as_bytes(), self.shards as u32) as usize,
            (None, None) => 0,
        }
    }

    /// Where `lease` belongs.
    pub fn home(&self, lease: &Lease) -> usize {
        home_of(&self.slices, self.shards, lease)
    }

    /// `shard` holds `key`'s record now.
    pub fn held_at(&mut self, key: LeaseKey, shard: usize) {
        match reserved_home(&self.slices, self.shards, &key).or_else(|| self.slices.owner(&key)) {
            Some(o) if o == shard => {
                self.away.remove(&key);
            }
            Some(_) => {
                self.away.insert(key, shard);
            }
            // Outside the pools: placed by its client, found by `holder`.
            None => {}
        }
    }

    /// Records away from their slice owner (for status and tests).
    pub fn away(&self) -> usize {
        self.away.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{Binding, IaType};
    use crate::server::settings::{PdPool, Subnet};
    use crate::wire::BindingStatus;

    fn map(shards: usize) -> SliceMap {
        let s = Subnet {
            prefix: "2001:db8:1::/64".parse().unwrap(),
            pools: vec!["2001:db8:1::100-2001:db8:1::1ff".parse().unwrap()],
            pd_pools: vec![PdPool { prefix: "2001:db8:100::/48".parse().unwrap(), delegated_length: 56 }],
            ..Subnet::test_default()
        };
        SliceMap::new(&[s], shards)
    }

    #[test]
    fn active_records_live_with_their_client_and_others_with_the_slice_owner() {
        let (m, n) = (map(3), 3);
        let key = LeaseKey::Addr("2001:db8:1::150".parse().unwrap());
        let owner = m.owner(&key).unwrap();
        // A client whose shard is not the key's slice owner.
        let duid = (0u8..=255).map(|i| Duid::ll(1, &[i])).find(|d| shard_of(d.as_bytes(), 3) as usize != owner).unwrap();
        let client = shard_of(duid.as_bytes(), 3) as usize;
        let mut l = Lease::active(key, Binding { duid, ia_type: IaType::Na, iaid: 1 }, 100, 10, 20, 5, 8);
        assert_eq!(home_of(&m, n, &l), client);
        l.set_status(BindingStatus::Expired, 200);
        assert_eq!(home_of(&m, n, &l), owner);
        // The router finds a record held away from its owner, and forgets it at home.
        let mut r = ShardRouter::new(m, n, [(key, client)]);
        assert_eq!((r.holder(&key, None), r.away()), (client, 1));
        r.held_at(key, owner);
        assert_eq!((r.holder(&key, None), r.away()), (owner, 0));
    }
}
