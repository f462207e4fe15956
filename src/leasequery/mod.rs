//! Leasequery (RFC 5007) and Bulk Leasequery (RFC 5460), without IO: a
//! LEASEQUERY taken apart and checked, the links of the configuration, which
//! leases a query selects, and the messages that answer it. The runtime
//! (`runtime::leasequery`) carries the datagrams and TCP streams and asks the
//! shards, each of which looks in its own table.

use std::net::Ipv6Addr;

use crate::lease::{Lease, LeaseKey, Time};
use crate::pool::Prefix;
use crate::server::settings::Subnet;
use crate::wire::{ClientMessage, DhcpOption, Duid, IaAddr, IaPrefix, LqRelayData, Message, MessageType, Options, Status, StatusCode, opt};

/// RFC 5007 §4.1.2.1 and RFC 5460 §5.3 query types.
pub const QUERY_BY_ADDRESS: u8 = 1;
pub const QUERY_BY_CLIENTID: u8 = 2;
pub const QUERY_BY_RELAY_ID: u8 = 3;
pub const QUERY_BY_LINK_ADDRESS: u8 = 4;
pub const QUERY_BY_REMOTE_ID: u8 = 5;

/// What a query asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The client holding this address, or a delegated prefix containing it.
    Address(Ipv6Addr),
    Client(Duid),
    /// Bindings last relayed by the relay with this DUID (OPTION_RELAY_ID).
    RelayId(Vec<u8>),
    /// Bindings on the query's link.
    Link,
    /// Bindings last relayed with this OPTION_REMOTE_ID (enterprise number first).
    RemoteId(Vec<u8>),
}

impl Target {
    /// RFC 5460 §4: these are refused over UDP.
    pub fn bulk_only(&self) -> bool {
        matches!(self, Target::RelayId(_) | Target::Link | Target::RemoteId(_))
    }
}

/// A checked LEASEQUERY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub xid: u32,
    pub requestor: Duid,
    pub target: Target,
    /// The query's link-address; None for `::`.
    pub link: Option<Ipv6Addr>,
    /// The options asked for each client (the ORO inside OPTION_LQ_QUERY).
    pub oro: Vec<u16>,
}

/// A LEASEQUERY as the server takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// RFC 5007 §4.2.1: dropped without an answer.
    Discard(&'static str),
    /// Answered by a status code alone.
    Refused { xid: u32, requestor: Duid, status: StatusCode, text: &'static str },
    Query(Query),
}

impl Parsed {
    /// Turn a query into a refusal (the requestor is not allowed).
    pub fn refuse(self, status: StatusCode, text: &'static str) -> Parsed {
        match self {
            Parsed::Query(q) => Parsed::Refused { xid: q.xid, requestor: q.requestor, status, text },
            Parsed::Refused { xid, requestor, .. } => Parsed::Refused { xid, requestor, status, text },
            d => d,
        }
    }
}

fn raw_option(o: &Options, code: u16) -> Option<&[u8]> {
    o.iter().find_map(|x| match x {
        DhcpOption::Unknown { code: c, data } if *c == code => Some(data.as_slice()),
        _ => None,
    })
}

/// RFC 5007 §4.2.1 and §4.4.1, RFC 5460 §4: what a message asks, or why
/// it gets no answer or a refusal. `tcp`: it came on a Bulk Leasequery
/// connection.
pub fn parse(msg: &Message, server: &Duid, tcp: bool) -> Parsed {
    let Message::Client(c) = msg else { return Parsed::Discard("a relayed LEASEQUERY") };
    if c.msg_type != MessageType::LeaseQuery {
        return Parsed::Discard("not a LEASEQUERY");
    }
    let Some(requestor) = c.options.client_id().cloned() else { return Parsed::Discard("no client identifier") };
    if c.options.server_id().is_some_and(|s| s != server) {
        return Parsed::Discard("another server's identifier");
    }
    let Some(q) = c.options.iter().find_map(|o| match o {
        DhcpOption::LqQuery(q) => Some(q),
        _ => None,
    }) else {
        return Parsed::Discard("no OPTION_LQ_QUERY");
    };
    let xid = c.transaction_id;
    let refused = |status, text| Parsed::Refused { xid, requestor: requestor.clone(), status, text };
    let malformed = |text| refused(StatusCode::MALFORMED_QUERY, text);
    let link = (!q.link_address.is_unspecified()).then_some(q.link_address);
    let target = match q.query_type {
        QUERY_BY_ADDRESS => match q.options.ia_addrs().next() {
            Some(a) => Target::Address(a.addr),
            None => return malformed("QUERY_BY_ADDRESS needs an OPTION_IAADDR"),
        },
        QUERY_BY_CLIENTID => match q.options.client_id() {
            Some(d) => Target::Client(d.clone()),
            None => return malformed("QUERY_BY_CLIENTID needs an OPTION_CLIENTID"),
        },
        QUERY_BY_RELAY_ID => match raw_option(&q.options, opt::RELAY_ID) {
            Some(d) if !d.is_empty() => Target::RelayId(d.to_vec()),
            _ => return malformed("QUERY_BY_RELAY_ID needs an OPTION_RELAY_ID"),
        },
        QUERY_BY_LINK_ADDRESS if link.is_none() => return malformed("QUERY_BY_LINK_ADDRESS needs a link-address"),
        QUERY_BY_LINK_ADDRESS => Target::Link,
        QUERY_BY_REMOTE_ID => match raw_option(&q.options, opt::REMOTE_ID) {
            Some(d) if d.len() > 4 => Target::RemoteId(d.to_vec()),
            _ => return malformed("QUERY_BY_REMOTE_ID needs an OPTION_REMOTE_ID"),
        },
        _ => return refused(StatusCode::UNKNOWN_QUERY_TYPE, "unknown query type"),
    };
    if !tcp && target.bulk_only() {
        return refused(StatusCode::NOT_ALLOWED, "this query type is answered over TCP only (RFC 5460 section 4)");
    }
    Parsed::Query(Query { xid, requestor, target, link, oro: q.options.oro().to_vec() })
}

/// One link of the configuration: a subnet, or the subnets of one
/// `shared-network`.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// Identifies the link in OPTION_LQ_CLIENT_LINK: its first subnet's prefix.
    pub address: Ipv6Addr,
    prefixes: Vec<Prefix>,
    relay_links: Vec<Ipv6Addr>,
    /// Where its delegated prefixes come from (pd-pools, reserved prefixes).
    delegated: Vec<Prefix>,
}

impl Link {
    /// Whether a lease of `key` is on this link.
    pub fn holds(&self, key: &LeaseKey) -> bool {
        match key {
            LeaseKey::Addr(a) => self.prefixes.iter().any(|p| p.contains(*a)),
            LeaseKey::Prefix(q) => self.delegated.iter().any(|p| p.contains_prefix(q)),
        }
    }
}

/// The configuration's links, for finding a query's link and the link of
/// each lease.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Links {
    links: Vec<Link>,
}

impl Links {
    pub fn new(subnets: &[Subnet]) -> Links {
        let mut links: Vec<(Option<&str>, Link)> = Vec::new();
        for s in subnets {
            let delegated = s.pd_pools.iter().map(|p| p.prefix).chain(s.reservations.iter().flat_map(|r| r.prefixes.iter().copied()));
            let net = s.shared_network.as_deref();
            let at = links.iter().position(|(n, _)| net.is_some() && *n == net);
            let l = match at {
                Some(i) => &mut links[i].1,
                None => {
                    links.push((net, Link { address: s.prefix.addr, prefixes: Vec::new(), relay_links: Vec::new(), delegated: Vec::new() }));
                    &mut links.last_mut().expect("just pushed").1
                }
            };
            l.prefixes.push(s.prefix);
            l.relay_links.extend(&s.relay_links);
            l.delegated.extend(delegated);
        }
        Links { links: links.into_iter().map(|(_, l)| l).collect() }
    }

    pub fn get(&self, i: usize) -> &Link {
        &self.links[i]
    }

    /// The link a query's link-address names: one whose relays use it as
    /// their link-address, else the one whose prefix contains it.
    pub fn by_link_address(&self, a: Ipv6Addr) -> Option<usize> {
        self.links.iter().position(|l| l.relay_links.contains(&a)).or_else(|| self.links.iter().position(|l| l.prefixes.iter().any(|p| p.contains(a))))
    }

    /// The link of an address a QUERY_BY_ADDRESS asks about: leased from a
    /// subnet, or inside a prefix delegated there.
    pub fn of_address(&self, a: Ipv6Addr) -> Option<usize> {
        self.of_key(&LeaseKey::Addr(a)).or_else(|| self.links.iter().position(|l| l.delegated.iter().any(|p| p.contains(a))))
    }

    pub fn of_key(&self, key: &LeaseKey) -> Option<usize> {
        self.links.iter().position(|l| l.holds(key))
    }
}

/// What a bulk query selects from a shard's table (each condition given
/// must hold).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub relay_id: Option<Vec<u8>>,
    pub remote_id: Option<Vec<u8>>,
    pub link: Option<Link>,
}

impl Filter {
    /// The filter for a bulk query (None for the RFC 5007 types, which look
    /// leases up by key or client instead of walking).
    pub fn of(q: &Query, link: Option<&Link>) -> Option<Filter> {
        let (relay_id, remote_id) = match &q.target {
            Target::RelayId(d) => (Some(d.clone()), None),
            Target::RemoteId(r) => (None, Some(r.clone())),
            Target::Link => (None, None),
            Target::Address(_) | Target::Client(_) => return None,
        };
        Some(Filter { relay_id, remote_id, link: link.cloned() })
    }

    pub fn matches(&self, l: &Lease, now: Time) -> bool {
        bound(l, now)
            && self.link.as_ref().is_none_or(|k| k.holds(&l.key))
            && self.relay_id.as_ref().is_none_or(|d| l.relay.as_ref().and_then(|r| r.relay_id()) == Some(d.as_slice()))
            && self.remote_id.as_ref().is_none_or(|d| l.relay.as_ref().and_then(|r| r.remote_id()) == Some(d.as_slice()))
    }
}

/// A lease a leasequery reports: bound to a client, valid lifetime left
/// (RFC 5007 §4.1.2.2).
pub fn bound(l: &Lease, now: Time) -> bool {
    l.is_active() && l.valid_end > now
}

/// One client's bindings on one link: one OPTION_CLIENT_DATA.
#[derive(Debug, Clone, PartialEq)]
pub struct Bindings {
    pub duid: Duid,
    pub link: Option<usize>,
    pub leases: Vec<Lease>,
}

/// Group leases by client and link, dropping those not bound and any
/// record seen twice (a record moving between shards mid-walk); in client
/// and key order.
pub fn group(mut leases: Vec<Lease>, links: &Links, now: Time) -> Vec<Bindings> {
    leases.retain(|l| bound(l, now));
    let mut keyed: Vec<(Duid, Option<usize>, Lease)> = leases.into_iter().map(|l| (l.binding.duid.clone(), links.of_key(&l.key), l)).collect();
    keyed.sort_by(|a, b| (a.0.as_bytes(), a.1, a.2.key).cmp(&(b.0.as_bytes(), b.1, b.2.key)));
    keyed.dedup_by(|a, b| a.2.key == b.2.key);
    let mut out: Vec<Bindings> = Vec::new();
    for (duid, link, l) in keyed {
        match out.last_mut() {
            Some(b) if b.duid == duid && b.link == link => b.leases.push(l),
            _ => out.push(Bindings { duid, link, leases: vec![l] }),
        }
    }
    out
}

/// RFC 5007 §4.4.2: the client's OPTION_CLIENT_DATA: its identifier, each
/// address and prefix with the lifetimes left, how long ago it was last
/// heard from, and the options the requestor asked for that are not
/// sensitive (CLIENT_FQDN, LQ_RELAY_DATA).
pub fn client_data(b: &Bindings, now: Time, oro: &[u16], sensitive: &[u16]) -> DhcpOption {
    let mut o = Options::new();
    o.push(DhcpOption::ClientId(b.duid.clone()));
    let left = |end: Time| end.saturating_sub(now).min(u32::MAX as u64) as u32;
    // The last contact, ours or (a lease the partner granted) the partner's.
    let seen = |l: &Lease| l.cltt.max(l.partner_raw_clt_time);
    for l in &b.leases {
        let valid = left(l.valid_end);
        let preferred = left(seen(l).saturating_add(l.preferred_lifetime as u64)).min(valid);
        o.push(match l.key {
            LeaseKey::Addr(addr) => DhcpOption::IaAddr(IaAddr { addr, preferred, valid, options: Options::new() }),
            LeaseKey::Prefix(p) => DhcpOption::IaPrefix(IaPrefix { preferred, valid, prefix_len: p.len, prefix: p.addr, options: Options::new() }),
        });
    }
    let latest = b.leases.iter().max_by_key(|l| seen(l));
    let cltt = latest.map(seen).unwrap_or(now);
    o.push(DhcpOption::CltTime(now.saturating_sub(cltt).min(u32::MAX as u64) as u32));
    let wanted = |code: u16| oro.contains(&code) && !sensitive.contains(&code);
    if wanted(opt::CLIENT_FQDN)
        && let Some((flags, name)) = b.leases.iter().find_map(|l| l.dns.as_ref().and_then(|d| d.name.as_ref().map(|n| (d.flags, n))))
    {
        o.push(DhcpOption::ClientFqdn(crate::wire::ClientFqdn { flags, name: name.clone() }));
    }
    // §4.1.2.4: the last relayed message, only when asked for.
    if wanted(opt::LQ_RELAY_DATA)
        && let Some(r) = latest.and_then(|l| l.relay.as_ref())
    {
        o.push(DhcpOption::LqRelayData(LqRelayData { peer_address: r.peer, relay_message: r.message.clone() }));
    }
    DhcpOption::ClientData(o)
}

/// A LEASEQUERY-REPLY without bindings: found nothing, or `status` says
/// why the query failed.
pub fn reply(xid: u32, requestor: &Duid, server: &Duid, status: Option<(StatusCode, &str)>) -> Message {
    reply_parts(xid, requestor, server, status, Vec::new())
}

/// A successful LEASEQUERY-REPLY carrying `body` (client data or links).
pub fn reply_with(xid: u32, requestor: &Duid, server: &Duid, body: Vec<DhcpOption>) -> Message {
    reply_parts(xid, requestor, server, None, body)
}

/// The server and requestor identifiers, a status, and the body.
fn reply_parts(xid: u32, requestor: &Duid, server: &Duid, status: Option<(StatusCode, &str)>, body: Vec<DhcpOption>) -> Message {
    let mut o = Options::new();
    o.push(DhcpOption::ServerId(server.clone()));
    o.push(DhcpOption::ClientId(requestor.clone()));
    if let Some((code, text)) = status {
        o.push(DhcpOption::StatusCode(Status::new(code, text)));
    }
    o.0.extend(body);
    Message::Client(ClientMessage { msg_type: MessageType::LeaseQueryReply, transaction_id: xid, options: o })
}

/// RFC 5460 §5.2.1: a binding after the first.
pub fn data(xid: u32, client_data: DhcpOption) -> Message {
    Message::Client(ClientMessage { msg_type: MessageType::LeaseQueryData, transaction_id: xid, options: vec![client_data].into() })
}

/// RFC 5460 §5.2.2: the end of a query's bindings, or an error after the first.
pub fn done(xid: u32, status: Option<(StatusCode, &str)>) -> Message {
    let options = status.map(|(c, t)| vec![DhcpOption::StatusCode(Status::new(c, t))]).unwrap_or_default();
    Message::Client(ClientMessage { msg_type: MessageType::LeaseQueryDone, transaction_id: xid, options: options.into() })
}

/// RFC 5460 §5.1: a message framed for TCP (two octets of length first).
pub fn frame(m: &Message) -> Result<Vec<u8>, crate::wire::EncodeError> {
    let mut out = vec![0, 0];
    m.encode_into(&mut out)?;
    let n = u16::try_from(out.len() - 2).map_err(|_| crate::wire::EncodeError::OptionTooLong { code: 0, len: out.len() - 2 })?;
    out[..2].copy_from_slice(&n.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests;
