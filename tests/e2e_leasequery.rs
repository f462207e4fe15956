//! End to end: Leasequery (RFC 5007, UDP) and Bulk Leasequery (RFC 5460,
//! TCP) against the real binary in network namespaces; needs root.

mod common;

use std::net::SocketAddrV6;
use std::time::{Duration, Instant};

use common::*;

fn lq_config(lab: &Lab) -> String {
    format!("{}\n[leasequery]\nallowed = [\"2001:db8:1::99\"]\n", lab.config(""))
}

/// `tandem query ARGS` run in the client namespace: exit code, stdout, stderr.
fn query(lab: &Lab, args: &str) -> (i32, String, String) {
    let o = lab.exec(&lab.cli, &format!("{BIN} query --server 2001:db8:1::1 {args}"));
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn smoke() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut lab = Lab::new("lq-smoke");
    must(&format!("ip -n {} addr add 2001:db8:1::99/64 dev {} nodad", lab.cli, lab.cli_if));
    let cfg = lq_config(&lab);
    lab.start_server(&cfg, &["--shards", "2"]);
    let ifindex = lab.cli_ifindex();
    let (granted, _) = in_netns(&lab.cli, move || {
        let s = client_socket(546);
        rapid_commit_load_with(&s, all_servers(ifindex), 1, 5, 5, Instant::now() + Duration::from_secs(20), true)
    });
    assert_eq!(granted.len(), 5);
    let (rc, out, err) = query(&lab, &format!("--address {}", granted[0].addr));
    eprintln!("rc={rc}\n{out}\n{err}");
    let (rc, out, err) = query(&lab, &format!("--client-id {}", duid(2).to_hex()));
    eprintln!("rc={rc}\n{out}\n{err}");
    let (rc, out, err) = query(&lab, "--link-address 2001:db8:1::1 --bulk");
    eprintln!("rc={rc}\n{out}\n{err}");
    let (rc, out, err) = query(&lab, "--link-address 2001:db8:1::1");
    eprintln!("rc={rc}\n{out}\n{err}");
    let _ = SocketAddrV6::new("::1".parse().unwrap(), 0, 0, 0);
    eprintln!("{}", lab.server_log());
    panic!("look");
}
