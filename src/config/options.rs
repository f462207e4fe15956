//! `options = [...]`, `[[class]]` and the byte values they hold: typed
//! values from the file, encoded once here into option bodies the engine
//! sends as they are (README "Options").

use std::net::Ipv6Addr;

use serde::Deserialize;

use crate::server::settings::{ClassDef, Condition, OptionData};
use crate::wire::DomainName;

/// One entry of an `options` list, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawOption {
    name: Option<String>,
    code: Option<u32>,
    #[serde(rename = "type")]
    kind: Option<String>,
    value: Option<toml::Value>,
    #[serde(default)]
    always_send: bool,
    enterprise: Option<u32>,
    #[serde(default)]
    sub: Vec<RawOption>,
    fields: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawClass {
    name: String,
    #[serde(rename = "match")]
    matches: RawMatch,
    #[serde(default)]
    options: Vec<RawOption>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMatch {
    vendor_class: Option<RawVendorClass>,
    user_class: Option<String>,
    interface_id: Option<String>,
    remote_id: Option<RawRemoteId>,
    subscriber_id: Option<String>,
    hw_address: Option<String>,
    duid: Option<String>,
    duid_type: Option<toml::Value>,
    interface: Option<String>,
    relay_link: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawVendorClass {
    enterprise: u32,
    data: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRemoteId {
    Id(String),
    Full(RawRemoteIdTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemoteIdTable {
    enterprise: Option<u32>,
    id: String,
}

/// The value types an option (or a record field) may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ipv6Address,
    Ipv6Addresses,
    String,
    Fqdn,
    Fqdns,
    U8,
    U16,
    U32,
    Boolean,
    Hex,
    Record,
    /// OPTION_NTP_SERVER (56): server-address sub-options (RFC 5908).
    Ntp,
    /// OPT_BOOTFILE_PARAM (60, RFC 5970) and OPTION_V6_SZTP_REDIRECT (136,
    /// RFC 8572): strings, each after a 16-bit length.
    LengthStrings,
    /// OPTION_VENDOR_OPTS (17): enterprise number and sub-options.
    Vendor,
}

const KINDS: [(&str, Kind); 11] = [
    ("ipv6-address", Kind::Ipv6Address),
    ("ipv6-addresses", Kind::Ipv6Addresses),
    ("string", Kind::String),
    ("fqdn", Kind::Fqdn),
    ("fqdns", Kind::Fqdns),
    ("u8", Kind::U8),
    ("u16", Kind::U16),
    ("u32", Kind::U32),
    ("boolean", Kind::Boolean),
    ("hex", Kind::Hex),
    ("record", Kind::Record),
];

/// The options known by name: (name, code, value type).
pub const NAMED: [(&str, u16, &str); 19] = [
    ("vendor-opts", 17, "enterprise + sub-options"),
    ("sip-server-domains", 21, "fqdns"),
    ("sip-server-addresses", 22, "ipv6-addresses"),
    ("dns-servers", 23, "ipv6-addresses"),
    ("domain-search", 24, "fqdns"),
    ("nis-servers", 27, "ipv6-addresses"),
    ("nisp-servers", 28, "ipv6-addresses"),
    ("nis-domain-name", 29, "fqdn"),
    ("nisp-domain-name", 30, "fqdn"),
    ("sntp-servers", 31, "ipv6-addresses"),
    ("pana-agent", 40, "ipv6-addresses"),
    ("new-posix-timezone", 41, "string"),
    ("new-tzdb-timezone", 42, "string"),
    ("ntp-servers", 56, "ipv6-addresses"),
    ("bootfile-url", 59, "string"),
    ("bootfile-param", 60, "strings"),
    ("aftr-name", 64, "fqdn"),
    ("captive-portal", 103, "string"),
    ("v6-sztp-redirect", 136, "strings"),
];

fn named_kind(name: &str) -> Option<(u16, Kind)> {
    let (_, code, t) = NAMED.iter().find(|(n, _, _)| *n == name)?;
    let kind = match *t {
        "enterprise + sub-options" => Kind::Vendor,
        "strings" => Kind::LengthStrings,
        _ if *code == 56 => Kind::Ntp,
        t => KINDS.iter().find(|(n, _)| *n == t)?.1,
    };
    Some((*code, kind))
}

/// Codes the server fills in itself (identifiers, IAs, status, relay and
/// failover options, and those with their own key): never configured.
pub fn server_managed(code: u16) -> Option<&'static str> {
    Some(match code {
        0 => "0 is not an option code",
        1..=14 => "the server fills in this protocol option itself",
        18 | 19 | 20 | 135 => "a relay or reconfigure option, not configuration",
        25 | 26 => "IA_PD and IAPREFIX carry leases",
        32 => "set `information-refresh-time` instead",
        39 => "the Client FQDN option follows `[ddns]` (RFC 4704)",
        45..=48 | 53 | 100 => "a leasequery option",
        79 => "a relay option (RFC 6939)",
        82 => "set `sol-max-rt` instead",
        83 => "set `inf-max-rt` instead",
        114..=134 => "a failover protocol option (RFC 8156)",
        _ => return None,
    })
}

/// Problems go back as (key, reason); the caller files them.
pub(super) struct Encoder<'a> {
    pub problems: &'a mut Vec<(String, String)>,
}

impl Encoder<'_> {
    fn bad(&mut self, key: &str, reason: impl Into<String>) {
        self.problems.push((key.to_string(), reason.into()));
    }

    /// Encode one scope's `options`. `key`: the list's key (`subnet[0].options`).
    pub fn options(&mut self, key: &str, raw: &[RawOption]) -> Vec<OptionData> {
        let mut out: Vec<OptionData> = Vec::new();
        for (i, o) in raw.iter().enumerate() {
            let k = format!("{key}[{i}]");
            let Some(d) = self.option(&k, o, false) else { continue };
            // One option per code at one scope (vendor-opts once per enterprise).
            let dup = out.iter().any(|p| p.code == d.code && (d.code != 17 || p.data.get(..4) == d.data.get(..4)));
            if dup {
                self.bad(&k, format!("option {} is set twice here", d.code));
                continue;
            }
            out.push(d);
        }
        out
    }

    fn option(&mut self, k: &str, o: &RawOption, sub: bool) -> Option<OptionData> {
        let (code, kind) = match (&o.name, o.code) {
            (Some(n), None) if !sub => match named_kind(n) {
                Some(x) => x,
                None => {
                    let known: Vec<&str> = NAMED.iter().map(|(n, _, _)| *n).collect();
                    self.bad(&format!("{k}.name"), format!("unknown option {n:?} (known: {}; or give code and type)", known.join(", ")));
                    return None;
                }
            },
            (Some(_), None) => {
                self.bad(&format!("{k}.name"), "sub-options are given by code and type");
                return None;
            }
            (Some(_), Some(_)) => {
                self.bad(k, "give name or code, not both");
                return None;
            }
            (None, Some(c)) => {
                let Ok(code) = u16::try_from(c) else {
                    self.bad(&format!("{k}.code"), format!("{c} is not an option code (1-65535)"));
                    return None;
                };
                if !sub && let Some(why) = server_managed(code) {
                    self.bad(&format!("{k}.code"), format!("option {code}: {why}"));
                    return None;
                }
                let kind = match o.kind.as_deref() {
                    _ if code == 17 && !sub => Kind::Vendor,
                    Some(t) => match KINDS.iter().find(|(n, _)| *n == t) {
                        Some((_, kd)) => *kd,
                        None => {
                            let known: Vec<&str> = KINDS.iter().map(|(n, _)| *n).collect();
                            self.bad(&format!("{k}.type"), format!("unknown type {t:?} (one of {})", known.join(", ")));
                            return None;
                        }
                    },
                    None => {
                        self.bad(&format!("{k}.type"), "an option given by code needs a type");
                        return None;
                    }
                };
                (code, kind)
            }
            (None, None) => {
                self.bad(k, "an option needs a name or a code");
                return None;
            }
        };
        if o.name.is_some() && o.kind.is_some() {
            self.bad(&format!("{k}.type"), "a named option has its own type");
            return None;
        }
        if kind != Kind::Vendor && (o.enterprise.is_some() || !o.sub.is_empty()) {
            self.bad(k, "enterprise and sub belong to vendor-opts (17)");
            return None;
        }
        if kind != Kind::Record && o.fields.is_some() {
            self.bad(&format!("{k}.fields"), "fields belong to type = \"record\"");
            return None;
        }
        if sub && o.always_send {
            self.bad(&format!("{k}.always-send"), "belongs to the option, not a sub-option");
        }
        let data = if kind == Kind::Vendor {
            let Some(ent) = o.enterprise else {
                self.bad(&format!("{k}.enterprise"), "vendor-opts needs the vendor's enterprise number");
                return None;
            };
            if o.value.is_some() {
                self.bad(&format!("{k}.value"), "vendor-opts carries sub-options (sub = [...]), not a value");
                return None;
            }
            let mut d = ent.to_be_bytes().to_vec();
            for (j, s) in o.sub.iter().enumerate() {
                let sk = format!("{k}.sub[{j}]");
                let Some(sd) = self.option(&sk, s, true) else { continue };
                d.extend_from_slice(&sd.code.to_be_bytes());
                d.extend_from_slice(&(sd.data.len() as u16).to_be_bytes());
                d.extend_from_slice(&sd.data);
            }
            d
        } else {
            let Some(v) = &o.value else {
                self.bad(&format!("{k}.value"), "missing");
                return None;
            };
            self.value(&format!("{k}.value"), kind, o.fields.as_deref(), v)?
        };
        if data.len() > u16::MAX as usize {
            self.bad(k, format!("{} octets: an option holds at most 65535", data.len()));
            return None;
        }
        Some(OptionData { code, data, always_send: o.always_send })
    }

    fn value(&mut self, k: &str, kind: Kind, fields: Option<&[String]>, v: &toml::Value) -> Option<Vec<u8>> {
        use toml::Value as V;
        let int = |s: &mut Self, max: u64| -> Option<u64> {
            match v {
                V::Integer(i) if *i >= 0 && (*i as u64) <= max => Some(*i as u64),
                _ => {
                    s.bad(k, format!("{v} is not an integer from 0 to {max}"));
                    None
                }
            }
        };
        let list = |s: &mut Self| -> Option<&Vec<V>> {
            match v {
                V::Array(a) if !a.is_empty() => Some(a),
                _ => {
                    s.bad(k, "expected a non-empty list");
                    None
                }
            }
        };
        Some(match kind {
            Kind::U8 => vec![int(self, u8::MAX as u64)? as u8],
            Kind::U16 => (int(self, u16::MAX as u64)? as u16).to_be_bytes().to_vec(),
            Kind::U32 => (int(self, u32::MAX as u64)? as u32).to_be_bytes().to_vec(),
            Kind::Boolean => match v {
                V::Boolean(b) => vec![u8::from(*b)],
                _ => {
                    self.bad(k, format!("{v} is not true or false"));
                    return None;
                }
            },
            Kind::String => match v {
                V::String(s) if !s.is_empty() => s.as_bytes().to_vec(),
                _ => {
                    self.bad(k, format!("{v} is not a non-empty string"));
                    return None;
                }
            },
            Kind::Hex => match v.as_str().map(hex_bytes) {
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    self.bad(k, e);
                    return None;
                }
                None => {
                    self.bad(k, format!("{v} is not a hex string"));
                    return None;
                }
            },
            Kind::Ipv6Address => self.address(k, v)?.octets().to_vec(),
            Kind::Ipv6Addresses | Kind::Ntp => {
                let mut d = Vec::new();
                for x in list(self)? {
                    let a = self.address(k, x)?;
                    if kind == Kind::Ntp {
                        // NTP_SUBOPTION_SRV_ADDR (RFC 5908 §4.1).
                        d.extend_from_slice(&[0, 1, 0, 16]);
                    }
                    d.extend_from_slice(&a.octets());
                }
                d
            }
            Kind::Fqdn => self.fqdn(k, v)?,
            Kind::Fqdns => {
                let mut d = Vec::new();
                for x in list(self)? {
                    d.extend(self.fqdn(k, x)?);
                }
                d
            }
            Kind::LengthStrings => {
                let mut d = Vec::new();
                for x in list(self)? {
                    let Some(s) = x.as_str() else {
                        self.bad(k, format!("{x} is not a string"));
                        return None;
                    };
                    d.extend_from_slice(&(s.len() as u16).to_be_bytes());
                    d.extend_from_slice(s.as_bytes());
                }
                d
            }
            Kind::Record => {
                let Some(fields) = fields.filter(|f| !f.is_empty()) else {
                    self.bad(k, "a record needs fields = [type, ...]");
                    return None;
                };
                let Some(values) = v.as_array().filter(|a| a.len() == fields.len()) else {
                    self.bad(k, format!("a record of {} fields needs a list of {} values", fields.len(), fields.len()));
                    return None;
                };
                let mut d = Vec::new();
                for (f, x) in fields.iter().zip(values) {
                    let fk = KINDS.iter().find(|(n, _)| n == f).map(|(_, kd)| *kd).filter(|kd| *kd != Kind::Record);
                    let Some(fk) = fk else {
                        self.bad(k, format!("record field type {f:?} is not one of the value types"));
                        return None;
                    };
                    d.extend(self.value(k, fk, None, x)?);
                }
                d
            }
            Kind::Vendor => unreachable!("vendor-opts is encoded by `option`"),
        })
    }

    fn address(&mut self, k: &str, v: &toml::Value) -> Option<Ipv6Addr> {
        match v.as_str().map(str::parse::<Ipv6Addr>) {
            Some(Ok(a)) => Some(a),
            _ => {
                self.bad(k, format!("{v} is not an IPv6 address"));
                None
            }
        }
    }

    /// A name in DNS wire format (RFC 9915 §10: fully qualified, no compression).
    fn fqdn(&mut self, k: &str, v: &toml::Value) -> Option<Vec<u8>> {
        let Some(s) = v.as_str().filter(|s| !s.is_empty()) else {
            self.bad(k, format!("{v} is not a domain name"));
            return None;
        };
        let fq = if s.ends_with('.') { s.to_string() } else { format!("{s}.") };
        match DomainName::from_dotted(&fq) {
            Ok(n) => Some(n.as_wire().to_vec()),
            Err(e) => {
                self.bad(k, e);
                None
            }
        }
    }

    /// Validate `[[class]]` tables (names unique, at most 64, a match each).
    pub fn classes(&mut self, raw: &[RawClass], interfaces: &[String]) -> Vec<ClassDef> {
        let mut out: Vec<ClassDef> = Vec::new();
        for (i, c) in raw.iter().enumerate() {
            let k = format!("class[{i}]");
            if c.name.is_empty() {
                self.bad(&format!("{k}.name"), "must not be empty");
            }
            if out.iter().any(|o| o.name == c.name) {
                self.bad(&format!("{k}.name"), format!("class {:?} is defined twice", c.name));
            }
            let conditions = self.conditions(&format!("{k}.match"), &c.matches, interfaces);
            let options = self.options(&format!("{k}.options"), &c.options);
            out.push(ClassDef { name: c.name.clone(), conditions, options });
        }
        if out.len() > crate::server::classes::MAX_CLASSES {
            self.bad("class", format!("{} classes: at most {} are supported", out.len(), crate::server::classes::MAX_CLASSES));
        }
        out
    }

    fn conditions(&mut self, k: &str, m: &RawMatch, interfaces: &[String]) -> Vec<Condition> {
        let mut c = Vec::new();
        let bytes = |s: &mut Self, key: &str, v: &str| match text_or_hex(v) {
            Ok(b) => Some(b),
            Err(e) => {
                s.bad(&format!("{k}.{key}"), e);
                None
            }
        };
        if let Some(v) = &m.vendor_class {
            let data = v.data.as_deref().and_then(|d| bytes(self, "vendor-class.data", d));
            c.push(Condition::VendorClass { enterprise: v.enterprise, data });
        }
        if let Some(v) = m.user_class.as_deref().and_then(|v| bytes(self, "user-class", v)) {
            c.push(Condition::UserClass(v));
        }
        if let Some(v) = m.interface_id.as_deref().and_then(|v| bytes(self, "interface-id", v)) {
            c.push(Condition::InterfaceId(v));
        }
        match &m.remote_id {
            Some(RawRemoteId::Id(s)) => {
                if let Some(id) = bytes(self, "remote-id", s) {
                    c.push(Condition::RemoteId { enterprise: None, id });
                }
            }
            Some(RawRemoteId::Full(t)) => {
                if let Some(id) = bytes(self, "remote-id.id", &t.id) {
                    c.push(Condition::RemoteId { enterprise: t.enterprise, id });
                }
            }
            None => {}
        }
        if let Some(v) = m.subscriber_id.as_deref().and_then(|v| bytes(self, "subscriber-id", v)) {
            c.push(Condition::SubscriberId(v));
        }
        if let Some(v) = &m.hw_address {
            match hw_address(v) {
                Ok(h) => c.push(Condition::HwAddress(h)),
                Err(e) => self.bad(&format!("{k}.hw-address"), e),
            }
        }
        if let Some(v) = &m.duid {
            match hex_bytes(v) {
                Ok(b) if !b.is_empty() => c.push(Condition::DuidPrefix(b)),
                Ok(_) => self.bad(&format!("{k}.duid"), "empty prefix"),
                Err(e) => self.bad(&format!("{k}.duid"), e),
            }
        }
        if let Some(v) = &m.duid_type {
            let t = match v {
                toml::Value::Integer(i) => u16::try_from(*i).ok(),
                toml::Value::String(s) => match s.as_str() {
                    "llt" | "duid-llt" => Some(1),
                    "en" | "duid-en" => Some(2),
                    "ll" | "duid-ll" => Some(3),
                    "uuid" | "duid-uuid" => Some(4),
                    _ => None,
                },
                _ => None,
            };
            match t {
                Some(t) => c.push(Condition::DuidType(t)),
                None => self.bad(&format!("{k}.duid-type"), format!("{v}: one of \"llt\", \"en\", \"ll\", \"uuid\" or a number")),
            }
        }
        if let Some(v) = &m.interface {
            if !interfaces.contains(v) {
                self.bad(&format!("{k}.interface"), format!("{v:?} is not listed in the top-level `interfaces`"));
            }
            c.push(Condition::Interface(v.clone()));
        }
        if let Some(v) = &m.relay_link {
            let p = if v.contains('/') { v.parse::<crate::pool::Prefix>() } else { format!("{v}/128").parse() };
            match p {
                Ok(p) => c.push(Condition::RelayLink(p)),
                Err(e) => self.bad(&format!("{k}.relay-link"), e),
            }
        }
        if c.is_empty() {
            self.bad(k, "a class needs at least one match key (vendor-class, user-class, interface-id, remote-id, subscriber-id, hw-address, duid, duid-type, interface, relay-link)");
        }
        c
    }
}

/// "0x0a0b..." is hex; anything else stands for its own text octets.
pub fn text_or_hex(s: &str) -> Result<Vec<u8>, String> {
    match s.strip_prefix("0x") {
        Some(h) => hex_bytes(h),
        None if s.is_empty() => Err("empty value".into()),
        None => Ok(s.as_bytes().to_vec()),
    }
}

/// Hex octets, with or without ':' between them (and an optional "0x").
pub fn hex_bytes(s: &str) -> Result<Vec<u8>, String> {
    crate::wire::hex::decode(s.strip_prefix("0x").unwrap_or(s)).map_err(|_| format!("{s:?} is not hex octets"))
}

/// "02:00:5e:00:00:10" (or with '-', or bare hex): 1 to 32 octets, two
/// digits each.
pub fn hw_address(s: &str) -> Result<Vec<u8>, String> {
    let bad = || format!("{s:?} is not a link-layer address like 02:00:5e:00:00:10");
    let parts: Vec<&str> = if s.contains([':', '-']) { s.split([':', '-']).collect() } else { vec![s] };
    if parts.len() > 1 && parts.iter().any(|p| p.len() != 2) {
        return Err(bad());
    }
    match hex_bytes(&parts.concat()) {
        Ok(b) if (1..=32).contains(&b.len()) => Ok(b),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(toml_text: &str) -> (Vec<OptionData>, Vec<(String, String)>) {
        #[derive(Deserialize)]
        struct W {
            options: Vec<RawOption>,
        }
        let w: W = toml::from_str(toml_text).unwrap();
        let mut problems = Vec::new();
        let out = Encoder { problems: &mut problems }.options("options", &w.options);
        (out, problems)
    }

    #[test]
    fn named_and_typed_options_encode_as_the_rfcs_lay_them_out() {
        let (o, p) = enc(r#"options = [
            { name = "sip-server-addresses", value = ["2001:db8::5", "2001:db8::6"] },
            { name = "bootfile-url", value = "http://[2001:db8::1]/boot.efi" },
            { name = "bootfile-param", value = ["a", "bc"] },
            { name = "aftr-name", value = "aftr.example.net" },
            { name = "ntp-servers", value = ["2001:db8::123"] },
            { code = 65000, type = "string", value = "hello", always-send = true },
            { code = 65001, type = "record", fields = ["u8", "u16", "boolean", "ipv6-address"], value = [1, 515, true, "::1"] },
            { name = "vendor-opts", enterprise = 4491, sub = [ { code = 1, type = "string", value = "x" }, { code = 2, type = "u32", value = 7 } ] },
            { name = "vendor-opts", enterprise = 3561, sub = [ { code = 1, type = "hex", value = "0a0b" } ] },
        ]"#);
        assert_eq!(p, vec![]);
        assert_eq!(o[0].code, 22);
        assert_eq!(o[0].data.len(), 32);
        assert_eq!((o[1].code, o[1].data.as_slice()), (59, b"http://[2001:db8::1]/boot.efi".as_slice()));
        assert_eq!(o[2].data, vec![0, 1, b'a', 0, 2, b'b', b'c']);
        assert_eq!(o[3].data, b"\x04aftr\x07example\x03net\x00".to_vec());
        assert_eq!(&o[4].data[..4], &[0, 1, 0, 16]);
        assert!(o[5].always_send && !o[0].always_send);
        assert_eq!(o[6].data.len(), 1 + 2 + 1 + 16);
        assert_eq!(&o[6].data[..4], &[1, 2, 3, 1]);
        assert_eq!(o[7].code, 17);
        assert_eq!(o[7].data, [&4491u32.to_be_bytes()[..], &[0, 1, 0, 1, b'x', 0, 2, 0, 4, 0, 0, 0, 7]].concat());
        assert_eq!(o[8].data, [&3561u32.to_be_bytes()[..], &[0, 1, 0, 2, 0x0a, 0x0b]].concat());
    }

    #[test]
    fn a_bad_value_names_its_key() {
        for (text, key, why) in [
            (r#"options = [{ name = "dns-servers", value = ["nope"] }]"#, "options[0].value", "not an IPv6 address"),
            (r#"options = [{ name = "nonesuch", value = 1 }]"#, "options[0].name", "unknown option"),
            (r#"options = [{ code = 65000, type = "u8", value = 300 }]"#, "options[0].value", "0 to 255"),
            (r#"options = [{ code = 65000, value = 3 }]"#, "options[0].type", "needs a type"),
            (r#"options = [{ code = 3, type = "hex", value = "00" }]"#, "options[0].code", "fills in"),
            (r#"options = [{ code = 65000, type = "hex", value = "0g" }]"#, "options[0].value", "hex"),
            (r#"options = [{ name = "vendor-opts", sub = [] }]"#, "options[0].enterprise", "enterprise number"),
            (r#"options = [{ code = 65000, type = "record", fields = ["u8"], value = [1, 2] }]"#, "options[0].value", "1 values"),
            (r#"options = [{ name = "bootfile-url", value = "a" }, { code = 59, type = "string", value = "b" }]"#, "options[1]", "set twice"),
        ] {
            let (_, p) = enc(text);
            assert!(p.iter().any(|(k, r)| k == key && r.contains(why)), "{text}: {p:?}");
        }
    }

    #[test]
    fn hex_text_and_hardware_addresses() {
        assert_eq!(text_or_hex("0x0a0B").unwrap(), vec![10, 11]);
        assert_eq!(text_or_hex("cm").unwrap(), b"cm".to_vec());
        assert_eq!(hw_address("02:00:5e:00:00:10").unwrap(), vec![2, 0, 0x5e, 0, 0, 0x10]);
        assert!(hw_address("02:00:5e:00:00:1").is_err());
        assert!(hw_address("2:0:5e:0:0:10").is_err(), "one digit per octet would misread");
        assert_eq!(hw_address("02005e000010").unwrap().len(), 6);
        assert!(hex_bytes("zz").is_err());
    }
}
