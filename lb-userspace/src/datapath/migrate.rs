//! Taking over pinned state of an older layout (see `layout`), in place of refusing it.
//!
//! The maps a step keeps are taken over as they are: the new program is loaded on the very
//! maps the old one runs on and swapped in (one netlink call per interface), so a flow the
//! old program creates up to its last packet is in the table the new one reads: nothing is
//! copied, so nothing can be created between a copy and the swap. Flows keep their real,
//! NAT flows their SNAT port and reply entry, VIPs and reals their ids.
//!
//! A map a step replaces is created anew and left unpinned until the swap is done. What
//! the older map holds (the counters) is copied into it at load, while only the old program
//! runs; after the swap, once no CPU can still run the old program (a map-in-map update
//! waits for that), what the old program added since is added too, the older map's pin
//! makes way for the new map's (bpffs has no rename), and LAYOUT is written, then pinned,
//! last. Before the swap, the maps taken over in place are filled as the new configuration
//! says, as on any restart; nothing is pinned or unpinned, so a start refused there leaves
//! state the old lbctl, or this one, takes over again. A migration that ends after the swap
//! and before LAYOUT is pinned leaves replaced maps already in this layout's shape: the next
//! takeover takes those in place.

use anyhow::{bail, Context as _, Result};
use aya::maps::{Array, Map, MapData, MapInfo, PerCpuArray, PerCpuValues};
use lb_common::{map_names, Counter, RealCounters, RealEntry, Reason, REAL_DOWN, REAL_RETIRED};

use super::{
    layout::{self, Shape, Step, CURRENT},
    pins::StateDir,
    Datapath,
};

/// What a state directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing an lbctl pinned: a fresh start.
    Nothing,
    /// State of this layout.
    Layout(u32),
}

/// How a takeover goes: which maps are taken over at load, which made anew and pinned
/// after the swap, and what older maps are carried into them.
pub struct Takeover {
    /// The layout found.
    pub from: u32,
    /// Maps of this layout created anew (replacing an older one, or new), pinned after the
    /// swap.
    pub pin_after: Vec<&'static str>,
    /// Older maps being replaced, opened: what they held is copied into the new maps
    /// before the swap (the new program not running yet), and what the old program added
    /// since, after it.
    older: Vec<Older>,
}

/// An older map a takeover replaces, and what of it was carried over before the swap.
struct Older {
    name: &'static str,
    layout: u32,
    carried: Carried,
}

/// What was copied of an older map before the swap, and what to top up after it: what the
/// old program added since (only maps the program writes).
enum Carried {
    /// COUNTERS of layout 1, slot by slot, per CPU.
    Counters {
        map: PerCpuArray<MapData, Counter>,
        copied: Vec<Vec<Counter>>,
    },
    /// REAL_COUNTERS (layouts 3 and 4), per real id, per CPU.
    RealCounters {
        map: PerCpuArray<MapData, RealCounters>,
        copied: Vec<Vec<RealCounters>>,
    },
    /// ACTIVE (layouts up to 4): each real's leastconn flows (the program adds 1 and −1).
    Active {
        map: Array<MapData, u64>,
        copied: Vec<u64>,
    },
    /// Written by userspace alone (REALS, SWEPT): copied whole, nothing to top up.
    Whole,
}

impl StateDir {
    /// The layout of the state here: LAYOUT's value, or 1 for state pinned before LAYOUT
    /// existed (a FLOWS map and no LAYOUT).
    pub fn found(&self) -> Result<Found> {
        let path = self.map_path(map_names::LAYOUT);
        if path.exists() {
            let data =
                MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
            let map: Array<MapData, u32> = Array::try_from(Map::Array(data))
                .with_context(|| format!("{} is not lbctl's LAYOUT", path.display()))?;
            let layout = map.get(&0, 0).context("reading LAYOUT")?;
            // LAYOUT is written before it is pinned: 0 was pinned by no lbctl.
            if layout == 0 {
                bail!("{} holds 0, which no lbctl writes: the state is not lbctl's as it left it. To start afresh, losing its flows, `lbctl detach` the interface (or remove {})", path.display(), self.path().display());
            }
            return Ok(Found::Layout(layout));
        }
        if self.map_path(map_names::FLOWS).exists() {
            return Ok(Found::Layout(1));
        }
        Ok(Found::Nothing)
    }

    /// The shape of the pinned map `name`, if it is pinned.
    fn shape(&self, name: &str) -> Result<Option<Shape>> {
        let path = self.map_path(name);
        if !path.exists() {
            return Ok(None);
        }
        let info = MapInfo::from_pin(&path)
            .with_context(|| format!("reading the pinned map {}", path.display()))?;
        let map_type = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
        Ok(Some(Shape {
            map_type,
            key: info.key_size(),
            value: info.value_size(),
            entries: Some(info.max_entries()),
            flags: info.map_flags(),
        }))
    }

    /// Plans the takeover of the state found here: refused for a layout this lbctl does not
    /// know, or maps not of their layout's shape.
    pub fn plan_takeover(&self, found: u32) -> Result<Takeover> {
        if found > CURRENT {
            bail!(
                "{} holds state of layout {found}, pinned by a newer lbctl; this one knows layouts {} to {CURRENT}. Start that newer lbctl again (or its `lbctl downgrade IFACE --to {CURRENT}`, when it has one); or, losing the flows, `lbctl detach` the interface to start afresh",
                self.path().display(),
                layout::OLDEST
            );
        }
        let Some(old) = layout::maps(found) else {
            bail!(
                "{} holds state of layout {found}, older than any this lbctl takes over ({} to {CURRENT}): upgrade through an lbctl that knows it, or `lbctl detach` the interface to start afresh (its flows are lost)",
                self.path().display(),
                layout::OLDEST
            );
        };
        let current = layout::maps(CURRENT).context("the current layout has a table")?;
        // Maps this layout makes anew (replacing older ones, or new) already pinned in its
        // shape: a migration that ended after the swap and before LAYOUT was written left
        // them; taken over in place.
        let mut done = Vec::new();
        for (name, want) in &current {
            if kept_through(found, name) {
                continue;
            }
            if self
                .shape(name)?
                .is_some_and(|have| layout::fits(want, &have))
            {
                done.push(*name);
            }
        }
        for (name, want) in &old {
            if done.contains(name) {
                continue;
            }
            let Some(have) = self.shape(name)? else {
                continue;
            };
            if !layout::fits(want, &have) {
                bail!(
                    "the pinned map {} is not of layout {found} as this lbctl knows it (found {have:?}, layout {found} has {want:?}): it was left by an lbctl of another build. Refusing to take it over; to start afresh, losing its flows, `lbctl detach` the interface (or remove {})",
                    self.map_path(name).display(),
                    self.path().display()
                );
            }
        }
        let pin_after = current
            .keys()
            .copied()
            .filter(|name| !kept_through(found, name) && !done.contains(name))
            .collect();
        Ok(Takeover {
            from: found,
            pin_after,
            older: Vec::new(),
        })
    }
}

/// Takes the state in `dir` (this layout, no lbctl running on it) back to layout `to`, for
/// the older lbctl that pins it to take over as its own: the maps every step since keeps
/// stay (the program still forwarding on them keeps its flows, and so will the older one);
/// maps made new since are unpinned, so the older lbctl makes its own (their contents, the
/// counters, start again from zero there). Returns what was done.
pub fn downgrade(dir: &StateDir, to: u32) -> Result<String> {
    let found = match dir.found()? {
        Found::Nothing => bail!("{} holds no pinned state", dir.path().display()),
        Found::Layout(n) => n,
    };
    if found != CURRENT {
        bail!(
            "{} holds layout {found}; this lbctl downgrades its own layout, {CURRENT}",
            dir.path().display()
        );
    }
    if !(layout::OLDEST..CURRENT).contains(&to) {
        bail!(
            "this lbctl downgrades to layouts {} to {}, not {to}",
            layout::OLDEST,
            CURRENT - 1
        );
    }
    // Layouts up to 4 hold 16 384 reals: their maps per real id are shrunk back (checked
    // first, so a refused downgrade changes nothing), the smaller maps made and filled
    // before any pin changes.
    let mut smaller = Vec::new();
    if to <= 4 {
        check_real_ids_fit(dir)?;
        for name in SHRUNK_FOR_LAYOUT_4 {
            if !kept_through(to, name) && layout::maps(to).is_some_and(|m| m.contains_key(name)) {
                smaller.push((name, shrunk_copy(dir, name)?));
            }
        }
    }
    let mut unpinned = Vec::new();
    let mut shrunk = Vec::new();
    for name in layout::maps(CURRENT)
        .context("the current layout has a table")?
        .keys()
    {
        if kept_through(to, name) {
            continue;
        }
        if let Some(at) = smaller.iter().position(|(n, _)| n == name) {
            let (name, map) = smaller.swap_remove(at);
            let path = dir.map_path(name);
            std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
            map.pin(&path)?;
            shrunk.push(name);
            continue;
        }
        let path = dir.map_path(name);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
            unpinned.push(*name);
        }
    }
    if to < 3 {
        retired_as_down(dir)?;
    }
    // A layout with LAYOUT says which it is; layout 1 has none (unpinned above).
    if kept_through(to, map_names::LAYOUT) {
        let path = dir.map_path(map_names::LAYOUT);
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut map: Array<MapData, u32> = Array::try_from(Map::Array(data))?;
        map.set(0, to, 0).context("writing LAYOUT")?;
    }
    let shrunk = if shrunk.is_empty() {
        String::new()
    } else {
        format!("; {} copied into maps of its size", shrunk.join(", "))
    };
    Ok(format!(
        "{} is layout {to} now, for the lbctl that pins it to take over: flows, VIP and real ids and SNAT ports stay; unpinned {} (that lbctl makes its own: the counters in them start again from zero){shrunk}. Starting this lbctl again migrates it back",
        dir.path().display(),
        unpinned.join(", ")
    ))
}

/// The maps per real id that layout 5 made larger and a downgrade copies back into maps of
/// layout 4's size (REAL_COUNTERS, counters, starts again from zero instead).
const SHRUNK_FOR_LAYOUT_4: [&str; 3] = [map_names::REALS, map_names::ACTIVE, map_names::SWEPT];

/// Refuses a downgrade to a layout of 16 384 reals while a real holds a larger id.
fn check_real_ids_fit(dir: &StateDir) -> Result<()> {
    let path = dir.map_path(map_names::REALS);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let reals: Array<MapData, RealEntry> = Array::try_from(Map::Array(data))?;
    let used = (lb_common::MAX_REALS_LAYOUT_4..reals.len())
        .filter(|id| {
            reals
                .get(id, 0)
                .is_ok_and(|e| !matches!(e.state(), lb_common::REAL_UNUSED | REAL_RETIRED))
        })
        .count();
    if used > 0 {
        bail!(
            "{used} reals have ids past the {} layouts up to 4 hold: remove reals until at most {} are configured (each VIP's counted apart), restart this lbctl, then downgrade",
            lb_common::MAX_REALS_LAYOUT_4 - 1,
            lb_common::MAX_REALS_LAYOUT_4 - 1
        );
    }
    Ok(())
}

/// A map of layout 4's size holding the first entries of the pinned map `name` (per real
/// id), to pin in its place. The program still running keeps the larger one until the older
/// lbctl swaps its own in; what it changes there after this copy (leastconn counts) is lost.
fn shrunk_copy(dir: &StateDir, name: &str) -> Result<Smaller> {
    let path = dir.map_path(name);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let value_size = data.info()?.value_size();
    let def = aya_obj::Map::new_from_params(
        2, // BPF_MAP_TYPE_ARRAY
        4,
        value_size,
        lb_common::MAX_REALS_LAYOUT_4,
        0,
    );
    let small =
        MapData::create(def, name, None).with_context(|| format!("creating a smaller {name}"))?;
    Ok(match name {
        map_names::REALS => Smaller::Reals(copy_into(data, small)?),
        _ => Smaller::Counts(copy_into(data, small)?),
    })
}

/// A map per real id of layout 4's size, filled, not pinned yet.
enum Smaller {
    Reals(Array<MapData, RealEntry>),
    Counts(Array<MapData, u64>),
}

impl Smaller {
    fn pin(self, path: &std::path::Path) -> Result<()> {
        match self {
            Self::Reals(map) => map.pin(path),
            Self::Counts(map) => map.pin(path),
        }
        .with_context(|| format!("pinning {}", path.display()))
    }
}

/// Copies the first entries of array `from` into the smaller array `to`.
fn copy_into<V: aya::Pod>(from: MapData, to: MapData) -> Result<Array<MapData, V>> {
    let from: Array<MapData, V> = Array::try_from(Map::Array(from))?;
    let mut to: Array<MapData, V> = Array::try_from(Map::Array(to))?;
    for id in 0..to.len() {
        to.set(id, from.get(&id, 0)?, 0)?;
    }
    Ok(to)
}

/// Layouts before 3 have no retired state: a removed real was written down (which an older
/// lbctl, taking the state over, keeps apart from a live entry of the same real).
fn retired_as_down(dir: &StateDir) -> Result<()> {
    let path = dir.map_path(map_names::REALS);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut reals: Array<MapData, RealEntry> = Array::try_from(Map::Array(data))?;
    for id in 1..reals.len() {
        let entry = reals.get(&id, 0).context("reading REALS")?;
        if entry.state() == REAL_RETIRED {
            reals
                .set(id, entry.with_state(REAL_DOWN), 0)
                .context("writing REALS")?;
        }
    }
    Ok(())
}

/// Whether map `name` of layout `from` is taken over in place by every step up to CURRENT.
fn kept_through(from: u32, name: &str) -> bool {
    let in_from = layout::maps(from).is_some_and(|m| m.contains_key(name));
    in_from && (from..CURRENT).all(|l| layout::step(l, name) == Step::Kept)
}

impl Datapath {
    /// Before the swap, while this program does not run yet: copies what the older maps
    /// being replaced hold into the new ones (no race: only the old program counts).
    pub(super) fn carry_before_swap(&mut self) -> Result<()> {
        let Some(mut takeover) = self.takeover.take() else {
            return Ok(());
        };
        let result = self.copy_older(&mut takeover);
        self.takeover = Some(takeover);
        result
    }

    fn copy_older(&mut self, takeover: &mut Takeover) -> Result<()> {
        let Some(pins) = &self.pins else {
            return Ok(());
        };
        for name in &takeover.pin_after {
            let path = pins.map_path(name);
            if !path.exists() {
                continue;
            }
            let data =
                MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
            let carried = match (takeover.from, *name) {
                (1, map_names::COUNTERS) => {
                    let map: PerCpuArray<MapData, Counter> =
                        PerCpuArray::try_from(Map::PerCpuArray(data))?;
                    let copied = read_counters(&map)?;
                    add_counters(&copied, &mut self.counters, layout_1_counter_slot)?;
                    Carried::Counters { map, copied }
                }
                (_, map_names::REALS) => {
                    let old: Array<MapData, RealEntry> = Array::try_from(Map::Array(data))?;
                    for id in 0..old.len() {
                        let entry = old.get(&id, 0).context("reading the older REALS")?;
                        if entry.state() != lb_common::REAL_UNUSED {
                            self.reals.set(id, entry, 0).context("writing REALS")?;
                        }
                    }
                    Carried::Whole
                }
                (_, map_names::SWEPT) => {
                    let old: Array<MapData, u64> = Array::try_from(Map::Array(data))?;
                    copy_u64s(&old, &mut self.swept)?;
                    Carried::Whole
                }
                (_, map_names::ACTIVE) => {
                    let map: Array<MapData, u64> = Array::try_from(Map::Array(data))?;
                    let copied = copy_u64s(&map, &mut self.active)?;
                    Carried::Active { map, copied }
                }
                (_, map_names::REAL_COUNTERS) => {
                    let map: PerCpuArray<MapData, RealCounters> =
                        PerCpuArray::try_from(Map::PerCpuArray(data))?;
                    let copied = read_real_counters(&map)?;
                    add_real_counters(&copied, &mut self.real_counters)?;
                    Carried::RealCounters { map, copied }
                }
                // What the interfaces are is asked of the host at every start, and the new
                // map is filled so before the swap: nothing to carry.
                (_, map_names::IFACES) => continue,
                (layout, name) => {
                    bail!("map {name} of layout {layout}: this lbctl does not know how to carry it over")
                }
            };
            takeover.older.push(Older {
                name,
                layout: takeover.from,
                carried,
            });
        }
        Ok(())
    }

    /// Ends a takeover once this program is attached in place of the old one: the maps made
    /// anew are pinned, what the old program added to the older ones since the copy carried
    /// over, LAYOUT written and pinned last. Returns what was done, for the log.
    pub fn finish_takeover(&mut self) -> Result<Option<String>> {
        let Some(takeover) = self.takeover.take() else {
            return Ok(None);
        };
        let Some(pins) = &self.pins else {
            return Ok(None);
        };
        let dir = pins.path().to_owned();
        // From here no CPU runs the old program: what it wrote is final.
        self.wait_for_running_programs()?;
        // bpffs has no rename: each older map (opened before the swap) gives up its pin to
        // the new map; LAYOUT is pinned last, with its value, so a state with LAYOUT pinned
        // is whole.
        for name in takeover
            .pin_after
            .iter()
            .filter(|n| **n != map_names::LAYOUT)
        {
            let path = dir.join(name);
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("unpinning {}", path.display()))?;
            }
            self.pin_loaded(name, &path)?;
        }
        // Maps of the older layout that this one no longer has: the program no longer
        // uses them; their pins go.
        let current = layout::maps(CURRENT).context("the current layout has a table")?;
        let mut carried = Vec::new();
        for name in layout::maps(takeover.from)
            .context("the layout taken over has a table")?
            .keys()
            .filter(|n| !current.contains_key(*n))
        {
            let path = dir.join(name);
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("unpinning {}", path.display()))?;
            }
            carried.push(dropped_note(name));
        }
        for older in &takeover.older {
            // Only what the old program counted since the copy: the race with this program's
            // counting is on that difference alone.
            match &older.carried {
                Carried::Counters { map, copied } => {
                    let since = difference(&read_counters(map)?, copied);
                    add_counters(&since, &mut self.counters, layout_1_counter_slot)?;
                }
                Carried::RealCounters { map, copied } => {
                    let since = real_difference(&read_real_counters(map)?, copied);
                    add_real_counters(&since, &mut self.real_counters)?;
                }
                Carried::Active { map, copied } => {
                    for (id, then) in copied.iter().enumerate() {
                        let id = id as u32;
                        let since = map
                            .get(&id, 0)
                            .context("reading the older ACTIVE")?
                            .wrapping_sub(*then);
                        if since != 0 {
                            let now = self.active.get(&id, 0).context("reading ACTIVE")?;
                            self.active
                                .set(id, now.wrapping_add(since), 0)
                                .context("writing ACTIVE")?;
                        }
                    }
                }
                Carried::Whole => {}
            }
            carried.push(format!(
                "{} of layout {} carried over",
                older.name, older.layout
            ));
        }
        if takeover.from < 3 {
            // Layouts before 3 wrote a removed real down: those entries no real holds now
            // are retired (not read back as reals of their VIP, not shown by the stats).
            let retired = self.retire_unheld_down_reals()?;
            if retired > 0 {
                carried.push(format!("{retired} removed reals' entries marked retired"));
            }
        }
        self.write_layout()?;
        if takeover.pin_after.contains(&map_names::LAYOUT) {
            self.pin_loaded(map_names::LAYOUT, &dir.join(map_names::LAYOUT))?;
        }
        let what = if takeover.from == CURRENT {
            "took over the pinned state".to_string()
        } else {
            format!(
                "migrated the pinned state in {} from layout {} to {CURRENT}: flows, VIP and real ids and SNAT ports kept in place",
                dir.display(),
                takeover.from
            )
        };
        let split = if takeover.from == 1 {
            format!(" ({SPLIT_SINCE_LAYOUT_1})")
        } else {
            String::new()
        };
        Ok(Some(if carried.is_empty() {
            what
        } else {
            format!("{what}; {}{split}", carried.join("; "))
        }))
    }

    /// Writes REAL_RETIRED over the REALS entries that are down and whose id no real holds.
    fn retire_unheld_down_reals(&mut self) -> Result<usize> {
        let held: std::collections::BTreeSet<u32> = self.real_ids.values().copied().collect();
        let mut retired = 0;
        for id in 1..lb_common::MAX_REALS {
            if held.contains(&id) {
                continue;
            }
            let entry = self.reals.get(&id, 0).context("reading REALS")?;
            if entry.state() == REAL_DOWN {
                self.reals
                    .set(id, entry.with_state(REAL_RETIRED), 0)
                    .context("writing REALS")?;
                retired += 1;
            }
        }
        Ok(retired)
    }

    /// Pins the loaded map `name` at `path`.
    pub(super) fn pin_loaded(&self, name: &str, path: &std::path::Path) -> Result<()> {
        let id = self
            .map_ids
            .get(name)
            .with_context(|| format!("no map {name} was loaded"))?;
        let map = MapData::from_id(*id).with_context(|| format!("opening map {name}"))?;
        map.pin(path)
            .with_context(|| format!("pinning {}", path.display()))
    }

    /// Writes this layout's number to LAYOUT, pinning it if it is not yet.
    pub(super) fn write_layout(&mut self) -> Result<()> {
        let id = self
            .map_ids
            .get(map_names::LAYOUT)
            .context("the object has no LAYOUT map")?;
        let data = MapData::from_id(*id).context("opening LAYOUT")?;
        let mut map: Array<MapData, u32> = Array::try_from(Map::Array(data))?;
        map.set(0, CURRENT, 0).context("writing LAYOUT")
    }

    /// Returns once every program run that started before has ended: a map-in-map update
    /// makes the kernel wait for that (a ring slot no VIP uses gets an empty ring).
    fn wait_for_running_programs(&mut self) -> Result<()> {
        let free = (0..lb_common::MAX_VIPS)
            .rev()
            .find(|id| !self.vip_ids_used.contains(id))
            .context("no free VIP id to wait with")?;
        self.rings.wait_for_programs(free)
    }
}

/// What the log says of a map a newer layout no longer has.
fn dropped_note(name: &str) -> String {
    match name {
        map_names::VIP_COUNTERS => "VIP_COUNTERS not carried over: from layout 3 on the datapath counts per real (REAL_COUNTERS), and a VIP's count cannot be split among its reals, so per-VIP totals start again from zero".to_string(),
        map_names::RINGS => "RINGS unpinned: from layout 5 on each lbctl builds the rings from its configuration into a RINGS of its own, each ring its own size".to_string(),
        other => format!("{other} not carried over"),
    }
}

/// Every slot of `map`, per CPU.
fn read_counters(map: &PerCpuArray<MapData, Counter>) -> Result<Vec<Vec<Counter>>> {
    (0..map.len())
        .map(|slot| {
            let values = map.get(&slot, 0).context("reading the older COUNTERS")?;
            Ok(values.iter().copied().collect())
        })
        .collect()
}

/// Copies every slot of `old` into the same slot of `new` (no larger); returns what it copied.
fn copy_u64s(old: &Array<MapData, u64>, new: &mut Array<MapData, u64>) -> Result<Vec<u64>> {
    (0..old.len())
        .map(|i| {
            let v = old.get(&i, 0).context("reading an older map")?;
            if v != 0 {
                new.set(i, v, 0).context("writing its larger successor")?;
            }
            Ok(v)
        })
        .collect()
}

/// Every real id's counters, per CPU.
fn read_real_counters(map: &PerCpuArray<MapData, RealCounters>) -> Result<Vec<Vec<RealCounters>>> {
    (0..map.len())
        .map(|id| {
            let values = map.get(&id, 0).context("reading the older REAL_COUNTERS")?;
            Ok(values.iter().copied().collect())
        })
        .collect()
}

/// Adds `counts` (per real id, per CPU) into the same ids of `new`.
fn add_real_counters(
    counts: &[Vec<RealCounters>],
    new: &mut PerCpuArray<MapData, RealCounters>,
) -> Result<()> {
    for (id, old_values) in counts.iter().enumerate() {
        if old_values.iter().all(|c| *c == RealCounters::default()) {
            continue;
        }
        let id = id as u32;
        let new_values = new.get(&id, 0).context("reading REAL_COUNTERS")?;
        let sum: Vec<RealCounters> = old_values
            .iter()
            .zip(new_values.iter())
            .map(|(a, b)| a.plus(*b))
            .collect();
        let sum = PerCpuValues::try_from(sum).context("per-CPU counters")?;
        new.set(id, sum, 0).context("writing REAL_COUNTERS")?;
    }
    Ok(())
}

/// `now − then` per real id, per CPU (counters only grow).
fn real_difference(
    now: &[Vec<RealCounters>],
    then: &[Vec<RealCounters>],
) -> Vec<Vec<RealCounters>> {
    now.iter()
        .zip(then)
        .map(|(n, t)| n.iter().zip(t).map(|(n, t)| n.minus(*t)).collect())
        .collect()
}

/// `now − then`, slot by slot, per CPU (counters only grow).
fn difference(now: &[Vec<Counter>], then: &[Vec<Counter>]) -> Vec<Vec<Counter>> {
    now.iter()
        .zip(then)
        .map(|(n, t)| {
            n.iter()
                .zip(t)
                .map(|(n, t)| Counter {
                    packets: n.packets.saturating_sub(t.packets),
                    bytes: n.bytes.saturating_sub(t.bytes),
                })
                .collect()
        })
        .collect()
}

/// Adds `counts` (an older map's slots, per CPU) into `new`, each slot where `slot_of`
/// says.
fn add_counters(
    counts: &[Vec<Counter>],
    new: &mut PerCpuArray<MapData, Counter>,
    slot_of: fn(u32) -> Option<u32>,
) -> Result<()> {
    for (from, old_values) in counts.iter().enumerate() {
        let Some(to) = slot_of(from as u32) else {
            continue;
        };
        if old_values.iter().all(|c| c.packets == 0 && c.bytes == 0) {
            continue;
        }
        let new_values = new.get(&to, 0).context("reading COUNTERS")?;
        let sum: Vec<Counter> = old_values
            .iter()
            .zip(new_values.iter())
            .map(|(a, b)| Counter {
                packets: a.packets + b.packets,
                bytes: a.bytes + b.bytes,
            })
            .collect();
        let sum = PerCpuValues::try_from(sum).context("per-CPU counters")?;
        new.set(to, sum, 0).context("writing COUNTERS")?;
    }
    Ok(())
}

/// The reasons of layout 1 that counted causes now counted under reasons of their own: their
/// older counts stay under the name they kept (`pass_not_tcp_udp`: `pass_other_protocol`).
const SPLIT_SINCE_LAYOUT_1: &str = "counts of reasons split since stay under the name they kept: pass_not_tcp_udp as pass_other_protocol (it also counted ICMP not about a flow, bad ICMP quotes and IPv6 extension headers), drop_too_big (also IPv6), drop_unknown_mode (also IPv6 to a mode without it), drop_no_real (also reals behind an unattached interface), drop_flow_insert_failed, drop_ttl_expired, pass_not_for_us, drop_truncated";

/// Layout 1's COUNTERS: forwarded at 0, then a slot per reason in this order, replies last.
const LAYOUT_1_REASONS: [&str; 20] = [
    "pass_not_ip",
    "pass_not_vip",
    "pass_not_tcp_udp",
    "pass_fragment",
    "drop_truncated",
    "drop_bad_ip_header",
    "drop_no_real",
    "drop_unknown_mode",
    "pass_not_for_us",
    "drop_too_big",
    "drop_no_headroom",
    "pass_not_tunnelled",
    "tx_icmp_too_big",
    "pass_no_flow",
    "drop_snat_exhausted",
    "drop_flow_clash",
    "drop_flow_insert_failed",
    "tx_icmp_ttl_exceeded",
    "drop_ttl_expired",
    "pass_no_real",
];

/// Where a layout-1 counter slot goes in this layout's COUNTERS.
fn layout_1_counter_slot(slot: u32) -> Option<u32> {
    match slot {
        0 => Some(Reason::FORWARDED_SLOT),
        21 => Some(Reason::REPLIES_SLOT),
        s => {
            let label = *LAYOUT_1_REASONS.get(s as usize - 1)?;
            // Split since: its count stays under the name that kept its first meaning.
            let label = if label == "pass_not_tcp_udp" {
                "pass_other_protocol"
            } else {
                label
            };
            Reason::ALL
                .iter()
                .find(|r| r.label() == label)
                .map(|r| r.slot())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_1_counter_has_a_slot_here() {
        let mut seen = std::collections::BTreeSet::new();
        for slot in 0..22 {
            let to = layout_1_counter_slot(slot)
                .unwrap_or_else(|| panic!("layout 1 slot {slot} is lost"));
            assert!(to < lb_common::COUNTER_SLOTS);
            assert!(seen.insert(to), "two layout-1 slots land in slot {to}");
        }
        assert_eq!(layout_1_counter_slot(0), Some(Reason::FORWARDED_SLOT));
        assert_eq!(layout_1_counter_slot(21), Some(Reason::REPLIES_SLOT));
        assert_eq!(layout_1_counter_slot(14), Some(Reason::NoFlow.slot()));
        assert_eq!(layout_1_counter_slot(22), None);
    }

    #[test]
    fn maps_kept_in_place_are_pinned_at_load_the_rest_after_the_swap() {
        assert!(kept_through(1, map_names::FLOWS));
        assert!(
            !kept_through(1, map_names::REALS),
            "replaced by a larger one in layout 5"
        );
        assert!(kept_through(4, map_names::VIPS));
        assert!(!kept_through(4, map_names::ACTIVE));
        assert!(
            !kept_through(1, map_names::COUNTERS),
            "replaced in layout 2"
        );
        assert!(!kept_through(1, map_names::LAYOUT), "new in layout 2");
        assert!(kept_through(2, map_names::COUNTERS));
        assert!(kept_through(2, map_names::FLOWS));
        assert!(
            !kept_through(2, map_names::VIP_COUNTERS),
            "dropped in layout 3"
        );
        assert!(
            !kept_through(2, map_names::REAL_COUNTERS),
            "new in layout 3"
        );
        assert!(kept_through(CURRENT, map_names::COUNTERS));
        assert!(kept_through(CURRENT, map_names::LAYOUT));
    }
}
