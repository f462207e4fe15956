//! The failover pair in the deterministic simulator (src/sim): a thousand
//! seeds per test run, every invariant checked after every step. A seed
//! that once found a bug is a named test forever. `SIM_SEED=n cargo test
//! --test sim` replays one seed and prints its trace; `tandem-sim` runs long
//! sweeps in release. The hub simulator (`sim::hub`: a server in two
//! failover relationships with two spokes) runs its own seeds (`HUB_SEED=n`
//! replays one; `tandem-sim --hub` sweeps).

use tandem::sim::hub::{HubScenario, HubSim, Sabotage, run_hub_seed, run_hub_seed_verbose};
use tandem::sim::{Report, Scenario, Sim, run_seed, run_seed_v1, run_seed_verbose};

fn assert_clean(r: &Report) {
    if !r.violations.is_empty() {
        let tail: Vec<&String> = r.trace.iter().rev().take(80).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "seed {} violated an invariant (replay: SIM_SEED={} cargo test --test sim, or tandem-sim --seed {} --trace):\n{}\n--- last events ---\n{}",
            r.seed,
            r.seed,
            r.seed,
            r.violations.join("\n"),
            tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        );
    }
}

#[test]
fn a_thousand_seeds_hold_every_invariant() {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        let r = run_seed_verbose(seed);
        for l in &r.trace {
            println!("{l}");
        }
        assert_clean(&r);
        return;
    }
    let handles: Vec<_> = (0..2u64)
        .map(|w| {
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                let mut replies = 0;
                let mut grants = std::collections::BTreeMap::new();
                let mut reserved = std::collections::BTreeMap::new();
                for seed in (w..1000).step_by(2) {
                    let r = run_seed(seed);
                    replies += r.replies;
                    for (k, n) in &r.grants {
                        *grants.entry(*k).or_insert(0u64) += n;
                    }
                    for (st, n) in &r.reserved_grants {
                        *reserved.entry(*st).or_insert(0u64) += n;
                    }
                    if !r.violations.is_empty() {
                        bad.push(r);
                    }
                }
                (bad, replies, grants, reserved)
            })
        })
        .collect();
    let mut replies = 0;
    let mut grants = std::collections::BTreeMap::new();
    let mut reserved = std::collections::BTreeMap::new();
    for h in handles {
        let (bad, n, g, rg) = h.join().unwrap();
        for (k, v) in rg {
            *reserved.entry(k).or_insert(0u64) += v;
        }
        replies += n;
        for (k, v) in g {
            *grants.entry(k).or_insert(0u64) += v;
        }
        if let Some(r) = bad.first() {
            assert_clean(r);
        }
    }
    assert!(replies > 100_000, "the clients were barely served: {replies} replies over 1000 seeds");
    // Addresses and prefixes were given in every state that serves clients.
    use tandem::lease::IaType;
    use tandem::wire::ServerState as S;
    for st in [S::Normal, S::CommunicationsInterrupted, S::PartnerDown, S::ResolutionInterrupted, S::ConflictDone, S::RecoverDone] {
        for t in [IaType::Na, IaType::Pd] {
            assert!(grants.get(&(st, t)).is_some_and(|n| *n > 0), "no {} lease given in {}: {grants:?}", t.label(), st.name());
        }
    }
    // Reserved addresses of the partner's half were granted outside the split.
    for st in [S::CommunicationsInterrupted, S::PartnerDown] {
        assert!(reserved.get(&st).is_some_and(|n| *n > 0), "no reserved address of the partner's half granted in {}: {reserved:?}", st.name());
    }
}

#[test]
fn the_invariants_have_teeth() {
    // The same runs with the engine ignoring the failover policy (no MCLT,
    // no address halves) must be caught.
    let mut caught = 0;
    for seed in 0..20 {
        let r = Sim::new(Scenario { ignore_failover_policy: true, ..Scenario::new(seed) }).run();
        if !r.violations.is_empty() {
            caught += 1;
        }
    }
    assert!(caught >= 15, "only {caught} of 20 sabotaged runs were caught");
}

// Seeds that found bugs while the endpoint was built (see the git log),
// replayed with the scenario generator they were found with (version 1).
macro_rules! regression {
    ($name:ident, $seed:expr) => {
        #[test]
        fn $name() {
            assert_clean(&run_seed_v1($seed, false));
        }
    };
}

regression!(seed_116_a_partners_expired_does_not_override_an_active_renewal, 116);
regression!(seed_255_lease_ends_follow_the_clients_latest_grant, 255);
regression!(seed_102_a_new_connection_replaces_the_old_one_without_closing_itself, 102);
regression!(seed_29_a_freed_lease_is_timed_by_when_it_was_freed, 29);
regression!(seed_189_the_primary_decides_who_owns_a_free_prefix, 189);
regression!(seed_3875_newer_local_data_stays_flagged_for_the_partner, 3875);
regression!(seed_4381_a_lost_store_asks_for_everything_after_another_crash, 4381);
regression!(seed_5225_a_lost_store_asks_for_everything_in_potential_conflict, 5225);
regression!(seed_8520_leases_the_partner_may_extend_live_until_acked_lifetime_plus_mclt, 8520);
regression!(seed_13093_a_storeless_server_stays_unresponsive_until_recovered, 13093);
regression!(seed_7024_recover_done_meets_conflict_done_in_normal, 7024);
regression!(seed_10034_an_update_without_clt_does_not_override_a_newer_end, 10034);
regression!(seed_26214_a_new_binding_does_not_inherit_the_previous_acked_lifetime, 26214);
regression!(seed_51961_a_crash_kills_a_connection_still_opening, 51961);
regression!(seed_25641_the_partners_report_of_its_own_grant_is_not_ours, 25641);
// An ack for an older version of a lease changed within the same second
// (the clock went back a second) cleared the flag of the newer one: the
// partner never heard of the last renewal (issue "failover at scale" item 9).
regression!(seed_933409353_an_ack_clears_only_the_version_it_acknowledges, 933409353);

// Seeds of the version-2 generator (shards, late commits, large pools)
// that found bugs.
macro_rules! regression_v2 {
    ($name:ident, $seed:expr) => {
        #[test]
        fn $name() {
            assert_clean(&run_seed($seed));
        }
    };
}

regression_v2!(seed_12_a_resync_that_flows_is_never_cut, 12);
regression_v2!(seed_47_a_stale_take_back_offer_does_not_free_a_prefix_given_since, 47);
regression_v2!(seed_84_a_take_back_accepted_but_unacknowledged_is_echoed, 84);
regression_v2!(seed_120_an_advertise_does_not_lose_a_free_prefix, 120);
regression_v2!(seed_295_a_record_left_away_by_a_crash_goes_home_at_start, 295);
regression_v2!(seed_1045_updates_for_a_record_in_motion_reach_its_new_home, 1045);
regression_v2!(seed_6781_a_prefix_is_taken_back_only_once_the_secondary_has_it, 6781);
regression_v2!(seed_10005901_a_partner_that_lost_its_store_relearns_the_lifetimes_it_acked, 10005901);
regression_v2!(seed_20010281_a_rejected_update_the_partners_newer_one_replaced_is_not_retried, 20010281);
regression_v2!(seed_50059959_an_expiry_acked_by_a_partner_that_lost_its_store_frees_for_others_after_the_mclt, 50059959);
regression_v2!(seed_60100922_a_free_backup_prefix_on_hold_after_the_partners_loss_is_not_given_yet, 60100922);
regression_v2!(seed_60105333_a_repeated_take_back_does_not_cancel_the_secondarys_word_that_it_gave_the_prefix_back, 60105333);
// A lease renewed within the same second through another relay changed
// only in its relay data; the ack of the BNDUPD in flight (the older relay
// chain) cleared the flag of the newer version, so the partner kept the old
// chain (found by tests/e2e_pair_leasequery.rs first, issue 20).
regression_v2!(seed_1953_an_ack_of_an_older_relay_chain_does_not_clear_the_newer_one, 1953);
// Crossing grants within the ±5 s tie: the side that kept the greater relay
// chain told its partner, so both stores show the same one.
regression_v2!(seed_3114_grants_crossing_within_the_tie_agree_on_the_relay_chain, 3114);

// Both servers restart (one reshards) while the partner, in
// COMMUNICATIONS-INTERRUPTED, saw the client release its reserved address
// and took it again for the same client; back in NORMAL the other server
// renews that client on the lifetime the partner acked before the release.
// The partner's promise (its expiration-time) now survives a new lease for
// the same client, so it still protects what the renewal counts on.
regression_v2!(seed_300000030_the_partner_keeps_its_promise_across_a_release_by_the_same_client, 300000030);

#[test]
fn a_client_that_vanishes_costs_three_binding_updates_per_lease() {
    // RFC 8156 §7.5.4 (audit F3): the granting server's EXPIRED is accepted
    // once the lease's state has expired (time(1)); the partner's stale
    // ACTIVE does not undo it. Per lease: ACTIVE, EXPIRED, FREE — not one
    // update a second for a lease time.
    for seed in 0..6 {
        let sc = Scenario { clients: 2, faults: false, vanish: true, count_updates: true, chaos: 1200, ..Scenario::v1(seed) };
        let r = Sim::new(sc).run();
        assert_clean(&r);
        assert!(!r.bndupds.is_empty(), "seed {seed}: no lease was granted");
        for (k, n) in &r.bndupds {
            assert!(*n <= 3, "seed {seed}: {n} BNDUPDs about {k} (ACTIVE, EXPIRED, FREE expected)");
        }
    }
}

#[test]
fn lifetimes_changed_across_restarts_keep_the_mclt_guarantee() {
    // RFC 8156 §4.4, §7.3 (audit F6): valid-lifetime lowered and raised
    // across a restart and a failover; what one side counts as acked must
    // match what the other protects.
    for seed in 0..40 {
        for v in [150, 600] {
            let sc = Scenario { restart_valid: Some(v), ..Scenario::v1(seed) };
            assert_clean(&Sim::new(sc).run());
        }
    }
}

// ---- the hub: one server in two failover relationships (issue 21) ----------

fn assert_hub_clean(r: &Report) {
    if !r.violations.is_empty() {
        let tail: Vec<&String> = r.trace.iter().rev().take(80).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "hub seed {} violated an invariant (replay: HUB_SEED={} cargo test --test sim a_hub, or tandem-sim --hub --seed {} --trace):\n{}\n--- last events ---\n{}",
            r.seed,
            r.seed,
            r.seed,
            r.violations.join("\n"),
            tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        );
    }
}

#[test]
fn a_hub_with_two_relationships_holds_every_invariant() {
    if let Some(seed) = std::env::var("HUB_SEED").ok().and_then(|s| s.parse().ok()) {
        let r = run_hub_seed_verbose(seed);
        for l in &r.trace {
            println!("{l}");
        }
        assert_hub_clean(&r);
        return;
    }
    const SEEDS: u64 = 500;
    let handles: Vec<_> = (0..2u64)
        .map(|w| {
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                let mut replies = 0;
                let mut grants = std::collections::BTreeMap::new();
                for seed in (w..SEEDS).step_by(2) {
                    let r = run_hub_seed(seed);
                    replies += r.replies;
                    for (k, n) in &r.grants {
                        *grants.entry(*k).or_insert(0u64) += n;
                    }
                    if !r.violations.is_empty() {
                        bad.push(r);
                    }
                }
                (bad, replies, grants)
            })
        })
        .collect();
    let mut replies = 0;
    let mut grants = std::collections::BTreeMap::new();
    for h in handles {
        let (bad, n, g) = h.join().unwrap();
        replies += n;
        for (k, v) in g {
            *grants.entry(k).or_insert(0u64) += v;
        }
        if let Some(r) = bad.first() {
            assert_hub_clean(r);
        }
    }
    assert!(replies > 100_000, "the clients were barely served: {replies} replies over {SEEDS} hub seeds");
    use tandem::lease::IaType;
    use tandem::wire::ServerState as S;
    for st in [S::Normal, S::CommunicationsInterrupted, S::PartnerDown] {
        for t in [IaType::Na, IaType::Pd] {
            assert!(grants.get(&(st, t)).is_some_and(|n| *n > 0), "no {} lease given in {}: {grants:?}", t.label(), st.name());
        }
    }
}

/// Of `seeds` hub runs with `sabotage`, how many were caught.
fn hub_caught(sabotage: Sabotage, seeds: std::ops::Range<u64>) -> usize {
    seeds.filter(|s| !HubSim::new(HubScenario { sabotage: Some(sabotage), ..HubScenario::new(*s) }).run().violations.is_empty()).count()
}

#[test]
fn the_hub_invariants_have_teeth() {
    // The engines ignore the failover policy: MCLT and address halves.
    let caught = hub_caught(Sabotage::IgnorePolicy, 0..20);
    assert!(caught >= 15, "only {caught} of 20 hub runs ignoring the failover policy were caught");
    // A drop or cut of site-a's connection takes site-b's with it.
    let caught = hub_caught(Sabotage::Entangled, 0..20);
    assert!(caught >= 10, "only {caught} of 20 hub runs with entangled relationships were caught");
    // The UPDREQALL answer carries the other relationship's records: seen
    // only where a server asks for everything once the hub holds leases of
    // both links (after a lost store).
    let caught = hub_caught(Sabotage::UnfilteredScan, 0..20);
    assert!(caught >= 3, "only {caught} of 20 hub runs answering UPDREQALL with every record were caught");
}

// Hub seeds that found bugs.
macro_rules! regression_hub {
    ($name:ident, $seed:expr) => {
        #[test]
        fn $name() {
            assert_hub_clean(&run_hub_seed($seed));
        }
    };
}

// A spoke in COMMUNICATIONS-INTERRUPTED saw its client release the lease
// within 5 s of the hub expiring its copy (the end of what the spoke could
// grant alone): back in NORMAL each refused the other's update (EXPIRED
// against RELEASED, a tie) every 30 s for ever, and the lease was never
// freed. Two ends of one lease within the tie now go the primary's way.
regression_hub!(hub_seed_20_an_expiry_and_a_release_within_the_tie_converge_at_site_a, 20);
regression_hub!(hub_seed_113_an_expiry_and_a_release_within_the_tie_converge_at_site_b, 113);
