//! Packets captured from real software (tests/fixtures/capture.sh: ISC
//! dhclient -6, Kea's perfdhcp and Kea kea-dhcp6 in network namespaces)
//! decode to the values in tests/fixtures/README.md and re-encode exactly.

use std::net::Ipv6Addr;

use tandem::wire::*;

fn load(name: &str) -> (Vec<u8>, Message) {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let m = Message::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(m.encode().unwrap(), bytes, "{name} does not re-encode byte-exactly");
    (bytes, m)
}

fn client(m: &Message) -> &ClientMessage {
    match m {
        Message::Client(c) => c,
        Message::Relay(_) => panic!("expected a client/server message"),
    }
}

fn codes(o: &Options) -> Vec<u16> {
    o.iter().map(DhcpOption::code).collect()
}

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

const DHCLIENT_DUID: &str = "00030001020000000002";
const KEA_DUID: &str = "00030001020000000001";

#[test]
fn every_fixture_decodes_and_re_encodes() {
    let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "bin") {
            load(p.file_name().unwrap().to_str().unwrap());
            n += 1;
        }
    }
    assert!(n >= 20, "expected the captured fixtures, found {n}");
}

#[test]
fn dhclient_solicit() {
    let (bytes, m) = load("dhclient-solicit.bin");
    assert_eq!(bytes.len(), 52);
    let c = client(&m);
    assert_eq!(c.msg_type, MessageType::Solicit);
    assert_eq!(c.transaction_id, 0x2b3963);
    assert_eq!(codes(&c.options), vec![1, 6, 8, 3]);
    let duid = c.options.client_id().unwrap();
    assert_eq!(duid.to_hex(), DHCLIENT_DUID);
    assert_eq!(duid.kind(), DuidKind::Ll { hw_type: 1, link_layer: &[2, 0, 0, 0, 0, 2] });
    assert_eq!(c.options.oro(), &[23, 24, 39, 31]);
    let ia = c.options.ia_nas().next().unwrap();
    assert_eq!((ia.iaid, ia.t1, ia.t2), (2, 3600, 5400));
    assert!(ia.options.is_empty());
    assert!(c.options.server_id().is_none());
}

#[test]
fn dhclient_request_renew_release_confirm() {
    for (file, t, xid) in [
        ("dhclient-request.bin", MessageType::Request, 0x30e6c6),
        ("dhclient-renew.bin", MessageType::Renew, 0xd4915e),
    ] {
        let (_, m) = load(file);
        let c = client(&m);
        assert_eq!((c.msg_type, c.transaction_id), (t, xid));
        assert_eq!(codes(&c.options), vec![1, 2, 6, 8, 3]);
        assert_eq!(c.options.server_id().unwrap().to_hex(), KEA_DUID);
        let ia = c.options.ia_nas().next().unwrap();
        assert_eq!((ia.iaid, ia.t1, ia.t2), (2, 3600, 5400));
        let addr = ia.options.ia_addrs().next().unwrap();
        assert_eq!((addr.addr, addr.preferred, addr.valid), (a("2001:db8:1::100"), 7200, 7500));
    }
    let (_, m) = load("dhclient-release.bin");
    let c = client(&m);
    assert_eq!(c.msg_type, MessageType::Release);
    let ia = c.options.ia_nas().next().unwrap();
    let addr = ia.options.ia_addrs().next().unwrap();
    assert_eq!((ia.t1, ia.t2, addr.addr, addr.preferred, addr.valid), (0, 0, a("2001:db8:1::100"), 0, 0));
    let (_, m) = load("dhclient-confirm.bin");
    let c = client(&m);
    assert_eq!(c.msg_type, MessageType::Confirm);
    assert_eq!(codes(&c.options), vec![1, 6, 8, 3]);
}

#[test]
fn dhclient_prefix_delegation() {
    let (_, m) = load("dhclient-pd-solicit.bin");
    assert_eq!(codes(&client(&m).options), vec![1, 6, 8, 25]);
    let (_, m) = load("dhclient-pd-request.bin");
    let c = client(&m);
    assert_eq!(c.msg_type, MessageType::Request);
    let pd = c.options.ia_pds().next().unwrap();
    let p = pd.options.ia_prefixes().next().unwrap();
    assert_eq!((p.prefix, p.prefix_len, p.preferred, p.valid), (a("2001:db8:100::"), 56, 7200, 7500));
}

#[test]
fn kea_advertise_and_replies() {
    for file in ["kea-advertise.bin", "kea-reply.bin", "kea-reply-renew.bin"] {
        let (bytes, m) = load(file);
        assert_eq!(bytes.len(), 96);
        let c = client(&m);
        assert_eq!(codes(&c.options), vec![1, 2, 3, 23]);
        assert_eq!(c.options.server_id().unwrap().to_hex(), KEA_DUID);
        assert_eq!(c.options.client_id().unwrap().to_hex(), DHCLIENT_DUID);
        let ia = c.options.ia_nas().next().unwrap();
        assert_eq!((ia.iaid, ia.t1, ia.t2), (2, 4, 6));
        let addr = ia.options.ia_addrs().next().unwrap();
        assert_eq!((addr.addr, addr.preferred, addr.valid), (a("2001:db8:1::100"), 3000, 4000));
        assert_eq!(c.options.get(opt::DNS_SERVERS), Some(&DhcpOption::DnsServers(vec![a("2001:db8:1::53")])));
    }
    let (_, m) = load("kea-advertise.bin");
    assert_eq!(m.msg_type(), MessageType::Advertise);
    let (_, m) = load("kea-reply-pd.bin");
    let c = client(&m);
    assert_eq!(codes(&c.options), vec![1, 2, 23, 25]);
    let p = c.options.ia_pds().next().unwrap().options.ia_prefixes().next().unwrap();
    assert_eq!((p.prefix, p.prefix_len, p.preferred, p.valid), (a("2001:db8:100::"), 56, 3000, 4000));
}

#[test]
fn kea_status_codes() {
    let (_, m) = load("kea-reply-confirm.bin");
    let s = client(&m).options.status().unwrap();
    assert_eq!((s.code, s.message.as_str()), (StatusCode::SUCCESS, "All addresses are on-link"));
    let (_, m) = load("kea-reply-release.bin");
    let c = client(&m);
    assert_eq!(codes(&c.options), vec![1, 2, 3, 13]);
    assert_eq!(c.options.status().unwrap().message, "Summary status for all processed IA_NAs");
    let ia = c.options.ia_nas().next().unwrap();
    assert_eq!(ia.options.status().unwrap().message, "Lease released. Thank you, please come again.");
}

#[test]
fn perfdhcp_exchange() {
    let (_, m) = load("perfdhcp-solicit.bin");
    let c = client(&m);
    assert_eq!((c.msg_type, c.transaction_id), (MessageType::Solicit, 0));
    assert_eq!(codes(&c.options), vec![1, 3, 6, 8]);
    let duid = c.options.client_id().unwrap();
    assert!(matches!(duid.kind(), DuidKind::Llt { hw_type: 1, link_layer: &[0, 0x0c, 1, 2, 3, 4], .. }));
    assert_eq!(c.options.oro(), &[23, 24]);
    let (_, m) = load("perfdhcp-request.bin");
    let c = client(&m);
    assert_eq!((c.msg_type, c.transaction_id), (MessageType::Request, 1));
    let addr = c.options.ia_nas().next().unwrap().options.ia_addrs().next().unwrap().clone();
    assert_eq!(addr.addr, a("2001:db8:1::101"));
    let (_, m) = load("kea-reply-perfdhcp.bin");
    assert_eq!(codes(&client(&m).options), vec![1, 2, 3]);
}

#[test]
fn perfdhcp_relayed_and_kea_relay_reply() {
    for (file, t, inner) in [
        ("perfdhcp-relay-forw-solicit.bin", MessageType::RelayForw, MessageType::Solicit),
        ("perfdhcp-relay-forw-request.bin", MessageType::RelayForw, MessageType::Request),
        ("kea-relay-repl.bin", MessageType::RelayRepl, MessageType::Advertise),
        ("kea-relay-repl-reply.bin", MessageType::RelayRepl, MessageType::Reply),
    ] {
        let (_, m) = load(file);
        assert_eq!(m.msg_type(), t);
        let (chain, c) = m.unwrap_relays();
        assert_eq!(chain.len(), 1);
        assert_eq!(chain[0].hop_count, 0);
        assert_eq!(chain[0].link_address, a("fe80::ff:fe00:2"));
        assert_eq!(chain[0].peer_address, a("fe80::ff:fe00:2"));
        assert_eq!(codes(&chain[0].options), vec![9]);
        assert_eq!(c.unwrap().msg_type, inner);
    }
}
