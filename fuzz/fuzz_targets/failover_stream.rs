#![no_main]
//! A TCP byte stream from the failover partner, cut into reads at the
//! positions the first bytes choose. Frames must come out intact, bounded,
//! and every decodable message must re-encode to its frame.
use libfuzzer_sys::fuzz_target;
use tandem::wire::failover::{FailoverMessage, FrameDecoder};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = 64 + (data[0] as usize) * 64; // vary the frame limit
    let step = 1 + data[1] as usize;
    let mut d = FrameDecoder::new(max);
    for chunk in data[2..].chunks(step) {
        if d.push(chunk).is_err() {
            return;
        }
        loop {
            match d.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= max);
                    if let Ok(m) = FailoverMessage::decode(frame) {
                        let mut out = Vec::new();
                        m.encode_into(&mut out).unwrap();
                        assert_eq!(out, frame);
                    }
                }
                Ok(None) => break,
                Err(_) => return, // the connection would be dropped
            }
        }
        assert!(d.buffered() <= 2 * (max + 2));
    }
});
