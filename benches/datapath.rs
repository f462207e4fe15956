//! The per-message cost of a shard's whole engine path with 1 M leases in
//! the table: datagram bytes → decode → engine → encode into a reused
//! buffer (what a shard does between its ring's receive and send, minus the
//! commit), for a Solicit, a Request and a Renew; and shard 0's cost to route
//! a multicast datagram to another shard (`wire::peek` and a copy).
//! Run with `cargo bench --bench datapath`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tandem::config::Config;
use tandem::pool::Slice;
use tandem::server::{Arrival, Engine, EngineConfig, Outcome, Standalone};
use tandem::wire::*;

const NOW: u64 = 1_800_000_000;

fn server_duid() -> Duid {
    Duid::ll(1, &[0xaa; 6])
}

fn engine() -> Engine {
    let cfg = "interfaces = [\"eth1\"]\n[[subnet]]\nprefix = \"2001:db8:1::/64\"\ninterface = \"eth1\"\npools = [\"2001:db8:1::/64\"]\n";
    let c = Config::parse(cfg).unwrap();
    Engine::new(EngineConfig {
        server_duid: server_duid(),
        subnets: c.subnets,
        slice: Slice::WHOLE,
        hash_key: 3,
        naming: None,
        limits: Default::default(),
        unicast_listen: Vec::new(),
        provisioning: Default::default(),
    })
}

fn client(n: u64) -> Duid {
    Duid::ll(1, &[0x02, (n >> 32) as u8, (n >> 24) as u8, (n >> 16) as u8, (n >> 8) as u8, n as u8])
}

fn message(t: MessageType, n: u64, server: bool, addr: Option<std::net::Ipv6Addr>) -> Vec<u8> {
    let mut o = vec![DhcpOption::ClientId(client(n)), DhcpOption::ElapsedTime(0)];
    if server {
        o.push(DhcpOption::ServerId(server_duid()));
    }
    let mut ia = Options::new();
    if let Some(a) = addr {
        ia.0.push(DhcpOption::IaAddr(IaAddr { addr: a, preferred: 0, valid: 0, options: Options::new() }));
    }
    o.push(DhcpOption::IaNa(IaNa { iaid: 1, t1: 0, t2: 0, options: ia }));
    Message::Client(ClientMessage { msg_type: t, transaction_id: (n & 0xff_ffff) as u32, options: o.into() }).encode().unwrap()
}

fn arrival() -> Arrival<'static> {
    Arrival { interface: Some("eth1"), source: "fe80::1".parse().unwrap(), destination: "ff02::1:2".parse().unwrap() }
}

/// Decode, handle, encode: the bytes of the reply.
fn path(e: &mut Engine, bytes: &[u8], out: &mut Vec<u8>) -> usize {
    let m = Message::decode(bytes).unwrap();
    match e.handle(NOW, &m, &arrival(), &Standalone) {
        Outcome::Reply(r) => {
            out.clear();
            r.message.encode_into(out).unwrap();
            out.len()
        }
        Outcome::Drop(d) => panic!("dropped: {d:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let mut e = engine();
    let mut out = Vec::with_capacity(1500);
    let mut held = Vec::new();
    for n in 0..1_000_000u64 {
        path(&mut e, &message(MessageType::Request, n, true, None), &mut out);
        if n % 1000 == 0 {
            let r = Message::decode(&out).unwrap();
            let Message::Client(r) = r else { unreachable!() };
            let a = r.options.ia_nas().next().and_then(|ia| ia.options.ia_addrs().next().map(|a| a.addr)).unwrap();
            held.push((n, a));
        }
    }
    let mut g = c.benchmark_group("datapath_1M_leases");
    g.sample_size(30);
    let mut n = 10_000_000u64;
    g.bench_function("solicit_to_advertise", |b| {
        b.iter_batched(
            || {
                n += 1;
                message(MessageType::Solicit, n, false, None)
            },
            |m| black_box(path(&mut e, &m, &mut out)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("request_to_reply", |b| {
        b.iter_batched(
            || {
                n += 1;
                message(MessageType::Request, n, true, None)
            },
            |m| black_box(path(&mut e, &m, &mut out)),
            BatchSize::SmallInput,
        )
    });
    let mut i = 0;
    g.bench_function("renew_to_reply", |b| {
        b.iter_batched(
            || {
                i = (i + 1) % held.len();
                let (n, a) = held[i];
                message(MessageType::Renew, n, true, Some(a))
            },
            |m| black_box(path(&mut e, &m, &mut out)),
            BatchSize::SmallInput,
        )
    });
    // Shard 0's work per multicast datagram it hands to another shard.
    let relayed = {
        let inner = Message::decode(&message(MessageType::Solicit, 7, false, None)).unwrap();
        let mut o = Options::new();
        o.0.push(DhcpOption::RelayMsg(Box::new(inner)));
        Message::Relay(RelayMessage {
            msg_type: MessageType::RelayForw,
            hop_count: 0,
            link_address: "2001:db8:1::1".parse().unwrap(),
            peer_address: "fe80::1".parse().unwrap(),
            options: o,
        })
        .encode()
        .unwrap()
    };
    let direct = message(MessageType::Solicit, 7, false, None);
    for (name, bytes) in [("route_solicit", direct), ("route_relayed_solicit", relayed)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let p = tandem::wire::peek::peek(black_box(&bytes)).unwrap();
                let owner = tandem::pool::hash::shard_of(p.client_id.unwrap(), 16);
                black_box((owner, bytes.to_vec()))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
