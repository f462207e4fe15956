//! The lease store interface, and an in-memory model of it that the
//! simulator uses and the LMDB store is tested against.

use std::collections::{BTreeMap, HashMap};

use super::{Lease, LeaseChange, LeaseKey};

/// Current on-disk schema. Version 1 (with a `bindings` index and version 1
/// records) is migrated at open; a store of a newer version is refused.
pub const SCHEMA_VERSION: u32 = 2;

/// Well-known metadata names.
pub mod meta {
    pub const SCHEMA: &str = "schema-version";
    pub const SERVER_DUID: &str = "server-duid";
    /// The failover endpoint's persistent state (RFC 8156 §8.2), encoded by `failover`.
    pub const FAILOVER_STATE: &str = "failover-state";
    pub const SHARDS: &str = "shards";
}

#[derive(Debug)]
pub enum StoreError {
    /// The map (or disk) is full: nothing of the batch was written.
    Full(String),
    /// Damaged or foreign data.
    Corrupt(String),
    Other(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Full(s) => write!(f, "store full: {s}"),
            StoreError::Corrupt(s) => write!(f, "store damaged: {s}"),
            StoreError::Other(s) => write!(f, "store error: {s}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// One shard's slice of the lease store. `commit` is atomic and durable when
/// it returns Ok: either every change of the batch is on disk or none is.
pub trait LeaseStore {
    fn commit(&mut self, changes: &[LeaseChange]) -> Result<(), StoreError>;
    fn get(&self, key: &LeaseKey) -> Result<Option<Lease>, StoreError>;
    /// At most `max` records in key order, starting at `from`: one chunk of
    /// a walk that never holds the whole store.
    fn scan(&self, from: std::ops::Bound<&LeaseKey>, max: usize) -> Result<Vec<Lease>, StoreError>;
    /// Every lease, in key order.
    fn all(&self) -> Result<Vec<Lease>, StoreError>;
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn put_meta(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError>;
}

/// The in-memory model: the same semantics, no durability.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    leases: BTreeMap<LeaseKey, Lease>,
    meta: HashMap<String, Vec<u8>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl LeaseStore for MemoryStore {
    fn commit(&mut self, changes: &[LeaseChange]) -> Result<(), StoreError> {
        for c in changes {
            match c {
                LeaseChange::Upsert(l) => {
                    self.leases.insert(l.key, l.clone());
                }
                LeaseChange::Delete(k) => {
                    self.leases.remove(k);
                }
            }
        }
        Ok(())
    }

    fn get(&self, key: &LeaseKey) -> Result<Option<Lease>, StoreError> {
        Ok(self.leases.get(key).cloned())
    }

    fn scan(&self, from: std::ops::Bound<&LeaseKey>, max: usize) -> Result<Vec<Lease>, StoreError> {
        Ok(self.leases.range((from, std::ops::Bound::Unbounded)).take(max).map(|(_, l)| l.clone()).collect())
    }

    fn all(&self) -> Result<Vec<Lease>, StoreError> {
        Ok(self.leases.values().cloned().collect())
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(name).cloned())
    }

    fn put_meta(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(name.to_owned(), value.to_vec());
        Ok(())
    }
}

/// The behaviour every `LeaseStore` must show; run against the model here
/// and against LMDB in `runtime::store`.
#[cfg(test)]
pub(crate) mod conformance {
    use super::*;
    use crate::lease::{Binding, IaType};
    use crate::wire::{BindingStatus, Duid};

    fn lease(i: u32, duid: u8, iaid: u32) -> Lease {
        Lease::active(
            LeaseKey::Addr(std::net::Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + i as u128)),
            Binding { duid: Duid::ll(1, &[duid]), ia_type: IaType::Na, iaid },
            1000 + i as u64,
            300,
            400,
            100,
            200,
        )
    }

    pub fn run(s: &mut dyn LeaseStore) {
        assert!(s.all().unwrap().is_empty());
        let batch: Vec<LeaseChange> = (0..10).map(|i| LeaseChange::Upsert(lease(i, (i % 3) as u8, 1))).collect();
        s.commit(&batch).unwrap();
        assert_eq!(s.all().unwrap().len(), 10);
        let b4 = batch[4].upserted().unwrap();
        assert_eq!(s.get(&b4.key).unwrap().as_ref(), Some(b4));
        // Rebinding a lease to another client replaces the record.
        let mut moved = batch[0].upserted().unwrap().clone();
        moved.binding.duid = Duid::ll(1, &[7]);
        moved.set_status(BindingStatus::Released, 5000);
        s.commit(&[LeaseChange::Upsert(moved.clone())]).unwrap();
        assert_eq!(s.get(&moved.key).unwrap().as_ref(), Some(&moved));
        assert_eq!(s.all().unwrap().iter().filter(|l| l.binding.duid == Duid::ll(1, &[0])).count(), 3);
        assert_eq!(s.get(&moved.key).unwrap().unwrap().status, BindingStatus::Released);
        // Keys come back in order.
        let keys: Vec<LeaseKey> = s.all().unwrap().iter().map(|l| l.key).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        // Chunks of a walk cover every record once, in order.
        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let from = after.as_ref().map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
            let chunk = s.scan(from, 3).unwrap();
            if chunk.is_empty() {
                break;
            }
            after = chunk.last().map(|l| l.key);
            walked.extend(chunk.into_iter().map(|l| l.key));
        }
        assert_eq!(walked, keys);
        // A walk resumes at a key, inclusive.
        let again = s.scan(std::ops::Bound::Included(&keys[4]), 2).unwrap();
        assert_eq!(again.iter().map(|l| l.key).collect::<Vec<_>>(), keys[4..6].to_vec());
        // A removal takes the record out.
        s.commit(&[LeaseChange::Delete(moved.key)]).unwrap();
        assert_eq!(s.get(&moved.key).unwrap(), None);
        assert_eq!(s.all().unwrap().len(), 9);
        assert_eq!(s.get_meta("x").unwrap(), None);
        s.put_meta("x", b"1").unwrap();
        s.put_meta("x", b"2").unwrap();
        assert_eq!(s.get_meta("x").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn memory_store_conforms() {
        run(&mut MemoryStore::new());
    }
}
