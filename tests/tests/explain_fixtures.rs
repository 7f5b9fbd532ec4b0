//! `Datapath::explain` (what `lbctl explain` says) against what the datapath then does with
//! the packet, through BPF_PROG_TEST_RUN: per mode and hash-scheduled balance, the real it
//! names for a new flow is the real the frame is sent to, and afterwards it finds the flow.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use lb_userspace::{
    datapath::{Datapath, Real},
    declare::{
        service::VipSettings,
        spec::{Balance, Mode},
    },
};
use tests::{
    fixture::*,
    frames::{hop, Tcp},
    require_root,
};

const PROTO_TCP: u8 = 6;

fn reals() -> Vec<Real> {
    (11..=13u8)
        .map(|last| Real {
            addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)),
            port: None,
            mac: [0x02, 0, 0, 0, 0, last],
            ifindex: IFINDEX_A,
            weight: 1,
            down: false,
        })
        .collect()
}

fn seeded(mode: Mode, balance: Balance) -> Datapath {
    require_root();
    let mut dp = Datapath::load().expect("load");
    dp.set_interface(IFINDEX_A, lb_iface()).unwrap();
    let v = vip("198.18.100.10:80/tcp");
    let settings = VipSettings {
        balance,
        // One-arm: a pool on the LB's segment to take the clients' place.
        snat_pool: if mode == Mode::OneArm {
            vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 201))]
        } else {
            Vec::new()
        },
        ..VipSettings::new(mode)
    };
    dp.add_vip(v, &settings).unwrap();
    dp.set_reals(&v, &reals()).unwrap();
    dp
}

/// Sends a new flow's SYN from the client's port `sport` through the datapath (which must
/// send it on, XDP_TX) and returns the real it went to.
fn send_syn(dp: &Datapath, mode: Mode, sport: u16) -> IpAddr {
    let frame = hop(CLIENT_MAC, LB_MAC, CLIENT, [198, 18, 100, 10]).tcp(sport, 80, Tcp::Syn, b"");
    let (action, out) = dp.run_frame(&frame).unwrap();
    assert_eq!(action, XDP_TX, "{mode}");
    sent_to(mode, &out)
}

/// The real a frame the datapath sent goes to: by destination MAC (dsr), else by the
/// (outer, for tunnel) IPv4 destination address.
fn sent_to(mode: Mode, out: &[u8]) -> IpAddr {
    match mode {
        Mode::Dsr => IpAddr::V4(Ipv4Addr::new(198, 18, 0, out[5])),
        _ => IpAddr::V4(Ipv4Addr::new(out[30], out[31], out[32], out[33])),
    }
}

#[test]
fn explain_names_the_real_the_datapath_then_sends_each_new_flow_to() {
    let vip_addr: SocketAddr = "198.18.100.10:80".parse().unwrap();
    for (mode, balance) in [
        (Mode::Dsr, Balance::Maglev),
        (Mode::Dsr, Balance::Source),
        (Mode::Tunnel, Balance::Maglev),
        (Mode::Nat, Balance::Maglev),
        (Mode::Router, Balance::Maglev),
        (Mode::OneArm, Balance::Maglev),
    ] {
        let dp = seeded(mode, balance);
        let mut seen = std::collections::BTreeSet::new();
        for sport in 40000..40024u16 {
            let client = SocketAddr::new(IpAddr::V4(CLIENT.into()), sport);
            let said = dp.explain(PROTO_TCP, client, vip_addr).unwrap();
            assert!(!said.existing_flow, "{mode} {balance}: {said:?}");
            let real = said
                .real
                .unwrap_or_else(|| panic!("{mode} {balance}: {said:?}"));
            assert_eq!(
                send_syn(&dp, mode, sport),
                real.ip(),
                "{mode} {balance} port {sport}: {:?}",
                said.lines
            );
            seen.insert(real.ip());
            // Now the flow exists, and the explanation says so, with the same real.
            let again = dp.explain(PROTO_TCP, client, vip_addr).unwrap();
            assert!(again.existing_flow && again.real == Some(real), "{again:?}");
        }
        if balance == Balance::Maglev {
            assert!(
                seen.len() > 1,
                "{mode}: 24 flows over 3 reals went to {seen:?}"
            );
        }
    }
}

#[test]
fn explain_says_what_is_not_a_vip_and_changes_nothing() {
    let dp = seeded(Mode::Dsr, Balance::Maglev);
    let client: SocketAddr = "198.18.0.100:40000".parse().unwrap();
    let said = dp
        .explain(PROTO_TCP, client, "198.18.100.99:80".parse().unwrap())
        .unwrap();
    assert!(
        said.real.is_none() && said.lines[0].contains("not a VIP"),
        "{said:?}"
    );
    let before = dp.flows().unwrap().len();
    dp.explain(PROTO_TCP, client, "198.18.100.10:80".parse().unwrap())
        .unwrap();
    assert_eq!(dp.flows().unwrap().len(), before, "explain made no flow");
}

/// Round robin: explain tells each CPU's next real; the datapath, run on CPU 0, sends each
/// new flow to CPU 0's, turn after turn.
#[test]
fn explain_tells_each_cpu_s_next_real_in_round_robin() {
    pin_to_cpu0();
    let vip_addr: SocketAddr = "198.18.100.10:80".parse().unwrap();
    for balance in [Balance::Roundrobin, Balance::StaticRr] {
        let dp = seeded(Mode::Dsr, balance);
        let mut seen = std::collections::BTreeSet::new();
        for sport in 41000..41012u16 {
            let client = SocketAddr::new(IpAddr::V4(CLIENT.into()), sport);
            let said = dp.explain(PROTO_TCP, client, vip_addr).unwrap();
            let cpu0 = *said.per_cpu.first().unwrap_or_else(|| panic!("{said:?}"));
            assert_eq!(
                send_syn(&dp, Mode::Dsr, sport),
                cpu0.ip(),
                "{balance} port {sport}: {:?}",
                said.lines
            );
            seen.insert(cpu0.ip());
        }
        assert_eq!(
            seen.len(),
            3,
            "{balance}: 12 flows take every real in turn: {seen:?}"
        );
    }
}

/// Leastconn: explain weighs the reals' active flows as the datapath does; each new flow
/// goes where it said, and moves the loads the next explanation weighs.
#[test]
fn explain_picks_the_least_loaded_real_as_the_datapath_does() {
    let vip_addr: SocketAddr = "198.18.100.10:80".parse().unwrap();
    let dp = seeded(Mode::Dsr, Balance::Leastconn);
    let mut per_real = std::collections::BTreeMap::new();
    for sport in 42000..42012u16 {
        let client = SocketAddr::new(IpAddr::V4(CLIENT.into()), sport);
        let said = dp.explain(PROTO_TCP, client, vip_addr).unwrap();
        let real = said.real.unwrap_or_else(|| panic!("{said:?}"));
        assert_eq!(
            send_syn(&dp, Mode::Dsr, sport),
            real.ip(),
            "port {sport}: {:?}",
            said.lines
        );
        *per_real.entry(real.ip()).or_insert(0) += 1;
    }
    // Equal weights, flows that stay open: 4 each.
    assert!(per_real.values().all(|n| *n == 4), "{per_real:?}");
}

/// The "leaves" line says the frame the datapath then sends: its MACs, and per mode its
/// addresses and ports (one-arm's SNAT source once the flow exists), or the tunnel's outer
/// header.
#[test]
fn explain_says_how_the_packet_leaves_as_the_datapath_then_sends_it() {
    let vip_addr: SocketAddr = "198.18.100.10:80".parse().unwrap();
    let mac = |m: &[u8]| lb_lab::hops::fmt_mac(m.try_into().unwrap());
    let ip = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    for mode in [
        Mode::Dsr,
        Mode::Tunnel,
        Mode::Nat,
        Mode::Router,
        Mode::OneArm,
    ] {
        let dp = seeded(mode, Balance::Maglev);
        let client = SocketAddr::new(IpAddr::V4(CLIENT.into()), 40100);
        let said = dp.explain(PROTO_TCP, client, vip_addr).unwrap();
        let frame =
            hop(CLIENT_MAC, LB_MAC, CLIENT, [198, 18, 100, 10]).tcp(40100, 80, Tcp::Syn, b"");
        let (action, out) = dp.run_frame(&frame).unwrap();
        assert_eq!(action, XDP_TX, "{mode}");
        let new_flow = said.lines.last().unwrap();
        let frame_words = format!("frame from {} to {}", mac(&out[6..12]), mac(&out[..6]));
        assert!(
            new_flow.contains(&frame_words),
            "{mode}: {new_flow} / {frame_words}"
        );
        let again = dp.explain(PROTO_TCP, client, vip_addr).unwrap();
        let existing = again.lines.last().unwrap();
        assert!(existing.contains(&frame_words), "{mode}: {existing}");
        let wanted = match mode {
            Mode::Dsr => format!("leaves: {client} → {vip_addr} as it came"),
            Mode::Tunnel => format!("IP-in-IP {} → {}", ip(&out[26..30]), ip(&out[30..34])),
            _ => format!(
                "leaves: {}:{} → {}:{}",
                ip(&out[26..30]),
                port(&out[34..36]),
                ip(&out[30..34]),
                port(&out[36..38])
            ),
        };
        assert!(existing.contains(&wanted), "{mode}: {existing} / {wanted}");
    }
}
