//! Stage 1: read Ethernet, IPv4/IPv6 and the L4 ports into a [`Parsed`] summary.

use lb_common::{Family, Reason, PROTO_TCP, PROTO_UDP};

use crate::{
    hash::FlowKey,
    headers::{EthHdr, Ipv4Hdr, Ipv6Hdr, L4Ports, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_FRAGMENT},
    packet::Packet,
};

pub const ETH_LEN: usize = core::mem::size_of::<EthHdr>();

/// What the later stages need to know about a TCP/UDP packet.
pub struct Parsed {
    /// Destination MAC: whether the frame was addressed to this interface.
    pub dst_mac: [u8; 6],
    /// `Family` as u8.
    pub family: u8,
    /// Offset of the L4 header.
    pub l4_off: usize,
    /// Addresses, ports and protocol, in wire order.
    pub flow: FlowKey,
}

#[inline(always)]
pub fn parse(pkt: &Packet) -> Result<Parsed, Reason> {
    // SAFETY: ptr_at checked that an EthHdr fits in the frame.
    let eth = unsafe { &*pkt.ptr_at::<EthHdr>(0)? };
    let dst_mac = eth.dst;
    if eth.ether_type == ETH_P_IPV4 {
        parse_v4(pkt, dst_mac)
    } else if eth.ether_type == ETH_P_IPV6 {
        parse_v6(pkt, dst_mac)
    } else {
        Err(Reason::NotIp)
    }
}

#[inline(always)]
fn parse_v4(pkt: &Packet, dst_mac: [u8; 6]) -> Result<Parsed, Reason> {
    // SAFETY: ptr_at checked that an Ipv4Hdr fits after the Ethernet header.
    let ip = unsafe { &*pkt.ptr_at::<Ipv4Hdr>(ETH_LEN)? };
    let ihl = (ip.ver_ihl & 0x0f) as usize;
    if ip.ver_ihl >> 4 != 4 || ihl < 5 {
        return Err(Reason::BadIpHeader);
    }
    if ip.is_fragment() {
        return Err(Reason::Fragment);
    }
    if ip.proto != PROTO_TCP && ip.proto != PROTO_UDP {
        return Err(Reason::NotTcpUdp);
    }
    let l4_off = ETH_LEN + ihl * 4;
    // SAFETY: ptr_at checked that the ports fit after the (option-carrying) IPv4 header.
    // This check comes before the total-length checks below on purpose: were it after, the
    // compiler could prove it redundant from them and drop it, and the verifier, which does
    // not trust lengths read from the packet, would reject the read.
    let ports = unsafe { &*pkt.ptr_at::<L4Ports>(l4_off)? };
    let tot_len = u16::from_be_bytes(ip.tot_len) as usize;
    if tot_len < ihl * 4 {
        return Err(Reason::BadIpHeader);
    }
    // Bytes past the IP datagram are Ethernet padding; ports must not come from there.
    if ETH_LEN + tot_len > pkt.len() || tot_len < ihl * 4 + core::mem::size_of::<L4Ports>() {
        return Err(Reason::Truncated);
    }
    let mut flow = FlowKey {
        proto: ip.proto,
        sport: ports.src,
        dport: ports.dst,
        ..FlowKey::default()
    };
    flow.src[..4].copy_from_slice(&ip.src);
    flow.dst[..4].copy_from_slice(&ip.dst);
    Ok(Parsed {
        dst_mac,
        family: Family::V4 as u8,
        l4_off,
        flow,
    })
}

#[inline(always)]
fn parse_v6(pkt: &Packet, dst_mac: [u8; 6]) -> Result<Parsed, Reason> {
    // SAFETY: ptr_at checked that an Ipv6Hdr fits after the Ethernet header.
    let ip = unsafe { &*pkt.ptr_at::<Ipv6Hdr>(ETH_LEN)? };
    if ip.vtc_flow[0] >> 4 != 6 {
        return Err(Reason::BadIpHeader);
    }
    if ip.next_hdr == IPPROTO_FRAGMENT {
        return Err(Reason::Fragment);
    }
    if ip.next_hdr != PROTO_TCP && ip.next_hdr != PROTO_UDP {
        return Err(Reason::NotTcpUdp);
    }
    let l4_off = ETH_LEN + core::mem::size_of::<Ipv6Hdr>();
    // SAFETY: ptr_at checked that the ports fit after the IPv6 header.
    let ports = unsafe { &*pkt.ptr_at::<L4Ports>(l4_off)? };
    let flow = FlowKey {
        src: ip.src,
        dst: ip.dst,
        sport: ports.src,
        dport: ports.dst,
        proto: ip.next_hdr,
        _pad: [0; 3],
    };
    Ok(Parsed {
        dst_mac,
        family: Family::V6 as u8,
        l4_off,
        flow,
    })
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;

    use super::*;

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    fn run(frame: &mut [u8]) -> Result<Parsed, Reason> {
        let range = frame.as_mut_ptr_range();
        // SAFETY: the range is the live buffer `frame`, borrowed for the call.
        let pkt = unsafe { Packet::new(range.start as usize, range.end as usize) };
        parse(&pkt)
    }

    fn tcp_v4(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4([198, 18, 0, 100], [198, 18, 100, 10], 64)
            .tcp(40000, 80, 1, 1000);
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn tcp_over_ipv4() {
        let mut f = tcp_v4(b"hi");
        let p = run(&mut f).unwrap();
        assert_eq!(p.family, 4);
        assert_eq!(p.dst_mac, MAC_B);
        assert_eq!(p.l4_off, 34);
        assert_eq!(&p.flow.src[..4], &[198, 18, 0, 100]);
        assert_eq!(&p.flow.dst[..4], &[198, 18, 100, 10]);
        assert_eq!(p.flow.src[4..], [0; 12]);
        assert_eq!(u16::from_be_bytes(p.flow.sport), 40000);
        assert_eq!(u16::from_be_bytes(p.flow.dport), 80);
        assert_eq!(p.flow.proto, 6);
    }

    #[test]
    fn udp_over_ipv6() {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(
                [0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10],
                64,
            )
            .udp(5353, 53);
        let mut f = Vec::new();
        b.write(&mut f, b"q").unwrap();
        let p = run(&mut f).unwrap();
        assert_eq!((p.family, p.l4_off, p.flow.proto), (6, 54, 17));
        assert_eq!(p.flow.dst[15], 0x10);
        assert_eq!(u16::from_be_bytes(p.flow.dport), 53);
    }

    #[test]
    fn ipv4_options_move_the_ports() {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ip(etherparse::IpHeaders::Ipv4(
                {
                    let mut h = etherparse::Ipv4Header::new(
                        0,
                        64,
                        etherparse::IpNumber::UDP,
                        [1, 2, 3, 4],
                        [5, 6, 7, 8],
                    )
                    .unwrap();
                    h.options = [1u8, 1, 1, 0][..].try_into().unwrap();
                    h
                },
                Default::default(),
            ))
            .udp(1111, 2222);
        let mut f = Vec::new();
        b.write(&mut f, b"x").unwrap();
        let p = run(&mut f).unwrap();
        assert_eq!(p.l4_off, 38);
        assert_eq!(u16::from_be_bytes(p.flow.dport), 2222);
    }

    #[test]
    fn reasons() {
        let full = tcp_v4(b"");
        // Every cut inside the Ethernet header, the IP header or the datagram is Truncated.
        for cut in [0, 13, 14, 33, 35, 37, 38, full.len() - 1] {
            let mut f = full[..cut].to_vec();
            assert_eq!(run(&mut f).err(), Some(Reason::Truncated), "cut at {cut}");
        }
        // Ethernet padding after the datagram is ignored.
        let mut padded = full.clone();
        padded.extend_from_slice(&[0; 6]);
        assert!(run(&mut padded).is_ok());
        // A total length that ends inside the ports: they would come from padding.
        let mut short_total = full.clone();
        short_total[16..18].copy_from_slice(&22u16.to_be_bytes());
        assert_eq!(run(&mut short_total).err(), Some(Reason::Truncated));
        // A total length shorter than the IP header itself.
        let mut tiny_total = full.clone();
        tiny_total[16..18].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(run(&mut tiny_total).err(), Some(Reason::BadIpHeader));

        let mut arp = full.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(run(&mut arp).err(), Some(Reason::NotIp));

        let mut short_ihl = full.clone();
        short_ihl[14] = 0x44;
        assert_eq!(run(&mut short_ihl).err(), Some(Reason::BadIpHeader));

        let mut v6_in_v4 = full.clone();
        v6_in_v4[14] = 0x65;
        assert_eq!(run(&mut v6_in_v4).err(), Some(Reason::BadIpHeader));

        let mut more_fragments = full.clone();
        more_fragments[20] = 0x20;
        assert_eq!(run(&mut more_fragments).err(), Some(Reason::Fragment));
        let mut later_fragment = full.clone();
        later_fragment[21] = 0x01;
        assert_eq!(run(&mut later_fragment).err(), Some(Reason::Fragment));

        let mut icmp = full.clone();
        icmp[23] = 1;
        assert_eq!(run(&mut icmp).err(), Some(Reason::NotTcpUdp));
    }
}
