//! `tandem serve`: open the store, bind the sockets, start one glommio
//! executor per shard, report readiness, and stop cleanly on SIGTERM/SIGINT
//! or `tandem ctl shutdown`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use glommio::{CpuSet, LocalExecutorBuilder, Placement, PoolPlacement};

use super::bus::ReplyTo;
use super::ddns::{self, DdnsInit};
use super::failover::{self, FailoverInit};
use super::observe::{self, Shared};
use super::shard::{self, ShardInit};
use super::store::{DEFAULT_MAP_SIZE, StoreSet};
use super::sys;
use super::tls;
use super::udp;
use crate::config::{Config, Tls};
use crate::failover::router::{ShardRouter, home_of};
use crate::failover::{Driver, Persistent};
use crate::lease::store::{LeaseStore, meta};
use crate::pool::Slice;
use crate::pool::hash::hash_bytes;
use crate::server::fqdn::Naming;
use crate::server::{EngineConfig, SliceMap};
use crate::shard::ShardsConfig;
use crate::wire::Duid;

/// Everything `serve` needs: the config with command-line overrides applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub shards: usize,
    pub cpus: Option<Vec<usize>>,
    pub ready_file: Option<PathBuf>,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub control_socket: PathBuf,
    pub map_size: usize,
    /// How long an idle shard spins before parking (`--idle-spin-us`).
    pub idle_spin: Duration,
    pub port: u16,
    /// `--resync-all`: behave as a server that lost its store.
    pub resync_all: bool,
    /// `--datapath`: io_uring where the kernel has it, or the fallback.
    pub datapath: super::datapath::Choice,
    /// The config file (reloads read it again); None: no reload.
    pub config_path: Option<PathBuf>,
    /// What the command line set over the file (kept across reloads).
    pub overrides: super::operator::Overrides,
}

impl Settings {
    pub fn new(config: Config) -> Settings {
        let shards = config.runtime.shards.unwrap_or_else(default_shards);
        let control_socket = config.data_dir.join("control.sock");
        Settings {
            cpus: config.runtime.cpus.clone(),
            config,
            shards,
            ready_file: None,
            metrics_listen: None,
            control_socket,
            map_size: DEFAULT_MAP_SIZE,
            idle_spin: Duration::ZERO,
            port: crate::server::SERVER_PORT,
            resync_all: false,
            datapath: super::datapath::Choice::Auto,
            config_path: None,
            overrides: Default::default(),
        }
    }
}

/// Available cores minus one (for the failover/DNS core), at least one.
pub fn default_shards() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).saturating_sub(1).max(1)
}

pub fn serve(s: Settings) -> Result<(), String> {
    // TLS material first: a bad certificate is a start-up error, not a
    // connection that silently never comes up.
    let mut tls_setups = Vec::new();
    for (i, f) in s.config.failover.iter().enumerate() {
        tls_setups.push(match &f.tls {
            Tls::Mutual { cert, key, ca, peer_name } => Some(tls::load_for(cert, key, ca, peer_name.as_deref(), i, s.config.failover.len())?),
            Tls::Insecure => {
                tracing::warn!(relationship = %f.name, "failover link without TLS (tls.insecure = true): only for protected networks, RFC 8156 §10");
                None
            }
        });
    }
    let mask = sys::block_signals();
    sys::check_io_uring()?;
    sys::raise_memlock(s.shards)?;
    let data_dir = s.config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("data-dir {}: {e}", data_dir.display()))?;
    let _lock = sys::DataDirLock::acquire(&data_dir)?;
    let n = s.shards;
    let hw_reserved = s.config.subnets.iter().flat_map(|x| &x.reservations).any(|r| matches!(r.client, crate::config::ReservedFor::HwAddress(_)));
    if n > 1 && hw_reserved {
        return Err(format!("{n} shards: hw-address reservations need runtime.shards = 1 (clients reach shards by DUID); reserve by duid to run more"));
    }
    let slices = SliceMap::new(&s.config.subnets, n);
    let (mut stores, leases) =
        StoreSet::open(&data_dir, n, s.map_size, |l| home_of(&slices, n, l)).map_err(|e| e.to_string())?;

    let server_duid = match (&s.config.server_duid, stores.meta.get_meta(meta::SERVER_DUID).map_err(|e| e.to_string())?) {
        (Some(d), _) => d.clone(),
        (None, Some(b)) => Duid::from_bytes(&b).map_err(|e| format!("stored server DUID: {e}"))?,
        (None, None) => {
            let d = sys::generate_duid(&s.config.interfaces);
            tracing::info!(duid = %d, "generated a new server DUID");
            d
        }
    };
    stores.meta.put_meta(meta::SERVER_DUID, server_duid.as_bytes()).map_err(|e| e.to_string())?;

    let mut ifnames = Vec::new();
    for name in &s.config.interfaces {
        let i = udp::ifindex(name).ok_or_else(|| format!("interface {name:?} (config key `interfaces`) does not exist"))?;
        ifnames.push((i, name.clone()));
    }
    udp::check_port_free(s.port).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => format!("UDP port {} is in use by another program (another DHCPv6 server?)", s.port),
        _ => format!("cannot bind UDP port {}: {e}", s.port),
    })?;
    let mut sockets = Vec::new();
    for _ in 0..n {
        sockets.push(udp::bind_shared(s.port).map_err(|e| format!("bind [::]:{}: {e}", s.port))?);
    }
    // Multicast intake on exactly one socket per interface (shard 0).
    for (i, name) in &ifnames {
        udp::join_dhcp_multicast(&sockets[0], *i).map_err(|e| format!("join ff02::1:2 on {name}: {e}"))?;
    }

    let shard_stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared::new(n, server_duid.to_hex(), shard_stop.clone()));
    if let Some(p) = &s.config_path {
        let digest = super::operator::digest(&std::fs::read(p).unwrap_or_default());
        tracing::info!(config = %p.display(), digest = %digest, "configuration loaded");
        shared.config_loaded(digest, super::operator::reservations_digest(&s.config.subnets));
    } else {
        *observe::lock(&shared.reservations) = super::operator::reservations_digest(&s.config.subnets);
    }
    let (op_tx, mut op_rx): (Vec<_>, Vec<_>) = (0..n).map(|_| crossbeam_channel::unbounded()).unzip();
    *observe::lock(&shared.ops) = op_tx.clone();
    let multicast = sockets[0].try_clone().map_err(|e| format!("socket: {e}"))?;
    let lq_socket = sockets[0].try_clone().map_err(|e| format!("socket: {e}"))?;
    let (lq_gate, lq_queues) = super::leasequery::Gate::new();
    if let Some(addr) = s.metrics_listen {
        observe::spawn_metrics(addr, shared.clone())?;
    }
    let control = super::operator::spawn_control(&s.control_socket, shared.clone())?;

    // The shards and what they hold (records held away from their slice
    // owner block the key there, see failover::router).
    let fo_cfgs: Vec<crate::failover::FailoverConfig> =
        s.config.failover.iter().map(|f| crate::failover::FailoverConfig { resync_all: s.resync_all, ..f.settings() }).collect();
    // Each relationship's persisted state (README "Several relationships").
    let several = fo_cfgs.len() > 1;
    let meta_keys: Vec<Vec<String>> = s.config.failover.iter().map(|f| crate::failover::meta_keys(&f.name, several)).collect();
    let mut persisted = Vec::new();
    for keys in &meta_keys {
        let mut got = None;
        for k in keys {
            got = stores.meta.get_meta(k).map_err(|e| e.to_string())?;
            if got.is_some() {
                break;
            }
        }
        persisted.push(got.and_then(|b| Persistent::decode(&b)));
    }
    let mclts: Vec<u32> = fo_cfgs.iter().zip(&persisted).map(|(f, p)| p.as_ref().map(|p| p.mclt).unwrap_or(f.mclt).max(f.mclt)).collect();
    let slices_at_start = slices.clone();
    *observe::lock(&shared.slices) = Some(slices.clone());
    let cfg = ShardsConfig {
        engine: EngineConfig {
            server_duid: server_duid.clone(),
            subnets: s.config.subnets.clone(),
            slice: Slice::WHOLE,
            hash_key: hash_bytes(0, server_duid.as_bytes()),
            naming: s.config.ddns.as_ref().map(|d| Naming {
                policy: d.fqdn_policy,
                qualifying_suffix: d.qualifying_suffix.clone(),
                synthesize_pattern: d.synthesize_pattern.clone(),
                forward_zone: d.forward_zone.clone(),
            }),
            limits: s.config.limits,
            unicast_listen: s.config.unicast_listen.clone(),
            provisioning: s.config.provisioning.clone(),
        },
        shards: n,
        failover: fo_cfgs.iter().zip(&mclts).map(|(f, m)| (f.role, *m)).collect(),
    };
    // Every record at its home (an interrupted move may have left one away,
    // or two copies): the copies are written before the removals.
    let placed = crate::shard::place(leases, &slices, n);
    if placed.moved() > 0 {
        tracing::info!(records = placed.moved(), "records moved to the shard that serves them");
        for (st, w) in stores.shards.iter_mut().zip(&placed.upserts) {
            st.commit(w).map_err(|e| e.to_string())?;
        }
        for (st, w) in stores.shards.iter_mut().zip(&placed.deletes) {
            st.commit(w).map_err(|e| e.to_string())?;
        }
    }
    let built = crate::shard::build::<ReplyTo>(&cfg, placed.lists);
    sys::release_free_memory();
    if !built.away.is_empty() {
        tracing::info!(records = built.away.len(), "records held away from their slice owner (partners with other shard counts, or a --shards change)");
    }

    // An SPSC channel for every ordered pair of shards.
    let mut to: Vec<Vec<Option<_>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut from: Vec<Vec<_>> = (0..n).map(|_| Vec::new()).collect();
    for (i, row) in to.iter_mut().enumerate() {
        for (j, slot) in row.iter_mut().enumerate() {
            if i != j {
                let (tx, rx) = glommio::channels::shared_channel::new_bounded(4096);
                *slot = Some(tx);
                from[j].push(rx);
            }
        }
    }
    // Failover core ↔ shards.
    let mut fo_links: Vec<Option<shard::FailoverLink>> = Vec::new();
    let (mut fo_to_shards, mut fo_from_shards) = (Vec::new(), Vec::new());
    for _ in 0..n {
        if !fo_cfgs.is_empty() {
            let (to_fo, from_shard) = glommio::channels::shared_channel::new_bounded(8192);
            let (to_shard, from_fo) = glommio::channels::shared_channel::new_bounded(8192);
            fo_from_shards.push(from_shard);
            fo_to_shards.push(to_shard);
            fo_links.push(Some(shard::FailoverLink { to: to_fo, from: from_fo }));
        } else {
            fo_links.push(None);
        }
    }
    // The DNS update queue: always there, so that a reload can add, change
    // or remove `[ddns]` (idle without it).
    let mut dns_links: Vec<Option<shard::DnsLink>> = (0..n).map(|_| None).collect();
    let (work_tx, work_rx) = crossbeam_channel::unbounded();
    let mut done = Vec::new();
    for link in dns_links.iter_mut() {
        let (tx, rx) = crossbeam_channel::unbounded();
        done.push(tx);
        *link = Some(shard::DnsLink { to: work_tx.clone(), from: rx });
    }
    let (ddns_reconfig, reconfig_rx) = crossbeam_channel::unbounded();
    let ddns_handle = ddns::spawn(DdnsInit {
        cfg: s.config.ddns.clone(),
        reconfig: reconfig_rx,
        shared: shared.clone(),
        stop: shard_stop.clone(),
        work: work_rx,
        done,
        cpu: s.config.runtime.failover_cpu,
    })?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let (exited_tx, exited_rx) = mpsc::channel::<Exited>();
    let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut handles = Vec::new();
    let StoreSet { meta: meta_store, shards: shard_stores } = stores;
    let mut shard_stores = shard_stores.into_iter();
    let crate::shard::Built { cores, away, loaded, dns: dns_pending } = built;
    let mut per_shard = cores.into_iter().zip(loaded).zip(dns_pending).zip(fo_links).zip(dns_links);
    for (id, ((socket, to), from)) in sockets.into_iter().zip(to).zip(from).enumerate() {
        let Some(((((core, loaded), dns_pending), failover), dns)) = per_shard.next() else { break };
        let Some(store) = shard_stores.next() else { break };
        let init = ShardInit {
            id,
            shards: n,
            socket,
            store,
            core,
            loaded,
            dns_pending,
            failover,
            dns,
            to,
            from,
            ifnames: ifnames.clone(),
            ops: op_rx.remove(0),
            stop: shard_stop.clone(),
            ready: ready_tx.clone(),
            shared: shared.clone(),
            datapath: s.datapath,
            leasequery: lq_gate.clone(),
        };
        let placement = match &s.cpus {
            Some(c) => Placement::Fixed(c[id % c.len()]),
            None if n < online => Placement::Fixed(id),
            None => Placement::Unbound,
        };
        // Two blocking threads: one for the group commits (and reads), one for
        // the journal's merge transactions, which run beside the commits.
        let pool = match &placement {
            Placement::Fixed(cpu) => {
                let set = CpuSet::online().map_err(|e| format!("reading the online CPUs: {e}"))?.filter(|l| l.cpu == *cpu);
                PoolPlacement::Custom(vec![set.clone(), set])
            }
            _ => PoolPlacement::Unbound(2),
        };
        let mut builder = LocalExecutorBuilder::new(placement).blocking_thread_pool_placement(pool);
        if !s.idle_spin.is_zero() {
            // A fixed spin before every park (`--idle-spin-us`); by default
            // the receive loop spins only while packets arrive closely.
            builder = builder.spin_before_park(s.idle_spin);
        }
        let h = builder
            .name(&format!("shard-{id}"))
            // LMDB uses mmap, not glommio's DMA buffers: keep the registered
            // io memory small so an unprivileged run fits the default
            // 8 MiB memlock limit (stack-spike Q1).
            .io_memory(512 << 10)
            .preempt_timer(Duration::from_millis(5))
            .spawn({
                let exited = exited_tx.clone();
                move || async move {
                    // Tell the main thread when this shard ends, even by a panic.
                    let _guard = ExitGuard(Exited::Shard(id), exited);
                    shard::run(init).await
                }
            })
            .map_err(|e| format!("starting shard {id}: {e}"))?;
        handles.push(h);
    }
    let mut expected = n;
    let fo_stop = Arc::new(AtomicBool::new(false));
    let mut fo_handle = None;
    if !fo_cfgs.is_empty() {
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        *observe::lock(&shared.commands) = Some(cmd_tx);
        let mut relationships = Vec::new();
        let parts = fo_cfgs.into_iter().zip(persisted).zip(tls_setups).zip(meta_keys).zip(&s.config.failover).enumerate();
        for (i, ((((cfg, persisted), tls), meta_keys), f)) in parts {
            let router = ShardRouter::new(slices.for_relationship(&s.config.subnets, i, s.config.failover.len()), n, away.clone());
            let role = cfg.role;
            let subnets = s.config.subnets.iter().filter(|x| x.relationship == Some(i)).map(|x| x.prefix.to_string()).collect();
            relationships.push(failover::RelationshipInit {
                driver: Driver::new(cfg, persisted, router, sys::unix_now()),
                name: f.name.clone(),
                role,
                listen: f.listen,
                peer: f.peer,
                tls,
                subnets,
                meta_keys,
            });
        }
        let init = FailoverInit {
            relationships,
            meta: meta_store,
            to_shards: fo_to_shards,
            from_shards: fo_from_shards,
            shared: shared.clone(),
            stop: fo_stop.clone(),
            ready: ready_tx.clone(),
            commands: cmd_rx,
        };
        let placement = match s.config.runtime.failover_cpu {
            Some(c) => Placement::Fixed(c),
            None => Placement::Unbound,
        };
        let h = LocalExecutorBuilder::new(placement)
            .name("failover")
            .io_memory(256 << 10)
            .spawn({
                let exited = exited_tx.clone();
                move || async move {
                    let _guard = ExitGuard(Exited::Failover, exited);
                    failover::run(init).await
                }
            })
            .map_err(|e| format!("starting the failover core: {e}"))?;
        fo_handle = Some(h);
        expected += 1;
    }
    let (leasequery, lq_handles) = super::leasequery::spawn(super::leasequery::LqInit {
        settings: super::leasequery::Settings::new(s.config.leasequery.clone(), &s.config.subnets),
        server: server_duid.clone(),
        port: s.port,
        ops: op_tx.clone(),
        socket: lq_socket,
        stop: shard_stop.clone(),
        gate: lq_gate,
        queues: lq_queues,
        shared: shared.clone(),
    })?;
    drop(ready_tx);
    for _ in 0..expected {
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a shard did not start within 30 s".into()),
        }
    }
    if let Some(f) = &s.ready_file {
        std::fs::write(f, format!("{}\n", std::process::id())).map_err(|e| format!("ready-file {}: {e}", f.display()))?;
    }
    // Everything privileged is done: sockets bound, store open, rings set up.
    match (&s.config.user, sys::is_root()) {
        (Some(user), true) => {
            let (uid, gid) = sys::lookup_user(user)?;
            sys::chown_tree(&data_dir, uid, gid)?;
            std::os::unix::fs::chown(&control, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", control.display()))?;
            sys::drop_privileges(uid, gid)?;
            tracing::info!(user = %user, uid, gid, "running as {user}, keeping only CAP_NET_BIND_SERVICE");
        }
        (Some(user), false) => tracing::info!(user = %user, "not started as root: `user` has nothing to drop"),
        (None, true) => tracing::warn!("running as root: set `user` in the config (or run the systemd unit) to drop privileges after start-up"),
        (None, false) => {}
    }
    tracing::info!(
        shards = n,
        duid = %server_duid,
        interfaces = ?s.config.interfaces,
        control = %control.display(),
        "ready"
    );
    sys::notify("READY=1\nSTATUS=serving");
    let (reload_tx, reload_rx) = crossbeam_channel::unbounded::<crossbeam_channel::Sender<String>>();
    let mut reloader = s.config_path.clone().map(|path| super::operator::Reloader {
        path,
        overrides: s.overrides.clone(),
        running: s.config.clone(),
        slices: slices_at_start.clone(),
        engine: cfg.engine.clone(),
        shards: op_tx.clone(),
        multicast,
        ifnames: ifnames.clone(),
        ddns: ddns_reconfig,
        shared: shared.clone(),
        leasequery: leasequery.clone(),
    });
    if reloader.is_some() {
        *observe::lock(&shared.reloads) = Some(reload_tx);
    }
    let mut last_summary = std::time::Instant::now();
    let mut last_replies = 0;
    while !shard_stop.load(Ordering::SeqCst) {
        if last_summary.elapsed() >= Duration::from_secs(60) {
            last_summary = std::time::Instant::now();
            let (replies, dropped, active) = shared.summary();
            if replies != last_replies {
                tracing::info!(replies, dropped, active_leases = active, "summary");
                last_replies = replies;
            }
        }
        let mut reload_requests = Vec::new();
        match sys::wait_signal(&mask, 200) {
            Some(libc::SIGHUP) => reload_requests.push(None),
            Some(sig) => {
                tracing::info!(signal = sig, "stopping: finishing in-flight commits");
                shard_stop.store(true, Ordering::SeqCst);
            }
            None => {}
        }
        reload_requests.extend(reload_rx.try_iter().map(Some));
        for reply in reload_requests {
            let answer = match reloader.as_mut() {
                Some(r) => reload(r, &shared),
                None => serde_json::json!({"result": "refused", "changed": [], "errors": ["started without a config file"]}),
            };
            if let Some(reply) = reply {
                let _ = reply.send(answer.to_string());
            }
        }
        if let Ok(who) = exited_rx.try_recv() {
            match who {
                Exited::Failover => tracing::error!("the failover core stopped unexpectedly; shutting down"),
                Exited::Shard(id) => tracing::error!(shard = id, "a shard stopped unexpectedly; shutting down"),
            }
            break;
        }
    }
    shard_stop.store(true, Ordering::SeqCst);
    sys::notify("STOPPING=1");
    // The shards finish their in-flight commits (and send what those
    // release to the failover core) first; then the failover core sends
    // DISCONNECT to the partner and persists its state.
    let mut failed = false;
    for h in handles {
        if h.join().is_err() {
            failed = true;
        }
    }
    fo_stop.store(true, Ordering::SeqCst);
    if let Some(h) = fo_handle
        && h.join().is_err()
    {
        failed = true;
    }
    let _ = ddns_handle.join();
    for h in lq_handles {
        let _ = h.join();
    }
    if let Some(f) = &s.ready_file {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_file(&control);
    if failed {
        return Err("a shard failed".into());
    }
    tracing::info!("stopped");
    Ok(())
}

/// One reload, logged, counted and told to systemd.
fn reload(r: &mut super::operator::Reloader, shared: &Shared) -> serde_json::Value {
    sys::notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", sys::monotonic_usec()));
    tracing::info!(config = %r.path.display(), "reloading the configuration");
    let answer = r.reload();
    let applied = answer["result"] == "applied";
    if applied {
        shared.reloads_applied.fetch_add(1, Ordering::Relaxed);
        tracing::info!(changed = %answer["changed"], digest = %observe::lock(&shared.config).0, "configuration reloaded");
    } else {
        shared.reloads_refused.fetch_add(1, Ordering::Relaxed);
        tracing::error!(errors = %answer["errors"], "reload refused: the running configuration stays");
    }
    sys::notify("READY=1\nSTATUS=serving");
    answer
}

/// Which executor ended.
#[derive(Clone, Copy)]
enum Exited {
    Shard(usize),
    Failover,
}

/// Reports an executor's end to the main thread when dropped.
struct ExitGuard(Exited, mpsc::Sender<Exited>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = self.1.send(self.0);
    }
}
