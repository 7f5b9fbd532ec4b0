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
