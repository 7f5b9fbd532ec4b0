//! Frames for the fixture tables, built with etherparse: the independent oracle of every
//! byte and checksum the datapath writes.

use etherparse::{icmpv4, Icmpv4Type, IpNumber, Ipv4Header, PacketBuilder};

use crate::fixture::*;

/// TCP flags of a test segment.
#[derive(Clone, Copy)]
pub enum Tcp {
    Syn,
    Ack,
    Fin,
    Rst,
}

/// One hop of a frame: Ethernet and IPv4 addresses, TTL.
pub struct Hop {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ttl: u8,
}

pub fn hop(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Hop {
    Hop {
        src_mac,
        dst_mac,
        src,
        dst,
        ttl: 64,
    }
}

impl Hop {
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn tcp(&self, sport: u16, dport: u16, flags: Tcp, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(self.src_mac, self.dst_mac)
            .ipv4(self.src, self.dst, self.ttl)
            .tcp(sport, dport, 7, 64240);
        let b = match flags {
            Tcp::Syn => b.syn(),
            Tcp::Ack => b.ack(11),
            Tcp::Fin => b.ack(11).fin(),
            Tcp::Rst => b.rst(),
        };
        build(|v| b.write(v, payload).unwrap())
    }

    /// A SYN with the options Linux sends: MSS, SACK permitted, a timestamp `tsval`, window
    /// scale.
    pub fn syn_with_timestamp(&self, sport: u16, dport: u16, tsval: u32) -> Vec<u8> {
        use etherparse::TcpOptionElement::*;
        let options = [
            MaximumSegmentSize(1460),
            SelectiveAcknowledgementPermitted,
            Timestamp(tsval, 0),
            Noop,
            WindowScale(7),
        ];
        let b = PacketBuilder::ethernet2(self.src_mac, self.dst_mac)
            .ipv4(self.src, self.dst, self.ttl)
            .tcp(sport, dport, 7, 64240)
            .syn()
            .options(&options)
            .unwrap();
        build(|v| b.write(v, &[]).unwrap())
    }

    pub fn udp(&self, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        build(|v| {
            PacketBuilder::ethernet2(self.src_mac, self.dst_mac)
                .ipv4(self.src, self.dst, self.ttl)
                .udp(sport, dport)
                .write(v, payload)
                .unwrap()
        })
    }

    /// ICMP port unreachable quoting `quoted` (an IP packet), as Linux sends it.
    pub fn port_unreachable(&self, quoted: &[u8]) -> Vec<u8> {
        build(|v| {
            PacketBuilder::ethernet2(self.src_mac, self.dst_mac)
                .ipv4(self.src, self.dst, self.ttl)
                .icmpv4(Icmpv4Type::DestinationUnreachable(
                    icmpv4::DestUnreachableHeader::Port,
                ))
                .write(v, quoted)
                .unwrap()
        })
    }
}

/// An IP packet (no Ethernet header) carrying UDP, as quoted in ICMP errors.
pub fn udp_ip(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    build(|v| {
        PacketBuilder::ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(v, payload)
            .unwrap()
    })
}

/// What the LB sends back when router mode would forward a packet whose TTL runs out.
pub fn time_exceeded(frame: &[u8]) -> Vec<u8> {
    let mut ip = Ipv4Header::new(0, 64, IpNumber::ICMP, LB_IP, CLIENT).unwrap();
    ip.dont_fragment = false;
    build(|v| {
        PacketBuilder::ethernet2(LB_MAC, CLIENT_MAC)
            .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
            .icmpv4(Icmpv4Type::TimeExceeded(
                icmpv4::TimeExceededCode::TtlExceededInTransit,
            ))
            .write(v, &frame[14..42])
            .unwrap()
    })
}

/// A TCP segment with IPv4 options (4 bytes of NOPs and an end) and TCP options (MSS, NOP).
pub fn with_options(h: &Hop, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut ip = Ipv4Header::new(0, h.ttl, IpNumber::TCP, h.src, h.dst).unwrap();
    ip.options = [1u8, 1, 1, 0][..].try_into().unwrap();
    build(|v| {
        PacketBuilder::ethernet2(h.src_mac, h.dst_mac)
            .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
            .tcp(sport, dport, 7, 64240)
            .ack(11)
            .options(&[
                etherparse::TcpOptionElement::MaximumSegmentSize(1460),
                etherparse::TcpOptionElement::Noop,
            ])
            .unwrap()
            .write(v, payload)
            .unwrap()
    })
}

/// `frame` wrapped in IP-in-IP from the LB's address behind IFINDEX_B to the real there.
pub fn ipip_via_b(frame: &[u8]) -> Vec<u8> {
    let inner = &frame[14..];
    let mut h = Ipv4Header::new(inner.len() as u16, 64, IpNumber(4), LB_B_IP, REAL_B_IP).unwrap();
    h.dont_fragment = true;
    h.header_checksum = h.calc_header_checksum();
    let mut out = Vec::new();
    etherparse::Ethernet2Header {
        source: LB_B_MAC,
        destination: REAL_B_MAC,
        ether_type: etherparse::EtherType::IPV4,
    }
    .write(&mut out)
    .unwrap();
    h.write(&mut out).unwrap();
    out.extend_from_slice(inner);
    out
}

pub fn zero_udp_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    frame[40..42].copy_from_slice(&[0, 0]);
    frame
}
