//! `tandem serve`: open the store, bind the sockets, start one glommio
//! executor per shard, report readiness, and stop cleanly on SIGTERM/SIGINT
//! or `tandem ctl shutdown`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use super::ddns::{self, DdnsInit};
use super::failover::{self, FailoverInit};
use super::observe::{self, Shared};
use super::shard::{self, Core, FailoverLink, PolicyCell, ShardInit, SharedCore};
use super::store::{DEFAULT_MAP_SIZE, StoreSet};
use super::sys;
use super::tls;
use super::udp;
use crate::config::{Config, Tls};
use crate::failover::{EndpointPolicy, FailoverConfig, Persistent};
use crate::lease::store::{LeaseStore, meta};
use crate::pool::Slice;
use crate::pool::hash::hash_bytes;
use crate::server::fqdn::Naming;
use crate::server::{Engine, EngineConfig, SliceMap};
use crate::wire::{Duid, ServerState};

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
    pub port: u16,
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
            port: crate::server::SERVER_PORT,
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
    let tls = match s.config.failover.as_ref().map(|f| &f.tls) {
        Some(Tls::Mutual { cert, key, ca, peer_name }) => Some(tls::load(cert, key, ca, peer_name.as_deref())?),
        Some(Tls::Insecure) => {
            tracing::warn!("failover link without TLS (failover.tls.insecure = true): only for protected networks, RFC 8156 §10");
            None
        }
        None => None,
    };
    let mask = sys::block_signals();
    sys::check_io_uring()?;
    sys::raise_memlock(s.shards)?;
    let data_dir = s.config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("data-dir {}: {e}", data_dir.display()))?;
    let _lock = sys::DataDirLock::acquire(&data_dir)?;
    let (mut stores, leases) = StoreSet::open(&data_dir, s.shards, s.map_size).map_err(|e| e.to_string())?;

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
    for _ in 0..s.shards {
        sockets.push(udp::bind_shared(s.port).map_err(|e| format!("bind [::]:{}: {e}", s.port))?);
    }
    // Multicast intake on exactly one socket per interface (shard 0).
    for (i, name) in &ifnames {
        udp::join_dhcp_multicast(&sockets[0], *i).map_err(|e| format!("join ff02::1:2 on {name}: {e}"))?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared::new(s.shards, server_duid.to_hex(), stop.clone()));
    if let Some(addr) = s.metrics_listen {
        observe::spawn_metrics(addr, shared.clone())?;
    }
    let control = observe::spawn_control(&s.control_socket, shared.clone())?;

    // An SPSC channel for every ordered pair of shards.
    let n = s.shards;
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

    let (ready_tx, ready_rx) = mpsc::channel();
    let (exited_tx, exited_rx) = mpsc::channel::<usize>();
    let hash_key = hash_bytes(0, server_duid.as_bytes());

    // Engines and their tables, built here so that records living outside
    // their key's slice (re-sharding, partner grants) can block that key in
    // the slice owner before any shard allocates.
    let fo_cfg = s.config.failover.as_ref().map(FailoverConfig::from_config);
    let persisted = match &fo_cfg {
        Some(_) => stores.meta.get_meta(meta::FAILOVER_STATE).map_err(|e| e.to_string())?.and_then(|b| Persistent::decode(&b)),
        None => None,
    };
    let slices = SliceMap::new(&s.config.subnets, n);
    let mut engines: Vec<Engine> = Vec::new();
    let mut strays = std::collections::HashMap::new();
    for (id, ls) in leases.into_iter().enumerate() {
        let mut e = Engine::new(EngineConfig {
            server_duid: server_duid.clone(),
            subnets: s.config.subnets.clone(),
            slice: Slice { shards: n as u32, shard: id as u32 },
            hash_key,
            naming: s.config.ddns.as_ref().map(|d| Naming {
                policy: d.fqdn_policy,
                qualifying_suffix: d.qualifying_suffix.clone(),
                synthesize_pattern: d.synthesize_pattern.clone(),
                forward_zone: d.forward_zone.clone(),
            }),
        });
        if let Some(f) = &fo_cfg {
            e.set_failover_mclt(persisted.as_ref().map(|p| p.mclt).unwrap_or(f.mclt).max(f.mclt));
        }
        e.reserve(ls.len() + ls.len() / 4);
        for l in ls {
            if slices.owner(&l.key) != Some(id) {
                strays.insert(l.key, id);
            }
            e.load(l);
        }
        engines.push(e);
    }
    for (key, home) in &strays {
        if let Some(o) = slices.owner(key) {
            tracing::debug!(lease = %key, shard = home, slice_owner = o, "record outside its slice: blocked in the owner");
            engines[o].block(*key);
        }
    }
    let cores: Vec<SharedCore> = engines.into_iter().map(Core::new).collect();
    let policy = Arc::new(PolicyCell::default());
    if let Some(f) = &fo_cfg {
        // Unresponsive until the endpoint says otherwise (STARTUP, §8.3).
        policy.set(EndpointPolicy { role: f.role, state: ServerState::Startup, mclt: f.mclt });
    }
    // The DNS update queue (with `[ddns]` and a policy that updates).
    let mut dns_tx = None;
    let mut ddns_handle = None;
    if let Some(d) = s.config.ddns.as_ref().filter(|d| d.fqdn_policy != crate::config::FqdnPolicy::None) {
        let (tx, rx) = mpsc::channel();
        dns_tx = Some(tx);
        ddns_handle = Some(ddns::spawn(DdnsInit {
            cfg: d.clone(),
            cores: cores.clone(),
            policy: policy.clone(),
            shared: shared.clone(),
            stop: stop.clone(),
            intents: rx,
        })?);
    }
    let mut fo_links = Vec::new();
    let (mut note_rx, mut kick_tx) = (Vec::new(), Vec::new());
    for _ in 0..n {
        if fo_cfg.is_some() {
            let (ntx, nrx) = glommio::channels::shared_channel::new_bounded(1024);
            let (ktx, krx) = glommio::channels::shared_channel::new_bounded(16);
            note_rx.push(nrx);
            kick_tx.push(ktx);
            fo_links.push(Some(FailoverLink { notes: ntx, kicks: krx }));
        } else {
            fo_links.push(None);
        }
    }
    let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut handles = Vec::new();
    let mut fo_handle = None;
    let StoreSet { meta: meta_store, shards: shard_stores } = stores;
    let mut shard_stores = shard_stores.into_iter();
    let mut fo_links = fo_links.into_iter();
    for (id, ((socket, to), from)) in sockets.into_iter().zip(to).zip(from).enumerate() {
        let init = ShardInit {
            id,
            shards: n,
            socket,
            store: shard_stores.next().expect("one store per shard"),
            core: cores[id].clone(),
            policy: policy.clone(),
            failover: fo_links.next().flatten(),
            dns: dns_tx.clone(),
            to,
            from,
            ifnames: ifnames.clone(),
            stop: stop.clone(),
            ready: ready_tx.clone(),
            shared: shared.clone(),
        };
        let placement = match &s.cpus {
            Some(c) => Placement::Fixed(c[id % c.len()]),
            None if n < online => Placement::Fixed(id),
            None => Placement::Unbound,
        };
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{id}"))
            // LMDB uses mmap, not glommio's DMA buffers: keep the registered
            // io memory small so an unprivileged run fits the default
            // 8 MiB memlock limit (stack-spike Q1).
            .io_memory(512 << 10)
            .preempt_timer(Duration::from_millis(5))
            // Forwarded packets between shards: spin briefly before parking so
            // that a busy shard does not pay an eventfd wake-up per packet
            // (stack-spike Q3: 10–15k → 75k round trips/s).
            .spin_before_park(Duration::from_micros(50))
            .spawn({
                let exited = exited_tx.clone();
                move || async move {
                    // Tell the main thread when this shard ends, even by a panic.
                    let _guard = ExitGuard(id, exited);
                    shard::run(init).await
                }
            })
            .map_err(|e| format!("starting shard {id}: {e}"))?;
        handles.push(h);
    }
    let mut expected = n;
    if let (Some(cfg), Some(f)) = (fo_cfg, &s.config.failover) {
        let (cmd_tx, cmd_rx) = mpsc::channel();
        *shared.commands.lock().unwrap() = Some(cmd_tx);
        let init = FailoverInit {
            cfg,
            listen: f.listen,
            peer: f.peer,
            tls,
            meta: meta_store,
            persisted,
            cores: cores.clone(),
            slices,
            strays,
            notes: note_rx,
            kicks: kick_tx,
            policy: policy.clone(),
            shared: shared.clone(),
            stop: stop.clone(),
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
                    let _guard = ExitGuard(usize::MAX, exited);
                    failover::run(init).await
                }
            })
            .map_err(|e| format!("starting the failover core: {e}"))?;
        fo_handle = Some(h);
        expected += 1;
    }
    drop(ready_tx);
    for _ in 0..expected {
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a shard did not start within 30 s".into()),
        }
    }
    tracing::info!(
        shards = n,
        duid = %server_duid,
        interfaces = ?s.config.interfaces,
        control = %control.display(),
        "ready"
    );
    if let Some(f) = &s.ready_file {
        std::fs::write(f, format!("{}\n", std::process::id())).map_err(|e| format!("ready-file {}: {e}", f.display()))?;
    }
    let mut last_summary = std::time::Instant::now();
    let mut last_replies = 0;
    while !stop.load(Ordering::SeqCst) {
        if last_summary.elapsed() >= Duration::from_secs(60) {
            last_summary = std::time::Instant::now();
            let (replies, dropped, active) = shared.summary();
            if replies != last_replies {
                tracing::info!(replies, dropped, active_leases = active, "summary");
                last_replies = replies;
            }
        }
        if let Some(sig) = sys::wait_signal(&mask, 200) {
            tracing::info!(signal = sig, "stopping: finishing in-flight commits");
            stop.store(true, Ordering::SeqCst);
        }
        if let Ok(id) = exited_rx.try_recv() {
            if id == usize::MAX {
                tracing::error!("the failover core stopped unexpectedly; shutting down");
            } else {
                tracing::error!(shard = id, "a shard stopped unexpectedly; shutting down");
            }
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    // Shards first (their in-flight commits), then the failover core sends
    // DISCONNECT to the partner.
    let mut failed = false;
    for h in handles {
        if h.join().is_err() {
            failed = true;
        }
    }
    if let Some(h) = fo_handle
        && h.join().is_err()
    {
        failed = true;
    }
    if let Some(h) = ddns_handle {
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

/// Reports a shard's end to the main thread when dropped.
struct ExitGuard(usize, mpsc::Sender<usize>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = self.1.send(self.0);
    }
}
