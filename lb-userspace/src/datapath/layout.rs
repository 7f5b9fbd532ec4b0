//! The layouts of the state lbctl pins: which maps, of which shapes, meaning what. A layout
//! is a number, pinned with the state (map LAYOUT; absent in layout 1, which predates it).
//! Every change to a pinned map (its shape, or what its bytes mean) is a new layout, with a
//! migration from the one before in `migrate` and a row in the upgrade test
//! (`tests/tests/upgrade_e2e.rs`). A host test pins the current object to the table of
//! `CURRENT`, so a map cannot change unseen.

use std::collections::BTreeMap;

use lb_common::map_names::{self, *};

/// The layout this lbctl pins.
pub const CURRENT: u32 = 5;

/// The oldest layout this lbctl takes over (migrating it to `CURRENT`).
pub const OLDEST: u32 = 1;

/// A pinned map's shape, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    pub key: u32,
    pub value: u32,
    /// `None`: set when loading (the flow tables).
    pub entries: Option<u32>,
    pub flags: u32,
}

const HASH: u32 = 1;
const ARRAY: u32 = 2;
const PERCPU_ARRAY: u32 = 6;
const LRU_HASH: u32 = 9;
const ARRAY_OF_MAPS: u32 = 12;

const fn shape(map_type: u32, key: u32, value: u32, entries: u32) -> Shape {
    Shape {
        map_type,
        key,
        value,
        entries: Some(entries),
        flags: 0,
    }
}

const fn sized_at_load(map_type: u32, key: u32, value: u32) -> Shape {
    Shape {
        map_type,
        key,
        value,
        entries: None,
        flags: 0,
    }
}

/// Layout 1: lbctl up to 60a3567. COUNTERS had a slot per reason between forwarded and
/// replies (22 slots); no LAYOUT map.
const LAYOUT_1: &[(&str, Shape)] = &[
    (VIPS, shape(HASH, 20, 24, 16384)),
    (REALS, shape(ARRAY, 4, 40, 16384)),
    (RINGS, shape(ARRAY_OF_MAPS, 4, 4, 16384)),
    (COUNTERS, shape(PERCPU_ARRAY, 4, 16, 22)),
    (VIP_COUNTERS, shape(PERCPU_ARRAY, 4, 32, 16384)),
    (IFACES, shape(HASH, 4, 12, 64)),
    (SETTINGS, shape(ARRAY, 4, 8, 1)),
    (FLOWS, sized_at_load(LRU_HASH, 40, 80)),
    (SNAT_POOLS, shape(ARRAY, 4, 136, 16384)),
    (SNAT_CURSOR, shape(PERCPU_ARRAY, 4, 4, 1)),
    (ENDPOINTS, shape(HASH, 20, 8, 8192)),
    (ACTIVE, shape(ARRAY, 4, 8, 16384)),
    (SWEPT, shape(ARRAY, 4, 8, 16384)),
    (OPEN, sized_at_load(HASH, 40, 4)),
    (RR_CURSOR, shape(PERCPU_ARRAY, 4, 4, 16384)),
    (TUNNEL_SOURCES, shape(ARRAY, 4, 4, 16384)),
];

/// Layout 2: COUNTERS has a fixed 64 slots (forwarded 0, replies 1, each reason its own slot
/// for good: a new reason needs no new layout); `Flow::flags` is a 32-bit word set
/// atomically (its low byte the same bits at the same offset: FLOWS is unchanged); the
/// LAYOUT map.
const LAYOUT_2: &[(&str, Shape)] = &[
    (VIPS, shape(HASH, 20, 24, 16384)),
    (REALS, shape(ARRAY, 4, 40, 16384)),
    (RINGS, shape(ARRAY_OF_MAPS, 4, 4, 16384)),
    (COUNTERS, shape(PERCPU_ARRAY, 4, 16, 64)),
    (VIP_COUNTERS, shape(PERCPU_ARRAY, 4, 32, 16384)),
    (IFACES, shape(HASH, 4, 12, 64)),
    (SETTINGS, shape(ARRAY, 4, 8, 1)),
    (FLOWS, sized_at_load(LRU_HASH, 40, 80)),
    (SNAT_POOLS, shape(ARRAY, 4, 136, 16384)),
    (SNAT_CURSOR, shape(PERCPU_ARRAY, 4, 4, 1)),
    (ENDPOINTS, shape(HASH, 20, 8, 8192)),
    (ACTIVE, shape(ARRAY, 4, 8, 16384)),
    (SWEPT, shape(ARRAY, 4, 8, 16384)),
    (OPEN, sized_at_load(HASH, 40, 4)),
    (RR_CURSOR, shape(PERCPU_ARRAY, 4, 4, 16384)),
    (TUNNEL_SOURCES, shape(ARRAY, 4, 4, 16384)),
    (LAYOUT, shape(ARRAY, 4, 4, 1)),
];

/// Layout 3: the counters per real (REAL_COUNTERS, per real id: packets and bytes each way,
/// new flows, flows picked up mid-stream) in place of the counters per VIP (VIP_COUNTERS): a
/// VIP's figures are its reals' summed. A real removed from its VIP is written
/// `REAL_RETIRED` in REALS (older programs take it for down; `lbctl downgrade` writes it
/// down), so that its entry is not read back as a real of the VIP.
const LAYOUT_3: &[(&str, Shape)] = &[
    (VIPS, shape(HASH, 20, 24, 16384)),
    (REALS, shape(ARRAY, 4, 40, 16384)),
    (RINGS, shape(ARRAY_OF_MAPS, 4, 4, 16384)),
    (COUNTERS, shape(PERCPU_ARRAY, 4, 16, 64)),
    (REAL_COUNTERS, shape(PERCPU_ARRAY, 4, 48, 16384)),
    (IFACES, shape(HASH, 4, 12, 64)),
    (SETTINGS, shape(ARRAY, 4, 8, 1)),
    (FLOWS, sized_at_load(LRU_HASH, 40, 80)),
    (SNAT_POOLS, shape(ARRAY, 4, 136, 16384)),
    (SNAT_CURSOR, shape(PERCPU_ARRAY, 4, 4, 1)),
    (ENDPOINTS, shape(HASH, 20, 8, 8192)),
    (ACTIVE, shape(ARRAY, 4, 8, 16384)),
    (SWEPT, shape(ARRAY, 4, 8, 16384)),
    (OPEN, sized_at_load(HASH, 40, 4)),
    (RR_CURSOR, shape(PERCPU_ARRAY, 4, 4, 16384)),
    (TUNNEL_SOURCES, shape(ARRAY, 4, 4, 16384)),
    (LAYOUT, shape(ARRAY, 4, 4, 1)),
];

/// Layout 4: IFACES values carry the interface's VRRP virtual MACs (keepalived's
/// `use_vmac`), whose frames are balanced like those to the interface's own MAC. IFACES is
/// made anew, filled from the host's interfaces as at every start (nothing carried).
const LAYOUT_4: &[(&str, Shape)] = &[
    (VIPS, shape(HASH, 20, 24, 16384)),
    (REALS, shape(ARRAY, 4, 40, 16384)),
    (RINGS, shape(ARRAY_OF_MAPS, 4, 4, 16384)),
    (COUNTERS, shape(PERCPU_ARRAY, 4, 16, 64)),
    (REAL_COUNTERS, shape(PERCPU_ARRAY, 4, 48, 16384)),
    (IFACES, shape(HASH, 4, 24, 64)),
    (SETTINGS, shape(ARRAY, 4, 8, 1)),
    (FLOWS, sized_at_load(LRU_HASH, 40, 80)),
    (SNAT_POOLS, shape(ARRAY, 4, 136, 16384)),
    (SNAT_CURSOR, shape(PERCPU_ARRAY, 4, 4, 1)),
    (ENDPOINTS, shape(HASH, 20, 8, 8192)),
    (ACTIVE, shape(ARRAY, 4, 8, 16384)),
    (SWEPT, shape(ARRAY, 4, 8, 16384)),
    (OPEN, sized_at_load(HASH, 40, 4)),
    (RR_CURSOR, shape(PERCPU_ARRAY, 4, 4, 16384)),
    (TUNNEL_SOURCES, shape(ARRAY, 4, 4, 16384)),
    (LAYOUT, shape(ARRAY, 4, 4, 1)),
];

/// Layout 5: RINGS is no longer pinned. Each VIP's ring map is its own size (inner maps of
/// RINGS are `BPF_F_INNER_MAP`, which a layout-4 RINGS cannot take) and rewritten in place;
/// every lbctl builds the rings from its configuration before attaching, as it always
/// rebuilt them, into a RINGS of its own (its program holds it while attached). The maps
/// per real id hold 131 072 reals (MAX_REALS), up from 16 384: replaced, their entries
/// carried over (those the old program keeps counting, ACTIVE and REAL_COUNTERS, topped up
/// after the swap).
const LAYOUT_5: &[(&str, Shape)] = &[
    (VIPS, shape(HASH, 20, 24, 16384)),
    (REALS, shape(ARRAY, 4, 40, 131072)),
    (COUNTERS, shape(PERCPU_ARRAY, 4, 16, 64)),
    (REAL_COUNTERS, shape(PERCPU_ARRAY, 4, 48, 131072)),
    (IFACES, shape(HASH, 4, 24, 64)),
    (SETTINGS, shape(ARRAY, 4, 8, 1)),
    (FLOWS, sized_at_load(LRU_HASH, 40, 80)),
    (SNAT_POOLS, shape(ARRAY, 4, 136, 16384)),
    (SNAT_CURSOR, shape(PERCPU_ARRAY, 4, 4, 1)),
    (ENDPOINTS, shape(HASH, 20, 8, 8192)),
    (ACTIVE, shape(ARRAY, 4, 8, 131072)),
    (SWEPT, shape(ARRAY, 4, 8, 131072)),
    (OPEN, sized_at_load(HASH, 40, 4)),
    (RR_CURSOR, shape(PERCPU_ARRAY, 4, 4, 16384)),
    (TUNNEL_SOURCES, shape(ARRAY, 4, 4, 16384)),
    (LAYOUT, shape(ARRAY, 4, 4, 1)),
];

/// The pinned maps of `layout`, by name; `None` for a layout this lbctl does not know.
pub fn maps(layout: u32) -> Option<BTreeMap<&'static str, Shape>> {
    let table = match layout {
        1 => LAYOUT_1,
        2 => LAYOUT_2,
        3 => LAYOUT_3,
        4 => LAYOUT_4,
        5 => LAYOUT_5,
        _ => return None,
    };
    Some(table.iter().copied().collect())
}

/// Whether `found` (a pinned map) is of `want`'s shape.
pub fn fits(want: &Shape, found: &Shape) -> bool {
    (want.map_type, want.key, want.value, want.flags)
        == (found.map_type, found.key, found.value, found.flags)
        && want.entries.is_none_or(|n| Some(n) == found.entries)
}

/// What becomes of each map of `from` in the layout after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Taken over as it is, in place: the new program works on the very map the old one
    /// does, so nothing the old program writes up to its last packet is lost.
    Kept,
    /// A new map replaces it; what it holds is carried into the new one (`migrate`) once the
    /// old program no longer runs.
    Replaced,
    /// Gone from the newer layout, unpinned after the swap; what it held is not carried
    /// (`migrate` says so in the log).
    Dropped,
}

/// What the migration from `from` to `from + 1` does with each map of `from`: any map of
/// the newer layout not named here is new (created empty).
pub fn step(from: u32, name: &str) -> Step {
    match (from, name) {
        (1, map_names::COUNTERS) => Step::Replaced,
        // Per VIP cannot be split per real: per-VIP totals start again from zero.
        (2, map_names::VIP_COUNTERS) => Step::Dropped,
        // Larger values: made anew and filled from the interfaces, as at every start.
        (3, map_names::IFACES) => Step::Replaced,
        // Built from the configuration by every lbctl, into a RINGS of its own.
        (4, map_names::RINGS) => Step::Dropped,
        // Larger: made anew, their entries carried over.
        (4, map_names::REALS | map_names::REAL_COUNTERS | map_names::ACTIVE | map_names::SWEPT) => {
            Step::Replaced
        }
        _ => Step::Kept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_layout_has_its_table() {
        for layout in OLDEST..=CURRENT {
            assert!(maps(layout).is_some(), "no table for layout {layout}");
        }
        assert!(maps(CURRENT + 1).is_none() && maps(0).is_none());
    }

    #[test]
    fn each_step_keeps_or_replaces_a_map_the_next_layout_has() {
        for from in OLDEST..CURRENT {
            let (old, new) = (maps(from).unwrap(), maps(from + 1).unwrap());
            for (name, shape) in &old {
                let next = new.get(name);
                if step(from, name) == Step::Dropped {
                    assert!(
                        next.is_none(),
                        "{name} is dropped and kept by layout {}",
                        from + 1
                    );
                    continue;
                }
                let next = next.unwrap_or_else(|| {
                    panic!("layout {} drops {name}: say what becomes of it", from + 1)
                });
                match step(from, name) {
                    // Kept in place: the new program must find it as it is.
                    Step::Kept => assert!(
                        fits(next, shape),
                        "{name} changes shape from layout {from}: it must be Replaced"
                    ),
                    Step::Replaced | Step::Dropped => {}
                }
            }
        }
    }

    #[test]
    fn shapes_fit_when_equal_and_flow_tables_of_any_size() {
        let counters = shape(PERCPU_ARRAY, 4, 16, 64);
        assert!(fits(&counters, &counters));
        assert!(!fits(&counters, &shape(PERCPU_ARRAY, 4, 16, 22)));
        let flows = sized_at_load(LRU_HASH, 40, 80);
        assert!(fits(&flows, &shape(LRU_HASH, 40, 80, 1_000_000)));
        assert!(!fits(&flows, &shape(HASH, 40, 80, 1_000_000)));
    }
}
