//! DNS updates against a real BIND9 (Debian's named, started by the test in
//! the server's network namespace on [::1]:53 with dynamic forward and
//! reverse zones and a TSIG key), checked with dig. Needs root; CI runs it
//! as root after tests/run.sh installs bind9 and bind9-dnsutils.

mod common;

use std::net::{Ipv6Addr, UdpSocket};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::pair::*;
use common::*;
use tandem::wire::*;

const SECRET: &str = "c2VjcmV0LWZvci10YW5kZW0tdGVzdHMtb25seS0wMTIzNDU2Nzg5YWJjZGVm";
const WRONG: &str = "d3Jvbmcta2V5LWZvci10YW5kZW0tdGVzdHMtb25seS0wMTIzNDU2Nzg5YWI=";
const REV: &str = "1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";

/// named in namespace `ns`, serving example.test and the reverse zone.
struct Bind {
    child: Child,
    ns: String,
}

impl Bind {
    fn start(ns: &str, dir: &std::path::Path, listen: &str) -> Bind {
        let d = dir.join("bind");
        std::fs::create_dir_all(&d).unwrap();
        let soa = "$TTL 300\n@ IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 300\n@ IN NS ns.example.test.\n";
        std::fs::write(d.join("fwd.zone"), format!("{soa}ns IN AAAA ::1\n")).unwrap();
        std::fs::write(d.join("rev.zone"), soa).unwrap();
        let conf = format!(
            r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    listen-on {{ none; }};
    listen-on-v6 port 53 {{ {listen} }};
    recursion no;
    dnssec-validation no;
    allow-query {{ any; }};
}};
key "tandem-key." {{ algorithm hmac-sha256; secret "{SECRET}"; }};
zone "example.test" {{ type primary; file "{d}/fwd.zone"; allow-update {{ key "tandem-key."; }}; }};
zone "{REV}" {{ type primary; file "{d}/rev.zone"; allow-update {{ key "tandem-key."; }}; }};
"#,
            d = d.display()
        );
        std::fs::write(d.join("named.conf"), conf).unwrap();
        let log = std::fs::File::create(d.join("named.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "named", "-g", "-c"])
            .arg(d.join("named.conf"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("named");
        let b = Bind { child, ns: ns.to_string() };
        let t = Instant::now();
        while b.dig("SOA", "example.test").is_empty() {
            assert!(t.elapsed() < Duration::from_secs(20), "named did not start:\n{}", std::fs::read_to_string(d.join("named.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(100));
        }
        b
    }

    /// `dig +short` answers (empty when none).
    fn dig(&self, t: &str, name: &str) -> String {
        let o = Command::new("ip").args(["netns", "exec", &self.ns, "dig", "@::1", "+short", "+time=1", "+tries=1", t, name]).output().unwrap();
        let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if s.contains("connection timed out") || s.contains("no servers") { String::new() } else { s }
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reverse_name(a: Ipv6Addr) -> String {
    let hex: String = a.octets().iter().map(|b| format!("{b:02x}")).collect();
    let mut n: Vec<String> = hex.chars().rev().map(|c| c.to_string()).collect();
    n.push("ip6.arpa".into());
    n.join(".")
}

fn ddns_section(secret: &str) -> String {
    format!(
        r#"
[ddns]
server = "[::1]:53"
forward-zone = "example.test."
reverse-zone = "{REV}."
tsig-name = "tandem-key."
tsig-algorithm = "hmac-sha256"
tsig-secret = "{secret}"
fqdn-policy = "client"
qualifying-suffix = "example.test."
"#
    )
}

/// A rapid-commit Solicit with a Client FQDN option (S = 1) and option 39 in
/// the ORO; the Reply's address and FQDN option.
fn get_named(sock: &UdpSocket, ifx: u32, n: u64, name: &str) -> (Ipv6Addr, Option<ClientFqdn>, Duid) {
    let m = Message::Client(ClientMessage {
        msg_type: MessageType::Solicit,
        transaction_id: (n as u32 + 0x1000) & 0xff_ffff,
        options: vec![
            DhcpOption::ClientId(duid(n)),
            DhcpOption::ElapsedTime(0),
            DhcpOption::Oro(vec![opt::CLIENT_FQDN]),
            DhcpOption::RapidCommit,
            DhcpOption::ClientFqdn(ClientFqdn { flags: FQDN_FLAG_S, name: DomainName::from_dotted(name).unwrap() }),
            DhcpOption::IaNa(IaNa { iaid: 1, t1: 0, t2: 0, options: Options::new() }),
        ]
        .into(),
    });
    let to = all_servers(ifx);
    sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 2048];
    for _ in 0..20 {
        sock.send_to(&m.encode().unwrap(), to).unwrap();
        let Ok((len, _)) = sock.recv_from(&mut buf) else { continue };
        let Ok(Message::Client(r)) = Message::decode(&buf[..len]) else { continue };
        if r.msg_type != MessageType::Reply || r.transaction_id != (n as u32 + 0x1000) & 0xff_ffff {
            continue;
        }
        let a = r.options.ia_nas().flat_map(|ia| ia.options.ia_addrs().map(|a| a.addr).collect::<Vec<_>>()).next().expect("an address");
        return (a, r.options.client_fqdn().cloned(), r.options.server_id().cloned().unwrap());
    }
    panic!("no Reply for client {n}");
}

fn release(sock: &UdpSocket, ifx: u32, n: u64, addr: Ipv6Addr, server: &Duid) {
    let ia = IaNa { iaid: 1, t1: 0, t2: 0, options: vec![DhcpOption::IaAddr(IaAddr { addr, preferred: 0, valid: 0, options: Options::new() })].into() };
    let m = Message::Client(ClientMessage {
        msg_type: MessageType::Release,
        transaction_id: 0x77,
        options: vec![DhcpOption::ClientId(duid(n)), DhcpOption::ServerId(server.clone()), DhcpOption::ElapsedTime(0), DhcpOption::IaNa(ia)].into(),
    });
    let mut buf = [0u8; 2048];
    for _ in 0..10 {
        sock.send_to(&m.encode().unwrap(), all_servers(ifx)).unwrap();
        if let Ok((len, _)) = sock.recv_from(&mut buf)
            && let Ok(Message::Client(r)) = Message::decode(&buf[..len])
            && r.msg_type == MessageType::Reply
            && r.transaction_id == 0x77
        {
            return;
        }
    }
    panic!("no Reply to Release");
}

fn ctl_status(lab: &Lab) -> serde_json::Value {
    let o = Command::new(BIN).args(["ctl", "--socket"]).arg(lab.path("data").join("control.sock")).arg("status").output().unwrap();
    serde_json::from_slice(&o.stdout).unwrap()
}

fn lab_config(lab: &Lab, valid: u32, secret: &str) -> String {
    lab.config(&format!("valid-lifetime = {valid}\npreferred-lifetime = {valid}")).replace("valid-lifetime = 4000\n", "").replace("preferred-lifetime = 3000\n", "")
        + &ddns_section(secret)
}

#[test]
fn grant_release_expiry_conflict_wrong_key_and_a_crash_keep_bind_in_step() {
    require_root!();
    assert!(tool("named") && tool("dig"), "named/dig missing: tests/run.sh installs bind9 and bind9-dnsutils");
    let mut lab = Lab::new("ddns");
    let bind = Bind::start(&lab.srv, &lab.dir, "::1;");
    lab.start_server(&lab_config(&lab, 3600, SECRET), &["--shards", "2"]);
    let ifx = lab.cli_ifindex();
    let cli = lab.cli.clone();
    let sock = || client_socket(546);

    // Grant → AAAA, PTR and DHCID present; the reply carries the qualified name.
    let (a1, f1, server) = in_netns(&cli, {
        let s = sock;
        move || get_named(&s(), ifx, 1, "host1")
    });
    let f1 = f1.expect("FQDN option in the Reply");
    assert_eq!(f1.name.to_string(), "host1.example.test.");
    assert_eq!(f1.flags & FQDN_FLAG_S, FQDN_FLAG_S);
    assert!(eventually(15, || bind.dig("AAAA", "host1.example.test") == a1.to_string()), "AAAA\n{}", lab.server_log());
    assert_eq!(bind.dig("PTR", &reverse_name(a1)), "host1.example.test.");
    assert!(!bind.dig("TYPE49", "host1.example.test").is_empty(), "DHCID present");
    let dump = lab.leases_json();
    let l = dump.as_array().unwrap().iter().find(|l| l["lease"] == a1.to_string()).unwrap();
    assert_eq!(l["dns-name"], "host1.example.test.", "{l}");

    // A second client asking for the same name does not take it over: it
    // gets a disambiguated name of its own (RFC 4703 §5.3.3).
    let (a2, _, _) = in_netns(&cli, {
        let s = sock;
        move || get_named(&s(), ifx, 2, "host1")
    });
    assert!(eventually(15, || lab.leases_json().as_array().unwrap().iter().any(|l| l["lease"] == a2.to_string()
        && l["dns-name"].as_str().is_some_and(|n| n.starts_with("host1-")))), "{:#}", lab.leases_json());
    assert_eq!(bind.dig("AAAA", "host1.example.test"), a1.to_string(), "the first client keeps its name");
    let n2 = lab.leases_json().as_array().unwrap().iter().find(|l| l["lease"] == a2.to_string()).unwrap()["dns-name"].as_str().unwrap().to_string();
    assert!(eventually(10, || bind.dig("AAAA", &n2) == a2.to_string()));

    // Release → all removed.
    in_netns(&cli, {
        let (s, server) = (sock, server.clone());
        move || release(&s(), ifx, 1, a1, &server)
    });
    assert!(eventually(15, || bind.dig("AAAA", "host1.example.test").is_empty()), "{}", lab.server_log());
    assert!(bind.dig("PTR", &reverse_name(a1)).is_empty());
    assert!(bind.dig("TYPE49", "host1.example.test").is_empty());

    // Wrong TSIG key: BIND refuses, tandem logs it and retries later, DHCP is unaffected.
    assert_eq!(lab.stop_server(false), Some(0));
    lab.start_server(&lab_config(&lab, 3600, WRONG), &["--shards", "2"]);
    let (a3, f3, server) = in_netns(&cli, {
        let s = sock;
        move || get_named(&s(), ifx, 3, "host3")
    });
    assert_eq!(f3.unwrap().name.to_string(), "host3.example.test.", "DHCP answers while DNS fails");
    assert!(eventually(15, || ctl_status(&lab)["ddns"]["failures"].as_u64().unwrap_or(0) > 0), "{}", lab.server_log());
    assert!(lab.server_log().contains("TSIG"), "the failure names the key problem:\n{}", lab.server_log());
    assert!(bind.dig("AAAA", "host3.example.test").is_empty());

    // Crash between marking a lease for removal and the DNS delete: client
    // 2's record is in the DNS; it releases while the key is wrong (the
    // delete fails), the server is killed, then restarted with the right
    // key: the pending delete happens (and the pending add of client 3 too).
    in_netns(&cli, {
        let (s, server) = (sock, server.clone());
        move || release(&s(), ifx, 2, a2, &server)
    });
    assert!(eventually(10, || lab.leases_json().as_array().unwrap().iter().any(|l| l["lease"] == a2.to_string() && l["state"] == "RELEASED")));
    lab.stop_server(true);
    assert_eq!(bind.dig("AAAA", &n2), a2.to_string(), "still there after the crash");
    lab.start_server(&lab_config(&lab, 3600, SECRET), &["--shards", "2"]);
    assert!(eventually(20, || bind.dig("AAAA", &n2).is_empty()), "the delete owed before the crash happens:\n{}", lab.server_log());
    assert!(eventually(20, || bind.dig("AAAA", "host3.example.test") == a3.to_string()), "the add owed happens:\n{}", lab.server_log());

    // Expiry → removed (a 10 s lease that is never renewed).
    assert_eq!(lab.stop_server(false), Some(0));
    lab.start_server(&lab_config(&lab, 10, SECRET), &["--shards", "2"]);
    let (a4, _, _) = in_netns(&cli, {
        let s = sock;
        move || get_named(&s(), ifx, 4, "host4")
    });
    assert!(eventually(15, || bind.dig("AAAA", "host4.example.test") == a4.to_string()), "{}", lab.server_log());
    assert!(eventually(60, || bind.dig("AAAA", "host4.example.test").is_empty()), "removed at expiry:\n{}", lab.server_log());
    assert!(bind.dig("PTR", &reverse_name(a4)).is_empty());
}

/// How many times `who` logged removing the records of `name`.
fn removed(pair: &Pair, who: usize, name: &str) -> usize {
    pair.log(who).lines().filter(|l| l.contains("DNS records removed") && l.contains(name)).count()
}

#[test]
fn in_a_pair_only_the_granting_server_adds_a_release_anywhere_removes_once_and_the_survivor_removes_after_expiry() {
    require_root!();
    assert!(tool("named") && tool("dig"), "named/dig missing: tests/run.sh installs bind9 and bind9-dnsutils");
    let mut pair = Pair::new("ddns");
    let certs = pair.gen_tls("tls");
    // named in the secondary's namespace; the primary reaches it over the failover link.
    let bind = Bind::start(&pair.ns[1], &pair.dir, "::1; 2001:db8:ffff::2;");
    let ddns = |server: &str| ddns_section(SECRET).replace("[::1]:53", server);
    // Short lifetimes: the survivor may expire a lease only after the
    // lifetime the primary could have given (its partner lifetime) plus the MCLT.
    let short = |c: String| c.replace("preferred-lifetime = 300", "preferred-lifetime = 20").replace("valid-lifetime = 600", "valid-lifetime = 20");
    let pcfg = short(pair.config(PRIMARY, "", &pair.tls(PRIMARY, &certs))).replace("[failover]", &format!("{}\n[failover]", ddns("[2001:db8:ffff::2]:53")));
    let scfg = short(pair.config(SECONDARY, "", &pair.tls(SECONDARY, &certs))).replace("[failover]", &format!("{}\n[failover]", ddns("[::1]:53")));
    pair.start(SECONDARY, &scfg, &[]);
    pair.start(PRIMARY, &pcfg, &[]);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);

    // The primary grants (short MCLT-capped lifetime: 10 s) and adds.
    let ifx = pair.client_ifindex();
    let (a, f, p_duid) = in_netns(&pair.ns[2], move || get_named(&client_socket(546), ifx, 7, "pairhost"));
    assert_eq!(f.unwrap().name.to_string(), "pairhost.example.test.");
    assert!(eventually(20, || bind.dig("AAAA", "pairhost.example.test") == a.to_string()), "{}", pair.logs());
    // The secondary has the lease and the name, and never added anything.
    // … and, by a second BNDUPD once the update completed (§9.2), that the records are in.
    assert!(
        eventually(20, || pair.leases(SECONDARY).iter().any(|l| l["lease"] == a.to_string()
            && l["dns-name"] == "pairhost.example.test."
            && l["dns-flags"].as_u64().is_some_and(|f| f & 3 == 3))),
        "{:#?}",
        pair.leases(SECONDARY)
    );
    assert_eq!(pair.ctl(SECONDARY, "status")["ddns"]["done"], 0, "the secondary sent no add");
    assert!(!pair.log(SECONDARY).contains("DNS records added"));

    // The servers lose each other; the client rebinds and takes the
    // secondary's answer, so its next messages name the secondary.
    pair.fo_link(false);
    pair.wait_state(PRIMARY, "COMMUNICATIONS-INTERRUPTED", 30);
    pair.wait_state(SECONDARY, "COMMUNICATIONS-INTERRUPTED", 30);
    let answers = in_netns(&pair.ns[2], move || exchange(&client_socket(546), ifx, &rebind(7, 0x4242, a), Duration::from_secs(3)));
    let s_duid = answers.iter().find(|x| x.server != p_duid).map(|x| x.server.clone()).unwrap_or_else(|| panic!("the secondary renews: {answers:?}"));
    let rebound = Instant::now();
    // Back to NORMAL; the client releases at the secondary, which does not
    // own the address (odd: the primary's half). The records go once the
    // primary acknowledged the RELEASED (§9.4), and only once.
    pair.fo_link(true);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    // (Clocks agree to ±5 s only (§7.1): a Release within 5 s of the
    // primary's Rebind answer ties with it, and a tie keeps the lease ACTIVE.)
    std::thread::sleep(Duration::from_secs(7).saturating_sub(rebound.elapsed()));
    in_netns(&pair.ns[2], move || release(&client_socket(546), ifx, 7, a, &s_duid));
    assert!(eventually(20, || bind.dig("AAAA", "pairhost.example.test").is_empty()), "a release at the secondary removes the records:\n{}", pair.logs());
    assert!(bind.dig("PTR", &reverse_name(a)).is_empty());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        (removed(&pair, PRIMARY, "pairhost."), removed(&pair, SECONDARY, "pairhost.")),
        (0, 1),
        "the server that ended the lease removes its records, once:\n{}",
        pair.logs()
    );
    assert!(pair.leases(PRIMARY).iter().any(|l| l["lease"] == a.to_string() && l["state"] != "ACTIVE"));

    // Another client; then kill -9 the primary; the operator declares it
    // down; the lease the primary granted expires at the secondary, and the
    // survivor removes the records.
    let (b, _, _) = in_netns(&pair.ns[2], move || get_named(&client_socket(546), ifx, 8, "pairhost2"));
    assert!(eventually(20, || bind.dig("AAAA", "pairhost2.example.test") == b.to_string()), "{}", pair.logs());
    assert!(eventually(20, || pair.leases(SECONDARY).iter().any(|l| l["lease"] == b.to_string()
        && l["dns-flags"].as_u64().is_some_and(|f| f & 3 == 3))));
    pair.stop(PRIMARY, true);
    pair.wait_state(SECONDARY, "COMMUNICATIONS-INTERRUPTED", 30);
    assert_eq!(pair.ctl(SECONDARY, "partner-down")["ok"], true);
    pair.wait_state(SECONDARY, "PARTNER-DOWN", 10);
    assert!(
        eventually(90, || bind.dig("AAAA", "pairhost2.example.test").is_empty()),
        "the survivor removes the records of an expired lease its partner granted:\n{}",
        pair.logs()
    );
    assert!(bind.dig("PTR", &reverse_name(b)).is_empty());
    assert_eq!(removed(&pair, SECONDARY, "pairhost2."), 1);
}

#[test]
fn a_reload_fixes_a_wrong_key_and_removes_and_adds_ddns_without_a_restart() {
    require_root!();
    assert!(tool("named") && tool("dig"), "named/dig missing: tests/run.sh installs bind9 and bind9-dnsutils");
    let mut lab = Lab::new("ddns-reload");
    let bind = Bind::start(&lab.srv, &lab.dir, "::1;");
    lab.start_server(&lab_config(&lab, 3600, WRONG), &["--shards", "2"]);
    let (ifx, cli, cfg) = (lab.cli_ifindex(), lab.cli.clone(), lab.path("tandem.toml"));
    let sock = || client_socket(546);
    let reload = |lab: &Lab, text: &str| -> serde_json::Value {
        std::fs::write(&cfg, text).unwrap();
        let o = Command::new(BIN).args(["ctl", "--socket"]).arg(lab.path("data").join("control.sock")).arg("reload").output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // The wrong key: the add waits for a retry.
    let (a6, _, _) = in_netns(&cli, move || get_named(&sock(), ifx, 6, "host6"));
    assert!(eventually(15, || ctl_status(&lab)["ddns"]["failures"].as_u64().unwrap_or(0) > 0), "{}", lab.server_log());
    // The right key, by a reload: what waited goes out at once.
    let r = reload(&lab, &lab_config(&lab, 3600, SECRET));
    assert_eq!(r["changed"], serde_json::json!(["ddns"]), "{r}");
    assert!(eventually(10, || bind.dig("AAAA", "host6.example.test") == a6.to_string()), "{}", lab.server_log());
    // Without [ddns]: new clients get no records.
    let without = lab_config(&lab, 3600, SECRET).split("\n[ddns]").next().unwrap().to_string();
    reload(&lab, &without);
    let (a7, f7, _) = in_netns(&cli, move || get_named(&sock(), ifx, 7, "host7"));
    assert!(f7.is_none(), "no FQDN handling without [ddns]");
    // With it again: they do.
    reload(&lab, &lab_config(&lab, 3600, SECRET));
    let (a8, _, _) = in_netns(&cli, move || get_named(&sock(), ifx, 8, "host8"));
    assert!(eventually(10, || bind.dig("AAAA", "host8.example.test") == a8.to_string()), "{}", lab.server_log());
    assert!(bind.dig("AAAA", "host7.example.test").is_empty(), "{a7}");
    assert_eq!(lab.stop_server(false), Some(0));
}
