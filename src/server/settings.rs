//! The validated settings the engine works from: subnets, their pools and
//! reservations. `config` parses the TOML file into these; the engine never
//! sees the configuration front end.

use std::net::Ipv6Addr;

use crate::pool::{AddrRange, Prefix};
use crate::wire::{DomainName, Duid};

#[derive(Debug, Clone, PartialEq)]
pub struct Subnet {
    pub prefix: Prefix,
    pub interface: Option<String>,
    pub relay_links: Vec<Ipv6Addr>,
    pub server_unicast: Option<Ipv6Addr>,
    pub pools: Vec<AddrRange>,
    pub pd_pools: Vec<PdPool>,
    pub preferred_lifetime: u32,
    pub valid_lifetime: u32,
    pub renew_time: u32,
    pub rebind_time: u32,
    pub rapid_commit: bool,
    pub dns_servers: Vec<Ipv6Addr>,
    pub domain_search: Vec<DomainName>,
    pub ntp_servers: Vec<Ipv6Addr>,
    pub preference: u8,
    /// OPTION_INFORMATION_REFRESH_TIME for Information-request replies (default 86400).
    pub information_refresh_time: Option<u32>,
    pub sol_max_rt: Option<u32>,
    pub inf_max_rt: Option<u32>,
    pub reservations: Vec<Reservation>,
    /// `options`: sent to clients of this subnet (after reservation, class
    /// and pool options; see `Provisioning`).
    pub options: Vec<OptionData>,
    /// Per address pool (same order and length as `pools`): its classes and options.
    pub pool_scopes: Vec<PoolScope>,
    /// Per pd-pool (same order and length as `pd_pools`).
    pub pd_pool_scopes: Vec<PoolScope>,
    /// `shared-network`: subnets with the same name share one link; a
    /// client of one may be given leases from the others' pools.
    pub shared_network: Option<String>,
    /// The failover relationship serving this subnet (an index into the
    /// configured relationships); None: served standalone.
    pub relationship: Option<usize>,
}

/// One option's data, encoded once at load: sent as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionData {
    pub code: u16,
    /// The option body (without code and length).
    pub data: Vec<u8>,
    /// Sent even when the client's ORO does not ask for it.
    pub always_send: bool,
}

/// What a pool adds to its range: the classes it is restricted to (empty:
/// every client) and its options.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolScope {
    pub client_classes: Vec<String>,
    pub options: Vec<OptionData>,
}

/// `[[class]]`: a client belongs to it when every condition holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassDef {
    pub name: String,
    pub conditions: Vec<Condition>,
    pub options: Vec<OptionData>,
}

/// One `match` key of a class (README "Client classes").
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// OPTION_VENDOR_CLASS (16) with this enterprise number, and (when
    /// given) one vendor-class-data item equal to `data`.
    VendorClass { enterprise: u32, data: Option<Vec<u8>> },
    /// One OPTION_USER_CLASS (15) item equal to this.
    UserClass(Vec<u8>),
    /// The first-hop relay's OPTION_INTERFACE_ID (18).
    InterfaceId(Vec<u8>),
    /// A relay's OPTION_REMOTE_ID (37, RFC 4649): the remote-id after the
    /// enterprise number, and the enterprise number when given.
    RemoteId { enterprise: Option<u32>, id: Vec<u8> },
    /// A relay's OPTION_SUBSCRIBER_ID (38, RFC 4580).
    SubscriberId(Vec<u8>),
    /// The client's link-layer address (RFC 6939 option 79 from the relay,
    /// else a DUID-LL or DUID-LLT's).
    HwAddress(Vec<u8>),
    /// The client DUID starts with these octets.
    DuidPrefix(Vec<u8>),
    DuidType(u16),
    /// Arrived directly on this interface.
    Interface(String),
    /// Relayed from a link whose address is inside this prefix.
    RelayLink(crate::pool::Prefix),
}

/// What is configured beyond subnets: global options and the classes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Provisioning {
    pub options: Vec<OptionData>,
    pub classes: Vec<ClassDef>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PdPool {
    pub prefix: Prefix,
    pub delegated_length: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub client: ReservedFor,
    pub addresses: Vec<Ipv6Addr>,
    pub prefixes: Vec<Prefix>,
    /// The client's host name (its FQDN and DNS update, with `[ddns]`).
    pub hostname: Option<DomainName>,
    pub options: Vec<OptionData>,
}

/// Whom a reservation is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReservedFor {
    Duid(Duid),
    /// A link-layer address (RFC 6939 option 79, or a DUID-LL/LLT's).
    HwAddress(Vec<u8>),
}

impl ReservedFor {
    /// Is a client with this DUID (and link-layer address, when known) the one?
    pub fn is(&self, duid: &Duid, hw: Option<&[u8]>) -> bool {
        match self {
            ReservedFor::Duid(d) => d == duid,
            ReservedFor::HwAddress(h) => hw.or_else(|| duid_link_layer(duid)) == Some(h.as_slice()),
        }
    }

    /// Could a client with this DUID be the one? A partner's update carries
    /// no option 79, and a host's DUID-LLT may name another of its
    /// interfaces: only a DUID reservation can rule a client out.
    pub fn may_be(&self, duid: &Duid) -> bool {
        match self {
            ReservedFor::Duid(d) => d == duid,
            ReservedFor::HwAddress(_) => true,
        }
    }
}

/// The link-layer address of a DUID-LL or DUID-LLT.
pub fn duid_link_layer(d: &Duid) -> Option<&[u8]> {
    match d.kind() {
        crate::wire::DuidKind::Ll { link_layer, .. } | crate::wire::DuidKind::Llt { link_layer, .. } => Some(link_layer),
        _ => None,
    }
}

#[cfg(test)]
impl Subnet {
    /// A subnet with the configuration defaults and no pools (for tests).
    pub fn test_default() -> Subnet {
        Subnet {
            prefix: "2001:db8:1::/64".parse().expect("literal prefix"),
            interface: None,
            relay_links: Vec::new(),
            server_unicast: None,
            pools: Vec::new(),
            pd_pools: Vec::new(),
            preferred_lifetime: 3000,
            valid_lifetime: 4000,
            renew_time: 1500,
            rebind_time: 2400,
            rapid_commit: false,
            dns_servers: Vec::new(),
            domain_search: Vec::new(),
            ntp_servers: Vec::new(),
            preference: 0,
            information_refresh_time: None,
            sol_max_rt: None,
            inf_max_rt: None,
            reservations: Vec::new(),
            options: Vec::new(),
            pool_scopes: Vec::new(),
            pd_pool_scopes: Vec::new(),
            shared_network: None,
            relationship: None,
        }
    }
}
