//! A deterministic simulator of a failover pair.
//!
//! Seeded, single-threaded, simulated clock and network. Both servers run
//! the real engine and the real failover endpoint over an in-memory store
//! behind the store trait; many clients renew and rebind on RFC 8415
//! timers. Faults are drawn from the seed: connection drops, partitions,
//! message delay, crashes (with restart), loss of a whole store, clock
//! skew (inside and beyond 5 s), operator partner-down. After every step
//! the invariants are checked; a failing run prints its seed and trace.

mod rng;

use std::collections::{BTreeMap, BinaryHeap};
use std::cmp::Reverse;
use std::net::Ipv6Addr;

pub use rng::Rng;

use crate::config::{Config, Role, Subnet};
use crate::failover::{Bindings, Endpoint, FailoverConfig, Output, Persistent};
use crate::lease::store::{LeaseStore, MemoryStore, meta};
use crate::lease::{IaType, Lease, LeaseChange, LeaseKey, Time};
use crate::pool::{Prefix, Slice};
use crate::server::{Arrival, Engine, EngineConfig, Outcome, SliceMap};
use crate::wire::failover::FrameDecoder;
use crate::wire::{
    BindingStatus, ClientMessage, DhcpOption, Duid, FailoverMessage, IaNa, IaPd, IaPrefix, Message, MessageType, Options,
    ServerState,
};

const SUBNET: &str = r#"
interfaces = ["eth0"]
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "eth0"
pools = ["2001:db8:1::100-2001:db8:1::13f"]
pd-pools = [{ prefix = "2001:db8:100::/56", delegated-length = 60 }]
preferred-lifetime = 200
valid-lifetime = 300
rapid-commit = false
"#;

/// What a run is made of.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub clients: usize,
    /// Simulated seconds with faults, then the network heals.
    pub chaos: Time,
    /// Seconds allowed after healing for both servers to reach NORMAL.
    pub settle: Time,
    pub mclt: u32,
    /// Also schedule partner-down on both sides (misconfiguration).
    pub both_partner_down: bool,
    /// Trace every failover message.
    pub verbose: bool,
    /// Auto-partner-down after this many seconds in COMMUNICATIONS-INTERRUPTED
    /// (0: off). Only with faults where a silent partner really is down
    /// (crashes), as RFC 8156 §8.9 requires of whoever enables it.
    pub auto_partner_down: u32,
    /// Sabotage: the engine ignores the failover policy (to prove the
    /// invariants catch what that breaks).
    pub ignore_failover_policy: bool,
}

impl Scenario {
    pub fn new(seed: u64) -> Scenario {
        Scenario {
            seed,
            clients: 16,
            chaos: 1800,
            settle: 0,
            mclt: 60,
            both_partner_down: seed % 7 == 3,
            verbose: false,
            auto_partner_down: if seed % 5 == 1 { 90 } else { 0 },
            ignore_failover_policy: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    ServerTick(usize),
    ClientTimer(usize, u64),
    /// A DHCPv6 message from client to server `s`.
    ToServer(usize, usize, Vec<u8>),
    /// A reply to client `c` (generation check inside).
    ToClient(usize, Vec<u8>),
    /// A failover frame on connection `conn` towards server `s`.
    Frame(u64, usize, Vec<u8>),
    /// The connection `conn` opened / closed, seen by server `s`.
    Connected(u64, usize),
    Closed(u64, usize),
    Crash(usize, bool),
    Restart(usize),
    Partition(bool),
    Skew(usize, i64),
    PartnerDown(usize),
    DropConnection,
}

/// The simulated lease database of one server: engine table + durable store.
struct Db<'a> {
    engine: &'a mut Engine,
    store: &'a mut MemoryStore,
    pools: &'a SliceMap,
}

impl Bindings for Db<'_> {
    fn lease(&self, key: &LeaseKey) -> Option<Lease> {
        self.engine.leases().get(key).cloned()
    }
    fn store(&mut self, lease: Lease) {
        self.store.commit(&[LeaseChange::Upsert(lease.clone())]).expect("memory store");
        self.engine.load(lease);
    }
    fn all_keys(&self) -> Vec<LeaseKey> {
        let mut v: Vec<LeaseKey> = self.engine.leases().iter().map(|l| l.key).collect();
        v.sort();
        v
    }
    fn flagged(&self) -> Vec<LeaseKey> {
        let mut v: Vec<LeaseKey> = self.engine.leases().iter().filter(|l| l.update_partner).map(|l| l.key).collect();
        v.sort();
        v
    }
    fn owns(&self, key: &LeaseKey) -> bool {
        self.pools.in_pool(key)
    }
    // The simulator's pools are small: walking every delegable prefix is fine.
    fn free_prefixes(&self, limit: usize) -> Vec<Prefix> {
        crate::failover::free_prefixes(self, self.pools.delegable(), limit)
    }
    fn prefix_counts(&self) -> (u64, u64) {
        crate::failover::prefix_counts(self, self.pools.delegable())
    }
}

struct Server {
    role: Role,
    duid: Duid,
    up: bool,
    skew: i64,
    engine: Option<Engine>,
    endpoint: Option<Endpoint>,
    store: MemoryStore,
    /// The connection this server believes it is on.
    conn: Option<u64>,
    decoder: FrameDecoder,
}

#[derive(Debug, Clone, Default)]
struct Client {
    duid_n: u64,
    generation: u64,
    wants_pd: bool,
    /// Address → end of its valid lifetime (true time), and who gave it.
    addr: Option<(Ipv6Addr, Time, usize)>,
    prefix: Option<(Prefix, Time, usize)>,
    t1: Time,
    t2: Time,
    /// What the client is doing.
    phase: Phase,
    xid: u32,
    tries: u32,
    advertised: Vec<(usize, Duid)>,
    active: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Idle,
    Soliciting,
    Requesting(usize),
    Bound,
    Renewing(usize),
    Rebinding,
}

/// A finished run.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    pub events: u64,
    pub replies: u64,
    pub final_states: [ServerState; 2],
}

pub struct Sim {
    sc: Scenario,
    rng: Rng,
    now: Time,
    seq: u64,
    events: BinaryHeap<Reverse<(Time, u64, Ev)>>,
    servers: Vec<Server>,
    clients: Vec<Client>,
    subnets: Vec<Subnet>,
    /// The pools as one unsharded map (ownership, delegable prefixes).
    pools: SliceMap,
    conn_id: u64,
    /// Connection currently open between the servers.
    conn: Option<u64>,
    partitioned: bool,
    /// Latest scheduled delivery per direction, to keep TCP order.
    last_delivery: [Time; 2],
    in_flight: u64,
    trace: Vec<String>,
    violations: Vec<String>,
    events_run: u64,
    replies: u64,
    /// A server was in PARTNER-DOWN while its partner was operating: the
    /// RFC's premise is broken (operator error), duplicates are possible and
    /// only POTENTIAL-CONFLICT's resolution is checked.
    misconfigured: bool,
    /// Server i has been in PARTNER-DOWN since the pair last communicated.
    pd_since_contact: [bool; 2],
}

const T0: Time = 1_800_000_000;

impl Sim {
    pub fn new(sc: Scenario) -> Sim {
        let cfg = Config::parse(SUBNET).expect("sim subnet config");
        let mut rng = Rng::new(sc.seed);
        let servers = (0..2)
            .map(|i| Server {
                role: if i == 0 { Role::Primary } else { Role::Secondary },
                duid: Duid::llt(1, 1, &[2, 0, 0, 0, 0, i as u8 + 1]),
                up: false,
                skew: 0,
                engine: None,
                endpoint: None,
                store: MemoryStore::new(),
                conn: None,
                decoder: FrameDecoder::new(65535),
            })
            .collect();
        let clients = (0..sc.clients)
            .map(|i| Client { duid_n: i as u64 + 1, wants_pd: rng.below(3) == 0, active: true, ..Default::default() })
            .collect();
        let mut s = Sim {
            rng,
            now: T0,
            seq: 0,
            events: BinaryHeap::new(),
            servers,
            clients,
            pools: SliceMap::new(&cfg.subnets, 1),
            subnets: cfg.subnets,
            conn_id: 0,
            conn: None,
            partitioned: false,
            last_delivery: [0; 2],
            in_flight: 0,
            trace: Vec::new(),
            violations: Vec::new(),
            events_run: 0,
            replies: 0,
            misconfigured: false,
            pd_since_contact: [false; 2],
            sc,
        };
        s.schedule_faults();
        for i in 0..2 {
            s.start_server(i);
        }
        for c in 0..s.clients.len() {
            let d = s.rng.below(60);
            s.at(d, Ev::ClientTimer(c, 0));
        }
        s
    }

    fn at(&mut self, delay: Time, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((self.now + delay, self.seq, ev)));
    }

    fn log(&mut self, s: String) {
        if self.trace.len() < 20_000 {
            self.trace.push(format!("t+{:>5} {s}", self.now - T0));
        }
    }

    fn server_now(&self, i: usize) -> Time {
        (self.now as i64 + self.servers[i].skew) as Time
    }

    fn schedule_faults(&mut self) {
        let chaos = self.sc.chaos;
        let n = 3 + self.rng.below(8);
        let crash_only = self.sc.auto_partner_down > 0;
        // Losing both stores loses every lease: nothing can be checked then.
        let mut store_lost = false;
        for _ in 0..n {
            let t = 60 + self.rng.below(chaos.saturating_sub(120).max(1));
            let kind = if crash_only { [0, 3, 4, 5, 7][self.rng.below(5) as usize] } else { self.rng.below(9) };
            let ev = match kind {
                0 => Ev::DropConnection,
                1 | 2 => Ev::Partition(true),
                3 => Ev::Crash(self.rng.below(2) as usize, false),
                4 => {
                    let lose = !store_lost && self.rng.below(4) == 0;
                    store_lost |= lose;
                    Ev::Crash(self.rng.below(2) as usize, lose)
                }
                5 => Ev::Skew(self.rng.below(2) as usize, self.rng.below(9) as i64 - 4),
                6 => Ev::Skew(self.rng.below(2) as usize, if self.rng.below(2) == 0 { 9 } else { -9 }),
                7 => Ev::PartnerDown(self.rng.below(2) as usize),
                _ => Ev::DropConnection,
            };
            self.seq += 1;
            self.events.push(Reverse((T0 + t, self.seq, ev.clone())));
            match ev {
                Ev::Partition(true) => {
                    let len = 30 + self.rng.below(600);
                    self.seq += 1;
                    self.events.push(Reverse((T0 + t + len, self.seq, Ev::Partition(false))));
                }
                Ev::Crash(i, _) => {
                    let len = 5 + self.rng.below(400);
                    self.seq += 1;
                    self.events.push(Reverse((T0 + t + len, self.seq, Ev::Restart(i))));
                }
                _ => {}
            }
        }
        if self.sc.both_partner_down {
            // Misconfiguration: operator partner-down on both sides during a partition.
            let t = 100 + self.rng.below(chaos / 2);
            for (ev, dt) in [(Ev::Partition(true), 0), (Ev::PartnerDown(0), 5), (Ev::PartnerDown(1), 6), (Ev::Partition(false), 200)] {
                self.seq += 1;
                self.events.push(Reverse((T0 + t + dt, self.seq, ev)));
            }
        }
    }

    fn start_server(&mut self, i: usize) {
        let now = self.server_now(i);
        let s = &mut self.servers[i];
        let mut engine = Engine::new(EngineConfig {
            server_duid: s.duid.clone(),
            subnets: self.subnets.clone(),
            slice: Slice::WHOLE,
            hash_key: 11 + i as u64,
            naming: None,
        });
        engine.set_failover_mclt(self.sc.mclt);
        for l in s.store.all().expect("memory store") {
            engine.load(l);
        }
        let persisted = s.store.get_meta(meta::FAILOVER_STATE).ok().flatten().and_then(|b| Persistent::decode(&b));
        let fc = FailoverConfig {
            role: s.role,
            relationship_name: "sim".into(),
            mclt: self.sc.mclt,
            keepalive_time: 20,
            max_unacked_bndupd: 8,
            // Auto-partner-down on one side only (the secondary): on both, a
            // crash of each in turn puts both in PARTNER-DOWN without contact
            // in between, which §8.4 forbids.
            auto_partner_down: if s.role == Role::Secondary { self.sc.auto_partner_down } else { 0 },
            startup_time: 10,
            pd_secondary_share: 0.5,
            connect_retry: 3,
            connect_retry_rejected: 10,
            updreq_timeout: 60,
        };
        let (ep, out) = Endpoint::new(fc, persisted, now);
        s.engine = Some(engine);
        s.endpoint = Some(ep);
        s.up = true;
        s.conn = None;
        s.decoder = FrameDecoder::new(65535);
        self.log(format!("server {i} starts"));
        self.apply(i, out);
        self.at(1, Ev::ServerTick(i));
    }

    /// Carry out endpoint outputs: persist first (already done for leases
    /// through `Db`), then send.
    fn apply(&mut self, i: usize, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Persist(p) => {
                    let _ = self.servers[i].store.put_meta(meta::FAILOVER_STATE, &p.encode());
                }
                Output::Transition { from, to } => self.log(format!("server {i}: {} -> {}", from.name(), to.name())),
                Output::Send(m) => self.send_frame(i, &m),
                Output::Close(why) => {
                    self.log(format!("server {i} closes: {why}"));
                    if let Some(c) = self.servers[i].conn.take()
                        && self.conn == Some(c)
                    {
                        self.conn = None;
                        let d = 1 + self.rng.below(2);
                        self.at(d, Ev::Closed(c, 1 - i));
                    }
                }
                Output::Connect => {
                    let peer = 1 - i;
                    if self.servers[peer].up && !self.partitioned && self.conn.is_none() {
                        self.conn_id += 1;
                        let c = self.conn_id;
                        self.conn = Some(c);
                        self.last_delivery = [0; 2];
                        self.at(1, Ev::Connected(c, i));
                        self.at(1, Ev::Connected(c, peer));
                    } else {
                        let now = self.server_now(i);
                        if let Some(ep) = self.servers[i].endpoint.as_mut() {
                            ep.on_connect_failed(now);
                        }
                    }
                }
            }
        }
    }

    fn send_frame(&mut self, from: usize, m: &FailoverMessage) {
        let Some(c) = self.servers[from].conn else { return };
        if self.conn != Some(c) {
            return;
        }
        let frame = m.encode_frame().expect("encodable failover message");
        let to = 1 - from;
        // Mostly within the second, sometimes one more: time-skew checks see
        // clock difference plus delay (RFC 8156 §7.1 allows 5 s in all).
        let delay = if self.rng.below(10) == 0 { 1 + self.rng.below(2) } else { self.rng.below(2) };
        let at = (self.now + delay).max(self.last_delivery[to]);
        self.last_delivery[to] = at;
        self.in_flight += 1;
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, Ev::Frame(c, to, frame))));
    }

    fn with_db<T>(&mut self, i: usize, f: impl FnOnce(&mut Endpoint, &mut Db<'_>, Time) -> T) -> Option<T> {
        let now = self.server_now(i);
        let s = &mut self.servers[i];
        let (Some(engine), Some(ep)) = (s.engine.as_mut(), s.endpoint.as_mut()) else { return None };
        let mut db = Db { engine, store: &mut s.store, pools: &self.pools };
        Some(f(ep, &mut db, now))
    }

    pub fn run(mut self) -> Report {
        let heal_at = T0 + self.sc.chaos;
        let settle = if self.sc.settle > 0 { self.sc.settle } else { 4 * self.sc.mclt as Time + 400 };
        let end = heal_at + settle;
        let mut healed = false;
        while let Some(Reverse((t, _, ev))) = self.events.pop() {
            if t > end {
                break;
            }
            self.now = t;
            if !healed && t >= heal_at {
                healed = true;
                self.heal();
            }
            if healed && matches!(ev, Ev::Crash(..) | Ev::Partition(true) | Ev::Skew(..) | Ev::PartnerDown(_) | Ev::DropConnection) {
                continue;
            }
            self.events_run += 1;
            self.step(ev);
            self.check_premise();
            self.check_pair();
            if self.violations.len() > 5 {
                break;
            }
        }
        self.now = end;
        // Invariant 5: liveness after healing.
        let states = [0, 1].map(|i| self.servers[i].endpoint.as_ref().map(|e| e.state()).unwrap_or(ServerState::Startup));
        if self.violations.is_empty() && states != [ServerState::Normal, ServerState::Normal] {
            self.violate(format!(
                "liveness: {settle} s after healing the servers are in {} / {}, not NORMAL / NORMAL",
                states[0].name(),
                states[1].name()
            ));
        }
        Report {
            seed: self.sc.seed,
            violations: self.violations,
            trace: self.trace,
            events: self.events_run,
            replies: self.replies,
            final_states: states,
        }
    }

    fn heal(&mut self) {
        self.log("network heals; clocks within 1 s; both servers up".into());
        self.partitioned = false;
        for i in 0..2 {
            if self.servers[i].skew.abs() > 1 {
                self.servers[i].skew = self.servers[i].skew.signum();
            }
            if !self.servers[i].up {
                self.start_server(i);
            }
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::ServerTick(i) => {
                if !self.servers[i].up {
                    return;
                }
                let now = self.server_now(i);
                let exp = self.servers[i].engine.as_mut().map(|e| e.expire(now, 1000)).unwrap_or_default();
                for c in &exp {
                    let _ = self.servers[i].store.commit(std::slice::from_ref(c));
                    if let Some(ep) = self.servers[i].endpoint.as_mut() {
                        ep.lease_changed(c.lease().key);
                    }
                }
                if let Some(out) = self.with_db(i, |ep, db, now| ep.on_tick(now, db)) {
                    self.apply(i, out);
                }
                self.at(1, Ev::ServerTick(i));
            }
            Ev::Frame(c, to, frame) => {
                self.in_flight = self.in_flight.saturating_sub(1);
                if self.servers[to].conn != Some(c) || !self.servers[to].up {
                    return;
                }
                let mut d = std::mem::replace(&mut self.servers[to].decoder, FrameDecoder::new(65535));
                d.push(&frame).expect("bounded frame");
                let mut msgs = Vec::new();
                while let Ok(Some(f)) = d.next_frame() {
                    msgs.push(FailoverMessage::decode(f).expect("decodable frame"));
                }
                self.servers[to].decoder = d;
                for m in msgs {
                    if self.sc.verbose {
                        let detail = match &m.msg_type {
                            MessageType::BndUpd | MessageType::BndReply => format!("{:?}", m.options),
                            _ => String::new(),
                        };
                        let detail: String = detail.chars().take(600).collect();
                        self.log(format!("server {to} <- {} xid {} sent {} {detail}", m.msg_type, m.transaction_id, m.sent_time));
                    }
                    if let Some(out) = self.with_db(to, |ep, db, now| ep.on_message(now, &m, db)) {
                        self.apply(to, out);
                    }
                }
            }
            Ev::Connected(c, i) => {
                if self.conn != Some(c) || !self.servers[i].up {
                    return;
                }
                self.servers[i].conn = Some(c);
                if let Some(out) = self.with_db(i, |ep, db, now| ep.on_connected(now, db)) {
                    self.apply(i, out);
                }
            }
            Ev::Closed(c, i) => {
                if self.servers[i].conn != Some(c) {
                    return;
                }
                self.servers[i].conn = None;
                if let Some(out) = self.with_db(i, |ep, db, now| ep.on_disconnected(now, db)) {
                    self.apply(i, out);
                }
            }
            Ev::DropConnection => {
                if let Some(c) = self.conn.take() {
                    self.log("fault: connection drops".into());
                    for i in 0..2 {
                        self.at(0, Ev::Closed(c, i));
                    }
                }
            }
            Ev::Partition(on) => {
                self.log(format!("fault: partition {}", if on { "starts" } else { "ends" }));
                self.partitioned = on;
                if on && let Some(c) = self.conn.take() {
                    // Nothing gets through; each side notices by keepalive.
                    let _ = c;
                }
            }
            Ev::Crash(i, lose_store) => {
                if !self.servers[i].up {
                    return;
                }
                self.log(format!("fault: server {i} crashes{}", if lose_store { " and loses its store" } else { "" }));
                if lose_store && self.pd_since_contact[i] && !self.misconfigured {
                    // It held the only copy of what it granted in PARTNER-DOWN.
                    self.misconfigured = true;
                    self.log("the store lost was the only copy of PARTNER-DOWN grants: unrecoverable".into());
                }
                let s = &mut self.servers[i];
                s.up = false;
                s.engine = None;
                s.endpoint = None;
                if lose_store {
                    s.store = MemoryStore::new();
                }
                s.conn = None;
                // The connection dies with the server, even one still opening.
                if let Some(c) = self.conn.take() {
                    let d = 1 + self.rng.below(3);
                    self.at(d, Ev::Closed(c, 1 - i));
                }
            }
            Ev::Restart(i) => {
                if !self.servers[i].up {
                    self.start_server(i);
                }
            }
            Ev::Skew(i, s) => {
                self.log(format!("fault: server {i} clock skew {s:+} s"));
                self.servers[i].skew = s;
            }
            Ev::PartnerDown(i) => {
                // A careful operator declares the partner down only when it is
                // down and was not itself in PARTNER-DOWN since they last spoke.
                if (self.servers[1 - i].up || self.pd_since_contact[1 - i]) && !self.sc.both_partner_down {
                    return;
                }
                let r = self.with_db(i, |ep, db, now| ep.partner_down(now, db));
                if let Some(Ok(out)) = r {
                    self.log(format!("operator: partner-down on server {i}"));
                    self.apply(i, out);
                }
            }
            Ev::ClientTimer(c, generation) => self.client_timer(c, generation),
            Ev::ToServer(c, s, bytes) => self.deliver_to_server(c, s, &bytes),
            Ev::ToClient(c, bytes) => self.client_receive(c, &bytes),
        }
    }

    // ---- clients ----------------------------------------------------------

    fn client_msg(&mut self, c: usize, t: MessageType, server: Option<usize>) -> Vec<u8> {
        let cl = &self.clients[c];
        let mut o = vec![DhcpOption::ClientId(Duid::en(99, &cl.duid_n.to_be_bytes())), DhcpOption::ElapsedTime(0)];
        if let Some(s) = server {
            o.push(DhcpOption::ServerId(self.servers[s].duid.clone()));
        }
        let addrs: Options = cl
            .addr
            .map(|(a, _, _)| vec![DhcpOption::IaAddr(crate::wire::IaAddr { addr: a, preferred: 0, valid: 0, options: Options::new() })])
            .unwrap_or_default()
            .into();
        o.push(DhcpOption::IaNa(IaNa { iaid: 1, t1: 0, t2: 0, options: addrs }));
        if cl.wants_pd {
            let p: Options = cl
                .prefix
                .map(|(p, _, _)| vec![DhcpOption::IaPrefix(IaPrefix { preferred: 0, valid: 0, prefix_len: p.len, prefix: p.addr, options: Options::new() })])
                .unwrap_or_default()
                .into();
            o.push(DhcpOption::IaPd(IaPd { iaid: 1, t1: 0, t2: 0, options: p }));
        }
        let xid = self.clients[c].xid;
        Message::Client(ClientMessage { msg_type: t, transaction_id: xid, options: o.into() }).encode().expect("client message")
    }

    fn client_send(&mut self, c: usize, t: MessageType, server: Option<usize>) {
        self.clients[c].xid = (self.clients[c].xid + 1) & 0xff_ffff;
        let bytes = self.client_msg(c, t, server);
        // Multicast: every server on the link hears it.
        for s in 0..2 {
            let d = self.rng.below(2);
            self.at(d, Ev::ToServer(c, s, bytes.clone()));
        }
    }

    fn client_timer(&mut self, c: usize, generation: u64) {
        if self.clients[c].generation != generation || !self.clients[c].active {
            return;
        }
        self.clients[c].generation += 1;
        let g = self.clients[c].generation;
        let now = self.now;
        // Lifetimes run out.
        if self.clients[c].addr.is_some_and(|(_, end, _)| end <= now) {
            self.clients[c].addr = None;
        }
        if self.clients[c].prefix.is_some_and(|(_, end, _)| end <= now) {
            self.clients[c].prefix = None;
        }
        let cl = &self.clients[c];
        let has_lease = cl.addr.is_some() || cl.prefix.is_some();
        match cl.phase {
            _ if !has_lease && !matches!(cl.phase, Phase::Soliciting | Phase::Requesting(_) | Phase::Idle) => {
                self.clients[c].phase = Phase::Idle;
                self.at(1, Ev::ClientTimer(c, g));
            }
            Phase::Idle => {
                self.clients[c].phase = Phase::Soliciting;
                self.clients[c].advertised.clear();
                self.client_send(c, MessageType::Solicit, None);
                self.at(2, Ev::ClientTimer(c, g));
            }
            Phase::Soliciting => {
                let adv = self.clients[c].advertised.clone();
                if let Some((s, _)) = adv.first() {
                    let s = *s;
                    self.clients[c].phase = Phase::Requesting(s);
                    self.clients[c].tries = 0;
                    self.client_send(c, MessageType::Request, Some(s));
                    self.at(2, Ev::ClientTimer(c, g));
                } else {
                    self.client_send(c, MessageType::Solicit, None);
                    let d = 3 + self.rng.below(5);
                    self.at(d, Ev::ClientTimer(c, g));
                }
            }
            Phase::Requesting(s) => {
                self.clients[c].tries += 1;
                if self.clients[c].tries > 4 {
                    self.clients[c].phase = Phase::Idle;
                    self.at(1, Ev::ClientTimer(c, g));
                } else {
                    self.client_send(c, MessageType::Request, Some(s));
                    self.at(2, Ev::ClientTimer(c, g));
                }
            }
            Phase::Bound => {
                // Occasionally release and come back later.
                if self.rng.below(25) == 0 {
                    let s = self.clients[c].addr.map(|x| x.2).or(self.clients[c].prefix.map(|x| x.2)).unwrap_or(0);
                    self.client_send(c, MessageType::Release, Some(s));
                    self.log(format!("client {c} releases"));
                    self.clients[c].addr = None;
                    self.clients[c].prefix = None;
                    self.clients[c].phase = Phase::Idle;
                    let d = 5 + self.rng.below(200);
                    self.at(d, Ev::ClientTimer(c, g));
                    return;
                }
                let s = self.clients[c].addr.map(|x| x.2).or(self.clients[c].prefix.map(|x| x.2)).unwrap_or(0);
                self.clients[c].phase = Phase::Renewing(s);
                self.client_send(c, MessageType::Renew, Some(s));
                self.at(10, Ev::ClientTimer(c, g));
            }
            Phase::Renewing(s) => {
                if now >= self.clients[c].t2 {
                    self.clients[c].phase = Phase::Rebinding;
                    self.client_send(c, MessageType::Rebind, None);
                } else {
                    self.client_send(c, MessageType::Renew, Some(s));
                }
                self.at(10, Ev::ClientTimer(c, g));
            }
            Phase::Rebinding => {
                self.client_send(c, MessageType::Rebind, None);
                self.at(10, Ev::ClientTimer(c, g));
            }
        }
    }

    fn deliver_to_server(&mut self, c: usize, s: usize, bytes: &[u8]) {
        if !self.servers[s].up {
            return;
        }
        let now = self.server_now(s);
        let Ok(msg) = Message::decode(bytes) else {
            self.violate(format!("client {c} sent an undecodable message"));
            return;
        };
        let arrival = Arrival {
            interface: Some("eth0"),
            source: "fe80::1".parse().unwrap(),
            destination: "ff02::1:2".parse().unwrap(),
        };
        let srv = &mut self.servers[s];
        let (Some(engine), Some(ep)) = (srv.engine.as_mut(), srv.endpoint.as_mut()) else { return };
        let policy = ep.policy();
        let state = ep.state();
        // What this client held here before, to tell renewals from new grants (invariant 3).
        let client = msg.unwrap_relays().1.and_then(|c| c.options.client_id().cloned());
        let held: Vec<LeaseKey> = engine
            .leases()
            .iter()
            .filter(|l| l.is_active() && Some(&l.binding.duid) == client.as_ref())
            .map(|l| l.key)
            .collect();
        let out = if self.sc.ignore_failover_policy {
            engine.handle(now, &msg, &arrival, &crate::server::Standalone)
        } else {
            engine.handle(now, &msg, &arrival, &policy)
        };
        let Outcome::Reply(r) = out else { return };
        // Durable first (the store), then the partner is told, then the reply leaves.
        for ch in &r.changes {
            let l = ch.lease();
            if self.sc.verbose {
                self.log(format!("server {s} ({}) commits {} {} cltt {} end {} flag {}", state.name(), l.key, l.status.name(), l.cltt, l.valid_end, l.update_partner));
            }
            self.check_grant(s, state, &policy, l, now, held.contains(&l.key));
            let _ = self.servers[s].store.commit(std::slice::from_ref(ch));
            if let Some(ep) = self.servers[s].endpoint.as_mut() {
                ep.lease_changed(l.key);
            }
        }
        let bytes = r.message.encode().expect("reply encodes");
        self.replies += 1;
        let d = self.rng.below(2);
        self.at(d, Ev::ToClient(c, bytes));
    }

    /// Invariants 2 and 3 at the moment a lease is granted.
    fn check_grant(&mut self, s: usize, state: ServerState, policy: &crate::failover::EndpointPolicy, l: &Lease, now: Time, renewal: bool) {
        if l.status != BindingStatus::Active {
            return;
        }
        // 2: the MCLT rule wherever the state requires it (§4.4).
        if policy.mclt_applies() {
            let limit = l.acked_partner_lifetime.max(now) + policy.mclt as Time;
            if l.valid_end > limit {
                self.violate(format!(
                    "MCLT: server {s} in {} gave {} until {} > max(acked {}, now {}) + MCLT {}",
                    state.name(),
                    l.key,
                    l.valid_end,
                    l.acked_partner_lifetime,
                    now,
                    policy.mclt
                ));
            }
        }
        // 3: only what this server owns in this state (§4.2); renewals of
        // any client's lease are allowed in the responsive states.
        if renewal {
            return;
        }
        if let LeaseKey::Addr(a) = l.key
            && crate::failover::address_owner(a) != self.servers[s].role
        {
            self.violate(format!("ownership: server {s} ({:?}) granted {a} from the partner's half", self.servers[s].role));
        }
    }

    fn client_receive(&mut self, c: usize, bytes: &[u8]) {
        let Ok(Message::Client(m)) = Message::decode(bytes) else {
            self.violate(format!("client {c} got an undecodable reply"));
            return;
        };
        if m.transaction_id != self.clients[c].xid {
            return; // a late answer to an earlier transmission
        }
        let Some(sid) = m.options.server_id().cloned() else { return };
        let Some(s) = self.servers.iter().position(|x| x.duid == sid) else { return };
        match m.msg_type {
            MessageType::Advertise
                if self.clients[c].phase == Phase::Soliciting => {
                    self.clients[c].advertised.push((s, sid));
                }
            MessageType::Reply => {
                if !matches!(self.clients[c].phase, Phase::Requesting(_) | Phase::Renewing(_) | Phase::Rebinding) {
                    return;
                }
                let now = self.now;
                let mut got = false;
                let mut t1t2 = None;
                for ia in m.options.ia_nas() {
                    for a in ia.options.ia_addrs() {
                        if a.valid == 0 {
                            if self.clients[c].addr.is_some_and(|x| x.0 == a.addr) {
                                self.clients[c].addr = None;
                            }
                            continue;
                        }
                        self.claim(c, LeaseKey::Addr(a.addr), now + a.valid as Time, s);
                        self.clients[c].addr = Some((a.addr, now + a.valid as Time, s));
                        got = true;
                        t1t2 = Some((ia.t1, ia.t2));
                    }
                }
                for ia in m.options.ia_pds() {
                    for p in ia.options.ia_prefixes() {
                        let Some(pr) = Prefix::new(p.prefix, p.prefix_len) else { continue };
                        if p.valid == 0 {
                            if self.clients[c].prefix.is_some_and(|x| x.0 == pr) {
                                self.clients[c].prefix = None;
                            }
                            continue;
                        }
                        self.claim(c, LeaseKey::Prefix(pr), now + p.valid as Time, s);
                        self.clients[c].prefix = Some((pr, now + p.valid as Time, s));
                        got = true;
                        t1t2 = t1t2.or(Some((ia.t1, ia.t2)));
                    }
                }
                if got {
                    let (t1, t2) = t1t2.unwrap_or((100, 160));
                    let (t1, t2) = (t1.max(5) as Time, t2.max(6) as Time);
                    self.clients[c].t1 = now + t1;
                    self.clients[c].t2 = now + t2;
                    self.clients[c].phase = Phase::Bound;
                    self.clients[c].generation += 1;
                    let g = self.clients[c].generation;
                    self.at(t1, Ev::ClientTimer(c, g));
                } else if matches!(self.clients[c].phase, Phase::Requesting(_)) {
                    self.clients[c].phase = Phase::Idle;
                }
            }
            _ => {}
        }
    }

    /// PARTNER-DOWN requires the partner not to be operating (§8.4).
    fn check_premise(&mut self) {
        for i in 0..2 {
            let e = self.servers[i].endpoint.as_ref();
            if e.is_some_and(|e| e.state() == ServerState::PartnerDown) {
                self.pd_since_contact[i] = true;
            }
            if e.is_some_and(|e| e.communications_ok()) {
                self.pd_since_contact = [false; 2];
            }
        }
        if self.misconfigured {
            return;
        }
        if self.pd_since_contact == [true, true] {
            self.misconfigured = true;
            self.log("both servers were in PARTNER-DOWN without contact in between: misconfiguration".into());
        }
        for i in 0..2 {
            let me = self.servers[i].endpoint.as_ref().map(|e| e.state());
            let other = &self.servers[1 - i];
            let other_serving = other.up
                && other.endpoint.as_ref().is_some_and(|e| {
                    !e.communications_ok()
                        && !matches!(e.state(), ServerState::Startup | ServerState::Recover | ServerState::RecoverWait | ServerState::PotentialConflict)
                });
            if me == Some(ServerState::PartnerDown) && other_serving {
                self.misconfigured = true;
                self.log(format!("server {i} is in PARTNER-DOWN while its partner operates: misconfiguration"));
            }
        }
    }

    fn violate(&mut self, v: String) {
        self.log(format!("VIOLATION {v}"));
        self.violations.push(v);
    }

    /// Invariant 1: no address or prefix is held by two clients at once.
    fn claim(&mut self, c: usize, key: LeaseKey, until: Time, s: usize) {
        let now = self.now;
        let st = self.servers[s].endpoint.as_ref().map(|e| e.state().name()).unwrap_or("-");
        self.log(format!("client {c} holds {key} from server {s} ({st}) until t+{}", until - T0));
        let clashes: Vec<usize> = (0..self.clients.len())
            .filter(|o| *o != c)
            .filter(|o| {
                let other = &self.clients[*o];
                match key {
                    LeaseKey::Addr(a) => other.addr.is_some_and(|(x, end, _)| x == a && end > now),
                    LeaseKey::Prefix(p) => other.prefix.is_some_and(|(x, end, _)| x == p && end > now),
                }
            })
            .collect();
        if self.misconfigured {
            return;
        }
        for o in clashes {
            self.violate(format!("duplicate: server {s} gave {key} to client {c} while client {o} holds it"));
        }
    }

    /// Invariant 4: both NORMAL, nothing queued or in flight → the stores agree.
    fn check_pair(&mut self) {
        let (Some(a), Some(b)) = (self.servers[0].endpoint.as_ref(), self.servers[1].endpoint.as_ref()) else { return };
        if a.state() != ServerState::Normal || b.state() != ServerState::Normal || a.backlog() + b.backlog() > 0 || self.in_flight > 0 {
            return;
        }
        if !(a.communications_ok() && b.communications_ok()) {
            return;
        }
        let flagged = |e: &Option<Engine>| e.as_ref().is_some_and(|e| e.leases().iter().any(|l| l.update_partner));
        if flagged(&self.servers[0].engine) || flagged(&self.servers[1].engine) {
            return;
        }
        let now = self.now;
        let norm = |e: &Engine| -> BTreeMap<LeaseKey, (BindingStatus, Duid, u32, Time)> {
            e.leases()
                .iter()
                .filter(|l| !(matches!(l.status, BindingStatus::Free | BindingStatus::FreeBackup) && matches!(l.key, LeaseKey::Addr(_))))
                .filter(|l| !(l.key.ia_type() == IaType::Pd && l.status == BindingStatus::Free))
                .map(|l| (l.key, (l.status, if l.is_active() { l.binding.duid.clone() } else { Duid::ll(0, &[0]) }, 0, if l.is_active() { l.valid_end } else { 0 })))
                .collect()
        };
        let (ea, eb) = (self.servers[0].engine.as_ref().unwrap(), self.servers[1].engine.as_ref().unwrap());
        let (ma, mb) = (norm(ea), norm(eb));
        for k in ma.keys().chain(mb.keys()) {
            let (x, y) = (ma.get(k), mb.get(k));
            // Lease ends within the ±5 s that RFC 8156 §7.1 counts as the
            // same time are the same end (crossing renewals of one client).
            let same = match (x, y) {
                (Some(a), Some(b)) => a.0 == b.0 && a.1 == b.1 && a.3.abs_diff(b.3) <= crate::failover::SKEW_TOLERANCE,
                (a, b) => a == b,
            };
            if same {
                continue;
            }
            // Leases crossing their end of life, or past it and waiting for
            // the expiry timer, are in motion.
            let near = |v: Option<&(BindingStatus, Duid, u32, Time)>| v.is_some_and(|v| v.3 != 0 && v.3 < now + 40);
            if near(x) || near(y) {
                continue;
            }
            self.violate(format!("stores disagree on {k}: primary {x:?}, secondary {y:?}"));
            return;
        }
    }
}

/// Run one seed; a failing seed's report carries the trace.
pub fn run_seed(seed: u64) -> Report {
    Sim::new(Scenario::new(seed)).run()
}

/// Run one seed tracing every failover message.
pub fn run_seed_verbose(seed: u64) -> Report {
    Sim::new(Scenario { verbose: true, ..Scenario::new(seed) }).run()
}
