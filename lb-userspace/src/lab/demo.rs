//! `lbctl demo`: the lab, driven with real TCP connections in one forwarding mode, and what
//! happened. Each mode gets the topology it needs (see `topology`).

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use lb_common::Reason;

use super::{drive_tcp, Lab, CLIENT_ADDR, LB_ADDR, LB_B_ADDR, VIP_ADDR, VIP_PORT};
use crate::spec::Mode;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// TCP connections the client makes to the VIP.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub requests: u32,
    /// Forwarding mode of the VIP.
    #[arg(long, value_enum, default_value_t = Mode::Dsr)]
    pub mode: Mode,
}

/// What the demo observed; printed by [`run`], checked by the tests.
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

/// What each mode is, in a line, and the lab it needs.
fn describe(mode: Mode) -> (&'static str, &'static str) {
    match mode {
        Mode::Dsr => (
            "dsr (direct server return)",
            "one segment: client, LB and reals on one Linux bridge, 198.18.0.0/24",
        ),
        Mode::Tunnel => (
            "tunnel (IP-in-IP to the reals)",
            "one segment: client, LB and reals on one Linux bridge, 198.18.0.0/24",
        ),
        Mode::Nat => (
            "nat (bridge/transparent: the LB bridges clients and reals)",
            "the LB bridges its eth0 (clients) and eth1 (reals), one subnet 198.18.0.0/24",
        ),
        Mode::Router => (
            "router (nat as an L3 hop between two subnets)",
            "clients on 198.18.0.0/24 (LB eth0), reals on 198.18.1.0/24 (LB eth1, their gateway)",
        ),
        Mode::OneArm => (
            "one-arm (full NAT: the reals see the LB as the client)",
            "one segment: client, LB and reals on one Linux bridge, 198.18.0.0/24",
        ),
    }
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let lbctl = std::env::current_exe().context("locating the lbctl binary")?;
    let (what, topology) = describe(args.mode);
    println!("lbctl demo: {what}, on real packets\n");
    let build = match args.mode {
        Mode::Dsr | Mode::Tunnel | Mode::OneArm => Lab::one_segment(3),
        Mode::Nat => Lab::bridged(3),
        Mode::Router => Lab::two_subnets(3),
    };
    let mut lab = build.context("building the lab (needs root, iproute2 and ethtool)")?;
    let reals = lab.real_addrs();
    println!("lab ({topology}):");
    println!("  client {CLIENT_ADDR}  ->  VIP {VIP_ADDR}:{VIP_PORT}/tcp (routed via the LB)");
    match args.mode {
        Mode::Router => println!("  lb     {LB_ADDR} (eth0), {LB_B_ADDR} (eth1)  XDP on both"),
        Mode::Nat => println!("  lb     {LB_ADDR} on br0 = eth0 + eth1  XDP on both ports"),
        _ => println!("  lb     {LB_ADDR}   XDP on eth0"),
    }
    let direct = matches!(args.mode, Mode::Dsr | Mode::Tunnel);
    for (i, r) in reals.iter().enumerate() {
        let setup = if direct {
            "VIP on lo, arp_ignore=1 arp_announce=2"
        } else {
            "nothing special"
        };
        println!(
            "  r{}     {r}  {setup}, TCP server on port {VIP_PORT}",
            i + 1
        );
    }
    let mut lb_args = vec![
        "--mode".into(),
        args.mode.name().into(),
        "--vip".into(),
        format!("{VIP_ADDR}:{VIP_PORT}/tcp"),
    ];
    for r in &reals {
        lb_args.extend(["--real".into(), r.to_string()]);
    }
    if args.mode == Mode::Tunnel {
        println!("\n# on every real: unwrap the IP-in-IP sent to it");
        println!("$ lbctl decap attach eth0");
        lab.start_decap(&lbctl)?;
    }
    // The VIP on the first line, the reals on the next: 100 columns hold both.
    let (head, reals_args) = lb_args.split_at(4);
    println!("# on the lb:");
    println!(
        "$ lbctl attach {} {} \\",
        lab.lb_ifaces().join(" "),
        head.join(" ")
    );
    println!("      {}", reals_args.join(" "));
    lab.start_lb(&lbctl, &lb_args)?;
    let facts = observe(&lab, args.requests as usize)?;
    let decapsulated = match args.mode {
        Mode::Tunnel => Some(
            (0..reals.len())
                .map(|i| lab.real_stats(i).map(|s| s.counters.forwarded.packets))
                .sum::<Result<u64>>()?,
        ),
        _ => None,
    };
    lab.stop_lb()?;
    print_facts(&facts, args.mode, decapsulated);
    println!(
        "\nlbctl detached on SIGTERM; XDP still attached to the LB's eth0: {}",
        lab.lb_xdp_attached()?
    );
    if facts.answered != facts.requests {
        bail!(
            "{} of {} requests were not answered; the first: {}",
            facts.requests - facts.answered,
            facts.requests,
            facts.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
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
    let stats = lab.lb_stats()?;
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

fn print_facts(f: &DemoFacts, mode: Mode, decapsulated: Option<u64>) {
    println!(
        "\nclient -> VIP: {} TCP connections, {} answered",
        f.requests, f.answered
    );
    println!("spread over the reals:");
    for (real, n) in &f.per_real {
        println!(
            "  {real}: {n:>5}  ({:.0}%)",
            *n as f64 * 100.0 / f.requests as f64
        );
    }
    let why = match mode {
        Mode::Dsr => "DSR leaves the IP header alone",
        Mode::Tunnel => "the inner packet is the client's own",
        Mode::Nat | Mode::Router => "only the destination was translated",
        Mode::OneArm => "the source was translated to the LB's SNAT pool",
    };
    println!(
        "client address the reals saw: {}  ({why})",
        f.client_addrs_seen.join(", ")
    );
    let how = match mode {
        Mode::Dsr => "only Ethernet addresses rewritten",
        Mode::Tunnel => "wrapped in an outer IPv4 header, lb -> real",
        Mode::Nat => "destination -> the real's address",
        Mode::Router => "destination -> the real's, TTL - 1",
        Mode::OneArm => "destination -> the real, source -> the LB's",
    };
    println!(
        "at the LB: {} packets to the VIP forwarded ({how}),",
        f.lb_forwarded
    );
    if let Some(d) = decapsulated {
        println!("at the reals: {d} packets unwrapped by the decap program,");
    }
    if mode.is_stateful() {
        println!(
            "           {} replies forwarded back, the VIP restored as their source:",
            f.lb_replies
        );
        println!("           the replies crossed the LB.");
    } else {
        println!(
            "           {} packets to other destinations: the replies went from the reals",
            f.lb_not_vip
        );
        println!("           straight to the client without crossing the LB.");
    }
}
