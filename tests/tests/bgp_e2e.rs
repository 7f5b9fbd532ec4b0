//! Active/active behind ECMP (docs/beyond-one-machine.md): two LBs announce the VIPs over
//! BGP (BIRD 2, lbctl deciding what through `--bgp-include` and `birdc configure`) to a
//! router (BIRD too) that installs one multipath route per VIP and spreads flows over the
//! LBs by their L4 hash. Both carry a share; when one's lbctl is SIGKILLed (BIRD living
//! on), its announcements end at once (their routes go via an interface that dies with
//! lbctl), its flows re-hash to the survivor and reach the same real (Maglev: the same
//! table on both), and the survivor's flows never notice. A VIP whose reals all fail is
//! withdrawn, and announced again after its checks' rise and the announcement's rise.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use lb_lab::{
    drive_tcp,
    ecmp::{EcmpLab, CHECKED_VIP},
    pair::{PAIR_DSR_VIP, PAIR_LB_ADDRS, PAIR_TUNNEL_VIP},
    Sessions, SESSION_PORT, VIP_PORT,
};
use tests::{lbctl, require_root};

const SESSIONS_PER_VIP: usize = 60;
const PATIENCE: Duration = Duration::from_secs(8);
/// The announcement's rise (`--bgp-rise`).
const RISE: Duration = Duration::from_secs(2);
/// lb2's HTTP listener, in its namespace.
const METRICS: &str = "127.0.0.1:9180";

/// lb2's `/metrics`.
fn metrics(lab: &EcmpLab) -> String {
    lab.lbs[1]
        .ns
        .run(|| {
            use std::io::{Read as _, Write as _};
            let mut s = std::net::TcpStream::connect(METRICS).unwrap();
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            text
        })
        .unwrap()
}

fn at(vip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(vip), port)
}

fn wait_for(
    what: &str,
    limit: Duration,
    lab: &EcmpLab,
    mut done: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}\n{}",
            lab.bird_logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Packets LB `i` forwarded to reals, as `lbctl stats --json` reads them from the maps of
/// the program attached to its eth0 (with or without its lbctl).
fn forwarded(lab: &EcmpLab, lbctl: &Path, i: usize) -> u64 {
    let out = lab.lbs[i]
        .ns
        .command(&lbctl.display().to_string())
        .args(["stats", "eth0", "--json", "--interval", "0.05"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    json["forwarded"]["packets"].as_u64().unwrap()
}

fn all_talk(sessions: &[&Sessions], lab: &EcmpLab, when: &str) {
    for s in sessions {
        s.keep_talking_within(3, PATIENCE * 2).unwrap();
        let broken: Vec<_> = s
            .states()
            .into_iter()
            .filter(|c| c.failure.is_some())
            .collect();
        assert!(
            broken.is_empty(),
            "{when}: {} sessions broke: {broken:?}\n{}",
            broken.len(),
            lab.bird_logs()
        );
    }
}

#[test]
fn two_lbs_behind_ecmp_share_the_flows_and_a_dead_lbctl_loses_none() {
    require_root();
    let lbctl = lbctl();
    let mut lab = EcmpLab::build().unwrap();
    lab.start_decap(&lbctl).unwrap();
    let config = lab.lbctl_config().unwrap();
    for i in 0..2 {
        let http: &[&str] = if i == 1 { &["--http", METRICS] } else { &[] };
        lab.start_lbctl(i, &lbctl, &config, "2s", http).unwrap();
        lab.start_bird_lb(i).unwrap();
    }
    lab.start_bird_router().unwrap();
    let both: Vec<Ipv4Addr> = PAIR_LB_ADDRS.to_vec();
    for vip in [PAIR_DSR_VIP, PAIR_TUNNEL_VIP, CHECKED_VIP] {
        let took = wait_for("both LBs announcing", Duration::from_secs(30), &lab, || {
            let mut hops = lab.router_next_hops(vip).unwrap();
            hops.sort();
            hops == both
        });
        println!("{vip}: a route via both LBs after {took:?}");
    }
    let status = lab.lbs[0].lbctl_log();
    assert!(status.contains("BGP announcements change"), "{status}");

    // ≥ 100 flows spread over the two LBs, each carrying at least 20 %.
    let open = |vip| {
        Sessions::open_patient(
            &lab.client,
            at(vip, SESSION_PORT),
            SESSIONS_PER_VIP,
            PATIENCE,
        )
        .unwrap()
    };
    let (dsr, tunnel) = (open(PAIR_DSR_VIP), open(PAIR_TUNNEL_VIP));
    let before = [forwarded(&lab, &lbctl, 0), forwarded(&lab, &lbctl, 1)];
    all_talk(&[&dsr, &tunnel], &lab, "both LBs");
    let after = [forwarded(&lab, &lbctl, 0), forwarded(&lab, &lbctl, 1)];
    let share: Vec<f64> = (0..2).map(|i| (after[i] - before[i]) as f64).collect();
    let total = share[0] + share[1];
    println!(
        "shares of {} packets: lb1 {:.0} %, lb2 {:.0} %",
        total,
        100.0 * share[0] / total,
        100.0 * share[1] / total
    );
    assert!(
        share.iter().all(|s| *s >= 0.2 * total),
        "each LB carries >= 20 %: {share:?}"
    );

    // lb1's lbctl SIGKILLed, BIRD living on: the router drops lb1's next hops.
    let killed = Instant::now();
    let log = lab.lbs[0].kill_lbctl().unwrap();
    for vip in [PAIR_DSR_VIP, PAIR_TUNNEL_VIP] {
        wait_for("lb1 withdrawn", Duration::from_secs(5), &lab, || {
            lab.router_next_hops(vip).unwrap() == [PAIR_LB_ADDRS[1]]
        });
    }
    let took = killed.elapsed();
    println!("lbctl on lb1 killed: its announcements gone from the router after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}\n{log}");
    // lb1's program still forwards what reaches it (lbctl attaches over netlink); take it
    // off, so a session still sent there would break: every one must now go through lb2.
    lab.lbs[0]
        .ns
        .ip(&["link", "set", "dev", "eth0", "xdp", "off"])
        .unwrap();
    let lb2_before = forwarded(&lab, &lbctl, 1);
    all_talk(&[&dsr, &tunnel], &lab, "after lb1's lbctl was killed");
    assert!(forwarded(&lab, &lbctl, 1) > lb2_before);
    let fresh = drive_tcp(&lab.client, at(PAIR_DSR_VIP, VIP_PORT), 20).unwrap();
    assert!(fresh.iter().all(Result::is_ok), "{fresh:?}");

    // A VIP whose reals all fail: withdrawn; back after the checks' rise and the
    // announcement's.
    lab.set_checked_servers(false).unwrap();
    let failed = Instant::now();
    wait_for(
        "the checked VIP withdrawn",
        Duration::from_secs(5),
        &lab,
        || lab.router_next_hops(CHECKED_VIP).unwrap().is_empty(),
    );
    let gone = failed.elapsed();
    println!(
        "{CHECKED_VIP}: reals failing, withdrawn after {gone:?} (checks: inter 200ms, fall 2)"
    );
    assert!(gone < Duration::from_secs(2), "{gone:?}");
    assert!(
        !lab.router_next_hops(PAIR_DSR_VIP).unwrap().is_empty(),
        "other VIPs stay"
    );
    let m = metrics(&lab);
    assert!(
        m.contains("lbctl_bgp_announced{address=\"198.18.100.12\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("lbctl_bgp_announced{address=\"198.18.100.10\"} 1"),
        "{m}"
    );
    assert!(m.contains("lbctl_stopping 0"), "{m}");
    lab.set_checked_servers(true).unwrap();
    let back = Instant::now();
    wait_for(
        "the checked VIP announced again",
        Duration::from_secs(10),
        &lab,
        || lab.router_next_hops(CHECKED_VIP).unwrap() == [PAIR_LB_ADDRS[1]],
    );
    let again = back.elapsed();
    println!("{CHECKED_VIP}: reals back, announced again after {again:?} (checks: rise 2; announcement rise {RISE:?})");
    assert!(again >= RISE, "announced before its rise: {again:?}");
    assert!(again < RISE + Duration::from_secs(3), "{again:?}");
    let fresh = drive_tcp(&lab.client, at(CHECKED_VIP, VIP_PORT), 10).unwrap();
    assert!(fresh.iter().all(Result::is_ok), "{fresh:?}");

    // Draining every real of a VIP withdraws its address (nothing takes new flows there).
    let lbctl_on_lb2 = |args: &[&str]| {
        let out = std::process::Command::new(&lbctl)
            .args(args)
            .arg("--socket")
            .arg(lab.lbs[1].socket())
            .output()
            .unwrap();
        assert!(out.status.success(), "lbctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let checked = format!("{CHECKED_VIP}:{VIP_PORT}/tcp");
    for r in lb_lab::REAL_ADDRS {
        lbctl_on_lb2(&["real", "drain", &r.to_string(), "--vip", &checked]);
    }
    let drained = Instant::now();
    wait_for(
        "the drained VIP withdrawn",
        Duration::from_secs(5),
        &lab,
        || lab.router_next_hops(CHECKED_VIP).unwrap().is_empty(),
    );
    println!(
        "{CHECKED_VIP}: every real drained, withdrawn after {:?}",
        drained.elapsed()
    );

    // A graceful stop withdraws everything at once, then detaches when nothing arrives
    // (the sessions end first: with no route left they would only wait out their timeouts).
    drop((dsr, tunnel));
    let asked = Instant::now();
    let said = lbctl_on_lb2(&["stop", "--grace", "10s", "--no-wait"]);
    assert!(said.contains("stopping"), "{said}");
    wait_for(
        "lb2's announcements withdrawn on stop",
        Duration::from_secs(5),
        &lab,
        || {
            lab.router_next_hops(PAIR_DSR_VIP).unwrap().is_empty()
                && lab.router_next_hops(PAIR_TUNNEL_VIP).unwrap().is_empty()
        },
    );
    println!(
        "lbctl stop on lb2: its announcements gone from the router after {:?}",
        asked.elapsed()
    );
}
