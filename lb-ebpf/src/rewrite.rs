//! Stage 4: rewrite the frame for the chosen real, per forwarding mode.

use lb_common::Reason;

use crate::{
    csum,
    decap::{IPPROTO_IPIP, IPPROTO_IPV6},
    headers::{mac, EthHdr, Ipv4Hdr, ETH_P_IPV4},
    packet::Packet,
    parse::ETH_LEN,
};

/// Where the tunnel goes: outer addresses and the next hop's MAC.
pub struct Tunnel {
    pub lb_mac: [u8; 6],
    pub next_hop_mac: [u8; 6],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

/// Tunnel mode, once 20 bytes of headroom were added in front of the frame: writes a new
/// Ethernet header and an outer IPv4 header (IP-in-IP, or 6in4 for an IPv6 inner packet of
/// `family` 6) in front of the inner packet, which starts at byte 34 and is `inner_len` long.
#[inline(always)]
pub fn ipip(pkt: &Packet, t: &Tunnel, family: u8, inner_len: usize) -> Result<(), Reason> {
    // SAFETY: ptr_at checked that an EthHdr fits; XDP frames are writable.
    let eth = unsafe { &mut *pkt.ptr_at::<EthHdr>(0)? };
    eth.dst = mac(&t.next_hop_mac);
    eth.src = mac(&t.lb_mac);
    eth.ether_type = ETH_P_IPV4;
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((inner_len + 20) as u16).to_be_bytes());
    h[6] = 0x40; // DF: the LB never fragments, so a too-big packet must be known as such.
    h[8] = 64;
    h[9] = if family == 6 {
        IPPROTO_IPV6
    } else {
        IPPROTO_IPIP
    };
    h[12..16].copy_from_slice(&t.src);
    h[16..20].copy_from_slice(&t.dst);
    let check = csum::ipv4_header(&h);
    h[10] = check[0];
    h[11] = check[1];
    // SAFETY: ptr_at checked that a 20-byte IPv4 header fits after the Ethernet header.
    let outer = unsafe { &mut *pkt.ptr_at::<[u8; 20]>(ETH_LEN)? };
    *outer = h;
    Ok(())
}

const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == 20);

/// Direct server return: only the Ethernet header changes; the source becomes the MAC of the
/// LB's interface the frame leaves from.
#[inline(always)]
pub fn dsr(pkt: &Packet, lb_mac: [u8; 6], real_mac: [u8; 6]) -> Result<(), Reason> {
    // SAFETY: ptr_at checked that an EthHdr fits; XDP frames are writable.
    let eth = unsafe { &mut *pkt.ptr_at::<EthHdr>(0)? };
    eth.src = mac(&lb_mac);
    eth.dst = mac(&real_mac);
    Ok(())
}

#[cfg(test)]
mod tests {
    use etherparse::{NetSlice, SlicedPacket};

    use super::*;

    #[test]
    fn ipip_writes_a_valid_outer_header() {
        // What the frame looks like after adjust_head(-20): 20 spare bytes, then the old frame.
        let mut inner = Vec::new();
        etherparse::PacketBuilder::ipv4([198, 18, 0, 100], [198, 18, 100, 10], 64)
            .udp(40000, 53)
            .write(&mut inner, b"odd")
            .unwrap();
        let mut f = vec![0xee; 20 + 14];
        f.extend(&inner);
        let r = f.as_mut_ptr_range();
        // SAFETY: the range is the live buffer `f`.
        let pkt = unsafe { Packet::new(r.start as usize, r.end as usize) };
        let t = Tunnel {
            lb_mac: [2, 0, 0, 0, 0, 1],
            next_hop_mac: [2, 0, 0, 0, 0, 0xb],
            src: [198, 18, 0, 1],
            dst: [198, 18, 0, 11],
        };
        ipip(&pkt, &t, 4, inner.len()).unwrap();
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(NetSlice::Ipv4(outer)) = p.net else {
            panic!("outer IPv4")
        };
        let h = outer.header().to_header();
        assert_eq!(
            (h.source, h.destination, h.protocol.0, h.time_to_live),
            ([198, 18, 0, 1], [198, 18, 0, 11], 4, 64)
        );
        assert!(h.dont_fragment);
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!(h.total_len as usize, 20 + inner.len());
        assert_eq!(outer.payload().payload, &inner[..]);
        assert_eq!(f[..12], [2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn dsr_rewrites_macs_only() {
        let mut f: Vec<u8> = (0u8..60).collect();
        let before = f.clone();
        let r = f.as_mut_ptr_range();
        // SAFETY: the range is the live buffer `f`.
        let pkt = unsafe { Packet::new(r.start as usize, r.end as usize) };
        dsr(&pkt, [0xbb; 6], [0xaa; 6]).unwrap();
        assert_eq!(f[..6], [0xaa; 6]);
        assert_eq!(f[6..12], [0xbb; 6]);
        assert_eq!(f[12..], before[12..]);
    }
}
