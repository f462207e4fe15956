//! A deterministic simulator of a hub in two failover relationships (issue
//! 21, README "Several relationships").
//!
//! Three servers run the production program minus its IO, as in the pair
//! simulator: one `ShardCore` per shard and one failover `Driver` per
//! relationship, over in-memory stores.
//!
//! - Server 0 is the primary of "site-a" and serves subnet A alone.
//! - Server 1, the hub, is the secondary of "site-a" (subnet A, its
//!   relationship 0) and of "site-b" (subnet B, its relationship 1).
//! - Server 2 is the primary of "site-b" and serves subnet B alone.
//!
//! Each subnet has an address pool and a prefix pool, each relationship its
//! own MCLT, each server its own shard count. Clients of link A reach
//! servers 0 and 1, clients of link B servers 1 and 2. Faults are drawn from
//! the seed: crashes (a store lost at most once), each relationship's
//! connection dropped or cut on its own, clock skew, a careful operator's
//! partner-down, restarts while recovering, a shard-count change across a
//! restart; then the network heals and the servers settle.
//!
//! After every step:
//! - no address or prefix is held by two clients (what they are told), and
//!   no client gets a key of the other link;
//! - at every grant, the MCLT rule of the key's relationship, checked
//!   against that relationship's partner, and the address halves;
//! - isolation: no record of a site-a key is ever written to server 2's
//!   store, nor of a site-b key to server 0's; no binding update of a key
//!   crosses the other relationship's connection; and a relationship left
//!   alone stays NORMAL: once both its servers are NORMAL and connected
//!   with no fault of its own (a crash or clock change of one of its
//!   servers, a drop or cut of its connection, an operator's partner-down
//!   in it) in the last minute, it leaves NORMAL only after such a fault,
//!   whatever happens to the other relationship;
//! - whenever a relationship is NORMAL with nothing in flight, both its
//!   servers' stores agree on its keys (as the pair simulator compares
//!   them); and every ACTIVE record lives with its client's shard.
//!
//! At the end every relationship is NORMAL on both sides, the clients stop,
//! and each relationship's stores are compared in full once it is settled.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::Ipv6Addr;

use super::clients::{Client, Phase, client_duid};
use super::{Link, Record, Report, T0, Touched};
use crate::config::Config;
use crate::failover::bus::{ToFailover, ToShard};
use crate::failover::preamble::{Preamble, Step};
use crate::failover::router::{ShardRouter, home_of};
use crate::failover::{Action, Driver, EndpointPolicy, FailoverConfig, Persistent, Role};
use crate::lease::store::{LeaseStore, MemoryStore};
use crate::lease::{Binding, IaType, Lease, LeaseChange, LeaseKey, Time};
use crate::pool::hash::shard_of;
use crate::server::settings::Subnet;
use crate::server::{Arrival, EngineConfig, SliceMap};
use crate::shard::{Handled, ShardCore, ShardsConfig};
use crate::sim::Rng;
use crate::wire::{
    BindingStatus, ClientMessage, DhcpOption, Duid, FailoverMessage, FrameDecoder, IaNa, IaPd, IaPrefix, MAX_FRAME_LEN, Message, MessageType, Options,
    ServerState,
};

/// Something broken on purpose, to show the invariants catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// The engines ignore the failover policy (no MCLT, no address halves).
    IgnorePolicy,
    /// The UPDREQALL answer is read from the stores without keeping only
    /// the asking relationship's records (the filter `runtime::shard` applies).
    UnfilteredScan,
    /// A fault of site-a's connection takes site-b's down with it.
    Entangled,
}

/// What a hub run is made of, drawn from its seed.
#[derive(Debug, Clone)]
pub struct HubScenario {
    pub seed: u64,
    /// Clients on each link.
    pub clients: usize,
    /// Simulated seconds with faults, then the network heals.
    pub chaos: u64,
    /// Seconds allowed after healing for every relationship to reach NORMAL
    /// (0: 4 × the longest MCLT + 400).
    pub settle: u64,
    /// MCLT of site-a and of site-b (different).
    pub mclt: [u32; 2],
    pub valid: u32,
    /// Shards of servers 0, 1 (the hub) and 2.
    pub shards: [usize; 3],
    /// A different shard count after a restart (a `--shards` change).
    pub reshard: [Option<usize>; 3],
    /// The hub's auto-partner-down per relationship (0: off). A relationship
    /// with it sees crashes, never a cut connection or a clock beyond the
    /// tolerance while both servers run (RFC 8156 §8.9's premise).
    pub auto_partner_down: [u32; 2],
    /// Commits complete up to a second late; shard messages are events.
    pub async_commits: bool,
    /// 4,096 addresses and prefixes per subnet (else 64 addresses, 16 prefixes).
    pub large_pools: bool,
    /// F_MAX_UNACKED_BNDUPD each server advertises.
    pub max_unacked: u32,
    /// Crash a server now and then while it recovers.
    pub crash_in_recovery: bool,
    /// Draw faults from the seed (off: a quiet run).
    pub faults: bool,
    /// Trace every failover message and store write.
    pub verbose: bool,
    pub sabotage: Option<Sabotage>,
}

impl HubScenario {
    pub fn new(seed: u64) -> HubScenario {
        let mut r = Rng::new(seed ^ 0x4855_4200_0000_0001);
        let mclt = [45 + 15 * r.below(4) as u32, 30 + 20 * r.below(4) as u32];
        let mclt = if mclt[0] == mclt[1] { [mclt[0], mclt[1] + 10] } else { mclt };
        let shards = [1 + r.below(3) as usize, 1 + r.below(4) as usize, 1 + r.below(3) as usize];
        let reshard = if r.below(8) == 0 { [0, 1, 2].map(|_| Some(1 + r.below(4) as usize)) } else { [None; 3] };
        let auto_partner_down = [0, 1].map(|_| if r.below(3) == 0 { 90 } else { 0 });
        let async_commits = r.below(4) != 0;
        let large_pools = r.below(8) == 0;
        let crash_in_recovery = r.below(6) == 0;
        HubScenario {
            seed,
            clients: 12,
            chaos: 1800,
            settle: 0,
            mclt,
            valid: 300,
            shards,
            reshard,
            auto_partner_down,
            async_commits,
            large_pools,
            max_unacked: if large_pools { 128 } else { 8 },
            crash_in_recovery,
            faults: true,
            verbose: false,
            sabotage: None,
        }
    }
}

/// A relationship: its name and its two members as (server, the server's
/// index of the relationship); the primary first, the hub second.
struct Rel {
    name: &'static str,
    members: [(usize, usize); 2],
}

const RELS: [Rel; 2] = [Rel { name: "site-a", members: [(0, 0), (1, 0)] }, Rel { name: "site-b", members: [(2, 0), (1, 1)] }];
const HUB: usize = 1;
/// Trace lines kept (the latest).
const TRACE_LINES: usize = 60_000;
/// The servers on each link (the link of subnet A, of subnet B).
const LINK_SERVERS: [[usize; 2]; 2] = [[0, 1], [1, 2]];
const LINK_IFACE: [&str; 2] = ["eth0", "eth1"];

fn role(i: usize) -> Role {
    if i == HUB { Role::Secondary } else { Role::Primary }
}

/// The relationship (= link, = subnet) a key belongs to.
fn rel_of_key(k: &LeaseKey) -> usize {
    let seg = match k {
        LeaseKey::Addr(a) => a.segments()[2],
        LeaseKey::Prefix(p) => p.addr.segments()[2],
    };
    usize::from(!matches!(seg, 1 | 0x100))
}

/// Server `i`'s index of relationship `r`, if it is in it.
fn local(i: usize, r: usize) -> Option<usize> {
    RELS[r].members.iter().find(|m| m.0 == i).map(|m| m.1)
}

/// The relationship server `i` knows as its `l`.
fn global(i: usize, l: usize) -> usize {
    if i == HUB { l } else { usize::from(i == 2) }
}

/// The other server of relationship `r`.
fn partner(i: usize, r: usize) -> usize {
    if RELS[r].members[0].0 == i { RELS[r].members[1].0 } else { RELS[r].members[0].0 }
}

fn side(i: usize, r: usize) -> usize {
    usize::from(RELS[r].members[0].0 != i)
}

/// Subnets A and B (no relationship yet).
fn both_subnets(large: bool, valid: u32) -> Vec<Subnet> {
    let subnet = |n: u32, iface: &str| {
        let (addrs, pd) = if large {
            (format!("2001:db8:{n}::1000-2001:db8:{n}::1fff"), format!(r#"{{ prefix = "2001:db8:{n}00::/48", delegated-length = 60 }}"#))
        } else {
            (format!("2001:db8:{n}::100-2001:db8:{n}::13f"), format!(r#"{{ prefix = "2001:db8:{n}00::/56", delegated-length = 60 }}"#))
        };
        format!(
            r#"
[[subnet]]
prefix = "2001:db8:{n}::/64"
interface = "{iface}"
pools = ["{addrs}"]
pd-pools = [{pd}]
preferred-lifetime = {pref}
valid-lifetime = {valid}
rapid-commit = false
"#,
            pref = valid * 2 / 3
        )
    };
    let text = format!("interfaces = [\"eth0\", \"eth1\"]\n{}{}", subnet(1, "eth0"), subnet(2, "eth1"));
    Config::parse(&text).expect("hub sim subnet config").subnets
}

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    ServerTick(usize),
    ClientTimer(usize, u64),
    /// A DHCPv6 message from client `c` to server `s`.
    ToServer(usize, usize, Vec<u8>),
    ToClient(usize, Vec<u8>),
    /// Bytes on connection `conn` of relationship `r` towards server `s`.
    Frame(u64, usize, usize, Vec<u8>),
    /// Connection `conn` of relationship `r` opened / closed, seen by server `s`.
    Connected(u64, usize, usize),
    Closed(u64, usize, usize),
    Crash(usize, bool),
    Restart(usize),
    /// Relationship `r`'s connection is cut (true) or can be made again.
    Cut(usize, bool),
    Skew(usize, i64),
    /// The operator on server `i` declares its partner in relationship `r` down.
    PartnerDown(usize, usize),
    DropConnection(usize),
    CrashIfRecovering(usize),
    /// Inside server `i` (incarnation `inc`): a message to a shard from the
    /// driver of relationship `l`, to that driver, or a commit that completed.
    ToShard(usize, u64, usize, usize, ToShard),
    ToDriver(usize, u64, usize, ToFailover),
    CommitDone(usize, u64, usize),
}

enum Work {
    /// To shard `s` from the driver of the server's relationship `l`.
    Shard(usize, usize, ToShard),
    Driver(usize, ToFailover),
    Commit(usize),
}

struct Server {
    duid: Duid,
    up: bool,
    skew: i64,
    inc: u64,
    /// This server's subnets, each with this server's index of its relationship.
    subnets: Vec<Subnet>,
    /// The global relationship of each of this server's relationships.
    rels: Vec<usize>,
    shards: usize,
    stores: Vec<MemoryStore>,
    meta: MemoryStore,
    drivers: Vec<Driver>,
    cores: Vec<ShardCore<usize>>,
    batches: Vec<Option<Vec<LeaseChange>>>,
    /// Per relationship of this server: its connection.
    links: Vec<Option<Link>>,
    restarts: u32,
    home_touched: Touched,
    /// Messages and commits inside this server not yet delivered.
    internal: u64,
}

pub struct HubSim {
    sc: HubScenario,
    rng: Rng,
    now: Time,
    seq: u64,
    events: BinaryHeap<Reverse<(Time, u64)>>,
    payloads: HashMap<u64, Ev>,
    servers: Vec<Server>,
    clients: Vec<Client>,
    /// The link of each client.
    link: Vec<usize>,
    conn_id: u64,
    /// Per relationship: the connection open now.
    conn: [Option<u64>; 2],
    cut: [bool; 2],
    /// Per relationship and destination server: the latest delivery scheduled (TCP order).
    last_delivery: [[Time; 3]; 2],
    in_flight: [u64; 2],
    trace: VecDeque<String>,
    violations: Vec<String>,
    events_run: u64,
    replies: u64,
    /// Per relationship: PARTNER-DOWN while its partner operated (see the pair simulator).
    misconfigured: [bool; 2],
    /// Per relationship and side: in PARTNER-DOWN since the two last communicated.
    pd_since_contact: [[bool; 2]; 2],
    /// Per relationship: NORMAL on both sides with no fault of its own since (isolation).
    quiet: [bool; 2],
    /// Per relationship: when a fault of its own last happened.
    last_fault: [Time; 2],
    pair_touched: [Touched; 2],
    last_pair_check: [Time; 2],
    /// Why each relationship was not settled when last looked at.
    unsettled_why: [String; 2],
    last_home_check: Time,
    grants: BTreeMap<(ServerState, IaType), u64>,
    relayed_grants: u64,
}

impl HubSim {
    pub fn new(sc: HubScenario) -> HubSim {
        let rng = Rng::new(sc.seed ^ 0x4855_4200_0000_0002);
        let all = both_subnets(sc.large_pools, sc.valid);
        let servers: Vec<Server> = (0..3)
            .map(|i| {
                let rels: Vec<usize> = (0..2).filter(|r| local(i, *r).is_some()).collect();
                let subnets: Vec<Subnet> =
                    all.iter().enumerate().filter_map(|(r, s)| local(i, r).map(|l| Subnet { relationship: Some(l), ..s.clone() })).collect();
                let shards = sc.shards[i].max(1);
                Server {
                    duid: Duid::llt(1, 1, &[2, 0, 0, 0, 0, i as u8 + 1]),
                    up: false,
                    skew: 0,
                    inc: 0,
                    subnets,
                    links: rels.iter().map(|_| None).collect(),
                    rels,
                    shards,
                    stores: (0..shards).map(|_| MemoryStore::new()).collect(),
                    meta: MemoryStore::new(),
                    drivers: Vec::new(),
                    cores: Vec::new(),
                    batches: Vec::new(),
                    restarts: 0,
                    home_touched: Touched::everything(),
                    internal: 0,
                }
            })
            .collect();
        let mut crng = Rng::new(sc.seed ^ 0x4855_4200_0000_0003);
        let n = sc.clients * 2;
        let clients: Vec<Client> =
            (0..n).map(|i| Client { duid_n: i as u64 + 1, wants_pd: crng.below(3) != 0, active: true, ..Default::default() }).collect();
        let mut s = HubSim {
            rng,
            now: T0,
            seq: 0,
            events: BinaryHeap::new(),
            payloads: HashMap::new(),
            servers,
            clients,
            link: (0..n).map(|i| i % 2).collect(),
            conn_id: 0,
            conn: [None; 2],
            cut: [false; 2],
            last_delivery: [[0; 3]; 2],
            in_flight: [0; 2],
            trace: VecDeque::new(),
            violations: Vec::new(),
            events_run: 0,
            replies: 0,
            misconfigured: [false; 2],
            pd_since_contact: [[false; 2]; 2],
            quiet: [false; 2],
            last_fault: [T0; 2],
            pair_touched: [Touched::everything(), Touched::everything()],
            last_pair_check: [0; 2],
            unsettled_why: [String::new(), String::new()],
            last_home_check: 0,
            grants: BTreeMap::new(),
            relayed_grants: 0,
            sc,
        };
        s.log(format!(
            "hub scenario: MCLT {:?}, shards {:?}, reshard {:?}, auto-partner-down {:?}, async commits {}, large pools {}",
            s.sc.mclt, s.sc.shards, s.sc.reshard, s.sc.auto_partner_down, s.sc.async_commits, s.sc.large_pools
        ));
        if s.sc.faults {
            s.schedule_faults();
        }
        for i in 0..3 {
            s.start_server(i);
        }
        for c in 0..s.clients.len() {
            let d = crng.below(60);
            s.at(d, Ev::ClientTimer(c, 0));
        }
        s
    }

    fn at(&mut self, delay: Time, ev: Ev) {
        self.at_abs(self.now + delay, ev);
    }

    fn at_abs(&mut self, t: Time, ev: Ev) {
        self.seq += 1;
        self.payloads.insert(self.seq, ev);
        self.events.push(Reverse((t, self.seq)));
    }

    fn log(&mut self, s: String) {
        // The latest lines: a violation is seen where it happens.
        if self.trace.len() >= TRACE_LINES {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("t+{:>5} {s}", self.now - T0));
    }

    fn violate(&mut self, v: String) {
        self.log(format!("VIOLATION {v}"));
        self.violations.push(v);
    }

    fn server_now(&self, i: usize) -> Time {
        (self.now as i64 + self.servers[i].skew) as Time
    }

    /// Relationship `r`'s state on server `i` (None: down).
    fn state(&self, i: usize, r: usize) -> Option<ServerState> {
        let l = local(i, r)?;
        self.servers[i].drivers.get(l).map(|d| d.endpoint().state())
    }

    fn schedule_faults(&mut self) {
        let mut f = Rng::new(self.sc.seed ^ 0x4855_4200_0000_0004);
        let chaos = self.sc.chaos;
        let apd = self.sc.auto_partner_down;
        // Clocks apart by more than the tolerance (with the network's delay)
        // cut a relationship while both servers run: not where
        // auto-partner-down is on (its servers' clocks stay within 1 s).
        let in_apd = |i: usize| (0..2).any(|r| apd[r] > 0 && local(i, r).is_some());
        let skew = |i: usize, s: i64| if in_apd(i) { s.clamp(-1, 1) } else { s };
        // Losing two stores may lose every copy of a lease.
        let mut store_lost = false;
        for _ in 0..4 + f.below(10) {
            let t = 60 + f.below(chaos.saturating_sub(120).max(1));
            let ev = match f.below(9) {
                0 => Ev::DropConnection(f.below(2) as usize),
                1 | 2 => {
                    let r = f.below(2) as usize;
                    if apd[r] > 0 { Ev::DropConnection(r) } else { Ev::Cut(r, true) }
                }
                3 => Ev::Crash(f.below(3) as usize, false),
                4 => {
                    let lose = !store_lost && f.below(4) == 0;
                    store_lost |= lose;
                    Ev::Crash(f.below(3) as usize, lose)
                }
                5 => {
                    let i = f.below(3) as usize;
                    Ev::Skew(i, skew(i, f.below(9) as i64 - 4))
                }
                6 => {
                    let i = f.below(3) as usize;
                    Ev::Skew(i, skew(i, if f.below(2) == 0 { 9 } else { -9 }))
                }
                7 => {
                    let r = f.below(2) as usize;
                    let side = f.below(2) as usize;
                    Ev::PartnerDown(RELS[r].members[side].0, r)
                }
                _ => Ev::DropConnection(f.below(2) as usize),
            };
            self.at_abs(T0 + t, ev.clone());
            match ev {
                Ev::Cut(r, true) => {
                    let len = 30 + f.below(600);
                    self.at_abs(T0 + t + len, Ev::Cut(r, false));
                }
                Ev::Crash(i, _) => {
                    let len = 5 + f.below(400);
                    self.at_abs(T0 + t + len, Ev::Restart(i));
                }
                _ => {}
            }
        }
        if self.sc.crash_in_recovery {
            for _ in 0..6 {
                let t = 60 + f.below(chaos);
                let i = f.below(3) as usize;
                self.at_abs(T0 + t, Ev::CrashIfRecovering(i));
            }
        }
    }

    /// A fault of relationship `r`'s own: it may leave NORMAL.
    fn disturb(&mut self, r: usize) {
        self.quiet[r] = false;
        self.last_fault[r] = self.now;
    }

    /// A fault of server `i`: every relationship it is in.
    fn disturb_server(&mut self, i: usize) {
        for r in 0..2 {
            if local(i, r).is_some() {
                self.disturb(r);
            }
        }
    }

    fn start_server(&mut self, i: usize) {
        let now = self.server_now(i);
        if self.servers[i].restarts > 0
            && let Some(n) = self.sc.reshard[i]
        {
            let n = if self.servers[i].shards == n { n % 4 + 1 } else { n };
            self.reshard(i, n);
        }
        let sc = &self.sc;
        let s = &mut self.servers[i];
        s.inc += 1;
        s.restarts += 1;
        let cfg = ShardsConfig {
            engine: EngineConfig {
                server_duid: s.duid.clone(),
                subnets: s.subnets.clone(),
                slice: crate::pool::Slice::WHOLE,
                hash_key: 11 + i as u64,
                naming: None,
                limits: Default::default(),
                unicast_listen: Vec::new(),
                provisioning: Default::default(),
            },
            shards: s.shards,
            failover: s.rels.iter().map(|r| (role(i), sc.mclt[*r])).collect(),
        };
        let stored: Vec<Vec<Lease>> = s.stores.iter().map(|st| st.all().expect("memory store")).collect();
        let slices = SliceMap::new(&s.subnets, s.shards);
        let placed = crate::shard::place(stored, &slices, s.shards);
        for (st, w) in s.stores.iter_mut().zip(&placed.upserts) {
            st.commit(w).expect("memory store");
        }
        for (st, w) in s.stores.iter_mut().zip(&placed.deletes) {
            st.commit(w).expect("memory store");
        }
        let built = crate::shard::build::<usize>(&cfg, placed.lists);
        s.home_touched = Touched::everything();
        let several = s.rels.len() > 1;
        let mut drivers = Vec::new();
        for (l, &r) in s.rels.iter().enumerate() {
            let persisted = crate::failover::meta_keys(RELS[r].name, several).iter().find_map(|k| s.meta.get_meta(k).ok().flatten()).and_then(|b| Persistent::decode(&b));
            let fc = FailoverConfig {
                role: role(i),
                relationship_name: RELS[r].name.into(),
                mclt: sc.mclt[r],
                keepalive_time: 20,
                max_unacked_bndupd: sc.max_unacked,
                // On the hub only (see the pair simulator: on both sides a
                // crash of each in turn breaks §8.4's premise).
                auto_partner_down: if i == HUB { sc.auto_partner_down[r] } else { 0 },
                startup_time: 10,
                pd_secondary_share: 0.5,
                pd_secondary_max: 2048,
                connect_retry: 3,
                connect_retry_rejected: 10,
                updreq_timeout: 60,
                startup_partner_down: false,
                resync_all: false,
                min_mclt: crate::failover::MIN_LEASE_TIME,
            };
            // As production: the relationship's own pools with several.
            let router = ShardRouter::new(slices.for_relationship(&s.subnets, l, s.rels.len()), s.shards, built.away.iter().copied());
            drivers.push(Driver::new(fc, persisted, router, now));
        }
        s.drivers = drivers;
        s.cores = built.cores;
        if sc.sabotage == Some(Sabotage::IgnorePolicy) {
            for c in &mut s.cores {
                c.set_ignore_policy(true);
            }
        }
        s.batches = (0..s.shards).map(|_| None).collect();
        s.links = s.rels.iter().map(|_| None).collect();
        s.up = true;
        let n = s.shards;
        let rels = s.rels.clone();
        for r in rels {
            self.pair_touched[r] = Touched::everything();
        }
        self.log(format!("server {i} starts ({n} shards)"));
        let mut q = VecDeque::new();
        for reports in built.loaded {
            q.extend(reports.into_iter().map(|(l, m)| Work::Driver(l, m)));
        }
        self.work(i, q);
        self.at(1, Ev::ServerTick(i));
    }

    /// The store re-sharded for `n` shards, as `runtime::store` does at start-up.
    fn reshard(&mut self, i: usize, n: usize) {
        let s = &mut self.servers[i];
        let all: Vec<Lease> = crate::shard::merge_stores(s.stores.iter().map(|st| st.all().expect("memory store")).collect());
        let slices = SliceMap::new(&s.subnets, n);
        let mut stores: Vec<MemoryStore> = (0..n).map(|_| MemoryStore::new()).collect();
        for l in all {
            let h = home_of(&slices, n, &l);
            stores[h].commit(&[LeaseChange::Upsert(l)]).expect("memory store");
        }
        s.stores = stores;
        s.shards = n;
        self.log(format!("server {i} re-sharded to {n} shards"));
    }

    fn crash(&mut self, i: usize, lose_store: bool) {
        self.log(format!("fault: server {i} crashes{}", if lose_store { " and loses its store" } else { "" }));
        self.disturb_server(i);
        for (r, rel) in RELS.iter().enumerate() {
            if lose_store && local(i, r).is_some() && self.pd_since_contact[r][side(i, r)] && !self.misconfigured[r] {
                self.misconfigured[r] = true;
                self.log(format!("the store lost was the only copy of {}'s PARTNER-DOWN grants: unrecoverable", rel.name));
            }
        }
        let s = &mut self.servers[i];
        s.up = false;
        s.drivers.clear();
        s.cores.clear();
        s.batches.clear();
        if lose_store {
            s.stores = (0..s.shards).map(|_| MemoryStore::new()).collect();
            s.meta = MemoryStore::new();
        }
        for l in &mut s.links {
            *l = None;
        }
        for r in self.servers[i].rels.clone() {
            if let Some(c) = self.conn[r].take() {
                let d = 1 + self.rng.below(3);
                self.at(d, Ev::Closed(c, r, partner(i, r)));
            }
        }
    }

    fn heal(&mut self) {
        self.log("network heals; clocks within 1 s; every server up".into());
        self.cut = [false; 2];
        for i in 0..3 {
            if self.servers[i].skew.abs() > 1 {
                self.servers[i].skew = self.servers[i].skew.signum();
                self.disturb_server(i);
            }
            if !self.servers[i].up {
                self.start_server(i);
            }
        }
    }

    // ---- inside a server ----------------------------------------------------

    fn work(&mut self, i: usize, mut q: VecDeque<Work>) {
        while let Some(w) = q.pop_front() {
            if !self.servers[i].up {
                return;
            }
            let now = self.server_now(i);
            match w {
                Work::Driver(l, m) => {
                    self.servers[i].drivers[l].from_shard(now, m);
                    self.actions(i, l, &mut q);
                }
                Work::Shard(l, s, ToShard::Scan { from, max }) => {
                    let srv = &self.servers[i];
                    let mut leases = srv.stores[s].scan(from.as_ref(), max).expect("memory store");
                    // The chunk's end is where the read stopped; only this
                    // relationship's records go (as `runtime::shard`).
                    let next = if leases.len() < max { None } else { leases.last().map(|x| x.key) };
                    if self.sc.sabotage != Some(Sabotage::UnfilteredScan) {
                        leases.retain(|x| srv.cores[s].relationship_of(&x.key) == Some(l));
                    }
                    self.send_to_driver(i, l, &mut q, ToFailover::ScanChunk { shard: s, leases, next });
                }
                Work::Shard(l, s, m) => {
                    let answers = self.servers[i].cores[s].bus(now, l, m);
                    for (rl, a) in answers {
                        self.send_to_driver(i, rl, &mut q, a);
                    }
                    q.push_back(Work::Commit(s));
                }
                Work::Commit(s) => self.commit(i, s, &mut q),
            }
        }
    }

    fn send_to_driver(&mut self, i: usize, l: usize, q: &mut VecDeque<Work>, m: ToFailover) {
        if self.sc.async_commits {
            let inc = self.servers[i].inc;
            self.servers[i].internal += 1;
            self.at(0, Ev::ToDriver(i, inc, l, m));
        } else {
            q.push_back(Work::Driver(l, m));
        }
    }

    fn commit(&mut self, i: usize, s: usize, q: &mut VecDeque<Work>) {
        let now = self.server_now(i);
        let srv = &mut self.servers[i];
        if srv.batches[s].is_some() {
            return;
        }
        let Some(batch) = srv.cores[s].take_batch(now) else { return };
        if self.sc.verbose {
            for c in &batch {
                let line = match c {
                    LeaseChange::Upsert(l) => format!("server {i}/{s} stores {} {} start {} end {} flag {}", l.key, l.status.name(), l.start_time_of_state, l.valid_end, l.update_partner),
                    LeaseChange::Delete(k) => format!("server {i}/{s} deletes {k}"),
                };
                self.log(line);
            }
        }
        if self.sc.async_commits {
            let srv = &mut self.servers[i];
            srv.batches[s] = Some(batch);
            let inc = srv.inc;
            srv.internal += 1;
            let d = self.rng.below(2);
            self.at(d, Ev::CommitDone(i, inc, s));
        } else {
            self.durable(i, s, &batch);
            let done = self.servers[i].cores[s].batch_done(true, batch);
            self.released(i, s, done, q);
        }
    }

    /// A batch reaches shard `s`'s store on server `i`.
    fn durable(&mut self, i: usize, s: usize, batch: &[LeaseChange]) {
        let srv = &mut self.servers[i];
        srv.stores[s].commit(batch).expect("memory store");
        srv.home_touched.add(batch);
        let mut foreign = None;
        for c in batch {
            let k = c.key();
            let r = rel_of_key(&k);
            let t = &mut self.pair_touched[r];
            if !t.all {
                t.keys.insert(k);
            }
            if foreign.is_none() && matches!(c, LeaseChange::Upsert(_)) && local(i, r).is_none() {
                foreign = Some((k, r));
            }
        }
        if let Some((k, r)) = foreign {
            self.violate(format!("isolation: server {i} stored a record of {k}, a key of {} it is not in", RELS[r].name));
        }
    }

    fn released(&mut self, i: usize, s: usize, done: crate::shard::Done<usize>, q: &mut VecDeque<Work>) {
        for (c, r) in done.replies {
            let bytes = r.message.encode().expect("reply encodes");
            self.replies += 1;
            let d = self.rng.below(2);
            self.at(d, Ev::ToClient(c, bytes));
        }
        for (l, m) in done.to_failover {
            self.send_to_driver(i, l, q, m);
        }
        q.push_back(Work::Commit(s));
    }

    /// Carry out the actions of server `i`'s driver `l` in order.
    fn actions(&mut self, i: usize, l: usize, q: &mut VecDeque<Work>) {
        let r = global(i, l);
        loop {
            let Some(a) = self.servers[i].drivers.get_mut(l).and_then(Driver::poll) else { return };
            match a {
                Action::Persist(p) => {
                    for key in crate::failover::meta_keys(RELS[r].name, self.servers[i].rels.len() > 1) {
                        let _ = self.servers[i].meta.put_meta(&key, &p.encode());
                    }
                }
                Action::Transition { from, to } => self.log(format!("server {i} {}: {} -> {}", RELS[r].name, from.name(), to.name())),
                Action::Transmit(bytes) => self.transmit(i, l, &bytes),
                Action::ToShard(s, m) => {
                    if self.sc.async_commits {
                        let inc = self.servers[i].inc;
                        self.servers[i].internal += 1;
                        self.at(0, Ev::ToShard(i, inc, l, s, m));
                    } else {
                        q.push_back(Work::Shard(l, s, m));
                    }
                }
                Action::Close(why) => {
                    self.log(format!("server {i} {} closes: {why}", RELS[r].name));
                    if let Some(link) = self.servers[i].links[l].take()
                        && self.conn[r] == Some(link.conn)
                    {
                        self.conn[r] = None;
                        let d = 1 + self.rng.below(2);
                        self.at(d, Ev::Closed(link.conn, r, partner(i, r)));
                    }
                }
                Action::Connect => {
                    let peer = partner(i, r);
                    if self.servers[peer].up && !self.cut[r] && self.conn[r].is_none() {
                        self.conn_id += 1;
                        let c = self.conn_id;
                        self.conn[r] = Some(c);
                        self.last_delivery[r] = [0; 3];
                        self.at(1, Ev::Connected(c, r, i));
                        self.at(1, Ev::Connected(c, r, peer));
                    } else {
                        let now = self.server_now(i);
                        self.servers[i].drivers[l].connect_failed(now);
                    }
                }
            }
        }
    }

    /// Frames from server `i` over its relationship `l`'s connection.
    fn transmit(&mut self, i: usize, l: usize, bytes: &[u8]) {
        let r = global(i, l);
        let Some(c) = self.servers[i].links[l].as_ref().filter(|x| x.preamble.is_none()).map(|x| x.conn) else { return };
        if self.conn[r] != Some(c) {
            return;
        }
        let mut dec = FrameDecoder::new(MAX_FRAME_LEN);
        if dec.push(bytes).is_err() {
            self.violate(format!("server {i} transmitted a bad frame"));
            return;
        }
        let mut frames = Vec::new();
        while let Ok(Some(f)) = dec.next_frame() {
            let mut framed = (f.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(f);
            frames.push(framed);
        }
        for f in frames {
            // Isolation: a binding update carries only this relationship's keys.
            if f.get(2) == Some(&MessageType::BndUpd.code())
                && let Ok(m) = FailoverMessage::decode(&f[2..])
            {
                let foreign = crate::failover::bndupd::parse(&m, |_| true).items.into_iter().flatten().map(|x| x.key).find(|k| rel_of_key(k) != r);
                if let Some(k) = foreign {
                    self.violate(format!("isolation: server {i} sent a binding update of {k} over {}'s connection", RELS[r].name));
                }
            }
            self.send_bytes(i, r, c, f);
        }
    }

    fn send_bytes(&mut self, from: usize, r: usize, c: u64, bytes: Vec<u8>) {
        let to = partner(from, r);
        let delay = if self.rng.below(10) == 0 { 1 + self.rng.below(2) } else { self.rng.below(2) };
        let at = (self.now + delay).max(self.last_delivery[r][to]);
        self.last_delivery[r][to] = at;
        self.in_flight[r] += 1;
        self.at_abs(at, Ev::Frame(c, r, to, bytes));
    }

    fn received(&mut self, i: usize, l: usize, c: u64, bytes: &[u8]) {
        let now = self.server_now(i);
        if self.servers[i].links[l].as_ref().is_some_and(|x| x.preamble.is_some()) {
            let steps = match self.servers[i].links[l].as_mut().and_then(|x| x.preamble.as_mut()) {
                Some(p) => p.push(bytes),
                None => Vec::new(),
            };
            self.preamble_steps(i, l, c, steps);
            return;
        }
        self.servers[i].drivers[l].received(now, bytes);
        let mut q = VecDeque::new();
        self.actions(i, l, &mut q);
        self.work(i, q);
    }

    fn preamble_steps(&mut self, i: usize, l: usize, c: u64, steps: Vec<Step>) {
        let r = global(i, l);
        for st in steps {
            match st {
                Step::Send(b) => {
                    if self.conn[r] == Some(c) {
                        self.send_bytes(i, r, c, b);
                    }
                }
                Step::StartTls | Step::Established(_) => {
                    if let Some(x) = self.servers[i].links[l].as_mut() {
                        x.preamble = None;
                    }
                    let now = self.server_now(i);
                    self.servers[i].drivers[l].connected(now);
                    let mut q = VecDeque::new();
                    self.actions(i, l, &mut q);
                    self.work(i, q);
                }
                Step::Refuse(why) => self.violate(format!("server {i} refused {}'s connection: {why}", RELS[r].name)),
            }
        }
    }

    /// Connection `c` of relationship `r` is gone, as server `i` sees it.
    fn link_down(&mut self, i: usize, l: usize, established: bool) {
        let now = self.server_now(i);
        if established {
            self.servers[i].drivers[l].disconnected(now);
            let mut q = VecDeque::new();
            self.actions(i, l, &mut q);
            self.work(i, q);
        } else {
            self.servers[i].drivers[l].connect_failed(now);
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::ServerTick(i) => {
                if !self.servers[i].up {
                    return;
                }
                let now = self.server_now(i);
                let mut q = VecDeque::new();
                for s in 0..self.servers[i].shards {
                    self.servers[i].cores[s].tick(now);
                    q.push_back(Work::Commit(s));
                }
                self.work(i, q);
                for l in 0..self.servers[i].rels.len() {
                    if !self.servers[i].up {
                        return;
                    }
                    self.servers[i].drivers[l].tick(now);
                    let mut q = VecDeque::new();
                    self.actions(i, l, &mut q);
                    self.work(i, q);
                }
                self.at(1, Ev::ServerTick(i));
            }
            Ev::Frame(c, r, to, bytes) => {
                self.in_flight[r] = self.in_flight[r].saturating_sub(1);
                let Some(l) = local(to, r) else { return };
                if !self.servers[to].up || self.servers[to].links[l].as_ref().map(|x| x.conn) != Some(c) {
                    return;
                }
                if self.sc.verbose && bytes.len() > 2 {
                    let d = match FailoverMessage::decode(&bytes[2..]) {
                        Ok(m) => {
                            let detail = match m.msg_type {
                                MessageType::BndUpd | MessageType::BndReply => format!("{:?}", m.options),
                                _ => String::new(),
                            };
                            let detail: String = detail.chars().take(600).collect();
                            format!("{} xid {} sent {} {detail}", m.msg_type, m.transaction_id, m.sent_time)
                        }
                        Err(_) => format!("preamble type {}", bytes[2]),
                    };
                    self.log(format!("server {to} {} <- {d}", RELS[r].name));
                }
                self.received(to, l, c, &bytes);
            }
            Ev::Connected(c, r, i) => {
                let Some(l) = local(i, r) else { return };
                if self.conn[r] != Some(c) || !self.servers[i].up {
                    return;
                }
                // A new connection replaces the old one (as in production).
                if self.servers[i].links[l].take().is_some_and(|x| x.preamble.is_none()) {
                    self.link_down(i, l, true);
                }
                // RFC 8156 §10: the primary sends STARTTLS first.
                let (preamble, first) = match role(i) {
                    Role::Primary => Preamble::requester(true),
                    Role::Secondary => (Preamble::responder(true), Vec::new()),
                };
                self.servers[i].links[l] = Some(Link { conn: c, preamble: Some(preamble) });
                self.preamble_steps(i, l, c, first);
            }
            Ev::Closed(c, r, i) => {
                let Some(l) = local(i, r) else { return };
                if !self.servers[i].up || self.servers[i].links[l].as_ref().map(|x| x.conn) != Some(c) {
                    return;
                }
                let established = self.servers[i].links[l].take().is_some_and(|x| x.preamble.is_none());
                self.link_down(i, l, established);
            }
            Ev::DropConnection(r) => {
                self.disturb(r);
                let mut drop = vec![r];
                if self.sc.sabotage == Some(Sabotage::Entangled) && r == 0 {
                    drop.push(1);
                }
                for r in drop {
                    if let Some(c) = self.conn[r].take() {
                        self.log(format!("fault: {}'s connection drops", RELS[r].name));
                        for (i, _) in RELS[r].members {
                            self.at(0, Ev::Closed(c, r, i));
                        }
                    }
                }
            }
            Ev::Cut(r, on) => {
                self.disturb(r);
                self.log(format!("fault: {}'s connection {}", RELS[r].name, if on { "is cut" } else { "can be made again" }));
                self.cut[r] = on;
                if on {
                    // Nothing gets through; each side notices by keepalive.
                    self.conn[r] = None;
                    if self.sc.sabotage == Some(Sabotage::Entangled) && r == 0 {
                        self.conn[1] = None;
                    }
                }
            }
            Ev::Crash(i, lose) => {
                if self.servers[i].up {
                    self.crash(i, lose);
                }
            }
            Ev::CrashIfRecovering(i) => {
                let recovering = (0..2).any(|r| matches!(self.state(i, r), Some(ServerState::Recover | ServerState::RecoverWait)));
                if recovering {
                    self.log(format!("fault: server {i} crashes while recovering"));
                    self.crash(i, false);
                    let d = 5 + self.rng.below(30);
                    self.at(d, Ev::Restart(i));
                }
            }
            Ev::Restart(i) => {
                if !self.servers[i].up {
                    self.disturb_server(i);
                    self.start_server(i);
                }
            }
            Ev::Skew(i, s) => {
                self.disturb_server(i);
                self.log(format!("fault: server {i} clock skew {s:+} s"));
                self.servers[i].skew = s;
            }
            Ev::PartnerDown(i, r) => {
                // A careful operator: only when the partner is down and was
                // not itself in PARTNER-DOWN since they last spoke.
                let p = partner(i, r);
                if self.servers[p].up || self.pd_since_contact[r][side(p, r)] || !self.servers[i].up {
                    return;
                }
                let Some(l) = local(i, r) else { return };
                let now = self.server_now(i);
                if self.servers[i].drivers[l].partner_down(now).is_ok() {
                    self.disturb(r);
                    self.log(format!("operator: partner-down on server {i} for {}", RELS[r].name));
                    let mut q = VecDeque::new();
                    self.actions(i, l, &mut q);
                    self.work(i, q);
                }
            }
            Ev::ToShard(i, inc, l, s, m) => {
                self.servers[i].internal -= 1;
                if self.servers[i].up && self.servers[i].inc == inc {
                    self.work(i, VecDeque::from([Work::Shard(l, s, m)]));
                }
            }
            Ev::ToDriver(i, inc, l, m) => {
                self.servers[i].internal -= 1;
                if self.servers[i].up && self.servers[i].inc == inc {
                    self.work(i, VecDeque::from([Work::Driver(l, m)]));
                }
            }
            Ev::CommitDone(i, inc, s) => {
                self.servers[i].internal -= 1;
                if !self.servers[i].up || self.servers[i].inc != inc {
                    return;
                }
                let Some(batch) = self.servers[i].batches[s].take() else { return };
                self.durable(i, s, &batch);
                let done = self.servers[i].cores[s].batch_done(true, batch);
                let mut q = VecDeque::new();
                self.released(i, s, done, &mut q);
                self.work(i, q);
            }
            Ev::ClientTimer(c, generation) => self.client_timer(c, generation),
            Ev::ToServer(c, s, bytes) => self.deliver_to_server(c, s, &bytes),
            Ev::ToClient(c, bytes) => self.client_receive(c, &bytes),
        }
    }

    // ---- the run ----------------------------------------------------------

    pub fn run(mut self) -> Report {
        let heal_at = T0 + self.sc.chaos;
        let settle = if self.sc.settle > 0 { self.sc.settle } else { 4 * *self.sc.mclt.iter().max().expect("two") as Time + 400 };
        let end = heal_at + settle;
        // After `end` the clients stop; each relationship's stores are
        // compared in full at its first settled moment (at most this long).
        let last = end + 300;
        let mut healed = false;
        let mut ended = false;
        let mut compared = [false; 2];
        let mut states = [ServerState::Startup; 2];
        while let Some(Reverse((t, seq))) = self.events.pop() {
            if t > end && !ended {
                ended = true;
                self.now = end;
                states = self.liveness(settle);
                for c in &mut self.clients {
                    c.active = false;
                }
                self.pair_touched = [Touched::everything(), Touched::everything()];
                self.log("the clients stop; every relationship's stores are compared in full once settled".into());
            }
            if t > last || (ended && compared == [true, true]) || self.violations.len() > 5 {
                break;
            }
            let Some(ev) = self.payloads.remove(&seq) else { continue };
            self.now = t;
            if !healed && t >= heal_at {
                healed = true;
                self.heal();
            }
            if healed
                && matches!(
                    ev,
                    Ev::Crash(..) | Ev::Cut(_, true) | Ev::Skew(..) | Ev::PartnerDown(..) | Ev::DropConnection(_) | Ev::CrashIfRecovering(_)
                )
            {
                continue;
            }
            self.events_run += 1;
            self.step(ev);
            self.check_premise();
            self.check_quiet();
            for (r, done) in compared.iter_mut().enumerate() {
                let full = ended && !*done;
                if self.check_rel(r, full) && full {
                    *done = true;
                }
            }
            self.check_homes();
        }
        if !ended {
            self.now = end;
            states = self.liveness(settle);
        }
        if ended && self.violations.is_empty() {
            for (r, done) in compared.iter().enumerate() {
                if !done {
                    self.violate(format!("{} never settled for the final comparison of its stores in {} s: {}", RELS[r].name, last - end, self.unsettled_why[r]));
                }
            }
        }
        Report {
            seed: self.sc.seed,
            violations: self.violations,
            trace: self.trace.into(),
            events: self.events_run,
            replies: self.replies,
            final_states: states,
            bndupds: BTreeMap::new(),
            grants: self.grants,
            reserved_grants: BTreeMap::new(),
            relayed_grants: self.relayed_grants,
        }
    }

    /// Liveness after healing: every relationship NORMAL on both sides.
    /// Returns the hub's state in each relationship.
    fn liveness(&mut self, settle: Time) -> [ServerState; 2] {
        for (r, rel) in RELS.iter().enumerate() {
            let [(p, _), (h, _)] = rel.members;
            let st = [p, h].map(|i| self.state(i, r).unwrap_or(ServerState::Startup));
            if self.violations.is_empty() && st != [ServerState::Normal, ServerState::Normal] {
                self.violate(format!(
                    "liveness: {settle} s after healing {} is {} on server {p} / {} on the hub, not NORMAL / NORMAL",
                    rel.name,
                    st[0].name(),
                    st[1].name()
                ));
            }
        }
        [0, 1].map(|r| self.state(HUB, r).unwrap_or(ServerState::Startup))
    }

    // ---- invariants -------------------------------------------------------

    /// PARTNER-DOWN requires the partner not to be operating (§8.4), per
    /// relationship (see the pair simulator).
    fn check_premise(&mut self) {
        for (r, rel) in RELS.iter().enumerate() {
            for (sd, &(i, l)) in rel.members.iter().enumerate() {
                let d = self.servers[i].drivers.get(l);
                if d.is_some_and(|d| d.endpoint().state() == ServerState::PartnerDown) {
                    self.pd_since_contact[r][sd] = true;
                }
                if d.is_some_and(|d| d.endpoint().communications_ok()) {
                    self.pd_since_contact[r] = [false; 2];
                }
            }
            if self.misconfigured[r] {
                continue;
            }
            if self.pd_since_contact[r] == [true, true] {
                self.misconfigured[r] = true;
                self.log(format!("both servers of {} were in PARTNER-DOWN without contact in between: misconfiguration", rel.name));
            }
            for sd in 0..2 {
                let (i, _) = rel.members[sd];
                let (o, ol) = rel.members[1 - sd];
                let other = &self.servers[o];
                let other_serving = other.up
                    && other.drivers.get(ol).is_some_and(|d| {
                        let e = d.endpoint();
                        !e.communications_ok()
                            && !matches!(e.state(), ServerState::Startup | ServerState::Recover | ServerState::RecoverWait | ServerState::PotentialConflict)
                    });
                if self.state(i, r) == Some(ServerState::PartnerDown) && other_serving && !self.misconfigured[r] {
                    self.misconfigured[r] = true;
                    self.log(format!("server {i} is in PARTNER-DOWN for {} while its partner operates: misconfiguration", rel.name));
                }
            }
        }
    }

    /// Isolation: a relationship NORMAL on both sides, with no fault of its
    /// own for a minute, stays NORMAL until its next fault.
    fn check_quiet(&mut self) {
        for r in 0..2 {
            let [(p, pl), (h, hl)] = RELS[r].members;
            let ep = |i: usize, l: usize| self.servers[i].drivers.get(l).map(|d| d.endpoint());
            let normal = [ep(p, pl), ep(h, hl)].iter().all(|e| e.is_some_and(|e| e.state() == ServerState::Normal));
            let connected = [ep(p, pl), ep(h, hl)].iter().all(|e| e.is_some_and(|e| e.communications_ok()));
            if self.quiet[r] && !normal {
                let other = &RELS[1 - r].name;
                let (sp, sh) = (self.state(p, r).map(|s| s.name()).unwrap_or("down"), self.state(h, r).map(|s| s.name()).unwrap_or("down"));
                self.violate(format!(
                    "isolation: {} left NORMAL ({sp} / {sh}) with no fault of its own since t+{} ({other} is {} / {})",
                    RELS[r].name,
                    self.last_fault[r] - T0,
                    self.state(RELS[1 - r].members[0].0, 1 - r).map(|s| s.name()).unwrap_or("down"),
                    self.state(HUB, 1 - r).map(|s| s.name()).unwrap_or("down"),
                ));
                self.quiet[r] = false;
            }
            // Clocks apart by more than 2 s are a fault that lasts: with
            // the network's delay of up to 2 s the partner may see more
            // than the 5 s RFC 8156 §7.1 tolerates.
            let clocks = self.servers[p].skew.abs_diff(self.servers[h].skew) <= 2;
            if !self.quiet[r] && normal && connected && clocks && !self.cut[r] && self.now >= self.last_fault[r] + 60 {
                self.quiet[r] = true;
            }
        }
    }

    /// At a grant by server `s` under `policy` (its relationship `l`): the
    /// MCLT rule (against that relationship's partner) and the halves.
    fn check_grant(&mut self, s: usize, l: usize, policy: &EndpointPolicy, lease: &Lease, now: Time, renewal: bool) {
        if lease.status != BindingStatus::Active {
            return;
        }
        let r = global(s, l);
        if policy.mclt_applies() {
            let limit = lease.acked_partner_lifetime.max(now) + policy.mclt as Time;
            if lease.valid_end > limit {
                self.violate(format!(
                    "MCLT: server {s} in {} of {} gave {} until {} > max(acked {}, now {}) + MCLT {}",
                    policy.state.name(),
                    RELS[r].name,
                    lease.key,
                    lease.valid_end,
                    lease.acked_partner_lifetime,
                    now,
                    policy.mclt
                ));
            }
            let p = partner(s, r);
            if self.servers[p].up && !self.misconfigured[r] {
                let theirs = self.servers[p].cores.iter().filter_map(|c| c.engine().leases().get(&lease.key)).max_by_key(|x| x.start_time_of_state).cloned();
                if let Some(t) = theirs.filter(|t| t.binding == lease.binding) {
                    let protected = t.expiration_time.max(now) + policy.mclt as Time + crate::failover::SKEW_TOLERANCE;
                    if lease.valid_end > protected && lease.acked_partner_lifetime > t.expiration_time {
                        self.violate(format!(
                            "MCLT: server {s} gave {} until {} on an acked lifetime of {}, but its {} partner protects it only until {} + MCLT",
                            lease.key,
                            lease.valid_end,
                            lease.acked_partner_lifetime,
                            RELS[r].name,
                            t.expiration_time
                        ));
                    }
                }
            }
        }
        if renewal {
            return;
        }
        if let LeaseKey::Addr(a) = lease.key
            && crate::failover::address_owner(a) != role(s)
        {
            self.violate(format!("ownership: server {s} ({:?} of {}) granted {a} from the partner's half", role(s), RELS[r].name));
        }
    }

    /// The hub answered NoPrefixAvail to a client of `link` while a shard
    /// of it holds a FREE-BACKUP prefix of that link's relationship it may
    /// delegate (see the pair simulator).
    fn check_prefix_service(&mut self, s: usize, shard: usize, link: usize, r: &crate::server::Reply) {
        if role(s) != Role::Secondary || self.sc.sabotage == Some(Sabotage::IgnorePolicy) {
            return;
        }
        let core = &self.servers[s].cores[shard];
        let Some(policy) = core.policies().get(link).copied() else { return };
        if !matches!(policy.state, ServerState::CommunicationsInterrupted | ServerState::PartnerDown | ServerState::ResolutionInterrupted) {
            return;
        }
        let Some(m) = r.message.unwrap_relays().1 else { return };
        let refused = m.options.ia_pds().any(|ia| ia.options.status().is_some_and(|st| st.code == crate::wire::StatusCode::NO_PREFIX_AVAIL));
        if !refused {
            return;
        }
        let now = self.server_now(s);
        let e = core.engine();
        let held = e
            .free_backup_prefixes()
            .find(|x| core.relationship_of(&x.key) == Some(link) && !e.is_blocked(&x.key) && !policy.held_after_partner_loss(x, now) && e.in_pools(&x.key))
            .map(|x| x.key);
        if let Some(k) = held {
            self.violate(format!("server {s} ({} of {}) answered NoPrefixAvail holding FREE-BACKUP {k}", policy.state.name(), RELS[link].name));
        }
    }

    /// An ACTIVE record lives with its client's shard (see the pair simulator).
    fn check_homes(&mut self) {
        if self.now == self.last_home_check {
            return;
        }
        self.last_home_check = self.now;
        for i in 0..3 {
            let srv = &self.servers[i];
            if !srv.up || srv.home_touched.is_empty() || !srv.drivers.iter().all(Driver::settled) || srv.cores.iter().any(|c| !c.idle()) || srv.internal > 0 {
                continue;
            }
            let slices = SliceMap::new(&srv.subnets, srv.shards);
            let misplaced_at = |at: usize, l: &Lease| l.is_active() && home_of(&slices, srv.shards, l) != at;
            let mut misplaced = None;
            for (at, c) in srv.cores.iter().enumerate() {
                let found = if srv.home_touched.all {
                    c.engine().leases().iter().find(|l| misplaced_at(at, l))
                } else {
                    srv.home_touched.keys.iter().filter_map(|k| c.engine().leases().get(k)).find(|l| misplaced_at(at, l))
                };
                if let Some(l) = found {
                    misplaced = Some((at, l.key, home_of(&slices, srv.shards, l)));
                    break;
                }
            }
            self.servers[i].home_touched = Touched { all: false, keys: HashSet::new() };
            if let Some((at, k, home)) = misplaced {
                self.violate(format!("server {i}: the ACTIVE record of {k} is at shard {at}, its client's shard is {home}"));
            }
        }
    }

    /// Relationship `r`'s records on server `i` that the two stores must
    /// agree on (see the pair simulator's `records`).
    fn records(&self, i: usize, r: usize) -> Vec<Record<'_>> {
        let mut v: Vec<(Time, Record<'_>)> = Vec::new();
        let t = &self.pair_touched[r];
        for c in &self.servers[i].cores {
            let leases: Box<dyn Iterator<Item = &Lease>> =
                if t.all { Box::new(c.engine().leases().iter()) } else { Box::new(t.keys.iter().filter_map(|k| c.engine().leases().get(k))) };
            for l in leases {
                if rel_of_key(&l.key) != r {
                    continue;
                }
                let free_addr = matches!(l.status, BindingStatus::Free | BindingStatus::FreeBackup) && matches!(l.key, LeaseKey::Addr(_));
                let free_prefix = l.key.ia_type() == IaType::Pd && l.status == BindingStatus::Free;
                if free_addr || free_prefix {
                    continue;
                }
                let active = l.is_active();
                let relay = if active { l.relay.as_deref() } else { None };
                v.push((l.start_time_of_state, (l.key, l.status, active.then_some(&l.binding.duid), if active { l.valid_end } else { 0 }, relay)));
            }
        }
        v.sort_by(|a, b| a.1.0.cmp(&b.1.0).then(b.0.cmp(&a.0)));
        v.dedup_by(|later, first| later.1.0 == first.1.0);
        v.into_iter().map(|(_, r)| r).collect()
    }

    /// Why relationship `r` is not settled (NORMAL on both sides, nothing
    /// queued or in flight), if it is not.
    fn unsettled(&self, r: usize) -> Option<String> {
        for (i, l) in RELS[r].members {
            let s = &self.servers[i];
            let Some(d) = s.drivers.get(l) else { return Some(format!("server {i} is down")) };
            let e = d.endpoint();
            if e.state() != ServerState::Normal || !e.communications_ok() {
                return Some(format!("server {i} is in {}", e.state().name()));
            }
            if e.backlog() > 0 || !d.settled() {
                return Some(format!("server {i}'s driver has work (backlog {})", e.backlog()));
            }
            if s.internal > 0 || s.cores.iter().any(|c| !c.idle()) {
                return Some(format!("server {i}'s shards have work"));
            }
        }
        if self.in_flight[r] > 0 {
            return Some("messages in flight".into());
        }
        for (i, _) in RELS[r].members {
            let flagged = self.servers[i].cores.iter().flat_map(|c| c.engine().leases().iter()).find(|l| l.update_partner && rel_of_key(&l.key) == r);
            if let Some(l) = flagged {
                return Some(format!("server {i} has {} {} to send", l.key, l.status.name()));
            }
        }
        None
    }

    /// Relationship `r` NORMAL on both sides, nothing queued or in flight →
    /// its two stores agree on its keys. `full`: compare even if nothing
    /// changed since the last comparison. True if it compared.
    fn check_rel(&mut self, r: usize, full: bool) -> bool {
        if !full && (self.now == self.last_pair_check[r] || self.pair_touched[r].is_empty()) {
            return false;
        }
        if let Some(why) = self.unsettled(r) {
            self.unsettled_why[r] = why;
            return false;
        }
        if full {
            self.pair_touched[r] = Touched::everything();
        }
        self.last_pair_check[r] = self.now;
        let now = self.now;
        let [(p, _), (h, _)] = RELS[r].members;
        let (ma, mb) = (self.records(p, r), self.records(h, r));
        let same = |a: &Record<'_>, b: &Record<'_>| a.1 == b.1 && a.2 == b.2 && a.3.abs_diff(b.3) <= crate::failover::SKEW_TOLERANCE && a.4 == b.4;
        let near = |v: Option<&Record<'_>>| v.is_some_and(|v| v.3 != 0 && v.3 < now + 40);
        let (mut x, mut y) = (ma.iter().peekable(), mb.iter().peekable());
        let mut in_motion = HashSet::new();
        let mut disagree = None;
        loop {
            let (a, b) = match (x.peek(), y.peek()) {
                (None, None) => break,
                (Some(a), Some(b)) if a.0 == b.0 => (x.next(), y.next()),
                (Some(a), Some(b)) if a.0 < b.0 => (x.next(), None),
                (Some(_), Some(_)) => (None, y.next()),
                (Some(_), None) => (x.next(), None),
                (None, Some(_)) => (None, y.next()),
            };
            if let (Some(a), Some(b)) = (a, b)
                && same(a, b)
            {
                continue;
            }
            if near(a) || near(b) {
                in_motion.insert(a.or(b).expect("one side").0);
                continue;
            }
            let show = |r: Option<&Record<'_>>| format!("{:?}", r.map(|r| (r.1, r.2.cloned().unwrap_or_else(|| Duid::ll(0, &[0])), r.3, r.4.map(|x| crate::wire::hex::encode(&x.message)))));
            let k = a.or(b).expect("one side").0;
            disagree = Some(format!("stores of {} disagree on {k}: server {p} {}, the hub {}", RELS[r].name, show(a), show(b)));
            break;
        }
        drop((ma, mb));
        self.pair_touched[r] = Touched { all: false, keys: in_motion };
        if let Some(m) = disagree {
            self.violate(m);
        }
        true
    }

    // ---- clients ------------------------------------------------------------

    fn deliver_to_server(&mut self, c: usize, s: usize, bytes: &[u8]) {
        if !self.servers[s].up {
            return;
        }
        let now = self.server_now(s);
        let Ok(msg) = Message::decode(bytes) else {
            self.violate(format!("client {c} sent an undecodable message"));
            return;
        };
        let link = self.link[c];
        let arrival = Arrival {
            interface: Some(LINK_IFACE[link]),
            source: "fe80::1".parse().expect("literal"),
            destination: "ff02::1:2".parse().expect("literal"),
        };
        let Some(duid) = msg.unwrap_relays().1.and_then(|m| m.options.client_id().cloned()) else { return };
        let n = self.servers[s].shards;
        let shard = if n > 1 { shard_of(duid.as_bytes(), n as u32) as usize } else { 0 };
        let core = &mut self.servers[s].cores[shard];
        let held: Vec<LeaseKey> = [IaType::Na, IaType::Pd]
            .iter()
            .flat_map(|t| core.engine().leases().keys_of(&Binding { duid: duid.clone(), ia_type: *t, iaid: 1 }))
            .filter(|k| core.engine().leases().get(k).is_some_and(Lease::is_active))
            .collect();
        let before = core.uncommitted();
        let out = core.handle(now, &msg, &arrival, c);
        let granted: Vec<(Lease, Option<(usize, EndpointPolicy)>)> = core
            .pending_since(before)
            .into_iter()
            .map(|l| (l.clone(), core.relationship_of(&l.key).map(|rl| (rl, core.policies()[rl]))))
            .collect();
        for (l, pol) in &granted {
            let state = pol.map(|p| p.1.state).unwrap_or(ServerState::Startup);
            if self.sc.verbose {
                self.log(format!("server {s} ({}) grants {} {} cltt {} end {} flag {}", state.name(), l.key, l.status.name(), l.cltt, l.valid_end, l.update_partner));
            }
            if rel_of_key(&l.key) != link {
                self.violate(format!("server {s} wrote {} for client {c} of the other link", l.key));
            }
            let Some((rl, policy)) = pol else { continue };
            if l.is_active() {
                *self.grants.entry((state, l.key.ia_type())).or_default() += 1;
                self.relayed_grants += l.relay.is_some() as u64;
                // §8.5.2, §8.6: a server that lost its store serves nothing
                // of the relationship until it has everything back.
                let lost = self.servers[s].drivers[*rl].endpoint().persistent().need_all;
                if lost && self.sc.sabotage != Some(Sabotage::IgnorePolicy) {
                    self.violate(format!("server {s} granted {} in {} before {}'s resync completed", l.key, state.name(), RELS[global(s, *rl)].name));
                }
            }
            self.check_grant(s, *rl, policy, l, now, held.contains(&l.key));
        }
        if let Handled::Reply(_, r) = &out {
            self.check_prefix_service(s, shard, link, r);
        }
        match out {
            Handled::Reply(c, r) => {
                let bytes = r.message.encode().expect("reply encodes");
                self.replies += 1;
                let d = self.rng.below(2);
                self.at(d, Ev::ToClient(c, bytes));
            }
            Handled::Deferred => self.work(s, VecDeque::from([Work::Commit(shard)])),
            Handled::Dropped(_) => {}
        }
    }

    fn client_msg(&self, c: usize, t: MessageType, server: Option<usize>) -> Vec<u8> {
        let cl = &self.clients[c];
        let mut o = vec![DhcpOption::ClientId(client_duid(cl.duid_n)), DhcpOption::ElapsedTime(0)];
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
        let xid = cl.xid;
        let m = Message::Client(ClientMessage { msg_type: t, transaction_id: xid, options: o.into() });
        // A third of the clients sit behind their link's relay, whose
        // OPTION_RELAY_ID changes with the transaction.
        let m = if (c / 2).is_multiple_of(3) {
            let link_address = Ipv6Addr::new(0x2001, 0xdb8, self.link[c] as u16 + 1, 0, 0, 0, 0, 1);
            Message::Relay(crate::wire::RelayMessage {
                msg_type: MessageType::RelayForw,
                hop_count: 0,
                link_address,
                peer_address: "fe80::c".parse().expect("literal"),
                options: vec![
                    DhcpOption::Unknown { code: crate::wire::opt::RELAY_ID, data: vec![0, 3, 0, 1, (xid % 3) as u8] },
                    DhcpOption::RelayMsg(Box::new(m)),
                ]
                .into(),
            })
        } else {
            m
        };
        m.encode().expect("client message")
    }

    /// Multicast (or to `server`): every server on the client's link hears it.
    fn client_send(&mut self, c: usize, t: MessageType, server: Option<usize>) {
        self.clients[c].xid = (self.clients[c].xid + 1) & 0xff_ffff;
        let bytes = self.client_msg(c, t, server);
        for s in LINK_SERVERS[self.link[c]] {
            let d = self.rng.below(2);
            self.at(d, Ev::ToServer(c, s, bytes.clone()));
        }
    }

    /// The server a bound client renews with: the one that gave it its lease.
    fn bound_to(&self, c: usize) -> usize {
        let cl = &self.clients[c];
        cl.addr.map(|x| x.2).or(cl.prefix.map(|x| x.2)).unwrap_or(LINK_SERVERS[self.link[c]][0])
    }

    fn client_timer(&mut self, c: usize, generation: u64) {
        if self.clients[c].generation != generation || !self.clients[c].active {
            return;
        }
        self.clients[c].generation += 1;
        let g = self.clients[c].generation;
        let now = self.now;
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
                if let Some(&(s, _)) = self.clients[c].advertised.first() {
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
                let s = self.bound_to(c);
                if self.rng.below(25) == 0 {
                    self.client_send(c, MessageType::Release, Some(s));
                    self.log(format!("client {c} releases"));
                    self.clients[c].addr = None;
                    self.clients[c].prefix = None;
                    self.clients[c].phase = Phase::Idle;
                    let d = 5 + self.rng.below(200);
                    self.at(d, Ev::ClientTimer(c, g));
                    return;
                }
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

    fn client_receive(&mut self, c: usize, bytes: &[u8]) {
        let m = match Message::decode(bytes) {
            Ok(Message::Client(m)) => m,
            Ok(Message::Relay(r)) if matches!(r.options.relay_msg(), Some(Message::Client(_))) => {
                let Some(Message::Client(m)) = r.options.relay_msg() else { unreachable!() };
                m.clone()
            }
            _ => {
                self.violate(format!("client {c} got an undecodable reply"));
                return;
            }
        };
        if m.transaction_id != self.clients[c].xid {
            return;
        }
        let Some(sid) = m.options.server_id().cloned() else { return };
        let Some(s) = self.servers.iter().position(|x| x.duid == sid) else { return };
        match m.msg_type {
            MessageType::Advertise if self.clients[c].phase == Phase::Soliciting => self.clients[c].advertised.push((s, sid)),
            MessageType::Reply => {
                if !matches!(self.clients[c].phase, Phase::Requesting(_) | Phase::Renewing(_) | Phase::Rebinding) {
                    return;
                }
                let now = self.now;
                let (held, t1t2) = self.clients[c].take_reply(&m, now, s);
                for &(key, until) in &held {
                    self.claim(c, key, until, s);
                }
                let got = !held.is_empty();
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

    /// No address or prefix is held by two clients at once; a client holds
    /// only keys of its own link.
    fn claim(&mut self, c: usize, key: LeaseKey, until: Time, s: usize) {
        let now = self.now;
        let r = rel_of_key(&key);
        let st = self.state(s, r).map(|x| x.name()).unwrap_or("-");
        self.log(format!("client {c} holds {key} from server {s} ({st}) until t+{}", until - T0));
        if r != self.link[c] {
            self.violate(format!("server {s} gave {key} to client {c} of the other link"));
        }
        if self.misconfigured[r] {
            return;
        }
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
        for o in clashes {
            self.violate(format!("duplicate: server {s} gave {key} to client {c} while client {o} holds it"));
        }
    }
}

/// Run one hub seed; a failing seed's report carries the trace.
pub fn run_hub_seed(seed: u64) -> Report {
    HubSim::new(HubScenario::new(seed)).run()
}

/// Run one hub seed tracing every failover message and store write.
pub fn run_hub_seed_verbose(seed: u64) -> Report {
    HubSim::new(HubScenario { verbose: true, ..HubScenario::new(seed) }).run()
}
