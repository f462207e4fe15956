#![no_main]
//! Relay-forward chains: the input is wrapped as the RELAY_MSG of a
//! RELAY-FORW so every run exercises the relay path, then the chain is
//! unwrapped level by level as the server does.
use libfuzzer_sys::fuzz_target;
use tandem::wire::{HOP_COUNT_LIMIT, Message};

fuzz_target!(|data: &[u8]| {
    let mut m = vec![12u8, 0];
    m.extend([0u8; 32]);
    m.extend(9u16.to_be_bytes());
    m.extend((data.len().min(65535) as u16).to_be_bytes());
    m.extend(&data[..data.len().min(65535)]);
    if let Ok(msg) = Message::decode(&m) {
        let (chain, client) = msg.unwrap_relays();
        assert!(!chain.is_empty() && chain.len() <= HOP_COUNT_LIMIT as usize);
        if let Some(c) = client {
            let _ = c.options.client_id();
            let _ = c.options.ia_nas().count();
        }
        for level in chain {
            let _ = level.options.interface_id();
        }
        assert_eq!(msg.encode().unwrap(), m);
    }
});
