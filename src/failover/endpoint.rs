//! The endpoint state machine (§8), connection handling (§6) and the
//! binding-update pipeline (§7), driven by explicit inputs. It owns no lease
//! table: the shards report durable snapshots (`lease_committed`) and apply
//! what the partner says (`Output::Judge`, `Output::Acked`).

use super::bus::{Ack, PdCounts};
use super::persist::Persistent;
use super::policy::EndpointPolicy;
use super::updates::{Answering, Sent, Updates};
use super::{FO_CONTACT_PER_KEEPALIVE_TIME, FailoverConfig, Role, SKEW_TOLERANCE, bndupd};
use crate::lease::{Lease, LeaseKey, Time};
use crate::wire::failover::{ConnectParams, PROTOCOL_VERSION, StateParams, disconnect};
use crate::wire::{
    BindingStatus, CONNECT_FLAG_FIXED_PD_LENGTH, DhcpOption, FailoverMessage, MessageType, SERVER_FLAG_COMMUNICATED,
    SERVER_FLAG_STARTUP, ServerState, Status, StatusCode,
};

/// What the driver must do, in order: persist before anything that follows
/// is sent; lease writes happen in the shards.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Send(FailoverMessage),
    /// Open a connection to the partner (the primary connects, §6.1).
    Connect,
    /// Close the connection (the endpoint already counts it as down).
    Close(String),
    Persist(Persistent),
    Transition { from: ServerState, to: ServerState },
    /// A BNDUPD arrived: judge it in the shards, then send its BNDREPLY (§7.5).
    Judge(FailoverMessage),
    /// A BNDREPLY's verdict on one of our updates (§7.7), for the shard
    /// holding the lease.
    Acked(Ack),
    /// Start streaming every record from the shards' stores (UPDREQALL
    /// answer), from the first, or from where a cut answer stopped.
    StreamAll { from: Option<(usize, LeaseKey)> },
    /// Primary: move this many delegable prefixes to the secondary (§4.2.2).
    GiveBackup(u64),
    /// Primary: ask for up to this many FREE-BACKUP prefixes back (§4.2.2).
    TakeBack(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    Down,
    /// TCP (and TLS) up, CONNECT/CONNECTREPLY not yet exchanged.
    Opening,
    /// CONNECT accepted: messages flow.
    Established,
}

/// Our own UPDREQ/UPDREQALL (§5.3.5, §5.3.6) in progress.
#[derive(Debug, Clone, Copy)]
struct OurRequest {
    xid: u32,
    sent_at: Time,
    all: bool,
}

/// UPDREQALL answers are read from the stores in chunks; keep this many
/// records queued ahead of the window.
pub const STREAM_AHEAD: usize = 4096;

pub struct Endpoint {
    cfg: FailoverConfig,
    p: Persistent,
    conn: Conn,
    /// A STATE has arrived on this connection; `partner_startup`: with S set.
    partner_state_known: bool,
    partner_startup: bool,
    /// The partner's state as its latest STATE said (even in STARTUP).
    partner_said: Option<ServerState>,
    previous_state: ServerState,
    time_of_failure: Time,
    started_at: Time,
    startup_until: Time,
    recover_wait_until: Time,
    ci_since: Time,
    xid: u32,
    partner_keepalive: u32,
    partner_max_unacked: u32,
    last_sent: Time,
    last_recv: Time,
    next_connect: Time,
    updates: Updates,
    our_request: Option<OurRequest>,
    /// When the last BNDUPD arrived (the UPDREQ watchdog, §8.5.2).
    last_bndupd: Time,
    /// We lost our store: ask for everything (§8.5.2), and serve nothing
    /// until we have it.
    need_all: bool,
    /// The state, start of state and PARTNER-DOWN time persisted by the
    /// previous run: re-entering that state after STARTUP keeps its times
    /// (§6.3: the STATE tells when the state began, not when we restarted).
    resumed: Option<(ServerState, Time, Time)>,
    /// Stable storage says we ran failover before (the C flag we persisted).
    communicated_before: bool,
    /// The partner said it never communicated with a partner (its C flag was
    /// clear): this pair never ran failover (§8.6.2).
    partner_never_communicated: bool,
    /// A message from the partner arrived during STARTUP.
    contacted: bool,
    /// The persisted record asked for a full resync already (not a first start).
    known_lost: bool,
    /// Every shard has reported its flagged records (start-up).
    loaded: bool,
    pd: PdCounts,
    next_retry: Time,
    next_persist: Time,
    next_balance: Time,
    next_poolreq: Time,
}

impl Endpoint {
    /// A reload changed what may change while running (the rest of the
    /// relationship's settings are fixed for the process): updates the
    /// partner rejected go again now, since its configuration may have
    /// changed as well (a pool added on both sides, one reload at a time).
    /// `ours`: is a key in our pools now.
    pub fn reconfigure(&mut self, auto_partner_down: u32, pd_secondary_share: f64, pd_secondary_max: u64, ours: impl Fn(&LeaseKey) -> bool) {
        self.cfg.auto_partner_down = auto_partner_down;
        self.cfg.pd_secondary_share = pd_secondary_share;
        self.cfg.pd_secondary_max = pd_secondary_max;
        self.updates.forget_unless(ours);
        self.updates.retry_rejected();
    }

    /// Start in STARTUP (§8.3) from what was persisted, if anything.
    pub fn new(cfg: FailoverConfig, persisted: Option<Persistent>, now: Time) -> (Endpoint, Vec<Output>) {
        // A lost store needs a full UPDREQALL, and keeps needing it across
        // restarts until one completes.
        let persisted_need_all = persisted.as_ref().is_none_or(|p| p.need_all) || cfg.resync_all;
        let known_lost = persisted.as_ref().is_some_and(|p| p.need_all) || cfg.resync_all;
        let resumed = persisted.as_ref().map(|p| (p.state, p.start_time, p.partner_down_time));
        let communicated_before = persisted.as_ref().is_some_and(|p| p.communicated);
        // §8.3.2 step 1: no record → PREVIOUS-STATE = RECOVER, TIME-OF-FAILURE = 0.
        // (§8.2 would start a fresh primary in PARTNER-DOWN; a primary that lost
        // its store would then reuse addresses clients still hold: digest §18
        // item 2, we take the safe reading for both roles.)
        // A restored backup (`--resync-all`) may be older than the last time
        // this server served: its TIME-OF-FAILURE is unknown (0), so the
        // §8.6.2 wait counts from this start.
        let backup = cfg.resync_all;
        let (previous, tof, p) = match persisted {
            Some(p) => (p.state, if backup { 0 } else { p.last_operating }, p),
            None => (
                ServerState::Recover,
                0,
                Persistent {
                    state: ServerState::Startup,
                    start_time: now,
                    partner_state: None,
                    partner_start_time: 0,
                    last_contact: 0,
                    last_operating: now,
                    partner_down_time: 0,
                    partner_pd_time: 0,
                    partner_lost_store_at: 0,
                    communicated: false,
                    mclt: cfg.mclt,
                    need_all: true,
                },
            ),
        };
        // §8.3.2 step 2: states that need communications become their
        // "communications failed" successor.
        let previous = match previous {
            ServerState::Normal => ServerState::CommunicationsInterrupted,
            ServerState::PotentialConflict => ServerState::ResolutionInterrupted,
            ServerState::Startup => ServerState::Recover,
            s => s,
        };
        let mut e = Endpoint {
            partner_keepalive: cfg.keepalive_time,
            partner_max_unacked: 1,
            p,
            conn: Conn::Down,
            partner_state_known: false,
            partner_startup: false,
            partner_said: None,
            previous_state: previous,
            time_of_failure: tof,
            started_at: now,
            startup_until: now + cfg.startup_time as u64,
            recover_wait_until: 0,
            ci_since: now,
            xid: 1,
            last_sent: now,
            last_recv: now,
            next_connect: now,
            updates: Updates::default(),
            our_request: None,
            last_bndupd: now,
            need_all: persisted_need_all,
            resumed,
            communicated_before,
            partner_never_communicated: false,
            contacted: false,
            known_lost,
            loaded: false,
            pd: PdCounts::default(),
            next_retry: now,
            next_persist: now,
            next_balance: now,
            next_poolreq: now,
            cfg,
        };
        let mut out = Vec::new();
        e.p.state = ServerState::Startup;
        e.p.start_time = now;
        e.p.need_all = e.need_all;
        if persisted_need_all {
            // Not operating: TIME-OF-FAILURE must not move past the last time
            // this server really served (§8.3.2 step 1).
            e.p.last_operating = tof;
        }
        out.push(Output::Persist(e.p.clone()));
        (e, out)
    }

    pub fn state(&self) -> ServerState {
        self.p.state
    }

    pub fn role(&self) -> Role {
        self.cfg.role
    }

    pub fn config(&self) -> &FailoverConfig {
        &self.cfg
    }

    pub fn persistent(&self) -> &Persistent {
        &self.p
    }

    pub fn mclt(&self) -> u32 {
        self.p.mclt
    }

    pub fn partner_state(&self) -> Option<ServerState> {
        self.p.partner_state
    }

    /// Communications OK in the sense of §8: connected and the partner's
    /// (non-STARTUP) state known.
    pub fn communications_ok(&self) -> bool {
        self.conn == Conn::Established && self.partner_state_known && !self.partner_startup
    }

    pub fn connected(&self) -> bool {
        self.conn != Conn::Down
    }

    pub fn unacked(&self) -> usize {
        self.updates.unacked()
    }

    /// Leases waiting to be sent or acknowledged.
    pub fn backlog(&self) -> usize {
        self.updates.backlog()
    }

    /// Our UPDREQ (false) or UPDREQALL (true) waiting for its UPDDONE.
    pub fn requesting(&self) -> Option<bool> {
        self.our_request.as_ref().map(|r| r.all)
    }

    /// What the answer to the partner's UPDREQ(ALL) is waiting for (diagnostics).
    pub fn answering(&self) -> Option<String> {
        self.updates.answering.as_ref().map(|a| {
            format!(
                "xid {} all {} remaining {} stream {} done {} in_flight {} loaded {}",
                a.xid,
                a.all,
                a.remaining.len(),
                a.stream.len(),
                a.stream_done,
                a.in_flight,
                self.loaded
            )
        })
    }

    pub fn pd_counts(&self) -> PdCounts {
        self.pd
    }

    pub fn policy(&self) -> EndpointPolicy {
        EndpointPolicy {
            role: self.cfg.role,
            state: self.p.state,
            mclt: self.p.mclt,
            partner_down_since: if self.p.state == ServerState::PartnerDown { self.p.partner_down_time } else { 0 },
            partner_lost_store_at: self.p.partner_lost_store_at,
        }
    }

    /// An UPDREQALL answer is being streamed and wants this many more records.
    pub fn stream_room(&self) -> usize {
        match &self.updates.answering {
            Some(a) if a.all && !a.stream_done => STREAM_AHEAD.saturating_sub(a.stream.len() + a.in_flight),
            _ => 0,
        }
    }

    fn next_xid(&mut self) -> u32 {
        loop {
            self.xid = (self.xid + 1) & 0xff_ffff;
            let busy = self.xid == 0
                || self.updates.outstanding.contains_key(&self.xid)
                || self.our_request.is_some_and(|r| r.xid == self.xid);
            if !busy {
                return self.xid;
            }
        }
    }

    fn send(&mut self, now: Time, m: FailoverMessage, out: &mut Vec<Output>) {
        self.last_sent = now;
        out.push(Output::Send(m));
    }

    fn abs(now: Time) -> u32 {
        bndupd::to_abs(now)
    }

    fn send_state(&mut self, now: Time, out: &mut Vec<Output>) {
        if self.conn != Conn::Established {
            return;
        }
        // §8.3.2 step 5: in STARTUP the STATE carries PREVIOUS-STATE with S set.
        let (state, mut flags) = if self.p.state == ServerState::Startup {
            (self.previous_state, SERVER_FLAG_STARTUP)
        } else {
            (self.p.state, 0)
        };
        if self.p.communicated {
            flags |= SERVER_FLAG_COMMUNICATED;
        }
        if self.partner_startup {
            flags |= crate::wire::SERVER_FLAG_ACK_STARTUP;
        }
        let sp = StateParams {
            state,
            flags,
            start_time_of_state: Self::abs(self.p.start_time),
            // §6.3: F_PARTNER_DOWN_TIME only in PARTNER-DOWN.
            partner_down_time: (state == ServerState::PartnerDown).then(|| Self::abs(self.p.partner_down_time)),
        };
        // §6.3: write the state before queueing the STATE message.
        out.push(Output::Persist(self.p.clone()));
        let xid = self.next_xid();
        self.send(now, sp.to_message(xid, Self::abs(now)), out);
    }

    fn go_down(&mut self, out: &mut Vec<Output>, why: String, close: bool) {
        if close && self.conn != Conn::Down {
            out.push(Output::Close(why));
        }
        self.conn = Conn::Down;
        self.partner_state_known = false;
        self.partner_startup = false;
        // Unacked BNDUPDs are sent again after reconnecting.
        self.updates.connection_lost(self.p.partner_start_time);
        self.our_request = None;
    }

    // ---- inputs ---------------------------------------------------------

    /// The transport connected (primary: our connect succeeded; secondary:
    /// the primary connected to us).
    pub fn on_connected(&mut self, now: Time) -> Vec<Output> {
        let mut out = Vec::new();
        if self.conn != Conn::Down {
            // The driver replaced the transport: forget the old connection.
            self.go_down(&mut out, String::new(), false);
        }
        self.conn = Conn::Opening;
        self.last_recv = now;
        self.last_sent = now;
        if self.cfg.role == Role::Primary {
            // §6.1.1: the primary sends CONNECT.
            let cp = ConnectParams {
                protocol_version: PROTOCOL_VERSION,
                mclt: self.cfg.mclt,
                keepalive_time: self.cfg.keepalive_time,
                max_unacked_bndupd: self.cfg.max_unacked_bndupd,
                relationship_name: Some(self.cfg.relationship_name.clone()),
                connect_flags: CONNECT_FLAG_FIXED_PD_LENGTH,
            };
            let xid = self.next_xid();
            self.send(now, cp.to_message(MessageType::Connect, xid, Self::abs(now)), &mut out);
        }
        self.evaluate(now, &mut out);
        out
    }

    pub fn on_connect_failed(&mut self, now: Time) {
        self.next_connect = now + self.cfg.connect_retry as u64;
    }

    /// The transport went down under us.
    pub fn on_disconnected(&mut self, now: Time) -> Vec<Output> {
        let mut out = Vec::new();
        self.go_down(&mut out, String::new(), false);
        self.next_connect = self.next_connect.max(now + 1);
        self.evaluate(now, &mut out);
        out
    }

    /// A durable lease the partner must hear of (§7.4), from its shard.
    pub fn lease_committed(&mut self, l: Lease) {
        let k = l.key;
        self.updates.push(l);
        if !self.loaded {
            // Still loading: an UPDREQ answer covers what the shards report.
            self.updates.add_to_answer(k);
        }
    }

    /// Every shard has reported the records it holds flagged for the partner.
    pub fn set_loaded(&mut self) {
        self.loaded = true;
    }

    pub fn loaded(&self) -> bool {
        self.loaded
    }

    /// The shards' delegable-prefix counts, summed.
    pub fn set_pd_counts(&mut self, c: PdCounts) {
        self.pd = c;
    }

    /// A chunk of the UPDREQALL answer read from shard `shard`'s store;
    /// `done` after the last chunk of the last shard.
    pub fn stream_chunk(&mut self, shard: usize, leases: Vec<Lease>, done: bool) {
        if let Some(a) = self.updates.answering.as_mut()
            && a.all
        {
            a.stream.extend(leases.into_iter().map(|l| (shard, l)));
            a.stream_done |= done;
        }
    }

    /// FREE-BACKUP prefixes the shards offer for take-back: each goes to the
    /// secondary as FREE (§4.2.2); our record changes only on its acceptance.
    pub fn take_back(&mut self, offered: Vec<Lease>) {
        for mut l in offered {
            if l.status != BindingStatus::FreeBackup || self.updates.in_flight(&l.key) || self.updates.has_pending(&l.key) {
                continue;
            }
            l.status = BindingStatus::Free;
            l.update_partner = true;
            self.updates.push_take_back(l);
        }
    }

    /// Operator command: the partner is down (§8.8.2, §8.9.2, §8.11.2;
    /// Figure 6 also from RECOVER, for a server that still has its store: a
    /// server that lost it must first get everything back, §8.5.2).
    pub fn partner_down(&mut self, now: Time) -> Result<Vec<Output>, String> {
        use ServerState as S;
        match self.p.state {
            S::Recover if self.need_all => Err(
                "partner-down is not allowed while this server recovers a lost store: it must first get every lease from its partner (RFC 8156 §8.5.2)".into(),
            ),
            S::Normal | S::CommunicationsInterrupted | S::ResolutionInterrupted | S::Recover => {
                let mut out = Vec::new();
                self.enter(S::PartnerDown, now, &mut out);
                self.evaluate(now, &mut out);
                Ok(out)
            }
            S::PartnerDown => Ok(Vec::new()),
            s => Err(format!("partner-down is not allowed in {} (RFC 8156 §8)", s.name())),
        }
    }

    /// Shutting down: DISCONNECT with ServerShuttingDown (§5.3.10).
    pub fn shutdown(&mut self, now: Time) -> Vec<Output> {
        let mut out = Vec::new();
        if self.conn != Conn::Down {
            let xid = self.next_xid();
            self.send(now, disconnect(xid, Self::abs(now), StatusCode::SERVER_SHUTTING_DOWN, "server shutting down"), &mut out);
            self.go_down(&mut out, "shutting down".into(), true);
        }
        if self.operating() {
            self.p.last_operating = now;
        }
        out.push(Output::Persist(self.p.clone()));
        out
    }

    /// Serving clients in the current state (TIME-OF-FAILURE follows only this).
    fn operating(&self) -> bool {
        !matches!(
            self.p.state,
            ServerState::Startup | ServerState::Recover | ServerState::RecoverWait | ServerState::PotentialConflict
        ) && !self.need_all
    }

    pub fn on_message(&mut self, now: Time, m: &FailoverMessage) -> Vec<Output> {
        let mut out = Vec::new();
        if self.conn == Conn::Down {
            return out;
        }
        self.last_recv = now;
        self.p.last_contact = now;
        if self.p.state == ServerState::Startup {
            self.contacted = true;
        }
        // §7.1, §7.5.1: time skew beyond 5 s → drop the connection.
        let sent = bndupd::from_abs(m.sent_time);
        if sent.abs_diff(now) > SKEW_TOLERANCE {
            if m.msg_type == MessageType::Connect && self.cfg.role == Role::Secondary {
                // §6.1.2: reject with ExcessiveTimeSkew.
                let r = FailoverMessage::new(MessageType::ConnectReply, m.transaction_id, Self::abs(now))
                    .with(DhcpOption::StatusCode(Status::new(StatusCode::EXCESSIVE_TIME_SKEW, "clocks differ by more than 5 s")));
                self.send(now, r, &mut out);
            }
            let rejected = match (m.msg_type, m.status()) {
                (MessageType::ConnectReply, Some(st)) => format!("; the partner rejected our CONNECT: {} ({})", st.code.name(), st.message),
                _ => String::new(),
            };
            self.go_down(&mut out, format!("time skew of {} s with the partner (RFC 8156 §7.1){rejected}", sent.abs_diff(now)), true);
            self.evaluate(now, &mut out);
            return out;
        }
        match m.msg_type {
            MessageType::Connect => self.got_connect(now, m, &mut out),
            MessageType::ConnectReply => self.got_connectreply(now, m, &mut out),
            _ if self.conn != Conn::Established => {
                // §6.1: nothing but CONNECT/CONNECTREPLY before the handshake.
                self.go_down(&mut out, format!("{} before CONNECT", m.msg_type), true);
            }
            MessageType::State => self.got_state(now, m, &mut out),
            MessageType::Contact => {}
            MessageType::Disconnect => {
                // §8.8.2: DISCONNECT → communications down.
                self.go_down(&mut out, "partner sent DISCONNECT".into(), true);
                // A partner shutting down (a restart, usually) is back soon:
                // retry at the usual pace; a refusal, less often.
                let shutting_down = m.status().is_some_and(|s| s.code == StatusCode::SERVER_SHUTTING_DOWN);
                let wait = if shutting_down { self.cfg.connect_retry } else { self.cfg.connect_retry_rejected };
                self.next_connect = now + wait as u64;
            }
            MessageType::BndUpd => {
                self.last_bndupd = now;
                // §7.5: judged and stored by the shards; the BNDREPLY follows
                // the durable write (§7.5.2).
                out.push(Output::Judge(m.clone()));
            }
            MessageType::BndReply => self.got_bndreply(m, &mut out),
            MessageType::PoolReq
                // §5.3.3/§5.3.4: only the primary answers; POOLRESP just acknowledges.
                if self.cfg.role == Role::Primary => {
                    let r = FailoverMessage::new(MessageType::PoolResp, m.transaction_id, Self::abs(now));
                    self.send(now, r, &mut out);
                    self.rebalance(now, &mut out);
                }
            MessageType::PoolResp => {}
            MessageType::UpdReq | MessageType::UpdReqAll => {
                // §5.3.5/§5.3.6: send what the partner has not acked (or
                // everything), then UPDDONE once all are acked.
                if m.msg_type == MessageType::UpdReqAll {
                    // §8.5.2: the partner lost its store (it MUST ask for
                    // everything only then): what it granted before may be
                    // forgotten on its side (see bndupd::judge, time(1)).
                    if self.p.partner_lost_store_at == 0 || self.updates.resume.is_none() {
                        self.p.partner_lost_store_at = now;
                        out.push(Output::Persist(self.p.clone()));
                    }
                    // §8.5.2: an answer cut by a lost connection resumes where
                    // it stopped if the partner has run on since (the same
                    // start of state); otherwise from the first record.
                    let partner_start = self.p.partner_start_time;
                    let from = self.updates.resume.take().filter(|r| r.partner_start == partner_start).map(|r| (r.shard, r.key));
                    self.updates.answering = Some(Answering::new(m.transaction_id, true));
                    out.push(Output::StreamAll { from });
                } else {
                    self.updates.answer_updreq(m.transaction_id);
                }
            }
            MessageType::UpdDone => {
                if let Some(r) = self.our_request
                    && r.xid == m.transaction_id
                {
                    self.our_request = None;
                    if r.all && self.need_all {
                        self.need_all = false;
                        self.p.need_all = false;
                        out.push(Output::Persist(self.p.clone()));
                    }
                    self.upd_done(now, &mut out);
                }
            }
            _ => {}
        }
        // Transitions first: what may be sent depends on the new state.
        self.evaluate(now, &mut out);
        self.pump(now, &mut out);
        out
    }

    fn got_connect(&mut self, now: Time, m: &FailoverMessage, out: &mut Vec<Output>) {
        if self.cfg.role != Role::Secondary {
            self.go_down(out, "CONNECT received by the primary".into(), true);
            return;
        }
        let reject = |code: StatusCode, why: &str| {
            FailoverMessage::new(MessageType::ConnectReply, m.transaction_id, Self::abs(now))
                .with(DhcpOption::StatusCode(Status::new(code, why)))
        };
        let cp = match ConnectParams::from_message(m) {
            Ok(c) => c,
            Err(e) => {
                let r = reject(StatusCode::MISSING_BINDING_INFORMATION, &e.to_string());
                self.send(now, r, out);
                self.go_down(out, format!("bad CONNECT: {e}"), true);
                return;
            }
        };
        // §6.1.2: version, relationship, flags.
        if cp.protocol_version.0 != PROTOCOL_VERSION.0 {
            let r = reject(StatusCode::NOT_SUPPORTED, "protocol version not supported");
            self.send(now, r, out);
            self.go_down(out, format!("partner speaks version {:?}", cp.protocol_version), true);
            return;
        }
        if cp.relationship_name.as_ref().is_some_and(|n| *n != self.cfg.relationship_name) {
            // No status code is named for this (digest §18 item 9).
            let r = reject(StatusCode::CONFIGURATION_CONFLICT, "unknown relationship name");
            self.send(now, r, out);
            self.go_down(out, format!("unknown relationship {:?}", cp.relationship_name), true);
            return;
        }
        if cp.connect_flags & CONNECT_FLAG_FIXED_PD_LENGTH == 0 {
            // §6.1.2: we delegate one prefix length per delegable prefix and
            // cannot process variable lengths.
            let r = reject(StatusCode::CONFIGURATION_CONFLICT, "variable delegated prefix lengths are not supported (CONNECT_FLAGS F = 0)");
            self.send(now, r, out);
            self.go_down(out, "partner delegates variable prefix lengths (CONNECT_FLAGS F = 0)".into(), true);
            return;
        }
        if cp.mclt < self.cfg.min_mclt {
            // RFC 8156 §1: failover is not for leases shorter than 30 s, and a
            // new lease gets at most the MCLT.
            let r = reject(StatusCode::CONFIGURATION_CONFLICT, "MCLT below 30 s (RFC 8156 section 1)");
            self.send(now, r, out);
            self.go_down(out, format!("partner's MCLT {} s is below {} s (RFC 8156 §1)", cp.mclt, self.cfg.min_mclt), true);
            return;
        }
        // §6.1.2: take the primary's MCLT; remember its keepalive and limit.
        self.p.mclt = cp.mclt;
        self.partner_keepalive = cp.keepalive_time.max(1);
        self.partner_max_unacked = cp.max_unacked_bndupd.max(1);
        let reply = ConnectParams {
            protocol_version: PROTOCOL_VERSION,
            mclt: cp.mclt,
            keepalive_time: self.cfg.keepalive_time,
            max_unacked_bndupd: self.cfg.max_unacked_bndupd,
            relationship_name: None,
            connect_flags: CONNECT_FLAG_FIXED_PD_LENGTH,
        };
        self.send(now, reply.to_message(MessageType::ConnectReply, m.transaction_id, Self::abs(now)), out);
        self.conn = Conn::Established;
        // §6.1: the secondary sends STATE right after an accepting CONNECTREPLY.
        self.send_state(now, out);
    }

    fn got_connectreply(&mut self, now: Time, m: &FailoverMessage, out: &mut Vec<Output>) {
        if self.cfg.role != Role::Primary || self.conn != Conn::Opening {
            self.go_down(out, "unexpected CONNECTREPLY".into(), true);
            return;
        }
        if let Some(s) = m.status()
            && s.code != StatusCode::SUCCESS
        {
            // §6.1: after a rejection retry less often, but keep retrying.
            self.go_down(out, format!("partner rejected CONNECT: {} {}", s.code.name(), s.message), true);
            self.next_connect = now + self.cfg.connect_retry_rejected as u64;
            return;
        }
        let cp = match ConnectParams::from_message(m) {
            Ok(c) => c,
            Err(e) => {
                self.go_down(out, format!("bad CONNECTREPLY: {e}"), true);
                return;
            }
        };
        // §6.1.3: version and MCLT must match, and we must be able to
        // process what the flags announce, else DISCONNECT.
        let problem = if cp.protocol_version.0 != PROTOCOL_VERSION.0 || cp.mclt != self.cfg.mclt {
            Some("version or MCLT mismatch")
        } else if cp.connect_flags & CONNECT_FLAG_FIXED_PD_LENGTH == 0 {
            Some("variable delegated prefix lengths are not supported (CONNECT_FLAGS F = 0)")
        } else {
            None
        };
        if let Some(why) = problem {
            let xid = self.next_xid();
            self.send(now, disconnect(xid, Self::abs(now), StatusCode::CONFIGURATION_CONFLICT, why), out);
            self.go_down(out, format!("CONNECTREPLY: {why}"), true);
            self.next_connect = now + self.cfg.connect_retry_rejected as u64;
            return;
        }
        self.partner_keepalive = cp.keepalive_time.max(1);
        self.partner_max_unacked = cp.max_unacked_bndupd.max(1);
        self.p.mclt = self.cfg.mclt;
        self.conn = Conn::Established;
        // §6.1: the primary sends STATE after an accepting CONNECTREPLY.
        self.send_state(now, out);
    }

    fn got_state(&mut self, _now: Time, m: &FailoverMessage, out: &mut Vec<Output>) {
        let sp = match StateParams::from_message(m) {
            Ok(sp) => sp,
            Err(_) if m.options.iter().any(|o| matches!(o, DhcpOption::Unknown { code, .. } if *code == crate::wire::opt::F_SERVER_STATE)) => {
                // A state this version does not know (a newer partner): the
                // STATE tells us nothing we can act on; keep the connection.
                return;
            }
            Err(_) => {
                self.go_down(out, "malformed STATE".into(), true);
                return;
            }
        };
        if !self.partner_state_known && sp.flags & SERVER_FLAG_COMMUNICATED == 0 {
            // §8.6.2: the partner has never communicated with a partner.
            self.partner_never_communicated = true;
        }
        self.partner_state_known = true;
        self.partner_startup = sp.flags & SERVER_FLAG_STARTUP != 0;
        self.partner_said = Some(sp.state);
        self.p.communicated = true;
        if !self.partner_startup {
            // §6.4: record the partner's state and when it began; forget its
            // partner-down time unless it is in PARTNER-DOWN.
            self.p.partner_state = Some(sp.state);
            self.p.partner_start_time = bndupd::from_abs(sp.start_time_of_state);
            self.p.partner_pd_time = if sp.state == ServerState::PartnerDown {
                sp.partner_down_time.map(bndupd::from_abs).unwrap_or(self.p.partner_start_time)
            } else {
                0
            };
        }
        out.push(Output::Persist(self.p.clone()));
    }

    /// The durable record of `k` needs nothing sent (see `Updates::settled`).
    pub fn lease_settled(&mut self, k: &LeaseKey) {
        self.updates.settled(k);
    }

    fn got_bndreply(&mut self, m: &FailoverMessage, out: &mut Vec<Output>) {
        let Some(sent) = self.updates.acked(m.transaction_id) else { return };
        let key = sent.lease.key;
        if let Some(a) = self.updates.answering.as_mut() {
            a.remaining.remove(&key);
            if sent.answer.is_some() {
                a.in_flight = a.in_flight.saturating_sub(1);
            }
        }
        let ack = bndupd::acks(m).into_iter().find(|a| a.key == key);
        let accepted = ack.as_ref().is_some_and(|a| a.accepted);
        let partner_lifetime_sent = ack.and_then(|a| a.partner_lifetime_sent);
        if !accepted && sent.answer.is_none() && !sent.take_back && !sent.superseded {
            // §7.7: a rejection needs nothing but remembering; the lease
            // stays flagged and goes out again at the next retry.
            self.updates.rejected(sent.lease.clone());
        }
        out.push(Output::Acked(Ack { sent: sent.lease, accepted, partner_lifetime_sent, take_back: sent.take_back }));
    }

    /// Our UPDREQ/UPDREQALL is answered (§5.3.7).
    fn upd_done(&mut self, now: Time, out: &mut Vec<Output>) {
        use ServerState as S;
        match (self.p.state, self.cfg.role) {
            // §8.5.2
            (S::Recover, _) => self.enter(S::RecoverWait, now, out),
            // §8.10.2: the primary gets out first.
            (S::PotentialConflict, Role::Primary) => self.enter(S::ConflictDone, now, out),
            (S::PotentialConflict, Role::Secondary) => self.enter(S::Normal, now, out),
            _ => {}
        }
    }

    fn send_updreq(&mut self, now: Time, all: bool, out: &mut Vec<Output>) {
        if self.our_request.is_some() || !self.communications_ok() {
            return;
        }
        let xid = self.next_xid();
        let t = if all { MessageType::UpdReqAll } else { MessageType::UpdReq };
        self.our_request = Some(OurRequest { xid, sent_at: now, all });
        self.last_bndupd = now;
        self.send(now, FailoverMessage::new(t, xid, Self::abs(now)), out);
    }

    /// §4.2.2: the primary keeps about `pd-secondary-share` of the available
    /// delegable prefixes (at most `pd-secondary-max`) with the secondary,
    /// with a threshold so that small changes move nothing.
    fn rebalance(&mut self, now: Time, out: &mut Vec<Output>) {
        if self.cfg.role != Role::Primary || !self.communications_ok() {
            return;
        }
        self.next_balance = now + 1;
        let (primary, backup) = (self.pd.primary_available(), self.pd.free_backup);
        let target = self.share_target(primary + backup);
        let threshold = (target / 16).max(1);
        if backup + threshold <= target {
            out.push(Output::GiveBackup((target - backup).min(BALANCE_STEP)));
        } else if backup > target + (target / 4).max(2 * threshold) {
            out.push(Output::TakeBack((backup - target).min(BALANCE_STEP)));
        }
    }

    fn share_target(&self, available: u64) -> u64 {
        ((available as f64 * self.cfg.pd_secondary_share).floor() as u64).min(self.cfg.pd_secondary_max)
    }

    /// §4.2.2: the secondary asks for prefixes when its share has run low.
    fn maybe_poolreq(&mut self, now: Time, out: &mut Vec<Output>) {
        if self.cfg.role != Role::Secondary || self.p.state != ServerState::Normal || !self.communications_ok() {
            return;
        }
        let (primary, backup) = (self.pd.primary_available(), self.pd.free_backup);
        let target = self.share_target(primary + backup);
        if backup + (target / 8).max(1) <= target && now >= self.next_poolreq {
            self.send_poolreq(now, out);
        }
    }

    fn send_poolreq(&mut self, now: Time, out: &mut Vec<Output>) {
        self.next_poolreq = now + 30;
        let xid = self.next_xid();
        self.send(now, FailoverMessage::new(MessageType::PoolReq, xid, Self::abs(now)), out);
    }

    /// Timers: keepalive, connection retries, STARTUP, RECOVER-WAIT,
    /// auto-partner-down, retries of rejected updates, prefix balance.
    pub fn on_tick(&mut self, now: Time) -> Vec<Output> {
        let mut out = Vec::new();
        if self.conn != Conn::Down {
            // §6.6: FO_KEEPALIVE_TIMER → the connection is dead.
            if now.saturating_sub(self.last_recv) >= self.cfg.keepalive_time as u64 {
                self.go_down(&mut out, "no message from the partner within the keepalive time (RFC 8156 §6.6)".into(), true);
            } else {
                // §6.5: FO_SEND_TIME = the partner's keepalive / 4.
                let send_time = (self.partner_keepalive / FO_CONTACT_PER_KEEPALIVE_TIME).max(1) as u64;
                if now.saturating_sub(self.last_sent) >= send_time && self.conn == Conn::Established {
                    let xid = self.next_xid();
                    self.send(now, FailoverMessage::new(MessageType::Contact, xid, Self::abs(now)), &mut out);
                }
            }
        } else if self.cfg.role == Role::Primary && now >= self.next_connect {
            // §6.1: the primary keeps trying.
            self.next_connect = now + self.cfg.connect_retry as u64;
            out.push(Output::Connect);
        }
        if let Some(r) = self.our_request
            && now.saturating_sub(r.sent_at.max(self.last_bndupd)) > self.cfg.updreq_timeout as u64
            && self.updates.unacked() == 0
        {
            // §8.5.2: no UPDDONE in time "and no BNDUPD messages are being
            // received": drop the connection and try again. A resync that is
            // flowing is never cut, however long it takes.
            self.go_down(&mut out, format!("no UPDDONE and no BNDUPD from the partner for {} s (updreq-timeout)", self.cfg.updreq_timeout), true);
        }
        if now >= self.next_retry {
            self.next_retry = now + 30;
            self.updates.retry_rejected();
        }
        if now >= self.next_persist {
            self.next_persist = now + 10;
            // TIME-OF-FAILURE (§8.3.2): the last time this server served.
            if self.operating() {
                self.p.last_operating = now;
            }
            out.push(Output::Persist(self.p.clone()));
        }
        // Transitions first: what may be sent depends on the new state.
        self.evaluate(now, &mut out);
        if self.p.state == ServerState::Normal && now >= self.next_balance {
            self.rebalance(now, &mut out);
        }
        self.maybe_poolreq(now, &mut out);
        self.pump(now, &mut out);
        out
    }

    /// Send what can be sent now (after new snapshots or stream chunks).
    pub fn flush(&mut self, now: Time) -> Vec<Output> {
        let mut out = Vec::new();
        self.pump(now, &mut out);
        out
    }

    /// Send queued BNDUPDs within the partner's MAX-UNACKED-BNDUPD (§6.1.1-3),
    /// and UPDDONE once an UPDREQ has been fully answered.
    fn pump(&mut self, now: Time, out: &mut Vec<Output>) {
        if !self.communications_ok() || self.p.state == ServerState::Startup {
            return;
        }
        // §8.10: in POTENTIAL-CONFLICT (and while recovering) updates flow
        // only in answer to the partner's UPDREQ, primary first; crossing
        // updates would each overwrite the other's view.
        let only_answers = matches!(
            self.p.state,
            ServerState::PotentialConflict | ServerState::Recover | ServerState::RecoverWait
        );
        let window = self.partner_max_unacked as usize;
        while self.updates.unacked() < window {
            let Some(s) = self.next_to_send(only_answers) else { break };
            let xid = self.next_xid();
            let m = bndupd::build(&s.lease, now, xid);
            if s.answer.is_some()
                && let Some(a) = self.updates.answering.as_mut()
            {
                a.in_flight += 1;
            }
            self.updates.sent(xid, s);
            self.send(now, m, out);
        }
        if self.loaded
            && let Some(a) = &self.updates.answering
            && a.complete()
        {
            let x = a.xid;
            self.updates.answering = None;
            self.send(now, FailoverMessage::new(MessageType::UpdDone, x, Self::abs(now)), out);
        }
    }

    /// The next update to send: the UPDREQ answer first (its keys), then
    /// the UPDREQALL stream, then (unless only answers may flow) the queue.
    fn next_to_send(&mut self, only_answers: bool) -> Option<Sent> {
        if let Some(l) = self.updates.next_answer() {
            let take_back = self.updates.take_back_of(&l.key);
            return Some(Sent { lease: l, answer: None, take_back, superseded: false });
        }
        if let Some(a) = self.updates.answering.as_mut()
            && let Some((shard, l)) = a.stream.pop_front()
        {
            return Some(Sent { lease: l, answer: Some(shard), take_back: false, superseded: false });
        }
        if only_answers {
            return None;
        }
        let l = self.updates.next_pending()?;
        let take_back = self.updates.take_back_of(&l.key);
        Some(Sent { lease: l, answer: None, take_back, superseded: false })
    }

    // ---- the state machine (§8) --------------------------------------------

    fn enter(&mut self, to: ServerState, now: Time, out: &mut Vec<Output>) {
        use ServerState as S;
        let from = self.p.state;
        if from == to {
            return;
        }
        self.p.state = to;
        self.p.start_time = now;
        out.push(Output::Transition { from, to });
        // Back in the state the previous run recorded: it began then, not now
        // (§6.3, §8.3.2 step 5 compares these times).
        let resumed = self.resumed.take().filter(|(s, _, _)| from == S::Startup && *s == to);
        if let Some((_, start, _)) = resumed {
            self.p.start_time = start;
        }
        match to {
            S::PartnerDown => {
                self.p.partner_down_time = match resumed {
                    Some((_, _, pd)) if pd != 0 => pd,
                    _ => now,
                };
            }
            S::CommunicationsInterrupted => self.ci_since = now,
            S::RecoverWait => {
                // §8.6.2: wait until (TIME-OF-FAILURE or start) + MCLT —
                // unless the pair never ran failover, as the partner's
                // information tells (its C flag clear) and ours agrees.
                let base = if self.time_of_failure != 0 { self.time_of_failure } else { self.started_at };
                self.recover_wait_until = if self.partner_never_communicated && !self.communicated_before {
                    now
                } else {
                    base + self.p.mclt as u64
                };
            }
            _ => {}
        }
        // §8.1: persist at every transition; §6.3: tell the partner.
        out.push(Output::Persist(self.p.clone()));
        self.send_state(now, out);
        if to == S::Normal {
            // §8.8: send every update not yet acked (they are queued), then
            // the secondary asks for delegable prefixes.
            self.pump(now, out);
            if self.cfg.role == Role::Secondary && self.communications_ok() {
                self.send_poolreq(now, out);
            }
        }
    }

    /// Apply every transition the current inputs call for.
    fn evaluate(&mut self, now: Time, out: &mut Vec<Output>) {
        use ServerState as S;
        for _ in 0..16 {
            let ok = self.communications_ok();
            let ps = if ok { self.p.partner_state } else { None };
            let next = match self.p.state {
                // A server that lost its store (or never finished getting it
                // back) serves nothing until an UPDREQALL completes and the
                // MCLT has passed (§8.5.2, §8.6): on every path, not only
                // RECOVER's (audit F1).
                S::Normal
                | S::CommunicationsInterrupted
                | S::PotentialConflict
                | S::ResolutionInterrupted
                | S::ConflictDone
                | S::RecoverDone
                    if self.need_all =>
                {
                    Some(S::Recover)
                }
                S::Startup => {
                    if ok {
                        // §8.3.2 step 5, once communications are OK (the
                        // partner's STATE without the STARTUP flag, so its
                        // start of state is that of its real state):
                        // CURRENT := PREVIOUS, unless the partner is in
                        // PARTNER-DOWN: RECOVER if it went there after we
                        // stopped operating, POTENTIAL-CONFLICT otherwise. A
                        // lost store recovers whatever the partner says.
                        let current = if self.need_all {
                            S::Recover
                        } else if self.p.partner_state == Some(S::PartnerDown) {
                            if self.p.partner_start_time > self.time_of_failure { S::Recover } else { S::PotentialConflict }
                        } else {
                            self.previous_state
                        };
                        Some(current)
                    } else if now >= self.startup_until {
                        // §8.3.2 step 1 (configurable): a server that could not
                        // reach its partner during STARTUP takes over; step 6
                        // otherwise. A store known to be lost never does.
                        if self.cfg.startup_partner_down && !self.contacted && !self.known_lost {
                            self.need_all = false;
                            self.p.need_all = false;
                            Some(S::PartnerDown)
                        } else if self.need_all {
                            Some(S::Recover)
                        } else {
                            Some(self.previous_state)
                        }
                    } else {
                        None
                    }
                }
                // §8.4.2
                S::PartnerDown => match ps {
                    Some(S::Normal | S::CommunicationsInterrupted | S::PartnerDown | S::PotentialConflict | S::ResolutionInterrupted | S::ConflictDone) => {
                        Some(S::PotentialConflict)
                    }
                    Some(S::RecoverDone) => Some(S::Normal),
                    _ => None,
                },
                // §8.5.2
                S::Recover => match ps {
                    // A server that lost its store first gets everything and
                    // waits out the MCLT (RECOVER-WAIT) before it may become
                    // responsive: through POTENTIAL-CONFLICT it could reach
                    // RESOLUTION-INTERRUPTED knowing nothing (found by the
                    // simulator, seed 13093).
                    Some(S::PotentialConflict | S::ResolutionInterrupted | S::ConflictDone) if !self.need_all => {
                        Some(S::PotentialConflict)
                    }
                    Some(_) => {
                        let all = self.need_all;
                        self.send_updreq(now, all, out);
                        None
                    }
                    None => None,
                },
                // §8.6.2: the timer runs whatever communications do.
                S::RecoverWait => (now >= self.recover_wait_until).then_some(S::RecoverDone),
                // §8.7.2
                S::RecoverDone => match ps {
                    // CONFLICT-DONE (the primary, "like NORMAL", §8.12) is not
                    // listed in §8.7.2; waiting for each other would deadlock.
                    Some(S::Normal | S::RecoverDone | S::ConflictDone) => Some(S::Normal),
                    Some(S::Recover | S::RecoverWait) => Some(S::CommunicationsInterrupted),
                    Some(S::PotentialConflict) => Some(S::PotentialConflict),
                    _ => None,
                },
                // §8.8.2
                S::Normal => match ps {
                    None => Some(S::CommunicationsInterrupted),
                    Some(S::Normal | S::CommunicationsInterrupted | S::RecoverDone) => None,
                    // The secondary leaves POTENTIAL-CONFLICT first; the primary
                    // waits in CONFLICT-DONE for it (§8.12).
                    Some(S::ConflictDone) if self.cfg.role == Role::Secondary => None,
                    // An unexpected partner state: go through COMMUNICATIONS-INTERRUPTED.
                    Some(_) => Some(S::CommunicationsInterrupted),
                },
                // §8.9.2
                S::CommunicationsInterrupted => match ps {
                    Some(S::Normal | S::CommunicationsInterrupted | S::RecoverDone) => Some(S::Normal),
                    Some(S::PartnerDown | S::PotentialConflict | S::ConflictDone | S::ResolutionInterrupted) => Some(S::PotentialConflict),
                    // RECOVER, RECOVER-WAIT (digest §18 item 8): stay.
                    Some(_) => None,
                    None => (self.cfg.auto_partner_down > 0
                        && now >= self.ci_since + self.cfg.auto_partner_down as u64)
                        .then_some(S::PartnerDown),
                },
                // §8.10.2
                S::PotentialConflict => {
                    if !ok {
                        Some(S::ResolutionInterrupted)
                    } else {
                        // §8.10: the primary asks first; the secondary asks
                        // once it sees the primary in CONFLICT-DONE.
                        if self.cfg.role == Role::Primary || ps == Some(S::ConflictDone) {
                            // A server that lost its store asks for everything.
                            let all = self.need_all;
                            self.send_updreq(now, all, out);
                        }
                        None
                    }
                }
                // §8.11.2
                S::ResolutionInterrupted => ok.then_some(S::PotentialConflict),
                // §8.12: until the secondary reaches NORMAL.
                S::ConflictDone => (ps == Some(S::Normal)).then_some(S::Normal),
            };
            match next {
                Some(n) if n != self.p.state => self.enter(n, now, out),
                _ => break,
            }
        }
    }
}

/// Prefixes moved per rebalancing step (the next step follows a second later).
pub const BALANCE_STEP: u64 = 1024;
