//! Pinned state end to end: with `--keep-on-exit`, established NAT connections keep working
//! while lbctl is stopped, across its restart, and across a program replace (a new program
//! swapped in on the same maps); without it, stopping leaves nothing behind. State an lbctl
//! of another layout left, or one that another lbctl holds, is refused; so is a promise to
//! keep state on pins that die with lbctl, and an lbctl program whose pins are gone is
//! named for what it is. (Upgrades from older layouts: `upgrade_e2e.rs`.)

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
    assert!(err.contains("is not of layout 1"), "{err}");
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

/// Runs `lbctl ARGS` in the LB's namespace to its end; returns (success, stderr).
fn run_in_lb(lab: &Lab, args: &[String]) -> (bool, String) {
    let out = lab
        .lb
        .command(&lbctl().display().to_string())
        .env("LBCTL_SOCKET", lab.lb_socket())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn state_of_a_newer_layout_is_refused_with_what_to_do() {
    require_root();
    let mut lab = Lab::two_subnets(1).unwrap();
    let args = nat_args(&lab, &["--keep-on-exit"]);
    lab.start_lb(&lbctl(), &args).unwrap();
    lab.stop_lb().unwrap();
    let layout = lab.lb_pin_dir().join("LAYOUT");
    let data = MapData::from_pin(&layout).unwrap();
    let mut map: aya::maps::Array<MapData, u32> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap();
    let current = map.get(&0, 0).unwrap();
    assert_eq!(current, lb_userspace::datapath::layout::CURRENT);
    map.set(0, 99, 0).unwrap();
    let prog = lab.lb_xdp_prog_id().unwrap();
    let err = lab.start_lb(&lbctl(), &args).unwrap_err().to_string();
    assert!(
        err.contains("layout 99, pinned by a newer lbctl")
            && err.contains("Start that newer lbctl"),
        "{err}"
    );
    assert_eq!(
        lab.lb_xdp_prog_id().unwrap(),
        prog,
        "refused: the old program still runs"
    );
    // Put back, the state is this lbctl's again.
    map.set(0, current, 0).unwrap();
    lab.start_lb(&lbctl(), &args).unwrap();
    lab.stop_lb().unwrap();
    let mut detach = vec!["detach".to_string(), "eth0".into(), "--pin-dir".into()];
    detach.push(lab.lb_pin_dir().display().to_string());
    let (ok, err) = run_in_lb(&lab, &detach);
    assert!(ok, "{err}");
}

/// `ip netns exec` gives lbctl a fresh /sys: a bpffs it mounts on /sys/fs/bpf there is its
/// own and ends with it. Keeping state there cannot work, and is refused at start.
#[test]
fn keep_on_exit_with_pins_that_die_with_lbctl_is_refused() {
    require_root();
    let lab = Lab::two_subnets(1).unwrap();
    let mut args = vec!["attach".to_string(), "eth0".into(), "eth1".into()];
    args.extend(nat_args(&lab, &["--keep-on-exit"]));
    let dir = format!("/sys/fs/bpf/{}", lab.lb.name());
    args.extend(["--pin-dir".into(), dir]);
    let (ok, err) = run_in_lb(&lab, &args);
    assert!(!ok);
    assert!(
        err.contains("--keep-on-exit cannot keep its promise") && err.contains("--pin-dir"),
        "{err}"
    );
    assert_eq!(lab.lb_xdp_prog_id().unwrap(), None, "nothing attached");
}

/// The program an lbctl left forwarding, whose pins are gone (they were on a bpffs that died
/// with it): the next lbctl says so, and what to do, instead of "another program".
#[test]
fn an_lbctl_program_whose_pins_are_gone_is_named_so() {
    require_root();
    let mut lab = Lab::two_subnets(1).unwrap();
    let args = nat_args(&lab, &["--keep-on-exit"]);
    lab.start_lb(&lbctl(), &args).unwrap();
    lab.stop_lb().unwrap();
    let prog = lab.lb_xdp_prog_id().unwrap();
    assert!(prog.is_some());
    // As when the bpffs went away: the program keeps its maps, the pins are gone.
    std::fs::remove_dir_all(lab.lb_pin_dir()).unwrap();
    let err = lab.start_lb(&lbctl(), &args).unwrap_err().to_string();
    assert!(
        err.contains("an lbctl balancer attached") && err.contains("its pins are gone"),
        "{err}"
    );
    assert_eq!(
        lab.lb_xdp_prog_id().unwrap(),
        prog,
        "refused: left as it was"
    );
    for iface in ["eth0", "eth1"] {
        lab.lb
            .ip(&["link", "set", "dev", iface, "xdp", "off"])
            .unwrap();
    }
}

/// A migration that ended after its swap, before LAYOUT was pinned, leaves layout-1 state
/// whose replaced and new maps (COUNTERS, REAL_COUNTERS) are already of this layout: the
/// next lbctl takes those over in place and ends the migration, flows and all.
#[test]
fn a_migration_cut_short_before_layout_is_pinned_is_finished_by_the_next_lbctl() {
    require_root();
    let mut lab = Lab::two_subnets(2).unwrap();
    let args = nat_args(&lab, &["--keep-on-exit"]);
    lab.start_lb(&lbctl(), &args).unwrap();
    let sessions = Sessions::open(&lab.client, vip(SESSION_PORT), 8).unwrap();
    lab.stop_lb().unwrap();
    std::fs::remove_file(lab.lb_pin_dir().join("LAYOUT")).unwrap();
    lab.start_lb(&lbctl(), &args).unwrap();
    let log = lab.lb_log();
    let migrated = format!(
        "from layout 1 to {}",
        lb_userspace::datapath::layout::CURRENT
    );
    assert!(log.contains(&migrated), "{log}");
    let data = MapData::from_pin(lab.lb_pin_dir().join("LAYOUT")).unwrap();
    let layout: aya::maps::Array<MapData, u32> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap();
    assert_eq!(
        layout.get(&0, 0).unwrap(),
        lb_userspace::datapath::layout::CURRENT
    );
    all_talk(&sessions, &lab, "after the migration was finished");
    lab.stop_lb().unwrap();
    let mut detach = vec!["detach".to_string(), "eth0".into(), "--pin-dir".into()];
    detach.push(lab.lb_pin_dir().display().to_string());
    let (ok, err) = run_in_lb(&lab, &detach);
    assert!(ok, "{err}");
}
