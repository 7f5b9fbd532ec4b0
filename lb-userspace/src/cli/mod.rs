//! `lbctl`'s command line: what each command takes (the `///` docs are its help) and what
//! it runs.

pub mod admin;
pub mod capture;
pub mod explain;
pub mod stats;
pub mod vip_flags;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

use crate::{
    admin::{Request, DEFAULT_SOCKET},
    daemon,
    datapath::{self, Datapath},
    declare::{
        config,
        service::{self, Service},
        spec::{RealSpec, VipSpec},
    },
    doctor::{self, DoctorRealArgs},
};
use admin::{RealCommand, Talk, VipCommand};
use vip_flags::VipFlags;

/// An L4 load balancer on XDP: rewrites packets for virtual services (VIPs) in the kernel
/// and sends them to real servers.
#[derive(Parser)]
#[command(name = "lbctl", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the balancer on one or more interfaces and forward VIP traffic until
    /// SIGINT/SIGTERM, then detach. Runs in the foreground; other lbctl commands talk to it.
    Attach(Box<AttachArgs>),
    /// Check a configuration file without touching anything: every error names the file,
    /// line and field.
    CheckConfig {
        /// The TOML file (see lbctl.example.toml).
        file: PathBuf,
    },
    /// The running lbctl: interfaces, VIPs, reals taking flows, packets, VRRP state.
    Status {
        /// Only say whether this LB serves, by the exit code (0: serving, 1: not), for
        /// keepalived's track_script: lbctl answers within --timeout, its program is attached
        /// to each of its interfaces, and every VIP has its quorum of reals up.
        #[arg(long)]
        check: bool,
        /// With --check: how long lbctl may take to answer before it counts as not serving.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        #[command(flatten)]
        talk: Talk,
    },
    /// Stop the running lbctl gracefully (what `systemctl stop` runs): it stops serving
    /// (keepalived gives MASTER to the peer), forwards what still reaches it until nothing
    /// has for a second or --grace runs out, then detaches. Waits until it has exited.
    Stop {
        /// The longest it goes on forwarding.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
        /// Return once the stop has begun, without waiting for lbctl to exit.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        talk: Talk,
    },
    /// keepalived's notify hook (`notify "/usr/sbin/lbctl notify"` in a vrrp_instance):
    /// tells the running lbctl the instance's new state, which `lbctl status` shows.
    Notify {
        /// INSTANCE or GROUP, as keepalived passes it.
        kind: String,
        /// The instance's (or group's) name.
        name: String,
        /// MASTER, BACKUP, FAULT or STOP.
        state: String,
        /// The priority keepalived passes last (not used).
        priority: Option<String>,
        #[command(flatten)]
        talk: Talk,
    },
    /// Say what the datapath would do with a packet, from the live maps: which VIP, whether
    /// its flow exists (real, idle time, state), else the ring slot and real a new flow gets,
    /// and how the packet leaves (addresses, ports, MACs, outer header). Changes nothing.
    /// Asks the running lbctl. With --pcap, each packet of a capture file.
    Explain {
        /// tcp or udp.
        #[arg(value_parser = ["tcp", "udp"], required_unless_present = "pcap")]
        proto: Option<String>,
        /// The client's ADDRESS:PORT.
        #[arg(required_unless_present = "pcap")]
        client: Option<std::net::SocketAddr>,
        /// The VIP's ADDRESS:PORT.
        #[arg(required_unless_present = "pcap")]
        vip: Option<std::net::SocketAddr>,
        /// Explain each TCP/UDP packet of this capture (pcap or pcapng: tcpdump -w, lbctl
        /// capture -w) instead, as lbctl would treat it now.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["proto", "client", "vip"])]
        pcap: Option<PathBuf>,
        #[command(flatten)]
        talk: Talk,
    },
    /// List, add and remove VIPs of the running lbctl.
    Vip {
        #[command(subcommand)]
        command: VipCommand,
        #[command(flatten)]
        talk: Talk,
    },
    /// List, add, remove, weigh, drain and maintain reals of the running lbctl.
    Real {
        #[command(subcommand)]
        command: RealCommand,
        #[command(flatten)]
        talk: Talk,
    },
    /// Make the running lbctl read its configuration file again and serve it (as SIGHUP):
    /// only what changed changes, established flows stay on the reals that stay. Runtime
    /// changes the file does not have are undone.
    Reload(Talk),
    /// Take the running lbctl off an interface; off its last one, it stops.
    /// With no lbctl running, it removes what an earlier one left forwarding
    /// (`--keep-on-exit`) from the pinned state.
    Detach {
        /// An interface it is attached to.
        iface: String,
        #[command(flatten)]
        talk: Talk,
        /// The pinned state, with no lbctl running [default: /sys/fs/bpf/lbctl/IFACE].
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
    },
    /// Before rolling back to an older lbctl: take the state pinned for an interface, with no
    /// lbctl running on it (stopped with --keep-on-exit: its program keeps forwarding), back
    /// to the older layout that lbctl pins, so it takes the flows over. The counters start
    /// again from zero there. Starting this lbctl again migrates the state forward.
    Downgrade {
        /// The interface (the state's directory is named after it).
        iface: String,
        /// The layout to go back to: 1 for lbctl up to 60a3567.
        #[arg(long, value_name = "LAYOUT")]
        to: u32,
        /// The pinned state [default: /sys/fs/bpf/lbctl/IFACE].
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
    },
    /// Show what the balancer attached to an interface does, as HAProxy's stats page does:
    /// each VIP with its reals (state, weight, checks, packets/s, bytes/s, new flows/s,
    /// active flows, totals); `--reasons` every packet not forwarded, by reason. Works
    /// without a running lbctl, from the maps themselves.
    Stats(stats::StatsArgs),
    /// Show the frames the balancer on an interface receives, each with its verdict (where
    /// it was forwarded, or why not) and the frame it sent, as it sent it: a line each, or a
    /// pcapng file for tcpdump and Wireshark with the verdict as each frame's comment. Off
    /// until asked; works without a running lbctl.
    Capture(capture::CaptureArgs),
    /// Turn the datapath's debug log on or off: a line per packet (where it came from, its
    /// addresses, what was done with it and why), written to the log of the running lbctl.
    /// Off by default; costs nothing while off.
    Debug {
        /// Interface the balancer is attached to.
        iface: String,
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// The admin socket of the running lbctl, which logs the lines.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET, env = "LBCTL_SOCKET")]
        socket: PathBuf,
    },
    /// On a real server of tunnel-mode VIPs: unwrap the LB's IP-in-IP packets.
    #[command(subcommand)]
    Decap(DecapCommand),
    /// Check a host for what being a real server needs, and say what to change.
    #[command(subcommand)]
    Doctor(DoctorCommand),
    /// Show the L4 modes on real packets: for each, a lab of network namespaces (client, LB,
    /// three reals), one request traced hop by hop, many driven, a real failing over. Needs
    /// root; leaves nothing behind (Ctrl-C included).
    Demo(crate::demo::DemoArgs),
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

#[derive(Subcommand)]
enum DoctorCommand {
    /// Run on a real server of dsr or tunnel VIPs: checks the VIPs are on lo, ARP sysctls,
    /// rp_filter and the decap program, and prints the exact commands that fix what is not
    /// right. Exits 1 unless all checks pass.
    Real(DoctorRealArgs),
}

#[derive(Args)]
struct AttachArgs {
    /// Interfaces to attach to: where VIP traffic arrives and reals are reached. Name several
    /// when the LB sits between networks (router mode: the clients' and the reals' side;
    /// nat as a bridge: its ports).
    #[arg(required = true, value_name = "IFACE")]
    ifaces: Vec<String>,
    /// Serve the VIPs of this file (TOML, see lbctl.example.toml), each with its own mode,
    /// instead of --vip/--real. SIGHUP or `lbctl reload` reloads it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["vips", "reals", "snat_pool", "snat_ports"])]
    config: Option<PathBuf>,
    /// Virtual service, ADDRESS:PORT/PROTO (tcp or udp). Repeat for several.
    #[arg(long = "vip", value_name = "VIP", required_unless_present = "config")]
    vips: Vec<VipSpec>,
    /// Real server, ADDRESS or ADDRESS:PORT (a port other than the VIP's needs nat, router or
    /// one-arm), then `,weight=N` (0-256, default 1; 0 drains) and `,state=ready|drain|maint`;
    /// every --vip is balanced over all of them. Repeat for several.
    #[arg(long = "real", value_name = "REAL", required_unless_present = "config")]
    reals: Vec<RealSpec>,
    /// How the --vip VIPs are served.
    #[command(flatten)]
    vip: VipFlags,
    /// How long to wait for a real to answer ARP/ND when first named; one that does not is
    /// reported and not used until it answers.
    #[arg(long, default_value = "3", value_name = "SECONDS")]
    resolve_timeout: u64,
    /// The admin socket other lbctl commands talk to this one through (root only).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET, env = "LBCTL_SOCKET")]
    socket: PathBuf,
    /// Where maps and links are pinned (on bpffs) [default: /sys/fs/bpf/lbctl/IFACE, after
    /// the first interface]. An lbctl starting on state an earlier one left there takes it
    /// over: its flows go on.
    #[arg(long, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// When stopped, leave the program attached and forwarding with what it serves, for the
    /// next lbctl (a restart, an upgrade) to take over without losing a flow. Without it,
    /// stopping detaches and removes the pinned state.
    #[arg(long)]
    keep_on_exit: bool,
    /// SIGTERM without --keep-on-exit stops gracefully: lbctl says it no longer serves
    /// (`status --check` fails, so keepalived moves MASTER to the peer), forwards what
    /// still arrives until nothing has for a second, for at most this long, then detaches.
    /// 0s: detach at once. SIGINT always stops at once.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    stop_grace: std::time::Duration,
    /// Announce the VIPs over BGP through BIRD 2: lbctl writes the routes of the VIP
    /// addresses it announces to this file, which BIRD's configuration includes, and runs
    /// `birdc configure`. An address is announced while lbctl serves and every VIP on it has
    /// its quorum of reals up (after --bgp-rise), withdrawn at once otherwise, on a stop, and
    /// when lbctl dies (docs/beyond-one-machine.md).
    #[arg(long, value_name = "FILE")]
    bgp_include: Option<PathBuf>,
    /// BIRD's control socket, for `birdc configure`.
    #[arg(long, value_name = "PATH", default_value = crate::announce::bird::DEFAULT_SOCKET, requires = "bgp_include")]
    bird_socket: PathBuf,
    /// How long an address must be eligible without a break before it is announced again.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration, requires = "bgp_include")]
    bgp_rise: std::time::Duration,
    /// Sync stateful flows (nat, router, one-arm) with the peer LB at this ADDRESS:PORT (its
    /// --sync-listen): each LB sends its flows, and installs the peer's, so a failover keeps
    /// them. Messages are taken only from the peer's address, authenticated with the key of
    /// --sync-key (docs/beyond-one-machine.md).
    #[arg(long, value_name = "ADDRESS:PORT", requires_all = ["sync_listen", "sync_key"])]
    sync_peer: Option<std::net::SocketAddr>,
    /// This LB's address and port for flow sync (the peer's --sync-peer).
    #[arg(long, value_name = "ADDRESS:PORT", requires = "sync_peer")]
    sync_listen: Option<std::net::SocketAddr>,
    /// A file holding the key both LBs share (at least 16 bytes).
    #[arg(long, value_name = "FILE", requires = "sync_peer")]
    sync_key: Option<PathBuf>,
    /// Until it has had a whole round of the peer's flows, this LB fails `status --check`
    /// (keepalived does not make it MASTER) unless the peer has been silent this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    sync_wait: std::time::Duration,
    /// Serve the stats over HTTP on this address: `/metrics` for Prometheus, `/` a page
    /// that refreshes itself, `/healthz` for supervisors (e.g. 127.0.0.1:9180). Off unless
    /// given; a loopback address unless --http-public.
    #[arg(long, value_name = "ADDR:PORT")]
    http: Option<std::net::SocketAddr>,
    /// Allow --http on an address other hosts reach (the stats show VIPs, reals, traffic).
    #[arg(long, requires = "http")]
    http_public: bool,
    /// Log every new flow, a line each (time, client, VIP, mode, scheduler, ring slot, real),
    /// to stdout, file:PATH, syslog (/dev/log) or syslog:udp:ADDRESS:PORT (RFC 5424,
    /// local0; rsyslog's imudp on 127.0.0.1:514 as for HAProxy). Off unless given.
    #[arg(long, value_name = "TARGET")]
    flow_log: Option<crate::flowlog::sink::Target>,
    /// Flow log events each CPU may send per second; more are dropped and counted (never
    /// slowing forwarding).
    #[arg(long, value_name = "N", default_value_t = crate::flowlog::DEFAULT_RATE, requires = "flow_log",
          value_parser = clap::value_parser!(u32).range(1..))]
    flow_log_rate: u32,
}

impl AttachArgs {
    /// The services the flags name, checked.
    fn services(&self) -> Result<Vec<Service>> {
        let settings = self.vip.settings();
        let services: Vec<Service> = self
            .vips
            .iter()
            .map(|vip| Service {
                vip: *vip,
                settings: settings.clone(),
                reals: self.reals.clone(),
            })
            .collect();
        service::validate(&services, datapath::possible_cpus()?)?;
        Ok(services)
    }
}

impl Cli {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        match self.command {
            Command::Attach(args) => rt.block_on(attach(*args)),
            Command::CheckConfig { file } => check_config(&file),
            Command::Status {
                check: false, talk, ..
            } => rt.block_on(admin::talk(&talk, Request::Status)),
            Command::Status {
                check: true,
                timeout,
                talk,
            } => rt.block_on(admin::check(&talk, timeout)),
            Command::Stop {
                grace,
                no_wait,
                talk,
            } => rt.block_on(admin::stop(&talk, grace, !no_wait)),
            Command::Notify {
                kind,
                name,
                state,
                talk,
                ..
            } => rt.block_on(admin::talk(&talk, Request::Vrrp { kind, name, state })),
            Command::Explain {
                proto,
                client,
                vip,
                pcap,
                talk,
            } => match (pcap, proto, client, vip) {
                (Some(file), ..) => rt.block_on(explain::pcap(&talk, &file)),
                (None, Some(proto), Some(client), Some(vip)) => {
                    rt.block_on(admin::talk(&talk, Request::Explain { proto, client, vip }))
                }
                _ => anyhow::bail!("give tcp|udp CLIENT:PORT VIP:PORT, or --pcap FILE"),
            },
            Command::Vip { command, talk } => rt.block_on(admin::talk(&talk, command.request())),
            Command::Real { command, talk } => rt.block_on(admin::talk(&talk, command.request())),
            Command::Reload(talk) => rt.block_on(admin::talk(&talk, Request::Reload)),
            Command::Detach {
                iface,
                talk,
                pin_dir,
            } => {
                match std::os::unix::net::UnixStream::connect(&talk.socket) {
                    Ok(_) => return rt.block_on(admin::talk(&talk, Request::Detach { iface })),
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        anyhow::bail!("{} is root's: run this as root", talk.socket.display())
                    }
                    // No lbctl running: what an earlier one may have left is detached below.
                    Err(e) => tracing::debug!(error = %e, "no lbctl answers on the socket"),
                }
                let dir = pin_dir.unwrap_or_else(|| datapath::pins::default_dir(&iface));
                println!("{}", datapath::pins::detach_kept(&iface, &dir)?);
                Ok(())
            }
            Command::Downgrade { iface, to, pin_dir } => {
                let dir = pin_dir.unwrap_or_else(|| datapath::pins::default_dir(&iface));
                if !dir.exists() {
                    anyhow::bail!("no pinned state in {} (another --pin-dir?)", dir.display());
                }
                let pins = datapath::pins::StateDir::open(&dir)?;
                println!("{}", datapath::downgrade(&pins, to)?);
                Ok(())
            }
            Command::Stats(args) => rt.block_on(stats::run(&args)),
            Command::Capture(args) => rt.block_on(capture::run(&args)),
            Command::Debug {
                iface,
                state,
                socket,
            } => rt.block_on(capture::debug(&iface, state == "on", &socket)),
            Command::Decap(DecapCommand::Attach { iface }) => rt.block_on(decap(&iface)),
            Command::Demo(args) => crate::demo::run(&args),
            Command::Doctor(DoctorCommand::Real(args)) => {
                // check_real runs its own runtime: not inside `rt`.
                drop(rt);
                let report = doctor::check_real(&args)?;
                println!("{report}");
                if !report.all_ok() {
                    anyhow::bail!("this real needs the changes above");
                }
                Ok(())
            }
        }
    }
}

async fn attach(args: AttachArgs) -> Result<()> {
    let source = match &args.config {
        Some(path) => daemon::Source::File(path.clone()),
        None => daemon::Source::Flags(args.services()?),
    };
    let pin_dir = args
        .pin_dir
        .unwrap_or_else(|| datapath::pins::default_dir(&args.ifaces[0]));
    // Checked before anything is touched: a missing or short key refuses the start.
    let sync = match (args.sync_peer, args.sync_listen, &args.sync_key) {
        (Some(peer), Some(listen), Some(key)) => Some(crate::sync::peer::Settings {
            listen,
            peer,
            key: crate::sync::peer::read_key(key)?,
            wait: args.sync_wait,
        }),
        _ => None,
    };
    daemon::run(daemon::Options {
        ifaces: args.ifaces,
        source,
        resolve_timeout: Duration::from_secs(args.resolve_timeout),
        socket: args.socket,
        pin_dir,
        keep_on_exit: args.keep_on_exit,
        http: args.http,
        http_public: args.http_public,
        flow_log: args.flow_log,
        flow_log_rate: args.flow_log_rate,
        stop_grace: args.stop_grace,
        sync,
        bgp: args.bgp_include.map(|include| {
            (
                crate::announce::bird::Bird {
                    include,
                    socket: args.bird_socket,
                },
                args.bgp_rise,
            )
        }),
    })
    .await
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
        xdp = how.name(),
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::Cli;

    /// The systemd unit in the repository runs commands lbctl takes.
    #[test]
    fn the_systemd_unit_s_commands_parse() {
        let unit = include_str!("../../../lbctl@.service");
        let commands: Vec<&str> = unit
            .lines()
            .filter_map(|l| {
                l.strip_prefix("ExecStart=")
                    .or(l.strip_prefix("ExecStartPre="))
            })
            .collect();
        assert_eq!(commands.len(), 2);
        for c in commands {
            let words: Vec<String> = c
                .split_whitespace()
                .map(|w| w.replace("%i", "eth0"))
                .collect();
            if let Err(e) = Cli::try_parse_from(&words) {
                panic!("{c}: {e}");
            }
        }
        // The graceful stop: its lbctl command parses, and systemd waits longer than its
        // grace before it kills.
        let stop = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStop="))
            .and_then(|l| l.split_once("exec "))
            .map(|(_, cmd)| cmd.trim_end_matches('\''))
            .expect("ExecStop runs `exec lbctl stop ...`");
        let words: Vec<String> = stop
            .split_whitespace()
            .map(|w| w.replace("%i", "eth0"))
            .collect();
        if let Err(e) = Cli::try_parse_from(&words) {
            panic!("{stop}: {e}");
        }
        let grace = words
            .iter()
            .skip_while(|w| *w != "--grace")
            .nth(1)
            .map(|g| humantime::parse_duration(g).unwrap())
            .expect("ExecStop gives --grace");
        let timeout: u64 = unit
            .lines()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .map(|t| t.parse().unwrap())
            .expect("the unit sets TimeoutStopSec");
        assert!(
            std::time::Duration::from_secs(timeout) > grace + std::time::Duration::from_secs(5),
            "TimeoutStopSec={timeout} does not fit a grace of {grace:?}"
        );
    }

    /// The stats and log flags: what they take, and a clear error for what they do not.
    #[test]
    fn http_flow_log_and_stats_flags_parse_or_say_what_is_wrong() {
        let attach = |extra: &[&str]| {
            let mut w = vec![
                "lbctl",
                "attach",
                "eth0",
                "--vip",
                "198.18.100.10:80/tcp",
                "--real",
                "198.18.0.11",
            ];
            w.extend_from_slice(extra);
            Cli::try_parse_from(w).map(drop).map_err(|e| e.to_string())
        };
        assert!(attach(&["--http", "127.0.0.1:9180"]).is_ok());
        assert!(attach(&["--http", "198.18.0.1:9180", "--http-public"]).is_ok());
        assert!(
            attach(&["--http-public"]).is_err(),
            "--http-public needs --http"
        );
        assert!(attach(&[
            "--flow-log",
            "syslog:udp:127.0.0.1:514",
            "--flow-log-rate",
            "500"
        ])
        .is_ok());
        let e = attach(&["--flow-log", "stdout", "--flow-log-rate", "0"]).unwrap_err();
        assert!(e.contains("--flow-log-rate"), "{e}");
        let e = attach(&["--flow-log", "tcp:198.18.0.1:514"]).unwrap_err();
        assert!(e.contains("syslog:udp:ADDRESS:PORT"), "{e}");
        assert!(
            attach(&["--flow-log-rate", "5"]).is_err(),
            "a rate needs --flow-log"
        );
        for ok in [
            &["lbctl", "stats", "eth0"][..],
            &["lbctl", "stats", "eth0", "--watch", "--interval", "0.5"],
            &["lbctl", "stats", "eth0", "--json"],
            &["lbctl", "stats", "eth0", "--reasons"],
        ] {
            assert!(Cli::try_parse_from(ok).is_ok(), "{ok:?}");
        }
    }
}
