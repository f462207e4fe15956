//! The failover driver: everything between the endpoint and the world that
//! is not IO, so that production and the simulator run the same program.
//!
//! - Framing: bytes from the (TLS-protected) connection in, frames out,
//!   several messages per write.
//! - Routing: a received BNDUPD is taken apart and each binding judged by
//!   the shard holding its record; the BNDREPLY is assembled when every
//!   part has answered — and each part answers only after its write is
//!   durable, so a BNDREPLY never precedes its commit (§7.5.2, §4.4.1).
//!   Acknowledgements go to the shard holding the lease (`router`).
//! - The state barrier: after a state change no message leaves until every
//!   shard serves under the new state, so the partner never acts on a state
//!   some shard is not yet in.
//! - The UPDREQALL answer is streamed from the shards' stores in chunks,
//!   never holding the whole table.
//!
//! The runtime feeds inputs and carries out `Action`s in order (a `Persist`
//! completes before any later `Transmit`).

use std::collections::{HashMap, VecDeque};
use std::ops::Bound;

use super::bus::{Ack, PdCounts, ToFailover, ToShard};
use super::endpoint::{Endpoint, Output};
use super::router::ShardRouter;
use super::{EndpointPolicy, FailoverConfig, Persistent, bndupd};
use crate::lease::{LeaseKey, Time};
use crate::wire::{FailoverMessage, FrameDecoder, MAX_FRAME_LEN, ServerState, StatusCode};

/// What the runtime (or the simulator) must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write these bytes to the connection (one or more frames).
    Transmit(Vec<u8>),
    ToShard(usize, ToShard),
    /// Make the endpoint's state durable before any later `Transmit` (§6.3, §8.1).
    Persist(Persistent),
    /// Open a connection to the partner (the primary, §6.1).
    Connect,
    /// Close the connection (after writing what was transmitted before).
    Close(String),
    Transition { from: ServerState, to: ServerState },
}

/// Records read per store chunk while answering UPDREQALL.
pub const SCAN_CHUNK: usize = 1024;

/// A BNDUPD whose bindings are being judged by the shards.
struct Judging {
    msg: FailoverMessage,
    verdicts: Vec<Option<Result<(), StatusCode>>>,
    missing: usize,
    /// The connection it came on; an answer for an older one is dropped.
    conn: u64,
    /// Items stored but answered ConfigurationConflict (a key we reserve
    /// for another client).
    conflicts: Vec<usize>,
}

/// The UPDREQALL answer being read from the stores, shard by shard.
struct Stream {
    shard: usize,
    from: Bound<LeaseKey>,
    /// A chunk has been asked for and not yet received.
    waiting: bool,
}

pub struct Driver {
    ep: Endpoint,
    router: ShardRouter,
    /// The current connection's generation, if one is up; answers for an
    /// older connection are dropped.
    conn: Option<u64>,
    generation: u64,
    decoder: FrameDecoder,
    actions: VecDeque<Action>,
    /// Frames waiting to be transmitted.
    tx: Vec<u8>,
    /// The latest state published to the shards, its epoch, and what each shard applied.
    published: EndpointPolicy,
    epoch: u64,
    applied: Vec<u64>,
    judging: HashMap<u64, Judging>,
    next_req: u64,
    /// Per shard: judge items and acks gathered during one input.
    judge_batch: Vec<Vec<(u64, usize, bndupd::Received)>>,
    ack_batch: Vec<Vec<Ack>>,
    stream: Option<Stream>,
    /// Shards that have not finished reporting their flagged records.
    loading: usize,
    counts: Vec<PdCounts>,
    /// Records being moved: key → the shard to drop it once adopted.
    moving: HashMap<LeaseKey, usize>,
    /// Reserved keys the partner granted to another client (logged once
    /// each: the partner retries the refused update every 30 s).
    conflicts_logged: std::collections::HashSet<LeaseKey>,
}

impl Driver {
    /// A driver for `router.shards()` shards, from what was persisted.
    pub fn new(cfg: FailoverConfig, persisted: Option<Persistent>, router: ShardRouter, now: Time) -> Driver {
        let n = router.shards();
        let (ep, out) = Endpoint::new(cfg, persisted, now);
        let published = ep.policy();
        let mut d = Driver {
            ep,
            router,
            conn: None,
            generation: 0,
            decoder: FrameDecoder::new(MAX_FRAME_LEN),
            actions: VecDeque::new(),
            tx: Vec::new(),
            published,
            epoch: 0,
            applied: vec![0; n],
            judging: HashMap::new(),
            next_req: 1,
            judge_batch: vec![Vec::new(); n],
            ack_batch: vec![Vec::new(); n],
            stream: None,
            loading: n,
            counts: vec![PdCounts::default(); n],
            moving: HashMap::new(),
            conflicts_logged: Default::default(),
        };
        d.publish_state();
        d.outputs(now, out);
        d
    }

    /// A reload: the new pools (removed ones retired, see `SliceMap`),
    /// records that new pools cover but another shard holds, and the
    /// endpoint's live settings.
    pub fn reconfigure(&mut self, slices: crate::server::SliceMap, away: Vec<(LeaseKey, usize)>, tunables: (u32, f64, u64)) {
        self.router.reconfigure(slices, away);
        self.conflicts_logged.clear();
        let router = &self.router;
        self.ep.reconfigure(tunables.0, tunables.1, tunables.2, |k| router.owns(k));
    }

    /// A record now lives at `shard` (`ctl lease add` for a client of
    /// another shard than the key's slice owner).
    pub fn held_at(&mut self, key: LeaseKey, shard: usize) {
        self.router.held_at(key, shard);
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    pub fn router(&self) -> &ShardRouter {
        &self.router
    }

    /// Every shard serves under the latest published state.
    pub fn state_applied(&self) -> bool {
        self.applied.iter().all(|a| *a >= self.epoch)
    }

    /// Updates waiting for a shard's verdict.
    pub fn judging(&self) -> usize {
        self.judging.len()
    }

    /// Nothing in progress between the driver and the shards: no verdict
    /// awaited, no record moving, no store being streamed, nothing to do.
    pub fn settled(&self) -> bool {
        self.judging.is_empty() && self.moving.is_empty() && self.stream.is_none() && self.actions.is_empty() && self.tx.is_empty()
    }

    // ---- inputs ---------------------------------------------------------

    /// The connection to the partner is up (TCP, and TLS unless insecure).
    pub fn connected(&mut self, now: Time) {
        self.generation += 1;
        self.conn = Some(self.generation);
        self.decoder = FrameDecoder::new(MAX_FRAME_LEN);
        self.tx.clear();
        let out = self.ep.on_connected(now);
        self.outputs(now, out);
    }

    pub fn connect_failed(&mut self, now: Time) {
        self.ep.on_connect_failed(now);
    }

    /// The connection went down under us.
    pub fn disconnected(&mut self, now: Time) {
        self.drop_connection();
        let out = self.ep.on_disconnected(now);
        self.outputs(now, out);
    }

    /// Bytes from the partner (after TLS).
    pub fn received(&mut self, now: Time, data: &[u8]) {
        if self.conn.is_none() {
            return;
        }
        let conn = self.conn;
        if let Err(e) = self.decoder.push(data) {
            return self.protocol_error(now, format!("bad frame from the partner: {e}"));
        }
        loop {
            let m = match self.decoder.next_frame() {
                Ok(Some(f)) => FailoverMessage::decode(f),
                Ok(None) => break,
                Err(e) => return self.protocol_error(now, format!("bad frame from the partner: {e}")),
            };
            match m {
                Ok(m) => {
                    let out = self.ep.on_message(now, &m);
                    self.outputs(now, out);
                }
                // §6.1: a malformed message ends the connection.
                Err(e) => return self.protocol_error(now, format!("malformed message from the partner: {e}")),
            }
            if self.conn != conn {
                break; // the endpoint closed the connection
            }
        }
        self.finish(now);
    }

    pub fn tick(&mut self, now: Time) {
        let out = self.ep.on_tick(now);
        self.outputs(now, out);
        self.finish(now);
    }

    /// Operator command: the partner is down (§8).
    pub fn partner_down(&mut self, now: Time) -> Result<(), String> {
        let out = self.ep.partner_down(now)?;
        self.outputs(now, out);
        self.finish(now);
        Ok(())
    }

    /// Shutting down: DISCONNECT, persist.
    pub fn shutdown(&mut self, now: Time) {
        let out = self.ep.shutdown(now);
        self.outputs(now, out);
        self.finish(now);
    }

    pub fn from_shard(&mut self, now: Time, m: ToFailover) {
        match m {
            ToFailover::Committed { shard, leases, settled, counts } => {
                for l in leases {
                    self.router.held_at(l.key, shard);
                    if l.update_partner && self.router.owns(&l.key) {
                        self.ep.lease_committed(l);
                    } else if l.update_partner {
                        // Neither in our pools nor reserved (a pool a reload
                        // removed): the partner would only answer
                        // ConfigurationConflict (§7.5.4), every retry.
                        self.ep.lease_settled(&l.key);
                    }
                }
                // After the snapshots: a batch may hold an older flagged
                // version of a key whose final record is settled.
                for k in &settled {
                    self.ep.lease_settled(k);
                }
                self.set_counts(shard, counts);
            }
            ToFailover::Loaded { shard, leases, done } => {
                for l in leases.into_iter().filter(|l| self.router.owns(&l.key)) {
                    self.ep.lease_committed(l);
                }
                if done {
                    self.loading = self.loading.saturating_sub(1);
                    if self.loading == 0 {
                        self.ep.set_loaded();
                    }
                }
                let _ = shard;
            }
            ToFailover::Judged { items } => {
                for (req, idx, v) in items {
                    let Some(j) = self.judging.get_mut(&req) else { continue };
                    if let Some(slot) = j.verdicts.get_mut(idx)
                        && slot.is_none()
                    {
                        *slot = Some(v);
                        j.missing -= 1;
                    }
                    if j.missing == 0 {
                        self.answer(now, req);
                    }
                }
            }
            ToFailover::StateApplied { shard, epoch, counts } => {
                if let Some(a) = self.applied.get_mut(shard) {
                    *a = (*a).max(epoch);
                }
                self.set_counts(shard, counts);
            }
            ToFailover::ScanChunk { shard, leases, next } => {
                let last_shard = shard + 1 >= self.router.shards();
                if let Some(s) = self.stream.as_mut()
                    && s.shard == shard
                    && s.waiting
                {
                    s.waiting = false;
                    match next {
                        Some(k) => s.from = Bound::Excluded(k),
                        None => {
                            s.shard += 1;
                            s.from = Bound::Unbounded;
                        }
                    }
                    let done = next.is_none() && last_shard;
                    if done {
                        self.stream = None;
                    }
                    self.ep.stream_chunk(shard, leases, done);
                }
            }
            ToFailover::Handoff { shard, lease } => {
                let to = self.router.home(&lease);
                if to != shard {
                    // From now on the key's messages go to its new home,
                    // behind the Adopt on the same channel.
                    self.router.held_at(lease.key, to);
                    self.moving.insert(lease.key, shard);
                    self.actions.push_back(Action::ToShard(to, ToShard::Adopt { lease }));
                }
            }
            ToFailover::Forward { to, msg } => self.actions.push_back(Action::ToShard(to, msg)),
            ToFailover::Adopted { shard, key } => {
                self.router.held_at(key, shard);
                if let Some(from) = self.moving.remove(&key)
                    && from != shard
                {
                    self.actions.push_back(Action::ToShard(from, ToShard::Drop { key }));
                }
            }
            ToFailover::Offered { leases, .. } => self.ep.take_back(leases),
        }
        let out = self.ep.flush(now);
        self.outputs(now, out);
        self.finish(now);
    }

    /// The next thing to do, if any.
    pub fn poll(&mut self) -> Option<Action> {
        if let Some(a) = self.actions.pop_front() {
            return Some(a);
        }
        if !self.tx.is_empty() && self.conn.is_some() && self.state_applied() {
            return Some(Action::Transmit(std::mem::take(&mut self.tx)));
        }
        None
    }

    // ---- internals --------------------------------------------------------

    fn drop_connection(&mut self) {
        self.conn = None;
        self.tx.clear();
        self.stream = None;
        // Verdicts still to come are for a connection that is gone: the
        // partner sends those updates again on the next one.
        self.judging.clear();
    }

    fn protocol_error(&mut self, now: Time, why: String) {
        self.actions.push_back(Action::Close(why));
        self.disconnected(now);
    }

    fn set_counts(&mut self, shard: usize, c: PdCounts) {
        if let Some(x) = self.counts.get_mut(shard) {
            *x = c;
        }
        let mut total = PdCounts::default();
        for c in &self.counts {
            total.add(c);
        }
        self.ep.set_pd_counts(total);
    }

    fn publish_state(&mut self) {
        let p = self.ep.policy();
        if self.epoch > 0 && p == self.published {
            return;
        }
        self.published = p;
        self.epoch += 1;
        for s in 0..self.router.shards() {
            self.actions.push_back(Action::ToShard(s, ToShard::State { epoch: self.epoch, policy: p }));
        }
    }

    fn frame(&mut self, m: &FailoverMessage) {
        let start = self.tx.len();
        self.tx.extend_from_slice(&[0, 0]);
        match m.encode_into(&mut self.tx) {
            Ok(()) if self.tx.len() - start - 2 <= MAX_FRAME_LEN => {
                let len = (self.tx.len() - start - 2) as u16;
                self.tx[start..start + 2].copy_from_slice(&len.to_be_bytes());
            }
            // Our own messages always encode; never send a torn frame.
            _ => self.tx.truncate(start),
        }
    }

    fn outputs(&mut self, now: Time, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Send(m) => self.frame(&m),
                Output::Connect => self.actions.push_back(Action::Connect),
                Output::Close(why) => {
                    if !self.tx.is_empty() && self.conn.is_some() {
                        let bytes = std::mem::take(&mut self.tx);
                        self.actions.push_back(Action::Transmit(bytes));
                    }
                    self.actions.push_back(Action::Close(why));
                    self.drop_connection();
                }
                Output::Persist(p) => self.actions.push_back(Action::Persist(p)),
                Output::Transition { from, to } => self.actions.push_back(Action::Transition { from, to }),
                Output::Judge(m) => self.judge(now, m),
                Output::Acked(a) => {
                    let s = self.router.holder(&a.sent.key, Some(&a.sent.binding.duid));
                    self.ack_batch[s].push(a);
                }
                Output::StreamAll { from } => {
                    let (shard, from) = match from {
                        Some((s, k)) if s < self.router.shards() => (s, Bound::Included(k)),
                        _ => (0, Bound::Unbounded),
                    };
                    self.stream = Some(Stream { shard, from, waiting: false });
                }
                Output::GiveBackup(n) => {
                    let shards = self.router.shards() as u64;
                    for s in 0..shards {
                        let part = n / shards + u64::from(s < n % shards);
                        if part > 0 {
                            self.actions.push_back(Action::ToShard(s as usize, ToShard::GiveBackup { n: part }));
                        }
                    }
                }
                Output::TakeBack(n) => {
                    let shards = self.router.shards() as u64;
                    for s in 0..shards {
                        let part = n.div_ceil(shards);
                        self.actions.push_back(Action::ToShard(s as usize, ToShard::TakeBack { n: part }));
                    }
                }
            }
        }
        self.publish_state();
    }

    /// Take a BNDUPD apart and send each binding to the shard holding it.
    fn judge(&mut self, now: Time, m: FailoverMessage) {
        let Some(conn) = self.conn else { return };
        let router = &self.router;
        let parsed = bndupd::parse(&m, |k| router.owns(k));
        let req = self.next_req;
        self.next_req += 1;
        let mut verdicts = Vec::with_capacity(parsed.items.len());
        let mut missing = 0;
        let mut conflicts = Vec::new();
        for (i, item) in parsed.items.into_iter().enumerate() {
            // The partner granted a key we reserve for another client: its
            // reservations differ from ours (README "Reservations"). The
            // answer is ConfigurationConflict (so the partner never counts
            // on our ack of its lifetime), but the binding is stored: the
            // key stays out of the reserved client's reach while the other
            // may hold it.
            if let Ok(r) = &item
                && let Some(b) = &r.binding
                && r.status == crate::wire::BindingStatus::Active
                && self.router.slices().reserved_against(&r.key, &b.duid)
            {
                if self.conflicts_logged.insert(r.key) {
                    tracing::warn!(key = %r.key, client = %b.duid, "partner granted a key reserved here for another client: answered ConfigurationConflict; compare the reservations digest of ctl status on both servers");
                }
                conflicts.push(i);
            }
            match item {
                Err(code) => verdicts.push(Some(Err(code))),
                Ok(r) => {
                    let s = self.router.holder(&r.key, r.binding.as_ref().map(|b| &b.duid));
                    self.judge_batch[s].push((req, i, r));
                    verdicts.push(None);
                    missing += 1;
                }
            }
        }
        self.judging.insert(req, Judging { msg: m, verdicts, missing, conn, conflicts });
        if missing == 0 {
            self.answer(now, req);
        }
    }

    /// Every part of a BNDUPD has been judged (and stored): its BNDREPLY.
    fn answer(&mut self, now: Time, req: u64) {
        let Some(j) = self.judging.remove(&req) else { return };
        if Some(j.conn) != self.conn {
            return; // the connection it came on is gone: the partner resends
        }
        let mut v: Vec<Result<(), StatusCode>> = j.verdicts.into_iter().map(|v| v.unwrap_or(Ok(()))).collect();
        for i in j.conflicts {
            if let Some(x) = v.get_mut(i) {
                *x = Err(StatusCode::CONFIGURATION_CONFLICT);
            }
        }
        let reply = bndupd::reply(&j.msg, &v, now);
        self.frame(&reply);
    }

    /// After each input: send the gathered per-shard batches, keep the
    /// UPDREQALL stream fed.
    fn finish(&mut self, _now: Time) {
        for s in 0..self.router.shards() {
            if !self.judge_batch[s].is_empty() {
                let items = std::mem::take(&mut self.judge_batch[s]);
                self.actions.push_back(Action::ToShard(s, ToShard::Judge { items }));
            }
            if !self.ack_batch[s].is_empty() {
                let acks = std::mem::take(&mut self.ack_batch[s]);
                self.actions.push_back(Action::ToShard(s, ToShard::Acks(acks)));
            }
        }
        let room = self.ep.stream_room();
        if let Some(st) = self.stream.as_mut()
            && !st.waiting
            && room > 0
            && st.shard < self.router.shards()
        {
            st.waiting = true;
            let shard = st.shard;
            let from = st.from;
            self.actions.push_back(Action::ToShard(shard, ToShard::Scan { from, max: room.min(SCAN_CHUNK) }));
        }
    }
}
