//! Where a lease table keeps its records: numbered slots that never move.
//!
//! The records loaded at start-up stay in the vector they were read into
//! (`from_records` adopts it: no copy, so a store of millions is touched
//! once, not twice); later slots come in fixed pages, so growing never
//! copies the table (a doubling `Vec` of 10 M records would move 1.7 GB in
//! one stall). A page's memory is reserved whole but written a slot at a
//! time, so a new page costs no stall either (filling 4096 slots at once
//! was a 5–40 ms pause on a VM that backs memory at first touch).

use std::ops::{Index, IndexMut};

use crate::lease::Lease;

const PAGE: usize = 4096;

#[derive(Default)]
pub struct Slab {
    base: Vec<Option<Lease>>,
    /// Each with capacity PAGE; only the last one is not full.
    pages: Vec<Vec<Option<Lease>>>,
    /// Slots in use or vacant: `base.len()` plus the pages' slots handed out.
    len: usize,
}

impl Slab {
    /// Adopt `records` as slots 0..n (in place: an `Option<Lease>` is the
    /// size of a `Lease`).
    pub fn from_records(records: Vec<Lease>) -> Slab {
        let base: Vec<Option<Lease>> = records.into_iter().map(Some).collect();
        Slab { len: base.len(), base, pages: Vec::new() }
    }

    /// A new empty slot at the end.
    pub fn push_empty(&mut self) -> u32 {
        let s = self.len;
        let p = s - self.base.len();
        if p / PAGE == self.pages.len() {
            self.pages.push(Vec::with_capacity(PAGE));
        }
        self.pages[p / PAGE].push(None);
        self.len += 1;
        u32::try_from(s).expect("fewer than 2^32 lease slots")
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots handed out (in use or vacant).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = &Option<Lease>> {
        let paged = self.len - self.base.len();
        self.base.iter().chain(self.pages.iter().flat_map(|p| p.iter()).take(paged))
    }
}

impl Index<u32> for Slab {
    type Output = Option<Lease>;
    fn index(&self, s: u32) -> &Option<Lease> {
        let s = s as usize;
        match s.checked_sub(self.base.len()) {
            None => &self.base[s],
            Some(p) => &self.pages[p / PAGE][p % PAGE],
        }
    }
}

impl IndexMut<u32> for Slab {
    fn index_mut(&mut self, s: u32) -> &mut Option<Lease> {
        let s = s as usize;
        match s.checked_sub(self.base.len()) {
            None => &mut self.base[s],
            Some(p) => &mut self.pages[p / PAGE][p % PAGE],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::codec::tests_support::sample;

    #[test]
    fn adopted_records_keep_their_memory_and_new_slots_come_in_pages() {
        let records: Vec<Lease> = (0..10).map(sample).collect();
        let at = records.as_ptr() as usize;
        let mut s = Slab::from_records(records);
        assert_eq!(s.base.as_ptr() as usize, at, "adopted in place");
        assert_eq!(s.len, 10);
        for i in 0..PAGE as u32 + 5 {
            let n = s.push_empty();
            assert_eq!(n, 10 + i);
            s[n] = Some(sample(n));
        }
        assert_eq!(s.pages.len(), 2);
        assert_eq!(s.iter().count(), s.len);
        assert!(s.iter().enumerate().all(|(i, l)| l.as_ref().unwrap().binding == sample(i as u32).binding));
        assert_eq!(s[3], Some(sample(3)));
        s[3] = None;
        assert_eq!(s.iter().flatten().count(), s.len - 1);
    }
}
