//! The operator's commands on a running server: reload (SIGHUP and `ctl
//! reload`, carried out by the main thread) and the lease API (`ctl lease
//! …`, answered on the control socket's thread). Both reach the shards as
//! `ShardOp` messages; each shard changes only its own table.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::bus::{Command, LeaseQuery, ShardOp};
use super::observe::{Shared, lock};
use super::udp;
use crate::config::{Config, Tls};
use crate::lease::{Lease, LeaseKey};
use crate::server::{EngineConfig, SliceMap};

/// How long an operator command waits for a shard's answer.
const SHARD_ANSWER: Duration = Duration::from_secs(10);
/// A wipe of a large subnet runs in chunks; it may take this long.
const WIPE_ANSWER: Duration = Duration::from_secs(600);

/// What the command line set over the file: a reload compares (and
/// keeps) these effective values.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub failover_cpu: Option<usize>,
    pub shards: Option<usize>,
    pub cpus: Option<Vec<usize>>,
    pub log_level: Option<String>,
}

impl Overrides {
    pub fn apply(&self, c: &mut Config) {
        if let Some(d) = &self.data_dir {
            c.data_dir = d.clone();
        }
        if let Some(f) = self.failover_cpu {
            c.runtime.failover_cpu = Some(f);
        }
        if let Some(n) = self.shards {
            c.runtime.shards = Some(n);
        }
        if let Some(c2) = &self.cpus {
            c.runtime.cpus = Some(c2.clone());
        }
        if let Some(l) = &self.log_level {
            c.log_level = Some(l.clone());
        }
    }
}

/// The config file's digest (SHA-256, hex) for `ctl status`.
pub fn digest(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The reservations' count and a digest of whom each reserves what
/// (SHA-256 over sorted lines): failover partners must agree on it, since a
/// reserved key is granted by either (README "Reservations").
pub fn reservations_digest(subnets: &[crate::config::Subnet]) -> (usize, String) {
    use crate::config::ReservedFor;
    let mut lines: Vec<String> = subnets
        .iter()
        .flat_map(|s| &s.reservations)
        .map(|r| {
            let who = match &r.client {
                ReservedFor::Duid(d) => format!("duid {}", d.to_hex()),
                ReservedFor::HwAddress(h) => format!("hw {}", h.iter().map(|b| format!("{b:02x}")).collect::<String>()),
            };
            let mut keys: Vec<String> = r.addresses.iter().map(|a| a.to_string()).chain(r.prefixes.iter().map(|p| p.to_string())).collect();
            keys.sort();
            format!("{who} {}\n", keys.join(" "))
        })
        .collect();
    lines.sort();
    (lines.len(), digest(lines.concat().as_bytes()))
}

/// The engine settings a configuration gives (the slice is each shard's own).
pub fn engine_config(c: &Config, template: &EngineConfig) -> EngineConfig {
    EngineConfig {
        subnets: c.subnets.clone(),
        naming: c.ddns.as_ref().map(|d| crate::server::fqdn::Naming {
            policy: d.fqdn_policy,
            qualifying_suffix: d.qualifying_suffix.clone(),
            synthesize_pattern: d.synthesize_pattern.clone(),
            forward_zone: d.forward_zone.clone(),
        }),
        limits: c.limits,
        unicast_listen: c.unicast_listen.clone(),
        provisioning: c.provisioning.clone(),
        ..template.clone()
    }
}

/// The main thread's reload: everything it needs to apply a new config.
pub struct Reloader {
    pub path: PathBuf,
    pub overrides: Overrides,
    pub running: Config,
    pub slices: SliceMap,
    pub engine: EngineConfig,
    pub shards: Vec<crossbeam_channel::Sender<ShardOp>>,
    /// Shard 0's socket (a duplicate): multicast intake joins and leaves there.
    pub multicast: socket2::Socket,
    pub ifnames: Vec<(u32, String)>,
    /// The DNS update queue's new `[ddns]`.
    pub ddns: crossbeam_channel::Sender<Option<crate::config::Ddns>>,
    pub shared: Arc<Shared>,
    /// The leasequery service's settings (`[leasequery]`, the links).
    pub leasequery: Arc<super::leasequery::Service>,
}

impl Reloader {
    /// Read, check and apply the config file; the answer of `ctl reload`.
    pub fn reload(&mut self) -> serde_json::Value {
        let file = self.path.display().to_string();
        let refused = |errors: Vec<String>| json!({"result": "refused", "changed": [], "errors": errors});
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => return refused(vec![format!("{file}: (file): cannot read: {e}")]),
        };
        let mut new = match std::str::from_utf8(&bytes).map_err(|e| e.to_string()).and_then(|t| Config::parse(t).map_err(|p| {
            p.iter().map(|p| format!("{file}: {}: {}", p.key, p.reason)).collect::<Vec<_>>().join("\n")
        })) {
            Ok(c) => c,
            Err(e) => return refused(e.lines().map(str::to_string).collect()),
        };
        self.overrides.apply(&mut new);
        // As at start-up: `--shards` may say more than the file.
        let hw_reserved = new.subnets.iter().flat_map(|s| &s.reservations).any(|r| matches!(r.client, crate::config::ReservedFor::HwAddress(_)));
        if hw_reserved && self.shards.len() > 1 {
            return refused(vec![format!(
                "{file}: reservations: hw-address reservations need one shard; this server runs {} (clients reach shards by DUID)",
                self.shards.len()
            )]);
        }
        let mut changed = match crate::config::reload::changes(&self.running, &new) {
            Ok(c) => c,
            Err(p) => return refused(p.iter().map(|p| format!("{file}: {}: {}", p.key, p.reason)).collect()),
        };
        // Everything that can fail is checked before anything is applied.
        let mut ifnames = Vec::new();
        for name in &new.interfaces {
            match udp::ifindex(name) {
                Some(i) => ifnames.push((i, name.clone())),
                None => return refused(vec![format!("{file}: interfaces: interface {name:?} does not exist")]),
            }
        }
        let mut tls = Vec::new();
        for (i, f) in new.failover.iter().enumerate() {
            tls.push(match &f.tls {
                Tls::Mutual { cert, key, ca, peer_name } => match super::tls::load_for(cert, key, ca, peer_name.as_deref(), i, new.failover.len()) {
                    Ok(t) => Some(t),
                    Err(e) => return refused(vec![format!("{file}: {e}")]),
                },
                Tls::Insecure => None,
            });
        }
        if let Some(Err(e)) = super::ddns::updates(new.ddns.as_ref()).map(super::ddns::prepare) {
            return refused(vec![format!("{file}: {e}")]);
        }
        if let Some(e) = self.slices.pd_overlap(&new.subnets) {
            return refused(vec![format!("{file}: pd-pools: {e}")]);
        }
        let slices = self.slices.reloaded(&new.subnets);
        let reserved = crate::shard::reserved_keys(&new.subnets);
        // One operator change at a time: no `lease add` meets a half-done reload.
        let _serial = lock(&self.shared.operator);
        // Step 1: records another shard could grant under the new
        // configuration (their slice owner, a client they are now reserved for).
        let mut answers = Vec::new();
        for (holder, tx) in self.shards.iter().enumerate() {
            let (reply, answer) = crossbeam_channel::bounded(1);
            if tx.send(ShardOp::Covered { slices: slices.clone(), reserved: reserved.clone(), reply }).is_err() {
                return refused(vec![format!("shard {holder} is not running")]);
            }
            match answer.recv_timeout(SHARD_ANSWER) {
                Ok(pairs) => answers.push((holder, pairs)),
                Err(_) => return refused(vec![format!("shard {holder} did not answer")]),
            }
        }
        let (away, blocks) = crate::shard::plan_blocks(answers);
        // The failover core first, owning the old and the new pools while
        // the shards switch: nothing a shard commits meanwhile is dropped
        // as someone else's (the new pools only, after step 2).
        let engine = engine_config(&new, &self.engine);
        let tunables: Vec<(u32, f64, u64)> = new.failover.iter().map(|f| (f.auto_partner_down, f.pd_secondary_share, f.pd_secondary_max)).collect();
        // Each relationship's pools: the new ones, and while the shards
        // switch, its old ones too (the relationships themselves are fixed).
        let n = new.failover.len();
        let per_rel = |m: &SliceMap| (0..n).map(|i| m.for_relationship(&new.subnets, i, n)).collect::<Vec<_>>();
        let widened: Vec<SliceMap> =
            (0..n).map(|i| slices.for_relationship(&new.subnets, i, n).widened(&self.slices.for_relationship(&self.running.subnets, i, n))).collect();
        if !tunables.is_empty() && !self.failover(widened, away.clone(), tunables.clone(), Vec::new()) {
            return refused(vec!["the failover core did not answer; nothing was changed".into()]);
        }
        *lock(&self.shared.slices) = Some(slices.clone());
        // Step 2: every shard serves from the new configuration.
        for (id, tx) in self.shards.iter().enumerate() {
            let blocked: Vec<LeaseKey> = blocks.iter().filter(|(_, at)| *at == id).map(|(k, _)| *k).collect();
            let (reply, answer) = crossbeam_channel::bounded(1);
            let op = ShardOp::Reconfigure { engine: Box::new(engine.clone()), slices: slices.clone(), blocked, ifnames: ifnames.clone(), reply };
            if tx.send(op).is_err() || answer.recv_timeout(SHARD_ANSWER).is_err() {
                // Shards before this one run the new configuration: say so.
                tracing::error!(shard = id, "reload: a shard did not apply the new configuration");
                return json!({"result": "refused", "changed": changed, "errors": [format!("shard {id} did not apply the configuration; the server runs a mix: restart it")]});
            }
        }
        if !tunables.is_empty() {
            if !self.failover(per_rel(&slices), Vec::new(), tunables, tls) {
                tracing::error!("reload: the failover core did not apply the new pools");
                return json!({"result": "refused", "changed": changed, "errors": ["the failover core did not apply the new pools; the server runs a mix: restart it"]});
            }
            let several = new.failover.len() > 1;
            for (i, f) in new.failover.iter().enumerate() {
                let k = if several { format!("failover[{i}].tls") } else { "failover.tls".into() };
                if matches!(f.tls, Tls::Mutual { .. }) && !changed.contains(&k) {
                    changed.push(format!("{k} (files re-read)"));
                }
            }
        }
        if self.running.log_level != new.log_level
            && let Err(e) = super::observe::set_log_level(new.log_level.as_deref().unwrap_or("info"))
        {
            tracing::error!("reload: log-level: {e}");
        }
        if self.running.ddns != new.ddns {
            let _ = self.ddns.send(new.ddns.clone());
        }
        // Leasequery answers from the new allow-list and links.
        self.leasequery.set_settings(super::leasequery::Settings::new(new.leasequery.clone(), &new.subnets));
        // Multicast intake follows `interfaces`.
        for (i, name) in &ifnames {
            if !self.ifnames.iter().any(|(j, _)| j == i)
                && let Err(e) = udp::join_dhcp_multicast(&self.multicast, *i)
            {
                tracing::error!(interface = %name, "reload: join ff02::1:2: {e}");
            }
        }
        for (i, name) in &self.ifnames {
            if !ifnames.iter().any(|(j, _)| j == i)
                && let Err(e) = udp::leave_dhcp_multicast(&self.multicast, *i)
            {
                tracing::warn!(interface = %name, "reload: leave ff02::1:2: {e}");
            }
        }
        self.ifnames = ifnames;
        self.slices = slices;
        self.engine = engine;
        self.running = new;
        self.shared.config_loaded(digest(&bytes), reservations_digest(&self.running.subnets));
        json!({"result": "applied", "changed": changed, "errors": []})
    }
}

/// The control socket: one command per connection (`status`,
/// `partner-down`, `shutdown`, `reload`, or a JSON object for the lease
/// commands), one JSON line back. Mode 0660: the service's group may use it.
pub fn spawn_control(path: &Path, shared: Arc<Shared>) -> Result<PathBuf, String> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in l.incoming().flatten() {
                // A thread per connection: a long `lease wipe` must not hold
                // up `status`. Only local users with access to the socket connect.
                let shared = shared.clone();
                let _ = std::thread::Builder::new().name("control-conn".into()).spawn(move || control_connection(conn, &shared));
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(path.to_owned())
}

fn control_connection(conn: std::os::unix::net::UnixStream, shared: &Shared) {
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let mut line = String::new();
    let mut r = BufReader::new(&conn).take(64 << 10);
    if r.read_line(&mut line).is_err() {
        return;
    }
    let reply = match line.trim() {
        "status" => shared.status_json(),
        "shutdown" => {
            shared.stop.store(true, Ordering::SeqCst);
            r#"{"ok":true,"action":"shutdown"}"#.to_string()
        }
        "partner-down" => shared.partner_down(None),
        l if l.starts_with("partner-down ") => shared.partner_down(Some(l["partner-down ".len()..].trim().to_string())),
        "reload" => shared.reload(),
        l if l.starts_with('{') => match serde_json::from_str::<serde_json::Value>(l) {
            Ok(req) => lease_command(shared, &req),
            Err(e) => serde_json::json!({"ok": false, "error": format!("bad request: {e}")}).to_string(),
        },
        other => serde_json::json!({"ok": false, "error": format!("unknown command {other:?}")}).to_string(),
    };
    let mut w = &conn;
    let _ = writeln!(w, "{reply}");
}

impl Reloader {
    /// Tell the failover core the pools (and the rest); false if it did not answer.
    fn failover(&self, slices: Vec<SliceMap>, away: Vec<(LeaseKey, usize)>, tunables: Vec<(u32, f64, u64)>, tls: Vec<Option<super::tls::TlsSetup>>) -> bool {
        let Some(tx) = lock(&self.shared.commands).clone() else { return false };
        let (reply, answer) = crossbeam_channel::bounded(1);
        tx.send(Command::Reconfigure { slices, away, tunables, tls, reply }).is_ok() && answer.recv_timeout(SHARD_ANSWER).is_ok()
    }
}

/// A `ctl lease …` request (one JSON object) → the JSON line answered.
pub fn lease_command(shared: &Shared, req: &serde_json::Value) -> String {
    match lease_command_inner(shared, req) {
        Ok(v) => json!({"ok": true, "result": v}).to_string(),
        Err(e) => json!({"ok": false, "error": e}).to_string(),
    }
}

fn lease_command_inner(shared: &Shared, req: &serde_json::Value) -> Result<serde_json::Value, String> {
    let s = |k: &str| req.get(k).and_then(|v| v.as_str());
    let key = if let Some(a) = s("address") {
        Some(LeaseKey::Addr(a.parse().map_err(|e| format!("address {a}: {e}"))?))
    } else if let Some(p) = s("prefix") {
        Some(LeaseKey::Prefix(p.parse().map_err(|e| format!("prefix {p}: {e}"))?))
    } else {
        None
    };
    let ops = lock(&shared.ops).clone();
    match s("command") {
        Some("lease-get") => {
            let query = match (key, s("duid")) {
                (Some(k), _) => LeaseQuery::Key(k),
                (None, Some(d)) => LeaseQuery::Client {
                    duid: crate::wire::Duid::from_hex(d).map_err(|e| format!("duid {d}: {e}"))?,
                    iaid: req.get("iaid").and_then(|v| v.as_u64()).map(|i| i as u32),
                },
                (None, None) => return Err("lease-get needs an address, a prefix or a DUID".into()),
            };
            let all = req.get("all").and_then(|v| v.as_bool()).unwrap_or(false);
            let mut found: Vec<Lease> = Vec::new();
            for (id, tx) in ops.iter().enumerate() {
                let (reply, answer) = crossbeam_channel::bounded(1);
                tx.send(ShardOp::Find { query: query.clone(), reply }).map_err(|_| format!("shard {id} is not running"))?;
                found.extend(answer.recv_timeout(SHARD_ANSWER).map_err(|_| format!("shard {id} did not answer"))?);
            }
            found.retain(|l| all || l.is_active());
            found.sort_by_key(|l| l.key);
            Ok(serde_json::Value::Array(found.iter().map(crate::lease::dump::lease_json).collect()))
        }
        Some(c @ ("lease-del" | "lease-wipe")) => {
            let query = match (c, key, s("subnet")) {
                ("lease-del", Some(k), _) => LeaseQuery::Key(k),
                ("lease-wipe", _, Some(p)) => LeaseQuery::Within(p.parse().map_err(|e| format!("subnet {p}: {e}"))?),
                _ => return Err(format!("{c}: give an address or prefix (del) or a subnet (wipe)")),
            };
            let wait = if c == "lease-wipe" { WIPE_ANSWER } else { SHARD_ANSWER };
            let mut answers = Vec::new();
            for (id, tx) in ops.iter().enumerate() {
                let (reply, answer) = crossbeam_channel::bounded(1);
                tx.send(ShardOp::Reset { query: query.clone(), reply }).map_err(|_| format!("shard {id} is not running"))?;
                answers.push((id, answer));
            }
            let mut deleted = 0;
            for (id, a) in answers {
                deleted += a.recv_timeout(wait).map_err(|_| format!("shard {id} did not answer"))?;
            }
            tracing::info!(command = c, deleted, "leases reset by an operator command");
            Ok(json!({"deleted": deleted}))
        }
        Some("lease-add") => {
            let key = key.ok_or("lease-add needs an address or a prefix")?;
            let d = s("duid").ok_or("lease-add needs a DUID")?;
            let duid = crate::wire::Duid::from_hex(d).map_err(|e| format!("duid {d}: {e}"))?;
            let iaid = req.get("iaid").and_then(|v| v.as_u64()).and_then(|i| u32::try_from(i).ok()).ok_or("lease-add needs an IAID")?;
            let valid = req.get("valid-lifetime").and_then(|v| v.as_u64()).map(|v| v.min(u64::from(u32::MAX)) as u32);
            let ia_type = match key {
                LeaseKey::Addr(_) => crate::lease::IaType::Na,
                LeaseKey::Prefix(_) => crate::lease::IaType::Pd,
            };
            let binding = crate::lease::Binding { duid, ia_type, iaid };
            add_lease(shared, &ops, key, binding, valid).map(|l| crate::lease::dump::lease_json(&l))
        }
        other => Err(format!("unknown lease command {other:?}")),
    }
}

/// `ctl lease add`: the record lives at the client's shard (where its
/// packets go); when another shard's slice owns the key, that shard hands
/// it over first and keeps it blocked (`ShardCore::lend`).
fn add_lease(
    shared: &Shared,
    ops: &[crossbeam_channel::Sender<ShardOp>],
    key: LeaseKey,
    binding: crate::lease::Binding,
    valid: Option<u32>,
) -> Result<Lease, String> {
    let _serial = lock(&shared.operator);
    let n = ops.len().max(1);
    let client = crate::pool::hash::shard_of(binding.duid.as_bytes(), n as u32) as usize;
    let owner = lock(&shared.slices).as_ref().and_then(|m| m.owner(&key)).filter(|o| *o != client && *o < n);
    let ask = |i: usize, op: ShardOp| ops[i].send(op).map_err(|_| format!("shard {i} is not running"));
    let lent = match owner {
        Some(o) => {
            let (reply, answer) = crossbeam_channel::bounded(1);
            ask(o, ShardOp::Lend { key, binding: binding.clone(), to: client, reply })?;
            answer.recv_timeout(SHARD_ANSWER).map_err(|_| format!("shard {o} did not answer"))??
        }
        None => None,
    };
    let (reply, answer) = crossbeam_channel::bounded(1);
    ask(client, ShardOp::Add { key, binding, valid, lent, reply })?;
    let r = answer.recv_timeout(SHARD_ANSWER).map_err(|_| format!("shard {client} did not answer"))?;
    match (r, owner) {
        (Ok(l), Some(o)) => {
            // The router first, so that no partner update reaches the old
            // holder after it forgot the record.
            if let Some(tx) = lock(&shared.commands).clone() {
                let _ = tx.send(Command::HeldAt { key, shard: client });
            }
            ask(o, ShardOp::Handed { key })?;
            Ok(l)
        }
        (Ok(l), None) => Ok(l),
        (Err((e, record)), Some(o)) => {
            ask(o, ShardOp::Unlend { key, record: record.map(|r| *r) })?;
            Err(e)
        }
        (Err((e, _)), None) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_keep_overriding_the_file_at_a_reload() {
        let file = |shards: usize, level: &str| {
            Config::parse(&format!(
                "log-level = \"{level}\"\ndata-dir = \"/tmp/x\"\ninterfaces = []\n[runtime]\nshards = {shards}\n[[subnet]]\nprefix = \"2001:db8:1::/64\"\npools = [\"2001:db8:1::100-2001:db8:1::1ff\"]\n"
            ))
            .unwrap()
        };
        let flags = Overrides { shards: Some(2), data_dir: Some("/srv/tandem".into()), log_level: Some("debug".into()), ..Default::default() };
        let mut running = file(4, "info");
        flags.apply(&mut running);
        // The file's shards and log-level changed: the flags still win, so
        // nothing changed and nothing is refused.
        let mut new = file(8, "warn");
        flags.apply(&mut new);
        assert_eq!(crate::config::reload::changes(&running, &new).unwrap(), Vec::<String>::new());
        assert_eq!((new.runtime.shards, new.data_dir.to_str(), new.log_level.as_deref()), (Some(2), Some("/srv/tandem"), Some("debug")));
        // Without the flag the file's change is refused, named.
        let (mut a, mut b) = (file(4, "info"), file(8, "info"));
        Overrides::default().apply(&mut a);
        Overrides::default().apply(&mut b);
        assert_eq!(crate::config::reload::changes(&a, &b).unwrap_err()[0].key, "runtime.shards");
    }

    #[test]
    fn the_digest_is_the_files_sha256() {
        assert_eq!(digest(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
