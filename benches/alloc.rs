//! Allocation speed with a big table already in place: 1 M address leases in
//! a /64 range, and delegated /56s from a /40 (near full) and a /32 (1 M
//! present). Each iteration is one Request from a new client through the
//! whole engine (decode excluded). Run with `cargo bench --bench alloc`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tandem::config::Config;
use tandem::pool::Slice;
use tandem::server::{Arrival, Engine, EngineConfig, Outcome, Standalone};
use tandem::wire::*;

const NOW: u64 = 1_800_000_000;

fn engine(pools: &str, pd: &str) -> Engine {
    let cfg = format!(
        "interfaces = [\"eth1\"]\n[[subnet]]\nprefix = \"2001:db8:1::/64\"\ninterface = \"eth1\"\npools = [{pools}]\npd-pools = [{pd}]\n"
    );
    let c = Config::parse(&cfg).unwrap();
    Engine::new(EngineConfig { server_duid: Duid::ll(1, &[0xaa; 6]), subnets: c.subnets, slice: Slice::WHOLE, hash_key: 3, naming: None, limits: Default::default(), unicast_listen: Vec::new(), provisioning: Default::default() })
}

fn request(n: u64, na: bool, pd: bool) -> Message {
    let mut o = vec![
        DhcpOption::ClientId(Duid::en(9, &n.to_be_bytes())),
        DhcpOption::ServerId(Duid::ll(1, &[0xaa; 6])),
    ];
    if na {
        o.push(DhcpOption::IaNa(IaNa { iaid: 1, t1: 0, t2: 0, options: Options::new() }));
    }
    if pd {
        o.push(DhcpOption::IaPd(IaPd { iaid: 1, t1: 0, t2: 0, options: Options::new() }));
    }
    Message::Client(ClientMessage { msg_type: MessageType::Request, transaction_id: 1, options: o.into() })
}

fn fill(e: &mut Engine, n: u64, na: bool, pd: bool) {
    let arr = Arrival { interface: Some("eth1"), source: "fe80::1".parse().unwrap(), destination: "ff02::1:2".parse().unwrap() };
    for i in 0..n {
        let o = e.handle(NOW, &request(i, na, pd), &arr, &Standalone);
        assert!(matches!(o, Outcome::Reply(_)));
    }
}

fn bench_case(c: &mut Criterion, name: &str, mut e: Engine, na: bool, pd: bool, start: u64) {
    let arr = Arrival { interface: Some("eth1"), source: "fe80::1".parse().unwrap(), destination: "ff02::1:2".parse().unwrap() };
    let mut n = start;
    c.bench_function(name, |b| {
        b.iter_batched(
            || {
                n += 1;
                request(n, na, pd)
            },
            |m| black_box(e.handle(NOW, &m, &arr, &Standalone)),
            BatchSize::SmallInput,
        )
    });
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc");
    g.sample_size(30);
    drop(g);
    let mut e = engine("\"2001:db8:1::/64\"", "");
    fill(&mut e, 1_000_000, true, false);
    bench_case(c, "request_na_64_with_1M_leases", e, true, false, 10_000_000);

    let mut e = engine("\"2001:db8:1::/64\"", "{ prefix = \"2001:db8:100::/40\", delegated-length = 56 }");
    fill(&mut e, 60_000, false, true);
    bench_case(c, "request_pd_40_to_56_with_60k_of_65536_used", e, false, true, 10_000_000);

    let mut e = engine("\"2001:db8:1::/64\"", "{ prefix = \"2001:db9::/32\", delegated-length = 56 }");
    fill(&mut e, 1_000_000, false, true);
    bench_case(c, "request_pd_32_to_56_with_1M_leases", e, false, true, 10_000_000);
}

criterion_group!(benches, bench);
criterion_main!(benches);
