//! One mode of the demo: its lab, the balancer, one request traced, many driven, a failover.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use super::{failover, lb_view, observe, show, DemoArgs, DemoFacts};
use crate::declare::spec::Mode;
use lb_lab::{
    capture::{self, Frame, Point},
    drive_tcp,
    hops::{self, Trace},
    Lab, Netns, HOST_IFACE, VIP_ADDR, VIP_PORT,
};

/// What one mode's run found.
pub struct ModeReport {
    pub mode: Mode,
    pub trace: Trace,
    /// The LB's view of the traced request (`lbctl capture`): each frame it received for the
    /// VIP, with the verdict.
    pub lb: Vec<lb_view::Verdict>,
    pub facts: DemoFacts,
    pub failover: failover::Failover,
}

/// The health check the demo's balancer runs: quick, so the failover shows in a second.
const CHECK: &str = "tcp,inter=300ms,timeout=300ms,rise=2,fall=2";

pub fn run(
    mode: Mode,
    args: &DemoArgs,
    lbctl: &Path,
    stop: &AtomicBool,
    keep: bool,
) -> Result<ModeReport> {
    show::title(mode);
    let build = match mode {
        Mode::Dsr | Mode::OneArm => Lab::one_segment(3),
        Mode::Tunnel => Lab::routed(3),
        Mode::Nat => Lab::bridged(3),
        Mode::Router => Lab::two_subnets(3),
    };
    let mut lab = build.context("building the lab (needs root, iproute2 and ethtool)")?;
    show::lab(mode, &lab);
    interrupted(stop)?;
    let mut lb_args = vec![
        "--mode".to_string(),
        mode.name().into(),
        "--vip".into(),
        format!("{VIP_ADDR}:{VIP_PORT}/tcp"),
        "--check".into(),
        CHECK.into(),
    ];
    for r in lab.real_addrs() {
        lb_args.extend(["--real".into(), r.to_string()]);
    }
    if mode == Mode::Tunnel {
        show::command(
            "on every real: unwrap the IP-in-IP sent to it",
            "lbctl decap attach eth0",
            &[],
        );
        lab.start_decap(lbctl)?;
    }
    let head = format!(
        "lbctl attach {} {}",
        lab.lb_ifaces().join(" "),
        lb_args[..4].join(" ")
    );
    let more = [lb_args[4..6].join(" "), lb_args[6..].join(" ")];
    show::command("on the lb", &head, &more);
    lab.start_lb(lbctl, &lb_args)?;
    interrupted(stop)?;

    // The LB's view of the same request: its frames as received, and the verdicts.
    let lb_file = match &args.pcap {
        Some(dir) => {
            let dir = dir.join(mode.name());
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.join("lb-xdp.pcapng")
        }
        None => std::env::temp_dir().join(format!("{}-lb-xdp.pcapng", lab.lb.name())),
    };
    let lb_capture = lb_view::start(&lab, lbctl, &lb_file)?;
    let traced = trace_one(&lab);
    let command = lb_capture.command.clone();
    let verdicts = lb_capture.finish();
    if args.pcap.is_none() {
        // A temporary file; one left behind (already gone, or unreadable) harms nothing.
        let _temporary = std::fs::remove_file(&lb_file);
    }
    let (frames, trace) = traced?;
    if let Some(dir) = &args.pcap {
        write_pcaps(&dir.join(mode.name()), &frames)?;
    }
    show::trace(&trace);
    let lb = verdicts?;
    show::lb_view(&command, &lb);
    interrupted(stop)?;

    let facts = observe(&lab, args.requests as usize)?;
    let decapsulated = match mode {
        Mode::Tunnel => Some(
            (0..lab.reals.len())
                .map(|i| {
                    crate::stats::of_lab_host(&lab.reals[i]).map(|s| s.counters.forwarded.packets)
                })
                .sum::<Result<u64>>()?,
        ),
        _ => None,
    };
    show::facts(&facts, mode, decapsulated);
    interrupted(stop)?;

    let failover = failover::run(&mut lab, lbctl, args.requests as usize)?;
    show::failover(&failover);
    if keep {
        show::explore(&lab, lbctl);
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    lab.stop_lb()?;
    Ok(ModeReport {
        mode,
        trace,
        lb,
        facts,
        failover,
    })
}

fn interrupted(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted: the lab is torn down");
    }
    Ok(())
}

/// One request, captured at the client and at every real (and the router, where there is
/// one), and its hops.
fn trace_one(lab: &Lab) -> Result<(Vec<Frame>, Trace)> {
    let mut points = vec![Point {
        ns: &lab.client,
        iface: HOST_IFACE,
        label: "client eth0".into(),
    }];
    if let Some(router) = &lab.router {
        points.push(Point {
            ns: router,
            iface: HOST_IFACE,
            label: "router eth0".into(),
        });
    }
    for (i, real) in lab.reals.iter().enumerate() {
        points.push(Point {
            ns: real,
            iface: HOST_IFACE,
            label: format!("r{} eth0", i + 1),
        });
    }
    let (answered, frames) = capture::capture(&points, || drive_tcp(&lab.client, Lab::vip(), 1))?;
    if let Some(Err(e)) = answered?.first() {
        bail!("the traced request was not answered: {e}");
    }
    let path: Vec<String> = points.iter().map(|p| p.label.clone()).collect();
    let trace = hops::trace(
        &frames,
        |p| p.starts_with(b"request "),
        |p| p.len() > 1 && p[0] == b'r' && p[1].is_ascii_digit(),
        &path,
        &mac_names(lab)?,
    );
    Ok((frames, trace))
}

/// Every host of the lab by the MACs of its interfaces.
fn mac_names(lab: &Lab) -> Result<BTreeMap<[u8; 6], String>> {
    let mut hosts: Vec<(&Netns, String)> =
        vec![(&lab.client, "client".into()), (&lab.lb, "lb".into())];
    if let Some(r) = &lab.router {
        hosts.push((r, "router".into()));
    }
    for (i, r) in lab.reals.iter().enumerate() {
        hosts.push((r, format!("r{}", i + 1)));
    }
    let mut names = BTreeMap::new();
    for (ns, name) in hosts {
        for (_, mac) in ns.macs()? {
            names.insert(mac, name.clone());
        }
    }
    Ok(names)
}

/// One pcap file per capture point ("client eth0" → client-eth0.pcap).
fn write_pcaps(dir: &Path, frames: &[Frame]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut by_point: BTreeMap<&str, Vec<&Frame>> = BTreeMap::new();
    for f in frames {
        by_point.entry(&f.at).or_default().push(f);
    }
    for (point, frames) in by_point {
        let path = dir.join(format!("{}.pcap", point.replace(' ', "-")));
        let file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut pcap = pcap_file::pcap::PcapWriter::new(file).context("writing a pcap header")?;
        for f in frames {
            let when = f
                .when
                .duration_since(std::time::UNIX_EPOCH)
                .context("a capture timestamp before 1970")?;
            let packet = pcap_file::pcap::PcapPacket::new(when, f.bytes.len() as u32, &f.bytes);
            pcap.write_packet(&packet)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    println!("captures written to {}", dir.display());
    Ok(())
}
