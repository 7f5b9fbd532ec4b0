//! The XDP datapath, as a pipeline of stages: `parse → lookup → schedule → rewrite → emit`.
//!
//! The stages that touch only packet bytes (`packet`, `parse`, `hash`, `rewrite`, `nat`,
//! `icmp`, `icmp_nat`, `decap`) are plain functions over a byte range, so they compile and are
//! tested on the host against etherparse-built frames. The stages that touch maps (`lookup`,
//! `schedule`, `flow`, `emit`) and the path through them (`pipeline`) are proven by the
//! `BPF_PROG_TEST_RUN` fixtures in the `tests` crate.
#![cfg_attr(not(test), no_std)]
// Atomics on map values CPUs share: leastconn's counters (`schedule::count`), flow flags
// (`flow::set_flags`).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

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

#[cfg(target_arch = "bpf")]
pub mod bench;
#[cfg(target_arch = "bpf")]
pub mod emit;
#[cfg(target_arch = "bpf")]
pub mod flow;
#[cfg(target_arch = "bpf")]
pub mod lookup;
#[cfg(target_arch = "bpf")]
pub mod maps;
#[cfg(target_arch = "bpf")]
pub mod pipeline;
#[cfg(target_arch = "bpf")]
pub mod schedule;
