//! Pinned state end to end: with `--keep-on-exit`, established NAT connections keep working
//! while lbctl is stopped, across its restart, and across a program replace (a new program
//! swapped in on the same maps); without it, stopping leaves nothing behind. State an lbctl
//! of another layout left, or one that another lbctl holds, is refused.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
};

use aya::maps::MapData;
use lb_lab::{drive_tcp, Lab, Sessions, SESSION_PORT, VIP_ADDR, VIP_PORT};
use tests::{lbctl, require_root};

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(VIP_ADDR), port)
}

/// nat over the lab's reals (the LB is their gateway), for both lab ports.
fn nat_args(lab: &Lab, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["--mode".into(), "nat".into()];
    for port in [VIP_PORT, SESSION_PORT] {
        a.extend(["--vip".into(), format!("{VIP_ADDR}:{port}/tcp")]);
    }
    for r in lab.real_addrs() {
        a.extend(["--real".into(), r.to_string()]);
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn all_talk(sessions: &Sessions, lab: &Lab, when: &str) {
    sessions.keep_talking(2).unwrap();
    let broken: Vec<_> = sessions
        .states()
        .into_iter()
        .filter(|s| s.failure.is_some())
        .collect();
    assert!(
        broken.is_empty(),
        "{when}: {} sessions broke: {broken:?}\nlbctl log:\n{}",
        broken.len(),
        lab.lb_log()
    );
}

#[test]
fn established_connections_survive_a_stop_a_restart_and_a_program_replace() {
    require_root();
    let mut lab = Lab::two_subnets(3).unwrap();
    let args = nat_args(&lab, &["--keep-on-exit"]);
    lab.start_lb(&lbctl(), &args).unwrap();
    let first = lab.lb_xdp_prog_id().unwrap().unwrap();
    let sessions = Sessions::open(&lab.client, vip(SESSION_PORT), 12).unwrap();
    all_talk(&sessions, &lab, "before the stop");

    // Stopped: the program goes on forwarding on the pinned maps.
    let log = lab.stop_lb().unwrap();
    assert!(log.contains("keeps forwarding"), "{log}");
    assert_eq!(lab.lb_xdp_prog_id().unwrap(), Some(first));
    all_talk(&sessions, &lab, "while lbctl is stopped");

    // Restarted: the new lbctl takes the maps and the interfaces over.
    lab.start_lb(&lbctl(), &args).unwrap();
    let second = lab.lb_xdp_prog_id().unwrap().unwrap();
    assert_ne!(second, first, "a new program was loaded and swapped in");
    assert!(lab.lb_log().contains("taken over"), "{}", lab.lb_log());
    all_talk(&sessions, &lab, "after the restart");
    let fresh = drive_tcp(&lab.client, vip(VIP_PORT), 20).unwrap();
    assert!(fresh.iter().all(Result::is_ok), "{fresh:?}");

    // Once more, as an upgrade would: replaced again, the same flows go on.
    lab.stop_lb().unwrap();
    lab.start_lb(&lbctl(), &args).unwrap();
    assert_ne!(lab.lb_xdp_prog_id().unwrap().unwrap(), second);
    all_talk(&sessions, &lab, "after the second replace");

    // Stopped with the program left forwarding, then detached with no lbctl running.
    lab.stop_lb().unwrap();
    let pin_dir = lab.lb_pin_dir();
    let out = lab
        .lb
        .command(&lbctl().display().to_string())
        .env("LBCTL_SOCKET", lab.lb_socket())
        .args(["detach", "eth1", "--pin-dir"])
        .arg(&pin_dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("still has it"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lab
        .lb
        .command(&lbctl().display().to_string())
        .env("LBCTL_SOCKET", lab.lb_socket())
        .args(["detach", "eth0", "--pin-dir"])
        .arg(&pin_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lab.lb_xdp_prog_id().unwrap(), None);
    assert!(!pin_dir.exists(), "the state is removed");
    drop(sessions);
}

#[test]
fn without_keep_on_exit_stopping_leaves_nothing_behind() {
    require_root();
    let mut lab = Lab::two_subnets(1).unwrap();
    lab.start_lb(&lbctl(), &nat_args(&lab, &[])).unwrap();
    assert!(lab.lb_pin_dir().join("FLOWS").exists());
    // The reals are behind eth1: it cannot go while they are served.
    let e = lab
        .lbctl(&lbctl(), &["detach", "eth1"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("eth1 stays"), "{e}");
    lab.stop_lb().unwrap();
    assert_eq!(lab.lb_xdp_prog_id().unwrap(), None);
    assert!(!lab.lb_pin_dir().exists());
}

fn attach_fails(lab: &Lab, socket: &Path) -> String {
    let mut args = vec!["attach".to_string(), "eth0".into(), "eth1".into()];
    args.extend(nat_args(lab, &[]));
    args.extend(["--pin-dir".into(), lab.lb_pin_dir().display().to_string()]);
    let out = lab
        .lb
        .command(&lbctl().display().to_string())
        .env("LBCTL_SOCKET", socket)
        .args(&args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn state_held_by_another_lbctl_or_of_another_layout_is_refused() {
    require_root();
    let mut lab = Lab::two_subnets(1).unwrap();
    lab.start_lb(&lbctl(), &nat_args(&lab, &[])).unwrap();
    let other_socket = std::env::temp_dir().join(format!("{}-second.sock", lab.lb.name()));
    let err = attach_fails(&lab, &other_socket);
    assert!(err.contains("another lbctl holds"), "{err}");
    lab.stop_lb().unwrap();

    // A FLOWS map of another shape where this lbctl's would be.
    std::fs::create_dir_all(lab.lb_pin_dir()).unwrap();
    let def = aya_obj::Map::new_from_params(1 /* HASH */, 4, 4, 16, 0);
    let foreign = MapData::create(def, "FLOWS", None).unwrap();
    foreign.pin(lab.lb_pin_dir().join("FLOWS")).unwrap();
    let err = attach_fails(&lab, &lab.lb_socket());
    assert!(err.contains("is not this lbctl's"), "{err}");
    assert_eq!(
        lab.lb_xdp_prog_id().unwrap(),
        None,
        "refused: nothing attached"
    );
    assert!(
        lab.lb_pin_dir().join("FLOWS").exists(),
        "refused: nothing removed"
    );
}

/// A real whose checks failed before a restart is still out after it, until its checks pass
/// again: a restart never sends new flows to a dead real.
#[test]
fn a_real_down_before_a_restart_stays_down_after_it() {
    require_root();
    let mut lab = Lab::two_subnets(2).unwrap();
    let check = "tcp,inter=300ms,timeout=300ms,rise=2,fall=2";
    let args = nat_args(&lab, &["--keep-on-exit", "--check", check]);
    lab.start_lb(&lbctl(), &args).unwrap();
    lab.stop_tcp_server(1, VIP_PORT).unwrap();
    let r2 = lab.real_addrs()[1].to_string();
    let serving = |lab: &Lab| -> Option<bool> {
        let text = lab.lbctl(&lbctl(), &["real", "list", "--json"]).unwrap();
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        list["reals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["real"]["addr"] == r2.as_str() && r["vip"].as_str().unwrap().ends_with(":80/tcp")
            })
            .and_then(|r| r["serving"].as_bool())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while serving(&lab) != Some(false) {
        assert!(std::time::Instant::now() < deadline, "{}", lab.lb_log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    lab.stop_lb().unwrap();
    lab.start_lb(&lbctl(), &args).unwrap();
    assert_eq!(
        serving(&lab),
        Some(false),
        "down from the start:\n{}",
        lab.lb_log()
    );
    let replies = drive_tcp(&lab.client, vip(VIP_PORT), 20).unwrap();
    assert!(
        replies
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.real == "r1")),
        "{replies:?}"
    );
    lab.stop_lb().unwrap();
    let out = lab
        .lb
        .command(&lbctl().display().to_string())
        .args(["detach", "eth0", "--pin-dir"])
        .arg(lab.lb_pin_dir())
        .env("LBCTL_SOCKET", lab.lb_socket())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
