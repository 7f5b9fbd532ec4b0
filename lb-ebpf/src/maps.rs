//! The datapath's maps. Names must match `lb_common::map_names`.

use aya_ebpf::{
    btf_maps::{Array, ArrayOfMaps, HashMap, PerCpuArray},
    macros::btf_map,
};
use lb_common::{
    Counter, IfaceConfig, RealEntry, VipKey, VipMeta, CONFIG_SLOTS, COUNTER_SLOTS, MAX_REALS,
    MAX_VIPS, RING_SIZE,
};

/// Slot 0: the attached interface (its MAC), written by userspace before attaching.
#[btf_map]
pub static CONFIG: Array<IfaceConfig, { CONFIG_SLOTS as usize }> = Array::new();

/// Virtual services: (address, port, protocol) → id and mode.
#[btf_map]
pub static VIPS: HashMap<VipKey, VipMeta, { MAX_VIPS as usize }> = HashMap::new();

/// Backend servers by id. Id 0 is never used, so an unfilled ring slot finds no real.
#[btf_map]
pub static REALS: Array<RealEntry, { MAX_REALS as usize }> = Array::new();

/// One lookup ring per VIP id: flow-hash slot → real id. Each VIP's ring is its own inner map,
/// so userspace replaces a whole ring at once and no packet sees a half-written one.
#[btf_map]
pub static RINGS: ArrayOfMaps<Array<u32, { RING_SIZE as usize }>, { MAX_VIPS as usize }> =
    ArrayOfMaps::new();

/// Forwarded slot, then one slot per `Reason`.
#[btf_map]
pub static COUNTERS: PerCpuArray<Counter, { COUNTER_SLOTS as usize }> = PerCpuArray::new();

/// Packets forwarded per VIP id.
#[btf_map]
pub static VIP_COUNTERS: PerCpuArray<Counter, { MAX_VIPS as usize }> = PerCpuArray::new();
