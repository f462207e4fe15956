//! The Client FQDN option (RFC 4704 §6): which name a client gets, which
//! flags we answer with, and whether this server must update the DNS.

use std::net::Ipv6Addr;

use crate::lease::{DnsInfo, dns_flags};
use crate::wire::{ClientFqdn, DomainName, FQDN_FLAG_N, FQDN_FLAG_O, FQDN_FLAG_S};

/// `[ddns] fqdn-policy`: who chooses the name and who updates the DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FqdnPolicy {
    /// The client's name and its N/S flags are honoured (RFC 4704).
    Client,
    /// The server always synthesizes the name and updates the AAAA.
    Server,
    /// Names are answered (N = 1) but nothing is updated.
    None,
}

/// The server's naming configuration (from `[ddns]`).
#[derive(Debug, Clone)]
pub struct Naming {
    pub policy: FqdnPolicy,
    /// Completes partial client names; a fully qualified suffix.
    pub qualifying_suffix: DomainName,
    /// Names for clients that send none (or always, with policy "server");
    /// `{addr}` becomes the address with ':' replaced by '-'.
    pub synthesize_pattern: String,
    /// Only names inside this zone are updated.
    pub forward_zone: DomainName,
}

/// What to answer and what to record for one address lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The option for the Reply (only when the client sent one).
    pub reply: Option<ClientFqdn>,
    /// The name and flags to keep with the lease (without local to-do bits).
    pub info: DnsInfo,
    /// This server is to update the DNS for this lease (N = 0 and a name in our zone).
    pub update: bool,
}

impl Naming {
    /// RFC 4704 §6.1 for a client's `fqdn` option (if any) and the address
    /// it gets; `reserved`: the host name its reservation gives it (the
    /// server's choice, which §6 allows, over the client's and a synthesized one).
    pub fn decide(&self, fqdn: Option<&ClientFqdn>, addr: Ipv6Addr, reserved: Option<&DomainName>) -> Decision {
        let client_n = fqdn.is_some_and(|f| f.flags & FQDN_FLAG_N != 0);
        let client_s = fqdn.is_some_and(|f| f.flags & FQDN_FLAG_S != 0);
        // Flags: honour N when the policy lets the client decide; else we
        // take the forward update on ourselves (S = 1), overriding if needed.
        let mut flags = match self.policy {
            FqdnPolicy::None => FQDN_FLAG_N,
            FqdnPolicy::Client if client_n => FQDN_FLAG_N,
            FqdnPolicy::Client | FqdnPolicy::Server => FQDN_FLAG_S,
        };
        if fqdn.is_some() && (flags & FQDN_FLAG_S != 0) != client_s && flags & FQDN_FLAG_N == 0 {
            flags |= FQDN_FLAG_O;
        }
        let requested = fqdn.map(|f| &f.name).filter(|n| !n.is_empty() && n.labels().next().is_some());
        let (name, origin) = match (self.policy, requested, reserved) {
            (_, _, Some(r)) => (self.qualify(r), 0),
            (FqdnPolicy::Client | FqdnPolicy::None, Some(n), None) => (self.qualify(n), dns_flags::USING_REQUESTED),
            _ => (self.synthesize(addr), dns_flags::SYNTHESIZED),
        };
        let in_zone = name.as_ref().is_some_and(|n| self.in_zone(n));
        let update = flags & FQDN_FLAG_N == 0 && in_zone;
        let reply = fqdn.map(|f| ClientFqdn { flags, name: name.clone().unwrap_or_else(|| f.name.clone()) });
        Decision { reply, info: DnsInfo { flags, name, dns_flags: origin }, update }
    }

    /// A partial name gets the qualifying suffix; a full one is kept.
    fn qualify(&self, n: &DomainName) -> Option<DomainName> {
        if n.is_fully_qualified() {
            return Some(lowercase(n));
        }
        let mut wire = n.as_wire().to_vec();
        wire.extend_from_slice(self.qualifying_suffix.as_wire());
        DomainName::decode(&wire).ok().map(|d| lowercase(&d))
    }

    fn synthesize(&self, addr: Ipv6Addr) -> Option<DomainName> {
        let label = self.synthesize_pattern.replace("{addr}", &addr.to_string().replace(':', "-"));
        let label = label.trim_matches('-');
        let text = format!("{label}.{}", self.qualifying_suffix);
        DomainName::from_dotted(&text.replace("..", ".")).ok().map(|d| lowercase(&d))
    }

    fn in_zone(&self, n: &DomainName) -> bool {
        let z = self.forward_zone.as_wire();
        let w = n.as_wire();
        // Label-aligned suffix match (case already folded).
        if w.len() <= z.len() || !w.ends_with(z) {
            return false;
        }
        let mut pos = 0;
        while pos < w.len() {
            if w.len() - pos == z.len() {
                return true;
            }
            pos += 1 + w[pos] as usize;
        }
        false
    }
}

/// DNS names compare case-insensitively; we keep them lower-case (RFC 4701's
/// DHCID is computed over the lower-cased name anyway).
fn lowercase(n: &DomainName) -> DomainName {
    DomainName::decode(&n.as_wire().to_ascii_lowercase()).unwrap_or_else(|_| n.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming(policy: FqdnPolicy) -> Naming {
        Naming {
            policy,
            qualifying_suffix: DomainName::from_dotted("example.net.").unwrap(),
            synthesize_pattern: "dhcp-{addr}".into(),
            forward_zone: DomainName::from_dotted("example.net.").unwrap(),
        }
    }

    fn fqdn(flags: u8, name: &str) -> ClientFqdn {
        ClientFqdn { flags, name: DomainName::from_dotted(name).unwrap() }
    }

    const A: &str = "2001:db8:1::1001";

    #[test]
    fn a_partial_name_is_qualified_and_the_server_takes_the_forward_update() {
        // RFC 4704 §4.2 (partial names completed), §6.1 (S honoured).
        let d = naming(FqdnPolicy::Client).decide(Some(&fqdn(FQDN_FLAG_S, "Host1")), A.parse().unwrap(), None);
        assert_eq!(d.reply.as_ref().unwrap().flags, FQDN_FLAG_S);
        assert_eq!(d.info.name.as_ref().unwrap().to_string(), "host1.example.net.");
        assert!(d.update);
        assert_eq!(d.info.dns_flags, dns_flags::USING_REQUESTED);
    }

    #[test]
    fn s_zero_from_the_client_is_overridden_with_o() {
        // RFC 4704 §6.1: our S differs from the client's → O = 1.
        let d = naming(FqdnPolicy::Client).decide(Some(&fqdn(0, "h.example.net.")), A.parse().unwrap(), None);
        assert_eq!(d.reply.unwrap().flags, FQDN_FLAG_S | FQDN_FLAG_O);
    }

    #[test]
    fn n_from_the_client_means_no_updates_but_a_name_all_the_same() {
        // RFC 4704 §6.1; RFC 8156 §9.5: the name is still kept and shared.
        let d = naming(FqdnPolicy::Client).decide(Some(&fqdn(FQDN_FLAG_N, "h")), A.parse().unwrap(), None);
        assert_eq!(d.reply.unwrap().flags, FQDN_FLAG_N);
        assert!(!d.update);
        assert!(d.info.name.is_some());
    }

    #[test]
    fn server_policy_synthesizes_and_none_never_updates() {
        let d = naming(FqdnPolicy::Server).decide(Some(&fqdn(FQDN_FLAG_S, "wanted")), A.parse().unwrap(), None);
        assert_eq!(d.info.name.unwrap().to_string(), "dhcp-2001-db8-1--1001.example.net.");
        assert_eq!(d.info.dns_flags, dns_flags::SYNTHESIZED);
        assert!(d.update);
        let d = naming(FqdnPolicy::None).decide(Some(&fqdn(FQDN_FLAG_S, "h")), A.parse().unwrap(), None);
        assert!(!d.update);
        assert_eq!(d.reply.unwrap().flags, FQDN_FLAG_N);
    }

    #[test]
    fn a_client_without_the_option_gets_a_synthesized_name_and_no_option() {
        let d = naming(FqdnPolicy::Client).decide(None, A.parse().unwrap(), None);
        assert!(d.reply.is_none());
        assert!(d.update);
        assert!(d.info.name.unwrap().to_string().starts_with("dhcp-"));
    }

    #[test]
    fn names_outside_the_forward_zone_are_not_updated() {
        let d = naming(FqdnPolicy::Client).decide(Some(&fqdn(FQDN_FLAG_S, "h.elsewhere.org.")), A.parse().unwrap(), None);
        assert!(!d.update);
        let d = naming(FqdnPolicy::Client).decide(Some(&fqdn(FQDN_FLAG_S, "h.notexample.net.")), A.parse().unwrap(), None);
        assert!(!d.update, "a suffix match must be label-aligned");
    }

    #[test]
    fn a_reserved_host_name_wins_over_the_clients_and_a_synthesized_one() {
        let host = DomainName::from_dotted("printer").unwrap();
        let d = naming(FqdnPolicy::Client).decide(Some(&fqdn(FQDN_FLAG_S, "wanted")), A.parse().unwrap(), Some(&host));
        assert_eq!(d.reply.unwrap().name.to_string(), "printer.example.net.");
        assert!(d.update);
        let d = naming(FqdnPolicy::Server).decide(None, A.parse().unwrap(), Some(&host));
        assert_eq!(d.info.name.unwrap().to_string(), "printer.example.net.");
        assert_eq!(d.info.dns_flags & (dns_flags::SYNTHESIZED | dns_flags::USING_REQUESTED), 0);
    }
}
