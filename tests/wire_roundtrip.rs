//! Property tests for the codec: generated messages of every type survive
//! encode → decode → encode unchanged, and arbitrary bytes never panic the
//! decoder; whatever decodes re-encodes to the very same octets.

use std::net::Ipv6Addr;

use proptest::prelude::*;
use tandem::wire::*;

fn arb_addr() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

fn arb_duid() -> impl Strategy<Value = Duid> {
    prop_oneof![
        (any::<u16>(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(h, t, l)| Duid::llt(h, t, &l)),
        (any::<u32>(), prop::collection::vec(any::<u8>(), 0..20)).prop_map(|(e, i)| Duid::en(e, &i)),
        (any::<u16>(), prop::collection::vec(any::<u8>(), 0..20)).prop_map(|(h, l)| Duid::ll(h, &l)),
        any::<[u8; 16]>().prop_map(Duid::uuid),
        prop::collection::vec(any::<u8>(), 3..=130).prop_map(|b| Duid::from_bytes(&b).unwrap()),
    ]
}

fn arb_name() -> impl Strategy<Value = DomainName> {
    (prop::collection::vec("[a-z0-9-]{1,12}", 0..4), any::<bool>()).prop_map(|(labels, fq)| {
        let mut s = labels.join(".");
        if fq {
            s.push('.');
        }
        DomainName::from_dotted(&s).unwrap()
    })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn leaf_option() -> impl Strategy<Value = DhcpOption> {
    use DhcpOption as O;
    let a = prop_oneof![
        arb_duid().prop_map(O::ClientId),
        arb_duid().prop_map(O::ServerId),
        prop::collection::vec(any::<u16>(), 0..8).prop_map(O::Oro),
        any::<u8>().prop_map(O::Preference),
        any::<u16>().prop_map(O::ElapsedTime),
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<u64>(), bytes(20)).prop_map(
            |(protocol, algorithm, rdm, replay_detection, info)| O::Auth(Auth {
                protocol,
                algorithm,
                rdm,
                replay_detection,
                info
            })
        ),
        arb_addr().prop_map(O::Unicast),
        (any::<u16>(), "[ -~]{0,20}")
            .prop_map(|(c, m)| O::StatusCode(Status::new(StatusCode(c), m))),
        Just(O::RapidCommit),
        prop::collection::vec(bytes(6), 0..4).prop_map(O::UserClass),
        (any::<u32>(), prop::collection::vec(bytes(6), 0..4))
            .prop_map(|(enterprise, data)| O::VendorClass(VendorClass { enterprise, data })),
        (any::<u32>(), prop::collection::vec((any::<u16>(), bytes(6)), 0..4))
            .prop_map(|(enterprise, options)| O::VendorOpts(VendorOpts { enterprise, options })),
        bytes(10).prop_map(O::InterfaceId),
        any::<u16>().prop_map(O::RelayPort),
        any::<u8>().prop_map(O::ReconfMsg),
        Just(O::ReconfAccept),
        prop::collection::vec(arb_addr(), 0..4).prop_map(O::DnsServers),
    ];
    let b = prop_oneof![
        // Only the last name of a list may be partial; a partial one in the
        // middle would merge with the next on decoding.
        prop::collection::vec(arb_name().prop_filter("empty", |n| !n.is_empty()), 0..4).prop_map(|mut v| {
            let n = v.len();
            for (i, name) in v.iter_mut().enumerate() {
                if i + 1 < n && !name.is_fully_qualified() {
                    *name = DomainName::from_dotted(&format!("{name}.").replace("..", ".")).unwrap();
                }
            }
            O::DomainList(v)
        }),
        any::<u32>().prop_map(O::InformationRefreshTime),
        (any::<u8>(), arb_name()).prop_map(|(flags, name)| O::ClientFqdn(ClientFqdn { flags, name })),
        any::<u32>().prop_map(O::CltTime),
        (arb_addr(), bytes(20))
            .prop_map(|(peer_address, relay_message)| O::LqRelayData(LqRelayData {
                peer_address,
                relay_message
            })),
        prop::collection::vec(
            prop_oneof![
                arb_addr().prop_map(NtpSuboption::ServerAddress),
                arb_addr().prop_map(NtpSuboption::MulticastAddress),
                arb_name().prop_map(NtpSuboption::ServerFqdn),
                (4u16.., bytes(6)).prop_map(|(code, data)| NtpSuboption::Unknown { code, data }),
            ],
            0..4
        )
        .prop_map(O::NtpServer),
        (any::<u8>(), bytes(8)).prop_map(|(vss_type, info)| O::Vss { vss_type, info }),
        (any::<u16>(), bytes(8)).prop_map(|(hw_type, address)| O::ClientLinkLayerAddr { hw_type, address }),
        any::<u32>().prop_map(O::SolMaxRt),
        any::<u32>().prop_map(O::InfMaxRt),
        any::<u32>().prop_map(O::LqBaseTime),
        prop::collection::vec(arb_addr(), 1..4).prop_map(O::LqClientLink),
        prop::sample::select(BindingStatus::ALL.to_vec()).prop_map(O::BindingStatus),
        any::<u16>().prop_map(O::ConnectFlags),
        arb_name().prop_map(O::DnsHostName),
        arb_name().prop_map(O::DnsZoneName),
        any::<u16>().prop_map(O::DnsFlags),
    ];
    let c = prop_oneof![
        any::<u32>().prop_map(O::ExpirationTime),
        any::<u32>().prop_map(O::MaxUnackedBndupd),
        any::<u32>().prop_map(O::Mclt),
        any::<u32>().prop_map(O::PartnerLifetime),
        any::<u32>().prop_map(O::PartnerLifetimeSent),
        any::<u32>().prop_map(O::PartnerDownTime),
        any::<u32>().prop_map(O::PartnerRawCltTime),
        (any::<u16>(), any::<u16>()).prop_map(|(major, minor)| O::ProtocolVersion { major, minor }),
        any::<u32>().prop_map(O::KeepaliveTime),
        (any::<u32>(), bytes(16)).prop_map(|(time, key)| O::ReconfigureData { time, key }),
        "[ -~]{0,12}".prop_map(O::RelationshipName),
        any::<u8>().prop_map(O::ServerFlags),
        prop::sample::select(ServerState::ALL.to_vec()).prop_map(O::ServerState),
        any::<u32>().prop_map(O::StartTimeOfState),
        any::<u32>().prop_map(O::StateExpirationTime),
        (135u16.., bytes(12)).prop_map(|(code, data)| O::Unknown { code, data }),
    ];
    prop_oneof![a, b, c]
}

fn arb_option() -> impl Strategy<Value = DhcpOption> {
    leaf_option().prop_recursive(4, 48, 4, |inner| {
        use DhcpOption as O;
        let opts = prop::collection::vec(inner, 0..4).prop_map(Options::from);
        prop_oneof![
            (any::<u32>(), any::<u32>(), any::<u32>(), opts.clone())
                .prop_map(|(iaid, t1, t2, options)| O::IaNa(IaNa { iaid, t1, t2, options })),
            (any::<u32>(), opts.clone()).prop_map(|(iaid, options)| O::IaTa(IaTa { iaid, options })),
            (any::<u32>(), any::<u32>(), any::<u32>(), opts.clone())
                .prop_map(|(iaid, t1, t2, options)| O::IaPd(IaPd { iaid, t1, t2, options })),
            (arb_addr(), any::<u32>(), any::<u32>(), opts.clone()).prop_map(
                |(addr, preferred, valid, options)| O::IaAddr(IaAddr { addr, preferred, valid, options })
            ),
            (any::<u32>(), any::<u32>(), 0u8..=128, arb_addr(), opts.clone()).prop_map(
                |(preferred, valid, prefix_len, prefix, options)| O::IaPrefix(IaPrefix {
                    preferred,
                    valid,
                    prefix_len,
                    prefix,
                    options
                })
            ),
            opts.clone().prop_map(O::ClientData),
            (any::<u8>(), arb_addr(), opts.clone())
                .prop_map(|(query_type, link_address, options)| O::LqQuery(LqQuery { query_type, link_address, options })),
            opts.prop_map(O::DnsRemovalInfo),
        ]
    })
}

fn arb_options() -> impl Strategy<Value = Options> {
    prop::collection::vec(arb_option(), 0..6).prop_map(Options::from)
}

fn client_type() -> impl Strategy<Value = MessageType> {
    (1u8..=255)
        .prop_filter("not a relay", |c| *c != 12 && *c != 13)
        .prop_map(MessageType::from)
}

fn arb_client_message() -> impl Strategy<Value = Message> {
    (client_type(), 0u32..=0xFF_FFFF, arb_options()).prop_map(|(msg_type, transaction_id, options)| {
        Message::Client(ClientMessage { msg_type, transaction_id, options })
    })
}

fn arb_message() -> impl Strategy<Value = Message> {
    // Up to 8 relay levels, each with a relay option or two besides RELAY_MSG.
    (arb_client_message(), prop::collection::vec((any::<u8>(), arb_addr(), arb_addr(), bytes(6), any::<bool>()), 0..=8))
        .prop_map(|(mut m, levels)| {
            for (hop_count, link_address, peer_address, ifid, forw) in levels {
                let mut options = Options::new();
                options.push(DhcpOption::InterfaceId(ifid));
                options.push(DhcpOption::RelayMsg(Box::new(m)));
                m = Message::Relay(RelayMessage {
                    msg_type: if forw { MessageType::RelayForw } else { MessageType::RelayRepl },
                    hop_count,
                    link_address,
                    peer_address,
                    options,
                });
            }
            m
        })
}

fn arb_failover_message() -> impl Strategy<Value = FailoverMessage> {
    (24u8..=35, 0u32..=0xFF_FFFF, any::<u32>(), arb_options()).prop_map(
        |(t, transaction_id, sent_time, options)| FailoverMessage {
            msg_type: MessageType::from(t),
            transaction_id,
            sent_time,
            options,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn dhcpv6_messages_round_trip(m in arb_message()) {
        let bytes = m.encode().unwrap();
        let back = Message::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(back.encode().unwrap(), bytes);
    }

    #[test]
    fn failover_frames_round_trip(m in arb_failover_message()) {
        let frame = m.encode_frame().unwrap();
        let mut d = FrameDecoder::new(failover::MAX_FRAME_LEN);
        d.push(&frame).unwrap();
        let payload = d.next_frame().unwrap().unwrap().to_vec();
        let back = FailoverMessage::decode(&payload).unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(back.encode_frame().unwrap(), frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_decoded_input_is_canonical(data in bytes(300)) {
        if let Ok(m) = Message::decode(&data) {
            prop_assert_eq!(m.encode().unwrap(), data.clone());
        }
        if let Ok(m) = FailoverMessage::decode(&data) {
            let mut out = Vec::new();
            m.encode_into(&mut out).unwrap();
            prop_assert_eq!(out, data);
        }
    }

    #[test]
    fn mutated_valid_messages_never_panic(m in arb_message(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = m.encode().unwrap();
        for (i, v) in flips {
            let i = i.index(bytes.len());
            bytes[i] = v;
        }
        if let Ok(m2) = Message::decode(&bytes) {
            prop_assert_eq!(m2.encode().unwrap(), bytes);
        }
    }
}
