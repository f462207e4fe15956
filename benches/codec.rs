//! Codec throughput: decode and encode a typical Solicit, Reply and BNDUPD.
//! Run with `cargo bench --bench codec`.

use std::hint::black_box;
use std::net::Ipv6Addr;

use criterion::{Criterion, criterion_group, criterion_main};
use tandem::wire::*;

fn client_duid() -> Duid {
    Duid::llt(1, 0x2a2b3c4d, &[0, 0x11, 0x22, 0x33, 0x44, 0x55])
}

fn solicit() -> Message {
    Message::Client(ClientMessage {
        msg_type: MessageType::Solicit,
        transaction_id: 0x123456,
        options: vec![
            DhcpOption::ClientId(client_duid()),
            DhcpOption::ElapsedTime(0),
            DhcpOption::Oro(vec![opt::DNS_SERVERS, opt::DOMAIN_LIST, opt::NTP_SERVER]),
            DhcpOption::IaNa(IaNa { iaid: 1, t1: 0, t2: 0, options: Options::new() }),
            DhcpOption::IaPd(IaPd { iaid: 2, t1: 0, t2: 0, options: Options::new() }),
        ]
        .into(),
    })
}

fn reply() -> Message {
    let addr: Ipv6Addr = "2001:db8:1::1001".parse().unwrap();
    let prefix: Ipv6Addr = "2001:db8:100:ff00::".parse().unwrap();
    Message::Client(ClientMessage {
        msg_type: MessageType::Reply,
        transaction_id: 0x123456,
        options: vec![
            DhcpOption::ServerId(Duid::llt(1, 1, &[2; 6])),
            DhcpOption::ClientId(client_duid()),
            DhcpOption::IaNa(IaNa {
                iaid: 1,
                t1: 1000,
                t2: 2000,
                options: vec![DhcpOption::IaAddr(IaAddr { addr, preferred: 3000, valid: 4000, options: Options::new() })]
                    .into(),
            }),
            DhcpOption::IaPd(IaPd {
                iaid: 2,
                t1: 1000,
                t2: 2000,
                options: vec![DhcpOption::IaPrefix(IaPrefix {
                    preferred: 3000,
                    valid: 4000,
                    prefix_len: 56,
                    prefix,
                    options: Options::new(),
                })]
                .into(),
            }),
            DhcpOption::DnsServers(vec!["2001:db8:1::53".parse().unwrap()]),
            DhcpOption::DomainList(vec![DomainName::from_dotted("example.net.").unwrap()]),
        ]
        .into(),
    })
}

fn bndupd() -> FailoverMessage {
    let t = 757_382_400;
    let lease_opts: Options = vec![
        DhcpOption::BindingStatus(BindingStatus::Active),
        DhcpOption::StartTimeOfState(t),
        DhcpOption::StateExpirationTime(t + 4000),
        DhcpOption::CltTime(0),
        DhcpOption::PartnerLifetime(t + 7600),
        DhcpOption::PartnerRawCltTime(t - 10),
        DhcpOption::ExpirationTime(t + 3600),
    ]
    .into();
    FailoverMessage::new(MessageType::BndUpd, 77, t).with(DhcpOption::ClientData(
        vec![
            DhcpOption::ClientId(client_duid()),
            DhcpOption::LqBaseTime(t),
            DhcpOption::IaNa(IaNa {
                iaid: 1,
                t1: 1000,
                t2: 2000,
                options: vec![DhcpOption::IaAddr(IaAddr {
                    addr: "2001:db8:1::1001".parse().unwrap(),
                    preferred: 3000,
                    valid: 4000,
                    options: lease_opts,
                })]
                .into(),
            }),
        ]
        .into(),
    ))
}

fn bench(c: &mut Criterion) {
    for (name, m) in [("solicit", solicit()), ("reply", reply())] {
        let bytes = m.encode().unwrap();
        c.bench_function(&format!("decode_{name}"), |b| b.iter(|| Message::decode(black_box(&bytes)).unwrap()));
        c.bench_function(&format!("encode_{name}"), |b| b.iter(|| black_box(&m).encode().unwrap()));
    }
    let u = bndupd();
    let frame = u.encode_frame().unwrap();
    c.bench_function("decode_bndupd", |b| b.iter(|| FailoverMessage::decode(black_box(&frame[2..])).unwrap()));
    c.bench_function("encode_bndupd", |b| b.iter(|| black_box(&u).encode_frame().unwrap()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
