//! The lease record: one address (IA_NA) or delegated prefix (IA_PD) and
//! everything RFC 9915 and RFC 8156 §7.2–7.3 need to know about it.
//! Pure data; the LMDB store that persists it lives in `runtime`.

use std::fmt;
use std::net::Ipv6Addr;

use crate::pool::Prefix;
use crate::wire::{BindingStatus, DomainName, Duid};

/// Seconds since the Unix epoch. The engine never reads a clock: callers pass it in.
pub type Time = u64;

/// What is leased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeaseKey {
    Addr(Ipv6Addr),
    Prefix(Prefix),
}

impl LeaseKey {
    pub fn ia_type(&self) -> IaType {
        match self {
            LeaseKey::Addr(_) => IaType::Na,
            LeaseKey::Prefix(_) => IaType::Pd,
        }
    }
}

impl fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseKey::Addr(a) => write!(f, "{a}"),
            LeaseKey::Prefix(p) => write!(f, "{p}"),
        }
    }
}

/// The IA number spaces: IAIDs of IA_NA and IA_PD are independent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IaType {
    Na,
    Pd,
}

impl IaType {
    pub fn label(self) -> &'static str {
        match self {
            IaType::Na => "na",
            IaType::Pd => "pd",
        }
    }
}

/// Who the lease is (or was last) bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Binding {
    pub duid: Duid,
    pub ia_type: IaType,
    pub iaid: u32,
}

/// `DnsInfo::dns_flags` bits. The low four are RFC 8156 OPTION_F_DNS_FLAGS
/// (§5.5.3.3) and travel to the partner; the high byte is this server's own
/// to-do list, persisted with the lease before any DNS update is sent, so a
/// crash never forgets a record it must add or remove (§9.4).
pub mod dns_flags {
    /// F: the forward (AAAA + DHCID) records are in the DNS.
    pub const FWD_UPTODATE: u16 = 0x0001;
    /// R: the reverse (PTR) record is in the DNS.
    pub const REV_UPTODATE: u16 = 0x0002;
    /// S: the name was synthesized by the server.
    pub const SYNTHESIZED: u16 = 0x0004;
    /// U: the name came from the client's FQDN option.
    pub const USING_REQUESTED: u16 = 0x0008;
    /// The bits shared with the partner.
    pub const SHARED: u16 = 0x000f;
    /// Local: this server must add the records (it granted the lease).
    pub const PENDING_ADD: u16 = 0x0100;
    /// Local: this server must remove the records (it ended the lease).
    pub const PENDING_REMOVE: u16 = 0x0200;
    /// Local: the add failed for good (conflict with another client's name).
    pub const CONFLICT: u16 = 0x0400;
    /// Local: this server ended the lease and removes the records once the
    /// failover partner acknowledges the end (RFC 8156 §9.4), or in
    /// PARTNER-DOWN once the lease is FREE.
    pub const REMOVE_AFTER_ACK: u16 = 0x0800;
}

/// DNS state kept with the lease (RFC 4704, RFC 8156 §9).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsInfo {
    /// The FQDN option flags we answered with.
    pub flags: u8,
    /// The fully qualified name given to the client.
    pub name: Option<DomainName>,
    /// RFC 8156 OPTION_F_DNS_FLAGS bits describing what is in the DNS.
    pub dns_flags: u16,
}

/// How long a stored relay chain may be: a longer one is not kept (a
/// leasequery then has no relay data for the lease, RFC 5007 §4.1.2.4).
pub const MAX_RELAY_DATA: usize = 1024;

/// The relay chain the client's last relayed message came through (RFC
/// 5007 §4.1.2.4): what leasequery answers with and looks leases up by
/// (relay-id, remote-id), and what the failover partner is told (RFC 8156
/// §7.4). Ordered only so that partners break a tie the same way.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RelayData {
    /// The relay agent the server received the message from.
    pub peer: Ipv6Addr,
    /// The RELAY-FORW message as received, the client's message removed
    /// (the innermost OPTION_RELAY_MSG).
    pub message: Vec<u8>,
}

impl RelayData {
    /// The option `code` of the relay level nearest the client that has one.
    pub fn option(&self, code: u16) -> Option<&[u8]> {
        let mut found = None;
        self.each_level(|_, options| {
            if let Some(v) = crate::wire::peek::find_option(options, code) {
                found = Some(v);
            }
        });
        found
    }

    /// OPTION_RELAY_ID (RFC 5460): the relay's DUID.
    pub fn relay_id(&self) -> Option<&[u8]> {
        self.option(crate::wire::opt::RELAY_ID)
    }

    /// OPTION_REMOTE_ID (RFC 4649): enterprise number and remote-id.
    pub fn remote_id(&self) -> Option<&[u8]> {
        self.option(crate::wire::opt::REMOTE_ID)
    }

    /// The innermost non-zero link-address: the client's link (RFC 9915 §13.1).
    pub fn link_address(&self) -> Option<Ipv6Addr> {
        let mut link = None;
        self.each_level(|l, _| {
            if !l.is_unspecified() {
                link = Some(l);
            }
        });
        link
    }

    /// Each relay level, outermost first: its link-address and options.
    /// Reads the octets in place (a bulk query looks at every lease).
    fn each_level<'a>(&'a self, mut f: impl FnMut(Ipv6Addr, &'a [u8])) {
        let mut m = self.message.as_slice();
        for _ in 0..=crate::wire::HOP_COUNT_LIMIT {
            if m.len() < 34 || m[0] != 12 {
                return;
            }
            let link: [u8; 16] = m[2..18].try_into().expect("16 octets");
            let options = &m[34..];
            f(Ipv6Addr::from(link), options);
            match crate::wire::peek::find_option(options, crate::wire::opt::RELAY_MSG) {
                Some(inner) => m = inner,
                None => return,
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: LeaseKey,
    pub binding: Binding,
    pub status: BindingStatus,
    /// Lifetimes last sent to the client (seconds).
    pub preferred_lifetime: u32,
    pub valid_lifetime: u32,
    /// T1/T2 last sent for the IA.
    pub t1: u32,
    pub t2: u32,
    /// Client-last-transaction-time: when this server last dealt with the client.
    pub cltt: Time,
    /// cltt + valid lifetime: when the client must stop using it.
    pub valid_end: Time,
    // RFC 8156 §7.3; 0 = not set.
    /// Greatest lifetime this server has acked to its partner.
    pub expiration_time: Time,
    /// Lifetime to send (or last sent) to the partner; kept after the ack.
    pub partner_lifetime: Time,
    /// Greatest lifetime the partner has acked to this server.
    pub acked_partner_lifetime: Time,
    /// The partner's CLTT, as received.
    pub partner_raw_clt_time: Time,
    pub start_time_of_state: Time,
    pub state_expiration_time: Time,
    /// The partner needs a BNDUPD for this lease.
    pub update_partner: bool,
    pub dns: Option<DnsInfo>,
    /// The relay chain of the client's last relayed message; None when it
    /// came directly.
    pub relay: Option<Box<RelayData>>,
}

impl Lease {
    /// A new ACTIVE lease granted at `now`.
    pub fn active(key: LeaseKey, binding: Binding, now: Time, preferred: u32, valid: u32, t1: u32, t2: u32) -> Lease {
        Lease {
            key,
            binding,
            status: BindingStatus::Active,
            preferred_lifetime: preferred,
            valid_lifetime: valid,
            t1,
            t2,
            cltt: now,
            valid_end: now.saturating_add(valid as u64),
            expiration_time: 0,
            partner_lifetime: 0,
            acked_partner_lifetime: 0,
            partner_raw_clt_time: 0,
            start_time_of_state: now,
            state_expiration_time: now.saturating_add(valid as u64),
            update_partner: false,
            dns: None,
            relay: None,
        }
    }

    /// A delegable-prefix record not bound to any client (FREE / FREE-BACKUP
    /// pool bookkeeping, RFC 8156 §7.4 (b)).
    pub fn pool_record(key: LeaseKey, now: Time) -> Lease {
        let mut l = Lease::active(
            key,
            Binding { duid: Duid::ll(0, &[0]), ia_type: key.ia_type(), iaid: 0 },
            now,
            0,
            0,
            0,
            0,
        );
        l.cltt = 0;
        l.valid_end = 0;
        l
    }

    /// Change the binding status, recording when.
    pub fn set_status(&mut self, status: BindingStatus, now: Time) {
        if self.status != status {
            self.status = status;
            self.start_time_of_state = now;
        }
        if status != BindingStatus::Active {
            self.state_expiration_time = 0;
        }
    }

    pub fn is_active(&self) -> bool {
        self.status == BindingStatus::Active
    }
}

/// One write to a shard's store: a lease record put, or removed (the record
/// moved to the shard that serves its client, see `failover::router`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    Upsert(Lease),
    Delete(LeaseKey),
}

impl LeaseChange {
    pub fn key(&self) -> LeaseKey {
        match self {
            LeaseChange::Upsert(l) => l.key,
            LeaseChange::Delete(k) => *k,
        }
    }

    /// The record written, if this is not a removal.
    pub fn upserted(&self) -> Option<&Lease> {
        match self {
            LeaseChange::Upsert(l) => Some(l),
            LeaseChange::Delete(_) => None,
        }
    }
}

pub mod codec;
pub mod dump;
pub mod store;
