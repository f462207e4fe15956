//! Binary form of lease records and keys for the store. Versioned; decoding
//! is bounds-checked (a damaged record is an error, never a panic).
//!
//! Record version 2 = version 1's fixed fields, then a count of extension
//! entries, each (tag u16, length u16, value). A later field is a new tag:
//! records without it read as its default, so adding one needs no
//! migration. A tag this build does not know is an error naming it (the
//! record was written by a newer tandem): never silently dropped or misread.
//! Version 1 records (no extensions) are still read; they are rewritten as
//! version 2 when they next change.

use std::net::Ipv6Addr;

use super::{Binding, DnsInfo, IaType, Lease, LeaseKey, RelayData};
use crate::pool::Prefix;
use crate::wire::{BindingStatus, DomainName, Duid};

const RECORD_VERSION: u8 = 2;

/// Store key: kind (0 address, 1 prefix), 16 octets, prefix length. Sorts by
/// kind then address.
pub fn encode_key(k: &LeaseKey) -> [u8; 18] {
    let mut out = [0u8; 18];
    match k {
        LeaseKey::Addr(a) => {
            out[1..17].copy_from_slice(&a.octets());
            out[17] = 128;
        }
        LeaseKey::Prefix(p) => {
            out[0] = 1;
            out[1..17].copy_from_slice(&p.addr.octets());
            out[17] = p.len;
        }
    }
    out
}

pub fn decode_key(b: &[u8]) -> Result<LeaseKey, String> {
    if b.len() != 18 {
        return Err(format!("lease key of {} octets, expected 18", b.len()));
    }
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[1..17]);
    let addr = Ipv6Addr::from(a);
    match b[0] {
        0 => Ok(LeaseKey::Addr(addr)),
        1 => Prefix::new(addr, b[17]).map(LeaseKey::Prefix).ok_or_else(|| "invalid prefix in lease key".into()),
        k => Err(format!("unknown lease key kind {k}")),
    }
}

pub fn encode_lease(l: &Lease) -> Vec<u8> {
    let mut o = Vec::with_capacity(128);
    encode_lease_into(l, &mut o);
    o
}

/// `encode_lease`, appended to `o` (the journal builds a frame in one buffer).
pub fn encode_lease_into(l: &Lease, o: &mut Vec<u8>) {
    o.push(RECORD_VERSION);
    o.extend_from_slice(&encode_key(&l.key));
    let d = l.binding.duid.as_bytes();
    o.push(d.len() as u8);
    o.extend_from_slice(d);
    o.push(l.binding.ia_type as u8);
    o.extend_from_slice(&l.binding.iaid.to_be_bytes());
    o.push(l.status as u8);
    for v in [l.preferred_lifetime, l.valid_lifetime, l.t1, l.t2] {
        o.extend_from_slice(&v.to_be_bytes());
    }
    for v in [
        l.cltt,
        l.valid_end,
        l.expiration_time,
        l.partner_lifetime,
        l.acked_partner_lifetime,
        l.partner_raw_clt_time,
        l.start_time_of_state,
        l.state_expiration_time,
    ] {
        o.extend_from_slice(&v.to_be_bytes());
    }
    o.push(l.update_partner as u8);
    match &l.dns {
        None => o.push(0),
        Some(dns) => {
            o.push(1);
            o.push(dns.flags);
            o.extend_from_slice(&dns.dns_flags.to_be_bytes());
            let w = dns.name.as_ref().map(|n| n.as_wire()).unwrap_or(&[]);
            o.push(w.len() as u8);
            o.extend_from_slice(w);
        }
    }
    // Extension entries (tag, length, value).
    let n = l.relay.is_some() as u16;
    o.extend_from_slice(&n.to_be_bytes());
    if let Some(r) = &l.relay {
        o.extend_from_slice(&TAG_RELAY.to_be_bytes());
        o.extend_from_slice(&((16 + r.message.len()) as u16).to_be_bytes());
        o.extend_from_slice(&r.peer.octets());
        o.extend_from_slice(&r.message);
    }
}

/// Extension tag: the relay chain (peer address, then the relay message).
const TAG_RELAY: u16 = 1;

struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("lease record truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
}

pub fn decode_lease(b: &[u8]) -> Result<Lease, String> {
    let mut c = Cur(b);
    let v = c.u8()?;
    if v != 1 && v != RECORD_VERSION {
        return Err(format!("lease record version {v}: this tandem reads versions 1 to {RECORD_VERSION}"));
    }
    let key = decode_key(c.take(18)?)?;
    let dl = c.u8()? as usize;
    let duid = Duid::from_bytes(c.take(dl)?).map_err(|e| e.to_string())?;
    let ia_type = match c.u8()? {
        0 => IaType::Na,
        1 => IaType::Pd,
        t => return Err(format!("unknown IA type {t}")),
    };
    let iaid = c.u32()?;
    let status = BindingStatus::from_code(c.u8()?).ok_or("bad binding status")?;
    let (preferred_lifetime, valid_lifetime, t1, t2) = (c.u32()?, c.u32()?, c.u32()?, c.u32()?);
    let mut t = [0u64; 8];
    for x in &mut t {
        *x = c.u64()?;
    }
    let update_partner = c.u8()? != 0;
    let dns = match c.u8()? {
        0 => None,
        _ => {
            let flags = c.u8()?;
            let dns_flags = u16::from_be_bytes(c.take(2)?.try_into().unwrap());
            let n = c.u8()? as usize;
            let w = c.take(n)?;
            let name = if w.is_empty() { None } else { Some(DomainName::decode(w).map_err(|e| e.to_string())?) };
            Some(DnsInfo { flags, name, dns_flags })
        }
    };
    let mut relay = None;
    if v >= 2 {
        // Each entry: tag, length, value. A tag not known here is a field
        // of a newer version.
        let n = u16::from_be_bytes(c.take(2)?.try_into().unwrap());
        for _ in 0..n {
            let tag = u16::from_be_bytes(c.take(2)?.try_into().unwrap());
            let len = u16::from_be_bytes(c.take(2)?.try_into().unwrap()) as usize;
            let value = c.take(len)?;
            match tag {
                TAG_RELAY if (16..=16 + super::MAX_RELAY_DATA).contains(&len) => {
                    let peer: [u8; 16] = value[..16].try_into().unwrap();
                    relay = Some(Box::new(RelayData { peer: Ipv6Addr::from(peer), message: value[16..].to_vec() }));
                }
                _ => return Err(format!("lease record field {tag} is unknown here (written by a newer tandem?)")),
            }
        }
        if !c.0.is_empty() {
            return Err(format!("{} bytes after the lease record", c.0.len()));
        }
    }
    Ok(Lease {
        key,
        binding: Binding { duid, ia_type, iaid },
        status,
        preferred_lifetime,
        valid_lifetime,
        t1,
        t2,
        cltt: t[0],
        valid_end: t[1],
        expiration_time: t[2],
        partner_lifetime: t[3],
        acked_partner_lifetime: t[4],
        partner_raw_clt_time: t[5],
        start_time_of_state: t[6],
        state_expiration_time: t[7],
        update_partner,
        dns,
        relay,
    })
}

/// Sample records for tests of the codec and the stores.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(crate) fn sample(i: u32) -> Lease {
        let mut l = Lease::active(
            if i.is_multiple_of(2) {
                LeaseKey::Addr(Ipv6Addr::from(0x2001_0db8_0001_0000_0000_0000_0000_1000u128 + i as u128))
            } else {
                LeaseKey::Prefix(Prefix::new(Ipv6Addr::from(0x2001_0db8_0100_0000_0000_0000_0000_0000u128 + ((i as u128) << 72)), 56).unwrap())
            },
            Binding { duid: Duid::en(9, &i.to_be_bytes()), ia_type: if i.is_multiple_of(2) { IaType::Na } else { IaType::Pd }, iaid: i },
            1_800_000_000 + i as u64,
            3000,
            4000,
            1000,
            2000,
        );
        l.partner_lifetime = 7;
        l.update_partner = i.is_multiple_of(3);
        if i.is_multiple_of(5) {
            l.dns = Some(DnsInfo { flags: 1, name: Some(DomainName::from_dotted("h.example.").unwrap()), dns_flags: 9 });
        }
        if i.is_multiple_of(4) {
            l.relay = Some(Box::new(RelayData { peer: "fe80::1".parse().unwrap(), message: vec![12, 0, 0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 37, 0, 5, 0, 0, 0, 9, 7] }));
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::sample;
    use super::*;

    #[test]
    fn records_round_trip() {
        for i in 0..20 {
            let l = sample(i);
            assert_eq!(decode_lease(&encode_lease(&l)).unwrap(), l);
            assert_eq!(decode_key(&encode_key(&l.key)).unwrap(), l.key);
        }
    }

    #[test]
    fn damaged_records_are_errors() {
        let b = encode_lease(&sample(5));
        for n in 0..b.len() {
            assert!(decode_lease(&b[..n]).is_err());
        }
        let mut v = b.clone();
        v[0] = 9;
        assert!(decode_lease(&v).unwrap_err().contains("version"));
        let mut v = b.clone();
        v.push(0);
        assert!(decode_lease(&v).unwrap_err().contains("after the lease record"));
    }

    #[test]
    fn version_1_records_are_still_read_and_unknown_fields_are_refused() {
        for i in 0..10 {
            let l = sample(i);
            // Version 1 was version 2 without the extension count.
            let mut l = l;
            l.relay = None;
            let mut v1 = encode_lease(&l);
            v1.truncate(v1.len() - 2);
            v1[0] = 1;
            assert_eq!(decode_lease(&v1).unwrap(), l);
        }
        // A field added by a later version: an error that says so.
        let mut v = encode_lease(&sample(1));
        let n = v.len();
        v[n - 2..].copy_from_slice(&1u16.to_be_bytes());
        v.extend_from_slice(&[0, 42, 0, 1, 7]);
        assert!(decode_lease(&v).unwrap_err().contains("field 42 is unknown"));
        // Relay data longer than this build ever writes is damage, not a record.
        let mut l = sample(0);
        l.relay = Some(Box::new(RelayData { peer: Ipv6Addr::UNSPECIFIED, message: vec![0; super::super::MAX_RELAY_DATA + 1] }));
        assert!(decode_lease(&encode_lease(&l)).is_err());
        l.relay = Some(Box::new(RelayData { peer: Ipv6Addr::UNSPECIFIED, message: vec![0; super::super::MAX_RELAY_DATA] }));
        assert_eq!(decode_lease(&encode_lease(&l)).unwrap(), l);
    }
}
