//! Forwarding through veth (`tests::veth_path`): generator → LB → sink, packets per second
//! arriving at the sink, for a bare XDP redirect (the limit of the path), the balancer in
//! each mode, and nftables DNAT (the kernel NAT many users would pick instead).

use anyhow::{anyhow, Context as _, Result};
use lb_common::Reason;
use lb_userspace::declare::spec::Mode;
use tests::veth_path::{Forwarder, Tuples, VethPath, BATCH, FLOWS};

use crate::{
    per_packet::median,
    report::{Figure, Plot, PlotKind, Section, Target, Unit},
    Opts,
};

const RUNS: usize = 3;
/// The CPU the generator (and so the whole path) runs on.
const CPU: usize = 1;

pub fn run(opts: &Opts) -> Result<Section> {
    let frames: u32 = if opts.quick { 300_000 } else { 2_000_000 };
    let mut s = Section::new(
        "Forwarding through veth (generator → LB → sink)",
        format!(
            "Three namespaces joined by veth pairs. The generator sends {frames} 64-byte UDP \
             frames per run (BPF_PROG_RUN live frames, batches of {BATCH}, source ports cycling \
             over {FLOWS} flows) into the LB's eth0; what arrives at the sink's XDP counter, \
             divided by the generator's time, is the figure (median of {RUNS} runs, after a \
             warm-up run that makes the flows). Generator, LB and sink share CPU {CPU} (veth \
             hands frames on in the sending CPU's softirq), so the figures compare forwarders \
             on one path; they are not a NIC's line rate. Then the same with every frame a \
             new flow (source port and source address counting on, the IPv4 checksum kept \
             right), where nftables makes a conntrack entry per frame and the balancer a \
             flow entry."
        ),
    );
    let mut bars = Vec::new();
    let (mut limit, mut nft) = (None, None);
    let mut balancer = Vec::new();
    for fwd in [
        Forwarder::Redirect,
        Forwarder::Balancer(Mode::Dsr),
        Forwarder::Balancer(Mode::Tunnel),
        Forwarder::Balancer(Mode::Nat),
        Forwarder::Balancer(Mode::Router),
        Forwarder::Balancer(Mode::OneArm),
        Forwarder::Nftables,
    ] {
        let (pps, share, _) = measure(fwd, frames, Tuples::Cycled)?;
        let mut f = Figure::new(fwd.name(), pps, Unit::PacketsPerSec)
            .note(format!("{:.1} % of sent frames arrived", share * 100.0));
        match fwd {
            Forwarder::Redirect => limit = Some(pps),
            Forwarder::Nftables => nft = Some(pps),
            Forwarder::Balancer(_) => {
                if let Some(l) = limit {
                    f.note = format!("{:.2}× the limit; {}", pps / l, f.note);
                }
                balancer.push(s.figures.len());
            }
        }
        bars.push((fwd.name(), pps / 1e3));
        s.push(f);
    }
    let nft = nft.ok_or_else(|| anyhow!("nftables was not measured"))?;
    let limit = limit.ok_or_else(|| anyhow!("the bare redirect was not measured"))?;
    for i in balancer {
        let f = &mut s.figures[i];
        let ratio = f.value / nft;
        f.note = format!("{ratio:.1}× nftables; {}", f.note);
        // Issue 13's goals for every mode, both in the same run.
        f.target = Some(Target {
            goal: "≥ 0.5× the bare redirect and ≥ 4× nftables DNAT".into(),
            met: f.value >= 0.5 * limit && ratio >= 4.0,
        });
    }
    new_flows(&mut s, frames)?;
    s.plots.push(Plot {
        file: "forwarding.png".into(),
        title: "veth path: packets/s arriving at the sink (one CPU)".into(),
        y_label: "thousand packets per second".into(),
        kind: PlotKind::Bars(bars),
    });
    Ok(s)
}

/// Packets per second arriving at the sink through `fwd` (median of RUNS runs after a
/// warm-up run), the share of sent frames that arrived, and the path (for its counters).
fn measure(fwd: Forwarder, frames: u32, tuples: Tuples) -> Result<(f64, f64, VethPath)> {
    let mut path =
        VethPath::build(fwd).with_context(|| format!("building the path for {}", fwd.name()))?;
    let mut rates = Vec::new();
    let mut shares = Vec::new();
    for round in 0..=RUNS {
        let sent = path.send(frames, CPU, tuples)?;
        if round > 0 {
            rates.push(sent.arrived as f64 / sent.took.as_secs_f64());
            shares.push(sent.arrived as f64 / f64::from(frames));
        }
    }
    Ok((median(rates), median(shares), path))
}

/// Every frame a new flow: the balancer in each mode against nftables DNAT, whose conntrack
/// makes an entry per flow as the balancer's flow table does (dsr and tunnel too: no flood
/// guard is set).
fn new_flows(s: &mut Section, frames: u32) -> Result<()> {
    let (nft, nft_share, _) = measure(Forwarder::Nftables, frames, Tuples::New)?;
    let mut rows = Vec::new();
    for mode in [
        Mode::Dsr,
        Mode::Tunnel,
        Mode::Nat,
        Mode::Router,
        Mode::OneArm,
    ] {
        let fwd = Forwarder::Balancer(mode);
        let (pps, share, path) = measure(fwd, frames, Tuples::New)?;
        let ratio = pps / nft;
        let exhausted = path.lb_counted(Reason::SnatExhausted)?;
        let exhausted = if exhausted > 0 {
            format!(
                "; {exhausted} new flows counted drop_snat_exhausted: the pool's ports are held \
                 for the UDP timeout, and the first run took them all"
            )
        } else {
            String::new()
        };
        rows.push(
            Figure::new(
                format!("{}, every frame a new flow", fwd.name()),
                pps,
                Unit::PacketsPerSec,
            )
            .note(format!(
                "{ratio:.1}× nftables; {:.1} % of sent frames arrived{exhausted}",
                share * 100.0
            ))
            .target("≥ 3× nftables DNAT (conntrack), same run", ratio >= 3.0),
        );
    }
    s.push(
        Figure::new(
            format!("{}, every frame a new flow", Forwarder::Nftables.name()),
            nft,
            Unit::PacketsPerSec,
        )
        .note(format!(
            "{:.1} % of sent frames arrived; each frame a new conntrack entry (the source port \
             and the source address's last two bytes count on: 2^32 tuples, none twice)",
            nft_share * 100.0
        )),
    );
    for f in rows {
        s.push(f);
    }
    Ok(())
}
