//! What client classes cost on a plain Solicit (issue 18): the same
//! decode → engine → encode path with no `[[class]]`, with 16 classes the
//! client matches none of, and with 16 where the last one matches and
//! restricts the pool the address comes from. Criterion prints each median
//! with its confidence interval, in one run. Run with
//! `cargo bench --bench classes`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tandem::config::Config;
use tandem::pool::Slice;
use tandem::server::{Arrival, Engine, EngineConfig, Outcome, Standalone};
use tandem::wire::*;

const NOW: u64 = 1_800_000_000;

fn engine(classes: &str, pool: &str) -> Engine {
    let cfg = format!("interfaces = [\"eth1\"]\n{classes}[[subnet]]\nprefix = \"2001:db8:1::/64\"\ninterface = \"eth1\"\npools = [{pool}]\n");
    let c = Config::parse(&cfg).unwrap();
    Engine::new(EngineConfig {
        server_duid: Duid::ll(1, &[0xaa; 6]),
        subnets: c.subnets,
        slice: Slice::WHOLE,
        hash_key: 3,
        naming: None,
        limits: Default::default(),
        unicast_listen: Vec::new(),
        provisioning: c.provisioning,
    })
}

/// 16 classes over the match keys a Solicit is checked against; the last
/// matches clients of vendor 4491.
fn sixteen(last_matches: bool) -> String {
    let keys = [
        "vendor-class = { enterprise = 3561 }",
        "user-class = \"cpe\"",
        "duid = \"000200000de9\"",
        "duid-type = \"uuid\"",
        "remote-id = \"port7\"",
        "subscriber-id = \"sub\"",
        "interface-id = \"ge-0/0/1\"",
        "hw-address = \"02:00:5e:00:00:10\"",
        "relay-link = \"2001:db8:9::/48\"",
        "vendor-class = { enterprise = 9, data = \"x\" }",
        "user-class = \"0x0a0b\"",
        "duid = \"0004\"",
        "remote-id = { enterprise = 4491, id = \"port8\" }",
        "duid-type = \"en\"",
        "vendor-class = { enterprise = 311 }",
        if last_matches { "vendor-class = { enterprise = 4491 }" } else { "vendor-class = { enterprise = 4492 }" },
    ];
    keys.iter().enumerate().map(|(i, k)| format!("[[class]]\nname = \"c{i}\"\nmatch = {{ {k} }}\n")).collect()
}

fn solicit(n: u64) -> Vec<u8> {
    let o = vec![
        DhcpOption::ClientId(Duid::ll(1, &[0x02, (n >> 32) as u8, (n >> 24) as u8, (n >> 16) as u8, (n >> 8) as u8, n as u8])),
        DhcpOption::ElapsedTime(0),
        DhcpOption::VendorClass(VendorClass { enterprise: 4491, data: vec![b"docsis3.1".to_vec()] }),
        DhcpOption::IaNa(IaNa { iaid: 1, t1: 0, t2: 0, options: Options::new() }),
    ];
    Message::Client(ClientMessage { msg_type: MessageType::Solicit, transaction_id: (n & 0xff_ffff) as u32, options: o.into() }).encode().unwrap()
}

fn path(e: &mut Engine, bytes: &[u8], out: &mut Vec<u8>) -> usize {
    let arrival = Arrival { interface: Some("eth1"), source: "fe80::1".parse().unwrap(), destination: "ff02::1:2".parse().unwrap() };
    let m = Message::decode(bytes).unwrap();
    match e.handle(NOW, &m, &arrival, &Standalone) {
        Outcome::Reply(r) => {
            out.clear();
            r.message.encode_into(out).unwrap();
            out.len()
        }
        Outcome::Drop(d) => panic!("dropped: {d:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let open = "\"2001:db8:1::1000-2001:db8:1::ffff\"";
    let restricted = "{ range = \"2001:db8:1::1000-2001:db8:1::ffff\", client-classes = [\"c15\"] }";
    let mut g = c.benchmark_group("solicit_classes");
    for (name, classes, pool) in [
        ("no_classes", String::new(), open),
        ("16_classes_none_match", sixteen(false), open),
        ("16_classes_last_matches_restricted_pool", sixteen(true), restricted),
    ] {
        let mut e = engine(&classes, pool);
        let mut out = Vec::with_capacity(1500);
        let mut n = 0u64;
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    n += 1;
                    solicit(n)
                },
                |m| black_box(path(&mut e, &m, &mut out)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
