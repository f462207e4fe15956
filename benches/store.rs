//! Durable lease commits on LMDB (default sync: each commit is fsync'd) at
//! batch sizes 1, 64 and 1024. Throughput is reported in leases/s; commits/s
//! is that divided by the batch size. Run with `cargo bench --bench store`.
//! The numbers depend on the disk's fsync latency, so rerun on the target.

use std::net::Ipv6Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tandem::lease::store::LeaseStore;
use tandem::lease::{Binding, IaType, Lease, LeaseChange, LeaseKey};
use tandem::runtime::store::LmdbStore;
use tandem::wire::Duid;

fn lease(i: u64) -> Lease {
    Lease::active(
        LeaseKey::Addr(Ipv6Addr::from(0x2001_0db8_0001_0000_0000_0000_0000_0000u128 + (i as u128 * 7919) % (1 << 60))),
        Binding { duid: Duid::en(9, &i.to_be_bytes()), ia_type: IaType::Na, iaid: 1 },
        1_800_000_000,
        3000,
        4000,
        1500,
        2400,
    )
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("tandem-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut store = LmdbStore::open(&dir, 4 << 30).unwrap();
    let mut g = c.benchmark_group("store_commit_durable");
    g.sample_size(20);
    let mut n = 0u64;
    for batch in [1usize, 64, 1024] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("batch_{batch}"), |b| {
            b.iter(|| {
                let changes: Vec<LeaseChange> = (0..batch)
                    .map(|_| {
                        n += 1;
                        LeaseChange::Upsert(lease(n))
                    })
                    .collect();
                store.commit(&changes).unwrap();
            })
        });
    }
    g.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
