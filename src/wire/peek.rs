//! Reading just enough of a datagram to route it: the client's message type
//! and Client Identifier, through any relay headers, without decoding the
//! rest (the shard that owns the client decodes it in full). Shard 0 takes
//! every multicast datagram, so this is its per-datagram cost.

use super::codes::opt;
use super::message::HOP_COUNT_LIMIT;

/// What routing needs from a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peeked<'a> {
    /// The innermost (client) message's type code.
    pub msg_type: u8,
    /// The Client Identifier's body (a DUID), when the client sent one.
    pub client_id: Option<&'a [u8]>,
}

const RELAY_FORW: u8 = 12;
const RELAY_REPL: u8 = 13;
/// msg-type, hop-count, link-address, peer-address (RFC 9915 §9).
const RELAY_HEADER: usize = 34;
/// msg-type, transaction-id.
const CLIENT_HEADER: usize = 4;

/// None when the datagram is too malformed to route (the full decoder
/// then counts it where it arrived).
pub fn peek(mut data: &[u8]) -> Option<Peeked<'_>> {
    for _ in 0..=HOP_COUNT_LIMIT {
        let t = *data.first()?;
        if t == RELAY_FORW || t == RELAY_REPL {
            data = find_option(data.get(RELAY_HEADER..)?, opt::RELAY_MSG)?;
            continue;
        }
        let options = data.get(CLIENT_HEADER..)?;
        return Some(Peeked { msg_type: t, client_id: find_option(options, opt::CLIENTID) });
    }
    None
}

/// The body of the first option `code` (None also when the options are
/// cut short before it).
pub fn find_option(mut options: &[u8], code: u16) -> Option<&[u8]> {
    while options.len() >= 4 {
        let c = u16::from_be_bytes([options[0], options[1]]);
        let len = u16::from_be_bytes([options[2], options[3]]) as usize;
        let body = options.get(4..4 + len)?;
        if c == code {
            return Some(body);
        }
        options = &options[4 + len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ClientMessage, DhcpOption, Duid, Message, MessageType, Options, RelayMessage};

    fn sample_solicit() -> Message {
        let mut options = Options::new();
        options.0.push(DhcpOption::ElapsedTime(0));
        options.0.push(DhcpOption::ClientId(Duid::llt(1, 0x2a2b3c4d, &[0, 0x11, 0x22, 0x33, 0x44, 0x55])));
        Message::Client(ClientMessage { msg_type: MessageType::Solicit, transaction_id: 0x123456, options })
    }

    fn relayed(hop: u8, m: Message) -> Message {
        let mut options = Options::new();
        options.0.push(DhcpOption::RelayMsg(Box::new(m)));
        Message::Relay(RelayMessage {
            msg_type: MessageType::RelayForw,
            hop_count: hop,
            link_address: "2001:db8::1".parse().unwrap(),
            peer_address: "fe80::1".parse().unwrap(),
            options,
        })
    }

    #[test]
    fn finds_the_client_id_as_the_full_decoder_does() {
        let m = sample_solicit();
        let bytes = m.encode().unwrap();
        let p = peek(&bytes).unwrap();
        let full = Message::decode(&bytes).unwrap();
        assert_eq!(p.msg_type, 1);
        assert_eq!(p.client_id, full.unwrap_relays().1.and_then(|c| c.options.client_id()).map(|d| d.as_bytes()));
        assert!(p.client_id.is_some());
    }

    #[test]
    fn looks_through_relay_headers() {
        let mut m = sample_solicit();
        for hop in 0..3 {
            m = relayed(hop, m);
        }
        let bytes = m.encode().unwrap();
        let p = peek(&bytes).unwrap();
        let full = Message::decode(&bytes).unwrap();
        assert_eq!(p.msg_type, 1);
        assert_eq!(p.client_id, full.unwrap_relays().1.and_then(|c| c.options.client_id()).map(|d| d.as_bytes()));
    }

    #[test]
    fn never_panics_on_cut_or_hostile_bytes() {
        let m = relayed(0, sample_solicit());
        let bytes = m.encode().unwrap();
        for n in 0..bytes.len() {
            let _ = peek(&bytes[..n]);
        }
        // A relay header claiming a relay message longer than the datagram.
        let mut b = vec![12u8; RELAY_HEADER];
        b.extend_from_slice(&[0, 9, 0xff, 0xff, 1]);
        assert_eq!(peek(&b), None);
        // Relays nested past the hop limit.
        let mut deep = vec![1u8, 0, 0, 0];
        for _ in 0..20 {
            let mut r = vec![12u8; RELAY_HEADER];
            r.extend_from_slice(&9u16.to_be_bytes());
            r.extend_from_slice(&(deep.len() as u16).to_be_bytes());
            r.extend_from_slice(&deep);
            deep = r;
        }
        assert_eq!(peek(&deep), None);
    }
}
