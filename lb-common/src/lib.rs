//! Types shared by the XDP datapath (`lb-ebpf`) and the control plane (`lb-userspace`).
//!
//! Everything that crosses the kernel/user boundary is defined here once: `#[repr(C)]`,
//! explicit padding, addresses and ports as network-order byte arrays behind accessors, no
//! `bool`/`enum`/`Option` inside map values, and a compile-time size assertion per type.
//! With the `user` feature the types implement `aya::Pod` so userspace can put them in maps.
#![cfg_attr(not(test), no_std)]

mod capture;
mod counters;
mod events;
mod flows;
mod maps;

pub use counters::{Counter, RealCounters, Reason, Verdict, COUNTER_SLOTS};

/// Value of BENCH_FRAME: the frame a benchmark run restores before every repeat (and the
/// traffic generator sends).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchFrame {
    /// The frame's first bytes (a benchmark frame is at least this long).
    pub bytes: [u8; BENCH_FRAME_LEN],
    /// Non-zero: each repeat takes the next value of a per-CPU count, written (low half) as
    /// the source port at this offset, so repeats are different flows.
    pub vary_sport_at: u32,
    /// Non-zero: the count's high half is added here too (to the source address's last two
    /// bytes), so a run of millions has no flow twice. Zero: the address stays.
    pub vary_addr_at: u32,
    /// Non-zero: the count goes 1..=this and wraps, so the run cycles over this many flows
    /// (established after their first packet).
    pub vary_modulo: u32,
    /// The frame's length, to undo a tunnel's outer header between repeats.
    pub len: u32,
    /// Non-zero, with `vary_addr_at`: the IPv4 header checksum at this offset follows the
    /// varied address (RFC 1624), for traffic that meets a kernel stack, which checks it.
    pub vary_csum_at: u32,
}
const _: () = assert!(core::mem::size_of::<BenchFrame>() == BENCH_FRAME_LEN + 20);

/// Value of BENCH_REDIRECT: where the bare-redirect benchmark program sends every frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchRedirect {
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<BenchRedirect>() == 16);

#[cfg(feature = "user")]
// SAFETY: repr(C), an integer and byte arrays, no padding (asserted size).
unsafe impl aya::Pod for BenchRedirect {}

/// Bytes of a benchmark frame restored before every repeat.
pub const BENCH_FRAME_LEN: usize = 64;

/// Slot of BENCH_TAIL_CALLS holding the shipped balancer (`lb_xdp`), which `lb_bench`
/// tail-calls after the restore.
pub const BENCH_SLOT_BALANCER: u32 = 0;
/// Slot of BENCH_TAIL_CALLS holding the MAC swap, which `lb_bench_floor` tail-calls.
pub const BENCH_SLOT_SWAP: u32 = 1;
/// Slots of BENCH_TAIL_CALLS.
pub const BENCH_SLOTS: u32 = 2;

#[cfg(feature = "user")]
// SAFETY: repr(C), byte array and integers, no padding (asserted size).
unsafe impl aya::Pod for BenchFrame {}
pub use capture::*;
pub use events::*;
pub use flows::*;
pub use maps::*;

/// Map names, shared by the objects (`#[map]`/`#[btf_map]` statics) and userspace lookups.
/// The `BENCH_*` maps are the benchmark object's (`lb-ebpf/src/bin/lb-bench`, built only for
/// the tests crate); all others are the shipped object's, which lbctl embeds.
pub mod map_names {
    pub const VIPS: &str = "VIPS";
    pub const REALS: &str = "REALS";
    pub const RINGS: &str = "RINGS";
    pub const COUNTERS: &str = "COUNTERS";
    /// Per VIP id (layouts 1 and 2; replaced by REAL_COUNTERS in layout 3).
    pub const VIP_COUNTERS: &str = "VIP_COUNTERS";
    pub const REAL_COUNTERS: &str = "REAL_COUNTERS";
    pub const IFACES: &str = "IFACES";
    pub const SETTINGS: &str = "SETTINGS";
    pub const FLOWS: &str = "FLOWS";
    pub const SNAT_POOLS: &str = "SNAT_POOLS";
    pub const SNAT_CURSOR: &str = "SNAT_CURSOR";
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const ACTIVE: &str = "ACTIVE";
    pub const SWEPT: &str = "SWEPT";
    pub const OPEN: &str = "OPEN";
    /// Slot 0: the full path (`program_names::FULL`), which the established path tail-calls.
    /// Each lbctl fills its own; pinned under a name of its program's (`FULL_PATH_<id>`),
    /// since a program array nobody holds open or pinned is emptied by the kernel.
    pub const FULL_PATH: &str = "FULL_PATH";
    /// Which IPv4 addresses may be the LB's (see `ADDR_FILTER_BITS`). Not pinned: each lbctl
    /// fills its own from what it serves, before attaching.
    pub const ADDR_FILTER: &str = "ADDR_FILTER";
    /// Per VIP id: the new flows a second per CPU above which its flood guard forwards new
    /// flows without an entry. Not pinned: each lbctl fills it from its configuration.
    pub const FLOOD_LIMITS: &str = "FLOOD_LIMITS";
    /// Per CPU: the new-flow rate the flood guards compare with, and what they guarded.
    pub const FLOOD_STATE: &str = "FLOOD_STATE";
    /// IFACES by ifindex modulo `IFACE_SLOTS`, for the established path. Not pinned: each
    /// lbctl fills it as it sets its interfaces.
    pub const IFACE_SLOTS: &str = "IFACE_SLOTS";
    pub const BENCH_FRAME: &str = "BENCH_FRAME";
    pub const BENCH_SEQ: &str = "BENCH_SEQ";
    pub const BENCH_SINK: &str = "BENCH_SINK";
    pub const BENCH_REDIRECT: &str = "BENCH_REDIRECT";
    pub const BENCH_TAIL_CALLS: &str = "BENCH_TAIL_CALLS";
    pub const RR_CURSOR: &str = "RR_CURSOR";
    pub const TUNNEL_SOURCES: &str = "TUNNEL_SOURCES";
    /// The layout of the pinned state (lb-userspace's `datapath::layout`): read by the next
    /// lbctl, never by the program.
    pub const LAYOUT: &str = "LAYOUT";
    /// Flow logs (not pinned: see `lb_common::events`).
    pub const FLOW_EVENTS: &str = "FLOW_EVENTS";
    pub const FLOW_LOG: &str = "FLOW_LOG";
    pub const FLOW_LOG_BUDGET: &str = "FLOW_LOG_BUDGET";
    /// Captures and debug logs (not pinned: see `lb_common::capture`); AYA_LOGS is aya-log's.
    pub const OBSERVE: &str = "OBSERVE";
    pub const CAPTURE_FRAMES: &str = "CAPTURE_FRAMES";
    pub const CAPTURE_SCRATCH: &str = "CAPTURE_SCRATCH";
    pub const CAPTURE_COUNTS: &str = "CAPTURE_COUNTS";
    pub const AYA_LOGS: &str = "AYA_LOGS";
    /// The program's `.bss`: one word, what is observed (lb-ebpf's `observe::OBSERVING`).
    pub const OBSERVING: &str = ".bss";

    /// The maps pinned while lbctl runs, which a restarted or upgraded lbctl takes over:
    /// what is served (VIPs, reals, interfaces), the flows and what they hold (SNAT
    /// ports, leastconn counts, round-robin cursors), and the counters. Not pinned: the
    /// per-CPU scratch space, which holds nothing between packets.
    pub const KEPT: &[&str] = &[
        VIPS,
        REALS,
        COUNTERS,
        REAL_COUNTERS,
        IFACES,
        SETTINGS,
        FLOWS,
        SNAT_POOLS,
        SNAT_CURSOR,
        ENDPOINTS,
        ACTIVE,
        SWEPT,
        OPEN,
        RR_CURSOR,
        TUNNEL_SOURCES,
        LAYOUT,
    ];

    /// The shipped object's maps that are not pinned, because they hold nothing a restarted
    /// lbctl needs: the per-CPU scratch space, the flow log's and the captures' records in
    /// flight, switches and counts (each lbctl sets them anew; a capture ends with its
    /// program).
    pub const TRANSIENT: &[&str] = &[
        "SCRATCH",
        FLOW_EVENTS,
        FLOW_LOG,
        FLOW_LOG_BUDGET,
        OBSERVE,
        CAPTURE_FRAMES,
        CAPTURE_SCRATCH,
        CAPTURE_COUNTS,
        AYA_LOGS,
        OBSERVING,
        // Pinned, but per program and never taken over (see FULL_PATH).
        FULL_PATH,
        ADDR_FILTER,
        FLOOD_LIMITS,
        FLOOD_STATE,
        IFACE_SLOTS,
        // Built from the configuration by each lbctl before attaching (from layout 5).
        RINGS,
    ];
}

/// Program names. `LB`, `PASS` and `DECAP` are the shipped object's programs, all of them;
/// the `BENCH*` ones are the benchmark object's (`lb-ebpf/src/bin/lb-bench`), which only the
/// tests crate embeds: its harness tail-calls the shipped `LB`, so the benchmarks measure the
/// program lbctl runs.
pub mod program_names {
    /// The load balancer.
    pub const LB: &str = "lb_xdp";
    /// The full path of the load balancer (new flows, flows ending, ICMP, IPv6, packets not
    /// for a VIP): `LB` forwards the packets of established flows itself and tail-calls this
    /// for the rest, through FULL_PATH. Never attached.
    pub const FULL: &str = "lb_full";
    /// Passes every frame; attached to veth peers so XDP_TX frames are accepted.
    pub const PASS: &str = "lb_pass";
    /// Runs on real servers of tunnel-mode VIPs: strips the LB's outer IPv4 header.
    pub const DECAP: &str = "lb_decap";
    /// Benchmark object (BPF_PROG_TEST_RUN, never attached): restores the frame BENCH_FRAME
    /// holds, then tail-calls the shipped balancer, so each repeat sees the input and not its
    /// own output.
    pub const BENCH: &str = "lb_bench";
    /// Benchmark object: restores the frame and tail-calls the MAC swap as `BENCH` does the
    /// balancer: the floor of the path with the balancer's harness.
    pub const BENCH_FLOOR: &str = "lb_bench_floor";
    /// Benchmark object: a MAC swap sent back (XDP_TX), no restore: the trivial program.
    pub const BENCH_SWAP: &str = "lb_bench_swap";
    /// Benchmark object: the traffic generator, run with BPF_PROG_RUN live frames: the frame
    /// of BENCH_FRAME with the next source port, sent out of the interface (XDP_TX).
    pub const BENCH_GEN: &str = "lb_bench_gen";
    /// Benchmark object: counts every frame in BENCH_SINK and drops it.
    pub const BENCH_SINK: &str = "lb_bench_sink";
    /// Benchmark object: the limit of the forwarding path: every frame redirected as
    /// BENCH_REDIRECT says, MACs set, nothing looked at.
    pub const BENCH_REDIRECT: &str = "lb_bench_redirect";
}
