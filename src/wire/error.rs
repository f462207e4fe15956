//! Typed codec errors. Every decode error says where (message type, innermost
//! option code) and what was wrong, so a dropped packet can be counted by reason.

use std::fmt;

/// What was wrong with the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// Fewer octets than a fixed header or field needs.
    Truncated { needed: usize, available: usize },
    /// An option header claims more data than its container holds.
    OptionOverrun { declared: usize, available: usize },
    /// A fixed-size or minimum-size option has the wrong length.
    BadLength { len: usize, expected: &'static str },
    /// A field holds a value the protocol does not allow.
    InvalidValue(&'static str),
    /// Options or relay messages nested deeper than we accept.
    TooDeep,
    /// A frame length outside the allowed range (failover TCP framing).
    BadFrameLength { len: usize, min: usize, max: usize },
}

/// A decode failure, located by message type and option code where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub msg_type: Option<u8>,
    /// The innermost option being decoded when the error was found.
    pub option: Option<u16>,
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    pub(crate) fn new(kind: DecodeErrorKind) -> Self {
        DecodeError { msg_type: None, option: None, kind }
    }

    pub(crate) fn truncated(needed: usize, available: usize) -> Self {
        Self::new(DecodeErrorKind::Truncated { needed, available })
    }

    pub(crate) fn invalid(what: &'static str) -> Self {
        Self::new(DecodeErrorKind::InvalidValue(what))
    }

    /// Attach the option code unless an inner option already claimed the error.
    pub(crate) fn in_option(mut self, code: u16) -> Self {
        self.option.get_or_insert(code);
        self
    }

    pub(crate) fn in_message(mut self, msg_type: u8) -> Self {
        self.msg_type.get_or_insert(msg_type);
        self
    }

    /// A short, stable label for metrics (`tandem_packets_dropped_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self.kind {
            DecodeErrorKind::Truncated { .. } => "truncated",
            DecodeErrorKind::OptionOverrun { .. } => "option_overrun",
            DecodeErrorKind::BadLength { .. } => "bad_option_length",
            DecodeErrorKind::InvalidValue(_) => "invalid_value",
            DecodeErrorKind::TooDeep => "too_deep",
            DecodeErrorKind::BadFrameLength { .. } => "bad_frame_length",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(t) = self.msg_type {
            write!(f, "in {} message", super::MessageType::from(t))?;
            if self.option.is_some() {
                f.write_str(", ")?;
            } else {
                f.write_str(": ")?;
            }
        }
        if let Some(code) = self.option {
            write!(f, "in option {} ({}): ", code, super::option_name(code))?;
        }
        match &self.kind {
            DecodeErrorKind::Truncated { needed, available } => {
                write!(f, "truncated: needed {needed} octets, {available} available")
            }
            DecodeErrorKind::OptionOverrun { declared, available } => write!(
                f,
                "option length {declared} runs past the end of its container ({available} octets left)"
            ),
            DecodeErrorKind::BadLength { len, expected } => {
                write!(f, "length {len} is wrong: expected {expected}")
            }
            DecodeErrorKind::InvalidValue(what) => write!(f, "invalid value: {what}"),
            DecodeErrorKind::TooDeep => f.write_str("options or relays nested too deep"),
            DecodeErrorKind::BadFrameLength { len, min, max } => {
                write!(f, "frame length {len} outside {min}..={max}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Encoding fails only when a value cannot be represented on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// An option body longer than 65535 octets.
    OptionTooLong { code: u16, len: usize },
    /// A transaction id wider than 24 bits.
    TransactionIdTooLarge(u32),
    /// A field whose value cannot be encoded (e.g. a prefix length over 128).
    InvalidValue { code: u16, what: &'static str },
    /// A failover frame longer than the 2-octet length can carry.
    FrameTooLong(usize),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::OptionTooLong { code, len } => {
                write!(f, "option {code} body of {len} octets exceeds 65535")
            }
            EncodeError::TransactionIdTooLarge(x) => {
                write!(f, "transaction id {x:#x} does not fit in 24 bits")
            }
            EncodeError::InvalidValue { code, what } => {
                write!(f, "option {code}: cannot encode {what}")
            }
            EncodeError::FrameTooLong(len) => write!(f, "frame of {len} octets exceeds 65535"),
        }
    }
}

impl std::error::Error for EncodeError {}
