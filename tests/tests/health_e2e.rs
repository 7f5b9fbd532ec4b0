//! Health checks end to end: a real's server stops, its checks fail `fall` times and it
//! leaves the VIP, with no new connection failing after; it starts again and is back after
//! `rise` checks. With `--pass-when-empty`, a VIP with no real up is answered by the LB.

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use lb_lab::{drive_tcp, Lab, Server, VIP_ADDR, VIP_PORT};
use tests::{lbctl, require_root};

fn vip() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(VIP_ADDR), VIP_PORT)
}

/// Waits until the balancer's log says `what` `times` times.
fn wait_for_log(lab: &Lab, what: &str, times: usize) -> Duration {
    let start = Instant::now();
    while lab.lb_log().matches(what).count() < times {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {what:?} in the log within 10 s:\n{}",
            lab.lb_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn args(lab: &Lab, extra: &[&str]) -> Vec<String> {
    args_with(
        lab,
        "dsr",
        "tcp,inter=200ms,timeout=200ms,rise=2,fall=2",
        extra,
    )
}

fn args_with(lab: &Lab, mode: &str, check: &str, extra: &[&str]) -> Vec<String> {
    serving(lab, mode, &["198.18.100.10:80/tcp"], check, extra)
}

/// `lbctl attach` arguments serving `vips` in `mode` over all the lab's reals, checked.
fn serving(lab: &Lab, mode: &str, vips: &[&str], check: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["--mode".into(), mode.into(), "--check".into(), check.into()];
    for v in vips {
        a.extend(["--vip".into(), v.to_string()]);
    }
    for r in lab.real_addrs() {
        a.extend(["--real".into(), r.to_string()]);
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn a_real_whose_server_stops_leaves_after_fall_checks_and_returns_after_rise() {
    require_root();
    let mut lab = Lab::one_segment(3).unwrap();
    let lb_args = args(&lab, &[]);
    lab.start_lb(&lbctl(), &lb_args).unwrap();
    let all = drive_tcp(&lab.client, vip(), 60).unwrap();
    assert!(all.iter().any(|r| r.as_ref().is_ok_and(|r| r.real == "r2")));

    lab.stop_tcp_server(1, VIP_PORT).unwrap();
    // Someone watching `lbctl status` meanwhile does not hold the checks back.
    let watching = std::thread::scope(|s| {
        let polls = s.spawn(|| {
            let mut n = 0;
            while !lab.lb_log().contains("real is down") && n < 200 {
                lab.lbctl(&lbctl(), &["status"]).unwrap();
                std::thread::sleep(Duration::from_millis(50));
                n += 1;
            }
            n
        });
        let took = wait_for_log(&lab, "real is down", 1);
        (took, polls.join().unwrap())
    });
    let (took, polls) = watching;
    assert!(polls > 3, "status was asked {polls} times meanwhile");
    eprintln!(
        "the stopped server's real was out {took:?} after its server stopped (inter 200ms, fall 2)"
    );
    assert!(lab.lb_log().contains("198.18.0.12"), "{}", lab.lb_log());
    // fall = 2 checks 200 ms apart: it went within about half a second, not instantly.
    assert!(took < Duration::from_secs(3), "down after {took:?}");
    let after = drive_tcp(&lab.client, vip(), 60).unwrap();
    let failed: Vec<&String> = after.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "no new connection fails once it is down: {failed:?}"
    );
    assert!(after
        .iter()
        .all(|r| r.as_ref().is_ok_and(|r| r.real != "r2")));

    lab.start_tcp_server(1, VIP_PORT).unwrap();
    let back_in = wait_for_log(&lab, "real is up", 1);
    eprintln!("back in {back_in:?} after its server started again (rise 2)");
    let back = drive_tcp(&lab.client, vip(), 60).unwrap();
    assert!(
        back.iter()
            .any(|r| r.as_ref().is_ok_and(|r| r.real == "r2")),
        "r2 takes connections again"
    );
    assert!(back.iter().all(Result::is_ok));
    lab.stop_lb().unwrap();
}

#[test]
fn a_vip_with_no_real_up_can_pass_to_the_lb_which_refuses_at_once() {
    require_root();
    let mut lab = Lab::one_segment(1).unwrap();
    let lb_args = args(&lab, &["--pass-when-empty"]);
    lab.start_lb(&lbctl(), &lb_args).unwrap();
    lab.stop_tcp_server(0, VIP_PORT).unwrap();
    wait_for_log(&lab, "real is down", 1);
    // The LB holds the VIP itself and has nothing listening: its kernel answers RST.
    let kind = lab
        .client
        .run(|| {
            TcpStream::connect_timeout(&vip(), Duration::from_secs(2))
                .map(drop)
                .unwrap_err()
                .kind()
        })
        .unwrap();
    assert_eq!(kind, ErrorKind::ConnectionRefused, "refused, not timed out");
    let stats = lb_userspace::stats::of_lab_host(&lab.lb).unwrap();
    assert!(stats.counters.reason(lb_common::Reason::NoRealPass).packets >= 1);
    lab.stop_lb().unwrap();
}

/// A real that lost the VIP (a reboot without its lo address, a bad deploy) still answers
/// at its own address; only a check through the VIP, as clients reach it, sees it cannot
/// serve them.
#[test]
fn a_check_through_the_vip_takes_out_a_real_that_does_not_hold_the_vip() {
    require_root();
    let mut lab = Lab::one_segment(3).unwrap();
    lab.reals[1]
        .ip(&["addr", "del", "198.18.100.10/32", "dev", "lo"])
        .unwrap();
    let check = "tcp,inter=200ms,timeout=200ms,rise=2,fall=2,via=vip";
    let lb_args = args_with(&lab, "dsr", check, &[]);
    lab.start_lb(&lbctl(), &lb_args).unwrap();
    wait_for_log(&lab, "real is down", 1);
    let log = lab.lb_log();
    let down: Vec<&str> = log.lines().filter(|l| l.contains("real is down")).collect();
    assert!(down.len() == 1 && down[0].contains("198.18.0.12"), "{log}");
    let list = lab.lbctl(&lbctl(), &["real", "list"]).unwrap();
    assert!(list.contains("no answer through the VIP"), "{list}");
    let all = drive_tcp(&lab.client, vip(), 60).unwrap();
    let failed: Vec<&String> = all.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{failed:?}");

    // The VIP back on its lo: back in after rise checks.
    lab.reals[1]
        .ip(&["addr", "add", "198.18.100.10/32", "dev", "lo"])
        .unwrap();
    wait_for_log(&lab, "real is up", 1);
    let back = drive_tcp(&lab.client, vip(), 60).unwrap();
    assert!(back
        .iter()
        .any(|r| r.as_ref().is_ok_and(|r| r.real == "r2")));
    lab.stop_lb().unwrap();
}

/// Through the tunnel as well: every real, decapsulating, passes.
#[test]
fn a_check_through_the_vip_goes_through_the_tunnel() {
    require_root();
    let mut lab = Lab::one_segment(2).unwrap();
    lab.start_decap(&lbctl()).unwrap();
    let check = "tcp,inter=200ms,timeout=200ms,rise=1,fall=1,via=vip";
    let lb_args = args_with(&lab, "tunnel", check, &[]);
    lab.start_lb(&lbctl(), &lb_args).unwrap();
    // Several rounds of checks, none failing.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!lab.lb_log().contains("real is down"), "{}", lab.lb_log());
    // The decap program counted the checks it unwrapped.
    assert!(
        lb_userspace::stats::of_lab_host(&lab.reals[0])
            .unwrap()
            .counters
            .forwarded
            .packets
            >= 3
    );
    lab.stop_lb().unwrap();
}

/// HTTP and UDP checks on real servers: an HTTP answer with the expected status passes,
/// another status fails and says so; a UDP reply passes, a closed port fails.
#[test]
fn http_and_udp_checks_judge_real_answers() {
    use std::io::{Read as _, Write as _};
    require_root();
    let mut lab = Lab::one_segment(2).unwrap();
    // r1 answers /health with 200, r2 with 503.
    let mut health = Vec::new();
    for (i, status) in [(0, "200 OK"), (1, "503 Service Unavailable")] {
        let at = SocketAddr::new(IpAddr::V4(lab.real_addrs()[i]), 8081);
        let server = Server::listen(&lab.reals[i], at, move |mut stream, _, _| {
            let mut request = [0u8; 512];
            let n = stream.read(&mut request).unwrap_or(0);
            let asked = String::from_utf8_lossy(&request[..n]).into_owned();
            let answer = if asked.starts_with("GET /health ") {
                format!("HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n")
            } else {
                "HTTP/1.0 404 Not Found\r\n\r\n".to_owned()
            };
            // A check that gave up already is no failure of the server's.
            let _ = stream.write_all(answer.as_bytes());
        })
        .unwrap();
        health.push(server);
    }
    let check = "http,path=/health,status=200,port=8081,inter=200ms,timeout=200ms,rise=1,fall=1";
    lab.start_lb(&lbctl(), &args_with(&lab, "dsr", check, &[]))
        .unwrap();
    wait_for_log(&lab, "real is down", 1);
    let list = lab.lbctl(&lbctl(), &["real", "list"]).unwrap();
    let r2 = list.lines().find(|l| l.contains("198.18.0.12")).unwrap();
    assert!(r2.contains("HTTP status 503, not 200"), "{list}");
    let r1 = list.lines().find(|l| l.contains("198.18.0.11")).unwrap();
    assert!(r1.contains(" up ") && r1.contains(" yes "), "{list}");
    lab.stop_lb().unwrap();

    // UDP: the lab's servers answer on port 53; nothing listens on 5353.
    let vips = ["198.18.100.10:53/udp", "198.18.100.10:5353/udp"];
    let check = "udp,payload=ping,inter=200ms,timeout=200ms,rise=1,fall=1";
    lab.start_lb(&lbctl(), &serving(&lab, "dsr", &vips, check, &[]))
        .unwrap();
    wait_for_log(&lab, "real is down", 2);
    let list = lab.lbctl(&lbctl(), &["real", "list"]).unwrap();
    let down: Vec<&str> = list.lines().filter(|l| l.contains(" down ")).collect();
    assert_eq!(down.len(), 2, "both reals of the closed port:\n{list}");
    assert!(down.iter().all(|l| l.contains(":5353/udp")), "{list}");
    let up53 = list
        .lines()
        .filter(|l| l.contains(":53/udp") && l.contains(" up "))
        .count();
    assert_eq!(up53, 2, "{list}");
    lab.stop_lb().unwrap();
}
