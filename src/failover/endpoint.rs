//! The endpoint state machine (§8), connection handling (§6) and the
//! binding-update pipeline (§7), driven by explicit inputs.

use std::collections::{HashMap, HashSet, VecDeque};

use super::bndupd;
use super::persist::Persistent;
use super::policy::EndpointPolicy;
use super::{Bindings, FO_CONTACT_PER_KEEPALIVE_TIME, FailoverConfig, SKEW_TOLERANCE, address_owner};
use crate::config::Role;
use crate::lease::{Lease, LeaseKey, Time};
use crate::wire::failover::{ConnectParams, PROTOCOL_VERSION, StateParams, disconnect};
use crate::wire::{
    BindingStatus, CONNECT_FLAG_FIXED_PD_LENGTH, DhcpOption, FailoverMessage, MessageType, SERVER_FLAG_COMMUNICATED,
    SERVER_FLAG_STARTUP, ServerState, Status, StatusCode,
};

/// What the driver must do. Persist and lease writes (through `Bindings`)
/// come first, then messages are sent in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Send(FailoverMessage),
    /// Open a connection to the partner (the primary connects, §6.1).
    Connect,
    /// Close the connection (the endpoint already counts it as down).
    Close(String),
    Persist(Persistent),
    Transition { from: ServerState, to: ServerState },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    Down,
    /// TCP (and TLS) up, CONNECT/CONNECTREPLY not yet exchanged.
    Opening,
    /// CONNECT accepted: messages flow.
    Established,
}

#[derive(Debug, Clone)]
struct Outstanding {
    key: LeaseKey,
    status: BindingStatus,
    start: Time,
    cltt: Time,
}

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
    queue: VecDeque<LeaseKey>,
    queued: HashSet<LeaseKey>,
    outstanding: HashMap<u32, Outstanding>,
    /// Answering the partner's UPDREQ/UPDREQALL: its xid and the leases not yet acked.
    /// Answering the partner's UPDREQ(ALL): its xid and the keys still to be acked
    /// (ordered, so the simulator stays deterministic).
    answering: Option<(u32, std::collections::BTreeSet<LeaseKey>)>,
    /// Our own UPDREQ/UPDREQALL in flight: xid and when sent.
    our_updreq: Option<(u32, Time, bool)>,
    /// We lost our store: ask for everything (§8.5.2).
    need_all: bool,
    next_rescan: Time,
    next_persist: Time,
    next_reclaim: Time,
}

impl Endpoint {
    /// Start in STARTUP (§8.3) from what was persisted, if anything.
    pub fn new(cfg: FailoverConfig, persisted: Option<Persistent>, now: Time) -> (Endpoint, Vec<Output>) {
        // A lost store needs a full UPDREQALL, and keeps needing it across
        // restarts until one completes.
        let persisted_need_all = persisted.as_ref().is_none_or(|p| p.need_all);
        // §8.3.2 step 1: no record → PREVIOUS-STATE = RECOVER, TIME-OF-FAILURE = 0.
        // (§8.2 would start a fresh primary in PARTNER-DOWN; a primary that lost
        // its store would then reuse addresses clients still hold: digest §18
        // item 2, we take the safe reading for both roles.)
        let (previous, tof, p) = match persisted {
            Some(p) => (p.state, p.last_operating, p),
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
            queue: VecDeque::new(),
            queued: HashSet::new(),
            outstanding: HashMap::new(),
            answering: None,
            our_updreq: None,
            need_all: persisted_need_all,
            next_rescan: now,
            next_persist: now,
            next_reclaim: now,
            cfg,
        };
        let mut out = Vec::new();
        e.p.state = ServerState::Startup;
        e.p.start_time = now;
        e.p.last_operating = now;
        out.push(Output::Persist(e.p.clone()));
        (e, out)
    }

    pub fn state(&self) -> ServerState {
        self.p.state
    }

    pub fn role(&self) -> Role {
        self.cfg.role
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

    pub fn unacked(&self) -> usize {
        self.outstanding.len()
    }

    /// Leases waiting to be sent or acknowledged.
    pub fn backlog(&self) -> usize {
        self.queued.len() + self.outstanding.len()
    }

    pub fn policy(&self) -> EndpointPolicy {
        EndpointPolicy { role: self.cfg.role, state: self.p.state, mclt: self.p.mclt }
    }

    fn next_xid(&mut self) -> u32 {
        loop {
            self.xid = (self.xid + 1) & 0xff_ffff;
            let busy = self.xid == 0
                || self.outstanding.contains_key(&self.xid)
                || self.our_updreq.is_some_and(|(x, _, _)| x == self.xid);
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
        // Unacked BNDUPDs stay flagged; they are sent again after reconnecting.
        self.outstanding.clear();
        self.queue.clear();
        self.queued.clear();
        self.answering = None;
        self.our_updreq = None;
    }

    // ---- inputs ---------------------------------------------------------

    /// The transport connected (primary: our connect succeeded; secondary:
    /// the primary connected to us).
    pub fn on_connected(&mut self, now: Time, b: &mut dyn Bindings) -> Vec<Output> {
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
        self.evaluate(now, b, &mut out);
        out
    }

    pub fn on_connect_failed(&mut self, now: Time) {
        self.next_connect = now + self.cfg.connect_retry as u64;
    }

    /// The transport went down under us.
    pub fn on_disconnected(&mut self, now: Time, b: &mut dyn Bindings) -> Vec<Output> {
        let mut out = Vec::new();
        self.go_down(&mut out, String::new(), false);
        self.next_connect = self.next_connect.max(now + 1);
        self.evaluate(now, b, &mut out);
        out
    }

    /// The engine changed a lease: the partner must hear of it (§7.4).
    pub fn lease_changed(&mut self, key: LeaseKey) {
        if self.queued.insert(key) {
            self.queue.push_back(key);
        }
    }

    /// Operator command: the partner is down (§8.8.2, §8.9.2, §8.11.2).
    pub fn partner_down(&mut self, now: Time, b: &mut dyn Bindings) -> Result<Vec<Output>, String> {
        use ServerState as S;
        match self.p.state {
            S::Normal | S::CommunicationsInterrupted | S::ResolutionInterrupted => {
                let mut out = Vec::new();
                self.enter(S::PartnerDown, now, b, &mut out);
                self.evaluate(now, b, &mut out);
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
        self.p.last_operating = now;
        out.push(Output::Persist(self.p.clone()));
        out
    }

    pub fn on_message(&mut self, now: Time, m: &FailoverMessage, b: &mut dyn Bindings) -> Vec<Output> {
        let mut out = Vec::new();
        if self.conn == Conn::Down {
            return out;
        }
        self.last_recv = now;
        self.p.last_contact = now;
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
            self.evaluate(now, b, &mut out);
            return out;
        }
        match m.msg_type {
            MessageType::Connect => self.got_connect(now, m, b, &mut out),
            MessageType::ConnectReply => self.got_connectreply(now, m, b, &mut out),
            _ if self.conn != Conn::Established => {
                // §6.1: nothing but CONNECT/CONNECTREPLY before the handshake.
                self.go_down(&mut out, format!("{} before CONNECT", m.msg_type), true);
            }
            MessageType::State => self.got_state(now, m, b, &mut out),
            MessageType::Contact => {}
            MessageType::Disconnect => {
                // §8.8.2: DISCONNECT → communications down.
                self.go_down(&mut out, "partner sent DISCONNECT".into(), true);
                self.next_connect = now + self.cfg.connect_retry_rejected as u64;
            }
            MessageType::BndUpd => {
                let r = bndupd::process(m, now, self.cfg.role, self.p.mclt, b);
                for l in r.accepted {
                    let (k, again) = (l.key, l.update_partner);
                    b.store(l);
                    if again {
                        self.lease_changed(k);
                    }
                }
                // §7.5.4: after OutdatedBindingInformation, flag our lease so
                // the partner gets our newer data.
                for k in r.outdated {
                    if let Some(mut l) = b.lease(&k)
                        && !l.update_partner
                    {
                        l.update_partner = true;
                        b.store(l);
                        self.lease_changed(k);
                    }
                }
                // §7.5.2: the BNDREPLY follows the durable write (driver ordering).
                self.send(now, r.reply, &mut out);
            }
            MessageType::BndReply => self.got_bndreply(now, m, b),
            MessageType::PoolReq
                // §5.3.3/§5.3.4: only the primary answers; POOLRESP just acknowledges.
                if self.cfg.role == Role::Primary => {
                    let r = FailoverMessage::new(MessageType::PoolResp, m.transaction_id, Self::abs(now));
                    self.send(now, r, &mut out);
                    self.rebalance(now, b);
                }
            MessageType::PoolResp => {}
            MessageType::UpdReq | MessageType::UpdReqAll => {
                // §5.3.5/§5.3.6: send what the partner has not acked (or
                // everything), then UPDDONE once all are acked.
                let keys: Vec<LeaseKey> = if m.msg_type == MessageType::UpdReqAll { b.all_keys() } else { b.flagged() };
                let set: std::collections::BTreeSet<LeaseKey> = keys.iter().copied().collect();
                for k in keys {
                    self.lease_changed(k);
                }
                self.answering = Some((m.transaction_id, set));
            }
            MessageType::UpdDone => {
                if let Some((x, _, all)) = self.our_updreq
                    && x == m.transaction_id
                {
                    self.our_updreq = None;
                    if all && self.need_all {
                        self.need_all = false;
                        self.p.need_all = false;
                        out.push(Output::Persist(self.p.clone()));
                    }
                    self.upd_done(now, b, &mut out);
                }
            }
            _ => {}
        }
        // Transitions first: what may be sent depends on the new state.
        self.evaluate(now, b, &mut out);
        self.pump(now, b, &mut out);
        out
    }

    fn got_connect(&mut self, now: Time, m: &FailoverMessage, b: &mut dyn Bindings, out: &mut Vec<Output>) {
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
        let _ = b;
    }

    fn got_connectreply(&mut self, now: Time, m: &FailoverMessage, _b: &mut dyn Bindings, out: &mut Vec<Output>) {
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
        // §6.1.3: version and MCLT must match, else DISCONNECT.
        if cp.protocol_version.0 != PROTOCOL_VERSION.0 || cp.mclt != self.cfg.mclt {
            let xid = self.next_xid();
            self.send(now, disconnect(xid, Self::abs(now), StatusCode::CONFIGURATION_CONFLICT, "version or MCLT mismatch"), out);
            self.go_down(out, "CONNECTREPLY version or MCLT mismatch".into(), true);
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

    fn got_state(&mut self, _now: Time, m: &FailoverMessage, b: &mut dyn Bindings, out: &mut Vec<Output>) {
        let Ok(sp) = StateParams::from_message(m) else {
            self.go_down(out, "malformed STATE".into(), true);
            return;
        };
        let was_known = self.partner_state_known;
        self.partner_state_known = true;
        self.partner_startup = sp.flags & SERVER_FLAG_STARTUP != 0;
        self.partner_said = Some(sp.state);
        self.p.communicated = true;
        if !self.partner_startup {
            // §6.4: record the partner's state; forget its partner-down time
            // unless it is in PARTNER-DOWN.
            self.p.partner_state = Some(sp.state);
            self.p.partner_start_time = bndupd::from_abs(sp.start_time_of_state);
            if sp.state == ServerState::PartnerDown {
                self.p.partner_down_time = sp.partner_down_time.map(bndupd::from_abs).unwrap_or(self.p.partner_start_time);
            }
        }
        out.push(Output::Persist(self.p.clone()));
        if !was_known && self.p.state != ServerState::Startup {
            // A fresh connection: send flagged updates from the start.
            for k in b.flagged() {
                self.lease_changed(k);
            }
        }
    }

    fn got_bndreply(&mut self, now: Time, m: &FailoverMessage, b: &mut dyn Bindings) {
        let Some(o) = self.outstanding.remove(&m.transaction_id) else { return };
        if let Some((_, rem)) = &mut self.answering {
            rem.remove(&o.key);
        }
        let Some(ack) = bndupd::acks(m).into_iter().find(|a| a.key == o.key) else { return };
        let Some(mut l) = b.lease(&o.key) else { return };
        if !ack.accepted {
            // §7.7: a rejection needs nothing but remembering; the lease
            // stays flagged and goes out again on the next scan.
            return;
        }
        if let Some(pls) = ack.partner_lifetime_sent {
            // §7.7: acked-partner-lifetime ← F_PARTNER_LIFETIME_SENT.
            l.acked_partner_lifetime = l.acked_partner_lifetime.max(pls);
        }
        let unchanged = l.status == o.status && l.start_time_of_state == o.start && l.cltt == o.cltt;
        if !unchanged && l.update_partner {
            // It changed while the update was in flight: send the new version.
            self.lease_changed(o.key);
        }
        if unchanged {
            l.update_partner = false;
            // Figure 2 event (4): EXPIRED/RELEASED/RESET → PENDING-FREE once
            // the partner acks, then at once FREE or FREE-BACKUP (5)/(6).
            if matches!(o.status, BindingStatus::Expired | BindingStatus::Released | BindingStatus::Reset) {
                let free = free_status(&o.key);
                l.set_status(free, now);
                // Both sides must agree: the partner hears of the FREE too.
                l.update_partner = true;
                self.lease_changed(o.key);
            }
        }
        b.store(l);
    }

    /// Our UPDREQ/UPDREQALL is answered (§5.3.7).
    fn upd_done(&mut self, now: Time, b: &mut dyn Bindings, out: &mut Vec<Output>) {
        use ServerState as S;
        match (self.p.state, self.cfg.role) {
            // §8.5.2
            (S::Recover, _) => self.enter(S::RecoverWait, now, b, out),
            // §8.10.2: the primary gets out first.
            (S::PotentialConflict, Role::Primary) => self.enter(S::ConflictDone, now, b, out),
            (S::PotentialConflict, Role::Secondary) => self.enter(S::Normal, now, b, out),
            _ => {}
        }
    }

    fn send_updreq(&mut self, now: Time, all: bool, out: &mut Vec<Output>) {
        if self.our_updreq.is_some() || !self.communications_ok() {
            return;
        }
        let xid = self.next_xid();
        let t = if all { MessageType::UpdReqAll } else { MessageType::UpdReq };
        self.our_updreq = Some((xid, now, all));
        self.send(now, FailoverMessage::new(t, xid, Self::abs(now)), out);
    }

    /// §4.2.2: the primary moves FREE prefixes to the secondary (FREE-BACKUP)
    /// until the secondary holds about `pd-secondary-share` of what is free.
    fn rebalance(&mut self, now: Time, b: &mut dyn Bindings) {
        let (free, backup) = b.prefix_counts();
        let total = free + backup;
        let target = (total as f64 * self.cfg.pd_secondary_share).floor() as u64;
        // Hysteresis: act only when short by more than 1/16 of the target.
        if backup + (target / 16).max(1) > target {
            return;
        }
        let want = ((target - backup) as usize).min(1024);
        for p in b.free_prefixes(want) {
            let k = LeaseKey::Prefix(p);
            let mut l = b.lease(&k).unwrap_or_else(|| Lease::pool_record(k, now));
            if l.is_active() {
                continue;
            }
            // §4.2.2: once the BNDUPD is sent the primary MUST NOT allocate it.
            l.set_status(BindingStatus::FreeBackup, now);
            l.update_partner = true;
            b.store(l);
            self.lease_changed(k);
        }
    }

    /// Timers: keepalive, connection retries, STARTUP, RECOVER-WAIT,
    /// auto-partner-down, PARTNER-DOWN reclamation, periodic re-sends.
    pub fn on_tick(&mut self, now: Time, b: &mut dyn Bindings) -> Vec<Output> {
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
        if let Some((_, at, _)) = self.our_updreq
            && now.saturating_sub(at) > self.cfg.updreq_timeout as u64
            && self.outstanding.is_empty()
        {
            // §8.5.2: no UPDDONE in time → drop the connection and try again.
            self.go_down(&mut out, "no UPDDONE from the partner".into(), true);
        }
        if now >= self.next_rescan {
            self.next_rescan = now + 30;
            if self.communications_ok() {
                for k in b.flagged() {
                    if !self.outstanding.values().any(|o| o.key == k) {
                        self.lease_changed(k);
                    }
                }
            }
        }
        if self.p.state == ServerState::PartnerDown && now >= self.next_reclaim {
            self.next_reclaim = now + 5;
            self.reclaim(now, b);
        }
        if now >= self.next_persist {
            self.next_persist = now + 10;
            self.p.last_operating = now;
            out.push(Output::Persist(self.p.clone()));
        }
        // Transitions first: what may be sent depends on the new state.
        self.evaluate(now, b, &mut out);
        self.pump(now, b, &mut out);
        out
    }

    /// §8.4.1, §4.2.2.1: in PARTNER-DOWN, EXPIRED/RELEASED/RESET leases become
    /// free once the MCLT has passed since every time the partner could rely on.
    fn reclaim(&mut self, now: Time, b: &mut dyn Bindings) {
        let mclt = self.p.mclt as u64;
        for k in b.all_keys() {
            let Some(mut l) = b.lease(&k) else { continue };
            if !matches!(l.status, BindingStatus::Expired | BindingStatus::Released | BindingStatus::Reset) {
                continue;
            }
            let reuse_at = mclt
                + [self.p.partner_down_time, l.valid_end, l.partner_lifetime, l.acked_partner_lifetime, l.expiration_time, l.start_time_of_state]
                    .into_iter()
                    .max()
                    .unwrap_or(0);
            if now >= reuse_at {
                l.set_status(free_status(&k), now);
                l.update_partner = true;
                b.store(l);
                self.lease_changed(k);
            }
        }
    }

    /// Send queued BNDUPDs within the partner's MAX-UNACKED-BNDUPD (§6.1.1-3),
    /// and UPDDONE once an UPDREQ has been fully answered.
    fn pump(&mut self, now: Time, b: &mut dyn Bindings, out: &mut Vec<Output>) {
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
        // Candidates: in the answering-only states, the answer set's queued
        // keys (walking the whole queue there would cost O(queue) per call);
        // else the queue in order. Keys sent from the answer set leave their
        // queue entries behind; `queued` tells live entries from stale ones.
        let mut answers: Vec<LeaseKey> = Vec::new();
        if only_answers {
            let room = (self.partner_max_unacked as usize).saturating_sub(self.outstanding.len());
            if let Some((_, rem)) = &self.answering {
                answers = rem
                    .iter()
                    .filter(|k| self.queued.contains(k) && !self.outstanding.values().any(|o| o.key == **k))
                    .take(room)
                    .copied()
                    .collect();
            }
            answers.reverse();
        }
        while self.outstanding.len() < self.partner_max_unacked as usize {
            let k = if only_answers {
                let Some(k) = answers.pop() else { break };
                k
            } else {
                let Some(k) = self.queue.pop_front() else { break };
                k
            };
            if !self.queued.remove(&k) {
                continue; // a stale queue entry (already sent)
            }
            let Some(l) = b.lease(&k) else {
                if let Some((_, rem)) = &mut self.answering {
                    rem.remove(&k);
                }
                continue;
            };
            if self.outstanding.values().any(|o| o.key == k) {
                // In flight: if it changed meanwhile, the ack re-queues it.
                continue;
            }
            let xid = self.next_xid();
            self.outstanding.insert(xid, Outstanding { key: k, status: l.status, start: l.start_time_of_state, cltt: l.cltt });
            let m = bndupd::build(&l, now, xid);
            self.send(now, m, out);
        }
        if let Some((x, rem)) = &self.answering
            && rem.is_empty()
        {
            let x = *x;
            self.answering = None;
            self.send(now, FailoverMessage::new(MessageType::UpdDone, x, Self::abs(now)), out);
        }
    }

    // ---- the state machine (§8) --------------------------------------------

    fn enter(&mut self, to: ServerState, now: Time, b: &mut dyn Bindings, out: &mut Vec<Output>) {
        use ServerState as S;
        let from = self.p.state;
        if from == to {
            return;
        }
        self.p.state = to;
        self.p.start_time = now;
        out.push(Output::Transition { from, to });
        match to {
            S::PartnerDown => {
                self.p.partner_down_time = now;
                self.next_reclaim = now;
            }
            S::CommunicationsInterrupted => self.ci_since = now,
            S::RecoverWait => {
                // §8.6: wait until (TIME-OF-FAILURE or start) + MCLT.
                let base = if self.time_of_failure != 0 { self.time_of_failure } else { self.started_at };
                self.recover_wait_until = base + self.p.mclt as u64;
            }
            S::Normal => {
                // §8.8: send every update not yet acked; the secondary asks for prefixes.
                for k in b.flagged() {
                    self.lease_changed(k);
                }
                if self.cfg.role == Role::Secondary && self.communications_ok() {
                    let xid = self.next_xid();
                    self.send(now, FailoverMessage::new(MessageType::PoolReq, xid, Self::abs(now)), out);
                }
            }
            _ => {}
        }
        // §8.1: persist at every transition; §6.3: tell the partner.
        out.push(Output::Persist(self.p.clone()));
        self.send_state(now, out);
    }

    /// Apply every transition the current inputs call for.
    fn evaluate(&mut self, now: Time, b: &mut dyn Bindings, out: &mut Vec<Output>) {
        use ServerState as S;
        for _ in 0..16 {
            let ok = self.communications_ok();
            let ps = if ok { self.p.partner_state } else { None };
            let next = match self.p.state {
                S::Startup => {
                    if self.conn == Conn::Established && self.partner_state_known {
                        // §8.3.2 step 5: CURRENT := PREVIOUS, unless the partner is in
                        // PARTNER-DOWN: RECOVER if it went there after we stopped
                        // operating, POTENTIAL-CONFLICT otherwise.
                        let current = if self.partner_said == Some(S::PartnerDown) {
                            if self.p.partner_start_time > self.time_of_failure { S::Recover } else { S::PotentialConflict }
                        } else {
                            self.previous_state
                        };
                        Some(current)
                    } else if now >= self.startup_until {
                        // §8.3.2 step 6.
                        Some(self.previous_state)
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
                Some(n) if n != self.p.state => self.enter(n, now, b, out),
                _ => break,
            }
        }
    }
}

/// Figure 2 events (5)/(6), following the prose over Figure 3 (digest §18
/// item 1): prefixes return to the primary; addresses to their half's owner.
fn free_status(k: &LeaseKey) -> BindingStatus {
    match k {
        LeaseKey::Prefix(_) => BindingStatus::Free,
        LeaseKey::Addr(a) => match address_owner(*a) {
            Role::Primary => BindingStatus::Free,
            Role::Secondary => BindingStatus::FreeBackup,
        },
    }
}

