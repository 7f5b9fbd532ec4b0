//! The loaded XDP object and the only code that knows its map names. Everything else speaks
//! in verbs: `add_vip`, `set_reals`, `attach`, `counters`.

mod addr_filter;
mod attach;
mod explain;
mod flows;
mod full_path;
pub use explain::Explanation;
pub use flows::monotonic_ns;
pub mod layout;
mod migrate;
pub use attach::AttachMode;
pub use migrate::downgrade;
pub mod pins;
pub mod program;
mod recover;
mod ring_map;
mod rings;
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
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{xdp::XdpLinkId, TestRun, TestRunOptions, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use lb_common::{
    map_names, program_names, Counter, Endpoint, Flow, FlowKey, IfaceConfig, RealCounters,
    RealEntry, Settings, SnatPool, VipKey, VipMeta, ENDPOINT_POOL, ENDPOINT_REAL, MAX_POOL_ADDRS,
    MAX_REALS, MAX_VIPS, REAL_DOWN, REAL_DRAIN, REAL_RETIRED, REAL_UP, VIP_FLOOD_GUARD,
    VIP_PASS_WHEN_EMPTY,
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

/// Kernel writes that must follow a VIP's new ring into RINGS: its VIPS entry (whose ring
/// size is the new ring's), and its reals that leave the ring or go down (the old ring still
/// sends new flows to them until then). Each by key, the last write wins.
#[derive(Default)]
struct AfterRing {
    /// VIP id → its VIPS key and entry.
    metas: BTreeMap<u32, (VipKey, VipMeta)>,
    /// Real id → the id of the VIP whose ring it waits for, and its REALS entry.
    reals: BTreeMap<u32, (u32, RealEntry)>,
    /// Real ids retired: free for another real once their entries are written, not before
    /// (the old ring may still send flows to them).
    freed: BTreeSet<u32>,
}

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
    /// Its id: its slot in RINGS, SNAT_POOLS, TUNNEL_SOURCES...; its flows name it.
    id: u32,
    /// Its VIPS value, as last written.
    meta: VipMeta,
    /// How it is served, once this lbctl configured it; `None` for a VIP found in the maps
    /// an earlier lbctl pinned, until `add_vip` claims it (or it is retired).
    settings: Option<VipSettings>,
    /// Its reals as last set (or read back from REALS).
    reals: Vec<Real>,
    /// Its ring as this lbctl last installed it: slot → real id (empty until then).
    ring: Vec<u32>,
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

/// The loaded program and its maps.
pub struct Datapath {
    ebpf: Ebpf,
    vips: HashMap<MapData, VipKey, VipMeta>,
    reals: Array<MapData, RealEntry>,
    /// RINGS and each VIP's ring map.
    rings: rings::Rings,
    counters: PerCpuArray<MapData, Counter>,
    real_counters: PerCpuArray<MapData, RealCounters>,
    ifaces: HashMap<MapData, u32, IfaceConfig>,
    settings: Array<MapData, Settings>,
    flows: HashMap<MapData, FlowKey, Flow>,
    snat_pools: Array<MapData, SnatPool>,
    tunnel_sources: Array<MapData, [u8; 4]>,
    endpoints: HashMap<MapData, VipKey, Endpoint>,
    active: Array<MapData, u64>,
    swept: Array<MapData, u64>,
    open: HashMap<MapData, FlowKey, u32>,
    /// The full path the established path tail-calls, filled (and pinned).
    full_path: full_path::FullPath,
    /// Which IPv4 addresses may be the LB's.
    addr_filter: addr_filter::AddrFilter,
    /// Each VIP's flood guard rate, and each CPU's new-flow rate and guarded flows.
    flood_limits: Array<MapData, u32>,
    flood_state: PerCpuArray<MapData, lb_common::FloodState>,
    iface_slots: Array<MapData, lb_common::IfaceSlot>,
    /// Every VIP in VIPS: what this lbctl serves, and what it took over and has not
    /// configured (yet).
    services: BTreeMap<VipSpec, ServedVip>,
    real_ids: BTreeMap<RealKey, u32>,
    /// Where the search for a free real id starts (ids are handed out in turn).
    next_real_id: u32,
    /// Where the search for a free VIP id starts (likewise).
    next_vip_id: u32,
    /// Leastconn flows swept idle, per real id (SWEPT as last written).
    swept_counts: BTreeMap<u32, u64>,
    /// What ENDPOINTS holds, as last written.
    endpoints_written: BTreeMap<VipKey, Endpoint>,
    /// The VIP ids of `services`, and the real ids of `real_ids`: in use.
    vip_ids_used: BTreeSet<u32>,
    real_ids_used: BTreeSet<u32>,
    /// Writes that wait for a VIP's new ring map to go into RINGS.
    after_ring: AfterRing,
    /// Inside `batch`: waiting ring maps go in when it ends, not after each verb.
    batching: bool,
    /// Taking over state an earlier lbctl's program still runs on, until this program is
    /// swapped in: that program reads VIPS and REALS with rings of its own, which this lbctl
    /// does not change, so a VIPS entry whose ring grew, and REALS entries of reals leaving
    /// or going down, wait for the swap (`attach_all`).
    holding: bool,
    /// Each VIP's ring size as VIPS holds it now (what a running program indexes by).
    sizes_written: BTreeMap<u32, u32>,
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
        // LAYOUT is pinned once written, so a pinned LAYOUT always says its layout.
        let pin_at_load: Vec<&str> = map_names::KEPT
            .iter()
            .copied()
            .filter(|name| *name != map_names::LAYOUT || takeover.is_some())
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
            dp.holding = true;
            // First: REALS and SWEPT replaced by larger maps are read back from their copies.
            dp.takeover = takeover;
            dp.carry_before_swap()?;
            dp.recover()?;
            // The VIPs and endpoints taken over pass this program's filter before it is
            // swapped in.
            dp.sync_addr_filter()?;
        } else {
            dp.write_layout()?;
            if let Some(dir) = &dp.pins {
                dp.pin_loaded(map_names::LAYOUT, &dir.map_path(map_names::LAYOUT))?;
            }
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
        for name in [
            program_names::FULL,
            program_names::LB,
            program_names::PASS,
            program_names::DECAP,
        ] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("the kernel rejected program {name}"))?;
        }
        let full_path = full_path::fill(&mut ebpf, pins.as_ref())?;
        let mut dp = Self {
            vips: take(&mut ebpf, map_names::VIPS)?,
            reals: take(&mut ebpf, map_names::REALS)?,
            rings: rings::Rings::new(ebpf.take_map(map_names::RINGS).ok_or_else(|| {
                anyhow!("the eBPF object has no map RINGS: lbctl was built wrong")
            })?)?,
            counters: take(&mut ebpf, map_names::COUNTERS)?,
            real_counters: take(&mut ebpf, map_names::REAL_COUNTERS)?,
            ifaces: take(&mut ebpf, map_names::IFACES)?,
            settings: take(&mut ebpf, map_names::SETTINGS)?,
            flows: take(&mut ebpf, map_names::FLOWS)?,
            snat_pools: take(&mut ebpf, map_names::SNAT_POOLS)?,
            tunnel_sources: take(&mut ebpf, map_names::TUNNEL_SOURCES)?,
            endpoints: take(&mut ebpf, map_names::ENDPOINTS)?,
            active: take(&mut ebpf, map_names::ACTIVE)?,
            swept: take(&mut ebpf, map_names::SWEPT)?,
            open: take(&mut ebpf, map_names::OPEN)?,
            full_path,
            addr_filter: addr_filter::AddrFilter::new(take(&mut ebpf, map_names::ADDR_FILTER)?),
            flood_limits: take(&mut ebpf, map_names::FLOOD_LIMITS)?,
            flood_state: take(&mut ebpf, map_names::FLOOD_STATE)?,
            iface_slots: take(&mut ebpf, map_names::IFACE_SLOTS)?,
            ebpf,
            services: BTreeMap::new(),
            real_ids: BTreeMap::new(),
            next_real_id: 1,
            next_vip_id: 0,
            swept_counts: BTreeMap::new(),
            endpoints_written: BTreeMap::new(),
            vip_ids_used: BTreeSet::new(),
            real_ids_used: BTreeSet::new(),
            after_ring: AfterRing::default(),
            batching: false,
            holding: false,
            sizes_written: BTreeMap::new(),
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

    /// The global counters, summed over CPUs.
    pub fn counters(&self) -> Result<CounterTable> {
        CounterTable::read(&self.counters)
    }

    /// What the datapath did for each real `vip` has now (its id's counters since the id was
    /// given), summed over CPUs.
    pub fn real_counters(&self, vip: &VipSpec) -> Result<Vec<(RealKey, RealCounters)>> {
        if !self.services.contains_key(vip) {
            bail!("VIP {vip} is not configured");
        }
        self.real_ids
            .range((*vip, IpAddr::from([0u8; 4]), 0)..)
            .take_while(|(k, _)| k.0 == *vip)
            .map(|(k, id)| Ok((*k, crate::stats::sum_real(&self.real_counters, *id)?)))
            .collect()
    }

    /// Turns flow logs on, each CPU sending at most `per_cpu_per_sec` events a second, and
    /// hands over the ring buffer they arrive in (once: a second call is an error).
    pub fn start_flow_log(&mut self, per_cpu_per_sec: u32) -> Result<aya::maps::RingBuf<MapData>> {
        let ring = self
            .ebpf
            .take_map(map_names::FLOW_EVENTS)
            .context("the flow log's ring buffer is taken already (or lbctl was built wrong)")?;
        let ring = aya::maps::RingBuf::try_from(ring).context("FLOW_EVENTS is no ring buffer")?;
        let map = self
            .ebpf
            .map_mut(map_names::FLOW_LOG)
            .context("the eBPF object has no FLOW_LOG map: lbctl was built wrong")?;
        let mut settings: Array<&mut MapData, lb_common::FlowLogSettings> =
            Array::try_from(map).context("FLOW_LOG has an unexpected type")?;
        settings
            .set(
                0,
                lb_common::FlowLogSettings {
                    enabled: 1,
                    per_cpu_per_sec,
                },
                0,
            )
            .context("writing FLOW_LOG")?;
        Ok(ring)
    }

    /// New flows the flood guards forwarded without a flow entry, over all CPUs, since this
    /// program was loaded.
    pub fn flood_guarded(&self) -> Result<u64> {
        let per_cpu = self.flood_state.get(&0, 0).context("reading FLOOD_STATE")?;
        Ok(per_cpu.iter().map(|s| s.guarded).sum())
    }

    /// The kernel's id of the balancer's program: what `ip link` shows attached.
    pub fn program_id(&self) -> Result<u32> {
        Ok(self.loaded_program(program_names::LB)?.info()?.id())
    }

    /// A second handle on the flow table, for a task of its own to read (the flow log's
    /// idle checks).
    pub fn flow_table_reader(&self) -> Result<aya::maps::HashMap<MapData, FlowKey, Flow>> {
        let id = *program::maps_by_name(self.program_id()?)?
            .get(map_names::FLOWS)
            .context("the balancer has no FLOWS map: lbctl was built wrong")?;
        let map = aya::maps::Map::from_map_data(MapData::from_id(id)?)?;
        aya::maps::HashMap::try_from(map).context("FLOWS has an unexpected type")
    }

    /// The datapath's debug log records (written while `lbctl debug IFACE on`), to read with
    /// [`crate::capture::debug::run`] (once: a second call is an error).
    pub fn take_debug_log(&mut self) -> Result<aya_log::EbpfLogger<crate::capture::debug::Lines>> {
        aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, crate::capture::debug::Lines)
            .context("opening the datapath's debug log (AYA_LOGS)")
    }

    /// The id real `addr` (port `port`) of `vip` has in the datapath.
    pub fn id_of_real(&self, vip: &VipSpec, addr: IpAddr, port: u16) -> Option<u32> {
        self.real_ids.get(&(*vip, addr, port)).copied()
    }

    /// The ids of the reals served (the slots of REALS and REAL_COUNTERS in use).
    pub fn real_ids(&self) -> Vec<u32> {
        self.real_ids.values().copied().collect()
    }

    /// Every real's counters (of every VIP) summed: what the datapath forwarded for the
    /// reals it serves now.
    pub fn reals_forwarded(&self) -> Result<RealCounters> {
        self.real_ids
            .values()
            .try_fold(RealCounters::default(), |sum, id| {
                Ok(sum.plus(crate::stats::sum_real(&self.real_counters, *id)?))
            })
    }

    /// Packets and bytes forwarded for `vip` per direction, and its new flows: its reals'
    /// counters summed.
    pub fn vip_forwarded(&self, vip: &VipSpec) -> Result<RealCounters> {
        Ok(self
            .real_counters(vip)?
            .into_iter()
            .fold(RealCounters::default(), |sum, (_, c)| sum.plus(c)))
    }
}
