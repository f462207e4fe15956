//! Long sweeps of the failover simulator: `tandem-sim --seeds N --start S`
//! prints violations (0 to pass) and seeds per second; `--seed S --trace`
//! (or SIM_SEED=S) replays one seed and prints its event trace. `--hub`
//! runs the hub simulator (a server in two relationships, `sim::hub`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use tandem::sim::hub::{run_hub_seed, run_hub_seed_verbose};
use tandem::sim::{Report, run_seed, run_seed_v1, run_seed_verbose};

#[derive(Parser)]
#[command(name = "tandem-sim", about = "Deterministic simulation of a tandem failover pair (or, with --hub, a hub in two relationships)")]
struct Args {
    /// Number of seeds to run.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run only this seed (also: SIM_SEED=S).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the event trace of failing (or --seed) runs.
    #[arg(long)]
    trace: bool,
    /// Worker threads (seeds are independent).
    #[arg(long, default_value_t = 1)]
    threads: u64,
    /// Use the version-1 scenario generator (one shard, instant commits,
    /// small pools: how the named regression seeds were found).
    #[arg(long)]
    v1: bool,
    /// Simulate a hub in two failover relationships with two spokes
    /// (three servers) instead of a pair.
    #[arg(long, conflicts_with = "v1")]
    hub: bool,
}

/// One seed with the chosen simulator.
fn run(s: u64, v1: bool, hub: bool, verbose: bool) -> Report {
    match (hub, v1, verbose) {
        (true, _, false) => run_hub_seed(s),
        (true, _, true) => run_hub_seed_verbose(s),
        (false, true, v) => run_seed_v1(s, v),
        (false, false, false) => run_seed(s),
        (false, false, true) => run_seed_verbose(s),
    }
}

fn main() -> ExitCode {
    let a = Args::parse();
    let single = a.seed.or_else(|| std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()));
    if let Some(s) = single {
        let r = run(s, a.v1, a.hub, a.trace);
        for l in &r.trace {
            println!("{l}");
        }
        println!("seed {s}: {} events, {} replies, final {:?}", r.events, r.replies, r.final_states);
        for v in &r.violations {
            println!("VIOLATION: {v}");
        }
        return if r.violations.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) };
    }
    let t = Instant::now();
    let threads = a.threads.max(1);
    let handles: Vec<_> = (0..threads)
        .map(|w| {
            let (start, seeds, trace, v1, hub) = (a.start, a.seeds, a.trace, a.v1, a.hub);
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                let mut events = 0;
                let mut grants: std::collections::BTreeMap<(tandem::wire::ServerState, tandem::lease::IaType), u64> = Default::default();
                let mut relayed = 0;
                let mut s = start + w;
                while s < start + seeds {
                    let r = run(s, v1, hub, false);
                    events += r.events;
                    relayed += r.relayed_grants;
                    for (k, n) in &r.grants {
                        *grants.entry(*k).or_default() += n;
                    }
                    if !r.violations.is_empty() {
                        println!("seed {s}: {}", r.violations[0]);
                        if trace {
                            for l in r.trace.iter().rev().take(60).rev() {
                                println!("   {l}");
                            }
                        }
                        bad.push(s);
                    }
                    s += threads;
                }
                (bad, events, grants, relayed)
            })
        })
        .collect();
    let mut bad = Vec::new();
    let mut events = 0;
    let mut grants: std::collections::BTreeMap<(tandem::wire::ServerState, tandem::lease::IaType), u64> = Default::default();
    let mut relayed = 0;
    for h in handles {
        let Ok((b, e, g, r)) = h.join() else {
            eprintln!("a worker thread failed");
            return ExitCode::from(2);
        };
        bad.extend(b);
        events += e;
        relayed += r;
        for (k, n) in g {
            *grants.entry(k).or_default() += n;
        }
    }
    let cover: Vec<String> = grants.iter().map(|((st, t), n)| format!("{} {}: {n}", st.name(), t.label())).collect();
    println!("leases granted or extended, by state: {} (relayed, keeping a relay chain: {relayed})", cover.join(", "));
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{} seeds from {}: {} with violations; {:.1} s, {:.0} seeds/s, {:.1} M events/s",
        a.seeds,
        a.start,
        bad.len(),
        secs,
        a.seeds as f64 / secs,
        events as f64 / secs / 1e6
    );
    if bad.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
