//! Per-packet cost in the kernel (BPF_PROG_TEST_RUN; the benchmark object's harness restores
//! the frame before every repeat, so a rewriting program never works on its own output, then
//! tail-calls the shipped balancer, see `tests::bench_object`): every mode × established flow,
//! new flow and new flow into a full flow table, next to the floor of the path; then the
//! cost of an established flow as the flow table grows from 1 k to 1 M entries.

use std::net::IpAddr;

use anyhow::{ensure, Context as _, Result};
use lb_userspace::{
    datapath::{Datapath, Real},
    declare::{
        service::VipSettings,
        spec::{Balance, Mode},
    },
};
use tests::{
    bench_object::{BalancerBench, BenchProgram, Vary},
    fixture::*,
    frames::{hop, Tcp},
};

use crate::{
    profile,
    report::{Figure, Plot, PlotKind, Section, Series, Unit},
    Opts,
};

/// Runs per figure; the median is reported.
mod katran;
mod observe;

const RUNS: usize = 5;
/// Ethernet 14 + IPv4 20: the TCP source port; the IPv4 source address's last two bytes.
const SPORT_AT: usize = 34;
const SADDR_LOW_AT: usize = 28;
/// The flow table of the new-flow figures: larger than all the flows they make, so "new
/// flow" inserts into free room, until it is filled for "into a full table".
const NEW_FLOW_TABLE: u32 = 1 << 20;

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Repeats per kernel run.
struct Repeats {
    established: u32,
    new_flow: u32,
}

impl Repeats {
    fn of(quick: bool) -> Self {
        if quick {
            Self {
                established: 100_000,
                new_flow: 20_000,
            }
        } else {
            Self {
                established: 1_000_000,
                // × RUNS new flows, two entries each in stateful modes: within NEW_FLOW_TABLE.
                new_flow: 80_000,
            }
        }
    }
}

pub fn run(opts: &Opts) -> Result<Section> {
    // Pinned in a thread of its own: the other sections' processes must not inherit it.
    let quick = opts.quick;
    std::thread::spawn(move || {
        pin_to_cpu0();
        measure(quick)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the per-packet thread panicked"))?
}

fn measure(quick: bool) -> Result<Section> {
    let reps = Repeats::of(quick);
    let mut s = Section::new(
        "Per-packet cost (BPF_PROG_TEST_RUN)",
        format!(
            "The balancer lbctl ships (lb_xdp, loaded from lbctl's object) run in the kernel on \
             one TCP frame (ACK, 32 bytes of payload) to a VIP with three reals, {} repeats per \
             run for established flows and {} for new ones, median of {RUNS} runs, on CPU 0. \
             A harness program of the benchmark object runs first in every repeat: it restores \
             the frame from a map (and for new flows gives it the next source port and \
             address), then tail-calls the balancer. Ratios are to \
             the trivial program (MAC swap + XDP_TX, which needs no restore), as in Katran's \
             anchor figures. New flows: a flow table of {} entries (one-arm: half, \
             fewer flows than its pool of 8 addresses has ports), then the same filled up \
             (every new flow evicts one).",
            reps.established, reps.new_flow, NEW_FLOW_TABLE
        ),
    );
    let frame = hop(CLIENT_MAC, LB_MAC, CLIENT, VIP_IP).tcp(40000, 80, Tcp::Ack, &[b'x'; 32]);
    let other =
        hop(CLIENT_MAC, LB_MAC, CLIENT, [198, 18, 100, 99]).tcp(40000, 80, Tcp::Ack, &[b'x'; 32]);

    let mut dp = datapath(&VipSettings::new(Mode::Dsr), None)?;
    let pass = time(&mut dp, BenchProgram::Pass, &frame, None, reps.established)?;
    s.push(
        Figure::new("test-run loop: a bare XDP_PASS", pass, Unit::Ns)
            .note("Katran's anchor run: 21 ns"),
    );
    let floor = time(&mut dp, BenchProgram::Swap, &frame, None, reps.established)?;
    s.push(
        Figure::new(
            "floor: a trivial program, MAC swap + XDP_TX",
            floor,
            Unit::Ns,
        )
        .note("Katran's anchor run: 24 ns"),
    );
    let harness = time(&mut dp, BenchProgram::Floor, &frame, None, reps.established)?;
    s.push(
        Figure::new(
            "the same behind the harness: frame restored, then a tail call",
            harness,
            Unit::Ns,
        )
        .note(format!(
            "the harness costs {:.0} ns; it is in every balancer figure below, as Katran's \
             restore wrapper is in its figures; a figure minus this one is what the balancer adds \
             to the trivial program",
            harness - floor
        )),
    );
    let ratio = |ns: f64| ns / floor;
    let k = katran::here();
    let non_vip = time(
        &mut dp,
        BenchProgram::Balancer,
        &other,
        None,
        reps.established,
    )?;
    s.push(
        Figure::new("not a VIP: passed", non_vip, Unit::Ns)
            .note(format!(
                "{:.2}× Katran on {} ({:.0} ns)",
                non_vip / k.not_a_vip,
                k.cpu,
                k.not_a_vip
            ))
            .target("≤ 0.75× Katran", non_vip <= 0.75 * k.not_a_vip),
    );
    let shape =
        tests::program_shape::of(lb_userspace::LB_EBPF_OBJECT, lb_common::program_names::LB)?;
    let hashed: Vec<String> = shape
        .lookups
        .iter()
        .filter(|(m, _)| HASH_MAPS.contains(&m.as_str()))
        .map(|(m, n)| format!("{m} ({n} site{})", if *n == 1 { "" } else { "s" }))
        .collect();
    s.notes.push(format!(
        "The established path (lb_xdp, counted from its instructions): {} BPF-to-BPF calls; \
         hash maps asked: {} (a packet asks FLOWS once; the second FLOWS site refreshes a \
         stateful flow's partner, at most every 200 ms); \
         array lookups (an inlined index): {}; {} tail-call site(s) into the full path \
         (lb_full) for every other packet. Goal: no call, at most two hash lookups.",
        shape.bpf_to_bpf_calls,
        hashed.join(", "),
        shape
            .lookups
            .iter()
            .filter(|(m, _)| !HASH_MAPS.contains(&m.as_str()))
            .map(|(m, n)| format!("{m} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        shape.tail_calls
    ));
    let shares = profile::sample(0, || {
        dp.run(BenchProgram::Balancer, &other, None, reps.established)
            .map(drop)
    })?;
    s.notes.push(format!(
        "Where the time goes, not a VIP: {}.",
        profile::describe(&shares, non_vip)
    ));
    let size = dp.balancer_size()?;
    s.notes.push(format!(
        "The balancer program: {} BPF instructions after verification, {} bytes of machine \
         code; the verifier processed {} instructions (all paths).",
        size.insns, size.jitted_bytes, size.verified_insns
    ));
    drop(dp);

    let mut bars = vec![
        ("XDP_PASS".to_string(), pass),
        ("MAC swap".to_string(), floor),
        ("not a VIP".to_string(), non_vip),
    ];
    for (name, settings) in cases()? {
        let mode = settings.mode.to_string();
        let est_goal = katran::established_share(&mode) * k.established;
        let new_goal = katran::new_flow_share(&mode) * k.new_flow;
        let full_goal = katran::new_flow_share(&mode) * k.new_flow_full;
        let mut dp = datapath(&settings, None).with_context(|| name.clone())?;
        let est = time(
            &mut dp,
            BenchProgram::Balancer,
            &frame,
            None,
            reps.established,
        )?;
        s.push(
            Figure::new(format!("{name}, established flow"), est, Unit::Ns)
                .note(format!(
                    "{:.2}× Katran's IP-in-IP path on {} ({:.0} ns); {:.2}× the floor",
                    est / k.established,
                    k.cpu,
                    k.established,
                    ratio(est)
                ))
                .target(
                    format!(
                        "≤ {}× Katran ({:.0} ns)",
                        katran::established_share(&mode),
                        est_goal
                    ),
                    est <= est_goal,
                ),
        );
        bars.push((format!("{name} est."), est));
        if PROFILED.contains(&name.as_str()) {
            let shares = profile::sample(0, || {
                dp.run(BenchProgram::Balancer, &frame, None, reps.established)
                    .map(drop)
            })?;
            s.notes.push(format!(
                "Where the time goes, {name}, established flow (perf, share of CPU 0's \
                 samples): {}.",
                profile::describe(&shares, est)
            ));
        }
        drop(dp);

        // One-arm: the table holds fewer flows than the pool has ports (8 × 64 512), so a
        // full table evicts flows and frees ports instead of running out of them.
        let table = if settings.mode == Mode::OneArm {
            NEW_FLOW_TABLE / 2
        } else {
            NEW_FLOW_TABLE
        };
        let new_flow_reps = reps.new_flow.min(table / 4 / RUNS as u32);
        let mut dp = datapath(&settings, Some(table)).with_context(|| name.clone())?;
        let new = new_flows(&mut dp, &frame, new_flow_reps)?;
        s.push(
            Figure::new(format!("{name}, new flow"), new, Unit::Ns)
                .note(format!(
                    "{:.2}× Katran on {} ({:.0} ns); {:.2}× the floor",
                    new / k.new_flow,
                    k.cpu,
                    k.new_flow,
                    ratio(new)
                ))
                .target(
                    format!(
                        "≤ {}× Katran ({new_goal:.0} ns)",
                        katran::new_flow_share(&mode)
                    ),
                    new <= new_goal,
                ),
        );
        bars.push((format!("{name} new"), new));
        if PROFILED.contains(&name.as_str()) && settings.mode != Mode::OneArm {
            let shares = profile::sample(0, || {
                dp.run(BenchProgram::Balancer, &frame, Some(NEW), new_flow_reps)
                    .map(drop)
            })?;
            s.notes.push(format!(
                "Where the time goes, {name}, new flow: {}.",
                profile::describe(&shares, new)
            ));
        }
        // Fill what is left of the table, then every new flow evicts the oldest.
        let per_flow = if settings.mode.is_stateful() { 2 } else { 1 };
        let made = new_flow_reps * RUNS as u32 * per_flow;
        let fill = (table.saturating_sub(made) / per_flow) + table / 8;
        run_new(&mut dp, &frame, fill)?;
        let full = new_flows(&mut dp, &frame, new_flow_reps)?;
        s.push(
            Figure::new(
                format!("{name}, new flow into a full table"),
                full,
                Unit::Ns,
            )
            .note(format!(
                "{:.2}× Katran on {}, 4 M entries ({:.0} ns); {:.2}× the floor",
                full / k.new_flow_full,
                k.cpu,
                k.new_flow_full,
                ratio(full)
            ))
            .target(
                format!(
                    "≤ {}× Katran ({full_goal:.0} ns)",
                    katran::new_flow_share(&mode)
                ),
                full <= full_goal,
            ),
        );
    }
    s.plots.push(Plot {
        file: "per_packet.png".into(),
        title: "ns per packet (BPF_PROG_TEST_RUN)".into(),
        y_label: "ns per packet".into(),
        kind: PlotKind::Bars(bars),
    });
    flood_guard(&mut s, &frame, &reps)?;
    flow_logs(&mut s, &frame, &reps, floor)?;
    observe::observed(&mut s, &frame, &reps)?;
    flow_table_scale(&mut s, &frame, &reps)?;
    Ok(s)
}

/// New flows per kernel run with flow logs on: under what the ring buffer (1 MiB, ~10 k
/// events) holds, drained between runs as a keeping-up reader would.
const LOGGED_NEW_FLOWS: u32 = 8_000;

/// dsr/maglev with flow logs off and on, side by side on one datapath: the established
/// path (which never logs) and new flows (one event each, written into the ring buffer).
fn flow_logs(s: &mut Section, frame: &[u8], reps: &Repeats, floor: f64) -> Result<()> {
    let settings = VipSettings::new(Mode::Dsr);
    let mut dp = datapath(&settings, Some(NEW_FLOW_TABLE))?;
    let est_off = time(
        &mut dp,
        BenchProgram::Balancer,
        frame,
        None,
        reps.established,
    )?;
    let new_off = new_flows(&mut dp, frame, LOGGED_NEW_FLOWS)?;
    let mut ring = dp.dp.start_flow_log(u32::MAX)?;
    let est_on = time(
        &mut dp,
        BenchProgram::Balancer,
        frame,
        None,
        reps.established,
    )?;
    let mut runs = Vec::with_capacity(RUNS);
    let mut logged = 0u64;
    for _ in 0..RUNS {
        let (action, ns) = dp.run(BenchProgram::Balancer, frame, Some(NEW), LOGGED_NEW_FLOWS)?;
        ensure!(
            action == XDP_TX,
            "new flows with logs on ended with action {action}"
        );
        runs.push(ns);
        while ring.next().is_some() {
            logged += 1;
        }
    }
    let new_on = median(runs);
    ensure!(
        logged == u64::from(LOGGED_NEW_FLOWS) * RUNS as u64,
        "{logged} events for {} new flows",
        LOGGED_NEW_FLOWS * RUNS as u32
    );
    for (name, off, on) in [
        ("dsr, maglev, established flow", est_off, est_on),
        ("dsr, maglev, new flow", new_off, new_on),
    ] {
        s.push(
            Figure::new(format!("{name}, flow logs on"), on, Unit::Ns).note(format!(
                "{:+.0} ns against logs off in the same run ({off:.0} ns); {:.2}× the floor",
                on - off,
                on / floor
            )),
        );
    }
    s.notes.push(format!(
        "Flow logs on: every new flow writes one event into the ring buffer ({LOGGED_NEW_FLOWS} \
         new flows per run, the ring drained between runs as a reader keeping up would); the \
         established path never reaches the log code. So one CPU creates and logs about \
         {:.1} M new flows a second (the rate limit, 10 000 a second per CPU by default, \
         drops and counts the rest before they reach the ring).",
        1e3 / new_on
    ));
    Ok(())
}

/// Established flows spread over a growing table: cycling over N flows, each packet finds
/// its flow among N (2N entries in nat).
fn flow_table_scale(s: &mut Section, frame: &[u8], reps: &Repeats) -> Result<()> {
    let sizes = [1_000u32, 10_000, 100_000, 1_000_000];
    let mut series = Vec::new();
    for mode in [Mode::Dsr, Mode::Nat] {
        let mut points = Vec::new();
        for &flows in &sizes {
            let entries = (flows * 2).next_power_of_two().max(1 << 12);
            let mut dp = datapath(&VipSettings::new(mode), Some(entries))?;
            let vary = Vary {
                sport_at: SPORT_AT,
                addr_at: SADDR_LOW_AT,
                csum_at: 0,
                modulo: flows,
            };
            dp.reset_seq()?;
            // The first round makes the flows; the timed ones find them.
            let (action, _) = dp.run(BenchProgram::Balancer, frame, Some(vary), flows)?;
            ensure!(
                action == XDP_TX,
                "{mode}: filling {flows} flows ended with action {action}"
            );
            let ns = time(
                &mut dp,
                BenchProgram::Balancer,
                frame,
                Some(vary),
                reps.established.max(flows),
            )?;
            s.push(Figure::new(
                format!("{mode}, established, {flows} flows in the table"),
                ns,
                Unit::Ns,
            ));
            points.push((f64::from(flows), ns));
            // What counting the active flows per real costs at this size: one walk of the
            // table from userspace (the HTTP listener does it every 5 s, `lbctl stats` once
            // per reading).
            let walk = std::time::Instant::now();
            let walked = dp.dp.flows()?.len();
            let ms = walk.elapsed().as_secs_f64() * 1e3;
            s.push(
                Figure::new(
                    format!("{mode}, counting active flows: one walk of {walked} entries"),
                    ms,
                    Unit::Ms,
                )
                .note(format!(
                    "{:.2} µs an entry, from userspace (two syscalls each)",
                    ms * 1e3 / walked.max(1) as f64
                )),
            );
        }
        let (first, last) = (points[0].1, points[points.len() - 1].1);
        s.push(
            Figure::new(
                format!("{mode}: 1 M flows against 1 k"),
                last / first,
                Unit::Times,
            )
            // The goals: a flow's one entry (dsr, tunnel) 3×, two entries 3.5×.
            .target(
                format!("≤ {}×", scale_goal(mode)),
                last / first <= scale_goal(mode),
            ),
        );
        series.push(Series {
            name: mode.to_string(),
            points,
        });
    }
    s.plots.push(Plot {
        file: "flow_table.png".into(),
        title: "established flow: ns per packet as the flow table grows".into(),
        y_label: "ns per packet".into(),
        kind: PlotKind::Lines {
            x_label: "flows in the table".into(),
            log_x: true,
            series,
        },
    });
    Ok(())
}

const VIP_IP: [u8; 4] = [198, 18, 100, 40];

/// The cases profiled with perf (their notes say where the time goes).
const PROFILED: [&str; 2] = ["dsr, maglev", "nat, maglev"];

/// What an established flow may cost with 1 M flows in the table, against 1 k: beyond the
/// CPU caches each lookup is a memory access, one entry's for dsr and tunnel, and the
/// stateful modes refresh a second.
fn scale_goal(mode: Mode) -> f64 {
    if mode.is_stateful() {
        3.5
    } else {
        3.0
    }
}

/// The maps lookups of which hash a key (the rest are arrays: an inlined index).
const HASH_MAPS: &[&str] = &["VIPS", "ENDPOINTS", "OPEN", "FLOWS", "IFACES"];

/// Every mode with maglev, and dsr with every scheduler.
fn cases() -> Result<Vec<(String, VipSettings)>> {
    let mut cases = Vec::new();
    for mode in [
        Mode::Dsr,
        Mode::Tunnel,
        Mode::Nat,
        Mode::Router,
        Mode::OneArm,
    ] {
        let mut settings = VipSettings::new(mode);
        if mode == Mode::OneArm {
            // Ports for every flow the table can hold: a port comes round again only after
            // its old flow left the table.
            settings.snat_pool = (1..=8)
                .map(|i| IpAddr::from([198, 18, 0, 200 + i]))
                .collect();
            settings.snat_ports = "1024-65535".parse()?;
        }
        cases.push((format!("{mode}, maglev"), settings));
    }
    for balance in [
        Balance::Source,
        Balance::Roundrobin,
        Balance::StaticRr,
        Balance::Leastconn,
    ] {
        cases.push((
            format!("dsr, {balance}"),
            VipSettings {
                balance,
                ..VipSettings::new(Mode::Dsr)
            },
        ));
    }
    Ok(cases)
}

/// A datapath with one VIP, 198.18.100.40:80/tcp, served as `settings` say by three reals
/// on the ingress segment, under the bench harness; a flow table of `flow_table` entries if
/// given.
fn datapath(settings: &VipSettings, flow_table: Option<u32>) -> Result<BalancerBench> {
    let mut dp = match flow_table {
        Some(n) => Datapath::load_with_flow_table(n)?,
        None => Datapath::load()?,
    };
    dp.set_interface(IFINDEX_A, lb_iface())?;
    let v = vip("198.18.100.40:80/tcp");
    dp.add_vip(v, settings)?;
    let reals: Vec<Real> = (1..=3u8)
        .map(|i| {
            Real::on_segment(
                IpAddr::from([198, 18, 0, 10 + i]),
                [2, 0, 0, 0, 0, 0x10 + i],
            )
        })
        .collect();
    dp.set_reals(&v, &reals)?;
    BalancerBench::new(dp)
}

/// Median ns per packet over RUNS kernel runs of `repeat`, checking the action.
fn time(
    dp: &mut BalancerBench,
    program: BenchProgram,
    frame: &[u8],
    vary: Option<Vary>,
    repeat: u32,
) -> Result<f64> {
    let mut runs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (action, ns) = dp.run(program, frame, vary, repeat)?;
        ensure!(
            action == XDP_TX || action == XDP_PASS,
            "{program:?} ended with action {action}, not TX or PASS"
        );
        runs.push(ns);
    }
    Ok(median(runs))
}

/// Every repeat a flow never seen (the count goes on across runs).
const NEW: Vary = Vary {
    sport_at: SPORT_AT,
    addr_at: SADDR_LOW_AT,
    csum_at: 0,
    modulo: 0,
};

/// A flood of new flows to a dsr VIP, with its flood guard engaged (a rate of 1: every new
/// flow after a CPU's first in a second goes without an entry) and without (the flood fills
/// the table, and every new flow then evicts one), in the same run.
fn flood_guard(s: &mut Section, frame: &[u8], reps: &Repeats) -> Result<()> {
    let table = NEW_FLOW_TABLE;
    let repeat = reps.new_flow.min(table / 4 / RUNS as u32);
    let mut cost = Vec::new();
    for guard in [0, 1] {
        let mut settings = VipSettings::new(Mode::Dsr);
        settings.flood_guard = guard;
        let mut dp = datapath(&settings, Some(table))?;
        // The flood so far: without the guard it fills the table; with it, nothing is written.
        run_new(&mut dp, frame, table + table / 8)?;
        cost.push(new_flows(&mut dp, frame, repeat)?);
    }
    s.push(
        Figure::new(
            "dsr, maglev, new flow under a flood, flood guard on",
            cost[1],
            Unit::Ns,
        )
        .note(format!(
            "{:+.0} ns against the guard off in the same run ({:.0} ns, the table full, each new \
             flow evicting one): forwarded by the ring, no entry written, none evicted",
            cost[1] - cost[0],
            cost[0]
        )),
    );
    Ok(())
}

fn new_flows(dp: &mut BalancerBench, frame: &[u8], repeat: u32) -> Result<f64> {
    time(dp, BenchProgram::Balancer, frame, Some(NEW), repeat)
}

/// `count` new flows, untimed.
fn run_new(dp: &mut BalancerBench, frame: &[u8], count: u32) -> Result<()> {
    let (action, _) = dp.run(BenchProgram::Balancer, frame, Some(NEW), count)?;
    ensure!(action == XDP_TX, "new flows ended with action {action}");
    Ok(())
}
