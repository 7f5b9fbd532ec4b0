//! Frames, map seed and counter bookkeeping shared by the BPF_PROG_TEST_RUN fixture tables.

use etherparse::{EtherType, Ethernet2Header, IpNumber, Ipv4Header, PacketBuilder};
use lb_common::IfaceConfig;
use lb_userspace::{
    datapath::{Datapath, Real},
    spec::{Mode, VipSpec},
    stats::CounterTable,
};

use crate::require_root;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x64];
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const REAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
pub const CLIENT: [u8; 4] = [198, 18, 0, 100];
pub const VIP: [u8; 4] = [198, 18, 100, 10];
pub const VIP_EMPTY: [u8; 4] = [198, 18, 100, 11];
pub const CLIENT6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64];
pub const LB_IP: [u8; 4] = [198, 18, 0, 1];
pub const REAL_IP: [u8; 4] = [198, 18, 0, 11];
pub const VIP_TUNNEL: [u8; 4] = [198, 18, 100, 12];
pub const VIP6_TUNNEL: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12];
pub const MTU: u16 = 1500;
pub const VIP6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];

pub fn vip(s: &str) -> VipSpec {
    s.parse().unwrap()
}

pub fn lb_iface() -> IfaceConfig {
    IfaceConfig {
        mac: LB_MAC,
        mtu: MTU,
        ipv4: LB_IP,
    }
}

/// The seed: tunnel VIPs 198.18.100.12:80/tcp and [2001:2::12]:80/tcp (6in4) over one IPv4
/// real; dsr VIPs 198.18.100.10:80/tcp, :53/udp and [2001:2::10]:80/tcp with one real
/// each (so the output is exact), and 198.18.100.11:80/tcp with none.
pub fn seeded() -> Datapath {
    require_root();
    let mut dp = Datapath::load().expect("load");
    dp.set_interface(lb_iface()).unwrap();
    let real4 = Real {
        addr: "198.18.0.11".parse().unwrap(),
        mac: REAL_MAC,
    };
    let real6 = Real {
        addr: "2001:2::11".parse().unwrap(),
        mac: REAL_MAC,
    };
    for (v, reals) in [
        ("198.18.100.10:80/tcp", vec![real4]),
        ("198.18.100.10:53/udp", vec![real4]),
        ("[2001:2::10]:80/tcp", vec![real6]),
        ("198.18.100.11:80/tcp", vec![]),
    ] {
        dp.add_vip(vip(v), Mode::Dsr).unwrap();
        dp.set_reals(&vip(v), &reals).unwrap();
    }
    for v in ["198.18.100.12:80/tcp", "[2001:2::12]:80/tcp"] {
        dp.add_vip(vip(v), Mode::Tunnel).unwrap();
        dp.set_reals(&vip(v), &[real4]).unwrap();
    }
    dp
}

pub fn eth() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
}

pub fn build<B>(write: impl FnOnce(&mut Vec<u8>) -> B) -> Vec<u8> {
    let mut v = Vec::new();
    write(&mut v);
    v
}

pub fn tcp4(dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    build(|v| {
        eth()
            .ipv4(CLIENT, dst, 64)
            .tcp(40000, dport, 7, 64240)
            .write(v, payload)
            .unwrap()
    })
}

pub fn udp4(dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    build(|v| {
        eth()
            .ipv4(CLIENT, dst, 64)
            .udp(40000, dport)
            .write(v, payload)
            .unwrap()
    })
}

/// The same frame as it leaves in DSR: to the real's MAC, from the LB's.
pub fn dsr_out(frame: &[u8]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[..6].copy_from_slice(&REAL_MAC);
    out[6..12].copy_from_slice(&LB_MAC);
    out
}

/// The same frame as it leaves in tunnel mode: new Ethernet header to the real, outer IPv4
/// header from the LB to the real (protocol 4, or 41 for IPv6 inside), DF set.
pub fn ipip_out(frame: &[u8], proto: u8) -> Vec<u8> {
    let inner = &frame[14..];
    let mut h = Ipv4Header::new(inner.len() as u16, 64, IpNumber(proto), LB_IP, REAL_IP).unwrap();
    h.dont_fragment = true;
    h.header_checksum = h.calc_header_checksum();
    let mut out = Vec::new();
    Ethernet2Header {
        source: LB_MAC,
        destination: REAL_MAC,
        ether_type: EtherType::IPV4,
    }
    .write(&mut out)
    .unwrap();
    h.write(&mut out).unwrap();
    out.extend_from_slice(inner);
    out
}

/// The LB's answer to a DF packet that would be too big once tunnelled: ICMP "fragmentation
/// needed" from the LB to the client, announcing MTU - 20, quoting the IP header and 8 bytes.
pub fn icmp_too_big(frame: &[u8]) -> Vec<u8> {
    let icmp = etherparse::Icmpv4Type::DestinationUnreachable(
        etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: MTU - 20,
        },
    );
    let mut ip = Ipv4Header::new(0, 64, IpNumber::ICMP, LB_IP, CLIENT).unwrap();
    ip.dont_fragment = false;
    build(|v| {
        PacketBuilder::ethernet2(LB_MAC, CLIENT_MAC)
            .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
            .icmpv4(icmp)
            .write(v, &frame[14..42])
            .unwrap()
    })
}

pub fn delta(before: &CounterTable, after: &CounterTable) -> Vec<(String, u64, u64)> {
    let mut moved = Vec::new();
    let f = |n: &str, b: &lb_common::Counter, a: &lb_common::Counter, moved: &mut Vec<_>| {
        if a != b {
            moved.push((n.to_owned(), a.packets - b.packets, a.bytes - b.bytes));
        }
    };
    f("forwarded", &before.forwarded, &after.forwarded, &mut moved);
    for ((r, b), (_, a)) in before.reasons.iter().zip(&after.reasons) {
        f(r.label(), b, a, &mut moved);
    }
    moved
}
