//! Binding updates (RFC 8156 §7.4, §7.5): building a BNDUPD for a lease and
//! encoding its frame; decoding a received frame, judging it (Figure 4)
//! against a table of 100,000 leases, merging it and building the BNDREPLY
//! — the work a shard and the failover driver do per received update. Run
//! with `cargo bench --bench failover`.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::Ipv6Addr;

use criterion::{Criterion, criterion_group, criterion_main};
use tandem::config::Role;
use tandem::failover::bndupd;
use tandem::lease::{Binding, IaType, Lease, LeaseKey};
use tandem::wire::*;

const NOW: u64 = 1_800_000_000;

struct Db(HashMap<LeaseKey, Lease>);

fn lease(n: u32) -> Lease {
    let addr = Ipv6Addr::from(u128::from("2001:db8:1::".parse::<Ipv6Addr>().unwrap()) + n as u128);
    let mut l = Lease::active(
        LeaseKey::Addr(addr),
        Binding { duid: Duid::en(32473, &(n as u64).to_be_bytes()), ia_type: IaType::Na, iaid: 1 },
        NOW,
        3000,
        4000,
        1000,
        2000,
    );
    l.partner_lifetime = NOW + 6000;
    l.update_partner = true;
    l
}

fn bench(c: &mut Criterion) {
    let l = lease(1001);
    c.bench_function("bndupd/build+encode", |b| {
        b.iter(|| {
            let m = bndupd::build(black_box(&l), NOW, 77);
            black_box(m.encode_frame().unwrap())
        })
    });
    // The secondary holds 100,000 leases; the primary renews one of them.
    let db = Db((0..100_000).map(|n| (lease(n).key, lease(n))).collect());
    let mut renewed = lease(5000);
    renewed.cltt = NOW + 30;
    renewed.valid_end = NOW + 4030;
    renewed.partner_lifetime = NOW + 6030;
    let frame = bndupd::build(&renewed, NOW + 30, 78).encode_frame().unwrap();
    c.bench_function("bndupd/decode+process (100k leases)", |b| {
        b.iter(|| {
            let m = FailoverMessage::decode(black_box(&frame[2..])).unwrap();
            let parsed = bndupd::parse(&m, |_| true);
            let mut verdicts = Vec::new();
            for item in parsed.items {
                let r = item.unwrap();
                let local = db.0.get(&r.key).cloned();
                let ctx = bndupd::Judge { role: Role::Secondary, now: NOW + 31, mclt: 3600, partner_lost_store_at: 0 };
                let v = bndupd::judge(local.as_ref(), &r, ctx);
                assert!(v.is_ok());
                black_box(bndupd::merge(local, &r, NOW + 31));
                verdicts.push(v);
            }
            black_box(bndupd::reply(&m, &verdicts, NOW + 31).encode_frame().unwrap())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
