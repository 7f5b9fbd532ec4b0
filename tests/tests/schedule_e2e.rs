//! Flow affinity and leastconn end to end: long-lived TCP connections keep talking through
//! the LB while `lbctl` reloads its configuration (SIGHUP) with reals added, reweighted,
//! drained and removed.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use lb_lab::{drive_tcp, Lab, SessionState, Sessions, SESSION_PORT, VIP_ADDR, VIP_PORT};
use tests::{lbctl, require_root};

/// A dsr VIP on the session port and on port 80, over `reals` (config lines), balanced by
/// `balance`.
fn config(balance: &str, reals: &[&str]) -> String {
    let list: Vec<String> = reals.iter().map(|r| format!("\"{r}\"")).collect();
    let mut text = String::new();
    for port in [SESSION_PORT, VIP_PORT] {
        text += &format!(
            "[[vip]]\naddress = \"{VIP_ADDR}:{port}/tcp\"\nmode = \"dsr\"\nbalance = \"{balance}\"\nreals = [{}]\n\n",
            list.join(", ")
        );
    }
    text
}

struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("lbctl-{}-{name}.toml", std::process::id())))
    }
    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }
    fn arg(&self) -> Vec<String> {
        vec!["--config".into(), self.0.display().to_string()]
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn sessions_target() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(VIP_ADDR), SESSION_PORT)
}

fn by_real(states: &[SessionState]) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for s in states {
        *t.entry(s.real.clone()).or_insert(0) += 1;
    }
    t
}

#[test]
fn established_connections_stay_while_reals_are_added_reweighted_drained_and_removed() {
    require_root();
    let mut lab = Lab::one_segment(3).unwrap();
    let file = ConfigFile::new("affinity");
    file.write(&config("maglev", &["198.18.0.11", "198.18.0.12"]));
    lab.start_lb(&lbctl(), &file.arg()).unwrap();

    let sessions = Sessions::open(&lab.client, sessions_target(), 30).unwrap();
    let placed = by_real(&sessions.states());
    assert_eq!(
        placed.keys().collect::<Vec<_>>(),
        ["r1", "r2"],
        "{placed:?}"
    );

    // r3 joins, r2 weighs 3: every connection keeps talking to its own real.
    file.write(&config(
        "maglev",
        &["198.18.0.11", "198.18.0.12,weight=3", "198.18.0.13"],
    ));
    lab.reload_lb().unwrap();
    sessions.keep_talking(10).unwrap();
    let states = sessions.states();
    let failed: Vec<&SessionState> = states.iter().filter(|s| s.failure.is_some()).collect();
    assert!(
        failed.is_empty(),
        "no connection reset or stalled: {failed:?}"
    );
    let new = drive_tcp(
        &lab.client,
        SocketAddr::new(IpAddr::V4(VIP_ADDR), VIP_PORT),
        60,
    )
    .unwrap();
    assert!(
        new.iter().flatten().any(|r| r.real == "r3"),
        "new connections reach the new real"
    );

    // r2 drains: its connections stay, new ones avoid it.
    file.write(&config(
        "maglev",
        &["198.18.0.11", "198.18.0.12,weight=0", "198.18.0.13"],
    ));
    lab.reload_lb().unwrap();
    sessions.keep_talking(10).unwrap();
    assert!(sessions.states().iter().all(|s| s.failure.is_none()));
    let new = drive_tcp(
        &lab.client,
        SocketAddr::new(IpAddr::V4(VIP_ADDR), VIP_PORT),
        60,
    )
    .unwrap();
    assert!(
        new.iter().all(|r| r.as_ref().is_ok_and(|r| r.real != "r2")),
        "{new:?}"
    );

    // r1 leaves: its connections move to a real that knows nothing of them (a reset, as in
    // every L4 LB); the draining r2's stay.
    file.write(&config("maglev", &["198.18.0.12,weight=0", "198.18.0.13"]));
    lab.reload_lb().unwrap();
    sessions.keep_talking(10).unwrap();
    for s in sessions.states() {
        match s.real.as_str() {
            "r1" => assert!(
                s.failure.is_some(),
                "a connection of the removed real: {s:?}"
            ),
            _ => assert!(s.failure.is_none(), "{s:?}"),
        }
    }
    drop(sessions);
    lab.stop_lb().unwrap();
}

#[test]
fn leastconn_sends_new_connections_away_from_a_real_holding_twenty() {
    require_root();
    let mut lab = Lab::one_segment(3).unwrap();
    let file = ConfigFile::new("leastconn");
    // Only r1 takes connections at first.
    file.write(&config(
        "leastconn",
        &[
            "198.18.0.11",
            "198.18.0.12,weight=0",
            "198.18.0.13,weight=0",
        ],
    ));
    lab.start_lb(&lbctl(), &file.arg()).unwrap();
    let held = Sessions::open(&lab.client, sessions_target(), 20).unwrap();
    assert_eq!(
        by_real(&held.states()),
        BTreeMap::from([("r1".to_owned(), 20)])
    );

    file.write(&config(
        "leastconn",
        &["198.18.0.11", "198.18.0.12", "198.18.0.13"],
    ));
    lab.reload_lb().unwrap();
    let next = Sessions::open(&lab.client, sessions_target(), 20).unwrap();
    let placed = by_real(&next.states());
    assert_eq!(
        placed,
        BTreeMap::from([("r2".to_owned(), 10), ("r3".to_owned(), 10)]),
        "the new connections go to the reals with the fewest"
    );
    held.keep_talking(5).unwrap();
    assert!(held.states().iter().all(|s| s.failure.is_none()));
    drop((held, next));
    lab.stop_lb().unwrap();
}

#[test]
fn a_refused_reload_changes_nothing_and_a_good_one_changes_the_scheduler_and_the_vips() {
    require_root();
    let mut lab = Lab::one_segment(2).unwrap();
    let file = ConfigFile::new("refused");
    file.write(&config("maglev", &["198.18.0.11"]));
    lab.start_lb(&lbctl(), &file.arg()).unwrap();
    let vip = SocketAddr::new(IpAddr::V4(VIP_ADDR), VIP_PORT);
    // A file that parses but cannot be served: a real the LB has no route to.
    file.write(&config("roundrobin", &["198.18.0.11", "198.19.9.9"]));
    let err = lab.reload_lb().unwrap_err().to_string();
    assert!(err.contains("198.19.9.9"), "{err}");
    let replies = drive_tcp(&lab.client, vip, 20).unwrap();
    assert!(
        replies
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.real == "r1")),
        "still maglev over r1 only"
    );

    // Another scheduler, another real, and one VIP of the two gone.
    let both = config("roundrobin", &["198.18.0.11", "198.18.0.12"]);
    let one_vip = both.split("\n\n").nth(1).unwrap().to_owned();
    file.write(&one_vip);
    lab.reload_lb().unwrap();
    let replies = drive_tcp(&lab.client, vip, 20).unwrap();
    let r2 = replies
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.real == "r2"))
        .count();
    // Per-CPU cursors: alternation is exact per CPU, near even over all.
    assert!((5..=15).contains(&r2), "round robin shares: {replies:?}");
    let listed = lab.lbctl(&lbctl(), &["vip", "list"]).unwrap();
    assert_eq!(listed.lines().count(), 2, "a header and one VIP:\n{listed}");
    assert!(
        listed.contains(&format!("{VIP_ADDR}:{VIP_PORT}/tcp")) && listed.contains("roundrobin"),
        "{listed}"
    );
    lab.stop_lb().unwrap();
}
