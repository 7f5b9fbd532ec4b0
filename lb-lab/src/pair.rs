//! Two LBs on one segment, active/standby under keepalived (VRRP), in front of the same
//! reals: the lab of `tests/tests/vrrp_e2e.rs` and of docs/beyond-one-machine.md.
//!
//! ```text
//!   client 198.18.0.100 ─┐  (routes 198.18.100.0/24 via the virtual router 198.18.0.5)
//!   lb1    198.18.0.1  ──┤ br0   keepalived on lb1 and lb2 share 198.18.0.5 (VRID 51,
//!   lb2    198.18.0.2  ──┤       use_vmac: MAC 00:00:5e:00:01:33 on the master)
//!   r1..r3 198.18.0.11.. ┘  (hold the VIPs on lo; decap for tunnel)
//! ```

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    lb_process::{spawn_lbctl, LbProcess},
    netns::{unique_prefix, BpfMount},
    sessions::{EchoServer, SESSION_PORT},
    topology::{configure_direct_return, plug},
    xdp_pass::{self, PassPrograms},
    Netns, Server, CLIENT_ADDR, HOST_IFACE, REAL_ADDRS, VIP_PORT,
};

/// The LBs' own addresses.
pub const PAIR_LB_ADDRS: [Ipv4Addr; 2] =
    [Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2)];
/// The virtual router the LBs share: the clients' next hop to the VIPs.
pub const VIRTUAL_ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 5);
/// Its MAC (VRID 51).
pub const VIRTUAL_MAC: [u8; 6] = [0, 0, 0x5e, 0, 1, 51];
/// The dsr VIP and the tunnel VIP (both on port 80 and the session port).
pub const PAIR_DSR_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
pub const PAIR_TUNNEL_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 11);
/// The one-arm VIP (the session port), its SNAT pool address: on both LBs' lo, and a
/// keepalived virtual address, so the reals' answers reach the master.
pub const PAIR_ONE_ARM_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 13);
pub const PAIR_SNAT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 201);
/// The nat VIP (port [`PUSH_PORT`], where the reals speak first when told), reached from a
/// second client whose address the reals route via the virtual router: nat's replies must
/// cross the LB.
pub const PAIR_NAT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 14);
pub const PUSH_PORT: u16 = 7000;
pub const NAT_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 102);
/// Where each LB listens for flow sync.
pub const SYNC_PORT: u16 = 7946;

/// The keepalived configuration both LBs run, with `@NAME@`, `@PRIORITY@`, `@LBCTL@` and
/// `@SOCKET@` to fill in: the documented one.
pub const KEEPALIVED_CONF: &str = include_str!("../../docs/examples/keepalived-lbctl.conf");

/// One LB of the pair. Field order is drop order.
pub struct PairLb {
    pub(crate) bird: Option<Daemon>,
    keepalived: Option<Daemon>,
    lbctl: Option<LbProcess>,
    bpffs: BpfMount,
    pub ns: Netns,
    pub name: String,
}

impl PairLb {
    /// An LB in `ns`, with a bpffs of its own; nothing runs yet.
    pub(crate) fn new(ns: Netns, name: &str) -> Result<Self> {
        Ok(Self {
            bird: None,
            keepalived: None,
            lbctl: None,
            bpffs: BpfMount::new(ns.name())?,
            ns,
            name: name.to_owned(),
        })
    }

    pub fn socket(&self) -> PathBuf {
        std::env::temp_dir().join(format!("{}.sock", self.ns.name()))
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs.path().join("lbctl")
    }

    /// Runs `lbctl attach eth0 --config CONFIG` here, and waits until it is attached.
    pub fn start_lbctl(&mut self, lbctl: &Path, config: &Path) -> Result<()> {
        self.start_lbctl_with(lbctl, config, &[])
    }

    /// As [`PairLb::start_lbctl`], with more arguments.
    pub fn start_lbctl_with(
        &mut self,
        lbctl: &Path,
        config: &Path,
        extra: &[String],
    ) -> Result<()> {
        if self.lbctl.is_some() {
            bail!("{}'s lbctl is already running", self.name);
        }
        let args: Vec<String> = [
            "attach",
            HOST_IFACE,
            "--config",
            &config.display().to_string(),
            "--socket",
            &self.socket().display().to_string(),
            "--pin-dir",
            &self.pin_dir().display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
        .collect();
        self.lbctl = Some(spawn_lbctl(&self.ns, lbctl, &args)?);
        Ok(())
    }

    /// Stops lbctl with SIGTERM (it detaches); returns its log.
    pub fn stop_lbctl(&mut self) -> Result<String> {
        let mut p = self.lbctl.take().context("lbctl is not running")?;
        let status = p.terminate()?;
        let log = p.log();
        if !status.success() {
            bail!("lbctl exited with {status}:\n{log}");
        }
        Ok(log)
    }

    /// Kills lbctl with SIGKILL: its program stays attached (it attaches over netlink), with
    /// no one checking the reals or answering keepalived.
    pub fn kill_lbctl(&mut self) -> Result<String> {
        let mut p = self.lbctl.take().context("lbctl is not running")?;
        p.signal(libc::SIGKILL);
        p.wait()?;
        Ok(p.log())
    }

    /// Waits for lbctl to exit by itself (after `lbctl stop`): its exit status and log.
    pub fn wait_lbctl(&mut self) -> Result<(std::process::ExitStatus, String)> {
        let mut p = self.lbctl.take().context("lbctl is not running")?;
        let status = p.wait()?;
        Ok((status, p.log()))
    }

    pub fn lbctl_log(&self) -> String {
        self.lbctl.as_ref().map(LbProcess::log).unwrap_or_default()
    }

    /// Starts keepalived here with the documented configuration.
    pub fn start_keepalived(&mut self, lbctl: &Path, priority: u8) -> Result<()> {
        let conf = KEEPALIVED_CONF
            .replace("@NAME@", &self.name)
            .replace("@PRIORITY@", &priority.to_string())
            .replace("@LBCTL@", &lbctl.display().to_string())
            .replace("@SOCKET@", &self.socket().display().to_string());
        self.keepalived = Some(keepalived(&self.ns, &conf)?);
        Ok(())
    }

    pub fn keepalived_log(&self) -> String {
        self.keepalived
            .as_ref()
            .map(Daemon::log_text)
            .unwrap_or_default()
    }

    /// What `lbctl status` says of the VRRP instance (MASTER, BACKUP, FAULT...), as
    /// keepalived's notify hook told it; `None` before any.
    pub fn vrrp_state(&self, lbctl: &Path) -> Option<String> {
        let out = std::process::Command::new(lbctl)
            .args(["status", "--socket"])
            .arg(self.socket())
            .output()
            .ok()?;
        // "vrrp          instance lbctl is MASTER (for 1s)"
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("vrrp"))
            .and_then(|rest| rest.split(" is ").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .map(str::to_owned)
    }
}

/// A daemon of the lab's (keepalived, BIRD) in a namespace, with its configuration and log
/// in a directory of its own; stopped on drop.
pub(crate) struct Daemon {
    child: Child,
    pub(crate) log: PathBuf,
    pub(crate) dir: PathBuf,
}

impl Daemon {
    /// Writes `conf` to DIR/NAME.conf and runs `program ARGS(dir)` in `ns`, logging to
    /// DIR/log; `args` gets the directory (for the config, pid and socket paths).
    pub(crate) fn start(
        ns: &Netns,
        name: &str,
        conf: &str,
        program: &str,
        args: impl FnOnce(&Path) -> Vec<String>,
    ) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("{}-{name}", ns.name()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{name}.conf")), conf)?;
        let log = dir.join("log");
        let out = std::fs::File::create(&log)?;
        let child = ns
            .command(program)
            .args(args(&dir))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {program} (`cargo xtask setup` installs it)"))?;
        Ok(Self { child, log, dir })
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs the program).
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// keepalived in `ns` with configuration `conf`.
fn keepalived(ns: &Netns, conf: &str) -> Result<Daemon> {
    Daemon::start(ns, "keepalived", conf, "keepalived", |dir| {
        let p = |f: &str| dir.join(f).display().to_string();
        // -n: stay in the foreground, -l: log to the console (our file), -D: in detail;
        // pid files of its own, so two keepalived in two namespaces do not see each other.
        vec![
            "-n".into(),
            "-l".into(),
            "-D".into(),
            "-f".into(),
            p("keepalived.conf"),
            "-p".into(),
            p("pid"),
            "-r".into(),
            p("vrrp.pid"),
            "-c".into(),
            p("checkers.pid"),
        ]
    })
}

/// The running pair. Field order is drop order.
pub struct HaPair {
    pub lbs: Vec<PairLb>,
    decaps: Vec<LbProcess>,
    /// Each real's push server (nat, the real speaking first).
    pub push: Vec<crate::push::PushServer>,
    _servers: Vec<Server>,
    _echo: Vec<EchoServer>,
    _switch_port_xdp: PassPrograms,
    pub client: Netns,
    /// The nat client.
    pub client2: Netns,
    pub reals: Vec<Netns>,
    pub switch: Netns,
}

impl HaPair {
    /// Builds the pair's segment, the client and three reals (servers and the VIPs on lo);
    /// nothing of lbctl or keepalived runs yet.
    pub fn build() -> Result<Self> {
        let p = unique_prefix();
        let switch = Netns::create(&format!("{p}-sw"))?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let client = Netns::create(&format!("{p}-client"))?;
        plug(
            &switch,
            "br0",
            &client,
            "client",
            HOST_IFACE,
            Some(CLIENT_ADDR),
        )?;
        client.ip(&[
            "route",
            "add",
            "198.18.100.0/24",
            "via",
            &VIRTUAL_ROUTER.to_string(),
        ])?;
        let client2 = Netns::create(&format!("{p}-client2"))?;
        plug(
            &switch,
            "br0",
            &client2,
            "client2",
            HOST_IFACE,
            Some(NAT_CLIENT_ADDR),
        )?;
        client2.ip(&[
            "route",
            "add",
            "198.18.100.0/24",
            "via",
            &VIRTUAL_ROUTER.to_string(),
        ])?;
        let mut lbs = Vec::new();
        let mut ports = Vec::new();
        for (i, addr) in PAIR_LB_ADDRS.iter().enumerate() {
            let name = format!("lb{}", i + 1);
            let ns = Netns::create(&format!("{p}-{name}"))?;
            if i == 1 {
                // lb2's eth0 gets another index than lb1's: sync must not depend on them.
                ns.ip(&[
                    "link", "add", "pad0", "type", "veth", "peer", "name", "pad1",
                ])?;
            }
            plug(&switch, "br0", &ns, &name, HOST_IFACE, Some(*addr))?;
            ns.ip(&["addr", "add", &format!("{PAIR_SNAT_ADDR}/32"), "dev", "lo"])?;
            // Only the interface holding an address answers ARP for it: eth0 must not answer
            // for the virtual router's address (it lives on keepalived's macvlan).
            for iface in ["all", HOST_IFACE] {
                ns.sysctl(&format!("net.ipv4.conf.{iface}.arp_ignore"), "1")?;
            }
            lbs.push(PairLb::new(ns, &name)?);
            ports.push(name);
        }
        let switch_port_xdp = switch.run(move || {
            let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
            xdp_pass::attach(&ports)
        })??;
        let mut reals = Vec::new();
        let mut servers = Vec::new();
        let mut echo = Vec::new();
        let mut push = Vec::new();
        for (i, addr) in REAL_ADDRS.iter().enumerate() {
            let name = format!("r{}", i + 1);
            let real = Netns::create(&format!("{p}-{name}"))?;
            plug(&switch, "br0", &real, &name, HOST_IFACE, Some(*addr))?;
            configure_direct_return(&real)?;
            let any = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
            servers.push(Server::start_tcp(&real, &name, any(VIP_PORT))?);
            echo.push(EchoServer::start(&real, &name, any(SESSION_PORT))?);
            push.push(crate::push::PushServer::start(
                &real,
                &name,
                any(PUSH_PORT),
            )?);
            // nat: the answers to the nat client go back through the LB.
            real.ip(&[
                "route",
                "add",
                &format!("{NAT_CLIENT_ADDR}/32"),
                "via",
                &VIRTUAL_ROUTER.to_string(),
            ])?;
            reals.push(real);
        }
        Ok(Self {
            lbs,
            decaps: Vec::new(),
            push,
            _servers: servers,
            _echo: echo,
            _switch_port_xdp: switch_port_xdp,
            client,
            client2,
            reals,
            switch,
        })
    }

    /// The lbctl configuration LB `lb` serves: a dsr and a tunnel VIP, each on port 80 and
    /// the session port, and a one-arm VIP on the session port, over the three reals. lb2's
    /// lists another VIP first, so its VIPs and reals have other ids than lb1's. Written to
    /// a file of the lab's.
    pub fn lbctl_config(&self, lb: usize) -> Result<PathBuf> {
        let reals: Vec<String> = REAL_ADDRS.iter().map(|a| format!("\"{a}\"")).collect();
        let mut text = String::new();
        if lb == 1 {
            text += &format!(
                "[[vip]]\naddress = \"198.18.100.50:{VIP_PORT}/tcp\"\nmode = \"dsr\"\nreals = [{}]\n\n",
                reals.join(", ")
            );
        }
        text += &format!(
            "[[vip]]\naddress = \"{PAIR_NAT_VIP}:{PUSH_PORT}/tcp\"\nmode = \"nat\"\nreals = [{}]\n\n",
            reals.join(", ")
        );
        text += &format!(
            "[[vip]]\naddress = \"{PAIR_ONE_ARM_VIP}:{SESSION_PORT}/tcp\"\nmode = \"one-arm\"\nsnat_pool = [\"{PAIR_SNAT_ADDR}\"]\nreals = [{}]\n\n",
            reals.join(", ")
        );
        for (vip, mode) in [(PAIR_DSR_VIP, "dsr"), (PAIR_TUNNEL_VIP, "tunnel")] {
            for port in [VIP_PORT, SESSION_PORT] {
                text += &format!(
                    "[[vip]]\naddress = \"{vip}:{port}/tcp\"\nmode = \"{mode}\"\nreals = [{}]\n\n",
                    reals.join(", ")
                );
            }
        }
        let path = std::env::temp_dir().join(format!("{}-{lb}.toml", self.switch.name()));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// The flow sync arguments of LB `lb`: it listens on its address, its peer is the other
    /// LB, the key a file of the lab's.
    pub fn sync_args(&self, lb: usize) -> Result<Vec<String>> {
        let key = std::env::temp_dir().join(format!("{}-sync.key", self.switch.name()));
        std::fs::write(&key, "lab-pair-key-0123456789abcdef\n")?;
        Ok(vec![
            "--sync-listen".into(),
            format!("{}:{SYNC_PORT}", PAIR_LB_ADDRS[lb]),
            "--sync-peer".into(),
            format!("{}:{SYNC_PORT}", PAIR_LB_ADDRS[1 - lb]),
            "--sync-key".into(),
            key.display().to_string(),
        ])
    }

    /// `lbctl decap attach eth0` on every real, for the tunnel VIP.
    pub fn start_decap(&mut self, lbctl: &Path) -> Result<()> {
        let args = ["decap", "attach", HOST_IFACE].map(String::from);
        for real in &self.reals {
            self.decaps.push(spawn_lbctl(real, lbctl, &args)?);
        }
        Ok(())
    }

    /// The LB's end of its wire on the switch: down, the LB is gone as a dead host is.
    pub fn cut_wire(&self, lb: usize) -> Result<()> {
        self.switch
            .ip(&["link", "set", &self.lbs[lb].name, "down"])
            .map(drop)
    }
}
