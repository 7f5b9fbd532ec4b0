//! The flow hash: MurmurHash3 (x86, 32-bit) over the flow key.
//!
//! Chosen for its avalanche on small inputs and because it is a published function with an
//! independent implementation to test against. Words are read little-endian, so the result is
//! exactly MurmurHash3_x86_32 over the key's bytes.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

use lb_common::FlowKey;

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

/// The flow hash of `key`: MurmurHash3_x86_32 over its 40 bytes.
#[inline(always)]
pub fn flow(key: &FlowKey, seed: u32) -> u32 {
    // SAFETY: FlowKey is repr(C), 40 bytes without implicit padding, so it is 10 words.
    let words: &[[u8; 4]; 10] = unsafe { &*(key as *const FlowKey as *const [[u8; 4]; 10]) };
    murmur3_words(words, seed)
}

/// MurmurHash3_x86_32 of `N * 4` bytes given as 4-byte chunks.
#[inline(always)]
pub fn murmur3_words<const N: usize>(chunks: &[[u8; 4]; N], seed: u32) -> u32 {
    let mut h = seed;
    let mut i = 0;
    while i < N {
        let mut k = u32::from_le_bytes(chunks[i]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
        i += 1;
    }
    h ^= (N * 4) as u32;
    fmix32(h)
}

#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn oracle(bytes: &[u8], seed: u32) -> u32 {
        murmur3::murmur3_32(&mut Cursor::new(bytes), seed).unwrap()
    }

    #[test]
    fn published_vectors() {
        // Vectors published with the reference implementation's test suite.
        assert_eq!(murmur3_words::<1>(&[[0, 0, 0, 0]], 0), 0x2362_f9de);
        assert_eq!(murmur3_words::<1>(&[[0xff; 4]], 0), 0x7629_3b50);
        assert_eq!(
            murmur3_words::<1>(&[[0x21, 0x43, 0x65, 0x87]], 0),
            0xf55b_516b
        );
        assert_eq!(murmur3_words::<1>(&[*b"aaaa"], 0x9747_b28c), 0x5a97_808a);
        assert_eq!(murmur3_words::<0>(&[], 1), 0x514e_28b7);
    }

    #[test]
    fn matches_independent_implementation_on_flow_keys() {
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let mut key = FlowKey::default();
            // SAFETY: FlowKey is 40 plain bytes (asserted above).
            let bytes: &mut [u8; 40] = unsafe { &mut *(&mut key as *mut FlowKey as *mut [u8; 40]) };
            for b in bytes.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            let copy = *bytes;
            assert_eq!(flow(&key, 7), oracle(&copy, 7));
        }
    }

    #[test]
    fn source_port_changes_the_hash() {
        let a = FlowKey {
            sport: [0x9c, 0x40],
            ..Default::default()
        };
        let b = FlowKey {
            sport: [0x9c, 0x41],
            ..Default::default()
        };
        assert_ne!(flow(&a, 1), flow(&b, 1));
    }
}
