//! IPv6 prefixes and address ranges, as u128 arithmetic.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// An IPv6 prefix with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub addr: Ipv6Addr,
    pub len: u8,
}

impl Prefix {
    /// None if len > 128 or host bits are set.
    pub fn new(addr: Ipv6Addr, len: u8) -> Option<Prefix> {
        if len > 128 || u128::from(addr) & !Self::mask(len) != 0 {
            return None;
        }
        Some(Prefix { addr, len })
    }

    pub fn mask(len: u8) -> u128 {
        if len == 0 { 0 } else { u128::MAX << (128 - len as u32) }
    }

    pub fn first(&self) -> u128 {
        u128::from(self.addr)
    }

    pub fn last(&self) -> u128 {
        self.first() | !Self::mask(self.len)
    }

    pub fn contains(&self, a: Ipv6Addr) -> bool {
        u128::from(a) & Self::mask(self.len) == self.first()
    }

    pub fn contains_prefix(&self, p: &Prefix) -> bool {
        p.len >= self.len && self.contains(p.addr)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Prefix, String> {
        let (a, l) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a prefix like 2001:db8::/64"))?;
        let addr: Ipv6Addr = a.parse().map_err(|_| format!("{a:?} is not an IPv6 address"))?;
        let len: u8 = l.parse().map_err(|_| format!("{l:?} is not a prefix length"))?;
        if len > 128 {
            return Err(format!("prefix length {len} exceeds 128"));
        }
        Prefix::new(addr, len).ok_or_else(|| format!("{s}: host bits are set after /{len}"))
    }
}

/// An inclusive range of addresses, "first-last".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrRange {
    pub first: Ipv6Addr,
    pub last: Ipv6Addr,
}

impl AddrRange {
    pub fn size(&self) -> u128 {
        u128::from(self.last) - u128::from(self.first) + 1
    }

    pub fn contains(&self, a: Ipv6Addr) -> bool {
        (u128::from(self.first)..=u128::from(self.last)).contains(&u128::from(a))
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for AddrRange {
    type Err = String;
    fn from_str(s: &str) -> Result<AddrRange, String> {
        if let Ok(p) = s.parse::<Prefix>() {
            return Ok(AddrRange { first: p.addr, last: Ipv6Addr::from(p.last()) });
        }
        let (a, b) = s.split_once('-').ok_or_else(|| format!("{s:?} is not a range like 2001:db8::10-2001:db8::ff"))?;
        let first: Ipv6Addr = a.trim().parse().map_err(|_| format!("{a:?} is not an IPv6 address"))?;
        let last: Ipv6Addr = b.trim().parse().map_err(|_| format!("{b:?} is not an IPv6 address"))?;
        if u128::from(first) > u128::from(last) {
            return Err(format!("range {s}: first address is after the last"));
        }
        Ok(AddrRange { first, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p: Prefix = "2001:db8:100::/40".parse().unwrap();
        assert!(p.contains("2001:db8:1ff:ff00::".parse().unwrap()));
        assert!(!p.contains("2001:db8:200::".parse().unwrap()));
        assert!("2001:db8::1/64".parse::<Prefix>().is_err());
        assert!("2001:db8::/129".parse::<Prefix>().is_err());
        assert_eq!(Prefix::mask(0), 0);
        assert_eq!(p.to_string(), "2001:db8:100::/40");
        let all: Prefix = "::/0".parse().unwrap();
        assert_eq!(all.last(), u128::MAX);
    }

    #[test]
    fn ranges() {
        let r: AddrRange = "2001:db8:1::1000-2001:db8:1::ffff".parse().unwrap();
        assert_eq!(r.size(), 0xf000);
        assert!("2001:db8::2-2001:db8::1".parse::<AddrRange>().is_err());
        let r2: AddrRange = "2001:db8::/120".parse().unwrap();
        assert_eq!(r2.size(), 256);
    }
}
