//! A failover pair rig: namespaces for the primary, the secondary and the
//! clients on one bridge (the client link), plus a direct veth between the
//! two servers for the failover link (so it can be cut on its own).
//!
//!   client link 2001:db8:1::/64: primary ::1, secondary ::2, clients link-local
//!   failover link 2001:db8:ffff::/64: primary ::1, secondary ::2 (TCP 647)

use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{BIN, must, sh};
use tandem::wire::*;

pub const PRIMARY: usize = 0;
pub const SECONDARY: usize = 1;

pub struct Pair {
    pub tag: String,
    /// Namespaces: primary, secondary, clients, bridge.
    pub ns: [String; 4],
    /// Client-link interface in each of primary, secondary, clients.
    pub ifs: [String; 3],
    /// Failover-link interfaces in primary and secondary.
    pub fo_ifs: [String; 2],
    pub dir: PathBuf,
    children: [Option<Child>; 2],
}

impl Pair {
    pub fn new(name: &str) -> Pair {
        let tag = super::unique_tag();
        let ns = ["p", "s", "c", "b"].map(|r| format!("tnd-{tag}-{r}"));
        let ifs = ["p", "s", "c"].map(|r| format!("t{tag}{r}"));
        let fo_ifs = ["p", "s"].map(|r| format!("f{tag}{r}"));
        let pair = Pair {
            dir: std::env::temp_dir().join(format!("tandem-pair-{name}-{tag}")),
            tag,
            ns,
            ifs,
            fo_ifs,
            children: [None, None],
        };
        let _ = std::fs::remove_dir_all(&pair.dir);
        std::fs::create_dir_all(&pair.dir).unwrap();
        let [p, s, c, b] = &pair.ns;
        for x in [p, s, c, b] {
            must(&format!("ip netns add {x} && ip -n {x} link set lo up"));
            must(&format!("ip netns exec {x} sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0"));
        }
        must(&format!("ip -n {b} link add br0 type bridge && ip -n {b} link set br0 up"));
        for (x, i) in [p, s, c].iter().zip(&pair.ifs) {
            must(&format!("ip link add {i} type veth peer name {i}b"));
            must(&format!("ip link set {i} netns {x} && ip link set {i}b netns {b}"));
            must(&format!("ip -n {b} link set {i}b master br0 && ip -n {b} link set {i}b up"));
            must(&format!("ip netns exec {x} sysctl -qw net.ipv6.conf.{i}.accept_dad=0"));
            must(&format!("ip -n {x} link set {i} up"));
        }
        must(&format!("ip -n {p} addr add 2001:db8:1::1/64 dev {} nodad", pair.ifs[0]));
        must(&format!("ip -n {s} addr add 2001:db8:1::2/64 dev {} nodad", pair.ifs[1]));
        let [fp, fs] = &pair.fo_ifs;
        must(&format!("ip link add {fp} type veth peer name {fs}"));
        must(&format!("ip link set {fp} netns {p} && ip link set {fs} netns {s}"));
        // Keep the addresses when the test takes the link down (a cut cable).
        must(&format!("ip netns exec {p} sysctl -qw net.ipv6.conf.{fp}.keep_addr_on_down=1"));
        must(&format!("ip netns exec {s} sysctl -qw net.ipv6.conf.{fs}.keep_addr_on_down=1"));
        must(&format!("ip -n {p} addr add 2001:db8:ffff::1/64 dev {fp} nodad && ip -n {p} link set {fp} up"));
        must(&format!("ip -n {s} addr add 2001:db8:ffff::2/64 dev {fs} nodad && ip -n {s} link set {fs} up"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ok = sh(&format!(
                "ip -n {c} -6 addr show dev {} scope link | grep -v tentative | grep -q 'inet6 fe80'",
                pair.ifs[2]
            ));
            if ok.status.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        pair
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    pub fn data(&self, who: usize) -> PathBuf {
        self.path(&format!("data-{who}"))
    }

    /// `tandem gen-tls` for both servers (names primary.test, secondary.test).
    pub fn gen_tls(&self, sub: &str) -> PathBuf {
        let d = self.path(sub);
        let o = Command::new(BIN)
            .args(["gen-tls", "--out"])
            .arg(&d)
            .args(["--name", "primary.test", "--name", "secondary.test", "--name", "other.test"])
            .output()
            .unwrap();
        assert!(o.status.success(), "gen-tls: {}", String::from_utf8_lossy(&o.stderr));
        d
    }

    /// The server's config: the shared pools, and `[failover]` with `fo` lines
    /// added (e.g. auto-partner-down) and the given `[failover.tls]` body.
    pub fn config(&self, who: usize, fo: &str, tls: &str) -> String {
        let (role, me, peer) = if who == PRIMARY { ("primary", 1, 2) } else { ("secondary", 2, 1) };
        format!(
            r#"data-dir = "{data}"
interfaces = ["{ifn}"]
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "{ifn}"
pools = ["2001:db8:1::1000-2001:db8:1::1fff"]
pd-pools = [{{ prefix = "2001:db8:100::/48", delegated-length = 56 }}]
preferred-lifetime = 300
valid-lifetime = 600
rapid-commit = true
[failover]
name = "test-pair"
role = "{role}"
listen = "[2001:db8:ffff::{me}]:647"
peer = "[2001:db8:ffff::{peer}]:647"
mclt = 10
keepalive-time = 4
startup-time = 2
{fo}
[failover.tls]
{tls}
"#,
            data = self.data(who).display(),
            ifn = self.ifs[who],
        )
    }

    /// The `[failover.tls]` body for `who` with certificates from `dir`.
    pub fn tls(&self, who: usize, dir: &std::path::Path) -> String {
        let (me, peer) = if who == PRIMARY { ("primary.test", "secondary.test") } else { ("secondary.test", "primary.test") };
        format!(
            "cert = \"{d}/{me}.pem\"\nkey = \"{d}/{me}.key\"\nca = \"{d}/ca.pem\"\npeer-name = \"{peer}\"\n",
            d = dir.display()
        )
    }

    pub fn log_path(&self, who: usize) -> PathBuf {
        self.path(&format!("server-{who}.log"))
    }

    pub fn log(&self, who: usize) -> String {
        std::fs::read_to_string(self.log_path(who)).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        format!("--- primary ---\n{}\n--- secondary ---\n{}", self.log(PRIMARY), self.log(SECONDARY))
    }

    /// Start `tandem serve` for `who` (2 shards, debug log) and wait for its ready file.
    pub fn start(&mut self, who: usize, config: &str, env: &[(&str, &str)]) {
        self.start_with(who, config, 2, "debug", env)
    }

    /// Start `tandem serve --shards SHARDS --log-level LEVEL` for `who`.
    pub fn start_with(&mut self, who: usize, config: &str, shards: usize, level: &str, env: &[(&str, &str)]) {
        self.start_args(who, config, shards, level, env, &[])
    }

    /// `start_with`, with more `serve` flags.
    pub fn start_args(&mut self, who: usize, config: &str, shards: usize, level: &str, env: &[(&str, &str)], args: &[&str]) {
        let cfg = self.path(&format!("tandem-{who}.toml"));
        std::fs::write(&cfg, config).unwrap();
        let ready = self.path(&format!("ready-{who}"));
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(who)).unwrap();
        let mut cmd = Command::new("ip");
        let shards = shards.to_string();
        cmd.args(["netns", "exec", &self.ns[who], BIN, "serve", "--shards", &shards, "--log-level", level, "--config"])
            .arg(&cfg)
            .arg("--ready-file")
            .arg(&ready)
            .args(args)
            // Test-only: an MCLT of seconds (documented in the README).
            .env("TANDEM_TEST_SHORT_TIMES", "1")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.children[who] = Some(cmd.spawn().expect("spawn tandem"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            if Instant::now() > deadline {
                panic!("server {who} not ready:\n{}", self.logs());
            }
            if let Some(Ok(Some(st))) = self.children[who].as_mut().map(|c| c.try_wait()) {
                panic!("server {who} exited with {st}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (or SIGTERM) a server and wait; returns its exit code.
    pub fn stop(&mut self, who: usize, kill: bool) -> Option<i32> {
        let mut c = self.children[who].take()?;
        let sig = if kill { libc::SIGKILL } else { libc::SIGTERM };
        // SAFETY: signalling our own child (`ip netns exec` execs tandem).
        unsafe { libc::kill(c.id() as i32, sig) };
        c.wait().unwrap().code()
    }

    pub fn ctl(&self, who: usize, cmd: &str) -> serde_json::Value {
        let o = Command::new(BIN)
            .args(["ctl", "--socket"])
            .arg(self.data(who).join("control.sock"))
            .arg(cmd)
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("ctl {cmd}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    }

    /// Records in `who`'s store, summed over its shards (`ctl status`).
    pub fn records(&self, who: usize) -> u64 {
        let v = self.ctl(who, "status");
        v["per-shard"].as_array().map(|a| a.iter().map(|s| s["leases"].as_u64().unwrap_or(0)).sum()).unwrap_or(0)
    }

    pub fn state(&self, who: usize) -> String {
        let v = self.ctl(who, "status");
        v["failover"]["state"].as_str().unwrap_or("?").to_string()
    }

    /// Wait until `who` is in `state`.
    #[track_caller]
    pub fn wait_state(&self, who: usize, state: &str, secs: u64) {
        let d = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < d {
            if self.state(who) == state {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("server {who} not in {state} after {secs} s (is {}):\n{}", self.state(who), self.logs());
    }

    pub fn leases(&self, who: usize) -> Vec<serde_json::Value> {
        let o = Command::new(BIN).args(["leases", "--format", "json", "--data-dir"]).arg(self.data(who)).output().unwrap();
        assert!(o.status.success(), "tandem leases: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap().as_array().unwrap().clone()
    }

    /// (lease, duid, state) of every lease of `who`, sorted.
    pub fn lease_set(&self, who: usize) -> Vec<(String, String, String)> {
        let mut v: Vec<_> = self
            .leases(who)
            .iter()
            .map(|l| (l["lease"].as_str().unwrap().to_string(), l["duid"].as_str().unwrap().to_string(), l["state"].as_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    }

    pub fn client_ifindex(&self) -> u32 {
        let out = must(&format!("ip -n {} -o link show {}", self.ns[2], self.ifs[2]));
        out.split(':').next().unwrap().trim().parse().unwrap()
    }

    /// Cut (or restore) the failover link.
    pub fn fo_link(&self, up: bool) {
        let st = if up { "up" } else { "down" };
        must(&format!("ip -n {} link set {} {st}", self.ns[0], self.fo_ifs[0]));
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for x in &self.ns {
            let _ = sh(&format!("ip netns pids {x} | xargs -r kill -9; ip netns del {x}"));
        }
        if std::thread::panicking() {
            eprintln!("pair {} kept at {}", self.tag, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One exchange as a test client: the reply's server DUID and addresses.
#[derive(Debug, Clone)]
pub struct Answer {
    pub server: Duid,
    pub addrs: Vec<(Ipv6Addr, u32)>,
    /// Delegated prefixes (prefix, length, valid lifetime).
    pub prefixes: Vec<(Ipv6Addr, u8, u32)>,
}

impl Answer {
    /// The address and prefix this answer grants (valid lifetime > 0).
    pub fn held(&self) -> (Option<Ipv6Addr>, Option<(Ipv6Addr, u8)>) {
        (
            self.addrs.iter().find(|(_, v)| *v > 0).map(|(a, _)| *a),
            self.prefixes.iter().find(|(_, _, v)| *v > 0).map(|(p, l, _)| (*p, *l)),
        )
    }
}

/// Send `m` to All_DHCP_Relay_Agents_and_Servers and collect every Reply
/// for its transaction within `wait`.
pub fn exchange(sock: &UdpSocket, ifindex: u32, m: &Message, wait: Duration) -> Vec<Answer> {
    let to = SocketAddrV6::new("ff02::1:2".parse().unwrap(), 547, 0, ifindex);
    let xid = match m {
        Message::Client(c) => c.transaction_id,
        _ => unreachable!(),
    };
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let bytes = m.encode().unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    let mut sent = Instant::now() - Duration::from_secs(10);
    let mut buf = [0u8; 2048];
    while start.elapsed() < wait {
        // Retransmit every second until something answers.
        if out.is_empty() && sent.elapsed() > Duration::from_secs(1) {
            let _ = sock.send_to(&bytes, to);
            sent = Instant::now();
        }
        let Ok((n, _)) = sock.recv_from(&mut buf) else { continue };
        let Ok(Message::Client(c)) = Message::decode(&buf[..n]) else { continue };
        if c.transaction_id != xid || c.msg_type != MessageType::Reply {
            continue;
        }
        let Some(server) = c.options.server_id().cloned() else { continue };
        let addrs = c.options.ia_nas().flat_map(|ia| ia.options.ia_addrs().map(|a| (a.addr, a.valid)).collect::<Vec<_>>()).collect();
        let prefixes = c
            .options
            .ia_pds()
            .flat_map(|ia| ia.options.ia_prefixes().map(|p| (p.prefix, p.prefix_len, p.valid)).collect::<Vec<_>>())
            .collect();
        out.push(Answer { server, addrs, prefixes });
    }
    out
}

/// A Rebind for client `n` holding `addr` (no Server ID: any server may answer).
pub fn rebind(n: u64, xid: u32, addr: Ipv6Addr) -> Message {
    let ia = IaNa {
        iaid: 1,
        t1: 0,
        t2: 0,
        options: vec![DhcpOption::IaAddr(IaAddr { addr, preferred: 0, valid: 0, options: Options::new() })].into(),
    };
    Message::Client(ClientMessage {
        msg_type: MessageType::Rebind,
        transaction_id: xid & 0xff_ffff,
        options: vec![DhcpOption::ClientId(super::duid(n)), DhcpOption::ElapsedTime(0), DhcpOption::IaNa(ia)].into(),
    })
}

/// A client message of `kind` for client `n` with an IA_NA and an IA_PD,
/// naming the address and prefix it holds (if any) and the server it talks
/// to (Renew, Release) or none (Rebind, Solicit).
pub fn ask(kind: MessageType, n: u64, xid: u32, server: Option<&Duid>, addr: Option<Ipv6Addr>, prefix: Option<(Ipv6Addr, u8)>) -> Message {
    let na = addr.map(|addr| DhcpOption::IaAddr(IaAddr { addr, preferred: 0, valid: 0, options: Options::new() }));
    let pd = prefix.map(|(prefix, prefix_len)| DhcpOption::IaPrefix(IaPrefix { preferred: 0, valid: 0, prefix_len, prefix, options: Options::new() }));
    let mut o = vec![DhcpOption::ClientId(super::duid(n)), DhcpOption::ElapsedTime(0)];
    if let Some(s) = server {
        o.push(DhcpOption::ServerId(s.clone()));
    }
    o.push(DhcpOption::IaNa(IaNa { iaid: 1, t1: 0, t2: 0, options: na.into_iter().collect::<Vec<_>>().into() }));
    o.push(DhcpOption::IaPd(IaPd { iaid: 1, t1: 0, t2: 0, options: pd.into_iter().collect::<Vec<_>>().into() }));
    if kind == MessageType::Solicit {
        o.push(DhcpOption::RapidCommit);
    }
    Message::Client(ClientMessage { msg_type: kind, transaction_id: xid & 0xff_ffff, options: o.into() })
}
