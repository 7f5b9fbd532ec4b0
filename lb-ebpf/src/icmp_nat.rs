//! ICMP errors about a translated flow — a port unreachable from a real to a UDP client, a
//! "fragmentation needed" from a router on the way — translated like the flow's own packets:
//! the outer header as the flow's packets in the same direction, the quoted packet as its
//! packets in the other, with the outer IP, ICMP, quoted IP and quoted L4 checksums updated.

use lb_common::{Family, Flow, FlowKey, Reason, FLOW_DEC_TTL, PROTO_TCP, PROTO_UDP};

use crate::{
    csum,
    headers::{l4_check_offset, Ipv4Hdr, L4Ports},
    nat::{rewrite_eth, rewrite_ip, v4},
    packet::Packet,
};

const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMP header: type, code, checksum, 4 bytes that depend on the type.
const ICMP_HDR_LEN: usize = 8;

/// Where an ICMP error's quoted packet is.
#[derive(Default)]
pub struct Quote {
    /// The ICMP header.
    pub icmp: usize,
    pub inner_ip: usize,
    pub inner_l4: usize,
    /// End of the outer IP datagram: bytes after it (Ethernet padding) are not the quote's.
    pub end: usize,
}

/// Reads the ICMPv4 message at `icmp_off`: an error (destination unreachable, time exceeded)
/// quoting a TCP or UDP packet; the outer datagram ends at `end`. Fills `q` and `key`, the key
/// of the flow entry that translates the error: the quoted packet's tuple reversed, since the
/// error travels against the packet it quotes, the way that packet's answers do. Any other
/// message, or an error quoting anything but TCP or UDP, is [`Reason::IcmpNotOurs`]; an error
/// cut short or with a malformed quote is [`Reason::IcmpBadQuote`]. Both are the kernel's to
/// handle.
#[inline(always)]
pub fn quoted_flow_v4(
    pkt: &Packet,
    icmp_off: usize,
    end: usize,
    q: &mut Quote,
    key: &mut FlowKey,
) -> Result<(), Reason> {
    // SAFETY: ptr_at checked that the type byte fits (the parse stage required 4 bytes).
    let kind = unsafe { *pkt.ptr_at::<u8>(icmp_off)? };
    if kind != ICMP_DEST_UNREACHABLE && kind != ICMP_TIME_EXCEEDED {
        return Err(Reason::IcmpNotOurs);
    }
    // Only the bounds check: the header's other bytes are rewritten by translate_quote_v4.
    quoted::<[u8; ICMP_HDR_LEN]>(pkt, icmp_off)?;
    let inner_ip = icmp_off + ICMP_HDR_LEN;
    // SAFETY: quoted checked that a quoted IPv4 header fits after the ICMP header.
    let ip = unsafe { &*quoted::<Ipv4Hdr>(pkt, inner_ip)? };
    let ihl = (ip.ver_ihl & 0x0f) as usize;
    if ip.ver_ihl >> 4 != 4 || ihl < 5 {
        return Err(Reason::IcmpBadQuote);
    }
    if ip.proto != PROTO_TCP && ip.proto != PROTO_UDP {
        return Err(Reason::IcmpNotOurs);
    }
    let inner_l4 = inner_ip + ihl * 4;
    // SAFETY: quoted checked that the quoted ports fit (RFC 792 quotes 8 bytes at least).
    let ports = unsafe { &*quoted::<L4Ports>(pkt, inner_l4)? };
    if inner_l4 + core::mem::size_of::<L4Ports>() > end {
        return Err(Reason::IcmpBadQuote);
    }
    *key = FlowKey {
        sport: ports.dst,
        dport: ports.src,
        proto: ip.proto,
        family: Family::V4 as u8,
        ..FlowKey::default()
    };
    key.src[..4].copy_from_slice(&ip.dst);
    key.dst[..4].copy_from_slice(&ip.src);
    *q = Quote {
        icmp: icmp_off,
        inner_ip,
        inner_l4,
        end,
    };
    Ok(())
}

/// `ptr_at` for an ICMP error's header and quote: one cut short is an ICMP message the LB
/// leaves alone, not a malformed packet to drop.
#[inline(always)]
fn quoted<T>(pkt: &Packet, offset: usize) -> Result<*mut T, Reason> {
    pkt.ptr_at::<T>(offset)
        .map_err(|_truncated| Reason::IcmpBadQuote)
}

/// Rewrites the ICMP error described by `q` with `flow`, the entry of `key`: the quoted
/// packet as the flow's packets in the other direction are ([`translate_quote_v4`]), the
/// outer headers as its packets in this one ([`translate_outer_v4`]).
#[inline(always)]
pub fn translate_v4(pkt: &Packet, q: &Quote, key: &FlowKey, flow: &Flow) -> Result<(), Reason> {
    translate_quote_v4(pkt, q, flow)?;
    translate_outer_v4(pkt, key, flow)
}

/// The quoted packet of the ICMP error `q`, rewritten as `flow`'s packets in the other
/// direction are, with the quoted IP and L4 checksums and the ICMP checksum updated.
#[inline(always)]
pub fn translate_quote_v4(pkt: &Packet, q: &Quote, flow: &Flow) -> Result<(), Reason> {
    // SAFETY: ptr_at checked that the quoted ports fit.
    let ports = unsafe { &mut *pkt.ptr_at::<L4Ports>(q.inner_l4)? };
    // SAFETY: ptr_at checked that the quoted IPv4 header fits.
    let inner = unsafe { &mut *pkt.ptr_at::<Ipv4Hdr>(q.inner_ip)? };
    // SAFETY: ptr_at checked that the ICMP header fits.
    let icmp = unsafe { &mut *pkt.ptr_at::<[u8; ICMP_HDR_LEN]>(q.icmp)? };

    // The quoted packet travelled the other way: its source becomes the flow's destination.
    let (in_src, in_dst) = (v4(&flow.dst), v4(&flow.src));
    let (in_sport, in_dport) = (flow.dport, flow.sport);
    let mut old = [0u8; 12];
    let mut new = [0u8; 12];
    old[..4].copy_from_slice(&inner.src);
    old[4..8].copy_from_slice(&inner.dst);
    old[8..10].copy_from_slice(&ports.src);
    old[10..].copy_from_slice(&ports.dst);
    new[..4].copy_from_slice(&in_src);
    new[4..8].copy_from_slice(&in_dst);
    new[8..10].copy_from_slice(&in_sport);
    new[10..].copy_from_slice(&in_dport);

    // The quoted L4 checksum, when the quote reaches it (UDP's always does; TCP's when the
    // sender quoted 18 bytes or more of the segment, as Linux does).
    let mut icmp_check = [icmp[2], icmp[3]];
    let check_off = q.inner_l4 + l4_check_offset(inner.proto);
    let quoted = check_off + 2 <= q.end;
    if let (true, Ok(c)) = (quoted, pkt.ptr_at::<[u8; 2]>(check_off)) {
        // SAFETY: ptr_at checked that the two bytes are in the frame.
        let c = unsafe { &mut *c };
        let before = *c;
        *c = if inner.proto == PROTO_TCP {
            csum::replace(before, &old, &new)
        } else {
            csum::replace_udp(before, &old, &new)
        };
        icmp_check = csum::replace(icmp_check, &before, c);
    }
    let ip_check_before = inner.check;
    rewrite_ip(inner, in_src, in_dst, false);
    ports.src = in_sport;
    ports.dst = in_dport;
    icmp_check = csum::replace(icmp_check, &old, &new);
    icmp_check = csum::replace(icmp_check, &ip_check_before, &inner.check);
    icmp[2] = icmp_check[0];
    icmp[3] = icmp_check[1];
    Ok(())
}

/// The outer headers of an ICMP error about `flow` (the entry of `key`): the destination
/// becomes the flow's, as does the source when it is the flow's peer (an error from a router
/// on the way keeps its own). The ICMP checksum does not cover them.
#[inline(always)]
pub fn translate_outer_v4(pkt: &Packet, key: &FlowKey, flow: &Flow) -> Result<(), Reason> {
    // SAFETY: ptr_at checked that an IPv4 header fits after the Ethernet header.
    let outer = unsafe { &mut *pkt.ptr_at::<Ipv4Hdr>(crate::parse::ETH_LEN)? };
    let out_src = if outer.src == v4(&key.src) {
        v4(&flow.src)
    } else {
        outer.src
    };
    rewrite_ip(
        outer,
        out_src,
        v4(&flow.dst),
        flow.flags & FLOW_DEC_TTL != 0,
    );
    rewrite_eth(pkt, flow)
}

#[cfg(test)]
mod tests {
    use etherparse::{
        icmpv4::DestUnreachableHeader, Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket,
        TransportSlice,
    };
    use lb_common::FLOW_REPLY;

    use super::*;
    use crate::nat::tests::flow;

    const CLIENT: [u8; 4] = [198, 18, 0, 100];
    const VIP: [u8; 4] = [198, 18, 100, 10];
    const POOL: [u8; 4] = [198, 18, 0, 201];
    const REAL: [u8; 4] = [198, 18, 0, 11];

    /// What a real sends when the one-arm LB forwarded it `POOL:1024 -> REAL:5353/udp` and
    /// nothing listens there: port unreachable, quoting the whole datagram (Linux quotes up
    /// to 576 bytes).
    fn port_unreachable(quoted_payload: &[u8], quote_len: Option<usize>) -> Vec<u8> {
        let mut quoted = Vec::new();
        PacketBuilder::ipv4(POOL, REAL, 63)
            .udp(1024, 5353)
            .write(&mut quoted, quoted_payload)
            .unwrap();
        if let Some(n) = quote_len {
            quoted.truncate(n);
        }
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xb], [2, 0, 0, 0, 0, 1])
            .ipv4(REAL, POOL, 64)
            .icmpv4(Icmpv4Type::DestinationUnreachable(
                DestUnreachableHeader::Port,
            ))
            .write(&mut f, &quoted)
            .unwrap();
        f
    }

    fn translate(f: &mut [u8], fl: &Flow) -> Result<FlowKey, Reason> {
        let r = f.as_mut_ptr_range();
        // SAFETY: the range is the live buffer `f`.
        let pkt = unsafe { Packet::new(r.start as usize, r.end as usize) };
        let end = 14 + u16::from_be_bytes([f[16], f[17]]) as usize;
        let (mut q, mut key) = (Quote::default(), FlowKey::default());
        quoted_flow_v4(&pkt, 34, end, &mut q, &mut key)?;
        translate_v4(&pkt, &q, &key, fl)?;
        Ok(key)
    }

    /// The one's-complement sum over the ICMP message, checksum included, is all ones.
    fn assert_icmp_valid(f: &[u8]) {
        let end = 14 + u16::from_be_bytes([f[16], f[17]]) as usize;
        let sum: u32 = f[34..end]
            .chunks(2)
            .map(|w| u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32)
            .sum();
        assert_eq!(crate::csum::fold(sum), 0xffff, "ICMP checksum");
    }

    #[test]
    fn one_arm_port_unreachable_reaches_the_client_about_its_own_packet() {
        // The reply entry of the flow CLIENT:40000 -> VIP:53, sent as POOL:1024 -> REAL:5353.
        let reply = flow(VIP, 53, CLIENT, 40000, FLOW_REPLY);
        for (payload, quote, pad) in [
            (&b"query"[..], None, 0),
            (&b"odd"[..], Some(28), 0),
            (&b"odd"[..], Some(28), 9), // trailing bytes past the datagram are not quoted
        ] {
            let mut f = port_unreachable(payload, quote);
            f.extend(std::iter::repeat_n(0xaa, pad));
            let key = translate(&mut f, &reply).unwrap();
            // The key is the reply direction's: REAL:5353 -> POOL:1024.
            assert_eq!((&key.src[..4], &key.dst[..4]), (&REAL[..], &POOL[..]));
            assert_eq!(
                (u16::from_be_bytes(key.sport), u16::from_be_bytes(key.dport)),
                (5353, 1024)
            );
            let p = SlicedPacket::from_ethernet(&f).unwrap();
            let Some(NetSlice::Ipv4(ip)) = &p.net else {
                panic!()
            };
            let h = ip.header().to_header();
            assert_eq!((h.source, h.destination), (VIP, CLIENT));
            assert_eq!(h.header_checksum, h.calc_header_checksum());
            assert_icmp_valid(&f);
            let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
                panic!()
            };
            // The quoted datagram is the client's own, as it sent it.
            let (inner, rest) = etherparse::Ipv4Header::from_slice(icmp.payload()).unwrap();
            assert_eq!((inner.source, inner.destination), (CLIENT, VIP));
            assert_eq!(inner.header_checksum, inner.calc_header_checksum());
            assert_eq!(
                (
                    u16::from_be_bytes([rest[0], rest[1]]),
                    u16::from_be_bytes([rest[2], rest[3]])
                ),
                (40000, 53)
            );
            if quote.is_none() {
                let (udp, data) = etherparse::UdpHeader::from_slice(rest).unwrap();
                assert_eq!(udp.checksum, udp.calc_checksum_ipv4(&inner, data).unwrap());
            }
        }
    }

    #[test]
    fn an_error_from_a_router_on_the_way_keeps_its_source() {
        let reply = flow(VIP, 53, CLIENT, 40000, FLOW_REPLY);
        let mut f = port_unreachable(b"q", None);
        let router = [198, 18, 0, 254];
        f[26..30].copy_from_slice(&router);
        // Fix the outer checksum for the new source, as the router would have sent it.
        let mut h = etherparse::Ipv4Header::from_slice(&f[14..]).unwrap().0;
        h.header_checksum = h.calc_header_checksum();
        f[24..26].copy_from_slice(&h.header_checksum.to_be_bytes());
        translate(&mut f, &reply).unwrap();
        let h = etherparse::Ipv4Header::from_slice(&f[14..]).unwrap().0;
        assert_eq!((h.source, h.destination), (router, CLIENT));
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_icmp_valid(&f);
    }

    #[test]
    fn a_quote_cut_short_or_malformed_is_a_bad_quote() {
        let reply = flow(VIP, 53, CLIENT, 40000, FLOW_REPLY);
        // Cut inside the quoted ports, inside the quoted IP header, inside the ICMP header.
        for (quote, cut_frame) in [(22, None), (12, None), (0, Some(14 + 20 + 6))] {
            let mut f = port_unreachable(b"query", Some(quote));
            if let Some(n) = cut_frame {
                f.truncate(n);
                f[16..18].copy_from_slice(&((n - 14) as u16).to_be_bytes());
            }
            let before = f.clone();
            assert_eq!(
                translate(&mut f, &reply).err(),
                Some(Reason::IcmpBadQuote),
                "quote of {quote} bytes, frame cut at {cut_frame:?}"
            );
            assert_eq!(f, before);
        }
        // The ports in the frame, but past the outer datagram's end: Ethernet padding.
        let mut padded = port_unreachable(b"query", Some(22));
        padded.extend_from_slice(&[0; 8]);
        assert_eq!(
            translate(&mut padded, &reply).err(),
            Some(Reason::IcmpBadQuote)
        );
        // A quoted header that is not IPv4.
        let mut v6 = port_unreachable(b"query", None);
        v6[14 + 20 + 8] = 0x65;
        assert_eq!(translate(&mut v6, &reply).err(), Some(Reason::IcmpBadQuote));
    }

    #[test]
    fn other_icmp_is_not_ours() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [3; 6])
            .ipv4(REAL, CLIENT, 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut f, &[0; 40])
            .unwrap();
        let reply = flow(VIP, 53, CLIENT, 40000, FLOW_REPLY);
        assert_eq!(translate(&mut f, &reply).err(), Some(Reason::IcmpNotOurs));
        // An echo cut inside its header is still an echo, not an error with a bad quote.
        f.truncate(14 + 20 + 4);
        f[16..18].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(translate(&mut f, &reply).err(), Some(Reason::IcmpNotOurs));
        // An error quoting an ICMP packet (a ping that timed out) is about no flow.
        let mut ping = Vec::new();
        PacketBuilder::ipv4(CLIENT, VIP, 1)
            .icmpv4_echo_request(1, 1)
            .write(&mut ping, b"ping")
            .unwrap();
        let mut about_ping = Vec::new();
        PacketBuilder::ethernet2([2; 6], [3; 6])
            .ipv4(REAL, CLIENT, 64)
            .icmpv4(Icmpv4Type::TimeExceeded(
                etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
            ))
            .write(&mut about_ping, &ping)
            .unwrap();
        assert_eq!(
            translate(&mut about_ping, &reply).err(),
            Some(Reason::IcmpNotOurs)
        );
    }
}
