//! The loaded XDP object and the only code that knows its map names. Everything else speaks
//! in verbs: `add_vip`, `set_reals`, `attach`, `counters`.

mod flows;
pub mod layout;
mod migrate;
pub use migrate::downgrade;
pub mod pins;
mod recover;
mod ring_map;
mod services;
mod testrun;
mod xdp_netlink;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    os::fd::AsFd as _,
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{Array, ArrayOfMaps, HashMap, MapData, PerCpuArray},
    programs::{xdp::XdpLinkId, TestRun, TestRunOptions, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use lb_common::{
    map_names, program_names, Counter, Endpoint, Flow, FlowKey, IfaceConfig, RealEntry, Settings,
    SnatPool, VipCounters, VipKey, VipMeta, ENDPOINT_POOL, ENDPOINT_REAL, MAX_POOL_ADDRS,
    MAX_REALS, MAX_VIPS, REAL_DOWN, REAL_DRAIN, REAL_UP, VIP_PASS_WHEN_EMPTY,
};
use tracing::warn;
use xdp_netlink::{XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, XDP_FLAGS_UPDATE_IF_NOEXIST};

use crate::{
    declare::{
        service::VipSettings,
        spec::{Balance, Mode, RealSpec, VipSpec},
    },
    stats::CounterTable,
    tables::ring,
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
    /// Down (a failing health check, maintenance): no new flows, and its flows move.
    pub down: bool,
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
            down: false,
        }
    }

    /// This real as a RealSpec would name it (for Maglev's names and messages).
    fn spec(&self) -> RealSpec {
        RealSpec {
            addr: self.addr,
            port: self.port,
            weight: self.weight,
            state: crate::declare::spec::RealState::Ready,
        }
    }

    fn entry(&self) -> RealEntry {
        let entry = match self.addr {
            IpAddr::V4(a) => RealEntry::v4(a.octets(), self.mac),
            IpAddr::V6(a) => RealEntry::v6(a.octets(), self.mac),
        };
        let state = if self.down {
            REAL_DOWN
        } else if self.weight == 0 {
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

/// What the datapath holds for one VIP.
#[derive(Clone, Debug)]
struct ServedVip {
    /// Its id: its slot in RINGS, SNAT_POOLS, VIP_COUNTERS...; its flows name it.
    id: u32,
    /// Its VIPS value, as last written.
    meta: VipMeta,
    /// How it is served, once this lbctl configured it; `None` for a VIP found in the maps
    /// an earlier lbctl pinned, until `add_vip` claims it (or it is retired).
    settings: Option<VipSettings>,
    /// Its reals as last set (or read back from REALS).
    reals: Vec<Real>,
}

/// A real of a VIP as REALS ids are handed out: one id per VIP and real endpoint, so each
/// VIP has its own weight, state and leastconn count of a real.
pub type RealKey = (VipSpec, IpAddr, u16);

/// The key of `real` in `vip`.
pub fn real_key(vip: &VipSpec, real: &Real) -> RealKey {
    (*vip, real.addr, real.port.unwrap_or(vip.port))
}

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
    /// Through the link an earlier lbctl left attached, in the mode it chose.
    TakenOver,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
            AttachMode::TakenOver => "taken over",
        }
    }
}

/// The loaded program and its maps.
pub struct Datapath {
    ebpf: Ebpf,
    vips: HashMap<MapData, VipKey, VipMeta>,
    reals: Array<MapData, RealEntry>,
    /// Inner maps are built by `ring_map`.
    rings: ArrayOfMaps<MapData, MapData>,
    counters: PerCpuArray<MapData, Counter>,
    vip_counters: PerCpuArray<MapData, VipCounters>,
    ifaces: HashMap<MapData, u32, IfaceConfig>,
    settings: Array<MapData, Settings>,
    flows: HashMap<MapData, FlowKey, Flow>,
    snat_pools: Array<MapData, SnatPool>,
    tunnel_sources: Array<MapData, [u8; 4]>,
    endpoints: HashMap<MapData, VipKey, Endpoint>,
    active: Array<MapData, u64>,
    swept: Array<MapData, u64>,
    open: HashMap<MapData, FlowKey, u32>,
    /// Every VIP in VIPS: what this lbctl serves, and what it took over and has not
    /// configured (yet).
    services: BTreeMap<VipSpec, ServedVip>,
    real_ids: BTreeMap<RealKey, u32>,
    /// Where the search for a free real id starts (ids are handed out in turn).
    next_real_id: u32,
    /// Leastconn flows swept idle, per real id (SWEPT as last written).
    swept_counts: BTreeMap<u32, u64>,
    /// What ENDPOINTS holds, as last written.
    endpoint_keys: BTreeSet<VipKey>,
    /// The program's attachments, by interface.
    links: BTreeMap<String, XdpLinkId>,
    /// Where maps are pinned, if they are.
    pins: Option<pins::StateDir>,
    /// Interfaces the balancer is attached to over netlink (with pinned state): ifindex and
    /// XDP mode flags.
    netlink_attached: BTreeMap<String, (u32, u32)>,
    /// Leave the pins when dropped (the program goes on forwarding); else remove them.
    keep_pins: bool,
    /// The kernel's id of each map of the object, by name.
    map_ids: BTreeMap<&'static str, u32>,
    /// A takeover of pinned state to end once this program is attached.
    takeover: Option<migrate::Takeover>,
    /// This lbctl found pinned state and took it over (else it pinned its own afresh).
    adopted: bool,
}

impl Drop for Datapath {
    /// Without `keep_on_exit`, detaches from every interface and unpins the maps (freed once
    /// this process closes them).
    fn drop(&mut self) {
        if self.keep_pins {
            return;
        }
        let ifaces: Vec<String> = self.netlink_attached.keys().cloned().collect();
        for iface in ifaces {
            if let Err(e) = self.detach_netlink(&iface) {
                warn!(%iface, error = %format!("{e:#}"), "could not detach; `ip link set dev IFACE xdp off` does");
            }
        }
        if let Some(pins) = &self.pins {
            if let Err(e) = pins.remove_all() {
                warn!(error = %format!("{e:#}"), dir = %pins.path().display(), "could not remove the pinned state; remove it by hand, or the next lbctl takes it over");
            }
        }
    }
}

/// The program attached to `iface` when it is this state's (it runs on the FLOWS map of
/// `pins`); `None` when nothing is attached; an error naming any other program. `adopted`:
/// this lbctl found state in `pins` (else it made it afresh).
fn attached_ours(
    iface: &str,
    ifindex: u32,
    pins: &pins::StateDir,
    adopted: bool,
) -> Result<Option<(xdp_netlink::Attached, aya::programs::ProgramInfo)>> {
    let flows_id = pins.map_id(map_names::FLOWS)?;
    let Some(old) = xdp_netlink::attached(ifindex)? else {
        return Ok(None);
    };
    let info = program_info(old.prog_id)?;
    let name = info.name_as_str().unwrap_or("?").to_owned();
    let on_our_flows = info.map_ids()?.unwrap_or_default().contains(&flows_id);
    if name == program_names::LB && on_our_flows {
        return Ok(Some((old, info)));
    }
    let dir = pins.path().display();
    if name == program_names::LB && !adopted {
        bail!("{iface} has an lbctl balancer attached (program id {}) whose pinned state is not in {dir}: its pins are gone. Most likely they were on a bpffs that died with the lbctl that pinned them: a /sys/fs/bpf mounted inside `ip netns exec` or a container lives only as long as the process (pins under /sys/fs/bpf there die with it). Its flows cannot be taken over. To go on: detach it (`ip link set dev {iface} xdp off`; its flows end), and keep state on a bpffs that outlives lbctl: one mounted in the host's mount namespace (`mount -t bpf bpf /run/lbctl-bpf`), given with --pin-dir (see lbctl@.service). If another lbctl runs it with another --pin-dir, give this one that directory instead", old.prog_id);
    }
    if name == program_names::LB {
        bail!("{iface} has another lbctl's balancer attached (program id {}), working on other pinned state than {dir}: stop that lbctl, or give this one its --pin-dir", old.prog_id);
    }
    bail!("{iface} has another XDP program attached ({name}, id {}): lbctl replaces only its own. Detach it (`ip link set dev {iface} xdp off`) if it is not needed", old.prog_id);
}

/// The kernel's id of a map of the object.
fn map_id(map: &aya::maps::Map) -> Result<u32> {
    use aya::maps::Map;
    let data = match map {
        Map::Array(d)
        | Map::PerCpuArray(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::ArrayOfMaps(d) => d,
        _ => bail!("a map of a type lbctl does not pin"),
    };
    Ok(data.info()?.id())
}

/// What the kernel says of the loaded program `id`.
pub(crate) fn program_info(id: u32) -> Result<aya::programs::ProgramInfo> {
    for info in aya::programs::loaded_programs() {
        let info = info.context("listing the loaded BPF programs")?;
        if info.id() == id {
            return Ok(info);
        }
    }
    bail!("no BPF program has id {id}")
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
    /// attached yet), with nothing pinned: for the decap program, tests and benchmarks.
    pub fn load() -> Result<Self> {
        Self::load_with(None, false, None)
    }

    /// As [`Datapath::load`], with a flow table of `entries` instead of the default
    /// [`lb_common::MAX_FLOWS`] (leastconn's open-flow table follows it).
    pub fn load_with_flow_table(entries: u32) -> Result<Self> {
        Self::load_with(None, false, Some(entries))
    }

    /// Loads the balancer with its state pinned in `dir`. When an earlier lbctl left state
    /// there, of this layout or an older one it knows, its maps are taken over (those a
    /// newer layout replaces are made anew, see `migrate`) and what they serve is read
    /// back; its program is swapped for this one by `attach_all`, and the takeover ended by
    /// `finish_takeover`.
    pub fn load_pinned(dir: pins::StateDir) -> Result<Self> {
        let takeover = match dir.found()? {
            migrate::Found::Nothing => None,
            migrate::Found::Layout(n) => Some(dir.plan_takeover(n)?),
        };
        let pin_at_load: Vec<&str> = map_names::KEPT
            .iter()
            .copied()
            .filter(|name| {
                takeover
                    .as_ref()
                    .is_none_or(|t| !t.pin_after.contains(name))
            })
            .collect();
        let adopting = takeover.is_some();
        let mut dp = Self::load_with(Some((dir, &pin_at_load)), adopting, None)?;
        if adopting {
            // Whatever happens next, the state the old program forwards on stays pinned.
            dp.keep_pins = true;
            dp.recover()?;
            dp.takeover = takeover;
        } else {
            dp.write_layout()?;
        }
        Ok(dp)
    }

    /// `adopting`: the maps are an earlier lbctl's, in use: SETTINGS is left as it is (the
    /// VIPs it describes are still served).
    fn load_with(
        pins: Option<(pins::StateDir, &[&str])>,
        adopting: bool,
        flow_table: Option<u32>,
    ) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        if let Some(entries) = flow_table {
            loader.map_max_entries(map_names::FLOWS, entries);
            loader.map_max_entries(map_names::OPEN, entries);
        }
        if let Some((dir, names)) = &pins {
            for name in *names {
                loader.map_pin_path(name, dir.map_path(name));
            }
        }
        let pins = pins.map(|(dir, _)| dir);
        let mut ebpf = loader.load(crate::ebpf_object()?).context(
            "loading the eBPF object failed: lbctl needs root (CAP_BPF + CAP_NET_ADMIN) and a kernel with BTF",
        )?;
        let mut map_ids = BTreeMap::new();
        for name in map_names::KEPT {
            let map = ebpf.map(name).ok_or_else(|| {
                anyhow!("the eBPF object has no map {name}: lbctl was built wrong")
            })?;
            map_ids.insert(*name, map_id(map).with_context(|| format!("map {name}"))?);
        }
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
            tunnel_sources: take(&mut ebpf, map_names::TUNNEL_SOURCES)?,
            endpoints: take(&mut ebpf, map_names::ENDPOINTS)?,
            active: take(&mut ebpf, map_names::ACTIVE)?,
            swept: take(&mut ebpf, map_names::SWEPT)?,
            open: take(&mut ebpf, map_names::OPEN)?,
            ebpf,
            services: BTreeMap::new(),
            real_ids: BTreeMap::new(),
            next_real_id: 1,
            swept_counts: BTreeMap::new(),
            endpoint_keys: BTreeSet::new(),
            links: BTreeMap::new(),
            pins,
            keep_pins: false,
            netlink_attached: BTreeMap::new(),
            map_ids,
            takeover: None,
            adopted: adopting,
        };
        if !adopting {
            dp.write_settings()?;
        }
        Ok(dp)
    }

    /// SETTINGS as the VIPs in VIPS need it: from their entries, so VIPs taken over from an
    /// earlier lbctl and not configured again yet count too.
    fn write_settings(&mut self) -> Result<()> {
        let stateful = self
            .services
            .values()
            .any(|s| lb_common::mode_is_stateful(s.meta.mode));
        let settings = Settings {
            cpus: possible_cpus()?,
            stateful: u32::from(stateful),
        };
        self.settings
            .set(0, settings, 0)
            .context("writing SETTINGS")
    }

    /// Attaches the balancer to `iface`, taking the LB's side of it from the interface
    /// itself. See [`Datapath::attach_all`].
    pub fn attach(&mut self, iface: &str) -> Result<AttachMode> {
        let interface = Interface {
            name: iface.to_owned(),
            ifindex: crate::host::iface::index(iface)?,
            config: crate::host::iface::config(iface)?,
        };
        Ok(self.attach_all(&[interface])?[0])
    }

    /// Attaches the balancer to every interface of `ifaces`: natively when the driver can,
    /// else in generic mode with a warning. Detached again when the `Datapath` is dropped.
    pub fn attach_all(&mut self, ifaces: &[Interface]) -> Result<Vec<AttachMode>> {
        // Tunnels leave from the interfaces their reals are reached through (0: the one the
        // packet came in on, which may be any).
        let tunnel_ifindexes: BTreeSet<u32> = self
            .services
            .values()
            .filter(|s| s.settings.as_ref().is_some_and(|s| s.mode == Mode::Tunnel))
            .flat_map(|s| &s.reals)
            .map(|r| r.ifindex)
            .collect();
        for i in ifaces {
            let tunnels = tunnel_ifindexes.contains(&i.ifindex) || tunnel_ifindexes.contains(&0);
            if tunnels && i.config.ipv4 == [0; 4] {
                bail!("tunnel mode sends from an IPv4 address of {}, and it has none: add one (`ip addr add ... dev {}`)", i.name, i.name);
            }
            self.set_interface(i.ifindex, i.config)?;
        }
        let how = ifaces
            .iter()
            .map(|i| self.attach_lb(&i.name))
            .collect::<Result<Vec<_>>>()?;
        self.detach_left_behind(ifaces)?;
        Ok(how)
    }

    /// Attaches the balancer to `iface`. With pinned state, over netlink (see
    /// `xdp_netlink`): an earlier lbctl's program still attached there, on the maps this one
    /// took over, is replaced by this one in one step; any other program is left alone.
    fn attach_lb(&mut self, iface: &str) -> Result<AttachMode> {
        let Some(pins) = &self.pins else {
            return self.attach_program(program_names::LB, iface);
        };
        let ifindex = crate::host::iface::index(iface)?;
        let old = attached_ours(iface, ifindex, pins, self.adopted)?;
        let prog = self.program(program_names::LB)?;
        let fd = prog.fd().context("the balancer's program is not loaded")?;
        let fd = fd.as_fd();
        if let Some((old, info)) = old {
            let old_fd = info.fd().context("opening the attached program")?;
            xdp_netlink::set(ifindex, Some(fd), old.mode, Some(old_fd.as_fd()))
                .with_context(|| format!("swapping this program in on {iface}"))?;
            self.netlink_attached
                .insert(iface.to_owned(), (ifindex, old.mode));
            return Ok(AttachMode::TakenOver);
        }
        let native = XDP_FLAGS_DRV_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST;
        let how = match xdp_netlink::set(ifindex, Some(fd), native, None) {
            Ok(()) => (XDP_FLAGS_DRV_MODE, AttachMode::Native),
            Err(e) => {
                warn!(%iface, error = %format!("{e:#}"), "native XDP attach failed; falling back to generic (skb) mode, which is slower");
                let generic = XDP_FLAGS_SKB_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST;
                xdp_netlink::set(ifindex, Some(fd), generic, None).with_context(|| {
                    format!("attaching XDP to {iface} failed in native ({e:#}) and generic mode")
                })?;
                (XDP_FLAGS_SKB_MODE, AttachMode::Generic)
            }
        };
        self.netlink_attached
            .insert(iface.to_owned(), (ifindex, how.0));
        Ok(how.1)
    }

    /// Refuses interfaces where another XDP program than this state's is attached: asked
    /// before anything changes, so a refused start leaves a taken-over state as it was.
    pub fn check_attachable(&self, ifaces: &[Interface]) -> Result<()> {
        let Some(pins) = &self.pins else {
            return Ok(());
        };
        for i in ifaces {
            attached_ours(&i.name, i.ifindex, pins, self.adopted)?;
        }
        Ok(())
    }

    /// Takes the program of this state off interfaces an earlier lbctl served and this one
    /// does not (found in IFACES, which lists every interface the program was given).
    fn detach_left_behind(&mut self, ifaces: &[Interface]) -> Result<()> {
        let Some(pins) = &self.pins else {
            return Ok(());
        };
        let known: Vec<u32> = self
            .ifaces
            .keys()
            .collect::<Result<_, _>>()
            .context("reading IFACES")?;
        for ifindex in known {
            if ifaces.iter().any(|i| i.ifindex == ifindex) {
                continue;
            }
            let name = format!("interface {ifindex}");
            let (old, info) = match attached_ours(&name, ifindex, pins, self.adopted) {
                Ok(Some(ours)) => ours,
                Ok(None) => continue,
                // Gone since, or another program there now: not this state's to detach.
                Err(e) => {
                    tracing::debug!(ifindex, error = %format!("{e:#}"), "left alone");
                    continue;
                }
            };
            let fd = info.fd().context("opening the attached program")?;
            xdp_netlink::set(ifindex, None, old.mode, Some(fd.as_fd()))
                .with_context(|| format!("detaching from {name}"))?;
            warn!(
                ifindex,
                "detached from an interface the earlier lbctl served and this one is not given"
            );
        }
        Ok(())
    }

    /// Takes this program off `iface` if it is attached there over netlink.
    fn detach_netlink(&mut self, iface: &str) -> Result<bool> {
        let Some((ifindex, mode)) = self.netlink_attached.remove(iface) else {
            return Ok(false);
        };
        let prog = self.program(program_names::LB)?;
        let fd = prog.fd().context("the balancer's program is not loaded")?;
        xdp_netlink::set(ifindex, None, mode, Some(fd.as_fd()))
            .with_context(|| format!("detaching from {iface}"))?;
        Ok(true)
    }

    /// Leaves the program attached and the maps pinned when this is dropped, for the next
    /// lbctl to take over (`--keep-on-exit`); by default everything is removed.
    pub fn keep_on_exit(&mut self, keep: bool) {
        self.keep_pins = keep;
    }

    /// Where the state is pinned, if it is.
    pub fn pin_dir(&self) -> Option<&std::path::Path> {
        self.pins.as_ref().map(pins::StateDir::path)
    }

    /// Takes the balancer off `iface`; the other interfaces keep it.
    pub fn detach(&mut self, iface: &str) -> Result<()> {
        if self.detach_netlink(iface)? {
            return Ok(());
        }
        let link = self
            .links
            .remove(iface)
            .ok_or_else(|| anyhow!("lbctl is not attached to {iface}"))?;
        self.program(program_names::LB)?
            .detach(link)
            .with_context(|| format!("detaching from {iface}"))
    }

    /// Attaches the decapsulation program, for a real server of tunnel-mode VIPs: IP-in-IP
    /// sent to the interface's IPv4 address is unwrapped and passed up the stack.
    pub fn attach_decap(&mut self, iface: &str) -> Result<AttachMode> {
        let config = crate::host::iface::config(iface)?;
        if config.ipv4 == [0; 4] {
            bail!(
                "{iface} has no IPv4 address: decap accepts tunnels sent to it, so add one first"
            );
        }
        self.set_interface(crate::host::iface::index(iface)?, config)?;
        self.attach_program(program_names::DECAP, iface)
    }

    fn attach_program(&mut self, name: &str, iface: &str) -> Result<AttachMode> {
        let prog = self.program(name)?;
        let (link, how) = match prog.attach(iface, XdpMode::Driver) {
            Ok(link) => (link, AttachMode::Native),
            Err(native) => {
                warn!(%iface, error = %native, "native XDP attach failed; falling back to generic (skb) mode, which is slower");
                let link = prog.attach(iface, XdpMode::Skb)
                    .with_context(|| format!("attaching XDP to {iface} failed in native ({native}) and generic mode: does the interface exist, and is another XDP program attached?"))?;
                (link, AttachMode::Generic)
            }
        };
        self.links.insert(iface.to_owned(), link);
        Ok(how)
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

    /// The global counters, summed over CPUs.
    pub fn counters(&self) -> Result<CounterTable> {
        CounterTable::read(&self.counters)
    }

    /// Packets and bytes forwarded for `vip` per direction, summed over CPUs.
    pub fn vip_forwarded(&self, vip: &VipSpec) -> Result<VipCounters> {
        let vip_id = self
            .services
            .get(vip)
            .ok_or_else(|| anyhow!("VIP {vip} is not configured"))?
            .id;
        crate::stats::sum_vip(&self.vip_counters, vip_id)
    }
}
