//! End-to-end test rig: private network namespaces joined by veth pairs,
//! the real `tandem` binary, real clients, and a DHCPv6 test client that
//! runs inside a namespace (a thread that has `setns`'d into it).
//! Everything a Lab creates is removed when it is dropped.
#![allow(dead_code)]

pub mod hub;
pub mod pair;

use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tandem::wire::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_tandem");

pub fn is_root() -> bool {
    // SAFETY: trivial libc call.
    unsafe { libc::geteuid() == 0 }
}

/// End-to-end tests need root (namespaces); say so plainly when skipped.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            eprintln!("SKIPPED: this end-to-end test needs root (network namespaces); CI runs it as root");
            return;
        }
    };
}

pub fn tool(name: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {name}")]).output().map(|o| o.status.success()).unwrap_or(false)
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A tag unique in this test process, for namespace and interface names
/// (Lab and Pair share it: two rigs in one test binary must never collide).
pub fn unique_tag() -> String {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let id = (std::process::id() * 16 + n) & 0xfffff;
    format!("{id:x}")
}

pub fn sh(cmd: &str) -> Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

#[track_caller]
pub fn must(cmd: &str) -> String {
    let o = sh(cmd);
    assert!(o.status.success(), "`{cmd}` failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Two namespaces: `srv` (the server, 2001:db8:1::1/64 on `srv_if`) and
/// `cli` (clients, link-local only on `cli_if`), joined by a veth pair.
pub struct Lab {
    pub tag: String,
    pub srv: String,
    pub cli: String,
    pub srv_if: String,
    pub cli_if: String,
    pub dir: PathBuf,
    children: Vec<Child>,
}

impl Lab {
    pub fn new(name: &str) -> Lab {
        let tag = unique_tag();
        let lab = Lab {
            srv: format!("tnd-{tag}-s"),
            cli: format!("tnd-{tag}-c"),
            srv_if: format!("t{tag}s"),
            cli_if: format!("t{tag}c"),
            dir: std::env::temp_dir().join(format!("tandem-e2e-{name}-{tag}")),
            tag,
            children: Vec::new(),
        };
        let _ = std::fs::remove_dir_all(&lab.dir);
        std::fs::create_dir_all(&lab.dir).unwrap();
        let (s, c, si, ci) = (&lab.srv, &lab.cli, &lab.srv_if, &lab.cli_if);
        must(&format!("ip netns add {s} && ip netns add {c}"));
        must(&format!("ip link add {si} type veth peer name {ci}"));
        must(&format!("ip link set {si} netns {s} && ip link set {ci} netns {c}"));
        must(&format!("ip -n {s} link set lo up && ip -n {c} link set lo up"));
        // Link-locals without DAD delay; a global address for the server.
        for (ns, ifn) in [(s, si), (c, ci)] {
            must(&format!("ip netns exec {ns} sysctl -qw net.ipv6.conf.{ifn}.accept_dad=0 net.ipv6.conf.all.accept_dad=0"));
        }
        must(&format!("ip -n {s} addr add 2001:db8:1::1/64 dev {si} nodad"));
        must(&format!("ip -n {s} link set {si} up && ip -n {c} link set {ci} up"));
        // Wait for both link-local addresses.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let a = sh(&format!("ip -n {s} -6 addr show dev {si} scope link | grep -q 'inet6 fe80' && ip -n {c} -6 addr show dev {ci} scope link | grep -v tentative | grep -q 'inet6 fe80'"));
            if a.status.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        lab
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    /// A standalone config for the server side.
    pub fn config(&self, extra_subnet_keys: &str) -> String {
        format!(
            r#"data-dir = "{data}"
interfaces = ["{si}"]
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "{si}"
relay-links = ["2001:db8:9::1"]
pools = ["2001:db8:1::1000-2001:db8:1::ffff"]
pd-pools = [{{ prefix = "2001:db8:100::/40", delegated-length = 56 }}]
preferred-lifetime = 3000
valid-lifetime = 4000
rapid-commit = true
dns-servers = ["2001:db8:1::53"]
{extra_subnet_keys}
[[subnet]]
prefix = "2001:db8:2::/64"
relay-links = ["2001:db8:2::1"]
pools = ["2001:db8:2::1000-2001:db8:2::1fff"]
"#,
            data = self.path("data").display(),
            si = self.srv_if,
        )
    }

    /// Start `tandem serve` in the server namespace and wait for readiness.
    pub fn start_server(&mut self, config: &str, args: &[&str]) -> u32 {
        let cfg = self.path("tandem.toml");
        std::fs::write(&cfg, config).unwrap();
        let ready = self.path("ready");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.path("server.log")).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.srv, BIN, "serve", "--config"])
            .arg(&cfg)
            .arg("--ready-file")
            .arg(&ready)
            .args(args)
            // Test-only: short lifetimes and MCLTs (documented in the README).
            .env("TANDEM_TEST_SHORT_TIMES", "1")
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("spawn tandem");
        let pid = child.id();
        self.children.push(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            if Instant::now() > deadline {
                panic!("server not ready; log:\n{}", self.server_log());
            }
            if let Some(c) = self.children.last_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("server exited with {st}; log:\n{}", self.server_log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        pid
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }

    /// SIGTERM the server (or SIGKILL) and wait for it.
    pub fn stop_server(&mut self, kill: bool) -> Option<i32> {
        let mut c = self.children.pop()?;
        let sig = if kill { libc::SIGKILL } else { libc::SIGTERM };
        // `ip netns exec` execs the binary, so the child pid is tandem's.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, sig) };
        let st = c.wait().unwrap();
        st.code()
    }

    pub fn exec(&self, ns: &str, cmd: &str) -> Output {
        sh(&format!("ip netns exec {ns} sh -c '{}'", cmd.replace('\'', r"'\''")))
    }

    pub fn leases_json(&self) -> serde_json::Value {
        let o = Command::new(BIN).args(["leases", "--format", "json", "--data-dir"]).arg(self.path("data")).output().unwrap();
        assert!(o.status.success(), "tandem leases: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    pub fn cli_ifindex(&self) -> u32 {
        let out = must(&format!("ip -n {} -o link show {}", self.cli, self.cli_if));
        out.split(':').next().unwrap().trim().parse().unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = sh(&format!("ip netns pids {} | xargs -r kill -9", self.cli));
        let _ = sh(&format!("ip netns pids {} | xargs -r kill -9", self.srv));
        let _ = sh(&format!("ip netns del {}; ip netns del {}", self.srv, self.cli));
        if std::thread::panicking() {
            eprintln!("lab {} kept at {}", self.tag, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Wait until `f` holds, up to `secs` (polled every 200 ms).
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let d = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < d {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Run `f` on a thread that has entered network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on this thread only, with an fd of a netns file.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// A DHCPv6 client socket on the client side: port 546 (direct) or 547 (a relay).
pub fn client_socket(port: u16) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s
}

pub fn all_servers(ifindex: u32) -> SocketAddrV6 {
    SocketAddrV6::new("ff02::1:2".parse().unwrap(), 547, 0, ifindex)
}

pub fn duid(n: u64) -> Duid {
    Duid::en(32473, &n.to_be_bytes())
}

pub fn solicit(n: u64, xid: u32, rapid: bool, pd: bool) -> Message {
    let mut o = vec![
        DhcpOption::ClientId(duid(n)),
        DhcpOption::ElapsedTime(0),
        DhcpOption::IaNa(IaNa { iaid: 1, t1: 0, t2: 0, options: Options::new() }),
    ];
    if pd {
        o.push(DhcpOption::IaPd(IaPd { iaid: 1, t1: 0, t2: 0, options: Options::new() }));
    }
    if rapid {
        o.push(DhcpOption::RapidCommit);
    }
    Message::Client(ClientMessage { msg_type: MessageType::Solicit, transaction_id: xid & 0xff_ffff, options: o.into() })
}

/// A granted address as the client saw it.
#[derive(Debug, Clone)]
pub struct Granted {
    pub client: u64,
    pub addr: Ipv6Addr,
    pub valid: u32,
    /// Unix seconds just before the request was sent.
    pub sent_at: u64,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Rapid-commit Solicits for clients `first..first+count`, `window` in
/// flight, each retried until answered or `deadline`. Returns what was
/// granted (from Replies actually received) and the number of duplicate
/// replies (same transaction answered twice).
pub fn rapid_commit_load(sock: &UdpSocket, to: SocketAddrV6, first: u64, count: u64, window: usize, deadline: Instant) -> (Vec<Granted>, usize) {
    rapid_commit_load_with(sock, to, first, count, window, deadline, false)
}

/// `rapid_commit_load`, with an IA_PD beside the IA_NA when `pd`.
pub fn rapid_commit_load_with(
    sock: &UdpSocket,
    to: SocketAddrV6,
    first: u64,
    count: u64,
    window: usize,
    deadline: Instant,
    pd: bool,
) -> (Vec<Granted>, usize) {
    use std::collections::HashMap;
    let mut inflight: HashMap<u32, (u64, u64, Instant)> = HashMap::new();
    let mut answered: std::collections::HashSet<u32> = Default::default();
    let mut retransmitted: std::collections::HashSet<u32> = Default::default();
    let mut granted = Vec::new();
    let mut dups = 0;
    let mut next = first;
    let end = first + count;
    let mut buf = [0u8; 2048];
    sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    while (next < end || !inflight.is_empty()) && Instant::now() < deadline {
        while inflight.len() < window && next < end {
            let xid = (next as u32) & 0xff_ffff;
            let m = solicit(next, xid, true, pd).encode().unwrap();
            // The clock before the send: the server may answer within the same second.
            let t = unix_now();
            let _ = sock.send_to(&m, to);
            inflight.insert(xid, (next, t, Instant::now()));
            next += 1;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let Ok(Message::Client(c)) = Message::decode(&buf[..n]) else { continue };
                // Replies to other senders on this link (same port 546) are not ours.
                let ours = c.transaction_id >= (first as u32 & 0xff_ffff) && c.transaction_id < (end as u32 & 0xff_ffff)
                    && c.options.client_id() == Some(&duid(c.transaction_id as u64 | (first & !0xff_ffff)));
                if !ours {
                    continue;
                }
                if !answered.insert(c.transaction_id) {
                    // Two replies to one transmission would be a server bug;
                    // two replies to a retransmitted request are not.
                    if !retransmitted.contains(&c.transaction_id) {
                        dups += 1;
                    }
                    continue;
                }
                let Some((client, sent_at, _)) = inflight.remove(&c.transaction_id) else { continue };
                if c.msg_type != MessageType::Reply {
                    continue;
                }
                for ia in c.options.ia_nas() {
                    for a in ia.options.ia_addrs() {
                        if a.valid > 0 {
                            granted.push(Granted { client, addr: a.addr, valid: a.valid, sent_at });
                        }
                    }
                }
            }
            Err(_) => {
                // Retransmit anything waiting for more than 500 ms.
                let now = Instant::now();
                for (xid, (client, sent_at, t)) in inflight.iter_mut() {
                    if now.duration_since(*t) > Duration::from_millis(500) {
                        let m = solicit(*client, *xid, true, pd).encode().unwrap();
                        let _ = sock.send_to(&m, to);
                        retransmitted.insert(*xid);
                        *t = now;
                        *sent_at = (*sent_at).min(unix_now());
                    }
                }
            }
        }
    }
    (granted, dups)
}
