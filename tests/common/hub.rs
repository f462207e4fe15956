//! A hub-and-spoke rig: one hub server in two failover relationships
//! ("site-a" with server A, "site-b" with server B), each site with its own
//! client link (a bridge) that the hub is on too, and a direct veth between
//! the hub and each site for the failover link (so it can be cut on its own).
//!
//!   client link A 2001:db8:1::/64: A ::1, hub ::2, clients (ns CA) link-local
//!   client link B 2001:db8:2::/64: B ::1, hub ::2, clients (ns CB) link-local
//!   failover link A 2001:db8:ffff:1::/64: A ::1, hub ::2 (TCP 647)
//!   failover link B 2001:db8:ffff:2::/64: B ::1, hub ::2 (TCP 647)
//!
//! The hub is secondary in both relationships and listens once on [::]:647.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pair::Answer;
use super::{BIN, all_servers, client_socket, duid, in_netns, must, sh};
use tandem::wire::*;

/// Servers.
pub const HUB: usize = 0;
pub const A: usize = 1;
pub const B: usize = 2;
/// Client links (and the relationship covering each).
pub const LINK_A: usize = 0;
pub const LINK_B: usize = 1;
pub const SERVER_NAMES: [&str; 3] = ["hub", "a", "b"];
pub const RELATIONSHIPS: [&str; 2] = ["site-a", "site-b"];

/// Per link: subnet, address pool, PD pool (delegating /56s).
pub const LINKS: [(&str, &str, &str); 2] = [
    ("2001:db8:1::/64", "2001:db8:1::1000-2001:db8:1::1fff", "2001:db8:100::/48"),
    ("2001:db8:2::/64", "2001:db8:2::1000-2001:db8:2::1fff", "2001:db8:200::/48"),
];

pub struct Hub {
    pub tag: String,
    /// Namespaces: hub, A, B, clients of link A, clients of link B, bridges.
    pub ns: [String; 6],
    /// Per client link: the site server's, the hub's and the clients' interface.
    pub link_ifs: [[String; 3]; 2],
    /// Per failover link: the site server's and the hub's interface.
    pub fo_ifs: [[String; 2]; 2],
    pub dir: PathBuf,
    children: [Option<Child>; 3],
}

impl Hub {
    pub fn new(name: &str) -> Hub {
        let tag = super::unique_tag();
        let ns = ["h", "a", "b", "ca", "cb", "br"].map(|r| format!("tnd-{tag}-{r}"));
        // ≤ 15 characters: the tag has at most 5 hex digits.
        let link_ifs = ["a", "b"].map(|s| [format!("t{tag}{s}"), format!("t{tag}h{s}"), format!("t{tag}c{s}")]);
        let fo_ifs = ["a", "b"].map(|s| [format!("f{tag}{s}"), format!("f{tag}h{s}")]);
        let hub = Hub {
            dir: std::env::temp_dir().join(format!("tandem-hub-{name}-{tag}")),
            tag,
            ns,
            link_ifs,
            fo_ifs,
            children: [None, None, None],
        };
        let _ = std::fs::remove_dir_all(&hub.dir);
        std::fs::create_dir_all(&hub.dir).unwrap();
        for x in &hub.ns {
            must(&format!("ip netns add {x} && ip -n {x} link set lo up"));
            must(&format!("ip netns exec {x} sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0"));
        }
        let br = &hub.ns[5];
        for l in [LINK_A, LINK_B] {
            let n = l + 1;
            // The client link: site server, hub and clients on bridge br{l}.
            must(&format!("ip -n {br} link add br{l} type bridge && ip -n {br} link set br{l} up"));
            let nss = [&hub.ns[1 + l], &hub.ns[0], &hub.ns[3 + l]];
            for (x, i) in nss.iter().zip(&hub.link_ifs[l]) {
                must(&format!("ip link add {i} type veth peer name {i}b"));
                must(&format!("ip link set {i} netns {x} && ip link set {i}b netns {br}"));
                must(&format!("ip -n {br} link set {i}b master br{l} && ip -n {br} link set {i}b up"));
                must(&format!("ip netns exec {x} sysctl -qw net.ipv6.conf.{i}.accept_dad=0"));
                must(&format!("ip -n {x} link set {i} up"));
            }
            must(&format!("ip -n {} addr add 2001:db8:{n}::1/64 dev {} nodad", nss[0], hub.link_ifs[l][0]));
            must(&format!("ip -n {} addr add 2001:db8:{n}::2/64 dev {} nodad", nss[1], hub.link_ifs[l][1]));
            // The failover link: a veth between the site server and the hub.
            let (site, h) = (&hub.ns[1 + l], &hub.ns[0]);
            let [fs, fh] = &hub.fo_ifs[l];
            must(&format!("ip link add {fs} type veth peer name {fh}"));
            must(&format!("ip link set {fs} netns {site} && ip link set {fh} netns {h}"));
            // Keep the addresses when a test takes the link down (a cut cable).
            must(&format!("ip netns exec {site} sysctl -qw net.ipv6.conf.{fs}.keep_addr_on_down=1"));
            must(&format!("ip netns exec {h} sysctl -qw net.ipv6.conf.{fh}.keep_addr_on_down=1"));
            must(&format!("ip -n {site} addr add 2001:db8:ffff:{n}::1/64 dev {fs} nodad && ip -n {site} link set {fs} up"));
            must(&format!("ip -n {h} addr add 2001:db8:ffff:{n}::2/64 dev {fh} nodad && ip -n {h} link set {fh} up"));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ok = [LINK_A, LINK_B].iter().all(|&l| {
                sh(&format!(
                    "ip -n {} -6 addr show dev {} scope link | grep -v tentative | grep -q 'inet6 fe80'",
                    hub.ns[3 + l],
                    hub.link_ifs[l][2]
                ))
                .status
                .success()
            });
            if ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        hub
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    pub fn data(&self, who: usize) -> PathBuf {
        self.path(&format!("data-{}", SERVER_NAMES[who]))
    }

    /// `tandem gen-tls` for the three servers (hub.test, a.test, b.test).
    pub fn gen_tls(&self, sub: &str) -> PathBuf {
        let d = self.path(sub);
        let o = Command::new(BIN)
            .args(["gen-tls", "--out"])
            .arg(&d)
            .args(["--name", "hub.test", "--name", "a.test", "--name", "b.test"])
            .output()
            .unwrap();
        assert!(o.status.success(), "gen-tls: {}", String::from_utf8_lossy(&o.stderr));
        d
    }

    /// A `[failover.tls]` body: our certificate `me`, the partner's name `peer`.
    pub fn tls(dir: &Path, me: &str, peer: &str) -> String {
        format!(
            "[failover.tls]\ncert = \"{d}/{me}.pem\"\nkey = \"{d}/{me}.key\"\nca = \"{d}/ca.pem\"\npeer-name = \"{peer}\"\n",
            d = dir.display()
        )
    }

    /// The `[[subnet]]` of client link `l` on interface `ifn`.
    pub fn subnet(l: usize, ifn: &str) -> String {
        let (prefix, pool, pd) = LINKS[l];
        format!(
            r#"[[subnet]]
prefix = "{prefix}"
interface = "{ifn}"
pools = ["{pool}"]
pd-pools = [{{ prefix = "{pd}", delegated-length = 56 }}]
preferred-lifetime = 300
valid-lifetime = 600
rapid-commit = true
"#
        )
    }

    /// The failover keys every relationship shares.
    pub const TIMERS: &str = "mclt = 10\nkeepalive-time = 4\nstartup-time = 2\n";

    /// The hub's config: both subnets, and two `[[failover]]` (secondary in
    /// "site-a" and "site-b", one listener) with `extra[l]` lines added to
    /// the relationship of link `l` (e.g. auto-partner-down).
    pub fn hub_config(&self, certs: &Path, extra: [&str; 2]) -> String {
        let [ha, hb] = [&self.link_ifs[LINK_A][1], &self.link_ifs[LINK_B][1]];
        let mut c = format!("data-dir = \"{}\"\ninterfaces = [\"{ha}\", \"{hb}\"]\n", self.data(HUB).display());
        c += &Self::subnet(LINK_A, ha);
        c += &Self::subnet(LINK_B, hb);
        for l in [LINK_A, LINK_B] {
            c += &format!(
                "[[failover]]\nname = \"{name}\"\nrole = \"secondary\"\nlisten = \"[::]:647\"\npeer = \"[2001:db8:ffff:{n}::1]:647\"\n{t}subnets = [\"{s}\"]\n{x}\n{tls}",
                name = RELATIONSHIPS[l],
                n = l + 1,
                t = Self::TIMERS,
                s = LINKS[l].0,
                x = extra[l],
                tls = Self::tls(certs, "hub.test", &format!("{}.test", SERVER_NAMES[1 + l])),
            );
        }
        c
    }

    /// Site server A or B: its one subnet and a single-form `[failover]`
    /// (primary of its relationship with the hub), `extra` lines added.
    pub fn site_config(&self, who: usize, certs: &Path, extra: &str) -> String {
        assert!(who == A || who == B);
        let l = who - 1;
        let ifn = &self.link_ifs[l][0];
        format!(
            "data-dir = \"{data}\"\ninterfaces = [\"{ifn}\"]\n{subnet}[failover]\nname = \"{name}\"\nrole = \"primary\"\nlisten = \"[2001:db8:ffff:{n}::1]:647\"\npeer = \"[2001:db8:ffff:{n}::2]:647\"\n{t}{extra}\n{tls}",
            data = self.data(who).display(),
            subnet = Self::subnet(l, ifn),
            name = RELATIONSHIPS[l],
            n = l + 1,
            t = Self::TIMERS,
            tls = Self::tls(certs, &format!("{}.test", SERVER_NAMES[who]), "hub.test"),
        )
    }

    pub fn log_path(&self, who: usize) -> PathBuf {
        self.path(&format!("server-{}.log", SERVER_NAMES[who]))
    }

    pub fn log(&self, who: usize) -> String {
        std::fs::read_to_string(self.log_path(who)).unwrap_or_default()
    }

    /// The three servers' logs, for panic messages.
    pub fn logs(&self) -> String {
        (0..3).map(|w| format!("--- {} ---\n{}\n", SERVER_NAMES[w], self.log(w))).collect()
    }

    /// Start `tandem serve --shards SHARDS --log-level debug` for `who` and
    /// wait for its ready file.
    pub fn start(&mut self, who: usize, config: &str, shards: usize) {
        let cfg = self.path(&format!("tandem-{}.toml", SERVER_NAMES[who]));
        std::fs::write(&cfg, config).unwrap();
        let ready = self.path(&format!("ready-{}", SERVER_NAMES[who]));
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(who)).unwrap();
        let shards = shards.to_string();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns[who], BIN, "serve", "--shards", &shards, "--log-level", "debug", "--config"])
            .arg(&cfg)
            .arg("--ready-file")
            .arg(&ready)
            // Test-only: an MCLT of seconds (documented in the README).
            .env("TANDEM_TEST_SHORT_TIMES", "1")
            .stdout(Stdio::null())
            .stderr(log);
        self.children[who] = Some(cmd.spawn().expect("spawn tandem"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            if Instant::now() > deadline {
                panic!("server {} not ready:\n{}", SERVER_NAMES[who], self.logs());
            }
            if let Some(Ok(Some(st))) = self.children[who].as_mut().map(|c| c.try_wait()) {
                panic!("server {} exited with {st}:\n{}", SERVER_NAMES[who], self.logs());
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

    /// `tandem ctl --socket DATA/control.sock ARGS…`: its JSON reply
    /// (printed on stdout also when the server says ok=false).
    pub fn ctl(&self, who: usize, args: &[&str]) -> serde_json::Value {
        let o = Command::new(BIN).args(["ctl", "--socket"]).arg(self.data(who).join("control.sock")).args(args).output().unwrap();
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
            panic!("ctl {args:?} at {}: {}{}", SERVER_NAMES[who], String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
        })
    }

    pub fn status(&self, who: usize) -> serde_json::Value {
        self.ctl(who, &["status"])
    }

    pub fn server_duid(&self, who: usize) -> Duid {
        Duid::from_hex(self.status(who)["server-duid"].as_str().unwrap()).unwrap()
    }

    /// `failover.state` of `who` (its first relationship).
    pub fn state(&self, who: usize) -> String {
        self.status(who)["failover"]["state"].as_str().unwrap_or("?").to_string()
    }

    /// The entry of `relationships` named `name` in `who`'s status (Null if none).
    pub fn relationship(&self, who: usize, name: &str) -> serde_json::Value {
        let st = self.status(who);
        st["relationships"].as_array().and_then(|a| a.iter().find(|r| r["name"] == name)).cloned().unwrap_or_default()
    }

    pub fn relationship_state(&self, who: usize, name: &str) -> String {
        self.relationship(who, name)["state"].as_str().unwrap_or("?").to_string()
    }

    /// Wait until `who`'s `failover.state` is `state`.
    #[track_caller]
    pub fn wait_state(&self, who: usize, state: &str, secs: u64) {
        if !super::eventually(secs, || self.state(who) == state) {
            panic!("server {} not in {state} after {secs} s (is {}):\n{}", SERVER_NAMES[who], self.state(who), self.logs());
        }
    }

    /// Wait until `who`'s relationship `name` is in `state`.
    #[track_caller]
    pub fn wait_relationship_state(&self, who: usize, name: &str, state: &str, secs: u64) {
        if !super::eventually(secs, || self.relationship_state(who, name) == state) {
            panic!(
                "server {} relationship {name} not in {state} after {secs} s (is {}):\n{}",
                SERVER_NAMES[who],
                self.relationship(who, name),
                self.logs()
            );
        }
    }

    pub fn leases(&self, who: usize) -> Vec<serde_json::Value> {
        let o = Command::new(BIN).args(["leases", "--format", "json", "--data-dir"]).arg(self.data(who)).output().unwrap();
        assert!(o.status.success(), "tandem leases: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap().as_array().unwrap().clone()
    }

    /// `who`'s ACTIVE leases: lease ("ADDR" or "PREFIX/LEN") → (duid hex, iaid).
    pub fn active(&self, who: usize) -> HashMap<String, (String, u64)> {
        self.leases(who)
            .iter()
            .filter(|l| l["state"] == "ACTIVE")
            .map(|l| {
                let d = l["duid"].as_str().unwrap().to_ascii_lowercase();
                (l["lease"].as_str().unwrap().to_string(), (d, l["iaid"].as_u64().unwrap()))
            })
            .collect()
    }

    pub fn client_ifindex(&self, link: usize) -> u32 {
        let out = must(&format!("ip -n {} -o link show {}", self.ns[3 + link], self.link_ifs[link][2]));
        out.split(':').next().unwrap().trim().parse().unwrap()
    }

    /// Cut (or restore) the failover link of `link`'s relationship.
    pub fn fo_link(&self, link: usize, up: bool) {
        let st = if up { "up" } else { "down" };
        must(&format!("ip -n {} link set {} {st}", self.ns[1 + link], self.fo_ifs[link][0]));
    }

    /// From the clients' namespace of `link`: send every message at once
    /// (retransmitting the unanswered each second) and collect every Reply,
    /// per client one answer per server, for up to `secs` (ending a second
    /// after every client has an answer).
    pub fn burst(&self, link: usize, msgs: Vec<(u64, Message)>, secs: u64) -> HashMap<u64, Vec<Answer>> {
        let ifx = self.client_ifindex(link);
        in_netns(&self.ns[3 + link], move || {
            let s = client_socket(546);
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let to = all_servers(ifx);
            let xid_of = |m: &Message| match m {
                Message::Client(c) => c.transaction_id,
                _ => unreachable!(),
            };
            let by_xid: HashMap<u32, u64> = msgs.iter().map(|(c, m)| (xid_of(m), *c)).collect();
            let mut got: HashMap<u64, HashMap<Duid, Answer>> = HashMap::new();
            let mut end = Instant::now() + Duration::from_secs(secs);
            let mut sent = Instant::now() - Duration::from_secs(10);
            let mut buf = [0u8; 2048];
            while Instant::now() < end {
                if sent.elapsed() >= Duration::from_secs(1) {
                    for (c, m) in &msgs {
                        if !got.contains_key(c) {
                            let _ = s.send_to(&m.encode().unwrap(), to);
                        }
                    }
                    sent = Instant::now();
                }
                let Ok((n, _)) = s.recv_from(&mut buf) else { continue };
                let Ok(Message::Client(r)) = Message::decode(&buf[..n]) else { continue };
                let Some(c) = by_xid.get(&r.transaction_id) else { continue };
                if r.msg_type != MessageType::Reply || r.options.client_id() != Some(&duid(*c)) {
                    continue;
                }
                let Some(server) = r.options.server_id().cloned() else { continue };
                let addrs = r.options.ia_nas().flat_map(|ia| ia.options.ia_addrs().map(|a| (a.addr, a.valid)).collect::<Vec<_>>()).collect();
                let prefixes = r
                    .options
                    .ia_pds()
                    .flat_map(|ia| ia.options.ia_prefixes().map(|p| (p.prefix, p.prefix_len, p.valid)).collect::<Vec<_>>())
                    .collect();
                got.entry(*c).or_default().insert(server.clone(), Answer { server, addrs, prefixes });
                if got.len() == by_xid.len() {
                    // Everyone answered: a second more for a second server's answer.
                    end = end.min(Instant::now() + Duration::from_secs(1));
                }
            }
            got.into_iter().map(|(c, m)| (c, m.into_values().collect())).collect()
        })
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for x in &self.ns {
            let _ = sh(&format!("ip netns pids {x} | xargs -r kill -9; ip netns del {x}"));
        }
        if std::thread::panicking() {
            eprintln!("hub {} kept at {}", self.tag, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
