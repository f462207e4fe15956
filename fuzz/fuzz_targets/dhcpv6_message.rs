#![no_main]
//! Any UDP payload: decoding must not panic, and whatever decodes must
//! re-encode to exactly the same octets.
use libfuzzer_sys::fuzz_target;
use tandem::wire::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let again = m.encode().expect("a decoded message re-encodes");
        assert_eq!(again, data, "decode/encode is not the identity");
    }
});
