//! `tandem demo`: a self-contained demonstration in private network
//! namespaces. A server namespace with a bridge, three client namespaces
//! each with a veth into it, tandem serving the bridge, and real DHCPv6
//! clients (ISC dhclient -6 for an address and for a prefix, dhcpcd for
//! both). Prints what the clients got and the server's lease table, then
//! removes everything it created.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Demo {
    tag: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    server: Option<Child>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        for ns in &self.namespaces {
            let _ = sh(&format!("ip netns pids {ns} | xargs -r kill -9"));
            let _ = sh(&format!("ip netns del {ns}"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        println!("\ncleaned up: namespaces {} and {} removed", self.namespaces.join(", "), self.dir.display());
        let _ = &self.tag;
    }
}

fn sh(cmd: &str) -> std::io::Result<std::process::Output> {
    Command::new("sh").args(["-c", cmd]).output()
}

fn run(cmd: &str) -> Result<String, String> {
    let o = sh(cmd).map_err(|e| format!("{cmd}: {e}"))?;
    if !o.status.success() {
        return Err(format!("`{cmd}` failed: {}", String::from_utf8_lossy(&o.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn have(tool: &str) -> bool {
    sh(&format!("command -v {tool}")).map(|o| o.status.success()).unwrap_or(false)
}

/// Install the Debian packages the demo's clients come from, if missing.
fn ensure_clients() -> Result<(), String> {
    let mut missing = Vec::new();
    if !have("dhclient") {
        missing.push("isc-dhcp-client");
    }
    if !have("dhcpcd") {
        missing.push("dhcpcd-base");
    }
    if !have("ip") {
        missing.push("iproute2");
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !have("apt-get") {
        return Err(format!("the demo needs these packages: {}", missing.join(" ")));
    }
    println!("installing the demo's DHCPv6 clients: apt-get install {}", missing.join(" "));
    run(&format!(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {} >/dev/null 2>&1 || \
         (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {} >/dev/null)",
        missing.join(" "),
        missing.join(" ")
    ))?;
    Ok(())
}

pub fn demo() -> Result<(), String> {
    // SAFETY: trivial libc call.
    if unsafe { libc::geteuid() } != 0 {
        return Err("tandem demo needs root: it creates network namespaces and runs DHCP clients in them (try: sudo tandem demo)".into());
    }
    ensure_clients()?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let tag = format!("{:x}", std::process::id() & 0xffff);
    let dir = std::env::temp_dir().join(format!("tandem-demo-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let srv = format!("tdemo-{tag}-srv");
    let clients: Vec<String> = (1..=3).map(|i| format!("tdemo-{tag}-c{i}")).collect();
    let mut d = Demo { tag: tag.clone(), dir: dir.clone(), namespaces: Vec::new(), server: None };

    println!("== tandem demo: one DHCPv6 server, three real clients, private network namespaces\n");
    run(&format!("ip netns add {srv}"))?;
    d.namespaces.push(srv.clone());
    run(&format!("ip -n {srv} link set lo up && ip -n {srv} link add br0 type bridge && ip -n {srv} link set br0 up"))?;
    run(&format!("ip netns exec {srv} sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.br0.accept_dad=0"))?;
    run(&format!("ip -n {srv} addr add 2001:db8:1::1/64 dev br0 nodad"))?;
    for (i, c) in clients.iter().enumerate() {
        run(&format!("ip netns add {c}"))?;
        d.namespaces.push(c.clone());
        let (a, b) = (format!("td{tag}b{i}"), format!("td{tag}c{i}"));
        run(&format!("ip link add {a} type veth peer name {b}"))?;
        run(&format!("ip link set {a} netns {srv} && ip link set {b} netns {c}"))?;
        run(&format!("ip -n {srv} link set {a} master br0 && ip -n {srv} link set {a} up"))?;
        run(&format!("ip -n {c} link set {b} name eth0 && ip -n {c} link set lo up"))?;
        run(&format!("ip -n {c} link set eth0 address 02:00:5e:00:00:{:02x}", i + 1))?;
        run(&format!("ip netns exec {c} sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.eth0.accept_dad=0"))?;
        run(&format!("ip -n {c} link set eth0 up"))?;
    }
    println!("network: server namespace {srv} (bridge br0, 2001:db8:1::1/64), clients {}", clients.join(", "));

    let data = dir.join("data");
    let config = format!(
        r#"data-dir = "{}"
interfaces = ["br0"]
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "br0"
pools = ["2001:db8:1::1000-2001:db8:1::ffff"]
pd-pools = [{{ prefix = "2001:db8:100::/40", delegated-length = 56 }}]
preferred-lifetime = 3000
valid-lifetime = 4000
rapid-commit = true
dns-servers = ["2001:db8:1::53"]
domain-search = ["example.net"]
"#,
        data.display()
    );
    let cfg = dir.join("tandem.toml");
    std::fs::write(&cfg, &config).map_err(|e| e.to_string())?;
    println!("config ({}):\n{}", cfg.display(), indent(&config));
    let ready = dir.join("ready");
    let log = std::fs::File::create(dir.join("server.log")).map_err(|e| e.to_string())?;
    let shards = crate::runtime::server::default_shards().min(2);
    let server = Command::new("ip")
        .args(["netns", "exec", &srv])
        .arg(&exe)
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--shards", &shards.to_string(), "--ready-file"])
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting tandem serve: {e}"))?;
    d.server = Some(server);
    wait_for(&ready, Duration::from_secs(30), &dir)?;
    println!("tandem serve is ready ({shards} shard{})\n", if shards == 1 { "" } else { "s" });

    let hook = dir.join("hook.sh");
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n").map_err(|e| e.to_string())?;
    run(&format!("chmod +x {}", hook.display()))?;
    // Client 1: dhclient -6 asks for an address.
    let c = &clients[0];
    println!("-- {c}: dhclient -6 (IA_NA)");
    let out = run(&format!(
        "ip netns exec {c} timeout 30 dhclient -6 -1 -v -sf {h} -lf {d}/c1.leases -pf {d}/c1.pid eth0 2>&1",
        h = hook.display(),
        d = dir.display()
    ))?;
    show_client(&out);
    // Client 2: dhclient -6 -P asks for a delegated prefix.
    let c = &clients[1];
    println!("-- {c}: dhclient -6 -P (IA_PD)");
    let out = run(&format!(
        "ip netns exec {c} timeout 30 dhclient -6 -P -1 -v -sf {h} -lf {d}/c2.leases -pf {d}/c2.pid eth0 2>&1",
        h = hook.display(),
        d = dir.display()
    ))?;
    show_client(&out);
    // Client 3: dhcpcd asks for both and configures the address.
    let c = &clients[2];
    println!("-- {c}: dhcpcd -6 (IA_NA + IA_PD)");
    let conf = dir.join("dhcpcd.conf");
    std::fs::write(&conf, "noipv6rs\nia_na 1\nia_pd 2 -\n").map_err(|e| e.to_string())?;
    let out = run(&format!(
        "ip netns exec {c} timeout 40 dhcpcd -6 -1 -d -B -t 30 -f {} -c {} eth0 2>&1",
        conf.display(),
        hook.display()
    ))?;
    for l in out.lines().filter(|l| l.contains("adding address") || l.contains("delegated prefix")) {
        println!("   {}", l.trim());
    }
    let shown = run(&format!("ip -n {c} -6 addr show dev eth0 scope global"))?;
    for l in shown.lines().filter(|l| l.contains("inet6")) {
        println!("   on the interface: {}", l.trim());
    }

    println!("\n== the server's lease table (tandem leases --data-dir {})", data.display());
    let leases = crate::runtime::store::StoreSet::read_all(&data).map_err(|e| e.to_string())?;
    println!("{:<4} {:<28} {:<30} {:<8} valid for", "type", "lease", "client DUID", "state");
    let now = crate::runtime::sys::unix_now();
    for l in &leases {
        println!(
            "{:<4} {:<28} {:<30} {:<8} {} s",
            l.key.ia_type().label(),
            l.key.to_string(),
            l.binding.duid.to_hex(),
            l.status.name(),
            l.valid_end.saturating_sub(now)
        );
    }
    // Shards publish their counters once a second.
    std::thread::sleep(Duration::from_millis(1200));
    let status = run(&format!(
        "ip netns exec {srv} {} ctl --socket {} status",
        exe.display(),
        data.join("control.sock").display()
    ))?;
    println!("\n== tandem ctl status\n{}", status.trim());

    for i in [1, 2] {
        let _ = sh(&format!("ip netns exec {} dhclient -6 -x -pf {}/c{i}.pid", clients[i - 1], dir.display()));
    }
    if let Some(mut s) = d.server.take() {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(s.id() as i32, libc::SIGTERM) };
        let st = s.wait().map_err(|e| e.to_string())?;
        println!("\ntandem serve stopped on SIGTERM ({st})");
    }
    if leases.len() < 4 {
        return Err(format!("expected at least 4 leases (2 addresses, 2 prefixes), found {}", leases.len()));
    }
    Ok(())
}

fn show_client(out: &str) {
    for l in out.lines() {
        let t = l.trim();
        if t.contains("IAADDR") || t.contains("IAPREFIX") || t.starts_with("PRC: Bound") {
            println!("   {t}");
        }
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("   {l}\n")).collect()
}

fn wait_for(ready: &Path, max: Duration, dir: &Path) -> Result<(), String> {
    let t = Instant::now();
    while !ready.exists() {
        if t.elapsed() > max {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            return Err(format!("tandem serve did not become ready:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
