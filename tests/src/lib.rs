//! Helpers shared by the root-requiring tests.

pub mod bench_object;
pub mod fixture;
pub mod frames;
pub mod program_shape;
pub mod table;
pub mod veth_path;

use std::path::PathBuf;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// Fails the test with instructions unless it runs as root (BPF and namespaces need it).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "these tests load XDP programs and create network namespaces: run them as root (`sudo cargo xtask test`)");
}

/// The `lbctl` binary built next to this test executable (`cargo xtask test` builds it).
pub fn lbctl() -> PathBuf {
    if let Some(p) = std::env::var_os("LBCTL") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let bin = profile_dir.join("lbctl");
    assert!(bin.exists(), "{} is missing: build it with `cargo build -p lb-userspace --bin lbctl` (cargo xtask test does), or set LBCTL", bin.display());
    bin
}

/// `lbctl attach` arguments serving the lab's VIP, TCP port 80 and UDP port 53, over all its
/// reals in `mode`.
pub fn attach_args(lab: &lb_lab::Lab, mode: &str) -> Vec<String> {
    use lb_lab::{UDP_PORT, VIP_ADDR, VIP_PORT};
    let mut args = vec![
        "--mode".into(),
        mode.into(),
        "--vip".into(),
        format!("{VIP_ADDR}:{VIP_PORT}/tcp"),
        "--vip".into(),
        format!("{VIP_ADDR}:{UDP_PORT}/udp"),
    ];
    for r in lab.real_addrs() {
        args.extend(["--real".into(), r.to_string()]);
    }
    args
}

/// Asserts that every checksum in `frame` (IPv4 header, TCP/UDP over IPv4 or IPv6) is right,
/// as an independent parser computes them.
pub fn assert_checksums_valid(frame: &[u8]) {
    let p = SlicedPacket::from_ethernet(frame).expect("frame parses");
    let payload_of = |t: &TransportSlice| match t {
        TransportSlice::Tcp(t) => t.payload().to_vec(),
        TransportSlice::Udp(u) => u.payload().to_vec(),
        _ => Vec::new(),
    };
    match (&p.net, &p.transport) {
        (Some(NetSlice::Ipv4(ip)), t) => {
            let h = ip.header().to_header();
            assert_eq!(
                h.header_checksum,
                h.calc_header_checksum(),
                "IPv4 header checksum"
            );
            match t {
                Some(TransportSlice::Icmpv4(icmp)) => {
                    // The one's-complement sum of an ICMP message, checksum included, is
                    // all ones.
                    let bytes = icmp.slice();
                    let mut sum: u32 = 0;
                    for w in bytes.chunks(2) {
                        sum += u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32;
                    }
                    while sum > 0xffff {
                        sum = (sum & 0xffff) + (sum >> 16);
                    }
                    assert_eq!(sum, 0xffff, "ICMP checksum");
                }
                Some(TransportSlice::Tcp(tcp)) => {
                    let want = tcp
                        .to_header()
                        .calc_checksum_ipv4(&h, &payload_of(t.as_ref().unwrap()))
                        .unwrap();
                    assert_eq!(tcp.checksum(), want, "TCP checksum");
                }
                Some(TransportSlice::Udp(udp)) if udp.checksum() != 0 => {
                    let want = udp
                        .to_header()
                        .calc_checksum_ipv4(&h, &payload_of(t.as_ref().unwrap()))
                        .unwrap();
                    assert_eq!(udp.checksum(), want, "UDP checksum");
                }
                _ => {}
            }
        }
        (Some(NetSlice::Ipv6(ip)), t) => {
            let h = ip.header().to_header();
            match t {
                Some(TransportSlice::Tcp(tcp)) => {
                    let want = tcp
                        .to_header()
                        .calc_checksum_ipv6(&h, &payload_of(t.as_ref().unwrap()))
                        .unwrap();
                    assert_eq!(tcp.checksum(), want, "TCP checksum");
                }
                Some(TransportSlice::Udp(udp)) => {
                    let want = udp
                        .to_header()
                        .calc_checksum_ipv6(&h, &payload_of(t.as_ref().unwrap()))
                        .unwrap();
                    assert_eq!(udp.checksum(), want, "UDP checksum");
                }
                _ => {}
            }
        }
        (net, _) => panic!("not an IPv4/IPv6 frame: {net:?}"),
    }
}

/// Sends `count` UDP requests (each a new flow) from the lab's client to the VIP's UDP port
/// and checks that all were answered, by every one of `reals` reals, each seeing the client as
/// `seen_as`.
pub fn assert_udp_answered(
    lab: &lb_lab::Lab,
    count: usize,
    reals: usize,
    seen_as: std::net::IpAddr,
) {
    use lb_lab::{drive_udp, UDP_PORT, VIP_ADDR};
    let target = std::net::SocketAddr::new(VIP_ADDR.into(), UDP_PORT);
    let results = drive_udp(&lab.client, target, count).unwrap();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "udp: {} of {count} unanswered: {:?}\n{}",
        failed.len(),
        failed.first(),
        lab.lb_log()
    );
    let mut names: Vec<String> = results.iter().flatten().map(|r| r.real.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), reals, "udp spread: {names:?}");
    assert!(results
        .iter()
        .flatten()
        .all(|r| r.client_seen == seen_as && r.port == UDP_PORT));
}
