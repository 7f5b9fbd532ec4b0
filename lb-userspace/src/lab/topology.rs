//! The one-segment lab of dsr and tunnel mode: client, LB and reals on one Linux bridge, which
//! lives in its own namespace.
//!
//! ```text
//!   client 198.18.0.100 ─┐
//!   lb     198.18.0.1  ──┤ br0 (switch namespace)     VIP 198.18.100.10 on lb's and the reals' lo;
//!   r1..rN 198.18.0.11.. ┘                            the client routes the VIP via the lb
//! ```

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{netns::unique_prefix, Netns, Server};
use crate::{datapath::Datapath, stats::Stats};

pub const LB_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const REAL_ADDRS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 0, 11),
    Ipv4Addr::new(198, 18, 0, 12),
    Ipv4Addr::new(198, 18, 0, 13),
];
/// Reals of the routed lab, on 198.18.1.0/24.
pub const ROUTED_REAL_ADDRS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 1, 11),
    Ipv4Addr::new(198, 18, 1, 12),
    Ipv4Addr::new(198, 18, 1, 13),
];
/// The reals' subnet in the routed lab.
const ROUTED_SUBNET: &str = "198.18.1.0/24";
/// The router of the routed lab: on the LB's segment, and on the reals'.
pub const ROUTER_ADDRS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 18, 0, 254),
    Ipv4Addr::new(198, 18, 1, 254),
];
pub const VIP_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
pub const VIP_PORT: u16 = 80;
const SUBNET_LEN: &str = "24";
/// Every host's interface is called this inside its namespace.
pub const HOST_IFACE: &str = "eth0";

/// A running lab. Field order is drop order: processes and servers stop before the
/// namespaces they live in are deleted.
pub struct Lab {
    lb_process: Option<LbProcess>,
    /// `lbctl decap attach eth0` in each real, for tunnel mode.
    decaps: Vec<LbProcess>,
    pub servers: Vec<Server>,
    /// Holds the pass program on the LB's switch port (veth needs it to accept XDP_TX).
    _switch_port_xdp: Datapath,
    pub client: Netns,
    pub lb: Netns,
    pub reals: Vec<Netns>,
    real_addrs: Vec<Ipv4Addr>,
    /// Between the LB's segment and the reals', in the routed lab.
    pub router: Option<Netns>,
    pub switch: Netns,
}

/// Connects `host` to bridge `bridge` of the switch with a veth pair: `iface` in the host,
/// `port` on the bridge.
fn plug(
    switch: &Netns,
    bridge: &str,
    host: &Netns,
    port: &str,
    iface: &str,
    addr: Ipv4Addr,
) -> Result<()> {
    switch.ip(&[
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        iface,
        "netns",
        host.name(),
    ])?;
    switch.ip(&["link", "set", port, "master", bridge, "up"])?;
    host.ip(&["addr", "add", &format!("{addr}/{SUBNET_LEN}"), "dev", iface])?;
    host.ip(&["link", "set", iface, "up"])?;
    // Make veth behave like a NIC on the wire: complete TX checksums (veth leaves them partial,
    // and XDP-forwarded frames would be dropped for it), and no segmentation offload, so every
    // frame is at most one MTU, as the path-MTU tests assume.
    host.exec(
        "ethtool",
        &["-K", iface, "tx", "off", "tso", "off", "gso", "off"],
    )
    .context("ethtool is needed by the lab (apt-get install ethtool)")?;
    Ok(())
}

impl Lab {
    /// Builds the lab with `n_reals` reals (1..=3), each holding the VIP on `lo` as dsr and
    /// tunnel mode need, and starts a TCP server on the VIP in each (named r1, r2, ...). The
    /// balancer is not started yet: see [`Lab::start_lb`] (and [`Lab::start_decap`] for tunnel).
    pub fn one_segment(n_reals: usize) -> Result<Self> {
        Self::build(n_reals, false)
    }

    /// As [`Lab::one_segment`], but the reals sit on 198.18.1.0/24 behind a router namespace
    /// (198.18.0.254 / 198.18.1.254, on a second bridge): the topology of routed tunnel reals.
    /// The LB routes 198.18.1.0/24 via the router; the reals' default route is the router.
    pub fn routed(n_reals: usize) -> Result<Self> {
        Self::build(n_reals, true)
    }

    fn build(n_reals: usize, routed: bool) -> Result<Self> {
        if !(1..=REAL_ADDRS.len()).contains(&n_reals) {
            bail!("the lab has room for 1 to {} reals", REAL_ADDRS.len());
        }
        let p = unique_prefix();
        let switch = Netns::create(&format!("{p}-sw"))?;
        let bridges: &[&str] = if routed { &["br0", "br1"] } else { &["br0"] };
        for bridge in bridges {
            switch.ip(&["link", "add", bridge, "type", "bridge"])?;
            switch.ip(&["link", "set", bridge, "up"])?;
        }

        let client = Netns::create(&format!("{p}-client"))?;
        plug(&switch, "br0", &client, "client", HOST_IFACE, CLIENT_ADDR)?;
        client.ip(&[
            "route",
            "add",
            &format!("{VIP_ADDR}/32"),
            "via",
            &LB_ADDR.to_string(),
        ])?;

        let lb = Netns::create(&format!("{p}-lb"))?;
        plug(&switch, "br0", &lb, "lb", HOST_IFACE, LB_ADDR)?;
        lb.ip(&["addr", "add", &format!("{VIP_ADDR}/32"), "dev", "lo"])?;
        let switch_port_xdp = switch.run(|| -> Result<Datapath> {
            let mut dp = Datapath::load()?;
            dp.attach_pass("lb")?;
            Ok(dp)
        })??;

        let router = if routed {
            let router = Netns::create(&format!("{p}-router"))?;
            plug(
                &switch,
                "br0",
                &router,
                "router-a",
                HOST_IFACE,
                ROUTER_ADDRS[0],
            )?;
            plug(&switch, "br1", &router, "router-b", "eth1", ROUTER_ADDRS[1])?;
            router.sysctl("net.ipv4.ip_forward", "1")?;
            lb.ip(&[
                "route",
                "add",
                ROUTED_SUBNET,
                "via",
                &ROUTER_ADDRS[0].to_string(),
            ])?;
            Some(router)
        } else {
            None
        };
        let (bridge, addrs) = if routed {
            ("br1", ROUTED_REAL_ADDRS)
        } else {
            ("br0", REAL_ADDRS)
        };
        let mut reals = Vec::new();
        for (i, addr) in addrs.iter().take(n_reals).enumerate() {
            let real = Netns::create(&format!("{p}-r{}", i + 1))?;
            plug(
                &switch,
                bridge,
                &real,
                &format!("r{}", i + 1),
                HOST_IFACE,
                *addr,
            )?;
            if routed {
                real.ip(&[
                    "route",
                    "add",
                    "default",
                    "via",
                    &ROUTER_ADDRS[1].to_string(),
                ])?;
            }
            configure_direct_return(&real)?;
            reals.push(real);
        }
        let mut servers = Vec::new();
        for (i, real) in reals.iter().enumerate() {
            servers.push(Server::start_tcp(
                real,
                &format!("r{}", i + 1),
                Self::vip(),
            )?);
        }
        Ok(Self {
            lb_process: None,
            decaps: Vec::new(),
            servers,
            _switch_port_xdp: switch_port_xdp,
            client,
            lb,
            reals,
            real_addrs: addrs.iter().take(n_reals).copied().collect(),
            router,
            switch,
        })
    }

    pub fn vip() -> SocketAddr {
        SocketAddr::new(IpAddr::V4(VIP_ADDR), VIP_PORT)
    }

    /// The reals' addresses, as `--real` arguments want them.
    pub fn real_addrs(&self) -> Vec<Ipv4Addr> {
        self.real_addrs.clone()
    }

    /// Runs `lbctl attach eth0 ARGS...` in the LB namespace and waits until the program is
    /// attached (its maps are filled before it attaches, so attached means serving).
    pub fn start_lb(&mut self, lbctl: &Path, args: &[String]) -> Result<()> {
        if self.lb_process.is_some() {
            bail!("the lab's balancer is already running");
        }
        let mut full = vec!["attach".to_owned(), HOST_IFACE.to_owned()];
        full.extend_from_slice(args);
        self.lb_process = Some(spawn_lbctl(&self.lb, lbctl, &full)?);
        Ok(())
    }

    /// Runs `lbctl decap attach eth0` in every real and waits until each is attached.
    pub fn start_decap(&mut self, lbctl: &Path) -> Result<()> {
        let args = [
            "decap".to_owned(),
            "attach".to_owned(),
            HOST_IFACE.to_owned(),
        ];
        for real in &self.reals {
            self.decaps.push(spawn_lbctl(real, lbctl, &args)?);
        }
        Ok(())
    }

    /// Sends SIGTERM to the balancer and waits for it; returns its log.
    pub fn stop_lb(&mut self) -> Result<String> {
        let Some(mut process) = self.lb_process.take() else {
            bail!("the lab's balancer is not running")
        };
        let status = process.terminate()?;
        let log = process.log();
        if !status.success() {
            bail!("lbctl exited with {status}:\n{log}");
        }
        Ok(log)
    }

    /// Whether an XDP program is attached to the LB's interface.
    pub fn lb_xdp_attached(&self) -> Result<bool> {
        xdp_attached(&self.lb)
    }

    /// The balancer's counters, read the way `lbctl stats eth0` reads them.
    pub fn lb_stats(&self) -> Result<Stats> {
        stats_in(&self.lb)
    }

    /// The counters of the XDP program on real `i` (0-based): the decap program's, in tunnel
    /// mode, where "forwarded" counts decapsulated packets.
    pub fn real_stats(&self, i: usize) -> Result<Stats> {
        stats_in(self.reals.get(i).context("no such real")?)
    }

    pub fn lb_log(&self) -> String {
        self.lb_process
            .as_ref()
            .map(LbProcess::log)
            .unwrap_or_default()
    }
}

fn xdp_attached(ns: &Netns) -> Result<bool> {
    Ok(ns.ip(&["link", "show", HOST_IFACE])?.contains(" xdp"))
}

fn stats_in(ns: &Netns) -> Result<Stats> {
    ns.run(|| -> Result<Stats> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(crate::stats::read_attached(HOST_IFACE))
    })?
}

/// Runs `lbctl ARGS...` in `ns`, logging to a file, and waits until an XDP program is attached
/// to the namespace's eth0.
fn spawn_lbctl(ns: &Netns, lbctl: &Path, args: &[String]) -> Result<LbProcess> {
    let log_path = std::env::temp_dir().join(format!("{}.{}.log", ns.name(), args[0]));
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let child = ns
        .command(&lbctl.display().to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", lbctl.display()))?;
    let mut process = LbProcess { child, log_path };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = process.child.try_wait()? {
            bail!(
                "`lbctl {}` exited ({status}) before attaching:\n{}",
                args.join(" "),
                process.log()
            );
        }
        if xdp_attached(ns)? {
            return Ok(process);
        }
        if Instant::now() > deadline {
            bail!(
                "`lbctl {}` did not attach within 20s:\n{}",
                args.join(" "),
                process.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a real answering clients directly (dsr, tunnel) needs: the VIP on loopback, and no
/// ARP answers for it (the LB owns the VIP on the wire).
fn configure_direct_return(real: &Netns) -> Result<()> {
    real.ip(&["addr", "add", &format!("{VIP_ADDR}/32"), "dev", "lo"])?;
    for iface in ["all", HOST_IFACE] {
        real.sysctl(&format!("net.ipv4.conf.{iface}.arp_ignore"), "1")?;
        real.sysctl(&format!("net.ipv4.conf.{iface}.arp_announce"), "2")?;
    }
    Ok(())
}

/// An `lbctl attach` process; terminated on drop.
pub struct LbProcess {
    child: Child,
    log_path: PathBuf,
}

impl LbProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        // `ip netns exec` execs lbctl, so the child pid is lbctl's.
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!(
                    "lbctl ignored SIGTERM for 10s and was killed:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LbProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.terminate();
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}
