//! `lbctl explain` end to end: asked of a running lbctl, it names the VIP, says a new flow
//! would be made, and which real of the lab it would go to; `--json` carries the real.

use lb_lab::{Lab, CLIENT_ADDR, VIP_ADDR, VIP_PORT};
use tests::{attach_args, lbctl, require_root};

#[test]
fn explain_asks_the_running_lbctl_and_names_a_real_of_the_lab() {
    require_root();
    let mut lab = Lab::one_segment(3).unwrap();
    lab.start_lb(&lbctl(), &attach_args(&lab, "dsr")).unwrap();
    let client = format!("{CLIENT_ADDR}:40000");
    let vip = format!("{VIP_ADDR}:{VIP_PORT}");
    let text = lab
        .lbctl(&lbctl(), &["explain", "tcp", &client, &vip])
        .unwrap();
    assert!(
        text.contains(&format!("VIP {vip}/tcp")) && text.contains("dsr maglev"),
        "{text}"
    );
    assert!(text.contains("new flow: hash slot"), "{text}");
    let json: serde_json::Value = serde_json::from_str(
        &lab.lbctl(&lbctl(), &["explain", "tcp", &client, &vip, "--json"])
            .unwrap(),
    )
    .unwrap();
    let real: std::net::SocketAddr = json["real"].as_str().unwrap().parse().unwrap();
    assert!(
        lab.real_addrs()
            .iter()
            .any(|a| std::net::IpAddr::V4(*a) == real.ip()),
        "{json}"
    );
    let err = lab
        .lbctl(&lbctl(), &["explain", "sctp", &client, &vip])
        .unwrap_err()
        .to_string();
    assert!(err.contains("tcp") && err.contains("udp"), "{err}");
    lab.stop_lb().unwrap();
}

/// `lbctl explain --pcap`: the packets `lbctl capture -w` recorded, each explained by the
/// running lbctl (the flow exists now, so each says so, and where it leaves); a flow's
/// later packets point at its first.
#[test]
fn explain_pcap_explains_each_packet_of_a_capture() {
    use std::io::{BufRead as _, BufReader};
    require_root();
    let mut lab = Lab::one_segment(2).unwrap();
    lab.start_lb(&lbctl(), &attach_args(&lab, "dsr")).unwrap();
    let file = std::env::temp_dir().join(format!("explain-pcap-{}.pcapng", std::process::id()));
    let vip = format!("{VIP_ADDR}:{VIP_PORT}");
    let mut capture = lab
        .lb
        .command(lbctl().to_str().unwrap())
        .args([
            "capture",
            lb_lab::HOST_IFACE,
            "--vip",
            &vip,
            "--count",
            "3",
            "--seconds",
            "30",
            "-w",
        ])
        .arg(&file)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(capture.stderr.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let replies = lb_lab::drive_tcp(&lab.client, Lab::vip(), 1).unwrap();
    assert!(replies[0].is_ok(), "{replies:?}");
    assert!(capture.wait().unwrap().success());
    let text = lab
        .lbctl(&lbctl(), &["explain", "--pcap", file.to_str().unwrap()])
        .unwrap();
    assert!(text.contains(": 3 packets"), "{text}");
    assert!(
        text.contains(&format!("#1 {CLIENT_ADDR}:")) && text.contains(&format!("> {vip} tcp:")),
        "{text}"
    );
    assert!(text.contains(&format!("VIP {vip}/tcp")), "{text}");
    assert!(text.contains(": exists (real id"), "{text}");
    assert!(text.contains("leaves: "), "{text}");
    assert!(text.contains(&format!("> {vip} tcp: as #1")), "{text}");
    std::fs::remove_file(&file).unwrap();
    lab.stop_lb().unwrap();
}
