//! What a leasequery costs a shard (issue 20): the lookups the RFC 5007
//! queries make in a table of 100,000 leases (an address, an address inside
//! a delegated prefix, a client), one 16,384-slot chunk of a bulk walk by
//! relay-id (what a shard does per request, between packets), and building
//! and encoding one client's answer. Run with `cargo bench --bench leasequery`.

use std::hint::black_box;
use std::net::Ipv6Addr;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use tandem::lease::{Binding, IaType, Lease, LeaseKey, RelayData};
use tandem::leasequery::{self as lq, Filter, Links};
use tandem::pool::Prefix;
use tandem::server::LeaseTable;
use tandem::wire::*;

const NOW: u64 = 1_800_000_000;
const CLIENTS: u32 = 50_000;

/// A relay chain from relay `r` (of 100), with its DUID as OPTION_RELAY_ID.
fn relay(r: u32) -> Box<RelayData> {
    let m = Message::Relay(RelayMessage {
        msg_type: MessageType::RelayForw,
        hop_count: 0,
        link_address: "2001:db8:1::1".parse().unwrap(),
        peer_address: "fe80::9".parse().unwrap(),
        options: vec![
            DhcpOption::Unknown { code: opt::RELAY_ID, data: [&[0, 3, 0, 1][..], &r.to_be_bytes()].concat() },
            DhcpOption::InterfaceId(b"ge-0/0/1".to_vec()),
        ]
        .into(),
    });
    Box::new(RelayData { peer: "2001:db8:ff::1".parse().unwrap(), message: m.encode().unwrap() })
}

/// 50,000 clients with an address and a /56 each: 100,000 leases.
fn table() -> LeaseTable {
    let mut t = LeaseTable::new();
    for c in 0..CLIENTS {
        let duid = Duid::en(9, &c.to_be_bytes());
        let a = LeaseKey::Addr(Ipv6Addr::from(0x2001_0db8_0001_0000_0000_0000_0001_0000u128 + c as u128));
        let p = LeaseKey::Prefix(Prefix::new(Ipv6Addr::from(0x2001_0db8_0100_0000_0000_0000_0000_0000u128 + ((c as u128) << 72)), 56).unwrap());
        for (k, t_, iaid) in [(a, IaType::Na, 1), (p, IaType::Pd, 2)] {
            let mut l = Lease::active(k, Binding { duid: duid.clone(), ia_type: t_, iaid }, NOW, 3000, 4000, 1000, 2000);
            l.relay = Some(relay(c % 100));
            t.upsert(l);
        }
    }
    t
}

fn bench(c: &mut Criterion) {
    let t = table();
    let links = Links::new(&tandem::config::Config::parse(
        "[[subnet]]\nprefix = \"2001:db8:1::/64\"\npools = [\"2001:db8:1::1:0-2001:db8:1::ffff:ffff\"]\npd-pools = [{ prefix = \"2001:db8:100::/40\", delegated-length = 56 }]\n",
    )
    .unwrap()
    .subnets);
    let addr: Ipv6Addr = "2001:db8:1::1:1234".parse().unwrap();
    let in_prefix = Ipv6Addr::from(0x2001_0db8_0100_0000_0000_0000_0000_0000u128 + (1234u128 << 72) + 77);
    let client = Duid::en(9, &1234u32.to_be_bytes());
    c.bench_function("lookup: address (100k leases)", |b| b.iter(|| black_box(t.covering(black_box(addr))).len()));
    c.bench_function("lookup: address inside a delegated /56", |b| b.iter(|| black_box(t.covering(black_box(in_prefix))).len()));
    c.bench_function("lookup: client (both IA types)", |b| b.iter(|| black_box(t.of_client(black_box(&client))).len()));
    let f = Arc::new(Filter { relay_id: Some(vec![0, 3, 0, 1, 0, 0, 0, 7]), remote_id: None, link: None });
    c.bench_function("walk: one 16384-slot chunk by relay-id (1% match)", |b| {
        b.iter(|| black_box(t.walk_clients(black_box(40_000), 16_384, 1024, |l| f.matches(l, NOW))).0.len())
    });
    let all = Arc::new(Filter { relay_id: None, remote_id: None, link: Some(links.get(0).clone()) });
    c.bench_function("walk: one request when every lease matches (stops at 1024 clients)", |b| {
        b.iter(|| black_box(t.walk_clients(black_box(40_000), 16_384, 1024, |l| all.matches(l, NOW))).0.len())
    });
    let found: Vec<Lease> = t.of_client(&client).into_iter().cloned().collect();
    let groups = lq::group(found, &links, NOW);
    c.bench_function("answer: client data (NA + PD, relay data) encoded", |b| {
        b.iter(|| {
            let cd = lq::client_data(&groups[0], NOW + 10, &[opt::LQ_RELAY_DATA], &[]);
            lq::frame(&lq::data(1, cd)).unwrap().len()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
