//! Flow logs to a real rsyslog (Debian's), set up as the HAProxy tutorial sets it up for
//! HAProxy (imudp on 127.0.0.1:514, local0 to a file of its own): one line per connection
//! of a client burst, each naming the real that answered it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use lb_lab::{drive_tcp, Lab, CLIENT_ADDR, VIP_ADDR, VIP_PORT};
use tests::{attach_args, lbctl, require_root};

/// rsyslogd in the LB's namespace, stopped when dropped.
struct Rsyslog {
    child: std::process::Child,
    dir: PathBuf,
}

impl Rsyslog {
    fn start(lab: &Lab) -> Self {
        let dir = std::env::temp_dir().join(format!("{}-rsyslog", lab.lb.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="514")
template(name="message" type="string" string="%msg%\n")
local0.* action(type="omfile" file="{dir}/flows.log" template="message")
"#,
                dir = dir.display()
            ),
        )
        .unwrap();
        let child = lab
            .lb
            .command("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting rsyslogd (cargo xtask test installs rsyslog)");
        // Listening once its pid file is written.
        let started = Instant::now();
        while !dir.join("rsyslogd.pid").exists() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "rsyslogd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        Self { child, dir }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("flows.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn real_of(line: &str) -> &str {
    // CLIENT:PORT VIP/tcp MODE SCHED slot=N REAL:PORT new cpu=N
    line.split_whitespace().nth(5).unwrap_or("")
}

#[test]
fn every_connection_of_a_burst_is_one_line_in_rsyslog() {
    require_root();
    let mut lab = Lab::one_segment(3).unwrap();
    let syslog = Rsyslog::start(&lab);
    let mut args = attach_args(&lab, "dsr");
    args.extend(["--flow-log".into(), "syslog:udp:127.0.0.1:514".into()]);
    lab.start_lb(&lbctl(), &args).unwrap();

    let replies = drive_tcp(&lab.client, Lab::vip(), 60).unwrap();
    let mut per_real: BTreeMap<String, usize> = BTreeMap::new();
    for r in &replies {
        let r = r.as_ref().expect("every connection answered");
        *per_real.entry(r.real.clone()).or_default() += 1;
    }
    let vip = format!("{VIP_ADDR}:{VIP_PORT}/tcp");
    let started = Instant::now();
    let (flows, ends) = loop {
        let lines: Vec<String> = syslog
            .lines()
            .into_iter()
            .filter(|l| l.contains(&vip))
            .collect();
        let (flows, ends): (Vec<String>, Vec<String>) =
            lines.into_iter().partition(|l| l.contains(" new cpu="));
        if (flows.len() >= 60 && ends.len() >= 60) || started.elapsed() > Duration::from_secs(5) {
            break (flows, ends);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        flows.len(),
        60,
        "one line per connection:\n{}",
        flows.join("\n")
    );
    // Each from the client, a port of its own, to the real that answered it.
    let ports: BTreeSet<&str> = flows
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(ports.len(), 60, "60 connections, 60 client ports");
    assert!(ports
        .iter()
        .all(|p| p.starts_with(&format!("{CLIENT_ADDR}:"))));
    let mut logged: BTreeMap<String, usize> = BTreeMap::new();
    for l in &flows {
        assert!(
            l.contains(" dsr maglev slot=") && l.contains(" new cpu="),
            "{l}"
        );
        let real = real_of(l);
        let addr: std::net::Ipv4Addr = real.split(':').next().unwrap().parse().unwrap();
        let index = lab.real_addrs().iter().position(|a| *a == addr).unwrap();
        *logged.entry(format!("r{}", index + 1)).or_default() += 1;
    }
    assert_eq!(
        logged, per_real,
        "the logged real of each flow is the one that answered"
    );
    // And each connection's end: the client's FIN, with how long it lived.
    let ended: BTreeSet<&str> = ends
        .iter()
        .map(|l| {
            assert!(
                l.contains(" dsr maglev ") && l.contains(" end fin after "),
                "{l}"
            );
            l.split_whitespace().next().unwrap()
        })
        .collect();
    assert_eq!(
        ended,
        ports,
        "one end line per connection:\n{}",
        ends.join("\n")
    );
    assert_eq!(
        ends.len(),
        60,
        "each connection ends once:\n{}",
        ends.join("\n")
    );
    // The datapath counted them sent, none dropped.
    let out = lab
        .lb
        .exec(
            &lbctl().display().to_string(),
            &["stats", "eth0", "--json", "--interval", "0.1"],
        )
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        json["flow_log"]["sent"].as_u64().unwrap() >= 120,
        "{}",
        json["flow_log"]
    );
    assert_eq!(json["flow_log"]["over_rate"], 0);
    assert_eq!(json["flow_log"]["ring_full"], 0);
    println!("{}", flows[0]);
    lab.stop_lb().unwrap();
}

#[test]
fn a_flow_log_file_that_cannot_be_opened_refuses_the_start() {
    require_root();
    let mut lab = Lab::one_segment(1).unwrap();
    let mut args = attach_args(&lab, "dsr");
    let missing = Path::new("/nonexistent-dir/flows.log");
    args.extend(["--flow-log".into(), format!("file:{}", missing.display())]);
    let err = lab.start_lb(&lbctl(), &args).unwrap_err().to_string();
    assert!(err.contains("opening the flow log"), "{err}");
    assert_eq!(lab.lb_xdp_prog_id().unwrap(), None, "nothing touched");
}

/// A real going down and up is a line in the same log target, with why, how many checks
/// said so, and what happens to its flows (HAProxy logs its servers' state changes so).
#[test]
fn state_changes_go_to_rsyslog_with_their_reason() {
    require_root();
    let mut lab = Lab::one_segment(3).unwrap();
    let syslog = Rsyslog::start(&lab);
    let mut args = vec![
        "--mode".to_string(),
        "dsr".into(),
        "--check".into(),
        "tcp,inter=200ms,timeout=200ms,rise=2,fall=2".into(),
        "--vip".into(),
        format!("{VIP_ADDR}:{VIP_PORT}/tcp"),
        "--flow-log".into(),
        "syslog:udp:127.0.0.1:514".into(),
    ];
    for r in lab.real_addrs() {
        args.extend(["--real".into(), r.to_string()]);
    }
    lab.start_lb(&lbctl(), &args).unwrap();
    // 30 connections held open (no request, no FIN): active flows, a third or so on each
    // real, as the flow table holds them.
    let vip = Lab::vip();
    let held = lab
        .client
        .run(move || {
            (0..30)
                .map(|_| std::net::TcpStream::connect_timeout(&vip, Duration::from_secs(2)))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .unwrap()
        .unwrap();
    let real_addr = format!("{}:{VIP_PORT}", lab.real_addrs()[1]);
    let stats = lab
        .lb
        .exec(
            &lbctl().display().to_string(),
            &["stats", "eth0", "--json", "--interval", "0.1"],
        )
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let active = json["vips"][0]["reals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["real"] == real_addr.as_str())
        .map(|r| r["active_flows"].as_u64().unwrap())
        .unwrap_or_else(|| panic!("{real_addr} in {json}"));
    assert!(active >= 1, "{json}");
    lab.stop_tcp_server(1, VIP_PORT).unwrap();
    let real = format!(
        "real {}:{VIP_PORT} of {VIP_ADDR}:{VIP_PORT}/tcp",
        lab.real_addrs()[1]
    );
    let wait_for = |what: &str| {
        let started = Instant::now();
        loop {
            if let Some(l) = syslog.lines().into_iter().find(|l| l.contains(what)) {
                return l;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no {what:?} line: {:?}",
                syslog.lines()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let down = wait_for(&format!("{real} is DOWN"));
    assert!(
        down.contains("2 of 2 checks failed")
            && down.contains(&format!("; {active} active flows move")),
        "{down} (the flow table held {active} of its flows)"
    );
    drop(held);
    lab.start_tcp_server(1, VIP_PORT).unwrap();
    let up = wait_for(&format!("{real} is UP"));
    assert!(up.contains("2 of 2 checks passed"), "{up}");
    println!("{down}\n{up}");
    lab.stop_lb().unwrap();
}

/// In nat, each connection's end comes with its duration: TCP at its FIN, UDP when it goes
/// idle past its timeout (found in the flow table, as it sends no FIN).
#[test]
fn flows_end_in_the_log_tcp_at_its_fin_and_udp_when_idle() {
    require_root();
    let mut lab = Lab::bridged(2).unwrap();
    let dir = std::env::temp_dir().join(format!("flowlog-ends-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("flows.log");
    let mut args = attach_args(&lab, "nat");
    args.extend([
        "--udp-timeout".into(),
        "1".into(),
        "--flow-log".into(),
        format!("file:{}", log.display()),
    ]);
    lab.start_lb(&lbctl(), &args).unwrap();
    let tcp = drive_tcp(&lab.client, Lab::vip(), 5).unwrap();
    assert!(tcp.iter().all(|r| r.is_ok()), "{tcp:?}");
    let udp_vip = std::net::SocketAddr::new(VIP_ADDR.into(), lb_lab::UDP_PORT);
    let udp = lb_lab::drive_udp(&lab.client, udp_vip, 5).unwrap();
    assert!(udp.iter().all(|r| r.is_ok()), "{udp:?}");
    let ends_of = |proto: &str, how: &str| -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            // Any end line of the protocol, named or not: a flow ending twice shows.
            .filter(|l| l.contains(&format!("/{proto} ")) && l.contains(" end "))
            .filter(|l| l.contains(how) || !l.contains(" nat maglev "))
            .map(str::to_owned)
            .collect()
    };
    // UDP: idle past 1 s, found by the next second's check.
    let started = Instant::now();
    while (ends_of("udp", " end idle after ").len() < 5
        || ends_of("tcp", " end fin after ").len() < 5)
        && started.elapsed() < Duration::from_secs(8)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    for (proto, how) in [("tcp", " end fin after "), ("udp", " end idle after ")] {
        let news: BTreeSet<String> = text
            .lines()
            .filter(|l| l.contains(&format!("/{proto} nat maglev ")) && l.contains(" new cpu="))
            .filter_map(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with(&format!("{CLIENT_ADDR}:")))
            })
            .map(str::to_owned)
            .collect();
        let ends: BTreeSet<String> = ends_of(proto, how)
            .iter()
            .filter_map(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with(&format!("{CLIENT_ADDR}:")))
            })
            .map(str::to_owned)
            .collect();
        assert_eq!(news.len(), 5, "{proto}: five flows\n{text}");
        assert_eq!(
            ends_of(proto, how).len(),
            5,
            "{proto}: one end each\n{text}"
        );
        assert_eq!(
            ends, news,
            "{proto}: each flow's end, after its start\n{text}"
        );
    }
    lab.stop_lb().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
