//! `tandem serve`: open the store, bind the sockets, start one glommio
//! executor per shard, report readiness, and stop cleanly on SIGTERM/SIGINT
//! or `tandem ctl shutdown`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use super::observe::{self, Shared, Snapshot};
use super::shard::{self, ShardInit};
use super::store::{DEFAULT_MAP_SIZE, StoreSet};
use super::sys;
use super::udp;
use crate::config::Config;
use crate::lease::store::{LeaseStore, meta};
use crate::pool::Slice;
use crate::pool::hash::hash_bytes;
use crate::server::EngineConfig;
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
    if s.config.failover.is_some() {
        // Two standalone servers on one address space would hand the same
        // address to two clients: never run a failover config without failover.
        return Err("the [failover] section is configured, but this build of tandem does not run the RFC 8156 \
                    failover endpoint yet; remove [failover] to run standalone"
            .into());
    }
    if s.config.ddns.is_some() {
        tracing::warn!("the [ddns] section is configured, but this build does not send DNS updates yet; names are not updated");
    }
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
    let shared = Arc::new(Shared {
        shards: (0..s.shards).map(|_| Mutex::new(Snapshot::default())).collect(),
        server_duid: server_duid.to_hex(),
        stop: stop.clone(),
    });
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
    let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut handles = Vec::new();
    let mut leases = leases.into_iter();
    let mut shard_stores = stores.shards.into_iter();
    for (id, ((socket, to), from)) in sockets.into_iter().zip(to).zip(from).enumerate() {
        let init = ShardInit {
            id,
            shards: n,
            socket,
            store: shard_stores.next().expect("one store per shard"),
            leases: leases.next().unwrap_or_default(),
            engine: EngineConfig {
                server_duid: server_duid.clone(),
                subnets: s.config.subnets.clone(),
                slice: Slice { shards: n as u32, shard: id as u32 },
                hash_key,
            },
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
    drop(ready_tx);
    for _ in 0..n {
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
            tracing::error!(shard = id, "a shard stopped unexpectedly; shutting down");
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut failed = false;
    for h in handles {
        if h.join().is_err() {
            failed = true;
        }
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
