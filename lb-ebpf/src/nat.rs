//! Stage 4 of the stateful modes (nat, router, one-arm): rewrite a packet as its flow entry
//! says — addresses, ports, MACs, TTL — updating every checksum incrementally.

use lb_common::{Flow, Reason, FLOW_DEC_TTL, FLOW_SET_SRC_MAC, PROTO_TCP};

use crate::{
    csum,
    headers::{l4_check_offset, mac, EthHdr, Ipv4Hdr, L4Ports},
    packet::Packet,
    parse::ETH_LEN,
};

/// The first 4 bytes of a map address: the IPv4 address.
#[inline(always)]
pub fn v4(a: &[u8; 16]) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}

/// Whether forwarding as `flow` says would take the TTL to zero (router mode only).
#[inline(always)]
pub fn ttl_expires(pkt: &Packet, flow: &Flow) -> Result<bool, Reason> {
    if flow.flags & FLOW_DEC_TTL == 0 {
        return Ok(false);
    }
    // SAFETY: ptr_at checked that an Ipv4Hdr fits after the Ethernet header.
    let ip = unsafe { &*pkt.ptr_at::<Ipv4Hdr>(ETH_LEN)? };
    Ok(ip.ttl <= 1)
}

/// Rewrites an IPv4 TCP/UDP packet (L4 header at `l4_off`) as `flow` says. The caller has
/// checked [`ttl_expires`].
#[inline(always)]
pub fn translate_v4(pkt: &Packet, l4_off: usize, proto: u8, flow: &Flow) -> Result<(), Reason> {
    // SAFETY: ptr_at checked that the ports fit at l4_off; XDP frames are writable.
    let ports = unsafe { &mut *pkt.ptr_at::<L4Ports>(l4_off)? };
    // SAFETY: ptr_at checked that the L4 checksum field fits; the parse stage required the
    // whole TCP or UDP header.
    let l4_check = unsafe { &mut *pkt.ptr_at::<[u8; 2]>(l4_off + l4_check_offset(proto))? };
    // SAFETY: ptr_at checked that an Ipv4Hdr fits after the Ethernet header.
    let ip = unsafe { &mut *pkt.ptr_at::<Ipv4Hdr>(ETH_LEN)? };
    let (src, dst) = (v4(&flow.src), v4(&flow.dst));

    // What the L4 checksum covers and this changes: the pseudo-header's addresses, the ports.
    let old = l4_words(ip.src, ip.dst, ports.src, ports.dst);
    let new = l4_words(src, dst, flow.sport, flow.dport);
    *l4_check = if proto == PROTO_TCP {
        csum::replace(*l4_check, &old, &new)
    } else {
        csum::replace_udp(*l4_check, &old, &new)
    };
    ports.src = flow.sport;
    ports.dst = flow.dport;

    rewrite_ip(ip, src, dst, flow.flags & FLOW_DEC_TTL != 0);
    rewrite_eth(pkt, flow)
}

/// Writes `src`/`dst` into an IPv4 header, decrements the TTL when asked, and updates the
/// header checksum for both.
#[inline(always)]
pub fn rewrite_ip(ip: &mut Ipv4Hdr, src: [u8; 4], dst: [u8; 4], dec_ttl: bool) {
    let mut old = [0u8; 10];
    let mut new = [0u8; 10];
    old[..4].copy_from_slice(&ip.src);
    old[4..8].copy_from_slice(&ip.dst);
    old[8] = ip.ttl;
    old[9] = ip.proto;
    new[..4].copy_from_slice(&src);
    new[4..8].copy_from_slice(&dst);
    new[8] = if dec_ttl {
        ip.ttl.wrapping_sub(1)
    } else {
        ip.ttl
    };
    new[9] = ip.proto;
    ip.check = csum::replace(ip.check, &old, &new);
    ip.src = src;
    ip.dst = dst;
    ip.ttl = new[8];
}

/// The destination MAC of the flow, and the source MAC when the LB is an L3 hop.
#[inline(always)]
pub fn rewrite_eth(pkt: &Packet, flow: &Flow) -> Result<(), Reason> {
    // SAFETY: ptr_at checked that an EthHdr fits; XDP frames are writable.
    let eth = unsafe { &mut *pkt.ptr_at::<EthHdr>(0)? };
    eth.dst = mac(&flow.dst_mac);
    if flow.flags & FLOW_SET_SRC_MAC != 0 {
        eth.src = mac(&flow.src_mac);
    }
    Ok(())
}

#[inline(always)]
fn l4_words(src: [u8; 4], dst: [u8; 4], sport: [u8; 2], dport: [u8; 2]) -> [u8; 12] {
    let mut w = [0u8; 12];
    w[..4].copy_from_slice(&src);
    w[4..8].copy_from_slice(&dst);
    w[8..10].copy_from_slice(&sport);
    w[10..].copy_from_slice(&dport);
    w
}

#[cfg(test)]
pub(crate) mod tests {
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use lb_common::FLOW_REPLY;

    use super::*;

    pub fn flow(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u32) -> Flow {
        let mut f = Flow {
            src: [0; 16],
            dst: [0; 16],
            sport: sport.to_be_bytes(),
            dport: dport.to_be_bytes(),
            dst_mac: [2, 0, 0, 0, 0, 0xb],
            src_mac: [2, 0, 0, 0, 0, 1],
            flags,
            egress_ifindex: 0,
            vip_id: 0,
            real_id: 0,
            timeout: 30,
            short_timeout: 10,
            last_seen_ns: 0,
        };
        f.src[..4].copy_from_slice(&src);
        f.dst[..4].copy_from_slice(&dst);
        f
    }

    fn run(frame: &mut [u8], f: &Flow) {
        let r = frame.as_mut_ptr_range();
        // SAFETY: the range is the live buffer `frame`.
        let pkt = unsafe { Packet::new(r.start as usize, r.end as usize) };
        let mut p = crate::parse::Parsed::default();
        crate::parse::parse(&pkt, &mut p).unwrap();
        translate_v4(&pkt, p.l4_off, p.flow.proto, f).unwrap();
    }

    /// Checks every checksum of `frame` against etherparse's own computation.
    pub fn assert_valid(frame: &[u8]) {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!("IPv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum(), "IP checksum");
        match &p.transport {
            Some(TransportSlice::Tcp(t)) => assert_eq!(
                t.checksum(),
                t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap(),
                "TCP checksum"
            ),
            Some(TransportSlice::Udp(u)) if u.checksum() != 0 => assert_eq!(
                u.checksum(),
                u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap(),
                "UDP checksum"
            ),
            _ => {}
        }
    }

    #[test]
    fn tcp_with_options_and_odd_payload_gets_new_addresses_and_valid_checksums() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x64], [2, 0, 0, 0, 0, 1])
            .ipv4([198, 18, 0, 100], [198, 18, 100, 10], 64)
            .tcp(40000, 80, 7, 1000)
            .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
            .unwrap()
            .write(&mut f, b"odd")
            .unwrap();
        let fl = flow(
            [198, 18, 0, 201],
            1024,
            [198, 18, 0, 11],
            8080,
            FLOW_SET_SRC_MAC,
        );
        run(&mut f, &fl);
        assert_valid(&f);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!()
        };
        assert_eq!(ip.header().source(), [198, 18, 0, 201]);
        assert_eq!(ip.header().destination(), [198, 18, 0, 11]);
        assert_eq!(ip.header().ttl(), 64);
        let Some(TransportSlice::Tcp(t)) = &p.transport else {
            panic!()
        };
        assert_eq!((t.source_port(), t.destination_port()), (1024, 8080));
        assert_eq!(t.payload(), b"odd");
        assert_eq!(f[..12], [2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn udp_zero_checksum_stays_zero_and_others_stay_valid() {
        for zero in [true, false] {
            let mut f = Vec::new();
            PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x64], [2, 0, 0, 0, 0, 1])
                .ipv4([198, 18, 0, 100], [198, 18, 100, 10], 64)
                .udp(40000, 53)
                .write(&mut f, b"q")
                .unwrap();
            if zero {
                f[40..42].copy_from_slice(&[0, 0]);
            }
            run(
                &mut f,
                &flow([198, 18, 0, 100], 40000, [198, 18, 0, 11], 53, 0),
            );
            assert_valid(&f);
            assert_eq!(f[40..42] == [0, 0], zero);
            // nat keeps the client's MAC as source.
            assert_eq!(f[6..12], [2, 0, 0, 0, 0, 0x64]);
        }
    }

    #[test]
    fn router_decrements_the_ttl() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x64], [2, 0, 0, 0, 0, 1])
            .ipv4([198, 18, 1, 11], [198, 18, 0, 100], 9)
            .tcp(80, 40000, 7, 1000)
            .write(&mut f, b"reply")
            .unwrap();
        let fl = flow(
            [198, 18, 100, 10],
            80,
            [198, 18, 0, 100],
            40000,
            FLOW_REPLY | FLOW_DEC_TTL | FLOW_SET_SRC_MAC,
        );
        let r = f.as_mut_ptr_range();
        // SAFETY: the range is the live buffer `f`.
        let pkt = unsafe { Packet::new(r.start as usize, r.end as usize) };
        assert!(!ttl_expires(&pkt, &fl).unwrap());
        run(&mut f, &fl);
        assert_valid(&f);
        assert_eq!(f[14 + 8], 8);
        f[14 + 8] = 1;
        let r = f.as_mut_ptr_range();
        // SAFETY: as above.
        let pkt = unsafe { Packet::new(r.start as usize, r.end as usize) };
        assert!(ttl_expires(&pkt, &fl).unwrap());
    }
}
