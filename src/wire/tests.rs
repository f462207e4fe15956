//! Byte-vector tests: one per option and message form, plus the wire examples
//! of shared/spec/failover-digest.md §15 and the decoder's error cases.

use std::net::Ipv6Addr;

use super::codes::*;
use super::failover::*;
use super::*;

fn hex(s: &str) -> Vec<u8> {
    super::hex::decode(&s.replace([' ', '\n'], "")).unwrap()
}

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// Encode `o`, compare with `bytes`, decode `bytes`, compare with `o`.
#[track_caller]
fn check(o: DhcpOption, bytes: &str) {
    let want = hex(bytes);
    let mut got = Vec::new();
    o.encode(&mut got).unwrap();
    assert_eq!(super::hex::encode(&got), super::hex::encode(&want), "encoding of {o:?}");
    let decoded = Options::decode(&want).unwrap();
    assert_eq!(decoded.0, vec![o]);
}

fn duid() -> Duid {
    Duid::llt(1, 0x2a2b3c4d, &[0, 0x11, 0x22, 0x33, 0x44, 0x55])
}

#[test]
fn client_and_server_id() {
    check(DhcpOption::ClientId(duid()), "0001 000e 0001 0001 2a2b3c4d 001122334455");
    check(DhcpOption::ServerId(Duid::en(9, b"ab")), "0002 0008 0002 00000009 6162");
    check(DhcpOption::ClientId(Duid::ll(1, &[1, 2, 3, 4, 5, 6])), "0001 000a 0003 0001 010203040506");
    check(DhcpOption::ClientId(Duid::uuid([0xab; 16])), "0001 0012 0004 abababababababababababababababab");
}

#[test]
fn ia_na_with_iaaddr_and_status() {
    let ia = DhcpOption::IaNa(IaNa {
        iaid: 1,
        t1: 1000,
        t2: 2000,
        options: vec![DhcpOption::IaAddr(IaAddr {
            addr: a("2001:db8:1::1001"),
            preferred: 3000,
            valid: 4000,
            options: vec![DhcpOption::StatusCode(Status::new(StatusCode::SUCCESS, "ok"))].into(),
        })]
        .into(),
    });
    check(
        ia,
        "0003 0030 00000001 000003e8 000007d0
         0005 0020 20010db8000100000000000000001001 00000bb8 00000fa0
         000d 0004 0000 6f6b",
    );
}

#[test]
fn ia_ta_decodes() {
    check(DhcpOption::IaTa(IaTa { iaid: 7, options: Options::new() }), "0004 0004 00000007");
}

#[test]
fn ia_pd_with_iaprefix() {
    let ia = DhcpOption::IaPd(IaPd {
        iaid: 2,
        t1: 0,
        t2: 0,
        options: vec![DhcpOption::IaPrefix(IaPrefix {
            preferred: 100,
            valid: 200,
            prefix_len: 56,
            prefix: a("2001:db8:100:ff00::"),
            options: Options::new(),
        })]
        .into(),
    });
    check(
        ia,
        "0019 0029 00000002 00000000 00000000
         001a 0019 00000064 000000c8 38 20010db80100ff000000000000000000",
    );
}

#[test]
fn small_fixed_options() {
    check(DhcpOption::Oro(vec![23, 24, 39]), "0006 0006 0017 0018 0027");
    check(DhcpOption::Preference(255), "0007 0001 ff");
    check(DhcpOption::ElapsedTime(0x1234), "0008 0002 1234");
    check(DhcpOption::Unicast(a("2001:db8::1")), "000c 0010 20010db8000000000000000000000001");
    check(DhcpOption::RapidCommit, "000e 0000");
    check(DhcpOption::ReconfMsg(5), "0013 0001 05");
    check(DhcpOption::ReconfAccept, "0014 0000");
    check(DhcpOption::InformationRefreshTime(86400), "0020 0004 00015180");
    check(DhcpOption::SolMaxRt(3600), "0052 0004 00000e10");
    check(DhcpOption::InfMaxRt(3600), "0053 0004 00000e10");
    check(DhcpOption::CltTime(5), "002e 0004 00000005");
    check(DhcpOption::LqBaseTime(0x2d24bd00), "0064 0004 2d24bd00");
}

#[test]
fn auth_and_classes() {
    check(
        DhcpOption::Auth(Auth {
            protocol: 3,
            algorithm: 1,
            rdm: 0,
            replay_detection: 1,
            info: vec![1, 0xaa, 0xbb],
        }),
        "000b 000e 03 01 00 0000000000000001 01aabb",
    );
    check(DhcpOption::UserClass(vec![b"ab".to_vec(), vec![]]), "000f 0006 0002 6162 0000");
    check(
        DhcpOption::VendorClass(VendorClass { enterprise: 4491, data: vec![b"x".to_vec()] }),
        "0010 0007 0000118b 0001 78",
    );
    check(
        DhcpOption::VendorOpts(VendorOpts { enterprise: 4491, options: vec![(1, vec![9, 9])] }),
        "0011 000a 0000118b 0001 0002 0909",
    );
    check(DhcpOption::InterfaceId(b"eth0".to_vec()), "0012 0004 65746830");
    // RFC 8357 §6: OPTION_RELAY_PORT (135), the downstream source port.
    check(DhcpOption::RelayPort(5547), "0087 0002 15ab");
}

#[test]
fn dns_options() {
    check(
        DhcpOption::DnsServers(vec![a("2001:db8::53"), a("2001:db8::54")]),
        "0017 0020 20010db8000000000000000000000053 20010db8000000000000000000000054",
    );
    check(
        DhcpOption::DomainList(vec![
            DomainName::from_dotted("example.net.").unwrap(),
            DomainName::from_dotted("a.b.").unwrap(),
        ]),
        "0018 0012 076578616d706c65036e657400 01610162 00",
    );
    check(
        DhcpOption::ClientFqdn(ClientFqdn {
            flags: FQDN_FLAG_S,
            name: DomainName::from_dotted("host").unwrap(),
        }),
        "0027 0006 01 04686f7374",
    );
    check(
        DhcpOption::NtpServer(vec![
            NtpSuboption::ServerAddress(a("2001:db8::123")),
            NtpSuboption::MulticastAddress(a("ff05::101")),
            NtpSuboption::ServerFqdn(DomainName::from_dotted("ntp.").unwrap()),
            NtpSuboption::Unknown { code: 9, data: vec![1] },
        ]),
        "0038 0036 0001 0010 20010db8000000000000000000000123
                   0002 0010 ff050000000000000000000000000101
                   0003 0005 036e747000
                   0009 0001 01",
    );
}

#[test]
fn client_data_and_relay_data() {
    check(
        DhcpOption::ClientData(
            vec![DhcpOption::ClientId(Duid::ll(1, &[1])), DhcpOption::LqBaseTime(1)].into(),
        ),
        "002d 0011 0001 0005 0003000101 0064 0004 00000001",
    );
    check(
        DhcpOption::LqRelayData(LqRelayData {
            peer_address: a("fe80::1"),
            relay_message: vec![0x0c, 0],
        }),
        "002f 0012 fe800000000000000000000000000001 0c00",
    );
    check(DhcpOption::ClientLinkLayerAddr { hw_type: 1, address: vec![1, 2, 3, 4, 5, 6] }, "004f 0008 0001 010203040506");
    check(DhcpOption::Vss { vss_type: 255, info: vec![] }, "0044 0001 ff");
}

#[test]
fn failover_options() {
    check(DhcpOption::BindingStatus(BindingStatus::FreeBackup), "0072 0001 06");
    check(DhcpOption::ConnectFlags(CONNECT_FLAG_FIXED_PD_LENGTH), "0073 0002 0001");
    check(
        DhcpOption::DnsRemovalInfo(
            vec![
                DhcpOption::DnsHostName(DomainName::from_dotted("h.example.").unwrap()),
                DhcpOption::DnsZoneName(DomainName::from_dotted("example.").unwrap()),
                DhcpOption::DnsFlags(DNS_FLAG_USING_REQUESTED_FQDN | DNS_FLAG_FWD_UPTODATE),
            ]
            .into(),
        ),
        "0074 0022 0075 000b 0168076578616d706c6500 0076 0009 076578616d706c6500 0077 0002 0009",
    );
    check(DhcpOption::ExpirationTime(1), "0078 0004 00000001");
    check(DhcpOption::MaxUnackedBndupd(64), "0079 0004 00000040");
    check(DhcpOption::Mclt(3600), "007a 0004 00000e10");
    check(DhcpOption::PartnerLifetime(2), "007b 0004 00000002");
    check(DhcpOption::PartnerLifetimeSent(3), "007c 0004 00000003");
    check(DhcpOption::PartnerDownTime(4), "007d 0004 00000004");
    check(DhcpOption::PartnerRawCltTime(5), "007e 0004 00000005");
    check(DhcpOption::ProtocolVersion { major: 1, minor: 0 }, "007f 0004 0001 0000");
    check(DhcpOption::KeepaliveTime(60), "0080 0004 0000003c");
    check(DhcpOption::ReconfigureData { time: 6, key: vec![0x11; 16] }, "0081 0014 00000006 11111111111111111111111111111111");
    check(DhcpOption::RelationshipName("fo1".into()), "0082 0003 666f31");
    check(DhcpOption::ServerFlags(SERVER_FLAG_STARTUP | SERVER_FLAG_COMMUNICATED), "0083 0001 03");
    check(DhcpOption::ServerState(ServerState::RecoverWait), "0084 0001 07");
    check(DhcpOption::StartTimeOfState(7), "0085 0004 00000007");
    check(DhcpOption::StateExpirationTime(8), "0086 0004 00000008");
}

#[test]
fn unknown_options_are_kept_verbatim() {
    check(DhcpOption::Unknown { code: 0xfff0, data: vec![1, 2, 3] }, "fff0 0003 010203");
    check(DhcpOption::Unknown { code: 37, data: vec![] }, "0025 0000");
}

#[test]
fn solicit_message_round_trip() {
    let bytes = hex("01 abcdef  0001 000a 00030001010203040506  0008 0002 0000  0003 000c 00000001 00000000 00000000  000e 0000");
    let m = Message::decode(&bytes).unwrap();
    let Message::Client(c) = &m else { panic!("not a client message") };
    assert_eq!(c.msg_type, MessageType::Solicit);
    assert_eq!(c.transaction_id, 0xabcdef);
    assert_eq!(c.options.client_id(), Some(&Duid::ll(1, &[1, 2, 3, 4, 5, 6])));
    assert_eq!(c.options.ia_nas().next().unwrap().iaid, 1);
    assert!(c.options.has(opt::RAPID_COMMIT));
    assert_eq!(m.encode().unwrap(), bytes);
}

#[test]
fn nested_relays_unwrap_in_order() {
    let inner = hex("0b 000001 0001 0005 0003000101");
    let mut relay1 = hex("0c 00 20010db8000100000000000000000001 fe800000000000000000000000000002");
    relay1.extend(hex(&format!("0012 0002 6131 0009 {:04x}", inner.len())));
    relay1.extend(&inner);
    let mut relay2 = hex("0c 01 00000000000000000000000000000000 20010db8000900000000000000000001");
    relay2.extend(hex(&format!("0009 {:04x}", relay1.len())));
    relay2.extend(&relay1);
    let m = Message::decode(&relay2).unwrap();
    let (chain, client) = m.unwrap_relays();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].hop_count, 1);
    assert_eq!(chain[1].link_address, a("2001:db8:1::1"));
    assert_eq!(chain[1].options.interface_id(), Some(&b"a1"[..]));
    assert_eq!(client.unwrap().msg_type, MessageType::InformationRequest);
    assert_eq!(m.encode().unwrap(), relay2);
}

#[test]
fn relay_nesting_beyond_hop_limit_is_rejected() {
    let mut m = hex("0b 000001");
    for hop in 0..=HOP_COUNT_LIMIT {
        let mut r = vec![12, hop];
        r.extend([0u8; 32]);
        r.extend(hex(&format!("0009 {:04x}", m.len())));
        r.extend(&m);
        m = r;
    }
    let e = Message::decode(&m).unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::InvalidValue(_)), "{e}");
}

#[test]
fn deep_option_nesting_is_rejected_without_recursion_blowup() {
    // IA_NA inside IA_NA ... 1000 levels: must error, not overflow the stack.
    let mut body = Vec::new();
    for _ in 0..1000 {
        let mut o = hex(&format!("0003 {:04x} 00000001 00000000 00000000", 12 + body.len()));
        o.extend(&body);
        body = o;
        if body.len() > 60000 {
            break;
        }
    }
    let mut m = hex("01 000001");
    m.extend(&body);
    let e = Message::decode(&m).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::TooDeep);
}

#[test]
fn errors_name_message_and_option() {
    // IA_NA with a 5-octet body inside a SOLICIT.
    let e = Message::decode(&hex("01 000001 0003 0005 0000000100")).unwrap_err();
    assert_eq!(e.msg_type, Some(1));
    assert_eq!(e.option, Some(opt::IA_NA));
    assert!(matches!(e.kind, DecodeErrorKind::BadLength { len: 5, .. }));
    assert_eq!(e.to_string(), "in SOLICIT message, in option 3 (IA_NA): length 5 is wrong: expected at least 12 octets");
    // Option header claiming more than is there.
    let e = Message::decode(&hex("03 000001 0001 00ff 00")).unwrap_err();
    assert_eq!(e.option, Some(opt::CLIENTID));
    assert!(matches!(e.kind, DecodeErrorKind::OptionOverrun { declared: 255, available: 1 }));
    // Truncated header, empty input, half an option header.
    assert!(Message::decode(&[]).is_err());
    assert!(Message::decode(&[1, 0, 0]).is_err());
    assert!(Message::decode(&hex("0c00")).is_err());
    assert!(Message::decode(&hex("01 000001 00")).is_err());
    // Inner errors keep the innermost option code.
    let e = Message::decode(&hex("01 000001 0003 0010 00000001 00000000 00000000 0072 0000")).unwrap_err();
    assert_eq!(e.option, Some(opt::F_BINDING_STATUS));
    // Invalid values.
    // Binding status and server state values this version does not know are
    // kept raw (the binding, or the STATE, is refused, not the message).
    for raw in ["0072 0001 09", "0084 0001 00"] {
        let o = Options::decode(&hex(raw)).unwrap();
        assert!(matches!(o.0[0], DhcpOption::Unknown { .. }), "{raw}");
        let mut back = Vec::new();
        o.encode(&mut back).unwrap();
        assert_eq!(back, hex(raw), "kept byte for byte");
    }
    assert!(Options::decode(&hex("001a 0019 00000000 00000000 81 00000000000000000000000000000000")).is_err(), "prefix length 129");
    assert!(Options::decode(&hex("000d 0003 00 00 ff")).is_err(), "status message not UTF-8");
    assert!(Options::decode(&hex("0006 0003 000100")).is_err(), "odd ORO");
    assert!(Options::decode(&hex("0001 0002 0001")).is_err(), "DUID too short");
}

// Wire examples from shared/spec/failover-digest.md §15.
const T2024: u32 = 757_382_400;

#[test]
fn digest_example_contact() {
    let frame = hex("0008 23 000001 2d24bd00");
    let m = FailoverMessage::new(MessageType::Contact, 1, T2024);
    assert_eq!(abs_time(1_704_067_200), T2024);
    assert_eq!(unix_time(T2024), 1_704_067_200);
    assert_eq!(m.encode_frame().unwrap(), frame);
    assert_eq!(FailoverMessage::decode(&frame[2..]).unwrap(), m);
}

#[test]
fn digest_example_connect() {
    let frame = hex(
        "0035 1f 000002 2d24bd00
         007f 0004 0001 0000
         007a 0004 00000e10
         0080 0004 0000003c
         0079 0004 00000064
         0082 0003 666f31
         0073 0002 0001",
    );
    let p = failover::ConnectParams {
        protocol_version: PROTOCOL_VERSION,
        mclt: 3600,
        keepalive_time: 60,
        max_unacked_bndupd: 100,
        relationship_name: Some("fo1".into()),
        connect_flags: CONNECT_FLAG_FIXED_PD_LENGTH,
    };
    let m = p.to_message(MessageType::Connect, 2, T2024);
    assert_eq!(m.encode_frame().unwrap(), frame);
    let back = FailoverMessage::decode(&frame[2..]).unwrap();
    assert_eq!(failover::ConnectParams::from_message(&back).unwrap(), p);
}

#[test]
fn digest_example_state() {
    let frame = hex(
        "001a 22 000003 2d24bd00
         0084 0001 02
         0083 0001 01
         0085 0004 2d24bc9c",
    );
    let p = failover::StateParams {
        state: ServerState::Normal,
        flags: SERVER_FLAG_COMMUNICATED,
        start_time_of_state: T2024 - 100,
        partner_down_time: None,
    };
    assert_eq!(p.to_message(3, T2024).encode_frame().unwrap(), frame);
    let back = FailoverMessage::decode(&frame[2..]).unwrap();
    assert_eq!(failover::StateParams::from_message(&back).unwrap(), p);
}

#[test]
fn bndupd_with_client_data_round_trips_and_is_checked() {
    let lease = DhcpOption::IaAddr(IaAddr {
        addr: a("2001:db8:1::1001"),
        preferred: 3000,
        valid: 4000,
        options: vec![
            DhcpOption::BindingStatus(BindingStatus::Active),
            DhcpOption::StartTimeOfState(T2024),
            DhcpOption::StateExpirationTime(T2024 + 4000),
            DhcpOption::CltTime(0),
            DhcpOption::PartnerLifetime(T2024 + 7600),
            DhcpOption::PartnerRawCltTime(0),
            DhcpOption::ExpirationTime(0),
        ]
        .into(),
    });
    let cd = DhcpOption::ClientData(
        vec![
            DhcpOption::ClientId(duid()),
            DhcpOption::LqBaseTime(T2024),
            DhcpOption::IaNa(IaNa { iaid: 1, t1: 1000, t2: 2000, options: vec![lease].into() }),
        ]
        .into(),
    );
    let m = FailoverMessage::new(MessageType::BndUpd, 9, T2024).with(cd);
    let frame = m.encode_frame().unwrap();
    let back = FailoverMessage::decode(&frame[2..]).unwrap();
    assert_eq!(back, m);
    assert!(matches!(failover::BindingBody::of(&back), Ok(failover::BindingBody::ClientData(_))));
    let empty = FailoverMessage::new(MessageType::BndUpd, 10, T2024);
    assert_eq!(failover::BindingBody::of(&empty), Err(failover::ContentError::NotExactlyOneBinding));
}

#[test]
fn disconnect_carries_status() {
    let m = failover::disconnect(4, T2024, StatusCode::SERVER_SHUTTING_DOWN, "bye");
    let f = m.encode_frame().unwrap();
    assert_eq!(f, hex("0011 21 000004 2d24bd00 000d 0005 0014 627965"));
    let back = FailoverMessage::decode(&f[2..]).unwrap();
    assert_eq!(back.status().unwrap().code, StatusCode::SERVER_SHUTTING_DOWN);
}

#[test]
fn failover_decode_rejects_non_failover_types_and_short_headers() {
    assert!(FailoverMessage::decode(&hex("01 000001 00000000")).is_err());
    assert!(FailoverMessage::decode(&hex("23 000001 0000")).is_err());
    assert!(FailoverMessage::decode(&[]).is_err());
}

#[test]
fn frame_decoder_splits_a_stream_at_any_boundary() {
    let mut stream = Vec::new();
    let msgs: Vec<FailoverMessage> = (1..=5)
        .map(|i| FailoverMessage::new(MessageType::Contact, i, T2024 + i))
        .collect();
    for m in &msgs {
        stream.extend(m.encode_frame().unwrap());
    }
    for chunk in 1..stream.len() {
        let mut d = FrameDecoder::new(MAX_FRAME_LEN);
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            d.push(piece).unwrap();
            while let Some(f) = d.next_frame().unwrap() {
                got.push(FailoverMessage::decode(f).unwrap());
            }
        }
        assert_eq!(got, msgs, "chunk size {chunk}");
        assert_eq!(d.buffered(), 0);
    }
}

#[test]
fn frame_decoder_enforces_limits() {
    let mut d = FrameDecoder::new(100);
    d.push(&hex("0065")).unwrap(); // 101 > 100
    assert!(matches!(d.next_frame().unwrap_err().kind, DecodeErrorKind::BadFrameLength { len: 101, .. }));
    let mut d = FrameDecoder::new(100);
    d.push(&hex("0002 0000")).unwrap(); // shorter than any header
    assert!(d.next_frame().is_err());
    let mut d = FrameDecoder::new(100);
    d.push(&[0u8; 204]).unwrap();
    assert!(d.push(&[0u8; 1]).is_err(), "buffer bounded at 2 frames");
}

#[test]
fn leasequery_options_and_messages() {
    // OPTION_LQ_QUERY (44): QUERY_BY_ADDRESS, link ::, an IAADDR and an ORO.
    check(
        DhcpOption::LqQuery(LqQuery {
            query_type: 1,
            link_address: a("::"),
            options: vec![
                DhcpOption::IaAddr(IaAddr { addr: a("2001:db8::5"), preferred: 0, valid: 0, options: Options::new() }),
                DhcpOption::Oro(vec![47]),
            ]
            .into(),
        }),
        "002c 0033 01 00000000000000000000000000000000
         0005 0018 20010db8000000000000000000000005 00000000 00000000
         0006 0002 002f",
    );
    // QUERY_BY_LINK_ADDRESS: no query options.
    check(
        DhcpOption::LqQuery(LqQuery { query_type: 4, link_address: a("2001:db8:1::1"), options: Options::new() }),
        "002c 0011 04 20010db8000100000000000000000001",
    );
    // OPTION_LQ_CLIENT_LINK (48): a list of links.
    check(DhcpOption::LqClientLink(vec![a("2001:db8:1::"), a("2001:db8:2::")]), "0030 0020 20010db8000100000000000000000000 20010db8000200000000000000000000");
    // OPTION_RELAY_ID (53) and OPTION_REMOTE_ID (37) are kept raw (a relay's
    // own formats); the leasequery module reads them as octets.
    check(DhcpOption::Unknown { code: opt::RELAY_ID, data: hex("00030001 020000000001") }, "0035 000a 00030001020000000001");
    check(DhcpOption::Unknown { code: opt::REMOTE_ID, data: hex("00000009 07") }, "0025 0005 0000000907");
    // Malformed: a query shorter than its fixed part, a link list not of 16s.
    assert!(Options::decode(&hex("002c 0010 01 000000000000000000000000000000")).is_err());
    assert!(Options::decode(&hex("0030 0000")).is_err());
    assert!(Options::decode(&hex("0030 0004 00000000")).is_err());
    // The four message types (RFC 5007 §4.1.1, RFC 5460 §5.2).
    for (code, t) in [(14, MessageType::LeaseQuery), (15, MessageType::LeaseQueryReply), (16, MessageType::LeaseQueryDone), (17, MessageType::LeaseQueryData)] {
        assert_eq!(MessageType::from(code), t);
        assert_eq!(t.code(), code);
        let bytes = hex(&format!("{code:02x} 123456 000d 0002 0000"));
        let m = Message::decode(&bytes).unwrap();
        assert_eq!(m.msg_type(), t);
        assert_eq!(m.encode().unwrap(), bytes);
    }
    assert_eq!(MessageType::LeaseQueryReply.to_string(), "LEASEQUERY-REPLY");
    assert_eq!(StatusCode::QUERY_TERMINATED.name(), "QueryTerminated");
    // A whole LEASEQUERY as a requestor sends it.
    let bytes = hex("0e 000102  0001 0005 0003000101  002c 001a 02 00000000000000000000000000000000 0001 0005 0003000102");
    let m = Message::decode(&bytes).unwrap();
    assert_eq!(m.encode().unwrap(), bytes);
}
