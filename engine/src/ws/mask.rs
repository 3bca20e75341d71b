//! Payload masking (RFC 6455 §5.3): XOR with a 4-byte key, eight bytes at a time.

/// XORs `data` with `mask`, as if `data` began at a multiple of four bytes into the
/// payload. Masking and unmasking are the same operation.
pub(crate) fn apply(data: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let bytes: &mut [u8; 8] = chunk.try_into().expect("chunks_exact_mut yields 8 bytes");
        *bytes = (u64::from_ne_bytes(*bytes) ^ wide).to_ne_bytes();
    }
    // Whole chunks are a multiple of 4 bytes, so the remainder starts at mask[0].
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

/// The key for the byte `consumed` bytes further into the payload.
pub(crate) fn advance(mask: [u8; 4], consumed: usize) -> [u8; 4] {
    let mut mask = mask;
    mask.rotate_left(consumed % 4);
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(data: &mut [u8], mask: [u8; 4]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
    }

    #[test]
    fn rfc_example() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut data = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply(&mut data, [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(&data, b"Hello");
    }

    proptest! {
        #[test]
        fn matches_bytewise_xor(
            data in proptest::collection::vec(any::<u8>(), 0..100),
            mask in any::<[u8; 4]>(),
            split in 0usize..100,
        ) {
            let mut expected = data.clone();
            naive(&mut expected, mask);
            let mut whole = data.clone();
            apply(&mut whole, mask);
            prop_assert_eq!(&whole, &expected);
            // In two pieces, the second with the advanced key.
            let split = split.min(data.len());
            let mut pieces = data;
            let (head, tail) = pieces.split_at_mut(split);
            apply(head, mask);
            apply(tail, advance(mask, split));
            prop_assert_eq!(&pieces, &expected);
        }
    }
}
