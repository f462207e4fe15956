//! Command-line interface (shared/interface.md "Binary and subcommands").

mod demo;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, parse_cpu_list};
use crate::lease::Lease;

#[derive(Debug, Parser)]
#[command(
    name = "tandem",
    version,
    about = "DHCPv6 server (RFC 9915) with RFC 8156 failover",
    long_about = "tandem serves DHCPv6 addresses (IA_NA) and delegated prefixes (IA_PD) from \
                  thread-per-core shards, and replies only after each lease is durable in its \
                  LMDB store. Configuration: a TOML file (see README.md and examples/)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DumpFormat {
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CtlCommand {
    /// Server DUID, shards, lease counts, failover state (JSON).
    Status,
    /// Tell the failover endpoint its partner is down (RFC 8156 §8).
    PartnerDown,
    /// Stop like SIGTERM: finish in-flight commits, exit 0.
    Shutdown,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server in the foreground; logs go to stderr. SIGTERM/SIGINT stop
    /// intake, finish in-flight commits and exit 0. Every flag overrides the
    /// config key of the same meaning.
    Serve {
        /// The TOML configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// Packet-processing shards (cores) [key runtime.shards; default: cores minus one].
        #[arg(long, value_name = "N")]
        shards: Option<usize>,
        /// Cores to pin the shards to, e.g. 0-3 or 0,2 [key runtime.cpus].
        #[arg(long, value_name = "LIST")]
        cpus: Option<String>,
        /// Core for the failover link and DNS update queue [key runtime.failover-cpu].
        #[arg(long, value_name = "N")]
        failover_cpu: Option<usize>,
        /// Lease store directory [key data-dir].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// error, warn, info, debug or trace (debug logs one line per lease event).
        #[arg(long, value_name = "LEVEL", default_value = "info")]
        log_level: String,
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Serve Prometheus metrics at http://ADDR:PORT/metrics.
        #[arg(long, value_name = "ADDR:PORT")]
        metrics_listen: Option<SocketAddr>,
        /// Control socket for `tandem ctl` [default: DATA_DIR/control.sock].
        #[arg(long, value_name = "PATH")]
        control_socket: Option<PathBuf>,
        /// Create PATH once sockets are bound and the store is open; removed on exit.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
        /// LMDB map size per shard in MiB: the most a shard's lease table may
        /// grow to (address space only; the file grows as used). The default
        /// holds some 250 M leases.
        #[arg(long, value_name = "MIB", default_value_t = 65536)]
        store_map_size: usize,
        /// Microseconds a shard with nothing to do spins before every sleep.
        /// 0 (the default): it spins only while packets arrive less than
        /// ~40 µs apart, and sleeps at once at lower rates.
        #[arg(long, value_name = "US", default_value_t = 0)]
        idle_spin_us: u64,
        /// Packet path: `auto` uses io_uring (multishot recvmsg, batched
        /// sendmsg; Linux 6.0+) and falls back to a recvmsg/sendmsg syscall
        /// per datagram where the kernel lacks it; `fallback` forces that.
        #[arg(long, value_name = "MODE", default_value = "auto", value_parser = ["auto", "fallback"])]
        datapath: String,
        /// With a failover partner: start as a server that lost its store (a
        /// restored backup): get every lease from the partner (UPDREQALL) and
        /// serve nothing until that is done and the MCLT has passed.
        #[arg(long)]
        resync_all: bool,
    },
    /// Validate a configuration file: exit 0, or print one line per problem
    /// (file: key: what is wrong) and exit 1.
    CheckConfig {
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Print every lease in a store (works while the server runs).
    Leases {
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[arg(long, value_enum, default_value = "json")]
        format: DumpFormat,
    },
    /// A self-contained demonstration (needs root): private network
    /// namespaces, tandem serving a bridge, real DHCPv6 clients (dhclient -6,
    /// dhclient -6 -P, dhcpcd), the lease table; everything is removed after.
    Demo,
    /// Create a CA and one certificate per NAME for the failover link's
    /// mutual TLS (files ca.pem, ca.key, NAME.pem, NAME.key in DIR). For
    /// labs and small sites; any CA whose certificates carry the names works.
    GenTls {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// DNS names, one certificate each (use them as `peer-name`).
        #[arg(long = "name", value_name = "NAME", required = true)]
        names: Vec<String>,
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// Talk to a running server over its control socket; prints JSON.
    Ctl {
        /// The control socket [default: /var/lib/tandem/control.sock].
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        #[arg(value_enum)]
        command: CtlCommand,
    },
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                for w in c.warnings() {
                    eprintln!("{}: {}: warning: {}", config.display(), w.key, w.reason);
                }
                // The TLS material must load too: serve refuses it otherwise.
                if let Some(crate::config::Tls::Mutual { cert, key, ca, peer_name }) = c.failover.as_ref().map(|f| &f.tls)
                    && let Err(e) = crate::runtime::tls::load(cert, key, ca, peer_name.as_deref())
                {
                    eprintln!("{}: {e}", config.display());
                    return ExitCode::from(1);
                }
                println!(
                    "{}: ok ({} subnet{}, {})",
                    config.display(),
                    c.subnets.len(),
                    if c.subnets.len() == 1 { "" } else { "s" },
                    match &c.failover {
                        Some(f) => format!("failover {:?} as {:?}", f.name, f.role),
                        None => "standalone".into(),
                    }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        },
        Command::Serve {
            config,
            shards,
            cpus,
            failover_cpu,
            data_dir,
            log_level,
            log_format,
            metrics_listen,
            control_socket,
            ready_file,
            store_map_size,
            idle_spin_us,
            resync_all,
            datapath,
        } => {
            init_logging(&log_level, log_format);
            let mut c = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            for w in c.warnings() {
                tracing::warn!(key = %w.key, "{}: {}", config.display(), w.reason);
            }
            if let Some(d) = data_dir {
                c.data_dir = d;
            }
            if let Some(f) = failover_cpu {
                c.runtime.failover_cpu = Some(f);
            }
            let mut s = crate::runtime::server::Settings::new(c);
            if let Some(n) = shards {
                if n == 0 {
                    eprintln!("--shards: must be at least 1");
                    return ExitCode::from(2);
                }
                s.shards = n;
            }
            if let Some(list) = cpus {
                match parse_cpu_list(&list) {
                    Ok(v) => s.cpus = Some(v),
                    Err(e) => {
                        eprintln!("--cpus: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            s.metrics_listen = metrics_listen;
            if let Some(p) = control_socket {
                s.control_socket = p;
            }
            s.ready_file = ready_file;
            s.map_size = store_map_size.max(1) << 20;
            s.idle_spin = std::time::Duration::from_micros(idle_spin_us);
            s.resync_all = resync_all;
            if datapath == "fallback" {
                s.datapath = crate::runtime::datapath::Choice::Fallback;
            }
            match crate::runtime::server::serve(s) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("tandem: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Leases { data_dir, format } => match crate::runtime::store::StoreSet::read_all(&data_dir) {
            Ok(leases) => {
                let out = match format {
                    DumpFormat::Json => leases_json(&leases),
                    DumpFormat::Csv => leases_csv(&leases),
                };
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(out.as_bytes());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tandem leases: {e}");
                ExitCode::from(1)
            }
        },
        Command::GenTls { out, names, days } => match crate::runtime::tls::generate(&out, &names, days) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tandem gen-tls: {e}");
                ExitCode::from(1)
            }
        },
        Command::Demo => match demo::demo() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tandem demo: {e}");
                ExitCode::from(1)
            }
        },
        Command::Ctl { socket, command } => {
            let path = socket.unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_DATA_DIR).join("control.sock"));
            let word = match command {
                CtlCommand::Status => "status",
                CtlCommand::PartnerDown => "partner-down",
                CtlCommand::Shutdown => "shutdown",
            };
            match ctl(&path, word) {
                Ok(reply) => {
                    println!("{reply}");
                    if reply.contains("\"ok\":false") { ExitCode::from(1) } else { ExitCode::SUCCESS }
                }
                Err(e) => {
                    eprintln!("tandem ctl: {}: {e}", path.display());
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn ctl(path: &std::path::Path, word: &str) -> std::io::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    writeln!(s, "{word}")?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

/// The fields of one lease in the dump (shared/interface.md), in order.
fn lease_fields(l: &Lease) -> Vec<(&'static str, serde_json::Value)> {
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
