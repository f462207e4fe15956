//! End to end: the real binary in a network namespace, real clients in
//! another (dhclient -6, dhcpcd, perfdhcp), a relay built by the test,
//! several shards, and hostile input. Needs root; CI runs it as root.

mod common;

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::{Duration, Instant};

use common::*;
use tandem::wire::*;

fn leases_of_type<'a>(dump: &'a serde_json::Value, ty: &str) -> Vec<&'a serde_json::Value> {
    dump.as_array().unwrap().iter().filter(|l| l["type"] == ty).collect()
}

fn ctl_status(lab: &Lab) -> serde_json::Value {
    let sock = lab.path("data").join("control.sock");
    let o = lab.exec(&lab.srv, &format!("{BIN} ctl --socket {} status", sock.display()));
    assert!(o.status.success(), "ctl status: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn dhclient_gets_renews_and_releases_an_address_and_a_prefix() {
    require_root!();
    assert!(tool("dhclient"), "dhclient missing: tests/run.sh installs isc-dhcp-client");
    let mut lab = Lab::new("dhclient");
    // Short T1 so dhclient renews within the test.
    lab.start_server(&lab.config("renew-time = 2\nrebind-time = 3"), &["--shards", "2"]);
    let hook = lab.path("hook.sh");
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
    must(&format!("chmod +x {}", hook.display()));
    let (lf, pf) = (lab.path("dh.leases"), lab.path("dh.pid"));
    let o = lab.exec(
        &lab.cli,
        &format!("timeout 30 dhclient -6 -1 -v -sf {} -lf {} -pf {} {}", hook.display(), lf.display(), pf.display(), lab.cli_if),
    );
    assert!(o.status.success(), "dhclient: {}\nserver: {}", String::from_utf8_lossy(&o.stderr), lab.server_log());
    let dump = lab.leases_json();
    let na = leases_of_type(&dump, "na");
    assert_eq!(na.len(), 1, "{dump:#}");
    assert_eq!(na[0]["state"], "ACTIVE");
    let addr: Ipv6Addr = na[0]["lease"].as_str().unwrap().parse().unwrap();
    assert!(addr >= "2001:db8:1::1000".parse::<Ipv6Addr>().unwrap());
    let first_cltt = na[0]["cltt"].as_u64().unwrap();
    // dhclient (now a daemon) renews after T1 = 2 s: the stored CLTT moves.
    assert!(
        eventually(15, || lab.leases_json()[0]["cltt"].as_u64().unwrap() > first_cltt),
        "no renewal seen; server log:\n{}",
        lab.server_log()
    );
    assert_eq!(lab.leases_json()[0]["lease"], na[0]["lease"], "renewal keeps the address");
    // Release.
    let o = lab.exec(&lab.cli, &format!("timeout 20 dhclient -6 -r -sf {} -lf {} -pf {} {}", hook.display(), lf.display(), pf.display(), lab.cli_if));
    assert!(o.status.success(), "dhclient -r: {}", String::from_utf8_lossy(&o.stderr));
    assert!(eventually(10, || lab.leases_json()[0]["state"] == "RELEASED"), "{:#}", lab.leases_json());

    // Prefix delegation: dhclient -6 -P.
    let (lf, pf) = (lab.path("pd.leases"), lab.path("pd.pid"));
    let o = lab.exec(&lab.cli, &format!("timeout 30 dhclient -6 -P -1 -v -sf {} -lf {} -pf {} {}", hook.display(), lf.display(), pf.display(), lab.cli_if));
    assert!(o.status.success(), "dhclient -P: {}", String::from_utf8_lossy(&o.stderr));
    let dump = lab.leases_json();
    let pd = leases_of_type(&dump, "pd");
    assert_eq!(pd.len(), 1, "{dump:#}");
    let p = pd[0]["lease"].as_str().unwrap();
    assert!(p.starts_with("2001:db8:1") && p.ends_with("/56"), "{p}");
    let _ = lab.exec(&lab.cli, &format!("dhclient -6 -x -pf {}", pf.display()));
    assert_eq!(lab.stop_server(false), Some(0), "SIGTERM exits 0");
}

#[test]
fn dhcpcd_gets_an_address_and_a_prefix() {
    require_root!();
    assert!(tool("dhcpcd"), "dhcpcd missing: tests/run.sh installs dhcpcd-base");
    let mut lab = Lab::new("dhcpcd");
    lab.start_server(&lab.config(""), &["--shards", "1"]);
    let conf = lab.path("dhcpcd.conf");
    std::fs::write(&conf, "noipv6rs\nia_na 1\nia_pd 2 -\n").unwrap();
    let hook = lab.path("hook");
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
    must(&format!("chmod +x {}", hook.display()));
    let o = lab.exec(&lab.cli, &format!("timeout 40 dhcpcd -6 -1 -d -B -t 30 -f {} -c {} {}", conf.display(), hook.display(), lab.cli_if));
    let log = String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "dhcpcd failed:\n{log}\nserver:\n{}", lab.server_log());
    let dump = lab.leases_json();
    let na = leases_of_type(&dump, "na");
    assert_eq!(na.len(), 1, "{dump:#}");
    let addr = na[0]["lease"].as_str().unwrap();
    assert!(log.contains(&format!("adding address {addr}")), "dhcpcd did not configure {addr}:\n{log}");
    assert_eq!(leases_of_type(&dump, "pd").len(), 1);
    // The address is really on the client's interface.
    let shown = must(&format!("ip -n {} -6 addr show dev {}", lab.cli, lab.cli_if));
    assert!(shown.contains(addr), "{shown}");
}

#[test]
fn perfdhcp_completes_ten_thousand_exchanges_without_duplicates() {
    require_root!();
    assert!(tool("perfdhcp"), "perfdhcp missing: tests/run.sh installs kea-admin");
    let mut lab = Lab::new("perfdhcp");
    lab.start_server(&lab.config(""), &["--shards", "2"]);
    let o = lab.exec(&lab.cli, &format!("perfdhcp -6 -l {} -r 1500 -n 10100 -R 1000000 -p 60 2>&1", lab.cli_if));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let stat = |section: &str, key: &str| -> u64 {
        let s = out.split(section).nth(1).unwrap_or_else(|| panic!("no {section} in:\n{out}"));
        let line = s.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in:\n{out}"));
        line.split(':').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
    };
    let replies = stat("REQUEST-REPLY", "received packets");
    assert!(replies >= 10_000, "only {replies} Request/Reply exchanges:\n{out}");
    for section in ["SOLICIT-ADVERTISE", "REQUEST-REPLY"] {
        assert_eq!(stat(section, "orphans"), 0, "duplicate or unexpected replies:\n{out}");
        assert_eq!(stat(section, "rejected leases"), 0, "{out}");
        assert_eq!(stat(section, "non unique addresses"), 0, "{out}");
    }
    let st = ctl_status(&lab);
    assert_eq!(st["dropped"], 0, "server dropped packets: {st}");
    let na = leases_of_type(&lab.leases_json(), "na").len();
    assert!(na >= 10_000, "{na} leases stored");
}

#[test]
fn relayed_client_gets_an_address_from_its_link_and_a_relay_reply() {
    require_root!();
    let mut lab = Lab::new("relay");
    lab.start_server(&lab.config(""), &["--shards", "2"]);
    must(&format!("ip -n {} addr add 2001:db8:1::99/64 dev {} nodad", lab.cli, lab.cli_if));
    std::thread::sleep(Duration::from_millis(300));
    // One exchange from a relay on `port`, with OPTION_RELAY_PORT when asked.
    let exchange = |port: u16, relay_port: bool| {
        in_netns(&lab.cli, move || {
            let s = client_socket(port);
            let inner = solicit(7, 0x42, false, false);
            let mut options: Vec<DhcpOption> = vec![DhcpOption::InterfaceId(b"ge-0/0/7".to_vec())];
            if relay_port {
                options.push(DhcpOption::RelayPort(0));
            }
            options.push(DhcpOption::RelayMsg(Box::new(inner)));
            let relay = Message::Relay(RelayMessage {
                msg_type: MessageType::RelayForw,
                hop_count: 0,
                link_address: "2001:db8:2::1".parse().unwrap(),
                peer_address: "fe80::7".parse().unwrap(),
                options: options.into(),
            });
            let to = SocketAddrV6::new("2001:db8:1::1".parse().unwrap(), 547, 0, 0);
            let mut buf = [0u8; 1500];
            for _ in 0..10 {
                s.send_to(&relay.encode().unwrap(), to).unwrap();
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    return Some((Message::decode(&buf[..n]).unwrap(), from));
                }
            }
            None
        })
    };
    // RFC 8357: a relay on its own port, with the option, is answered there
    // (the reply arrives at the socket bound to 5547) with the option copied.
    let (m, _) = exchange(5547, true).expect("no Relay-reply on the relay's own port");
    let Message::Relay(r) = &m else { panic!("expected a Relay-reply, got {m:?}") };
    assert_eq!(r.options.relay_port(), Some(0));
    let reply = exchange(547, false);
    let (m, from) = reply.expect("no Relay-reply");
    assert_eq!(from.port(), 547);
    let Message::Relay(r) = &m else { panic!("expected a Relay-reply, got {m:?}") };
    assert_eq!(r.msg_type, MessageType::RelayRepl);
    assert_eq!(r.peer_address, "fe80::7".parse::<Ipv6Addr>().unwrap());
    assert_eq!(r.options.interface_id(), Some(&b"ge-0/0/7"[..]));
    let Some(Message::Client(c)) = r.options.relay_msg() else { panic!("no inner message") };
    assert_eq!((c.msg_type, c.transaction_id), (MessageType::Advertise, 0x42));
    let a = c.options.ia_nas().next().unwrap().options.ia_addrs().next().unwrap().addr;
    assert!(("2001:db8:2::1000".parse::<Ipv6Addr>().unwrap()..="2001:db8:2::1fff".parse().unwrap()).contains(&a), "{a}");
}

/// 400 rapid-commit clients (with an IA_PD too when `pd`) on the
/// multicast address: each is answered once with its own address. The
/// server's status once the counters are published.
fn four_hundred_clients_each_answered_once(lab: &Lab, pd: bool) -> serde_json::Value {
    let ifindex = lab.cli_ifindex();
    let (granted, dups) = in_netns(&lab.cli, move || {
        let s = client_socket(546);
        rapid_commit_load_with(&s, all_servers(ifindex), 0, 400, 16, Instant::now() + Duration::from_secs(60), pd)
    });
    assert_eq!(dups, 0, "a request was answered twice");
    assert_eq!(granted.len(), 400);
    let mut addrs: Vec<_> = granted.iter().map(|g| g.addr).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 400, "an address was given twice");
    std::thread::sleep(Duration::from_millis(1500));
    ctl_status(lab)
}

#[test]
fn every_shard_serves_and_no_client_gets_two_replies() {
    require_root!();
    let mut lab = Lab::new("shards");
    lab.start_server(&lab.config(""), &["--shards", "2"]);
    let st = four_hundred_clients_each_answered_once(&lab, false);
    let per: Vec<u64> = st["per-shard"].as_array().unwrap().iter().map(|s| s["replies"].as_u64().unwrap()).collect();
    assert_eq!(per.len(), 2);
    assert!(per.iter().all(|r| *r > 50), "every shard serves: {st}");
    // Linux 6.0+ takes the io_uring path; an older kernel says why not.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    if (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 0) {
        assert_eq!(st["datapath"]["mode"], "io_uring", "{st}");
        assert_eq!(st["datapath"]["reason"], serde_json::Value::Null, "{st}");
    } else {
        assert_eq!(st["datapath"]["mode"], "fallback", "{st}");
        assert!(st["datapath"]["reason"].as_str().is_some_and(|r| r.contains("6.0")), "{st}");
    }
    assert_eq!(st["dropped"], 0, "{st}");
}

/// The path for kernels without multishot recvmsg, forced: clients on the
/// multicast address (shard 0 forwards to the owner), NA and PD, every
/// shard serving, the mode and the latency histogram visible.
#[test]
fn the_fallback_datapath_serves_na_and_pd_and_says_why_it_runs() {
    require_root!();
    let mut lab = Lab::new("fallback");
    lab.start_server(&lab.config(""), &["--shards", "2", "--datapath", "fallback", "--metrics-listen", "[::1]:9464"]);
    let st = four_hundred_clients_each_answered_once(&lab, true);
    assert_eq!(st["datapath"]["mode"], "fallback", "{st}");
    assert_eq!(st["datapath"]["reason"], "--datapath fallback", "{st}");
    let per: Vec<u64> = st["per-shard"].as_array().unwrap().iter().map(|s| s["replies"].as_u64().unwrap()).collect();
    assert!(per.iter().all(|r| *r > 50), "every shard serves: {st}");
    let pd = leases_of_type(&lab.leases_json(), "pd").len();
    assert_eq!(pd, 400, "every client also got a prefix");
    let m = in_netns(&lab.srv, || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect("[::1]:9464").unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut m = String::new();
        c.read_to_string(&mut m).unwrap();
        m
    });
    assert!(m.contains("tandem_datapath_info{mode=\"fallback\"} 1"), "{m}");
    let count = m
        .lines()
        .find(|l| l.starts_with("tandem_reply_latency_seconds_count{type=\"solicit\"}"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(count, Some(400), "{m}");
}

#[test]
fn hostile_input_is_counted_and_dropped_while_clients_are_served() {
    require_root!();
    let mut lab = Lab::new("hostile");
    lab.start_server(&lab.config(""), &["--shards", "2"]);
    let ifindex = lab.cli_ifindex();
    let cli = lab.cli.clone();
    let attacker = std::thread::spawn(move || {
        in_netns(&cli, move || {
            let s = std::net::UdpSocket::bind("[::]:0").unwrap();
            let to = all_servers(ifindex);
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut rnd = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let valid = solicit(1, 1, false, true).encode().unwrap();
            let mut sent = 0;
            for i in 0..6000u32 {
                let pkt: Vec<u8> = match i % 4 {
                    0 => (0..(rnd() % 300) as usize).map(|_| rnd() as u8).collect(),
                    1 => valid[..(rnd() as usize % valid.len())].to_vec(),
                    2 => {
                        let mut v = valid.clone();
                        let k = rnd() as usize % v.len();
                        v[k] = rnd() as u8;
                        v
                    }
                    _ => {
                        // Oversized: a 60 KB datagram claiming huge options.
                        let mut v = vec![1u8, 0, 0, 1];
                        v.extend((0..60_000).map(|_| rnd() as u8));
                        v
                    }
                };
                if s.send_to(&pkt, to).is_ok() {
                    sent += 1;
                }
            }
            sent
        })
    });
    let (granted, dups) = in_netns(&lab.cli, move || {
        let s = client_socket(546);
        rapid_commit_load(&s, all_servers(ifindex), 10_000, 300, 8, Instant::now() + Duration::from_secs(90))
    });
    let sent = attacker.join().unwrap();
    assert!(sent > 5000);
    assert_eq!(granted.len(), 300, "clients kept being served");
    assert_eq!(dups, 0);
    std::thread::sleep(Duration::from_millis(1500));
    let st = ctl_status(&lab);
    let dropped = st["dropped"].as_u64().unwrap();
    assert!(dropped > 3000, "malformed packets must be counted as drops: {st}");
    // Still alive and answering.
    let after = in_netns(&lab.cli, move || {
        let s = client_socket(546);
        rapid_commit_load(&s, all_servers(ifindex), 20_000, 5, 1, Instant::now() + Duration::from_secs(20)).0.len()
    });
    assert_eq!(after, 5);
}
