//! What a simulated run is made of, drawn from its seed.
//!
//! Version 1 is the scenario generator the simulator started with: one shard
//! per server, commits that complete at once, a small pool, and the fault
//! schedule drawn from the seed's main random stream. Version 2 (the default)
//! keeps every draw of version 1 — the same seed replays the same fault
//! schedule and client behaviour — and adds what it draws from a second
//! stream derived from the seed: shards per server (1–4, different per side,
//! with production routing between them), commits that complete late, large
//! prefix pools with lazily created records, tens of thousands of leases to
//! resynchronize, shard-count and lifetime changes across restarts, restarts
//! during recovery and a partner still in STARTUP.

use super::rng::Rng;

/// Pool shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pools {
    /// 64 addresses, 16 prefixes (/56 of /60s): contention and reuse.
    Small,
    /// 4,096 addresses and 4,096 prefixes (/48 of /60s).
    Large,
    /// A /32 delegating /64s (2^32 prefixes): nothing may walk it.
    Huge,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub version: u8,
    pub clients: usize,
    /// Simulated seconds with faults, then the network heals.
    pub chaos: u64,
    /// Seconds allowed after healing for both servers to reach NORMAL (0: 4 × MCLT + 400).
    pub settle: u64,
    pub mclt: u32,
    /// Also schedule partner-down on both sides (misconfiguration).
    pub both_partner_down: bool,
    /// Trace every failover message.
    pub verbose: bool,
    /// Auto-partner-down after this many seconds in COMMUNICATIONS-INTERRUPTED
    /// (0: off), on the secondary only. Only with faults where a silent
    /// partner really is down (crashes), as RFC 8156 §8.9 requires.
    pub auto_partner_down: u32,
    /// Sabotage: the engine ignores the failover policy (to prove the
    /// invariants catch what that breaks).
    pub ignore_failover_policy: bool,
    /// Shards of the primary and of the secondary.
    pub shards: [usize; 2],
    /// A different shard count after a restart (a `--shards` change).
    pub reshard: [Option<usize>; 2],
    /// Commits complete up to a second late; shard messages are events.
    pub async_commits: bool,
    pub pools: Pools,
    /// Leases both stores hold at the start (held by clients outside the
    /// simulation), to make resynchronizations long.
    pub preload: usize,
    /// Valid lifetime of the subnet; after a restart a server may come back
    /// with `restart_valid` instead (lowered or raised).
    pub valid: u32,
    pub restart_valid: Option<u32>,
    /// F_MAX_UNACKED_BNDUPD each server advertises.
    pub max_unacked: u32,
    /// Extra faults: crash a server while it recovers; restart both so one
    /// meets the other in STARTUP.
    pub crash_in_recovery: bool,
    pub startup_meet: bool,
    /// Draw faults from the seed (off: a quiet run, for focused tests).
    pub faults: bool,
    /// Clients stop talking once they hold a lease (and never release it).
    pub vanish: bool,
    /// Count the BNDUPDs sent about each lease (`Report::bndupds`).
    pub count_updates: bool,
    /// Operator commands during the faults (a third stream): both servers
    /// reload a config with one more address and prefix pool, one after the
    /// other (and maybe back); `ctl lease del` and `ctl lease add` on
    /// random leases and keys.
    pub operator: bool,
    /// Clients 1-4 have reservations (two addresses, one of each half, a
    /// prefix, an address outside the pools) on both servers; the
    /// operator's growing reload adds two more.
    pub reservations: bool,
    /// With reservations: the secondary also reserves an address of the
    /// primary's half for client 7, which the primary does not (a
    /// configuration mismatch: ConfigurationConflict, never a duplicate).
    pub reservations_differ: bool,
    /// Relayed clients (a third) renew at once after each Request, through
    /// another relay-id: a lease that changes only in its relay data while
    /// the BNDUPD of the previous version is in flight.
    pub relay_renew: bool,
}

impl Scenario {
    /// The version-1 generator (the named regression seeds replay with it).
    pub fn v1(seed: u64) -> Scenario {
        Scenario {
            seed,
            version: 1,
            clients: 16,
            chaos: 1800,
            settle: 0,
            mclt: 60,
            both_partner_down: seed % 7 == 3,
            verbose: false,
            auto_partner_down: if seed % 5 == 1 { 90 } else { 0 },
            ignore_failover_policy: false,
            shards: [1, 1],
            reshard: [None, None],
            async_commits: false,
            pools: Pools::Small,
            preload: 0,
            valid: 300,
            restart_valid: None,
            max_unacked: 8,
            crash_in_recovery: false,
            startup_meet: false,
            faults: true,
            vanish: false,
            count_updates: false,
            operator: false,
            reservations: false,
            reservations_differ: false,
            relay_renew: false,
        }
    }

    /// Version 2: version 1 plus what the second stream draws.
    pub fn new(seed: u64) -> Scenario {
        let mut sc = Scenario::v1(seed);
        sc.version = 2;
        let mut r = Rng::new(seed ^ 0x5eed_0000_0000_0002);
        sc.shards = [1 + r.below(4) as usize, 1 + r.below(4) as usize];
        if r.below(8) == 0 {
            sc.reshard = [Some(1 + r.below(4) as usize), Some(1 + r.below(4) as usize)];
        }
        sc.async_commits = r.below(4) != 0;
        sc.pools = match r.below(16) {
            0 => Pools::Huge,
            1..=4 => Pools::Large,
            _ => Pools::Small,
        };
        // Large pools mean thousands of records to exchange: a wider window
        // (the simulated network takes a second per round trip).
        if sc.pools != Pools::Small {
            sc.max_unacked = 128;
        }
        // Heavy: tens of thousands of leases to resynchronize (a fraction of seeds).
        if r.below(40) == 0 {
            sc.pools = Pools::Large;
            sc.preload = 20_000 + r.below(10_000) as usize;
            sc.max_unacked = 512;
        }
        if r.below(8) == 0 {
            sc.restart_valid = Some(if r.below(2) == 0 { 150 } else { 600 });
        }
        sc.crash_in_recovery = r.below(6) == 0;
        sc.startup_meet = r.below(6) == 0;
        // A stream of its own: the draws above stay what they were.
        sc.operator = Rng::new(seed ^ 0x5eed_0000_0000_0004).below(4) == 0;
        let mut r4 = Rng::new(seed ^ 0x5eed_0000_0000_0006);
        sc.reservations = r4.below(4) == 0;
        sc.reservations_differ = sc.reservations && r4.below(2) == 0;
        sc.relay_renew = Rng::new(seed ^ 0x5eed_0000_0000_0007).below(3) == 0;
        sc
    }
}
