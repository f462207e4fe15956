//! Client classes: which `[[class]]`es a message's client belongs to, as a
//! bit set (bit i: class i). The conditions are fixed at load; a message is
//! read once for what they look at, with no interpreter in between.

use super::Arrival;
use super::settings::{ClassDef, Condition, duid_link_layer};
use crate::wire::{ClientMessage, DhcpOption, RelayMessage};

/// Bits of a `u64` mask.
pub const MAX_CLASSES: usize = 64;

const REMOTE_ID: u16 = 37;
const SUBSCRIBER_ID: u16 = 38;

/// What the conditions look at in one message.
pub struct Facts<'m> {
    client: &'m ClientMessage,
    chain: &'m [&'m RelayMessage],
    interface: Option<&'m str>,
    /// The client's link-layer address (see `link_layer`).
    pub hw: Option<&'m [u8]>,
}

impl<'m> Facts<'m> {
    /// `hw`: read the link-layer address (only classes and hw-address
    /// reservations look at it).
    pub fn new(client: &'m ClientMessage, chain: &'m [&'m RelayMessage], arrival: &Arrival<'m>, hw: bool) -> Facts<'m> {
        Facts { client, chain, interface: arrival.interface, hw: if hw { link_layer(client, chain) } else { None } }
    }
}

/// RFC 6939: the option 79 the first-hop relay added (innermost relay
/// first), else the link-layer address of a DUID-LL or DUID-LLT.
pub fn link_layer<'m>(client: &'m ClientMessage, chain: &[&'m RelayMessage]) -> Option<&'m [u8]> {
    let from_relay = chain.iter().rev().find_map(|r| {
        r.options.iter().find_map(|o| match o {
            DhcpOption::ClientLinkLayerAddr { address, .. } if !address.is_empty() => Some(address.as_slice()),
            _ => None,
        })
    });
    from_relay.or_else(|| client.options.client_id().and_then(duid_link_layer))
}

fn relay_option(r: &RelayMessage, code: u16) -> Option<&[u8]> {
    r.options.iter().find_map(|o| match o {
        DhcpOption::Unknown { code: c, data } if *c == code => Some(data.as_slice()),
        _ => None,
    })
}

/// The classes `classes` says the client of `f` is in.
pub fn classify(classes: &[ClassDef], f: &Facts<'_>) -> u64 {
    let mut mask = 0u64;
    for (i, c) in classes.iter().enumerate().take(MAX_CLASSES) {
        if c.conditions.iter().all(|cond| holds(cond, f)) {
            mask |= 1 << i;
        }
    }
    mask
}

fn holds(c: &Condition, f: &Facts<'_>) -> bool {
    let o = &f.client.options;
    match c {
        Condition::VendorClass { enterprise, data } => o.iter().any(|x| match x {
            DhcpOption::VendorClass(v) => v.enterprise == *enterprise && data.as_ref().is_none_or(|d| v.data.iter().any(|i| i == d)),
            _ => false,
        }),
        Condition::UserClass(want) => o.iter().any(|x| matches!(x, DhcpOption::UserClass(items) if items.iter().any(|i| i == want))),
        Condition::InterfaceId(want) => f.chain.last().and_then(|r| r.options.interface_id()) == Some(want.as_slice()),
        Condition::RemoteId { enterprise, id } => f.chain.iter().filter_map(|r| relay_option(r, REMOTE_ID)).any(|b| {
            b.len() >= 4 && &b[4..] == id.as_slice() && enterprise.is_none_or(|e| b[..4] == e.to_be_bytes())
        }),
        Condition::SubscriberId(want) => f.chain.iter().any(|r| relay_option(r, SUBSCRIBER_ID) == Some(want.as_slice())),
        Condition::HwAddress(want) => f.hw == Some(want.as_slice()),
        Condition::DuidPrefix(p) => o.client_id().is_some_and(|d| d.as_bytes().starts_with(p)),
        Condition::DuidType(t) => o.client_id().is_some_and(|d| d.duid_type() == *t),
        Condition::Interface(name) => f.chain.is_empty() && f.interface == Some(name.as_str()),
        Condition::RelayLink(p) => {
            f.chain.iter().rev().map(|r| r.link_address).find(|a| !a.is_unspecified()).is_some_and(|a| p.contains(a))
        }
    }
}

/// The mask of the classes named (unknown names were refused at load).
pub fn mask_of(classes: &[ClassDef], names: &[String]) -> u64 {
    names.iter().filter_map(|n| classes.iter().position(|c| &c.name == n)).filter(|i| *i < MAX_CLASSES).fold(0, |m, i| m | 1 << i)
}
