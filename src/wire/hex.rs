//! Lowercase hex, used for DUIDs in config, logs and the lease dump.

pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Accepts upper or lower case and optional ':' or '-' separators.
pub fn decode(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s.bytes().filter(|c| *c != b':' && *c != b'-').collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("hex string {s:?} has an odd number of digits"));
    }
    let val = |c: u8| -> Result<u8, String> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(format!("{:?} is not a hex digit in {s:?}", c as char)),
        }
    };
    digits.chunks(2).map(|p| Ok(val(p[0])? << 4 | val(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        assert_eq!(super::encode(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(super::decode("00:AB:10").unwrap(), vec![0, 0xab, 0x10]);
        assert!(super::decode("abc").is_err());
        assert!(super::decode("zz").is_err());
    }
}
