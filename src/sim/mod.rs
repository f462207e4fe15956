//! A deterministic simulator of a failover pair.
//!
//! Seeded, single-threaded, simulated clock and network. Each server runs
//! the production program minus its IO: the failover `Driver` (endpoint,
//! framing, STARTTLS preamble, routing, barriers) and one `ShardCore` per
//! shard (engine, group commits, the shard side of the bus), over in-memory
//! stores behind the store trait. Clients' messages reach the shard their
//! DUID hashes to, as in production. Faults are drawn from the seed (see
//! `scenario`): connection drops, partitions, message delay, crashes (with
//! restart), loss of a whole store, clock skew inside and beyond 5 s,
//! operator partner-down, late commits, shard-count and lifetime changes.
//! After every step the invariants are checked; a failing run prints its
//! seed and trace.

mod clients;
pub mod hub;
mod rng;
mod scenario;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::Ipv6Addr;

pub use rng::Rng;
pub use scenario::{Pools, Scenario};

use clients::Client;
use crate::config::Config;
use crate::failover::bus::{ToFailover, ToShard};
use crate::failover::preamble::{Preamble, Step};
use crate::failover::router::{ShardRouter, home_of};
use crate::failover::{Action, Driver, EndpointPolicy, FailoverConfig, Persistent, Role};
use crate::lease::store::{LeaseStore, MemoryStore, meta};
use crate::lease::{Binding, IaType, Lease, LeaseChange, LeaseKey, Time};
use crate::pool::hash::shard_of;
use crate::server::settings::Subnet;
use crate::server::{Arrival, EngineConfig, SliceMap};
use crate::shard::{Handled, ShardCore, ShardsConfig};
use crate::wire::{BindingStatus, Duid, FailoverMessage, FrameDecoder, MAX_FRAME_LEN, Message, MessageType, ServerState};

/// Every subnet in the pair's one failover relationship (as a `[failover]`
/// without `subnets` puts them).
fn in_relationship(subnets: Vec<Subnet>) -> Vec<Subnet> {
    subnets.into_iter().map(|s| Subnet { relationship: Some(0), ..s }).collect()
}

fn subnet_config(pools: Pools, valid: u32, reservations: bool) -> String {
    let (addrs, pd) = match pools {
        Pools::Small => ("2001:db8:1::100-2001:db8:1::13f", r#"{ prefix = "2001:db8:100::/56", delegated-length = 60 }"#),
        Pools::Large => ("2001:db8:1::1000-2001:db8:1::ffff", r#"{ prefix = "2001:db8:100::/48", delegated-length = 60 }"#),
        Pools::Huge => ("2001:db8:1::1000-2001:db8:1::ffff", r#"{ prefix = "3fff:100::/32", delegated-length = 64 }"#),
    };
    // Clients 1-4 (`clients::client_duid`): an address of each half of the
    // pool, a delegable prefix, and an address outside the pools; both
    // servers grant them in any state that allocates.
    let reserved = if reservations {
        let first = addrs.split('-').next().expect("range");
        let base = u128::from(first.parse::<std::net::Ipv6Addr>().expect("pool start"));
        let pd_first = match pools {
            Pools::Huge => "3fff:100::/64",
            _ => "2001:db8:100::/60",
        };
        let duid = |n: u64| clients::client_duid(n).to_hex();
        format!(
            "reservations = [ {{ duid = \"{}\", address = \"{}\" }}, {{ duid = \"{}\", address = \"{}\" }}, {{ duid = \"{}\", prefix = \"{pd_first}\" }}, {{ duid = \"{}\", address = \"2001:db8:1::5\" }} ]\n",
            duid(1),
            std::net::Ipv6Addr::from(base),
            duid(2),
            std::net::Ipv6Addr::from(base + 1),
            duid(3),
            duid(4),
        )
    } else {
        String::new()
    };
    format!(
        r#"
interfaces = ["eth0"]
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "eth0"
pools = ["{addrs}"]
pd-pools = [{pd}]
preferred-lifetime = {pref}
valid-lifetime = {valid}
rapid-commit = false
{reserved}"#,
        pref = valid * 2 / 3
    )
}

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    ServerTick(usize),
    ClientTimer(usize, u64),
    /// A DHCPv6 message from client to server `s`.
    ToServer(usize, usize, Vec<u8>),
    /// A reply to client `c` (generation check inside).
    ToClient(usize, Vec<u8>),
    /// Bytes on connection `conn` towards server `s` (one frame, or a preamble message).
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
    /// Crash server `i` if it is recovering (RECOVER, RECOVER-WAIT) now.
    CrashIfRecovering(usize),
    /// The operator reloads server `i` with the extra pools (true) or without.
    Reload(usize, bool),
    /// `ctl lease del` of a random ACTIVE lease on server `i`.
    OperatorReset(usize),
    /// `ctl lease add` of a random key for a client outside the simulation.
    OperatorAdd(usize),
    /// Inside server `i` (incarnation `inc`): a message to a shard, to the
    /// driver, or a commit that completed.
    ToShard(usize, u64, usize, ToShard),
    ToDriver(usize, u64, ToFailover),
    CommitDone(usize, u64, usize),
}

/// Work inside one server, done at once (version 1) or as events (version 2).
enum Work {
    Shard(usize, ToShard),
    Driver(ToFailover),
    Commit(usize),
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
    /// With `Scenario::count_updates`: BNDUPDs sent about each lease.
    pub bndupds: BTreeMap<LeaseKey, u32>,
    /// Leases granted or extended, by the state (as the shard saw it) and IA type.
    pub grants: BTreeMap<(ServerState, IaType), u64>,
    /// New grants of a reserved address from the partner's half, by state
    /// (reservations are outside the split, README "Reservations").
    pub reserved_grants: BTreeMap<ServerState, u64>,
    /// Of the grants, those that keep a relay chain (relayed clients).
    pub relayed_grants: u64,
}

/// The failover connection as one server sees it.
struct Link {
    conn: u64,
    /// Until the STARTTLS exchange is over.
    preamble: Option<Preamble>,
}

struct Server {
    role: Role,
    duid: Duid,
    up: bool,
    skew: i64,
    /// Incarnation: events of an earlier run of this server are stale.
    inc: u64,
    subnets: Vec<Subnet>,
    /// The running pools (a reload retires removed ones; a start forgets them).
    slices: SliceMap,
    shards: usize,
    /// The durable stores, one per shard (they survive crashes).
    stores: Vec<MemoryStore>,
    meta: MemoryStore,
    driver: Option<Driver>,
    cores: Vec<ShardCore<usize>>,
    /// Per shard: the batch being committed.
    batches: Vec<Option<Vec<LeaseChange>>>,
    link: Option<Link>,
    restarts: u32,
    /// Keys committed since the record placement was last checked; all of
    /// them after a start (the tables were rebuilt from the stores).
    home_touched: Touched,
}

/// Lease keys a check must look at again: those written since it last ran,
/// or every key (`all`) when the tables were rebuilt. Between two checks a
/// record no commit touched cannot have changed, so the checks that run at
/// every settled second of every seed compare only these.
#[derive(Debug)]
struct Touched {
    all: bool,
    keys: HashSet<LeaseKey>,
}

impl Touched {
    fn everything() -> Touched {
        Touched { all: true, keys: HashSet::new() }
    }

    fn is_empty(&self) -> bool {
        !self.all && self.keys.is_empty()
    }

    fn add(&mut self, batch: &[LeaseChange]) {
        if self.all {
            return;
        }
        for c in batch {
            self.keys.insert(match c {
                LeaseChange::Upsert(l) => l.key,
                LeaseChange::Delete(k) => *k,
            });
        }
    }
}

pub struct Sim {
    sc: Scenario,
    rng: Rng,
    /// The second stream (version 2 draws).
    rng2: Rng,
    /// The operator's stream (`Scenario::operator`).
    rng3: Rng,
    /// `ctl lease add`s so far (each for a client of its own).
    added: u64,
    now: Time,
    seq: u64,
    events: BinaryHeap<Reverse<(Time, u64, usize)>>,
    payloads: HashMap<u64, Ev>,
    servers: Vec<Server>,
    clients: Vec<Client>,
    /// Leases of clients outside the simulation (preloaded), and their ends.
    phantom: HashMap<LeaseKey, Time>,
    conn_id: u64,
    /// Connection currently open between the servers.
    conn: Option<u64>,
    partitioned: bool,
    /// Latest scheduled delivery per direction, to keep TCP order.
    last_delivery: [Time; 2],
    in_flight: u64,
    /// Messages and commits inside the servers not yet delivered (version 2).
    internal: u64,
    trace: Vec<String>,
    violations: Vec<String>,
    events_run: u64,
    replies: u64,
    /// A server was in PARTNER-DOWN while its partner was operating: the
    /// RFC's premise is broken (operator error), duplicates are possible and
    /// only POTENTIAL-CONFLICT's resolution is checked.
    misconfigured: bool,
    /// With reservations: what the operator's first growing reload also
    /// reserves (fixed at that reload, the same for both servers).
    late_reserved: Option<Vec<crate::config::Reservation>>,
    /// Keys whose reservations differed between the servers (`note_mismatches`).
    mismatched: HashSet<LeaseKey>,
    /// Server i has been in PARTNER-DOWN since the pair last communicated.
    pd_since_contact: [bool; 2],
    last_pair_check: Time,
    /// A store changed since the stores last agreed.
    /// Keys to compare at the next stores-agree check.
    pair_touched: Touched,
    last_home_check: Time,
    bndupds: BTreeMap<LeaseKey, u32>,
    grants: BTreeMap<(ServerState, IaType), u64>,
    reserved_grants: BTreeMap<ServerState, u64>,
    relayed_grants: u64,
}

const T0: Time = 1_800_000_000;

impl Sim {
    pub fn new(sc: Scenario) -> Sim {
        let mut rng = Rng::new(sc.seed);
        let rng2 = Rng::new(sc.seed ^ 0x5eed_0000_0000_0003);
        let rng3 = Rng::new(sc.seed ^ 0x5eed_0000_0000_0005);
        let subnets = in_relationship(Config::parse(&subnet_config(sc.pools, sc.valid, sc.reservations)).expect("sim subnet config").subnets);
        let mut servers: Vec<Server> = (0..2)
            .map(|i| Server {
                role: if i == 0 { Role::Primary } else { Role::Secondary },
                duid: Duid::llt(1, 1, &[2, 0, 0, 0, 0, i as u8 + 1]),
                up: false,
                skew: 0,
                inc: 0,
                slices: SliceMap::new(&subnets, sc.shards[i].max(1)),
                subnets: subnets.clone(),
                shards: sc.shards[i].max(1),
                stores: (0..sc.shards[i].max(1)).map(|_| MemoryStore::new()).collect(),
                meta: MemoryStore::new(),
                driver: None,
                cores: Vec::new(),
                batches: Vec::new(),
                link: None,
                restarts: 0,
                home_touched: Touched::everything(),
            })
            .collect();
        if sc.reservations_differ {
            // The secondary alone reserves base+5 (the primary's half) for client 7.
            let s = &mut servers[1];
            let base = u128::from(s.subnets[0].pools[0].first);
            s.subnets[0].reservations.push(crate::config::Reservation {
                client: crate::config::ReservedFor::Duid(clients::client_duid(7)),
                addresses: vec![std::net::Ipv6Addr::from(base + 5)],
                prefixes: Vec::new(),
                hostname: None,
                options: Vec::new(),
            });
            s.slices = SliceMap::new(&s.subnets, s.shards);
        }
        let clients = (0..sc.clients)
            .map(|i| Client { duid_n: i as u64 + 1, wants_pd: rng.below(3) == 0, active: true, ..Default::default() })
            .collect();
        let mut s = Sim {
            rng,
            rng2,
            rng3,
            added: 0,
            now: T0,
            seq: 0,
            events: BinaryHeap::new(),
            payloads: HashMap::new(),
            servers,
            clients,
            phantom: HashMap::new(),
            conn_id: 0,
            conn: None,
            partitioned: false,
            last_delivery: [0; 2],
            in_flight: 0,
            internal: 0,
            trace: Vec::new(),
            violations: Vec::new(),
            events_run: 0,
            replies: 0,
            misconfigured: false,
            late_reserved: None,
            mismatched: HashSet::new(),
            pd_since_contact: [false; 2],
            last_pair_check: 0,
            pair_touched: Touched::everything(),
            last_home_check: 0,
            bndupds: BTreeMap::new(),
            grants: BTreeMap::new(),
            reserved_grants: BTreeMap::new(),
            relayed_grants: 0,
            sc,
        };
        s.note_mismatches();
        if s.sc.faults {
            s.schedule_faults();
            if s.sc.version >= 2 {
                s.schedule_faults_v2();
            }
            if s.sc.operator {
                s.schedule_operator();
            }
        }
        if s.sc.preload > 0 {
            s.preload();
        }
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
        self.at_abs(self.now + delay, ev);
    }

    fn at_abs(&mut self, t: Time, ev: Ev) {
        self.seq += 1;
        self.payloads.insert(self.seq, ev);
        self.events.push(Reverse((t, self.seq, 0)));
    }

    fn log(&mut self, s: String) {
        if self.trace.len() < 40_000 {
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
            self.at_abs(T0 + t, ev.clone());
            match ev {
                Ev::Partition(true) => {
                    let len = 30 + self.rng.below(600);
                    self.at_abs(T0 + t + len, Ev::Partition(false));
                }
                Ev::Crash(i, _) => {
                    let len = 5 + self.rng.below(400);
                    self.at_abs(T0 + t + len, Ev::Restart(i));
                }
                _ => {}
            }
        }
        if self.sc.both_partner_down {
            // Misconfiguration: operator partner-down on both sides during a partition.
            let t = 100 + self.rng.below(chaos / 2);
            for (ev, dt) in [(Ev::Partition(true), 0), (Ev::PartnerDown(0), 5), (Ev::PartnerDown(1), 6), (Ev::Partition(false), 200)] {
                self.at_abs(T0 + t + dt, ev);
            }
        }
    }

    /// Version 2 faults, from the second stream.
    fn schedule_faults_v2(&mut self) {
        let chaos = self.sc.chaos;
        if self.sc.crash_in_recovery {
            // Probes: whoever is recovering then crashes, and comes back soon.
            for _ in 0..6 {
                let t = 60 + self.rng2.below(chaos);
                let i = self.rng2.below(2) as usize;
                self.at_abs(T0 + t, Ev::CrashIfRecovering(i));
            }
        }
        if self.sc.startup_meet {
            // Both crash close together: the first back meets the other in STARTUP.
            let t = 120 + self.rng2.below(chaos / 2);
            let gap = self.rng2.below(8);
            self.at_abs(T0 + t, Ev::Crash(0, false));
            self.at_abs(T0 + t + 1, Ev::Crash(1, false));
            self.at_abs(T0 + t + 20, Ev::Restart(0));
            self.at_abs(T0 + t + 20 + gap, Ev::Restart(1));
        }
    }

    /// Operator commands (`Scenario::operator`), from the third stream.
    fn schedule_operator(&mut self) {
        let chaos = self.sc.chaos;
        // Both servers reload, one after the other: between the two, the
        // partner answers updates about the new pools ConfigurationConflict.
        let t = 60 + self.rng3.below(chaos / 2);
        let first = self.rng3.below(2) as usize;
        let gap = self.rng3.below(90);
        self.at_abs(T0 + t, Ev::Reload(first, true));
        self.at_abs(T0 + t + gap, Ev::Reload(1 - first, true));
        if self.rng3.below(2) == 0 {
            let t2 = t + gap + 60 + self.rng3.below(chaos / 2);
            let first = self.rng3.below(2) as usize;
            let gap = self.rng3.below(90);
            self.at_abs(T0 + t2, Ev::Reload(first, false));
            self.at_abs(T0 + t2 + gap, Ev::Reload(1 - first, false));
        }
        for _ in 0..2 + self.rng3.below(5) {
            let t = 60 + self.rng3.below(chaos);
            let ev = if self.rng3.below(2) == 0 { Ev::OperatorReset(self.rng3.below(2) as usize) } else { Ev::OperatorAdd(self.rng3.below(2) as usize) };
            self.at_abs(T0 + t, ev);
        }
    }

    /// The first subnet with (`grow`) or without the operator's extra pools.
    fn reloaded_subnets(&mut self, i: usize, grow: bool) -> Vec<Subnet> {
        let extra_addr: crate::pool::AddrRange = "2001:db8:1::2:0-2001:db8:1::2:3f".parse().expect("literal");
        let extra_pd = crate::server::settings::PdPool { prefix: "2001:db8:200::/56".parse().expect("literal"), delegated_length: 60 };
        let mut subnets = self.servers[i].subnets.clone();
        let s = &mut subnets[0];
        s.pools.retain(|r| *r != extra_addr);
        s.pd_pools.retain(|p| *p != extra_pd);
        // With reservations: the grown config also reserves, for clients 5
        // and 6, two pool addresses other clients hold at the first such
        // reload (the pair meets the reservation while the leases live).
        let later = match (&self.late_reserved, self.sc.reservations && grow) {
            (Some(l), _) => l.clone(),
            (None, false) => Vec::new(),
            (None, true) => {
                let mine = [clients::client_duid(5), clients::client_duid(6)];
                // Not a key either server reserves already (a configuration
                // reserves a key once).
                let taken: Vec<std::net::Ipv6Addr> =
                    self.servers.iter().flat_map(|x| x.subnets.iter().flat_map(|sn| &sn.reservations)).flat_map(|r| r.addresses.iter().copied()).collect();
                let mut held: Vec<std::net::Ipv6Addr> = self.servers[i]
                    .cores
                    .iter()
                    .flat_map(|c| c.engine().leases().iter())
                    .filter(|l| l.is_active() && !mine.contains(&l.binding.duid))
                    .filter_map(|l| match l.key {
                        LeaseKey::Addr(a) if s.pools.iter().any(|r| r.contains(a)) && !taken.contains(&a) => Some(a),
                        _ => None,
                    })
                    .collect();
                held.sort();
                let l: Vec<crate::config::Reservation> = mine
                    .iter()
                    .zip(held)
                    .map(|(d, a)| crate::config::Reservation {
                        client: crate::config::ReservedFor::Duid(d.clone()),
                        addresses: vec![a],
                        prefixes: Vec::new(),
                        hostname: None,
                        options: Vec::new(),
                    })
                    .collect();
                self.late_reserved = Some(l.clone());
                l
            }
        };
        let s = &mut subnets[0];
        s.reservations.retain(|r| !later.contains(r));
        if grow {
            s.pools.push(extra_addr);
            s.pd_pools.push(extra_pd);
            if self.sc.reservations {
                s.reservations.extend(later);
            }
        }
        subnets
    }

    /// A reload, as `runtime::operator::Reloader` carries it out: the
    /// records new pools cover away from their owner, every shard, the driver.
    fn reload(&mut self, i: usize, grow: bool) {
        let subnets = self.reloaded_subnets(i, grow);
        self.log(format!("operator: server {i} reloads {} the extra pools", if grow { "with" } else { "without" }));
        let auto_pd = if self.servers[i].role == Role::Secondary { self.sc.auto_partner_down } else { 0 };
        let s = &mut self.servers[i];
        s.subnets = subnets.clone();
        if !s.up {
            return; // the file changed; the next start reads it
        }
        // The same steps, in the same order, as `runtime::operator::Reloader`.
        let slices = s.slices.reloaded(&subnets);
        let reserved = crate::shard::reserved_keys(&subnets);
        let (away, blocks) = crate::shard::plan_blocks(s.cores.iter().enumerate().map(|(h, c)| (h, c.covered_elsewhere(&slices, &reserved))));
        if let Some(d) = s.driver.as_mut() {
            d.reconfigure(slices.widened(&s.slices), away, (auto_pd, 0.5, 2048));
        }
        for (id, c) in s.cores.iter_mut().enumerate() {
            let engine = EngineConfig { subnets: subnets.clone(), ..c.engine_config() };
            let blocked = blocks.iter().filter(|(_, at)| *at == id).map(|(k, _)| *k).collect();
            c.reconfigure(engine, slices.clone(), blocked);
        }
        if let Some(d) = s.driver.as_mut() {
            d.reconfigure(slices.clone(), Vec::new(), (auto_pd, 0.5, 2048));
        }
        s.slices = slices;
        self.note_mismatches();
        let mut q = VecDeque::new();
        self.actions(i, &mut q);
        self.work(i, q);
    }

    /// Keys the two servers reserve differently (or one not at all): the
    /// README's premise for reservations (the same on both servers) does
    /// not hold, and outside the split two clients may get one of them in
    /// COMMUNICATIONS-INTERRUPTED. Duplicates of these keys are logged, not
    /// violations; every other invariant still holds.
    fn note_mismatches(&mut self) {
        let keys: Vec<LeaseKey> = self
            .servers
            .iter()
            .flat_map(|s| s.subnets.iter().flat_map(|sn| &sn.reservations))
            .flat_map(|r| r.addresses.iter().map(|a| LeaseKey::Addr(*a)).chain(r.prefixes.iter().map(|p| LeaseKey::Prefix(*p))))
            .collect();
        for k in keys {
            if self.servers[0].slices.reserved_for(&k) != self.servers[1].slices.reserved_for(&k) {
                self.mismatched.insert(k);
            }
        }
    }

    /// `ctl lease del` of a random ACTIVE lease: its client is gone (the
    /// operator's reason to delete it), so nobody holds it any longer.
    fn operator_reset(&mut self, i: usize) {
        if !self.servers[i].up {
            return;
        }
        let now = self.server_now(i);
        let active: Vec<(usize, LeaseKey)> = self.servers[i]
            .cores
            .iter()
            .enumerate()
            .flat_map(|(s, c)| c.engine().leases().iter().filter(|l| l.is_active()).map(move |l| (s, l.key)))
            .collect();
        if active.is_empty() {
            return;
        }
        let (shard, key) = active[self.rng3.below(active.len() as u64) as usize];
        if self.servers[i].cores[shard].reset_lease(now, &key).is_none() {
            return;
        }
        self.log(format!("operator: server {i} deletes the lease of {key}"));
        for c in &mut self.clients {
            let holds = c.addr.is_some_and(|(a, _, _)| LeaseKey::Addr(a) == key) || c.prefix.is_some_and(|(p, _, _)| LeaseKey::Prefix(p) == key);
            if holds {
                // Gone for good: no timer fires, no reply in flight counts.
                c.addr = None;
                c.prefix = None;
                c.active = false;
                c.generation += 1;
                c.xid ^= 0x80_0000;
            }
        }
        self.phantom.remove(&key);
        self.work(i, VecDeque::from([Work::Commit(shard)]));
    }

    /// `ctl lease add`, as `runtime::operator` carries it out: at the
    /// client's shard, the key handed over by its slice owner.
    fn operator_add(&mut self, i: usize) {
        if !self.servers[i].up {
            return;
        }
        let now = self.server_now(i);
        let sub = &self.servers[i].subnets[0];
        let key = if self.rng3.below(2) == 0 {
            let r = sub.pools[self.rng3.below(sub.pools.len() as u64) as usize];
            LeaseKey::Addr(Ipv6Addr::from(u128::from(r.first) + u128::from(self.rng3.below(r.size().min(4096) as u64))))
        } else {
            let p = &sub.pd_pools[self.rng3.below(sub.pd_pools.len() as u64) as usize];
            let shift = 128 - p.delegated_length as u32;
            let j = u128::from(self.rng3.below(4096)) % (1u128 << (p.delegated_length - p.prefix.len));
            LeaseKey::Prefix(crate::pool::Prefix { addr: Ipv6Addr::from(p.prefix.first() + (j << shift)), len: p.delegated_length })
        };
        self.added += 1;
        let ia_type = key.ia_type();
        let binding = Binding { duid: Duid::en(88, &self.added.to_be_bytes()), ia_type, iaid: 1 };
        let s = &mut self.servers[i];
        let n = s.shards;
        let client = if n > 1 { shard_of(binding.duid.as_bytes(), n as u32) as usize } else { 0 };
        let owner = s.slices.owner(&key).filter(|o| *o != client);
        let lent = match owner {
            Some(o) => match s.cores[o].lend(now, &key, &binding, client) {
                Ok(r) => r,
                Err(_) => return,
            },
            None => None,
        };
        let policy = s.cores[client].policy();
        match s.cores[client].add_lease(now, key, &binding, None, lent) {
            Ok(l) => {
                if let Some(o) = owner {
                    if let Some(d) = s.driver.as_mut() {
                        d.held_at(key, client);
                    }
                    s.cores[o].bus(now, 0, ToShard::Drop { key });
                }
                let state = policy.map(|p| p.state).unwrap_or(ServerState::Startup);
                self.log(format!("operator: server {i} ({}) adds {key} until t+{}", state.name(), l.valid_end.saturating_sub(T0)));
                if let Some(p) = policy {
                    self.check_grant(i, &p, &l, now, false);
                }
                let holders: Vec<usize> = (0..self.clients.len())
                    .filter(|c| {
                        let cl = &self.clients[*c];
                        cl.addr.is_some_and(|(a, end, _)| LeaseKey::Addr(a) == key && end > self.now)
                            || cl.prefix.is_some_and(|(p, end, _)| LeaseKey::Prefix(p) == key && end > self.now)
                    })
                    .collect();
                if !self.misconfigured {
                    for c in holders {
                        self.violate(format!("duplicate: server {i} added {key} for an operator while client {c} holds it"));
                    }
                    if self.phantom.get(&key).is_some_and(|end| *end > self.now) {
                        self.violate(format!("duplicate: server {i} added {key} for an operator while another outside client holds it"));
                    }
                }
                self.phantom.insert(key, l.valid_end);
                let mut q = VecDeque::from([Work::Commit(client)]);
                if let Some(o) = owner {
                    q.push_back(Work::Commit(o));
                }
                self.work(i, q);
            }
            Err((_, back)) => {
                if let Some(o) = owner {
                    s.cores[o].unlend(&key, back.map(|b| *b));
                }
            }
        }
    }

    /// Both stores hold the same acknowledged leases of clients outside the
    /// simulation (half granted by each server), and a persisted NORMAL.
    fn preload(&mut self) {
        let first = u128::from("2001:db8:1::1000".parse::<Ipv6Addr>().expect("literal"));
        let valid = self.sc.valid;
        let mut leases = Vec::with_capacity(self.sc.preload);
        for k in 0..self.sc.preload as u64 {
            let key = LeaseKey::Addr(Ipv6Addr::from(first + 2 * k as u128 + 1 - (k % 2) as u128));
            let binding = Binding { duid: Duid::en(77, &k.to_be_bytes()), ia_type: IaType::Na, iaid: 1 };
            // Spread over the run: some end during it, some after.
            let cltt = T0 - 10 - k % 100;
            let mut l = Lease::active(key, binding, cltt, valid * 2 / 3, valid, valid / 3, valid / 2);
            l.valid_end = cltt + 300 + self.rng2.below(4 * self.sc.chaos);
            l.state_expiration_time = l.valid_end;
            l.acked_partner_lifetime = l.valid_end + valid as Time;
            l.expiration_time = l.valid_end + valid as Time;
            self.phantom.insert(key, l.valid_end);
            leases.push(l);
        }
        let persisted = |state| Persistent {
            state,
            start_time: T0 - 100,
            partner_state: Some(ServerState::Normal),
            partner_start_time: T0 - 100,
            last_contact: T0 - 5,
            last_operating: T0 - 5,
            partner_down_time: 0,
            partner_pd_time: 0,
            partner_lost_store_at: 0,
            communicated: true,
            mclt: self.sc.mclt,
            need_all: false,
        };
        for i in 0..2 {
            let s = &mut self.servers[i];
            let slices = SliceMap::new(&s.subnets, s.shards);
            let mut per: Vec<Vec<LeaseChange>> = vec![Vec::new(); s.shards];
            for l in &leases {
                per[home_of(&slices, s.shards, l)].push(LeaseChange::Upsert(l.clone()));
            }
            for (st, ch) in s.stores.iter_mut().zip(per) {
                st.commit(&ch).expect("memory store");
            }
            let _ = s.meta.put_meta(meta::FAILOVER_STATE, &persisted(ServerState::Normal).encode());
        }
    }

    fn start_server(&mut self, i: usize) {
        let now = self.server_now(i);
        let restarted = self.servers[i].restarts > 0;
        // A `--shards` change or another valid lifetime across a restart.
        if restarted && let Some(n) = self.sc.reshard[i] {
            let n = if self.servers[i].shards == n { n % 4 + 1 } else { n };
            self.reshard(i, n);
        }
        if restarted && let Some(v) = self.sc.restart_valid {
            let v = if self.servers[i].subnets[0].valid_lifetime == v { self.sc.valid } else { v };
            self.log(format!("server {i} comes back with valid-lifetime {v}"));
            for sn in &mut self.servers[i].subnets {
                sn.valid_lifetime = v;
                sn.preferred_lifetime = v * 2 / 3;
                sn.renew_time = v / 3;
                sn.rebind_time = v / 2;
            }
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
            failover: vec![(s.role, sc.mclt)],
        };
        let stored: Vec<Vec<Lease>> = s.stores.iter().map(|st| st.all().expect("memory store")).collect();
        // As production does at start-up: every record at its home, the
        // copies written before the removals.
        let placed = crate::shard::place(stored, &SliceMap::new(&s.subnets, s.shards), s.shards);
        for (st, w) in s.stores.iter_mut().zip(&placed.upserts) {
            st.commit(w).expect("memory store");
        }
        for (st, w) in s.stores.iter_mut().zip(&placed.deletes) {
            st.commit(w).expect("memory store");
        }
        let built = crate::shard::build::<usize>(&cfg, placed.lists);
        s.home_touched = Touched::everything();
        self.pair_touched = Touched::everything();
        let persisted = crate::failover::meta_keys("sim", false).iter().find_map(|k| s.meta.get_meta(k).ok().flatten()).and_then(|b| Persistent::decode(&b));
        let fc = FailoverConfig {
            role: s.role,
            relationship_name: "sim".into(),
            mclt: sc.mclt,
            keepalive_time: 20,
            max_unacked_bndupd: sc.max_unacked,
            // Auto-partner-down on one side only (the secondary): on both, a
            // crash of each in turn puts both in PARTNER-DOWN without contact
            // in between, which §8.4 forbids.
            auto_partner_down: if s.role == Role::Secondary { sc.auto_partner_down } else { 0 },
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
        s.slices = SliceMap::new(&s.subnets, s.shards);
        let router = ShardRouter::new(s.slices.clone(), s.shards, built.away.iter().copied());
        let driver = Driver::new(fc, persisted, router, now);
        s.cores = built.cores;
        if sc.ignore_failover_policy {
            for c in &mut s.cores {
                c.set_ignore_policy(true);
            }
        }
        s.batches = (0..s.shards).map(|_| None).collect();
        s.driver = Some(driver);
        s.up = true;
        s.link = None;
        let n = s.shards;
        self.log(format!("server {i} starts ({n} shards)"));
        let mut q = VecDeque::new();
        for reports in built.loaded {
            q.extend(reports.into_iter().map(|(_, m)| Work::Driver(m)));
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

    /// Do work inside server `i` until none is left (or scheduled).
    fn work(&mut self, i: usize, mut q: VecDeque<Work>) {
        while let Some(w) = q.pop_front() {
            if !self.servers[i].up {
                return;
            }
            let now = self.server_now(i);
            match w {
                Work::Driver(m) => {
                    if let Some(d) = self.servers[i].driver.as_mut() {
                        d.from_shard(now, m);
                    }
                    self.actions(i, &mut q);
                }
                Work::Shard(s, ToShard::Scan { from, max }) => {
                    let leases = self.servers[i].stores[s].scan(from.as_ref(), max).expect("memory store");
                    let next = if leases.len() < max { None } else { leases.last().map(|l| l.key) };
                    self.send_to_driver(i, &mut q, ToFailover::ScanChunk { shard: s, leases, next });
                }
                Work::Shard(s, m) => {
                    let answers = self.servers[i].cores[s].bus(now, 0, m);
                    for (_, a) in answers {
                        self.send_to_driver(i, &mut q, a);
                    }
                    q.push_back(Work::Commit(s));
                }
                Work::Commit(s) => self.commit(i, s, &mut q),
            }
        }
    }

    fn send_to_driver(&mut self, i: usize, q: &mut VecDeque<Work>, m: ToFailover) {
        if self.sc.async_commits {
            let inc = self.servers[i].inc;
            self.internal += 1;
            self.at(0, Ev::ToDriver(i, inc, m));
        } else {
            q.push_back(Work::Driver(m));
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
        let srv = &mut self.servers[i];
        if self.sc.async_commits {
            srv.batches[s] = Some(batch);
            let inc = srv.inc;
            let d = self.rng2.below(2);
            self.internal += 1;
            self.at(d, Ev::CommitDone(i, inc, s));
        } else {
            srv.stores[s].commit(&batch).expect("memory store");
            srv.home_touched.add(&batch);
            self.pair_touched.add(&batch);
            let done = srv.cores[s].batch_done(true, batch);
            self.released(i, s, done, q);
        }
    }

    /// What a durable commit releases: replies, driver messages.
    fn released(&mut self, i: usize, s: usize, done: crate::shard::Done<usize>, q: &mut VecDeque<Work>) {
        for (c, r) in done.replies {
            let bytes = r.message.encode().expect("reply encodes");
            self.replies += 1;
            let d = self.rng.below(2);
            self.at(d, Ev::ToClient(c, bytes));
        }
        for (_, m) in done.to_failover {
            self.send_to_driver(i, q, m);
        }
        q.push_back(Work::Commit(s));
    }

    /// Carry out the driver's actions in order.
    fn actions(&mut self, i: usize, q: &mut VecDeque<Work>) {
        loop {
            let Some(a) = self.servers[i].driver.as_mut().and_then(Driver::poll) else { return };
            match a {
                Action::Persist(p) => {
                    for k in crate::failover::meta_keys("sim", false) {
                        let _ = self.servers[i].meta.put_meta(&k, &p.encode());
                    }
                }
                Action::Transition { from, to } => self.log(format!("server {i}: {} -> {}", from.name(), to.name())),
                Action::Transmit(bytes) => self.transmit(i, &bytes),
                Action::ToShard(s, m) => {
                    if self.sc.async_commits {
                        let inc = self.servers[i].inc;
                        self.internal += 1;
                        self.at(0, Ev::ToShard(i, inc, s, m));
                    } else {
                        q.push_back(Work::Shard(s, m));
                    }
                }
                Action::Close(why) => {
                    let peer = self.servers[1 - i].driver.as_ref().and_then(|d| d.endpoint().answering());
                    self.log(format!("server {i} closes: {why} (partner answering: {peer:?})"));
                    if let Some(l) = self.servers[i].link.take()
                        && self.conn == Some(l.conn)
                    {
                        self.conn = None;
                        let d = 1 + self.rng.below(2);
                        self.at(d, Ev::Closed(l.conn, 1 - i));
                    }
                }
                Action::Connect => {
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
                        if let Some(d) = self.servers[i].driver.as_mut() {
                            d.connect_failed(now);
                        }
                    }
                }
            }
        }
    }

    /// Frames from server `from` to its partner, each with its own delay
    /// (mostly within the second, sometimes one more; TCP keeps the order).
    fn transmit(&mut self, from: usize, bytes: &[u8]) {
        let Some(c) = self.servers[from].link.as_ref().filter(|l| l.preamble.is_none()).map(|l| l.conn) else { return };
        if self.conn != Some(c) {
            return;
        }
        let mut dec = FrameDecoder::new(MAX_FRAME_LEN);
        if dec.push(bytes).is_err() {
            self.violate(format!("server {from} transmitted a bad frame"));
            return;
        }
        let mut frames = Vec::new();
        while let Ok(Some(f)) = dec.next_frame() {
            let mut framed = (f.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(f);
            frames.push(framed);
        }
        for f in frames {
            if self.sc.count_updates
                && let Ok(m) = FailoverMessage::decode(&f[2..])
                && m.msg_type == MessageType::BndUpd
            {
                for item in crate::failover::bndupd::parse(&m, |_| true).items.into_iter().flatten() {
                    *self.bndupds.entry(item.key).or_default() += 1;
                }
            }
            self.send_bytes(from, c, f);
        }
    }

    fn send_bytes(&mut self, from: usize, c: u64, bytes: Vec<u8>) {
        let to = 1 - from;
        // Time-skew checks see clock difference plus delay (RFC 8156 §7.1 allows 5 s in all).
        let delay = if self.rng.below(10) == 0 { 1 + self.rng.below(2) } else { self.rng.below(2) };
        let at = (self.now + delay).max(self.last_delivery[to]);
        self.last_delivery[to] = at;
        self.in_flight += 1;
        self.at_abs(at, Ev::Frame(c, to, bytes));
    }

    pub fn run(mut self) -> Report {
        let heal_at = T0 + self.sc.chaos;
        let settle = if self.sc.settle > 0 { self.sc.settle } else { 4 * self.sc.mclt as Time + 400 };
        let end = heal_at + settle;
        let mut healed = false;
        while let Some(Reverse((t, seq, _))) = self.events.pop() {
            if t > end {
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
                    Ev::Crash(..) | Ev::Partition(true) | Ev::Skew(..) | Ev::PartnerDown(_) | Ev::DropConnection | Ev::CrashIfRecovering(_)
                )
            {
                continue;
            }
            self.events_run += 1;
            self.step(ev);
            self.check_premise();
            self.check_pair();
            self.check_homes();
            if self.violations.len() > 5 {
                break;
            }
        }
        self.now = end;
        // Invariant 5: liveness after healing.
        let states = [0, 1].map(|i| self.state(i).unwrap_or(ServerState::Startup));
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
            bndupds: self.bndupds,
            grants: self.grants,
            reserved_grants: self.reserved_grants,
            relayed_grants: self.relayed_grants,
        }
    }

    pub(super) fn state(&self, i: usize) -> Option<ServerState> {
        self.servers[i].driver.as_ref().map(|d| d.endpoint().state())
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

    fn crash(&mut self, i: usize, lose_store: bool) {
        self.log(format!("fault: server {i} crashes{}", if lose_store { " and loses its store" } else { "" }));
        if lose_store && self.pd_since_contact[i] && !self.misconfigured {
            // It held the only copy of what it granted in PARTNER-DOWN.
            self.misconfigured = true;
            self.log("the store lost was the only copy of PARTNER-DOWN grants: unrecoverable".into());
        }
        let s = &mut self.servers[i];
        s.up = false;
        s.driver = None;
        s.cores.clear();
        // A commit in flight never happened.
        s.batches.clear();
        if lose_store {
            s.stores = (0..s.shards).map(|_| MemoryStore::new()).collect();
            s.meta = MemoryStore::new();
        }
        s.link = None;
        // The connection dies with the server, even one still opening.
        if let Some(c) = self.conn.take() {
            let d = 1 + self.rng.below(3);
            self.at(d, Ev::Closed(c, 1 - i));
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
                if let Some(d) = self.servers[i].driver.as_mut() {
                    d.tick(now);
                }
                let mut q = VecDeque::new();
                self.actions(i, &mut q);
                self.work(i, q);
                self.at(1, Ev::ServerTick(i));
            }
            Ev::Frame(c, to, bytes) => {
                self.in_flight = self.in_flight.saturating_sub(1);
                if !self.servers[to].up || self.servers[to].link.as_ref().map(|l| l.conn) != Some(c) {
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
                    self.log(format!("server {to} <- {d}"));
                }
                self.received(to, c, &bytes);
            }
            Ev::Connected(c, i) => {
                if self.conn != Some(c) || !self.servers[i].up {
                    return;
                }
                // A new connection replaces the old one (as in production).
                if self.servers[i].link.take().is_some_and(|l| l.preamble.is_none()) {
                    let now = self.server_now(i);
                    if let Some(d) = self.servers[i].driver.as_mut() {
                        d.disconnected(now);
                    }
                    let mut q = VecDeque::new();
                    self.actions(i, &mut q);
                    self.work(i, q);
                }
                // RFC 8156 §10: the primary sends STARTTLS first.
                let (preamble, first) = match self.servers[i].role {
                    Role::Primary => Preamble::requester(true),
                    Role::Secondary => (Preamble::responder(true), Vec::new()),
                };
                self.servers[i].link = Some(Link { conn: c, preamble: Some(preamble) });
                self.preamble_steps(i, c, first);
            }
            Ev::Closed(c, i) => {
                if self.servers[i].link.as_ref().map(|l| l.conn) != Some(c) {
                    return;
                }
                let established = self.servers[i].link.take().is_some_and(|l| l.preamble.is_none());
                if established {
                    let now = self.server_now(i);
                    if let Some(d) = self.servers[i].driver.as_mut() {
                        d.disconnected(now);
                    }
                    let mut q = VecDeque::new();
                    self.actions(i, &mut q);
                    self.work(i, q);
                } else {
                    let now = self.server_now(i);
                    if let Some(d) = self.servers[i].driver.as_mut() {
                        d.connect_failed(now);
                    }
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
                if on {
                    // Nothing gets through; each side notices by keepalive.
                    self.conn = None;
                }
            }
            Ev::Crash(i, lose_store) => {
                if self.servers[i].up {
                    self.crash(i, lose_store);
                }
            }
            Ev::CrashIfRecovering(i) => {
                if matches!(self.state(i), Some(ServerState::Recover | ServerState::RecoverWait)) {
                    self.log(format!("fault: server {i} crashes while recovering"));
                    self.crash(i, false);
                    let d = 5 + self.rng2.below(30);
                    self.at(d, Ev::Restart(i));
                }
            }
            Ev::Reload(i, grow) => self.reload(i, grow),
            Ev::OperatorReset(i) => self.operator_reset(i),
            Ev::OperatorAdd(i) => self.operator_add(i),
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
                let now = self.server_now(i);
                let r = self.servers[i].driver.as_mut().map(|d| d.partner_down(now));
                if let Some(Ok(())) = r {
                    self.log(format!("operator: partner-down on server {i}"));
                    let mut q = VecDeque::new();
                    self.actions(i, &mut q);
                    self.work(i, q);
                }
            }
            Ev::ToShard(i, inc, s, m) => {
                self.internal -= 1;
                if self.servers[i].up && self.servers[i].inc == inc {
                    self.work(i, VecDeque::from([Work::Shard(s, m)]));
                }
            }
            Ev::ToDriver(i, inc, m) => {
                self.internal -= 1;
                if self.servers[i].up && self.servers[i].inc == inc {
                    self.work(i, VecDeque::from([Work::Driver(m)]));
                }
            }
            Ev::CommitDone(i, inc, s) => {
                self.internal -= 1;
                if !self.servers[i].up || self.servers[i].inc != inc {
                    return;
                }
                let Some(batch) = self.servers[i].batches[s].take() else { return };
                self.servers[i].stores[s].commit(&batch).expect("memory store");
                self.servers[i].home_touched.add(&batch);
                self.pair_touched.add(&batch);
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

    /// Bytes on the failover connection arrive at server `i`.
    fn received(&mut self, i: usize, c: u64, bytes: &[u8]) {
        let now = self.server_now(i);
        let in_preamble = self.servers[i].link.as_ref().is_some_and(|l| l.preamble.is_some());
        if in_preamble {
            let steps = match self.servers[i].link.as_mut().and_then(|l| l.preamble.as_mut()) {
                Some(p) => p.push(bytes),
                None => Vec::new(),
            };
            self.preamble_steps(i, c, steps);
            return;
        }
        if let Some(d) = self.servers[i].driver.as_mut() {
            d.received(now, bytes);
        }
        let mut q = VecDeque::new();
        self.actions(i, &mut q);
        self.work(i, q);
    }

    /// Carry out preamble steps (the TLS handshake itself is not simulated).
    fn preamble_steps(&mut self, i: usize, c: u64, steps: Vec<Step>) {
        for st in steps {
            match st {
                Step::Send(b) => {
                    if self.conn == Some(c) {
                        self.send_bytes(i, c, b);
                    }
                }
                Step::StartTls | Step::Established(_) => {
                    if let Some(l) = self.servers[i].link.as_mut() {
                        l.preamble = None;
                    }
                    let now = self.server_now(i);
                    if let Some(d) = self.servers[i].driver.as_mut() {
                        d.connected(now);
                    }
                    let mut q = VecDeque::new();
                    self.actions(i, &mut q);
                    self.work(i, q);
                }
                Step::Refuse(why) => {
                    self.violate(format!("server {i} refused the connection: {why}"));
                }
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
            source: "fe80::1".parse().expect("literal"),
            destination: "ff02::1:2".parse().expect("literal"),
        };
        let client = msg.unwrap_relays().1.and_then(|m| m.options.client_id().cloned());
        let Some(duid) = client else { return };
        // Production routing: the shard the client's DUID hashes to.
        let n = self.servers[s].shards;
        let shard = if n > 1 { shard_of(duid.as_bytes(), n as u32) as usize } else { 0 };
        let core = &mut self.servers[s].cores[shard];
        let policy = core.policy();
        // What this client held here before, to tell renewals from new grants (invariant 3).
        let held: Vec<LeaseKey> = [IaType::Na, IaType::Pd]
            .iter()
            .flat_map(|t| core.engine().leases().keys_of(&Binding { duid: duid.clone(), ia_type: *t, iaid: 1 }))
            .filter(|k| core.engine().leases().get(k).is_some_and(Lease::is_active))
            .collect();
        let before = core.uncommitted();
        let out = core.handle(now, &msg, &arrival, c);
        let granted: Vec<Lease> = core.pending_since(before).into_iter().cloned().collect();
        let state = policy.map(|p| p.state).unwrap_or(ServerState::Startup);
        let lost = self.servers[s].driver.as_ref().is_some_and(|d| d.endpoint().persistent().need_all);
        for l in &granted {
            if self.sc.verbose {
                self.log(format!("server {s} ({}) grants {} {} cltt {} end {} flag {}", state.name(), l.key, l.status.name(), l.cltt, l.valid_end, l.update_partner));
            }
            if l.is_active() {
                *self.grants.entry((state, l.key.ia_type())).or_default() += 1;
                self.relayed_grants += l.relay.is_some() as u64;
                // §8.5.2, §8.6 (audit F1): a server that lost its store serves
                // nothing until it has everything back.
                if lost && !self.sc.ignore_failover_policy {
                    self.violate(format!("server {s} granted {} in {} before its resync completed", l.key, state.name()));
                }
            }
            if let Some(p) = policy {
                self.check_grant(s, &p, l, now, held.contains(&l.key));
            }
        }
        if let Handled::Reply(_, r) = &out {
            self.check_prefix_service(s, shard, state, r);
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

    /// Prefixes are served wherever they may be (audit item 1): a secondary
    /// that answers NoPrefixAvail while this shard holds a FREE-BACKUP
    /// prefix it may delegate has lost track of its own pool.
    fn check_prefix_service(&mut self, s: usize, shard: usize, state: ServerState, r: &crate::server::Reply) {
        if self.servers[s].role != Role::Secondary
            || !matches!(state, ServerState::CommunicationsInterrupted | ServerState::PartnerDown | ServerState::ResolutionInterrupted)
            || self.sc.ignore_failover_policy
        {
            return;
        }
        let Some(m) = r.message.unwrap_relays().1 else { return };
        let refused = m.options.ia_pds().any(|ia| ia.options.status().is_some_and(|st| st.code == crate::wire::StatusCode::NO_PREFIX_AVAIL));
        if !refused {
            return;
        }
        let now = self.server_now(s);
        let core = &self.servers[s].cores[shard];
        let e = core.engine();
        // A prefix on hold after the partner lost its store is not ours to
        // give yet (README Conformance (d)).
        let on_hold = |l: &Lease| core.policy().is_some_and(|p| p.held_after_partner_loss(l, now));
        let held = e.free_backup_prefixes().find(|l| !e.is_blocked(&l.key) && !on_hold(l) && e.in_pools(&l.key)).map(|l| l.key);
        if let Some(k) = held {
            self.violate(format!("server {s} ({}) answered NoPrefixAvail holding FREE-BACKUP {k}", state.name()));
        }
    }

    /// The router's rule (see `failover::router`) holds whenever nothing is
    /// in motion: an ACTIVE record lives with its client's shard, so that
    /// the client's renewals find it (audit item 10, review H5).
    fn check_homes(&mut self) {
        if self.now == self.last_home_check {
            return;
        }
        self.last_home_check = self.now;
        let late = self.late_reserved.clone().unwrap_or_default();
        for i in 0..2 {
            let srv = &self.servers[i];
            let Some(d) = srv.driver.as_ref() else { continue };
            if srv.home_touched.is_empty() || !d.settled() || srv.cores.iter().any(|c| !c.idle()) || self.internal > 0 {
                continue;
            }
            let slices = SliceMap::new(&srv.subnets, srv.shards);
            // A reload that reserves a key changes its records' home: they
            // stay where they are until their next write, with the new home
            // (the one shard that grants the key) blocking it meanwhile. A
            // reload that no longer reserves it leaves them at the old home,
            // the key's slice owner or blocked there, until the next write:
            // a renewal reaching the client's shard meanwhile gets a new
            // lease (the duplicate checks still hold everywhere).
            let unreserved = |k: &LeaseKey| slices.reserved_for(k).is_none() && late.iter().any(|r| r.addresses.iter().any(|a| *k == LeaseKey::Addr(*a)));
            let misplaced_at = |at: usize, l: &Lease| {
                let home = home_of(&slices, srv.shards, l);
                let waits = (slices.reserved_for(&l.key).is_some() && srv.cores[home].engine().is_blocked(&l.key)) || unreserved(&l.key);
                l.is_active() && home != at && !waits
            };
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

    /// Invariants 2 and 3 at the moment a lease is granted.
    fn check_grant(&mut self, s: usize, policy: &EndpointPolicy, l: &Lease, now: Time, renewal: bool) {
        if l.status != BindingStatus::Active {
            return;
        }
        // 2: the MCLT rule wherever the state requires it (§4.4).
        if policy.mclt_applies() {
            let limit = l.acked_partner_lifetime.max(now) + policy.mclt as Time;
            if l.valid_end > limit {
                self.violate(format!(
                    "MCLT: server {s} in {} gave {} until {} > max(acked {}, now {}) + MCLT {}",
                    policy.state.name(),
                    l.key,
                    l.valid_end,
                    l.acked_partner_lifetime,
                    now,
                    policy.mclt
                ));
            }
            // The guarantee is the partner's: it protects the lease until
            // the greatest lifetime it acked for this client plus the MCLT
            // (§4.4, §7.3 expiration-time). Our own bookkeeping of what was
            // acked must never promise the client more.
            let partner = 1 - s;
            if self.servers[partner].up && !self.misconfigured {
                // The partner's current record (the most recent copy, if a move left two).
                let theirs = self.servers[partner]
                    .cores
                    .iter()
                    .filter_map(|c| c.engine().leases().get(&l.key))
                    .max_by_key(|x| x.start_time_of_state)
                    .cloned();
                if let Some(p) = theirs.filter(|p| p.binding == l.binding) {
                    let protected = p.expiration_time.max(now) + policy.mclt as Time + crate::failover::SKEW_TOLERANCE;
                    if l.valid_end > protected && l.acked_partner_lifetime > p.expiration_time {
                        self.violate(format!(
                            "MCLT: server {s} gave {} until {} on an acked lifetime of {}, but its partner protects it only until {} + MCLT",
                            l.key, l.valid_end, l.acked_partner_lifetime, p.expiration_time
                        ));
                    }
                }
            }
        }
        // 3: only what this server owns in this state (§4.2); renewals of
        // any client's lease are allowed in the responsive states. A key
        // reserved for the client is outside the split; for another, never.
        let reserved = self.servers[s].subnets.iter().flat_map(|x| &x.reservations).find(|r| {
            r.addresses.iter().any(|a| l.key == LeaseKey::Addr(*a)) || r.prefixes.iter().any(|p| l.key == LeaseKey::Prefix(*p))
        });
        if let Some(r) = reserved {
            if !r.client.is(&l.binding.duid, None) {
                self.violate(format!("reservation: server {s} granted {} to {}, reserved for another client", l.key, l.binding.duid));
            }
            if !renewal && !crate::server::Policy::allocates(policy) {
                self.violate(format!("reservation: server {s} in {} granted {} anew", policy.state.name(), l.key));
            }
            if let LeaseKey::Addr(a) = l.key
                && !renewal
                && crate::failover::address_owner(a) != self.servers[s].role
            {
                *self.reserved_grants.entry(policy.state).or_default() += 1;
            }
            return;
        }
        if renewal {
            return;
        }
        if let LeaseKey::Addr(a) = l.key
            && crate::failover::address_owner(a) != self.servers[s].role
        {
            self.violate(format!("ownership: server {s} ({:?}) granted {a} from the partner's half", self.servers[s].role));
        }
    }

    /// PARTNER-DOWN requires the partner not to be operating (§8.4).
    fn check_premise(&mut self) {
        for i in 0..2 {
            let d = self.servers[i].driver.as_ref();
            if d.is_some_and(|d| d.endpoint().state() == ServerState::PartnerDown) {
                self.pd_since_contact[i] = true;
            }
            if d.is_some_and(|d| d.endpoint().communications_ok()) {
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
            let me = self.state(i);
            let other = &self.servers[1 - i];
            let other_serving = other.up
                && other.driver.as_ref().is_some_and(|d| {
                    let e = d.endpoint();
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

    /// Every lease record of server `i` the stores must agree on, whichever
    /// shard holds it (the most recent copy when a move left two), as
    /// (key, status, client, end) sorted by key: free addresses and the
    /// primary's free prefixes are the same as no record. Sorted vectors,
    /// not maps: this runs at every settled second of every seed. Only the
    /// keys written since the last check unless the tables were rebuilt.
    fn records(&self, i: usize) -> Vec<Record<'_>> {
        let mut v: Vec<(Time, Record<'_>)> = Vec::new();
        let t = &self.pair_touched;
        for c in &self.servers[i].cores {
            let leases: Box<dyn Iterator<Item = &Lease>> =
                if t.all { Box::new(c.engine().leases().iter()) } else { Box::new(t.keys.iter().filter_map(|k| c.engine().leases().get(k))) };
            for l in leases {
                // A pool that one server does not serve (between two reloads,
                // or removed from both): its records are not exchanged
                // (ConfigurationConflict, RFC 8156 §7.5.4) and may differ.
                if !self.servers.iter().all(|s| s.slices.shared(&l.key)) {
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
        // Latest start of state first; among equal starts the first shard's
        // copy (a stable sort keeps their order).
        v.sort_by(|a, b| a.1.0.cmp(&b.1.0).then(b.0.cmp(&a.0)));
        v.dedup_by(|later, first| later.1.0 == first.1.0);
        v.into_iter().map(|(_, r)| r).collect()
    }

    /// Invariant 4: both NORMAL, nothing queued or in flight → the stores agree.
    fn check_pair(&mut self) {
        if self.now == self.last_pair_check || self.pair_touched.is_empty() {
            return;
        }
        for i in 0..2 {
            let s = &self.servers[i];
            let Some(d) = s.driver.as_ref() else { return };
            let e = d.endpoint();
            if e.state() != ServerState::Normal || e.backlog() > 0 || !e.communications_ok() || !d.settled() {
                return;
            }
            if s.cores.iter().any(|c| !c.idle()) {
                return;
            }
        }
        if self.in_flight > 0 || self.internal > 0 {
            return;
        }
        if self.servers.iter().any(|s| s.cores.iter().any(|c| c.engine().leases().iter().any(|l| l.update_partner))) {
            return;
        }
        self.last_pair_check = self.now;
        let now = self.now;
        let (ma, mb) = (self.records(0), self.records(1));
        // Lease ends within the ±5 s that RFC 8156 §7.1 counts as the same
        // time are the same end (crossing renewals of one client).
        let same = |a: &Record<'_>, b: &Record<'_>| a.1 == b.1 && a.2 == b.2 && a.3.abs_diff(b.3) <= crate::failover::SKEW_TOLERANCE && a.4 == b.4;
        // Leases crossing their end of life, or past it and waiting for the
        // expiry timer, are in motion.
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
            disagree = Some(format!("stores disagree on {k}: primary {}, secondary {}", show(a), show(b)));
            break;
        }
        drop((ma, mb));
        self.pair_touched = Touched { all: false, keys: in_motion };
        if let Some(m) = disagree {
            self.violate(m);
        }
    }
}

/// One lease record as both stores must show it: key, status, the client
/// of an ACTIVE lease, its end (0 when not ACTIVE), its relay data (RFC 8156
/// §7.4; ACTIVE only).
type Record<'a> = (LeaseKey, BindingStatus, Option<&'a Duid>, Time, Option<&'a crate::lease::RelayData>);

/// Run one seed (scenario version 2); a failing seed's report carries the trace.
pub fn run_seed(seed: u64) -> Report {
    Sim::new(Scenario::new(seed)).run()
}

/// Run one seed tracing every failover message.
pub fn run_seed_verbose(seed: u64) -> Report {
    Sim::new(Scenario { verbose: true, ..Scenario::new(seed) }).run()
}

/// Replay a seed with the version-1 generator (the named regression seeds).
pub fn run_seed_v1(seed: u64, verbose: bool) -> Report {
    Sim::new(Scenario { verbose, ..Scenario::v1(seed) }).run()
}
