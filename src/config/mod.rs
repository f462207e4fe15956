//! The TOML configuration (shared/interface.md): parsed with serde, unknown
//! keys rejected, then validated into typed settings. Every problem is
//! reported as `FILE: KEY: what is wrong`, all of them at once.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::failover::{FailoverConfig, Role};
use crate::pool::{AddrRange, Prefix};
pub use crate::server::fqdn::FqdnPolicy;
pub use crate::server::settings::{ClassDef, OptionData, PdPool, PoolScope, Provisioning, Reservation, ReservedFor, Subnet};
use options::{RawClass, RawOption};
use crate::wire::{DomainName, Duid};

/// One configuration problem: the key it concerns and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

/// All problems found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}: {}", self.file.display(), p.key, p.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Is every address from `first` to `last` a reserved interface identifier?
/// Jumps run by run (a few steps), never address by address.
fn only_reserved(first: u128, last: u128) -> bool {
    let mut at = first;
    loop {
        match crate::pool::reserved::run_end(at) {
            Some(end) if end >= last => return true,
            Some(end) => at = end + 1,
            None => return false,
        }
    }
}

/// The most failover relationships one server takes part in (README
/// "Several relationships": what each costs).
pub const MAX_RELATIONSHIPS: usize = 64;

// ---- raw, as written in the file ---------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    interfaces: Vec<String>,
    #[serde(default)]
    unicast_listen: Vec<String>,
    server_duid: Option<String>,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default)]
    subnet: Vec<RawSubnet>,
    #[serde(default)]
    failover: OneOrMany<RawFailover>,
    ddns: Option<RawDdns>,
    #[serde(default)]
    limits: RawLimits,
    user: Option<String>,
    log_level: Option<String>,
    #[serde(default)]
    options: Vec<RawOption>,
    #[serde(default)]
    class: Vec<RawClass>,
    leasequery: Option<RawLeasequery>,
}

/// `[leasequery]` (RFC 5007, RFC 5460).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLeasequery {
    #[serde(default)]
    allowed: Vec<String>,
    bulk: Option<bool>,
    bulk_max_connections: Option<usize>,
    bulk_data_timeout: Option<u32>,
    #[serde(default)]
    sensitive_options: Vec<u16>,
}

/// `[limits]` (RFC 9915 Security Considerations); 0 turns a limit off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    leases_per_client: Option<u32>,
    declines_per_client_per_hour: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRuntime {
    shards: Option<usize>,
    cpus: Option<String>,
    failover_cpu: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSubnet {
    prefix: String,
    interface: Option<String>,
    #[serde(default)]
    relay_links: Vec<String>,
    server_unicast: Option<String>,
    #[serde(default)]
    pools: Vec<RawPool>,
    #[serde(default)]
    pd_pools: Vec<RawPdPool>,
    #[serde(default)]
    options: Vec<RawOption>,
    shared_network: Option<String>,
    preferred_lifetime: Option<u32>,
    valid_lifetime: Option<u32>,
    renew_time: Option<u32>,
    rebind_time: Option<u32>,
    #[serde(default)]
    rapid_commit: bool,
    #[serde(default)]
    dns_servers: Vec<String>,
    #[serde(default)]
    domain_search: Vec<String>,
    #[serde(default)]
    ntp_servers: Vec<String>,
    preference: Option<u8>,
    information_refresh_time: Option<u32>,
    sol_max_rt: Option<u32>,
    inf_max_rt: Option<u32>,
    #[serde(default)]
    reservations: Vec<RawReservation>,
}

/// An address pool: `"first-last"`, or a table with classes and options.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawPool {
    Range(String),
    Table(RawPoolTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPoolTable {
    range: String,
    #[serde(default)]
    client_classes: Vec<String>,
    #[serde(default)]
    options: Vec<RawOption>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPdPool {
    prefix: String,
    delegated_length: u8,
    #[serde(default)]
    client_classes: Vec<String>,
    #[serde(default)]
    options: Vec<RawOption>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawReservation {
    duid: Option<String>,
    hw_address: Option<String>,
    address: Option<String>,
    #[serde(default)]
    addresses: Vec<String>,
    prefix: Option<String>,
    #[serde(default)]
    prefixes: Vec<String>,
    hostname: Option<String>,
    #[serde(default)]
    options: Vec<RawOption>,
}

/// `[failover]` (one relationship) or `[[failover]]` (several): a table
/// or an array of tables, each read with its own errors.
#[derive(Debug, Default)]
enum OneOrMany<T> {
    #[default]
    None,
    One(T),
    Many(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table ([failover]) or an array of tables ([[failover]])")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(m)).map(OneOrMany::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, s: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(serde::de::value::SeqAccessDeserializer::new(s)).map(OneOrMany::Many)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFailover {
    name: String,
    /// Prefixes of the `[[subnet]]`s this relationship covers (all when absent).
    subnets: Option<Vec<String>>,
    role: String,
    listen: Option<String>,
    peer: String,
    mclt: Option<u32>,
    max_unacked_bndupd: Option<u32>,
    keepalive_time: Option<u32>,
    auto_partner_down: Option<u32>,
    pd_secondary_share: Option<f64>,
    pd_secondary_max: Option<u64>,
    startup_time: Option<u32>,
    startup_partner_down: Option<bool>,
    updreq_timeout: Option<u32>,
    connect_retry: Option<u32>,
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    peer_name: Option<String>,
    #[serde(default)]
    insecure: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDdns {
    server: String,
    forward_zone: String,
    reverse_zone: String,
    tsig_name: Option<String>,
    tsig_algorithm: Option<String>,
    tsig_secret: Option<String>,
    fqdn_policy: Option<String>,
    qualifying_suffix: Option<String>,
    synthesize_pattern: Option<String>,
}

// ---- validated ----------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub interfaces: Vec<String>,
    pub unicast_listen: Vec<Ipv6Addr>,
    pub server_duid: Option<Duid>,
    pub runtime: Runtime,
    pub subnets: Vec<Subnet>,
    /// The failover relationships (RFC 8156 §3): none (standalone), one
    /// (`[failover]`), or several (`[[failover]]`, each with its subnets).
    /// Each subnet's `relationship` indexes this list.
    pub failover: Vec<Failover>,
    pub ddns: Option<Ddns>,
    pub limits: crate::server::limits::Limits,
    /// Started as root: the user to run as once sockets and store are open.
    pub user: Option<String>,
    /// The log filter (`--log-level` overrides it).
    pub log_level: Option<String>,
    /// Global `options` and the `[[class]]`es.
    pub provisioning: Provisioning,
    /// `[leasequery]`: None answers no leasequery (they are dropped).
    pub leasequery: Option<Leasequery>,
}

/// `[leasequery]`: who may ask, and Bulk Leasequery over TCP.
#[derive(Debug, Clone, PartialEq)]
pub struct Leasequery {
    /// Requestors (source addresses) allowed to query; others get NotAllowed
    /// (UDP) or their connection closed (TCP).
    pub allowed: Vec<Prefix>,
    /// Bulk Leasequery on TCP, on the DHCP port (RFC 5460).
    pub bulk: bool,
    /// BULK_LQ_MAX_CONNS.
    pub bulk_max_connections: usize,
    /// BULK_LQ_DATA_TIMEOUT, seconds.
    pub bulk_data_timeout: u32,
    /// Option codes never returned to a requestor (RFC 5007 §4.4.2).
    pub sensitive_options: Vec<u16>,
}

impl Leasequery {
    pub fn allows(&self, a: Ipv6Addr) -> bool {
        self.allowed.iter().any(|p| p.contains(a))
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Runtime {
    /// None: available cores minus one.
    pub shards: Option<usize>,
    pub cpus: Option<Vec<usize>>,
    pub failover_cpu: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failover {
    pub name: String,
    /// The subnets this relationship covers, by prefix; None: every subnet
    /// (the single `[failover]` form).
    pub subnets: Option<Vec<Prefix>>,
    pub role: Role,
    pub listen: Option<SocketAddr>,
    pub peer: SocketAddr,
    pub mclt: u32,
    pub max_unacked_bndupd: u32,
    pub keepalive_time: u32,
    /// Seconds in COMMUNICATIONS-INTERRUPTED before PARTNER-DOWN; 0 = never.
    pub auto_partner_down: u32,
    pub pd_secondary_share: f64,
    /// At most this many delegable prefixes go to the secondary.
    pub pd_secondary_max: u64,
    /// Seconds STARTUP waits to hear from the partner (RFC 8156 §8.3.2).
    pub startup_time: u32,
    /// RFC 8156 §8.3.2 step 1: PARTNER-DOWN when STARTUP ends without contact.
    pub startup_partner_down: bool,
    /// Seconds without UPDDONE and without BNDUPD before an UPDREQ(ALL) is given up.
    pub updreq_timeout: u32,
    /// Seconds between the primary's connection attempts.
    pub connect_retry: u32,
    pub tls: Tls,
}

impl Failover {
    /// The endpoint's settings.
    pub fn settings(&self) -> FailoverConfig {
        FailoverConfig {
            role: self.role,
            relationship_name: self.name.clone(),
            mclt: self.mclt,
            keepalive_time: self.keepalive_time,
            max_unacked_bndupd: self.max_unacked_bndupd,
            auto_partner_down: self.auto_partner_down,
            startup_time: self.startup_time,
            pd_secondary_share: self.pd_secondary_share,
            pd_secondary_max: self.pd_secondary_max,
            connect_retry: self.connect_retry,
            connect_retry_rejected: self.connect_retry.max(30),
            updreq_timeout: self.updreq_timeout,
            startup_partner_down: self.startup_partner_down,
            resync_all: false,
            min_mclt: if short_times_allowed() { 1 } else { crate::failover::MIN_LEASE_TIME },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Tls {
    Mutual { cert: PathBuf, key: PathBuf, ca: PathBuf, peer_name: Option<String> },
    Insecure,
}


#[derive(Debug, Clone, PartialEq)]
pub struct Ddns {
    pub server: SocketAddr,
    pub forward_zone: DomainName,
    pub reverse_zone: DomainName,
    pub tsig: Option<Tsig>,
    pub fqdn_policy: FqdnPolicy,
    pub qualifying_suffix: DomainName,
    pub synthesize_pattern: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tsig {
    pub name: DomainName,
    pub algorithm: String,
    pub secret: Vec<u8>,
}

pub const DEFAULT_DATA_DIR: &str = "/var/lib/tandem";
pub const DEFAULT_PREFERRED: u32 = 3000;
pub const DEFAULT_VALID: u32 = 4000;
pub const DEFAULT_MCLT: u32 = 3600;
/// Chosen from perf/run.sh --scale: 64 left a 1 M fill with ~90,000 BNDUPDs
/// queued and a resync at one round trip per 64 leases; 1024 drains at once.
pub const DEFAULT_MAX_UNACKED: u32 = 1024;
/// What one connection may hold unacknowledged (bounds the receiver's memory).
pub const MAX_MAX_UNACKED: u32 = 65_536;
pub const DEFAULT_KEEPALIVE: u32 = 60;
pub const DEFAULT_UPDREQ_TIMEOUT: u32 = 120;
pub const DEFAULT_CONNECT_RETRY: u32 = 5;

/// Test-only: `TANDEM_TEST_SHORT_TIMES=1` lets `mclt` and a failover
/// subnet's `valid-lifetime` go below the 30 s RFC 8156 §1 requires (and
/// the partner's CONNECT too), so that tests and the demo run in seconds.
pub const SHORT_TIMES_ENV: &str = "TANDEM_TEST_SHORT_TIMES";

pub fn short_times_allowed() -> bool {
    std::env::var(SHORT_TIMES_ENV).is_ok_and(|v| v == "1")
}
/// Delegable prefixes the secondary gets at most (each is a record on both
/// servers): enough to serve a long outage, never half of a /32 of /64s.
pub const DEFAULT_PD_SECONDARY_MAX: u64 = 16384;

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            problems: vec![Problem { key: "(file)".into(), reason: format!("cannot read: {e}") }],
        })?;
        Config::parse(&text).map_err(|problems| ConfigError { file: path.to_owned(), problems })
    }

    /// What is valid but probably not meant (`check-config` prints these as
    /// `FILE: KEY: warning: …` and exits 0; `serve` logs them).
    pub fn warnings(&self) -> Vec<Problem> {
        let mut w = Vec::new();
        for (i, s) in self.subnets.iter().enumerate() {
            for r in &s.pools {
                if only_reserved(u128::from(r.first), u128::from(r.last)) {
                    w.push(Problem {
                        key: format!("subnet[{i}].pools"),
                        reason: format!(
                            "range {}-{} holds only reserved interface identifiers (RFC 9915 §13.1, RFC 5453): nothing is ever allocated from it",
                            r.first, r.last
                        ),
                    });
                }
            }
        }
        // RFC 8156 §6.2: a pair of servers SHOULD have one relationship.
        for (r, f) in self.failover.iter().enumerate() {
            if let Some(o) = self.failover[..r].iter().find(|o| o.peer.ip() == f.peer.ip()) {
                w.push(Problem {
                    key: format!("failover[{r}].peer"),
                    reason: format!(
                        "{} is the partner of relationship {:?} too: RFC 8156 section 6.2 says a pair of servers SHOULD have one relationship (put the subnets in one)",
                        f.peer.ip(),
                        o.name
                    ),
                });
            }
        }
        w
    }

    pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| vec![toml_problem(text, &e)])?;
        let mut v = Validator { problems: Vec::new(), reserved: Vec::new(), reserved_prefixes: Vec::new() };
        let cfg = v.config(raw);
        if v.problems.is_empty() { Ok(cfg) } else { Err(v.problems) }
    }
}

/// Turn a serde/toml error into a problem naming the key and line.
fn toml_problem(text: &str, e: &toml::de::Error) -> Problem {
    let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
    let msg = e.message().trim().to_string();
    let key = match (line, e.span()) {
        (Some(l), Some(s)) => {
            let snippet = text.get(s.clone()).unwrap_or("").lines().next().unwrap_or("").trim();
            let k = snippet.split('=').next().unwrap_or("").trim();
            if k.is_empty() { format!("line {l}") } else { format!("{k} (line {l})") }
        }
        _ => "(syntax)".into(),
    };
    Problem { key, reason: msg }
}

struct Validator {
    problems: Vec<Problem>,
    /// Every reserved range and the key of its reservation (for overlaps).
    reserved: Vec<(u128, u128, String)>,
    /// Every reserved prefix and its key (checked against every pd-pool).
    reserved_prefixes: Vec<(Prefix, String)>,
}

impl Validator {
    fn bad(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem { key: key.into(), reason: reason.into() });
    }

    fn addr(&mut self, key: &str, s: &str) -> Option<Ipv6Addr> {
        match s.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.bad(key, format!("{s:?} is not an IPv6 address"));
                None
            }
        }
    }

    fn sockaddr(&mut self, key: &str, s: &str) -> Option<SocketAddr> {
        match s.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.bad(key, format!("{s:?} is not an address:port (e.g. \"[2001:db8::1]:647\")"));
                None
            }
        }
    }

    fn prefix(&mut self, key: &str, s: &str) -> Option<Prefix> {
        match s.parse::<Prefix>() {
            Ok(p) => Some(p),
            Err(e) => {
                self.bad(key, e);
                None
            }
        }
    }

    fn name(&mut self, key: &str, s: &str) -> Option<DomainName> {
        match DomainName::from_dotted(s) {
            Ok(n) => Some(n),
            Err(e) => {
                self.bad(key, e);
                None
            }
        }
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let unicast_listen =
            raw.unicast_listen.iter().filter_map(|s| self.addr("unicast-listen", s)).collect();
        let server_duid = raw.server_duid.as_deref().and_then(|s| match Duid::from_hex(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.bad("server-duid", e);
                None
            }
        });
        let runtime = self.runtime(raw.runtime);
        if raw.subnet.is_empty() {
            self.bad("subnet", "at least one [[subnet]] is required");
        }
        let provisioning = {
            let mut found = Vec::new();
            let mut enc = options::Encoder { problems: &mut found };
            let p = Provisioning { options: enc.options("options", &raw.options), classes: enc.classes(&raw.class, &raw.interfaces) };
            self.file(found);
            p
        };
        let subnets: Vec<Subnet> = raw
            .subnet
            .into_iter()
            .enumerate()
            .filter_map(|(i, s)| self.subnet(i, s, &raw.interfaces, &provisioning.classes, runtime.shards))
            .collect();
        self.check_overlaps(&subnets);
        self.check_reservations(&subnets);
        self.check_networks(&subnets);
        let raws = match raw.failover {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(f) => vec![("failover".to_string(), f)],
            OneOrMany::Many(v) => v.into_iter().enumerate().map(|(i, f)| (format!("failover[{i}]"), f)).collect(),
        };
        let several = raws.len() > 1;
        let failover: Vec<Failover> = raws.into_iter().filter_map(|(k, f)| self.failover(&k, f, several)).collect();
        let mut subnets = subnets;
        self.assign_relationships(&mut subnets, &failover);
        if !failover.is_empty() && !short_times_allowed() {
            for (i, sn) in subnets.iter().enumerate() {
                if sn.relationship.is_some() && sn.valid_lifetime < crate::failover::MIN_LEASE_TIME {
                    self.bad(
                        format!("subnet[{i}].valid-lifetime"),
                        format!("{} is below 30 s: failover is not for leases shorter than 30 s (RFC 8156 section 1)", sn.valid_lifetime),
                    );
                }
            }
        }
        let ddns = raw.ddns.and_then(|d| self.ddns(d));
        let d = crate::server::limits::Limits::default();
        let limits = crate::server::limits::Limits {
            leases_per_client: raw.limits.leases_per_client.unwrap_or(d.leases_per_client),
            declines_per_client_per_hour: raw.limits.declines_per_client_per_hour.unwrap_or(d.declines_per_client_per_hour),
        };
        let leasequery = raw.leasequery.map(|l| self.leasequery(l));
        Config {
            leasequery,
            data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            interfaces: raw.interfaces,
            unicast_listen,
            server_duid,
            runtime,
            subnets,
            failover,
            ddns,
            limits,
            user: raw.user,
            provisioning,
            log_level: raw.log_level.filter(|l| match tracing_subscriber::EnvFilter::try_new(l) {
                Ok(_) => true,
                Err(e) => {
                    self.bad("log-level", format!("{l:?}: {e}"));
                    false
                }
            }),
        }
    }

    fn leasequery(&mut self, l: RawLeasequery) -> Leasequery {
        let mut allowed = Vec::new();
        for (i, a) in l.allowed.iter().enumerate() {
            let key = format!("leasequery.allowed[{i}]");
            let p = if a.contains('/') { self.prefix(&key, a) } else { self.addr(&key, a).and_then(|x| Prefix::new(x, 128)) };
            // A link-local address names no link here: it would match on every interface.
            if p.is_some_and(|p| p.addr.is_unicast_link_local()) {
                self.bad(&key, format!("{a:?} is link-local: it would be allowed on every interface; give the requestor's global (or loopback) address"));
                continue;
            }
            allowed.extend(p);
        }
        let bulk_max_connections = l.bulk_max_connections.unwrap_or(10);
        if bulk_max_connections == 0 {
            self.bad("leasequery.bulk-max-connections", "must be at least 1 (turn Bulk Leasequery off with bulk = false)");
        }
        let bulk_data_timeout = l.bulk_data_timeout.unwrap_or(300);
        if bulk_data_timeout == 0 {
            self.bad("leasequery.bulk-data-timeout", "must be at least 1 s (RFC 5460 recommends the default, 300)");
        }
        for c in &l.sensitive_options {
            if matches!(*c, crate::wire::opt::CLIENTID | crate::wire::opt::IAADDR | crate::wire::opt::IAPREFIX | crate::wire::opt::CLT_TIME) {
                self.bad("leasequery.sensitive-options", format!("option {c} is part of every answer (RFC 5007 §4.4.2)"));
            }
        }
        Leasequery { allowed, bulk: l.bulk.unwrap_or(true), bulk_max_connections, bulk_data_timeout, sensitive_options: l.sensitive_options }
    }

    fn runtime(&mut self, r: RawRuntime) -> Runtime {
        if r.shards == Some(0) {
            self.bad("runtime.shards", "must be at least 1");
        }
        let cpus = r.cpus.as_deref().and_then(|s| match parse_cpu_list(s) {
            Ok(c) => Some(c),
            Err(e) => {
                self.bad("runtime.cpus", e);
                None
            }
        });
        Runtime { shards: r.shards, cpus, failover_cpu: r.failover_cpu }
    }

    /// File the problems an `options::Encoder` found.
    fn file(&mut self, found: Vec<(String, String)>) {
        for (k, r) in found {
            self.bad(k, r);
        }
    }

    /// Encode a scope's options.
    fn options(&mut self, key: &str, raw: &[RawOption]) -> Vec<OptionData> {
        let mut found = Vec::new();
        let out = options::Encoder { problems: &mut found }.options(key, raw);
        self.file(found);
        out
    }

    /// A pool's `client-classes` must name defined classes.
    fn pool_scope(&mut self, key: &str, client_classes: &[String], raw: &[RawOption], classes: &[ClassDef]) -> PoolScope {
        for c in client_classes {
            if !classes.iter().any(|d| &d.name == c) {
                self.bad(format!("{key}.client-classes"), format!("unknown class {c:?} (define it with [[class]])"));
            }
        }
        PoolScope { client_classes: client_classes.to_vec(), options: self.options(&format!("{key}.options"), raw) }
    }

    fn subnet(&mut self, i: usize, s: RawSubnet, interfaces: &[String], classes: &[ClassDef], shards: Option<usize>) -> Option<Subnet> {
        let k = |f: &str| format!("subnet[{i}].{f}");
        let prefix = self.prefix(&k("prefix"), &s.prefix)?;
        if let Some(ifname) = &s.interface
            && !interfaces.contains(ifname)
        {
            self.bad(k("interface"), format!("{ifname:?} is not listed in the top-level `interfaces`"));
        }
        let relay_links = s.relay_links.iter().filter_map(|a| self.addr(&k("relay-links"), a)).collect();
        let server_unicast = s.server_unicast.as_deref().and_then(|a| self.addr(&k("server-unicast"), a));
        let mut pools = Vec::new();
        let mut pool_scopes = Vec::new();
        for (j, raw) in s.pools.iter().enumerate() {
            let (p, scope) = match raw {
                RawPool::Range(p) => (p, PoolScope::default()),
                RawPool::Table(t) => (&t.range, self.pool_scope(&k(&format!("pools[{j}]")), &t.client_classes, &t.options, classes)),
            };
            match p.parse::<AddrRange>() {
                Ok(r) if !prefix.contains(r.first) || !prefix.contains(r.last) => {
                    self.bad(k("pools"), format!("range {p} is not inside {prefix}"))
                }
                Ok(r) => {
                    pools.push(r);
                    pool_scopes.push(scope);
                }
                Err(e) => self.bad(k("pools"), e),
            }
        }
        let mut pd_pools = Vec::new();
        let mut pd_pool_scopes = Vec::new();
        for (j, p) in s.pd_pools.iter().enumerate() {
            let Some(pp) = self.prefix(&k("pd-pools.prefix"), &p.prefix) else { continue };
            if p.delegated_length < pp.len || p.delegated_length > 128 {
                self.bad(
                    k("pd-pools.delegated-length"),
                    format!("{} must be between the pool's length {} and 128", p.delegated_length, pp.len),
                );
                continue;
            }
            pd_pools.push(PdPool { prefix: pp, delegated_length: p.delegated_length });
            pd_pool_scopes.push(self.pool_scope(&k(&format!("pd-pools[{j}]")), &p.client_classes, &p.options, classes));
        }
        if pools.is_empty() && pd_pools.is_empty() && s.reservations.is_empty() {
            self.bad(k("pools"), "a subnet needs at least one address pool, pd-pool or reservation");
        }
        let preferred = s.preferred_lifetime.unwrap_or(DEFAULT_PREFERRED);
        let valid = s.valid_lifetime.unwrap_or(DEFAULT_VALID.max(preferred));
        if preferred > valid {
            self.bad(k("preferred-lifetime"), format!("{preferred} exceeds valid-lifetime {valid}"));
        }
        if valid == 0 {
            self.bad(k("valid-lifetime"), "must be greater than 0");
        }
        let renew = s.renew_time.unwrap_or(preferred / 2);
        let rebind = s.rebind_time.unwrap_or((preferred as u64 * 4 / 5) as u32);
        if renew > rebind {
            self.bad(k("renew-time"), format!("T1 {renew} exceeds rebind-time (T2) {rebind}"));
        }
        if rebind > preferred {
            self.bad(k("rebind-time"), format!("T2 {rebind} exceeds preferred-lifetime {preferred}"));
        }
        for (key, v) in [("sol-max-rt", s.sol_max_rt), ("inf-max-rt", s.inf_max_rt)] {
            if let Some(v) = v
                && !(60..=86400).contains(&v)
            {
                self.bad(k(key), format!("{v} must be between 60 and 86400 (RFC 9915 §21.24)"));
            }
        }
        if let Some(v) = s.information_refresh_time
            && v < 600
        {
            self.bad(k("information-refresh-time"), format!("{v} is below IRT_MINIMUM 600"));
        }
        let dns_servers = s.dns_servers.iter().filter_map(|a| self.addr(&k("dns-servers"), a)).collect();
        let ntp_servers = s.ntp_servers.iter().filter_map(|a| self.addr(&k("ntp-servers"), a)).collect();
        let domain_search = s
            .domain_search
            .iter()
            .filter_map(|n| {
                let fq = if n.ends_with('.') { n.clone() } else { format!("{n}.") };
                self.name(&k("domain-search"), &fq)
            })
            .collect();
        let options = self.options(&k("options"), &s.options);
        for (key, code, set) in [
            ("dns-servers", 23, !s.dns_servers.is_empty()),
            ("domain-search", 24, !s.domain_search.is_empty()),
            ("ntp-servers", 56, !s.ntp_servers.is_empty()),
        ] {
            if set && options.iter().any(|o| o.code == code) {
                self.bad(k("options"), format!("option {code} is also set by the subnet's `{key}` key: set it one way"));
            }
        }
        let mut reservations: Vec<Reservation> = Vec::new();
        for (j, r) in s.reservations.iter().enumerate() {
            let rk = |f: &str| k(&format!("reservations[{j}].{f}"));
            let client = match (&r.duid, &r.hw_address) {
                (Some(d), None) => match Duid::from_hex(d) {
                    Ok(d) => ReservedFor::Duid(d),
                    Err(e) => {
                        self.bad(rk("duid"), e);
                        continue;
                    }
                },
                (None, Some(h)) => match options::hw_address(h) {
                    Ok(h) => ReservedFor::HwAddress(h),
                    Err(e) => {
                        self.bad(rk("hw-address"), e);
                        continue;
                    }
                },
                _ => {
                    self.bad(k(&format!("reservations[{j}]")), "a reservation names its client by duid or by hw-address (one of them)");
                    continue;
                }
            };
            if reservations.iter().any(|o| o.client == client) {
                self.bad(k(&format!("reservations[{j}]")), "this client already has a reservation in this subnet");
            }
            let mut addresses = Vec::new();
            for (n, a) in r.address.iter().chain(&r.addresses).enumerate() {
                let key = if r.address.is_some() && n == 0 { rk("address") } else { rk(&format!("addresses[{}]", n - usize::from(r.address.is_some()))) };
                let Some(a) = self.addr(&key, a) else { continue };
                if !prefix.contains(a) {
                    self.bad(key, format!("{a} is not inside {prefix}"));
                } else if crate::pool::reserved::is_reserved(u128::from(a)) {
                    self.bad(key, format!("{a} has a reserved interface identifier (RFC 9915 §13.1, RFC 5453)"));
                } else if !addresses.contains(&a) {
                    addresses.push(a);
                }
            }
            let mut prefixes = Vec::new();
            for (n, p) in r.prefix.iter().chain(&r.prefixes).enumerate() {
                let key = if r.prefix.is_some() && n == 0 { rk("prefix") } else { rk(&format!("prefixes[{}]", n - usize::from(r.prefix.is_some()))) };
                let Some(p) = self.prefix(&key, p) else { continue };
                if !prefixes.contains(&p) {
                    prefixes.push(p);
                    self.reserved_prefixes.push((p, key));
                }
            }
            let hostname = r.hostname.as_deref().and_then(|h| self.name(&rk("hostname"), h));
            let options = self.options(&rk("options"), &r.options);
            let given = r.address.is_some() || !r.addresses.is_empty() || r.prefix.is_some() || !r.prefixes.is_empty() || r.hostname.is_some() || !r.options.is_empty();
            if !given {
                self.bad(k(&format!("reservations[{j}]")), "a reservation needs an address, a prefix, a hostname or options");
            }
            // hw-address reservations need one shard: clients reach shards
            // by DUID, and one host's two DUIDs could reach two shards.
            if matches!(client, ReservedFor::HwAddress(_)) && shards != Some(1) {
                self.bad(
                    rk("hw-address"),
                    "hw-address reservations need runtime.shards = 1 (clients are spread over shards by DUID, and one host's two DUIDs could reach two shards); reserve by duid to run more shards",
                );
            }
            let at = k(&format!("reservations[{j}]"));
            self.reserved.extend(addresses.iter().map(|a| (u128::from(*a), u128::from(*a), at.clone())));
            self.reserved.extend(prefixes.iter().map(|p| (p.first(), p.last(), at.clone())));
            reservations.push(Reservation { client, addresses, prefixes, hostname, options });
        }
        Some(Subnet {
            prefix,
            interface: s.interface,
            relay_links,
            server_unicast,
            pools,
            pd_pools,
            preferred_lifetime: preferred,
            valid_lifetime: valid,
            renew_time: renew,
            rebind_time: rebind,
            rapid_commit: s.rapid_commit,
            dns_servers,
            domain_search,
            ntp_servers,
            preference: s.preference.unwrap_or(0),
            information_refresh_time: s.information_refresh_time,
            sol_max_rt: s.sol_max_rt,
            inf_max_rt: s.inf_max_rt,
            reservations,
            options,
            pool_scopes,
            pd_pool_scopes,
            shared_network: s.shared_network,
            relationship: None,
        })
    }

    /// No address or prefix is reserved twice (or overlapping), across subnets.
    /// A reserved prefix overlapping any subnet's pd-pool must be one of
    /// its delegations: a prefix is checked only against records of its own
    /// length.
    fn check_reservations(&mut self, subnets: &[Subnet]) {
        for (p, key) in std::mem::take(&mut self.reserved_prefixes) {
            let pool = subnets.iter().flat_map(|s| &s.pd_pools).find(|pp| pp.prefix.contains_prefix(&p) || p.contains_prefix(&pp.prefix));
            if let Some(pp) = pool.filter(|pp| pp.delegated_length != p.len || !pp.prefix.contains_prefix(&p)) {
                self.bad(key, format!("{p} overlaps pd-pool {} but is not one of its /{} delegations", pp.prefix, pp.delegated_length));
            }
        }
        let mut keys = std::mem::take(&mut self.reserved);
        keys.sort();
        for w in keys.windows(2) {
            if w[1].0 <= w[0].1 {
                self.bad(w[1].2.clone(), format!("overlapping reservations: also reserved in {}", w[0].2));
            }
        }
    }

    /// The subnets of one shared network are on one link: they may not name
    /// different interfaces.
    fn check_networks(&mut self, subnets: &[Subnet]) {
        for (i, s) in subnets.iter().enumerate() {
            let Some(name) = &s.shared_network else { continue };
            if name.is_empty() {
                self.bad(format!("subnet[{i}].shared-network"), "must not be empty");
            }
            let other = subnets[..i].iter().find(|o| {
                o.shared_network.as_ref() == Some(name) && o.interface.is_some() && s.interface.is_some() && o.interface != s.interface
            });
            if let Some(o) = other {
                self.bad(
                    format!("subnet[{i}].interface"),
                    format!("shared network {name:?} is one link: {:?} differs from {:?} of {}", s.interface.as_deref().unwrap_or(""), o.interface.as_deref().unwrap_or(""), o.prefix),
                );
            }
        }
    }

    fn check_overlaps(&mut self, subnets: &[Subnet]) {
        let mut ranges: Vec<(u128, u128, String)> = Vec::new();
        for (i, s) in subnets.iter().enumerate() {
            for r in &s.pools {
                ranges.push((u128::from(r.first), u128::from(r.last), format!("subnet[{i}].pools")));
            }
            for p in &s.pd_pools {
                ranges.push((p.prefix.first(), p.prefix.last(), format!("subnet[{i}].pd-pools")));
            }
        }
        ranges.sort();
        for w in ranges.windows(2) {
            if w[1].0 <= w[0].1 {
                self.bad(w[1].2.clone(), format!("overlaps a range in {}", w[0].2));
            }
        }
    }

    /// One relationship; `p` is its key ("failover" or "failover[i]").
    fn failover(&mut self, p: &str, f: RawFailover, several: bool) -> Option<Failover> {
        let role = match f.role.as_str() {
            "primary" => Some(Role::Primary),
            "secondary" => Some(Role::Secondary),
            r => {
                self.bad(format!("{p}.role"), format!("{r:?} must be \"primary\" or \"secondary\""));
                None
            }
        };
        if f.name.is_empty() {
            self.bad(format!("{p}.name"), "must not be empty");
        }
        let listen = f.listen.as_deref().and_then(|s| self.sockaddr(&format!("{p}.listen"), s));
        let peer = self.sockaddr(&format!("{p}.peer"), &f.peer);
        if role == Some(Role::Secondary) && listen.is_none() {
            self.bad(format!("{p}.listen"), "the secondary listens for the primary: set listen");
        }
        let mclt = f.mclt.unwrap_or(DEFAULT_MCLT);
        let min = if short_times_allowed() { 1 } else { crate::failover::MIN_LEASE_TIME };
        if mclt < min {
            self.bad(
                format!("{p}.mclt"),
                format!("{mclt} is below {min} s: failover is not for leases shorter than 30 s (RFC 8156 section 1)"),
            );
        }
        let updreq_timeout = f.updreq_timeout.unwrap_or(DEFAULT_UPDREQ_TIMEOUT);
        if updreq_timeout == 0 {
            self.bad(format!("{p}.updreq-timeout"), "must be at least 1 second");
        }
        let connect_retry = f.connect_retry.unwrap_or(DEFAULT_CONNECT_RETRY);
        if connect_retry == 0 {
            self.bad(format!("{p}.connect-retry"), "must be at least 1 second");
        }
        let max_unacked = f.max_unacked_bndupd.unwrap_or(DEFAULT_MAX_UNACKED);
        if max_unacked == 0 || max_unacked > MAX_MAX_UNACKED {
            self.bad(format!("{p}.max-unacked-bndupd"), format!("{max_unacked} must be between 1 and {MAX_MAX_UNACKED}"));
        }
        let keepalive = f.keepalive_time.unwrap_or(DEFAULT_KEEPALIVE);
        if keepalive == 0 {
            self.bad(format!("{p}.keepalive-time"), "must be greater than 0");
        }
        let share = f.pd_secondary_share.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&share) {
            self.bad(format!("{p}.pd-secondary-share"), format!("{share} must be between 0 and 1"));
        }
        let tls = match f.tls {
            None => {
                self.bad(
                    format!("{p}.tls"),
                    "missing: configure cert, key and ca, or set insecure = true (RFC 8156 §10)",
                );
                None
            }
            Some(t) if t.insecure => Some(Tls::Insecure),
            Some(t) => {
                let mut need = |k: &str, v: Option<PathBuf>| {
                    if v.is_none() {
                        self.bad(format!("{p}.tls.{k}"), "required unless insecure = true");
                    }
                    v
                };
                let cert = need("cert", t.cert);
                let key = need("key", t.key);
                let ca = need("ca", t.ca);
                match (cert, key, ca) {
                    (Some(cert), Some(key), Some(ca)) => {
                        Some(Tls::Mutual { cert, key, ca, peer_name: t.peer_name })
                    }
                    _ => None,
                }
            }
        };
        let subnets = match f.subnets {
            None if several => {
                self.bad(format!("{p}.subnets"), "required with several [[failover]] relationships: the prefixes of the [[subnet]]s it covers");
                None
            }
            None => None,
            Some(list) if list.is_empty() => {
                self.bad(format!("{p}.subnets"), "names no subnet: list the prefixes of the [[subnet]]s it covers, or leave it out to cover them all");
                None
            }
            Some(list) => Some(
                list.iter()
                    .filter_map(|x| match x.parse::<Prefix>() {
                        Ok(px) => Some(px),
                        Err(e) => {
                            self.bad(format!("{p}.subnets"), format!("{x:?}: {e}"));
                            None
                        }
                    })
                    .collect(),
            ),
        };
        Some(Failover {
            name: f.name,
            subnets,
            role: role?,
            listen,
            peer: peer?,
            mclt,
            max_unacked_bndupd: max_unacked,
            keepalive_time: keepalive,
            auto_partner_down: f.auto_partner_down.unwrap_or(0),
            pd_secondary_share: share,
            pd_secondary_max: f.pd_secondary_max.unwrap_or(DEFAULT_PD_SECONDARY_MAX),
            startup_time: f.startup_time.unwrap_or(10),
            startup_partner_down: f.startup_partner_down.unwrap_or(false),
            updreq_timeout,
            connect_retry,
            tls: tls?,
        })
    }

    /// Which relationship each subnet belongs to (at most one; none:
    /// standalone), and what several relationships must agree on.
    fn assign_relationships(&mut self, subnets: &mut [Subnet], rels: &[Failover]) {
        if rels.len() > MAX_RELATIONSHIPS {
            self.bad("failover", format!("{} relationships: at most {MAX_RELATIONSHIPS}", rels.len()));
        }
        for (r, f) in rels.iter().enumerate() {
            if rels[..r].iter().any(|o| o.name == f.name) {
                self.bad(format!("failover[{r}].name"), format!("{:?} names another relationship too: names must be unique", f.name));
            }
            // One partner, one TLS identity: a shared listener completes
            // TLS before it knows the relationship (README "Several relationships").
            if let Some(o) = rels[..r].iter().find(|o| o.peer.ip() == f.peer.ip() && o.tls != f.tls) {
                self.bad(format!("failover[{r}].tls"), format!("differs from relationship {:?} with the same partner {}: one partner, one set of TLS settings", o.name, f.peer.ip()));
            }
            match &f.subnets {
                None => {
                    for s in subnets.iter_mut() {
                        s.relationship = Some(r);
                    }
                }
                Some(list) => {
                    for px in list {
                        match subnets.iter().position(|s| s.prefix == *px) {
                            None => self.bad(format!("failover[{r}].subnets"), format!("{px} is not the prefix of a [[subnet]]")),
                            Some(i) if subnets[i].relationship.is_some_and(|o| o != r) => {
                                let o = subnets[i].relationship.unwrap_or(0);
                                self.bad(format!("failover[{r}].subnets"), format!("{px} belongs to relationship {:?} already: a subnet belongs to at most one", rels[o].name));
                            }
                            Some(i) => subnets[i].relationship = Some(r),
                        }
                    }
                }
            }
        }
        if rels.len() > 1 {
            // A key belongs to one relationship: a reservation may not sit in
            // another relationship's pool (both partners would own it).
            for (i, s) in subnets.iter().enumerate() {
                for r in &s.reservations {
                    let keys = r.addresses.iter().map(|a| (a.to_string(), Some(*a), None)).chain(r.prefixes.iter().map(|p| (p.to_string(), None, Some(*p))));
                    for (k, a, p) in keys {
                        let other = subnets.iter().find(|o| {
                            o.relationship != s.relationship
                                && (a.is_some_and(|a| o.pools.iter().any(|x| x.contains(a)))
                                    || p.is_some_and(|p| o.pd_pools.iter().any(|x| x.prefix.contains_prefix(&p))))
                        });
                        if let Some(o) = other {
                            self.bad(format!("subnet[{i}].reservations"), format!("{k} lies in a pool of {}, which is in another failover relationship", o.prefix));
                        }
                    }
                }
            }
            // Secondaries listen: on one port, one address or the wildcard.
            for (r, f) in rels.iter().enumerate() {
                let Some(l) = f.listen.filter(|_| f.role == Role::Secondary) else { continue };
                let clash = rels[..r].iter().filter(|o| o.role == Role::Secondary).filter_map(|o| o.listen).find(|o| {
                    o.port() == l.port() && o.ip() != l.ip() && (o.ip().is_unspecified() || l.ip().is_unspecified())
                });
                if let Some(o) = clash {
                    self.bad(format!("failover[{r}].listen"), format!("{l} and {o} cannot both be bound: use one listen address for both (they share it)"));
                }
            }
        }
        // A shared network is one link: its clients get leases from any of
        // its subnets, so they must answer to one relationship.
        for i in 0..subnets.len() {
            let Some(net) = &subnets[i].shared_network else { continue };
            if let Some(o) = subnets[..i].iter().find(|o| o.shared_network.as_ref() == Some(net) && o.relationship != subnets[i].relationship) {
                let name = |r: Option<usize>| r.and_then(|r| rels.get(r)).map(|f| f.name.clone()).unwrap_or_else(|| "none".into());
                self.bad(
                    format!("subnet[{i}].shared-network"),
                    format!("shared network {net:?} is one link: its subnets must be in one failover relationship ({} is in {:?}, {} in {:?})", subnets[i].prefix, name(subnets[i].relationship), o.prefix, name(o.relationship)),
                );
            }
        }
    }

    fn ddns(&mut self, d: RawDdns) -> Option<Ddns> {
        let server = self.sockaddr("ddns.server", &d.server);
        let fz = self.name("ddns.forward-zone", &d.forward_zone);
        let rz = self.name("ddns.reverse-zone", &d.reverse_zone);
        let fqdn_policy = match d.fqdn_policy.as_deref().unwrap_or("client") {
            "client" => Some(FqdnPolicy::Client),
            "server" => Some(FqdnPolicy::Server),
            "none" => Some(FqdnPolicy::None),
            p => {
                self.bad("ddns.fqdn-policy", format!("{p:?} must be \"client\", \"server\" or \"none\""));
                None
            }
        };
        let tsig = match (d.tsig_name, d.tsig_secret) {
            (None, None) => None,
            (Some(n), Some(s)) => {
                let alg = d.tsig_algorithm.unwrap_or_else(|| "hmac-sha256".into());
                if !["hmac-sha256", "hmac-sha384", "hmac-sha512"].contains(&alg.as_str()) {
                    self.bad("ddns.tsig-algorithm", format!("{alg:?}: supported are hmac-sha256, hmac-sha384, hmac-sha512"));
                }
                let name = self.name("ddns.tsig-name", &n);
                match base64_decode(&s) {
                    Ok(secret) => name.map(|name| Tsig { name, algorithm: alg, secret }),
                    Err(e) => {
                        self.bad("ddns.tsig-secret", e);
                        None
                    }
                }
            }
            _ => {
                self.bad("ddns.tsig-name", "tsig-name and tsig-secret go together");
                None
            }
        };
        let qs = match &d.qualifying_suffix {
            Some(s) => self.name("ddns.qualifying-suffix", s),
            None => fz.clone(),
        };
        Some(Ddns {
            server: server?,
            forward_zone: fz?,
            reverse_zone: rz?,
            tsig,
            fqdn_policy: fqdn_policy?,
            qualifying_suffix: qs?,
            synthesize_pattern: d.synthesize_pattern.unwrap_or_else(|| "dhcp-{addr}".into()),
        })
    }
}

/// "0-3" or "0,2" or "0-1,4".
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("{part:?} in {s:?} is not a CPU number or range like 0-3");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b || b - a > 4096 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err(format!("{s:?} names no CPU"));
    }
    Ok(out)
}

fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.trim().bytes().filter(|c| *c != b'=') {
        let v = ALPHA.iter().position(|a| *a == c).ok_or_else(|| format!("{:?} is not base64", c as char))?;
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if out.is_empty() {
        return Err("empty secret".into());
    }
    Ok(out)
}

pub mod options;
pub mod reload;

#[cfg(test)]
mod tests;
