//! Map keys and values.

use core::mem::size_of;

/// Most VIPs one program serves (VIPS hash capacity, RINGS and the other per-VIP arrays). The
/// per-VIP arrays cost little; each VIP's ring exists only once the VIP does, sized to it
/// (8 bytes a slot: an array map stores each 4-byte slot in 8; a Maglev table of 1031 slots
/// for 10 reals takes 12 KiB).
pub const MAX_VIPS: u32 = 16_384;
/// Most reals across all VIPs, a real of two VIPs counted twice (REALS, ACTIVE, SWEPT and
/// REAL_COUNTERS length): 10 000 VIPs of 10 reals each, and room. REAL_COUNTERS, per CPU,
/// is the largest: 6 MiB a CPU.
pub const MAX_REALS: u32 = 131_072;
/// MAX_REALS up to layout 4 of the pinned state.
pub const MAX_REALS_LAYOUT_4: u32 = 16_384;
/// Most slots of a VIP's ring map: the largest Maglev table (a prime, as Maglev's
/// construction requires), round-robin sequence or leastconn candidate list a VIP can have.
pub const RING_SIZE: u32 = 65537;
/// Flags of each ring map: `BPF_F_MMAPABLE`, so userspace writes a ring in place through a
/// memory mapping instead of a map update per slot, and `BPF_F_INNER_MAP`, so each VIP's
/// ring map is its own size (the kernel then checks an inner map's slots, not its count).
/// The kernel requires an inner map to have the flags of the template, so both sides use this.
pub const RING_MAP_FLAGS: u32 = (1 << 10) | (1 << 12);
/// Seed of the flow hash. Fixed, so two LBs with the same config pick the same real for a flow.
pub const FLOW_HASH_SEED: u32 = 0x5eed_1b01;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Most interfaces one program is attached to (IFACES capacity).
pub const MAX_IFACES: u32 = 64;
/// Flows the flow table holds before the least recently used are evicted, unless the loader
/// sizes it otherwise. Each flow of a stateful mode (nat, router, one-arm) takes two
/// entries, one per direction.
pub const MAX_FLOWS: u32 = 262_144;
/// Entries of ENDPOINTS: the service endpoints of nat/router reals and SNAT pool addresses.
pub const MAX_ENDPOINTS: u32 = 8192;
/// Most addresses in one VIP's SNAT pool.
pub const MAX_POOL_ADDRS: usize = 8;
/// How many ports the one-arm allocator tries before it gives up on a new flow.
pub const SNAT_TRIES: u32 = 16;
/// Of those, how many are the client's own (see `SnatPool`): its port from each of up to
/// this many pool addresses, then the ports after it.
pub const SNAT_CLIENT_TRIES: u32 = 4;

/// Forwarding mode of a VIP: direct server return, destination MAC rewrite only.
pub const MODE_DSR: u8 = 1;
/// Forwarding mode of a VIP: IP-in-IP (6in4 for IPv6 VIPs) to the real, which decapsulates.
pub const MODE_TUNNEL: u8 = 2;
/// Forwarding mode of a VIP: destination address (and port) to the real, MACs of a bridge;
/// replies cross the LB and get the VIP back as source.
pub const MODE_NAT: u8 = 3;
/// As [`MODE_NAT`], as an L3 hop: source MAC of the egress interface, TTL decremented.
pub const MODE_ROUTER: u8 = 4;
/// Full NAT: destination to the real, source to an address:port of the VIP's SNAT pool.
pub const MODE_ONE_ARM: u8 = 5;

/// Whether a mode keeps per-flow state for the replies that cross the LB.
pub const fn mode_is_stateful(mode: u8) -> bool {
    mode == MODE_NAT || mode == MODE_ROUTER || mode == MODE_ONE_ARM
}

/// Address family as stored in maps (`VipKey::family`, `RealEntry::family`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4 = 4,
    V6 = 6,
}

/// An IPv4 address as maps hold it: the first 4 of 16 bytes, the rest zero.
/// The address `bytes` holds as `family` says (IPv4 in the first four bytes): how userspace
/// reads the 16-byte addresses of keys, flows, reals and events.
pub fn ip_from_bytes(bytes: &[u8; 16], family: u8) -> core::net::IpAddr {
    if family == Family::V4 as u8 {
        core::net::IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        core::net::IpAddr::from(*bytes)
    }
}

/// `addr` as maps hold it, with its family: the inverse of [`ip_from_bytes`].
pub fn ip_to_bytes(addr: core::net::IpAddr) -> ([u8; 16], u8) {
    match addr {
        core::net::IpAddr::V4(v4) => (v4_in_16(v4.octets()), Family::V4 as u8),
        core::net::IpAddr::V6(v6) => (v6.octets(), Family::V6 as u8),
    }
}

const fn v4_in_16(a: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// Value of the IFACES map (key: ifindex): facts about an interface the program is attached to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceConfig {
    /// The MAC the LB has on this interface (its bridge's, when it is a bridge port): VIP
    /// frames must be addressed to it, and frames the LB sends as an L3 hop leave from it.
    pub mac: [u8; 6],
    /// The interface's MTU: the largest IP packet it sends.
    pub mtu: u16,
    /// The interface's IPv4 address: the tunnel source on the LB, the address tunnelled
    /// packets must be sent to on a real. All zero when it has none.
    pub ipv4: [u8; 4],
    /// Virtual MACs the LB answers to on this interface besides `mac`: VRRP's (keepalived's
    /// `use_vmac`, a macvlan on the interface), so frames a router sends to the virtual
    /// router are balanced like those sent to the interface. All-zero slots are unused.
    pub vmacs: [[u8; 6]; MAX_VMACS],
}
const _: () = assert!(size_of::<IfaceConfig>() == 24);

/// Slots of IFACE_SLOTS: an interface's entry is at its ifindex modulo this.
pub const IFACE_SLOTS: u32 = 256;

/// Value of IFACE_SLOTS: the IFACES entry of the interface `ifindex`, in the array slot its
/// ifindex picks, so that the established path finds it by an index instead of a hash. Two
/// interfaces sharing a slot: the later one has it, and the other's packets take the full
/// path, which asks IFACES. `ifindex` 0: the slot is empty.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceSlot {
    pub ifindex: u32,
    pub config: IfaceConfig,
}
const _: () = assert!(size_of::<IfaceSlot>() == 28);

/// Virtual MACs per interface (IfaceConfig::vmacs): one VRRP instance per address family.
pub const MAX_VMACS: usize = 2;

impl IfaceConfig {
    /// Whether a frame to `dst` is addressed to the LB on this interface.
    #[inline(always)]
    pub fn is_ours(&self, dst: &[u8; 6]) -> bool {
        // Unused slots are zero: a zero destination never matches one.
        *dst == self.mac || (*dst != [0; 6] && (*dst == self.vmacs[0] || *dst == self.vmacs[1]))
    }
}

/// Key of the VIPS map: destination address, port and protocol of a virtual service.
/// IPv4 addresses occupy the first 4 bytes of `addr`, the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VipKey {
    addr: [u8; 16],
    port: [u8; 2],
    proto: u8,
    family: u8,
}
const _: () = assert!(size_of::<VipKey>() == 20);

impl VipKey {
    pub const fn v4(addr: [u8; 4], port: u16, proto: u8) -> Self {
        Self {
            addr: v4_in_16(addr),
            port: port.to_be_bytes(),
            proto,
            family: Family::V4 as u8,
        }
    }

    pub const fn v6(addr: [u8; 16], port: u16, proto: u8) -> Self {
        Self {
            addr,
            port: port.to_be_bytes(),
            proto,
            family: Family::V6 as u8,
        }
    }

    /// Key from raw network-order fields, as the datapath reads them from a packet.
    #[inline(always)]
    pub const fn from_wire(addr: [u8; 16], port: [u8; 2], proto: u8, family: u8) -> Self {
        Self {
            addr,
            port,
            proto,
            family,
        }
    }

    pub const fn addr_bytes(&self) -> [u8; 16] {
        self.addr
    }
    pub const fn port(&self) -> u16 {
        u16::from_be_bytes(self.port)
    }
    pub const fn proto(&self) -> u8 {
        self.proto
    }
    pub const fn family(&self) -> u8 {
        self.family
    }
}

/// Value of the SETTINGS array (one slot): program-wide facts userspace writes once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Number of possible CPUs: the one-arm allocator splits each SNAT port range among them.
    pub cpus: u32,
    /// Non-zero when a stateful VIP (nat, router, one-arm) exists: only then do packets that
    /// are not for a VIP get looked up as replies.
    pub stateful: u32,
}
const _: () = assert!(size_of::<Settings>() == 8);

/// Idle timeouts of a VIP's flows, in seconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP flow without FIN or RST seen.
    pub tcp: u32,
    /// TCP flow after a FIN.
    pub tcp_fin: u32,
    pub udp: u32,
}
const _: () = assert!(size_of::<Timeouts>() == 12);

impl Timeouts {
    /// Linux conntrack's defaults: established TCP 5 days, TIME_WAIT 120 s, UDP 30 s.
    pub const DEFAULT: Self = Self {
        tcp: 432_000,
        tcp_fin: 120,
        udp: 30,
    };
}

/// `VipMeta::sched`: Maglev consistent hashing over the flow hash (the default).
pub const SCHED_MAGLEV: u8 = 1;
/// `VipMeta::sched`: Maglev over a hash of the client address only.
pub const SCHED_SOURCE: u8 = 2;
/// `VipMeta::sched`: weighted round robin over new flows, each CPU in turn through the
/// VIP's sequence; weights may change at runtime.
pub const SCHED_ROUNDROBIN: u8 = 3;
/// `VipMeta::sched`: as roundrobin, weights fixed at load.
pub const SCHED_STATIC_RR: u8 = 4;
/// `VipMeta::sched`: the up real with the fewest active flows for its weight.
pub const SCHED_LEASTCONN: u8 = 5;
/// Round robin: how far apart the CPUs start in the sequence (a prime, so they spread over
/// any sequence length): CPU c's next new flow takes slot (its cursor + c × this) mod size.
pub const RR_CPU_STRIDE: u32 = 7919;

/// `VipMeta::hash`: what the flow hash covers: addresses, ports and protocol.
pub const HASH_FIVE_TUPLE: u8 = 0;
/// `VipMeta::hash`: all but the source port (a client's flows stay together).
pub const HASH_NO_SOURCE_PORT: u8 = 1;
/// `VipMeta::hash`: the destination port (and protocol) only.
pub const HASH_DESTINATION_PORT: u8 = 2;

/// `VipMeta::flags`: with no real to take a new flow, pass it to the LB's own stack instead
/// of dropping it.
pub const VIP_PASS_WHEN_EMPTY: u8 = 1;
/// `VipMeta::flags`: a dsr or tunnel VIP with a flood guard: while this CPU starts more new
/// flows a second than the VIP's FLOOD_LIMITS entry, its new flows are forwarded by the ring
/// without a flow entry (as Katran's LRU bypass), so a flood of new tuples does not evict
/// the established flows. The entry is the rate; the bit says it is set.
pub const VIP_FLOOD_GUARD: u8 = 2;

/// Most reals a leastconn VIP weighs against each other per new flow (the datapath's loop).
pub const MAX_LEASTCONN_REALS: u32 = 256;

/// Value of the VIPS map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipMeta {
    /// Index into RINGS, SNAT_POOLS, RR_CURSOR and VIP_COUNTERS.
    pub vip_id: u32,
    /// One of the `MODE_*` constants.
    pub mode: u8,
    /// One of the `SCHED_*` constants.
    pub sched: u8,
    /// One of the `HASH_*` constants.
    pub hash: u8,
    /// `VIP_*` bits.
    pub flags: u8,
    /// Slots of the VIP's ring in use: the Maglev table size, the round-robin sequence's
    /// length, or the number of leastconn candidates.
    pub ring_size: u32,
    pub timeouts: Timeouts,
}
const _: () = assert!(size_of::<VipMeta>() == 24);

impl VipMeta {
    pub const fn new(vip_id: u32, mode: u8, timeouts: Timeouts) -> Self {
        Self {
            vip_id,
            mode,
            sched: SCHED_MAGLEV,
            hash: HASH_FIVE_TUPLE,
            flags: 0,
            ring_size: 0,
            timeouts,
        }
    }
}

/// Value of the SNAT_POOLS array (index: VIP id): where one-arm flows get their source.
///
/// A new flow tries first the client's own source port, mapped into the pool's range
/// ([`SnatPool::client_port`]), from each pool address in turn starting at the one its
/// client and VIP addresses pick ([`SnatPool::client_slot`]); then ports of its CPU's slice
/// ([`SnatPool::cpu_slice`]). A client thus keeps meeting the (address, port) tuples its own
/// earlier flows used, as it would meet its own tuples with nat: a real holding such a tuple
/// in TIME_WAIT accepts the client's new SYN on it when its TCP timestamp is newer, and the
/// timestamps of one client towards one VIP only grow. Another client's SYN on it would be
/// refused (its timestamps start elsewhere), so only the same client gets a closed flow's
/// tuple before the flow's FIN timeout is over.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnatPool {
    /// Pool addresses (IPv4 in the first 4 bytes); the first `count` are used.
    pub addrs: [[u8; 16]; MAX_POOL_ADDRS],
    pub count: u32,
    /// Inclusive port range, host order; userspace checks it has a port per CPU at least.
    pub port_min: u16,
    pub port_max: u16,
}
const _: () = assert!(size_of::<SnatPool>() == 136);

impl SnatPool {
    pub const EMPTY: Self = Self {
        addrs: [[0; 16]; MAX_POOL_ADDRS],
        count: 0,
        port_min: 0,
        port_max: 0,
    };

    /// The slice of `[port_min, port_max]` that CPU `cpu` of `cpus` allocates from, as
    /// (first port, number of ports). Slices are disjoint, so two CPUs never hand out the same
    /// port, and cover the range but for at most `cpus - 1` ports at its end.
    pub const fn cpu_slice(&self, cpu: u32, cpus: u32) -> (u32, u32) {
        let size = self.port_max as u32 + 1 - self.port_min as u32;
        let cpus = if cpus == 0 { 1 } else { cpus };
        let span = size / cpus;
        (self.port_min as u32 + (cpu % cpus) * span, span)
    }

    /// The number of ports of the range.
    pub const fn ports(&self) -> u32 {
        (self.port_max as u32 + 1).wrapping_sub(self.port_min as u32)
    }

    /// The pool port a client's source port `port` maps to: the port of the range that
    /// `port` equals modulo its size (itself when the range holds it). One-to-one over any
    /// run of ports no longer than the range: a client's ephemeral range (28 232 ports on
    /// Linux) fits the default 31 744, so the client's flows keep ports apart as it does.
    pub const fn client_port(&self, port: u16) -> u32 {
        let size = self.ports();
        if size == 0 {
            // Never written (userspace checks min <= max); a check the datapath needs.
            return self.port_min as u32;
        }
        self.port_min as u32 + (port as u32 + size - self.port_min as u32 % size) % size
    }

    /// Where a client's walk over the pool addresses starts (before the modulo by `count`):
    /// a mix of the client's and the VIP's address words, so that clients spread over the
    /// addresses and a client's flows to one VIP always start at the same one.
    pub const fn client_slot(client: &[u8; 16], vip: &[u8; 16]) -> u32 {
        let mut mixed = 0u32;
        let mut i = 0;
        while i < 16 {
            let c = u32::from_le_bytes([client[i], client[i + 1], client[i + 2], client[i + 3]]);
            let v = u32::from_le_bytes([vip[i], vip[i + 1], vip[i + 2], vip[i + 3]]);
            mixed = (mixed ^ c ^ v.rotate_left(16)).wrapping_mul(0x9e37_79b1);
            i += 4;
        }
        // Murmur3's finaliser: every input bit reaches the low bits the modulo keeps.
        mixed ^= mixed >> 16;
        mixed = mixed.wrapping_mul(0x85eb_ca6b);
        mixed ^= mixed >> 13;
        mixed = mixed.wrapping_mul(0xc2b2_ae35);
        mixed ^ (mixed >> 16)
    }
}

/// `RealEntry::state`: the slot holds no real.
pub const REAL_UNUSED: u8 = 0;
/// `RealEntry::state`: takes new flows (if in its VIP's ring) and keeps its flows.
pub const REAL_UP: u8 = 1;
/// `RealEntry::state`: keeps its established flows, takes no new ones (weight 0).
pub const REAL_DRAIN: u8 = 2;
/// `RealEntry::state`: down (its checks failed, or set so): its flows move to other reals.
pub const REAL_DOWN: u8 = 3;
/// `RealEntry::state`: removed from its VIP: its flows move, as a down real's, and its id is
/// free for another real (from layout 3; layout 2 wrote such a real down).
pub const REAL_RETIRED: u8 = 4;

/// Value of the REALS array: one backend server, as one VIP uses it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealEntry {
    addr: [u8; 16],
    /// The MAC frames to the real are sent to: its own, or its gateway's.
    mac: [u8; 6],
    family: u8,
    /// `REAL_*`; an all-zero slot is unused.
    state: u8,
    /// The real's service port; zero: the VIP's port (no port translation).
    port: [u8; 2],
    /// Weight, host order (leastconn divides active flows by it).
    weight: u16,
    /// Interface the real is reached through.
    ifindex: u32,
    /// The VIP the real serves under this id (ids are per VIP and real).
    vip_id: u32,
    _pad2: [u8; 4],
}
const _: () = assert!(size_of::<RealEntry>() == 40);

impl RealEntry {
    pub const fn v4(addr: [u8; 4], mac: [u8; 6]) -> Self {
        Self::new(v4_in_16(addr), Family::V4, mac)
    }

    pub const fn v6(addr: [u8; 16], mac: [u8; 6]) -> Self {
        Self::new(addr, Family::V6, mac)
    }

    const fn new(addr: [u8; 16], family: Family, mac: [u8; 6]) -> Self {
        Self {
            addr,
            mac,
            family: family as u8,
            state: REAL_UP,
            port: [0; 2],
            weight: 1,
            ifindex: 0,
            vip_id: 0,
            _pad2: [0; 4],
        }
    }

    /// Serving the VIP of id `vip_id`.
    pub const fn with_vip(mut self, vip_id: u32) -> Self {
        self.vip_id = vip_id;
        self
    }
    pub const fn vip_id(&self) -> u32 {
        self.vip_id
    }

    /// In `state` (a `REAL_*`).
    pub const fn with_state(mut self, state: u8) -> Self {
        self.state = state;
        self
    }

    pub const fn with_weight(mut self, weight: u16) -> Self {
        self.weight = weight;
        self
    }

    /// The real listens on `port` instead of the VIP's port.
    pub const fn with_port(mut self, port: u16) -> Self {
        self.port = port.to_be_bytes();
        self
    }

    /// The real is reached through interface `ifindex`.
    pub const fn with_ifindex(mut self, ifindex: u32) -> Self {
        self.ifindex = ifindex;
        self
    }

    /// The port to send to, in wire order: the real's own, or `vip_port` when it has none.
    #[inline(always)]
    pub const fn port_or(&self, vip_port: [u8; 2]) -> [u8; 2] {
        if self.port[0] == 0 && self.port[1] == 0 {
            vip_port
        } else {
            self.port
        }
    }
    pub const fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub const fn mac(&self) -> [u8; 6] {
        self.mac
    }
    pub const fn addr_bytes(&self) -> [u8; 16] {
        self.addr
    }
    /// Its address.
    pub fn ip(&self) -> core::net::IpAddr {
        ip_from_bytes(&self.addr, self.family)
    }
    /// Where its flows go: its address and service port (`vip_port` when it has none).
    pub fn endpoint(&self, vip_port: u16) -> core::net::SocketAddr {
        let port = if self.port() == 0 {
            vip_port
        } else {
            self.port()
        };
        core::net::SocketAddr::new(self.ip(), port)
    }
    pub const fn family(&self) -> u8 {
        self.family
    }
    /// Takes new flows.
    pub const fn is_up(&self) -> bool {
        self.state == REAL_UP
    }
    /// Keeps the flows it has (up or draining).
    pub const fn keeps_flows(&self) -> bool {
        self.state == REAL_UP || self.state == REAL_DRAIN
    }
    pub const fn weight(&self) -> u16 {
        self.weight
    }
    /// The `REAL_*` state; 0: an unused slot.
    pub const fn state(&self) -> u8 {
        self.state
    }
    /// The real's own port, host order; 0: the VIP's.
    pub const fn port(&self) -> u16 {
        u16::from_be_bytes(self.port)
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data: repr(C), every field an integer or byte array, padding explicit.
    unsafe impl aya::Pod for super::VipKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipMeta {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RealEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::Counter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::RealCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IfaceConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Settings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SnatPool {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_key_holds_wire_order_and_zero_extends_ipv4() {
        let k = VipKey::v4([198, 18, 100, 10], 0x1f90, PROTO_TCP);
        assert_eq!(
            k,
            VipKey::from_wire(
                [198, 18, 100, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                [0x1f, 0x90],
                6,
                4
            )
        );
        assert_eq!((k.port(), k.family()), (8080, Family::V4 as u8));
    }

    #[test]
    fn client_ports_map_one_to_one_and_stay_when_in_range() {
        for (min, max) in [(1024u16, 32767u16), (1024, 65535), (40000, 40009), (5, 5)] {
            let pool = SnatPool {
                port_min: min,
                port_max: max,
                ..SnatPool::EMPTY
            };
            let size = max as u32 - min as u32 + 1;
            for p in [min, max, min.saturating_add(1).min(max)] {
                assert_eq!(pool.client_port(p), p as u32, "{p} in {min}-{max}");
            }
            // Linux's ephemeral range, and a run of `size` ports from anywhere: distinct ports,
            // all in the range, each equal to its client port modulo the size.
            for first in [32768u32, 0, 60999, 65535 - size.min(65535) + 1] {
                let mut seen = std::collections::BTreeSet::new();
                for p in first..(first + size.min(28232)).min(65536) {
                    let q = pool.client_port(p as u16);
                    assert!((min as u32..=max as u32).contains(&q), "{p} -> {q}");
                    assert_eq!(q % size, p % size, "{p} -> {q}");
                    assert!(seen.insert(q), "{p} -> {q} twice in {min}-{max}");
                }
            }
        }
    }

    #[test]
    fn client_slots_spread_clients_and_depend_on_the_vip() {
        let addr = |a: [u8; 4]| {
            let mut x = [0u8; 16];
            x[..4].copy_from_slice(&a);
            x
        };
        let vip = addr([198, 18, 100, 10]);
        // 256 clients of one /24 over 8 pool addresses: every address gets some, none most.
        let mut per = [0u32; 8];
        for last in 0..=255u8 {
            per[(SnatPool::client_slot(&addr([198, 18, 0, last]), &vip) % 8) as usize] += 1;
        }
        assert!(per.iter().all(|&n| (12..=64).contains(&n)), "{per:?}");
        // The same client to another VIP: not always the same start.
        let client = addr([198, 18, 0, 100]);
        let starts: std::collections::BTreeSet<u32> = (1..=32u8)
            .map(|v| SnatPool::client_slot(&client, &addr([198, 18, 100, v])) % 8)
            .collect();
        assert!(starts.len() > 3, "{starts:?}");
    }

    #[test]
    fn cpu_slices_are_disjoint_and_cover_the_range() {
        for (min, max) in [(1024u16, 65535u16), (1024, 32767), (5000, 5001), (10, 17)] {
            let pool = SnatPool {
                port_min: min,
                port_max: max,
                ..SnatPool::EMPTY
            };
            let size = (max - min + 1) as u32;
            for cpus in [1, 2, 3, 4, 7, 8, 64, 96, 255]
                .into_iter()
                .filter(|c| *c <= size)
            {
                let mut seen = std::collections::BTreeSet::new();
                for cpu in 0..cpus {
                    let (first, n) = pool.cpu_slice(cpu, cpus);
                    assert!(n >= 1);
                    for p in first..first + n {
                        assert!(p >= min as u32 && p <= max as u32, "{p} outside");
                        assert!(seen.insert(p), "port {p} in two slices (cpus {cpus})");
                    }
                }
                let size = (max - min + 1) as usize;
                assert!(
                    size - seen.len() < cpus as usize,
                    "slices leave too much unused"
                );
            }
        }
    }

    #[test]
    fn real_entry_slot_zero_is_unused() {
        // An all-zero REALS slot (what id 0 and unfilled slots hold) must read as unused.
        // SAFETY: RealEntry is plain bytes; all-zero is a valid value.
        let zero: RealEntry = unsafe { core::mem::zeroed() };
        assert!(!zero.keeps_flows() && !zero.is_up());
        assert!(RealEntry::v4([1, 2, 3, 4], [2; 6]).is_up());
        let draining = RealEntry::v4([1, 2, 3, 4], [2; 6]).with_state(REAL_DRAIN);
        assert!(draining.keeps_flows() && !draining.is_up());
    }
}

/// ADDR_FILTER: two bitmaps of IPv4 addresses (by [`addr_filter_bit`]), one word per 64
/// addresses' bits. The first says which destinations may be the LB's (VIP and SNAT pool
/// addresses), the second which sources may be (nat/router reals answering): a packet with
/// neither is no VIP's, and passes without a flow lookup. A bit may be shared by several
/// addresses (a false "may be": the packet takes the longer way), never missing for one
/// that is the LB's.
pub const ADDR_FILTER_BITS: u32 = 1 << 16;
/// Words of one bitmap.
pub const ADDR_FILTER_WORDS: u32 = ADDR_FILTER_BITS / 64;
/// Where the bitmap of destinations starts, and where the one of sources does.
pub const ADDR_FILTER_DST: u32 = 0;
pub const ADDR_FILTER_SRC: u32 = ADDR_FILTER_WORDS;

/// The bit of IPv4 address `a` in either bitmap of ADDR_FILTER: its two 16-bit halves
/// XORed (distinct for the addresses of one /16, as a lab's or a data centre's often are).
#[inline(always)]
pub const fn addr_filter_bit(a: [u8; 4]) -> u32 {
    ((a[0] ^ a[2]) as u32) << 8 | (a[1] ^ a[3]) as u32
}

#[cfg(test)]
mod addr_filter_tests {
    use super::*;

    #[test]
    fn the_addresses_of_one_slash_16_have_distinct_filter_bits_within_the_bitmap() {
        let mut seen = std::collections::BTreeSet::new();
        for x in 0..=255u8 {
            for y in 0..=255u8 {
                let bit = addr_filter_bit([198, 18, x, y]);
                assert!(bit < ADDR_FILTER_BITS);
                assert!(seen.insert(bit), "198.18.{x}.{y} shares a bit");
            }
        }
        // The word each bitmap starts at: the source bitmap right after the destinations'.
        assert_eq!(ADDR_FILTER_SRC, ADDR_FILTER_DST + ADDR_FILTER_WORDS);
    }
}

/// Per CPU (FLOOD_STATE): new flows this CPU started in the current second, and the new
/// flows a flood guard forwarded without an entry, in all.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodState {
    /// When the current one-second window began (bpf_ktime_get_coarse_ns).
    pub window_start_ns: u64,
    /// New flows started in it, every VIP's.
    pub new_flows: u64,
    /// New flows forwarded by the ring alone, ever.
    pub guarded: u64,
}
const _: () = assert!(size_of::<FloodState>() == 24);

#[cfg(feature = "user")]
mod flood_pod {
    // SAFETY: plain-old-data: repr(C), integers only, no padding.
    unsafe impl aya::Pod for super::FloodState {}
    // SAFETY: as above: a u32 and IfaceConfig (byte arrays and a u16), no padding.
    unsafe impl aya::Pod for super::IfaceSlot {}
}
