//! DSR end to end: a lab of network namespaces, `lbctl attach` in the LB namespace, real TCP
//! connections from the client to the VIP.

use lb_common::Reason;
use lb_lab::{Lab, CLIENT_ADDR, VIP_ADDR, VIP_PORT};
use lb_userspace::demo::observe;
use tests::{attach_args, lbctl, require_root};

#[test]
fn dsr_answers_300_connections_spread_over_three_reals_with_replies_bypassing_the_lb() {
    require_root();
    let mut lab = Lab::one_segment(3).unwrap();
    lab.start_lb(&lbctl(), &attach_args(&lab, "dsr")).unwrap();

    let facts = observe(&lab, 300).unwrap();
    let log = lab.lb_log();
    assert_eq!(
        facts.answered, 300,
        "every connection answered; lbctl log:\n{log}"
    );
    assert_eq!(facts.per_real.len(), 3, "{:?}", facts.per_real);
    for (real, n) in &facts.per_real {
        assert!(
            (60..=138).contains(n),
            "{real} got {n} of 300 (must be 20%..46%): {:?}",
            facts.per_real
        );
    }
    // DSR leaves the IP header alone: every real saw the true client.
    assert_eq!(facts.client_addrs_seen, vec![CLIENT_ADDR.to_string()]);
    tests::assert_udp_answered(&lab, 60, 3, CLIENT_ADDR.into());
    // Client→VIP packets crossed the LB: at least SYN, ACK, request and FIN per connection.
    assert!(
        facts.lb_forwarded >= 300 * 4,
        "forwarded {}",
        facts.lb_forwarded
    );
    // Replies did not: each would reach the LB as a packet to a non-VIP destination, and there
    // would be at least three per connection (SYN-ACK, reply, FIN).
    assert!(
        facts.lb_not_vip < 10,
        "the LB saw {} non-VIP packets: replies crossed it",
        facts.lb_not_vip
    );

    // `lbctl stats` shows the same, from another process.
    let lbctl_stats = |args: &[&str]| {
        let mut all = vec!["stats", "eth0"];
        all.extend_from_slice(args);
        lab.lb.exec(&lbctl().display().to_string(), &all).unwrap()
    };
    let reasons = lbctl_stats(&["--reasons"]);
    let forwarded_row = reasons
        .lines()
        .find(|l| l.starts_with("forwarded"))
        .unwrap_or_default()
        .to_owned();
    let n: u64 = forwarded_row
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(n >= facts.lb_forwarded, "lbctl stats --reasons:\n{reasons}");
    for r in Reason::ALL {
        assert!(
            reasons.contains(r.label()),
            "lbctl stats --reasons lists {}:\n{reasons}",
            r.label()
        );
    }
    let vip = format!("{VIP_ADDR}:{VIP_PORT}/tcp");
    let table = lbctl_stats(&["--interval", "0.2"]);
    assert!(table.contains(&vip), "lbctl stats lists the VIP:\n{table}");
    // Per real: each real's packets are those of the connections it answered (four at
    // least each), and the VIP's are its reals' summed.
    let json: serde_json::Value =
        serde_json::from_str(&lbctl_stats(&["--json", "--interval", "0.2"])).unwrap();
    let row = json["vips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vip"] == vip.as_str())
        .unwrap_or_else(|| panic!("no {vip} in {json}"));
    let reals = row["reals"].as_array().unwrap();
    assert_eq!(reals.len(), 3, "{row}");
    let mut sum = 0;
    for r in reals {
        let name = r["real"].as_str().unwrap();
        let addr: std::net::Ipv4Addr = name.split(':').next().unwrap().parse().unwrap();
        // The lab's reals answer as r1, r2, r3, in the order of their addresses.
        let index = lab.real_addrs().iter().position(|a| *a == addr).unwrap();
        let served = facts.per_real[&format!("r{}", index + 1)] as u64;
        assert!(served > 0, "{:?}", facts.per_real);
        let packets = r["traffic"]["requests"]["packets"].as_u64().unwrap();
        assert!(
            packets >= 4 * served,
            "{name} answered {served} connections: {r}"
        );
        assert_eq!(
            r["traffic"]["replies"]["packets"], 0,
            "dsr: replies go around"
        );
        assert_eq!(r["state"], "ready", "{r}");
        sum += packets;
    }
    assert_eq!(
        row["traffic"]["requests"]["packets"].as_u64(),
        Some(sum),
        "{row}"
    );
    assert!(json["flow_entries"].as_u64().unwrap() > 0, "{json}");

    // SIGTERM stops gracefully: with nothing more to forward, it detaches after 1 s quiet.
    let log = lab
        .stop_lb_gracefully(std::time::Duration::from_secs(10))
        .unwrap();
    assert!(
        log.contains("graceful stop (SIGTERM): nothing forwarded for 1s"),
        "{log}"
    );
    assert!(
        !lab.lb_xdp_attached().unwrap(),
        "XDP left attached after SIGTERM"
    );
}

#[test]
fn rejected_attach_changes_nothing() {
    require_root();
    let lab = Lab::one_segment(1).unwrap();
    let lbctl = lbctl().display().to_string();
    let attempt = |args: &[&str]| {
        let out = lab
            .lb
            .command(&lbctl)
            .env("LBCTL_SOCKET", lab.lb_socket())
            .arg("attach")
            .arg("eth0")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(
            !lab.lb_xdp_attached().unwrap(),
            "{args:?} left XDP attached"
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        // lbctl has exited by now (which detaches anything); its log says whether it had
        // attached before failing.
        assert!(
            !err.contains("attached;"),
            "{args:?} attached before failing:\n{err}"
        );
        err
    };
    let vip = format!("{VIP_ADDR}:{VIP_PORT}/tcp");

    let err = attempt(&["--vip", "198.18.100.10:80", "--real", "198.18.0.11"]);
    assert!(err.contains("ADDRESS:PORT/PROTO"), "{err}");
    let err = attempt(&["--vip", &vip, "--real", "2001:2::11"]);
    assert!(err.contains("another IP family"), "{err}");
    let err = attempt(&[
        "--vip",
        &vip,
        "--real",
        "198.18.0.11",
        "--real",
        "198.18.0.11",
    ]);
    assert!(err.contains("listed twice"), "{err}");
    let err = attempt(&["--vip", &vip, "--vip", &vip, "--real", "198.18.0.11"]);
    assert!(err.contains("list each VIP once"), "{err}");
    // Refused after resolving: the neighbour entry lbctl added to resolve the real is gone
    // again. (A real nobody answers for is no refusal: see admin_e2e.)
    let err = attempt(&[
        "--vip",
        &vip,
        "--mode",
        "one-arm",
        "--snat-pool",
        "198.18.0.250",
        "--real",
        "198.18.0.11",
    ]);
    assert!(
        err.contains("198.18.0.250") && err.contains("not an address of this host"),
        "{err}"
    );
    let neigh = lab.lb.ip(&["neigh", "show", "dev", "eth0"]).unwrap();
    assert!(
        !neigh.contains("198.18.0.11"),
        "the failed attach left neighbour entries: {neigh}"
    );
    let err = attempt(&["--vip", &vip, "--real", "198.18.0.11:8080"]);
    assert!(err.contains("dsr cannot translate ports"), "{err}");
    let err = attempt(&["--vip", &vip, "--real", "198.18.0.11", "--mode", "bogus"]);
    assert!(err.contains("bogus"), "{err}");
    let out = lab
        .lb
        .command(&lbctl)
        .env("LBCTL_SOCKET", lab.lb_socket())
        .args(["attach", "nosuch0", "--vip", &vip, "--real", "198.18.0.11"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch0 does not exist"));
}

#[test]
fn stats_without_a_balancer_says_what_to_do() {
    require_root();
    let lab = Lab::one_segment(1).unwrap();
    let out = lab
        .lb
        .command(&lbctl().display().to_string())
        .args(["stats", "eth0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no XDP program is attached to eth0") && err.contains("lbctl attach"),
        "{err}"
    );
}

#[test]
fn attach_falls_back_to_generic_xdp_when_the_driver_has_no_native_support() {
    require_root();
    use lb_lab::Netns;
    use lb_userspace::datapath::{AttachMode, Datapath};
    let ns = Netns::create(&format!("{}-generic", lb_lab::unique_prefix())).unwrap();
    // A Linux bridge has no native XDP.
    ns.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    ns.ip(&["link", "set", "br0", "up"]).unwrap();
    let dp = ns
        .run(|| {
            let mut dp = Datapath::load()?;
            let mode = dp.attach("br0")?;
            anyhow::Ok((dp, mode))
        })
        .unwrap()
        .unwrap();
    assert_eq!(dp.1, AttachMode::Generic);
    assert!(ns
        .ip(&["link", "show", "br0"])
        .unwrap()
        .contains("xdpgeneric"));
    drop(dp);
    assert!(
        !ns.ip(&["link", "show", "br0"]).unwrap().contains("xdp"),
        "detached on drop"
    );
}
