//! DUIDs (RFC 9915 §11). A DUID is opaque: servers compare it only for
//! equality and never reject one for an unknown type, so it is stored as its
//! raw octets and the typed forms are a view over them.

use std::fmt;

use super::error::DecodeError;

/// Longest DUID: 2-octet type plus at most 128 octets (RFC 9915 §11.1).
pub const MAX_DUID_LEN: usize = 130;

pub const DUID_LLT: u16 = 1;
pub const DUID_EN: u16 = 2;
pub const DUID_LL: u16 = 3;
pub const DUID_UUID: u16 = 4;

/// A client or server DUID, exactly as it appears on the wire. The octets
/// of the usual DUIDs (DUID-LLT with a MAC is 14 octets, DUID-UUID 18)
/// live inline: a lease table of millions holds no allocation per DUID.
#[derive(Clone)]
pub struct Duid(Octets);

const INLINE: usize = 22;

#[derive(Clone)]
enum Octets {
    Inline { len: u8, b: [u8; INLINE] },
    Heap(Box<[u8]>),
}

// Equality, order and hash are those of the octets (as `Vec<u8>`'s were).
impl PartialEq for Duid {
    fn eq(&self, o: &Duid) -> bool {
        self.as_bytes() == o.as_bytes()
    }
}
impl Eq for Duid {}
impl PartialOrd for Duid {
    fn partial_cmp(&self, o: &Duid) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Duid {
    fn cmp(&self, o: &Duid) -> std::cmp::Ordering {
        self.as_bytes().cmp(o.as_bytes())
    }
}
impl std::hash::Hash for Duid {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_bytes().hash(h)
    }
}

/// The typed reading of a DUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DuidKind<'a> {
    /// DUID-LLT: hardware type, time (seconds since 2000-01-01 mod 2^32), link-layer address.
    Llt { hw_type: u16, time: u32, link_layer: &'a [u8] },
    /// DUID-EN: enterprise number and a vendor-assigned identifier.
    En { enterprise: u32, identifier: &'a [u8] },
    /// DUID-LL: hardware type and link-layer address.
    Ll { hw_type: u16, link_layer: &'a [u8] },
    /// DUID-UUID (RFC 6355).
    Uuid([u8; 16]),
    /// A type we do not know, or a known type whose layout does not fit.
    Other { duid_type: u16, data: &'a [u8] },
}

impl Duid {
    /// Wrap raw octets, checking only what RFC 9915 requires of every DUID.
    pub fn from_bytes(bytes: &[u8]) -> Result<Duid, DecodeError> {
        if bytes.len() < 3 || bytes.len() > MAX_DUID_LEN {
            return Err(DecodeError::new(super::error::DecodeErrorKind::BadLength {
                len: bytes.len(),
                expected: "a DUID of 3..=130 octets",
            }));
        }
        Ok(Duid::raw(bytes))
    }

    pub fn llt(hw_type: u16, time: u32, link_layer: &[u8]) -> Duid {
        let mut v = Vec::with_capacity(8 + link_layer.len());
        v.extend_from_slice(&DUID_LLT.to_be_bytes());
        v.extend_from_slice(&hw_type.to_be_bytes());
        v.extend_from_slice(&time.to_be_bytes());
        v.extend_from_slice(link_layer);
        Duid::raw(&v)
    }

    pub fn en(enterprise: u32, identifier: &[u8]) -> Duid {
        let mut v = Vec::with_capacity(6 + identifier.len());
        v.extend_from_slice(&DUID_EN.to_be_bytes());
        v.extend_from_slice(&enterprise.to_be_bytes());
        v.extend_from_slice(identifier);
        Duid::raw(&v)
    }

    pub fn ll(hw_type: u16, link_layer: &[u8]) -> Duid {
        let mut v = Vec::with_capacity(4 + link_layer.len());
        v.extend_from_slice(&DUID_LL.to_be_bytes());
        v.extend_from_slice(&hw_type.to_be_bytes());
        v.extend_from_slice(link_layer);
        Duid::raw(&v)
    }

    pub fn uuid(uuid: [u8; 16]) -> Duid {
        let mut v = Vec::with_capacity(18);
        v.extend_from_slice(&DUID_UUID.to_be_bytes());
        v.extend_from_slice(&uuid);
        Duid::raw(&v)
    }

    fn raw(bytes: &[u8]) -> Duid {
        if bytes.len() <= INLINE {
            let mut b = [0u8; INLINE];
            b[..bytes.len()].copy_from_slice(bytes);
            Duid(Octets::Inline { len: bytes.len() as u8, b })
        } else {
            Duid(Octets::Heap(bytes.into()))
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Octets::Inline { len, b } => &b[..*len as usize],
            Octets::Heap(b) => b,
        }
    }

    pub fn duid_type(&self) -> u16 {
        u16::from_be_bytes([self.as_bytes()[0], self.as_bytes()[1]])
    }

    pub fn kind(&self) -> DuidKind<'_> {
        let t = self.duid_type();
        let d = &self.as_bytes()[2..];
        match t {
            DUID_LLT if d.len() >= 6 => DuidKind::Llt {
                hw_type: u16::from_be_bytes([d[0], d[1]]),
                time: u32::from_be_bytes([d[2], d[3], d[4], d[5]]),
                link_layer: &d[6..],
            },
            DUID_EN if d.len() >= 4 => DuidKind::En {
                enterprise: u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
                identifier: &d[4..],
            },
            DUID_LL if d.len() >= 2 => DuidKind::Ll {
                hw_type: u16::from_be_bytes([d[0], d[1]]),
                link_layer: &d[2..],
            },
            DUID_UUID if d.len() == 16 => {
                let mut u = [0u8; 16];
                u.copy_from_slice(d);
                DuidKind::Uuid(u)
            }
            _ => DuidKind::Other { duid_type: t, data: d },
        }
    }

    /// Lowercase hex without separators, as the lease dump and config use.
    pub fn to_hex(&self) -> String {
        super::hex::encode(self.as_bytes())
    }

    pub fn from_hex(s: &str) -> Result<Duid, String> {
        let bytes = super::hex::decode(s)?;
        Duid::from_bytes(&bytes).map_err(|e| e.to_string())
    }
}

impl fmt::Debug for Duid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duid({})", self.to_hex())
    }
}

impl fmt::Display for Duid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_views_of_each_duid_type() {
        let llt = Duid::from_hex("0001000100000001aabbccddeeff").unwrap();
        assert_eq!(
            llt.kind(),
            DuidKind::Llt { hw_type: 1, time: 1, link_layer: &[0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff] }
        );
        assert_eq!(llt, Duid::llt(1, 1, &[0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]));
        let en = Duid::en(2495, b"x1");
        assert_eq!(en.kind(), DuidKind::En { enterprise: 2495, identifier: b"x1" });
        let ll = Duid::ll(1, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(ll.to_hex(), "00030001010203040506");
        assert_eq!(ll.kind(), DuidKind::Ll { hw_type: 1, link_layer: &[1, 2, 3, 4, 5, 6] });
        let uuid = Duid::uuid([7; 16]);
        assert_eq!(uuid.kind(), DuidKind::Uuid([7; 16]));
        // An unknown type is kept, never rejected.
        let other = Duid::from_hex("ff00abcdef").unwrap();
        assert_eq!(other.kind(), DuidKind::Other { duid_type: 0xff00, data: &[0xab, 0xcd, 0xef] });
        // A UUID DUID of the wrong size is still a DUID, just not a typed UUID.
        let short = Duid::from_hex("00040102").unwrap();
        assert!(matches!(short.kind(), DuidKind::Other { duid_type: 4, .. }));
    }

    #[test]
    fn length_limits() {
        assert!(Duid::from_bytes(&[0, 1]).is_err());
        assert!(Duid::from_bytes(&[0u8; 131]).is_err());
        assert!(Duid::from_bytes(&[0u8; 130]).is_ok());
    }
}
