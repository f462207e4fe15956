//! Crash safety with the real binary: clients load the server, the server
//! is killed with SIGKILL at random moments (12 times), restarted each
//! time, and at the end every lease whose Reply a client received must be
//! in the store, bound to that client, with the same or a later end of
//! valid lifetime. Zero losses is the only pass. Also: the server DUID
//! survives restarts.

mod common;

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use common::*;

fn server_duid(lab: &Lab) -> String {
    let sock = lab.path("data").join("control.sock");
    let o = lab.exec(&lab.srv, &format!("{BIN} ctl --socket {} status", sock.display()));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("ctl status JSON");
    v["server-duid"].as_str().unwrap().to_string()
}

#[test]
fn no_acknowledged_lease_is_lost_across_kill_9() {
    require_root!();
    let mut lab = Lab::new("crash");
    let config = lab.config("");
    lab.start_server(&config, &["--shards", "2"]);
    let duid0 = server_duid(&lab);
    let ifindex = lab.cli_ifindex();
    let mut seed = (unix_now() ^ 0x5deece66d) | 1;
    eprintln!("crash test seed {seed}");
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut granted: Vec<Granted> = Vec::new();
    let rounds = 12;
    for round in 0..rounds {
        let kill_after = Duration::from_millis(150 + rnd() % 900);
        let first = 1_000_000 * (round + 1);
        let cli = lab.cli.clone();
        let load = std::thread::spawn(move || {
            in_netns(&cli, move || {
                let s = client_socket(546);
                rapid_commit_load(&s, all_servers(ifindex), first, 1_000_000, 32, Instant::now() + kill_after + Duration::from_millis(400))
            })
        });
        std::thread::sleep(kill_after);
        lab.stop_server(true);
        let (g, dups) = load.join().unwrap();
        assert_eq!(dups, 0);
        eprintln!("round {round}: killed after {kill_after:?}, {} replies received", g.len());
        granted.extend(g);
        lab.start_server(&config, &["--shards", "2"]);
        assert_eq!(server_duid(&lab), duid0, "the server DUID must survive a restart");
    }
    assert!(granted.len() > 500, "too little load to mean anything: {}", granted.len());
    assert_eq!(lab.stop_server(false), Some(0));

    let dump = lab.leases_json();
    let stored: HashMap<Ipv6Addr, &serde_json::Value> =
        dump.as_array().unwrap().iter().filter(|l| l["type"] == "na").map(|l| (l["lease"].as_str().unwrap().parse().unwrap(), l)).collect();
    let mut lost = Vec::new();
    for g in &granted {
        match stored.get(&g.addr) {
            Some(l)
                if l["duid"] == duid(g.client).to_hex()
                    && l["valid-lifetime-end"].as_u64().unwrap() >= g.sent_at + g.valid as u64 => {}
            other => lost.push(format!("{g:?} → {other:?}")),
        }
    }
    assert!(lost.is_empty(), "{} of {} acknowledged leases lost:\n{}", lost.len(), granted.len(), lost.join("\n"));
    eprintln!("{} acknowledged leases over {rounds} kill -9 cycles, 0 lost", granted.len());
}
