//! The binding-update pipeline of one endpoint (§7): durable lease snapshots
//! waiting to be sent, BNDUPDs waiting for their BNDREPLY, rejected updates
//! waiting for a retry, and the answer to the partner's UPDREQ/UPDREQALL.
//!
//! The endpoint never reads a lease table: the shards report every durable
//! change the partner must hear of (`queue`), and an UPDREQALL is answered
//! from a stream of store chunks (`stream`).

use std::collections::{HashMap, HashSet, VecDeque};

use crate::lease::{Lease, LeaseKey};

/// The partner asked for updates (§5.3.5, §5.3.6): what is left to answer.
#[derive(Debug)]
pub struct Answering {
    /// The UPDREQ/UPDREQALL's xid, echoed in UPDDONE.
    pub xid: u32,
    /// UPDREQALL: every record, streamed from the shards' stores.
    pub all: bool,
    /// UPDREQ: the keys that were waiting for the partner when it asked,
    /// until each is acknowledged; `queue`: those still to send.
    pub remaining: HashSet<LeaseKey>,
    pub queue: VecDeque<LeaseKey>,
    /// UPDREQALL: records read from the stores and not yet sent, with the
    /// shard each came from.
    pub stream: VecDeque<(usize, Lease)>,
    /// UPDREQALL: every store has been read to its end.
    pub stream_done: bool,
    /// UPDREQALL: answers sent and not yet acknowledged.
    pub in_flight: usize,
}

impl Answering {
    pub fn new(xid: u32, all: bool) -> Answering {
        Answering { xid, all, remaining: HashSet::new(), queue: VecDeque::new(), stream: VecDeque::new(), stream_done: !all, in_flight: 0 }
    }

    pub fn complete(&self) -> bool {
        self.remaining.is_empty() && self.stream.is_empty() && self.stream_done && self.in_flight == 0
    }
}

/// A BNDUPD on the wire: the snapshot it was built from, whether it
/// answers an UPDREQALL (from which shard's store), and whether it offers a
/// prefix back (§4.2.2).
#[derive(Debug, Clone)]
pub struct Sent {
    pub lease: Lease,
    pub answer: Option<usize>,
    pub take_back: bool,
    /// The key's record has since settled (acked, or the partner's own
    /// update accepted): the snapshot is history, never to be sent again.
    pub superseded: bool,
}

/// Where an UPDREQALL answer cut by a lost connection stopped: the first
/// record not acknowledged (shard, key). Good only for the same run of the
/// partner (its start of state, §6.3, tells), and of this server (it lives
/// in memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub partner_start: crate::lease::Time,
    pub shard: usize,
    pub key: LeaseKey,
}

#[derive(Debug, Default)]
pub struct Updates {
    /// The latest durable snapshot of each lease the partner must hear of.
    pending: HashMap<LeaseKey, Lease>,
    /// Send order; keys no longer in `pending` are skipped.
    order: VecDeque<LeaseKey>,
    /// BNDUPDs sent, by xid.
    pub outstanding: HashMap<u32, Sent>,
    /// Keys with a BNDUPD in flight (at most one per key).
    in_flight: HashMap<LeaseKey, u32>,
    /// Updates the partner rejected (§7.7): sent again at the next retry.
    rejected: HashMap<LeaseKey, Lease>,
    /// Pending snapshots that offer a FREE-BACKUP prefix back as FREE.
    taking_back: HashSet<LeaseKey>,
    pub answering: Option<Answering>,
    /// An UPDREQALL answer cut short, to resume on the partner's next one.
    pub resume: Option<Resume>,
}

impl Updates {
    /// A durable snapshot the partner must hear of (replaces an older one).
    pub fn push(&mut self, l: Lease) {
        let k = l.key;
        self.rejected.remove(&k);
        self.taking_back.remove(&k);
        if self.pending.insert(k, l).is_none() {
            self.order.push_back(k);
        }
    }

    pub fn in_flight(&self, k: &LeaseKey) -> bool {
        self.in_flight.contains_key(k)
    }

    /// Leases waiting to be sent or acknowledged (for status and backlog).
    pub fn backlog(&self) -> usize {
        self.pending.len() + self.outstanding.len() + self.rejected.len()
    }

    pub fn unacked(&self) -> usize {
        self.outstanding.len()
    }

    /// Answer an UPDREQ (§5.3.5): everything the partner has not acked,
    /// rejected updates included.
    pub fn answer_updreq(&mut self, xid: u32) {
        self.retry_rejected();
        let mut a = Answering::new(xid, false);
        a.remaining = self.pending.keys().chain(self.in_flight.keys()).copied().collect();
        a.queue = self.order.iter().filter(|k| self.pending.contains_key(k)).copied().collect();
        self.answering = Some(a);
    }

    /// The next snapshot answering an UPDREQ, if any is left to send.
    pub fn next_answer(&mut self) -> Option<Lease> {
        loop {
            let a = self.answering.as_mut()?;
            let k = a.queue.pop_front()?;
            if self.in_flight.contains_key(&k) {
                continue; // its BNDREPLY takes it off `remaining`
            }
            match self.pending.remove(&k) {
                Some(l) => return Some(l),
                None => {
                    if let Some(a) = self.answering.as_mut() {
                        a.remaining.remove(&k);
                    }
                }
            }
        }
    }

    /// Start-up: a record reported while an UPDREQ is being answered joins the answer.
    pub fn add_to_answer(&mut self, k: LeaseKey) {
        if let Some(a) = self.answering.as_mut()
            && !a.all
            && a.remaining.insert(k)
        {
            a.queue.push_back(k);
        }
    }

    /// Offer a FREE-BACKUP prefix back: `l` is our record with FREE status.
    pub fn push_take_back(&mut self, l: Lease) {
        let k = l.key;
        self.push(l);
        self.taking_back.insert(k);
    }

    /// Whether the snapshot about to be sent for `k` is a take-back offer.
    pub fn take_back_of(&mut self, k: &LeaseKey) -> bool {
        self.taking_back.remove(k)
    }

    /// The next pending snapshot to send, if any (in arrival order); a key
    /// already in flight waits for its BNDREPLY (its newer snapshot stays).
    pub fn next_pending(&mut self) -> Option<Lease> {
        let n = self.order.len();
        for _ in 0..n {
            let k = self.order.pop_front()?;
            if !self.pending.contains_key(&k) {
                continue;
            }
            if self.in_flight.contains_key(&k) {
                self.order.push_back(k);
                continue;
            }
            return self.pending.remove(&k);
        }
        None
    }

    pub fn has_pending(&self, k: &LeaseKey) -> bool {
        self.pending.contains_key(k)
    }

    pub fn sent(&mut self, xid: u32, s: Sent) {
        self.in_flight.insert(s.lease.key, xid);
        self.outstanding.insert(xid, s);
    }

    /// The BNDREPLY for `xid` arrived: what was sent.
    pub fn acked(&mut self, xid: u32) -> Option<Sent> {
        let s = self.outstanding.remove(&xid)?;
        if self.in_flight.get(&s.lease.key) == Some(&xid) {
            self.in_flight.remove(&s.lease.key);
        }
        Some(s)
    }

    /// The partner rejected this snapshot: keep it for the next retry,
    /// unless a newer one is already waiting.
    pub fn rejected(&mut self, l: Lease) {
        if !self.pending.contains_key(&l.key) {
            self.rejected.insert(l.key, l);
        }
    }

    /// The durable record of `k` needs nothing sent: the partner acked it,
    /// or it is the partner's own update we accepted. Whatever we queued,
    /// had rejected or have in flight about `k` is older, and history: sent
    /// again it would ping-pong with the partner every retry, overwrite the
    /// newer record at a partner that lost its store since (seed 20010281),
    /// or flip two crossing updates in a conflict (seed 255). Prefix offers
    /// (take-back) have their own life and are left alone.
    pub fn settled(&mut self, k: &LeaseKey) {
        if self.taking_back.contains(k) {
            return;
        }
        self.rejected.remove(k);
        self.pending.remove(k);
        if let Some(x) = self.in_flight.get(k)
            && let Some(s) = self.outstanding.get_mut(x)
            && !s.take_back
        {
            s.superseded = true;
        }
    }

    /// Keys a reload took out of our pools: nothing queued or rejected about
    /// them goes out again (the partner answers ConfigurationConflict).
    pub fn forget_unless(&mut self, ours: impl Fn(&LeaseKey) -> bool) {
        let gone: Vec<LeaseKey> = self.pending.keys().chain(self.rejected.keys()).filter(|k| !ours(k)).copied().collect();
        for k in gone {
            self.settled(&k);
        }
    }

    /// Rejected updates go back in the queue (the periodic retry, §7.7).
    pub fn retry_rejected(&mut self) {
        let mut r: Vec<Lease> = std::mem::take(&mut self.rejected).into_values().collect();
        r.sort_by_key(|l| l.key);
        for l in r {
            self.push(l);
        }
    }

    /// The connection is gone: everything unacknowledged is sent again on
    /// the next one; an UPDREQALL answer in progress remembers where it
    /// stopped (`partner_start`: the partner's start of state now).
    pub fn connection_lost(&mut self, partner_start: crate::lease::Time) {
        // In xid order (the order they were sent): deterministic, and the
        // same order again on the next connection.
        let mut out: Vec<(u32, Sent)> = self.outstanding.drain().collect();
        out.sort_by_key(|(x, _)| *x);
        let out: Vec<Sent> = out.into_iter().map(|(_, s)| s).collect();
        self.in_flight.clear();
        let mut first: Option<(usize, LeaseKey)> = None;
        if let Some(a) = self.answering.as_ref().filter(|a| a.all)
            && let Some((s, l)) = a.stream.front()
        {
            first = Some((*s, l.key));
        }
        for s in out {
            match s.answer {
                Some(shard) => {
                    let pos = (shard, s.lease.key);
                    if first.is_none_or(|f| pos < f) {
                        first = Some(pos);
                    }
                }
                None if !s.take_back && !s.superseded && !self.pending.contains_key(&s.lease.key) => self.push(s.lease),
                None => {}
            }
        }
        self.retry_rejected();
        if let Some(a) = self.answering.take().filter(|a| a.all) {
            self.resume = match first {
                Some((shard, key)) => Some(Resume { partner_start, shard, key }),
                // Everything was sent and acknowledged: only UPDDONE was missing.
                None if a.stream_done => None,
                None => self.resume,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{Binding, IaType};
    use crate::wire::Duid;

    fn lease() -> Lease {
        Lease::active(
            LeaseKey::Addr("2001:db8::5".parse().unwrap()),
            Binding { duid: Duid::ll(1, &[1]), ia_type: IaType::Na, iaid: 1 },
            100,
            30,
            60,
            15,
            24,
        )
    }

    fn send(u: &mut Updates, xid: u32) -> Lease {
        let l = u.next_pending().expect("a pending snapshot");
        u.sent(xid, Sent { lease: l.clone(), answer: None, take_back: false, superseded: false });
        l
    }

    #[test]
    fn a_snapshot_the_partners_own_update_replaced_is_never_sent_again() {
        // Seed 20010281: our update was rejected (the partner's record is
        // newer), then we accepted the partner's. Retrying ours would
        // ping-pong; after the partner lost its store it would win.
        let mut u = Updates::default();
        u.push(lease());
        let l = send(&mut u, 1);
        u.acked(1);
        u.rejected(l.clone());
        u.settled(&l.key);
        u.retry_rejected();
        assert!(u.next_pending().is_none(), "a superseded rejection was retried");
        // In flight when the partner's update is accepted, then the
        // connection drops: not sent again on the next one.
        u.push(lease());
        let l = send(&mut u, 2);
        u.settled(&l.key);
        u.connection_lost(0);
        assert!(u.next_pending().is_none(), "a superseded snapshot was resent after a reconnect");
        assert_eq!(u.backlog(), 0);
        // Queued but not sent yet (PARTNER-DOWN: no connection), then the
        // partner's update wins in the conflict (seed 255): not sent.
        u.push(lease());
        u.settled(&lease().key);
        assert!(u.next_pending().is_none(), "a settled record's older snapshot was sent");
        // Without the partner's update the same snapshot is resent.
        u.push(lease());
        send(&mut u, 3);
        u.connection_lost(0);
        assert!(u.next_pending().is_some());
    }
}
