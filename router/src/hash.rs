//! The fixed 64-bit hash used for routing. Fixed means: the same bytes give the same value
//! in every process, on every node and in every version, so all gateway nodes that see the
//! same backend set send a key to the same backend. (std's `DefaultHasher` makes no such
//! promise across releases.)

/// FNV-1a over `bytes`, then a murmur3 finalizer for avalanche.
pub fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    fmix64(h)
}

/// murmur3's 64-bit finalizer: every input bit affects every output bit.
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_fixed_forever() {
        // Changing any of these reroutes every user of every deployment: never change them.
        assert_eq!(hash64(0, b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(hash64(0, b"alice"), 0x3507_d047_a67c_08f4);
        assert_eq!(hash64(0x7269_6e67_6761_7465, b"user-42"), 0x55fa_7250_8fba_974e);
        assert_eq!(hash64(0, b"10.0.0.1:7100"), 0x9e85_d392_f2e1_a320);
        assert_ne!(hash64(0, b"alice"), hash64(1, b"alice"));
    }
}
