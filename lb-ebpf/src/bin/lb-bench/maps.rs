//! The benchmark object's maps. Names must match `lb_common::map_names`. The balancer's maps
//! are the shipped object's, seeded through `Datapath`: the tail-called `lb_xdp` uses those.

use aya_ebpf::{
    btf_maps::{Array, PerCpuArray, ProgramArray},
    macros::btf_map,
};
use lb_common::{BenchFrame, BenchRedirect, BENCH_SLOTS};

/// The programs the harness tail-calls after the restore, by slot (`lb_common::BENCH_SLOT_*`):
/// the shipped balancer, the MAC swap. Filled by userspace.
#[btf_map]
pub static BENCH_TAIL_CALLS: ProgramArray<{ BENCH_SLOTS as usize }> = ProgramArray::new();

/// The frame restored before every repeat (and sent by the generator).
#[btf_map]
pub static BENCH_FRAME: Array<BenchFrame, 1> = Array::new();

/// The next source port of a benchmark that makes every packet a new flow.
#[btf_map]
pub static BENCH_SEQ: PerCpuArray<u32, 1> = PerCpuArray::new();

/// Frames the sink program counted, per CPU.
#[btf_map]
pub static BENCH_SINK: PerCpuArray<u64, 1> = PerCpuArray::new();

/// Where the bare-redirect program sends frames.
#[btf_map]
pub static BENCH_REDIRECT: Array<BenchRedirect, 1> = Array::new();
