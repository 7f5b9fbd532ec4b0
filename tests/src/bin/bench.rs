//! `cargo xtask bench`: what the schedulers cost.
//!
//! - Maglev table build, 65537 slots, 100 and 1000 reals (the Maglev paper: 1.8 ms).
//! - A change of a VIP's reals end to end: the table built and the ring map swapped in (the
//!   ring is filled through a memory mapping), against filling it by map updates.
//! - Datapath nanoseconds per packet (BPF_PROG_TEST_RUN, the frame restored before every
//!   repeat) for a new flow (a new source port every packet: a flow-table write each) and an
//!   established one, per scheduler and per mode, next to the floor: the restore and a MAC
//!   swap sent back (what the simplest XDP_TX program does).
//!
//! Writes target/bench/report.md and report.json; prints the table.

use std::{fmt::Write as _, net::IpAddr, time::Instant};

use anyhow::{Context as _, Result};
use lb_userspace::{
    datapath::{Datapath, Real},
    maglev,
    service::VipSettings,
    spec::{Balance, Mode},
};
use tests::{
    fixture::*,
    frames::{hop, Tcp},
};

/// Repeats of one kernel run, and runs per figure (the median is reported).
const REPEAT: u32 = 200_000;
const RUNS: usize = 5;

struct Figure {
    what: String,
    ns: f64,
    note: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn maglev_build(reals: usize) -> f64 {
    let members: Vec<maglev::Member> = (0..reals)
        .map(|i| maglev::Member {
            name: format!("198.18.{}.{}:80", i / 250, i % 250 + 1),
            weight: 1,
        })
        .collect();
    let runs = (0..21)
        .map(|_| {
            let t = Instant::now();
            let table = maglev::build(&members, maglev::DEFAULT_SIZE);
            let ns = t.elapsed().as_nanos() as f64;
            assert!(table.is_some());
            ns
        })
        .collect();
    median(runs)
}

/// A change of a maglev VIP's reals as a health check or `lbctl real weight` makes it: the
/// table built and swapped in whole (one real of `reals` changing weight each time).
fn reals_change(reals: usize) -> Result<f64> {
    let mut dp = Datapath::load()?;
    let v = vip("198.18.100.41:80/tcp");
    dp.add_vip(v, &VipSettings::new(Mode::Dsr))?;
    let mut list: Vec<Real> = (0..reals)
        .map(|i| {
            let addr = IpAddr::from([198, 18, (i / 250) as u8, (i % 250) as u8 + 1]);
            Real::on_segment(addr, [2, 0, 0, 0, 0, 1])
        })
        .collect();
    let mut runs = Vec::new();
    for round in 0..21 {
        list[0].weight = 1 + (round % 2);
        let t = Instant::now();
        dp.set_reals(&v, &list)?;
        runs.push(t.elapsed().as_nanos() as f64);
    }
    Ok(median(runs))
}

/// What filling a ring map slot by slot (one map update each) would take instead.
fn ring_filled_by_updates() -> Result<f64> {
    let mut ring = aya::maps::Array::<aya::maps::MapData, u32>::create(lb_common::RING_SIZE, 0)?;
    let runs = (0..5)
        .map(|_| {
            let t = Instant::now();
            for slot in 0..lb_common::RING_SIZE {
                ring.set(slot, slot % 100, 0)?;
            }
            Ok(t.elapsed().as_nanos() as f64)
        })
        .collect::<Result<Vec<f64>>>()?;
    Ok(median(runs))
}

/// A datapath with one VIP, 198.18.100.40:80/tcp, served as `settings` say by three reals
/// on the ingress segment.
fn datapath(settings: &VipSettings) -> Result<Datapath> {
    let mut dp = Datapath::load()?;
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
    Ok(dp)
}

/// Mean ns per packet over RUNS kernel runs (median), checking the action.
fn per_packet(dp: &mut Datapath, floor: bool, frame: &[u8], new_flows: bool) -> Result<f64> {
    // The TCP source port (Ethernet 14 + IPv4 20) and the IPv4 source's last two bytes.
    let vary = new_flows.then_some((34, 28));
    let mut runs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (action, ns) = dp.bench(floor, frame, vary, REPEAT)?;
        anyhow::ensure!(
            action == XDP_TX || action == XDP_PASS,
            "unexpected action {action}"
        );
        runs.push(ns);
    }
    Ok(median(runs))
}

fn main() -> Result<()> {
    tests::require_root();
    pin_to_cpu0();
    let mut figures = Vec::new();
    for reals in [100, 1000] {
        figures.push(Figure {
            what: format!("maglev table build, 65537 slots, {reals} reals"),
            ns: maglev_build(reals),
            note: "Maglev paper: 1.8 ms".into(),
        });
    }

    let by_updates = ring_filled_by_updates()?;
    for reals in [100, 1000] {
        let ns = reals_change(reals)?;
        figures.push(Figure {
            what: format!(
                "a maglev VIP's reals changed ({reals} reals): table built and swapped in"
            ),
            ns,
            note: format!(
                "filling the ring by 65537 map updates instead: {:.1} ms",
                by_updates / 1e6
            ),
        });
    }

    let vip_ip = [198, 18, 100, 40];
    let frame = hop(CLIENT_MAC, LB_MAC, CLIENT, vip_ip).tcp(40000, 80, Tcp::Ack, &[b'x'; 32]);
    let other =
        hop(CLIENT_MAC, LB_MAC, CLIENT, [198, 18, 100, 99]).tcp(40000, 80, Tcp::Ack, &[b'x'; 32]);
    let mut floor_dp = datapath(&VipSettings::new(Mode::Dsr))?;
    let floor = per_packet(&mut floor_dp, true, &frame, false)?;
    figures.push(Figure {
        what: "floor: restore + MAC swap + XDP_TX".into(),
        ns: floor,
        note: String::new(),
    });
    let pass = per_packet(&mut floor_dp, false, &other, false)?;
    figures.push(Figure {
        what: "not a VIP: passed".into(),
        ns: pass,
        note: format!("{:.2}× the floor", pass / floor),
    });

    let mut cases: Vec<(String, VipSettings)> = Vec::new();
    for balance in [
        Balance::Maglev,
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
    for mode in [Mode::Tunnel, Mode::Nat, Mode::Router, Mode::OneArm] {
        let mut settings = VipSettings::new(mode);
        if mode == Mode::OneArm {
            // Ports to spare for a flood of new flows: more than the flow table holds, so a
            // port comes round again only after its old flow left the table.
            settings.snat_pool = (1..=8)
                .map(|i| IpAddr::from([198, 18, 0, 200 + i]))
                .collect();
            settings.snat_ports = "1024-65535".parse()?;
        }
        cases.push((format!("{mode}, maglev"), settings));
    }
    for (name, settings) in cases {
        for new_flows in [false, true] {
            let mut dp = datapath(&settings).with_context(|| name.clone())?;
            let ns = per_packet(&mut dp, false, &frame, new_flows).with_context(|| name.clone())?;
            figures.push(Figure {
                what: format!(
                    "{name}, {}",
                    if new_flows {
                        "new flow"
                    } else {
                        "established flow"
                    }
                ),
                ns,
                note: format!("{:.2}× the floor", ns / floor),
            });
        }
    }
    report(&figures)
}

fn report(figures: &[Figure]) -> Result<()> {
    let mut md = String::from("# lbctl benchmarks: schedulers\n\n");
    writeln!(
        md,
        "BPF_PROG_TEST_RUN, {REPEAT} repeats per run, median of {RUNS} runs, the frame restored before every repeat; CPU 0.\n"
    )?;
    writeln!(md, "| what | time | |\n| --- | ---: | --- |")?;
    let mut json = Vec::new();
    for f in figures {
        let time = if f.ns >= 100_000.0 {
            format!("{:.3} ms", f.ns / 1e6)
        } else {
            format!("{:.0} ns", f.ns)
        };
        writeln!(md, "| {} | {time} | {} |", f.what, f.note)?;
        json.push(format!(
            "  {{\"what\": {:?}, \"ns\": {:.1}, \"note\": {:?}}}",
            f.what, f.ns, f.note
        ));
    }
    print!("{md}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("report.md"), &md)?;
    std::fs::write(
        dir.join("report.json"),
        format!("[\n{}\n]\n", json.join(",\n")),
    )?;
    println!("\nwritten: {}", dir.join("report.md").display());
    Ok(())
}
