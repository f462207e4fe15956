//! A secondary that lost its store resyncs 50,000 leases from a real
//! primary (RFC 8156 §8.5.2, UPDREQALL): the answer flows longer than the
//! watchdog (`updreq-timeout = 1`), which must not cut it; a kill -9 in the
//! middle leaves a store holding only what the primary sent (each record as
//! the primary has it), and the restarted secondary asks for everything
//! again. Needs root; CI runs it as root.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::pair::*;
use common::*;

const LEASES: u64 = 50_000;

/// The fields both servers must agree on, by lease.
fn records(pair: &Pair, who: usize) -> HashMap<String, (String, String, String, String)> {
    pair.leases(who)
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].to_string();
            (s("lease"), (s("duid"), s("iaid"), s("state"), s("valid-lifetime-end")))
        })
        .collect()
}

#[test]
fn a_resync_longer_than_the_watchdog_flows_and_a_kill_in_the_middle_loses_nothing() {
    require_root!();
    let mut pair = Pair::new("resync");
    let certs = pair.gen_tls("tls");
    // 131,072 addresses: the primary's half holds the 50,000. An MCLT of
    // 300 s: first grants (capped at the MCLT) outlive the test, so the
    // primary's records hold still while the secondary copies them.
    let big = |c: String| c.replace("2001:db8:1::1000-2001:db8:1::1fff", "2001:db8:1::1:0-2001:db8:1::2:ffff").replace("mclt = 10", "mclt = 300");
    let pcfg = big(pair.config(PRIMARY, "", &pair.tls(PRIMARY, &certs)));
    // The secondary takes 8 BNDUPDs at a time: the answer flows for a few
    // seconds however fast the machine, against a 1 s watchdog.
    let scfg = big(pair.config(SECONDARY, "updreq-timeout = 1\nmax-unacked-bndupd = 8", &pair.tls(SECONDARY, &certs)));
    pair.start_with(SECONDARY, &scfg, 2, "info", &[]);
    pair.start_with(PRIMARY, &pcfg, 2, "info", &[]);
    pair.wait_state(PRIMARY, "NORMAL", 60);
    pair.wait_state(SECONDARY, "NORMAL", 60);

    // Fill the primary with our load generator (rapid commit, distinct clients).
    let o = Command::new("ip")
        .args(["netns", "exec", &pair.ns[2], env!("CARGO_BIN_EXE_tandem-load"), "--interface", &pair.ifs[2]])
        .args(["--mode", "rapid", "--window", "256", "--duration", "120", "--count", &LEASES.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "tandem-load: {}", String::from_utf8_lossy(&o.stderr));
    // (`ctl status` counts are snapshots, refreshed as shards commit.)
    assert!(eventually(10, || pair.records(PRIMARY) >= LEASES), "the primary holds {}:\n{}", pair.records(PRIMARY), String::from_utf8_lossy(&o.stdout));
    // Both counts are snapshots: compare the current ones (the primary's may
    // still have been catching up with its last commits when first read).
    assert!(
        eventually(60, || pair.records(SECONDARY) == pair.records(PRIMARY)),
        "the secondary caught up: {} of {}",
        pair.records(SECONDARY),
        pair.records(PRIMARY)
    );
    let total = pair.records(PRIMARY);

    // The secondary loses its store; kill -9 it in the middle of its resync.
    assert_eq!(pair.stop(SECONDARY, false), Some(0));
    std::fs::remove_dir_all(pair.data(SECONDARY)).unwrap();
    pair.start_with(SECONDARY, &scfg, 2, "info", &[]);
    let t = Instant::now();
    let mut at_kill = 0;
    while t.elapsed() < Duration::from_secs(60) {
        at_kill = pair.records(SECONDARY);
        if at_kill > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    pair.stop(SECONDARY, true);
    assert!(at_kill > 0 && at_kill < total, "killed with {at_kill} of {total} records: not in the middle");
    let primary = records(&pair, PRIMARY);
    let partial = records(&pair, SECONDARY);
    assert!(!partial.is_empty() && (partial.len() as u64) < total, "{} of {total} after the kill", partial.len());
    for (k, v) in &partial {
        assert_eq!(primary.get(k), Some(v), "{k}: the killed secondary holds what the primary sent");
    }

    // Restarted, it knows its resync never finished: UPDREQALL again, and it
    // flows for longer than updreq-timeout without being cut.
    let t = Instant::now();
    pair.start_with(SECONDARY, &scfg, 2, "info", &[]);
    assert!(eventually(120, || pair.records(SECONDARY) == total), "resync: {} of {total}\n{}", pair.records(SECONDARY), pair.logs());
    let took = t.elapsed();
    // (It now waits in RECOVER-WAIT for the MCLT, §8.6.2.)
    let log = pair.log(SECONDARY);
    assert!(!pair.logs().contains("updreq-timeout"), "the watchdog cut a flowing resync:\n{}", pair.logs());
    // Each of the three starts (new, lost store, unfinished resync) asked
    // for every lease; the last answer flowed longer than the watchdog.
    assert_eq!(log.matches("asked the partner for every lease (UPDREQALL)").count(), 3, "{log}");
    let flowed: f64 = log
        .lines()
        .rev()
        .find_map(|l| l.split("answer to our UPDREQALL ended seconds=").nth(1))
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{log}"));
    eprintln!("resync of {total} records after a restart: {took:?} from the start, {flowed} s of UPDREQALL answer (watchdog 1 s)");
    assert!(flowed > 1.0, "the answer ({flowed} s) must outlast the 1 s watchdog to test it");
    assert_eq!(records(&pair, SECONDARY), records(&pair, PRIMARY));
}
