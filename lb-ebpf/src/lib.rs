//! The XDP datapath, as a pipeline of stages: `parse → lookup → schedule → rewrite → emit`.
//!
//! The stages that touch only packet bytes (`packet`, `parse`, `hash`, `rewrite`, `nat`,
//! `icmp`, `icmp_nat`, `decap`) are plain functions over a byte range, so they compile and are
//! tested on the host against etherparse-built frames. The stages that touch maps (`lookup`,
//! `schedule`, `flow`, `flood`, `emit`) and the paths through them are proven by the
//! `BPF_PROG_TEST_RUN` fixtures in the `tests` crate: `established`, a known flow's packets
//! in one inlined pass (program `lb_xdp`), and `pipeline`, the full path it tail-calls for
//! every other packet (program `lb_full`).
#![cfg_attr(not(test), no_std)]
// Atomics on map values CPUs share: leastconn's counters (`schedule::count`), flow flags
// (`flow::set_flags`).
#![cfg_attr(
    all(target_arch = "bpf", feature = "datapath"),
    feature(core_intrinsics),
    allow(internal_features)
)]

pub mod csum;
pub mod decap;
pub mod hash;
pub mod headers;
pub mod icmp;
pub mod icmp_nat;
pub mod nat;
pub mod packet;
pub mod parse;
pub mod rewrite;

// The stages with maps, and the maps. Behind `datapath` (a default feature) because every map
// of a linked crate lands in the object: the benchmark object, built without it, carries its
// own maps and none of the balancer's (it tail-calls the shipped balancer instead).
#[cfg(all(target_arch = "bpf", feature = "datapath"))]
pub mod emit;
#[cfg(all(target_arch = "bpf", feature = "datapath"))]
pub mod established;
#[cfg(all(target_arch = "bpf", feature = "datapath"))]
pub mod flood;
#[cfg(all(target_arch = "bpf", feature = "datapath"))]
pub mod flow;
#[cfg(all(target_arch = "bpf", feature = "datapath"))]
pub mod flowlog;
#[cfg(all(target_arch = "bpf", feature = "datapath"))]
pub mod lookup;
#[cfg(all(target_arch = "bpf", feature = "datapath"))]
pub mod maps;
#[cfg(all(target_arch = "bpf", feature = "datapath"))]
pub mod observe;
#[cfg(all(target_arch = "bpf", feature = "datapath"))]
pub mod pipeline;
#[cfg(all(target_arch = "bpf", feature = "datapath"))]
pub mod schedule;
