//! Internet checksums (RFC 1071) for headers the datapath writes.

/// The checksum field value of a 20-byte IPv4 header whose own checksum bytes are zero.
#[inline(always)]
pub fn ipv4_header(h: &[u8; 20]) -> [u8; 2] {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < 20 {
        sum += u16::from_be_bytes([h[i], h[i + 1]]) as u32;
        i += 2;
    }
    (!fold(sum)).to_be_bytes()
}

/// The checksum field value `check` after the bytes `old` of the covered data became `new`
/// (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')). `N` must be even and the bytes must start at
/// an even offset of the checksummed data, as every header field rewritten here does.
#[inline(always)]
pub fn replace<const N: usize>(check: [u8; 2], old: &[u8; N], new: &[u8; N]) -> [u8; 2] {
    let mut sum = !u16::from_be_bytes(check) as u32;
    let mut i = 0;
    while i + 1 < N {
        sum += !u16::from_be_bytes([old[i], old[i + 1]]) as u32;
        sum += u16::from_be_bytes([new[i], new[i + 1]]) as u32;
        i += 2;
    }
    (!fold(sum)).to_be_bytes()
}

/// As [`replace`], for a UDP checksum over IPv4: zero means "no checksum" and stays zero, and
/// a computed zero is sent as all ones (RFC 768).
#[inline(always)]
pub fn replace_udp<const N: usize>(check: [u8; 2], old: &[u8; N], new: &[u8; N]) -> [u8; 2] {
    if check == [0, 0] {
        return check;
    }
    let out = replace(check, old, new);
    if out == [0, 0] {
        [0xff, 0xff]
    } else {
        out
    }
}

/// Folds a 32-bit one's-complement sum into 16 bits.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

#[cfg(test)]
mod tests {
    use etherparse::{IpNumber, Ipv4Header};

    use super::*;

    #[test]
    fn matches_an_independent_implementation() {
        let mut x: u32 = 0x2545_f491;
        for _ in 0..500 {
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x
            };
            let mut h = Ipv4Header::new(
                (next() % 1400) as u16,
                next() as u8,
                IpNumber(next() as u8),
                next().to_be_bytes(),
                next().to_be_bytes(),
            )
            .unwrap();
            h.identification = next() as u16;
            h.dont_fragment = next() % 2 == 0;
            let mut bytes: [u8; 20] = h.to_bytes()[..].try_into().unwrap();
            bytes[10..12].copy_from_slice(&[0, 0]);
            assert_eq!(
                u16::from_be_bytes(ipv4_header(&bytes)),
                h.calc_header_checksum()
            );
        }
    }

    /// Full RFC 1071 checksum of `data`, the oracle for the incremental update.
    fn full(data: &[u8]) -> [u8; 2] {
        let mut sum: u32 = 0;
        for w in data.chunks(2) {
            sum += u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32;
        }
        (!fold(sum)).to_be_bytes()
    }

    #[test]
    fn incremental_update_equals_recomputing() {
        let mut x: u32 = 0x9e37_79b9;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for round in 0..2000 {
            let len = 8 + 2 * (next() as usize % 40);
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Checksum field at 0..2, as IPv4 headers have it at 10..12: zero, then filled.
            data[0..2].copy_from_slice(&[0, 0]);
            let check = full(&data);
            data[0..2].copy_from_slice(&check);
            let at = 2 + 2 * (next() as usize % ((len - 6) / 2));
            let old: [u8; 4] = data[at..at + 4].try_into().unwrap();
            // Every few rounds, write all-zero or all-one words: the cases where one's
            // complement arithmetic has two zeros.
            let new: [u8; 4] = match round % 5 {
                0 => [0; 4],
                1 => [0xff; 4],
                _ => next().to_be_bytes(),
            };
            data[at..at + 4].copy_from_slice(&new);
            let got = replace(check, &old, &new);
            data[0..2].copy_from_slice(&[0, 0]);
            let want = full(&data);
            // 0x0000 and 0xffff are the same one's complement number; RFC 1624 gives 0x0000
            // only when the data is all zero.
            assert!(
                got == want || (got == [0xff, 0xff] && want == [0, 0]),
                "round {round}: {got:?} != {want:?}"
            );
        }
    }

    #[test]
    fn udp_zero_checksum_stays_zero_and_a_zero_result_becomes_ffff() {
        assert_eq!(replace_udp([0, 0], &[1, 2], &[3, 4]), [0, 0]);
        // A checksum that becomes 0x0000 is sent as 0xffff.
        let c = replace([0x12, 0x34], &[0, 0], &[0, 0]);
        assert_eq!(c, [0x12, 0x34]);
        let zeroing = replace_udp([0x00, 0x01], &[0, 0], &[0, 1]);
        assert_eq!(replace([0x00, 0x01], &[0, 0], &[0, 1]), [0, 0]);
        assert_eq!(zeroing, [0xff, 0xff]);
    }

    #[test]
    fn fold_carries_twice() {
        assert_eq!(fold(0x0001_ffff), 0x0001);
        assert_eq!(fold(0xffff_ffff), 0xffff);
    }
}
