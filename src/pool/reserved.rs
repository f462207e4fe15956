//! Interface identifiers a server must never assign (RFC 9915 §13.1, which
//! keeps RFC 8415's MUST; the list is RFC 5453's IANA registry).

/// The reserved interface-identifier runs (the low 64 bits of an address).
const RUNS: [(u64, u64); 3] = [
    // Subnet-Router Anycast (RFC 4291).
    (0, 0),
    // The IANA Ethernet block: reserved, Proxy Mobile IPv6 and the rest (RFC 4291, RFC 5453).
    (0x0200_5eff_fe00_0000, 0x0200_5eff_feff_ffff),
    // Reserved Subnet Anycast (RFC 2526).
    (0xfdff_ffff_ffff_ff80, 0xfdff_ffff_ffff_ffff),
];

/// Is `addr`'s interface identifier reserved?
pub fn is_reserved(addr: u128) -> bool {
    run_end(addr).is_some()
}

/// The last address of the reserved run `addr` is in, if it is in one: an
/// allocator jumps there instead of stepping through up to 2^24 addresses.
pub fn run_end(addr: u128) -> Option<u128> {
    let iid = addr as u64;
    RUNS.iter().find(|(lo, hi)| (*lo..=*hi).contains(&iid)).map(|(_, hi)| addr - u128::from(iid) + u128::from(*hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn a(s: &str) -> u128 {
        u128::from(s.parse::<Ipv6Addr>().unwrap())
    }

    #[test]
    fn rfc_5453_registry() {
        for r in ["2001:db8::", "2001:db8::200:5eff:fe00:0", "2001:db8::200:5eff:fe00:5213", "2001:db8::200:5eff:feff:ffff", "2001:db8::fdff:ffff:ffff:ff80", "2001:db8::fdff:ffff:ffff:ffff"] {
            assert!(is_reserved(a(r)), "{r}");
        }
        for r in ["2001:db8::1", "2001:db8::200:5eff:fdff:ffff", "2001:db8::200:5eff:ff00:0", "2001:db8::fdff:ffff:ffff:ff7f", "2001:db8::1:0:0:0"] {
            assert!(!is_reserved(a(r)), "{r}");
        }
        assert_eq!(run_end(a("2001:db8::200:5eff:fe12:3456")), Some(a("2001:db8::200:5eff:feff:ffff")));
        assert_eq!(run_end(a("2001:db8:0:1::")), Some(a("2001:db8:0:1::")));
    }
}
