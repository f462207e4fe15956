//! Domain names in DHCPv6 wire form (RFC 9915 §10: RFC 1035 labels, no
//! compression). Kept as validated wire octets so re-encoding is exact.

use std::fmt;

use super::error::{DecodeError, DecodeErrorKind};

pub const MAX_LABEL: usize = 63;
pub const MAX_NAME: usize = 255;

/// One domain name. A fully qualified name ends with the root label; a
/// partial name (RFC 4704 §4.2) does not; an empty name has no labels.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DomainName {
    wire: Vec<u8>,
}

impl DomainName {
    /// Decode one name from the front of `data`, returning it and the octets used.
    /// A name stops at the root label or at the end of `data` (a partial name).
    pub fn decode_prefix(data: &[u8]) -> Result<(DomainName, usize), DecodeError> {
        let mut pos = 0;
        loop {
            if pos == data.len() {
                break; // partial (or empty) name
            }
            let len = data[pos] as usize;
            if len & 0xC0 != 0 {
                return Err(DecodeError::invalid("compressed or extended label in domain name"));
            }
            pos += 1;
            if len == 0 {
                break; // root label: fully qualified
            }
            if pos + len > data.len() {
                return Err(DecodeError::new(DecodeErrorKind::Truncated {
                    needed: len,
                    available: data.len() - pos,
                }));
            }
            pos += len;
        }
        if pos > MAX_NAME {
            return Err(DecodeError::invalid("domain name longer than 255 octets"));
        }
        Ok((DomainName { wire: data[..pos].to_vec() }, pos))
    }

    /// Decode a field that holds exactly one name.
    pub fn decode(data: &[u8]) -> Result<DomainName, DecodeError> {
        let (name, used) = Self::decode_prefix(data)?;
        if used != data.len() {
            return Err(DecodeError::invalid("octets after the root label of a domain name"));
        }
        Ok(name)
    }

    /// Parse dotted text. A trailing dot makes the name fully qualified;
    /// "" is the empty name and "." is the root.
    pub fn from_dotted(s: &str) -> Result<DomainName, String> {
        let mut wire = Vec::with_capacity(s.len() + 2);
        if s == "." {
            wire.push(0);
            return Ok(DomainName { wire });
        }
        let (body, fq) = match s.strip_suffix('.') {
            Some(b) => (b, true),
            None => (s, false),
        };
        if !body.is_empty() {
            for label in body.split('.') {
                if label.is_empty() {
                    return Err(format!("empty label in domain name {s:?}"));
                }
                if label.len() > MAX_LABEL {
                    return Err(format!("label {label:?} longer than 63 octets"));
                }
                wire.push(label.len() as u8);
                wire.extend_from_slice(label.as_bytes());
            }
        }
        if fq {
            wire.push(0);
        }
        if wire.len() > MAX_NAME {
            return Err(format!("domain name {s:?} longer than 255 octets"));
        }
        Ok(DomainName { wire })
    }

    pub fn as_wire(&self) -> &[u8] {
        &self.wire
    }

    pub fn is_fully_qualified(&self) -> bool {
        self.wire.last() == Some(&0)
    }

    pub fn is_empty(&self) -> bool {
        self.wire.is_empty()
    }

    pub fn labels(&self) -> impl Iterator<Item = &[u8]> {
        let mut pos = 0;
        std::iter::from_fn(move || {
            let len = *self.wire.get(pos)? as usize;
            if len == 0 {
                return None;
            }
            let l = &self.wire[pos + 1..pos + 1 + len];
            pos += 1 + len;
            Some(l)
        })
    }
}

impl fmt::Display for DomainName {
    /// Dotted form; fully qualified names end with '.'.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for l in self.labels() {
            if !first {
                f.write_str(".")?;
            }
            first = false;
            f.write_str(&String::from_utf8_lossy(l))?;
        }
        if self.is_fully_qualified() {
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DomainName({:?})", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fully_qualified_partial_and_empty() {
        let fq = DomainName::from_dotted("host.example.net.").unwrap();
        assert_eq!(fq.as_wire(), b"\x04host\x07example\x03net\x00");
        assert!(fq.is_fully_qualified());
        assert_eq!(fq.to_string(), "host.example.net.");
        let partial = DomainName::decode(b"\x04host").unwrap();
        assert!(!partial.is_fully_qualified());
        assert_eq!(partial.to_string(), "host");
        let empty = DomainName::decode(b"").unwrap();
        assert!(empty.is_empty());
        assert_eq!(DomainName::from_dotted(".").unwrap().as_wire(), b"\x00");
    }

    #[test]
    fn rejects_bad_names() {
        assert!(DomainName::decode(b"\xc0\x0c").is_err(), "compression pointer");
        assert!(DomainName::decode(b"\x05ab").is_err(), "label overruns");
        assert!(DomainName::decode(b"\x01a\x00\x01b").is_err(), "trailing octets");
        assert!(DomainName::from_dotted("a..b").is_err());
        assert!(DomainName::from_dotted(&"a".repeat(64)).is_err());
        let long = [b"\x3f".as_slice(), &[b'a'; 63]].concat().repeat(5);
        assert!(DomainName::decode(&long).is_err(), "longer than 255");
    }
}
