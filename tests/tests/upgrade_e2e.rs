//! Upgrades keep every flow: for each older layout of the pinned state, the last release
//! that pinned it (built from git by `cargo xtask test`, see xtask/src/previous.rs) carries
//! live dsr, nat and one-arm connections, stops with `--keep-on-exit`, and this lbctl takes
//! its state over, migrating it, while new connections keep opening at over 50 a second.
//! Nothing breaks: no established connection, no new one, no one-arm SNAT port changes, no
//! reply finds its flow missing (`pass_no_flow`), and the counters are carried over.
//!
//! Every later layout change adds its release to xtask/src/previous.rs, and with it a row
//! here: the test runs once per layout from `layout::OLDEST` up to the current one.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData, PerCpuArray};
use lb_common::{Counter, Reason};
use lb_lab::{request_tcp, Lab, Sessions, SESSION_PORT, SNAT_ADDR, VIP_PORT};
use lb_userspace::datapath::layout::{self, CURRENT};
use tests::{lbctl, require_root};

/// The VIPs' last bytes and modes, as in the five-mode lab (lbctl.example.toml).
const MODES: [(u8, &str); 3] = [(10, "dsr"), (12, "nat"), (14, "one-arm")];

fn vip(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 100, last)), port)
}

/// dsr, nat and one-arm, each on port 80 (new connections) and the session port.
fn config(lab: &Lab) -> PathBuf {
    let mut text = String::new();
    for (last, mode) in MODES {
        let reals = match mode {
            "nat" => r#"["198.18.1.11", "198.18.1.12", "198.18.1.13"]"#,
            _ => r#"["198.18.0.11", "198.18.0.12", "198.18.0.13"]"#,
        };
        for port in [VIP_PORT, SESSION_PORT] {
            text += &format!(
                "[[vip]]\naddress = \"{}/tcp\"\nmode = \"{mode}\"\nreals = {reals}\n",
                vip(last, port)
            );
            if mode == "one-arm" {
                text += &format!("snat_pool = [\"{SNAT_ADDR}\"]\n");
            }
            text += "\n";
        }
    }
    let path = std::env::temp_dir().join(format!("{}-upgrade.toml", lab.lb.name()));
    std::fs::write(&path, text).unwrap();
    path
}

/// The lbctl of the release that pinned `layout`, as `cargo xtask test` built it.
fn release(layout: u32) -> PathBuf {
    let name = format!("LBCTL_LAYOUT_{layout}");
    let path = std::env::var_os(&name).unwrap_or_else(|| {
        panic!("{name} is not set: run this test through `cargo xtask test`, which builds the lbctl that pinned layout {layout} (xtask/src/previous.rs lists one release per older layout; add it there when a layout is added)")
    });
    let path = PathBuf::from(path);
    assert!(path.exists(), "{name}={} does not exist", path.display());
    path
}

/// New connections, one at a time to each VIP in turn, paced to `per_second`, until
/// stopped (or 60 s, or 6000 connections: bounded in time and count). Runs on a thread in
/// the client's namespace.
#[derive(Default)]
struct Load {
    /// When each connection was answered, or why it was not.
    done: Mutex<Vec<(Instant, Result<(), String>)>>,
    stop: AtomicBool,
}

impl Load {
    fn run(&self, per_second: u32) {
        let started = Instant::now();
        let gap = Duration::from_secs(1) / per_second;
        for n in 0..6000u32 {
            if self.stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
                return;
            }
            let (last, _) = MODES[n as usize % MODES.len()];
            let result = request_tcp(vip(last, VIP_PORT), n as usize)
                .map(drop)
                .map_err(|e| format!("{e:#}"));
            self.done.lock().unwrap().push((Instant::now(), result));
            let due = started + gap * (n + 1);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
}

/// The pinned COUNTERS, opened: the handle stays on this map after its pin is gone.
fn counters(pin_dir: &Path) -> PerCpuArray<MapData, Counter> {
    let data = MapData::from_pin(pin_dir.join("COUNTERS")).unwrap();
    PerCpuArray::try_from(Map::PerCpuArray(data)).unwrap()
}

/// Packets forwarded (client → real), summed over CPUs: slot 0 in every layout.
fn forwarded(counters: &PerCpuArray<MapData, Counter>) -> u64 {
    counters.get(&0, 0).unwrap().iter().map(|c| c.packets).sum()
}

fn pinned_layout(pin_dir: &Path) -> Option<u32> {
    let path = pin_dir.join("LAYOUT");
    if !path.exists() {
        return None;
    }
    let data = MapData::from_pin(path).unwrap();
    let map: Array<MapData, u32> = Array::try_from(Map::Array(data)).unwrap();
    Some(map.get(&0, 0).unwrap())
}

fn upgrade_from(layout: u32) {
    let old = release(layout);
    let mut lab = Lab::five_modes().unwrap();
    let config = config(&lab);
    let args: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "--keep-on-exit".into(),
    ];
    lab.start_lb(&old, &args).unwrap();
    let pin_dir = lab.lb_pin_dir();
    let old_prog = lab.lb_xdp_prog_id().unwrap().unwrap();
    if layout == 1 {
        assert_eq!(pinned_layout(&pin_dir), None, "layout 1 has no LAYOUT map");
    } else {
        assert_eq!(pinned_layout(&pin_dir), Some(layout));
    }

    // Long-lived connections through each mode, and how each real sees its client.
    let sessions: Vec<(&str, Sessions)> = MODES
        .iter()
        .map(|(last, mode)| {
            (
                *mode,
                Sessions::open(&lab.client, vip(*last, SESSION_PORT), 16).unwrap(),
            )
        })
        .collect();
    for (mode, s) in &sessions {
        s.keep_talking(2).unwrap();
        for state in s.states() {
            let seen = state.seen_as.expect("the real says whom it sees");
            let want = if *mode == "one-arm" {
                SNAT_ADDR
            } else {
                lb_lab::CLIENT_ADDR
            };
            assert_eq!(seen.ip(), IpAddr::V4(want), "{mode}: {state:?}");
        }
    }

    let load = Arc::new(Load::default());
    let generator = {
        let load = load.clone();
        lab.client.spawn(move || load.run(100)).unwrap()
    };
    std::thread::sleep(Duration::from_secs(2));
    let old_counters = counters(&pin_dir);
    let at_stop = forwarded(&old_counters);
    // The old lbctl stops; its program goes on forwarding on the pinned maps.
    let stopped = Instant::now();
    let log = lab.stop_lb().unwrap();
    assert!(log.contains("keeps forwarding"), "{log}");
    std::thread::sleep(Duration::from_millis(500));
    // This lbctl takes the state over, migrating it, while connections keep opening.
    let started = lab.start_lb(&lbctl(), &args);
    let attached = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    load.stop.store(true, Ordering::Relaxed);
    generator.join().unwrap();
    started.unwrap();

    let log = lab.lb_log();
    let new_prog = lab.lb_xdp_prog_id().unwrap().unwrap();
    assert_ne!(new_prog, old_prog, "this lbctl's program was swapped in");
    if layout < CURRENT {
        assert!(
            log.contains(&format!("from layout {layout} to {CURRENT}")),
            "the migration is logged:\n{log}"
        );
    }
    assert_eq!(pinned_layout(&pin_dir), Some(CURRENT));
    let mut pinned: Vec<String> = std::fs::read_dir(&pin_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    pinned.sort();
    // The running program's full path is pinned besides the maps, under its own name; the
    // earlier programs' are gone.
    let full_paths: Vec<String> = pinned
        .iter()
        .filter(|n| n.starts_with("FULL_PATH_"))
        .cloned()
        .collect();
    assert_eq!(full_paths.len(), 1, "one full path pinned: {pinned:?}");
    pinned.retain(|n| !n.starts_with("FULL_PATH_"));
    let mut kept: Vec<&str> = lb_common::map_names::KEPT.to_vec();
    kept.sort_unstable();
    assert_eq!(
        pinned, kept,
        "the pins are this layout's maps, nothing else"
    );

    // New connections: over 50 a second the whole time, none lost, some of them opened
    // while no lbctl ran and while this one took over.
    let done = std::mem::take(&mut *load.done.lock().unwrap());
    let failed: Vec<&String> = done.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} new connections failed: {failed:?}\n{log}",
        failed.len(),
        done.len()
    );
    let first = done.first().unwrap().0;
    let span = done.last().unwrap().0 - first;
    let rate = done.len() as f64 / span.as_secs_f64();
    assert!(rate >= 50.0, "{rate:.0} new connections a second");
    let during = done
        .iter()
        .filter(|(t, _)| *t >= stopped && *t <= attached)
        .count();
    assert!(
        during >= 20,
        "only {during} connections during the takeover"
    );

    // Established connections: all still talk, to the same real, seen from the same
    // address and port (one-arm: the same SNAT port).
    all_talk(&sessions, "after the upgrade", &log);

    // No reply met a missing flow; the counters were carried over.
    let stats = lb_userspace::stats::of_lab_host(&lab.lb).unwrap();
    assert_eq!(
        stats.counters.reason(Reason::NoFlow).packets,
        0,
        "pass_no_flow"
    );
    // Every VIP's reals counted what they forwarded since the takeover (the sessions
    // talked through each).
    assert_eq!(stats.vips.len(), 2 * MODES.len(), "{stats:?}");
    for row in &stats.vips {
        assert!(row.traffic.requests.packets > 0, "{}: {row:?}", row.vip);
    }
    // All the old program counted, to its last packet, is in the new counters, and more:
    // the old COUNTERS' final count (the very map the new program counts in, when the
    // migration keeps it in place) is in them, and they grew since the old lbctl stopped.
    let carried = forwarded(&old_counters);
    let now = forwarded(&counters(&pin_dir));
    assert!(
        at_stop > 0 && carried >= at_stop && now >= carried && now > at_stop,
        "forwarded: {at_stop} when the old lbctl stopped, {carried} counted by the old program in all, {now} now"
    );
    println!(
        "layout {layout} -> {CURRENT}: {} new connections at {rate:.0}/s ({during} during the takeover, {:.2} s), {} sessions kept",
        done.len(),
        (attached - stopped).as_secs_f64(),
        sessions.iter().map(|(_, s)| s.states().len()).sum::<usize>()
    );

    // Rolling back: the older lbctl refuses the newer state as it is (its flows untouched);
    // `lbctl downgrade` takes the state back to its layout, and it takes the flows over.
    lab.stop_lb().unwrap();
    let refused = lab.start_lb(&old, &args).unwrap_err().to_string();
    // Layout 1's lbctl knew no layouts (it found maps of another shape); later ones name
    // the newer layout.
    let why = if layout == 1 {
        "another layout"
    } else {
        "pinned by a newer lbctl"
    };
    assert!(refused.contains(why), "{refused}");
    assert_eq!(
        lab.lb_xdp_prog_id().unwrap(),
        Some(new_prog),
        "refused: left as it was"
    );
    all_talk(&sessions, "after the refused rollback", &lab.lb_log());
    let said = run_lbctl(
        &lab,
        &lbctl(),
        &[
            "downgrade",
            "eth0",
            "--to",
            &layout.to_string(),
            "--pin-dir",
            &pin_dir.display().to_string(),
        ],
    );
    assert!(said.contains(&format!("is layout {layout} now")), "{said}");
    lab.start_lb(&old, &args).unwrap();
    let rolled_back = lab.lb_xdp_prog_id().unwrap();
    assert!(
        matches!(rolled_back, Some(id) if id != new_prog),
        "the older program took over: {rolled_back:?}"
    );
    all_talk(&sessions, "after the rollback", &lab.lb_log());
    let fresh = lb_lab::drive_tcp(&lab.client, vip(MODES[2].0, VIP_PORT), 10).unwrap();
    assert!(
        fresh.iter().all(Result::is_ok),
        "after the rollback: {fresh:?}"
    );

    drop(sessions);
    lab.stop_lb().unwrap();
    run_lbctl(
        &lab,
        &lbctl(),
        &[
            "detach",
            "eth0",
            "--pin-dir",
            &pin_dir.display().to_string(),
        ],
    );
    std::fs::remove_file(config).unwrap();
}

/// Every session of every mode answers three more times, from the same real, which sees it
/// from the same address and port.
fn all_talk(sessions: &[(&str, Sessions)], when: &str, log: &str) {
    for (mode, s) in sessions {
        s.keep_talking(3).unwrap();
        let broken: Vec<_> = s
            .states()
            .into_iter()
            .filter(|c| c.failure.is_some())
            .collect();
        assert!(broken.is_empty(), "{mode} {when}: {broken:?}\n{log}");
    }
}

/// Runs `lbctl ARGS` in the LB's namespace to its end and returns what it printed; fails the
/// test if it fails.
fn run_lbctl(lab: &Lab, lbctl: &Path, args: &[&str]) -> String {
    let out = lab
        .lb
        .command(&lbctl.display().to_string())
        .args(args)
        .env("LBCTL_SOCKET", lab.lb_socket())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lbctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_upgrade_from_each_older_layout_keeps_every_flow() {
    require_root();
    const { assert!(layout::OLDEST < CURRENT, "no older layout to upgrade from") };
    for from in layout::OLDEST..CURRENT {
        upgrade_from(from);
    }
}
