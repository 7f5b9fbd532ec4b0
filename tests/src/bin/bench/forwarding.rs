//! Forwarding through veth (`tests::veth_path`): generator → LB → sink, packets per second
//! arriving at the sink, for a bare XDP redirect (the limit of the path), the balancer in
//! each mode, and nftables DNAT (the kernel NAT many users would pick instead).

use anyhow::{anyhow, Context as _, Result};
use lb_userspace::declare::spec::Mode;
use tests::veth_path::{Forwarder, VethPath, BATCH, FLOWS};

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
             on one path; they are not a NIC's line rate."
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
        let mut path = VethPath::build(fwd)
            .with_context(|| format!("building the path for {}", fwd.name()))?;
        let mut rates = Vec::new();
        let mut shares = Vec::new();
        for round in 0..=RUNS {
            let sent = path.send(frames, CPU)?;
            if round > 0 {
                rates.push(sent.arrived as f64 / sent.took.as_secs_f64());
                shares.push(sent.arrived as f64 / f64::from(frames));
            }
        }
        let pps = median(rates);
        let mut f = Figure::new(fwd.name(), pps, Unit::PacketsPerSec).note(format!(
            "{:.1} % of sent frames arrived",
            median(shares) * 100.0
        ));
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
    s.plots.push(Plot {
        file: "forwarding.png".into(),
        title: "veth path: packets/s arriving at the sink (one CPU)".into(),
        y_label: "thousand packets per second".into(),
        kind: PlotKind::Bars(bars),
    });
    Ok(s)
}
