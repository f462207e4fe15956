//! DHCPv6 options (RFC 9915 §21 and friends) and the RFC 8156 failover
//! options 114–134, in one enum because they share one code space.
//!
//! Decoding rules: every option is length-checked against its definition,
//! containers are decoded recursively up to `MAX_DEPTH`, unknown codes are kept
//! as raw bytes. Everything that decodes re-encodes to the same octets.

use std::net::Ipv6Addr;

use super::buf::{Put, Reader};
use super::codes::{BindingStatus, ServerState, StatusCode, opt};
use super::duid::Duid;
use super::error::{DecodeError, DecodeErrorKind, EncodeError};
use super::message::Message;
use super::name::DomainName;

/// How deep options and relay messages may nest. RFC 9915's HOP_COUNT_LIMIT
/// is 8 relays; a BNDUPD nests CLIENT_DATA > IA > IAADDR > DNS_REMOVAL_INFO.
pub const MAX_DEPTH: u8 = 24;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaNa {
    pub iaid: u32,
    pub t1: u32,
    pub t2: u32,
    pub options: Options,
}

/// IA_TA is retired by RFC 9915: we decode and re-encode it, never serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaTa {
    pub iaid: u32,
    pub options: Options,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaPd {
    pub iaid: u32,
    pub t1: u32,
    pub t2: u32,
    pub options: Options,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaAddr {
    pub addr: Ipv6Addr,
    pub preferred: u32,
    pub valid: u32,
    pub options: Options,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaPrefix {
    pub preferred: u32,
    pub valid: u32,
    pub prefix_len: u8,
    pub prefix: Ipv6Addr,
    pub options: Options,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: StatusCode,
    pub message: String,
}

impl Status {
    pub fn new(code: StatusCode, message: impl Into<String>) -> Status {
        Status { code, message: message.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub protocol: u8,
    pub algorithm: u8,
    pub rdm: u8,
    pub replay_detection: u64,
    pub info: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorClass {
    pub enterprise: u32,
    pub data: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorOpts {
    pub enterprise: u32,
    /// (sub-option code, data), in order.
    pub options: Vec<(u16, Vec<u8>)>,
}

/// OPTION_CLIENT_FQDN (RFC 4704): flags S/O/N (see `codes::FQDN_FLAG_*`) and a
/// possibly partial or empty name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFqdn {
    pub flags: u8,
    pub name: DomainName,
}

/// OPTION_LQ_RELAY_DATA (RFC 5007 §4.1.2.4): the client's peer address and the
/// relay chain, kept as octets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LqRelayData {
    pub peer_address: Ipv6Addr,
    pub relay_message: Vec<u8>,
}

/// OPTION_LQ_QUERY (RFC 5007 §4.1.2.1): what a LEASEQUERY asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LqQuery {
    pub query_type: u8,
    /// The link the query applies to, or `::`.
    pub link_address: Ipv6Addr,
    pub options: Options,
}

/// Sub-options of OPTION_NTP_SERVER (RFC 5908).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NtpSuboption {
    ServerAddress(Ipv6Addr),
    MulticastAddress(Ipv6Addr),
    ServerFqdn(DomainName),
    Unknown { code: u16, data: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpOption {
    ClientId(Duid),
    ServerId(Duid),
    IaNa(IaNa),
    IaTa(IaTa),
    IaAddr(IaAddr),
    Oro(Vec<u16>),
    Preference(u8),
    /// Hundredths of a second.
    ElapsedTime(u16),
    RelayMsg(Box<Message>),
    Auth(Auth),
    Unicast(Ipv6Addr),
    StatusCode(Status),
    RapidCommit,
    UserClass(Vec<Vec<u8>>),
    VendorClass(VendorClass),
    VendorOpts(VendorOpts),
    InterfaceId(Vec<u8>),
    /// RFC 8357 OPTION_RELAY_PORT: the downstream relay's source port (0: none).
    RelayPort(u16),
    ReconfMsg(u8),
    ReconfAccept,
    DnsServers(Vec<Ipv6Addr>),
    DomainList(Vec<DomainName>),
    IaPd(IaPd),
    IaPrefix(IaPrefix),
    InformationRefreshTime(u32),
    ClientFqdn(ClientFqdn),
    ClientData(Options),
    /// Relative to OPTION_LQ_BASE_TIME (seconds before it).
    CltTime(u32),
    LqRelayData(LqRelayData),
    LqQuery(LqQuery),
    /// OPTION_LQ_CLIENT_LINK: the links a client has bindings on.
    LqClientLink(Vec<Ipv6Addr>),
    NtpServer(Vec<NtpSuboption>),
    /// OPTION_VSS (RFC 6607): type and VPN identifier.
    Vss { vss_type: u8, info: Vec<u8> },
    ClientLinkLayerAddr { hw_type: u16, address: Vec<u8> },
    SolMaxRt(u32),
    InfMaxRt(u32),
    /// Absolute time (seconds since 2000-01-01 mod 2^32).
    LqBaseTime(u32),
    // RFC 8156 §5.5
    BindingStatus(BindingStatus),
    ConnectFlags(u16),
    DnsRemovalInfo(Options),
    DnsHostName(DomainName),
    DnsZoneName(DomainName),
    DnsFlags(u16),
    ExpirationTime(u32),
    MaxUnackedBndupd(u32),
    Mclt(u32),
    PartnerLifetime(u32),
    PartnerLifetimeSent(u32),
    PartnerDownTime(u32),
    PartnerRawCltTime(u32),
    ProtocolVersion { major: u16, minor: u16 },
    KeepaliveTime(u32),
    ReconfigureData { time: u32, key: Vec<u8> },
    RelationshipName(String),
    ServerFlags(u8),
    ServerState(ServerState),
    StartTimeOfState(u32),
    StateExpirationTime(u32),
    /// Any other option, kept verbatim.
    Unknown { code: u16, data: Vec<u8> },
}

impl DhcpOption {
    pub fn code(&self) -> u16 {
        use DhcpOption::*;
        match self {
            ClientId(_) => opt::CLIENTID,
            ServerId(_) => opt::SERVERID,
            IaNa(_) => opt::IA_NA,
            IaTa(_) => opt::IA_TA,
            IaAddr(_) => opt::IAADDR,
            Oro(_) => opt::ORO,
            Preference(_) => opt::PREFERENCE,
            ElapsedTime(_) => opt::ELAPSED_TIME,
            RelayMsg(_) => opt::RELAY_MSG,
            Auth(_) => opt::AUTH,
            Unicast(_) => opt::UNICAST,
            StatusCode(_) => opt::STATUS_CODE,
            RapidCommit => opt::RAPID_COMMIT,
            UserClass(_) => opt::USER_CLASS,
            VendorClass(_) => opt::VENDOR_CLASS,
            VendorOpts(_) => opt::VENDOR_OPTS,
            InterfaceId(_) => opt::INTERFACE_ID,
            RelayPort(_) => opt::RELAY_PORT,
            ReconfMsg(_) => opt::RECONF_MSG,
            ReconfAccept => opt::RECONF_ACCEPT,
            DnsServers(_) => opt::DNS_SERVERS,
            DomainList(_) => opt::DOMAIN_LIST,
            IaPd(_) => opt::IA_PD,
            IaPrefix(_) => opt::IAPREFIX,
            InformationRefreshTime(_) => opt::INFORMATION_REFRESH_TIME,
            ClientFqdn(_) => opt::CLIENT_FQDN,
            ClientData(_) => opt::CLIENT_DATA,
            CltTime(_) => opt::CLT_TIME,
            LqRelayData(_) => opt::LQ_RELAY_DATA,
            LqQuery(_) => opt::LQ_QUERY,
            LqClientLink(_) => opt::LQ_CLIENT_LINK,
            NtpServer(_) => opt::NTP_SERVER,
            Vss { .. } => opt::VSS,
            ClientLinkLayerAddr { .. } => opt::CLIENT_LINKLAYER_ADDR,
            SolMaxRt(_) => opt::SOL_MAX_RT,
            InfMaxRt(_) => opt::INF_MAX_RT,
            LqBaseTime(_) => opt::LQ_BASE_TIME,
            BindingStatus(_) => opt::F_BINDING_STATUS,
            ConnectFlags(_) => opt::F_CONNECT_FLAGS,
            DnsRemovalInfo(_) => opt::F_DNS_REMOVAL_INFO,
            DnsHostName(_) => opt::F_DNS_HOST_NAME,
            DnsZoneName(_) => opt::F_DNS_ZONE_NAME,
            DnsFlags(_) => opt::F_DNS_FLAGS,
            ExpirationTime(_) => opt::F_EXPIRATION_TIME,
            MaxUnackedBndupd(_) => opt::F_MAX_UNACKED_BNDUPD,
            Mclt(_) => opt::F_MCLT,
            PartnerLifetime(_) => opt::F_PARTNER_LIFETIME,
            PartnerLifetimeSent(_) => opt::F_PARTNER_LIFETIME_SENT,
            PartnerDownTime(_) => opt::F_PARTNER_DOWN_TIME,
            PartnerRawCltTime(_) => opt::F_PARTNER_RAW_CLT_TIME,
            ProtocolVersion { .. } => opt::F_PROTOCOL_VERSION,
            KeepaliveTime(_) => opt::F_KEEPALIVE_TIME,
            ReconfigureData { .. } => opt::F_RECONFIGURE_DATA,
            RelationshipName(_) => opt::F_RELATIONSHIP_NAME,
            ServerFlags(_) => opt::F_SERVER_FLAGS,
            ServerState(_) => opt::F_SERVER_STATE,
            StartTimeOfState(_) => opt::F_START_TIME_OF_STATE,
            StateExpirationTime(_) => opt::F_STATE_EXPIRATION_TIME,
            Unknown { code, .. } => *code,
        }
    }

    /// Decode one option body whose header has already been read.
    fn decode_body(code: u16, body: &[u8], depth: u8) -> Result<DhcpOption, DecodeError> {
        use DhcpOption as O;
        let mut r = Reader::new(body);
        let len = body.len();
        let exact = |n: usize, expected: &'static str| {
            if len == n { Ok(()) } else { Err(bad_len(len, expected)) }
        };
        let at_least = |n: usize, expected: &'static str| {
            if len >= n { Ok(()) } else { Err(bad_len(len, expected)) }
        };
        let o = match code {
            opt::CLIENTID => O::ClientId(Duid::from_bytes(body)?),
            opt::SERVERID => O::ServerId(Duid::from_bytes(body)?),
            opt::IA_NA => {
                at_least(12, "at least 12 octets")?;
                O::IaNa(IaNa {
                    iaid: r.u32()?,
                    t1: r.u32()?,
                    t2: r.u32()?,
                    options: Options::decode_nested(r.rest(), depth)?,
                })
            }
            opt::IA_TA => {
                at_least(4, "at least 4 octets")?;
                O::IaTa(IaTa { iaid: r.u32()?, options: Options::decode_nested(r.rest(), depth)? })
            }
            opt::IAADDR => {
                at_least(24, "at least 24 octets")?;
                O::IaAddr(IaAddr {
                    addr: r.ipv6()?,
                    preferred: r.u32()?,
                    valid: r.u32()?,
                    options: Options::decode_nested(r.rest(), depth)?,
                })
            }
            opt::ORO => {
                if !len.is_multiple_of(2) {
                    return Err(bad_len(len, "a multiple of 2"));
                }
                O::Oro(body.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect())
            }
            opt::PREFERENCE => {
                exact(1, "1")?;
                O::Preference(r.u8()?)
            }
            opt::ELAPSED_TIME => {
                exact(2, "2")?;
                O::ElapsedTime(r.u16()?)
            }
            opt::RELAY_MSG => O::RelayMsg(Box::new(Message::decode_nested(body, depth + 1)?)),
            opt::AUTH => {
                at_least(11, "at least 11 octets")?;
                O::Auth(Auth {
                    protocol: r.u8()?,
                    algorithm: r.u8()?,
                    rdm: r.u8()?,
                    replay_detection: r.u64()?,
                    info: r.rest().to_vec(),
                })
            }
            opt::UNICAST => {
                exact(16, "16")?;
                O::Unicast(r.ipv6()?)
            }
            opt::STATUS_CODE => {
                at_least(2, "at least 2 octets")?;
                let code = StatusCode(r.u16()?);
                let message = std::str::from_utf8(r.rest())
                    .map_err(|_| DecodeError::invalid("status message is not UTF-8"))?;
                O::StatusCode(Status { code, message: message.to_owned() })
            }
            opt::RAPID_COMMIT => {
                exact(0, "0")?;
                O::RapidCommit
            }
            opt::USER_CLASS => O::UserClass(decode_opaque_list(&mut r)?),
            opt::VENDOR_CLASS => {
                at_least(4, "at least 4 octets")?;
                O::VendorClass(VendorClass {
                    enterprise: r.u32()?,
                    data: decode_opaque_list(&mut r)?,
                })
            }
            opt::VENDOR_OPTS => {
                at_least(4, "at least 4 octets")?;
                let enterprise = r.u32()?;
                let mut options = Vec::new();
                while !r.is_empty() {
                    let (c, d) = read_tlv(&mut r)?;
                    options.push((c, d.to_vec()));
                }
                O::VendorOpts(VendorOpts { enterprise, options })
            }
            opt::INTERFACE_ID => O::InterfaceId(body.to_vec()),
            opt::RELAY_PORT => {
                exact(2, "2")?;
                O::RelayPort(r.u16()?)
            }
            opt::RECONF_MSG => {
                exact(1, "1")?;
                O::ReconfMsg(r.u8()?)
            }
            opt::RECONF_ACCEPT => {
                exact(0, "0")?;
                O::ReconfAccept
            }
            opt::DNS_SERVERS => O::DnsServers(decode_addresses(body)?),
            opt::DOMAIN_LIST => {
                let mut names = Vec::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (name, used) = DomainName::decode_prefix(rest)?;
                    names.push(name);
                    rest = &rest[used..];
                }
                O::DomainList(names)
            }
            opt::IA_PD => {
                at_least(12, "at least 12 octets")?;
                O::IaPd(IaPd {
                    iaid: r.u32()?,
                    t1: r.u32()?,
                    t2: r.u32()?,
                    options: Options::decode_nested(r.rest(), depth)?,
                })
            }
            opt::IAPREFIX => {
                at_least(25, "at least 25 octets")?;
                let preferred = r.u32()?;
                let valid = r.u32()?;
                let prefix_len = r.u8()?;
                if prefix_len > 128 {
                    return Err(DecodeError::invalid("prefix length over 128"));
                }
                O::IaPrefix(IaPrefix {
                    preferred,
                    valid,
                    prefix_len,
                    prefix: r.ipv6()?,
                    options: Options::decode_nested(r.rest(), depth)?,
                })
            }
            opt::INFORMATION_REFRESH_TIME => O::InformationRefreshTime(u32_exact(&mut r, len)?),
            opt::CLIENT_FQDN => {
                at_least(1, "at least 1 octet")?;
                let flags = r.u8()?;
                O::ClientFqdn(ClientFqdn { flags, name: DomainName::decode(r.rest())? })
            }
            opt::CLIENT_DATA => O::ClientData(Options::decode_nested(body, depth)?),
            opt::CLT_TIME => O::CltTime(u32_exact(&mut r, len)?),
            opt::LQ_RELAY_DATA => {
                at_least(16, "at least 16 octets")?;
                O::LqRelayData(LqRelayData {
                    peer_address: r.ipv6()?,
                    relay_message: r.rest().to_vec(),
                })
            }
            opt::LQ_QUERY => {
                at_least(17, "at least 17 octets")?;
                O::LqQuery(LqQuery { query_type: r.u8()?, link_address: r.ipv6()?, options: Options::decode_nested(r.rest(), depth)? })
            }
            opt::LQ_CLIENT_LINK => {
                if len == 0 {
                    return Err(bad_len(len, "a positive multiple of 16"));
                }
                O::LqClientLink(decode_addresses(body)?)
            }
            opt::NTP_SERVER => {
                let mut subs = Vec::new();
                while !r.is_empty() {
                    let (c, d) = read_tlv(&mut r)?;
                    let addr16 = |d: &[u8]| -> Result<Ipv6Addr, DecodeError> {
                        let a: [u8; 16] = d.try_into().map_err(|_| bad_len(d.len(), "16"))?;
                        Ok(Ipv6Addr::from(a))
                    };
                    subs.push(match c {
                        1 => NtpSuboption::ServerAddress(addr16(d)?),
                        2 => NtpSuboption::MulticastAddress(addr16(d)?),
                        3 => NtpSuboption::ServerFqdn(DomainName::decode(d)?),
                        code => NtpSuboption::Unknown { code, data: d.to_vec() },
                    });
                }
                O::NtpServer(subs)
            }
            opt::VSS => {
                at_least(1, "at least 1 octet")?;
                O::Vss { vss_type: r.u8()?, info: r.rest().to_vec() }
            }
            opt::CLIENT_LINKLAYER_ADDR => {
                at_least(2, "at least 2 octets")?;
                O::ClientLinkLayerAddr { hw_type: r.u16()?, address: r.rest().to_vec() }
            }
            opt::SOL_MAX_RT => O::SolMaxRt(u32_exact(&mut r, len)?),
            opt::INF_MAX_RT => O::InfMaxRt(u32_exact(&mut r, len)?),
            opt::LQ_BASE_TIME => O::LqBaseTime(u32_exact(&mut r, len)?),
            opt::F_BINDING_STATUS => {
                exact(1, "1")?;
                // A value this version does not know is kept raw: the
                // binding it describes is refused, not the whole message.
                match BindingStatus::from_code(r.u8()?) {
                    Some(s) => O::BindingStatus(s),
                    None => O::Unknown { code, data: body.to_vec() },
                }
            }
            opt::F_CONNECT_FLAGS => {
                exact(2, "2")?;
                O::ConnectFlags(r.u16()?)
            }
            opt::F_DNS_REMOVAL_INFO => O::DnsRemovalInfo(Options::decode_nested(body, depth)?),
            opt::F_DNS_HOST_NAME => O::DnsHostName(DomainName::decode(body)?),
            opt::F_DNS_ZONE_NAME => O::DnsZoneName(DomainName::decode(body)?),
            opt::F_DNS_FLAGS => {
                exact(2, "2")?;
                O::DnsFlags(r.u16()?)
            }
            opt::F_EXPIRATION_TIME => O::ExpirationTime(u32_exact(&mut r, len)?),
            opt::F_MAX_UNACKED_BNDUPD => O::MaxUnackedBndupd(u32_exact(&mut r, len)?),
            opt::F_MCLT => O::Mclt(u32_exact(&mut r, len)?),
            opt::F_PARTNER_LIFETIME => O::PartnerLifetime(u32_exact(&mut r, len)?),
            opt::F_PARTNER_LIFETIME_SENT => O::PartnerLifetimeSent(u32_exact(&mut r, len)?),
            opt::F_PARTNER_DOWN_TIME => O::PartnerDownTime(u32_exact(&mut r, len)?),
            opt::F_PARTNER_RAW_CLT_TIME => O::PartnerRawCltTime(u32_exact(&mut r, len)?),
            opt::F_PROTOCOL_VERSION => {
                exact(4, "4")?;
                O::ProtocolVersion { major: r.u16()?, minor: r.u16()? }
            }
            opt::F_KEEPALIVE_TIME => O::KeepaliveTime(u32_exact(&mut r, len)?),
            opt::F_RECONFIGURE_DATA => {
                at_least(4, "at least 4 octets")?;
                O::ReconfigureData { time: r.u32()?, key: r.rest().to_vec() }
            }
            opt::F_RELATIONSHIP_NAME => O::RelationshipName(
                std::str::from_utf8(body)
                    .map_err(|_| DecodeError::invalid("relationship name is not UTF-8"))?
                    .to_owned(),
            ),
            opt::F_SERVER_FLAGS => {
                exact(1, "1")?;
                O::ServerFlags(r.u8()?)
            }
            opt::F_SERVER_STATE => {
                exact(1, "1")?;
                // Unknown values kept raw (the STATE is ignored, the
                // connection is not dropped).
                match ServerState::from_code(r.u8()?) {
                    Some(s) => O::ServerState(s),
                    None => O::Unknown { code, data: body.to_vec() },
                }
            }
            opt::F_START_TIME_OF_STATE => O::StartTimeOfState(u32_exact(&mut r, len)?),
            opt::F_STATE_EXPIRATION_TIME => O::StateExpirationTime(u32_exact(&mut r, len)?),
            code => O::Unknown { code, data: body.to_vec() },
        };
        Ok(o)
    }

    /// Append this option (header and body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        use DhcpOption as O;
        let code = self.code();
        let start = out.len();
        out.put_u16(code);
        out.put_u16(0); // patched below
        match self {
            O::ClientId(d) | O::ServerId(d) => out.extend_from_slice(d.as_bytes()),
            O::IaNa(ia) => {
                out.put_u32(ia.iaid);
                out.put_u32(ia.t1);
                out.put_u32(ia.t2);
                ia.options.encode(out)?;
            }
            O::IaTa(ia) => {
                out.put_u32(ia.iaid);
                ia.options.encode(out)?;
            }
            O::IaAddr(a) => {
                out.put_ipv6(&a.addr);
                out.put_u32(a.preferred);
                out.put_u32(a.valid);
                a.options.encode(out)?;
            }
            O::Oro(codes) => codes.iter().for_each(|c| out.put_u16(*c)),
            O::Preference(p) => out.put_u8(*p),
            O::ElapsedTime(t) => out.put_u16(*t),
            O::RelayMsg(m) => m.encode_into(out)?,
            O::Auth(a) => {
                out.put_u8(a.protocol);
                out.put_u8(a.algorithm);
                out.put_u8(a.rdm);
                out.extend_from_slice(&a.replay_detection.to_be_bytes());
                out.extend_from_slice(&a.info);
            }
            O::Unicast(a) => out.put_ipv6(a),
            O::StatusCode(s) => {
                out.put_u16(s.code.0);
                out.extend_from_slice(s.message.as_bytes());
            }
            O::RapidCommit | O::ReconfAccept => {}
            O::UserClass(items) => encode_opaque_list(out, code, items)?,
            O::VendorClass(v) => {
                out.put_u32(v.enterprise);
                encode_opaque_list(out, code, &v.data)?;
            }
            O::VendorOpts(v) => {
                out.put_u32(v.enterprise);
                for (c, d) in &v.options {
                    out.put_u16(*c);
                    out.put_u16(u16_len(code, d.len())?);
                    out.extend_from_slice(d);
                }
            }
            O::InterfaceId(d) => out.extend_from_slice(d),
            O::RelayPort(p) => out.put_u16(*p),
            O::ReconfMsg(t) => out.put_u8(*t),
            O::DnsServers(addrs) => addrs.iter().for_each(|a| out.put_ipv6(a)),
            O::DomainList(names) => {
                // Names are delimited by their root label: only the last may
                // be partial, and none may be empty, or decoding would differ.
                for (i, n) in names.iter().enumerate() {
                    if n.is_empty() || (i + 1 < names.len() && !n.is_fully_qualified()) {
                        return Err(EncodeError::InvalidValue {
                            code,
                            what: "an empty or non-final partial name in a domain list",
                        });
                    }
                    out.extend_from_slice(n.as_wire());
                }
            }
            O::IaPd(ia) => {
                out.put_u32(ia.iaid);
                out.put_u32(ia.t1);
                out.put_u32(ia.t2);
                ia.options.encode(out)?;
            }
            O::IaPrefix(p) => {
                if p.prefix_len > 128 {
                    return Err(EncodeError::InvalidValue { code, what: "prefix length over 128" });
                }
                out.put_u32(p.preferred);
                out.put_u32(p.valid);
                out.put_u8(p.prefix_len);
                out.put_ipv6(&p.prefix);
                p.options.encode(out)?;
            }
            O::ClientFqdn(f) => {
                out.put_u8(f.flags);
                out.extend_from_slice(f.name.as_wire());
            }
            O::ClientData(opts) | O::DnsRemovalInfo(opts) => opts.encode(out)?,
            O::LqRelayData(d) => {
                out.put_ipv6(&d.peer_address);
                out.extend_from_slice(&d.relay_message);
            }
            O::LqQuery(q) => {
                out.put_u8(q.query_type);
                out.put_ipv6(&q.link_address);
                q.options.encode(out)?;
            }
            O::LqClientLink(links) => links.iter().for_each(|a| out.put_ipv6(a)),
            O::NtpServer(subs) => {
                for s in subs {
                    let octets;
                    let (c, d): (u16, &[u8]) = match s {
                        NtpSuboption::ServerAddress(a) => {
                            octets = a.octets();
                            (1, &octets)
                        }
                        NtpSuboption::MulticastAddress(a) => {
                            octets = a.octets();
                            (2, &octets)
                        }
                        NtpSuboption::ServerFqdn(n) => (3, n.as_wire()),
                        NtpSuboption::Unknown { code, data } => (*code, data),
                    };
                    out.put_u16(c);
                    out.put_u16(u16_len(code, d.len())?);
                    out.extend_from_slice(d);
                }
            }
            O::Vss { vss_type, info } => {
                out.put_u8(*vss_type);
                out.extend_from_slice(info);
            }
            O::ClientLinkLayerAddr { hw_type, address } => {
                out.put_u16(*hw_type);
                out.extend_from_slice(address);
            }
            O::InformationRefreshTime(v)
            | O::CltTime(v)
            | O::SolMaxRt(v)
            | O::InfMaxRt(v)
            | O::LqBaseTime(v)
            | O::ExpirationTime(v)
            | O::MaxUnackedBndupd(v)
            | O::Mclt(v)
            | O::PartnerLifetime(v)
            | O::PartnerLifetimeSent(v)
            | O::PartnerDownTime(v)
            | O::PartnerRawCltTime(v)
            | O::KeepaliveTime(v)
            | O::StartTimeOfState(v)
            | O::StateExpirationTime(v) => out.put_u32(*v),
            O::BindingStatus(s) => out.put_u8(*s as u8),
            O::ConnectFlags(f) | O::DnsFlags(f) => out.put_u16(*f),
            O::DnsHostName(n) | O::DnsZoneName(n) => out.extend_from_slice(n.as_wire()),
            O::ProtocolVersion { major, minor } => {
                out.put_u16(*major);
                out.put_u16(*minor);
            }
            O::ReconfigureData { time, key } => {
                out.put_u32(*time);
                out.extend_from_slice(key);
            }
            O::RelationshipName(s) => out.extend_from_slice(s.as_bytes()),
            O::ServerFlags(f) => out.put_u8(*f),
            O::ServerState(s) => out.put_u8(*s as u8),
            O::Unknown { data, .. } => out.extend_from_slice(data),
        }
        let body_len = u16_len(code, out.len() - start - 4)?;
        out[start + 2..start + 4].copy_from_slice(&body_len.to_be_bytes());
        Ok(())
    }
}

/// An ordered list of options. Order and repeats are kept exactly as received.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options(pub Vec<DhcpOption>);

impl Options {
    pub fn new() -> Options {
        Options(Vec::new())
    }

    /// Decode a top-level option area.
    pub fn decode(data: &[u8]) -> Result<Options, DecodeError> {
        Self::decode_nested(data, 0)
    }

    pub(crate) fn decode_nested(data: &[u8], depth: u8) -> Result<Options, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::new(DecodeErrorKind::TooDeep));
        }
        let mut r = Reader::new(data);
        let mut v = Vec::new();
        while !r.is_empty() {
            let (code, body) = read_tlv(&mut r)?;
            let o = DhcpOption::decode_body(code, body, depth + 1).map_err(|e| e.in_option(code))?;
            v.push(o);
        }
        Ok(Options(v))
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.0.iter().try_for_each(|o| o.encode(out))
    }

    pub fn push(&mut self, o: DhcpOption) {
        self.0.push(o);
    }

    pub fn iter(&self) -> std::slice::Iter<'_, DhcpOption> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first option with this code.
    pub fn get(&self, code: u16) -> Option<&DhcpOption> {
        self.0.iter().find(|o| o.code() == code)
    }

    pub fn count(&self, code: u16) -> usize {
        self.0.iter().filter(|o| o.code() == code).count()
    }

    pub fn has(&self, code: u16) -> bool {
        self.get(code).is_some()
    }

    pub fn client_id(&self) -> Option<&Duid> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::ClientId(d) => Some(d),
            _ => None,
        })
    }

    pub fn server_id(&self) -> Option<&Duid> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::ServerId(d) => Some(d),
            _ => None,
        })
    }

    pub fn ia_nas(&self) -> impl Iterator<Item = &IaNa> {
        self.0.iter().filter_map(|o| match o {
            DhcpOption::IaNa(ia) => Some(ia),
            _ => None,
        })
    }

    pub fn ia_pds(&self) -> impl Iterator<Item = &IaPd> {
        self.0.iter().filter_map(|o| match o {
            DhcpOption::IaPd(ia) => Some(ia),
            _ => None,
        })
    }

    pub fn ia_addrs(&self) -> impl Iterator<Item = &IaAddr> {
        self.0.iter().filter_map(|o| match o {
            DhcpOption::IaAddr(a) => Some(a),
            _ => None,
        })
    }

    pub fn ia_prefixes(&self) -> impl Iterator<Item = &IaPrefix> {
        self.0.iter().filter_map(|o| match o {
            DhcpOption::IaPrefix(p) => Some(p),
            _ => None,
        })
    }

    pub fn oro(&self) -> &[u16] {
        self.0
            .iter()
            .find_map(|o| match o {
                DhcpOption::Oro(c) => Some(c.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }

    pub fn status(&self) -> Option<&Status> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::StatusCode(s) => Some(s),
            _ => None,
        })
    }

    pub fn relay_msg(&self) -> Option<&Message> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::RelayMsg(m) => Some(&**m),
            _ => None,
        })
    }

    /// RFC 8357: the Relay Source Port option of a relay message.
    pub fn relay_port(&self) -> Option<u16> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::RelayPort(p) => Some(*p),
            _ => None,
        })
    }

    pub fn interface_id(&self) -> Option<&[u8]> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::InterfaceId(d) => Some(d.as_slice()),
            _ => None,
        })
    }

    pub fn client_fqdn(&self) -> Option<&ClientFqdn> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::ClientFqdn(f) => Some(f),
            _ => None,
        })
    }

    /// The first u32 carried by an option of this code (time options and the like).
    pub fn u32_of(&self, code: u16) -> Option<u32> {
        self.0.iter().find(|o| o.code() == code).and_then(DhcpOption::as_u32)
    }
}

impl DhcpOption {
    /// The value of a single-u32 option.
    pub fn as_u32(&self) -> Option<u32> {
        use DhcpOption as O;
        match self {
            O::InformationRefreshTime(v)
            | O::CltTime(v)
            | O::SolMaxRt(v)
            | O::InfMaxRt(v)
            | O::LqBaseTime(v)
            | O::ExpirationTime(v)
            | O::MaxUnackedBndupd(v)
            | O::Mclt(v)
            | O::PartnerLifetime(v)
            | O::PartnerLifetimeSent(v)
            | O::PartnerDownTime(v)
            | O::PartnerRawCltTime(v)
            | O::KeepaliveTime(v)
            | O::StartTimeOfState(v)
            | O::StateExpirationTime(v) => Some(*v),
            _ => None,
        }
    }
}

impl From<Vec<DhcpOption>> for Options {
    fn from(v: Vec<DhcpOption>) -> Self {
        Options(v)
    }
}

impl<'a> IntoIterator for &'a Options {
    type Item = &'a DhcpOption;
    type IntoIter = std::slice::Iter<'a, DhcpOption>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

fn bad_len(len: usize, expected: &'static str) -> DecodeError {
    DecodeError::new(DecodeErrorKind::BadLength { len, expected })
}

fn u32_exact(r: &mut Reader<'_>, len: usize) -> Result<u32, DecodeError> {
    if len != 4 {
        return Err(bad_len(len, "4"));
    }
    r.u32()
}

fn u16_len(code: u16, len: usize) -> Result<u16, EncodeError> {
    u16::try_from(len).map_err(|_| EncodeError::OptionTooLong { code, len })
}

/// Read one `code | len | data` triple.
fn read_tlv<'a>(r: &mut Reader<'a>) -> Result<(u16, &'a [u8]), DecodeError> {
    let code = r.u16()?;
    let len = r.u16().map_err(|e| e.in_option(code))? as usize;
    if len > r.remaining() {
        return Err(DecodeError::new(DecodeErrorKind::OptionOverrun {
            declared: len,
            available: r.remaining(),
        })
        .in_option(code));
    }
    Ok((code, r.take(len)?))
}

/// `len u16 | data` items filling the rest (USER_CLASS, VENDOR_CLASS).
fn decode_opaque_list(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, DecodeError> {
    let mut items = Vec::new();
    while !r.is_empty() {
        let n = r.u16()? as usize;
        items.push(r.take(n)?.to_vec());
    }
    Ok(items)
}

fn encode_opaque_list(out: &mut Vec<u8>, code: u16, items: &[Vec<u8>]) -> Result<(), EncodeError> {
    for i in items {
        out.put_u16(u16_len(code, i.len())?);
        out.extend_from_slice(i);
    }
    Ok(())
}

fn decode_addresses(body: &[u8]) -> Result<Vec<Ipv6Addr>, DecodeError> {
    if !body.len().is_multiple_of(16) {
        return Err(bad_len(body.len(), "a multiple of 16"));
    }
    Ok(body
        .chunks_exact(16)
        .map(|c| {
            let mut a = [0u8; 16];
            a.copy_from_slice(c);
            Ipv6Addr::from(a)
        })
        .collect())
}
