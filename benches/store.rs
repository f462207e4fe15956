//! Durable lease commits on LMDB (default sync: each commit is fsync'd) at
//! batch sizes 1, 64 and 1024. Throughput is reported in leases/s; commits/s
//! is that divided by the batch size. Run with `cargo bench --bench store`.
//! The numbers depend on the disk's fsync latency, so rerun on the target.
//!
//! First it prints the bytes this process wrote to disk (/proc/self/io
//! `write_bytes`) per lease change, for grants (new keys) and renewals
//! (existing keys) in batches like the group commit's under load, on a
//! store already holding 100,000 leases. Bytes, not time: comparable
//! across runs of one machine (issue 15's ≤ 1 KiB target).

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

fn write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("write_bytes: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

fn bytes_per_change() {
    let dir = std::env::temp_dir().join(format!("tandem-bench-bytes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut store = LmdbStore::open(&dir, 4 << 30).unwrap();
    const HELD: u64 = 100_000;
    for chunk in (0..HELD).collect::<Vec<_>>().chunks(1024) {
        store.commit(&chunk.iter().map(|i| LeaseChange::Upsert(lease(*i))).collect::<Vec<_>>()).unwrap();
    }
    for batch in [1usize, 64] {
        for (what, first) in [("grants", HELD + batch as u64 * 1_000_000), ("renewals", 0)] {
            let n = if batch == 1 { 2_000 } else { 20_000 };
            let before = write_bytes();
            for b in 0..n / batch as u64 {
                let changes: Vec<LeaseChange> = (0..batch as u64)
                    .map(|j| {
                        // Renewals touch held leases spread over the store.
                        let i = if first == 0 { (b * batch as u64 + j) * 7 % HELD } else { first + b * batch as u64 + j };
                        let mut l = lease(i);
                        l.cltt += 1;
                        LeaseChange::Upsert(l)
                    })
                    .collect();
                store.commit(&changes).unwrap();
            }
            let per = (write_bytes() - before) as f64 / n as f64;
            println!("store bytes written per lease change: {what}, batch {batch}: {per:.0} B");
        }
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn bench(c: &mut Criterion) {
    bytes_per_change();
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
