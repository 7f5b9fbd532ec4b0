//! ICMP errors the LB sends itself: "fragmentation needed" when a tunnelled packet would not
//! fit, so TCP path-MTU discovery shrinks the client's segments instead of the flow stalling;
//! "time exceeded" when router mode would forward a packet whose TTL runs out.

use lb_common::Reason;

use crate::{csum, packet::Packet, parse::ETH_LEN};

/// What the sender gets back quoted: its IPv4 header (20 bytes, no options) and the first 8
/// bytes of its payload, as RFC 792 asks.
const QUOTE_LEN: usize = 28;
/// Outer IPv4 + ICMP header + quote.
const IP_LEN: usize = 20 + 8 + QUOTE_LEN;
const _: () = assert!(IP_LEN < 256);
/// The whole reply frame: the caller sizes the frame to this before writing the error.
pub const ERROR_FRAME_LEN: usize = ETH_LEN + IP_LEN;

/// Which error to send: ICMP type, code and the 16 bits after the checksum's word that some
/// types use. A plain struct, not an enum with data: passed to a BPF function, an enum
/// variant without data leaves a register unwritten, which the verifier refuses to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    kind: u8,
    code: u8,
    word: u16,
}

const DEST_UNREACHABLE: u8 = 3;
const TIME_EXCEEDED: u8 = 11;

impl Error {
    /// Destination unreachable, fragmentation needed and DF set, with the MTU that fits.
    pub const fn fragmentation_needed(next_hop_mtu: u16) -> Self {
        Self {
            kind: DEST_UNREACHABLE,
            code: 4,
            word: next_hop_mtu,
        }
    }

    /// Time exceeded in transit (the TTL ran out).
    pub const TIME_EXCEEDED: Self = Self {
        kind: TIME_EXCEEDED,
        code: 0,
        word: 0,
    };

    /// The reason counted when the error may not be sent about the packet (see [`check`]).
    pub const fn unsendable(self) -> Reason {
        if self.kind == DEST_UNREACHABLE {
            Reason::TooBig
        } else {
            Reason::TtlExpired
        }
    }
}

/// Whether `error` can be sent about the packet in `pkt`, from `src`: see [`write_error`].
/// Checked before the frame is resized, so a packet that gets no answer is dropped as it
/// came. Not about this packet: the error's [`Error::unsendable`] reason; no address to send
/// from: [`Reason::NoIcmpSource`].
#[inline(always)]
pub fn check(pkt: &Packet, src: [u8; 4], error: Error) -> Result<(), Reason> {
    // SAFETY: ptr_at checked that the IPv4 header's first 7 bytes fit.
    let ip = unsafe { &*pkt.ptr_at::<[u8; 7]>(ETH_LEN)? };
    let dont_fragment = ip[6] & 0x40 != 0;
    if error.kind == DEST_UNREACHABLE && !dont_fragment {
        return Err(error.unsendable());
    }
    if ip[0] != 0x45 {
        return Err(error.unsendable());
    }
    if src == [0; 4] {
        return Err(Reason::NoIcmpSource);
    }
    Ok(())
}

/// Rewrites the frame, already sized to [`ERROR_FRAME_LEN`] and still holding the offending
/// packet's first bytes, into an ICMP `error` to the packet's sender, from `src` (the LB's
/// address) and `lb_mac`. Packets with IP options cannot be quoted in 28 bytes, and a
/// "fragmentation needed" for a packet without DF would be a lie (the sender allowed
/// fragmentation, which the LB cannot do): those get the error's unsendable reason; without
/// a source address, nothing is sent either ([`Reason::NoIcmpSource`]).
#[inline(always)]
pub fn write_error(
    pkt: &Packet,
    lb_mac: [u8; 6],
    src: [u8; 4],
    error: Error,
) -> Result<(), Reason> {
    // SAFETY: ptr_at checked that the whole reply fits; XDP frames are writable. The bytes
    // are written in place, word by word, rather than built on the 512-byte BPF stack.
    let frame = unsafe { &mut *pkt.ptr_at::<[u8; ERROR_FRAME_LEN]>(0)? };
    check(pkt, src, error)?;
    let ip = ETH_LEN;
    let Error { kind, code, word } = error;
    // The quote moves behind the new IPv4 and ICMP headers (the regions do not overlap).
    let quote = ip + 28;
    let mut i = 0;
    while i < QUOTE_LEN {
        frame[quote + i] = frame[ip + i];
        i += 1;
    }
    // Back to the packet's source, from the sender's MAC.
    let mut n = 0;
    while n < 6 {
        frame[n] = frame[6 + n];
        frame[6 + n] = lb_mac[n];
        n += 1;
    }
    frame[12] = 0x08;
    frame[13] = 0x00;
    let header: [u8; 20] = [
        0x45,
        0,
        0,
        IP_LEN as u8,
        0,
        0,
        0,
        0,
        64,
        1, // ICMP
        0,
        0,
        src[0],
        src[1],
        src[2],
        src[3],
        frame[quote + 12],
        frame[quote + 13],
        frame[quote + 14],
        frame[quote + 15],
    ];
    let check = csum::ipv4_header(&header);
    frame[ip..ip + 20].copy_from_slice(&header);
    frame[ip + 10] = check[0];
    frame[ip + 11] = check[1];
    let icmp = ip + 20;
    let word = word.to_be_bytes();
    frame[icmp..icmp + 8].copy_from_slice(&[kind, code, 0, 0, 0, 0, word[0], word[1]]);
    let mut sum: u32 = 0;
    let mut i = icmp;
    while i < ERROR_FRAME_LEN {
        sum += u16::from_be_bytes([frame[i], frame[i + 1]]) as u32;
        i += 2;
    }
    let check = (!csum::fold(sum)).to_be_bytes();
    frame[icmp + 2] = check[0];
    frame[icmp + 3] = check[1];
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
        run_error(f, Error::fragmentation_needed(1480))
    }

    fn run_error(f: &mut [u8], e: Error) -> Result<(), Reason> {
        let r = f.as_mut_ptr_range();
        // SAFETY: the range is the live buffer `f`.
        let pkt = unsafe { Packet::new(r.start as usize, r.end as usize) };
        write_error(&pkt, [2, 0, 0, 0, 0, 1], [198, 18, 0, 1], e)
    }

    #[test]
    fn time_exceeded_quotes_a_small_packet_grown_to_the_reply_size() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x64], [2, 0, 0, 0, 0, 1])
            .ipv4([198, 18, 0, 100], [198, 18, 100, 10], 1)
            .udp(40000, 53)
            .write(&mut f, b"")
            .unwrap();
        let original = f.clone();
        f.resize(ERROR_FRAME_LEN, 0); // what adjust_tail(+) does
        run_error(&mut f, Error::TIME_EXCEEDED).unwrap();
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
            panic!("ICMP")
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit)
        );
        assert_eq!(icmp.payload(), &original[14..42]);
        let sum: u32 = f[34..]
            .chunks(2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
            .sum();
        assert_eq!(csum::fold(sum), 0xffff);
        // No address to send from: nothing is written.
        let mut g = original.clone();
        g.resize(ERROR_FRAME_LEN, 0);
        let before = g.clone();
        let r = g.as_mut_ptr_range();
        // SAFETY: the range is the live buffer `g`.
        let pkt = unsafe { Packet::new(r.start as usize, r.end as usize) };
        assert_eq!(
            write_error(&pkt, [2; 6], [0; 4], Error::TIME_EXCEEDED),
            Err(Reason::NoIcmpSource)
        );
        assert_eq!(g, before);
        // A packet with options cannot be quoted: time exceeded is not sent about it.
        let mut h = original.clone();
        h.resize(ERROR_FRAME_LEN, 0);
        h[14] = 0x46;
        let before = h.clone();
        assert_eq!(
            run_error(&mut h, Error::TIME_EXCEEDED),
            Err(Reason::TtlExpired)
        );
        assert_eq!(h, before);
    }

    #[test]
    fn reply_goes_back_to_the_sender_quoting_its_packet() {
        let original = big_tcp(true);
        let mut f = original.clone();
        run(&mut f).unwrap();
        let reply = &f[..ERROR_FRAME_LEN];
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

    #[test]
    fn no_reply_without_an_address_to_send_from() {
        let mut f = big_tcp(true);
        let before = f.clone();
        let r = f.as_mut_ptr_range();
        // SAFETY: the range is the live buffer `f`.
        let pkt = unsafe { Packet::new(r.start as usize, r.end as usize) };
        let error = Error::fragmentation_needed(1480);
        assert_eq!(check(&pkt, [0; 4], error), Err(Reason::NoIcmpSource));
        assert_eq!(
            write_error(&pkt, [2; 6], [0; 4], error),
            Err(Reason::NoIcmpSource)
        );
        assert_eq!(f, before);
    }
}
