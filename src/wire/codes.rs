//! Code points: message types, option codes, status codes and the RFC 8156
//! enumerations. Names follow the IANA registry.

use std::fmt;

/// DHCPv6 message types (RFC 9915 §7.3) plus the failover types 24–35 (RFC 8156 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Solicit,
    Advertise,
    Request,
    Confirm,
    Renew,
    Rebind,
    Reply,
    Release,
    Decline,
    Reconfigure,
    InformationRequest,
    RelayForw,
    RelayRepl,
    /// RFC 5007 / RFC 5460 leasequery, 14–17.
    LeaseQuery,
    LeaseQueryReply,
    LeaseQueryDone,
    LeaseQueryData,
    StartTls,
    BndUpd,
    BndReply,
    PoolReq,
    PoolResp,
    UpdReq,
    UpdReqAll,
    UpdDone,
    Connect,
    ConnectReply,
    Disconnect,
    State,
    Contact,
    /// Any other code (leasequery, 4o6, unassigned): decodable, never served.
    Other(u8),
}

impl MessageType {
    pub fn code(self) -> u8 {
        use MessageType::*;
        match self {
            Solicit => 1,
            Advertise => 2,
            Request => 3,
            Confirm => 4,
            Renew => 5,
            Rebind => 6,
            Reply => 7,
            Release => 8,
            Decline => 9,
            Reconfigure => 10,
            InformationRequest => 11,
            RelayForw => 12,
            RelayRepl => 13,
            LeaseQuery => 14,
            LeaseQueryReply => 15,
            LeaseQueryDone => 16,
            LeaseQueryData => 17,
            StartTls => 23,
            BndUpd => 24,
            BndReply => 25,
            PoolReq => 26,
            PoolResp => 27,
            UpdReq => 28,
            UpdReqAll => 29,
            UpdDone => 30,
            Connect => 31,
            ConnectReply => 32,
            Disconnect => 33,
            State => 34,
            Contact => 35,
            Other(c) => c,
        }
    }

    pub fn is_relay(self) -> bool {
        matches!(self, MessageType::RelayForw | MessageType::RelayRepl)
    }

    /// True for the RFC 8156 messages 24–35 carried on the failover connection.
    pub fn is_failover(self) -> bool {
        (24..=35).contains(&self.code())
    }

    /// A stable lowercase label for metrics.
    pub fn label(self) -> &'static str {
        use MessageType::*;
        match self {
            Solicit => "solicit",
            Advertise => "advertise",
            Request => "request",
            Confirm => "confirm",
            Renew => "renew",
            Rebind => "rebind",
            Reply => "reply",
            Release => "release",
            Decline => "decline",
            Reconfigure => "reconfigure",
            InformationRequest => "information_request",
            RelayForw => "relay_forw",
            RelayRepl => "relay_repl",
            LeaseQuery => "leasequery",
            LeaseQueryReply => "leasequery_reply",
            LeaseQueryDone => "leasequery_done",
            LeaseQueryData => "leasequery_data",
            StartTls => "starttls",
            BndUpd => "bndupd",
            BndReply => "bndreply",
            PoolReq => "poolreq",
            PoolResp => "poolresp",
            UpdReq => "updreq",
            UpdReqAll => "updreqall",
            UpdDone => "upddone",
            Connect => "connect",
            ConnectReply => "connectreply",
            Disconnect => "disconnect",
            State => "state",
            Contact => "contact",
            Other(_) => "other",
        }
    }
}

impl From<u8> for MessageType {
    fn from(c: u8) -> Self {
        use MessageType::*;
        match c {
            1 => Solicit,
            2 => Advertise,
            3 => Request,
            4 => Confirm,
            5 => Renew,
            6 => Rebind,
            7 => Reply,
            8 => Release,
            9 => Decline,
            10 => Reconfigure,
            11 => InformationRequest,
            12 => RelayForw,
            13 => RelayRepl,
            14 => LeaseQuery,
            15 => LeaseQueryReply,
            16 => LeaseQueryDone,
            17 => LeaseQueryData,
            23 => StartTls,
            24 => BndUpd,
            25 => BndReply,
            26 => PoolReq,
            27 => PoolResp,
            28 => UpdReq,
            29 => UpdReqAll,
            30 => UpdDone,
            31 => Connect,
            32 => ConnectReply,
            33 => Disconnect,
            34 => State,
            35 => Contact,
            c => Other(c),
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageType::Other(c) => write!(f, "type-{c}"),
            t => f.write_str(&t.label().to_ascii_uppercase().replace('_', "-")),
        }
    }
}

/// Option codes (IANA "DHCPv6 Option Codes").
pub mod opt {
    pub const CLIENTID: u16 = 1;
    pub const SERVERID: u16 = 2;
    pub const IA_NA: u16 = 3;
    pub const IA_TA: u16 = 4;
    pub const IAADDR: u16 = 5;
    pub const ORO: u16 = 6;
    pub const PREFERENCE: u16 = 7;
    pub const ELAPSED_TIME: u16 = 8;
    pub const RELAY_MSG: u16 = 9;
    pub const AUTH: u16 = 11;
    pub const UNICAST: u16 = 12;
    pub const STATUS_CODE: u16 = 13;
    pub const RAPID_COMMIT: u16 = 14;
    pub const USER_CLASS: u16 = 15;
    pub const VENDOR_CLASS: u16 = 16;
    pub const VENDOR_OPTS: u16 = 17;
    pub const INTERFACE_ID: u16 = 18;
    pub const RECONF_MSG: u16 = 19;
    /// RFC 8357.
    pub const RELAY_PORT: u16 = 135;
    pub const RECONF_ACCEPT: u16 = 20;
    pub const DNS_SERVERS: u16 = 23;
    pub const DOMAIN_LIST: u16 = 24;
    pub const IA_PD: u16 = 25;
    pub const IAPREFIX: u16 = 26;
    pub const INFORMATION_REFRESH_TIME: u16 = 32;
    /// RFC 4649 Relay Agent Remote-ID (enterprise number, then the id).
    pub const REMOTE_ID: u16 = 37;
    pub const CLIENT_FQDN: u16 = 39;
    /// RFC 5007 OPTION_LQ_QUERY.
    pub const LQ_QUERY: u16 = 44;
    pub const CLIENT_DATA: u16 = 45;
    pub const CLT_TIME: u16 = 46;
    pub const LQ_RELAY_DATA: u16 = 47;
    pub const LQ_CLIENT_LINK: u16 = 48;
    /// RFC 5460 OPTION_RELAY_ID (a relay's DUID).
    pub const RELAY_ID: u16 = 53;
    pub const NTP_SERVER: u16 = 56;
    pub const VSS: u16 = 68;
    pub const CLIENT_LINKLAYER_ADDR: u16 = 79;
    pub const SOL_MAX_RT: u16 = 82;
    pub const INF_MAX_RT: u16 = 83;
    pub const LQ_BASE_TIME: u16 = 100;
    pub const F_BINDING_STATUS: u16 = 114;
    pub const F_CONNECT_FLAGS: u16 = 115;
    pub const F_DNS_REMOVAL_INFO: u16 = 116;
    pub const F_DNS_HOST_NAME: u16 = 117;
    pub const F_DNS_ZONE_NAME: u16 = 118;
    pub const F_DNS_FLAGS: u16 = 119;
    pub const F_EXPIRATION_TIME: u16 = 120;
    pub const F_MAX_UNACKED_BNDUPD: u16 = 121;
    pub const F_MCLT: u16 = 122;
    pub const F_PARTNER_LIFETIME: u16 = 123;
    pub const F_PARTNER_LIFETIME_SENT: u16 = 124;
    pub const F_PARTNER_DOWN_TIME: u16 = 125;
    pub const F_PARTNER_RAW_CLT_TIME: u16 = 126;
    pub const F_PROTOCOL_VERSION: u16 = 127;
    pub const F_KEEPALIVE_TIME: u16 = 128;
    pub const F_RECONFIGURE_DATA: u16 = 129;
    pub const F_RELATIONSHIP_NAME: u16 = 130;
    pub const F_SERVER_FLAGS: u16 = 131;
    pub const F_SERVER_STATE: u16 = 132;
    pub const F_START_TIME_OF_STATE: u16 = 133;
    pub const F_STATE_EXPIRATION_TIME: u16 = 134;
}

/// The registry name of an option code, for error messages and logs.
pub fn option_name(code: u16) -> &'static str {
    use opt::*;
    match code {
        CLIENTID => "CLIENTID",
        SERVERID => "SERVERID",
        IA_NA => "IA_NA",
        IA_TA => "IA_TA",
        IAADDR => "IAADDR",
        ORO => "ORO",
        PREFERENCE => "PREFERENCE",
        ELAPSED_TIME => "ELAPSED_TIME",
        RELAY_MSG => "RELAY_MSG",
        AUTH => "AUTH",
        UNICAST => "UNICAST",
        STATUS_CODE => "STATUS_CODE",
        RAPID_COMMIT => "RAPID_COMMIT",
        USER_CLASS => "USER_CLASS",
        VENDOR_CLASS => "VENDOR_CLASS",
        VENDOR_OPTS => "VENDOR_OPTS",
        INTERFACE_ID => "INTERFACE_ID",
        RECONF_MSG => "RECONF_MSG",
        RELAY_PORT => "RELAY_PORT",
        RECONF_ACCEPT => "RECONF_ACCEPT",
        DNS_SERVERS => "DNS_SERVERS",
        DOMAIN_LIST => "DOMAIN_LIST",
        IA_PD => "IA_PD",
        IAPREFIX => "IAPREFIX",
        INFORMATION_REFRESH_TIME => "INFORMATION_REFRESH_TIME",
        REMOTE_ID => "REMOTE_ID",
        CLIENT_FQDN => "CLIENT_FQDN",
        LQ_QUERY => "LQ_QUERY",
        CLIENT_DATA => "CLIENT_DATA",
        CLT_TIME => "CLT_TIME",
        LQ_RELAY_DATA => "LQ_RELAY_DATA",
        LQ_CLIENT_LINK => "LQ_CLIENT_LINK",
        RELAY_ID => "RELAY_ID",
        NTP_SERVER => "NTP_SERVER",
        VSS => "VSS",
        CLIENT_LINKLAYER_ADDR => "CLIENT_LINKLAYER_ADDR",
        SOL_MAX_RT => "SOL_MAX_RT",
        INF_MAX_RT => "INF_MAX_RT",
        LQ_BASE_TIME => "LQ_BASE_TIME",
        F_BINDING_STATUS => "F_BINDING_STATUS",
        F_CONNECT_FLAGS => "F_CONNECT_FLAGS",
        F_DNS_REMOVAL_INFO => "F_DNS_REMOVAL_INFO",
        F_DNS_HOST_NAME => "F_DNS_HOST_NAME",
        F_DNS_ZONE_NAME => "F_DNS_ZONE_NAME",
        F_DNS_FLAGS => "F_DNS_FLAGS",
        F_EXPIRATION_TIME => "F_EXPIRATION_TIME",
        F_MAX_UNACKED_BNDUPD => "F_MAX_UNACKED_BNDUPD",
        F_MCLT => "F_MCLT",
        F_PARTNER_LIFETIME => "F_PARTNER_LIFETIME",
        F_PARTNER_LIFETIME_SENT => "F_PARTNER_LIFETIME_SENT",
        F_PARTNER_DOWN_TIME => "F_PARTNER_DOWN_TIME",
        F_PARTNER_RAW_CLT_TIME => "F_PARTNER_RAW_CLT_TIME",
        F_PROTOCOL_VERSION => "F_PROTOCOL_VERSION",
        F_KEEPALIVE_TIME => "F_KEEPALIVE_TIME",
        F_RECONFIGURE_DATA => "F_RECONFIGURE_DATA",
        F_RELATIONSHIP_NAME => "F_RELATIONSHIP_NAME",
        F_SERVER_FLAGS => "F_SERVER_FLAGS",
        F_SERVER_STATE => "F_SERVER_STATE",
        F_START_TIME_OF_STATE => "F_START_TIME_OF_STATE",
        F_STATE_EXPIRATION_TIME => "F_STATE_EXPIRATION_TIME",
        _ => "unknown",
    }
}

/// A status code (RFC 9915 §21.13, RFC 5007, RFC 7653, RFC 8156 §5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusCode(pub u16);

impl StatusCode {
    pub const SUCCESS: StatusCode = StatusCode(0);
    pub const UNSPEC_FAIL: StatusCode = StatusCode(1);
    pub const NO_ADDRS_AVAIL: StatusCode = StatusCode(2);
    pub const NO_BINDING: StatusCode = StatusCode(3);
    pub const NOT_ON_LINK: StatusCode = StatusCode(4);
    pub const USE_MULTICAST: StatusCode = StatusCode(5);
    pub const NO_PREFIX_AVAIL: StatusCode = StatusCode(6);
    pub const UNKNOWN_QUERY_TYPE: StatusCode = StatusCode(7);
    pub const MALFORMED_QUERY: StatusCode = StatusCode(8);
    pub const NOT_CONFIGURED: StatusCode = StatusCode(9);
    pub const NOT_ALLOWED: StatusCode = StatusCode(10);
    pub const QUERY_TERMINATED: StatusCode = StatusCode(11);
    pub const NOT_SUPPORTED: StatusCode = StatusCode(14);
    pub const TLS_CONNECTION_REFUSED: StatusCode = StatusCode(15);
    pub const ADDRESS_IN_USE: StatusCode = StatusCode(16);
    pub const CONFIGURATION_CONFLICT: StatusCode = StatusCode(17);
    pub const MISSING_BINDING_INFORMATION: StatusCode = StatusCode(18);
    pub const OUTDATED_BINDING_INFORMATION: StatusCode = StatusCode(19);
    pub const SERVER_SHUTTING_DOWN: StatusCode = StatusCode(20);
    pub const DNS_UPDATE_NOT_SUPPORTED: StatusCode = StatusCode(21);
    pub const EXCESSIVE_TIME_SKEW: StatusCode = StatusCode(22);

    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "Success",
            1 => "UnspecFail",
            2 => "NoAddrsAvail",
            3 => "NoBinding",
            4 => "NotOnLink",
            5 => "UseMulticast",
            6 => "NoPrefixAvail",
            7 => "UnknownQueryType",
            8 => "MalformedQuery",
            9 => "NotConfigured",
            10 => "NotAllowed",
            11 => "QueryTerminated",
            12 => "DataMissing",
            13 => "CatchUpComplete",
            14 => "NotSupported",
            15 => "TLSConnectionRefused",
            16 => "AddressInUse",
            17 => "ConfigurationConflict",
            18 => "MissingBindingInformation",
            19 => "OutdatedBindingInformation",
            20 => "ServerShuttingDown",
            21 => "DNSUpdateNotSupported",
            22 => "ExcessiveTimeSkew",
            _ => "Unknown",
        }
    }
}

/// Lease binding status (RFC 8156 §5.5.1, option 114).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BindingStatus {
    Active = 1,
    Expired = 2,
    Released = 3,
    PendingFree = 4,
    Free = 5,
    FreeBackup = 6,
    Abandoned = 7,
    Reset = 8,
}

impl BindingStatus {
    pub const ALL: [BindingStatus; 8] = [
        BindingStatus::Active,
        BindingStatus::Expired,
        BindingStatus::Released,
        BindingStatus::PendingFree,
        BindingStatus::Free,
        BindingStatus::FreeBackup,
        BindingStatus::Abandoned,
        BindingStatus::Reset,
    ];

    pub fn from_code(c: u8) -> Option<BindingStatus> {
        Self::ALL.get((c as usize).wrapping_sub(1)).copied()
    }

    /// The RFC's name, as the lease dump prints it.
    pub fn name(self) -> &'static str {
        match self {
            BindingStatus::Active => "ACTIVE",
            BindingStatus::Expired => "EXPIRED",
            BindingStatus::Released => "RELEASED",
            BindingStatus::PendingFree => "PENDING-FREE",
            BindingStatus::Free => "FREE",
            BindingStatus::FreeBackup => "FREE-BACKUP",
            BindingStatus::Abandoned => "ABANDONED",
            BindingStatus::Reset => "RESET",
        }
    }
}

/// Failover endpoint state (RFC 8156 §5.5.16, option 132).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServerState {
    Startup = 1,
    Normal = 2,
    CommunicationsInterrupted = 3,
    PartnerDown = 4,
    PotentialConflict = 5,
    Recover = 6,
    RecoverWait = 7,
    RecoverDone = 8,
    ResolutionInterrupted = 9,
    ConflictDone = 10,
}

impl ServerState {
    pub const ALL: [ServerState; 10] = [
        ServerState::Startup,
        ServerState::Normal,
        ServerState::CommunicationsInterrupted,
        ServerState::PartnerDown,
        ServerState::PotentialConflict,
        ServerState::Recover,
        ServerState::RecoverWait,
        ServerState::RecoverDone,
        ServerState::ResolutionInterrupted,
        ServerState::ConflictDone,
    ];

    pub fn from_code(c: u8) -> Option<ServerState> {
        Self::ALL.get((c as usize).wrapping_sub(1)).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            ServerState::Startup => "STARTUP",
            ServerState::Normal => "NORMAL",
            ServerState::CommunicationsInterrupted => "COMMUNICATIONS-INTERRUPTED",
            ServerState::PartnerDown => "PARTNER-DOWN",
            ServerState::PotentialConflict => "POTENTIAL-CONFLICT",
            ServerState::Recover => "RECOVER",
            ServerState::RecoverWait => "RECOVER-WAIT",
            ServerState::RecoverDone => "RECOVER-DONE",
            ServerState::ResolutionInterrupted => "RESOLUTION-INTERRUPTED",
            ServerState::ConflictDone => "CONFLICT-DONE",
        }
    }
}

/// OPTION_F_CONNECT_FLAGS bit F (RFC 8156 §5.5.2).
pub const CONNECT_FLAG_FIXED_PD_LENGTH: u16 = 0x0001;
/// OPTION_F_DNS_FLAGS bits (RFC 8156 §5.5.3.3).
pub const DNS_FLAG_USING_REQUESTED_FQDN: u16 = 0x0008;
pub const DNS_FLAG_SYNTHESIZED_NAME: u16 = 0x0004;
pub const DNS_FLAG_REV_UPTODATE: u16 = 0x0002;
pub const DNS_FLAG_FWD_UPTODATE: u16 = 0x0001;
/// OPTION_F_SERVER_FLAGS bits (RFC 8156 §5.5.15).
pub const SERVER_FLAG_ACK_STARTUP: u8 = 0x04;
pub const SERVER_FLAG_STARTUP: u8 = 0x02;
pub const SERVER_FLAG_COMMUNICATED: u8 = 0x01;
/// OPTION_CLIENT_FQDN flag bits (RFC 4704 §4.1).
pub const FQDN_FLAG_S: u8 = 0x01;
pub const FQDN_FLAG_O: u8 = 0x02;
pub const FQDN_FLAG_N: u8 = 0x04;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_codes_round_trip() {
        for c in 0..=255u8 {
            assert_eq!(MessageType::from(c).code(), c);
        }
        assert!(MessageType::BndUpd.is_failover());
        assert!(!MessageType::Reply.is_failover());
        assert_eq!(MessageType::InformationRequest.to_string(), "INFORMATION-REQUEST");
    }

    #[test]
    fn enums_from_codes() {
        assert_eq!(BindingStatus::from_code(0), None);
        assert_eq!(BindingStatus::from_code(4), Some(BindingStatus::PendingFree));
        assert_eq!(BindingStatus::from_code(9), None);
        assert_eq!(ServerState::from_code(10), Some(ServerState::ConflictDone));
        assert_eq!(ServerState::from_code(11), None);
        for s in ServerState::ALL {
            assert_eq!(ServerState::from_code(s as u8), Some(s));
        }
        assert_eq!(StatusCode::EXCESSIVE_TIME_SKEW.name(), "ExcessiveTimeSkew");
    }
}
