//! `cargo xtask bench`: the balancer measured against the limit of its path and against
//! what a user would pick instead, on this machine in one run. Sections:
//!
//! - `per-packet`: BPF_PROG_TEST_RUN ns per packet, every mode × new/established flow, next
//!   to the floor of the path (a program that only swaps MACs and sends the frame back).
//! - `forwarding`: packets/s through veth (generator → LB → sink) for bare XDP redirect, the
//!   balancer per mode, and nftables DNAT.
//! - `tcp`: real TCP through the LB (wrk against nginx reals): the balancer, nftables DNAT,
//!   HAProxy and no LB.
//! - `scale`: ns per packet as VIPs, reals and flows grow; Maglev rebuilds; control-plane
//!   updates per second.
//!
//! Writes target/bench/report.md, report.json and the PNG plots; prints figures as it goes.

mod forwarding;
mod per_packet;
mod plot;
mod profile;
mod report;
mod scale;
mod tcp;

use std::path::PathBuf;

use anyhow::{bail, Result};
use report::{Report, Section};

/// What the sections share.
pub struct Opts {
    /// Fewer repeats and points: a minute instead of several, for trying the bench out.
    pub quick: bool,
    /// The lbctl binary the lab runs (`cargo xtask bench` builds a release one).
    pub lbctl: PathBuf,
}

type Run = fn(&Opts) -> Result<Section>;

const SECTIONS: [(&str, Run); 4] = [
    ("per-packet", per_packet::run),
    ("forwarding", forwarding::run),
    ("tcp", tcp::run),
    ("scale", scale::run),
];

fn usage() -> String {
    let names: Vec<&str> = SECTIONS.iter().map(|s| s.0).collect();
    format!(
        "usage: bench [--quick] [--only SECTION,...]   sections: {}",
        names.join(", ")
    )
}

fn main() -> Result<()> {
    tests::require_root();
    let mut quick = false;
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--only" => {
                let Some(list) = args.next() else {
                    bail!("--only needs a list of sections\n{}", usage());
                };
                only = Some(list.split(',').map(str::to_string).collect());
            }
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{}", usage()),
        }
    }
    if let Some(only) = &only {
        for name in only {
            if !SECTIONS.iter().any(|s| s.0 == name) {
                bail!("no section {name:?}\n{}", usage());
            }
        }
    }
    let opts = Opts {
        quick,
        lbctl: tests::lbctl(),
    };
    let mut report = Report {
        machine: machine()?,
        sections: Vec::new(),
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    for (name, run) in SECTIONS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        println!("\n== {name} ==");
        let section = run(&opts).map_err(|e| e.context(format!("bench section {name}")))?;
        report.sections.push(section);
        // Written after every section: a later failure keeps what was measured.
        report.write(&dir)?;
    }
    println!("\nwritten: {}", dir.join("report.md").display());
    Ok(())
}

/// The kernel, the CPUs and the build, for the report's first line.
fn machine() -> Result<String> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")?;
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_string();
    let cpus = lb_userspace::datapath::possible_cpus()?;
    Ok(format!(
        "Linux {}, {cpus} × {model}, release build, {}.",
        kernel.trim(),
        time_now()
    ))
}

fn time_now() -> String {
    lb_lab::programs::program("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
