//! The datapath on crafted frames through BPF_PROG_TEST_RUN: for each row, the input frame
//! (built with etherparse), the expected XDP action, the expected output bytes, and the one
//! counter that must move. The map seed is the same for every row (see `seeded`).

use std::net::IpAddr;

use etherparse::{
    IpNumber, Ipv4Header, Ipv6Extensions, Ipv6Header, Ipv6RawExtHeader, PacketBuilder,
};
use lb_common::{IfaceConfig, Reason};
use lb_userspace::{
    datapath::{Datapath, Real},
    declare::{service::VipSettings, spec::Mode},
};
use tests::{
    fixture::*,
    require_root,
    table::{self, Counted, Row},
};

fn rows() -> Vec<Row> {
    let tcp = tcp4(VIP, 80, b"GET / HTTP/1.0\r\n\r\n");
    let tcp_odd = tcp4(VIP, 80, b"odd");
    let udp = udp4(VIP, 53, b"query");
    let tcp_opts = build(|v| {
        let mut ip = Ipv4Header::new(0, 64, IpNumber::TCP, CLIENT, VIP).unwrap();
        ip.options = [1u8, 1, 1, 0][..].try_into().unwrap();
        eth()
            .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
            .tcp(40001, 80, 1, 1000)
            .options(&[
                etherparse::TcpOptionElement::MaximumSegmentSize(1460),
                etherparse::TcpOptionElement::Noop,
            ])
            .unwrap()
            .write(v, b"x")
            .unwrap()
    });
    let tcp6 = build(|v| {
        eth()
            .ipv6(CLIENT6, VIP6, 64)
            .tcp(40000, 80, 1, 1000)
            .write(v, b"v6")
            .unwrap()
    });
    let mut arp = tcp.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let icmp = build(|v| {
        eth()
            .ipv4(CLIENT, VIP, 64)
            .icmpv4_echo_request(1, 1)
            .write(v, b"ping")
            .unwrap()
    });
    let gre = build(|v| {
        eth()
            .ipv4(CLIENT, VIP, 64)
            .write(v, IpNumber::GRE, &[0, 0, 0x08, 0x00])
            .unwrap()
    });
    let ping6 = build(|v| {
        eth()
            .ipv6(CLIENT6, VIP6, 64)
            .icmpv6_echo_request(1, 1)
            .write(v, b"ping")
            .unwrap()
    });
    // Hop-by-hop options (a Pad6) before TCP: what the parser does not walk.
    let hop_by_hop6 = build(|v| {
        let ip = Ipv6Header {
            hop_limit: 64,
            source: CLIENT6,
            destination: VIP6,
            ..Default::default()
        };
        let exts = Ipv6Extensions {
            hop_by_hop_options: Some(
                Ipv6RawExtHeader::new_raw(IpNumber::TCP, &[1, 4, 0, 0, 0, 0]).unwrap(),
            ),
            ..Default::default()
        };
        eth()
            .ip(etherparse::IpHeaders::Ipv6(ip, exts))
            .tcp(40000, 80, 1, 1000)
            .write(v, b"")
            .unwrap()
    });
    let esp6 = build(|v| {
        eth()
            .ipv6(CLIENT6, VIP6, 64)
            .write(v, IpNumber::ENCAPSULATING_SECURITY_PAYLOAD, &[0; 16])
            .unwrap()
    });
    let mut fragment = udp.clone();
    fragment[20] = 0x20; // MF
    let mut bad_ihl = tcp.clone();
    bad_ihl[14] = 0x44;
    let mut to_other_host = tcp.clone();
    to_other_host[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x0d]);
    let mut broadcast = tcp.clone();
    broadcast[..6].copy_from_slice(&[0xff; 6]);
    let vlan = build(|v| {
        PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
            .single_vlan(etherparse::VlanId::try_new(7).unwrap())
            .ipv4(CLIENT, VIP, 64)
            .tcp(40000, 80, 1, 1000)
            .write(v, b"")
            .unwrap()
    });
    let tcp6_other = build(|v| {
        let mut dst = VIP6;
        dst[15] = 0x99;
        eth()
            .ipv6(CLIENT6, dst, 64)
            .tcp(40000, 80, 1, 1000)
            .write(v, b"")
            .unwrap()
    });
    let mut frag6 = build(|v| {
        eth()
            .ipv6(CLIENT6, VIP6, 64)
            .udp(40000, 80)
            .write(v, b"")
            .unwrap()
    });
    frag6[20] = 44; // next header: fragment
    let mut long_total = tcp.clone();
    let claimed = u16::from_be_bytes([long_total[16], long_total[17]]) + 1;
    long_total[16..18].copy_from_slice(&claimed.to_be_bytes());
    long_total[24..26].copy_from_slice(&[0, 0]);

    let tunnel = tcp4(VIP_TUNNEL, 80, b"GET / HTTP/1.0\r\n\r\n");
    let sourced = tcp4(VIP_TUNNEL_SOURCED, 80, b"GET / HTTP/1.0\r\n\r\n");
    let tunnel6 = build(|v| {
        eth()
            .ipv6(CLIENT6, VIP6_TUNNEL, 64)
            .tcp(40000, 80, 1, 1000)
            .write(v, b"v6")
            .unwrap()
    });
    // Inner packets of exactly MTU - 20 bytes fit; one byte more does not.
    let fits = tcp4(VIP_TUNNEL, 80, &vec![b'x'; MTU as usize - 20 - 40]);
    let too_big = tcp4(VIP_TUNNEL, 80, &vec![b'x'; MTU as usize - 20 - 40 + 1]);
    let too_big_no_df = build(|v| {
        let mut ip = Ipv4Header::new(0, 64, IpNumber::TCP, CLIENT, VIP_TUNNEL).unwrap();
        ip.dont_fragment = false;
        eth()
            .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
            .tcp(40000, 80, 7, 64240)
            .write(v, &vec![b'x'; MTU as usize - 20 - 40 + 1])
            .unwrap()
    });
    let too_big6 = build(|v| {
        eth()
            .ipv6(CLIENT6, VIP6_TUNNEL, 64)
            .tcp(40000, 80, 1, 1000)
            .write(v, &vec![b'x'; MTU as usize - 20 - 60 + 1])
            .unwrap()
    });

    use Counted::*;
    vec![
        Row {
            name: "tcp to tunnel vip: ip-in-ip to the real",
            output: Some(ipip_out(&tunnel, 4)),
            frame: tunnel,
            action: XDP_TX,
            counted: Request,
        },
        Row {
            name: "tcp to a tunnel vip with its own source: the outer header from it",
            output: Some(ipip_out_from(&sourced, 4, TUNNEL_SOURCE)),
            frame: sourced,
            action: XDP_TX,
            counted: Request,
        },
        Row {
            name: "tcp to ipv6 tunnel vip: 6in4",
            output: Some(ipip_out(&tunnel6, 41)),
            frame: tunnel6,
            action: XDP_TX,
            counted: Request,
        },
        Row {
            name: "tunnel: inner packet of mtu - 20 fits",
            output: Some(ipip_out(&fits, 4)),
            frame: fits,
            action: XDP_TX,
            counted: Request,
        },
        Row {
            name: "tunnel: one byte more is too big: icmp fragmentation needed back",
            output: Some(icmp_too_big(&too_big)),
            frame: too_big,
            action: XDP_TX,
            counted: Because(Reason::IcmpTooBig),
        },
        Row {
            name: "tunnel: too big without DF: dropped",
            frame: too_big_no_df,
            action: XDP_DROP,
            output: None,
            counted: Because(Reason::TooBig),
        },
        Row {
            name: "tunnel: ipv6 too big: dropped (no icmpv6 yet)",
            frame: too_big6,
            action: XDP_DROP,
            output: None,
            counted: Because(Reason::TooBigIpv6),
        },
        Row {
            name: "tcp to vip: dsr rewrites MACs only",
            output: Some(dsr_out(&tcp)),
            frame: tcp,
            action: XDP_TX,
            counted: Request,
        },
        Row {
            name: "tcp odd payload length",
            output: Some(dsr_out(&tcp_odd)),
            frame: tcp_odd,
            action: XDP_TX,
            counted: Request,
        },
        Row {
            name: "udp to vip",
            output: Some(dsr_out(&udp)),
            frame: udp.clone(),
            action: XDP_TX,
            counted: Request,
        },
        Row {
            name: "ipv4 options and tcp options",
            output: Some(dsr_out(&tcp_opts)),
            frame: tcp_opts,
            action: XDP_TX,
            counted: Request,
        },
        Row {
            name: "tcp to ipv6 vip",
            output: Some(dsr_out(&tcp6)),
            frame: tcp6,
            action: XDP_TX,
            counted: Request,
        },
        Row {
            name: "vip address, other port",
            frame: tcp4(VIP, 81, b""),
            action: XDP_PASS,
            output: None,
            counted: Because(Reason::NotVip),
        },
        Row {
            name: "vip port, other protocol",
            frame: udp4(VIP, 80, b""),
            action: XDP_PASS,
            output: None,
            counted: Because(Reason::NotVip),
        },
        Row {
            name: "not a vip address",
            frame: tcp4([198, 18, 0, 1], 80, b""),
            action: XDP_PASS,
            output: None,
            counted: Because(Reason::NotVip),
        },
        Row {
            name: "arp",
            frame: arp,
            action: XDP_PASS,
            output: None,
            counted: Because(Reason::NotIp),
        },
        Row {
            name: "icmp to vip, no vip stateful: not the LB's",
            frame: icmp,
            action: XDP_PASS,
            output: None,
            counted: Because(Reason::IcmpNotOurs),
        },
        Row {
            name: "icmpv6 to an ipv6 vip: not the LB's",
            frame: ping6,
            action: XDP_PASS,
            output: None,
            counted: Because(Reason::IcmpNotOurs),
        },
        Row {
            name: "gre to a vip address: another protocol",
            frame: gre,
            action: XDP_PASS,
            output: None,
            counted: Because(Reason::OtherProtocol),
        },
        Row {
            name: "esp to an ipv6 vip address: another protocol",
            frame: esp6,
            action: XDP_PASS,
            output: None,
            counted: Because(Reason::OtherProtocol),
        },
        Row {
            name: "ipv6 with a hop-by-hop header before tcp: not walked",
            frame: hop_by_hop6,
            action: XDP_PASS,
            output: None,
            counted: Because(Reason::Ipv6ExtHeader),
        },
        Row {
            name: "fragment to vip",
            frame: fragment,
            action: XDP_PASS,
            output: None,
            counted: Because(Reason::Fragment),
        },
        Row {
            name: "ports cut off",
            frame: udp[..36].to_vec(),
            action: XDP_DROP,
            output: None,
            counted: Because(Reason::Truncated),
        },
        Row {
            name: "ihl below 5",
            frame: bad_ihl,
            action: XDP_DROP,
            output: None,
            counted: Because(Reason::BadIpHeader),
        },
        Row {
            name: "vip frame to another host's MAC",
            frame: to_other_host,
            action: XDP_PASS,
            output: None,
            counted: Because(Reason::NotForUs),
        },
        Row {
            name: "vip frame to broadcast",
            frame: broadcast,
            action: XDP_PASS,
            output: None,
            counted: Because(Reason::NotForUs),
        },
        Row {
            name: "vlan tagged",
            frame: vlan,
            action: XDP_PASS,
            output: None,
            counted: Because(Reason::NotIp),
        },
        Row {
            name: "ipv6 not a vip",
            frame: tcp6_other,
            action: XDP_PASS,
            output: None,
            counted: Because(Reason::NotVip),
        },
        Row {
            name: "ipv6 fragment",
            frame: frag6,
            action: XDP_PASS,
            output: None,
            counted: Because(Reason::Fragment),
        },
        Row {
            name: "ipv4 total length past the frame",
            frame: long_total,
            action: XDP_DROP,
            output: None,
            counted: Because(Reason::Truncated),
        },
        Row {
            name: "vip without reals",
            frame: tcp4(VIP_EMPTY, 80, b""),
            action: XDP_DROP,
            output: None,
            counted: Because(Reason::NoReal),
        },
    ]
}

#[test]
fn fixture_table() {
    table::run(&seeded(), rows());
}

/// The program on an interface it has no IFACES entry for (its state set up for another):
/// a VIP's frame goes to the kernel, counted as such and not as another host's.
#[test]
fn a_vip_frame_on_an_interface_without_an_entry_is_passed() {
    require_root();
    let mut dp = Datapath::load().unwrap();
    let v = vip("198.18.100.10:80/tcp");
    dp.add_vip(v, &VipSettings::new(Mode::Dsr)).unwrap();
    dp.set_reals(&v, &[Real::on_segment(REAL_IP.into(), REAL_MAC)])
        .unwrap();
    table::run(
        &dp,
        vec![table::untouched(
            "vip frame, no entry for the interface",
            tcp4(VIP, 80, b""),
            XDP_PASS,
            Reason::IfaceNotConfigured,
        )],
    );
    dp.set_interface(IFINDEX_A, lb_iface()).unwrap();
    assert_eq!(dp.run_frame(&tcp4(VIP, 80, b"")).unwrap().0, XDP_TX);
}

/// keepalived's virtual MACs (`use_vmac`): a VIP frame to one the interface's entry holds is
/// balanced exactly as one to the interface's own MAC (the same rewrite: the LB's MAC as
/// source); a frame to a VRRP MAC it does not hold is another host's.
#[test]
fn frames_to_the_interfaces_virtual_macs_are_balanced() {
    const VMAC: [u8; 6] = [0, 0, 0x5e, 0, 1, 51];
    const VMAC6: [u8; 6] = [0, 0, 0x5e, 0, 2, 51];
    let mut dp = seeded();
    let to = |mac: [u8; 6]| {
        let mut f = tcp4(VIP, 80, b"GET / HTTP/1.0\r\n\r\n");
        f[..6].copy_from_slice(&mac);
        f
    };
    let unheld = || to([0, 0, 0x5e, 0, 1, 52]);
    table::run(
        &dp,
        vec![
            table::untouched("vrrp mac, none held", to(VMAC), XDP_PASS, Reason::NotForUs),
            // A zero destination never matches an unused (zero) slot.
            table::untouched("mac zero", to([0; 6]), XDP_PASS, Reason::NotForUs),
        ],
    );
    dp.set_interface(
        IFINDEX_A,
        IfaceConfig {
            vmacs: [VMAC, VMAC6],
            ..lb_iface()
        },
    )
    .unwrap();
    let own = to(LB_MAC);
    table::run(
        &dp,
        vec![
            table::row(
                "to the ipv4 vmac",
                to(VMAC),
                XDP_TX,
                dsr_out(&own),
                Counted::Request,
            ),
            table::row(
                "to the ipv6 vmac",
                to(VMAC6),
                XDP_TX,
                dsr_out(&own),
                Counted::Request,
            ),
            table::untouched("another vrid's vmac", unheld(), XDP_PASS, Reason::NotForUs),
            table::untouched(
                "mac zero, slots held",
                to([0; 6]),
                XDP_PASS,
                Reason::NotForUs,
            ),
        ],
    );
}

/// An interface without an IPv4 address: a packet too big to tunnel gets no "fragmentation
/// needed" (there is no address to send it from), and is counted so.
#[test]
fn no_icmp_without_an_address_to_send_it_from() {
    let mut dp = seeded();
    dp.set_interface(
        IFINDEX_A,
        IfaceConfig {
            ipv4: [0; 4],
            ..lb_iface()
        },
    )
    .unwrap();
    let too_big = tcp4(VIP_TUNNEL, 80, &vec![b'x'; MTU as usize - 20 - 40 + 1]);
    table::run(
        &dp,
        vec![table::untouched(
            "tunnel: too big, DF set, no address on the interface",
            too_big,
            XDP_DROP,
            Reason::NoIcmpSource,
        )],
    );
}

#[test]
fn per_vip_counters_count_forwarded_packets() {
    let dp = seeded();
    for _ in 0..3 {
        dp.run_frame(&tcp4(VIP, 80, b"a")).unwrap();
    }
    dp.run_frame(&udp4(VIP, 53, b"b")).unwrap();
    assert_eq!(
        dp.vip_forwarded(&vip("198.18.100.10:80/tcp"))
            .unwrap()
            .requests
            .packets,
        3
    );
    assert_eq!(
        dp.vip_forwarded(&vip("198.18.100.10:53/udp"))
            .unwrap()
            .requests
            .packets,
        1
    );
    assert_eq!(
        dp.vip_forwarded(&vip("198.18.100.11:80/tcp"))
            .unwrap()
            .requests
            .packets,
        0
    );
}

#[test]
fn flows_spread_over_reals_and_each_flow_sticks_to_one() {
    require_root();
    let mut dp = Datapath::load().unwrap();
    dp.set_interface(IFINDEX_A, lb_iface()).unwrap();
    let v = vip("198.18.100.10:80/tcp");
    let reals: Vec<Real> = (1..=3u8)
        .map(|i| {
            Real::on_segment(
                IpAddr::from([198, 18, 0, 10 + i]),
                [0x02, 0, 0, 0, 0, 0x0a + i],
            )
        })
        .collect();
    dp.add_vip(v, &VipSettings::new(Mode::Dsr)).unwrap();
    dp.set_reals(&v, &reals).unwrap();
    let mut per_real = [0usize; 3];
    for sport in 0..3000u16 {
        let frame = build(|w| {
            eth()
                .ipv4(CLIENT, VIP, 64)
                .tcp(20000 + sport, 80, 1, 1000)
                .write(w, b"")
                .unwrap()
        });
        let (action, out) = dp.run_frame(&frame).unwrap();
        assert_eq!(action, XDP_TX);
        let i = reals
            .iter()
            .position(|r| r.mac == out[..6])
            .expect("output goes to one of the reals");
        per_real[i] += 1;
        let (_, again) = dp.run_frame(&frame).unwrap();
        assert_eq!(again[..6], out[..6], "the same flow goes to the same real");
    }
    for n in per_real {
        assert!(
            (850..=1150).contains(&n),
            "3000 flows over 3 reals: {per_real:?}"
        );
    }
}

#[test]
fn replacing_the_reals_takes_effect_for_new_packets() {
    let mut dp = seeded();
    let v = vip("198.18.100.11:80/tcp");
    let frame = tcp4(VIP_EMPTY, 80, b"");
    assert_eq!(dp.run_frame(&frame).unwrap().0, XDP_DROP);
    let mac = [0x02, 0, 0, 0, 0, 0x0c];
    dp.set_reals(&v, &[Real::on_segment("198.18.0.12".parse().unwrap(), mac)])
        .unwrap();
    let (action, out) = dp.run_frame(&frame).unwrap();
    assert_eq!((action, &out[..6]), (XDP_TX, &mac[..]));
    dp.set_reals(&v, &[]).unwrap();
    assert_eq!(dp.run_frame(&frame).unwrap().0, XDP_DROP);
}

/// The flood guard: above its rate of new flows a second on a CPU, a guarded dsr VIP's new
/// flows are forwarded by the ring without a flow entry (each of their packets to the same
/// real); a VIP without a guard keeps making entries at the same rate.
#[test]
fn above_its_rate_a_flood_guarded_vip_forwards_new_flows_by_the_ring_without_entries() {
    require_root();
    let mut dp = Datapath::load().unwrap();
    dp.set_interface(IFINDEX_A, lb_iface()).unwrap();
    let guarded = vip("198.18.100.10:80/tcp");
    let open = vip("198.18.100.10:81/tcp");
    let reals: Vec<Real> = (1..=3u8)
        .map(|i| {
            Real::on_segment(
                IpAddr::from([198, 18, 0, 10 + i]),
                [0x02, 0, 0, 0, 0, 0x0a + i],
            )
        })
        .collect();
    let mut settings = VipSettings::new(Mode::Dsr);
    settings.flood_guard = 5;
    dp.add_vip(guarded, &settings).unwrap();
    dp.set_reals(&guarded, &reals).unwrap();
    dp.add_vip(open, &VipSettings::new(Mode::Dsr)).unwrap();
    dp.set_reals(&open, &reals).unwrap();
    let frame = |sport: u16, port: u16| {
        build(|w| {
            eth()
                .ipv4(CLIENT, VIP, 64)
                .tcp(sport, port, 1, 1000)
                .write(w, b"")
                .unwrap()
        })
    };
    let entries = |dp: &Datapath, port: u16| {
        dp.flows()
            .unwrap()
            .iter()
            .filter(|(k, _)| u16::from_be_bytes(k.dport) == port)
            .count()
    };
    // 40 new flows well within a second: the first 5 on a CPU get entries, the rest do not
    // (at most 2 CPUs × 5, or 20 should the one-second window roll over once meanwhile).
    for sport in 0..40u16 {
        let (action, out) = dp.run_frame(&frame(30000 + sport, 80)).unwrap();
        assert_eq!(action, XDP_TX, "a guarded new flow is still forwarded");
        assert!(
            reals.iter().any(|r| r.mac == out[..6]),
            "to one of the reals"
        );
        let (_, again) = dp.run_frame(&frame(30000 + sport, 80)).unwrap();
        assert_eq!(
            again[..6],
            out[..6],
            "every packet of the flow to the same real"
        );
    }
    let with_entries = entries(&dp, 80);
    let guarded_flows = dp.flood_guarded().unwrap();
    assert!(
        (5..=20).contains(&with_entries),
        "{with_entries} of 40 flows have entries"
    );
    // Each guarded flow's second packet was a new flow again (it has no entry).
    assert!(guarded_flows >= 2 * 20, "{guarded_flows} guarded");
    // The VIP without a guard makes an entry for every new flow at the same rate.
    for sport in 0..40u16 {
        let (action, _) = dp.run_frame(&frame(30000 + sport, 81)).unwrap();
        assert_eq!(action, XDP_TX);
    }
    assert_eq!(entries(&dp, 81), 40);
    assert_eq!(
        dp.flood_guarded().unwrap(),
        guarded_flows,
        "nothing guarded there"
    );
}

/// The established path forwards from a flow's entry alone, without the VIP's: when the
/// VIP changes mode or goes, its reals are retired, so its flows' entries settle nothing
/// more. Re-moded, the same tuple's next packet is a flow of the new mode; removed, it is
/// passed as not a VIP.
#[test]
fn an_established_flow_follows_its_vip_re_moded_and_is_passed_once_the_vip_is_removed() {
    require_root();
    let mut dp = Datapath::load().unwrap();
    dp.set_interface(IFINDEX_A, lb_iface()).unwrap();
    let v = vip("198.18.100.10:80/tcp");
    let reals = [Real::on_segment(
        IpAddr::from([198, 18, 0, 11]),
        [0x02, 0, 0, 0, 0, 0x0b],
    )];
    dp.add_vip(v, &VipSettings::new(Mode::Dsr)).unwrap();
    dp.set_reals(&v, &reals).unwrap();
    let frame = tcp4(VIP, 80, b"x");
    for _ in 0..2 {
        let (action, out) = dp.run_frame(&frame).unwrap();
        assert_eq!(action, XDP_TX);
        assert_eq!(
            (out.len(), &out[..6]),
            (frame.len(), &reals[0].mac[..]),
            "dsr"
        );
    }
    dp.change_vip(&v, &VipSettings::new(Mode::Tunnel), &reals)
        .unwrap();
    for _ in 0..2 {
        let (action, out) = dp.run_frame(&frame).unwrap();
        assert_eq!(action, XDP_TX);
        assert_eq!(
            out.len(),
            frame.len() + 20,
            "IP-in-IP once the VIP is a tunnel's"
        );
        assert_eq!(out[14 + 9], 4, "the outer header's protocol: IP-in-IP");
    }
    let not_vip = |dp: &Datapath| {
        dp.counters()
            .unwrap()
            .reasons
            .iter()
            .find(|(r, _)| *r == Reason::NotVip)
            .map_or(0, |(_, c)| c.packets)
    };
    let before = not_vip(&dp);
    dp.remove_vip(&v).unwrap();
    let (action, out) = dp.run_frame(&frame).unwrap();
    assert_eq!(
        (action, out),
        (XDP_PASS, frame.clone()),
        "passed as it came"
    );
    assert_eq!(not_vip(&dp), before + 1, "counted as not a VIP");
}

/// The established path finds the interface's entry in the array slot its ifindex picks
/// (IFACE_SLOTS): when a later interface takes the slot, the first one's packets still go,
/// the full way (which asks IFACES).
#[test]
fn an_interface_whose_slot_another_took_still_forwards_its_flows() {
    require_root();
    let mut dp = Datapath::load().unwrap();
    dp.set_interface(IFINDEX_A, lb_iface()).unwrap();
    let v = vip("198.18.100.10:80/tcp");
    let reals = [Real::on_segment(
        IpAddr::from([198, 18, 0, 11]),
        [0x02, 0, 0, 0, 0, 0x0b],
    )];
    dp.add_vip(v, &VipSettings::new(Mode::Dsr)).unwrap();
    dp.set_reals(&v, &reals).unwrap();
    let frame = tcp4(VIP, 80, b"x");
    let (action, first) = dp.run_frame(&frame).unwrap();
    assert_eq!(action, XDP_TX);
    // An entry that would take the frame too (the LB's MAC as a virtual MAC) but send it
    // from another MAC: used by mistake, it shows in the output.
    let other = IfaceConfig {
        mac: [0x02, 0, 0, 0, 0, 0x77],
        vmacs: [LB_MAC, [0; 6]],
        ..lb_iface()
    };
    dp.set_interface(IFINDEX_A + lb_common::IFACE_SLOTS, other)
        .unwrap();
    for _ in 0..2 {
        let (action, out) = dp.run_frame(&frame).unwrap();
        assert_eq!(
            (action, &out),
            (XDP_TX, &first),
            "as before, from the LB's own MAC"
        );
    }
}
