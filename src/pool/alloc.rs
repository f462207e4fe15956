//! Bounded-time allocation over huge slot spaces (a /64 of addresses, a /40
//! of /56 prefixes) without ever scanning the space.
//!
//! Candidates come, in order, from: a keyed hash of the client (so the same
//! client lands on the same slot again), a free list of slots handed back,
//! and a cursor that sweeps never-used slots once. Each slot is passed by the
//! cursor at most once per sweep and each free-list entry is popped once, so
//! allocation is O(1) amortized whatever the size of the space.
//!
//! Shard slices: slots are grouped in runs of `2^group_shift` values and the
//! groups are dealt round-robin to the shards. For addresses the group is a
//! pair (…0, …1) so that every shard holds both failover parities (RFC 8156
//! §4.2.1.1: the primary owns odd addresses, the secondary even ones).

use std::collections::VecDeque;

/// How many hashed probes to try before falling back to the free list and cursor.
pub const HASH_PROBES: u64 = 8;

/// Which shard slice an allocator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub shards: u32,
    pub shard: u32,
}

impl Slice {
    pub const WHOLE: Slice = Slice { shards: 1, shard: 0 };
}

#[derive(Debug, Clone)]
pub struct SlotAllocator {
    /// Number of slots.
    size: u128,
    /// Value of slot 0 for slicing (the first address; 0 for prefix slots).
    offset: u128,
    group_shift: u32,
    slice: Slice,
    cursor: u128,
    swept: bool,
    free: VecDeque<u128>,
}

impl Default for SlotAllocator {
    /// An empty space (used as a placeholder while an allocator is borrowed out).
    fn default() -> Self {
        SlotAllocator {
            size: 0,
            offset: 0,
            group_shift: 0,
            slice: Slice::WHOLE,
            cursor: 0,
            swept: true,
            free: VecDeque::new(),
        }
    }
}

impl SlotAllocator {
    pub fn new(size: u128, offset: u128, group_shift: u32, slice: Slice) -> SlotAllocator {
        assert!(slice.shards >= 1 && slice.shard < slice.shards, "bad slice {slice:?}");
        let mut a = SlotAllocator { size, offset, group_shift, slice, cursor: 0, swept: false, free: VecDeque::new() };
        match a.snap(0) {
            Some(c) => a.cursor = c,
            None => a.swept = true,
        }
        a
    }

    pub fn size(&self) -> u128 {
        self.size
    }

    /// How many slots belong to this allocator's slice (arithmetic, no walk).
    pub fn slice_len(&self) -> u128 {
        if self.size == 0 {
            return 0;
        }
        let (n, me, shift) = (self.slice.shards as u128, self.slice.shard as u128, self.group_shift);
        let ours = |v: u128| (v >> shift) % n == me;
        // Values below x (absolute, offset included) whose group is ours.
        let below = |x: u128| -> u128 {
            let g = x >> shift;
            let full = g / n + u128::from(g % n > me);
            let partial = if g % n == me { x - (g << shift) } else { 0 };
            (full << shift) + partial
        };
        let first = self.offset;
        let last = self.offset.wrapping_add(self.size - 1);
        below(last) + u128::from(ours(last)) - below(first)
    }

    /// Whether slot `j` belongs to this allocator's shard slice.
    pub fn in_slice(&self, j: u128) -> bool {
        j < self.size && self.group(j) % self.slice.shards as u128 == self.slice.shard as u128
    }

    fn group(&self, j: u128) -> u128 {
        self.offset.wrapping_add(j) >> self.group_shift
    }

    /// The first slot ≥ j in our slice, if any.
    fn snap(&self, j: u128) -> Option<u128> {
        if j >= self.size {
            return None;
        }
        let n = self.slice.shards as u128;
        let q = self.group(j);
        let d = (self.slice.shard as u128 + n - q % n) % n;
        let s = if d == 0 {
            j
        } else {
            // First slot of group q + d.
            ((q + d) << self.group_shift).checked_sub(self.offset)?
        };
        (s < self.size).then_some(s)
    }

    /// Find a slot for which `available` holds. `seed` is the client's keyed
    /// hash; `hint` a slot the client asked for. Without `fresh`, only slots
    /// handed back (the free list) are candidates besides the hint and the
    /// hashed probes: never-used slots are someone else's (the secondary's
    /// prefixes, RFC 8156 §4.2.2), so the sweep would find nothing and walk
    /// the whole space looking. Without `take` (an Advertise, which only
    /// offers) the allocator is left as it was: the slot found, and any
    /// passed on the way, stay where they were for the next one to ask.
    pub fn allocate(
        &mut self,
        seed: u64,
        hint: Option<u128>,
        fresh: bool,
        take: bool,
        mut available: impl FnMut(u128) -> bool,
    ) -> Option<u128> {
        if let Some(h) = hint
            && self.in_slice(h)
            && available(h)
        {
            return Some(h);
        }
        if self.size == 0 {
            return None;
        }
        for attempt in 0..HASH_PROBES {
            let h = super::hash::mix(seed, attempt) as u128;
            // Spread 64 hash bits over spaces larger than 2^64 too.
            let h = if self.size > u64::MAX as u128 { h << 64 | super::hash::mix(seed, attempt + 1000) as u128 } else { h };
            let j = h % self.size;
            let c = self.snap(j).or_else(|| self.snap(0));
            if let Some(c) = c
                && available(c)
            {
                return Some(c);
            }
        }
        let (cursor, swept) = (self.cursor, self.swept);
        let mut popped = Vec::new();
        let mut found = None;
        while let Some(j) = self.free.pop_front() {
            if !take {
                popped.push(j);
            }
            if self.in_slice(j) && available(j) {
                found = Some(j);
                break;
            }
        }
        while found.is_none() && fresh && !self.swept {
            let j = self.cursor;
            match self.snap(j + 1) {
                Some(n) => self.cursor = n,
                None => self.swept = true,
            }
            if available(j) {
                found = Some(j);
            }
        }
        if !take {
            (self.cursor, self.swept) = (cursor, swept);
            for j in popped.into_iter().rev() {
                self.free.push_front(j);
            }
        }
        found
    }

    /// A slot became available again (released, expired, freed by the partner).
    pub fn release(&mut self, j: u128) {
        if self.in_slice(j) {
            self.free.push_back(j);
        }
    }

}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn slices_partition_the_space() {
        for shards in 1..=5u32 {
            for shift in 0..=1 {
                let allocs: Vec<_> =
                    (0..shards).map(|s| SlotAllocator::new(103, 7, shift, Slice { shards, shard: s })).collect();
                for j in 0..103u128 {
                    assert_eq!(allocs.iter().filter(|a| a.in_slice(j)).count(), 1, "slot {j} shards {shards}");
                }
            }
        }
    }

    #[test]
    fn every_slot_of_a_small_slice_is_found_then_none() {
        let mut a = SlotAllocator::new(50, 1, 1, Slice { shards: 3, shard: 1 });
        let mut used = HashSet::new();
        let mut n = 0;
        while let Some(j) = a.allocate(n, None, true, true, |j| !used.contains(&j)) {
            assert!(a.in_slice(j));
            assert!(used.insert(j));
            n += 1;
        }
        assert_eq!(used.len(), (0..50).filter(|j| a.in_slice(*j)).count());
        // A released slot comes back.
        let some = *used.iter().next().unwrap();
        used.remove(&some);
        a.release(some);
        assert_eq!(a.allocate(999, None, true, true, |j| !used.contains(&j)), Some(some));
    }

    #[test]
    fn same_seed_same_slot_in_a_huge_space() {
        let mut a = SlotAllocator::new(1u128 << 64, 0, 1, Slice::WHOLE);
        let x = a.allocate(42, None, true, true, |_| true).unwrap();
        let y = a.allocate(42, None, true, true, |_| true).unwrap();
        assert_eq!(x, y);
        assert_ne!(a.allocate(43, None, true, true, |_| true).unwrap(), x);
    }

    #[test]
    fn hint_is_used_when_available_and_ours() {
        let mut a = SlotAllocator::new(1000, 0, 0, Slice { shards: 2, shard: 0 });
        assert_eq!(a.allocate(1, Some(10), true, true, |_| true), Some(10));
        assert_ne!(a.allocate(1, Some(11), true, true, |_| true), Some(11), "slot 11 is shard 1's");
    }

    #[test]
    fn slice_len_counts_exactly() {
        for shards in 1..=5u32 {
            for shift in 0..=1 {
                for (size, off) in [(103u128, 7u128), (1, 0), (2, 1), (64, 0), (65, 3)] {
                    for s in 0..shards {
                        let a = SlotAllocator::new(size, off, shift, Slice { shards, shard: s });
                        let want = (0..size).filter(|j| a.in_slice(*j)).count() as u128;
                        assert_eq!(a.slice_len(), want, "size {size} off {off} shift {shift} shard {s}/{shards}");
                    }
                }
            }
        }
        let huge = SlotAllocator::new(1u128 << 64, 0, 0, Slice { shards: 3, shard: 1 });
        assert_eq!(huge.slice_len(), ((1u128 << 64) - 1) / 3);
    }

    #[test]
    fn without_fresh_slots_only_the_free_list_is_used() {
        // A 2^64-slot space: a sweep would never end.
        let mut a = SlotAllocator::new(1u128 << 64, 0, 0, Slice::WHOLE);
        assert_eq!(a.allocate(5, None, false, true, |j| j == 12345), None);
        a.release(12345);
        assert_eq!(a.allocate(5, None, false, true, |j| j == 12345), Some(12345));
    }

    #[test]
    fn an_offer_leaves_the_allocator_as_it_was() {
        let mut a = SlotAllocator::new(10, 0, 0, Slice::WHOLE);
        a.release(7);
        // Offered twice (no take): the same free slot both times.
        assert_eq!(a.allocate(1, None, true, false, |j| j == 7), Some(7));
        assert_eq!(a.allocate(2, None, true, false, |j| j == 7), Some(7));
        // And a never-used slot found by the sweep is not skipped by the next sweep.
        let mut b = SlotAllocator::new(1 << 20, 0, 0, Slice::WHOLE);
        assert_eq!(b.allocate(3, None, true, false, |j| j == 5), Some(5));
        assert_eq!(b.allocate(4, None, true, true, |j| j == 5), Some(5));
    }

    #[test]
    fn whole_ipv6_space_does_not_overflow() {
        let mut a = SlotAllocator::new(u128::MAX, 0, 1, Slice { shards: 3, shard: 2 });
        let j = a.allocate(7, None, true, true, |_| true).unwrap();
        assert!(a.in_slice(j));
    }
}
