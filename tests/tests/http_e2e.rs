//! The HTTP listener of `lbctl attach --http`: `/metrics` read back by an independent
//! Prometheus text parser (per-real packets add up to what the client sent), the stats page,
//! `/healthz`; a scrape answers within 100 ms while the daemon waits for a real's ARP; a
//! non-loopback address is refused without `--http-public`.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use lb_lab::{Lab, VIP_ADDR, VIP_PORT};
use lb_userspace::demo::observe;
use prometheus_parse::{Scrape, Value};
use tests::{attach_args, lbctl, require_root};

const HTTP: &str = "127.0.0.1:9180";

/// GET `path` from the LB's listener, inside its namespace: status, body, time taken.
fn get(lab: &Lab, path: &str) -> (u16, String, Duration) {
    let path = path.to_string();
    lab.lb
        .run(move || {
            let started = Instant::now();
            let mut s = TcpStream::connect(HTTP).expect("connecting to the listener");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).unwrap();
            let took = started.elapsed();
            let text = String::from_utf8_lossy(&raw).into_owned();
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            (status, body.to_string(), took)
        })
        .unwrap()
}

/// /metrics, parsed: every sample's value by metric name and labels.
fn metrics(lab: &Lab) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let (status, body, _) = get(lab, "/metrics");
    assert_eq!(status, 200, "{body}");
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    scrape
        .samples
        .into_iter()
        .filter_map(|s| {
            let v = match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => return None,
            };
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Some((s.metric, labels, v))
        })
        .collect()
}

fn sum(
    samples: &[(String, BTreeMap<String, String>, f64)],
    name: &str,
    want: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// Packets the client's interface sent, as the kernel counts them.
fn client_sent(lab: &Lab) -> u64 {
    let out = lab
        .client
        .ip(&["-j", "-s", "link", "show", "dev", "eth0"])
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    json[0]["stats64"]["tx"]["packets"].as_u64().unwrap()
}

#[test]
fn metrics_page_and_healthz_show_the_reals_and_a_scrape_never_waits_for_the_daemon() {
    require_root();
    let mut lab = Lab::one_segment(3).unwrap();
    let mut args = attach_args(&lab, "dsr");
    args.extend(["--http".into(), HTTP.into()]);
    lab.start_lb(&lbctl(), &args).unwrap();

    let (status, body, _) = get(&lab, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(get(&lab, "/nothing-here").0, 404);

    // Per real: what the reals were sent adds up to what the client sent (its ARP aside).
    let before = metrics(&lab);
    let sent_before = client_sent(&lab);
    let facts = observe(&lab, 300).unwrap();
    assert_eq!(facts.answered, 300);
    let sent = client_sent(&lab) - sent_before;
    let after = metrics(&lab);
    let vip = format!("{VIP_ADDR}:{VIP_PORT}/tcp");
    let reals: Vec<String> = lab
        .real_addrs()
        .iter()
        .map(|a| format!("{a}:{VIP_PORT}"))
        .collect();
    let mut total = 0.0;
    for (i, real) in reals.iter().enumerate() {
        let labels = [
            ("vip", vip.as_str()),
            ("real", real.as_str()),
            ("direction", "request"),
        ];
        let got = sum(&after, "lbctl_real_packets_total", &labels)
            - sum(&before, "lbctl_real_packets_total", &labels);
        let served = facts.per_real[&format!("r{}", i + 1)] as f64;
        assert!(
            got >= 4.0 * served,
            "{real}: {got} packets for {served} connections"
        );
        let up = sum(&after, "lbctl_real_up", &[("vip", &vip), ("real", real)]);
        assert_eq!(up, 1.0, "{real}");
        total += got;
    }
    let diff = (total - sent as f64).abs() / sent as f64;
    assert!(
        diff <= 0.01,
        "the reals were sent {total} packets, the client sent {sent} ({:.2} % apart)",
        diff * 100.0
    );
    // The flow table is counted every few seconds, never by a scrape.
    let counted = Instant::now();
    while sum(&metrics(&lab), "lbctl_flow_table_entries", &[]) == 0.0 {
        assert!(
            counted.elapsed() < lb_userspace::http::FLOW_COUNT_EVERY * 2,
            "the flow table's count never came"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        sum(
            &after,
            "lbctl_packets_not_forwarded_total",
            &[("reason", "pass_not_vip")]
        ) >= 0.0
    );
    assert!(
        after.iter().any(|(n, _, _)| n == "lbctl_real_bytes_total"),
        "bytes per real"
    );

    // The page: every VIP and real, with numbers.
    let (status, page, _) = get(&lab, "/");
    assert_eq!(status, 200);
    assert!(page.contains(&vip), "{page}");
    for real in &reals {
        assert!(page.contains(real.as_str()), "{real} on the page");
    }

    // A real that never answers ARP: the daemon waits for it (the admin call hangs for the
    // resolve timeout) while scrapes go on answering.
    let mut add = lab.lb.command(&lbctl().display().to_string());
    add.args(["real", "add", "198.18.0.99", "--vip", &vip])
        .env("LBCTL_SOCKET", lab.lb_socket());
    let adder = std::thread::spawn(move || (add.output().unwrap(), Instant::now()));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut scrapes = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let (status, _, took) = get(&lab, "/metrics");
        assert_eq!(status, 200);
        slowest = slowest.max(took);
        scrapes += 1;
    }
    let scraped_until = Instant::now();
    let (added, added_at) = adder.join().unwrap();
    assert!(
        added_at > scraped_until,
        "the daemon was still waiting for ARP while we scraped"
    );
    assert!(
        slowest < Duration::from_millis(100),
        "a scrape took {slowest:?} while the daemon waited for ARP ({scrapes} scrapes)"
    );
    println!(
        "{scrapes} scrapes while the daemon waited for ARP, the slowest {:.1} ms; real add: {}",
        slowest.as_secs_f64() * 1000.0,
        String::from_utf8_lossy(&added.stdout).trim()
    );
    lab.stop_lb().unwrap();
}

#[test]
fn a_listener_other_hosts_reach_needs_http_public() {
    require_root();
    let lab = Lab::one_segment(1).unwrap();
    let mut args = vec!["attach".to_string(), "eth0".into()];
    args.extend(attach_args(&lab, "dsr"));
    args.extend(["--http".into(), "198.18.0.1:9180".into()]);
    let out = lab
        .lb
        .command(&lbctl().display().to_string())
        .args(&args)
        .env("LBCTL_SOCKET", lab.lb_socket())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--http-public"), "{err}");
    assert_eq!(
        lab.lb_xdp_prog_id().unwrap(),
        None,
        "refused before anything was touched"
    );
}

/// Runs Debian's chromium, headless, in the LB's namespace on the stats page: its DOM once
/// loaded, or (with `screenshot`) a PNG of it. Bounded: killed after a minute.
fn browse(lab: &Lab, screenshot: Option<&std::path::Path>) -> String {
    let profile = std::env::temp_dir().join(format!("{}-chromium", lab.lb.name()));
    let mut c = lab.lb.command("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1500,700",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    match screenshot {
        Some(path) => c.arg(format!("--screenshot={}", path.display())),
        None => c.arg("--dump-dom"),
    };
    c.arg(format!("http://{HTTP}/"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = c
        .spawn()
        .expect("starting chromium (cargo xtask test installs it)");
    let started = Instant::now();
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("chromium did not finish in a minute");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Ok(Ok(s)) = reader.join() {
        out = s;
    }
    let _ = std::fs::remove_dir_all(&profile);
    out
}

/// The packets cell of the VIP's row on the page.
fn vip_packets(dom: &str, vip: &str) -> u64 {
    let row = dom
        .split("<tr class=\"vip\">")
        .find(|r| r.contains(vip))
        .unwrap_or_else(|| panic!("no row of {vip} in {dom}"));
    let row = row.split("</tr>").next().unwrap();
    let cells: Vec<&str> = row
        .split("<td>")
        .skip(1)
        .map(|c| c.split("</td>").next().unwrap_or(""))
        .collect();
    // ..., active flows, packets, bytes.
    cells[cells.len() - 2]
        .parse()
        .unwrap_or_else(|_| panic!("cells {cells:?}"))
}

#[test]
fn the_stats_page_in_a_browser_shows_every_vip_and_real_with_live_numbers() {
    require_root();
    let mut lab = Lab::one_segment(3).unwrap();
    let mut args = attach_args(&lab, "dsr");
    args.extend(["--http".into(), HTTP.into()]);
    lab.start_lb(&lbctl(), &args).unwrap();
    let vip = format!("{VIP_ADDR}:{VIP_PORT}/tcp");
    let facts = observe(&lab, 50).unwrap();
    assert_eq!(facts.answered, 50);
    let first = browse(&lab, None);
    for real in lab.real_addrs() {
        assert!(
            first.contains(&format!("{real}:{VIP_PORT}")),
            "{real} on the page:\n{first}"
        );
    }
    let before = vip_packets(&first, &vip);
    assert!(before > 0, "{first}");
    let facts = observe(&lab, 50).unwrap();
    assert_eq!(facts.answered, 50);
    let second = browse(&lab, None);
    let after = vip_packets(&second, &vip);
    assert!(
        after >= before + 4 * 50,
        "the page's numbers follow the traffic: {before} then {after}"
    );
    // Kept for people to look at: the page as a browser draws it.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("stats-page.png");
    let _ = std::fs::remove_file(&png);
    browse(&lab, Some(&png));
    let image = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(
        image.starts_with(b"\x89PNG") && image.len() > 10_000,
        "{} bytes",
        image.len()
    );
    println!("screenshot: {}", png.display());
    lab.stop_lb().unwrap();
}

/// A real whose server stops is down in /metrics within one check interval of its check
/// failing (fall=1: the first failed check takes it down).
#[test]
fn a_real_state_change_shows_in_metrics_within_one_check_interval() {
    require_root();
    let mut lab = Lab::one_segment(3).unwrap();
    let mut args = vec![
        "--mode".to_string(),
        "dsr".into(),
        "--check".into(),
        "tcp,inter=200ms,timeout=200ms,rise=1,fall=1".into(),
        "--vip".into(),
        format!("{VIP_ADDR}:{VIP_PORT}/tcp"),
        "--http".into(),
        HTTP.into(),
    ];
    for r in lab.real_addrs() {
        args.extend(["--real".into(), r.to_string()]);
    }
    lab.start_lb(&lbctl(), &args).unwrap();
    let vip = format!("{VIP_ADDR}:{VIP_PORT}/tcp");
    let real = format!("{}:{VIP_PORT}", lab.real_addrs()[1]);
    let up = |lab: &Lab| {
        sum(
            &metrics(lab),
            "lbctl_real_up",
            &[("vip", &vip), ("real", &real)],
        )
    };
    assert_eq!(up(&lab), 1.0);
    lab.stop_tcp_server(1, VIP_PORT).unwrap();
    let stopped = Instant::now();
    while up(&lab) != 0.0 {
        assert!(
            stopped.elapsed() < Duration::from_secs(3),
            "still up in /metrics"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = stopped.elapsed();
    // The next check (at most one interval away) fails at once (refused), and a scrape
    // shows it: one interval, plus a scrape's and a publish's time (a scrape takes up to
    // tens of ms on a busy machine: room for a few).
    assert!(
        took < Duration::from_millis(200 + 250),
        "down in /metrics after {took:?}"
    );
    println!(
        "down in /metrics {:.0} ms after its server stopped (inter 200 ms, fall 1)",
        took.as_secs_f64() * 1e3
    );
    lab.stop_lb().unwrap();
}
