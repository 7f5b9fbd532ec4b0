//! Types shared by the XDP datapath (`lb-ebpf`) and the control plane (`lb-userspace`).
//!
//! Everything that crosses the kernel/user boundary is defined here once: `#[repr(C)]`,
//! explicit padding, addresses and ports as network-order byte arrays behind accessors, no
//! `bool`/`enum`/`Option` inside map values, and a compile-time size assertion per type.
//! With the `user` feature the types implement `aya::Pod` so userspace can put them in maps.
#![cfg_attr(not(test), no_std)]

mod counters;
mod maps;

pub use counters::{Counter, Reason, Verdict, VipCounters, COUNTER_SLOTS};
pub use maps::*;

/// Map names, shared by the object (`#[map]`/`#[btf_map]` statics) and userspace lookups.
pub mod map_names {
    pub const VIPS: &str = "VIPS";
    pub const REALS: &str = "REALS";
    pub const RINGS: &str = "RINGS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const VIP_COUNTERS: &str = "VIP_COUNTERS";
    pub const IFACES: &str = "IFACES";
    pub const SETTINGS: &str = "SETTINGS";
    pub const FLOWS: &str = "FLOWS";
    pub const SNAT_POOLS: &str = "SNAT_POOLS";
    pub const SNAT_CURSOR: &str = "SNAT_CURSOR";
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const ACTIVE: &str = "ACTIVE";
    pub const SWEPT: &str = "SWEPT";
    pub const OPEN: &str = "OPEN";
}

/// Program names in the object.
pub mod program_names {
    /// The load balancer.
    pub const LB: &str = "lb_xdp";
    /// Passes every frame; attached to veth peers so XDP_TX frames are accepted.
    pub const PASS: &str = "lb_pass";
    /// Runs on real servers of tunnel-mode VIPs: strips the LB's outer IPv4 header.
    pub const DECAP: &str = "lb_decap";
}
