//! The wire codec: DHCPv6 (RFC 9915) messages and options, and the RFC 8156
//! failover messages and TCP framing. Pure functions over byte slices: no IO,
//! no clock, no randomness. Every byte is untrusted.

mod buf;
pub mod codes;
pub mod duid;
pub mod error;
pub mod failover;
pub mod hex;
pub mod message;
pub mod name;
pub mod option;
pub mod peek;

pub use codes::{
    BindingStatus, CONNECT_FLAG_FIXED_PD_LENGTH, FQDN_FLAG_N, FQDN_FLAG_O, FQDN_FLAG_S, MessageType, SERVER_FLAG_ACK_STARTUP, SERVER_FLAG_COMMUNICATED,
    SERVER_FLAG_STARTUP, ServerState, StatusCode, opt, option_name,
};
pub use duid::{Duid, DuidKind};
pub use error::{DecodeError, DecodeErrorKind, EncodeError};
pub use failover::{FAILOVER_PORT, FailoverMessage, FrameDecoder, MAX_FRAME_LEN};
pub use message::{ClientMessage, HOP_COUNT_LIMIT, Message, RelayMessage};
pub use name::DomainName;
pub use option::{
    Auth, ClientFqdn, DhcpOption, IaAddr, IaNa, IaPd, IaPrefix, IaTa, LqQuery, LqRelayData, NtpSuboption,
    Options, Status, VendorClass, VendorOpts,
};

#[cfg(test)]
mod tests;
