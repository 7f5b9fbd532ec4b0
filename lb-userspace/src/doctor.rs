//! `lbctl doctor real`: run on a real server of dsr or tunnel VIPs, it reads what those modes
//! need from the host (VIPs on `lo`, the ARP and reverse-path sysctls, the decap program, the
//! interface's address) and names the command that fixes each finding.
//!
//! Facts are gathered first (netlink, /proc/sys, BPF program info), then judged by pure code,
//! so every verdict is unit-tested without root.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use anyhow::{anyhow, bail, Context as _, Result};
use futures::TryStreamExt as _;
use lb_common::program_names;
use rtnetlink::packet_route::{address::AddressAttribute, link::LinkAttribute};

use crate::{neigh, route};

/// How the load balancer sends this real the VIPs' traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RealMode {
    /// The LB rewrites only the destination MAC: the real is on its segment and receives
    /// packets addressed to the VIP.
    Dsr,
    /// The LB wraps packets in IP-in-IP to the real's address; `lbctl decap attach` unwraps
    /// them here.
    Tunnel,
}

/// Check that this host is ready to be a real server of dsr or tunnel VIPs, and print the
/// command that fixes each thing that is not.
#[derive(clap::Args, Debug, Clone)]
pub struct DoctorRealArgs {
    /// A VIP this real serves (it answers clients from it). Repeat for several.
    #[arg(long = "vip", value_name = "ADDR", required = true)]
    pub vips: Vec<IpAddr>,
    /// How the LB forwards the VIPs' traffic to this real.
    #[arg(long, value_enum, default_value_t = RealMode::Dsr)]
    pub mode: RealMode,
    /// The interface the LB's traffic arrives on [default: the default route's interface].
    #[arg(long, value_name = "NAME")]
    pub iface: Option<String>,
}

/// One thing checked, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Short name of what was checked.
    pub check: String,
    pub ok: bool,
    /// What was found, and why it matters.
    pub detail: String,
    /// When not ok: the command(s) to run, one per line.
    pub fix: Option<String>,
}

/// What `check_real` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The interface checked.
    pub iface: String,
    /// Whether `iface` was taken from the default route (no --iface given).
    pub iface_from_default_route: bool,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn all_ok(&self) -> bool {
        self.findings.iter().all(|f| f.ok)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.iface_from_default_route {
            writeln!(
                f,
                "checking {} (the default route's interface; --iface checks another)",
                self.iface
            )?;
        } else {
            writeln!(f, "checking {}", self.iface)?;
        }
        let width = self.findings.iter().map(|x| x.check.len()).max();
        let width = width.unwrap_or(0);
        for x in &self.findings {
            let status = if x.ok { "ok" } else { "FIX" };
            writeln!(f, "{status:<4} {:<width$}  {}", x.check, x.detail)?;
            for line in x.fix.iter().flat_map(|fix| fix.lines()) {
                writeln!(f, "       {line}")?;
            }
        }
        let total = self.findings.len();
        let failing = self.findings.iter().filter(|x| !x.ok).count();
        if failing == 0 {
            write!(f, "all {total} checks pass")
        } else {
            write!(f, "{failing} of {total} checks need a change")
        }
    }
}

/// Inspects the calling thread's network namespace as a real server of `args.vips` in
/// `args.mode`. Runs its own tokio runtime: call it outside one. Tunnel mode reads BPF
/// program names, which needs root (CAP_BPF or CAP_SYS_ADMIN).
pub fn check_real(args: &DoctorRealArgs) -> Result<Report> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let (iface, from_default_route) = match &args.iface {
        Some(i) => (i.clone(), false),
        None => (rt.block_on(default_route_iface())?, true),
    };
    let facts = rt.block_on(gather(args, &iface))?;
    Ok(Report {
        findings: judge(args, &facts),
        iface,
        iface_from_default_route: from_default_route,
    })
}

/// An address configured on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
struct IfaceAddr {
    iface: String,
    addr: IpAddr,
    prefix_len: u8,
}

/// A per-interface IPv4 sysctl: the kernel acts on max(all, iface) for arp_ignore,
/// arp_announce and rp_filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sysctl {
    all: u32,
    iface: u32,
}

impl Sysctl {
    fn effective(self) -> u32 {
        self.all.max(self.iface)
    }
}

/// The XDP program attached to the interface.
#[derive(Clone, Debug, PartialEq, Eq)]
struct XdpProgram {
    id: u32,
    /// As the kernel keeps it: at most 15 bytes.
    name: String,
}

/// What the host looks like, as far as the checks go. Sysctls and the XDP program are read
/// only when a check needs them.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Facts {
    iface: String,
    addrs: Vec<IfaceAddr>,
    mtu: u32,
    arp_ignore: Option<Sysctl>,
    arp_announce: Option<Sysctl>,
    rp_filter: Option<Sysctl>,
    /// Tunnel mode: what is attached to the interface (`None` inside: nothing).
    xdp: Option<Option<XdpProgram>>,
    /// The address decap accepts tunnels to: the interface's first IPv4 address, read the way
    /// `Datapath::attach_decap` reads it.
    decap_addr: Option<Ipv4Addr>,
}

fn judge(args: &DoctorRealArgs, f: &Facts) -> Vec<Finding> {
    let mut out: Vec<Finding> = args
        .vips
        .iter()
        .map(|&vip| vip_on_lo(vip, args.mode, &f.addrs))
        .collect();
    if let Some(s) = f.arp_ignore {
        out.push(arp_ignore(&f.iface, s));
    }
    if let Some(s) = f.arp_announce {
        out.push(arp_announce(&f.iface, s));
    }
    match args.mode {
        RealMode::Dsr => out.push(Finding {
            check: "mtu".into(),
            ok: true,
            detail: format!("{} has MTU {} (reported only)", f.iface, f.mtu),
            fix: None,
        }),
        RealMode::Tunnel => {
            if let Some(s) = f.rp_filter {
                out.push(rp_filter(&f.iface, s));
            }
            if let Some(xdp) = &f.xdp {
                out.push(decap_attached(&f.iface, xdp.as_ref()));
            }
            out.push(tunnel_address(&f.iface, f.decap_addr, &f.addrs));
        }
    }
    out
}

fn host_prefix_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn vip_on_lo(vip: IpAddr, mode: RealMode, addrs: &[IfaceAddr]) -> Finding {
    let host = host_prefix_len(vip);
    let held: Vec<&IfaceAddr> = addrs.iter().filter(|a| a.addr == vip).collect();
    let on_lo = held.iter().any(|a| a.iface == "lo" && a.prefix_len == host);
    let misplaced: Vec<&&IfaceAddr> = held
        .iter()
        .filter(|a| a.iface != "lo" || a.prefix_len != host)
        .collect();
    let mut detail = Vec::new();
    if on_lo {
        detail.push(format!("{vip}/{host} is on lo"));
    } else {
        detail.push(format!(
            "{vip}/{host} is not on lo, so the real does not accept the VIP's packets"
        ));
    }
    for a in &misplaced {
        if a.iface == "lo" {
            detail.push(format!(
                "{vip}/{} on lo makes every address of that /{} this host's",
                a.prefix_len, a.prefix_len
            ));
        } else {
            let asked = if vip.is_ipv4() {
                "ARP"
            } else {
                "neighbour discovery"
            };
            detail.push(format!(
                "{vip} is on {}: the real answers {asked} for it there and steals the VIP's traffic from the LB",
                a.iface
            ));
        }
    }
    match (vip, mode) {
        (IpAddr::V6(_), RealMode::Tunnel) => detail.push(
            "the LB tunnels IPv4 VIPs only for now (`lbctl attach` refuses this one): serve it in dsr mode".into(),
        ),
        (IpAddr::V6(_), RealMode::Dsr) => detail.push(
            "IPv6: the ARP sysctls do not apply; neighbour discovery answers only for addresses of the interface asked, so lo's VIP stays unannounced".into(),
        ),
        (IpAddr::V4(_), _) => {}
    }
    let mut fix: Vec<String> = misplaced
        .iter()
        .map(|a| format!("ip addr del {vip}/{} dev {}", a.prefix_len, a.iface))
        .collect();
    if !on_lo {
        fix.push(format!("ip addr add {vip}/{host} dev lo"));
    }
    Finding {
        check: format!("vip {vip} on lo"),
        ok: fix.is_empty(),
        detail: detail.join("; "),
        fix: (!fix.is_empty()).then(|| fix.join("\n")),
    }
}

/// `sysctl -w` key of an IPv4 per-interface setting. Interface names with dots (VLANs) need
/// the slash form, where a dot is not a separator.
fn sysctl_key(iface: &str, name: &str) -> String {
    if iface.contains('.') {
        format!("net/ipv4/conf/{iface}/{name}")
    } else {
        format!("net.ipv4.conf.{iface}.{name}")
    }
}

/// What was read, then what the value achieves (`ok`) or why it must be `want`.
fn sysctl_detail(iface: &str, s: Sysctl, ok: bool, want: &str, good: &str, bad: &str) -> String {
    let read = format!(
        "effective {} (all {}, {iface} {})",
        s.effective(),
        s.all,
        s.iface
    );
    if ok {
        format!("{read}: {good}")
    } else {
        format!("{read}, must be {want}: {bad}")
    }
}

fn arp_ignore(iface: &str, s: Sysctl) -> Finding {
    let ok = matches!(s.effective(), 1 | 2);
    let detail = sysctl_detail(
        iface,
        s,
        ok,
        "1 or 2",
        &format!("ARP is answered only for {iface}'s own addresses, never for the VIPs on lo"),
        "else the real answers ARP for the VIPs on lo and takes their traffic from the LB",
    );
    // all=1 makes max(all, iface) right unless the interface's own value is above 2.
    let mut set = vec![format!("{}=1", sysctl_key("all", "arp_ignore"))];
    if s.iface > 2 {
        set.push(format!("{}=1", sysctl_key(iface, "arp_ignore")));
    }
    Finding {
        check: "arp_ignore".into(),
        ok,
        detail,
        fix: (!ok).then(|| format!("sysctl -w {}", set.join(" "))),
    }
}

fn arp_announce(iface: &str, s: Sysctl) -> Finding {
    let ok = s.effective() == 2;
    let detail = sysctl_detail(
        iface,
        s,
        ok,
        "2",
        &format!("ARP requests name {iface}'s own address as their source, never a VIP"),
        "else an ARP request may name a VIP as its source, and neighbours send the VIP's traffic to the real",
    );
    Finding {
        check: "arp_announce".into(),
        ok,
        detail,
        fix: (!ok).then(|| format!("sysctl -w {}=2", sysctl_key("all", "arp_announce"))),
    }
}

fn rp_filter(iface: &str, s: Sysctl) -> Finding {
    let ok = matches!(s.effective(), 0 | 2);
    let detail = sysctl_detail(
        iface,
        s,
        ok,
        "0 or 2",
        "not strict, so unwrapped client packets pass whatever the route back",
        &format!("strict (1) drops unwrapped packets whose client is not routed back out {iface}"),
    );
    Finding {
        check: "rp_filter".into(),
        ok,
        detail,
        fix: (!ok).then(|| {
            format!(
                "sysctl -w {}=2 {}=2",
                sysctl_key("all", "rp_filter"),
                sysctl_key(iface, "rp_filter")
            )
        }),
    }
}

/// Whether a kernel-kept program name is the decap program's: the kernel keeps 15 bytes.
fn is_decap(name: &str) -> bool {
    let full = program_names::DECAP;
    name == &full[..full.len().min(15)]
}

fn decap_attached(iface: &str, xdp: Option<&XdpProgram>) -> Finding {
    let attach = format!("lbctl decap attach {iface}");
    let (ok, detail, fix) = match xdp {
        Some(p) if is_decap(&p.name) => (
            true,
            format!("{} (id {}) is attached to {iface}", p.name, p.id),
            None,
        ),
        Some(p) => {
            let balancer = if p.name == program_names::LB {
                " (that is the balancer: is this the LB rather than a real?)"
            } else {
                ""
            };
            (
                false,
                format!(
                    "{} (id {}) is attached to {iface}, not {}{balancer}; if `ip link set ... xdp off` says busy, stop the process holding it",
                    p.name,
                    p.id,
                    program_names::DECAP,
                ),
                Some(format!("ip link set dev {iface} xdp off\n{attach}")),
            )
        }
        None => (
            false,
            format!(
                "no XDP program on {iface}, so the LB's IP-in-IP packets reach the stack still wrapped; `{attach}` stays in the foreground: run it as a service"
            ),
            Some(attach),
        ),
    };
    Finding {
        check: "decap program".into(),
        ok,
        detail,
        fix,
    }
}

fn tunnel_address(iface: &str, decap_addr: Option<Ipv4Addr>, addrs: &[IfaceAddr]) -> Finding {
    let check = format!("{iface} IPv4 address");
    match decap_addr {
        Some(a) => {
            let others: Vec<String> = addrs
                .iter()
                .filter(|x| x.iface == iface && x.addr.is_ipv4() && x.addr != IpAddr::V4(a))
                .map(|x| x.addr.to_string())
                .collect();
            let mut detail = format!(
                "{a}: decap unwraps tunnels sent to it, so it is this real's --real address on the LB"
            );
            if !others.is_empty() {
                detail += &format!(" (not {}: only the first address counts)", others.join(", "));
            }
            Finding {
                check,
                ok: true,
                detail,
                fix: None,
            }
        }
        None => Finding {
            check,
            ok: false,
            detail: format!("{iface} has no IPv4 address: the LB tunnels to one, and decap accepts tunnels sent to it"),
            fix: Some(format!("ip addr add ADDRESS/PREFIX dev {iface}")),
        },
    }
}

/// The interface of the main table's default route (IPv4 first, else IPv6).
async fn default_route_iface() -> Result<String> {
    let handle = neigh::connect()?;
    let mut multipath = false;
    for v6 in [false, true] {
        let routes = route::routes(&handle, v6).await?;
        let defaults = routes.iter().filter(|r| r.prefix_len == 0);
        // A multipath default route names no single interface (oif 0).
        multipath |= defaults.clone().any(|r| r.oif == 0);
        if let Some(r) = defaults.filter(|r| r.oif != 0).min_by_key(|r| r.metric) {
            let names = link_names(&handle).await?;
            return names.get(&r.oif).cloned().ok_or_else(|| {
                anyhow!(
                    "the default route's interface (index {}) vanished: pass --iface NAME",
                    r.oif
                )
            });
        }
    }
    if multipath {
        bail!("the default route has several next hops, so it names no one interface the LB's traffic arrives on: pass --iface NAME");
    }
    bail!("there is no default route to tell which interface the LB's traffic arrives on: pass --iface NAME")
}

async fn link_names(handle: &rtnetlink::Handle) -> Result<BTreeMap<u32, String>> {
    let mut links = handle.link().get().execute();
    let mut names = BTreeMap::new();
    while let Some(msg) = links.try_next().await.context("listing interfaces")? {
        for a in &msg.attributes {
            if let LinkAttribute::IfName(n) = a {
                names.insert(msg.header.index, n.clone());
            }
        }
    }
    Ok(names)
}

async fn addresses(handle: &rtnetlink::Handle) -> Result<Vec<IfaceAddr>> {
    let names = link_names(handle).await?;
    let mut dump = handle.address().get().execute();
    let mut out = Vec::new();
    while let Some(msg) = dump.try_next().await.context("listing addresses")? {
        // IPv4: IFA_LOCAL is the host's own address (IFA_ADDRESS is the peer's on
        // point-to-point links); IPv6 has only IFA_ADDRESS.
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(l) => Some(*l),
            _ => None,
        });
        let address = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(l) => Some(*l),
            _ => None,
        });
        if let (Some(addr), Some(iface)) = (local.or(address), names.get(&msg.header.index)) {
            out.push(IfaceAddr {
                iface: iface.clone(),
                addr,
                prefix_len: msg.header.prefix_len,
            });
        }
    }
    Ok(out)
}

fn read_sysctl(iface: &str, name: &str) -> Result<Sysctl> {
    let read = |dev: &str| -> Result<u32> {
        let path = format!("/proc/sys/net/ipv4/conf/{dev}/{name}");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        text.trim()
            .parse()
            .with_context(|| format!("{path} holds {text:?}, not a number"))
    };
    Ok(Sysctl {
        all: read("all")?,
        iface: read(iface)?,
    })
}

/// The program attached to `iface`, with the name the kernel keeps for it.
async fn attached_program(iface: &str) -> Result<Option<XdpProgram>> {
    let Some(id) = neigh::xdp_prog_id(iface).await? else {
        return Ok(None);
    };
    let mut failure = None;
    for info in aya::programs::loaded_programs() {
        match info {
            Ok(p) if p.id() == id => {
                let name = String::from_utf8_lossy(p.name()).into_owned();
                return Ok(Some(XdpProgram { id, name }));
            }
            Ok(_) => {}
            // A program unloaded mid-listing fails alone; lacking privileges fails them all.
            Err(e) => failure = Some(e),
        }
    }
    match failure {
        Some(e) => Err(anyhow!(e)).with_context(|| {
            format!("reading the name of XDP program {id} on {iface} (needs root)")
        }),
        None => bail!("XDP program {id} on {iface} was unloaded while being checked: run again"),
    }
}

async fn gather(args: &DoctorRealArgs, iface: &str) -> Result<Facts> {
    let handle = neigh::connect()?;
    let (_, attrs) = neigh::link_attributes(&handle, iface).await?;
    let mtu = attrs
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        })
        .unwrap_or(0);
    let any_v4 = args.vips.iter().any(IpAddr::is_ipv4);
    let tunnel = args.mode == RealMode::Tunnel;
    let decap_addr = if tunnel {
        let ipv4 = crate::iface::config(iface)?.ipv4;
        (ipv4 != [0; 4]).then(|| Ipv4Addr::from(ipv4))
    } else {
        None
    };
    Ok(Facts {
        iface: iface.to_owned(),
        addrs: addresses(&handle).await?,
        mtu,
        arp_ignore: any_v4
            .then(|| read_sysctl(iface, "arp_ignore"))
            .transpose()?,
        arp_announce: any_v4
            .then(|| read_sysctl(iface, "arp_announce"))
            .transpose()?,
        rp_filter: tunnel
            .then(|| read_sysctl(iface, "rp_filter"))
            .transpose()?,
        xdp: if tunnel {
            Some(attached_program(iface).await?)
        } else {
            None
        },
        decap_addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: &str = "198.18.100.10";

    fn addr(iface: &str, a: &str, len: u8) -> IfaceAddr {
        IfaceAddr {
            iface: iface.into(),
            addr: a.parse().unwrap(),
            prefix_len: len,
        }
    }

    fn args(mode: RealMode, vips: &[&str]) -> DoctorRealArgs {
        DoctorRealArgs {
            vips: vips.iter().map(|v| v.parse().unwrap()).collect(),
            mode,
            iface: Some("eth0".into()),
        }
    }

    /// A real configured as dsr and tunnel want it.
    fn good() -> Facts {
        Facts {
            iface: "eth0".into(),
            addrs: vec![
                addr("lo", "127.0.0.1", 8),
                addr("lo", VIP, 32),
                addr("eth0", "198.18.0.11", 24),
            ],
            mtu: 1500,
            arp_ignore: Some(Sysctl { all: 1, iface: 0 }),
            arp_announce: Some(Sysctl { all: 2, iface: 0 }),
            rp_filter: Some(Sysctl { all: 0, iface: 2 }),
            xdp: Some(Some(XdpProgram {
                id: 7,
                name: program_names::DECAP.into(),
            })),
            decap_addr: Some(Ipv4Addr::new(198, 18, 0, 11)),
        }
    }

    fn find<'a>(findings: &'a [Finding], check: &str) -> &'a Finding {
        findings
            .iter()
            .find(|f| f.check == check)
            .unwrap_or_else(|| panic!("no {check} in {findings:?}"))
    }

    #[test]
    fn the_arguments_parse_as_lbctl_doctor_real_takes_them() {
        use clap::{CommandFactory as _, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: DoctorRealArgs,
        }
        Cli::command().debug_assert();
        let cli = Cli::parse_from(["doctor", "--vip", VIP, "--vip", "2001:2::10"]);
        assert_eq!(cli.args.vips.len(), 2);
        assert_eq!(cli.args.mode, RealMode::Dsr);
        assert_eq!(cli.args.iface, None);
        let cli = Cli::parse_from([
            "doctor", "--vip", VIP, "--mode", "tunnel", "--iface", "eth1",
        ]);
        assert_eq!(cli.args.mode, RealMode::Tunnel);
        assert_eq!(cli.args.iface.as_deref(), Some("eth1"));
        assert!(
            Cli::try_parse_from(["doctor"]).is_err(),
            "--vip is required"
        );
    }

    #[test]
    fn the_effective_value_is_the_larger_of_all_and_the_interface() {
        assert_eq!(Sysctl { all: 0, iface: 2 }.effective(), 2);
        assert_eq!(Sysctl { all: 1, iface: 0 }.effective(), 1);
        let f = arp_ignore("eth0", Sysctl { all: 0, iface: 1 });
        assert!(f.ok, "{f:?}");
        let f = arp_announce("eth0", Sysctl { all: 0, iface: 1 });
        assert!(!f.ok);
        assert_eq!(
            f.fix.as_deref(),
            Some("sysctl -w net.ipv4.conf.all.arp_announce=2")
        );
    }

    #[test]
    fn arp_ignore_fixes_the_interface_too_when_its_value_would_win() {
        let f = arp_ignore("eth0", Sysctl { all: 0, iface: 0 });
        assert_eq!(
            f.fix.as_deref(),
            Some("sysctl -w net.ipv4.conf.all.arp_ignore=1")
        );
        let f = arp_ignore("eth0", Sysctl { all: 1, iface: 8 });
        assert!(!f.ok);
        assert_eq!(
            f.fix.as_deref(),
            Some("sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.eth0.arp_ignore=1")
        );
    }

    #[test]
    fn strict_rp_filter_needs_a_change_and_vlan_names_use_the_slash_form() {
        assert!(rp_filter("eth0", Sysctl { all: 2, iface: 0 }).ok);
        let f = rp_filter("eth0.100", Sysctl { all: 1, iface: 0 });
        assert!(!f.ok);
        assert_eq!(
            f.fix.as_deref(),
            Some("sysctl -w net.ipv4.conf.all.rp_filter=2 net/ipv4/conf/eth0.100/rp_filter=2")
        );
    }

    #[test]
    fn a_configured_real_passes_every_check_in_both_modes() {
        for mode in [RealMode::Dsr, RealMode::Tunnel] {
            let findings = judge(&args(mode, &[VIP]), &good());
            assert!(findings.iter().all(|f| f.ok), "{mode:?}: {findings:?}");
        }
    }

    #[test]
    fn a_vip_missing_from_lo_is_added_as_a_host_address() {
        let mut facts = good();
        facts.addrs.retain(|a| a.iface != "lo");
        let f = vip_on_lo(VIP.parse().unwrap(), RealMode::Dsr, &facts.addrs);
        assert!(!f.ok);
        assert_eq!(
            f.fix.as_deref(),
            Some("ip addr add 198.18.100.10/32 dev lo")
        );
    }

    #[test]
    fn a_vip_on_the_interface_is_moved_to_lo_and_the_arp_theft_named() {
        let addrs = vec![addr("eth0", VIP, 32), addr("eth0", "198.18.0.11", 24)];
        let f = vip_on_lo(VIP.parse().unwrap(), RealMode::Dsr, &addrs);
        assert!(!f.ok);
        assert!(
            f.detail.contains("steals the VIP's traffic"),
            "{}",
            f.detail
        );
        assert_eq!(
            f.fix.as_deref(),
            Some("ip addr del 198.18.100.10/32 dev eth0\nip addr add 198.18.100.10/32 dev lo")
        );
    }

    #[test]
    fn a_vip_on_lo_with_a_wider_prefix_is_replaced() {
        let addrs = vec![addr("lo", VIP, 24)];
        let f = vip_on_lo(VIP.parse().unwrap(), RealMode::Dsr, &addrs);
        assert!(!f.ok);
        assert_eq!(
            f.fix.as_deref(),
            Some("ip addr del 198.18.100.10/24 dev lo\nip addr add 198.18.100.10/32 dev lo")
        );
    }

    #[test]
    fn ipv6_vips_want_a_128_on_lo_and_no_arp_checks() {
        let mut facts = good();
        facts.arp_ignore = None;
        facts.arp_announce = None;
        let findings = judge(&args(RealMode::Dsr, &["2001:2::10"]), &facts);
        let f = find(&findings, "vip 2001:2::10 on lo");
        assert_eq!(f.fix.as_deref(), Some("ip addr add 2001:2::10/128 dev lo"));
        assert!(
            f.detail.contains("ARP sysctls do not apply"),
            "{}",
            f.detail
        );
        assert!(findings.iter().all(|f| !f.check.starts_with("arp")));
        facts.addrs.push(addr("lo", "2001:2::10", 128));
        let findings = judge(&args(RealMode::Dsr, &["2001:2::10"]), &facts);
        assert!(findings.iter().all(|f| f.ok), "{findings:?}");
    }

    #[test]
    fn tunnel_names_a_missing_or_foreign_xdp_program() {
        let mut facts = good();
        facts.xdp = Some(None);
        let findings = judge(&args(RealMode::Tunnel, &[VIP]), &facts);
        let f = find(&findings, "decap program");
        assert!(!f.ok);
        assert_eq!(f.fix.as_deref(), Some("lbctl decap attach eth0"));

        facts.xdp = Some(Some(XdpProgram {
            id: 42,
            name: "lb_xdp".into(),
        }));
        let findings = judge(&args(RealMode::Tunnel, &[VIP]), &facts);
        let f = find(&findings, "decap program");
        assert!(!f.ok);
        assert!(f.detail.contains("lb_xdp (id 42)"), "{}", f.detail);
        assert!(f.detail.contains("is this the LB"), "{}", f.detail);
        assert_eq!(
            f.fix.as_deref(),
            Some("ip link set dev eth0 xdp off\nlbctl decap attach eth0")
        );
    }

    #[test]
    fn decap_names_are_compared_as_the_kernel_truncates_them() {
        assert!(is_decap(program_names::DECAP));
        assert!(!is_decap("lb_xdp"));
        assert!(!is_decap(""));
    }

    #[test]
    fn tunnel_needs_an_ipv4_address_and_says_which_one_counts() {
        let mut facts = good();
        facts.addrs.push(addr("eth0", "198.18.0.12", 24));
        let f = tunnel_address("eth0", facts.decap_addr, &facts.addrs);
        assert!(f.ok);
        assert!(f.detail.starts_with("198.18.0.11: "), "{}", f.detail);
        assert!(f.detail.contains("not 198.18.0.12"), "{}", f.detail);
        let f = tunnel_address("eth0", None, &facts.addrs);
        assert!(!f.ok);
        assert_eq!(
            f.fix.as_deref(),
            Some("ip addr add ADDRESS/PREFIX dev eth0")
        );
    }

    #[test]
    fn dsr_reports_the_mtu_and_skips_the_tunnel_checks() {
        let findings = judge(&args(RealMode::Dsr, &[VIP]), &good());
        let checks: Vec<&str> = findings.iter().map(|f| f.check.as_str()).collect();
        assert_eq!(
            checks,
            [
                "vip 198.18.100.10 on lo",
                "arp_ignore",
                "arp_announce",
                "mtu"
            ]
        );
        assert_eq!(
            find(&findings, "mtu").detail,
            "eth0 has MTU 1500 (reported only)"
        );
    }

    #[test]
    fn the_report_prints_ok_or_fix_with_indented_commands_and_a_tally() {
        let report = Report {
            iface: "eth0".into(),
            iface_from_default_route: true,
            findings: vec![
                Finding {
                    check: "arp_ignore".into(),
                    ok: true,
                    detail: "fine".into(),
                    fix: None,
                },
                Finding {
                    check: "vip 198.18.100.10 on lo".into(),
                    ok: false,
                    detail: "missing".into(),
                    fix: Some("ip addr del A dev eth0\nip addr add B dev lo".into()),
                },
            ],
        };
        assert!(!report.all_ok());
        assert_eq!(
            report.to_string(),
            "checking eth0 (the default route's interface; --iface checks another)\n\
             ok   arp_ignore               fine\n\
             FIX  vip 198.18.100.10 on lo  missing\n\
             \x20      ip addr del A dev eth0\n\
             \x20      ip addr add B dev lo\n\
             1 of 2 checks need a change"
        );
        let passing = Report {
            iface: "eth0".into(),
            iface_from_default_route: false,
            findings: report.findings[..1].to_vec(),
        };
        assert!(passing.all_ok());
        assert!(passing.to_string().ends_with("\nall 1 checks pass"));
    }
}
