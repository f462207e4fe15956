//! Command-line interface (shared/interface.md "Binary and subcommands").

mod demo;
mod query;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, parse_cpu_list};
use crate::lease::dump::{leases_csv, leases_json};

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

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Server DUID, shards, lease counts, failover state, config and reservations digests (JSON).
    Status,
    /// Tell the failover endpoint its partner is down (RFC 8156 §8).
    PartnerDown {
        /// The relationship (required when the server has several).
        #[arg(long, value_name = "NAME")]
        relationship: Option<String>,
    },
    /// Stop like SIGTERM: finish in-flight commits, exit 0.
    Shutdown,
    /// Re-read the config file and apply it without a restart (like
    /// SIGHUP): {"result": "applied"|"refused", "changed": [...], "errors": [...]};
    /// exit 0 only when applied.
    Reload,
    /// Look up, delete, add or wipe leases in the running server.
    #[command(subcommand)]
    Lease(LeaseCommand),
}

/// `tandem ctl lease …` (exit 0: done; 1: refused or failed, the reason on stderr).
#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// ACTIVE leases of an address, a prefix or a client (DUID, optionally
    /// one IAID) as a JSON array; `--all` adds records in other states.
    Get {
        #[command(flatten)]
        which: LeaseSelector,
        #[arg(long, value_name = "HEX", conflicts_with_all = ["address", "prefix"])]
        duid: Option<String>,
        #[arg(long, value_name = "N", requires = "duid")]
        iaid: Option<u32>,
        #[arg(long)]
        all: bool,
    },
    /// Make a lease available again as if its client released it (RFC 8156
    /// §7.2 RESET): in a pair it is reused only after the partner's ack.
    /// The client is not told and may use the address until its lifetime ends.
    Del {
        #[command(flatten)]
        which: LeaseSelector,
    },
    /// Create a lease for a client: the address or prefix must be free in
    /// one of our pools (or reserved for this client).
    Add {
        #[command(flatten)]
        which: LeaseSelector,
        #[arg(long, value_name = "HEX")]
        duid: String,
        #[arg(long, value_name = "N")]
        iaid: u32,
        /// [default: the subnet's valid-lifetime]
        #[arg(long, value_name = "S")]
        valid_lifetime: Option<u32>,
    },
    /// Delete (as `del`) every ACTIVE lease in a subnet, in bounded chunks.
    Wipe {
        #[arg(long, value_name = "PREFIX")]
        subnet: String,
        /// Required: this removes every lease of the subnet.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, clap::Args)]
#[group(required = false, multiple = false)]
pub struct LeaseSelector {
    #[arg(long, value_name = "ADDR")]
    pub address: Option<std::net::Ipv6Addr>,
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server in the foreground; logs go to stderr. SIGTERM/SIGINT stop
    /// intake, finish in-flight commits and exit 0; SIGHUP reloads the config
    /// file (as `tandem ctl reload`). Every flag overrides the config key of
    /// the same meaning, also at reloads.
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
        /// error, warn, info, debug or trace (debug logs one line per lease
        /// event), or a tracing filter [key log-level; default: info].
        #[arg(long, value_name = "LEVEL")]
        log_level: Option<String>,
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
        /// The control socket [default: /run/tandem/control.sock (the systemd
        /// unit's) when it exists, else /var/lib/tandem/control.sock].
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        #[command(subcommand)]
        command: CtlCommand,
    },
    /// Ask a server about leases (RFC 5007 Leasequery over UDP; --bulk: RFC
    /// 5460 Bulk Leasequery over TCP): a JSON array of bindings
    /// {"client-id", "type": "na"|"pd", "lease", "valid-lifetime",
    /// "preferred-lifetime", "cltt" (unix s), "hostname"?, "relay"?}. Exit 0
    /// (also with []), 3 when the server refuses (its status code name on
    /// stderr), 1 when it does not answer.
    Query {
        /// The server: ADDR or [ADDR]:PORT (port 547). Our source address
        /// must be in its `leasequery.allowed`.
        #[arg(long, value_name = "ADDR")]
        server: String,
        #[command(flatten)]
        what: query::QueryTarget,
        /// Over TCP (RFC 5460): needed for --relay-id, --link-address and
        /// --remote-id; every binding, however many.
        #[arg(long)]
        bulk: bool,
        /// Send from this address.
        #[arg(long, value_name = "ADDR")]
        source: Option<std::net::Ipv6Addr>,
        /// Ask for each client's last relay chain (OPTION_LQ_RELAY_DATA):
        /// "relay" with peer-address, link-address, relay-id, remote-id.
        #[arg(long)]
        relay_data: bool,
    },
    /// Print the manual page tandem(8) (roff) generated from these definitions.
    Man,
    /// Print shell completions for SHELL (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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
                for (i, f) in c.failover.iter().enumerate() {
                    if let crate::config::Tls::Mutual { cert, key, ca, peer_name } = &f.tls
                        && let Err(e) = crate::runtime::tls::load_for(cert, key, ca, peer_name.as_deref(), i, c.failover.len())
                    {
                        eprintln!("{}: {e}", config.display());
                        return ExitCode::from(1);
                    }
                }
                let standalone = c.subnets.iter().filter(|s| s.relationship.is_none()).count();
                println!(
                    "{}: ok ({} subnet{}, {})",
                    config.display(),
                    c.subnets.len(),
                    if c.subnets.len() == 1 { "" } else { "s" },
                    match c.failover.as_slice() {
                        [] => "standalone".into(),
                        [f] if standalone == 0 => format!("failover {:?} as {:?}", f.name, f.role),
                        rels => {
                            let mut d: Vec<String> = rels.iter().map(|f| format!("{:?} as {:?}", f.name, f.role)).collect();
                            if standalone > 0 {
                                d.push(format!("{standalone} subnet{} standalone", if standalone == 1 { "" } else { "s" }));
                            }
                            format!("failover {}", d.join(", "))
                        }
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
            let mut c = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            if let Some(l) = &log_level
                && let Err(e) = tracing_subscriber::EnvFilter::try_new(l)
            {
                eprintln!("--log-level {l}: {e}");
                return ExitCode::from(2);
            }
            init_logging(log_level.as_deref().or(c.log_level.as_deref()).unwrap_or("info"), log_format);
            for w in c.warnings() {
                tracing::warn!(key = %w.key, "{}: {}", config.display(), w.reason);
            }
            if shards == Some(0) {
                eprintln!("--shards: must be at least 1");
                return ExitCode::from(2);
            }
            let cpus = match cpus.as_deref().map(parse_cpu_list).transpose() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("--cpus: {e}");
                    return ExitCode::from(2);
                }
            };
            // Flags override the file, now and at every reload.
            let overrides = crate::runtime::operator::Overrides { data_dir, failover_cpu, shards, cpus, log_level };
            overrides.apply(&mut c);
            let mut s = crate::runtime::server::Settings::new(c);
            s.config_path = Some(config.clone());
            s.overrides = overrides;
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
            let path = socket.unwrap_or_else(|| {
                let unit = PathBuf::from(UNIT_CONTROL_SOCKET);
                if unit.exists() { unit } else { PathBuf::from(crate::config::DEFAULT_DATA_DIR).join("control.sock") }
            });
            let request = match ctl_request(&command) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("tandem ctl: {e}");
                    return ExitCode::from(2);
                }
            };
            let wait = match &command {
                CtlCommand::Lease(LeaseCommand::Wipe { .. }) => 610,
                CtlCommand::Reload => 65,
                _ => 15,
            };
            match ctl(&path, &request, std::time::Duration::from_secs(wait)) {
                Ok(reply) => ctl_exit(&command, &reply),
                Err(e) => {
                    eprintln!("tandem ctl: {}: {e}", path.display());
                    ExitCode::from(1)
                }
            }
        }
        Command::Query { server, what, bulk, source, relay_data } => query::run(&server, &what, bulk, source, relay_data),
        Command::Man => {
            let mut out = Vec::new();
            match man_page(&mut out) {
                Ok(()) => {
                    let _ = std::io::stdout().lock().write_all(&out);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tandem man: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "tandem", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// Where the systemd unit (packaging/tandem.service) puts the control socket.
const UNIT_CONTROL_SOCKET: &str = "/run/tandem/control.sock";

/// The line sent for a `ctl` command: the old one-word commands as they
/// were, the rest as one JSON object.
fn ctl_request(c: &CtlCommand) -> Result<String, String> {
    use serde_json::json;
    let selector = |w: &LeaseSelector| -> Result<serde_json::Value, String> {
        Ok(match (&w.address, &w.prefix) {
            (Some(a), _) => json!({"address": a.to_string()}),
            (None, Some(p)) => {
                let p: crate::pool::Prefix = p.parse().map_err(|e| format!("--prefix {p}: {e}"))?;
                json!({"prefix": p.to_string()})
            }
            (None, None) => json!({}),
        })
    };
    Ok(match c {
        CtlCommand::Status => "status".into(),
        CtlCommand::PartnerDown { relationship: None } => "partner-down".into(),
        CtlCommand::PartnerDown { relationship: Some(r) } => format!("partner-down {r}"),
        CtlCommand::Shutdown => "shutdown".into(),
        CtlCommand::Reload => "reload".into(),
        CtlCommand::Lease(l) => {
            let mut v = match l {
                LeaseCommand::Get { which, duid, iaid, all } => {
                    let mut v = selector(which)?;
                    if v.as_object().is_some_and(|o| o.is_empty()) && duid.is_none() {
                        return Err("lease get: give --address, --prefix or --duid".into());
                    }
                    if let Some(d) = duid {
                        crate::wire::Duid::from_hex(d).map_err(|e| format!("--duid {d}: {e}"))?;
                        v["duid"] = json!(d.to_ascii_lowercase());
                    }
                    if let Some(i) = iaid {
                        v["iaid"] = json!(i);
                    }
                    v["all"] = json!(all);
                    v["command"] = json!("lease-get");
                    v
                }
                LeaseCommand::Del { which } => {
                    let mut v = selector(which)?;
                    if v.as_object().is_some_and(|o| o.is_empty()) {
                        return Err("lease del: give --address or --prefix".into());
                    }
                    v["command"] = json!("lease-del");
                    v
                }
                LeaseCommand::Add { which, duid, iaid, valid_lifetime } => {
                    let mut v = selector(which)?;
                    if v.as_object().is_some_and(|o| o.is_empty()) {
                        return Err("lease add: give --address or --prefix".into());
                    }
                    crate::wire::Duid::from_hex(duid).map_err(|e| format!("--duid {duid}: {e}"))?;
                    v["duid"] = json!(duid.to_ascii_lowercase());
                    v["iaid"] = json!(iaid);
                    if let Some(s) = valid_lifetime {
                        v["valid-lifetime"] = json!(s);
                    }
                    v["command"] = json!("lease-add");
                    v
                }
                LeaseCommand::Wipe { subnet, yes } => {
                    if !yes {
                        return Err("lease wipe deletes every lease of the subnet: add --yes".into());
                    }
                    let p: crate::pool::Prefix = subnet.parse().map_err(|e| format!("--subnet {subnet}: {e}"))?;
                    json!({"command": "lease-wipe", "subnet": p.to_string()})
                }
            };
            if let Some(o) = v.as_object_mut() {
                o.sort_keys();
            }
            v.to_string()
        }
    })
}

/// Print a `ctl` reply and pick the exit status (README "Operating tandem"):
/// 0 done; 1 refused or failed (a lease command's reason goes to stderr).
fn ctl_exit(c: &CtlCommand, reply: &str) -> ExitCode {
    let v: serde_json::Value = serde_json::from_str(reply).unwrap_or(serde_json::Value::Null);
    if v.get("ok") == Some(&serde_json::Value::Bool(false)) {
        if matches!(c, CtlCommand::Lease(_)) {
            eprintln!("tandem ctl: {}", v.get("error").and_then(|e| e.as_str()).unwrap_or(reply));
        } else {
            println!("{reply}");
        }
        return ExitCode::from(1);
    }
    match c {
        CtlCommand::Lease(_) => {
            let body = v.get("result").cloned().unwrap_or(v);
            println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
            ExitCode::SUCCESS
        }
        CtlCommand::Reload => {
            println!("{reply}");
            if v.get("result").and_then(|r| r.as_str()) == Some("applied") { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        _ => {
            println!("{reply}");
            ExitCode::SUCCESS
        }
    }
}

/// tandem(8): the top-level page, then every subcommand's synopsis and options.
fn man_page(out: &mut Vec<u8>) -> std::io::Result<()> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    let mut top = Vec::new();
    man.render(&mut top)?;
    // One page for everything: the subcommand list names sections, not pages.
    let mut top = String::from_utf8_lossy(&top).into_owned();
    for c in cmd.get_subcommands() {
        let n = c.get_name();
        top = top.replace(&format!("tandem\\-{}(8)", n.replace('-', "\\-")), &format!("\\fBtandem {}\\fR", n.replace('-', "\\-")));
    }
    out.extend_from_slice(top.as_bytes());
    let mut walk: Vec<(String, clap::Command)> = cmd.get_subcommands().map(|c| (format!("tandem {}", c.get_name()), c.clone())).collect();
    while let Some((name, sub)) = walk.first().cloned() {
        walk.remove(0);
        if sub.get_name() == "help" {
            continue;
        }
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        let about = sub.get_long_about().or(sub.get_about()).map(|a| a.to_string()).unwrap_or_default();
        writeln!(out, "{}", about.replace('\\', "\\\\").replace("\n.", "\n\\&."))?;
        let m = clap_mangen::Man::new(sub.clone());
        let mut opts = Vec::new();
        m.render_options_section(&mut opts)?;
        // The section's own heading is replaced by ours.
        let text = String::from_utf8_lossy(&opts).replacen(".SH OPTIONS", ".PP", 1);
        out.extend_from_slice(text.as_bytes());
        let mut kids: Vec<(String, clap::Command)> =
            sub.get_subcommands().filter(|c| c.get_name() != "help").map(|c| (format!("{name} {}", c.get_name()), c.clone())).collect();
        kids.extend(walk);
        walk = kids;
    }
    Ok(())
}

/// One request, one JSON line back; `wait` bounds the answer (a wipe of a
/// large subnet, or a reload, takes longer than a status).
fn ctl(path: &std::path::Path, word: &str, wait: std::time::Duration) -> std::io::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(wait))?;
    writeln!(s, "{word}")?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            std::io::Error::new(e.kind(), format!("no answer within {} s", wait.as_secs()))
        }
        _ => e,
    })?;
    Ok(line.trim_end().to_string())
}

/// Logging to stderr, with a filter a reload can change (`log-level`).
fn init_logging(level: &str, format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
    crate::runtime::observe::set_log_level_control(Box::new(move |l| {
        let f = tracing_subscriber::EnvFilter::try_new(l).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    }));
}

