//! Start-up refusals with clear messages, and store-full behaviour: never a
//! reply without a durable lease, the server stays up.

mod common;

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn serve_err(lab: &Lab, config: &str) -> String {
    let cfg = lab.path("bad.toml");
    std::fs::write(&cfg, config).unwrap();
    let o = lab.exec(&lab.srv, &format!("timeout 20 {BIN} serve --config {}", cfg.display()));
    assert_eq!(o.status.code(), Some(1), "should refuse to start");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn refuses_a_missing_interface_a_busy_port_and_a_locked_store() {
    require_root!();
    let mut lab = Lab::new("startup");
    let good = lab.config("");
    let e = serve_err(&lab, &good.replace(&format!("interfaces = [\"{}\"]", lab.srv_if), "interfaces = [\"nosuch0\"]").replace(&format!("interface = \"{}\"", lab.srv_if), "interface = \"nosuch0\""));
    assert!(e.contains("interface \"nosuch0\"") && e.contains("does not exist"), "{e}");
    // Another program on UDP 547.
    let mut holder = Command::new("ip")
        .args(["netns", "exec", &lab.srv, "python3", "-c", "import socket,time; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(('::',547)); time.sleep(30)"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let e = serve_err(&lab, &good);
    assert!(e.contains("port 547 is in use"), "{e}");
    holder.kill().unwrap();
    holder.wait().unwrap();
    // A second server on the same store.
    lab.start_server(&good, &["--shards", "1"]);
    let e = serve_err(&lab, &good);
    assert!(e.contains("in use by another running tandem"), "{e}");
}

#[test]
fn a_full_store_withholds_replies_and_the_server_stays_up() {
    require_root!();
    let mut lab = Lab::new("full");
    let config = lab.config("");
    // A 1 MiB map holds a few thousand leases.
    lab.start_server(&config, &["--shards", "1", "--store-map-size", "1"]);
    let ifindex = lab.cli_ifindex();
    let (granted, _) = in_netns(&lab.cli, move || {
        let s = client_socket(546);
        rapid_commit_load(&s, all_servers(ifindex), 0, 12_000, 32, Instant::now() + Duration::from_secs(25))
    });
    std::thread::sleep(Duration::from_millis(1500));
    let sock = lab.path("data").join("control.sock");
    let o = lab.exec(&lab.srv, &format!("{BIN} ctl --socket {} status", sock.display()));
    assert!(o.status.success(), "server must stay up");
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(st["dropped-by-reason"]["store_full"].as_u64().unwrap_or(0) > 0, "{st}");
    assert!(lab.server_log().contains("lease commit failed"), "a clear log line");
    assert!(granted.len() < 12_000, "the map must have filled");
    assert_eq!(lab.stop_server(false), Some(0));
    // Every reply a client got is durable.
    let dump = lab.leases_json();
    let stored: HashMap<Ipv6Addr, &serde_json::Value> =
        dump.as_array().unwrap().iter().map(|l| (l["lease"].as_str().unwrap().parse().unwrap(), l)).collect();
    for g in &granted {
        let l = stored.get(&g.addr).unwrap_or_else(|| panic!("reply without a durable lease: {g:?}"));
        assert_eq!(l["duid"], duid(g.client).to_hex());
    }
    // With room again (a bigger map), it serves new clients.
    lab.start_server(&config, &["--shards", "1", "--store-map-size", "64"]);
    let more = in_netns(&lab.cli, move || {
        let s = client_socket(546);
        rapid_commit_load(&s, all_servers(ifindex), 50_000, 20, 4, Instant::now() + Duration::from_secs(20)).0.len()
    });
    assert_eq!(more, 20);
}
