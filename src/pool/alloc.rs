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
    /// Values never handed out, as runs: given a value, the last value of
    /// the run it is in (reserved interface identifiers for addresses). The
    /// cursor jumps a run in one step.
    skip: Option<fn(u128) -> Option<u128>>,
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
            skip: None,
        }
    }
}

impl SlotAllocator {
    pub fn new(size: u128, offset: u128, group_shift: u32, slice: Slice) -> SlotAllocator {
        assert!(slice.shards >= 1 && slice.shard < slice.shards, "bad slice {slice:?}");
        let mut a = SlotAllocator { size, offset, group_shift, slice, cursor: 0, swept: false, free: VecDeque::new(), skip: None };
        match a.snap(0) {
            Some(c) => a.cursor = c,
            None => a.swept = true,
        }
        a
    }

    /// Never hand out the values in `skip`'s runs (see the field).
    pub fn skipping(mut self, skip: fn(u128) -> Option<u128>) -> SlotAllocator {
        self.skip = Some(skip);
        self
    }

    fn skipped(&self, j: u128) -> bool {
        self.skip.is_some_and(|f| f(self.offset.wrapping_add(j)).is_some())
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
            && !self.skipped(h)
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
                && !self.skipped(c)
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
            if self.in_slice(j) && !self.skipped(j) && available(j) {
                found = Some(j);
                break;
            }
        }
        while found.is_none() && fresh && !self.swept {
            let j = self.cursor;
            // Past the end of a skipped run in one step: O(1) whatever its length.
            let run_end = self.skip.and_then(|f| f(self.offset.wrapping_add(j))).map(|v| v.wrapping_sub(self.offset));
            match self.snap(run_end.unwrap_or(j).saturating_add(1)) {
                Some(n) => self.cursor = n,
                None => self.swept = true,
            }
            if run_end.is_none() && available(j) {
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

    #[cfg(test)]
    pub fn free_listed(&self, j: u128) -> bool {
        self.free.contains(&j)
    }

    #[cfg(test)]
    pub fn unlist(&mut self, j: u128) {
        self.free.retain(|x| *x != j);
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

    #[test]
    fn a_skipped_run_is_jumped_in_one_step() {
        // Two slots, the 2^24 reserved interface identifiers, two slots.
        let first = u128::from("2001:db8::200:5eff:fdff:fffe".parse::<std::net::Ipv6Addr>().unwrap());
        let size = 2 + (1 << 24) + 2;
        let mut a = SlotAllocator::new(size, first, 1, Slice::WHOLE).skipping(crate::pool::reserved::run_end);
        let mut asked = 0;
        let mut got = Vec::new();
        // Every probe collides: only the cursor finds slots.
        let mut taken = HashSet::new();
        while let Some(j) = a.allocate(1, None, true, true, |j| {
            asked += 1;
            !taken.contains(&j) && j != 1 // one slot busy
        }) {
            taken.insert(j);
            got.push(j);
        }
        assert!(got.iter().all(|j| !crate::pool::reserved::is_reserved(first + j)));
        got.sort();
        assert_eq!(got, vec![0, size - 2, size - 1]);
        assert!(asked < 100, "{asked} availability checks");
    }

    #[test]
    fn a_run_of_2_to_the_60_is_jumped_too() {
        // Stepping through it would never end.
        let mut a = SlotAllocator::new((1 << 60) + 2, 0, 1, Slice::WHOLE).skipping(|v| (v < 1 << 60).then_some((1 << 60) - 1));
        assert_eq!(a.allocate(1, None, true, true, |_| true), Some(1 << 60));
    }
}
