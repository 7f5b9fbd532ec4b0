//! How cost grows with what is configured. In the kernel (BPF_PROG_TEST_RUN, pinned to CPU 0
//! in a thread of its own): ns per packet of an established flow as the VIPs grow to 10 000
//! and a VIP's reals to 1000, with the time adding those VIPs took. In userspace: Maglev table
//! builds and a VIP's reals changed end to end. Through a running `lbctl` in a lab (after, not
//! pinned): runtime updates per second, one `lbctl` process per update as a script does it,
//! and the same requests over one admin-socket connection.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::IpAddr,
    os::{
        fd::{AsFd as _, AsRawFd as _},
        unix::net::UnixStream,
    },
    time::Instant,
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use lb_lab::{Lab, VIP_ADDR, VIP_PORT};
use lb_userspace::{
    admin::{Request, Response},
    datapath::{Datapath, Real},
    declare::{
        edit::{Edit, RealRef},
        service::VipSettings,
        spec::{Mode, VipSpec},
    },
    tables::maglev,
};
use tests::{
    bench_object::{BalancerBench, BenchProgram},
    fixture::{lb_iface, pin_to_cpu0, vip, CLIENT, CLIENT_MAC, IFINDEX_A, LB_MAC, XDP_TX},
    frames::{hop, Tcp},
};

use crate::{
    per_packet::median,
    report::{Figure, Plot, PlotKind, Section, Series, Unit},
    Opts,
};

/// Kernel runs per ns-per-packet figure; the median is reported.
const RUNS: usize = 5;
/// The VIP the frame goes to; the other VIPs are 198.18.128.0:80/tcp on.
const TEST_VIP: &str = "198.18.100.40:80/tcp";
const TEST_VIP_IP: [u8; 4] = [198, 18, 100, 40];
/// Reals of the test VIP while the VIPs grow (as in the per-packet section).
const VIP_SCALE_REALS: usize = 3;

/// How far each series goes: quick mode stops at 1000 VIPs and 100 reals.
#[derive(Clone, Copy)]
struct Plan {
    vips: &'static [usize],
    reals: &'static [usize],
    repeat: u32,
    updates: usize,
}

impl Plan {
    fn of(quick: bool) -> Self {
        if quick {
            Self {
                vips: &[1, 10, 100, 1000],
                reals: &[1, 10, 100],
                repeat: 100_000,
                updates: 50,
            }
        } else {
            Self {
                vips: &[1, 10, 100, 1000, 10_000],
                reals: &[1, 10, 100, 1000],
                repeat: 1_000_000,
                updates: 200,
            }
        }
    }
}

pub fn run(opts: &Opts) -> Result<Section> {
    let plan = Plan::of(opts.quick);
    // Pinned in a thread of its own: the lab's processes, started after, must not inherit it.
    let mut s = std::thread::spawn(move || {
        pin_to_cpu0();
        in_kernel_and_userspace(plan)
    })
    .join()
    .map_err(|_| anyhow!("the scale thread panicked"))??;
    control_plane(&mut s, opts, plan.updates).context("control-plane updates through lbctl")?;
    Ok(s)
}

fn in_kernel_and_userspace(plan: Plan) -> Result<Section> {
    let mut s = Section::new(
        "Scale",
        format!(
            "Per packet: the balancer run in the kernel (BPF_PROG_TEST_RUN) on one TCP frame \
             (ACK, 32 bytes) of an established flow to the dsr/maglev VIP {TEST_VIP}, {} repeats \
             per run, median of {RUNS} runs, on CPU 0, the frame restored before every repeat. \
             As the VIPs grow, the measured VIP keeps {VIP_SCALE_REALS} reals and the others \
             are added without reals (the real ids are shared by all VIPs): the frame goes to one \
             VIP among N, so what grows is the VIPS hash it is looked up in; each addition \
             (`Datapath::add_vip`, which creates and installs the VIP's ring map) is timed. As \
             the reals grow, one VIP, a fresh datapath per count. Maglev builds and reals \
             changes (`Datapath::set_reals`, one real's weight flipped): median of 21. Control \
             plane: a lab (one segment, 3 reals, `lbctl attach` in dsr), `lbctl real weight` \
             of one real of one VIP flipped between 2 and 1, {} times one after another, each \
             update a process of its own; then the same requests over one admin-socket \
             connection.",
            plan.repeat, plan.updates
        ),
    );
    let frame = hop(CLIENT_MAC, LB_MAC, CLIENT, TEST_VIP_IP).tcp(40000, 80, Tcp::Ack, &[b'x'; 32]);
    vips_scale(&mut s, &plan, &frame)?;
    vips_with_reals_at_scale(&mut s)?;
    reals_scale(&mut s, &plan, &frame)?;
    for reals in [10, 100, 1000] {
        s.push(
            Figure::new(
                format!("maglev table build, 65537 slots, {reals} reals"),
                maglev_build(reals),
                Unit::Ns,
            )
            .note("Maglev paper: 1.8 ms"),
        );
    }
    let by_updates = ring_filled_by_updates()?;
    for reals in [10, 100, 1000] {
        s.push(
            Figure::new(
                format!(
                    "a maglev VIP's reals changed ({reals} reals, {} slots): table built and written in place",
                    maglev::size_for(reals)
                ),
                reals_change(reals)?,
                Unit::Ns,
            )
            .note(format!(
                "filling a 65537-slot ring by a map update per slot instead: {:.1} ms",
                by_updates / 1e6
            )),
        );
    }
    Ok(s)
}

/// The test VIP among 1 … 10 000 VIPs, in one datapath: VIPs added up to each count.
fn vips_scale(s: &mut Section, plan: &Plan, frame: &[u8]) -> Result<()> {
    let mut dp = datapath(VIP_SCALE_REALS)?;
    let settings = VipSettings::new(Mode::Dsr);
    let vmalloc_before = meminfo_kib("VmallocUsed")?;
    let mut adding = 0.0;
    let (mut per_packet, mut per_add) = (Vec::new(), Vec::new());
    let mut have = 1;
    for &n in plan.vips {
        let t = Instant::now();
        dp.dp.batch(|dp| {
            for i in have..n {
                dp.add_vip(other_vip(i - 1), &settings)
                    .with_context(|| format!("adding VIP {} of {n}", i + 1))?;
            }
            Ok(())
        })?;
        if n > have {
            adding += t.elapsed().as_secs_f64();
            let ms = t.elapsed().as_secs_f64() * 1e3 / (n - have) as f64;
            s.push(Figure::new(
                format!("adding VIPs {have} → {n}: per VIP"),
                ms,
                Unit::Ms,
            ));
            per_add.push((n as f64, ms));
        }
        have = n;
        let ns = time(&mut dp, frame, plan.repeat)?;
        s.push(Figure::new(
            format!("dsr/maglev established flow, 1 VIP among {n}"),
            ns,
            Unit::Ns,
        ));
        per_packet.push((n as f64, ns));
    }
    let vmalloc_mib = (meminfo_kib("VmallocUsed")? - vmalloc_before) as f64 / 1024.0;
    let (first, last) = (per_packet[0], per_packet[per_packet.len() - 1]);
    s.push(
        Figure::new(
            format!("{} VIPs against 1", last.0),
            last.1 / first.1,
            Unit::Times,
        )
        .note("the VIPS hash lookup; the test run keeps its bucket in cache"),
    );
    // Freeing the rings is the kernel's deferred work: waited for (bounded), so that it does
    // not run into the figures after.
    drop(dp);
    let freed = Instant::now();
    while meminfo_kib("VmallocUsed")? > vmalloc_before + 64 * 1024
        && freed.elapsed().as_secs() < 120
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let freed = freed.elapsed().as_secs_f64();
    s.notes.push(format!(
        "Adding {} VIPs took {adding:.1} s ({:.2} ms per VIP), each step's VIPs as one batch \
         (`Datapath::batch`: their ring maps go into RINGS with one update, one RCU grace \
         period); the kernel's vmalloc area grew by {vmalloc_mib:.0} MiB ({:.0} KiB per VIP: \
         a VIP without reals has a one-slot ring map). The added VIPs have no reals: REALS \
         holds {} across all VIPs, fewer than the {} VIPs. \
         Once the datapath was dropped, the kernel took {freed:.1} s to free the rings (waited \
         for up to 120 s, until the vmalloc area was within 64 MiB of where it started).",
        last.0 - 1.0,
        adding * 1e3 / (last.0 - 1.0),
        vmalloc_mib * 1024.0 / (last.0 - 1.0),
        lb_common::MAX_REALS - 1,
        lb_common::MAX_VIPS
    ));
    s.plots.push(lines(
        "scale_vips.png",
        "established flow: ns per packet as VIPs grow",
        "ns per packet",
        "VIPs",
        per_packet,
    ));
    s.plots.push(lines(
        "scale_vip_add.png",
        "time to add a VIP as VIPs grow",
        "ms per VIP added",
        "VIPs",
        per_add,
    ));
    Ok(())
}

/// VIPs and reals of the control-plane goal: 10 000 VIPs with 10 reals each.
const SCALE_VIPS: usize = 10_000;
const SCALE_REALS_PER_VIP: usize = 10;

/// 10 000 VIPs with their reals (as many of the goal's 10 each as REALS holds), added as a
/// configuration is (one batch), their kernel memory, and weight updates among them.
fn vips_with_reals_at_scale(s: &mut Section) -> Result<()> {
    let per_vip = SCALE_REALS_PER_VIP.min((lb_common::MAX_REALS as usize - 1) / SCALE_VIPS);
    let mut dp = Datapath::load()?;
    dp.set_interface(IFINDEX_A, lb_iface())?;
    let before = maps_memlock()?;
    let vips: Vec<(VipSpec, Vec<Real>)> = (0..SCALE_VIPS)
        .map(|i| (other_vip(i), reals_of_vip(i, per_vip)))
        .collect();
    let settings = VipSettings::new(Mode::Dsr);
    let t = Instant::now();
    dp.batch(|dp| {
        for (vip, reals) in &vips {
            dp.add_vip(*vip, &settings)?;
            dp.set_reals(vip, reals)?;
        }
        Ok(())
    })?;
    let adding = t.elapsed().as_secs_f64();
    let after = maps_memlock()?;
    let what = format!("{SCALE_VIPS} VIPs × {per_vip} reals");
    s.push(
        Figure::new(format!("{what}: added as one configuration"), adding, Unit::Seconds)
            .target(
                format!("≤ 10 s with {SCALE_REALS_PER_VIP} reals each"),
                adding <= 10.0 && per_vip == SCALE_REALS_PER_VIP,
            )
            .note(format!("`Datapath::batch` of add_vip + set_reals each, as a start or reload applies a configuration; {per_vip} reals each: REALS holds {}", lb_common::MAX_REALS - 1)),
    );
    let total = after.total as f64 / (1 << 20) as f64;
    let added = (after.total - before.total) as f64 / (1 << 20) as f64;
    let cpus = lb_userspace::datapath::possible_cpus()?;
    let on_64 = (after.total - after.per_cpu) as f64 / (1 << 20) as f64
        + after.per_cpu as f64 / (1 << 20) as f64 / f64::from(cpus) * 64.0;
    s.push(
        Figure::new(
            format!("{what}: kernel memory of all maps"),
            total,
            Unit::MiB,
        )
        .target(
            format!("≤ 512 MiB on 2 CPUs with {SCALE_REALS_PER_VIP} reals each"),
            total <= 512.0 && per_vip == SCALE_REALS_PER_VIP,
        )
        .note(format!(
            "{} maps, as the kernel counts each (fdinfo memlock), flow table at its default \
             {} entries; {added:.1} MiB of it came with the VIPs ({:.1} KiB per VIP); {cpus} \
             CPUs, the per-CPU maps {:.1} MiB of it: on 64 CPUs {on_64:.0} MiB",
            after.maps,
            lb_common::MAX_FLOWS,
            added * 1024.0 / SCALE_VIPS as f64,
            after.per_cpu as f64 / (1 << 20) as f64
        )),
    );
    // Weight updates as health checks and `lbctl real weight` make them: one real of a VIP
    // among the 10 000, each update rewriting that VIP's ring in place.
    let updates = 500;
    let t = Instant::now();
    for u in 0..updates {
        let (vip, reals) = &vips[(u * 7919) % SCALE_VIPS];
        let weight = if u % 2 == 0 { 2 } else { 1 };
        dp.set_weight(vip, reals[0].addr, reals[0].port, weight)?;
    }
    let rate = updates as f64 / t.elapsed().as_secs_f64();
    s.push(
        Figure::new(
            format!("weight updates among {what} (Datapath::set_weight)"),
            rate,
            Unit::PerSec,
        )
        .target("≥ 500/s", rate >= 500.0)
        .note("each a Maglev build of the VIP's table and an in-place rewrite: no map update waits on the kernel"),
    );
    Ok(())
}

/// The `n` reals of the `i`th VIP: 198.19.x.y, ports 8000 on.
fn reals_of_vip(i: usize, n: usize) -> Vec<Real> {
    let addr = IpAddr::from([198, 19, (i / 250 % 256) as u8, (i % 250) as u8 + 1]);
    (0..n)
        .map(|j| Real {
            port: Some(8000 + j as u16),
            ..Real::on_segment(addr, [2, 1, 0, 0, (i >> 8) as u8, i as u8])
        })
        .collect()
}

/// What the kernel counts for the maps this process holds open and for every VIP ring map
/// (fdinfo `memlock`): lbctl keeps no descriptor of a ring map once it is in RINGS.
struct MapsMemory {
    maps: usize,
    total: u64,
    /// Of it, the per-CPU maps' (which grow with the CPUs).
    per_cpu: u64,
}

fn maps_memlock() -> Result<MapsMemory> {
    let mut memory = MapsMemory {
        maps: 0,
        total: 0,
        per_cpu: 0,
    };
    let mut add = |text: &str| -> Result<()> {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let bytes = field("memlock:").context("a map's fdinfo without memlock")?;
        memory.maps += 1;
        memory.total += bytes;
        // BPF_MAP_TYPE_PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH.
        if matches!(field("map_type:"), Some(5 | 6 | 10)) {
            memory.per_cpu += bytes;
        }
        Ok(())
    };
    let mut held = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo").context("reading /proc/self/fdinfo")? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            // An fd closed since the listing.
            continue;
        };
        if !text.contains("map_type:") {
            continue;
        }
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            held.insert(id);
        }
        add(&text)?;
    }
    // The ring maps, which only RINGS and lbctl's mappings hold.
    for info in aya::maps::loaded_maps() {
        let info = info.context("listing the kernel's maps")?;
        if info.name_as_str() != Some("lb_ring") || held.contains(&info.id()) {
            continue;
        }
        let Ok(fd) = info.fd() else {
            // Freed since the listing.
            continue;
        };
        let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
        add(&std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?)?;
    }
    Ok(memory)
}

/// One VIP with 1 … 1000 reals.
fn reals_scale(s: &mut Section, plan: &Plan, frame: &[u8]) -> Result<()> {
    let mut points = Vec::new();
    for &n in plan.reals {
        let mut dp = datapath(n).with_context(|| format!("a VIP with {n} reals"))?;
        let ns = time(&mut dp, frame, plan.repeat)?;
        s.push(Figure::new(
            format!(
                "dsr/maglev established flow, 1 VIP with {n} real{}",
                if n == 1 { "" } else { "s" }
            ),
            ns,
            Unit::Ns,
        ));
        points.push((n as f64, ns));
    }
    s.plots.push(lines(
        "scale_reals.png",
        "established flow: ns per packet as a VIP's reals grow",
        "ns per packet",
        "reals of the VIP",
        points,
    ));
    Ok(())
}

/// Updates of a real's weight through the running daemon: per process, then per request.
fn control_plane(s: &mut Section, opts: &Opts, updates: usize) -> Result<()> {
    let mut lab = Lab::one_segment(3)?;
    lab.start_lb(&opts.lbctl, &tests::attach_args(&lab, "dsr"))?;
    let vip_text = format!("{VIP_ADDR}:{VIP_PORT}/tcp");
    let real = lab.real_addrs()[0];
    let real_text = real.to_string();
    // Every update changes the weight (it starts at 1), so every one swaps in a new ring.
    const WEIGHTS: [u16; 2] = [2, 1];
    // Untimed: the binary read from disk once.
    lab.lbctl(&opts.lbctl, &["status"])?;

    let per_process = timed(
        s,
        "`lbctl real weight`, a process per update",
        updates,
        None,
        |i| {
            let weight = WEIGHTS[i % 2].to_string();
            let args = ["real", "weight", &real_text, &weight, "--vip", &vip_text];
            lab.lbctl(&opts.lbctl, &args).map(drop)
        },
    )
    .with_context(|| format!("lbctl log:\n{}", lab.lb_log()))?;

    let vip: VipSpec = vip_text.parse().map_err(|e| anyhow!("{vip_text}: {e}"))?;
    let mut requests = Vec::new();
    for weight in WEIGHTS {
        let real = RealRef {
            addr: IpAddr::V4(real),
            port: None,
        };
        let edit = Edit::Weight {
            vip: Some(vip),
            real,
            weight,
        };
        requests.push(serde_json::to_string(&Request::Edit { edit })? + "\n");
    }
    let socket = lab.lb_socket();
    let write = UnixStream::connect(&socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let mut read = BufReader::new(write.try_clone().context("cloning the admin socket")?);
    let per_request = timed(
        s,
        "weight updates over one admin-socket connection",
        updates,
        Some(500.0),
        |i| {
            (&write)
                .write_all(requests[i % 2].as_bytes())
                .context("sending the request")?;
            let mut answer = String::new();
            read.read_line(&mut answer).context("reading the answer")?;
            match serde_json::from_str(&answer)
                .with_context(|| format!("an answer that does not parse: {answer:?}"))?
            {
                Response::Done { .. } => Ok(()),
                other => bail!("lbctl answered {other:?}"),
            }
        },
    )
    .with_context(|| format!("lbctl log:\n{}", lab.lb_log()))?;
    // What a process per command costs without a map update: a status query.
    let status = timed(
        s,
        "`lbctl status`, a process per query (no update)",
        updates,
        None,
        |_| lab.lbctl(&opts.lbctl, &["status"]).map(drop),
    )?;
    s.notes.push(format!(
        "A runtime update took {per_request:.2} ms over the admin socket and {per_process:.1} ms \
         as a process of its own, where a process that changes nothing (`lbctl status`) takes \
         {status:.1} ms: the ring is rewritten in place (the reals-change figures above), so \
         no update waits for the kernel; a process per update costs what starting lbctl costs."
    ));
    Ok(())
}

/// Runs `update` `updates` times in a row; pushes updates per second (held to `goal` per
/// second, if any) and the median latency, which it returns (ms).
fn timed(
    s: &mut Section,
    what: &str,
    updates: usize,
    goal: Option<f64>,
    mut update: impl FnMut(usize) -> Result<()>,
) -> Result<f64> {
    let mut latencies = Vec::with_capacity(updates);
    let started = Instant::now();
    for i in 0..updates {
        let t = Instant::now();
        update(i).with_context(|| format!("{what}: update {i}"))?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let rate = updates as f64 / started.elapsed().as_secs_f64();
    let slowest = latencies.iter().copied().fold(0.0, f64::max);
    let median = median(latencies);
    let mut figure = Figure::new(format!("{what}: per second"), rate, Unit::PerSec)
        .note(format!("{updates} in a row"));
    if let Some(goal) = goal {
        figure = figure.target(format!("≥ {goal:.0}/s"), rate >= goal);
    }
    s.push(figure);
    s.push(
        Figure::new(format!("{what}: latency, median"), median, Unit::Ms)
            .note(format!("slowest {slowest:.2} ms")),
    );
    Ok(median)
}

fn lines(file: &str, title: &str, y_label: &str, x_label: &str, points: Vec<(f64, f64)>) -> Plot {
    Plot {
        file: file.into(),
        title: title.into(),
        y_label: y_label.into(),
        kind: PlotKind::Lines {
            x_label: x_label.into(),
            log_x: true,
            series: vec![Series {
                name: "dsr, maglev".into(),
                points,
            }],
        },
    }
}

/// The `i`th VIP besides the test one: 198.18.128.0 on, port 80/tcp.
fn other_vip(i: usize) -> VipSpec {
    let [hi, lo] = u16::try_from(i)
        .expect("fewer than 32 768 VIPs")
        .to_be_bytes();
    vip(&format!("198.18.{}.{lo}:80/tcp", 128 + hi))
}

/// `n` reals on the ingress segment, 198.18.4.1 on.
fn reals(n: usize) -> Vec<Real> {
    (0..n)
        .map(|i| {
            let addr = IpAddr::from([198, 18, 4 + (i / 250) as u8, (i % 250) as u8 + 1]);
            Real::on_segment(addr, [2, 0, 0, 0, (i >> 8) as u8, i as u8])
        })
        .collect()
}

/// A datapath serving the test VIP in dsr/maglev over `n` reals, under the bench harness.
fn datapath(n: usize) -> Result<BalancerBench> {
    let mut dp = Datapath::load()?;
    dp.set_interface(IFINDEX_A, lb_iface())?;
    let v = vip(TEST_VIP);
    dp.add_vip(v, &VipSettings::new(Mode::Dsr))?;
    dp.set_reals(&v, &reals(n))?;
    BalancerBench::new(dp)
}

/// Median ns per packet over RUNS kernel runs of `repeat`, after one run that makes the flow.
fn time(dp: &mut BalancerBench, frame: &[u8], repeat: u32) -> Result<f64> {
    let (action, _) = dp.run(BenchProgram::Balancer, frame, None, 1)?;
    ensure!(
        action == XDP_TX,
        "the first packet of the flow ended with action {action}, not TX"
    );
    let mut runs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (action, ns) = dp.run(BenchProgram::Balancer, frame, None, repeat)?;
        ensure!(
            action == XDP_TX,
            "an established flow's packet ended with action {action}, not TX"
        );
        runs.push(ns);
    }
    Ok(median(runs))
}

/// A line of /proc/meminfo, in KiB.
fn meminfo_kib(field: &str) -> Result<i64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/meminfo"))
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
            let table = maglev::build(&members, maglev::MAX_SIZE);
            let ns = t.elapsed().as_nanos() as f64;
            assert!(table.is_some());
            ns
        })
        .collect();
    median(runs)
}

/// A change of a maglev VIP's reals as a health check or `lbctl real weight` makes it: the
/// table built and written in place (one real of `reals` changing weight each time).
fn reals_change(n: usize) -> Result<f64> {
    let mut dp = Datapath::load()?;
    let v = vip("198.18.100.41:80/tcp");
    dp.add_vip(v, &VipSettings::new(Mode::Dsr))?;
    let mut list = reals(n);
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
