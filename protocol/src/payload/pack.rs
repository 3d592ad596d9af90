//! Bit packing of indices (12 bits each, pairs in 3 bytes) and 2-bit codes (four per byte).

/// Largest index a 12-bit slot holds.
pub const MAX_INDEX: u16 = 4095;

/// Bytes needed for `n` packed 12-bit indices (an odd count is padded with one index 0).
pub fn packed_index_len(n: usize) -> usize {
    n.div_ceil(2) * 3
}

/// Packs indices < 4096 as pairs (a, b) -> [a & 0xFF, (a >> 8 & 0xF) | (b & 0xF) << 4, b >> 4].
pub fn pack_indices_12bit(indices: &[u16]) -> Vec<u8> {
    let mut out = vec![0u8; packed_index_len(indices.len())];
    for (t, pair) in out.chunks_exact_mut(3).zip(indices.chunks(2)) {
        let a = pair[0];
        let b = pair.get(1).copied().unwrap_or(0);
        debug_assert!(a <= MAX_INDEX && b <= MAX_INDEX);
        t.copy_from_slice(&[
            (a & 0xFF) as u8,
            (((a >> 8) & 0xF) | ((b & 0xF) << 4)) as u8,
            ((b >> 4) & 0xFF) as u8,
        ]);
    }
    out
}

/// Inverse of [`pack_indices_12bit`]; `n` is the number of indices (bytes beyond are ignored,
/// too few bytes give `None`).
pub fn unpack_indices_12bit(bytes: &[u8], n: usize) -> Option<Vec<u16>> {
    if bytes.len() < packed_index_len(n) {
        return None;
    }
    let mut out = vec![0u16; n.div_ceil(2) * 2];
    for (pair, t) in out.chunks_exact_mut(2).zip(bytes.chunks_exact(3)) {
        pair[0] = t[0] as u16 | ((t[1] as u16 & 0xF) << 8);
        pair[1] = (t[1] as u16 >> 4) | ((t[2] as u16) << 4);
    }
    out.truncate(n);
    Some(out)
}

/// Bytes needed for `n` 2-bit codes.
pub fn packed_2bit_len(n: usize) -> usize {
    n.div_ceil(4)
}

/// Packs codes < 4 four per byte, first code in the lowest bits.
pub fn pack_2bit(codes: &[u8]) -> Vec<u8> {
    codes
        .chunks(4)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |acc, (i, &v)| acc | ((v & 3) << (2 * i)))
        })
        .collect()
}

/// Inverse of [`pack_2bit`]; `None` when `bytes` holds fewer than `n` codes.
pub fn unpack_2bit(bytes: &[u8], n: usize) -> Option<Vec<u8>> {
    if bytes.len() < packed_2bit_len(n) {
        return None;
    }
    let mut out = vec![0u8; n.div_ceil(4) * 4];
    for (codes, &b) in out.chunks_exact_mut(4).zip(bytes) {
        codes.copy_from_slice(&[b & 3, (b >> 2) & 3, (b >> 4) & 3, b >> 6]);
    }
    out.truncate(n);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn index_packing_edge_cases() {
        assert!(pack_indices_12bit(&[]).is_empty());
        assert_eq!(unpack_indices_12bit(&[], 0), Some(vec![]));
        // Odd count: padded, and the padding is dropped again.
        let packed = pack_indices_12bit(&[4095]);
        assert_eq!(packed, vec![0xFF, 0x0F, 0x00]);
        assert_eq!(unpack_indices_12bit(&packed, 1), Some(vec![4095]));
        let v = [4095, 4095, 0, 1, 2048];
        let packed = pack_indices_12bit(&v);
        assert_eq!(packed.len(), 9);
        assert_eq!(unpack_indices_12bit(&packed, 5).unwrap(), v);
        // The layout of a pair is the reference's.
        assert_eq!(pack_indices_12bit(&[0xABC, 0x123]), vec![0xBC, 0x3A, 0x12]);
        // Truncated input is detected, not read past.
        assert_eq!(unpack_indices_12bit(&packed[..8], 5), None);
    }

    #[test]
    fn two_bit_packing_edge_cases() {
        assert!(pack_2bit(&[]).is_empty());
        assert_eq!(pack_2bit(&[1, 2, 3, 0, 3]), vec![0b00_11_10_01, 0b11]);
        assert_eq!(
            unpack_2bit(&[0b00_11_10_01, 0b11], 5),
            Some(vec![1, 2, 3, 0, 3])
        );
        assert_eq!(unpack_2bit(&[0xFF], 5), None);
    }

    proptest! {
        #[test]
        fn index_round_trip(v in proptest::collection::vec(0u16..=4095, 0..300)) {
            let packed = pack_indices_12bit(&v);
            prop_assert_eq!(packed.len(), packed_index_len(v.len()));
            prop_assert_eq!(unpack_indices_12bit(&packed, v.len()).unwrap(), v);
        }

        #[test]
        fn two_bit_round_trip(v in proptest::collection::vec(0u8..4, 0..300)) {
            let packed = pack_2bit(&v);
            prop_assert_eq!(packed.len(), packed_2bit_len(v.len()));
            prop_assert_eq!(unpack_2bit(&packed, v.len()).unwrap(), v);
        }
    }
}
