//! Per-client limits (RFC 9915 Security Considerations: "limiting the
//! maximum number of leases any one client can get, limiting the number of
//! leases one client can decline"). Sans-IO: the engine asks, the shard
//! that runs it logs what `take_log` hands over.

use std::collections::HashMap;

use crate::lease::Time;
use crate::wire::Duid;

/// `[limits]` in the configuration; 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// ACTIVE addresses, and separately delegated prefixes, per DUID.
    pub leases_per_client: u32,
    /// Declined addresses per DUID in an hour before it gets no new address.
    pub declines_per_client_per_hour: u32,
}

impl Default for Limits {
    /// Never bites a normal client: a router with a handful of IAs, a host
    /// that declines a duplicate now and then.
    fn default() -> Self {
        Limits { leases_per_client: 16, declines_per_client_per_hour: 8 }
    }
}

/// Which limit a client ran into (the `limit` label of `tandem_limit_hits_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    LeasesPerClient,
    DeclinesPerClientPerHour,
}

impl Limit {
    pub const ALL: [Limit; 2] = [Limit::LeasesPerClient, Limit::DeclinesPerClientPerHour];

    pub fn label(self) -> &'static str {
        match self {
            Limit::LeasesPerClient => "leases-per-client",
            Limit::DeclinesPerClientPerHour => "declines-per-client-per-hour",
        }
    }
}

const HOUR: Time = 3600;
/// Log a client's limit hits at most this often.
const LOG_EVERY: Time = 60;
/// Clients remembered at once (declines, last log): a flood of DUIDs costs
/// bounded memory; past it, entries whose hour is over are dropped first,
/// then new clients are not remembered (their declines are not capped).
const MAX_CLIENTS: usize = 65_536;

#[derive(Debug, Clone, Copy, Default)]
struct ClientState {
    window_start: Time,
    declines: u32,
    last_log: Option<Time>,
}

#[derive(Debug)]
pub struct Tracker {
    pub limits: Limits,
    clients: HashMap<Duid, ClientState>,
    /// While full: no sweep for room before this time (each sweep walks
    /// every entry; a flood of new DUIDs must not make every one pay it).
    full_until: Time,
    hits: [u64; 2],
    log: Vec<(Duid, Limit)>,
}

impl Tracker {
    pub fn new(limits: Limits) -> Tracker {
        Tracker { limits, clients: HashMap::new(), full_until: 0, hits: [0; 2], log: Vec::new() }
    }

    pub fn hits(&self, l: Limit) -> u64 {
        self.hits[l as usize]
    }

    /// Would one more ACTIVE lease of a type, beyond `held`, exceed the cap?
    pub fn lease_cap_reached(&self, held: u32) -> bool {
        self.limits.leases_per_client != 0 && held >= self.limits.leases_per_client
    }

    /// The client declined `n` addresses.
    pub fn declined(&mut self, duid: &Duid, n: u32, now: Time) {
        if self.limits.declines_per_client_per_hour == 0 || n == 0 {
            return;
        }
        let Some(c) = self.entry(duid, now) else { return };
        if now >= c.window_start + HOUR {
            (c.window_start, c.declines) = (now, 0);
        }
        c.declines = c.declines.saturating_add(n);
    }

    /// Has the client declined more than its hourly allowance in the hour
    /// that is running?
    pub fn decline_blocked(&self, duid: &Duid, now: Time) -> bool {
        let cap = self.limits.declines_per_client_per_hour;
        cap != 0 && self.clients.get(duid).is_some_and(|c| now < c.window_start + HOUR && c.declines > cap)
    }

    /// Count a refusal and queue a log line unless one went out for this
    /// client in the last minute.
    pub fn hit(&mut self, duid: &Duid, l: Limit, now: Time) {
        self.hits[l as usize] += 1;
        let Some(c) = self.entry(duid, now) else { return };
        if c.last_log.is_none_or(|t| now >= t + LOG_EVERY) {
            c.last_log = Some(now);
            self.log.push((duid.clone(), l));
        }
    }

    /// The log lines queued since the last call.
    pub fn take_log(&mut self) -> Vec<(Duid, Limit)> {
        std::mem::take(&mut self.log)
    }

    fn entry(&mut self, duid: &Duid, now: Time) -> Option<&mut ClientState> {
        if !self.clients.contains_key(duid) && self.clients.len() >= MAX_CLIENTS {
            if now < self.full_until {
                return None;
            }
            self.clients.retain(|_, c| now < c.window_start + HOUR || c.last_log.is_some_and(|t| now < t + LOG_EVERY));
            if self.clients.len() >= MAX_CLIENTS {
                // The earliest an entry can go.
                self.full_until = self.clients.values().map(|c| (c.window_start + HOUR).max(c.last_log.map_or(0, |t| t + LOG_EVERY))).min().unwrap_or(now);
                return None;
            }
        }
        Some(self.clients.entry(duid.clone()).or_insert(ClientState { window_start: now, ..Default::default() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declines_over_the_hourly_cap_block_until_the_hour_is_over() {
        let mut t = Tracker::new(Limits { leases_per_client: 4, declines_per_client_per_hour: 2 });
        let d = Duid::ll(1, &[1]);
        t.declined(&d, 2, 1000);
        assert!(!t.decline_blocked(&d, 1001), "at the cap, not over it");
        t.declined(&d, 1, 1500);
        assert!(t.decline_blocked(&d, 1501));
        assert!(!t.decline_blocked(&Duid::ll(1, &[2]), 1501), "another client is unaffected");
        assert!(t.decline_blocked(&d, 4599));
        assert!(!t.decline_blocked(&d, 4600), "the hour from the first decline is over");
        assert!(t.lease_cap_reached(4) && !t.lease_cap_reached(3));
        assert!(!Tracker::new(Limits { leases_per_client: 0, declines_per_client_per_hour: 0 }).lease_cap_reached(1_000_000));
    }

    #[test]
    fn hits_are_counted_every_time_and_logged_once_a_minute_per_client() {
        let mut t = Tracker::new(Limits::default());
        let d = Duid::ll(1, &[1]);
        for now in 1000..1060 {
            t.hit(&d, Limit::LeasesPerClient, now);
        }
        t.hit(&Duid::ll(1, &[2]), Limit::LeasesPerClient, 1000);
        assert_eq!(t.hits(Limit::LeasesPerClient), 61);
        assert_eq!(t.take_log().len(), 2);
        t.hit(&d, Limit::DeclinesPerClientPerHour, 1060);
        assert_eq!(t.take_log(), vec![(d, Limit::DeclinesPerClientPerHour)]);
    }

    #[test]
    fn a_flood_of_clients_costs_bounded_memory() {
        let mut t = Tracker::new(Limits::default());
        for i in 0..(MAX_CLIENTS as u32 + 1000) {
            t.declined(&Duid::ll(1, &i.to_be_bytes()), 1, 1000);
        }
        assert_eq!(t.clients.len(), MAX_CLIENTS);
        // An hour later the old entries make room.
        t.declined(&Duid::ll(2, &[1]), 9, 1000 + HOUR);
        assert!(t.decline_blocked(&Duid::ll(2, &[1]), 1000 + HOUR));
        assert_eq!(t.clients.len(), 1);
    }
}
