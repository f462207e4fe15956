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
}

#[derive(Debug, Clone, PartialEq)]
pub struct PdPool {
    pub prefix: Prefix,
    pub delegated_length: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub duid: Duid,
    pub address: Option<Ipv6Addr>,
    pub prefix: Option<Prefix>,
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
        }
    }
}
