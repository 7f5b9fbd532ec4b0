//! `lbctl demo`: the L4 modes side by side on real packets, for someone learning them. For
//! each mode the lab it needs is built, a VIP attached, one request traced hop by hop (what
//! each hop changed), many requests driven (what the reals saw, whether replies crossed the
//! LB, the spread) and a real's server stopped (its health check takes it out, requests go
//! on being answered). Ctrl-C stops at the next step and tears everything down.

mod failover;
pub mod lb_view;
mod mode;
mod show;

pub use failover::Failover;
pub use mode::ModeReport;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc},
};

use anyhow::{bail, Context as _, Result};
use lb_common::Reason;

use crate::declare::spec::Mode;
use lb_lab::{drive_tcp, Lab};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// TCP connections the client makes to the VIP, per mode.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub requests: u32,
    /// Show one mode [default: all five, one after the other].
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Write what each capture point saw of the traced request to DIR/MODE/POINT.pcap (opens
    /// in Wireshark and tcpdump -r).
    #[arg(long, value_name = "DIR")]
    pub pcap: Option<PathBuf>,
    /// Leave the (last) lab up, with the commands to explore it by hand, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
}

/// What the demo observed of many requests; printed, and checked by the tests.
#[derive(Debug)]
pub struct DemoFacts {
    pub requests: usize,
    pub answered: usize,
    pub per_real: BTreeMap<String, usize>,
    pub client_addrs_seen: Vec<String>,
    /// Client → real packets the LB forwarded.
    pub lb_forwarded: u64,
    /// Real → client packets the LB forwarded (nat, router, one-arm).
    pub lb_replies: u64,
    pub lb_not_vip: u64,
    /// Why the first unanswered request failed.
    pub first_error: Option<String>,
}

pub const ALL_MODES: [Mode; 5] = [
    Mode::Dsr,
    Mode::Tunnel,
    Mode::Nat,
    Mode::Router,
    Mode::OneArm,
];

pub fn run(args: &DemoArgs) -> Result<()> {
    let lbctl = std::env::current_exe().context("locating the lbctl binary")?;
    // Ctrl-C (and SIGTERM) end the demo at its next step; the labs' guards then clean up.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let modes: Vec<Mode> = args.mode.map_or(ALL_MODES.to_vec(), |m| vec![m]);
    let mut reports = Vec::new();
    for (i, mode) in modes.iter().enumerate() {
        let last = i + 1 == modes.len();
        let report = mode::run(*mode, args, &lbctl, &stop, args.keep && last)?;
        reports.push(report);
    }
    if reports.len() > 1 {
        show::summary(&reports);
    }
    for r in &reports {
        if r.facts.answered != r.facts.requests {
            bail!(
                "{}: {} of {} requests were not answered; the first: {}",
                r.mode,
                r.facts.requests - r.facts.answered,
                r.facts.requests,
                r.facts.first_error.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(())
}

/// One mode of the demo, with `lbctl` the binary to run in the lab: what the tests check.
pub fn run_mode(
    mode: Mode,
    requests: u32,
    lbctl: &std::path::Path,
    pcap: Option<PathBuf>,
) -> Result<ModeReport> {
    let args = DemoArgs {
        requests,
        mode: Some(mode),
        pcap,
        keep: false,
    };
    mode::run(mode, &args, lbctl, &AtomicBool::new(false), false)
}

/// Drives `requests` connections through a lab whose balancer runs, and reads the counters.
pub fn observe(lab: &Lab, requests: usize) -> Result<DemoFacts> {
    let results = drive_tcp(&lab.client, Lab::vip(), requests)?;
    let mut per_real = BTreeMap::new();
    let mut seen = Vec::new();
    for reply in results.iter().flatten() {
        *per_real.entry(reply.real.clone()).or_insert(0) += 1;
        let addr = reply.client_seen.to_string();
        if !seen.contains(&addr) {
            seen.push(addr);
        }
    }
    let stats = crate::stats::of_lab_host(&lab.lb)?;
    Ok(DemoFacts {
        requests,
        answered: results.iter().filter(|r| r.is_ok()).count(),
        per_real,
        client_addrs_seen: seen,
        lb_forwarded: stats.counters.forwarded.packets,
        lb_replies: stats.counters.replies.packets,
        lb_not_vip: stats.counters.reason(Reason::NotVip).packets,
        first_error: results.iter().find_map(|r| r.as_ref().err().cloned()),
    })
}
