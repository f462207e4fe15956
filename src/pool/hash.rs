//! Keyed hashing of clients, stable across runs and builds (allocation and
//! shard dispatch must agree between processes and restarts).

/// splitmix64 finalizer.
fn fmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash bytes under a key.
pub fn hash_bytes(key: u64, data: &[u8]) -> u64 {
    let mut h = fmix(key ^ 0x9e37_79b9_7f4a_7c15 ^ data.len() as u64);
    for chunk in data.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = fmix(h ^ u64::from_le_bytes(w)).rotate_left(23);
    }
    fmix(h)
}

/// Derive the n-th probe from a seed.
pub fn mix(seed: u64, n: u64) -> u64 {
    fmix(seed ^ fmix(n.wrapping_add(0x632b_e59b_d9b4_e019)))
}

/// The shard that owns a client. Runtime dispatch and the engine's slices use this.
pub fn shard_of(duid: &[u8], shards: u32) -> u32 {
    (hash_bytes(0x7461_6e64_656d, duid) % shards.max(1) as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        assert_eq!(hash_bytes(1, b"abc"), hash_bytes(1, b"abc"));
        assert_ne!(hash_bytes(1, b"abc"), hash_bytes(2, b"abc"));
        assert_ne!(hash_bytes(1, b"abc"), hash_bytes(1, b"abd"));
        let mut counts = [0u32; 4];
        for i in 0u32..4000 {
            counts[shard_of(&i.to_be_bytes(), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }
}
