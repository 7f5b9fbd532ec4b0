//! nat, router and one-arm on crafted frames through BPF_PROG_TEST_RUN. Unlike the stateless
//! table, rows are a conversation: each may depend on the flows the rows before it created.
//! Every expected frame is built independently with etherparse, checksums included.

use lb_common::{Flow, Reason, FLOW_ANSWERED, FLOW_CLOSING, FLOW_REPLY};
use lb_userspace::{
    datapath::{Datapath, Real},
    declare::{service::VipSettings, spec::Mode},
};
use tests::{
    fixture::*,
    frames::{hop, ipip_via_b, time_exceeded, udp_ip, with_options, zero_udp_checksum, Hop, Tcp},
    table::{self, row, untouched, Counted, Row},
};

// Who sends to whom: the client to the LB, the LB to the reals and back.
fn client_to_lb(vip: [u8; 4]) -> Hop {
    hop(CLIENT_MAC, LB_MAC, CLIENT, vip)
}
fn real_b_to_lb() -> Hop {
    hop(REAL_B_MAC, LB_B_MAC, REAL_B_IP, CLIENT)
}

fn rows() -> Vec<Row> {
    use Counted::*;
    let q = b"query";
    let quoted_at_real = udp_ip(CLIENT, REAL_B_IP, 40000, 5353, q);
    let quoted_at_client = udp_ip(CLIENT, VIP_NAT, 40000, 53, q);
    let one_arm_quoted_at_real = udp_ip(POOL_IP, REAL_IP, pool_port(40000), 5353, q);
    let one_arm_quoted_at_client = udp_ip(CLIENT, VIP_ONE_ARM, 40000, 53, q);
    let late = client_to_lb(VIP_ROUTER)
        .ttl(1)
        .tcp(40000, 80, Tcp::Ack, b"late");
    vec![
        // nat: the LB is the reals' gateway on its second interface.
        row(
            "nat: SYN to the real's port 8080; the client's MAC stays the source",
            client_to_lb(VIP_NAT).tcp(40000, 80, Tcp::Syn, b""),
            XDP_REDIRECT,
            hop(CLIENT_MAC, REAL_B_MAC, CLIENT, REAL_B_IP).tcp(40000, 8080, Tcp::Syn, b""),
            Request,
        ),
        row(
            "nat: the real's answer goes back to the client as from the VIP",
            real_b_to_lb().tcp(8080, 40000, Tcp::Ack, b""),
            XDP_TX,
            hop(REAL_B_MAC, CLIENT_MAC, VIP_NAT, CLIENT).tcp(80, 40000, Tcp::Ack, b""),
            Reply,
        ),
        row(
            "nat: an odd payload length",
            client_to_lb(VIP_NAT).tcp(40000, 80, Tcp::Ack, b"odd"),
            XDP_REDIRECT,
            hop(CLIENT_MAC, REAL_B_MAC, CLIENT, REAL_B_IP).tcp(40000, 8080, Tcp::Ack, b"odd"),
            Request,
        ),
        row(
            "nat: a reply with data",
            real_b_to_lb().tcp(8080, 40000, Tcp::Ack, b"hello client"),
            XDP_TX,
            hop(REAL_B_MAC, CLIENT_MAC, VIP_NAT, CLIENT).tcp(80, 40000, Tcp::Ack, b"hello client"),
            Reply,
        ),
        row(
            "nat: IPv4 options and TCP options move nothing but the offsets",
            with_options(&client_to_lb(VIP_NAT), 40000, 80, b"opts"),
            XDP_REDIRECT,
            with_options(
                &hop(CLIENT_MAC, REAL_B_MAC, CLIENT, REAL_B_IP),
                40000,
                8080,
                b"opts",
            ),
            Request,
        ),
        row(
            "nat on one segment: the LB's MAC as source, or switches would learn the client's on the LB's port",
            client_to_lb(VIP_NAT_ONE_SEGMENT).tcp(40000, 80, Tcp::Syn, b""),
            XDP_TX,
            hop(LB_MAC, REAL_MAC, CLIENT, REAL_IP).tcp(40000, 80, Tcp::Syn, b""),
            Request,
        ),
        row(
            "nat on one segment: the answer, from the LB's MAC too",
            hop(REAL_MAC, LB_MAC, REAL_IP, CLIENT).tcp(80, 40000, Tcp::Ack, b""),
            XDP_TX,
            hop(LB_MAC, CLIENT_MAC, VIP_NAT_ONE_SEGMENT, CLIENT).tcp(80, 40000, Tcp::Ack, b""),
            Reply,
        ),
        row(
            "nat udp: to the real's port 5353",
            client_to_lb(VIP_NAT).udp(40000, 53, q),
            XDP_REDIRECT,
            hop(CLIENT_MAC, REAL_B_MAC, CLIENT, REAL_B_IP).udp(40000, 5353, q),
            Request,
        ),
        row(
            "nat udp: a zero checksum (none) stays zero",
            zero_udp_checksum(client_to_lb(VIP_NAT).udp(40001, 53, q)),
            XDP_REDIRECT,
            zero_udp_checksum(hop(CLIENT_MAC, REAL_B_MAC, CLIENT, REAL_B_IP).udp(40001, 5353, q)),
            Request,
        ),
        row(
            "nat udp: the real's port unreachable reaches the client about its own datagram",
            real_b_to_lb().port_unreachable(&quoted_at_real),
            XDP_TX,
            hop(REAL_B_MAC, CLIENT_MAC, VIP_NAT, CLIENT).port_unreachable(&quoted_at_client),
            Reply,
        ),
        // router: the same, as an L3 hop.
        row(
            "router: SYN to the real from the LB's MAC, TTL - 1",
            client_to_lb(VIP_ROUTER).tcp(40000, 80, Tcp::Syn, b""),
            XDP_REDIRECT,
            hop(LB_B_MAC, REAL_B_MAC, CLIENT, REAL_B_IP)
                .ttl(63)
                .tcp(40000, 80, Tcp::Syn, b""),
            Request,
        ),
        row(
            "router: the answer from the LB's MAC, TTL - 1",
            real_b_to_lb().tcp(80, 40000, Tcp::Ack, b""),
            XDP_TX,
            hop(LB_MAC, CLIENT_MAC, VIP_ROUTER, CLIENT)
                .ttl(63)
                .tcp(80, 40000, Tcp::Ack, b""),
            Reply,
        ),
        row(
            "router: a TTL that would expire gets ICMP time exceeded",
            late.clone(),
            XDP_TX,
            time_exceeded(&late),
            Because(Reason::IcmpTtlExceeded),
        ),
        untouched(
            "router: a TTL that would expire with IP options cannot be quoted: dropped",
            with_options(&client_to_lb(VIP_ROUTER).ttl(1), 40000, 80, b"x"),
            XDP_DROP,
            Reason::TtlExpired,
        ),
        // one-arm: the source becomes the pool's, on the ingress interface's segment.
        row(
            "one-arm: SYN to the real from the pool address and the client's port, mapped into \
             the pool's range",
            client_to_lb(VIP_ONE_ARM).tcp(40000, 80, Tcp::Syn, b""),
            XDP_TX,
            hop(LB_MAC, REAL_MAC, POOL_IP, REAL_IP).tcp(pool_port(40000), 8080, Tcp::Syn, b""),
            Request,
        ),
        row(
            "one-arm: the answer to the pool port goes to the client from the VIP",
            hop(REAL_MAC, LB_MAC, REAL_IP, POOL_IP).tcp(8080, pool_port(40000), Tcp::Ack, b""),
            XDP_TX,
            hop(LB_MAC, CLIENT_MAC, VIP_ONE_ARM, CLIENT).tcp(80, 40000, Tcp::Ack, b""),
            Reply,
        ),
        row(
            "one-arm: another client port, its own pool port",
            client_to_lb(VIP_ONE_ARM).tcp(40001, 80, Tcp::Syn, b""),
            XDP_TX,
            hop(LB_MAC, REAL_MAC, POOL_IP, REAL_IP).tcp(pool_port(40001), 8080, Tcp::Syn, b""),
            Request,
        ),
        row(
            "one-arm: a client port inside the pool's range is kept as it is",
            client_to_lb(VIP_ONE_ARM).tcp(5000, 80, Tcp::Syn, b""),
            XDP_TX,
            hop(LB_MAC, REAL_MAC, POOL_IP, REAL_IP).tcp(5000, 8080, Tcp::Syn, b""),
            Request,
        ),
        untouched(
            "one-arm: an answer to a pool port no flow holds",
            hop(REAL_MAC, LB_MAC, REAL_IP, POOL_IP).tcp(8080, 1999, Tcp::Ack, b""),
            XDP_PASS,
            Reason::NoFlow,
        ),
        row(
            "one-arm udp: to the real's port 5353 from the client's pool port (a port per \
             protocol)",
            client_to_lb(VIP_ONE_ARM).udp(40000, 53, q),
            XDP_TX,
            hop(LB_MAC, REAL_MAC, POOL_IP, REAL_IP).udp(pool_port(40000), 5353, q),
            Request,
        ),
        row(
            "one-arm udp: port unreachable reaches the client about its own datagram",
            hop(REAL_MAC, LB_MAC, REAL_IP, POOL_IP).port_unreachable(&one_arm_quoted_at_real),
            XDP_TX,
            hop(LB_MAC, CLIENT_MAC, VIP_ONE_ARM, CLIENT)
                .port_unreachable(&one_arm_quoted_at_client),
            Reply,
        ),
        row(
            "nat: a flow from client port 40100",
            client_to_lb(VIP_NAT).tcp(40100, 80, Tcp::Syn, b""),
            XDP_REDIRECT,
            hop(CLIENT_MAC, REAL_B_MAC, CLIENT, REAL_B_IP).tcp(40100, 8080, Tcp::Syn, b""),
            Request,
        ),
        untouched(
            "nat: the same port to another VIP on the same real and port would clash",
            client_to_lb(VIP_NAT2).tcp(40100, 80, Tcp::Syn, b""),
            XDP_DROP,
            Reason::FlowClash,
        ),
        row(
            "dsr to a real behind another interface: from that interface's MAC",
            client_to_lb(VIP_DSR_B).tcp(40000, 80, Tcp::Syn, b""),
            XDP_REDIRECT,
            hop(LB_B_MAC, REAL_B_MAC, CLIENT, VIP_DSR_B).tcp(40000, 80, Tcp::Syn, b""),
            Request,
        ),
        row(
            "tunnel to a real behind another interface: from that interface's address",
            client_to_lb(VIP_TUNNEL_B).tcp(40000, 80, Tcp::Syn, b""),
            XDP_REDIRECT,
            ipip_via_b(&client_to_lb(VIP_TUNNEL_B).tcp(40000, 80, Tcp::Syn, b"")),
            Request,
        ),
        untouched(
            "nat: a packet from the real's service port that no flow knows",
            real_b_to_lb().tcp(8080, 45000, Tcp::Ack, b""),
            XDP_PASS,
            Reason::NoFlow,
        ),
        untouched(
            "the real's other traffic is not the LB's",
            real_b_to_lb().tcp(22, 45000, Tcp::Ack, b""),
            XDP_PASS,
            Reason::NotVip,
        ),
        untouched(
            "an ICMP error about no flow is the kernel's",
            real_b_to_lb().port_unreachable(&udp_ip(CLIENT, REAL_B_IP, 49999, 5353, q)),
            XDP_PASS,
            Reason::IcmpNotOurs,
        ),
        untouched(
            "a ping to a stateful VIP is the kernel's",
            build(|v| {
                eth()
                    .ipv4(CLIENT, VIP_NAT, 64)
                    .icmpv4_echo_request(1, 1)
                    .write(v, b"ping")
                    .unwrap()
            }),
            XDP_PASS,
            Reason::IcmpNotOurs,
        ),
        untouched(
            "an ICMP error about a flow, its quote cut inside the IP header: the kernel's",
            real_b_to_lb().port_unreachable(&quoted_at_real[..12]),
            XDP_PASS,
            Reason::IcmpBadQuote,
        ),
        untouched(
            "an ICMP error about a flow, its quote cut inside the ports: the kernel's",
            real_b_to_lb().port_unreachable(&quoted_at_real[..22]),
            XDP_PASS,
            Reason::IcmpBadQuote,
        ),
        untouched(
            "nat over a real behind an interface the LB is not attached to",
            client_to_lb(VIP_NAT_UNATTACHED).tcp(40000, 80, Tcp::Syn, b""),
            XDP_DROP,
            Reason::EgressNotAttached,
        ),
        untouched(
            "ipv6 to a nat VIP: nat has no IPv6 yet",
            build(|v| {
                eth()
                    .ipv6(CLIENT6, VIP6_NAT, 64)
                    .tcp(40000, 80, 1, 1000)
                    .write(v, b"")
                    .unwrap()
            }),
            XDP_DROP,
            Reason::ModeNoIpv6,
        ),
    ]
}

#[test]
fn stateful_fixture_table() {
    pin_to_cpu0();
    table::run(&seeded_stateful(), rows());
}

/// The flow table entries whose key or rewrite names client port `port`.
fn entries_of(dp: &Datapath, port: u16) -> Vec<(lb_common::FlowKey, lb_common::Flow)> {
    let p = port.to_be_bytes();
    dp.flows()
        .unwrap()
        .into_iter()
        .filter(|(k, f)| k.sport == p || k.dport == p || f.sport == p || f.dport == p)
        .collect()
}

#[test]
fn a_flow_has_two_entries_a_fin_shortens_them_and_a_rst_removes_them() {
    let dp = seeded_stateful();
    let to_real = |flags| client_to_lb(VIP_NAT).tcp(42000, 80, flags, b"");
    dp.run_frame(&to_real(Tcp::Syn)).unwrap();
    let entries = entries_of(&dp, 42000);
    assert_eq!(entries.len(), 2, "request and reply entries: {entries:?}");
    assert!(entries.iter().all(|(_, f)| f.flags & FLOW_CLOSING == 0));
    assert!(
        entries.iter().all(|(_, f)| f.flags & FLOW_ANSWERED == 0),
        "half open until the real answers: the short timeout"
    );
    dp.run_frame(&real_b_to_lb().tcp(8080, 42000, Tcp::Ack, b""))
        .unwrap();
    assert!(
        entries_of(&dp, 42000)
            .iter()
            .all(|(_, f)| f.flags & FLOW_ANSWERED != 0),
        "the first answer marks both entries answered"
    );

    let (action, _) = dp.run_frame(&to_real(Tcp::Fin)).unwrap();
    assert_eq!(action, XDP_REDIRECT, "the FIN is forwarded");
    let entries = entries_of(&dp, 42000);
    assert_eq!(entries.len(), 2);
    assert!(
        entries.iter().all(|(_, f)| f.flags & FLOW_CLOSING != 0),
        "both directions closing after a FIN: {entries:?}"
    );

    // A new connection on the same tuple (a SYN) replaces the closing flow.
    dp.run_frame(&to_real(Tcp::Syn)).unwrap();
    let entries = entries_of(&dp, 42000);
    assert_eq!(entries.len(), 2);
    assert!(
        entries
            .iter()
            .all(|(_, f)| f.flags & (FLOW_CLOSING | FLOW_ANSWERED) == 0),
        "a SYN after a FIN starts afresh: {entries:?}"
    );

    let (action, _) = dp
        .run_frame(&real_b_to_lb().tcp(8080, 42000, Tcp::Rst, b""))
        .unwrap();
    assert_eq!(action, XDP_TX, "the real's RST reaches the client");
    assert!(entries_of(&dp, 42000).is_empty(), "a RST ends the flow");
    let before = dp.counters().unwrap();
    dp.run_frame(&real_b_to_lb().tcp(8080, 42000, Tcp::Ack, b""))
        .unwrap();
    assert_eq!(
        delta(&before, &dp.counters().unwrap())[0].0,
        Reason::NoFlow.label()
    );
}

/// A one-arm VIP whose pool has one port per CPU and flows that expire after a second.
fn short_lived_one_arm() -> Datapath {
    let mut dp = Datapath::load().unwrap();
    dp.set_interface(IFINDEX_A, lb_iface()).unwrap();
    let cpus = lb_userspace::datapath::possible_cpus().unwrap() as u16;
    let mut settings = VipSettings {
        snat_pool: vec![POOL2_IP.into()],
        snat_ports: format!("{EXHAUST_PORT}-{}", EXHAUST_PORT + cpus - 1)
            .parse()
            .unwrap(),
        ..VipSettings::new(Mode::OneArm)
    };
    settings.timeouts.tcp = 1;
    settings.timeouts.tcp_fin = 1;
    let v = vip("198.18.100.23:80/tcp");
    dp.add_vip(v, &settings).unwrap();
    let real = Real {
        addr: REAL_IP.into(),
        port: None,
        mac: REAL_MAC,
        ifindex: IFINDEX_A,
        weight: 1,
        down: false,
    };
    dp.set_reals(&v, &[real]).unwrap();
    dp
}

/// The port a one-arm frame leaves from.
fn port_of(out: &[u8]) -> u16 {
    u16::from_be_bytes([out[34], out[35]])
}

#[test]
fn snat_ports_are_freed_when_their_flow_ends_or_expires() {
    pin_to_cpu0();
    let dp = short_lived_one_arm();
    let cpus = lb_userspace::datapath::possible_cpus().unwrap() as u16;
    let syn = |sport| client_to_lb(VIP_EXHAUST).tcp(sport, 80, Tcp::Syn, b"");
    // As many flows as the pool has ports (one per CPU) take them all, each the port its
    // client port is modulo the range's size.
    let mut first = None;
    for sport in 41000..41000 + cpus {
        let (action, out) = dp.run_frame(&syn(sport)).unwrap();
        let own = EXHAUST_PORT + (sport - EXHAUST_PORT) % cpus;
        assert_eq!(
            (action, port_of(&out)),
            (XDP_TX, own),
            "client port {sport}"
        );
        first.get_or_insert(own);
    }
    let first = first.unwrap();
    let before = dp.counters().unwrap();
    assert_eq!(
        dp.run_frame(&syn(41000 + cpus)).unwrap().0,
        XDP_DROP,
        "no port left"
    );
    assert_eq!(
        delta(&before, &dp.counters().unwrap())[0].0,
        Reason::SnatExhausted.label()
    );

    // The real resets the first flow: its port is free at once.
    let rst = hop(REAL_MAC, LB_MAC, REAL_IP, POOL2_IP).tcp(80, first, Tcp::Rst, b"");
    assert_eq!(dp.run_frame(&rst).unwrap().0, XDP_TX);
    let (action, out) = dp.run_frame(&syn(41000 + cpus)).unwrap();
    assert_eq!((action, port_of(&out)), (XDP_TX, first));

    // Idle past the VIP's 1 s timeout: the flows are gone and their ports someone else's.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let before = dp.counters().unwrap();
    let late_answer = hop(REAL_MAC, LB_MAC, REAL_IP, POOL2_IP).tcp(80, first, Tcp::Ack, b"");
    assert_eq!(dp.run_frame(&late_answer).unwrap().0, XDP_PASS);
    assert_eq!(
        delta(&before, &dp.counters().unwrap())[0].0,
        Reason::NoFlow.label(),
        "an expired flow answers nothing"
    );
    let (action, out) = dp.run_frame(&syn(41000 + 2 * cpus)).unwrap();
    assert_eq!((action, port_of(&out)), (XDP_TX, first));
}

/// One-arm, after a flow ended both ways (a FIN from each side, so the real holds its pool
/// tuple in TIME_WAIT or has closed it): the tuple is the same client's again at once when
/// its SYNs carry TCP timestamps (newer ones, which the real's TIME_WAIT accepts). Another
/// client, a SYN without timestamps, or a flow only one side has closed waits out the FIN
/// timeout (120 s here): the next port is taken instead.
#[test]
fn a_closed_one_arm_flows_pool_port_is_its_clients_again_at_once_and_no_one_elses() {
    pin_to_cpu0();
    let dp = seeded_stateful();
    const OTHER_CLIENT: [u8; 4] = [198, 18, 0, 101];
    let from = |client| hop(CLIENT_MAC, LB_MAC, client, VIP_ONE_ARM);
    let open = |client, sport, timestamps: bool| {
        let syn = if timestamps {
            from(client).syn_with_timestamp(sport, 80, 1000 + sport as u32)
        } else {
            from(client).tcp(sport, 80, Tcp::Syn, b"")
        };
        let (action, out) = dp.run_frame(&syn).unwrap();
        assert_eq!(action, XDP_TX, "SYN from {client:?}:{sport}");
        port_of(&out)
    };
    let real_fin = |port| {
        let fin = hop(REAL_MAC, LB_MAC, REAL_IP, POOL_IP).tcp(8080, port, Tcp::Fin, b"");
        assert_eq!(dp.run_frame(&fin).unwrap().0, XDP_TX);
    };
    let client_fin = |client, sport| {
        let fin = from(client).tcp(sport, 80, Tcp::Fin, b"");
        assert_eq!(dp.run_frame(&fin).unwrap().0, XDP_TX);
    };
    // Client ports p and p - 31 744 map to the same pool port.
    let twin = |sport: u16| sport - 31_744;

    // Closed both ways, timestamps: the same client's next flow gets the port at once, and
    // the real's answers on it reach that flow.
    let port = open(CLIENT, 40010, true);
    assert_eq!(port, pool_port(40010));
    real_fin(port);
    client_fin(CLIENT, 40010);
    assert_eq!(
        open(CLIENT, twin(40010), true),
        port,
        "reused by its client"
    );
    let answer = hop(REAL_MAC, LB_MAC, REAL_IP, POOL_IP).tcp(8080, port, Tcp::Ack, b"");
    let back = hop(LB_MAC, CLIENT_MAC, VIP_ONE_ARM, CLIENT).tcp(80, twin(40010), Tcp::Ack, b"");
    assert_eq!(dp.run_frame(&answer).unwrap(), (XDP_TX, back));

    // ... but not another client's.
    let port = open(CLIENT, 40020, true);
    real_fin(port);
    client_fin(CLIENT, 40020);
    assert_eq!(
        open(OTHER_CLIENT, twin(40020), true),
        port + 1,
        "another client"
    );

    // No timestamps on the old flow's SYN, or on the new one: held.
    let port = open(CLIENT, 40030, false);
    real_fin(port);
    client_fin(CLIENT, 40030);
    assert_eq!(open(CLIENT, twin(40030), true), port + 1, "old SYN without");
    let port = open(CLIENT, 40040, true);
    real_fin(port);
    client_fin(CLIENT, 40040);
    assert_eq!(
        open(CLIENT, twin(40040), false),
        port + 1,
        "new SYN without"
    );

    // Only the real has closed (the client may still send): held; once the client closed
    // too, its SYN from the same port (a new connection on the closing flow's tuple) gets it.
    let port = open(CLIENT, 40050, true);
    real_fin(port);
    assert_eq!(open(CLIENT, twin(40050), true), port + 1, "one side closed");
    client_fin(CLIENT, 40050);
    assert_eq!(
        open(CLIENT, 40050, true),
        port,
        "both closed: reopened on it"
    );
}

#[test]
fn a_ttl_that_would_expire_makes_no_flow() {
    let dp = seeded_stateful();
    let probe = client_to_lb(VIP_ROUTER)
        .ttl(1)
        .tcp(43000, 80, Tcp::Syn, b"");
    assert_eq!(
        dp.run_frame(&probe).unwrap().0,
        XDP_TX,
        "time exceeded sent"
    );
    assert!(
        entries_of(&dp, 43000).is_empty(),
        "no state for a packet not forwarded"
    );
}

#[test]
fn a_flow_one_way_only_keeps_its_snat_port() {
    pin_to_cpu0();
    let dp = short_lived_one_arm();
    let cpus = lb_userspace::datapath::possible_cpus().unwrap() as u16;
    let syn = |sport| client_to_lb(VIP_EXHAUST).tcp(sport, 80, Tcp::Syn, b"");
    let (action, out) = dp.run_frame(&syn(41000)).unwrap();
    assert_eq!(action, XDP_TX);
    let held = port_of(&out);
    // The client keeps sending for 2.4 s, past the 1 s timeout, and the real never answers:
    // each packet refreshes both entries, so the port stays this flow's. New flows whose
    // client port maps to it (and whose SYNs are never answered either) get another, or none.
    let data = client_to_lb(VIP_EXHAUST).tcp(41000, 80, Tcp::Ack, b"x");
    for i in 1..=8 {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let (action, out) = dp.run_frame(&data).unwrap();
        assert_eq!(
            (action, port_of(&out)),
            (XDP_TX, held),
            "the flow keeps its port"
        );
        let (action, out) = dp.run_frame(&syn(41000 + i * cpus)).unwrap();
        if action == XDP_TX {
            assert_ne!(port_of(&out), held, "the port is still held");
        } else {
            assert_eq!(action, XDP_DROP);
        }
    }
}

/// Per real: each packet forwarded counts for the real of its flow in the direction it goes;
/// a flow counts once as new, and also as picked up when its first packet was no SYN.
#[test]
fn each_real_counts_its_packets_each_way_and_its_new_flows() {
    let dp = seeded_stateful();
    let nat = vip("198.18.100.20:80/tcp");
    let counts = |dp: &Datapath| {
        let reals = dp.real_counters(&nat).unwrap();
        assert_eq!(reals.len(), 1, "{reals:?}");
        reals[0].1
    };
    let syn = client_to_lb(VIP_NAT).tcp(40000, 80, Tcp::Syn, b"");
    let ack = client_to_lb(VIP_NAT).tcp(40000, 80, Tcp::Ack, b"data");
    let reply = real_b_to_lb().tcp(8080, 40000, Tcp::Ack, b"answer");
    let mid_stream = client_to_lb(VIP_NAT).tcp(40001, 80, Tcp::Ack, b"no syn seen");
    for (frame, action) in [
        (&syn, XDP_REDIRECT),
        (&ack, XDP_REDIRECT),
        (&reply, XDP_TX),
        (&reply, XDP_TX),
        (&mid_stream, XDP_REDIRECT),
    ] {
        assert_eq!(dp.run_frame(frame).unwrap().0, action);
    }
    let c = counts(&dp);
    assert_eq!(
        (c.requests.packets, c.requests.bytes),
        (3, (syn.len() + ack.len() + mid_stream.len()) as u64)
    );
    assert_eq!(
        (c.replies.packets, c.replies.bytes),
        (2, 2 * reply.len() as u64)
    );
    assert_eq!((c.new_flows, c.picked_up), (2, 1), "{c:?}");
    // The VIP's figures are its reals' summed; another VIP's reals are not moved.
    assert_eq!(dp.vip_forwarded(&nat).unwrap(), c);
    let other = dp.vip_forwarded(&vip("198.18.100.24:80/tcp")).unwrap();
    assert_eq!(other, lb_common::RealCounters::default());
}

/// A real that leaves its VIP and comes back starts its counters at zero (a new id, zeroed).
#[test]
fn a_real_that_leaves_and_comes_back_starts_from_zero() {
    let mut dp = seeded_stateful();
    let nat = vip("198.18.100.20:80/tcp");
    let syn = client_to_lb(VIP_NAT).tcp(40000, 80, Tcp::Syn, b"");
    assert_eq!(dp.run_frame(&syn).unwrap().0, XDP_REDIRECT);
    assert_eq!(dp.vip_forwarded(&nat).unwrap().new_flows, 1);
    let real = Real {
        addr: REAL_B_IP.into(),
        port: Some(8080),
        mac: REAL_B_MAC,
        ifindex: IFINDEX_B,
        weight: 1,
        down: false,
    };
    dp.set_reals(&nat, &[]).unwrap();
    dp.set_reals(&nat, &[real]).unwrap();
    let reals = dp.real_counters(&nat).unwrap();
    assert_eq!(reals.len(), 1);
    assert_eq!(reals[0].1, lb_common::RealCounters::default());
}

#[test]
fn a_flow_whose_reply_entry_was_evicted_gets_it_back_from_its_next_request() {
    let mut dp = seeded_stateful();
    let to_real = |flags| client_to_lb(VIP_NAT).tcp(42100, 80, flags, b"");
    let answer = || real_b_to_lb().tcp(8080, 42100, Tcp::Ack, b"");
    dp.run_frame(&to_real(Tcp::Syn)).unwrap();
    assert_eq!(dp.run_frame(&answer()).unwrap().0, XDP_TX, "answered");
    // The LRU evicts the reply entry; the request's stays.
    let entries = entries_of(&dp, 42100);
    let (reply_key, reply) = entries
        .iter()
        .find(|(_, f)| f.flags & FLOW_REPLY != 0)
        .copied()
        .expect("a reply entry");
    assert!(dp.evict_flow_entry(&reply_key).unwrap());
    let before = dp.counters().unwrap();
    assert_eq!(
        dp.run_frame(&answer()).unwrap().0,
        XDP_PASS,
        "no flow for the answer"
    );
    assert_eq!(
        delta(&before, &dp.counters().unwrap())[0].0,
        Reason::NoFlow.label()
    );
    // The request's next refresh (200 ms on) finds its partner gone: the full path puts it
    // back as it was, and the answers are translated again.
    std::thread::sleep(std::time::Duration::from_millis(250));
    assert_eq!(dp.run_frame(&to_real(Tcp::Ack)).unwrap().0, XDP_REDIRECT);
    let restored = dp.flow(&reply_key).expect("the reply entry is back");
    assert_eq!(
        Flow {
            last_seen_ns: 0,
            ..restored
        },
        Flow {
            last_seen_ns: 0,
            ..reply
        },
        "as the flow's creation made it"
    );
    let (action, out) = dp.run_frame(&answer()).unwrap();
    assert_eq!(action, XDP_TX, "the answer reaches the client again");
    let (action_before, out_before) = {
        // The same answer through a flow that never lost an entry, for the bytes.
        let fresh = seeded_stateful();
        let to_real = |flags| client_to_lb(VIP_NAT).tcp(42100, 80, flags, b"");
        fresh.run_frame(&to_real(Tcp::Syn)).unwrap();
        fresh.run_frame(&answer()).unwrap()
    };
    assert_eq!((action, out), (action_before, out_before));
}

#[test]
fn a_flow_whose_request_entry_was_evicted_gets_it_back_from_the_reals_next_answer() {
    let mut dp = seeded_stateful();
    let to_real = |flags| client_to_lb(VIP_NAT).tcp(42200, 80, flags, b"");
    let answer = || real_b_to_lb().tcp(8080, 42200, Tcp::Ack, b"");
    dp.run_frame(&to_real(Tcp::Syn)).unwrap();
    assert_eq!(dp.run_frame(&answer()).unwrap().0, XDP_TX, "answered");
    let (action_then, out_then) = dp.run_frame(&to_real(Tcp::Ack)).unwrap();
    // The LRU evicts the request entry; the reply's stays (a server pushing, say).
    let (request_key, request) = entries_of(&dp, 42200)
        .into_iter()
        .find(|(_, f)| f.flags & FLOW_REPLY == 0)
        .expect("a request entry");
    assert!(dp.evict_flow_entry(&request_key).unwrap());
    // The answer's next refresh (200 ms on) finds its partner gone: the full path puts it
    // back as it was, and the client's packets go on to the same real, the same bytes.
    std::thread::sleep(std::time::Duration::from_millis(250));
    assert_eq!(dp.run_frame(&answer()).unwrap().0, XDP_TX);
    let restored = dp.flow(&request_key).expect("the request entry is back");
    assert_eq!(
        Flow {
            last_seen_ns: 0,
            ..restored
        },
        Flow {
            last_seen_ns: 0,
            ..request
        },
        "as the flow's creation made it"
    );
    assert_eq!(
        dp.run_frame(&to_real(Tcp::Ack)).unwrap(),
        (action_then, out_then)
    );
}
