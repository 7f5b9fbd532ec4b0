//! The real server's side of tunnel mode: recognise IP-in-IP (or 6in4) sent to this host and
//! move the Ethernet header over the outer IPv4 header, so dropping the first 20 bytes leaves
//! the inner packet, as if it had arrived unencapsulated.

use lb_common::Reason;

use crate::{
    headers::{EthHdr, Ipv4Hdr, ETH_P_IPV4, ETH_P_IPV6},
    packet::Packet,
    parse::ETH_LEN,
};

pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_IPV6: u8 = 41;
pub const OUTER_LEN: usize = core::mem::size_of::<Ipv4Hdr>();

/// Checks that `pkt` is a tunnelled packet for `host` and rewrites it in place so the frame
/// from byte [`OUTER_LEN`] on is the inner packet with an Ethernet header.
#[inline(always)]
pub fn prepare(pkt: &Packet, host: [u8; 4]) -> Result<(), Reason> {
    // SAFETY: ptr_at checked that an EthHdr fits.
    let eth = unsafe { &*pkt.ptr_at::<EthHdr>(0)? };
    if eth.ether_type != ETH_P_IPV4 {
        // The LB tunnels in IPv4 only: IPv6 is the real's ordinary traffic.
        return Err(if eth.ether_type == ETH_P_IPV6 {
            Reason::NotTunnelled
        } else {
            Reason::NotIp
        });
    }
    // SAFETY: ptr_at checked that an Ipv4Hdr fits after the Ethernet header.
    let outer = unsafe { &*pkt.ptr_at::<Ipv4Hdr>(ETH_LEN)? };
    let inner_type = match outer.proto {
        IPPROTO_IPIP => ETH_P_IPV4,
        IPPROTO_IPV6 => ETH_P_IPV6,
        _ => return Err(Reason::NotTunnelled),
    };
    // The LB writes a 20-byte outer header and never fragments; anything else is not ours.
    if outer.ver_ihl != 0x45 || outer.is_fragment() {
        return Err(Reason::NotTunnelled);
    }
    if outer.dst != host {
        return Err(Reason::TunnelNotForUs);
    }
    let (dst, src) = (eth.dst, eth.src);
    // SAFETY: ptr_at checked that an EthHdr fits at OUTER_LEN (inside the outer IP header's
    // bytes plus the inner packet's first ones, all in the frame).
    let moved = unsafe { &mut *pkt.ptr_at::<EthHdr>(OUTER_LEN)? };
    moved.dst = dst;
    moved.src = src;
    moved.ether_type = inner_type;
    Ok(())
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;

    use super::*;

    fn inner() -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4([198, 18, 0, 100], [198, 18, 100, 10], 64)
            .tcp(40000, 80, 1, 1000)
            .write(&mut v, b"hi")
            .unwrap();
        v
    }

    fn tunnelled(proto: u8, dst: [u8; 4], inner: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0xb])
            .ipv4([198, 18, 0, 1], dst, 64)
            .write(&mut v, etherparse::IpNumber(proto), inner)
            .unwrap();
        v
    }

    fn run(frame: &mut [u8], host: [u8; 4]) -> Result<(), Reason> {
        let r = frame.as_mut_ptr_range();
        // SAFETY: the range is the live buffer `frame`.
        prepare(
            &unsafe { Packet::new(r.start as usize, r.end as usize) },
            host,
        )
    }

    #[test]
    fn ipip_to_this_host_becomes_the_inner_frame() {
        let host = [198, 18, 0, 11];
        let mut f = tunnelled(IPPROTO_IPIP, host, &inner());
        run(&mut f, host).unwrap();
        let mut want = vec![2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        want.extend(inner());
        assert_eq!(&f[OUTER_LEN..], &want[..]);
    }

    #[test]
    fn sixin4_gets_the_ipv6_ethertype() {
        let host = [198, 18, 0, 11];
        let mut f = tunnelled(IPPROTO_IPV6, host, &[0x60; 48]);
        run(&mut f, host).unwrap();
        assert_eq!(f[OUTER_LEN + 12..OUTER_LEN + 14], [0x86, 0xdd]);
    }

    #[test]
    fn everything_else_is_left_alone() {
        let host = [198, 18, 0, 11];
        let mut v6 = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0xb])
            .ipv6([0x20; 16], [0x21; 16], 64)
            .udp(1, 2)
            .write(&mut v6, b"x")
            .unwrap();
        let mut arp = tunnelled(IPPROTO_IPIP, host, &inner());
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let cases: [(Vec<u8>, Reason); 5] = [
            (
                tunnelled(IPPROTO_IPIP, [198, 18, 0, 12], &inner()),
                Reason::TunnelNotForUs,
            ),
            (v6, Reason::NotTunnelled),
            (arp, Reason::NotIp),
            (tunnelled(17, host, &inner()), Reason::NotTunnelled),
            (
                tunnelled(IPPROTO_IPIP, host, &inner())[..30].to_vec(),
                Reason::Truncated,
            ),
        ];
        for (mut f, reason) in cases {
            let before = f.clone();
            assert_eq!(run(&mut f, host), Err(reason));
            assert_eq!(f, before);
        }
    }
}
