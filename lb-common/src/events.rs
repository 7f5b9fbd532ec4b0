//! Flow logs: what the datapath tells userspace about flows through a ring buffer (map
//! FLOW_EVENTS), under a per-CPU rate limit (FLOW_LOG and FLOW_LOG_BUDGET). None of these maps
//! is pinned: they hold nothing a restarted lbctl needs, and each lbctl sets them anew.

use core::mem::size_of;

/// `FlowEvent::kind`: the datapath created the flow.
pub const EVENT_NEW: u8 = 1;
/// `FlowEvent::kind`: the flow ended (TCP: its first FIN or RST; `how` says which). Its
/// `mode`, `sched` and `slot` are not known where it ends (a reply's path has no VIP):
/// zero, zero and [`NO_SLOT`]. Where the ends of UDP flows and of TCP flows that go idle
/// are seen: userspace, from the flow table.
pub const EVENT_END: u8 = 2;

/// `FlowEvent::how` of an [`EVENT_END`]: a FIN closed it.
pub const END_FIN: u8 = 1;
/// `FlowEvent::how` of an [`EVENT_END`]: an RST reset it.
pub const END_RST: u8 = 2;

/// `FlowEvent::slot` of a flow whose real was not picked by ring slot (leastconn).
pub const NO_SLOT: u32 = u32::MAX;

/// One flow log record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEvent {
    /// bpf_ktime_get_coarse_ns (CLOCK_MONOTONIC) when it happened.
    pub at_ns: u64,
    pub client: [u8; 16],
    pub vip: [u8; 16],
    pub real: [u8; 16],
    pub client_port: [u8; 2],
    pub vip_port: [u8; 2],
    pub real_port: [u8; 2],
    pub proto: u8,
    pub family: u8,
    /// `MODE_*` of the VIP.
    pub mode: u8,
    /// `SCHED_*` of the VIP.
    pub sched: u8,
    /// `EVENT_*`.
    pub kind: u8,
    /// New flows: `HOW_*` bits: the flow replaced one of the same tuple (a SYN on a closing
    /// flow, a flow whose real left), was picked up mid-stream (no SYN seen); none: fresh.
    /// Ends: `END_FIN` or `END_RST`.
    pub how: u8,
    /// The ring slot the real was picked by, or [`NO_SLOT`].
    pub slot: u32,
    pub real_id: u32,
    pub vip_id: u32,
    pub cpu: u32,
    pub _pad: [u8; 4],
}
const _: () = assert!(size_of::<FlowEvent>() == 88);

/// `FlowEvent::how`: a new connection (or UDP flow): no bit set.
pub const HOW_FRESH: u8 = 0;
/// `FlowEvent::how` bit: it replaced a live flow of the same tuple.
pub const HOW_REOPENED: u8 = 1;
/// `FlowEvent::how` bit: TCP without SYN: scheduled mid-stream (its entry was lost, or its
/// real left).
pub const HOW_PICKED_UP: u8 = 2;

/// Value of FLOW_LOG (one slot): whether and how much the datapath logs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowLogSettings {
    /// Non-zero: new flows are logged.
    pub enabled: u32,
    /// Events each CPU may send per second; more are dropped and counted.
    pub per_cpu_per_sec: u32,
}
const _: () = assert!(size_of::<FlowLogSettings>() == 8);

/// Value of FLOW_LOG_BUDGET (per CPU, one slot): the CPU's rate limit and what it did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowLogBudget {
    /// Start of the current one-second window.
    pub window_ns: u64,
    /// Events sent in it.
    pub used: u64,
    /// Events sent in all.
    pub sent: u64,
    /// Events dropped: over the rate (userspace lagging or a flood of new flows).
    pub over_rate: u64,
    /// Events dropped: the ring buffer was full (userspace lagging).
    pub ring_full: u64,
}
const _: () = assert!(size_of::<FlowLogBudget>() == 40);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), byte arrays and integers, no padding (asserted sizes).
    unsafe impl aya::Pod for super::FlowEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowLogSettings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowLogBudget {}
}
