//! RFC 8156 failover messages (types 24–35) and their TCP framing
//! (a 2-octet length before each message, RFC 5460 §5.1).

use super::buf::{Put, Reader};
use super::codes::{MessageType, ServerState, StatusCode, opt};
use super::error::{DecodeError, DecodeErrorKind, EncodeError};
use super::message::MAX_TRANSACTION_ID;
use super::option::{DhcpOption, IaPrefix, Options, Status};

pub const FAILOVER_PORT: u16 = 647;
/// msg-type (1) + transaction-id (3) + sent-time (4).
pub const HEADER_LEN: usize = 8;
/// The 2-octet length cannot say more than this.
pub const MAX_FRAME_LEN: usize = 65535;
/// Smallest payload we accept in a frame: the 4-octet RFC 9915 header that
/// STARTTLS/REPLY use (the failover header is 8).
pub const MIN_FRAME_LEN: usize = 4;
/// Protocol version this implementation speaks (RFC 8156 §5.5.11).
pub const PROTOCOL_VERSION: (u16, u16) = (1, 0);

/// Seconds from the Unix epoch to 2000-01-01T00:00:00Z, the origin of RFC 8156
/// absolute time.
pub const UNIX_TO_DHCP_EPOCH: u64 = 946_684_800;

/// Unix seconds to RFC 8156 absolute time (seconds since 2000 mod 2^32).
pub fn abs_time(unix_secs: u64) -> u32 {
    unix_secs.wrapping_sub(UNIX_TO_DHCP_EPOCH) as u32
}

/// RFC 8156 absolute time to Unix seconds (valid until the 2136 wrap).
pub fn unix_time(abs: u32) -> u64 {
    abs as u64 + UNIX_TO_DHCP_EPOCH
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverMessage {
    pub msg_type: MessageType,
    /// 24 bits.
    pub transaction_id: u32,
    /// Absolute time at which the sender sent it.
    pub sent_time: u32,
    pub options: Options,
}

impl FailoverMessage {
    pub fn new(msg_type: MessageType, transaction_id: u32, sent_time: u32) -> Self {
        FailoverMessage { msg_type, transaction_id, sent_time, options: Options::new() }
    }

    pub fn with(mut self, o: DhcpOption) -> Self {
        self.options.push(o);
        self
    }

    /// Decode one message (the payload of a frame).
    pub fn decode(data: &[u8]) -> Result<FailoverMessage, DecodeError> {
        let Some(&code) = data.first() else {
            return Err(DecodeError::truncated(HEADER_LEN, 0));
        };
        let msg_type = MessageType::from(code);
        let inner = || -> Result<FailoverMessage, DecodeError> {
            if !msg_type.is_failover() {
                return Err(DecodeError::invalid("not a failover message type (24..=35)"));
            }
            if data.len() < HEADER_LEN {
                return Err(DecodeError::truncated(HEADER_LEN, data.len()));
            }
            let mut r = Reader::new(data);
            let transaction_id = r.u32()? & MAX_TRANSACTION_ID;
            let sent_time = r.u32()?;
            let options = Options::decode(r.rest())?;
            Ok(FailoverMessage { msg_type, transaction_id, sent_time, options })
        };
        inner().map_err(|e| e.in_message(code))
    }

    /// Encode the message without the frame length.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.transaction_id > MAX_TRANSACTION_ID {
            return Err(EncodeError::TransactionIdTooLarge(self.transaction_id));
        }
        out.put_u32((self.msg_type.code() as u32) << 24 | self.transaction_id);
        out.put_u32(self.sent_time);
        self.options.encode(out)
    }

    /// Encode as one frame: 2-octet length, then the message.
    pub fn encode_frame(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(128);
        out.put_u16(0);
        self.encode_into(&mut out)?;
        let len = out.len() - 2;
        let l = u16::try_from(len).map_err(|_| EncodeError::FrameTooLong(len))?;
        out[..2].copy_from_slice(&l.to_be_bytes());
        Ok(out)
    }

    pub fn status(&self) -> Option<&Status> {
        self.options.status()
    }
}

/// Splits a TCP byte stream into frames. Buffered data is bounded: at most one
/// frame's worth plus one read chunk; a frame longer than `max_frame` is an
/// error, after which the connection must be dropped.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max_frame: usize,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder { buf: Vec::new(), start: 0, max_frame: max_frame.clamp(MIN_FRAME_LEN, MAX_FRAME_LEN) }
    }

    /// Octets received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The buffered octet at `offset` (a frame's message type is at 2).
    /// Everything buffered and not yet returned as a frame (handing a
    /// stream over to another decoder, e.g. after a preamble).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf[self.start..].to_vec();
        self.buf.clear();
        self.start = 0;
        rest
    }

    pub fn peek(&self, offset: usize) -> Option<u8> {
        self.buf.get(self.start + offset).copied()
    }

    /// Add received octets. Call `next_frame` until it returns None before
    /// pushing more; pushing past twice the frame limit is refused.
    pub fn push(&mut self, data: &[u8]) -> Result<(), DecodeError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let limit = 2 * (self.max_frame + 2);
        if self.buf.len() + data.len() > limit {
            return Err(DecodeError::invalid("failover receive buffer full: frames not drained"));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The next complete frame's payload, if one has fully arrived.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, DecodeError> {
        let avail = &self.buf[self.start..];
        if avail.len() < 2 {
            return Ok(None);
        }
        let len = u16::from_be_bytes([avail[0], avail[1]]) as usize;
        if len < MIN_FRAME_LEN || len > self.max_frame {
            return Err(DecodeError::new(DecodeErrorKind::BadFrameLength {
                len,
                min: MIN_FRAME_LEN,
                max: self.max_frame,
            }));
        }
        if avail.len() < 2 + len {
            return Ok(None);
        }
        let s = self.start + 2;
        self.start = s + len;
        Ok(Some(&self.buf[s..s + len]))
    }
}

/// What a failover message lacks or gets wrong, beyond its octets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentError {
    WrongType { expected: MessageType, got: MessageType },
    Missing(u16),
    /// A BNDUPD/BNDREPLY must carry exactly one CLIENT_DATA or one IAPREFIX.
    NotExactlyOneBinding,
}

impl std::fmt::Display for ContentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContentError::WrongType { expected, got } => write!(f, "expected {expected}, got {got}"),
            ContentError::Missing(c) => {
                write!(f, "missing option {c} ({})", super::codes::option_name(*c))
            }
            ContentError::NotExactlyOneBinding => {
                f.write_str("must carry exactly one CLIENT_DATA or one IAPREFIX")
            }
        }
    }
}

impl std::error::Error for ContentError {}

fn expect_type(m: &FailoverMessage, t: MessageType) -> Result<(), ContentError> {
    if m.msg_type == t { Ok(()) } else { Err(ContentError::WrongType { expected: t, got: m.msg_type }) }
}

fn need_u32(m: &FailoverMessage, code: u16) -> Result<u32, ContentError> {
    m.options.u32_of(code).ok_or(ContentError::Missing(code))
}

/// CONNECT (RFC 8156 §6.1.1) and the accepting CONNECTREPLY (§6.1.2) carry the
/// same parameters; the relationship name is in CONNECT only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectParams {
    pub protocol_version: (u16, u16),
    pub mclt: u32,
    pub keepalive_time: u32,
    pub max_unacked_bndupd: u32,
    pub relationship_name: Option<String>,
    pub connect_flags: u16,
}

impl ConnectParams {
    pub fn to_message(&self, msg_type: MessageType, xid: u32, sent_time: u32) -> FailoverMessage {
        let mut m = FailoverMessage::new(msg_type, xid, sent_time)
            .with(DhcpOption::ProtocolVersion {
                major: self.protocol_version.0,
                minor: self.protocol_version.1,
            })
            .with(DhcpOption::Mclt(self.mclt))
            .with(DhcpOption::KeepaliveTime(self.keepalive_time))
            .with(DhcpOption::MaxUnackedBndupd(self.max_unacked_bndupd));
        if let Some(n) = &self.relationship_name {
            m.options.push(DhcpOption::RelationshipName(n.clone()));
        }
        m.with(DhcpOption::ConnectFlags(self.connect_flags))
    }

    /// Read CONNECT or an accepting CONNECTREPLY.
    pub fn from_message(m: &FailoverMessage) -> Result<ConnectParams, ContentError> {
        if m.msg_type != MessageType::ConnectReply {
            expect_type(m, MessageType::Connect)?;
        }
        let protocol_version = m
            .options
            .iter()
            .find_map(|o| match o {
                DhcpOption::ProtocolVersion { major, minor } => Some((*major, *minor)),
                _ => None,
            })
            .ok_or(ContentError::Missing(opt::F_PROTOCOL_VERSION))?;
        let relationship_name = m.options.iter().find_map(|o| match o {
            DhcpOption::RelationshipName(n) => Some(n.clone()),
            _ => None,
        });
        let connect_flags = m
            .options
            .iter()
            .find_map(|o| match o {
                DhcpOption::ConnectFlags(f) => Some(*f),
                _ => None,
            })
            .ok_or(ContentError::Missing(opt::F_CONNECT_FLAGS))?;
        Ok(ConnectParams {
            protocol_version,
            mclt: need_u32(m, opt::F_MCLT)?,
            keepalive_time: need_u32(m, opt::F_KEEPALIVE_TIME)?,
            max_unacked_bndupd: need_u32(m, opt::F_MAX_UNACKED_BNDUPD)?,
            relationship_name,
            connect_flags,
        })
    }
}

/// STATE (RFC 8156 §6.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateParams {
    pub state: ServerState,
    pub flags: u8,
    pub start_time_of_state: u32,
    /// Present only when the sender is in PARTNER-DOWN.
    pub partner_down_time: Option<u32>,
}

impl StateParams {
    pub fn to_message(&self, xid: u32, sent_time: u32) -> FailoverMessage {
        let mut m = FailoverMessage::new(MessageType::State, xid, sent_time)
            .with(DhcpOption::ServerState(self.state))
            .with(DhcpOption::ServerFlags(self.flags))
            .with(DhcpOption::StartTimeOfState(self.start_time_of_state));
        if let Some(t) = self.partner_down_time {
            m.options.push(DhcpOption::PartnerDownTime(t));
        }
        m
    }

    pub fn from_message(m: &FailoverMessage) -> Result<StateParams, ContentError> {
        expect_type(m, MessageType::State)?;
        let state = m
            .options
            .iter()
            .find_map(|o| match o {
                DhcpOption::ServerState(s) => Some(*s),
                _ => None,
            })
            .ok_or(ContentError::Missing(opt::F_SERVER_STATE))?;
        let flags = m
            .options
            .iter()
            .find_map(|o| match o {
                DhcpOption::ServerFlags(f) => Some(*f),
                _ => None,
            })
            .ok_or(ContentError::Missing(opt::F_SERVER_FLAGS))?;
        Ok(StateParams {
            state,
            flags,
            start_time_of_state: need_u32(m, opt::F_START_TIME_OF_STATE)?,
            partner_down_time: m.options.u32_of(opt::F_PARTNER_DOWN_TIME),
        })
    }
}

/// DISCONNECT (§5.3.10) with its status code.
pub fn disconnect(xid: u32, sent_time: u32, code: StatusCode, why: &str) -> FailoverMessage {
    FailoverMessage::new(MessageType::Disconnect, xid, sent_time)
        .with(DhcpOption::StatusCode(Status::new(code, why)))
}

/// The one binding a BNDUPD or BNDREPLY describes (§7.4, §7.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingBody<'a> {
    ClientData(&'a Options),
    Prefix(&'a IaPrefix),
}

impl<'a> BindingBody<'a> {
    pub fn of(m: &'a FailoverMessage) -> Result<BindingBody<'a>, ContentError> {
        if m.msg_type != MessageType::BndReply {
            expect_type(m, MessageType::BndUpd)?;
        }
        let mut found = None;
        for o in &m.options {
            let b = match o {
                DhcpOption::ClientData(c) => BindingBody::ClientData(c),
                DhcpOption::IaPrefix(p) => BindingBody::Prefix(p),
                _ => continue,
            };
            if found.replace(b).is_some() {
                return Err(ContentError::NotExactlyOneBinding);
            }
        }
        found.ok_or(ContentError::NotExactlyOneBinding)
    }
}
