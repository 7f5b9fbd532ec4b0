//! The datapath's maps. Names must match `lb_common::map_names`.

use crate::{emit::Sent, flow::New, icmp_nat::Quote, parse::Parsed};
use aya_ebpf::{
    btf_maps::{Array, ArrayOfMaps, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    macros::btf_map,
};
use lb_common::IFACE_SLOTS as IFACE_SLOTS_LEN;
use lb_common::{
    CaptureCounts, CaptureRecord, Counter, Endpoint, FloodState, Flow, FlowEvent, FlowKey,
    FlowLogBudget, FlowLogSettings, IfaceConfig, IfaceSlot, Observe, RealCounters, RealEntry,
    Settings, SnatPool, VipKey, VipMeta, ADDR_FILTER_WORDS, COUNTER_SLOTS, MAX_ENDPOINTS,
    MAX_FLOWS, MAX_IFACES, MAX_REALS, MAX_VIPS, RING_MAP_FLAGS, RING_SIZE,
};

/// The interfaces the program is attached to, by ifindex: the LB's MAC, MTU and IPv4
/// address on each. Written by userspace before attaching.
#[btf_map]
pub static IFACES: HashMap<u32, IfaceConfig, { MAX_IFACES as usize }> = HashMap::new();

/// IFACES by ifindex modulo its size (`lb_common::IfaceSlot`), for the established path.
/// Not pinned: filled by userspace with IFACES, before attaching.
#[btf_map]
pub static IFACE_SLOTS: Array<IfaceSlot, { IFACE_SLOTS_LEN as usize }> = Array::new();

/// Slot 0: program-wide settings.
#[btf_map]
pub static SETTINGS: Array<Settings, 1> = Array::new();

/// Virtual services: (address, port, protocol) → id, mode and timeouts.
#[btf_map]
pub static VIPS: HashMap<VipKey, VipMeta, { MAX_VIPS as usize }> = HashMap::new();

/// Backend servers by id. Id 0 is never used, so an unfilled ring slot finds no real.
#[btf_map]
pub static REALS: Array<RealEntry, { MAX_REALS as usize }> = Array::new();

/// One lookup ring per VIP id: flow-hash slot → real id. Each VIP's ring is its own inner map
/// of its own size (the template's `RING_SIZE` is the most), rewritten in place by userspace
/// one 4-byte slot at a time: a packet reads a slot of the old ring or of the new one.
#[btf_map]
pub static RINGS: ArrayOfMaps<
    Array<u32, { RING_SIZE as usize }, { RING_MAP_FLAGS as usize }>,
    { MAX_VIPS as usize },
> = ArrayOfMaps::new();

/// Slot 0: the full path (`lb_full`), which the established path (`lb_xdp`) tail-calls for
/// every packet it does not forward itself. Filled by userspace before attaching. A program
/// of its own, verified on its own: inlined behind the established path, its states would
/// multiply with that path's exits past the verifier's limit.
#[btf_map]
pub static FULL_PATH: ProgramArray<1> = ProgramArray::new();

/// Which IPv4 addresses may be the LB's: a destination bitmap, then a source bitmap
/// (`lb_common::ADDR_FILTER_BITS`). Not pinned: filled by userspace before attaching.
#[btf_map]
pub static ADDR_FILTER: Array<u64, { 2 * ADDR_FILTER_WORDS as usize }> = Array::new();

/// Per VIP id: its flood guard's new flows a second per CPU (`VIP_FLOOD_GUARD`). Not pinned.
#[btf_map]
pub static FLOOD_LIMITS: Array<u32, { MAX_VIPS as usize }> = Array::new();

/// Per CPU: new flows this second, and flows guarded (`lb_common::FloodState`). Not pinned.
#[btf_map]
pub static FLOOD_STATE: PerCpuArray<FloodState, 1> = PerCpuArray::new();

/// The flows of stateful VIPs, one entry per direction. Shared by all CPUs: a reply may
/// arrive on another CPU than its request.
#[btf_map]
pub static FLOWS: LruHashMap<FlowKey, Flow, { MAX_FLOWS as usize }> = LruHashMap::new();

/// Each one-arm VIP's SNAT pool, by VIP id.
#[btf_map]
pub static SNAT_POOLS: Array<SnatPool, { MAX_VIPS as usize }> = Array::new();

/// Per CPU: where the one-arm allocator tries next within the CPU's slice of each pool.
#[btf_map]
pub static SNAT_CURSOR: PerCpuArray<u32, 1> = PerCpuArray::new();

/// Where replies of stateful flows come from (a nat/router real's address, port, protocol)
/// or go to (a SNAT pool address, port 0, and its port range): such a packet without a flow
/// is counted as `pass_no_flow` instead of `pass_not_vip`.
#[btf_map]
pub static ENDPOINTS: HashMap<VipKey, Endpoint, { MAX_ENDPOINTS as usize }> = HashMap::new();

/// Per VIP id: a tunnel VIP's outer source address, when it has its own (all zero: the
/// egress interface's address).
#[btf_map]
pub static TUNNEL_SOURCES: Array<[u8; 4], { MAX_VIPS as usize }> = Array::new();

/// Per CPU and VIP id: where the CPU is in the VIP's round-robin sequence. Each CPU walks the
/// sequence on its own, so no counter is shared (and fought over) between CPUs.
#[btf_map]
pub static RR_CURSOR: PerCpuArray<u32, { MAX_VIPS as usize }> = PerCpuArray::new();

/// Per real id: leastconn flows started and not ended, as the datapath counts them (atomic
/// adds: +1 when a flow starts, −1 when its FIN or RST is seen).
#[btf_map]
pub static ACTIVE: Array<u64, { MAX_REALS as usize }> = Array::new();

/// Per real id: leastconn flows that ended idle, as userspace counts them (it alone writes
/// this): a real's active flows are ACTIVE − SWEPT.
#[btf_map]
pub static SWEPT: Array<u64, { MAX_REALS as usize }> = Array::new();

/// The leastconn flows counted in ACTIVE, by request key → real id: whoever removes an entry
/// (the datapath at FIN or RST, userspace when the flow expired) ends its count, once.
#[btf_map]
pub static OPEN: HashMap<FlowKey, u32, { MAX_FLOWS as usize }> = HashMap::new();

/// Slot 0: the layout of the pinned state these maps are (see lb-userspace's
/// `datapath::layout`). The program never reads it: the next lbctl does, to take the maps
/// over or migrate them.
#[btf_map]
pub static LAYOUT: Array<u32, 1> = Array::new();

/// Per CPU: room for the datapath's largest values, which would not fit on the 512-byte BPF
/// stack together. Only the program running on the CPU uses its slot.
#[btf_map]
pub static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// What SCRATCH holds.
pub struct Scratch {
    /// The current packet, parsed.
    pub parsed: Parsed,
    /// The entry that translates the current packet.
    pub flow: Flow,
    /// A new flow's reply entry, while it is created.
    pub reply: Flow,
    /// A new flow's reply key, while it is created; an ICMP error's flow key.
    pub key: FlowKey,
    /// Where an ICMP error's quote is.
    pub quote: Quote,
    /// Tunnel mode: the MTU a packet too big to tunnel must fit.
    pub next_hop_mtu: u16,
    /// Where the rewritten frame goes, as the steps fill it in. Here rather than on the
    /// stack: a zeroed placeholder there costs a byte-by-byte memset call per packet.
    pub sent: Sent,
    /// The LB's side of the interface the packet came in on, once a VIP's flow is found.
    pub ingress_iface: IfaceConfig,
    /// A new flow, while it is created (and logged).
    pub new: New,
    /// Non-zero when the established path found no entry for the packet's own key: the full
    /// path does not look again.
    pub no_entry: u8,
    /// Non-zero when the new flow being created goes without an entry (`flood`), as the
    /// pipeline found for this packet.
    pub flood_guarded: u8,
    /// Non-zero when the flow stage found the packet's flow live (not made anew): a stateful
    /// flow's reply entry is then checked for (`flow::restore_partner`).
    pub was_live: u8,
    /// Non-zero when the packet is a one-arm VIP's SYN with a TCP timestamp option
    /// (`parse::syn_timestamp`): its flow's entries get `FLOW_TIMESTAMPS`.
    pub syn_timestamps: u8,
    /// Non-zero when the flow stage created a one-arm flow whose pool tuple
    /// `flow::finish_one_arm` is still to claim.
    pub snat_pending: u8,
}

/// This CPU's scratch space.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: the slot belongs to this CPU, and one program runs on a CPU at a time (XDP
    // runs with preemption disabled: in softirq, or a test run's preempt_disable, on kernels
    // without PREEMPT_RT); the pipeline takes the reference once per packet: no other
    // reference to it exists while this one is used.
    SCRATCH.get_ptr_mut(0).map(|s| unsafe { &mut *s })
}

/// Per CPU, by slot: forwarded (0), replies (1), then each `Reason` at its own fixed slot
/// (`lb_common::counters`); a fixed capacity, so that a new reason leaves the map as it is.
#[btf_map]
pub static COUNTERS: PerCpuArray<Counter, { COUNTER_SLOTS as usize }> = PerCpuArray::new();

/// Per CPU and real id: packets and bytes forwarded each way, new flows. A VIP's figures are
/// its reals' summed (userspace): the established path pays one counter lookup either way,
/// and per real it answers "where is my traffic going".
#[btf_map]
pub static REAL_COUNTERS: PerCpuArray<RealCounters, { MAX_REALS as usize }> = PerCpuArray::new();

/// Flow logs to userspace (1 MiB: some ten thousand events). Not pinned.
#[btf_map]
pub static FLOW_EVENTS: RingBuf<FlowEvent, { 1 << 20 }> = RingBuf::new();

/// Slot 0: whether flows are logged, and each CPU's rate. Not pinned: each lbctl sets it.
#[btf_map]
pub static FLOW_LOG: Array<FlowLogSettings, 1> = Array::new();

/// Per CPU: the flow log's rate limit and counts. Not pinned.
#[btf_map]
pub static FLOW_LOG_BUDGET: PerCpuArray<FlowLogBudget, 1> = PerCpuArray::new();

/// Slot 0: whether a capture runs and what it takes, whether debug logs are on. Read only
/// while `observe::OBSERVING` is on. Not pinned.
#[btf_map]
pub static OBSERVE: Array<Observe, 1> = Array::new();

/// Captured frames to `lbctl capture` (2 MiB: some 1 300 full-size records). Not pinned.
#[btf_map]
pub static CAPTURE_FRAMES: RingBuf<CaptureRecord, { 2 << 20 }> = RingBuf::new();

/// Per CPU: the record of the frame being captured. Not pinned.
#[btf_map]
pub static CAPTURE_SCRATCH: PerCpuArray<CaptureRecord, 1> = PerCpuArray::new();

/// Per CPU: what captures did. Not pinned.
#[btf_map]
pub static CAPTURE_COUNTS: PerCpuArray<CaptureCounts, 1> = PerCpuArray::new();
