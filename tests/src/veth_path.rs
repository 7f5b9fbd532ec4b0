//! A forwarding path through veth for the bench (and its test): generator → LB → sink.
//!
//! ```text
//!   gen eth0 198.18.0.100 ── lb eth0 198.18.0.1 │ lb eth1 198.18.1.1 ── sink eth0 198.18.1.11-13
//! ```
//! The generator is the benchmark object's `lb_bench_gen` run by BPF_PROG_RUN with live
//! frames (this kernel has no pktgen): 64-byte UDP frames to the VIP, the source port cycling
//! over [`FLOWS`] values, sent out of gen's eth0. The sink counts what reaches it with the
//! benchmark object's sink program and drops it. On the LB's eth0 sits one [`Forwarder`]: the
//! balancer is the shipped object's, loaded by `Datapath`.

use std::{
    io::Write as _,
    net::{IpAddr, Ipv4Addr},
    process::Stdio,
    time::Duration,
};

use anyhow::{anyhow, ensure, Context as _, Result};
use lb_common::BenchRedirect;
use lb_lab::{hops::fmt_mac, unique_prefix, Netns};
use lb_userspace::{
    datapath::{Datapath, Real},
    declare::{
        service::VipSettings,
        spec::{Mode, VipSpec},
    },
    host::iface,
};

use crate::{
    bench_object::{BenchAttach, BenchObject, Vary},
    frames::{hop, zero_udp_checksum},
};

const GEN: [u8; 4] = [198, 18, 0, 100];
const LB_A: &str = "198.18.0.1/24";
const LB_B: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const REALS: [[u8; 4]; 3] = [[198, 18, 1, 11], [198, 18, 1, 12], [198, 18, 1, 13]];
const VIP: [u8; 4] = [198, 18, 100, 10];
const VIP_PORT: u16 = 53;
/// Distinct source ports the generator cycles over (within one SNAT address's ports).
pub const FLOWS: u32 = 50_000;
/// Frames per kernel batch of the generator.
pub const BATCH: u32 = 64;
/// Ethernet 14 + IPv4 20: the UDP source port.
const SPORT_AT: usize = 34;
/// Ethernet 14 + IPv4 12 + 2: the source address's last two bytes.
const SADDR_LOW_AT: usize = 28;
/// Ethernet 14 + IPv4 10: the IPv4 header checksum.
const IP_CSUM_AT: usize = 24;

/// Which flows the generator's frames belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tuples {
    /// [`FLOWS`] flows over and over: established after their first frame.
    Cycled,
    /// A new flow every frame: the source port and the source address's last two bytes
    /// count on (2^32 tuples, no repeat in a run; the address from 198.18.0.100 up, within
    /// the generator's /24 for runs of up to 10 M frames).
    New,
}

/// What sits on the LB's eth0.
#[derive(Clone, Copy, Debug)]
pub enum Forwarder {
    /// MACs set, redirected to eth1, nothing looked at: the limit of the path.
    Redirect,
    /// The balancer, one VIP in this mode, the sink's three addresses its reals.
    Balancer(Mode),
    /// The pass program (veth needs an XDP program to take XDP frames), then the kernel's
    /// forwarding with nftables DNAT, numgen round robin over the three addresses.
    Nftables,
}

impl Forwarder {
    pub fn name(self) -> String {
        match self {
            Self::Redirect => "bare XDP redirect".into(),
            Self::Balancer(mode) => format!("lbctl {mode}"),
            Self::Nftables => "nftables DNAT".into(),
        }
    }
}

/// One generator run: how long the kernel took to send, and what arrived at the sink.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub took: Duration,
    pub arrived: u64,
}

/// The three namespaces with the forwarder in place. Dropping it detaches the programs
/// inside their namespaces, then deletes the namespaces.
pub struct VethPath {
    /// The shipped object's programs (the balancer, the pass program), by namespace.
    programs: Vec<(usize, Datapath)>,
    /// The benchmark object's (the sink, the bare redirect), by namespace.
    bench_programs: Vec<(usize, BenchObject)>,
    /// The generator's object, moved into gen's namespace thread for every run.
    gen: Option<BenchObject>,
    gen_ifindex: u32,
    frame: Vec<u8>,
    ns: Vec<Netns>,
}

const GEN_NS: usize = 0;
const LB_NS: usize = 1;
const SINK_NS: usize = 2;

impl Drop for VethPath {
    fn drop(&mut self) {
        let gen = self.gen.take().map(|obj| (GEN_NS, obj));
        for (ns, obj) in std::mem::take(&mut self.bench_programs)
            .into_iter()
            .chain(gen)
        {
            self.drop_in(ns, obj);
        }
        for (ns, dp) in std::mem::take(&mut self.programs) {
            self.drop_in(ns, dp);
        }
    }
}

impl VethPath {
    /// Drops a loaded object inside namespace `ns`, where the interface indexes its programs
    /// are detached from are its own.
    fn drop_in(&self, ns: usize, loaded: impl Send + 'static) {
        if let Err(e) = self.ns[ns].run(move || drop(loaded)) {
            eprintln!("warning: detaching a bench program: {e:#}");
        }
    }

    pub fn build(fwd: Forwarder) -> Result<Self> {
        let p = unique_prefix();
        let mut path = Self {
            programs: Vec::new(),
            bench_programs: Vec::new(),
            gen: None,
            gen_ifindex: 0,
            frame: Vec::new(),
            ns: vec![
                Netns::create(&format!("{p}gen"))?,
                Netns::create(&format!("{p}lb"))?,
                Netns::create(&format!("{p}sink"))?,
            ],
        };
        let reals: Vec<String> = REALS.iter().map(|r| format!("{}/24", ip(*r))).collect();
        path.wire(
            (GEN_NS, "eth0", &format!("{}/24", ip(GEN))),
            (LB_NS, "eth0", LB_A),
        )?;
        path.wire(
            (LB_NS, "eth1", &format!("{LB_B}/24")),
            (SINK_NS, "eth0", &reals[0]),
        )?;
        for r in &reals[1..] {
            path.ns[SINK_NS].ip(&["addr", "add", r, "dev", "eth0"])?;
        }
        let sink_mac = path.ns[SINK_NS].mac("eth0")?;
        let lb_mac = path.ns[LB_NS].mac("eth0")?;
        // UDP checksum 0 ("none"): the varied source port needs no checksum update, and the
        // kernel's stack (nftables) accepts it.
        path.frame = zero_udp_checksum(
            hop(path.ns[GEN_NS].mac("eth0")?, lb_mac, GEN, VIP).udp(1, VIP_PORT, &[0; 22]),
        );
        path.gen_ifindex = path.ns[GEN_NS].run(|| iface::index("eth0"))??;
        path.gen = Some(path.ns[GEN_NS].run(BenchObject::load)??);
        path.attach_bench(SINK_NS, |obj| obj.attach(BenchAttach::Sink, "eth0"))?;
        match fwd {
            Forwarder::Redirect => {
                let lb_b_mac = path.ns[LB_NS].mac("eth1")?;
                path.attach_bench(LB_NS, move |obj| {
                    obj.set_redirect(BenchRedirect {
                        ifindex: iface::index("eth1")?,
                        src_mac: lb_b_mac,
                        dst_mac: sink_mac,
                    })?;
                    obj.attach(BenchAttach::Redirect, "eth0")
                })?;
            }
            Forwarder::Balancer(mode) => {
                path.attach(LB_NS, move |dp| balancer(dp, mode, sink_mac))?
            }
            Forwarder::Nftables => path.nftables(sink_mac)?,
        }
        Ok(path)
    }

    /// Sends `frames` frames from the generator (on CPU `cpu`), and counts what arrived.
    pub fn send(&mut self, frames: u32, cpu: usize, tuples: Tuples) -> Result<Sent> {
        let before = self.sink()?.sink_count()?;
        let mut gen = self
            .gen
            .take()
            .ok_or_else(|| anyhow!("the generator was lost by an earlier failed run"))?;
        let (frame, ifindex) = (self.frame.clone(), self.gen_ifindex);
        let vary = match tuples {
            Tuples::Cycled => Vary {
                sport_at: SPORT_AT,
                addr_at: 0,
                modulo: FLOWS,
                csum_at: 0,
            },
            Tuples::New => Vary {
                sport_at: SPORT_AT,
                addr_at: SADDR_LOW_AT,
                modulo: 0,
                csum_at: IP_CSUM_AT,
            },
        };
        let (gen, took) = self.ns[GEN_NS].run(move || {
            crate::fixture::pin_to_cpu(cpu);
            let took = gen.generate(&frame, Some(vary), ifindex, frames, BATCH);
            (gen, took)
        })?;
        self.gen = Some(gen);
        let took = took?;
        // What is still in a veth ring lands within microseconds; wait a little anyway.
        std::thread::sleep(Duration::from_millis(50));
        let arrived = self.sink()?.sink_count()? - before;
        Ok(Sent { took, arrived })
    }

    /// Packets the balancer did not forward for `reason`, when it is the forwarder.
    pub fn lb_counted(&self, reason: lb_common::Reason) -> Result<u64> {
        let (_, lb) = self
            .programs
            .iter()
            .find(|(ns, _)| *ns == LB_NS)
            .ok_or_else(|| anyhow!("nothing is loaded on the LB"))?;
        Ok(lb.counters()?.reason(reason).packets)
    }

    /// Packets the balancer forwarded (its global counter), when it is the forwarder.
    pub fn lb_forwarded(&self) -> Result<u64> {
        let (_, lb) = self
            .programs
            .iter()
            .find(|(ns, _)| *ns == LB_NS)
            .ok_or_else(|| anyhow!("nothing is loaded on the LB"))?;
        Ok(lb.counters()?.forwarded.packets)
    }

    fn sink(&self) -> Result<&BenchObject> {
        self.bench_programs
            .iter()
            .find(|(ns, _)| *ns == SINK_NS)
            .map(|(_, obj)| obj)
            .ok_or_else(|| anyhow!("the sink is not loaded"))
    }

    /// A veth pair between two namespaces (index, interface, address), both ends up.
    fn wire(&self, a: (usize, &str, &str), b: (usize, &str, &str)) -> Result<()> {
        let (na, nb) = (&self.ns[a.0], &self.ns[b.0]);
        na.ip(&[
            "link",
            "add",
            a.1,
            "type",
            "veth",
            "peer",
            "name",
            b.1,
            "netns",
            nb.name(),
        ])?;
        for (n, i, addr) in [(na, a.1, a.2), (nb, b.1, b.2)] {
            n.ip(&["addr", "add", addr, "dev", i])?;
            n.ip(&["link", "set", i, "up"])?;
        }
        Ok(())
    }

    /// Loads the shipped object in namespace `ns`, set up by `f` there, kept until the path
    /// drops.
    fn attach(
        &mut self,
        ns: usize,
        f: impl FnOnce(&mut Datapath) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let dp = self.ns[ns].run(move || {
            let mut dp = Datapath::load()?;
            f(&mut dp)?;
            Ok::<_, anyhow::Error>(dp)
        })??;
        self.programs.push((ns, dp));
        Ok(())
    }

    /// Loads the benchmark object in namespace `ns`, set up by `f` there, kept until the path
    /// drops.
    fn attach_bench(
        &mut self,
        ns: usize,
        f: impl FnOnce(&mut BenchObject) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let obj = self.ns[ns].run(move || {
            let mut obj = BenchObject::load()?;
            f(&mut obj)?;
            Ok::<_, anyhow::Error>(obj)
        })??;
        self.bench_programs.push((ns, obj));
        Ok(())
    }

    /// Forwarding on, DNAT to the three sink addresses in turn, their MACs static (the sink
    /// answers no ARP: it drops everything).
    fn nftables(&mut self, sink_mac: [u8; 6]) -> Result<()> {
        self.attach(LB_NS, |dp| dp.attach_pass("eth0"))?;
        let lb = &self.ns[LB_NS];
        lb.sysctl("net.ipv4.ip_forward", "1")?;
        let mac = fmt_mac(&sink_mac);
        for r in REALS {
            let addr = ip(r).to_string();
            lb.ip(&[
                "neigh",
                "replace",
                &addr,
                "lladdr",
                &mac,
                "dev",
                "eth1",
                "nud",
                "permanent",
            ])?;
        }
        let [a, b, c] = REALS.map(ip);
        let rules = format!(
            "table ip bench {{\n  chain pre {{\n    type nat hook prerouting priority -100;\n    \
             ip daddr {} udp dport {VIP_PORT} dnat to numgen inc mod 3 map {{ 0 : {a}, 1 : {b}, 2 : {c} }};\n  }}\n}}\n",
            ip(VIP)
        );
        let mut child = lb
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .context("running nft (apt-get install nftables)")?;
        let written = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("nft has no stdin"))?
            .write_all(rules.as_bytes());
        let status = child.wait()?;
        written.context("writing the rules to nft")?;
        ensure!(status.success(), "nft refused the DNAT rules: {rules}");
        Ok(())
    }
}

/// The balancer in `mode` on eth0, one VIP, the sink's three addresses its reals behind eth1.
fn balancer(dp: &mut Datapath, mode: Mode, sink_mac: [u8; 6]) -> Result<()> {
    let eth1 = iface::index("eth1")?;
    dp.set_interface(eth1, iface::config("eth1")?)?;
    let vip: VipSpec = format!("{}:{VIP_PORT}/udp", ip(VIP)).parse()?;
    let mut settings = VipSettings::new(mode);
    if mode == Mode::OneArm {
        settings.snat_pool = vec![IpAddr::V4(LB_B)];
        settings.snat_ports = "1024-65535".parse()?;
    }
    dp.add_vip(vip, &settings)?;
    let reals: Vec<Real> = REALS
        .iter()
        .map(|r| Real {
            ifindex: eth1,
            ..Real::on_segment(IpAddr::from(*r), sink_mac)
        })
        .collect();
    dp.set_reals(&vip, &reals)?;
    dp.attach("eth0")?;
    Ok(())
}

fn ip(a: [u8; 4]) -> Ipv4Addr {
    a.into()
}
