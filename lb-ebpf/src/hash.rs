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

/// Which bytes of a flow key a VIP hashes, as masks over its 10 little-endian words: word 8
/// holds the source port (low half) and the destination port (high half), word 9 the
/// protocol (byte 0) and family (byte 1).
pub type Fields = [u32; 10];

/// Addresses, ports, protocol: each flow on its own.
pub const FIVE_TUPLE: Fields = [u32::MAX; 10];
/// All but the source port: a client's connections to the VIP hash alike.
pub const NO_SOURCE_PORT: Fields = [
    u32::MAX,
    u32::MAX,
    u32::MAX,
    u32::MAX,
    u32::MAX,
    u32::MAX,
    u32::MAX,
    u32::MAX,
    0xffff_0000,
    u32::MAX,
];
/// The destination port and protocol only.
pub const DESTINATION_PORT: Fields = [0, 0, 0, 0, 0, 0, 0, 0, 0xffff_0000, u32::MAX];
/// The client's address only (HAProxy's `balance source`).
pub const SOURCE_ADDRESS: Fields = [
    u32::MAX,
    u32::MAX,
    u32::MAX,
    u32::MAX,
    0,
    0,
    0,
    0,
    0,
    0xff00,
];

/// The hash of the fields of `key` that `fields` keeps (the others count as zero).
#[inline(always)]
pub fn flow_fields(key: &FlowKey, fields: &Fields, seed: u32) -> u32 {
    // SAFETY: FlowKey is repr(C), 40 bytes without implicit padding, so it is 10 words.
    let words: &[[u8; 4]; 10] = unsafe { &*(key as *const FlowKey as *const [[u8; 4]; 10]) };
    let mut h = seed;
    let mut i = 0;
    while i < 10 {
        h = mix(h, u32::from_le_bytes(words[i]) & fields[i]);
        i += 1;
    }
    fmix32(h ^ 40)
}

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// MurmurHash3_x86_32 of `N * 4` bytes given as 4-byte chunks.
#[inline(always)]
pub fn murmur3_words<const N: usize>(chunks: &[[u8; 4]; N], seed: u32) -> u32 {
    let mut h = seed;
    let mut i = 0;
    while i < N {
        h = mix(h, u32::from_le_bytes(chunks[i]));
        i += 1;
    }
    fmix32(h ^ (N * 4) as u32)
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
    fn masked_fields_hash_as_if_zero() {
        let key = FlowKey {
            src: [1; 16],
            dst: [2; 16],
            sport: [0x9c, 0x40],
            dport: [0, 80],
            proto: 6,
            family: 4,
            _pad: [0; 2],
        };
        assert_eq!(flow_fields(&key, &FIVE_TUPLE, 7), flow(&key, 7));
        let other_sport = FlowKey {
            sport: [0x9c, 0x41],
            ..key
        };
        assert_eq!(
            flow_fields(&key, &NO_SOURCE_PORT, 7),
            flow_fields(&other_sport, &NO_SOURCE_PORT, 7)
        );
        assert_eq!(
            flow_fields(&key, &NO_SOURCE_PORT, 7),
            flow(
                &FlowKey {
                    sport: [0; 2],
                    ..key
                },
                7
            )
        );
        let other_client = FlowKey {
            src: [9; 16],
            ..other_sport
        };
        assert_eq!(
            flow_fields(&key, &DESTINATION_PORT, 7),
            flow_fields(&other_client, &DESTINATION_PORT, 7)
        );
        let other_port = FlowKey {
            dst: [3; 16],
            dport: [0, 81],
            proto: 17,
            ..other_sport
        };
        assert_eq!(
            flow_fields(&key, &SOURCE_ADDRESS, 7),
            flow_fields(&other_port, &SOURCE_ADDRESS, 7)
        );
        assert_ne!(
            flow_fields(&key, &SOURCE_ADDRESS, 7),
            flow_fields(&other_client, &SOURCE_ADDRESS, 7)
        );
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
