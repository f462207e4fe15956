//! The lease dump's fields (shared/interface.md "Lease dump"): `tandem
//! leases` and `tandem ctl lease get` print the same objects.

use super::Lease;

/// The fields of one lease in the dump (shared/interface.md), in order.
pub fn lease_fields(l: &Lease) -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::Value as V;
    let mut f = vec![
        ("type", V::from(l.key.ia_type().label())),
        ("lease", V::from(l.key.to_string())),
        ("duid", V::from(l.binding.duid.to_hex())),
        ("iaid", V::from(l.binding.iaid)),
        ("state", V::from(l.status.name())),
        ("valid-lifetime-end", V::from(l.valid_end)),
        ("cltt", V::from(l.cltt)),
        ("preferred-lifetime", V::from(l.preferred_lifetime)),
        ("valid-lifetime", V::from(l.valid_lifetime)),
        ("t1", V::from(l.t1)),
        ("t2", V::from(l.t2)),
        ("start-time-of-state", V::from(l.start_time_of_state)),
        ("state-expiration-time", V::from(l.state_expiration_time)),
        ("partner-lifetime", V::from(l.partner_lifetime)),
        ("acked-partner-lifetime", V::from(l.acked_partner_lifetime)),
        ("expiration-time", V::from(l.expiration_time)),
        ("partner-raw-clt-time", V::from(l.partner_raw_clt_time)),
        ("update-partner", V::from(l.update_partner)),
    ];
    f.push((
        "dns-name",
        l.dns.as_ref().and_then(|d| d.name.as_ref()).map(|n| V::from(n.to_string())).unwrap_or(V::Null),
    ));
    f.push(("dns-flags", l.dns.as_ref().map(|d| V::from(d.dns_flags)).unwrap_or(V::Null)));
    // The last relay chain (leasequery, RFC 5007/5460): who relayed it.
    let r = l.relay.as_deref();
    let hex = |b: Option<&[u8]>| b.map(|b| V::from(crate::wire::hex::encode(b))).unwrap_or(V::Null);
    f.push(("relay-peer", r.map(|r| V::from(r.peer.to_string())).unwrap_or(V::Null)));
    f.push(("relay-link-address", r.and_then(|r| r.link_address()).map(|a| V::from(a.to_string())).unwrap_or(V::Null)));
    f.push(("relay-id", hex(r.and_then(|r| r.relay_id()))));
    f.push(("remote-id", hex(r.and_then(|r| r.remote_id()))));
    f
}

pub fn leases_json(leases: &[Lease]) -> String {
    let arr: Vec<serde_json::Value> = leases
        .iter()
        .map(|l| serde_json::Value::Object(lease_fields(l).into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
        .collect();
    let mut s = serde_json::to_string_pretty(&arr).unwrap_or_else(|_| "[]".into());
    s.push('\n');
    s
}

pub fn leases_csv(leases: &[Lease]) -> String {
    let header: Vec<&str> = match leases.first() {
        Some(l) => lease_fields(l).iter().map(|(k, _)| *k).collect(),
        None => lease_fields(&sample_for_header()).iter().map(|(k, _)| *k).collect(),
    };
    let mut s = header.join(",");
    s.push('\n');
    for l in leases {
        let row: Vec<String> = lease_fields(l)
            .into_iter()
            .map(|(_, v)| match v {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(x) => x,
                v => v.to_string(),
            })
            .collect();
        s.push_str(&row.join(","));
        s.push('\n');
    }
    s
}

fn sample_for_header() -> Lease {
    use crate::lease::{Binding, IaType, LeaseKey};
    Lease::active(
        LeaseKey::Addr(std::net::Ipv6Addr::UNSPECIFIED),
        Binding { duid: crate::wire::Duid::ll(1, &[0]), ia_type: IaType::Na, iaid: 0 },
        0,
        0,
        0,
        0,
        0,
    )
}

/// One lease as the dump's JSON object.
pub fn lease_json(l: &Lease) -> serde_json::Value {
    serde_json::Value::Object(lease_fields(l).into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}
