//! ICMP the LB sends itself: "fragmentation needed" when a tunnelled packet would not fit,
//! so TCP path-MTU discovery shrinks the client's segments instead of the flow stalling.

use lb_common::Reason;

use crate::{csum, headers::EthHdr, packet::Packet, parse::ETH_LEN};

/// What the sender gets back quoted: its IPv4 header (20 bytes, no options) and the first 8
/// bytes of its payload, as RFC 792 asks.
const QUOTE_LEN: usize = 28;
/// Outer IPv4 + ICMP header + quote.
const IP_LEN: usize = 20 + 8 + QUOTE_LEN;
/// The whole reply frame.
pub const TOO_BIG_FRAME_LEN: usize = ETH_LEN + IP_LEN;

/// Rewrites the start of the frame into an ICMP "fragmentation needed" reply to the packet's
/// sender, from `src` (the LB's address) and `lb_mac`, announcing `next_hop_mtu`. The caller
/// trims the frame to [`TOO_BIG_FRAME_LEN`] bytes. Only for DF packets without IP options:
/// others get [`Reason::TooBig`] (the sender allowed fragmentation the LB cannot do).
#[inline(always)]
pub fn write_too_big(
    pkt: &Packet,
    lb_mac: [u8; 6],
    src: [u8; 4],
    next_hop_mtu: u16,
) -> Result<(), Reason> {
    // SAFETY: ptr_at checked that an EthHdr fits.
    let eth = unsafe { &mut *pkt.ptr_at::<EthHdr>(0)? };
    // SAFETY: ptr_at checked that the quoted bytes fit after the Ethernet header.
    let quote: [u8; QUOTE_LEN] = unsafe { *pkt.ptr_at::<[u8; QUOTE_LEN]>(ETH_LEN)? };
    let dont_fragment = quote[6] & 0x40 != 0;
    if quote[0] != 0x45 || !dont_fragment {
        return Err(Reason::TooBig);
    }
    let mut out = [0u8; IP_LEN];
    out[0] = 0x45;
    out[2..4].copy_from_slice(&(IP_LEN as u16).to_be_bytes());
    out[8] = 64;
    out[9] = 1; // ICMP
    out[12..16].copy_from_slice(&src);
    out[16..20].copy_from_slice(&quote[12..16]); // back to the packet's source
    let mut ip = [0u8; 20];
    ip.copy_from_slice(&out[..20]);
    let check = csum::ipv4_header(&ip);
    out[10..12].copy_from_slice(&check);
    out[20] = 3; // destination unreachable
    out[21] = 4; // fragmentation needed and DF set
    out[26..28].copy_from_slice(&next_hop_mtu.to_be_bytes());
    out[28..].copy_from_slice(&quote);
    let mut sum: u32 = 0;
    let mut i = 20;
    while i < IP_LEN {
        sum += u16::from_be_bytes([out[i], out[i + 1]]) as u32;
        i += 2;
    }
    out[22..24].copy_from_slice(&(!csum::fold(sum)).to_be_bytes());

    eth.dst = eth.src;
    eth.src = lb_mac;
    eth.ether_type = crate::headers::ETH_P_IPV4;
    // SAFETY: ptr_at checked that the reply's IP part fits in the (larger) frame.
    unsafe { *pkt.ptr_at::<[u8; IP_LEN]>(ETH_LEN)? = out };
    Ok(())
}

#[cfg(test)]
mod tests {
    use etherparse::{
        icmpv4::DestUnreachableHeader, Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket,
        TransportSlice,
    };

    use super::*;

    fn big_tcp(df: bool) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x64], [2, 0, 0, 0, 0, 1])
            .ipv4([198, 18, 0, 100], [198, 18, 100, 10], 64)
            .tcp(40000, 80, 7, 1000)
            .write(&mut f, &[b'x'; 1460])
            .unwrap();
        if !df {
            f[20] &= !0x40;
        }
        f
    }

    fn run(f: &mut [u8]) -> Result<(), Reason> {
        let r = f.as_mut_ptr_range();
        // SAFETY: the range is the live buffer `f`.
        let pkt = unsafe { Packet::new(r.start as usize, r.end as usize) };
        write_too_big(&pkt, [2, 0, 0, 0, 0, 1], [198, 18, 0, 1], 1480)
    }

    #[test]
    fn reply_goes_back_to_the_sender_quoting_its_packet() {
        let original = big_tcp(true);
        let mut f = original.clone();
        run(&mut f).unwrap();
        let reply = &f[..TOO_BIG_FRAME_LEN];
        assert_eq!(reply[..12], [2, 0, 0, 0, 0, 0x64, 2, 0, 0, 0, 0, 1]);
        let p = SlicedPacket::from_ethernet(reply).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("IPv4")
        };
        let h = ip.header().to_header();
        assert_eq!(
            (h.source, h.destination),
            ([198, 18, 0, 1], [198, 18, 0, 100])
        );
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
            panic!("ICMP")
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: 1480
            })
        );
        assert_eq!(icmp.payload(), &original[14..42]);
        // One's-complement sum of the whole ICMP message, checksum included, is all ones.
        let sum: u32 = reply[34..]
            .chunks(2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
            .sum();
        assert_eq!(csum::fold(sum), 0xffff);
    }

    #[test]
    fn no_reply_without_df_or_with_options() {
        let mut f = big_tcp(false);
        let before = f.clone();
        assert_eq!(run(&mut f), Err(Reason::TooBig));
        assert_eq!(f, before);
        let mut f = big_tcp(true);
        f[14] = 0x46;
        let before = f.clone();
        assert_eq!(run(&mut f), Err(Reason::TooBig));
        assert_eq!(f, before);
    }
}
