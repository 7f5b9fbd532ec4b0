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

    #[test]
    fn fold_carries_twice() {
        assert_eq!(fold(0x0001_ffff), 0x0001);
        assert_eq!(fold(0xffff_ffff), 0xffff);
    }
}
