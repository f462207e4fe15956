#![no_main]
//! Any UDP payload: decoding must not panic, and whatever decodes must
//! re-encode to exactly the same octets. A LEASEQUERY is also taken apart
//! as the server does (over UDP and over TCP), and a relay chain kept with a
//! lease is read for its relay-id, remote-id and link: none may panic.
use libfuzzer_sys::fuzz_target;
use tandem::wire::{Duid, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let again = m.encode().expect("a decoded message re-encodes");
        assert_eq!(again, data, "decode/encode is not the identity");
        let server = Duid::ll(1, &[0xaa; 6]);
        let _ = tandem::leasequery::parse(&m, &server, false);
        let _ = tandem::leasequery::parse(&m, &server, true);
    }
    let r = tandem::lease::RelayData { peer: std::net::Ipv6Addr::UNSPECIFIED, message: data.to_vec() };
    let _ = (r.relay_id(), r.remote_id(), r.link_address());
});
