//! Unsigned LEB128 varints, the same encoding protobuf uses.
//!
//! Seven value bits per byte, least significant group first; the high bit says another
//! byte follows. Decoders bound the number of bytes they accept so an endless run of
//! continuation bytes is an error, not a loop.

use bytes::BufMut;

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended inside the varint; at least one more byte is needed.
    Incomplete,
    /// More than `max_bytes` bytes, or a value that does not fit the target type.
    Overlong,
}

/// Reads a varint of at most `max_bytes` bytes from the front of `src`.
///
/// Returns the value and the number of bytes it took. `max_bytes` is at most 10.
pub fn decode(src: &[u8], max_bytes: usize) -> Result<(u64, usize), VarintError> {
    let max_bytes = max_bytes.min(10);
    let mut value: u64 = 0;
    for (i, &byte) in src.iter().take(max_bytes).enumerate() {
        let group = u64::from(byte & 0x7f);
        // The tenth byte may only carry the single remaining bit of a u64.
        if i == 9 && byte > 1 {
            return Err(VarintError::Overlong);
        }
        value |= group << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if src.len() >= max_bytes { Err(VarintError::Overlong) } else { Err(VarintError::Incomplete) }
}

/// Number of bytes `value` takes as a varint (1..=10).
pub const fn encoded_len(value: u64) -> usize {
    // Bits needed, rounded up to whole 7-bit groups; zero still takes one byte.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `value` as a varint.
pub fn encode(mut value: u64, dst: &mut impl BufMut) {
    while value >= 0x80 {
        dst.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    dst.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (16_383, &[0xff, 0x7f]),
            (16_384, &[0x80, 0x80, 0x01]),
        ];
        for &(value, bytes) in cases {
            let mut buf = Vec::new();
            encode(value, &mut buf);
            assert_eq!(buf, bytes, "encode {value}");
            assert_eq!(decode(bytes, 10), Ok((value, bytes.len())));
            assert_eq!(encoded_len(value), bytes.len());
        }
    }

    #[test]
    fn incomplete_and_overlong() {
        assert_eq!(decode(&[], 4), Err(VarintError::Incomplete));
        assert_eq!(decode(&[0x80], 4), Err(VarintError::Incomplete));
        assert_eq!(decode(&[0x80, 0x80, 0x80, 0x80], 4), Err(VarintError::Overlong));
        assert_eq!(decode(&[0xff; 11], 10), Err(VarintError::Overlong));
        // Tenth byte carrying more than the top bit of a u64.
        let mut too_big = [0xff_u8; 10];
        too_big[9] = 0x02;
        assert_eq!(decode(&too_big, 10), Err(VarintError::Overlong));
        let mut max = [0xff_u8; 10];
        max[9] = 0x01;
        assert_eq!(decode(&max, 10), Ok((u64::MAX, 10)));
    }

    proptest! {
        #[test]
        fn round_trip(value: u64) {
            let mut buf = Vec::new();
            encode(value, &mut buf);
            prop_assert_eq!(buf.len(), encoded_len(value));
            prop_assert_eq!(decode(&buf, 10), Ok((value, buf.len())));
        }
    }
}
