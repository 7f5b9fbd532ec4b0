//! Counters: summing per-CPU slots, finding the maps of a program attached to an interface,
//! and the `lbctl stats` table.

use std::{borrow::Borrow, fmt};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::{HashMap, Map, MapData, MapInfo, PerCpuArray};
use lb_common::{map_names, Counter, Reason, VipCounters, VipKey, VipMeta};

use crate::declare::spec::VipSpec;

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
        .fold(Counter::default(), |acc, c| add(acc, *c)))
}

/// A VIP's counters, summed over CPUs.
pub fn sum_vip<T: Borrow<MapData>>(
    map: &PerCpuArray<T, VipCounters>,
    vip_id: u32,
) -> Result<VipCounters> {
    let values = map
        .get(&vip_id, 0)
        .with_context(|| format!("reading the counters of VIP id {vip_id}"))?;
    Ok(values
        .iter()
        .fold(VipCounters::default(), |acc, c| VipCounters {
            requests: add(acc.requests, c.requests),
            replies: add(acc.replies, c.replies),
        }))
}

fn add(a: Counter, b: Counter) -> Counter {
    Counter {
        packets: a.packets + b.packets,
        bytes: a.bytes + b.bytes,
    }
}

/// What one VIP forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipRow {
    pub vip: String,
    pub forwarded: VipCounters,
}

/// What `lbctl stats` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    pub prog_id: u32,
    pub counters: CounterTable,
    pub vips: Vec<VipRow>,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<24} {:>12} {:>14}", "COUNTER", "PACKETS", "BYTES")?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, c: &Counter| {
            writeln!(f, "{name:<24} {:>12} {:>14}", c.packets, c.bytes)
        };
        row(f, "forwarded", &self.counters.forwarded)?;
        row(f, "forwarded_replies", &self.counters.replies)?;
        for (r, c) in &self.counters.reasons {
            row(f, r.label(), c)?;
        }
        if !self.vips.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "{:<32} {:>12} {:>14} {:>12} {:>14}",
                "VIP", "REQUESTS", "BYTES", "REPLIES", "BYTES"
            )?;
            for v in &self.vips {
                let (q, a) = (&v.forwarded.requests, &v.forwarded.replies);
                writeln!(
                    f,
                    "{:<32} {:>12} {:>14} {:>12} {:>14}",
                    v.vip, q.packets, q.bytes, a.packets, a.bytes
                )?;
            }
        }
        Ok(())
    }
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
    let prog_id = crate::host::neigh::xdp_prog_id(iface)
        .await?
        .ok_or_else(|| {
            anyhow!(
                "no XDP program is attached to {iface}: start one with `lbctl attach {iface} ...`"
            )
        })?;
    let mut found = None;
    for prog in aya::programs::loaded_programs() {
        let prog = prog.context("listing BPF programs (lbctl stats needs root)")?;
        if prog.id() == prog_id {
            found = Some(prog);
            break;
        }
    }
    let prog = found.ok_or_else(|| {
        anyhow!("XDP program {prog_id} on {iface} disappeared: was lbctl just stopped?")
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
    let mut counters = None;
    let mut vip_counters = None;
    let mut vips = None;
    let map_ids = prog
        .map_ids()
        .context("reading the program's map ids (needs root)")?;
    for id in map_ids.unwrap_or_default() {
        let name = MapInfo::from_id(id)
            .with_context(|| format!("reading map {id} of program {prog_id}"))?
            .name_as_str()
            .map(str::to_owned);
        let open = || -> Result<Map> { Ok(Map::from_map_data(MapData::from_id(id)?)?) };
        match name.as_deref() {
            Some(map_names::COUNTERS) => {
                counters = Some(PerCpuArray::<_, Counter>::try_from(open()?)?)
            }
            Some(map_names::VIP_COUNTERS) => {
                vip_counters = Some(PerCpuArray::<_, VipCounters>::try_from(open()?)?)
            }
            Some(map_names::VIPS) => vips = Some(HashMap::<_, VipKey, VipMeta>::try_from(open()?)?),
            _ => {}
        }
    }
    let Some(counters) = counters else {
        bail!("program {prog_id} on {iface} lacks lbctl's counters: was it built from another version?");
    };
    if counters.len() != lb_common::COUNTER_SLOTS {
        bail!("program {prog_id} on {iface} counts in {} slots, this lbctl's in {}: it is an older lbctl's (pinned state of another layout); read it with that lbctl's `lbctl stats`, or let this lbctl take it over", counters.len(), lb_common::COUNTER_SLOTS);
    }
    let mut rows = Vec::new();
    // The balancer has VIPs; the decap program on a real has only counters.
    if let (Some(vips), Some(vip_counters)) = (vips, vip_counters) {
        for entry in vips.iter() {
            let (key, meta) = entry?;
            rows.push(VipRow {
                vip: vip_label(&key),
                forwarded: sum_vip(&vip_counters, meta.vip_id)?,
            });
        }
    }
    rows.sort_by(|a, b| a.vip.cmp(&b.vip));
    Ok(Stats {
        prog_id,
        counters: CounterTable::read(&counters)?,
        vips: rows,
    })
}

fn vip_label(key: &VipKey) -> String {
    VipSpec::from_key(key).map_or_else(|| format!("{key:?}"), |v| v.to_string())
}
