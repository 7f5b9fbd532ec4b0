//! Frames, map seed and counter bookkeeping shared by the BPF_PROG_TEST_RUN fixture tables.

use etherparse::{EtherType, Ethernet2Header, IpNumber, Ipv4Header, PacketBuilder};
use lb_common::IfaceConfig;
use lb_userspace::{
    datapath::{Datapath, Real},
    declare::{
        service::VipSettings,
        spec::{Mode, VipSpec},
    },
    stats::CounterTable,
};

use crate::require_root;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// BPF_PROG_TEST_RUN runs see the frame arrive on the loopback interface.
pub const IFINDEX_A: u32 = 1;
/// A second LB interface, towards the reals of nat and router VIPs. Only its index is used:
/// test runs do not redirect, they report XDP_REDIRECT.
pub const IFINDEX_B: u32 = 7;

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
/// A tunnel VIP with its own outer source, [`TUNNEL_SOURCE`].
pub const VIP_TUNNEL_SOURCED: [u8; 4] = [198, 18, 100, 13];
pub const TUNNEL_SOURCE: [u8; 4] = [198, 18, 0, 5];
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
        vmacs: Default::default(),
    }
}

/// The LB's side of the reals' subnet (IFINDEX_B).
pub const LB_B_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const LB_B_IP: [u8; 4] = [198, 18, 1, 1];
pub const REAL_B_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x1b];
pub const REAL_B_IP: [u8; 4] = [198, 18, 1, 11];
pub const VIP_NAT: [u8; 4] = [198, 18, 100, 20];
pub const VIP_ROUTER: [u8; 4] = [198, 18, 100, 21];
pub const VIP_ONE_ARM: [u8; 4] = [198, 18, 100, 22];
/// One-arm, a pool of one address and one port per CPU.
pub const VIP_EXHAUST: [u8; 4] = [198, 18, 100, 23];
/// A second nat VIP over the same real and port as VIP_NAT.
pub const VIP_NAT2: [u8; 4] = [198, 18, 100, 24];
/// nat over a real on the ingress interface's own segment.
pub const VIP_NAT_ONE_SEGMENT: [u8; 4] = [198, 18, 100, 25];
/// dsr and tunnel over a real behind IFINDEX_B.
pub const VIP_DSR_B: [u8; 4] = [198, 18, 100, 26];
pub const VIP_TUNNEL_B: [u8; 4] = [198, 18, 100, 27];
/// nat over a real behind an interface the LB has no entry for ([`IFINDEX_UNATTACHED`]).
pub const VIP_NAT_UNATTACHED: [u8; 4] = [198, 18, 100, 28];
/// An interface index the stateful seed never configures.
pub const IFINDEX_UNATTACHED: u32 = 9;
/// A nat VIP on IPv6, which nat does not have yet.
pub const VIP6_NAT: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20];
pub const POOL_IP: [u8; 4] = [198, 18, 0, 201];
pub const POOL2_IP: [u8; 4] = [198, 18, 0, 202];
pub const EXHAUST_PORT: u16 = 2000;

/// The port a one-arm flow from client port `port` (1024 or above) gets first from the
/// seed's 1024-32767 pool: the port of the range equal to it modulo the range's 31 744
/// ports (so a port in the range is kept).
pub const fn pool_port(port: u16) -> u16 {
    (1024 + (port as u32 - 1024) % 31_744) as u16
}

/// The stateful seed: nat VIPs 198.18.100.20:80/tcp and :53/udp over 198.18.1.11:8080 and
/// :5353 behind IFINDEX_B, router 198.18.100.21:80/tcp over 198.18.1.11 (same port), one-arm
/// 198.18.100.22:80/tcp and :53/udp over 198.18.0.11:8080/:5353 on the ingress interface
/// with pool 198.18.0.201, 1024-32767; one-arm 198.18.100.23:80/tcp with pool 198.18.0.202
/// and one port per CPU; nat 198.18.100.24:80/tcp over the same real and port as .20; nat
/// 198.18.100.25:80/tcp over 198.18.0.11 on the ingress interface; dsr .26 and tunnel .27
/// over 198.18.1.11 behind IFINDEX_B; nat .28:80/tcp over 198.18.1.11 behind an interface
/// without an entry (IFINDEX_UNATTACHED); nat [2001:2::20]:80/tcp without reals.
pub fn seeded_stateful() -> Datapath {
    require_root();
    let mut dp = Datapath::load().expect("load");
    dp.set_interface(IFINDEX_A, lb_iface()).unwrap();
    dp.set_interface(
        IFINDEX_B,
        IfaceConfig {
            mac: LB_B_MAC,
            mtu: MTU,
            ipv4: LB_B_IP,
            vmacs: Default::default(),
        },
    )
    .unwrap();
    let real_b = |port| Real {
        addr: REAL_B_IP.into(),
        port,
        mac: REAL_B_MAC,
        ifindex: IFINDEX_B,
        weight: 1,
        down: false,
    };
    let real_a = |port| Real {
        addr: REAL_IP.into(),
        port,
        mac: REAL_MAC,
        ifindex: IFINDEX_A,
        weight: 1,
        down: false,
    };
    let cpus = lb_userspace::datapath::possible_cpus().unwrap() as u16;
    let one_arm = |pool: [u8; 4], ports: &str| VipSettings {
        snat_pool: vec![pool.into()],
        snat_ports: ports.parse().unwrap(),
        ..VipSettings::new(Mode::OneArm)
    };
    let exhaust_ports = format!("{EXHAUST_PORT}-{}", EXHAUST_PORT + cpus - 1);
    for (v, settings, real) in [
        (
            "198.18.100.20:80/tcp",
            VipSettings::new(Mode::Nat),
            real_b(Some(8080)),
        ),
        (
            "198.18.100.20:53/udp",
            VipSettings::new(Mode::Nat),
            real_b(Some(5353)),
        ),
        (
            "198.18.100.21:80/tcp",
            VipSettings::new(Mode::Router),
            real_b(None),
        ),
        (
            "198.18.100.22:80/tcp",
            one_arm(POOL_IP, "1024-32767"),
            real_a(Some(8080)),
        ),
        (
            "198.18.100.22:53/udp",
            one_arm(POOL_IP, "1024-32767"),
            real_a(Some(5353)),
        ),
        (
            "198.18.100.23:80/tcp",
            one_arm(POOL2_IP, &exhaust_ports),
            real_a(None),
        ),
        (
            "198.18.100.24:80/tcp",
            VipSettings::new(Mode::Nat),
            real_b(Some(8080)),
        ),
        (
            "198.18.100.25:80/tcp",
            VipSettings::new(Mode::Nat),
            real_a(None),
        ),
        (
            "198.18.100.26:80/tcp",
            VipSettings::new(Mode::Dsr),
            real_b(None),
        ),
        (
            "198.18.100.27:80/tcp",
            VipSettings::new(Mode::Tunnel),
            real_b(None),
        ),
        (
            "198.18.100.28:80/tcp",
            VipSettings::new(Mode::Nat),
            Real {
                ifindex: IFINDEX_UNATTACHED,
                ..real_b(None)
            },
        ),
    ] {
        dp.add_vip(vip(v), &settings).unwrap();
        dp.set_reals(&vip(v), &[real]).unwrap();
    }
    dp.add_vip(vip("[2001:2::20]:80/tcp"), &VipSettings::new(Mode::Nat))
        .unwrap();
    dp
}

/// Pins the calling thread to CPU 0, so the one-arm allocator, which gives each CPU its own
/// slice of a port range, hands out ports the fixtures can predict.
pub fn pin_to_cpu0() {
    pin_to_cpu(0);
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity get valid pointers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "pinning the thread to CPU {cpu}");
    }
}

/// The seed: tunnel VIPs 198.18.100.12:80/tcp and [2001:2::12]:80/tcp (6in4) over one IPv4
/// real, and 198.18.100.13:80/tcp tunnelling from its own source; dsr VIPs 198.18.100.10:80/tcp, :53/udp and [2001:2::10]:80/tcp with one real
/// each (so the output is exact), and 198.18.100.11:80/tcp with none.
pub fn seeded() -> Datapath {
    require_root();
    let mut dp = Datapath::load().expect("load");
    dp.set_interface(IFINDEX_A, lb_iface()).unwrap();
    let real4 = Real::on_segment("198.18.0.11".parse().unwrap(), REAL_MAC);
    let real6 = Real::on_segment("2001:2::11".parse().unwrap(), REAL_MAC);
    for (v, reals) in [
        ("198.18.100.10:80/tcp", vec![real4]),
        ("198.18.100.10:53/udp", vec![real4]),
        ("[2001:2::10]:80/tcp", vec![real6]),
        ("198.18.100.11:80/tcp", vec![]),
    ] {
        dp.add_vip(vip(v), &VipSettings::new(Mode::Dsr)).unwrap();
        dp.set_reals(&vip(v), &reals).unwrap();
    }
    for v in ["198.18.100.12:80/tcp", "[2001:2::12]:80/tcp"] {
        dp.add_vip(vip(v), &VipSettings::new(Mode::Tunnel)).unwrap();
        dp.set_reals(&vip(v), &[real4]).unwrap();
    }
    let sourced = VipSettings {
        tunnel_source: Some(TUNNEL_SOURCE.into()),
        ..VipSettings::new(Mode::Tunnel)
    };
    dp.add_vip(vip("198.18.100.13:80/tcp"), &sourced).unwrap();
    dp.set_reals(&vip("198.18.100.13:80/tcp"), &[real4])
        .unwrap();
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
    ipip_out_from(frame, proto, LB_IP)
}

/// As [`ipip_out`], the outer header from `source`.
pub fn ipip_out_from(frame: &[u8], proto: u8, source: [u8; 4]) -> Vec<u8> {
    let inner = &frame[14..];
    let mut h = Ipv4Header::new(inner.len() as u16, 64, IpNumber(proto), source, REAL_IP).unwrap();
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
    f(
        "forwarded_replies",
        &before.replies,
        &after.replies,
        &mut moved,
    );
    for ((r, b), (_, a)) in before.reasons.iter().zip(&after.reasons) {
        f(r.label(), b, a, &mut moved);
    }
    moved
}
