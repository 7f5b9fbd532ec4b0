//! `lbctl`: an L4 load balancer on XDP.

use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use lb_common::Timeouts;
use lb_userspace::{
    config, daemon,
    datapath::{self, AttachMode, Datapath},
    health::Check,
    maglev,
    service::{self, Service, VipSettings},
    spec::{Balance, HashFields, Mode, PortRange, RealSpec, VipSpec},
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
    /// Load the balancer on one or more interfaces and forward VIP traffic until
    /// SIGINT/SIGTERM, then detach.
    Attach(Box<AttachArgs>),
    /// Check a configuration file without touching anything: every error names the file,
    /// line and field.
    CheckConfig {
        /// The TOML file (see lbctl.example.toml).
        file: PathBuf,
    },
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
    /// Interfaces to attach to: where VIP traffic arrives and reals are reached. Name several
    /// when the LB sits between networks (router mode: the clients' and the reals' side;
    /// nat as a bridge: its ports).
    #[arg(required = true, value_name = "IFACE")]
    ifaces: Vec<String>,
    /// Serve the VIPs of this file (TOML, see lbctl.example.toml), each with its own mode,
    /// instead of --vip/--real. SIGHUP reloads it: reals, weights and drains change at once,
    /// established flows stay on the reals that stay.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["vips", "reals", "snat_pool", "snat_ports"])]
    config: Option<PathBuf>,
    /// Forwarding mode of the --vip VIPs.
    #[arg(long, value_enum, default_value_t = Mode::Dsr)]
    mode: Mode,
    /// How new flows are spread over the reals.
    #[arg(long, value_enum, default_value_t = Balance::Maglev)]
    balance: Balance,
    /// maglev: what the flow hash covers.
    #[arg(long, value_enum, default_value_t = HashFields::FiveTuple)]
    hash: HashFields,
    /// maglev and source: the table's size, a prime; larger spreads finer (at least the
    /// number of reals; 100 slots per real or more is good).
    #[arg(long, value_name = "PRIME", default_value_t = maglev::DEFAULT_SIZE)]
    maglev_size: u32,
    /// Virtual service, ADDRESS:PORT/PROTO (tcp or udp). Repeat for several.
    #[arg(long = "vip", value_name = "VIP", required_unless_present = "config")]
    vips: Vec<VipSpec>,
    /// Real server, ADDRESS or ADDRESS:PORT (a port other than the VIP's needs nat, router or
    /// one-arm), then `,weight=N` (0-256, default 1; 0 drains); every --vip is balanced over
    /// all of them. Repeat for several.
    #[arg(long = "real", value_name = "REAL", required_unless_present = "config")]
    reals: Vec<RealSpec>,
    /// one-arm: LB-owned source addresses for the flows [default: the address of the
    /// interface the reals are reached through].
    #[arg(long, value_name = "ADDRESS,...", value_delimiter = ',')]
    snat_pool: Vec<IpAddr>,
    /// one-arm: source ports for the flows.
    #[arg(long, value_name = "MIN-MAX", default_value_t = PortRange::SNAT_DEFAULT)]
    snat_ports: PortRange,
    /// Check the reals' health, HAProxy-like: `tcp`, `http,path=/health,status=200` or
    /// `udp,payload=ping`, then `,inter=2s,fastinter=..,downinter=..,rise=2,fall=3,timeout=..,
    /// port=N`. A real failing `fall` checks in a row is down (its flows move) until `rise`
    /// checks pass.
    #[arg(long, value_name = "CHECK")]
    check: Option<Check>,
    /// With no real up, pass new flows to the LB's own stack instead of dropping them.
    #[arg(long)]
    pass_when_empty: bool,
    /// Seconds a TCP flow lives without packets (nat, router, one-arm).
    #[arg(long, value_name = "SECONDS", default_value_t = Timeouts::DEFAULT.tcp)]
    tcp_timeout: u32,
    /// Seconds a TCP flow lives without packets once a FIN was seen.
    #[arg(long, value_name = "SECONDS", default_value_t = Timeouts::DEFAULT.tcp_fin)]
    tcp_fin_timeout: u32,
    /// Seconds a UDP flow lives without packets.
    #[arg(long, value_name = "SECONDS", default_value_t = Timeouts::DEFAULT.udp)]
    udp_timeout: u32,
    /// How long to wait for a real to answer ARP/ND before giving up.
    #[arg(long, default_value = "3", value_name = "SECONDS")]
    resolve_timeout: u64,
}

impl AttachArgs {
    /// The services the flags name, checked.
    fn services(&self) -> Result<Vec<Service>> {
        let cpus = datapath::possible_cpus()?;
        let settings = VipSettings {
            mode: self.mode,
            balance: self.balance,
            hash: self.hash,
            maglev_size: self.maglev_size,
            timeouts: Timeouts {
                tcp: self.tcp_timeout,
                tcp_fin: self.tcp_fin_timeout,
                udp: self.udp_timeout,
            },
            snat_pool: self.snat_pool.clone(),
            snat_ports: self.snat_ports,
            check: self.check.clone(),
            pass_when_empty: self.pass_when_empty,
        };
        let services: Vec<Service> = self
            .vips
            .iter()
            .map(|vip| Service {
                vip: *vip,
                settings: settings.clone(),
                reals: self.reals.clone(),
            })
            .collect();
        service::validate(&services, cpus)?;
        Ok(services)
    }
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
        Command::Attach(args) => rt.block_on(attach(*args)),
        Command::CheckConfig { file } => check_config(&file),
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
    let source = match &args.config {
        Some(path) => daemon::Source::File(path.clone()),
        None => daemon::Source::Flags(args.services()?),
    };
    let timeout = Duration::from_secs(args.resolve_timeout);
    daemon::run(args.ifaces, source, timeout).await
}

fn check_config(path: &std::path::Path) -> Result<()> {
    let services = config::load(path, datapath::possible_cpus()?)?;
    for s in &services {
        let reals: Vec<String> = s.reals.iter().map(|r| r.to_string()).collect();
        println!("{}  {}  {}", s.vip, s.settings.mode, reals.join(" "));
    }
    println!("{}: {} VIPs, valid", path.display(), services.len());
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
