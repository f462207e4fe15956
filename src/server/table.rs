//! The in-memory lease table a shard's engine works on: leases by key, by
//! client binding, and active leases by the end of their valid lifetime.

use std::collections::{BTreeSet, HashMap};

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

#[derive(Debug, Default)]
pub struct LeaseTable {
    leases: HashMap<LeaseKey, Lease>,
    by_binding: HashMap<Binding, Vec<LeaseKey>>,
    /// Active leases ordered by when they may expire.
    expiry: BTreeSet<(Time, LeaseKey)>,
    /// Ended leases ordered by `ended_base` (PARTNER-DOWN reclamation).
    ended: BTreeSet<(Time, LeaseKey)>,
    /// FREE-BACKUP prefixes (the secondary's, §4.2.2).
    free_backup: BTreeSet<LeaseKey>,
    slack: Time,
    /// Leases by (IA type, binding status), kept as leases change so that
    /// metrics never walk the table.
    counts: HashMap<(crate::lease::IaType, crate::wire::BindingStatus), u64>,
    /// ACTIVE leases per client DUID and IA type, under a hash keyed at
    /// random per process (no one can aim a DUID at another's count), for
    /// `[limits] leases-per-client`. 12 bytes per client, no DUID copy.
    active_by_client: HashMap<u64, u32>,
    client_hasher: std::hash::RandomState,
}

impl LeaseTable {
    pub fn new() -> LeaseTable {
        LeaseTable::default()
    }

    /// Set the failover MCLT used in `expires` (before loading leases).
    pub fn set_slack(&mut self, slack: Time) {
        debug_assert!(self.leases.is_empty());
        self.slack = slack;
    }

    fn client_slot(&self, duid: &Duid, t: IaType) -> u64 {
        use std::hash::BuildHasher;
        self.client_hasher.hash_one((duid.as_bytes(), t == IaType::Pd))
    }

    /// How many ACTIVE leases of type `t` this client holds, whoever granted them.
    pub fn active_of_client(&self, duid: &Duid, t: IaType) -> u32 {
        self.active_by_client.get(&self.client_slot(duid, t)).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Room for `n` leases, so that loading a large store does not rehash
    /// (a multi-millisecond pause at a million leases).
    pub fn reserve(&mut self, n: usize) {
        self.leases.reserve(n);
        self.by_binding.reserve(n);
    }

    /// How many leases of each (IA type, status) there are.
    pub fn counts(&self) -> impl Iterator<Item = (&(crate::lease::IaType, crate::wire::BindingStatus), &u64)> {
        self.counts.iter().filter(|(_, n)| **n > 0)
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    pub fn get(&self, key: &LeaseKey) -> Option<&Lease> {
        self.leases.get(key)
    }

    /// Every lease (any status) last bound to this client IA.
    pub fn keys_of(&self, b: &Binding) -> &[LeaseKey] {
        self.by_binding.get(b).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    /// Take a record's index entries out (before replacing or removing it).
    fn unindex(&mut self, old: &Lease, keep_binding: Option<&Binding>) {
        let key = old.key;
        if let Some(n) = self.counts.get_mut(&(key.ia_type(), old.status)) {
            *n -= 1;
        }
        if old.status == crate::wire::BindingStatus::Active {
            self.expiry.remove(&(expires(old, self.slack), key));
            let slot = self.client_slot(&old.binding.duid, key.ia_type());
            if let Some(n) = self.active_by_client.get_mut(&slot) {
                *n -= 1;
                if *n == 0 {
                    self.active_by_client.remove(&slot);
                }
            }
        }
        if let Some(b) = ended_base(old) {
            self.ended.remove(&(b, key));
        }
        self.free_backup.remove(&key);
        if keep_binding != Some(&old.binding)
            && let Some(v) = self.by_binding.get_mut(&old.binding)
        {
            v.retain(|k| *k != key);
            if v.is_empty() {
                self.by_binding.remove(&old.binding);
            }
        }
    }

    /// Insert or replace a lease, keeping the indexes right.
    pub fn upsert(&mut self, lease: Lease) {
        let key = lease.key;
        let old = self.leases.remove(&key);
        // A key is listed under exactly its record's binding, so it is
        // there already only if the old record had this binding. (No
        // `contains`: every pool record shares one binding, and a search
        // there made loading thousands of them quadratic.)
        let listed = old.as_ref().is_some_and(|o| o.binding == lease.binding);
        if let Some(old) = old {
            self.unindex(&old, Some(&lease.binding));
        }
        if !listed {
            self.by_binding.entry(lease.binding.clone()).or_default().push(key);
        }
        if lease.status == crate::wire::BindingStatus::Active {
            self.expiry.insert((expires(&lease, self.slack), key));
            let slot = self.client_slot(&lease.binding.duid, key.ia_type());
            *self.active_by_client.entry(slot).or_default() += 1;
        }
        if let Some(b) = ended_base(&lease) {
            self.ended.insert((b, key));
        }
        if lease.status == crate::wire::BindingStatus::FreeBackup && matches!(key, LeaseKey::Prefix(_)) {
            self.free_backup.insert(key);
        }
        *self.counts.entry((key.ia_type(), lease.status)).or_default() += 1;
        self.leases.insert(key, lease);
    }

    /// Remove a record (it moved to another shard).
    pub fn remove(&mut self, key: &LeaseKey) -> Option<Lease> {
        let old = self.leases.remove(key)?;
        self.unindex(&old, None);
        Some(old)
    }

    /// Keys of ended leases whose reuse base is at or before `base`,
    /// earliest first, at most `max`.
    pub fn reclaimable(&self, base: Time, max: usize) -> Vec<LeaseKey> {
        self.ended.iter().take_while(|(t, _)| *t <= base).take(max).map(|(_, k)| *k).collect()
    }

    /// FREE-BACKUP prefixes, in order.
    pub fn free_backup_keys(&self) -> impl Iterator<Item = &LeaseKey> {
        self.free_backup.iter()
    }

    /// Record the T1/T2 sent with a lease (no index changes).
    pub fn set_t1_t2(&mut self, key: &LeaseKey, t1: u32, t2: u32) {
        if let Some(l) = self.leases.get_mut(key) {
            (l.t1, l.t2) = (t1, t2);
        }
    }

    /// Keys of active leases whose valid lifetime ended at or before `now`,
    /// earliest first, at most `max`.
    pub fn due(&self, now: Time, max: usize) -> Vec<LeaseKey> {
        self.expiry.iter().take_while(|(t, _)| *t <= now).take(max).map(|(_, k)| *k).collect()
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
        assert_eq!(t.keys_of(&b1), &[LeaseKey::Addr("2001:db8::2".parse().unwrap())]);
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
        assert_eq!(t.reclaimable(109, 10), vec![]);
        assert_eq!(t.reclaimable(110, 10).len(), 1);
        let k2 = LeaseKey::Addr("2001:db8::2".parse().unwrap());
        assert!(t.remove(&k2).is_some());
        assert_eq!((t.len(), t.reclaimable(u64::MAX, 10).len()), (1, 0));
        assert_eq!(t.counts().map(|(_, n)| *n).sum::<u64>(), 1);
    }
}
