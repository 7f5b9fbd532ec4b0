//! The flow table's keys and values, and what marks replies of stateful flows (ENDPOINTS).

use core::mem::size_of;

/// Key of the FLOWS map, and what the flow hash is computed over: a packet's addresses,
/// ports and protocol in wire order. IPv4 addresses are zero-extended to 16 bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    /// `Family` as u8, so an IPv4 flow never equals an IPv6 one with the same bytes.
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

impl FlowKey {
    /// The key of the packets that answer this one: addresses and ports swapped.
    #[inline(always)]
    pub const fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            family: self.family,
            _pad: [0; 2],
        }
    }
}

/// `Flow::flags`: this entry translates replies (real → client), not requests.
pub const FLOW_REPLY: u32 = 1;
/// `Flow::flags`: write `src_mac` (the LB is an L3 hop); without it the source MAC stays.
pub const FLOW_SET_SRC_MAC: u32 = 2;
/// `Flow::flags`: decrement the TTL (router mode).
pub const FLOW_DEC_TTL: u32 = 4;
/// `Flow::flags`: a FIN was seen; the entry lives `short_timeout` after its last packet.
pub const FLOW_CLOSING: u32 = 8;
/// `Flow::flags`: the real has answered (a reply crossed the reply entry); until then the
/// flow lives `short_timeout` after its last packet, as a half-open one.
pub const FLOW_ANSWERED: u32 = 16;
/// `Flow::flags`: a leastconn flow, counted active in OPEN and ACTIVE until it ends.
pub const FLOW_COUNTED: u32 = 32;
/// `Flow::flags`: a dsr or tunnel flow: one entry, no reply entry (replies go around).
pub const FLOW_ONE_WAY: u32 = 64;
/// `Flow::flags`: a dsr flow, whose packets the established path forwards from its entry
/// alone (`lb_ebpf::established`). Entries of releases before it have neither this nor
/// [`FLOW_TUNNEL`], and take the full path, which looks up their VIP's mode.
pub const FLOW_DSR: u32 = 128;
/// `Flow::flags`: a tunnel flow (see [`FLOW_DSR`]).
pub const FLOW_TUNNEL: u32 = 256;
/// `Flow::flags`: a FIN crossed this entry: the side whose packets it translates has
/// closed. [`FLOW_CLOSING`] goes on both entries at the first FIN of either side; this bit
/// on each says which sides did, so both having it means the connection ended both ways.
pub const FLOW_FIN_SEEN: u32 = 512;
/// `Flow::flags`: the flow's SYN carried a TCP timestamp option, so the client's later
/// SYNs carry newer ones (one-arm reuses such a flow's pool port for the same client at
/// once: see `SnatPool`).
pub const FLOW_TIMESTAMPS: u32 = 1024;

/// Value of the FLOWS map: how to rewrite the packets of one direction of a flow. Every
/// stateful flow has two entries; each one's key reversed and rewritten gives the other's.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Source and destination address to write.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Source and destination port to write.
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub dst_mac: [u8; 6],
    /// Written only with [`FLOW_SET_SRC_MAC`].
    pub src_mac: [u8; 6],
    /// `FLOW_*` bits. A 32-bit word so that the datapath sets a bit with one atomic OR
    /// (CPUs share the entry, and two setting different bits at once must both win). Its
    /// low byte is the flags byte of earlier releases, with the same bits, and the three
    /// above it their zero padding (little-endian): an entry those wrote reads the same, so
    /// a pinned flow table is taken over in place.
    pub flags: u32,
    /// Interface the rewritten frame leaves from.
    pub egress_ifindex: u32,
    pub vip_id: u32,
    pub real_id: u32,
    /// Idle timeout in seconds of an answered flow, and the one of a flow not answered yet
    /// or closing (a FIN seen). Both are the VIP's UDP timeout for UDP; for TCP the
    /// established and the FIN timeout (like conntrack's SYN_SENT and TIME_WAIT, 120 s).
    pub timeout: u32,
    pub short_timeout: u32,
    /// bpf_ktime_get_ns of the last packet (refreshed at most every 200 ms).
    pub last_seen_ns: u64,
}
const _: () = assert!(size_of::<Flow>() == 80);
// The layout earlier releases pinned: the flags at 48, then the fields after them where they
// were. A 4-byte aligned word, as BPF atomics need.
const _: () = assert!(core::mem::offset_of!(Flow, flags) == 48);
const _: () = assert!(core::mem::offset_of!(Flow, egress_ifindex) == 52);
const _: () = assert!(core::mem::offset_of!(Flow, last_seen_ns) == 72);
const _: () = assert!(core::mem::align_of::<Flow>() >= 4);

impl Flow {
    /// A placeholder for a function to fill.
    pub const EMPTY: Self = Self {
        src: [0; 16],
        dst: [0; 16],
        sport: [0; 2],
        dport: [0; 2],
        dst_mac: [0; 6],
        src_mac: [0; 6],
        flags: 0,
        egress_ifindex: 0,
        vip_id: 0,
        real_id: 0,
        timeout: 0,
        short_timeout: 0,
        last_seen_ns: 0,
    };

    /// The key of the packets this entry writes, as they leave the LB.
    #[inline(always)]
    pub const fn rewritten_key(&self, proto: u8, family: u8) -> FlowKey {
        FlowKey {
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
            proto,
            family,
            _pad: [0; 2],
        }
    }

    /// Whether the flow was idle longer than its timeout at `now_ns`.
    #[inline(always)]
    pub const fn expired(&self, now_ns: u64) -> bool {
        let limit = if self.flags & FLOW_CLOSING != 0 || self.flags & FLOW_ANSWERED == 0 {
            self.short_timeout
        } else {
            self.timeout
        };
        now_ns.saturating_sub(self.last_seen_ns) > limit as u64 * 1_000_000_000
    }
}

/// `Endpoint::kind`: packets from this (address, port, protocol) are replies of nat/router
/// flows.
pub const ENDPOINT_REAL: u32 = 1;
/// `Endpoint::kind` (key port 0): packets to this address, at a port of the range, are
/// replies of one-arm flows.
pub const ENDPOINT_POOL: u32 = 2;

/// Value of the ENDPOINTS map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `ENDPOINT_*`.
    pub kind: u32,
    /// A pool address's SNAT ports (the union of its VIPs' ranges), host order.
    pub port_min: u16,
    pub port_max: u16,
}
const _: () = assert!(size_of::<Endpoint>() == 8);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data: repr(C), every field an integer or byte array, padding explicit.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Flow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Endpoint {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_expire_after_their_timeout_and_sooner_before_an_answer_or_once_closing() {
        let mut f = Flow {
            timeout: 30,
            short_timeout: 2,
            last_seen_ns: 10_000_000_000,
            ..Flow::EMPTY
        };
        // Not answered yet: the short timeout.
        assert!(!f.expired(12_000_000_000));
        assert!(f.expired(12_000_000_001));
        f.flags |= FLOW_ANSWERED;
        assert!(!f.expired(40_000_000_000));
        assert!(f.expired(40_000_000_001));
        f.flags |= FLOW_CLOSING;
        assert!(f.expired(12_000_000_001));
        assert!(!f.expired(5)); // a clock behind last_seen is not an expiry
    }

    #[test]
    fn reversed_key_swaps_both_ends() {
        let k = FlowKey {
            src: [1; 16],
            dst: [2; 16],
            sport: [0, 3],
            dport: [0, 4],
            proto: 6,
            family: 4,
            _pad: [0; 2],
        };
        let r = k.reversed();
        assert_eq!(
            (r.src, r.dst, r.sport, r.dport),
            (k.dst, k.src, k.dport, k.sport)
        );
        assert_eq!(r.reversed(), k);
    }

    /// An entry as earlier releases wrote it (their `flags: u8` at 48, then three zero
    /// padding bytes), taken over in place: it must read the same.
    #[test]
    fn an_entry_of_the_one_byte_flags_layout_reads_the_same() {
        let mut old = [0u8; 80];
        // reply, closing, answered; then egress_ifindex, vip_id, last_seen_ns.
        old[48] = 0x01 | 0x08 | 0x10;
        old[52..56].copy_from_slice(&7u32.to_le_bytes());
        old[56..60].copy_from_slice(&3u32.to_le_bytes());
        old[72..80].copy_from_slice(&99u64.to_le_bytes());
        // SAFETY: Flow is 80 bytes of integers and byte arrays (asserted above): any bytes
        // are a value, and read_unaligned needs no alignment.
        let f: Flow = unsafe { core::ptr::read_unaligned(old.as_ptr().cast()) };
        assert_eq!(f.flags, FLOW_REPLY | FLOW_CLOSING | FLOW_ANSWERED);
        assert_eq!((f.egress_ifindex, f.vip_id, f.last_seen_ns), (7, 3, 99));
        // And the bits keep their values, each in the low byte.
        let bits = [
            (FLOW_REPLY, 1),
            (FLOW_SET_SRC_MAC, 2),
            (FLOW_DEC_TTL, 4),
            (FLOW_CLOSING, 8),
            (FLOW_ANSWERED, 16),
            (FLOW_COUNTED, 32),
            (FLOW_ONE_WAY, 64),
            (FLOW_DSR, 128),
            (FLOW_TUNNEL, 256),
        ];
        for (flag, value) in bits {
            assert_eq!(flag, value);
        }
    }
}
