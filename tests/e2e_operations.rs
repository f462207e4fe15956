//! Operating a running server (README "Operating tandem"): reload by `ctl
//! reload` and SIGHUP under load, the lease API, both standalone and in a
//! failover pair. The real binary in network namespaces; needs root.

mod common;

use std::net::Ipv6Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::pair::{Pair, ask, exchange};
use common::*;
use tandem::wire::*;

const PRIMARY: usize = 0;
const SECONDARY: usize = 1;

/// `tandem ctl --socket SOCK ARGS…` in the server's namespace: (exit code, stdout JSON).
fn ctl(sock: &std::path::Path, args: &str) -> (i32, serde_json::Value, String) {
    let o = Command::new("sh").arg("-c").arg(format!("{BIN} ctl --socket {} {args}", sock.display())).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let v = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
    (o.status.code().unwrap_or(-1), v, String::from_utf8_lossy(&o.stderr).into_owned())
}

fn in_range(a: Ipv6Addr, first: &str, last: &str) -> bool {
    a >= first.parse::<Ipv6Addr>().unwrap() && a <= last.parse::<Ipv6Addr>().unwrap()
}

/// The digest `ctl status` reports (SHA-256 of the file), computed with sha256sum.
fn sha256_hex(bytes: &[u8]) -> String {
    let p = std::env::temp_dir().join(format!("tandem-digest-{}", unique_tag()));
    std::fs::write(&p, bytes).unwrap();
    let out = must(&format!("sha256sum {}", p.display()));
    let _ = std::fs::remove_file(&p);
    out.split_whitespace().next().unwrap().to_string()
}

fn standalone_config(lab: &Lab, pool: &str, extra: &str) -> String {
    format!(
        r#"data-dir = "{data}"
interfaces = ["{si}"]
[runtime]
shards = 2
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "{si}"
pools = ["{pool}"]
pd-pools = [{{ prefix = "2001:db8:100::/40", delegated-length = 56 }}]
preferred-lifetime = 3000
valid-lifetime = 4000
rapid-commit = true
{extra}"#,
        data = lab.path("data").display(),
        si = lab.srv_if,
    )
}

const P1: (&str, &str) = ("2001:db8:1::1000", "2001:db8:1::1fff");
const P2: (&str, &str) = ("2001:db8:1::5000", "2001:db8:1::5fff");

#[test]
fn a_reload_under_load_moves_a_pool_adds_a_subnet_refuses_fixed_keys_and_sighup_does_the_same() {
    require_root!();
    assert!(tool("dhclient"), "dhclient missing: tests/run.sh installs isc-dhcp-client");
    let mut lab = Lab::new("reload");
    let a = standalone_config(&lab, &format!("{}-{}", P1.0, P1.1), "");
    let pid = lab.start_server(&a, &[]);
    let sock = lab.path("data").join("control.sock");
    let cfg_path = lab.path("tandem.toml");
    let (_, st, _) = ctl(&sock, "status");
    assert_eq!(st["config"]["digest"], sha256_hex(a.as_bytes()), "{st}");

    // 600 rapid-commit clients while the pool moves and a subnet is added.
    let b = standalone_config(
        &lab,
        &format!("{}-{}", P2.0, P2.1),
        "[[subnet]]\nprefix = \"2001:db8:3::/64\"\nrelay-links = [\"2001:db8:3::1\"]\npools = [\"2001:db8:3::100-2001:db8:3::1ff\"]\n",
    );
    let ifindex = lab.cli_ifindex();
    let cli = lab.cli.clone();
    let (reloaded_tx, reloaded) = std::sync::mpsc::channel::<()>();
    let load = std::thread::spawn(move || {
        in_netns(&cli, move || {
            let s = client_socket(546);
            // Clients keep arriving until the reload is done; 200 more after it.
            let (mut first, mut dups, mut next) = (Vec::new(), 0, 0);
            while reloaded.try_recv().is_err() {
                let (g, d) = rapid_commit_load(&s, all_servers(ifindex), next, 20, 4, Instant::now() + Duration::from_secs(30));
                first.extend(g);
                dups += d;
                next += 20;
            }
            let second = rapid_commit_load(&s, all_servers(ifindex), next, 200, 4, Instant::now() + Duration::from_secs(60));
            ((first, dups, next), second)
        })
    });
    std::thread::sleep(Duration::from_millis(150));
    std::fs::write(&cfg_path, &b).unwrap();
    let (code, r, err) = ctl(&sock, "reload");
    reloaded_tx.send(()).unwrap();
    assert_eq!(code, 0, "{r} {err}\n{}", lab.server_log());
    assert_eq!(r["result"], "applied");
    let changed: Vec<&str> = r["changed"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(changed, ["subnet[2001:db8:1::/64]", "subnet[2001:db8:3::/64] (added)"], "{r}");
    let ((g1, d1, sent), (g2, d2)) = load.join().unwrap();
    assert_eq!((d1, d2), (0, 0), "a request was answered twice");
    assert_eq!((g1.len(), g2.len()), (sent as usize, 200), "every client answered across the reload:\n{}", lab.server_log());
    eprintln!(
        "during the reload: {} grants from the old pool, {} from the new",
        g1.iter().filter(|g| in_range(g.addr, P1.0, P1.1)).count(),
        g1.iter().filter(|g| in_range(g.addr, P2.0, P2.1)).count()
    );
    let mut all: Vec<Ipv6Addr> = g1.iter().chain(&g2).map(|g| g.addr).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), g1.len() + 200, "an address was given twice");
    assert!(g2.iter().all(|g| in_range(g.addr, P2.0, P2.1)), "after the reload every grant is from the new pool");
    assert!(all.iter().all(|a| in_range(*a, P1.0, P1.1) || in_range(*a, P2.0, P2.1)));

    // A real client gets an address from the new pool.
    let hook = lab.path("hook.sh");
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
    must(&format!("chmod +x {}", hook.display()));
    let (lf, pf) = (lab.path("dh.leases"), lab.path("dh.pid"));
    let o = lab.exec(&lab.cli, &format!("timeout 30 dhclient -6 -1 -sf {} -lf {} -pf {} {}", hook.display(), lf.display(), pf.display(), lab.cli_if));
    assert!(o.status.success(), "dhclient: {}\n{}", String::from_utf8_lossy(&o.stderr), lab.server_log());
    let _ = lab.exec(&lab.cli, &format!("dhclient -6 -x -pf {}", pf.display()));
    let leases = std::fs::read_to_string(&lf).unwrap();
    let dh: Ipv6Addr = leases.split("iaaddr ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(in_range(dh, P2.0, P2.1), "dhclient got {dh}");

    // A client of the removed pool renews: its address comes back with
    // lifetimes 0 (RFC 9915 §18.3.4) and a new one from the new pool.
    let old = g1.iter().find(|g| in_range(g.addr, P1.0, P1.1)).expect("a grant from the old pool before the reload").clone();
    let server = Duid::from_hex(lab_status(&sock)["server-duid"].as_str().unwrap()).unwrap();
    let answers = in_netns(&lab.cli.clone(), move || {
        let s = client_socket(546);
        exchange(&s, ifindex, &ask(MessageType::Renew, old.client, 0x77_0001, Some(&server), Some(old.addr), None), Duration::from_secs(3))
    });
    let ans = answers.first().expect("a Reply to the Renew");
    assert!(ans.addrs.contains(&(old.addr, 0)), "{ans:?}");
    assert!(ans.addrs.iter().any(|(x, v)| *v > 0 && in_range(*x, P2.0, P2.1)), "{ans:?}");

    // A config that does not parse: refused, the old one keeps serving.
    std::fs::write(&cfg_path, format!("{b}\nthis is not toml\n")).unwrap();
    let (code, r, _) = ctl(&sock, "reload");
    assert_eq!((code, &r["result"]), (1, &serde_json::json!("refused")), "{r}");
    assert!(r["errors"][0].as_str().unwrap().starts_with(cfg_path.to_str().unwrap()), "{r}");
    assert_eq!(lab_status(&sock)["config"]["digest"], sha256_hex(b.as_bytes()));
    // A key fixed for the process: refused, named.
    let with_shards = b.replace("shards = 2", "shards = 3");
    std::fs::write(&cfg_path, &with_shards).unwrap();
    let (code, r, _) = ctl(&sock, "reload");
    assert_eq!(code, 1, "{r}");
    assert!(r["errors"][0].as_str().unwrap().contains("runtime.shards"), "{r}");

    // SIGHUP: the same reload, and the server keeps running.
    let c = format!("log-level = \"debug\"\n{}", b.replace("valid-lifetime = 4000", "valid-lifetime = 7200"));
    std::fs::write(&cfg_path, &c).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    assert!(eventually(10, || lab_status(&sock)["config"]["digest"] == sha256_hex(c.as_bytes())), "{}", lab.server_log());
    assert!(lab.server_log().contains("configuration reloaded"));
    assert!(lab.server_log().contains(r#"changed=["log-level","subnet[2001:db8:1::/64]"]"#), "{}", lab.server_log());
    assert_eq!(lab_status(&sock)["dropped"], 0);

    // A second link: a reload joins ff02::1:2 on its interface and adds
    // its subnet; dhclient on it gets an address from that subnet.
    let (s2, c2) = (format!("t{}s2", lab.tag), format!("t{}c2", lab.tag));
    must(&format!("ip link add {s2} type veth peer name {c2}"));
    must(&format!("ip link set {s2} netns {} && ip link set {c2} netns {}", lab.srv, lab.cli));
    must(&format!("ip netns exec {} sysctl -qw net.ipv6.conf.{s2}.accept_dad=0", lab.srv));
    must(&format!("ip netns exec {} sysctl -qw net.ipv6.conf.{c2}.accept_dad=0", lab.cli));
    must(&format!("ip -n {} addr add 2001:db8:4::1/64 dev {s2} nodad && ip -n {} link set {s2} up", lab.srv, lab.srv));
    must(&format!("ip -n {} link set {c2} up", lab.cli));
    assert!(eventually(10, || sh(&format!("ip -n {} -6 addr show dev {c2} scope link | grep -v tentative | grep -q 'inet6 fe80'", lab.cli)).status.success()));
    let d = c.replace(&format!("interfaces = [\"{}\"]", lab.srv_if), &format!("interfaces = [\"{}\", \"{s2}\"]", lab.srv_if))
        + &format!("[[subnet]]\nprefix = \"2001:db8:4::/64\"\ninterface = \"{s2}\"\npools = [\"2001:db8:4::1000-2001:db8:4::1fff\"]\n");
    std::fs::write(&cfg_path, &d).unwrap();
    // Under load on the first link.
    let cli = lab.cli.clone();
    let busy = std::thread::spawn(move || {
        in_netns(&cli, move || rapid_commit_load(&client_socket(546), all_servers(ifindex), 20_000, 400, 4, Instant::now() + Duration::from_secs(30)))
    });
    std::thread::sleep(Duration::from_millis(50));
    let (code, r, _) = ctl(&sock, "reload");
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["changed"], serde_json::json!(["interfaces", "subnet[2001:db8:4::/64] (added)"]), "{r}");
    let (g, dups) = busy.join().unwrap();
    assert_eq!((g.len(), dups), (400, 0), "every client of the first link answered once across the reload");
    let (lf2, pf2) = (lab.path("dh2.leases"), lab.path("dh2.pid"));
    let o = lab.exec(&lab.cli, &format!("timeout 30 dhclient -6 -1 -sf {} -lf {} -pf {} {c2}", hook.display(), lf2.display(), pf2.display()));
    assert!(o.status.success(), "dhclient on the new link: {}\n{}", String::from_utf8_lossy(&o.stderr), lab.server_log());
    let _ = lab.exec(&lab.cli, &format!("dhclient -6 -x -pf {}", pf2.display()));
    let leases2 = std::fs::read_to_string(&lf2).unwrap();
    let got2: Ipv6Addr = leases2.split("iaaddr ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(in_range(got2, "2001:db8:4::1000", "2001:db8:4::1fff"), "dhclient got {got2} on the new link");

    // The lease API.
    let x = g2[0].addr;
    let (code, got, err) = ctl(&sock, &format!("lease get --address {x}"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(got.as_array().unwrap().len(), 1, "{got}");
    assert_eq!((got[0]["lease"].as_str(), got[0]["state"].as_str()), (Some(x.to_string().as_str()), Some("ACTIVE")));
    let duid_hex = got[0]["duid"].as_str().unwrap().to_string();
    let (_, by_duid, _) = ctl(&sock, &format!("lease get --duid {duid_hex} --iaid 1"));
    assert_eq!(by_duid.as_array().unwrap().len(), 1, "{by_duid}");
    let (code, del, _) = ctl(&sock, &format!("lease del --address {x}"));
    assert_eq!((code, &del), (0, &serde_json::json!({"deleted": 1})));
    let (_, after, _) = ctl(&sock, &format!("lease get --address {x}"));
    assert_eq!(after, serde_json::json!([]));
    let (_, all_states, _) = ctl(&sock, &format!("lease get --address {x} --all"));
    assert_eq!(all_states[0]["state"], "RESET", "{all_states}");
    assert!(eventually(5, || lab.leases_json().as_array().unwrap().iter().any(|l| l["lease"] == x.to_string() && l["state"] == "RESET")));
    let (code, _, err) = ctl(&sock, "lease get --address 2001:db8:1::zz");
    assert_ne!(code, 0, "{err}");
    // Wipe the subnet: every ACTIVE lease in it is reset.
    // This subnet's addresses (the Renew above also got a prefix, outside it).
    let active = lab.leases_json().as_array().unwrap().iter().filter(|l| l["state"] == "ACTIVE" && l["type"] == "na" && l["lease"].as_str().unwrap().starts_with("2001:db8:1::")).count() as u64;
    assert!(active > 200, "{active}");
    let (code, _, err) = ctl(&sock, "lease wipe --subnet 2001:db8:1::/64");
    assert_eq!(code, 2, "--yes is required: {err}");
    let (code, wiped, _) = ctl(&sock, "lease wipe --subnet 2001:db8:1::/64 --yes");
    assert_eq!(code, 0);
    assert_eq!(wiped["deleted"].as_u64(), Some(active), "{wiped}");
    let (_, gone, _) = ctl(&sock, &format!("lease get --duid {duid_hex}"));
    assert_eq!(gone, serde_json::json!([]));
    // Add leases back for six wiped clients (on both shards: each key's
    // slice owner and its client's shard differ for about half): each
    // client's Renew then finds its lease.
    let server = Duid::from_hex(lab_status(&sock)["server-duid"].as_str().unwrap()).unwrap();
    for g in g2.iter().take(6) {
        let hex = duid(g.client).to_hex();
        let (code, added, err) = ctl(&sock, &format!("lease add --address {} --duid {hex} --iaid 1 --valid-lifetime 600", g.addr));
        assert_eq!(code, 0, "{err}");
        assert_eq!((added["state"].as_str(), added["valid-lifetime"].as_u64()), (Some("ACTIVE"), Some(600)), "{added}");
        let (c, g2_, srv) = (g.client, g.addr, server.clone());
        let answers = in_netns(&lab.cli.clone(), move || {
            let s = client_socket(546);
            exchange(&s, ifindex, &ask(MessageType::Renew, c, 0x78_0000 | c as u32, Some(&srv), Some(g2_), None), Duration::from_secs(3))
        });
        assert!(answers.first().is_some_and(|a| a.addrs.iter().any(|(x, v)| *x == g.addr && *v > 0)), "{answers:?}");
    }
    let (code, _, err) = ctl(&sock, &format!("lease add --address {} --duid {} --iaid 9", g2[0].addr, duid(999).to_hex()));
    assert_eq!(code, 1);
    assert!(err.contains("leased to client"), "{err}");
    // A malformed datagram is logged at debug level only.
    in_netns(&lab.cli.clone(), move || client_socket(546).send_to(b"\x01not dhcp", all_servers(ifindex)).unwrap());
    assert!(eventually(5, || lab.server_log().contains("DEBUG")), "log-level = debug applies at the reload");
    let (code, _, err) = ctl(&sock, &format!("lease add --address 2001:db8:7::1 --duid {} --iaid 9", duid(999).to_hex()));
    assert_eq!(code, 1);
    assert!(err.contains("none of the configured pools"), "{err}");
    assert_eq!(lab.stop_server(false), Some(0), "SIGTERM exits 0:\n{}", lab.server_log());
}

fn lab_status(sock: &std::path::Path) -> serde_json::Value {
    let (code, v, err) = ctl(sock, "status");
    assert_eq!(code, 0, "{err}");
    v
}

/// A pair with mutual TLS, both servers in NORMAL: the pair, its TLS
/// directory and the two configs.
fn pair_in_normal(name: &str) -> (Pair, std::path::PathBuf, String, String) {
    let mut pair = Pair::new(name);
    let tls = pair.gen_tls("tls");
    let (c0, c1) = (pair.config(PRIMARY, "", &pair.tls(PRIMARY, &tls)), pair.config(SECONDARY, "", &pair.tls(SECONDARY, &tls)));
    pair.start(PRIMARY, &c0, &[]);
    pair.start(SECONDARY, &c1, &[]);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    (pair, tls, c0, c1)
}

#[test]
fn in_a_pair_both_reload_without_reconnecting_and_a_deleted_lease_reaches_the_partner() {
    require_root!();
    let (mut pair, tls, c0, c1) = pair_in_normal("reload");
    let conns = |who: usize| pair.ctl(who, "status")["failover"]["connections"].as_u64().unwrap();
    let before = (conns(PRIMARY), conns(SECONDARY));

    // Grants from the primary, in NORMAL.
    let ifindex = pair.client_ifindex();
    let cns = pair.ns[2].clone();
    let answers = in_netns(&cns, move || {
        let s = client_socket(546);
        (1..=4u64).map(|c| exchange(&s, ifindex, &ask(MessageType::Solicit, c, 0x20_0000 | c as u32, None, None, None), Duration::from_secs(3))).collect::<Vec<_>>()
    });
    let held: Vec<Ipv6Addr> = answers.iter().map(|a| a.iter().find_map(|x| x.held().0).expect("an address")).collect();
    assert_eq!(held.len(), 4);

    // Add a second pool on the primary first, then on the secondary: the
    // pair keeps its connection. Between the two reloads the primary grants
    // from the new pool; the secondary answers that BNDUPD with
    // ConfigurationConflict (§7.5.4), and it goes again after its reload.
    let grown = |c: &str| c.replace(
        "pools = [\"2001:db8:1::1000-2001:db8:1::1fff\"]",
        "pools = [\"2001:db8:1::1000-2001:db8:1::1fff\", \"2001:db8:1::3000-2001:db8:1::3fff\"]",
    );
    std::fs::write(pair.path("tandem-0.toml"), grown(&c0)).unwrap();
    assert_eq!(pair.ctl(PRIMARY, "reload")["result"], "applied");
    // An odd address (the primary's half) in the slice of client 9's shard.
    let shard = tandem::pool::hash::shard_of(duid(9).as_bytes(), 2) as u128;
    let hint: Ipv6Addr = ["2001:db8:1::3001", "2001:db8:1::3003"].iter().map(|a| a.parse().unwrap()).find(|a: &Ipv6Addr| (u128::from(*a) >> 1) % 2 == shard).unwrap();
    let got = in_netns(&cns.clone(), move || {
        let s = client_socket(546);
        exchange(&s, ifindex, &ask(MessageType::Solicit, 9, 0x20_0009, None, Some(hint), None), Duration::from_secs(3))
    });
    assert!(got.iter().any(|a| a.held().0 == Some(hint)), "the primary grants the hint from its new pool: {got:?}");
    let on_secondary = || pair.leases(SECONDARY).iter().any(|l| l["lease"] == hint.to_string() && l["state"] == "ACTIVE");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!on_secondary(), "the secondary has no such pool yet");
    std::fs::write(pair.path("tandem-1.toml"), grown(&c1)).unwrap();
    assert_eq!(pair.ctl(SECONDARY, "reload")["result"], "applied");
    assert!(eventually(20, on_secondary), "the refused update goes again after the second reload:\n{}", pair.logs());
    // A fixed failover key is refused on either side.
    std::fs::write(pair.path("tandem-0.toml"), grown(&c0).replace("mclt = 10", "mclt = 20")).unwrap();
    let r = pair.ctl(PRIMARY, "reload");
    assert_eq!(r["result"], "refused");
    assert!(r["errors"][0].as_str().unwrap().contains("failover.mclt"), "{r}");
    std::fs::write(pair.path("tandem-0.toml"), grown(&c0)).unwrap();
    assert_eq!((conns(PRIMARY), conns(SECONDARY)), before, "a reload keeps the failover connection:\n{}", pair.logs());
    assert_eq!(pair.state(PRIMARY), "NORMAL");

    // Delete one lease on the primary: RESET, sent to the secondary, FREE
    // once acknowledged — and never granted again before.
    // (A fresh grant: in NORMAL a new lease gets the MCLT, 10 s here.)
    let fresh = in_netns(&cns.clone(), move || {
        let s = client_socket(546);
        exchange(&s, ifindex, &ask(MessageType::Solicit, 5, 0x20_0005, None, None, None), Duration::from_secs(3))
    });
    let x = fresh.iter().find_map(|a| a.held().0).expect("an address");
    // An end within 5 s of the grant is the same moment to the partner
    // (RFC 8156 §7.1), which keeps the lease ACTIVE then: wait past that.
    std::thread::sleep(Duration::from_secs(6));
    let sock = pair.data(PRIMARY).join("control.sock");
    let (code, del, err) = ctl(&sock, &format!("lease del --address {x}"));
    assert_eq!((code, &del), (0, &serde_json::json!({"deleted": 1})), "{err}");
    let state_of = |who: usize| pair.leases(who).iter().find(|l| l["lease"] == x.to_string()).map(|l| l["state"].as_str().unwrap().to_string());
    let free = |s: Option<String>| matches!(s.as_deref(), Some("FREE" | "FREE-BACKUP"));
    assert!(eventually(10, || free(state_of(PRIMARY)) && free(state_of(SECONDARY))), "primary {:?}, secondary {:?}:\n{}", state_of(PRIMARY), state_of(SECONDARY), pair.logs());
    let (_, none, _) = ctl(&sock, &format!("lease get --address {x}"));
    assert_eq!(none, serde_json::json!([]));
    // Added on the primary in NORMAL: the secondary's store has it too.
    // The secondary allocates nothing in NORMAL (RFC 8156 §8.8.1): refused.
    let d = duid(77).to_hex();
    let (code, added, err) = ctl(&sock, &format!("lease add --address {x} --duid {d} --iaid 1"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(added["duid"], d);
    assert!(eventually(10, || pair.leases(SECONDARY).iter().any(|l| l["lease"] == x.to_string() && l["duid"] == d && l["state"] == "ACTIVE")), "{}", pair.logs());
    let (code, _, err) = ctl(&pair.data(SECONDARY).join("control.sock"), &format!("lease add --address {} --duid {d} --iaid 2", held[1]));
    assert_eq!(code, 1);
    assert!(err.contains("may not be allocated") || err.contains("leased to client"), "{err}");

    // New TLS material (another CA) under the same file names: a reload
    // re-reads it for the next connection; the current one stays up.
    let fresh = pair.gen_tls("tls-new");
    must(&format!("cp {}/* {}/", fresh.display(), tls.display()));
    for who in [PRIMARY, SECONDARY] {
        let r = pair.ctl(who, "reload");
        assert_eq!(r["result"], "applied", "{r}");
        assert!(r["changed"].as_array().unwrap().iter().any(|c| c == "failover.tls (files re-read)"), "{r}");
    }
    assert_eq!((conns(PRIMARY), conns(SECONDARY)), before, "the current connection stays");
    // The next connection is made with the new CA on both sides (a side
    // still on the old one could not complete the handshake).
    pair.fo_link(false);
    pair.wait_state(PRIMARY, "COMMUNICATIONS-INTERRUPTED", 30);
    pair.fo_link(true);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    assert!(conns(PRIMARY) > before.0, "a new connection, with the new certificates");
    assert_eq!(pair.stop(SECONDARY, false), Some(0));
    assert_eq!(pair.stop(PRIMARY, false), Some(0));
}

#[test]
fn started_as_root_with_user_it_drops_to_that_user_keeping_only_net_bind_service() {
    require_root!();
    let mut lab = Lab::new("user");
    let user = format!("tnd{}", lab.tag);
    must(&format!("useradd --system --no-create-home --shell /usr/sbin/nologin {user}"));
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = sh(&format!("userdel {}", self.0));
        }
    }
    let _gone = Gone(user.clone());
    let cfg = format!("user = \"{user}\"\n{}", standalone_config(&lab, &format!("{}-{}", P1.0, P1.1), ""));
    let pid = lab.start_server(&cfg, &[]);
    let sock = lab.path("data").join("control.sock");
    let status = |key: &str| -> String {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines().find(|l| l.starts_with(key)).unwrap().split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    };
    let uid = must(&format!("id -u {user}")).trim().to_string();
    assert!(eventually(5, || status("Uid:").split(' ').all(|u| u == uid)), "Uid: {}\n{}", status("Uid:"), lab.server_log());
    // The main thread keeps CAP_NET_BIND_SERVICE (bit 10) and nothing else.
    assert_eq!(u64::from_str_radix(&status("CapEff:"), 16).unwrap(), 1 << 10, "{}", status("CapEff:"));
    // It still writes its store: a client gets a lease, and it is durable.
    let ifindex = lab.cli_ifindex();
    let (granted, dups) = in_netns(&lab.cli.clone(), move || {
        let s = client_socket(546);
        rapid_commit_load(&s, all_servers(ifindex), 0, 50, 4, Instant::now() + Duration::from_secs(30))
    });
    assert_eq!((granted.len(), dups), (50, 0), "{}", lab.server_log());
    assert_eq!(lab.leases_json().as_array().unwrap().len(), 50);
    // The control socket is the service's: 0660, owned by the user.
    let meta = std::fs::metadata(&sock).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!((meta.permissions().mode() & 0o777, meta.uid().to_string()), (0o660, uid.clone()));
    let (code, r, _) = ctl(&sock, "reload");
    assert_eq!((code, &r["result"]), (0, &serde_json::json!("applied")), "{r}");
    assert_eq!(lab.stop_server(false), Some(0), "{}", lab.server_log());
}

#[test]
fn a_restored_backup_started_with_resync_all_takes_every_lease_from_its_partner() {
    // README "Back up and restore a data-dir": a restored store is older
    // than what the partner granted since; --resync-all makes the server
    // fetch everything (UPDREQALL) before it serves.
    require_root!();
    let (mut pair, _, _, c1) = pair_in_normal("restore");
    let ifindex = pair.client_ifindex();
    let cns = pair.ns[2].clone();
    let grant = |first: u64| {
        let cns = cns.clone();
        in_netns(&cns, move || {
            let s = client_socket(546);
            (first..first + 3)
                .map(|c| exchange(&s, ifindex, &ask(MessageType::Solicit, c, 0x30_0000 | c as u32, None, None, None), Duration::from_secs(3)))
                .filter(|a| a.iter().any(|x| x.held().0.is_some()))
                .count()
        })
    };
    assert_eq!(grant(1), 3);
    // The backup: the secondary stopped, its data-dir copied, started again.
    assert_eq!(pair.stop(SECONDARY, false), Some(0));
    let backup = pair.path("backup");
    must(&format!("cp -a {} {}", pair.data(SECONDARY).display(), backup.display()));
    pair.start(SECONDARY, &c1, &[]);
    pair.wait_state(SECONDARY, "NORMAL", 60);
    // Leases granted after the backup.
    assert_eq!(grant(11), 3);
    // What the primary granted the later clients (an address and a prefix each).
    let later: Vec<String> = (11..14u64).map(|c| duid(c).to_hex()).collect();
    let of_later = |pair: &Pair, who: usize| -> Vec<(String, String)> {
        let mut v: Vec<_> = pair.lease_set(who).into_iter().filter(|(_, d, _)| later.contains(d)).map(|(l, d, _)| (l, d)).collect();
        v.sort();
        v
    };
    let want = of_later(&pair, PRIMARY);
    assert_eq!(want.len(), 6, "{want:?}");
    assert!(eventually(10, || of_later(&pair, SECONDARY) == want), "the secondary has them before the restore");
    // Restore the backup and start with --resync-all.
    assert_eq!(pair.stop(SECONDARY, false), Some(0));
    must(&format!("rm -rf {d} && cp -a {b} {d}", d = pair.data(SECONDARY).display(), b = backup.display()));
    assert_eq!(of_later(&pair, SECONDARY), Vec::new(), "the backup predates them");
    pair.start_args(SECONDARY, &c1, 2, "debug", &[], &["--resync-all"]);
    pair.wait_state(SECONDARY, "NORMAL", 90);
    pair.wait_state(PRIMARY, "NORMAL", 30);
    assert!(pair.log(SECONDARY).contains("RECOVER"), "it recovered from its partner:\n{}", pair.log(SECONDARY));
    assert_eq!(of_later(&pair, SECONDARY), want, "every lease granted since the backup is back");
    assert_eq!(pair.stop(SECONDARY, false), Some(0));
    assert_eq!(pair.stop(PRIMARY, false), Some(0));
}
