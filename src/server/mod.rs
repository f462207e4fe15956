//! The DHCPv6 server engine (RFC 9915 §16, §18.3), pure and deterministic.
//!
//! Input: the time, a decoded message, where it arrived, and the failover
//! policy. Output: the reply with where to send it, plus the lease changes
//! that must be durable before the reply leaves — or a counted reason to
//! drop. No sockets, clocks, disks or randomness: the allocation hash key is
//! injected.

pub mod classes;
pub mod fqdn;
pub mod limits;
mod policy;
pub mod settings;
mod subnet;
mod slab;
mod table;

use std::net::Ipv6Addr;

pub use policy::{Policies, Policy, Responsiveness, Standalone};
pub use subnet::SliceMap;
pub use table::LeaseTable;

use settings::{OptionData, Provisioning, Subnet};
use crate::lease::{Binding, IaType, Lease, LeaseKey, Time};
use crate::pool::{Prefix, Slice, hash};
use crate::wire::{
    BindingStatus, ClientMessage, DhcpOption, Duid, IaAddr, IaNa, IaPd, IaPrefix, Message, MessageType,
    NtpSuboption, Options, RelayMessage, Status, StatusCode, opt,
};
use subnet::SubnetState;

pub const SERVER_PORT: u16 = 547;
pub const CLIENT_PORT: u16 = 546;
/// RFC 9915 §7.6 IRT_DEFAULT / IRT_MINIMUM.
pub const IRT_DEFAULT: u32 = 86400;
pub const IRT_MINIMUM: u32 = 600;
/// Infinity for lifetimes and T1/T2 (RFC 9915 §7.7).
pub const INFINITY: u32 = u32::MAX;
/// A lease is moved to EXPIRED this long after its valid lifetime ends: the
/// client counts its lifetime from when the Reply arrived, and failover
/// partners may disagree by up to 5 s (RFC 8156 §7.1).
pub const EXPIRY_GRACE: Time = 10;

/// Where and how a message arrived.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// Name of the interface it came in on, when known.
    pub interface: Option<&'a str>,
    /// IP source address of the datagram (client or outermost relay).
    pub source: Ipv6Addr,
    /// IP destination: ff02::1:2 (multicast) or one of our unicast addresses.
    pub destination: Ipv6Addr,
}

/// A reply ready to send once `changes` are durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub message: Message,
    /// The reply type to the client (ADVERTISE or REPLY), for metrics.
    pub reply_type: MessageType,
    pub to: Ipv6Addr,
    pub port: u16,
    /// RFC 8357 §5.2: send to the UDP source port the Relay-forward came
    /// from instead of `port` (the relay sent OPTION_RELAY_PORT).
    pub to_source_port: bool,
    /// The leases this reply changed, as they must be stored.
    pub changes: Vec<Lease>,
}

/// Why a message got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A type a server never accepts (Advertise, Reply, Relay-reply, …).
    NotForServer,
    MissingClientId,
    MissingServerId,
    /// A Server Identifier that is not ours.
    WrongServerId,
    /// A Server Identifier where none may be.
    UnexpectedServerId,
    /// Solicit, Confirm or Rebind sent by unicast (RFC 9915 §16).
    UnicastNotAllowed,
    /// IA options in an Information-request.
    IaInInformationRequest,
    /// No configured subnet for the client's link.
    UnknownLink,
    /// The failover state makes us unresponsive to this message.
    NotResponsive,
    /// A Relay-forward without OPTION_RELAY_MSG.
    RelayWithoutMessage,
    /// A Relay-forward sent to a unicast address not in `unicast-listen`.
    UnicastNotListening,
    /// Confirm with no addresses, or a Rebind we have nothing to say to.
    NothingToSay,
}

impl DropReason {
    pub const ALL: [DropReason; 12] = [
        DropReason::NotForServer,
        DropReason::MissingClientId,
        DropReason::MissingServerId,
        DropReason::WrongServerId,
        DropReason::UnexpectedServerId,
        DropReason::UnicastNotAllowed,
        DropReason::IaInInformationRequest,
        DropReason::UnknownLink,
        DropReason::NotResponsive,
        DropReason::RelayWithoutMessage,
        DropReason::UnicastNotListening,
        DropReason::NothingToSay,
    ];

    /// Label for `tandem_packets_dropped_total{reason}`.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::NotForServer => "not_for_server",
            DropReason::MissingClientId => "missing_client_id",
            DropReason::MissingServerId => "missing_server_id",
            DropReason::WrongServerId => "wrong_server_id",
            DropReason::UnexpectedServerId => "unexpected_server_id",
            DropReason::UnicastNotAllowed => "unicast_not_allowed",
            DropReason::IaInInformationRequest => "ia_in_information_request",
            DropReason::UnknownLink => "unknown_link",
            DropReason::NotResponsive => "not_responsive",
            DropReason::RelayWithoutMessage => "relay_without_message",
            DropReason::UnicastNotListening => "unicast_not_listening",
            DropReason::NothingToSay => "nothing_to_say",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Reply(Reply),
    Drop(DropReason),
}

impl Outcome {
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Outcome::Reply(r) => Some(r),
            Outcome::Drop(_) => None,
        }
    }
}

/// Everything an engine needs to start.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub server_duid: Duid,
    pub subnets: Vec<Subnet>,
    /// Which shard slice of the address and prefix space this engine serves.
    pub slice: Slice,
    /// Key for hashing clients onto addresses (injected: no randomness inside).
    pub hash_key: u64,
    /// Client FQDN handling and DNS update intents (`[ddns]`); None: ignore FQDN.
    pub naming: Option<fqdn::Naming>,
    /// `[limits]`: what one client may take.
    pub limits: limits::Limits,
    /// `unicast-listen`: the only unicast addresses Relay-forwards are
    /// accepted at; empty: any.
    pub unicast_listen: Vec<Ipv6Addr>,
    /// Global options and the client classes.
    pub provisioning: Provisioning,
}

/// Counters kept by the engine (exported as metrics by the runtime).
#[derive(Debug, Clone)]
pub struct Stats {
    pub received: [u64; 256],
    pub replies: [u64; 256],
    pub dropped: [u64; DropReason::ALL.len()],
}

impl Default for Stats {
    fn default() -> Self {
        Stats { received: [0; 256], replies: [0; 256], dropped: [0; DropReason::ALL.len()] }
    }
}

impl Stats {
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r as usize]
    }
}

pub struct Engine {
    server_duid: Duid,
    subnets: Vec<SubnetState>,
    leases: LeaseTable,
    hash_key: u64,
    /// Keys in our slice whose record lives in another shard (a lease the
    /// failover partner granted to a client hashed elsewhere, or one placed
    /// there by a re-sharding; see `failover::router`): never allocated here.
    blocked: std::collections::HashSet<LeaseKey>,
    naming: Option<fqdn::Naming>,
    pub stats: Stats,
    pub limits: limits::Tracker,
    unicast_listen: Vec<Ipv6Addr>,
    slice: Slice,
    provisioning: Provisioning,
    /// Every reserved key: (subnet, reservation) indexes.
    reserved: std::collections::HashMap<LeaseKey, (usize, usize)>,
    /// Per subnet: the subnets of its shared network, itself first, then
    /// the others in configuration order (just itself without one).
    networks: Vec<Vec<usize>>,
    /// Classes or hw-address reservations exist: messages are read for the
    /// client's link-layer address.
    uses_hw: bool,
    /// Every subnet is in this one failover relationship (or none is):
    /// `relationship_of` needs no search.
    uniform_relationship: Option<Option<usize>>,
}

/// Per-message context shared by the IA handlers.
struct Ctx<'p> {
    now: Time,
    subnet: usize,
    duid: Duid,
    policy: &'p dyn Policy,
    /// Commit bindings (Request, Renew, Rapid-Commit Solicit …) or only offer (Advertise).
    commit: bool,
    changes: Vec<Lease>,
    /// Shortest preferred lifetime among leases being given, for T1/T2.
    min_preferred: Option<u32>,
    capped: bool,
    /// The client's FQDN option, and ours for the reply (RFC 4704).
    fqdn: Option<crate::wire::ClientFqdn>,
    fqdn_reply: Option<crate::wire::ClientFqdn>,
    /// New leases offered in this message but not in the table (an
    /// Advertise commits nothing), per IA type, for the per-client limit.
    offered: [u32; 2],
    /// `ctl lease add --valid-lifetime`: instead of the subnet's.
    valid_override: Option<u32>,
    /// The client's classes (bit i: class i).
    classes: u64,
    /// The client's link-layer address, when known (RFC 6939, DUID-LL/LLT).
    hw: Option<&'p [u8]>,
    /// The client's reservation: (subnet, index).
    reservation: Option<(usize, usize)>,
    /// The first address and prefix given, whose subnet and pool options go out.
    first_na: Option<LeaseKey>,
    first_pd: Option<LeaseKey>,
    /// The relay chain the message came through, kept with each lease
    /// granted (leasequery, RFC 5007 §4.1.2.4); None when it came directly.
    relay: Option<Box<crate::lease::RelayData>>,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        let classes = &cfg.provisioning.classes;
        let mut e = Engine {
            server_duid: cfg.server_duid,
            subnets: cfg.subnets.into_iter().map(|s| SubnetState::new(s, cfg.slice, classes)).collect(),
            leases: LeaseTable::new(),
            hash_key: cfg.hash_key,
            blocked: Default::default(),
            naming: cfg.naming,
            stats: Stats::default(),
            limits: limits::Tracker::new(cfg.limits),
            unicast_listen: cfg.unicast_listen,
            slice: cfg.slice,
            provisioning: cfg.provisioning,
            reserved: Default::default(),
            networks: Vec::new(),
            uses_hw: false,
            uniform_relationship: None,
        };
        e.index();
        e
    }

    /// Rebuild what is derived from the subnets: reserved keys, networks.
    fn index(&mut self) {
        self.reserved.clear();
        for (si, s) in self.subnets.iter().enumerate() {
            for (ri, r) in s.cfg.reservations.iter().enumerate() {
                for k in r.addresses.iter().map(|a| LeaseKey::Addr(*a)).chain(r.prefixes.iter().map(|p| LeaseKey::Prefix(*p))) {
                    self.reserved.insert(k, (si, ri));
                }
            }
        }
        let first = self.subnets.first().and_then(|s| s.cfg.relationship);
        self.uniform_relationship = self.subnets.iter().all(|s| s.cfg.relationship == first).then_some(first);
        let groups = match self.uniform_relationship {
            Some(_) => Vec::new(),
            None => self
                .subnets
                .iter()
                .flat_map(|s| s.cfg.pd_pools.iter().map(move |p| (p.prefix, s.cfg.relationship.map_or(u8::MAX, |r| r.min(254) as u8))))
                .collect(),
        };
        self.leases.set_pd_groups(groups);
        self.uses_hw = !self.provisioning.classes.is_empty()
            || self.subnets.iter().flat_map(|s| &s.cfg.reservations).any(|r| matches!(r.client, settings::ReservedFor::HwAddress(_)));
        self.networks = (0..self.subnets.len())
            .map(|i| {
                let mut n = vec![i];
                if let Some(name) = &self.subnets[i].cfg.shared_network {
                    n.extend((0..self.subnets.len()).filter(|j| *j != i && self.subnets[*j].cfg.shared_network.as_ref() == Some(name)));
                }
                n
            })
            .collect();
    }

    /// Is `key` reserved for a client other than this one?
    fn reserved_for_other(&self, key: &LeaseKey, duid: &Duid, hw: Option<&[u8]>) -> bool {
        self.reserved.get(key).is_some_and(|(s, r)| !self.subnets[*s].cfg.reservations[*r].client.is(duid, hw))
    }

    /// The settings this engine serves from.
    pub fn config(&self) -> EngineConfig {
        EngineConfig {
            server_duid: self.server_duid.clone(),
            subnets: self.subnets.iter().map(|s| s.cfg.clone()).collect(),
            slice: self.slice,
            hash_key: self.hash_key,
            naming: self.naming.clone(),
            limits: self.limits.limits,
            unicast_listen: self.unicast_listen.clone(),
            provisioning: self.provisioning.clone(),
        }
    }

    /// Apply a reloaded configuration (the slice, DUID and hash key stay).
    /// Pools still configured keep their allocators; a new pool starts as
    /// at start-up, with the free records the table holds in it on its free
    /// list. Leases in a removed pool stay until they end (a Renew gets
    /// lifetimes 0). `blocked`: keys of new pools whose records another
    /// shard holds.
    pub fn reconfigure(&mut self, cfg: EngineConfig, blocked: impl IntoIterator<Item = LeaseKey>) {
        let mut old = std::mem::take(&mut self.subnets);
        let mut fresh_addr = Vec::new();
        let mut fresh_pd = Vec::new();
        for s in cfg.subnets {
            let mut st = SubnetState::new(s, cfg.slice, &cfg.provisioning.classes);
            for p in &mut st.addr_pools {
                let kept = old.iter_mut().flat_map(|o| o.addr_pools.iter_mut()).find(|o| o.range == p.range && o.alloc.size() > 0);
                match kept {
                    Some(o) => p.alloc = std::mem::take(&mut o.alloc),
                    None => fresh_addr.push(p.range),
                }
            }
            for p in &mut st.pd_pools {
                let kept = old.iter_mut().flat_map(|o| o.pd_pools.iter_mut()).find(|o| o.pool == p.pool && o.alloc.size() > 0);
                match kept {
                    Some(o) => p.alloc = std::mem::take(&mut o.alloc),
                    None => fresh_pd.push(p.pool.clone()),
                }
            }
            self.subnets.push(st);
        }
        if !fresh_addr.is_empty() || !fresh_pd.is_empty() {
            let free: Vec<LeaseKey> = self.leases.iter().filter(|l| !l.is_active()).map(|l| l.key).collect();
            for k in free {
                let fresh = match &k {
                    LeaseKey::Addr(a) => fresh_addr.iter().any(|r| r.contains(*a)),
                    LeaseKey::Prefix(p) => fresh_pd.iter().any(|pp| pp.delegated_length == p.len && pp.prefix.contains_prefix(p)),
                };
                if fresh {
                    for s in &mut self.subnets {
                        s.release(&k);
                    }
                }
            }
        }
        self.blocked.extend(blocked);
        self.provisioning = cfg.provisioning;
        let was_reserved: Vec<LeaseKey> = self.reserved.keys().copied().collect();
        self.index();
        // A key no longer reserved: back on its allocator's free list
        // (an allocator that met it while reserved dropped it), unless leased.
        for k in was_reserved {
            if !self.reserved.contains_key(&k) && !self.leases.get(&k).is_some_and(Lease::is_active) {
                for s in &mut self.subnets {
                    s.release(&k);
                }
            }
        }
        self.naming = cfg.naming;
        self.limits.limits = cfg.limits;
        self.unicast_listen = cfg.unicast_listen;
    }

    /// `ctl lease add`: create an ACTIVE lease of `key` for `binding`, as a
    /// grant would (the lifetimes, the MCLT cap of RFC 8156 §4.4, the BNDUPD
    /// flag, the DNS intent), if the key is in one of our pools (or
    /// reserved for this client), free, and ours to allocate in the current
    /// failover state.
    pub fn add_lease(&mut self, now: Time, key: LeaseKey, binding: &Binding, valid: Option<u32>, policies: &dyn Policies) -> Result<Lease, String> {
        let policy = policies.of(self.relationship_of(&key));
        let subnet = self
            .subnets
            .iter()
            .position(|s| s.serves(&key, &binding.duid, None))
            .ok_or_else(|| format!("{key} is in none of the configured pools and not reserved for this client"))?;
        if self.reserved_for_other(&key, &binding.duid, None) {
            return Err(format!("{key} is reserved for another client"));
        }
        if self.blocked.contains(&key) {
            return Err(format!("{key} is held by another shard (a move in progress): try again"));
        }
        if matches!(key, LeaseKey::Addr(a) if crate::pool::reserved::is_reserved(u128::from(a))) {
            return Err(format!("{key} is a reserved interface identifier (RFC 5453)"));
        }
        let existing = self.leases.get(&key);
        if let Some(l) = existing.filter(|l| l.is_active()) {
            return Err(format!("{key} is leased to client {} (IAID {}) until {}: delete it first", l.binding.duid, l.binding.iaid, l.valid_end));
        }
        if !policy.may_allocate(&key, existing, binding, now) {
            return Err(format!(
                "{key} may not be allocated by this server now (RFC 8156: in NORMAL only the primary allocates, each server takes only its own free leases, and a released lease waits for the partner's acknowledgement)"
            ));
        }
        if self.limits.lease_cap_reached(self.leases.active_of_client(&binding.duid, binding.ia_type)) {
            return Err(format!("client {} holds the most leases [limits] allows", binding.duid));
        }
        let mut ctx = Ctx {
            now,
            subnet,
            duid: binding.duid.clone(),
            policy,
            commit: true,
            changes: Vec::new(),
            min_preferred: None,
            capped: false,
            fqdn: None,
            fqdn_reply: None,
            offered: [0; 2],
            valid_override: valid,
            classes: 0,
            hw: None,
            reservation: None,
            first_na: None,
            first_pd: None,
            relay: None,
        };
        let mut l = self.grant(&mut ctx, key, binding);
        // T1/T2 as a Reply with this lease alone would carry (§18.3.2).
        let mut o = Options::new();
        o.push(match key {
            LeaseKey::Addr(_) => DhcpOption::IaNa(IaNa { iaid: binding.iaid, t1: 0, t2: 0, options: vec![iaaddr(&l)].into() }),
            LeaseKey::Prefix(_) => DhcpOption::IaPd(IaPd { iaid: binding.iaid, t1: 0, t2: 0, options: vec![iaprefix(&l)].into() }),
        });
        self.set_t1_t2(&mut ctx, &mut o);
        if let Some(t) = self.leases.get(&key) {
            l = t.clone();
        }
        Ok(l)
    }

    /// `ctl lease del`: the ACTIVE lease of `key` becomes RESET (RFC 8156
    /// §7.2: "made available by an operator command"), reused as a released
    /// one is (with a partner, only after its ack). The client is not told.
    pub fn reset(&mut self, now: Time, key: &LeaseKey, policies: &dyn Policies) -> Option<Lease> {
        let policy = policies.of(self.relationship_of(key));
        let mut l = self.leases.get(key).filter(|l| l.is_active())?.clone();
        l.set_status(BindingStatus::Reset, now);
        l.cltt = now;
        l.update_partner = true;
        mark_dns_removal(&mut l, policy);
        for s in &mut self.subnets {
            s.release(key);
        }
        self.leases.upsert(l.clone());
        Some(l)
    }

    pub fn server_duid(&self) -> &Duid {
        &self.server_duid
    }

    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// With a failover partner: leases the partner may have extended are
    /// kept ACTIVE until the acked partner lifetime plus the MCLT (§4.4).
    /// Call before loading leases.
    pub fn set_failover_mclt(&mut self, mclt: u32) {
        self.leases.set_slack(mclt as Time);
    }

    /// Another shard holds the record of `key`: never allocate it here.
    pub fn block(&mut self, key: LeaseKey) {
        self.blocked.insert(key);
    }

    /// Is `key` blocked here (its record lives in another shard)?
    pub fn is_blocked(&self, key: &LeaseKey) -> bool {
        self.blocked.contains(key)
    }

    /// The failover relationship `key` belongs to: that of the subnet whose
    /// pools or reservations hold it, else (a pool since removed) of the
    /// subnet whose prefix holds the address; with one relationship over
    /// every subnet, that one for any key.
    pub fn relationship_of(&self, key: &LeaseKey) -> Option<usize> {
        if let Some(r) = self.uniform_relationship {
            return r;
        }
        let s = self.subnets.iter().find(|s| s.in_pools(key) || s.reserves(key)).or_else(|| match key {
            // An address of a pool since removed: its subnet's still.
            LeaseKey::Addr(a) => self.subnets.iter().find(|s| s.cfg.prefix.contains(*a)),
            LeaseKey::Prefix(_) => None,
        });
        s.and_then(|s| s.cfg.relationship)
    }

    /// Is `key` in one of the configured pools (any slice)?
    pub fn in_pools(&self, key: &LeaseKey) -> bool {
        self.subnets.iter().any(|s| s.in_pools(key))
    }

    /// Is `key` in this engine's slice of a pool?
    pub fn in_slice(&self, key: &LeaseKey) -> bool {
        self.subnets.iter().any(|s| s.in_slice(key))
    }

    /// Put a stored lease back at start-up. Non-active leases return to
    /// their allocator's free list.
    pub fn load(&mut self, lease: Lease) {
        self.apply_external(lease);
    }

    /// Load a shard's whole store at start-up, into an empty engine: the
    /// same as `load` for each record, without copying the records.
    pub fn load_all(&mut self, records: Vec<Lease>) {
        for l in records.iter().filter(|l| !l.is_active()) {
            for s in &mut self.subnets {
                s.release(&l.key);
            }
        }
        self.leases.load(records);
    }

    /// A write that did not come from a client message (the failover
    /// partner's update, an acknowledgement, a DNS outcome): the table takes
    /// it as it is. Non-active leases return to their allocator's free list.
    pub fn apply_external(&mut self, lease: Lease) {
        if !lease.is_active() {
            let key = lease.key;
            for s in &mut self.subnets {
                s.release(&key);
            }
        }
        self.leases.upsert(lease);
    }

    /// Is `key` on an allocator's free list?
    #[cfg(test)]
    pub fn free_listed(&self, key: &LeaseKey) -> bool {
        let LeaseKey::Addr(a) = key else { return false };
        self.subnets.iter().flat_map(|s| &s.addr_pools).any(|p| p.slot(*a).is_some_and(|j| p.alloc.free_listed(j)))
    }

    /// Take `key` off the free lists, as an allocator that met it while it
    /// was not available does.
    #[cfg(test)]
    pub fn drop_free_listed_for_test(&mut self, key: &LeaseKey) {
        let LeaseKey::Addr(a) = key else { return };
        for p in self.subnets.iter_mut().flat_map(|s| &mut s.addr_pools) {
            if let Some(j) = p.slot(*a) {
                p.alloc.unlist(j);
            }
        }
    }

    /// A free record whose hold ended (see `shard`): into the allocators'
    /// free lists again, in case one dropped it meanwhile.
    pub fn free_again(&mut self, key: &LeaseKey) {
        if self.leases.get(key).is_some_and(|l| matches!(l.status, BindingStatus::Free | BindingStatus::FreeBackup)) {
            for s in &mut self.subnets {
                s.release(key);
            }
        }
    }

    /// The record moved to another shard: forget it here, and if the key is
    /// ours to allocate, block it while it lives elsewhere.
    pub fn evict(&mut self, key: &LeaseKey) -> Option<Lease> {
        let l = self.leases.remove(key)?;
        if self.in_slice(key) {
            self.blocked.insert(*key);
        }
        Some(l)
    }

    /// A key handed back to this shard without a record (`ctl lease add`
    /// refused at the client's shard).
    pub fn unblock(&mut self, key: &LeaseKey) {
        self.blocked.remove(key);
    }

    /// Remove a record adopted a moment ago (nothing written), leaving no block.
    pub fn take_back(&mut self, key: &LeaseKey) -> Option<Lease> {
        self.leases.remove(key)
    }

    /// The record's home is this shard now.
    pub fn adopt(&mut self, lease: Lease) {
        self.blocked.remove(&lease.key);
        self.apply_external(lease);
    }

    /// Move active leases past their valid lifetime to EXPIRED (at most
    /// `max` per call, earliest first). The changes must be persisted.
    pub fn expire(&mut self, now: Time, max: usize, policies: &dyn Policies) -> Vec<Lease> {
        let mut out = Vec::new();
        for key in self.leases.due(now.saturating_sub(EXPIRY_GRACE), max) {
            let Some(l) = self.leases.get(&key) else { continue };
            let mut l = l.clone();
            l.set_status(BindingStatus::Expired, now);
            l.update_partner = true;
            mark_dns_removal(&mut l, policies.of(self.relationship_of(&key)));
            for s in &mut self.subnets {
                s.release(&key);
            }
            self.leases.upsert(l.clone());
            out.push(l);
        }
        out
    }

    /// RFC 8156 §8.4.1, §4.2.2.1: in PARTNER-DOWN, EXPIRED, RELEASED and
    /// RESET leases become free once the MCLT has passed since every time
    /// the partner could rely on and since entering PARTNER-DOWN. Earliest
    /// first from an index, at most `max` per call: never a table walk.
    /// `relationship`: only that relationship's leases (the one in PARTNER-DOWN).
    pub fn reclaim(&mut self, now: Time, mclt: u32, partner_down_since: Time, max: usize, relationship: usize) -> Vec<Lease> {
        let mclt = mclt as Time;
        if partner_down_since == 0 || now < partner_down_since + mclt {
            return Vec::new();
        }
        let mut out = Vec::new();
        let keys = match self.uniform_relationship {
            Some(_) => self.leases.reclaimable(now.saturating_sub(mclt), max, |_| true),
            None => self.leases.reclaimable(now.saturating_sub(mclt), max, |k| self.relationship_of(k) == Some(relationship)),
        };
        for key in keys {
            let Some(l) = self.leases.get(&key) else { continue };
            let mut l = l.clone();
            l.set_status(crate::failover::free_status(&key), now);
            l.update_partner = true;
            // §9.4: in PARTNER-DOWN the records go when the lease is FREE.
            release_dns(&mut l);
            for s in &mut self.subnets {
                s.release(&key);
            }
            self.leases.upsert(l.clone());
            out.push(l);
        }
        out
    }

    /// RFC 8156 §4.2.2, the primary: up to `n` delegable prefixes of our
    /// slice that are ours to give (never used, or FREE) become FREE-BACKUP,
    /// for the secondary. Found by the allocators, never by walking a pool.
    /// Only from the pools of `relationship`'s subnets.
    pub fn give_backup(&mut self, now: Time, n: u64, relationship: usize) -> Vec<Lease> {
        let mut out = Vec::new();
        let mut seed = now ^ self.hash_key ^ 0x4642;
        for si in 0..self.subnets.len() {
            if self.uniform_relationship.is_none() && self.subnets[si].cfg.relationship != Some(relationship) {
                continue;
            }
            for pi in 0..self.subnets[si].pd_pools.len() {
                while (out.len() as u64) < n {
                    seed = hash::mix(seed, out.len() as u64);
                    let mut alloc = std::mem::take(&mut self.subnets[si].pd_pools[pi].alloc);
                    let found = {
                        let pool = &self.subnets[si].pd_pools[pi];
                        alloc.allocate(seed, None, true, true, |j| {
                            let k = LeaseKey::Prefix(pool.prefix(j));
                            !self.blocked.contains(&k)
                                && !self.reserved.contains_key(&k)
                                && self.leases.get(&k).is_none_or(|l| l.status == BindingStatus::Free)
                        })
                    };
                    self.subnets[si].pd_pools[pi].alloc = alloc;
                    let Some(j) = found else { break };
                    let k = LeaseKey::Prefix(self.subnets[si].pd_pools[pi].prefix(j));
                    let mut l = self.leases.get(&k).cloned().unwrap_or_else(|| Lease::pool_record(k, now));
                    // §4.2.2: once the BNDUPD is sent the primary MUST NOT allocate it.
                    l.set_status(BindingStatus::FreeBackup, now);
                    l.update_partner = true;
                    self.leases.upsert(l.clone());
                    out.push(l);
                }
            }
        }
        out
    }

    /// The FREE-BACKUP prefixes held here, in order (to take back, §4.2.2).
    pub fn free_backup_prefixes(&self) -> impl Iterator<Item = &Lease> {
        self.leases.free_backup_keys().filter_map(|k| self.leases.get(k))
    }

    /// Delegable-prefix counts of this engine's slice (RFC 8156 §4.2.2).
    /// Of `relationship`'s pools only, with several relationships.
    pub fn pd_counts(&self, relationship: usize) -> crate::failover::bus::PdCounts {
        use crate::lease::IaType;
        let uniform = self.uniform_relationship.is_some();
        let mut c = crate::failover::bus::PdCounts {
            delegable: self
                .subnets
                .iter()
                .filter(|s| uniform || s.cfg.relationship == Some(relationship))
                .map(|s| s.delegable_in_slice())
                .fold(0u64, u64::saturating_add),
            ..Default::default()
        };
        let mut add = |st: BindingStatus, n: u64| match st {
            BindingStatus::FreeBackup => c.free_backup += n,
            BindingStatus::Free => {}
            _ => c.used += n,
        };
        if uniform {
            for ((t, st), n) in self.leases.counts() {
                if *t == IaType::Pd {
                    add(*st, *n);
                }
            }
        } else {
            for (st, n) in self.leases.group_counts(relationship.min(254) as u8) {
                add(st, n);
            }
        }
        c
    }

    pub fn handle(&mut self, now: Time, msg: &Message, arrival: &Arrival<'_>, policies: &dyn Policies) -> Outcome {
        self.stats.received[msg.msg_type().code() as usize] += 1;
        let out = self.handle_inner(now, msg, arrival, policies);
        match &out {
            Outcome::Reply(r) => self.stats.replies[r.reply_type.code() as usize] += 1,
            Outcome::Drop(d) => self.stats.dropped[*d as usize] += 1,
        }
        out
    }

    fn handle_inner(&mut self, now: Time, msg: &Message, arrival: &Arrival<'_>, policies: &dyn Policies) -> Outcome {
        use MessageType as T;
        let (chain, client) = msg.unwrap_relays();
        if chain.first().is_some_and(|r| r.msg_type != T::RelayForw) {
            return Outcome::Drop(DropReason::NotForServer);
        }
        let Some(client) = client else { return Outcome::Drop(DropReason::RelayWithoutMessage) };
        if chain.iter().any(|r| r.msg_type != T::RelayForw) {
            return Outcome::Drop(DropReason::NotForServer);
        }
        let t = client.msg_type;
        if !matches!(
            t,
            T::Solicit | T::Request | T::Confirm | T::Renew | T::Rebind | T::Release | T::Decline | T::InformationRequest
        ) {
            return Outcome::Drop(DropReason::NotForServer);
        }
        if let Err(d) = self.validate(client) {
            return Outcome::Drop(d);
        }
        let relayed = !chain.is_empty();
        if relayed && !arrival.destination.is_multicast() && !self.unicast_listen.is_empty() && !self.unicast_listen.contains(&arrival.destination) {
            return Outcome::Drop(DropReason::UnicastNotListening);
        }
        let unicast = !relayed && !arrival.destination.is_multicast();
        if unicast && matches!(t, T::Solicit | T::Confirm | T::Rebind) {
            // RFC 9915 §16: never accepted by unicast.
            return Outcome::Drop(DropReason::UnicastNotAllowed);
        }
        let Some(subnet) = self.select_subnet(&chain, arrival) else {
            return Outcome::Drop(DropReason::UnknownLink);
        };
        // The link's relationship decides (a shared network is in one, config).
        let policy = policies.of(self.subnets[subnet].cfg.relationship);
        match policy.responsiveness() {
            Responsiveness::Responsive => {}
            Responsiveness::RenewResponsive => {
                if client.options.server_id() != Some(&self.server_duid) {
                    return Outcome::Drop(DropReason::NotResponsive);
                }
            }
            Responsiveness::Unresponsive => return Outcome::Drop(DropReason::NotResponsive),
        }
        if unicast && self.subnets[subnet].cfg.server_unicast != Some(arrival.destination) {
            // RFC 9915 §16: clients' unicast is not accepted; the legacy RFC 8415
            // §18.4 answer (UseMulticast, nothing processed) lets an old client
            // that was told to unicast fall back to multicast at once (README,
            // Conformance). Accepted only at a legacy `server-unicast` address.
            let mut o = self.reply_header(client);
            o.push(DhcpOption::StatusCode(Status::new(StatusCode::USE_MULTICAST, "send by multicast")));
            return self.finish(client, &chain, arrival, o, Vec::new());
        }
        let duid = client.options.client_id().cloned();
        let facts = classes::Facts::new(client, &chain, arrival, self.uses_hw);
        let class_mask = if self.provisioning.classes.is_empty() { 0 } else { classes::classify(&self.provisioning.classes, &facts) };
        let reservation = duid.as_ref().and_then(|d| {
            self.networks[subnet].iter().find_map(|si| self.subnets[*si].reservation(d, facts.hw).map(|ri| (*si, ri)))
        });
        let mut ctx = Ctx {
            now,
            subnet,
            duid: duid.unwrap_or_else(|| self.server_duid.clone()),
            policy,
            commit: true,
            changes: Vec::new(),
            min_preferred: None,
            capped: false,
            fqdn: client.options.client_fqdn().cloned(),
            fqdn_reply: None,
            offered: [0; 2],
            valid_override: None,
            classes: class_mask,
            hw: facts.hw,
            reservation,
            first_na: None,
            first_pd: None,
            // Only for messages that may commit a lease (an Advertise keeps nothing).
            relay: if relayed && (matches!(t, T::Request | T::Renew | T::Rebind) || (t == T::Solicit && client.options.has(opt::RAPID_COMMIT) && self.subnets[subnet].cfg.rapid_commit)) {
                relay_data(&chain, arrival.source)
            } else {
                None
            },
        };
        let options = match t {
            T::Solicit => {
                let rapid = client.options.has(opt::RAPID_COMMIT) && self.subnets[subnet].cfg.rapid_commit;
                ctx.commit = rapid;
                let mut o = self.reply_header(client);
                if rapid {
                    o.push(DhcpOption::RapidCommit);
                }
                let pref = self.subnets[subnet].cfg.preference;
                if pref != 0 && !rapid {
                    o.push(DhcpOption::Preference(pref));
                }
                self.assign_ias(&mut ctx, client, &mut o, IaMode::Assign);
                o
            }
            T::Request => {
                let mut o = self.reply_header(client);
                self.assign_ias(&mut ctx, client, &mut o, IaMode::Assign);
                o
            }
            T::Renew => {
                let mut o = self.reply_header(client);
                self.assign_ias(&mut ctx, client, &mut o, IaMode::Renew);
                o
            }
            T::Rebind => {
                let mut o = self.reply_header(client);
                if !self.assign_ias(&mut ctx, client, &mut o, IaMode::Rebind) {
                    return Outcome::Drop(DropReason::NothingToSay);
                }
                o
            }
            T::Release | T::Decline => {
                let mut o = self.reply_header(client);
                self.release_ias(&mut ctx, client, &mut o, t == T::Decline);
                o.push(DhcpOption::StatusCode(Status::new(StatusCode::SUCCESS, "")));
                o
            }
            T::Confirm => {
                // RFC 9915 §21.5: IA_TA is obsolete and ignored; only IA_NA
                // addresses are confirmed.
                let addrs: Vec<Ipv6Addr> = client.options.ia_nas().flat_map(|ia| ia.options.ia_addrs().map(|a| a.addr)).collect();
                if addrs.is_empty() {
                    return Outcome::Drop(DropReason::NothingToSay);
                }
                let status = if addrs.iter().all(|a| self.net_on_link(&ctx, *a)) {
                    Status::new(StatusCode::SUCCESS, "all addresses on link")
                } else {
                    Status::new(StatusCode::NOT_ON_LINK, "not on link")
                };
                let mut o = self.reply_header(client);
                o.push(DhcpOption::StatusCode(status));
                o
            }
            T::InformationRequest => {
                let mut o = self.reply_header(client);
                self.config_options(&ctx, client.options.oro(), true, &mut o);
                return self.finish(client, &chain, arrival, o, Vec::new());
            }
            _ => return Outcome::Drop(DropReason::NotForServer),
        };
        let mut options = options;
        // RFC 4704 §6: the option goes back only to a client that sent it and asked for it.
        if let Some(f) = ctx.fqdn_reply.take()
            && client.options.oro().contains(&opt::CLIENT_FQDN)
        {
            options.push(DhcpOption::ClientFqdn(f));
        }
        self.config_options(&ctx, client.options.oro(), false, &mut options);
        self.set_t1_t2(&mut ctx, &mut options);
        let changes = std::mem::take(&mut ctx.changes);
        self.finish(client, &chain, arrival, options, changes)
    }

    /// RFC 9915 §16 identifier rules.
    fn validate(&self, c: &ClientMessage) -> Result<(), DropReason> {
        use MessageType as T;
        let sid = c.options.server_id();
        let cid = c.options.client_id();
        match c.msg_type {
            T::Solicit | T::Confirm | T::Rebind => {
                if cid.is_none() {
                    return Err(DropReason::MissingClientId);
                }
                if sid.is_some() {
                    return Err(DropReason::UnexpectedServerId);
                }
            }
            T::Request | T::Renew | T::Release | T::Decline => {
                if cid.is_none() {
                    return Err(DropReason::MissingClientId);
                }
                match sid {
                    None => return Err(DropReason::MissingServerId),
                    Some(s) if *s != self.server_duid => return Err(DropReason::WrongServerId),
                    _ => {}
                }
            }
            T::InformationRequest => {
                if sid.is_some_and(|s| *s != self.server_duid) {
                    return Err(DropReason::WrongServerId);
                }
                if c.options.has(opt::IA_NA) || c.options.has(opt::IA_TA) || c.options.has(opt::IA_PD) {
                    return Err(DropReason::IaInInformationRequest);
                }
            }
            _ => return Err(DropReason::NotForServer),
        }
        Ok(())
    }

    /// RFC 9915 §13.1: the innermost non-zero relay link-address for relayed
    /// clients, the arrival interface for direct link-local clients, the
    /// source address for direct global clients.
    fn select_subnet(&self, chain: &[&RelayMessage], arrival: &Arrival<'_>) -> Option<usize> {
        if !chain.is_empty() {
            let link = chain.iter().rev().map(|r| r.link_address).find(|a| !a.is_unspecified());
            return link.and_then(|l| {
                self.subnets
                    .iter()
                    .position(|s| s.cfg.relay_links.contains(&l))
                    .or_else(|| self.subnets.iter().position(|s| s.cfg.prefix.contains(l)))
            });
        }
        let by_source = || {
            (!arrival.source.is_unicast_link_local()).then(|| self.subnets.iter().position(|s| s.cfg.prefix.contains(arrival.source))).flatten()
        };
        let by_interface =
            || arrival.interface.and_then(|ifname| self.subnets.iter().position(|s| s.cfg.interface.as_deref() == Some(ifname)));
        // RFC 9915 §13.1 dropped 8415's "a direct message from a global
        // source is on that source's link": a multicast arrival (link-scoped)
        // belongs to its interface's subnet; the source prefix decides for
        // unicast (legacy `server-unicast`) or an interface without a subnet.
        if arrival.destination.is_multicast() { by_interface().or_else(by_source) } else { by_source().or_else(by_interface) }
    }

    fn reply_header(&self, c: &ClientMessage) -> Options {
        let mut o = Options::new();
        o.push(DhcpOption::ServerId(self.server_duid.clone()));
        if let Some(cid) = c.options.client_id() {
            o.push(DhcpOption::ClientId(cid.clone()));
        }
        o
    }

    /// Wrap the reply in RELAY-REPL levels mirroring the RELAY-FORW chain.
    fn finish(
        &self,
        client: &ClientMessage,
        chain: &[&RelayMessage],
        arrival: &Arrival<'_>,
        options: Options,
        changes: Vec<Lease>,
    ) -> Outcome {
        let reply_type = if client.msg_type == MessageType::Solicit && !options.has(opt::RAPID_COMMIT) {
            MessageType::Advertise
        } else {
            MessageType::Reply
        };
        let mut m =
            Message::Client(ClientMessage { msg_type: reply_type, transaction_id: client.transaction_id, options });
        for level in chain.iter().rev() {
            let mut o = Options::new();
            if let Some(ifid) = level.options.interface_id() {
                o.push(DhcpOption::InterfaceId(ifid.to_vec()));
            }
            // RFC 8357 §5.2: copied into the Relay-reply at its level.
            if let Some(p) = level.options.relay_port() {
                o.push(DhcpOption::RelayPort(p));
            }
            o.push(DhcpOption::RelayMsg(Box::new(m)));
            m = Message::Relay(RelayMessage {
                msg_type: MessageType::RelayRepl,
                hop_count: level.hop_count,
                link_address: level.link_address,
                peer_address: level.peer_address,
                options: o,
            });
        }
        // RFC 9915 §7.2: Relay-replies to 547, client messages to 546 —
        // unless the relay that sent to us asked for its own port (RFC 8357).
        let port = if chain.is_empty() { CLIENT_PORT } else { SERVER_PORT };
        let to_source_port = chain.first().is_some_and(|r| r.options.relay_port().is_some());
        Outcome::Reply(Reply { message: m, reply_type, to: arrival.source, port, to_source_port, changes })
    }

    /// Configuration options for the reply (RFC 9915 §18.3, §21.7): the
    /// codes the client's ORO asks for and those any applicable scope marks
    /// `always-send`, each from the most specific scope that sets it: the
    /// reservation, the client's classes (in configuration order), the pool
    /// of the first lease given, its subnet (with the subnet's shorthand
    /// keys), then the global `options`.
    fn config_options(&self, ctx: &Ctx<'_>, oro: &[u16], info_request: bool, out: &mut Options) {
        let lease_subnet = ctx.first_na.or(ctx.first_pd).map_or(ctx.subnet, |k| self.subnet_of(ctx, &k));
        let s = &self.subnets[lease_subnet].cfg;
        // Most specific first; None stands for the subnet's shorthand keys.
        // (An iterator, walked twice: nothing allocated per reply.)
        let scopes = || {
            let reservation = ctx.reservation.map(|(si, ri)| self.subnets[si].cfg.reservations[ri].options.as_slice());
            let classes = self.provisioning.classes.iter().enumerate().filter(|(i, _)| ctx.classes & (1 << i) != 0).map(|(_, c)| c.options.as_slice());
            let pools = [ctx.first_na, ctx.first_pd].into_iter().flatten().filter_map(|k| self.pool_scope(ctx, &k)).map(|p| p.options.as_slice());
            let rest = [Some(s.options.as_slice()), None, Some(self.provisioning.options.as_slice())];
            reservation.into_iter().chain(classes).chain(pools).map(Some).chain(rest)
        };
        let always: Vec<(u16, u32)> =
            scopes().flatten().flat_map(|sc| sc.iter()).filter(|o| o.always_send).map(|o| (o.code, enterprise_of(o))).collect();
        let mut sent: Vec<(u16, u32)> = Vec::new();
        for scope in scopes() {
            match scope {
                Some(sc) => offer(sc, oro, &always, &mut sent, out),
                None => shorthands(s, oro, &always, info_request, &mut sent, out),
            }
        }
    }

    /// The subnet of the client's network that `key` belongs to (its pools
    /// or reservations); the selected subnet when none does.
    fn subnet_of(&self, ctx: &Ctx<'_>, key: &LeaseKey) -> usize {
        let net = &self.networks[ctx.subnet];
        if net.len() == 1 {
            return ctx.subnet;
        }
        net.iter().copied().find(|i| self.subnets[*i].in_pools(key) || self.subnets[*i].reserves(key)).unwrap_or(ctx.subnet)
    }

    /// The classes and options of the pool `key` is in.
    fn pool_scope(&self, ctx: &Ctx<'_>, key: &LeaseKey) -> Option<&settings::PoolScope> {
        let s = &self.subnets[self.subnet_of(ctx, key)];
        match key {
            LeaseKey::Addr(a) => s.addr_pools.iter().position(|p| p.range.contains(*a)).and_then(|i| s.cfg.pool_scopes.get(i)),
            LeaseKey::Prefix(p) => s.pd_pools.iter().position(|pp| pp.slot(p).is_some()).and_then(|i| s.cfg.pd_pool_scopes.get(i)),
        }
    }

    /// May the client's classes take `key` anew: reserved (for it: checked
    /// by `available_for`), or in a pool open to them?
    fn admits(&self, ctx: &Ctx<'_>, key: &LeaseKey) -> bool {
        if self.reserved.contains_key(key) {
            return true;
        }
        let s = &self.subnets[self.subnet_of(ctx, key)];
        let pool = match key {
            LeaseKey::Addr(a) => s.addr_pools.iter().find(|p| p.range.contains(*a)).map(|p| p.classes),
            LeaseKey::Prefix(p) => s.pd_pools.iter().find(|pp| pp.slot(p).is_some()).map(|pp| pp.classes),
        };
        pool.is_none_or(|m| subnet::admits(m, ctx.classes))
    }

    /// Is the address on the client's link (any subnet of its network)?
    fn net_on_link(&self, ctx: &Ctx<'_>, a: Ipv6Addr) -> bool {
        self.networks[ctx.subnet].iter().any(|i| self.subnets[*i].on_link(a))
    }

    fn net_prefix_on_link(&self, ctx: &Ctx<'_>, p: &Prefix) -> bool {
        self.networks[ctx.subnet].iter().any(|i| self.subnets[*i].prefix_on_link(p))
    }

    /// Is `key` still ours to give this client, in its network: reserved
    /// for it (in any subnet), or in a pool and reserved for nobody else?
    fn net_serves(&self, ctx: &Ctx<'_>, key: &LeaseKey, duid: &Duid) -> bool {
        if self.reserved.contains_key(key) {
            return !self.reserved_for_other(key, duid, ctx.hw);
        }
        self.networks[ctx.subnet].iter().any(|i| self.subnets[*i].serves(key, duid, ctx.hw))
    }

    /// Lifetimes for a lease: its subnet's, capped by the failover policy.
    fn lifetimes(&self, ctx: &mut Ctx<'_>, probe: &Lease) -> (u32, u32) {
        let s = &self.subnets[self.subnet_of(ctx, &probe.key)].cfg;
        let mut valid = ctx.valid_override.unwrap_or(s.valid_lifetime);
        if let Some(cap) = ctx.policy.lifetime_cap(probe, ctx.now)
            && cap < valid
        {
            valid = cap;
            ctx.capped = true;
        }
        let preferred = s.preferred_lifetime.min(valid);
        if valid > 0 {
            ctx.min_preferred = Some(ctx.min_preferred.map_or(preferred, |m| m.min(preferred)));
        }
        (preferred, valid)
    }

    /// RFC 9915 §18.3.2/§18.3.4: the same T1/T2 in every IA, derived from the
    /// shortest preferred lifetime given; T1 ≤ T2 ≤ preferred. IAs that carry
    /// only a status get 0/0.
    fn set_t1_t2(&mut self, ctx: &mut Ctx<'_>, options: &mut Options) {
        let lease_subnet = ctx.first_na.or(ctx.first_pd).map_or(ctx.subnet, |k| self.subnet_of(ctx, &k));
        let s = &self.subnets[lease_subnet].cfg;
        let (t1, t2) = match ctx.min_preferred {
            None => (0, 0),
            Some(INFINITY) => (INFINITY, INFINITY),
            Some(p) => {
                let (mut t1, mut t2) = (s.renew_time, s.rebind_time);
                if ctx.capped || t2 > p {
                    t1 = t1.min(p / 2);
                    t2 = t2.min((p as u64 * 4 / 5) as u32);
                }
                (t1.min(t2), t2)
            }
        };
        for o in &mut options.0 {
            let (ia_t1, ia_t2, ia_opts) = match o {
                DhcpOption::IaNa(ia) => (&mut ia.t1, &mut ia.t2, &ia.options),
                DhcpOption::IaPd(ia) => (&mut ia.t1, &mut ia.t2, &ia.options),
                _ => continue,
            };
            let leases = ia_opts.ia_addrs().any(|a| a.valid > 0) || ia_opts.ia_prefixes().any(|p| p.valid > 0);
            (*ia_t1, *ia_t2) = if leases { (t1, t2) } else { (0, 0) };
        }
        if ctx.commit {
            for l in &mut ctx.changes {
                (l.t1, l.t2) = (t1, t2);
                self.leases.set_t1_t2(&l.key, t1, t2);
            }
        }
    }

    /// Process every IA_NA / IA_PD of the message. Returns whether anything
    /// was put in the reply (Rebind is dropped otherwise).
    fn assign_ias(&mut self, ctx: &mut Ctx<'_>, c: &ClientMessage, out: &mut Options, mode: IaMode) -> bool {
        let mut said = false;
        for o in &c.options {
            match o {
                DhcpOption::IaNa(ia) => {
                    let opts = self.ia_na(ctx, ia, mode);
                    said |= !opts.is_empty();
                    out.push(DhcpOption::IaNa(IaNa { iaid: ia.iaid, t1: 0, t2: 0, options: opts }));
                }
                DhcpOption::IaPd(ia) => {
                    let opts = self.ia_pd(ctx, ia, mode);
                    said |= !opts.is_empty();
                    out.push(DhcpOption::IaPd(IaPd { iaid: ia.iaid, t1: 0, t2: 0, options: opts }));
                }
                _ => {}
            }
        }
        said
    }

    /// Is `key` free for this client: not active for another client, not
    /// reserved for another, and grantable under the policy?
    fn available_for(&self, ctx: &Ctx<'_>, key: &LeaseKey, binding: &Binding) -> bool {
        let reserved = self.reserved.contains_key(key);
        if (reserved && self.reserved_for_other(key, &binding.duid, ctx.hw)) || self.blocked.contains(key) {
            return false;
        }
        match self.leases.get(key) {
            Some(l) if l.binding == *binding && l.is_active() => true,
            Some(l) if l.is_active() => false,
            // RFC 9915 §13.1: a reserved interface identifier is never given
            // (a lease already active on one, from an older version, renews).
            _ if matches!(key, LeaseKey::Addr(a) if crate::pool::reserved::is_reserved(u128::from(*a))) => false,
            // Reserved for this client: outside the failover split.
            existing if reserved => ctx.policy.may_grant_reserved(key, existing, binding, ctx.now),
            existing => ctx.policy.may_allocate(key, existing, binding, ctx.now),
        }
    }

    /// May this client get one more lease of type `t` (RFC 9915 Security
    /// Considerations)? Counts its ACTIVE leases whoever granted them, plus
    /// what this message already offered; a refusal is counted and logged.
    fn may_take_new(&mut self, ctx: &Ctx<'_>, t: IaType) -> bool {
        use limits::Limit;
        let held = self.leases.active_of_client(&ctx.duid, t) + ctx.offered[usize::from(t == IaType::Pd)];
        let hit = if self.limits.lease_cap_reached(held) {
            Some(Limit::LeasesPerClient)
        } else if t == IaType::Na && self.limits.decline_blocked(&ctx.duid, ctx.now) {
            Some(Limit::DeclinesPerClientPerHour)
        } else {
            None
        };
        if let Some(l) = hit {
            self.limits.hit(&ctx.duid, l, ctx.now);
        }
        hit.is_none()
    }

    /// Grant (or offer) `key` to `binding`; returns the lease as given.
    fn grant(&mut self, ctx: &mut Ctx<'_>, key: LeaseKey, binding: &Binding) -> Lease {
        let mut lease = match self.leases.get(&key) {
            Some(l) if l.is_active() && l.binding == *binding => l.clone(),
            Some(l) => {
                // A new lease: what the partner acked was about the previous
                // one. RFC 8156 §4.4.1: a new lease starts from an acked
                // partner lifetime of 0, so it gets at most the MCLT.
                // What we acked to the partner stays when the client is the
                // same: the partner may still extend this client on it,
                // unaware that the client released and came back meanwhile.
                let mut l = l.clone();
                if l.binding != *binding {
                    l.binding = binding.clone();
                    l.expiration_time = 0;
                }
                l.acked_partner_lifetime = 0;
                l
            }
            None => Lease::active(key, binding.clone(), ctx.now, 0, 0, 0, 0),
        };
        let (preferred, valid) = self.lifetimes(ctx, &lease);
        let desired = self.subnets[self.subnet_of(ctx, &key)].cfg.valid_lifetime;
        match key {
            LeaseKey::Addr(_) if ctx.first_na.is_none() => ctx.first_na = Some(key),
            LeaseKey::Prefix(_) if ctx.first_pd.is_none() => ctx.first_pd = Some(key),
            _ => {}
        }
        lease.set_status(BindingStatus::Active, ctx.now);
        lease.preferred_lifetime = preferred;
        lease.valid_lifetime = valid;
        lease.cltt = ctx.now;
        lease.valid_end = ctx.now.saturating_add(valid as u64);
        lease.state_expiration_time = lease.valid_end;
        lease.update_partner = true;
        lease.relay = ctx.relay.clone();
        lease.partner_lifetime = ctx.policy.partner_lifetime(&lease, desired, ctx.now);
        if let (Some(naming), LeaseKey::Addr(a)) = (&self.naming, key) {
            self.name_lease(naming, ctx, &mut lease, a);
        }
        if ctx.commit {
            self.leases.upsert(lease.clone());
            ctx.changes.push(lease.clone());
        }
        lease
    }

    /// RFC 4704 for an address lease: the name, the reply's flags, and
    /// whether this server must add records (RFC 8156 §9.1: the granting
    /// server adds; a renewal adds only what is missing, when the policy says so).
    fn name_lease(&self, naming: &fqdn::Naming, ctx: &mut Ctx<'_>, lease: &mut Lease, addr: Ipv6Addr) {
        use crate::lease::dns_flags as F;
        let hostname = ctx.reservation.and_then(|(si, ri)| self.subnets[si].cfg.reservations[ri].hostname.as_ref());
        let mut d = naming.decide(ctx.fqdn.as_ref(), addr, hostname);
        let before = self.leases.get(&lease.key).filter(|l| l.is_active() && l.binding == lease.binding).and_then(|l| l.dns.clone());
        if let Some(b) = &before
            && b.name.is_some()
            && b.name != d.info.name
            && b.dns_flags & (F::FWD_UPTODATE | F::REV_UPTODATE | F::PENDING_ADD) != 0
        {
            // A lease keeps the name its records carry (RFC 4704 §6: the
            // server chooses the name), so the DNS never holds a name that no
            // lease would remove.
            d.info.name = b.name.clone();
            d.info.dns_flags = (d.info.dns_flags & !F::SHARED) | (b.dns_flags & (F::SYNTHESIZED | F::USING_REQUESTED));
            if let (Some(r), Some(n)) = (d.reply.as_mut(), &b.name) {
                r.name = n.clone();
            }
        }
        if ctx.fqdn_reply.is_none() {
            ctx.fqdn_reply = d.reply.clone();
        }
        let same = before.as_ref().is_some_and(|b| b.name == d.info.name);
        let mut info = d.info;
        if same && let Some(b) = &before {
            // What is (or is to be) in the DNS for this name stays known.
            info.dns_flags |= b.dns_flags & (F::FWD_UPTODATE | F::REV_UPTODATE | F::PENDING_ADD | F::CONFLICT);
        }
        if d.update && ctx.commit {
            let present = info.dns_flags & (F::FWD_UPTODATE | F::REV_UPTODATE | F::PENDING_ADD | F::CONFLICT) != 0;
            if !same || (!present && ctx.policy.completes_dns()) {
                info.dns_flags |= F::PENDING_ADD;
            }
        }
        lease.dns = Some(info);
    }

    fn ia_na(&mut self, ctx: &mut Ctx<'_>, ia: &IaNa, mode: IaMode) -> Options {
        let binding = Binding { duid: ctx.duid.clone(), ia_type: IaType::Na, iaid: ia.iaid };
        let mut out = Options::new();
        let requested: Vec<Ipv6Addr> = ia.options.ia_addrs().map(|a| a.addr).collect();
        if mode == IaMode::Assign && ctx.commit && requested.iter().any(|a| !self.net_on_link(ctx, *a)) {
            // RFC 9915 §18.3.2: Request with an address not on the link.
            out.push(DhcpOption::StatusCode(Status::new(StatusCode::NOT_ON_LINK, "address not on link")));
            return out;
        }
        let held: Vec<LeaseKey> = self.leases.keys_of(&binding);
        let has_binding = held.iter().any(|k| self.leases.get(k).is_some_and(Lease::is_active));
        // Addresses not appropriate for the link get lifetimes 0 (Renew/Rebind),
        // and so do ours from a pool a reload removed (RFC 9915 §18.3.4).
        if mode != IaMode::Assign {
            for a in &requested {
                let mine = self.leases.get(&LeaseKey::Addr(*a)).is_some_and(|l| l.binding == binding);
                if !self.net_on_link(ctx, *a) || (!mine && has_binding) || (mine && !self.net_serves(ctx, &LeaseKey::Addr(*a), &binding.duid)) {
                    out.push(zero_addr(*a));
                }
            }
        }
        if mode == IaMode::Rebind && !has_binding && !self.subnets[ctx.subnet].cfg.rapid_commit {
            if out.is_empty() && requested.iter().all(|a| self.net_on_link(ctx, *a)) {
                out.push(DhcpOption::StatusCode(Status::new(StatusCode::NO_BINDING, "no binding")));
            }
            return out;
        }
        // Keep what the client holds in this subnet.
        let mut given = 0;
        for k in held {
            let LeaseKey::Addr(a) = k else { continue };
            if !self.net_serves(ctx, &k, &binding.duid) {
                continue;
            }
            let l = self.leases.get(&k).expect("indexed");
            let revived = !l.is_active();
            let extend = !revived
                || (requested.contains(&a) && self.admits(ctx, &k) && self.available_for(ctx, &k, &binding) && self.may_take_new(ctx, IaType::Na));
            if extend {
                ctx.offered[0] += u32::from(revived && !ctx.commit);
                let l = self.grant(ctx, k, &binding);
                out.push(iaaddr(&l));
                given += 1;
            }
        }
        if given == 0 {
            // The state may forbid new leases (RFC 8156 §8): answer without
            // consulting the allocators, whose free lists would lose entries.
            let limited = ctx.policy.allocates() && !self.may_take_new(ctx, IaType::Na);
            let picked = if ctx.policy.allocates() && !limited { self.pick_address(ctx, &binding, &requested) } else { None };
            match picked {
                Some(a) => {
                    let l = self.grant(ctx, LeaseKey::Addr(a), &binding);
                    ctx.offered[0] += u32::from(!ctx.commit);
                    out.push(iaaddr(&l));
                }
                None if limited => out.push(DhcpOption::StatusCode(Status::new(StatusCode::NO_ADDRS_AVAIL, "per-client limit reached"))),
                None => out.push(DhcpOption::StatusCode(Status::new(StatusCode::NO_ADDRS_AVAIL, "no addresses available"))),
            }
        }
        out
    }

    fn pick_address(&mut self, ctx: &Ctx<'_>, binding: &Binding, requested: &[Ipv6Addr]) -> Option<Ipv6Addr> {
        // A reservation first: its first address free for this IA (when
        // all are taken, by its other IAs or a client that had one before
        // the reservation, the pools serve).
        if let Some((si, ri)) = ctx.reservation
            && let Some(a) = self.subnets[si].cfg.reservations[ri].addresses.iter().copied().find(|a| self.available_for(ctx, &LeaseKey::Addr(*a), binding))
        {
            return Some(a);
        }
        // The address this client had before, if still free (and its pool
        // still open to the client's classes).
        for k in &self.leases.keys_of(binding) {
            if let LeaseKey::Addr(a) = k
                && self.net_serves(ctx, k, &binding.duid)
                && self.admits(ctx, k)
                && self.available_for(ctx, k, binding)
            {
                return Some(*a);
            }
        }
        let seed = hash::hash_bytes(self.hash_key ^ binding.iaid as u64, binding.duid.as_bytes());
        let hint = requested.first().copied();
        // The subnet's pools, then the rest of its shared network's; in
        // each, the pool of the client's hint first (RFC 9915 §18.3.9).
        for ni in 0..self.networks[ctx.subnet].len() {
            let si = self.networks[ctx.subnet][ni];
            let n = self.subnets[si].addr_pools.len();
            let first = hint.and_then(|a| self.subnets[si].addr_pools.iter().position(|p| p.slot(a).is_some())).unwrap_or(0);
            for i in (first..n).chain(0..first) {
                let pool = &mut self.subnets[si].addr_pools[i];
                if !subnet::admits(pool.classes, ctx.classes) {
                    continue;
                }
                let h = hint.and_then(|a| pool.slot(a));
                let first = u128::from(pool.range.first);
                // Take the allocator out so the availability check can borrow self.
                let mut alloc = std::mem::take(&mut pool.alloc);
                let found = alloc.allocate(seed, h, ctx.policy.fresh_slots(IaType::Na), ctx.commit, |j| {
                    self.available_for(ctx, &LeaseKey::Addr(Ipv6Addr::from(first + j)), binding)
                });
                self.subnets[si].addr_pools[i].alloc = alloc;
                if let Some(j) = found {
                    return Some(self.subnets[si].addr_pools[i].addr(j));
                }
            }
        }
        None
    }

    fn ia_pd(&mut self, ctx: &mut Ctx<'_>, ia: &IaPd, mode: IaMode) -> Options {
        let binding = Binding { duid: ctx.duid.clone(), ia_type: IaType::Pd, iaid: ia.iaid };
        let mut out = Options::new();
        let requested: Vec<(Prefix, bool)> = ia
            .options
            .ia_prefixes()
            .filter_map(|p| Prefix::new(p.prefix, p.prefix_len).map(|x| (x, p.prefix.is_unspecified())))
            .collect();
        let held: Vec<LeaseKey> = self.leases.keys_of(&binding);
        let has_binding = held.iter().any(|k| self.leases.get(k).is_some_and(Lease::is_active));
        if mode != IaMode::Assign {
            for (p, len_hint) in &requested {
                if *len_hint {
                    continue;
                }
                let mine = self.leases.get(&LeaseKey::Prefix(*p)).is_some_and(|l| l.binding == binding);
                if !self.net_prefix_on_link(ctx, p) || (!mine && has_binding) || (mine && !self.net_serves(ctx, &LeaseKey::Prefix(*p), &binding.duid)) {
                    out.push(zero_prefix(*p));
                }
            }
        }
        if mode == IaMode::Rebind && !has_binding && !self.subnets[ctx.subnet].cfg.rapid_commit {
            if out.is_empty() {
                out.push(DhcpOption::StatusCode(Status::new(StatusCode::NO_BINDING, "no binding")));
            }
            return out;
        }
        let mut given = 0;
        for k in held {
            let LeaseKey::Prefix(p) = k else { continue };
            if !self.net_serves(ctx, &k, &binding.duid) {
                continue;
            }
            let l = self.leases.get(&k).expect("indexed");
            let asked = requested.iter().any(|(r, _)| *r == p);
            let revived = !l.is_active();
            if !revived || (asked && self.admits(ctx, &k) && self.available_for(ctx, &k, &binding) && self.may_take_new(ctx, IaType::Pd)) {
                ctx.offered[1] += u32::from(revived && !ctx.commit);
                let l = self.grant(ctx, k, &binding);
                out.push(iaprefix(&l));
                given += 1;
            }
        }
        if given == 0 {
            let limited = ctx.policy.allocates() && !self.may_take_new(ctx, IaType::Pd);
            let picked = if ctx.policy.allocates() && !limited { self.pick_prefix(ctx, &binding, &requested) } else { None };
            match picked {
                Some(p) => {
                    let l = self.grant(ctx, LeaseKey::Prefix(p), &binding);
                    ctx.offered[1] += u32::from(!ctx.commit);
                    out.push(iaprefix(&l));
                }
                None if limited => out.push(DhcpOption::StatusCode(Status::new(StatusCode::NO_PREFIX_AVAIL, "per-client limit reached"))),
                None => out.push(DhcpOption::StatusCode(Status::new(StatusCode::NO_PREFIX_AVAIL, "no prefixes available"))),
            }
        }
        out
    }

    fn pick_prefix(&mut self, ctx: &Ctx<'_>, binding: &Binding, requested: &[(Prefix, bool)]) -> Option<Prefix> {
        if let Some((si, ri)) = ctx.reservation
            && let Some(p) = self.subnets[si].cfg.reservations[ri].prefixes.iter().copied().find(|p| self.available_for(ctx, &LeaseKey::Prefix(*p), binding))
        {
            return Some(p);
        }
        for k in &self.leases.keys_of(binding) {
            if let LeaseKey::Prefix(p) = k
                && self.net_serves(ctx, k, &binding.duid)
                && self.admits(ctx, k)
                && self.available_for(ctx, k, binding)
            {
                return Some(*p);
            }
        }
        let seed = hash::hash_bytes(self.hash_key ^ 0x5044 ^ binding.iaid as u64, binding.duid.as_bytes());
        let hint_len = requested.first().map(|(p, _)| p.len).filter(|l| *l > 0);
        let hint = requested.iter().find(|(_, len_only)| !len_only).map(|(p, _)| *p);
        for ni in 0..self.networks[ctx.subnet].len() {
            let si = self.networks[ctx.subnet][ni];
            let n = self.subnets[si].pd_pools.len();
            // Pools whose delegated length matches the hint first (RFC 8168).
            let mut order: Vec<usize> = (0..n).filter(|i| subnet::admits(self.subnets[si].pd_pools[*i].classes, ctx.classes)).collect();
            if let Some(l) = hint_len {
                order.sort_by_key(|i| self.subnets[si].pd_pools[*i].pool.delegated_length != l);
            }
            for i in order {
                let pool = &mut self.subnets[si].pd_pools[i];
                let h = hint.and_then(|p| pool.slot(&p));
                let mut alloc = std::mem::take(&mut pool.alloc);
                let found = {
                    let pool = &self.subnets[si].pd_pools[i];
                    alloc.allocate(seed, h, ctx.policy.fresh_slots(IaType::Pd), ctx.commit, |j| {
                        self.available_for(ctx, &LeaseKey::Prefix(pool.prefix(j)), binding)
                    })
                };
                self.subnets[si].pd_pools[i].alloc = alloc;
                if let Some(j) = found {
                    return Some(self.subnets[si].pd_pools[i].prefix(j));
                }
            }
        }
        None
    }

    /// Release (RFC 9915 §18.3.7) or Decline (§18.3.8).
    fn release_ias(&mut self, ctx: &mut Ctx<'_>, c: &ClientMessage, out: &mut Options, decline: bool) {
        let status = if decline { BindingStatus::Abandoned } else { BindingStatus::Released };
        for o in &c.options {
            let (ia_type, iaid, keys): (IaType, u32, Vec<LeaseKey>) = match o {
                DhcpOption::IaNa(ia) => (IaType::Na, ia.iaid, ia.options.ia_addrs().map(|a| LeaseKey::Addr(a.addr)).collect()),
                DhcpOption::IaPd(ia) if !decline => (
                    IaType::Pd,
                    ia.iaid,
                    ia.options
                        .ia_prefixes()
                        .filter_map(|p| Prefix::new(p.prefix, p.prefix_len).map(LeaseKey::Prefix))
                        .collect(),
                ),
                _ => continue,
            };
            let binding = Binding { duid: ctx.duid.clone(), ia_type, iaid };
            let mut any = false;
            for k in keys {
                let Some(l) = self.leases.get(&k) else { continue };
                if l.binding != binding || !l.is_active() {
                    continue;
                }
                any = true;
                let mut l = l.clone();
                l.set_status(status, ctx.now);
                l.cltt = ctx.now;
                l.update_partner = true;
                mark_dns_removal(&mut l, ctx.policy);
                if decline {
                    self.limits.declined(&ctx.duid, 1, ctx.now);
                } else {
                    self.subnets[ctx.subnet].release(&k);
                }
                self.leases.upsert(l.clone());
                ctx.changes.push(l);
            }
            let bound = self.leases.keys_of(&binding).iter().any(|k| {
                self.leases.get(k).is_some_and(|l| l.is_active() || l.status == status && l.cltt == ctx.now)
            });
            if !any && !bound {
                let st = DhcpOption::StatusCode(Status::new(StatusCode::NO_BINDING, "no binding"));
                out.push(match ia_type {
                    IaType::Na => DhcpOption::IaNa(IaNa { iaid, t1: 0, t2: 0, options: vec![st].into() }),
                    IaType::Pd => DhcpOption::IaPd(IaPd { iaid, t1: 0, t2: 0, options: vec![st].into() }),
                });
            }
        }
    }
}

/// RFC 4704 §6.1 item 5, RFC 8156 §9.4: the server that ends a lease
/// removes its records (the intent recorded before anything is sent).
/// With a partner the removal waits for the partner's acknowledgement of
/// the end (or, in PARTNER-DOWN, for the lease to become FREE): until then
/// the partner may still extend the client.
/// The chain as RFC 5007 §4.1.2.4 keeps it: every relay level as received,
/// the client's message removed; None past `MAX_RELAY_DATA` octets.
fn relay_data(chain: &[&RelayMessage], peer: Ipv6Addr) -> Option<Box<crate::lease::RelayData>> {
    let mut inner: Option<Message> = None;
    for r in chain.iter().rev() {
        let mut options: Vec<DhcpOption> = r.options.iter().filter(|o| !matches!(o, DhcpOption::RelayMsg(_))).cloned().collect();
        if let Some(m) = inner.take() {
            options.push(DhcpOption::RelayMsg(Box::new(m)));
        }
        inner = Some(Message::Relay(RelayMessage {
            msg_type: r.msg_type,
            hop_count: r.hop_count,
            link_address: r.link_address,
            peer_address: r.peer_address,
            options: options.into(),
        }));
    }
    let message = inner?.encode().ok()?;
    (message.len() <= crate::lease::MAX_RELAY_DATA).then(|| Box::new(crate::lease::RelayData { peer, message }))
}

fn mark_dns_removal(l: &mut Lease, policy: &dyn Policy) {
    use crate::lease::dns_flags as F;
    if let Some(d) = l.dns.as_mut() {
        // Also when the records' state is unknown (a partner's add whose
        // outcome never reached us): the removal checks the DHCID first,
        // so it never touches another client's records (RFC 4703 §5.5).
        let updated = d.flags & crate::wire::FQDN_FLAG_N == 0 && d.name.is_some();
        if updated && d.dns_flags & F::CONFLICT == 0 {
            d.dns_flags |= if policy.defer_dns_removal() { F::REMOVE_AFTER_ACK } else { F::PENDING_REMOVE };
        }
        d.dns_flags &= !F::PENDING_ADD;
    }
}

/// The deferred removal is due now (the partner acknowledged the end, or
/// the lease is FREE in PARTNER-DOWN).
pub fn release_dns(l: &mut Lease) {
    use crate::lease::dns_flags as F;
    if let Some(d) = l.dns.as_mut()
        && d.dns_flags & F::REMOVE_AFTER_ACK != 0
    {
        d.dns_flags = (d.dns_flags & !F::REMOVE_AFTER_ACK) | F::PENDING_REMOVE;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IaMode {
    /// Solicit / Request: assign.
    Assign,
    Renew,
    Rebind,
}

/// The enterprise number of a vendor-opts option (0 for other codes):
/// vendor-opts are one option per enterprise.
fn enterprise_of(o: &OptionData) -> u32 {
    match o.data.get(..4) {
        Some(e) if o.code == opt::VENDOR_OPTS => u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
        _ => 0,
    }
}

/// Add the options of one scope whose code is wanted (in the ORO, or
/// always-send in some applicable scope) and that no more specific scope
/// gave; `sent` holds (code, enterprise) pairs.
fn offer(scope: &[OptionData], oro: &[u16], always: &[(u16, u32)], sent: &mut Vec<(u16, u32)>, out: &mut Options) {
    for o in scope {
        let id = (o.code, enterprise_of(o));
        if (oro.contains(&o.code) || always.contains(&id)) && !sent.contains(&id) {
            out.push(DhcpOption::Unknown { code: o.code, data: o.data.clone() });
            sent.push(id);
        }
    }
}

/// The subnet's own keys for options (`dns-servers`, `domain-search`,
/// `ntp-servers`, and the timers): check-config refuses a code set both as
/// a key and in the same subnet's `options`.
fn shorthands(s: &Subnet, oro: &[u16], always: &[(u16, u32)], info_request: bool, sent: &mut Vec<(u16, u32)>, out: &mut Options) {
    for code in oro.iter().copied().chain(always.iter().map(|(c, _)| *c)) {
        if sent.iter().any(|(c, _)| *c == code) {
            continue;
        }
        let before = out.len();
        match code {
            opt::DNS_SERVERS if !s.dns_servers.is_empty() => out.push(DhcpOption::DnsServers(s.dns_servers.clone())),
            opt::DOMAIN_LIST if !s.domain_search.is_empty() => out.push(DhcpOption::DomainList(s.domain_search.clone())),
            opt::NTP_SERVER if !s.ntp_servers.is_empty() => {
                out.push(DhcpOption::NtpServer(s.ntp_servers.iter().map(|a| NtpSuboption::ServerAddress(*a)).collect()))
            }
            opt::INFORMATION_REFRESH_TIME if info_request => {
                out.push(DhcpOption::InformationRefreshTime(s.information_refresh_time.unwrap_or(IRT_DEFAULT).max(IRT_MINIMUM)))
            }
            opt::SOL_MAX_RT if !info_request => {
                if let Some(v) = s.sol_max_rt {
                    out.push(DhcpOption::SolMaxRt(v));
                }
            }
            opt::INF_MAX_RT if info_request => {
                if let Some(v) = s.inf_max_rt {
                    out.push(DhcpOption::InfMaxRt(v));
                }
            }
            _ => {}
        }
        if out.len() > before {
            sent.push((code, 0));
        }
    }
}

fn iaaddr(l: &Lease) -> DhcpOption {
    let LeaseKey::Addr(addr) = l.key else { unreachable!("address lease") };
    DhcpOption::IaAddr(IaAddr { addr, preferred: l.preferred_lifetime, valid: l.valid_lifetime, options: Options::new() })
}

fn iaprefix(l: &Lease) -> DhcpOption {
    let LeaseKey::Prefix(p) = l.key else { unreachable!("prefix lease") };
    DhcpOption::IaPrefix(IaPrefix {
        preferred: l.preferred_lifetime,
        valid: l.valid_lifetime,
        prefix_len: p.len,
        prefix: p.addr,
        options: Options::new(),
    })
}

fn zero_addr(addr: Ipv6Addr) -> DhcpOption {
    DhcpOption::IaAddr(IaAddr { addr, preferred: 0, valid: 0, options: Options::new() })
}

fn zero_prefix(p: Prefix) -> DhcpOption {
    DhcpOption::IaPrefix(IaPrefix { preferred: 0, valid: 0, prefix_len: p.len, prefix: p.addr, options: Options::new() })
}

#[cfg(test)]
mod tests;
