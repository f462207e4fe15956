//! Binding updates (RFC 8156 §7.4, §7.5): building a BNDUPD for a lease and
//! encoding its frame; decoding a received frame and deciding it (Figure 4)
//! against a database of 100,000 leases. Run with `cargo bench --bench failover`.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::Ipv6Addr;

use criterion::{Criterion, criterion_group, criterion_main};
use tandem::config::Role;
use tandem::failover::Bindings;
use tandem::failover::bndupd;
use tandem::lease::{Binding, IaType, Lease, LeaseKey};
use tandem::pool::Prefix;
use tandem::wire::*;

const NOW: u64 = 1_800_000_000;

struct Db(HashMap<LeaseKey, Lease>);

impl Bindings for Db {
    fn lease(&self, key: &LeaseKey) -> Option<Lease> {
        self.0.get(key).cloned()
    }
    fn store(&mut self, lease: Lease) {
        self.0.insert(lease.key, lease);
    }
    fn all_keys(&self) -> Vec<LeaseKey> {
        self.0.keys().copied().collect()
    }
    fn flagged(&self) -> Vec<LeaseKey> {
        Vec::new()
    }
    fn owns(&self, _: &LeaseKey) -> bool {
        true
    }
    fn free_prefixes(&self, _: usize) -> Vec<Prefix> {
        Vec::new()
    }
    fn prefix_counts(&self) -> (u64, u64) {
        (0, 0)
    }
}

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
            let r = bndupd::process(&m, NOW + 31, Role::Secondary, 3600, &db);
            assert_eq!(r.accepted.len(), 1);
            black_box(r.reply.encode_frame().unwrap())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
