//! Stage 1: read Ethernet, IPv4/IPv6 and the L4 header into a [`Parsed`] summary.

use lb_common::{Family, FlowKey, Reason, PROTO_TCP, PROTO_UDP};

use crate::{
    headers::{
        is_ipv6_extension, mac, EthHdr, Ipv4Hdr, Ipv6Hdr, L4Ports, TcpHdr, UdpHdr, ETH_P_IPV4,
        ETH_P_IPV6, IPPROTO_FRAGMENT, IPPROTO_ICMP, IPPROTO_ICMPV6,
    },
    packet::Packet,
};

pub const ETH_LEN: usize = core::mem::size_of::<EthHdr>();

/// What the later stages need to know about a TCP, UDP or ICMP packet.
#[derive(Default)]
pub struct Parsed {
    /// Destination MAC: whether the frame was addressed to this interface.
    pub dst_mac: [u8; 6],
    /// Source MAC: where replies of a stateful flow are sent back to.
    pub src_mac: [u8; 6],
    /// `Family` as u8.
    pub family: u8,
    /// Offset of the L4 header.
    pub l4_off: usize,
    /// End of the IP datagram: bytes after it are Ethernet padding.
    pub ip_end: usize,
    /// TCP flags (FIN 0x01, SYN 0x02, RST 0x04, ...); zero for UDP and ICMP.
    pub tcp_flags: u8,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    /// Addresses, ports and protocol, in wire order. ICMP (IPv4 only) has zero ports.
    pub flow: FlowKey,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Fills every field of `out` from the frame. (Written in place: a struct returned by value
/// through several inlined calls becomes several copies on the 512-byte BPF stack.) On error,
/// `out` is partly written and must not be used.
#[inline(always)]
pub fn parse(pkt: &Packet, out: &mut Parsed) -> Result<(), Reason> {
    // SAFETY: ptr_at checked that an EthHdr fits in the frame.
    let eth = unsafe { &*pkt.ptr_at::<EthHdr>(0)? };
    out.dst_mac = mac(&eth.dst);
    out.src_mac = mac(&eth.src);
    if eth.ether_type == ETH_P_IPV4 {
        parse_v4(pkt, out)
    } else if eth.ether_type == ETH_P_IPV6 {
        parse_v6(pkt, out)
    } else {
        Err(Reason::NotIp)
    }
}

#[inline(always)]
fn parse_v4(pkt: &Packet, out: &mut Parsed) -> Result<(), Reason> {
    // SAFETY: ptr_at checked that an Ipv4Hdr fits after the Ethernet header.
    let ip = unsafe { &*pkt.ptr_at::<Ipv4Hdr>(ETH_LEN)? };
    let ihl = (ip.ver_ihl & 0x0f) as usize;
    if ip.ver_ihl >> 4 != 4 || ihl < 5 {
        return Err(Reason::BadIpHeader);
    }
    if ip.is_fragment() {
        return Err(Reason::Fragment);
    }
    if ip.proto != PROTO_TCP && ip.proto != PROTO_UDP && ip.proto != IPPROTO_ICMP {
        return Err(Reason::OtherProtocol);
    }
    let l4_off = ETH_LEN + ihl * 4;
    // SAFETY: ptr_at checked that the ports fit after the (option-carrying) IPv4 header.
    // This check comes before the total-length checks below on purpose: were it after, the
    // compiler could prove it redundant from them and drop it, and the verifier, which does
    // not trust lengths read from the packet, would reject the read.
    let ports = unsafe { &*pkt.ptr_at::<L4Ports>(l4_off)? };
    // Before the length checks too, for the same reason.
    let tcp_flags = tcp_flags(pkt, ip.proto, l4_off)?;
    let tot_len = u16::from_be_bytes(ip.tot_len) as usize;
    if tot_len < ihl * 4 {
        return Err(Reason::BadIpHeader);
    }
    let l4_len = l4_header_len(ip.proto);
    // Bytes past the IP datagram are Ethernet padding; headers must not come from there.
    if ETH_LEN + tot_len > pkt.len() || tot_len < ihl * 4 + l4_len {
        return Err(Reason::Truncated);
    }
    // Every field is written: `out` lives in the scratch map and still holds the previous
    // packet (an IPv6 one's address bytes, say).
    let (sport, dport) = if ip.proto == IPPROTO_ICMP {
        ([0; 2], [0; 2])
    } else {
        (ports.src, ports.dst)
    };
    write_v4_key(&mut out.flow, ip.src, ip.dst, sport, dport, ip.proto);
    out.family = Family::V4 as u8;
    out.l4_off = l4_off;
    out.ip_end = ETH_LEN + tot_len;
    out.tcp_flags = tcp_flags;
    out.ttl = ip.ttl;
    Ok(())
}

/// An IPv4 flow key (addresses zero-extended to 16 bytes) written as its five 8-byte
/// words. Field by field, the 12 zero bytes of each address become calls to a byte-by-byte
/// memset; the words are volatile so LLVM keeps them words.
#[inline(always)]
fn write_v4_key(
    out: &mut FlowKey,
    src: [u8; 4],
    dst: [u8; 4],
    sport: [u8; 2],
    dport: [u8; 2],
    proto: u8,
) {
    let [s0, s1, s2, s3] = src;
    let [d0, d1, d2, d3] = dst;
    let words = [
        u64::from_ne_bytes([s0, s1, s2, s3, 0, 0, 0, 0]),
        0,
        u64::from_ne_bytes([d0, d1, d2, d3, 0, 0, 0, 0]),
        0,
        u64::from_ne_bytes([
            sport[0],
            sport[1],
            dport[0],
            dport[1],
            proto,
            Family::V4 as u8,
            0,
            0,
        ]),
    ];
    const _: () = assert!(core::mem::size_of::<FlowKey>() == 5 * 8);
    const _: () = assert!(core::mem::align_of::<FlowKey>() == 8);
    let to = out as *mut FlowKey as *mut u64;
    let mut i = 0;
    while i < words.len() {
        // SAFETY: FlowKey is five u64-aligned words (asserted above), `out` a valid reference.
        unsafe { core::ptr::write_volatile(to.add(i), words[i]) };
        i += 1;
    }
}

/// Bytes of the L4 header that must be present: all of TCP's fixed header (flags, checksum),
/// UDP's header, or ICMP's first 4 bytes (read as "ports" before the protocol is known).
#[inline(always)]
fn l4_header_len(proto: u8) -> usize {
    match proto {
        PROTO_TCP => core::mem::size_of::<TcpHdr>(),
        PROTO_UDP => core::mem::size_of::<UdpHdr>(),
        _ => core::mem::size_of::<L4Ports>(),
    }
}

#[inline(always)]
fn tcp_flags(pkt: &Packet, proto: u8, l4_off: usize) -> Result<u8, Reason> {
    match proto {
        // SAFETY: ptr_at checked that a whole TCP header fits at l4_off.
        PROTO_TCP => Ok(unsafe { (*pkt.ptr_at::<TcpHdr>(l4_off)?).flags }),
        PROTO_UDP => {
            // Only the bounds check: the whole header must be there (nat rewrites its checksum).
            pkt.ptr_at::<UdpHdr>(l4_off)?;
            Ok(0)
        }
        _ => Ok(0),
    }
}

#[inline(always)]
fn parse_v6(pkt: &Packet, out: &mut Parsed) -> Result<(), Reason> {
    // SAFETY: ptr_at checked that an Ipv6Hdr fits after the Ethernet header.
    let ip = unsafe { &*pkt.ptr_at::<Ipv6Hdr>(ETH_LEN)? };
    if ip.vtc_flow[0] >> 4 != 6 {
        return Err(Reason::BadIpHeader);
    }
    if ip.next_hdr == IPPROTO_FRAGMENT {
        return Err(Reason::Fragment);
    }
    if ip.next_hdr != PROTO_TCP && ip.next_hdr != PROTO_UDP {
        return Err(not_tcp_udp_v6(ip.next_hdr));
    }
    let l4_off = ETH_LEN + core::mem::size_of::<Ipv6Hdr>();
    // SAFETY: ptr_at checked that the ports fit after the IPv6 header.
    let ports = unsafe { &*pkt.ptr_at::<L4Ports>(l4_off)? };
    let (sport, dport) = (ports.src, ports.dst);
    let tcp_flags = tcp_flags(pkt, ip.next_hdr, l4_off)?;
    out.flow = FlowKey {
        src: ip.src,
        dst: ip.dst,
        sport,
        dport,
        proto: ip.next_hdr,
        family: Family::V6 as u8,
        _pad: [0; 2],
    };
    out.family = Family::V6 as u8;
    out.l4_off = l4_off;
    out.ip_end = pkt.len();
    out.tcp_flags = tcp_flags;
    out.ttl = ip.hop_limit;
    Ok(())
}

/// Why an IPv6 packet whose next header is neither TCP, UDP nor a fragment header is not
/// balanced.
#[inline(always)]
fn not_tcp_udp_v6(next_hdr: u8) -> Reason {
    if next_hdr == IPPROTO_ICMPV6 {
        Reason::IcmpNotOurs
    } else if is_ipv6_extension(next_hdr) {
        Reason::Ipv6ExtHeader
    } else {
        Reason::OtherProtocol
    }
}

/// The 4 option bytes that open a TCP timestamp option after an MSS option: with
/// SACK-permitted before it (Linux, FreeBSD) or two NOPs (Linux without SACK, macOS).
const TS_AFTER_SACK: u32 = 0x0402_080a;
const TS_AFTER_NOPS: u32 = 0x0101_080a;

/// Whether the TCP SYN whose header is at `l4_off` carries a timestamp option where the
/// common stacks put it: right after the MSS option (Linux: `MSS, SACK-permitted, TS` or
/// `MSS, NOP, NOP, TS`), or after MSS and a NOP-padded window scale (macOS and the BSDs:
/// `MSS, NOP, WS, ...`). Options laid out otherwise read as none: the caller then takes
/// the safe side (for one-arm, a port held its full FIN timeout). Fixed places, not a walk
/// over the options: a loop over 40 bytes costs the verifier more than this program has.
#[inline(always)]
pub fn syn_timestamp(pkt: &Packet, l4_off: usize) -> bool {
    let Ok(tcp) = pkt.ptr_at::<TcpHdr>(l4_off) else {
        return false;
    };
    // SAFETY: ptr_at checked that a whole TCP header fits at l4_off.
    let options_len = (unsafe { (*tcp).data_off } >> 4) as usize * 4;
    let Ok(options) = pkt.ptr_at::<[[u8; 4]; 3]>(l4_off + 20) else {
        return false;
    };
    // SAFETY: ptr_at checked that the 12 bytes fit in the frame.
    let [mss, second, third] = unsafe { *options };
    if mss[0] != 2 || mss[1] != 4 {
        return false;
    }
    let (second, third) = (u32::from_be_bytes(second), u32::from_be_bytes(third));
    // The option's 10 bytes must lie within the header its data offset declares.
    let linux = (second == TS_AFTER_SACK || second == TS_AFTER_NOPS) && options_len >= 20 + 16;
    let bsd = second >> 8 == 0x01_0303
        && (third == TS_AFTER_SACK || third == TS_AFTER_NOPS)
        && options_len >= 20 + 20;
    linux || bsd
}

#[cfg(test)]
mod tests {
    use etherparse::{PacketBuilder, TcpOptionElement};

    use super::*;

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    fn run(frame: &mut [u8]) -> Result<Parsed, Reason> {
        let range = frame.as_mut_ptr_range();
        // SAFETY: the range is the live buffer `frame`, borrowed for the call.
        let pkt = unsafe { Packet::new(range.start as usize, range.end as usize) };
        let mut p = Parsed::default();
        parse(&pkt, &mut p).map(|()| p)
    }

    fn tcp_v4(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4([198, 18, 0, 100], [198, 18, 100, 10], 64)
            .tcp(40000, 80, 1, 1000);
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    fn syn_with(options: &[TcpOptionElement]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4([198, 18, 0, 100], [198, 18, 100, 10], 64)
            .tcp(40000, 80, 1, 1000)
            .syn()
            .options(options)
            .unwrap();
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    }

    fn has_timestamp(frame: &mut [u8]) -> bool {
        let range = frame.as_mut_ptr_range();
        // SAFETY: the range is the live buffer `frame`, borrowed for the call.
        let pkt = unsafe { Packet::new(range.start as usize, range.end as usize) };
        syn_timestamp(&pkt, 34)
    }

    #[test]
    fn a_syn_timestamp_is_found_where_linux_and_the_bsds_put_it() {
        use TcpOptionElement::*;
        let ts = || Timestamp(123_456, 0);
        let cases = [
            (
                "linux",
                vec![
                    MaximumSegmentSize(1460),
                    SelectiveAcknowledgementPermitted,
                    ts(),
                    Noop,
                    WindowScale(7),
                ],
                true,
            ),
            (
                "linux without SACK",
                vec![
                    MaximumSegmentSize(1460),
                    Noop,
                    Noop,
                    ts(),
                    Noop,
                    WindowScale(7),
                ],
                true,
            ),
            (
                "macOS",
                vec![
                    MaximumSegmentSize(1460),
                    Noop,
                    WindowScale(6),
                    Noop,
                    Noop,
                    ts(),
                    SelectiveAcknowledgementPermitted,
                ],
                true,
            ),
            (
                "FreeBSD",
                vec![
                    MaximumSegmentSize(1460),
                    Noop,
                    WindowScale(6),
                    SelectiveAcknowledgementPermitted,
                    ts(),
                ],
                true,
            ),
            (
                "linux, timestamps off",
                vec![
                    MaximumSegmentSize(1460),
                    Noop,
                    Noop,
                    SelectiveAcknowledgementPermitted,
                    Noop,
                    WindowScale(7),
                ],
                false,
            ),
            (
                "windows",
                vec![
                    MaximumSegmentSize(1460),
                    Noop,
                    WindowScale(8),
                    Noop,
                    Noop,
                    SelectiveAcknowledgementPermitted,
                ],
                false,
            ),
            ("no options", vec![], false),
            (
                "timestamp first",
                vec![ts(), MaximumSegmentSize(1460)],
                false,
            ),
        ];
        for (what, options, expected) in cases {
            let mut frame = syn_with(&options);
            assert_eq!(has_timestamp(&mut frame), expected, "{what}");
        }
    }

    #[test]
    fn a_timestamp_past_the_declared_header_or_the_frame_is_none() {
        use TcpOptionElement::*;
        let options = [
            MaximumSegmentSize(1460),
            SelectiveAcknowledgementPermitted,
            Timestamp(1, 0),
        ];
        let whole = syn_with(&options);
        // Data offset lowered to 8 words: the option's last bytes are outside the header.
        let mut short_header = whole.clone();
        short_header[34 + 12] = 8 << 4;
        assert!(!has_timestamp(&mut short_header));
        // The frame cut inside the options.
        let mut cut = whole[..34 + 20 + 10].to_vec();
        assert!(!has_timestamp(&mut cut));
        let mut frame = whole;
        assert!(has_timestamp(&mut frame));
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

        let mut gre = full.clone();
        gre[23] = 47;
        assert_eq!(run(&mut gre).err(), Some(Reason::OtherProtocol));

        // A TCP segment whose header is cut short of its checksum and flags.
        let mut short_tcp = full.clone();
        short_tcp.truncate(14 + 20 + 16);
        short_tcp[16..18].copy_from_slice(&36u16.to_be_bytes());
        assert_eq!(run(&mut short_tcp).err(), Some(Reason::Truncated));
    }

    #[test]
    fn tcp_flags_and_source_mac() {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4([198, 18, 0, 100], [198, 18, 100, 10], 64)
            .tcp(40000, 80, 1, 1000)
            .fin()
            .rst();
        let mut f = Vec::new();
        b.write(&mut f, b"").unwrap();
        let p = run(&mut f).unwrap();
        assert_eq!(p.tcp_flags & (TCP_FIN | TCP_RST), TCP_FIN | TCP_RST);
        assert_eq!(p.src_mac, MAC_A);
        assert_eq!(p.flow.family, 4);
    }

    #[test]
    fn reusing_the_summary_leaves_nothing_of_the_previous_packet() {
        // The datapath parses into the same per-CPU slot packet after packet.
        let mut v6 = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6([0xff; 16], [0xee; 16], 64)
            .tcp(1, 2, 3, 4)
            .fin()
            .write(&mut v6, b"")
            .unwrap();
        let mut icmp = Vec::new();
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv4([198, 18, 0, 11], [198, 18, 0, 100], 64)
            .icmpv4_echo_request(7, 9)
            .write(&mut icmp, b"ping")
            .unwrap();
        for mut next in [tcp_v4(b"x"), icmp] {
            let fresh = run(&mut next.clone()).unwrap();
            let mut reused = run(&mut v6.clone()).unwrap();
            let r = next.as_mut_ptr_range();
            // SAFETY: the range is the live buffer `next`.
            let pkt = unsafe { Packet::new(r.start as usize, r.end as usize) };
            parse(&pkt, &mut reused).unwrap();
            assert_eq!(reused.flow, fresh.flow);
            assert_eq!(
                (reused.dst_mac, reused.src_mac, reused.family, reused.l4_off),
                (fresh.dst_mac, fresh.src_mac, fresh.family, fresh.l4_off)
            );
            assert_eq!(
                (reused.ip_end, reused.tcp_flags),
                (fresh.ip_end, fresh.tcp_flags)
            );
        }
    }

    #[test]
    fn icmp_is_parsed_without_ports() {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4([198, 18, 0, 11], [198, 18, 0, 100], 64)
            .icmpv4_echo_request(7, 9);
        let mut f = Vec::new();
        b.write(&mut f, b"ping").unwrap();
        let p = run(&mut f).unwrap();
        assert_eq!(
            (p.flow.proto, p.flow.sport, p.flow.dport),
            (1, [0; 2], [0; 2])
        );
    }

    /// An IPv6 packet of `next_hdr` (an etherparse UDP datagram whose next-header byte is
    /// then replaced; the parser reads no further for any but TCP and UDP).
    fn v6_next(next_hdr: u8) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6([0x20; 16], [0x21; 16], 64)
            .udp(1, 2)
            .write(&mut f, b"x")
            .unwrap();
        f[14 + 6] = next_hdr;
        f
    }

    #[test]
    fn ipv6_that_is_not_tcp_or_udp_says_why() {
        // ICMPv6: echo, neighbour discovery, errors; never a flow's (no IPv6 stateful mode).
        let mut ping6 = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6([0x20; 16], [0x21; 16], 64)
            .icmpv6_echo_request(1, 1)
            .write(&mut ping6, b"ping")
            .unwrap();
        assert_eq!(run(&mut ping6).err(), Some(Reason::IcmpNotOurs));
        // Hop-by-hop options (as MLD sends), routing, destination options, AH, mobility.
        for ext in [0, 43, 60, 51, 135] {
            assert_eq!(
                run(&mut v6_next(ext)).err(),
                Some(Reason::Ipv6ExtHeader),
                "{ext}"
            );
        }
        assert_eq!(run(&mut v6_next(44)).err(), Some(Reason::Fragment));
        // ESP, SCTP, GRE, no next header: protocols of their own.
        for proto in [50, 132, 47, 59] {
            assert_eq!(
                run(&mut v6_next(proto)).err(),
                Some(Reason::OtherProtocol),
                "{proto}"
            );
        }
    }
}
