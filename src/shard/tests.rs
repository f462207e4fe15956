//! The shard's side of failover: judging and storing the partner's updates
//! in the shard's own group commit, acknowledgements, DNS removal after the
//! partner knows, records moving to the shard that serves their client.

use super::*;
use crate::failover::bndupd;
use crate::lease::store::{LeaseStore, MemoryStore};
use crate::lease::{Binding, DnsInfo, IaType, dns_flags as F};
use crate::pool::hash::shard_of;
use crate::server::settings::{PdPool, Subnet};
use crate::wire::{ClientMessage, DhcpOption, Duid, IaNa, Options};

const NOW: Time = 1_800_000_000;

fn subnet() -> Subnet {
    Subnet {
        pools: vec!["2001:db8:1::1000-2001:db8:1::1fff".parse().unwrap()],
        pd_pools: vec![PdPool { prefix: "2001:db8:100::/48".parse().unwrap(), delegated_length: 56 }],
        interface: Some("eth1".into()),
        preferred_lifetime: 300,
        valid_lifetime: 600,
        renew_time: 150,
        rebind_time: 240,
        rapid_commit: true,
        relationship: Some(0),
        ..Subnet::test_default()
    }
}

fn config(shards: usize, role: Role) -> ShardsConfig {
    ShardsConfig {
        engine: EngineConfig {
            server_duid: Duid::llt(1, 1, &[0xaa; 6]),
            subnets: vec![subnet()],
            slice: crate::pool::Slice::WHOLE,
            hash_key: 7,
            naming: None,
            limits: Default::default(),
            unicast_listen: Vec::new(),
            provisioning: Default::default(),
        },
        shards,
        failover: vec![(role, 60)],
    }
}

fn policy(role: Role, state: ServerState) -> EndpointPolicy {
    EndpointPolicy { role, state, mclt: 60, partner_down_since: 0, partner_lost_store_at: 0 }
}

/// `shards` cores in `state`, with no records.
fn cores(shards: usize, role: Role, state: ServerState) -> Vec<ShardCore<u32>> {
    let mut b = build::<u32>(&config(shards, role), vec![Vec::new(); shards]);
    for (i, c) in b.cores.iter_mut().enumerate() {
        c.bus(NOW, 0, ToShard::State { epoch: 1, policy: policy(role, state) });
        let _ = i;
    }
    b.cores
}

/// Commit whatever is due into `store`; what the commit released.
fn commit(c: &mut ShardCore<u32>, store: &mut MemoryStore, now: Time) -> Done<u32> {
    match c.take_batch(now) {
        Some(b) => {
            store.commit(&b).unwrap();
            c.batch_done(true, b)
        }
        None => Done::default(),
    }
}

fn duid(n: u8) -> Duid {
    Duid::ll(1, &[2, 0, 0, 0, 0, n])
}

fn solicit(n: u8) -> Message {
    let ia = DhcpOption::IaNa(IaNa { iaid: 1, t1: 0, t2: 0, options: Options::new() });
    Message::Client(ClientMessage {
        msg_type: crate::wire::MessageType::Solicit,
        transaction_id: 1,
        options: vec![DhcpOption::ClientId(duid(n)), DhcpOption::RapidCommit, ia].into(),
    })
}

fn arrival() -> Arrival<'static> {
    Arrival { interface: Some("eth1"), source: "fe80::1".parse().unwrap(), destination: "ff02::1:2".parse().unwrap() }
}

fn received(l: &Lease, now: Time) -> bndupd::Received {
    let m = bndupd::build(l, now, 9);
    bndupd::parse(&m, |_| true).items.remove(0).unwrap()
}

fn stored(store: &MemoryStore, key: &LeaseKey) -> Option<Lease> {
    store.get(key).unwrap()
}

/// The partner's grant of `key` to the same client, `dt` seconds later.
fn later_grant(c: &ShardCore<u32>, key: &LeaseKey, dt: Time) -> Lease {
    let mut l = c.engine().leases().get(key).unwrap().clone();
    l.cltt = NOW + dt;
    l.valid_end = NOW + 600 + dt;
    l.state_expiration_time = l.valid_end;
    l
}

#[test]
fn a_partner_update_and_a_client_packet_on_one_key_in_one_batch_store_the_newest() {
    // The table and the store hold the same, newest record: one owner
    // writes both, in order (review H1: before, a partner write could land
    // between the table's update and the queueing of its older change).
    let mut c = cores(1, Role::Secondary, ServerState::CommunicationsInterrupted);
    let mut store = MemoryStore::new();
    let out = c[0].handle(NOW, &solicit(4), &arrival(), 1);
    assert!(matches!(out, Handled::Deferred), "a rapid-commit grant waits for its commit");
    let key = c[0].pending_since(0)[0].key;
    // The partner, in the same batch, reports a later grant to the same client.
    let theirs = later_grant(&c[0], &key, 10);
    c[0].bus(NOW + 10, 0, ToShard::Judge { items: vec![(1, 0, received(&theirs, NOW + 10))] });
    let done = commit(&mut c[0], &mut store, NOW + 10);
    assert_eq!(done.replies.len(), 1);
    assert!(matches!(&done.to_failover[0].1, ToFailover::Judged { items } if items[0].2.is_ok()), "verdict after the commit");
    let table = c[0].engine().leases().get(&key).unwrap();
    assert_eq!(stored(&store, &key).as_ref(), Some(table));
    assert_eq!(table.valid_end, NOW + 610, "the newest record");
}

#[test]
fn an_ack_clears_only_the_version_it_acknowledges() {
    // Seed 933409353: a renewal within the same second (the clock stepped
    // back) changed the lease's end but not its CLTT or start; the ack of
    // the earlier version must leave the newer one flagged for the partner.
    let mut c = cores(1, Role::Primary, ServerState::Normal);
    let mut store = MemoryStore::new();
    c[0].handle(NOW, &solicit(5), &arrival(), 1);
    let done = commit(&mut c[0], &mut store, NOW);
    let ToFailover::Committed { leases, .. } = &done.to_failover[0].1 else { panic!("{:?}", done.to_failover) };
    let sent = leases[0].clone();
    assert!(sent.update_partner);
    // Same second, a longer end (say the acked lifetime grew).
    let mut newer = sent.clone();
    newer.valid_end += 300;
    newer.state_expiration_time = newer.valid_end;
    c[0].engine.apply_external(newer.clone());
    c[0].bus(NOW, 0, ToShard::Acks(vec![Ack { sent: sent.clone(), accepted: true, partner_lifetime_sent: Some(NOW + 900), take_back: false }]));
    let cur = c[0].engine().leases().get(&sent.key).unwrap();
    assert!(cur.update_partner, "the newer version still goes to the partner");
    assert_eq!(cur.acked_partner_lifetime, NOW + 900, "but the partner did accept that lifetime for this client");
    c[0].bus(NOW, 0, ToShard::Acks(vec![Ack { sent: newer, accepted: true, partner_lifetime_sent: None, take_back: false }]));
    assert!(!c[0].engine().leases().get(&sent.key).unwrap().update_partner);
}

fn ended(addr: &str, status: BindingStatus) -> Lease {
    let mut l = Lease::active(
        LeaseKey::Addr(addr.parse().unwrap()),
        Binding { duid: duid(9), ia_type: IaType::Na, iaid: 1 },
        NOW - 100,
        300,
        600,
        150,
        240,
    );
    l.set_status(status, NOW - 10);
    l.update_partner = true;
    l.dns = Some(DnsInfo {
        flags: crate::wire::FQDN_FLAG_S,
        name: Some(crate::wire::DomainName::from_dotted("h.example.net.").unwrap()),
        dns_flags: F::FWD_UPTODATE | F::REV_UPTODATE | F::REMOVE_AFTER_ACK,
    });
    l
}

#[test]
fn an_acked_end_frees_the_address_to_its_halfs_owner_and_then_removes_its_records() {
    // Figure 2 events (4)–(6) (digest §18 item 1) and RFC 8156 §9.4 (audit
    // F4): the server that ended the lease removes the DNS records once the
    // partner acknowledged the end — whichever half the address is in.
    let mut c = cores(1, Role::Secondary, ServerState::Normal);
    let mut store = MemoryStore::new();
    for addr in ["2001:db8:1::1002", "2001:db8:1::1003"] {
        let l = ended(addr, BindingStatus::Released);
        c[0].engine.apply_external(l.clone());
        let done = commit(&mut c[0], &mut store, NOW);
        assert!(done.dns.is_empty(), "no removal before the partner knows");
        c[0].bus(NOW, 0, ToShard::Acks(vec![Ack { sent: l.clone(), accepted: true, partner_lifetime_sent: None, take_back: false }]));
        let now = c[0].engine().leases().get(&l.key).unwrap().clone();
        // ::1002 is even: the secondary's half → FREE-BACKUP; ::1003 odd → FREE.
        let expect = if addr.ends_with('2') { BindingStatus::FreeBackup } else { BindingStatus::Free };
        assert_eq!(now.status, expect);
        assert!(now.update_partner, "the partner hears of the FREE too");
        let done = commit(&mut c[0], &mut store, NOW + 1);
        assert_eq!(done.dns.len(), 1, "{addr}: the removal is due now");
        assert_ne!(done.dns[0].dns.as_ref().unwrap().dns_flags & F::PENDING_REMOVE, 0);
        // The partner acks the FREE: the record is written again with the
        // same DNS intent, which is not handed to the DNS queue twice.
        let free = c[0].engine().leases().get(&l.key).unwrap().clone();
        c[0].bus(NOW + 1, 0, ToShard::Acks(vec![Ack { sent: free, accepted: true, partner_lifetime_sent: None, take_back: false }]));
        let mut again = c[0].engine().leases().get(&l.key).unwrap().clone();
        again.cltt += 1;
        c[0].engine.apply_external(again.clone());
        c[0].push(again, true, NOW + 1);
        let done2 = commit(&mut c[0], &mut store, NOW + 2);
        assert!(done2.dns.is_empty(), "{addr}: one removal, not two");
        // Once the queue reports the removal, later intents go out again.
        let was = done.dns[0].clone();
        let mut dns = was.dns.clone().unwrap();
        dns.dns_flags &= !F::PENDING_REMOVE;
        c[0].dns_outcome(NOW + 2, DnsOutcome { key: was.key, was, dns });
        assert!(c[0].dns_sent.is_empty());
    }
}

#[test]
fn in_partner_down_the_records_go_when_the_lease_is_free() {
    // RFC 8156 §9.4, §8.4.1: no acknowledgement is coming; the lease is
    // reclaimed the MCLT after PARTNER-DOWN began and after every time the
    // partner could rely on, and its records are removed then.
    let mut c = cores(1, Role::Primary, ServerState::PartnerDown);
    c[0].bus(NOW, 0, ToShard::State { epoch: 2, policy: EndpointPolicy { partner_down_since: NOW, ..policy(Role::Primary, ServerState::PartnerDown) } });
    let mut store = MemoryStore::new();
    let mut l = ended("2001:db8:1::1003", BindingStatus::Expired);
    l.valid_end = NOW - 10;
    c[0].engine.apply_external(l.clone());
    c[0].tick(NOW + 59);
    assert_eq!(c[0].engine().leases().get(&l.key).unwrap().status, BindingStatus::Expired, "not before the MCLT");
    c[0].tick(NOW + 61);
    assert_eq!(c[0].engine().leases().get(&l.key).unwrap().status, BindingStatus::Free);
    let done = commit(&mut c[0], &mut store, NOW + 61);
    assert_eq!(done.dns.len(), 1);
}

#[test]
fn a_partner_grant_to_a_client_of_another_shard_moves_to_that_shard() {
    // Review H5 (audit item 10): the partner runs another shard count and
    // grants a key of shard A's slice to a client of shard B: the record
    // is handed to B (its renewals go there), A keeps the key blocked.
    let mut c = cores(2, Role::Secondary, ServerState::Normal);
    let mut stores = [MemoryStore::new(), MemoryStore::new()];
    let slices = SliceMap::new(&[subnet()], 2);
    let key = LeaseKey::Addr("2001:db8:1::1100".parse().unwrap());
    let owner = slices.owner(&key).unwrap();
    let n = (0u8..=255).find(|n| shard_of(duid(*n).as_bytes(), 2) as usize != owner).unwrap();
    let client_shard = 1 - owner;
    let mut l = Lease::active(key, Binding { duid: duid(n), ia_type: IaType::Na, iaid: 1 }, NOW, 300, 600, 150, 240);
    l.update_partner = true;
    c[owner].bus(NOW, 0, ToShard::Judge { items: vec![(1, 0, received(&l, NOW))] });
    let done = commit(&mut c[owner], &mut stores[owner], NOW);
    let handoff = done.to_failover.iter().find_map(|(_, m)| if let ToFailover::Handoff { lease, .. } = m { Some(lease.clone()) } else { None });
    let lease = handoff.expect("handed to the client's shard");
    assert!(c[owner].engine().leases().get(&key).is_none());
    assert!(c[owner].engine().is_blocked(&key), "the slice owner never gives it out meanwhile");
    // Anything for the key still reaching the old holder is passed on.
    let fwd = c[owner].bus(NOW, 0, ToShard::Acks(vec![Ack { sent: lease.clone(), accepted: true, partner_lifetime_sent: None, take_back: false }]));
    assert!(matches!(&fwd[..], [(0, ToFailover::Forward { to, .. })] if *to == client_shard));
    c[client_shard].bus(NOW, 0, ToShard::Adopt { lease });
    let done = commit(&mut c[client_shard], &mut stores[client_shard], NOW);
    assert!(done.to_failover.iter().any(|(_, m)| matches!(m, ToFailover::Adopted { key: k, .. } if *k == key)));
    c[owner].bus(NOW, 0, ToShard::Drop { key });
    commit(&mut c[owner], &mut stores[owner], NOW + LAZY_FLUSH);
    assert!(stored(&stores[owner], &key).is_none(), "removed from the old shard's store once durable at the new one");
    assert!(stored(&stores[client_shard], &key).is_some());
}

#[test]
fn start_up_places_every_record_at_its_home() {
    // An interrupted move left a record at the wrong shard and a stale copy:
    // `place` keeps the newest, writes it home before removing the others.
    let slices = SliceMap::new(&[subnet()], 2);
    let key = LeaseKey::Addr("2001:db8:1::1100".parse().unwrap());
    let owner = slices.owner(&key).unwrap();
    let n = (0u8..=255).find(|n| shard_of(duid(*n).as_bytes(), 2) as usize != owner).unwrap();
    let mut l = Lease::active(key, Binding { duid: duid(n), ia_type: IaType::Na, iaid: 1 }, NOW, 300, 600, 150, 240);
    let mut old = l.clone();
    old.set_status(BindingStatus::Expired, NOW - 1000);
    old.cltt = NOW - 2000;
    l.cltt = NOW;
    let mut stored = vec![Vec::new(), Vec::new()];
    stored[owner].push(l.clone()); // ACTIVE at the slice owner: its home is the client's shard
    stored[1 - owner].push(old);
    let p = place(stored, &slices, 2);
    assert_eq!(p.lists[1 - owner], vec![l.clone()]);
    assert!(p.lists[owner].is_empty());
    assert_eq!(p.upserts[1 - owner].len(), 1);
    assert_eq!(p.deletes[owner].len(), 1);
}

#[test]
fn a_record_that_needs_nothing_sent_is_reported_settled_once_durable() {
    // The driver drops older snapshots of a key whose durable record needs
    // nothing sent (seed 20010281): the shard reports such keys as settled,
    // and only when the committed version is the table's current one.
    let mut c = cores(1, Role::Secondary, ServerState::CommunicationsInterrupted);
    let mut store = MemoryStore::new();
    c[0].handle(NOW, &solicit(6), &arrival(), 1);
    let done = commit(&mut c[0], &mut store, NOW);
    let ToFailover::Committed { leases, settled, .. } = &done.to_failover[0].1 else { panic!("{:?}", done.to_failover) };
    assert!(leases[0].update_partner && settled.is_empty(), "a grant is for the partner, not settled");
    let key = leases[0].key;
    // The partner's later record for the same client is accepted: settled.
    let theirs = later_grant(&c[0], &key, 20);
    c[0].bus(NOW + 20, 0, ToShard::Judge { items: vec![(1, 0, received(&theirs, NOW + 20))] });
    let done = commit(&mut c[0], &mut store, NOW + 20);
    let committed = done.to_failover.iter().find_map(|(_, m)| match m {
        ToFailover::Committed { leases, settled, .. } => Some((leases.clone(), settled.clone())),
        _ => None,
    });
    let (leases, settled) = committed.expect("a Committed report");
    assert!(leases.iter().all(|l| l.key != key || !l.update_partner), "{leases:?}");
    assert_eq!(settled, vec![key]);
}

#[test]
fn a_free_record_on_hold_after_the_partners_loss_goes_back_to_the_free_list_when_the_hold_ends() {
    // README Conformance (d): an allocator that met the record during the
    // hold dropped it from its free list; when the hold ends it is listed again.
    let mut c = cores(1, Role::Primary, ServerState::CommunicationsInterrupted);
    let lost = NOW + 100;
    c[0].bus(NOW, 0, ToShard::State { epoch: 2, policy: EndpointPolicy { partner_lost_store_at: lost, ..policy(Role::Primary, ServerState::CommunicationsInterrupted) } });
    let key = LeaseKey::Addr("2001:db8:1::1001".parse().unwrap());
    let mut l = Lease::active(key, Binding { duid: duid(1), ia_type: IaType::Na, iaid: 1 }, NOW, 30, 60, 15, 24);
    l.set_status(BindingStatus::Free, lost + 5);
    c[0].apply(l, lost + 5);
    assert_eq!(c[0].held.iter().next(), Some(&(lost + 60, key)), "held until the loss + the MCLT");
    // Met during the hold and dropped (as a Request's allocator does).
    c[0].engine.drop_free_listed_for_test(&key);
    c[0].tick(lost + 59);
    assert!(!c[0].engine().free_listed(&key));
    c[0].tick(lost + 60);
    assert!(c[0].engine().free_listed(&key) && c[0].held.is_empty());
}

#[test]
fn an_operator_reset_in_a_pair_reaches_the_partner_and_frees_the_address_only_on_its_ack() {
    // RFC 8156 §7.2 RESET, Figure 2 events (4)–(6): like a Release.
    let mut c = cores(1, Role::Primary, ServerState::Normal);
    // One odd address: the primary's to allocate.
    let slices = c[0].slices.clone();
    c[0].reconfigure(
        EngineConfig { subnets: vec![Subnet { pools: vec!["2001:db8:1::1001-2001:db8:1::1001".parse().unwrap()], ..subnet() }], ..config(1, Role::Primary).engine },
        slices,
        Vec::new(),
    );
    let mut store = MemoryStore::new();
    c[0].handle(NOW, &solicit(1), &arrival(), 1);
    commit(&mut c[0], &mut store, NOW);
    let key = LeaseKey::Addr("2001:db8:1::1001".parse().unwrap());
    let reset = c[0].reset_lease(NOW + 1, &key).expect("the ACTIVE lease");
    assert_eq!(reset.status, BindingStatus::Reset);
    let done = commit(&mut c[0], &mut store, NOW + 1);
    let ToFailover::Committed { leases, .. } = &done.to_failover[0].1 else { panic!("{:?}", done.to_failover) };
    assert_eq!((leases[0].key, leases[0].status), (key, BindingStatus::Reset), "a BNDUPD carries the RESET");
    assert_eq!(stored(&store, &key).unwrap().status, BindingStatus::Reset);
    // Before the ack nobody gets it.
    c[0].handle(NOW + 2, &solicit(2), &arrival(), 2);
    assert!(c[0].pending_since(0).iter().all(|l| l.key != key || l.binding.duid != duid(2)), "not re-granted before the ack");
    c[0].bus(NOW + 3, 0, ToShard::Acks(vec![Ack { sent: leases[0].clone(), accepted: true, partner_lifetime_sent: None, take_back: false }]));
    assert_eq!(c[0].engine().leases().get(&key).unwrap().status, BindingStatus::Free);
    commit(&mut c[0], &mut store, NOW + 3);
    c[0].handle(NOW + 4, &solicit(3), &arrival(), 3);
    assert_eq!(c[0].pending_since(0).iter().find(|l| l.binding.duid == duid(3)).map(|l| l.key), Some(key), "free after the ack");
}

#[test]
fn a_reload_blocks_at_their_new_owner_the_keys_a_new_pool_covers_held_elsewhere() {
    // A record outside every pool lives at its client's shard; a pool
    // added by a reload makes another shard its owner, which must never
    // allocate it while the record lives on.
    let cfg = config(2, Role::Primary);
    let mut b = build::<u32>(&ShardsConfig { failover: Vec::new(), ..cfg.clone() }, vec![Vec::new(); 2]);
    let addr: std::net::Ipv6Addr = "2001:db8:1::2003".parse().unwrap();
    let key = LeaseKey::Addr(addr);
    let new_owner = ((u128::from(addr) >> 1) % 2) as usize;
    let holder = 1 - new_owner;
    let l = Lease::active(key, Binding { duid: duid(7), ia_type: IaType::Na, iaid: 1 }, NOW, 300, 600, 150, 240);
    b.cores[holder].engine.apply_external(l);
    let mut grown = subnet();
    grown.pools = vec!["2001:db8:1::1000-2001:db8:1::2fff".parse().unwrap()];
    let slices = b.cores[0].slices.reloaded(std::slice::from_ref(&grown));
    let none = HashMap::new();
    assert_eq!(b.cores[new_owner].covered_elsewhere(&slices, &none), Vec::new());
    let away = b.cores[holder].covered_elsewhere(&slices, &none);
    assert_eq!(away, vec![(key, new_owner)]);
    let engine = EngineConfig { subnets: vec![grown.clone()], ..cfg.engine.clone() };
    b.cores[new_owner].reconfigure(engine.clone(), slices.clone(), vec![key]);
    b.cores[holder].reconfigure(engine, slices.clone(), Vec::new());
    assert!(b.cores[new_owner].engine().is_blocked(&key));
    // A reservation of that key for a client of the other shard: while
    // the ACTIVE lease of client 7 lives, that shard must not grant it.
    let other = (1u8..).find(|n| shard_of(duid(*n).as_bytes(), 2) as usize == new_owner && *n != 7).unwrap();
    let mut reserving = grown;
    reserving.reservations.push(crate::server::settings::Reservation { client: crate::server::settings::ReservedFor::Duid(duid(other)), addresses: vec![addr], prefixes: vec![], hostname: None, options: vec![] });
    let reserved = reserved_keys(std::slice::from_ref(&reserving));
    assert_eq!(b.cores[holder].covered_elsewhere(&slices, &reserved), vec![(key, new_owner)], "blocked once, at the shard that would grant it");
}

#[test]
fn a_key_reserved_for_a_client_of_another_shard_is_blocked_there_while_someone_else_holds_it() {
    // Review finding 1: a reservation added for client d2 (shard C) while
    // client e's lease of the key lives at shard E must not give it to d2.
    let cfg = config(2, Role::Primary);
    let addr: std::net::Ipv6Addr = "2001:db8:9::5".parse().unwrap(); // outside the pools: no slice owner
    let key = LeaseKey::Addr(addr);
    let e = (1u8..).find(|n| shard_of(duid(*n).as_bytes(), 2) == 0).unwrap();
    let d2 = (1u8..).find(|n| shard_of(duid(*n).as_bytes(), 2) == 1).unwrap();
    let held = Lease::active(key, Binding { duid: duid(e), ia_type: IaType::Na, iaid: 1 }, NOW, 300, 600, 150, 240);
    let mut reserving = subnet();
    reserving.reservations.push(crate::server::settings::Reservation { client: crate::server::settings::ReservedFor::Duid(duid(d2)), addresses: vec![addr], prefixes: vec![], hostname: None, options: vec![] });
    // At start-up.
    let b = build::<u32>(
        &ShardsConfig { engine: EngineConfig { subnets: vec![reserving.clone()], ..cfg.engine.clone() }, failover: Vec::new(), ..cfg.clone() },
        vec![vec![held.clone()], Vec::new()],
    );
    assert!(b.cores[1].engine().is_blocked(&key), "the reserved client's shard does not grant it");
    // At a reload.
    let b = build::<u32>(&ShardsConfig { failover: Vec::new(), ..cfg.clone() }, vec![vec![held], Vec::new()]);
    let slices = b.cores[0].slices.reloaded(std::slice::from_ref(&reserving));
    assert_eq!(b.cores[0].covered_elsewhere(&slices, &reserved_keys(std::slice::from_ref(&reserving))), vec![(key, 1)]);
}

#[test]
fn an_operator_add_for_a_client_of_another_shard_hands_the_key_over_and_respects_the_failover_rules() {
    // The lease lives where its client's packets go; the key's slice owner
    // hands over its record and keeps the key blocked.
    let mut c = cores(2, Role::Primary, ServerState::Normal);
    let mut stores = [MemoryStore::new(), MemoryStore::new()];
    let client = (1u8..).find(|n| shard_of(duid(*n).as_bytes(), 2) == 0).unwrap();
    let binding = Binding { duid: duid(client), ia_type: IaType::Na, iaid: 3 };
    // An odd address (the primary's half) whose slice owner is shard 1.
    let addr: std::net::Ipv6Addr = (0x1001u16..).step_by(2).map(|x| format!("2001:db8:1::{x:x}").parse().unwrap()).find(|a: &std::net::Ipv6Addr| (u128::from(*a) >> 1) % 2 == 1).unwrap();
    let key = LeaseKey::Addr(addr);
    let lent = c[1].lend(NOW, &key, &binding, 0).expect("free and the primary's");
    let l = c[0].add_lease(NOW, key, &binding, Some(120), lent).expect("added");
    assert_eq!((l.status, l.valid_lifetime, l.valid_end), (BindingStatus::Active, 60, NOW + 60), "the MCLT caps a new lease (§4.4): {l:?}");
    assert!(l.update_partner, "a BNDUPD carries it, as a grant");
    c[1].bus(NOW, 0, ToShard::Drop { key });
    assert!(c[1].engine().is_blocked(&key), "its slice owner never allocates it meanwhile");
    let done = commit(&mut c[0], &mut stores[0], NOW);
    assert!(matches!(&done.to_failover[0].1, ToFailover::Committed { leases, .. } if leases[0].key == key));
    assert_eq!(stored(&stores[0], &key).unwrap().binding, binding);
    // A second add of the same key is refused, at either shard.
    assert!(c[1].lend(NOW, &key, &binding, 0).is_err());
    assert!(c[0].add_lease(NOW, key, &binding, None, None).unwrap_err().0.contains("leased to client"));
    // Outside the pools: refused with the reason.
    let out = LeaseKey::Addr("2001:db8:9::1".parse().unwrap());
    assert!(c[0].add_lease(NOW, out, &binding, None, None).unwrap_err().0.contains("none of the configured pools"));
    // The secondary in NORMAL allocates nothing (§8.8.1): refused, and a
    // lent record goes back to its owner.
    let mut s = cores(2, Role::Secondary, ServerState::Normal);
    let lent = s[1].lend(NOW, &key, &binding, 0);
    assert!(lent.is_err(), "{lent:?}");
    assert!(!s[1].engine().is_blocked(&key));
}

/// A hub: subnet 1 (eth1) in relationship 0, subnet 2 (eth2) in
/// relationship 1, subnet 3 (eth3) standalone.
fn hub(roles: [Role; 2]) -> ShardCore<u32> {
    let sub = |n: u16, rel: Option<usize>| Subnet {
        prefix: format!("2001:db8:{n}::/64").parse().unwrap(),
        pools: vec![format!("2001:db8:{n}::1000-2001:db8:{n}::1fff").parse().unwrap()],
        pd_pools: vec![PdPool { prefix: format!("2001:db8:{n}00::/48").parse().unwrap(), delegated_length: 56 }],
        interface: Some(format!("eth{n}")),
        relationship: rel,
        ..subnet()
    };
    let mut cfg = config(1, roles[0]);
    cfg.engine.subnets = vec![sub(1, Some(0)), sub(2, Some(1)), sub(3, None)];
    cfg.failover = vec![(roles[0], 60), (roles[1], 600)];
    let b = build::<u32>(&cfg, vec![Vec::new()]);
    // Each relationship reports its own start-up, even with nothing flagged.
    let rels: Vec<usize> = b.loaded[0].iter().map(|(r, _)| *r).collect();
    assert_eq!(rels, vec![0, 1]);
    b.cores.into_iter().next().unwrap()
}

fn on_link(n: u8) -> Arrival<'static> {
    let ifs: [&'static str; 4] = ["", "eth1", "eth2", "eth3"];
    Arrival { interface: Some(ifs[n as usize]), ..arrival() }
}

#[test]
fn each_relationship_serves_its_subnets_under_its_own_state_and_reports_to_its_own_driver() {
    let mut c = hub([Role::Primary, Role::Primary]);
    // Relationship 0 NORMAL (the primary allocates), relationship 1 still
    // in STARTUP (unresponsive): only link 1 and the standalone link answer.
    let applied = c.bus(NOW, 0, ToShard::State { epoch: 1, policy: policy(Role::Primary, ServerState::Normal) });
    assert!(matches!(&applied[..], [(0, ToFailover::StateApplied { .. })]), "{applied:?}");
    assert_eq!(c.policies()[1].state, ServerState::Startup, "the other relationship is untouched");
    let mut store = MemoryStore::new();
    assert!(matches!(c.handle(NOW, &solicit(1), &on_link(1), 1), Handled::Deferred));
    assert!(matches!(c.handle(NOW, &solicit(2), &on_link(2), 2), Handled::Dropped(DropReason::NotResponsive)));
    assert!(matches!(c.handle(NOW, &solicit(3), &on_link(3), 3), Handled::Deferred));
    let done = commit(&mut c, &mut store, NOW);
    assert_eq!(done.replies.len(), 2);
    // Relationship 0's driver hears of the link-1 lease; relationship 1's
    // hears of nothing; the standalone lease goes to no partner.
    let committed: Vec<(usize, Vec<LeaseKey>)> = done
        .to_failover
        .iter()
        .filter_map(|(r, m)| match m {
            ToFailover::Committed { leases, .. } => Some((*r, leases.iter().map(|l| l.key).collect())),
            _ => None,
        })
        .collect();
    assert_eq!(committed.len(), 2, "{committed:?}");
    assert_eq!(committed[0].0, 0);
    assert!(matches!(committed[0].1[..], [LeaseKey::Addr(a)] if a.segments()[2] == 1), "{committed:?}");
    assert_eq!(committed[1], (1, Vec::new()));
    let standalone = store.all().unwrap().into_iter().find(|l| matches!(l.key, LeaseKey::Addr(a) if a.segments()[2] == 3)).unwrap();
    // The MCLT caps relationship 0's first grant (60 s); the standalone one has no cap.
    let rel0 = store.all().unwrap().into_iter().find(|l| matches!(l.key, LeaseKey::Addr(a) if a.segments()[2] == 1)).unwrap();
    assert_eq!(rel0.valid_lifetime, 60);
    assert_eq!(standalone.valid_lifetime, 600);
    assert_eq!(c.relationship_of(&rel0.key), Some(0));
    assert_eq!(c.relationship_of(&standalone.key), None);
}

#[test]
fn prefix_counts_backup_handouts_and_verdicts_stay_within_a_relationship() {
    let mut c = hub([Role::Primary, Role::Primary]);
    for r in 0..2 {
        c.bus(NOW, r, ToShard::State { epoch: 1, policy: policy(Role::Primary, ServerState::Normal) });
    }
    let mut store = MemoryStore::new();
    // Relationship 1's secondary gets 10 prefixes of its pool only.
    c.bus(NOW, 1, ToShard::GiveBackup { n: 10 });
    let done = commit(&mut c, &mut store, NOW);
    let given: Vec<&Lease> = done
        .to_failover
        .iter()
        .filter(|(r, _)| *r == 1)
        .flat_map(|(_, m)| match m {
            ToFailover::Committed { leases, .. } => leases.iter().collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(given.len(), 10);
    assert!(given.iter().all(|l| matches!(l.key, LeaseKey::Prefix(p) if p.addr.segments()[2] == 0x200)), "{given:?}");
    let (c0, c1) = (c.pd_counts(0), c.pd_counts(1));
    assert_eq!((c0.delegable, c0.free_backup), (256, 0));
    assert_eq!((c1.delegable, c1.free_backup), (256, 10));
    // A binding judged for relationship 0 is answered to relationship 0.
    let mut l = Lease::active(
        LeaseKey::Addr("2001:db8:1::1234".parse().unwrap()),
        Binding { duid: duid(9), ia_type: IaType::Na, iaid: 1 },
        NOW,
        300,
        600,
        150,
        240,
    );
    l.update_partner = true;
    c.bus(NOW, 0, ToShard::Judge { items: vec![(7, 0, received(&l, NOW))] });
    let done = commit(&mut c, &mut store, NOW);
    assert!(done.to_failover.iter().any(|(r, m)| *r == 0 && matches!(m, ToFailover::Judged { items } if items[0].0 == 7)), "{:?}", done.to_failover);
    assert!(!done.to_failover.iter().any(|(r, m)| *r == 1 && matches!(m, ToFailover::Judged { .. })));
}
