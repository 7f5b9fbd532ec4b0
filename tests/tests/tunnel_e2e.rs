//! Tunnel mode end to end: the LB wraps client→VIP packets in IP-in-IP to the reals, which run
//! `lbctl decap attach eth0`, unwrap them and answer the client directly.

use lb_common::Reason;
use lb_lab::{
    capture::{capture, Point},
    drive_tcp_padded, hops, Lab, CLIENT_ADDR, ROUTER_ADDRS, SNAT_ADDR,
};
use lb_userspace::demo::observe;
use tests::{attach_args, lbctl, require_root};

#[test]
fn tunnel_delivers_every_packet_through_ipip_and_the_reals_answer_directly() {
    require_root();
    let mut lab = Lab::one_segment(3).unwrap();
    lab.start_decap(&lbctl()).unwrap();
    lab.start_lb(&lbctl(), &attach_args(&lab, "tunnel"))
        .unwrap();

    let facts = observe(&lab, 150).unwrap();
    assert_eq!(
        facts.answered,
        150,
        "first failure: {:?}; lbctl log:\n{}",
        facts.first_error,
        lab.lb_log()
    );
    assert_eq!(facts.per_real.len(), 3, "{:?}", facts.per_real);
    for (real, n) in &facts.per_real {
        assert!(
            (30..=69).contains(n),
            "{real} got {n} of 150 (must be 20%..46%): {:?}",
            facts.per_real
        );
    }
    // The inner packet is the client's own: the reals saw the true client address.
    assert_eq!(facts.client_addrs_seen, vec![CLIENT_ADDR.to_string()]);
    // Every packet the LB encapsulated was decapsulated by a real, none lost or left wrapped.
    let decapsulated: u64 = (0..3)
        .map(|i| {
            lb_userspace::stats::of_lab_host(&lab.reals[i])
                .unwrap()
                .counters
                .forwarded
                .packets
        })
        .sum();
    assert!(
        facts.lb_forwarded >= 150 * 4,
        "forwarded {}",
        facts.lb_forwarded
    );
    assert_eq!(
        decapsulated, facts.lb_forwarded,
        "encapsulated at the LB vs decapsulated at the reals"
    );
    // The replies went straight to the client.
    assert!(
        facts.lb_not_vip < 10,
        "the LB saw {} non-VIP packets: replies crossed it",
        facts.lb_not_vip
    );
    // UDP too, from the VIP's address.
    tests::assert_udp_answered(&lab, 60, 3, CLIENT_ADDR.into());
    lab.stop_lb().unwrap();
}

#[test]
fn without_decap_on_the_reals_nothing_is_answered() {
    require_root();
    let mut lab = Lab::one_segment(1).unwrap();
    lab.start_lb(&lbctl(), &attach_args(&lab, "tunnel"))
        .unwrap();
    let facts = observe(&lab, 1).unwrap();
    // A real without the decap program gets IP-in-IP it cannot open (no ipip module here).
    assert_eq!(facts.answered, 0, "{facts:?}");
    assert!(
        facts.lb_forwarded >= 1,
        "the SYN was encapsulated and sent: {facts:?}"
    );
}

#[test]
fn tunnel_mode_refuses_ipv6_vips_for_now() {
    require_root();
    let lab = Lab::one_segment(1).unwrap();
    let out = lab
        .lb
        .command(&lbctl().display().to_string())
        .env("LBCTL_SOCKET", lab.lb_socket())
        .args([
            "attach",
            "eth0",
            "--mode",
            "tunnel",
            "--vip",
            "[2001:2::10]:80/tcp",
            "--real",
            "2001:2::11",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tunnel supports IPv4 VIPs for now"), "{err}");
}

#[test]
fn tunnel_answers_too_big_packets_with_icmp_so_large_requests_get_through() {
    require_root();
    let mut lab = Lab::one_segment(1).unwrap();
    lab.start_decap(&lbctl()).unwrap();
    lab.start_lb(&lbctl(), &attach_args(&lab, "tunnel"))
        .unwrap();
    // 6000-byte requests: the client's full-size segments (1500-byte packets) do not fit once
    // wrapped; the LB says so with ICMP, the client's TCP shrinks its segments and resends.
    let replies = drive_tcp_padded(&lab.client, Lab::vip(), 5, 6000).unwrap();
    for r in &replies {
        assert!(r.is_ok(), "{replies:?}\nlbctl log:\n{}", lab.lb_log());
    }
    let stats = lb_userspace::stats::of_lab_host(&lab.lb).unwrap();
    assert!(
        stats.counters.reason(Reason::IcmpTooBig).packets >= 1,
        "{stats}"
    );
    assert_eq!(stats.counters.reason(Reason::TooBig).packets, 0, "{stats}");
    lab.stop_lb().unwrap();
}

#[test]
fn tunnel_reaches_reals_behind_a_router() {
    require_root();
    let mut lab = Lab::routed(3).unwrap();
    lab.start_decap(&lbctl()).unwrap();
    lab.start_lb(&lbctl(), &attach_args(&lab, "tunnel"))
        .unwrap();
    let facts = observe(&lab, 90).unwrap();
    assert_eq!(
        facts.answered,
        90,
        "first failure: {:?}; lbctl log:\n{}",
        facts.first_error,
        lab.lb_log()
    );
    assert_eq!(facts.per_real.len(), 3, "{:?}", facts.per_real);
    assert_eq!(facts.client_addrs_seen, vec![CLIENT_ADDR.to_string()]);
    let decapsulated: u64 = (0..3)
        .map(|i| {
            lb_userspace::stats::of_lab_host(&lab.reals[i])
                .unwrap()
                .counters
                .forwarded
                .packets
        })
        .sum();
    assert_eq!(
        decapsulated, facts.lb_forwarded,
        "encapsulated at the LB vs decapsulated at the reals"
    );
    // The LB sent to the router's MAC: it resolved the router, and never a real.
    let neigh = lab.lb.ip(&["neigh", "show", "dev", "eth0"]).unwrap();
    assert!(neigh.contains(&ROUTER_ADDRS[0].to_string()), "{neigh}");
    for real in lab.real_addrs() {
        assert!(
            !neigh.contains(&real.to_string()),
            "{real} is not on the LB's segment: {neigh}"
        );
    }
    lab.stop_lb().unwrap();
}

#[test]
fn dsr_refuses_reals_behind_a_router() {
    require_root();
    let lab = Lab::routed(1).unwrap();
    let mut args = attach_args(&lab, "dsr");
    args.insert(0, "eth0".into());
    args.insert(0, "attach".into());
    let out = lab
        .lb
        .command(&lbctl().display().to_string())
        .env("LBCTL_SOCKET", lab.lb_socket())
        .args(&args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("routed via {}", ROUTER_ADDRS[0])) && err.contains("mode tunnel"),
        "{err}"
    );
    assert!(!lab.lb_xdp_attached().unwrap());
}

/// A tunnel VIP with a tunnel source of its own sends from it; one the LB does not own is
/// refused before anything is attached.
#[test]
fn a_tunnel_vip_tunnels_from_its_own_source_address() {
    require_root();
    let mut lab = Lab::one_segment(2).unwrap();
    lab.start_decap(&lbctl()).unwrap();
    let mut not_ours = attach_args(&lab, "tunnel");
    not_ours.extend(["--tunnel-source".into(), "198.18.0.250".into()]);
    let err = lab.start_lb(&lbctl(), &not_ours).unwrap_err().to_string();
    assert!(
        err.contains("198.18.0.250") && err.contains("not an address of this host"),
        "{err}"
    );

    lab.add_snat_addr().unwrap();
    let mut args = attach_args(&lab, "tunnel");
    args.extend(["--tunnel-source".into(), SNAT_ADDR.to_string()]);
    lab.start_lb(&lbctl(), &args).unwrap();
    // What the switch sends the reals (their decap program unwraps frames before a capture
    // on the real itself would see them): tunnels from the VIP's own source.
    let points: Vec<Point> = ["r1", "r2"]
        .into_iter()
        .map(|port| Point {
            ns: &lab.switch,
            iface: port,
            label: format!("switch port {port}"),
        })
        .collect();
    let (facts, frames) = capture(&points, || observe(&lab, 40)).unwrap();
    let facts = facts.unwrap();
    assert_eq!(
        facts.answered,
        40,
        "{:?}\n{}",
        facts.first_error,
        lab.lb_log()
    );
    let outer: Vec<_> = frames
        .iter()
        .filter_map(|f| hops::parse(&f.bytes).and_then(|(h, _)| h.outer))
        .collect();
    assert!(outer.len() >= 40, "{} tunnelled frames", outer.len());
    assert!(outer.iter().all(|(src, _)| *src == SNAT_ADDR), "{outer:?}");
    lab.stop_lb().unwrap();
}
