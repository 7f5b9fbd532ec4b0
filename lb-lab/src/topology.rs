//! The lab's topologies: client, LB and reals in network namespaces, joined by Linux bridges
//! that live in a switch namespace of their own.
//!
//! ```text
//!   one segment (dsr, tunnel, one-arm)      two subnets (router, nat as the reals' gateway)
//!   client 198.18.0.100 ─┐                  client 198.18.0.100 ─┐
//!   lb     198.18.0.1  ──┤ br0              lb eth0 198.18.0.1 ──┘ br0
//!   r1..rN 198.18.0.11.. ┘                  lb eth1 198.18.1.1 ──┐ br1
//!                                           r1..rN 198.18.1.11.. ┘ (gateway: the LB)
//!   routed (tunnel to reals behind a router): reals on 198.18.1.0/24 behind a router
//!   namespace (198.18.0.254 / 198.18.1.254).
//!   bridged (nat, transparent): the LB bridges its eth0 (client side) and eth1 (reals'
//!   side) in one subnet; reals 198.18.0.21.. reach the client through it.
//!   five modes, on one LB interface: one segment's reals r1..r3, and r4..r6 on the same
//!   segment but in 198.18.1.0/24, whose gateway is the LB's second address on eth0 (a
//!   router on a stick).
//! ```
//! The client routes 198.18.100.0/24 (the VIPs) via the LB. Every real runs the lab's TCP
//! servers on ports 80 and 8080 and its UDP servers on port 53, on all its addresses.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    lb_process::{spawn_lbctl, xdp_attached, LbProcess},
    netns::{unique_prefix, BpfMount},
    sessions::{EchoServer, SESSION_PORT},
    Netns, Server,
};
use crate::xdp_pass::{self, PassPrograms};

pub const LB_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The LB's address on the reals' subnet of the two-subnet labs.
pub const LB_B_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const REAL_ADDRS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 0, 11),
    Ipv4Addr::new(198, 18, 0, 12),
    Ipv4Addr::new(198, 18, 0, 13),
];
/// Reals on 198.18.1.0/24: behind the router namespace, or behind the LB.
pub const ROUTED_REAL_ADDRS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 1, 11),
    Ipv4Addr::new(198, 18, 1, 12),
    Ipv4Addr::new(198, 18, 1, 13),
];
/// Reals behind the bridging LB, in the client's subnet.
pub const BRIDGED_REAL_ADDRS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 0, 21),
    Ipv4Addr::new(198, 18, 0, 22),
    Ipv4Addr::new(198, 18, 0, 23),
];
/// The reals' subnet behind a router or the LB.
const SUBNET_B: &str = "198.18.1.0/24";
/// The router of the routed lab: on the LB's segment, and on the reals'.
pub const ROUTER_ADDRS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 18, 0, 254),
    Ipv4Addr::new(198, 18, 1, 254),
];
pub const VIP_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
/// What the client routes via the LB.
const VIP_NET: &str = "198.18.100.0/24";
/// The VIPs that reals on the LB's segment hold on `lo` (dsr and tunnel answer from them):
/// every lab's VIP, and the tunnel VIP of the five-mode lab.
const DIRECT_RETURN_VIPS: [Ipv4Addr; 2] = [VIP_ADDR, Ipv4Addr::new(198, 18, 100, 11)];
/// An address of the LB's eth0 for one-arm pools.
pub const SNAT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 201);
pub const VIP_PORT: u16 = 80;
/// The other TCP port every real serves, for port translation.
pub const ALT_PORT: u16 = 8080;
/// The UDP port every real serves.
pub const UDP_PORT: u16 = 53;
const SUBNET_LEN: &str = "24";
/// Every host's interface is called this inside its namespace.
pub const HOST_IFACE: &str = "eth0";

/// Where a lab's second group of reals sits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// On 198.18.1.0/24 behind a router namespace.
    BehindRouter,
    /// On 198.18.1.0/24, the LB's eth1 their gateway.
    BehindLb,
    /// In the client's subnet, behind the LB bridging its eth0 and eth1.
    BridgedByLb,
    /// On 198.18.1.0/24 but on the LB's one segment, the LB's second address on eth0 their
    /// gateway.
    OnStick,
}

/// A running lab. Field order is drop order: processes and servers stop before the
/// namespaces they live in are deleted.
pub struct Lab {
    lb_process: Option<LbProcess>,
    /// `lbctl decap attach eth0` in each real, for tunnel mode.
    decaps: Vec<LbProcess>,
    /// Every real's TCP servers, by real (0-based) and port, and its UDP servers.
    tcp_servers: BTreeMap<(usize, u16), Server>,
    _udp_servers: Vec<Server>,
    /// Every real's echo server, for long-lived connections.
    _echo: Vec<EchoServer>,
    /// Holds the pass program on the LB's switch ports (veth needs it to accept XDP_TX).
    _switch_port_xdp: PassPrograms,
    /// Where the balancer pins its state.
    bpffs: BpfMount,
    pub client: Netns,
    pub lb: Netns,
    /// The LB's interfaces, as `lbctl attach` takes them.
    lb_ifaces: Vec<&'static str>,
    pub reals: Vec<Netns>,
    real_addrs: Vec<Ipv4Addr>,
    /// Between the LB's segment and the reals', in the routed lab.
    pub router: Option<Netns>,
    pub switch: Netns,
}

/// Connects `host` to bridge `bridge` of the switch with a veth pair: `iface` in the host,
/// `port` on the bridge. `addr`: the host's address on it, if any.
pub(crate) fn plug(
    switch: &Netns,
    bridge: &str,
    host: &Netns,
    port: &str,
    iface: &str,
    addr: Option<Ipv4Addr>,
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
    if let Some(addr) = addr {
        host.ip(&["addr", "add", &format!("{addr}/{SUBNET_LEN}"), "dev", iface])?;
    }
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
    /// Builds the lab with `n_reals` reals (1..=3) on the LB's segment, each holding the VIP
    /// on `lo` as dsr and tunnel mode need, and starts the servers (named r1, r2, ...). The
    /// balancer is not started yet: see [`Lab::start_lb`] (and [`Lab::start_decap`] for
    /// tunnel).
    pub fn one_segment(n_reals: usize) -> Result<Self> {
        Self::build(n_reals, None)
    }

    /// As [`Lab::one_segment`], but the reals sit on 198.18.1.0/24 behind a router namespace
    /// (198.18.0.254 / 198.18.1.254, on a second bridge): the topology of routed tunnel reals.
    /// The LB routes 198.18.1.0/24 via the router; the reals' default route is the router.
    pub fn routed(n_reals: usize) -> Result<Self> {
        Self::build(0, Some((Side::BehindRouter, n_reals)))
    }

    /// The LB between two subnets: clients on eth0's (198.18.0.0/24), `n_reals` reals on
    /// eth1's (198.18.1.0/24) with the LB as their gateway. Router mode's topology, and nat's
    /// when the LB is the reals' gateway.
    pub fn two_subnets(n_reals: usize) -> Result<Self> {
        Self::build(0, Some((Side::BehindLb, n_reals)))
    }

    /// The LB as a transparent bridge: its eth0 (client side) and eth1 (reals' side) are
    /// ports of a Linux bridge holding 198.18.0.1; `n_reals` reals 198.18.0.21.. sit behind
    /// eth1 in the client's subnet and answer the client through the bridge. Nat's topology.
    pub fn bridged(n_reals: usize) -> Result<Self> {
        Self::build(0, Some((Side::BridgedByLb, n_reals)))
    }

    /// Every mode at once on one LB interface (lbctl.example.toml): reals r1..r3 on the LB's
    /// segment, r4..r6 on the same segment in 198.18.1.0/24 with the LB as their gateway, and
    /// the SNAT address on the LB's eth0.
    pub fn five_modes() -> Result<Self> {
        let lab = Self::build(3, Some((Side::OnStick, 3)))?;
        lab.add_snat_addr()?;
        Ok(lab)
    }

    /// Puts [`SNAT_ADDR`] on the LB's eth0, for one-arm pools.
    pub fn add_snat_addr(&self) -> Result<()> {
        self.lb
            .ip(&["addr", "add", &format!("{SNAT_ADDR}/32"), "dev", HOST_IFACE])
            .map(drop)
    }

    fn build(a_reals: usize, b: Option<(Side, usize)>) -> Result<Self> {
        let b_reals = b.map_or(0, |(_, n)| n);
        if a_reals > REAL_ADDRS.len() || b_reals > ROUTED_REAL_ADDRS.len() || a_reals + b_reals == 0
        {
            bail!("a lab has room for 1 to 3 reals per segment");
        }
        let side = b.map(|(s, _)| s);
        let p = unique_prefix();
        let switch = Netns::create(&format!("{p}-sw"))?;
        let bridges: &[&str] = match side {
            None | Some(Side::OnStick) => &["br0"],
            Some(_) => &["br0", "br1"],
        };
        for bridge in bridges {
            switch.ip(&["link", "add", bridge, "type", "bridge"])?;
            switch.ip(&["link", "set", bridge, "up"])?;
        }

        let client = Netns::create(&format!("{p}-client"))?;
        plug(
            &switch,
            "br0",
            &client,
            "client",
            HOST_IFACE,
            Some(CLIENT_ADDR),
        )?;
        client.ip(&["route", "add", VIP_NET, "via", &LB_ADDR.to_string()])?;

        let lb = Netns::create(&format!("{p}-lb"))?;
        let mut lb_ifaces = vec![HOST_IFACE];
        let mut switch_ports = vec!["lb"];
        if side == Some(Side::BridgedByLb) {
            // The LB's address lives on its bridge, whose ports are eth0 and eth1.
            plug(&switch, "br0", &lb, "lb", HOST_IFACE, None)?;
            plug(&switch, "br1", &lb, "lb-b", "eth1", None)?;
            lb.ip(&["link", "add", "br0", "type", "bridge"])?;
            for port in [HOST_IFACE, "eth1"] {
                lb.ip(&["link", "set", port, "master", "br0"])?;
            }
            lb.ip(&[
                "addr",
                "add",
                &format!("{LB_ADDR}/{SUBNET_LEN}"),
                "dev",
                "br0",
            ])?;
            lb.ip(&["link", "set", "br0", "up"])?;
            lb_ifaces.push("eth1");
            switch_ports.push("lb-b");
        } else {
            plug(&switch, "br0", &lb, "lb", HOST_IFACE, Some(LB_ADDR))?;
        }
        if side == Some(Side::BehindLb) {
            plug(&switch, "br1", &lb, "lb-b", "eth1", Some(LB_B_ADDR))?;
            lb.sysctl("net.ipv4.ip_forward", "1")?;
            lb_ifaces.push("eth1");
            switch_ports.push("lb-b");
        }
        if side == Some(Side::OnStick) {
            let second = format!("{LB_B_ADDR}/{SUBNET_LEN}");
            lb.ip(&["addr", "add", &second, "dev", HOST_IFACE])?;
            lb.sysctl("net.ipv4.ip_forward", "1")?;
        }
        lb.ip(&["addr", "add", &format!("{VIP_ADDR}/32"), "dev", "lo"])?;
        let switch_port_xdp = switch.run(move || xdp_pass::attach(&switch_ports))??;

        let router = if side == Some(Side::BehindRouter) {
            let router = Netns::create(&format!("{p}-router"))?;
            plug(
                &switch,
                "br0",
                &router,
                "router-a",
                HOST_IFACE,
                Some(ROUTER_ADDRS[0]),
            )?;
            plug(
                &switch,
                "br1",
                &router,
                "router-b",
                "eth1",
                Some(ROUTER_ADDRS[1]),
            )?;
            router.sysctl("net.ipv4.ip_forward", "1")?;
            lb.ip(&[
                "route",
                "add",
                SUBNET_B,
                "via",
                &ROUTER_ADDRS[0].to_string(),
            ])?;
            Some(router)
        } else {
            None
        };

        let mut reals = Vec::new();
        let mut real_addrs = Vec::new();
        let b_addrs = if side == Some(Side::BridgedByLb) {
            BRIDGED_REAL_ADDRS
        } else {
            ROUTED_REAL_ADDRS
        };
        let placed = REAL_ADDRS
            .iter()
            .take(a_reals)
            .map(|a| ("br0", *a, None))
            .chain(b_addrs.iter().take(b_reals).map(|a| {
                let gateway = match side {
                    Some(Side::BehindRouter) => Some(ROUTER_ADDRS[1]),
                    Some(Side::BehindLb | Side::OnStick) => Some(LB_B_ADDR),
                    _ => None,
                };
                let bridge = if side == Some(Side::OnStick) {
                    "br0"
                } else {
                    "br1"
                };
                (bridge, *a, gateway)
            }));
        for (i, (bridge, addr, gateway)) in placed.enumerate() {
            let name = format!("r{}", i + 1);
            let real = Netns::create(&format!("{p}-{name}"))?;
            plug(&switch, bridge, &real, &name, HOST_IFACE, Some(addr))?;
            if let Some(gw) = gateway {
                real.ip(&["route", "add", "default", "via", &gw.to_string()])?;
            }
            configure_direct_return(&real)?;
            reals.push(real);
            real_addrs.push(addr);
        }
        let mut tcp_servers = BTreeMap::new();
        let mut udp_servers = Vec::new();
        let mut echo = Vec::new();
        for (i, real) in reals.iter().enumerate() {
            let name = format!("r{}", i + 1);
            for port in [VIP_PORT, ALT_PORT] {
                let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
                tcp_servers.insert((i, port), Server::start_tcp(real, &name, any)?);
            }
            let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), SESSION_PORT);
            echo.push(EchoServer::start(real, &name, any)?);
            // UDP answers from the address a socket is bound to (or the route's, for
            // 0.0.0.0): one socket per address, so dsr and tunnel answer from the VIP.
            for addr in std::iter::once(real_addrs[i]).chain(DIRECT_RETURN_VIPS) {
                let at = SocketAddr::new(IpAddr::V4(addr), UDP_PORT);
                udp_servers.push(Server::start_udp(real, &name, at)?);
            }
        }
        Ok(Self {
            lb_process: None,
            decaps: Vec::new(),
            tcp_servers,
            _udp_servers: udp_servers,
            _echo: echo,
            _switch_port_xdp: switch_port_xdp,
            bpffs: BpfMount::new(lb.name())?,
            client,
            lb,
            lb_ifaces,
            reals,
            real_addrs,
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

    /// Stops real `i`'s (0-based) TCP server on `port`: connections to it are refused.
    pub fn stop_tcp_server(&mut self, i: usize, port: u16) -> Result<()> {
        let mut server = self
            .tcp_servers
            .remove(&(i, port))
            .with_context(|| format!("real {i} runs no TCP server on port {port}"))?;
        server.stop();
        Ok(())
    }

    /// Starts real `i`'s (0-based) TCP server on `port` again.
    pub fn start_tcp_server(&mut self, i: usize, port: u16) -> Result<()> {
        let real = self.reals.get(i).context("no such real")?;
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
        let server = Server::start_tcp(real, &format!("r{}", i + 1), any)?;
        self.tcp_servers.insert((i, port), server);
        Ok(())
    }

    /// The LB's interfaces: eth0, and eth1 in the labs where the LB joins two segments.
    pub fn lb_ifaces(&self) -> Vec<String> {
        self.lb_ifaces.iter().map(|s| s.to_string()).collect()
    }

    /// Runs `lbctl attach IFACES... ARGS...` in the LB namespace, with the lab's LB
    /// interfaces, and waits until the program is attached (its maps are filled before it
    /// attaches, so attached means serving).
    pub fn start_lb(&mut self, lbctl: &Path, args: &[String]) -> Result<()> {
        if self.lb_process.is_some() {
            bail!("the lab's balancer is already running");
        }
        let mut full = vec!["attach".to_owned()];
        full.extend(self.lb_ifaces());
        full.extend_from_slice(args);
        // Each lab's balancer has its own admin socket and pinned state: labs run side by
        // side, and a restarted balancer finds what the last one left.
        full.extend([
            "--socket".to_owned(),
            self.lb_socket().display().to_string(),
        ]);
        if !args.iter().any(|a| a == "--pin-dir") {
            full.extend([
                "--pin-dir".to_owned(),
                self.lb_pin_dir().display().to_string(),
            ]);
        }
        self.lb_process = Some(spawn_lbctl(&self.lb, lbctl, &full)?);
        Ok(())
    }

    /// Where the lab's balancer pins its state.
    pub fn lb_pin_dir(&self) -> PathBuf {
        self.bpffs.path().join("lbctl")
    }

    /// The admin socket of the lab's balancer.
    pub fn lb_socket(&self) -> PathBuf {
        std::env::temp_dir().join(format!("{}.sock", self.lb.name()))
    }

    /// Runs `lbctl ARGS... --socket SOCKET` against the lab's balancer: its output, or its
    /// error output as the error.
    pub fn lbctl(&self, lbctl: &Path, args: &[&str]) -> Result<String> {
        let out = std::process::Command::new(lbctl)
            .args(args)
            .arg("--socket")
            .arg(self.lb_socket())
            .output()
            .with_context(|| format!("running {}", lbctl.display()))?;
        if !out.status.success() {
            bail!(
                "`lbctl {}` failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

    /// Sends SIGHUP to the balancer (which reloads its --config file) and waits until it has
    /// reloaded; the reload's refusal, with the log, is the error.
    pub fn reload_lb(&self) -> Result<()> {
        let process = self
            .lb_process
            .as_ref()
            .context("the lab's balancer is not running")?;
        let count = |log: &str, what: &str| log.matches(what).count();
        let before = process.log();
        let (ok, refused) = (count(&before, "reloaded"), count(&before, "reload refused"));
        process.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = process.log();
            if count(&log, "reloaded") > ok {
                return Ok(());
            }
            if count(&log, "reload refused") > refused || Instant::now() > deadline {
                bail!("lbctl did not reload:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the balancer at once (SIGINT: with `--keep-on-exit` a hand-over, else a
    /// detach; SIGTERM would stop gracefully, waiting for traffic to end) and waits for it;
    /// returns its log.
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

    /// Sends SIGTERM to the balancer (a graceful stop without `--keep-on-exit`) and waits
    /// up to `limit` for it to exit; returns its log.
    pub fn stop_lb_gracefully(&mut self, limit: Duration) -> Result<String> {
        let Some(mut process) = self.lb_process.take() else {
            bail!("the lab's balancer is not running")
        };
        process.signal(libc::SIGTERM);
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = process.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bail!(
                    "lbctl did not stop within {limit:?} of SIGTERM:\n{}",
                    process.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = process.log();
        if !status.success() {
            bail!("lbctl exited with {status}:\n{log}");
        }
        Ok(log)
    }

    /// The id of the XDP program attached to the LB's eth0, if any.
    pub fn lb_xdp_prog_id(&self) -> Result<Option<u32>> {
        let text = self.lb.ip(&["link", "show", HOST_IFACE])?;
        Ok(text
            .split_once("prog/xdp id ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|id| id.parse().ok()))
    }

    /// Whether an XDP program is attached to the LB's interface.
    pub fn lb_xdp_attached(&self) -> Result<bool> {
        xdp_attached(&self.lb)
    }

    pub fn lb_log(&self) -> String {
        self.lb_process
            .as_ref()
            .map(LbProcess::log)
            .unwrap_or_default()
    }
}

/// What a real answering clients directly (dsr, tunnel) needs: the VIPs on loopback, and no
/// ARP answers for them (the LB owns the VIPs on the wire). Harmless to the other modes,
/// whose reals are addressed by their own address.
pub(crate) fn configure_direct_return(real: &Netns) -> Result<()> {
    for vip in DIRECT_RETURN_VIPS {
        real.ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
    }
    for iface in ["all", HOST_IFACE] {
        real.sysctl(&format!("net.ipv4.conf.{iface}.arp_ignore"), "1")?;
        real.sysctl(&format!("net.ipv4.conf.{iface}.arp_announce"), "2")?;
    }
    Ok(())
}
