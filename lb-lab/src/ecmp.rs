//! Two LBs active/active behind a router that spreads flows over them (ECMP), the VIPs
//! announced over BGP with BIRD 2: the lab of `tests/tests/bgp_e2e.rs` and of
//! docs/beyond-one-machine.md.
//!
//! ```text
//!   client 198.18.2.100 ── br2 ── router 198.18.2.1 / 198.18.0.254 (BIRD, multipath routes)
//!                                   │ br0
//!   lb1 198.18.0.1, lb2 198.18.0.2 ─┤ (lbctl + BIRD each, AS 65001; the router is AS 65000)
//!   r1..r3 198.18.0.11..            ┘ (VIPs on lo, decap; default route via the router)
//! ```

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use crate::{
    lb_process::{spawn_lbctl, LbProcess},
    netns::unique_prefix,
    pair::{Daemon, PairLb, PAIR_DSR_VIP, PAIR_LB_ADDRS, PAIR_TUNNEL_VIP},
    sessions::{EchoServer, SESSION_PORT},
    topology::{configure_direct_return, plug},
    xdp_pass::{self, PassPrograms},
    Netns, Server, HOST_IFACE, REAL_ADDRS, VIP_PORT,
};

/// The client, on a subnet of its own behind the router.
pub const ECMP_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 100);
const ROUTER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// The router on the LBs' segment: their BGP peer.
pub const ROUTER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// A dsr VIP whose reals are checked on [`CHECKED_PORT`]: stopping those servers takes all
/// its reals down.
pub const CHECKED_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 12);
pub const CHECKED_PORT: u16 = 8081;

/// BIRD's configuration on each LB (`@ADDR@`, `@INCLUDE@`, `@ROUTER@` to fill in).
pub const BIRD_LB_CONF: &str = include_str!("../../docs/examples/bird-lb.conf");
/// BIRD's configuration on the router (`@ADDR@`; a `protocol bgp` per LB follows).
pub const BIRD_ROUTER_CONF: &str = include_str!("../../docs/examples/bird-router.conf");

/// The running lab. Field order is drop order.
pub struct EcmpLab {
    pub lbs: Vec<PairLb>,
    router_bird: Option<Daemon>,
    decaps: Vec<LbProcess>,
    checked: BTreeMap<usize, Server>,
    _servers: Vec<Server>,
    _echo: Vec<EchoServer>,
    _switch_port_xdp: PassPrograms,
    pub client: Netns,
    pub router: Netns,
    pub reals: Vec<Netns>,
    pub switch: Netns,
}

/// BIRD in `ns`, configuration `conf` (its log to stderr, our file), control socket
/// DIR/bird.ctl.
fn bird(ns: &Netns, conf: &str) -> Result<Daemon> {
    let conf = format!("log stderr all;\n{conf}");
    Daemon::start(ns, "bird", &conf, "bird", |dir| {
        let p = |f: &str| dir.join(f).display().to_string();
        vec![
            "-f".into(),
            "-c".into(),
            p("bird.conf"),
            "-s".into(),
            p("bird.ctl"),
            "-P".into(),
            p("pid"),
        ]
    })
}

impl EcmpLab {
    pub fn build() -> Result<Self> {
        let p = unique_prefix();
        let switch = Netns::create(&format!("{p}-sw"))?;
        for bridge in ["br0", "br2"] {
            switch.ip(&["link", "add", bridge, "type", "bridge"])?;
            switch.ip(&["link", "set", bridge, "up"])?;
        }
        let client = Netns::create(&format!("{p}-client"))?;
        plug(
            &switch,
            "br2",
            &client,
            "client",
            HOST_IFACE,
            Some(ECMP_CLIENT_ADDR),
        )?;
        client.ip(&[
            "route",
            "add",
            "default",
            "via",
            &ROUTER_CLIENT_SIDE.to_string(),
        ])?;
        let router = Netns::create(&format!("{p}-router"))?;
        plug(
            &switch,
            "br2",
            &router,
            "rt-c",
            HOST_IFACE,
            Some(ROUTER_CLIENT_SIDE),
        )?;
        plug(&switch, "br0", &router, "rt-l", "eth1", Some(ROUTER_ADDR))?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        // Spread flows by their ports too, not only their addresses.
        router.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        let mut lbs = Vec::new();
        let mut ports = Vec::new();
        for (i, addr) in PAIR_LB_ADDRS.iter().enumerate() {
            let name = format!("lb{}", i + 1);
            let ns = Netns::create(&format!("{p}-{name}"))?;
            plug(&switch, "br0", &ns, &name, HOST_IFACE, Some(*addr))?;
            ns.ip(&[
                "route",
                "add",
                "198.18.2.0/24",
                "via",
                &ROUTER_ADDR.to_string(),
            ])?;
            lbs.push(PairLb::new(ns, &name)?);
            ports.push(name);
        }
        let switch_port_xdp = switch.run(move || {
            let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
            xdp_pass::attach(&ports)
        })??;
        let (mut reals, mut servers, mut echo, mut checked) =
            (Vec::new(), Vec::new(), Vec::new(), BTreeMap::new());
        for (i, addr) in REAL_ADDRS.iter().enumerate() {
            let name = format!("r{}", i + 1);
            let real = Netns::create(&format!("{p}-{name}"))?;
            plug(&switch, "br0", &real, &name, HOST_IFACE, Some(*addr))?;
            real.ip(&["route", "add", "default", "via", &ROUTER_ADDR.to_string()])?;
            configure_direct_return(&real)?;
            real.ip(&["addr", "add", &format!("{CHECKED_VIP}/32"), "dev", "lo"])?;
            let any = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
            servers.push(Server::start_tcp(&real, &name, any(VIP_PORT))?);
            echo.push(EchoServer::start(&real, &name, any(SESSION_PORT))?);
            checked.insert(i, Server::start_tcp(&real, &name, any(CHECKED_PORT))?);
            reals.push(real);
        }
        Ok(Self {
            lbs,
            router_bird: None,
            decaps: Vec::new(),
            checked,
            _servers: servers,
            _echo: echo,
            _switch_port_xdp: switch_port_xdp,
            client,
            router,
            reals,
            switch,
        })
    }

    /// The lbctl configuration both LBs serve: a dsr and a tunnel VIP on port 80 and the
    /// session port, and the checked dsr VIP (port 80, its reals checked on CHECKED_PORT).
    pub fn lbctl_config(&self) -> Result<PathBuf> {
        let reals: Vec<String> = REAL_ADDRS.iter().map(|a| format!("\"{a}\"")).collect();
        let reals = reals.join(", ");
        let mut text = String::new();
        for (vip, mode) in [(PAIR_DSR_VIP, "dsr"), (PAIR_TUNNEL_VIP, "tunnel")] {
            for port in [VIP_PORT, SESSION_PORT] {
                text += &format!(
                    "[[vip]]\naddress = \"{vip}:{port}/tcp\"\nmode = \"{mode}\"\nreals = [{reals}]\n\n"
                );
            }
        }
        text += &format!(
            "[[vip]]\naddress = \"{CHECKED_VIP}:{VIP_PORT}/tcp\"\nmode = \"dsr\"\nreals = [{reals}]\ncheck = \"tcp,port={CHECKED_PORT},inter=200ms,rise=2,fall=2\"\n"
        );
        let path = std::env::temp_dir().join(format!("{}.toml", self.switch.name()));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Where LB `i`'s BIRD lives: its include file and control socket.
    fn bird_dir(&self, i: usize) -> PathBuf {
        std::env::temp_dir().join(format!("{}-bird", self.lbs[i].ns.name()))
    }

    /// The file lbctl on LB `i` writes its announcements to.
    pub fn include(&self, i: usize) -> PathBuf {
        self.bird_dir(i).join("bird-vips.conf")
    }

    /// `lbctl attach eth0 --config CONFIG --bgp-include ... --bird-socket ... --bgp-rise RISE`
    /// on LB `i`.
    pub fn start_lbctl(
        &mut self,
        i: usize,
        lbctl: &Path,
        config: &Path,
        rise: &str,
        more: &[&str],
    ) -> Result<()> {
        std::fs::create_dir_all(self.bird_dir(i))?;
        let mut extra = vec![
            "--bgp-include".to_owned(),
            self.include(i).display().to_string(),
            "--bird-socket".to_owned(),
            self.bird_dir(i).join("bird.ctl").display().to_string(),
            "--bgp-rise".to_owned(),
            rise.to_owned(),
        ];
        extra.extend(more.iter().map(|s| s.to_string()));
        self.lbs[i].start_lbctl_with(lbctl, config, &extra)
    }

    /// BIRD on LB `i`, with the documented configuration (lbctl must have written its
    /// include file: BIRD refuses to start without it).
    pub fn start_bird_lb(&mut self, i: usize) -> Result<()> {
        let include = self.include(i);
        if !include.exists() {
            anyhow::bail!("{} is not there yet: start lbctl first", include.display());
        }
        let conf = BIRD_LB_CONF
            .replace("@ADDR@", &PAIR_LB_ADDRS[i].to_string())
            .replace("@INCLUDE@", &include.display().to_string())
            .replace("@ROUTER@", &ROUTER_ADDR.to_string());
        self.lbs[i].bird = Some(bird(&self.lbs[i].ns, &conf)?);
        Ok(())
    }

    /// BIRD on the router, a BGP session to each LB.
    pub fn start_bird_router(&mut self) -> Result<()> {
        let mut conf = BIRD_ROUTER_CONF.replace("@ADDR@", &ROUTER_ADDR.to_string());
        for (i, addr) in PAIR_LB_ADDRS.iter().enumerate() {
            conf += &format!(
                "\nprotocol bgp lb{} from lbctl_lb {{\n    neighbor {addr} as 65001;\n}}\n",
                i + 1
            );
        }
        self.router_bird = Some(bird(&self.router, &conf)?);
        Ok(())
    }

    pub fn bird_logs(&self) -> String {
        let mut out = String::new();
        for lb in &self.lbs {
            if let Some(b) = &lb.bird {
                out += &format!("--- {} BIRD:\n{}\n", lb.name, b.log_text());
            }
        }
        if let Some(b) = &self.router_bird {
            out += &format!("--- router BIRD:\n{}\n", b.log_text());
        }
        out
    }

    /// The next hops the router's kernel has for `addr`: one per LB announcing it.
    pub fn router_next_hops(&self, addr: Ipv4Addr) -> Result<Vec<Ipv4Addr>> {
        let text = self.router.ip(&["route", "show", &format!("{addr}/32")])?;
        Ok(text
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect())
    }

    /// Stops (or starts again) the checked servers on every real: the checked VIP's reals
    /// all fail (or pass) their checks.
    pub fn set_checked_servers(&mut self, running: bool) -> Result<()> {
        if running {
            for (i, real) in self.reals.iter().enumerate() {
                let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), CHECKED_PORT);
                let server = Server::start_tcp(real, &format!("r{}", i + 1), any)?;
                self.checked.insert(i, server);
            }
        } else {
            for (_, mut s) in std::mem::take(&mut self.checked) {
                s.stop();
            }
        }
        Ok(())
    }

    /// `lbctl decap attach eth0` on every real, for the tunnel VIP.
    pub fn start_decap(&mut self, lbctl: &Path) -> Result<()> {
        let args = ["decap", "attach", HOST_IFACE].map(String::from);
        for real in &self.reals {
            self.decaps
                .push(spawn_lbctl(real, lbctl, &args).context("decap")?);
        }
        Ok(())
    }
}
