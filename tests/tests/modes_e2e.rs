//! nat, router and one-arm end to end, each in the topology it needs, and all five modes at
//! once in one program: real TCP and UDP sockets from the client to the VIPs.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    time::Duration,
};

use lb_lab::{
    drive_tcp, drive_udp, Lab, Reply, ALT_PORT, CLIENT_ADDR, SNAT_ADDR, UDP_PORT, VIP_PORT,
};
use lb_userspace::stats::Stats;
use tests::{lbctl, require_root};

fn vip(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 100, last)), port)
}

/// Writes `text` to a config file of this test's own.
fn config_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("lbctl-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Every request answered; returns the replies.
fn all_answered(lab: &Lab, results: Vec<Result<Reply, String>>, what: &str) -> Vec<Reply> {
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{what}: {} of {} unanswered, the first: {}\nlbctl log:\n{}",
        failed.len(),
        results.len(),
        failed[0],
        lab.lb_log()
    );
    results.into_iter().map(Result::unwrap).collect()
}

fn spread(replies: &[Reply]) -> BTreeMap<String, usize> {
    let mut per_real = BTreeMap::new();
    for r in replies {
        *per_real.entry(r.real.clone()).or_insert(0) += 1;
    }
    per_real
}

fn seen(replies: &[Reply]) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = replies.iter().map(|r| r.client_seen).collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// Requests and replies the LB forwarded for `vip` (as `lbctl stats` lists it).
fn vip_counts(stats: &Stats, vip: &str) -> (u64, u64) {
    let row = stats
        .vips
        .iter()
        .find(|r| r.vip == vip)
        .unwrap_or_else(|| panic!("{vip} not in {:?}", stats.vips));
    (row.traffic.requests.packets, row.traffic.replies.packets)
}

/// A UDP request to a port nothing listens on: the real answers ICMP port unreachable, which
/// reaches the client's socket only if the LB translated it back to the VIP's terms.
fn refused(lab: &Lab, target: SocketAddr) -> std::io::ErrorKind {
    lab.client
        .run(move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.connect(target).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.send(b"anyone?").unwrap();
            let mut buf = [0u8; 64];
            s.recv(&mut buf).map(|_| ()).unwrap_err().kind()
        })
        .unwrap()
}

/// The checks each stateful mode shares: TCP with port translation, UDP, an ICMP error back
/// to the client, and replies through the LB. `seen_as`: the client address reals see.
fn check_stateful_vip(lab: &Lab, reals: usize, seen_as: Ipv4Addr) {
    let tcp = all_answered(
        lab,
        drive_tcp(&lab.client, vip(10, VIP_PORT), 150).unwrap(),
        "tcp",
    );
    let per_real = spread(&tcp);
    assert_eq!(per_real.len(), reals, "{per_real:?}");
    for (real, n) in &per_real {
        assert!(*n >= 150 / reals / 2, "{real} got {n} of 150: {per_real:?}");
    }
    assert_eq!(seen(&tcp), vec![IpAddr::V4(seen_as)]);
    assert!(
        tcp.iter().all(|r| r.port == ALT_PORT),
        "VIP port 80 was translated to the reals' 8080"
    );

    let udp = all_answered(
        lab,
        drive_udp(&lab.client, vip(10, UDP_PORT), 60).unwrap(),
        "udp",
    );
    assert_eq!(spread(&udp).len(), reals, "{:?}", spread(&udp));
    assert_eq!(seen(&udp), vec![IpAddr::V4(seen_as)]);
    assert!(udp.iter().all(|r| r.port == UDP_PORT));

    assert_eq!(
        refused(lab, vip(10, 9999)),
        std::io::ErrorKind::ConnectionRefused,
        "the real's port unreachable, translated, tells the client's socket"
    );

    let stats = lb_userspace::stats::of_lab_host(&lab.lb).unwrap();
    let (requests, replies) = vip_counts(&stats, "198.18.100.10:80/tcp");
    // SYN, ACK, request, FIN, ACK at least, each way about as many.
    assert!(requests >= 150 * 4, "requests {requests}");
    assert!(replies >= 150 * 3, "the replies crossed the LB: {replies}");
    let (requests, replies) = vip_counts(&stats, "198.18.100.10:53/udp");
    assert_eq!((requests, replies), (60, 60), "one datagram each way");
    let (requests, replies) = vip_counts(&stats, "198.18.100.10:9999/udp");
    assert_eq!(
        (requests, replies),
        (1, 1),
        "the datagram, and the real's ICMP error"
    );
    assert_eq!(
        stats.counters.reason(lb_common::Reason::NoFlow).packets,
        0,
        "every reply had its flow"
    );
}

/// The stateful labs' config: TCP port 80 → 8080 (port translation), UDP 53, UDP 9999.
fn stateful_config(mode: &str, reals: &[Ipv4Addr], pool: &str) -> String {
    let list = |port: Option<u16>| {
        reals
            .iter()
            .map(|r| match port {
                Some(p) => format!("\"{r}:{p}\""),
                None => format!("\"{r}\""),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[[vip]]\naddress = \"198.18.100.10:80/tcp\"\nmode = \"{mode}\"\nreals = [{}]\n{pool}\n\
         [[vip]]\naddress = \"198.18.100.10:53/udp\"\nmode = \"{mode}\"\nreals = [{}]\n{pool}\n\
         [[vip]]\naddress = \"198.18.100.10:9999/udp\"\nmode = \"{mode}\"\nreals = [{}]\n{pool}\n",
        list(Some(8080)),
        list(None),
        list(None),
    )
}

#[test]
fn nat_bridges_clients_and_reals_and_the_reals_see_the_client() {
    require_root();
    let mut lab = Lab::bridged(3).unwrap();
    let config = config_file("nat", &stateful_config("nat", &lab.real_addrs(), ""));
    lab.start_lb(&lbctl(), &["--config".into(), config.display().to_string()])
        .unwrap();
    check_stateful_vip(&lab, 3, CLIENT_ADDR);
    lab.stop_lb().unwrap();
}

#[test]
fn router_joins_two_subnets_and_the_reals_see_the_client() {
    require_root();
    let mut lab = Lab::two_subnets(3).unwrap();
    let config = config_file("router", &stateful_config("router", &lab.real_addrs(), ""));
    // Attached to the clients' side only, the LB could not send to the reals: refused.
    let out = lab
        .lb
        .command(&lbctl().display().to_string())
        .env("LBCTL_SOCKET", lab.lb_socket())
        .args(["attach", "eth0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("reached through eth1, which lbctl is not attached to"),
        "{err}"
    );
    assert!(!lab.lb_xdp_attached().unwrap());
    lab.start_lb(&lbctl(), &["--config".into(), config.display().to_string()])
        .unwrap();
    check_stateful_vip(&lab, 3, CLIENT_ADDR);
    lab.stop_lb().unwrap();
}

#[test]
fn one_arm_needs_nothing_of_the_reals_which_see_the_pool_address() {
    require_root();
    let mut lab = Lab::one_segment(3).unwrap();
    lab.add_snat_addr().unwrap();
    let pool = format!("snat_pool = [\"{SNAT_ADDR}\"]");
    let config = config_file(
        "one-arm",
        &stateful_config("one-arm", &lab.real_addrs(), &pool),
    );
    lab.start_lb(&lbctl(), &["--config".into(), config.display().to_string()])
        .unwrap();
    check_stateful_vip(&lab, 3, SNAT_ADDR);
    lab.stop_lb().unwrap();
}

#[test]
fn one_arm_by_default_takes_the_interface_address_and_refuses_a_foreign_pool() {
    require_root();
    let mut lab = Lab::one_segment(1).unwrap();
    let real = lab.real_addrs()[0].to_string();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--mode",
            "one-arm",
            "--vip",
            "198.18.100.10:80/tcp",
            "--real",
            &real,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // An address the LB does not have would never see the replies: refused, nothing attached.
    let out = lab
        .lb
        .command(&lbctl().display().to_string())
        .env("LBCTL_SOCKET", lab.lb_socket())
        .arg("attach")
        .arg("eth0")
        .args(args(&["--snat-pool", "198.18.0.250"]))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("198.18.0.250") && err.contains("not an address of this host"),
        "{err}"
    );
    assert!(!lab.lb_xdp_attached().unwrap());

    lab.start_lb(&lbctl(), &args(&[])).unwrap();
    let replies = all_answered(
        &lab,
        drive_tcp(&lab.client, vip(10, VIP_PORT), 20).unwrap(),
        "tcp",
    );
    assert_eq!(
        seen(&replies),
        vec![IpAddr::V4(lb_lab::LB_ADDR)],
        "the reals see the LB's own address"
    );
    lab.stop_lb().unwrap();
}

#[test]
fn five_vips_one_per_mode_in_one_program_on_one_interface() {
    require_root();
    let mut lab = Lab::five_modes().unwrap();
    assert_eq!(lab.lb_ifaces(), ["eth0"]);
    lab.start_decap(&lbctl()).unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../lbctl.example.toml");
    lab.start_lb(&lbctl(), &["--config".into(), example.into()])
        .unwrap();

    // (VIP's last byte, mode, reals that answer, client address they see)
    let a = ["r1", "r2", "r3"];
    let b = ["r4", "r5", "r6"];
    let client = IpAddr::V4(CLIENT_ADDR);
    let cases = [
        (10, "dsr", a, client),
        (11, "tunnel", a, client),
        (12, "nat", b, client),
        (13, "router", b, client),
        (14, "one-arm", a, IpAddr::V4(SNAT_ADDR)),
    ];
    // Interleaved, so all five are served at the same time.
    let mut per_vip: BTreeMap<u8, Vec<Reply>> = BTreeMap::new();
    for _round in 0..6 {
        for (last, mode, ..) in &cases {
            let replies = drive_tcp(&lab.client, vip(*last, VIP_PORT), 10).unwrap();
            per_vip
                .entry(*last)
                .or_default()
                .extend(all_answered(&lab, replies, mode));
        }
    }
    let stats = lb_userspace::stats::of_lab_host(&lab.lb).unwrap();
    for (last, mode, reals, saw) in cases {
        let replies = &per_vip[&last];
        let per_real = spread(replies);
        let names: Vec<&str> = per_real.keys().map(String::as_str).collect();
        assert_eq!(names, reals, "{mode}: who answered");
        assert_eq!(
            seen(replies),
            vec![saw],
            "{mode}: the client address reals saw"
        );
        let (requests, back) = vip_counts(&stats, &format!("198.18.100.{last}:80/tcp"));
        assert!(requests >= 60 * 4, "{mode}: {requests} requests forwarded");
        if matches!(mode, "dsr" | "tunnel") {
            assert_eq!(back, 0, "{mode}: replies go around the LB");
        } else {
            assert!(back >= 60 * 3, "{mode}: replies cross the LB ({back})");
        }
    }
    lab.stop_lb().unwrap();
}

#[test]
fn check_config_validates_without_touching_anything() {
    require_root();
    let lbctl = lbctl().display().to_string();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../lbctl.example.toml");
    let out = std::process::Command::new(&lbctl)
        .args(["check-config", example])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("5 VIPs, valid"), "{text}");
    assert!(text.contains("198.18.100.14:80/tcp  one-arm"), "{text}");

    let broken = config_file(
        "broken",
        "[[vip]]\naddress = \"198.18.100.10:80/tcp\"\nmode = \"tunnel\"\nreals = [\"198.18.0.11:8080\"]\n",
    );
    let out = std::process::Command::new(&lbctl)
        .arg("check-config")
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2:", broken.display())) && err.contains("cannot translate ports"),
        "{err}"
    );
}
