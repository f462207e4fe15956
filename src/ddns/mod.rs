//! DNS updates for leases, sans-IO: the RFC 4703 §5 procedure as RFC 2136
//! UPDATE messages (built with hickory-proto), the DHCID RR (RFC 4701) and
//! the decision that follows each answer. The runtime signs (TSIG), sends,
//! retries, and records the outcome in the lease.

use std::net::Ipv6Addr;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::{AAAA, NULL, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::wire::{DomainName, Duid};

/// RR type of DHCID (RFC 4701); hickory has no type for it.
pub const DHCID: u16 = 49;

/// Where the records go.
#[derive(Debug, Clone)]
pub struct Zones {
    pub forward: Name,
    pub reverse: Name,
    pub ttl: u32,
}

/// One lease's records to add or remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub name: DomainName,
    pub addr: Ipv6Addr,
    pub duid: Duid,
    pub add: bool,
}

/// A step of the RFC 4703 procedure: one UPDATE message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// §5.3.1: the name is not in use → add AAAA and DHCID.
    FwdAdd,
    /// §5.3.2: the name is ours (DHCID matches) → replace the AAAA.
    FwdReplace,
    /// §5.4: replace the PTR (and DHCID) at the reverse name.
    Ptr,
    /// §5.5: remove the PTR at the reverse name (if it points to our name).
    PtrRemove,
    /// §5.5: DHCID matches → delete our AAAA.
    FwdRemoveAddr,
    /// §5.5: DHCID matches and no address records remain → delete the name.
    FwdRemoveName,
}

/// What to do after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Send(Step),
    /// All records are in place (add) or gone (remove).
    Done,
    /// The name belongs to another client (§5.3.3): choose another name.
    Conflict,
    /// The server refused or failed: try the whole job again later.
    Retry(String),
}

impl Job {
    pub fn first(&self) -> Step {
        if self.add { Step::FwdAdd } else { Step::PtrRemove }
    }

    /// The procedure's next step after `rcode` answered `step`.
    pub fn next(&self, step: Step, rcode: ResponseCode) -> Next {
        use ResponseCode as R;
        match (step, rcode) {
            (Step::FwdAdd, R::NoError) | (Step::FwdReplace, R::NoError) => Next::Send(Step::Ptr),
            (Step::FwdAdd, R::YXDomain) => Next::Send(Step::FwdReplace),
            // The name vanished between the two steps: start over (the caller bounds the tries).
            (Step::FwdReplace, R::NXDomain) => Next::Send(Step::FwdAdd),
            (Step::FwdReplace, R::NXRRSet) => Next::Conflict,
            (Step::Ptr, R::NoError) => Next::Done,
            // Removal: a failed prerequisite means the records are not ours
            // (any more); leave them (§5.5) and carry on.
            (Step::PtrRemove, R::NoError | R::NXRRSet | R::NXDomain) => Next::Send(Step::FwdRemoveAddr),
            (Step::FwdRemoveAddr, R::NoError) => Next::Send(Step::FwdRemoveName),
            (Step::FwdRemoveAddr, R::NXRRSet | R::NXDomain) => Next::Done,
            (Step::FwdRemoveName, R::NoError | R::NXRRSet | R::YXRRSet | R::NXDomain) => Next::Done,
            (s, r) => Next::Retry(format!("{s:?} answered {r}")),
        }
    }

    fn fqdn(&self) -> Result<Name, String> {
        Name::from_ascii(self.name.to_string()).map_err(|e| format!("name {}: {e}", self.name))
    }

    /// DHCID RDATA (RFC 4701 §3.3, §3.5): identifier type 2 (DUID), digest
    /// type 1 (SHA-256) over the DUID and the lower-cased wire name.
    pub fn dhcid(&self) -> Vec<u8> {
        dhcid(&self.duid, &self.name)
    }

    /// The UPDATE message for `step`, unsigned.
    pub fn message(&self, step: Step, zones: &Zones, id: u16) -> Result<Message, String> {
        let fqdn = self.fqdn()?;
        let rev = Name::from(self.addr);
        let (zone, name) = match step {
            Step::Ptr | Step::PtrRemove => (&zones.reverse, &rev),
            _ => (&zones.forward, &fqdn),
        };
        if !zone.zone_of(name) {
            return Err(format!("{name} is not in zone {zone}"));
        }
        let mut m = Message::new(id, MessageType::Query, OpCode::Update);
        let mut q = Query::new();
        q.set_name(zone.clone()).set_query_class(DNSClass::IN).set_query_type(RecordType::SOA);
        m.add_zone(q);
        let aaaa = Record::from_rdata(fqdn.clone(), zones.ttl, RData::AAAA(AAAA(self.addr)));
        let dhcid = Record::from_rdata(name.clone(), zones.ttl, dhcid_rdata(self.dhcid()));
        let ptr = Record::from_rdata(rev.clone(), zones.ttl, RData::PTR(PTR(fqdn.clone())));
        match step {
            Step::FwdAdd => {
                m.add_pre_requisite(prereq(&fqdn, RecordType::ANY, DNSClass::NONE));
                m.add_update(aaaa);
                m.add_update(dhcid);
            }
            Step::FwdReplace => {
                m.add_pre_requisite(prereq(&fqdn, RecordType::ANY, DNSClass::ANY));
                m.add_pre_requisite(value_prereq(dhcid));
                m.add_update(delete_rrset(&fqdn, RecordType::AAAA));
                m.add_update(aaaa);
            }
            Step::Ptr => {
                m.add_update(delete_rrset(&rev, RecordType::PTR));
                m.add_update(delete_rrset(&rev, RecordType::Unknown(DHCID)));
                m.add_update(ptr);
                m.add_update(dhcid);
            }
            Step::PtrRemove => {
                m.add_pre_requisite(value_prereq(ptr));
                m.add_update(delete_rrset(&rev, RecordType::ANY));
            }
            Step::FwdRemoveAddr => {
                m.add_pre_requisite(value_prereq(dhcid));
                let mut del = aaaa;
                del.dns_class = DNSClass::NONE;
                del.ttl = 0;
                m.add_update(del);
            }
            Step::FwdRemoveName => {
                m.add_pre_requisite(value_prereq(dhcid));
                m.add_pre_requisite(prereq(&fqdn, RecordType::AAAA, DNSClass::NONE));
                m.add_pre_requisite(prereq(&fqdn, RecordType::A, DNSClass::NONE));
                m.add_update(delete_rrset(&fqdn, RecordType::ANY));
            }
        }
        Ok(m)
    }
}

/// DHCID RDATA for a DUID and a name (RFC 4701 §3.3).
pub fn dhcid(duid: &Duid, name: &DomainName) -> Vec<u8> {
    let mut wire = name.as_wire().to_ascii_lowercase();
    if wire.last() != Some(&0) {
        wire.push(0);
    }
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(duid.as_bytes());
    ctx.update(&wire);
    let mut out = vec![0x00, 0x02, 0x01];
    out.extend_from_slice(ctx.finish().as_ref());
    out
}

fn dhcid_rdata(bytes: Vec<u8>) -> RData {
    RData::Unknown { code: RecordType::Unknown(DHCID), rdata: NULL::with(bytes) }
}

/// RFC 2136 §2.4 value-independent prerequisites (ANY: exists, NONE: does not).
fn prereq(name: &Name, t: RecordType, class: DNSClass) -> Record {
    let mut r = Record::update0(name.clone(), 0, t).into_record_of_rdata();
    r.dns_class = class;
    r
}

/// RFC 2136 §2.4.2: this exact RR exists (zone class, TTL 0).
fn value_prereq(mut r: Record) -> Record {
    r.ttl = 0;
    r
}

/// RFC 2136 §2.5.2: delete an RRset (ANY, empty RDATA).
fn delete_rrset(name: &Name, t: RecordType) -> Record {
    prereq(name, t, DNSClass::ANY)
}

/// A name for a client whose name belongs to someone else (RFC 4703 §5.3.3):
/// the first label gets a suffix made from the client's DUID.
pub fn disambiguate(name: &DomainName, duid: &Duid) -> Option<DomainName> {
    let mut labels = name.labels();
    let first = std::str::from_utf8(labels.next()?).ok()?.to_string();
    let rest: Vec<String> = labels.map(|l| String::from_utf8_lossy(l).into_owned()).collect();
    let h = ring::digest::digest(&ring::digest::SHA256, duid.as_bytes());
    let tag: String = h.as_ref()[..3].iter().map(|b| format!("{b:02x}")).collect();
    let label: String = format!("{first}-{tag}").chars().take(63).collect();
    DomainName::from_dotted(&format!("{label}.{}.", rest.join("."))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::serialize::binary::BinDecodable;

    #[test]
    fn dhcid_matches_the_rfc_4701_test_vector() {
        // RFC 4701 §3.6.1 (recomputed in the digest).
        let duid = Duid::from_bytes(&[0x00, 0x01, 0x00, 0x06, 0x41, 0x2d, 0xf1, 0x66, 1, 2, 3, 4, 5, 6]).unwrap();
        let d = dhcid(&duid, &DomainName::from_dotted("Chi6.Example.com.").unwrap());
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "000201636fc0b8271c82825bb1ac5c41cf5351aa69b4febd94e8f17cdb95000da48c40");
    }

    fn job(add: bool) -> (Job, Zones) {
        let j = Job {
            name: DomainName::from_dotted("host1.example.test.").unwrap(),
            addr: "2001:db8:1::1001".parse().unwrap(),
            duid: Duid::ll(1, &[1, 2, 3, 4, 5, 6]),
            add,
        };
        let z = Zones {
            forward: Name::from_ascii("example.test.").unwrap(),
            reverse: Name::from_ascii("1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.").unwrap(),
            ttl: 600,
        };
        (j, z)
    }

    #[test]
    fn the_add_procedure_follows_rfc_4703() {
        let (j, _) = job(true);
        use ResponseCode as R;
        assert_eq!(j.first(), Step::FwdAdd);
        assert_eq!(j.next(Step::FwdAdd, R::NoError), Next::Send(Step::Ptr));
        assert_eq!(j.next(Step::FwdAdd, R::YXDomain), Next::Send(Step::FwdReplace));
        assert_eq!(j.next(Step::FwdReplace, R::NXRRSet), Next::Conflict);
        assert_eq!(j.next(Step::FwdReplace, R::NXDomain), Next::Send(Step::FwdAdd));
        assert_eq!(j.next(Step::Ptr, R::NoError), Next::Done);
        assert!(matches!(j.next(Step::FwdAdd, R::Refused), Next::Retry(_)));
        assert!(matches!(j.next(Step::FwdAdd, R::NotAuth), Next::Retry(_)));
        let (j, _) = job(false);
        assert_eq!(j.first(), Step::PtrRemove);
        assert_eq!(j.next(Step::PtrRemove, R::NXRRSet), Next::Send(Step::FwdRemoveAddr));
        assert_eq!(j.next(Step::FwdRemoveAddr, R::NXRRSet), Next::Done, "not ours: leave the name");
    }

    #[test]
    fn messages_carry_the_rfc_2136_sections() {
        let (j, z) = job(true);
        let m = j.message(Step::FwdAdd, &z, 7).unwrap();
        let bytes = m.to_vec().unwrap();
        let back = Message::from_bytes(&bytes).unwrap();
        assert_eq!(back.metadata.op_code, OpCode::Update);
        assert_eq!(back.prerequisites().len(), 1);
        assert_eq!(back.prerequisites()[0].dns_class, DNSClass::NONE);
        assert_eq!(back.updates().len(), 2);
        assert!(back.updates().iter().any(|r| r.record_type() == RecordType::Unknown(DHCID)));
        let m = j.message(Step::Ptr, &z, 8).unwrap();
        assert_eq!(m.zones()[0].name().to_string(), "1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.");
        let outside = Job { name: DomainName::from_dotted("h.other.org.").unwrap(), ..j };
        assert!(outside.message(Step::FwdAdd, &z, 9).is_err());
    }

    #[test]
    fn disambiguated_names_stay_in_the_zone_and_differ_by_client() {
        let n = DomainName::from_dotted("host1.example.test.").unwrap();
        let a = disambiguate(&n, &Duid::ll(1, &[1])).unwrap().to_string();
        let b = disambiguate(&n, &Duid::ll(1, &[2])).unwrap().to_string();
        assert!(a.starts_with("host1-") && a.ends_with(".example.test."), "{a}");
        assert_ne!(a, b);
    }
}
