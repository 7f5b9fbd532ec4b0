//! What the datapath did, read from the maps of the program attached to an interface (so it
//! works with or without a running `lbctl attach`): the counters per reason and per CPU, and
//! each VIP with its reals, their traffic each way, new flows and active flows. `rates`
//! turns two readings into rates; `show` prints them (`lbctl stats`).

pub mod rates;
pub mod show;

use std::{borrow::Borrow, collections::BTreeMap};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::{Array, HashMap, Map, MapData, MapInfo, PerCpuArray};
use lb_common::{
    map_names, Counter, Flow, FlowKey, FlowLogBudget, RealCounters, RealEntry, Reason, VipKey,
    VipMeta, FLOW_COUNTED, FLOW_REPLY, REAL_DOWN, REAL_DRAIN, REAL_RETIRED, REAL_UNUSED, REAL_UP,
    SCHED_LEASTCONN,
};
use serde::Serialize;

use crate::declare::spec::{Balance, Mode, VipSpec};

/// The global counters: forwarded requests and replies, then one row per reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterTable {
    /// Client → real (decapsulated packets, in the decap program).
    pub forwarded: Counter,
    /// Real → client through the LB (nat, router, one-arm).
    pub replies: Counter,
    pub reasons: Vec<(Reason, Counter)>,
}

impl CounterTable {
    pub fn read<T: Borrow<MapData>>(map: &PerCpuArray<T, Counter>) -> Result<Self> {
        let forwarded = sum_slot(map, Reason::FORWARDED_SLOT)?;
        let replies = sum_slot(map, Reason::REPLIES_SLOT)?;
        let mut reasons = Vec::with_capacity(Reason::ALL.len());
        for r in Reason::ALL {
            reasons.push((*r, sum_slot(map, r.slot())?));
        }
        Ok(Self {
            forwarded,
            replies,
            reasons,
        })
    }

    pub fn reason(&self, reason: Reason) -> Counter {
        self.reasons
            .iter()
            .find(|(r, _)| *r == reason)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }
}

pub fn sum_slot<T: Borrow<MapData>>(map: &PerCpuArray<T, Counter>, slot: u32) -> Result<Counter> {
    let values = map
        .get(&slot, 0)
        .with_context(|| format!("reading counter slot {slot}"))?;
    Ok(values
        .iter()
        .fold(Counter::default(), |acc, c| acc.plus(*c)))
}

/// A real id's counters, summed over CPUs.
pub fn sum_real<T: Borrow<MapData>>(
    map: &PerCpuArray<T, RealCounters>,
    real_id: u32,
) -> Result<RealCounters> {
    let values = map
        .get(&real_id, 0)
        .with_context(|| format!("reading the counters of real id {real_id}"))?;
    Ok(values
        .iter()
        .fold(RealCounters::default(), |acc, c| acc.plus(*c)))
}

/// Packets and bytes, as `--json` prints them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

impl From<Counter> for Traffic {
    fn from(c: Counter) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

/// What the datapath did for one real, or a VIP's reals summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RealTraffic {
    /// Client → real.
    pub requests: Traffic,
    /// Real → client through the LB (nat, router, one-arm).
    pub replies: Traffic,
    pub new_flows: u64,
    /// New TCP flows whose first packet seen was not a SYN (an entry evicted or expired).
    pub picked_up: u64,
}

impl From<RealCounters> for RealTraffic {
    fn from(c: RealCounters) -> Self {
        Self {
            requests: c.requests.into(),
            replies: c.replies.into(),
            new_flows: c.new_flows,
            picked_up: c.picked_up,
        }
    }
}

impl RealTraffic {
    pub fn plus(self, o: Self) -> Self {
        let add = |a: Traffic, b: Traffic| Traffic {
            packets: a.packets + b.packets,
            bytes: a.bytes + b.bytes,
        };
        Self {
            requests: add(self.requests, o.requests),
            replies: add(self.replies, o.replies),
            new_flows: self.new_flows + o.new_flows,
            picked_up: self.picked_up + o.picked_up,
        }
    }

    /// Packets and bytes both ways.
    pub fn total(&self) -> Traffic {
        Traffic {
            packets: self.requests.packets + self.replies.packets,
            bytes: self.requests.bytes + self.replies.bytes,
        }
    }
}

/// One real of a VIP, as the datapath serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RealRow {
    /// ADDRESS:PORT (the port the real serves on).
    pub real: String,
    /// The datapath's state: ready (new flows), drain (its flows only) or down (its flows
    /// move). A running lbctl tells `show` more (maint, the checks).
    pub state: &'static str,
    pub weight: u16,
    pub traffic: RealTraffic,
    /// Flows open to it now: leastconn's own count, else the live request entries of the
    /// flow table (stateful modes, and dsr/tunnel flows, one entry each).
    pub active_flows: u64,
}

/// A VIP and its reals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VipRow {
    pub vip: String,
    pub mode: &'static str,
    pub balance: &'static str,
    /// Its reals' traffic summed.
    pub traffic: RealTraffic,
    pub reals: Vec<RealRow>,
}

/// One reading of what `lbctl stats` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    pub prog_id: u32,
    /// CLOCK_MONOTONIC when read, for rates.
    pub at_ns: u64,
    pub counters: CounterTable,
    /// Packets forwarded (both ways) by each CPU: how the NIC's queues (RSS) spread them.
    pub per_cpu: Vec<u64>,
    /// Entries in the flow table (a stateful flow has two), and its capacity.
    pub flow_entries: u64,
    pub flow_capacity: u32,
    /// Flow log events sent, and dropped (over the rate, ring full), summed over CPUs.
    pub flow_log: FlowLogCounts,
    /// New flows the flood guards forwarded without an entry, summed over CPUs.
    pub flood_guarded: u64,
    pub vips: Vec<VipRow>,
}

/// What the flow log did, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlowLogCounts {
    pub sent: u64,
    /// Dropped: over the per-CPU rate.
    pub over_rate: u64,
    /// Dropped: the ring buffer was full (the reader lagged).
    pub ring_full: u64,
}

/// The maps of one program, found through the kernel.
struct ProgramMaps {
    counters: PerCpuArray<MapData, Counter>,
    real_counters: Option<PerCpuArray<MapData, RealCounters>>,
    reals: Option<Array<MapData, RealEntry>>,
    vips: Option<HashMap<MapData, VipKey, VipMeta>>,
    flows: Option<HashMap<MapData, FlowKey, Flow>>,
    /// The flow table's capacity.
    flow_capacity: u32,
    active: Option<Array<MapData, u64>>,
    swept: Option<Array<MapData, u64>>,
    flow_log: Option<PerCpuArray<MapData, FlowLogBudget>>,
    flood: Option<PerCpuArray<MapData, lb_common::FloodState>>,
}

/// The counters of the lbctl program on `eth0` of the lab host `ns` (the LB, or a real's
/// decap program), read as `lbctl stats eth0` run there reads them.
pub fn of_lab_host(ns: &lb_lab::Netns) -> Result<Stats> {
    ns.run(|| -> Result<Stats> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(read_attached(lb_lab::HOST_IFACE))
    })?
}

/// Reads the counters of the lbctl program attached to `iface`, found through the kernel (the
/// interface's XDP program id, then that program's maps), so it works from any process.
pub async fn read_attached(iface: &str) -> Result<Stats> {
    let prog_id = attached_program(iface).await?;
    let reader = Reader::open(iface, prog_id)?;
    reader.read(&How::default())
}

/// The id of the XDP program attached to `iface`.
pub async fn attached_program(iface: &str) -> Result<u32> {
    crate::host::neigh::xdp_prog_id(iface)
        .await?
        .ok_or_else(|| {
            anyhow!(
                "no XDP program is attached to {iface}: start one with `lbctl attach {iface} ...`"
            )
        })
}

/// The maps of one attached program, opened once and read as often as asked.
pub struct Reader {
    pub prog_id: u32,
    maps: ProgramMaps,
}

/// How a reading goes.
#[derive(Default)]
pub struct How<'a> {
    /// The real ids to read (a running lbctl knows them); `None`: every slot of REALS.
    pub real_ids: Option<&'a [u32]>,
    /// A count of the flow table taken earlier, in place of walking it now.
    pub flows: Option<&'a FlowCount>,
}

impl Reader {
    /// Opens the maps of program `prog_id`, attached to `iface`.
    pub fn open(iface: &str, prog_id: u32) -> Result<Self> {
        Ok(Self {
            prog_id,
            maps: program_maps(iface, prog_id)?,
        })
    }

    pub fn read(&self, how: &How) -> Result<Stats> {
        read(self.prog_id, &self.maps, how)
    }

    /// Walks the flow table: every entry, and the live request entries per real. Its cost
    /// grows with the table (two syscalls per entry).
    pub fn count_flows(&self) -> Result<FlowCount> {
        match &self.maps.flows {
            Some(f) => FlowCount::of(f, crate::datapath::monotonic_ns()),
            None => Ok(FlowCount::default()),
        }
    }
}

fn program_maps(iface: &str, prog_id: u32) -> Result<ProgramMaps> {
    let prog = crate::datapath::program::info(prog_id).with_context(|| {
        format!("XDP program {prog_id} on {iface} disappeared: was lbctl just stopped?")
    })?;
    let ours = [
        lb_common::program_names::LB,
        lb_common::program_names::DECAP,
    ];
    if !prog.name_as_str().is_some_and(|n| ours.contains(&n)) {
        bail!(
            "the XDP program on {iface} is {:?}, not lbctl's",
            prog.name_as_str().unwrap_or("?")
        );
    }
    let by_name = crate::datapath::program::maps_by_name(prog_id)?;
    let open = |name: &str| -> Result<Option<Map>> {
        by_name
            .get(name)
            .map(|id| Ok(Map::from_map_data(MapData::from_id(*id)?)?))
            .transpose()
    };
    let Some(counters) = open(map_names::COUNTERS)? else {
        bail!("program {prog_id} on {iface} lacks lbctl's counters: was it built from another version?");
    };
    let counters = PerCpuArray::try_from(counters)?;
    if counters.len() != lb_common::COUNTER_SLOTS {
        bail!("program {prog_id} on {iface} counts in {} slots, this lbctl's in {}: it is an older lbctl's (pinned state of another layout); read it with that lbctl's `lbctl stats`, or let this lbctl take it over", counters.len(), lb_common::COUNTER_SLOTS);
    }
    // The balancer has VIPs and reals; the decap program on a real has only counters.
    let is_balancer = by_name.contains_key(map_names::VIPS);
    if is_balancer && !by_name.contains_key(map_names::REAL_COUNTERS) {
        bail!("program {prog_id} on {iface} counts per VIP, not per real: it is an older lbctl's (layout 2); read it with that lbctl's `lbctl stats`, or let this lbctl take it over");
    }
    Ok(ProgramMaps {
        counters,
        real_counters: open(map_names::REAL_COUNTERS)?
            .map(PerCpuArray::try_from)
            .transpose()?,
        reals: open(map_names::REALS)?.map(Array::try_from).transpose()?,
        vips: open(map_names::VIPS)?.map(HashMap::try_from).transpose()?,
        flows: open(map_names::FLOWS)?.map(HashMap::try_from).transpose()?,
        flow_capacity: match by_name.get(map_names::FLOWS) {
            Some(id) => MapInfo::from_id(*id)
                .context("reading the flow table's size")?
                .max_entries(),
            None => 0,
        },
        active: open(map_names::ACTIVE)?.map(Array::try_from).transpose()?,
        swept: open(map_names::SWEPT)?.map(Array::try_from).transpose()?,
        flow_log: open(map_names::FLOW_LOG_BUDGET)?
            .map(PerCpuArray::try_from)
            .transpose()?,
        flood: open(map_names::FLOOD_STATE)?
            .map(PerCpuArray::try_from)
            .transpose()?,
    })
}

fn read(prog_id: u32, maps: &ProgramMaps, how: &How) -> Result<Stats> {
    let at_ns = crate::datapath::monotonic_ns();
    let counters = CounterTable::read(&maps.counters)?;
    let per_cpu = per_cpu_forwarded(&maps.counters)?;
    let mut stats = Stats {
        prog_id,
        at_ns,
        counters,
        per_cpu,
        flow_entries: 0,
        flow_capacity: 0,
        flow_log: match &maps.flow_log {
            Some(m) => m
                .get(&0, 0)
                .context("reading FLOW_LOG_BUDGET")?
                .iter()
                .fold(FlowLogCounts::default(), |s, b| FlowLogCounts {
                    sent: s.sent + b.sent,
                    over_rate: s.over_rate + b.over_rate,
                    ring_full: s.ring_full + b.ring_full,
                }),
            None => FlowLogCounts::default(),
        },
        flood_guarded: match &maps.flood {
            Some(m) => m
                .get(&0, 0)
                .context("reading FLOOD_STATE")?
                .iter()
                .map(|s| s.guarded)
                .sum(),
            None => 0,
        },
        vips: Vec::new(),
    };
    let (Some(vips), Some(reals), Some(real_counters)) =
        (&maps.vips, &maps.reals, &maps.real_counters)
    else {
        return Ok(stats);
    };
    let mut metas = Vec::new();
    for entry in vips.iter() {
        metas.push(entry.context("reading VIPS")?);
    }
    let leastconn: Vec<u32> = metas
        .iter()
        .filter(|(_, m)| m.sched == SCHED_LEASTCONN)
        .map(|(_, m)| m.vip_id)
        .collect();
    let walked;
    let flows = match (how.flows, &maps.flows) {
        (Some(counted), _) => counted,
        (None, Some(f)) => {
            walked = FlowCount::of(f, at_ns)?;
            &walked
        }
        (None, None) => {
            walked = FlowCount::default();
            &walked
        }
    };
    stats.flow_entries = flows.entries;
    stats.flow_capacity = maps.flow_capacity;
    // A real's port 0 is its VIP's.
    let vip_ports: BTreeMap<u32, u16> = metas.iter().map(|(k, m)| (m.vip_id, k.port())).collect();
    // The reals' entries (each names its VIP): those asked for, or every slot.
    let entries: Vec<(u32, RealEntry)> = match how.real_ids {
        Some(ids) => ids
            .iter()
            .map(|id| Ok((*id, reals.get(id, 0).context("reading REALS")?)))
            .collect::<Result<_>>()?,
        None => reals
            .iter()
            .enumerate()
            .map(|(id, e)| Ok((id as u32, e.context("reading REALS")?)))
            .collect::<Result<_>>()?,
    };
    let mut by_vip: BTreeMap<u32, Vec<RealRow>> = BTreeMap::new();
    for (id, entry) in entries {
        if matches!(entry.state(), REAL_UNUSED | REAL_RETIRED) {
            continue;
        }
        let active_flows = if leastconn.contains(&entry.vip_id()) {
            leastconn_active(maps, id)?
        } else {
            flows.per_real.get(&id).copied().unwrap_or(0)
        };
        by_vip.entry(entry.vip_id()).or_default().push(RealRow {
            real: entry
                .endpoint(vip_ports.get(&entry.vip_id()).copied().unwrap_or(0))
                .to_string(),
            state: state_word(entry.state()),
            weight: entry.weight(),
            traffic: sum_real(real_counters, id)?.into(),
            active_flows,
        });
    }
    for (key, meta) in metas {
        let mut reals = by_vip.remove(&meta.vip_id).unwrap_or_default();
        reals.sort_by(|a, b| a.real.cmp(&b.real));
        let traffic = reals
            .iter()
            .fold(RealTraffic::default(), |s, r| s.plus(r.traffic));
        stats.vips.push(VipRow {
            vip: vip_label(&key),
            mode: Mode::name_of(meta.mode),
            balance: Balance::name_of(meta.sched),
            traffic,
            reals,
        });
    }
    stats.vips.sort_by(|a, b| a.vip.cmp(&b.vip));
    Ok(stats)
}

/// Forwarded packets (both ways) per CPU.
fn per_cpu_forwarded(map: &PerCpuArray<MapData, Counter>) -> Result<Vec<u64>> {
    let requests = map
        .get(&Reason::FORWARDED_SLOT, 0)
        .context("reading COUNTERS")?;
    let replies = map
        .get(&Reason::REPLIES_SLOT, 0)
        .context("reading COUNTERS")?;
    Ok(requests
        .iter()
        .zip(replies.iter())
        .map(|(a, b)| a.packets + b.packets)
        .collect())
}

fn leastconn_active(maps: &ProgramMaps, id: u32) -> Result<u64> {
    let (Some(active), Some(swept)) = (&maps.active, &maps.swept) else {
        return Ok(0);
    };
    let started = active.get(&id, 0).context("reading ACTIVE")?;
    let ended = swept.get(&id, 0).context("reading SWEPT")?;
    Ok(started.saturating_sub(ended))
}

/// The flow table, counted: every entry, and the live request entries per real id.
#[derive(Clone, Debug, Default)]
pub struct FlowCount {
    pub entries: u64,
    pub per_real: BTreeMap<u32, u64>,
}

impl FlowCount {
    /// One walk of the table (two syscalls per entry: its cost grows with the table, see the
    /// bench's "active flows" figure).
    pub fn of(flows: &HashMap<MapData, FlowKey, Flow>, now_ns: u64) -> Result<Self> {
        let mut count = Self::default();
        for entry in flows.iter() {
            let (_, flow) = match entry {
                Ok(e) => e,
                // Evicted between the key and its value: gone.
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(e) => return Err(e).context("reading FLOWS"),
            };
            count.entries += 1;
            // A leastconn flow is counted by its own count; a reply entry is its flow's
            // second.
            if flow.flags & (FLOW_REPLY | FLOW_COUNTED) == 0 && !flow.expired(now_ns) {
                *count.per_real.entry(flow.real_id).or_default() += 1;
            }
        }
        Ok(count)
    }
}

fn state_word(state: u8) -> &'static str {
    match state {
        REAL_UP => "ready",
        REAL_DRAIN => "drain",
        REAL_DOWN => "down",
        _ => "unknown",
    }
}

fn vip_label(key: &VipKey) -> String {
    VipSpec::from_key(key).map_or_else(|| format!("{key:?}"), |v| v.to_string())
}

/// The VIPs table and the reasons, without rates (one reading) or a daemon's word.
impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let view = show::View::new(self, None, None);
        write!(f, "{}\n{}", view.table(), view.reasons())
    }
}
