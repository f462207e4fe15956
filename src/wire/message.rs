//! DHCPv6 messages: the client/server format (RFC 9915 §8) and the relay
//! format (§9), with relays nested up to HOP_COUNT_LIMIT.

use std::net::Ipv6Addr;

use super::buf::{Put, Reader};
use super::codes::MessageType;
use super::error::{DecodeError, DecodeErrorKind, EncodeError};
use super::option::{MAX_DEPTH, Options};

/// RFC 9915 §7.6: the most relay agents a message may pass through.
pub const HOP_COUNT_LIMIT: u8 = 8;
/// Largest 24-bit transaction id.
pub const MAX_TRANSACTION_ID: u32 = 0x00FF_FFFF;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    pub msg_type: MessageType,
    /// 24 bits.
    pub transaction_id: u32,
    pub options: Options,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayMessage {
    /// RelayForw or RelayRepl.
    pub msg_type: MessageType,
    pub hop_count: u8,
    pub link_address: Ipv6Addr,
    pub peer_address: Ipv6Addr,
    pub options: Options,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Client(ClientMessage),
    Relay(RelayMessage),
}

impl Message {
    /// Decode a UDP payload. Never panics; allocation is bounded by the input length.
    pub fn decode(data: &[u8]) -> Result<Message, DecodeError> {
        let m = Self::decode_nested(data, 0)?;
        if m.relay_levels() > HOP_COUNT_LIMIT as usize {
            return Err(DecodeError::invalid("more relay levels than HOP_COUNT_LIMIT")
                .in_message(m.msg_type().code()));
        }
        Ok(m)
    }

    pub(crate) fn decode_nested(data: &[u8], depth: u8) -> Result<Message, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::new(DecodeErrorKind::TooDeep));
        }
        let Some(&code) = data.first() else {
            return Err(DecodeError::truncated(1, 0));
        };
        let msg_type = MessageType::from(code);
        let mut r = Reader::new(data);
        let res = if msg_type.is_relay() {
            if data.len() < 34 {
                Err(DecodeError::truncated(34, data.len()))
            } else {
                r.u8()?;
                let hop_count = r.u8()?;
                let link_address = r.ipv6()?;
                let peer_address = r.ipv6()?;
                Options::decode_nested(r.rest(), depth).map(|options| {
                    Message::Relay(RelayMessage { msg_type, hop_count, link_address, peer_address, options })
                })
            }
        } else if data.len() < 4 {
            Err(DecodeError::truncated(4, data.len()))
        } else {
            let transaction_id = r.u32()? & MAX_TRANSACTION_ID;
            Options::decode_nested(r.rest(), depth)
                .map(|options| Message::Client(ClientMessage { msg_type, transaction_id, options }))
        };
        res.map_err(|e| e.in_message(code))
    }

    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out)?;
        Ok(out)
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Message::Client(m) => {
                if m.transaction_id > MAX_TRANSACTION_ID {
                    return Err(EncodeError::TransactionIdTooLarge(m.transaction_id));
                }
                out.put_u32((m.msg_type.code() as u32) << 24 | m.transaction_id);
                m.options.encode(out)
            }
            Message::Relay(m) => {
                out.put_u8(m.msg_type.code());
                out.put_u8(m.hop_count);
                out.put_ipv6(&m.link_address);
                out.put_ipv6(&m.peer_address);
                m.options.encode(out)
            }
        }
    }

    pub fn msg_type(&self) -> MessageType {
        match self {
            Message::Client(m) => m.msg_type,
            Message::Relay(m) => m.msg_type,
        }
    }

    pub fn options(&self) -> &Options {
        match self {
            Message::Client(m) => &m.options,
            Message::Relay(m) => &m.options,
        }
    }

    /// How many relay levels wrap the innermost message.
    pub fn relay_levels(&self) -> usize {
        let mut n = 0;
        let mut m = self;
        while let Message::Relay(r) = m {
            n += 1;
            match r.options.relay_msg() {
                Some(inner) => m = inner,
                None => break,
            }
        }
        n
    }

    /// The message under every relay level (the client's, or the innermost
    /// relay level when one lacks OPTION_RELAY_MSG), without allocating.
    pub fn innermost(&self) -> &Message {
        let mut m = self;
        while let Message::Relay(r) = m {
            match r.options.relay_msg() {
                Some(inner) => m = inner,
                None => break,
            }
        }
        m
    }

    /// The relay levels from outermost to innermost, and the client message
    /// they carry (None when a relay level lacks OPTION_RELAY_MSG).
    pub fn unwrap_relays(&self) -> (Vec<&RelayMessage>, Option<&ClientMessage>) {
        let mut chain = Vec::new();
        let mut m = self;
        loop {
            match m {
                Message::Client(c) => return (chain, Some(c)),
                Message::Relay(r) => {
                    chain.push(r);
                    match r.options.relay_msg() {
                        Some(inner) => m = inner,
                        None => return (chain, None),
                    }
                }
            }
        }
    }
}

impl From<ClientMessage> for Message {
    fn from(m: ClientMessage) -> Self {
        Message::Client(m)
    }
}

impl From<RelayMessage> for Message {
    fn from(m: RelayMessage) -> Self {
        Message::Relay(m)
    }
}
