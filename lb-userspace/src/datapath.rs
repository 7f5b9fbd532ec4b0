//! The loaded XDP object and the only code that knows its map names. Everything else speaks
//! in verbs: `add_vip`, `set_reals`, `attach`, `counters`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{Array, ArrayOfMaps, HashMap, MapData, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp, XdpMode},
    Ebpf,
};
use lb_common::{
    map_names, program_names, BenchFrame, Counter, Endpoint, Flow, FlowKey, IfaceConfig, RealEntry,
    Settings, SnatPool, VipCounters, VipKey, VipMeta, BENCH_FRAME_LEN, ENDPOINT_POOL,
    ENDPOINT_REAL, MAX_POOL_ADDRS, MAX_REALS, MAX_VIPS, REAL_DOWN, REAL_DRAIN, REAL_UP, RING_SIZE,
};
use tracing::warn;

use crate::{
    ring,
    service::VipSettings,
    spec::{Balance, Mode, RealSpec, VipSpec},
    stats::CounterTable,
};

/// A backend server as the datapath needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Real {
    pub addr: IpAddr,
    /// The port it serves the VIP on; `None`: the VIP's own.
    pub port: Option<u16>,
    /// The MAC frames to it are sent to: its own, or its gateway's.
    pub mac: [u8; 6],
    /// The interface it is reached through; 0: the one the packet came in on.
    pub ifindex: u32,
    /// 0: draining (keeps its flows, takes no new ones).
    pub weight: u16,
}

impl Real {
    /// A real on the segment of the interface packets come in on, serving the VIP's port,
    /// weight 1.
    pub fn on_segment(addr: IpAddr, mac: [u8; 6]) -> Self {
        Self {
            addr,
            port: None,
            mac,
            ifindex: 0,
            weight: 1,
        }
    }

    /// This real as a RealSpec would name it (for Maglev's names and messages).
    fn spec(&self) -> RealSpec {
        RealSpec {
            addr: self.addr,
            port: self.port,
            weight: self.weight,
        }
    }

    fn entry(&self) -> RealEntry {
        let entry = match self.addr {
            IpAddr::V4(a) => RealEntry::v4(a.octets(), self.mac),
            IpAddr::V6(a) => RealEntry::v6(a.octets(), self.mac),
        };
        let state = if self.weight == 0 {
            REAL_DRAIN
        } else {
            REAL_UP
        };
        entry
            .with_port(self.port.unwrap_or(0))
            .with_ifindex(self.ifindex)
            .with_weight(self.weight)
            .with_state(state)
    }
}

/// A real of a VIP as REALS ids are handed out: one id per VIP and real endpoint, so each
/// VIP has its own weight, state and leastconn count of a real.
type RealKey = (VipSpec, IpAddr, u16);

/// An interface the balancer is attached to, and the LB's side of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub config: IfaceConfig,
}

/// How the program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (native XDP).
    Native,
    /// In the kernel's generic path, because the native attach failed (most often: the
    /// driver has no XDP support).
    Generic,
}

type Ring = Array<MapData, u32>;

/// The loaded program and its maps.
pub struct Datapath {
    ebpf: Ebpf,
    vips: HashMap<MapData, VipKey, VipMeta>,
    reals: Array<MapData, RealEntry>,
    rings: ArrayOfMaps<MapData, Ring>,
    counters: PerCpuArray<MapData, Counter>,
    vip_counters: PerCpuArray<MapData, VipCounters>,
    ifaces: HashMap<MapData, u32, IfaceConfig>,
    settings: Array<MapData, Settings>,
    flows: HashMap<MapData, FlowKey, Flow>,
    snat_pools: Array<MapData, SnatPool>,
    endpoints: HashMap<MapData, VipKey, Endpoint>,
    active: Array<MapData, u64>,
    swept: Array<MapData, u64>,
    open: HashMap<MapData, FlowKey, u32>,
    bench_frame: Array<MapData, BenchFrame>,
    vip_ids: BTreeMap<VipSpec, u32>,
    vip_settings: BTreeMap<VipSpec, VipSettings>,
    /// Each VIP's VIPS value, as last written.
    vip_meta: BTreeMap<VipSpec, VipMeta>,
    /// The reals of each VIP, as last set.
    vip_reals: BTreeMap<VipSpec, Vec<Real>>,
    real_ids: BTreeMap<RealKey, u32>,
    /// Leastconn flows swept idle, per real id (SWEPT as last written).
    swept_counts: BTreeMap<u32, u64>,
    /// What ENDPOINTS holds, as last written.
    endpoint_keys: BTreeSet<VipKey>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("the eBPF object has no map {name}: lbctl was built wrong"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

/// The number of possible CPUs, as per-CPU maps and the SNAT allocator count them.
pub fn possible_cpus() -> Result<u32> {
    let n = aya::util::nr_cpus().map_err(|(path, e)| anyhow!("reading {path}: {e}"))?;
    Ok(n as u32)
}

impl Datapath {
    /// Loads the embedded object into the kernel (programs verified, maps created, nothing
    /// attached yet).
    pub fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(crate::LB_EBPF_OBJECT).context(
            "loading the eBPF object failed: lbctl needs root (CAP_BPF + CAP_NET_ADMIN) and a kernel with BTF",
        )?;
        for name in [program_names::LB, program_names::PASS, program_names::DECAP] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("the kernel rejected program {name}"))?;
        }
        let mut dp = Self {
            vips: take(&mut ebpf, map_names::VIPS)?,
            reals: take(&mut ebpf, map_names::REALS)?,
            rings: take(&mut ebpf, map_names::RINGS)?,
            counters: take(&mut ebpf, map_names::COUNTERS)?,
            vip_counters: take(&mut ebpf, map_names::VIP_COUNTERS)?,
            ifaces: take(&mut ebpf, map_names::IFACES)?,
            settings: take(&mut ebpf, map_names::SETTINGS)?,
            flows: take(&mut ebpf, map_names::FLOWS)?,
            snat_pools: take(&mut ebpf, map_names::SNAT_POOLS)?,
            endpoints: take(&mut ebpf, map_names::ENDPOINTS)?,
            active: take(&mut ebpf, map_names::ACTIVE)?,
            swept: take(&mut ebpf, map_names::SWEPT)?,
            open: take(&mut ebpf, map_names::OPEN)?,
            bench_frame: take(&mut ebpf, map_names::BENCH_FRAME)?,
            ebpf,
            vip_ids: BTreeMap::new(),
            vip_settings: BTreeMap::new(),
            vip_meta: BTreeMap::new(),
            vip_reals: BTreeMap::new(),
            real_ids: BTreeMap::new(),
            swept_counts: BTreeMap::new(),
            endpoint_keys: BTreeSet::new(),
        };
        dp.write_settings()?;
        Ok(dp)
    }

    fn write_settings(&mut self) -> Result<()> {
        let stateful = self.vip_settings.values().any(|s| s.mode.is_stateful());
        let settings = Settings {
            cpus: possible_cpus()?,
            stateful: u32::from(stateful),
        };
        self.settings
            .set(0, settings, 0)
            .context("writing SETTINGS")
    }

    /// Starts serving `vip` as `settings` say, with no reals yet (its packets are dropped as
    /// `drop_no_real` until `set_reals`). A one-arm VIP needs its SNAT pool filled in.
    pub fn add_vip(&mut self, vip: VipSpec, settings: &VipSettings) -> Result<u32> {
        if self.vip_ids.contains_key(&vip) {
            bail!("VIP {vip} is already configured");
        }
        let used: BTreeSet<u32> = self.vip_ids.values().copied().collect();
        let vip_id = (0..MAX_VIPS)
            .find(|id| !used.contains(id))
            .ok_or_else(|| anyhow!("cannot add {vip}: all {MAX_VIPS} VIP slots are in use"))?;
        if settings.mode == Mode::OneArm {
            self.snat_pools
                .set(vip_id, snat_pool(&vip, settings)?, 0)
                .context("writing SNAT_POOLS")?;
        }
        // The ring goes in before the VIP entry, so no packet ever finds a VIP without one.
        self.install_ring(vip_id, &[])?;
        let meta = VipMeta {
            sched: settings.balance.code(),
            hash: settings.hash.code(),
            ..VipMeta::new(vip_id, settings.mode.code(), settings.timeouts)
        };
        self.vips
            .insert(vip.key(), meta, 0)
            .context("writing VIPS")?;
        self.vip_ids.insert(vip, vip_id);
        self.vip_settings.insert(vip, settings.clone());
        self.vip_meta.insert(vip, meta);
        self.write_settings()?;
        self.sync_endpoints()?;
        Ok(vip_id)
    }

    /// Replaces the reals of `vip`, as one change: new flows are scheduled over the new set
    /// at once (the ring swapped whole), established flows stay on their real while it
    /// stays (draining, weight 0, included), and move when it goes.
    pub fn set_reals(&mut self, vip: &VipSpec, reals: &[Real]) -> Result<()> {
        let settings = self
            .vip_settings
            .get(vip)
            .ok_or_else(|| anyhow!("VIP {vip} is not configured"))?
            .clone();
        let mut meta = self.vip_meta[vip];
        let mut members = Vec::with_capacity(reals.len());
        for real in reals {
            let id = self.real_id(vip, real)?;
            self.reals
                .set(id, real.entry(), 0)
                .context("writing REALS")?;
            members.push(ring::Member {
                id,
                name: real.spec().endpoint(vip.port),
                weight: u32::from(real.weight),
            });
        }
        let slots = ring::build(settings.balance, settings.maglev_size, &members);
        // The datapath reads ring[hash % size]: a packet between the two writes must not find
        // a size larger than the ring it sees. Growing: ring first; shrinking: size first.
        let old_size = meta.ring_size;
        meta.ring_size = slots.len() as u32;
        if meta.ring_size < old_size {
            self.write_meta(vip, meta)?;
        }
        self.install_ring(meta.vip_id, &slots)?;
        if meta.ring_size >= old_size {
            self.write_meta(vip, meta)?;
        }
        // Reals no longer in the VIP: down, so their flows move; their ids free for reuse
        // (a flow names its real's address too, so a reused id sends nothing astray).
        let kept: BTreeSet<RealKey> = reals.iter().map(|r| real_key(vip, r)).collect();
        let gone: Vec<(RealKey, u32)> = self
            .real_ids
            .iter()
            .filter(|(k, _)| k.0 == *vip && !kept.contains(*k))
            .map(|(k, id)| (*k, *id))
            .collect();
        for (key, id) in gone {
            if let Some(old) = self
                .vip_reals
                .get(vip)
                .and_then(|rs| rs.iter().find(|r| real_key(vip, r) == key))
            {
                self.reals
                    .set(id, old.entry().with_state(REAL_DOWN), 0)
                    .context("writing REALS")?;
            }
            self.real_ids.remove(&key);
        }
        self.vip_reals.insert(*vip, reals.to_vec());
        self.sync_endpoints()
    }

    /// Changes one real's weight (0: drain). Refused for static-rr VIPs, whose weights are
    /// fixed at load.
    pub fn set_weight(
        &mut self,
        vip: &VipSpec,
        addr: IpAddr,
        port: Option<u16>,
        weight: u16,
    ) -> Result<()> {
        let settings = self
            .vip_settings
            .get(vip)
            .ok_or_else(|| anyhow!("VIP {vip} is not configured"))?;
        if settings.balance == Balance::StaticRr {
            bail!("VIP {vip} balances static-rr, whose weights are fixed at load: reload it, or use roundrobin to change weights at runtime");
        }
        let mut reals = self.vip_reals.get(vip).cloned().unwrap_or_default();
        let want = port.unwrap_or(vip.port);
        let real = reals
            .iter_mut()
            .find(|r| r.addr == addr && r.port.unwrap_or(vip.port) == want)
            .ok_or_else(|| anyhow!("{addr} port {want} is not a real of VIP {vip}"))?;
        real.weight = weight;
        self.set_reals(vip, &reals)
    }

    fn write_meta(&mut self, vip: &VipSpec, meta: VipMeta) -> Result<()> {
        self.vips
            .insert(vip.key(), meta, 0)
            .context("writing VIPS")?;
        self.vip_meta.insert(*vip, meta);
        Ok(())
    }

    /// Ends the count of leastconn flows that went idle without a FIN or RST (their OPEN
    /// entry outlived their flow entry): what `lbctl attach` runs every second. Returns how
    /// many it ended.
    pub fn sweep(&mut self) -> Result<u64> {
        let now = monotonic_ns();
        let mut ended: Vec<(FlowKey, u32)> = Vec::new();
        for entry in self.open.iter() {
            let (key, real_id) = entry.context("reading OPEN")?;
            let live = match self.flows.get(&key, 0) {
                Ok(flow) => !flow.expired(now),
                Err(aya::maps::MapError::KeyNotFound) => false,
                Err(e) => return Err(e).context("reading FLOWS"),
            };
            if !live {
                ended.push((key, real_id));
            }
        }
        let mut count = 0;
        for (key, real_id) in ended {
            // Only who removes the entry ends the count: the datapath may have seen the
            // flow's FIN meanwhile.
            if self.open.remove(&key).is_ok() {
                let swept = self.swept_counts.entry(real_id).or_insert(0);
                *swept += 1;
                self.swept
                    .set(real_id, *swept, 0)
                    .context("writing SWEPT")?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// A real's active leastconn flows of `vip`, as the datapath weighs them.
    pub fn active_flows(&self, vip: &VipSpec, addr: IpAddr, port: Option<u16>) -> Result<u64> {
        let key = (*vip, addr, port.unwrap_or(vip.port));
        let id = *self
            .real_ids
            .get(&key)
            .ok_or_else(|| anyhow!("{addr} is not a real of VIP {vip}"))?;
        let started = self.active.get(&id, 0).context("reading ACTIVE")?;
        let swept = self.swept.get(&id, 0).context("reading SWEPT")?;
        Ok(started.saturating_sub(swept))
    }

    /// Makes ENDPOINTS hold what the stateful VIPs' replies come from or go to: each nat and
    /// router real's service endpoint, each one-arm pool address with its ports (the union of
    /// the ranges of the VIPs sharing it).
    fn sync_endpoints(&mut self) -> Result<()> {
        let mut want: BTreeMap<VipKey, Endpoint> = BTreeMap::new();
        for (vip, settings) in &self.vip_settings {
            let proto = vip.proto.number();
            match settings.mode {
                Mode::Nat | Mode::Router => {
                    for r in self.vip_reals.get(vip).into_iter().flatten() {
                        let port = r.port.unwrap_or(vip.port);
                        let real = Endpoint {
                            kind: ENDPOINT_REAL,
                            port_min: 0,
                            port_max: 0,
                        };
                        want.insert(endpoint_key(r.addr, port, proto), real);
                    }
                }
                Mode::OneArm => {
                    let ports = settings.snat_ports;
                    for a in &settings.snat_pool {
                        let e = want.entry(endpoint_key(*a, 0, proto)).or_insert(Endpoint {
                            kind: ENDPOINT_POOL,
                            port_min: ports.min,
                            port_max: ports.max,
                        });
                        e.port_min = e.port_min.min(ports.min);
                        e.port_max = e.port_max.max(ports.max);
                    }
                }
                Mode::Dsr | Mode::Tunnel => {}
            }
        }
        for (key, endpoint) in &want {
            self.endpoints
                .insert(key, endpoint, 0)
                .context("writing ENDPOINTS")?;
            self.endpoint_keys.insert(*key);
        }
        let stale: Vec<VipKey> = self
            .endpoint_keys
            .iter()
            .filter(|k| !want.contains_key(*k))
            .copied()
            .collect();
        for key in stale {
            self.endpoints
                .remove(&key)
                .context("removing from ENDPOINTS")?;
            self.endpoint_keys.remove(&key);
        }
        Ok(())
    }

    fn real_id(&mut self, vip: &VipSpec, real: &Real) -> Result<u32> {
        let key = real_key(vip, real);
        if let Some(id) = self.real_ids.get(&key) {
            return Ok(*id);
        }
        // Id 0 stays empty: it is what an unfilled ring slot points at.
        let used: BTreeSet<u32> = self.real_ids.values().copied().collect();
        let id = (1..MAX_REALS)
            .find(|id| !used.contains(id))
            .ok_or_else(|| {
                anyhow!(
                    "cannot add real {}: all {} real slots are in use",
                    real.addr,
                    MAX_REALS - 1
                )
            })?;
        // A reused id starts its leastconn count afresh.
        let swept = self.active.get(&id, 0).context("reading ACTIVE")?;
        self.swept.set(id, swept, 0).context("writing SWEPT")?;
        self.swept_counts.insert(id, swept);
        self.real_ids.insert(key, id);
        Ok(id)
    }

    /// Builds the ring in a fresh map and swaps it in with one update of RINGS: no packet
    /// sees a half-written ring.
    fn install_ring(&mut self, vip_id: u32, slots: &[u32]) -> Result<()> {
        let mut ring = Ring::create(RING_SIZE, 0).context("creating a ring map")?;
        for (slot, real_id) in slots.iter().enumerate() {
            ring.set(slot as u32, real_id, 0)
                .context("filling a ring map")?;
        }
        self.rings
            .set(vip_id, &ring, 0)
            .context("installing a ring in RINGS")?;
        Ok(())
    }

    /// Attaches the balancer to `iface`, taking the LB's side of it from the interface
    /// itself. See [`Datapath::attach_all`].
    pub fn attach(&mut self, iface: &str) -> Result<AttachMode> {
        let interface = Interface {
            name: iface.to_owned(),
            ifindex: crate::iface::index(iface)?,
            config: crate::iface::config(iface)?,
        };
        Ok(self.attach_all(&[interface])?[0])
    }

    /// Attaches the balancer to every interface of `ifaces`: natively when the driver can,
    /// else in generic mode with a warning. Detached again when the `Datapath` is dropped.
    pub fn attach_all(&mut self, ifaces: &[Interface]) -> Result<Vec<AttachMode>> {
        // Tunnels leave from the interfaces their reals are reached through (0: the one the
        // packet came in on, which may be any).
        let tunnel_ifindexes: BTreeSet<u32> = self
            .vip_settings
            .iter()
            .filter(|(_, s)| s.mode == Mode::Tunnel)
            .flat_map(|(vip, _)| self.vip_reals.get(vip).into_iter().flatten())
            .map(|r| r.ifindex)
            .collect();
        for i in ifaces {
            let tunnels = tunnel_ifindexes.contains(&i.ifindex) || tunnel_ifindexes.contains(&0);
            if tunnels && i.config.ipv4 == [0; 4] {
                bail!("tunnel mode sends from an IPv4 address of {}, and it has none: add one (`ip addr add ... dev {}`)", i.name, i.name);
            }
            self.set_interface(i.ifindex, i.config)?;
        }
        ifaces
            .iter()
            .map(|i| self.attach_program(program_names::LB, &i.name))
            .collect()
    }

    /// Attaches the decapsulation program, for a real server of tunnel-mode VIPs: IP-in-IP
    /// sent to the interface's IPv4 address is unwrapped and passed up the stack.
    pub fn attach_decap(&mut self, iface: &str) -> Result<AttachMode> {
        let config = crate::iface::config(iface)?;
        if config.ipv4 == [0; 4] {
            bail!(
                "{iface} has no IPv4 address: decap accepts tunnels sent to it, so add one first"
            );
        }
        self.set_interface(crate::iface::index(iface)?, config)?;
        self.attach_program(program_names::DECAP, iface)
    }

    fn attach_program(&mut self, name: &str, iface: &str) -> Result<AttachMode> {
        let prog = self.program(name)?;
        match prog.attach(iface, XdpMode::Driver) {
            Ok(_) => Ok(AttachMode::Native),
            Err(native) => {
                warn!(%iface, error = %native, "native XDP attach failed; falling back to generic (skb) mode, which is slower");
                prog.attach(iface, XdpMode::Skb)
                    .with_context(|| format!("attaching XDP to {iface} failed in native ({native}) and generic mode: does the interface exist, and is another XDP program attached?"))?;
                Ok(AttachMode::Generic)
            }
        }
    }

    /// The LB's side of interface `ifindex` (MAC, MTU, IPv4 address): VIP frames must be
    /// addressed to its MAC, and frames the LB sends as an L3 hop leave from it. The attach
    /// verbs set it; BPF_PROG_TEST_RUN runs see the loopback interface (ifindex 1).
    pub fn set_interface(&mut self, ifindex: u32, config: IfaceConfig) -> Result<()> {
        self.ifaces
            .insert(ifindex, config, 0)
            .context("writing IFACES")
    }

    /// Attaches the pass-everything program to `iface`: what a veth peer needs to accept the
    /// frames XDP_TX sends it. Detached when the `Datapath` is dropped.
    pub fn attach_pass(&mut self, iface: &str) -> Result<()> {
        self.program(program_names::PASS)?
            .attach(iface, XdpMode::Driver)
            .with_context(|| format!("attaching the pass program to {iface}"))?;
        Ok(())
    }

    fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))?
            .try_into()?)
    }

    /// Runs the balancer once on `frame` with BPF_PROG_TEST_RUN: the XDP action and the frame
    /// as it would leave.
    pub fn run_frame(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        self.run_program(program_names::LB, frame)
    }

    /// Runs the decap program once on `frame`, as [`Datapath::run_frame`] does the balancer.
    pub fn run_decap_frame(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        self.run_program(program_names::DECAP, frame)
    }

    fn run_program(&self, name: &str, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let prog: &Xdp = self
            .ebpf
            .program(name)
            .ok_or_else(|| anyhow!("no program {name}"))?
            .try_into()?;
        let mut out = vec![0u8; frame.len() + 256];
        let res = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })?;
        out.truncate(res.data_size_out as usize);
        Ok((res.return_value, out))
    }

    /// Benchmarks: the balancer (or, `floor`, a program that only swaps MACs) run `repeat`
    /// times in the kernel on `frame`, restored before every repeat; `vary`: the offsets of
    /// the source port and of the source address's last two bytes, counted up so that every
    /// repeat is a new flow. Returns the
    /// last repeat's XDP action and the kernel's mean nanoseconds per run.
    pub fn bench(
        &mut self,
        floor: bool,
        frame: &[u8],
        vary: Option<(usize, usize)>,
        repeat: u32,
    ) -> Result<(u32, f64)> {
        if frame.len() < BENCH_FRAME_LEN {
            bail!(
                "benchmark frames are {BENCH_FRAME_LEN} bytes or more, this one {}",
                frame.len()
            );
        }
        let mut bytes = [0u8; BENCH_FRAME_LEN];
        bytes.copy_from_slice(&frame[..BENCH_FRAME_LEN]);
        let value = BenchFrame {
            bytes,
            vary_sport_at: vary.map_or(0, |v| v.0) as u32,
            vary_addr_at: vary.map_or(0, |v| v.1) as u32,
            len: frame.len() as u32,
        };
        self.bench_frame
            .set(0, value, 0)
            .context("writing BENCH_FRAME")?;
        let name = if floor {
            program_names::BENCH_FLOOR
        } else {
            program_names::BENCH
        };
        let prog = self.program(name)?;
        if prog.fd().is_err() {
            prog.load()
                .with_context(|| format!("the kernel rejected program {name}"))?;
        }
        let mut out = vec![0u8; frame.len() + 256];
        let res = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })?;
        Ok((res.return_value, res.duration.as_nanos() as f64))
    }

    /// The global counters, summed over CPUs.
    pub fn counters(&self) -> Result<CounterTable> {
        CounterTable::read(&self.counters)
    }

    /// Packets and bytes forwarded for `vip` per direction, summed over CPUs.
    pub fn vip_forwarded(&self, vip: &VipSpec) -> Result<VipCounters> {
        let vip_id = *self
            .vip_ids
            .get(vip)
            .ok_or_else(|| anyhow!("VIP {vip} is not configured"))?;
        crate::stats::sum_vip(&self.vip_counters, vip_id)
    }

    /// Every entry of the flow table.
    pub fn flows(&self) -> Result<Vec<(FlowKey, Flow)>> {
        self.flows
            .iter()
            .map(|e| e.context("reading FLOWS"))
            .collect()
    }
}

fn endpoint_key(addr: IpAddr, port: u16, proto: u8) -> VipKey {
    match addr {
        IpAddr::V4(a) => VipKey::v4(a.octets(), port, proto),
        IpAddr::V6(a) => VipKey::v6(a.octets(), port, proto),
    }
}

/// SNAT_POOLS value of a one-arm VIP.
fn snat_pool(vip: &VipSpec, settings: &VipSettings) -> Result<SnatPool> {
    let addrs = &settings.snat_pool;
    if addrs.is_empty() || addrs.len() > MAX_POOL_ADDRS {
        bail!(
            "one-arm VIP {vip} needs 1 to {MAX_POOL_ADDRS} SNAT pool addresses, has {}",
            addrs.len()
        );
    }
    let mut pool = SnatPool {
        count: addrs.len() as u32,
        port_min: settings.snat_ports.min,
        port_max: settings.snat_ports.max,
        ..SnatPool::EMPTY
    };
    for (slot, a) in pool.addrs.iter_mut().zip(addrs) {
        *slot = match a {
            IpAddr::V4(v4) => {
                let mut s = [0; 16];
                s[..4].copy_from_slice(&v4.octets());
                s
            }
            IpAddr::V6(v6) => v6.octets(),
        };
    }
    Ok(pool)
}

fn real_key(vip: &VipSpec, real: &Real) -> RealKey {
    (*vip, real.addr, real.port.unwrap_or(vip.port))
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
