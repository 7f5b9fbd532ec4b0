//! `lbctl`: an L4 load balancer on XDP.

use std::{net::IpAddr, process::ExitCode, time::Duration};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use lb_userspace::{
    datapath::{AttachMode, Datapath, Real},
    neigh,
    route::{self, NextHop},
    spec::{Mode, VipSpec},
    stats,
};
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

/// An L4 load balancer on XDP: rewrites packets for virtual services (VIPs) in the kernel
/// and sends them to real servers.
#[derive(Parser)]
#[command(name = "lbctl", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the balancer on an interface and forward VIP traffic until SIGINT/SIGTERM, then
    /// detach.
    Attach(AttachArgs),
    /// Print the counters of the balancer attached to an interface: packets forwarded, and
    /// every packet not forwarded by reason.
    Stats {
        /// Interface the balancer is attached to.
        iface: String,
    },
    /// On a real server of tunnel-mode VIPs: unwrap the LB's IP-in-IP packets.
    #[command(subcommand)]
    Decap(DecapCommand),
    /// Build a lab of network namespaces (client, LB, three reals), balance real TCP
    /// connections through it and print what happened. Needs root; leaves nothing behind.
    Demo(lb_userspace::lab::demo::DemoArgs),
}

#[derive(Subcommand)]
enum DecapCommand {
    /// Attach the decapsulation program to an interface and keep it there until
    /// SIGINT/SIGTERM: IP-in-IP (and 6in4) sent to the interface's IPv4 address is stripped
    /// of its outer header and passed up the stack; all other traffic passes untouched.
    Attach {
        /// Interface the tunnelled packets arrive on.
        iface: String,
    },
}

#[derive(Args)]
struct AttachArgs {
    /// Interface that receives the VIP traffic (and, in dsr mode, reaches the reals).
    iface: String,
    /// Forwarding mode of the VIPs.
    #[arg(long, value_enum, default_value_t = Mode::Dsr)]
    mode: Mode,
    /// Virtual service, ADDRESS:PORT/PROTO (tcp or udp). Repeat for several.
    #[arg(long = "vip", required = true, value_name = "VIP")]
    vips: Vec<VipSpec>,
    /// Real server address; every VIP is balanced over all of them. Repeat for several.
    #[arg(long = "real", required = true, value_name = "ADDRESS")]
    reals: Vec<IpAddr>,
    /// How long to wait for a real to answer ARP/ND before giving up.
    #[arg(long, default_value = "3", value_name = "SECONDS")]
    resolve_timeout: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Attach(args) => rt.block_on(attach(args)),
        Command::Stats { iface } => {
            rt.block_on(async { stats::read_attached(&iface).await.map(|s| print!("{s}")) })
        }
        Command::Decap(DecapCommand::Attach { iface }) => rt.block_on(decap(&iface)),
        Command::Demo(args) => lb_userspace::lab::demo::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn attach(args: AttachArgs) -> Result<()> {
    // Signals first: a Ctrl-C during set-up is handled (after it) instead of killing lbctl
    // half-way with neighbour entries added.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    validate(&args)?;

    // Frames go to each real's next hop: the real itself on the segment, else its gateway.
    let hops = route::next_hops(&args.iface, &args.reals).await?;
    if args.mode == Mode::Dsr {
        if let Some((real, hop)) = args
            .reals
            .iter()
            .zip(&hops)
            .find(|(_, h)| matches!(h, NextHop::Via(_)))
        {
            bail!(
                "dsr needs reals on {}'s segment, but {real} is routed via {}: use --mode tunnel for routed reals",
                args.iface,
                hop.addr()
            );
        }
    }
    let mut hop_addrs: Vec<IpAddr> = Vec::new();
    for hop in &hops {
        if !hop_addrs.contains(&hop.addr()) {
            hop_addrs.push(hop.addr());
        }
    }
    let (macs, added) = neigh::resolve_macs(
        &args.iface,
        &hop_addrs,
        Duration::from_secs(args.resolve_timeout),
    )
    .await?;
    let reals: Vec<Real> = args
        .reals
        .iter()
        .zip(&hops)
        .map(|(addr, hop)| {
            let i = hop_addrs
                .iter()
                .position(|a| *a == hop.addr())
                .unwrap_or_default();
            Real {
                addr: *addr,
                mac: macs[i],
            }
        })
        .collect();
    let (dp, how) = match serve(&args, &reals) {
        Ok(served) => served,
        Err(e) => {
            added.remove().await;
            return Err(e);
        }
    };
    for r in &reals {
        info!(real = %r.addr, mac = %fmt_mac(&r.mac), "real");
    }
    let vips: Vec<String> = args.vips.iter().map(|v| v.to_string()).collect();
    info!(
        iface = %args.iface,
        mode = ?args.mode,
        xdp = match how { AttachMode::Native => "native", AttachMode::Generic => "generic" },
        vips = %vips.join(","),
        "attached; forwarding until SIGINT/SIGTERM"
    );

    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
    let counters = dp.counters()?;
    drop(dp);
    info!(iface = %args.iface, forwarded = counters.forwarded.packets, "detached");
    Ok(())
}

async fn decap(iface: &str) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut dp = Datapath::load()?;
    let how = dp.attach_decap(iface)?;
    info!(
        %iface,
        xdp = match how { AttachMode::Native => "native", AttachMode::Generic => "generic" },
        "attached; decapsulating until SIGINT/SIGTERM"
    );
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
    let counters = dp.counters()?;
    drop(dp);
    info!(%iface, decapsulated = counters.forwarded.packets, "detached");
    Ok(())
}

/// Everything that can be checked before the kernel is touched.
fn validate(args: &AttachArgs) -> Result<()> {
    if args.mode == Mode::Tunnel {
        if let Some(v6) = args.vips.iter().find(|v| v.addr.is_ipv6()) {
            bail!("VIP {v6}: tunnel mode supports IPv4 VIPs for now; use dsr for IPv6");
        }
    }
    for real in &args.reals {
        for vip in &args.vips {
            if real.is_ipv4() != vip.addr.is_ipv4() {
                bail!("real {real} and VIP {vip} are of different IP families; use reals of the VIP's family");
            }
        }
    }
    if has_duplicates(&args.reals) {
        bail!("a real is listed twice; list each real once");
    }
    if has_duplicates(&args.vips) {
        bail!("a VIP is listed twice; list each VIP once");
    }
    Ok(())
}

fn has_duplicates<T: Ord>(items: &[T]) -> bool {
    let unique: std::collections::BTreeSet<&T> = items.iter().collect();
    unique.len() != items.len()
}

/// Loads the datapath, configures every VIP and attaches.
fn serve(args: &AttachArgs, reals: &[Real]) -> Result<(Datapath, AttachMode)> {
    let mut dp = Datapath::load()?;
    for vip in &args.vips {
        dp.add_vip(*vip, args.mode)?;
        dp.set_reals(vip, reals)?;
    }
    let how = dp.attach(&args.iface)?;
    Ok((dp, how))
}

fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
