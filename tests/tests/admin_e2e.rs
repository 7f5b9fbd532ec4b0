//! The admin socket end to end: `lbctl vip|real|status` against a running balancer change
//! what real connections reach, and refuse what cannot be done with a message that says
//! why. Neighbours: a real that does not answer ARP is reported and used once it does; a
//! real whose MAC changes is followed.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use lb_lab::{drive_tcp, Lab, Reply, Sessions, HOST_IFACE, SESSION_PORT, VIP_ADDR, VIP_PORT};
use tests::{lbctl, require_root};

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(VIP_ADDR), port)
}

fn spread(results: &[Result<Reply, String>], lab: &Lab) -> BTreeMap<String, usize> {
    let mut per_real = BTreeMap::new();
    for r in results {
        match r {
            Ok(r) => *per_real.entry(r.real.clone()).or_insert(0) += 1,
            Err(e) => panic!("a connection failed: {e}\nlbctl log:\n{}", lab.lb_log()),
        }
    }
    per_real
}

fn start(lab: &mut Lab, reals: &[&str], extra: &[&str]) {
    let mut args: Vec<String> = ["--mode", "dsr", "--vip"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(format!("{VIP_ADDR}:{VIP_PORT}/tcp"));
    args.extend(["--vip".into(), format!("{VIP_ADDR}:{SESSION_PORT}/tcp")]);
    for r in reals {
        args.extend(["--real".to_string(), r.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    lab.start_lb(&lbctl(), &args).unwrap();
}

/// Waits until `lbctl real list` says what `done` looks for (bounded).
fn wait_for_list(lab: &Lab, done: impl Fn(&str) -> bool, what: &str) -> Duration {
    let t = Instant::now();
    loop {
        let list = lab.lbctl(&lbctl(), &["real", "list"]).unwrap();
        if done(&list) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{what} within 15 s; real list:\n{list}\nlog:\n{}",
            lab.lb_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn runtime_commands_change_what_connections_reach() {
    require_root();
    let mut lab = Lab::one_segment(3).unwrap();
    start(&mut lab, &["198.18.0.11", "198.18.0.12"], &[]);
    let port80 = format!("{VIP_ADDR}:{VIP_PORT}/tcp");

    let status = lab.lbctl(&lbctl(), &["status"]).unwrap();
    assert!(
        status.contains(HOST_IFACE) && status.contains("command line"),
        "{status}"
    );
    let list = lab
        .lbctl(&lbctl(), &["real", "list", "--vip", &port80])
        .unwrap();
    assert_eq!(list.lines().count(), 3, "header and two reals:\n{list}");

    // A real added takes connections at once.
    let said = lab
        .lbctl(&lbctl(), &["real", "add", "198.18.0.13", "--vip", &port80])
        .unwrap();
    assert!(said.contains("198.18.0.13 added"), "{said}");
    let per = spread(&drive_tcp(&lab.client, vip(VIP_PORT), 60).unwrap(), &lab);
    assert_eq!(per.len(), 3, "{per:?}");

    // Drain: established connections stay, new ones go to the others.
    let held = Sessions::open(&lab.client, vip(SESSION_PORT), 12).unwrap();
    lab.lbctl(&lbctl(), &["real", "drain", "198.18.0.11"])
        .unwrap();
    let per = spread(&drive_tcp(&lab.client, vip(VIP_PORT), 40).unwrap(), &lab);
    assert!(
        !per.contains_key("r1"),
        "drained r1 took new connections: {per:?}"
    );
    held.keep_talking(3).unwrap();
    assert!(
        held.states().iter().all(|s| s.failure.is_none()),
        "drain kept established sessions: {:?}",
        held.states()
    );
    let json = lab
        .lbctl(&lbctl(), &["real", "list", "--json", "--vip", &port80])
        .unwrap();
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let r1 = rows["reals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["real"]["addr"] == "198.18.0.11")
        .unwrap();
    assert_eq!(
        (r1["state"].as_str(), r1["serving"].as_bool()),
        (Some("drain"), Some(false))
    );

    // Maint, then ready again.
    lab.lbctl(
        &lbctl(),
        &["real", "maint", "198.18.0.12", "--vip", &port80],
    )
    .unwrap();
    let per = spread(&drive_tcp(&lab.client, vip(VIP_PORT), 20).unwrap(), &lab);
    assert_eq!(per.keys().collect::<Vec<_>>(), ["r3"], "{per:?}");
    lab.lbctl(&lbctl(), &["real", "ready", "198.18.0.11"])
        .unwrap();
    lab.lbctl(&lbctl(), &["real", "ready", "198.18.0.12"])
        .unwrap();
    lab.lbctl(&lbctl(), &["real", "weight", "198.18.0.13", "0"])
        .unwrap();
    let per = spread(&drive_tcp(&lab.client, vip(VIP_PORT), 40).unwrap(), &lab);
    assert!(
        per.contains_key("r1") && per.contains_key("r2") && !per.contains_key("r3"),
        "{per:?}"
    );

    // A new VIP, then gone: its port is refused by the LB's stack again.
    let alt = format!("{VIP_ADDR}:8080/tcp");
    lab.lbctl(&lbctl(), &["vip", "add", &alt, "--real", "198.18.0.13"])
        .unwrap();
    let per = spread(&drive_tcp(&lab.client, vip(8080), 5).unwrap(), &lab);
    assert_eq!(per.keys().collect::<Vec<_>>(), ["r3"], "{per:?}");
    let vips = lab.lbctl(&lbctl(), &["vip", "list"]).unwrap();
    assert_eq!(vips.lines().count(), 4, "{vips}");
    lab.lbctl(&lbctl(), &["vip", "del", &alt]).unwrap();
    let vips = lab.lbctl(&lbctl(), &["vip", "list"]).unwrap();
    assert!(!vips.contains(&alt), "{vips}");

    // Refusals say why and change nothing.
    for (args, why) in [
        (
            vec!["real", "drain", "198.18.0.99"],
            "not a real of any VIP",
        ),
        (
            vec!["vip", "del", "198.18.100.99:80/tcp"],
            "no VIP 198.18.100.99:80/tcp",
        ),
        (
            vec!["real", "weight", "198.18.0.11", "999"],
            "0 (drain) to 256",
        ),
        (
            vec![
                "vip",
                "add",
                "198.18.100.20:80/tcp",
                "--mode",
                "dsr",
                "--real",
                "198.18.0.11:8080",
            ],
            "cannot translate ports",
        ),
    ] {
        let e = lab.lbctl(&lbctl(), &args).unwrap_err().to_string();
        assert!(e.contains(why), "{args:?}: {e}");
    }
    let after = lab.lbctl(&lbctl(), &["real", "list"]).unwrap();
    assert_eq!(
        after.lines().count(),
        6,
        "three reals and two, as before:\n{after}"
    );
    drop(held);
    lab.stop_lb().unwrap();
}

#[test]
fn a_real_that_does_not_answer_arp_is_reported_and_used_once_it_does() {
    require_root();
    let mut lab = Lab::one_segment(2).unwrap();
    start(
        &mut lab,
        &["198.18.0.11", "198.18.0.14"],
        &["--resolve-timeout", "1"],
    );
    let list = lab.lbctl(&lbctl(), &["real", "list"]).unwrap();
    let row = list.lines().find(|l| l.contains("198.18.0.14")).unwrap();
    assert!(
        row.contains("unresolved") && row.contains("did not answer ARP"),
        "{list}"
    );
    let per = spread(&drive_tcp(&lab.client, vip(VIP_PORT), 20).unwrap(), &lab);
    assert_eq!(per.keys().collect::<Vec<_>>(), ["r1"], "{per:?}");

    // The address appears (on r2, which holds the VIP): resolved and used.
    lab.reals[1]
        .ip(&["addr", "add", "198.18.0.14/24", "dev", HOST_IFACE])
        .unwrap();
    let took = wait_for_list(
        &lab,
        |l| {
            l.lines()
                .any(|r| r.contains("198.18.0.14") && r.contains(" yes "))
        },
        "198.18.0.14 serving",
    );
    let per = spread(&drive_tcp(&lab.client, vip(VIP_PORT), 30).unwrap(), &lab);
    assert!(per.contains_key("r2"), "{per:?}");
    eprintln!("an unresolved real came into use {took:?} after its address appeared");
    lab.stop_lb().unwrap();
}

#[test]
fn traffic_follows_a_real_whose_mac_changes() {
    require_root();
    let mut lab = Lab::one_segment(2).unwrap();
    start(&mut lab, &["198.18.0.11", "198.18.0.12"], &[]);
    let per = spread(&drive_tcp(&lab.client, vip(VIP_PORT), 20).unwrap(), &lab);
    assert_eq!(per.len(), 2, "{per:?}");
    // arp_notify: Linux announces its new MAC with a gratuitous ARP, as a NIC swap or a
    // migrated VM does.
    let r2 = &lab.reals[1];
    r2.sysctl(&format!("net.ipv4.conf.{HOST_IFACE}.arp_notify"), "1")
        .unwrap();
    r2.ip(&[
        "link",
        "set",
        "dev",
        HOST_IFACE,
        "address",
        "02:00:5e:12:34:56",
    ])
    .unwrap();
    let took = wait_for_list(
        &lab,
        |l| l.contains("02:00:5e:12:34:56"),
        "the new MAC in use",
    );
    let per = spread(&drive_tcp(&lab.client, vip(VIP_PORT), 30).unwrap(), &lab);
    assert!(per.contains_key("r2"), "{per:?}");
    eprintln!("the LB followed the MAC change within {took:?}");
    lab.stop_lb().unwrap();
}
