//! Per-CPU counters: packets and bytes per outcome. Every packet the datapath does not forward
//! has a [`Reason`]; the COUNTERS array holds one [`Counter`] per reason, at the reason's fixed
//! slot, plus one for forwarded requests and one for forwarded replies.

use core::mem::size_of;

/// Packets and bytes, summed over CPUs by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<Counter>() == 16);

/// Value of REAL_COUNTERS: what the datapath did for one real (of one VIP: real ids are per
/// VIP and real), per CPU. A VIP's figures are the sums over its reals.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealCounters {
    /// Client → real; ICMP errors about a flow are counted in the direction they travel.
    pub requests: Counter,
    /// Real → client, through the LB: nat, router and one-arm only (dsr and tunnel replies
    /// go around the LB).
    pub replies: Counter,
    /// Flows this CPU created for the real (a flow another CPU created at the same instant
    /// and this one adopted is that CPU's).
    pub new_flows: u64,
    /// Of those, TCP flows whose first packet seen was not a SYN: scheduled mid-stream,
    /// because the flow's entry was gone (evicted from a full table, expired while idle,
    /// older than the LB) or its real left. The kernel's LRU evictions are invisible to the
    /// program; this is their effect (with `pass_no_flow` for replies).
    pub picked_up: u64,
}
const _: () = assert!(size_of::<RealCounters>() == 48);

impl RealCounters {
    /// `self + other`, field by field (sums over CPUs, or over a VIP's reals).
    pub const fn plus(self, other: Self) -> Self {
        Self {
            requests: self.requests.plus(other.requests),
            replies: self.replies.plus(other.replies),
            new_flows: self.new_flows + other.new_flows,
            picked_up: self.picked_up + other.picked_up,
        }
    }

    /// `self − earlier`, field by field, never below 0 (what counters grew by).
    pub const fn minus(self, earlier: Self) -> Self {
        Self {
            requests: self.requests.minus(earlier.requests),
            replies: self.replies.minus(earlier.replies),
            new_flows: self.new_flows.saturating_sub(earlier.new_flows),
            picked_up: self.picked_up.saturating_sub(earlier.picked_up),
        }
    }
}

impl Counter {
    /// `self + other`.
    pub const fn plus(self, other: Self) -> Self {
        Self {
            packets: self.packets + other.packets,
            bytes: self.bytes + other.bytes,
        }
    }

    /// `self − earlier`, never below 0.
    pub const fn minus(self, earlier: Self) -> Self {
        Self {
            packets: self.packets.saturating_sub(earlier.packets),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }
}

/// What the datapath does with a packet it does not forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the kernel stack (`XDP_PASS`): not ours to balance.
    Pass,
    /// Drop it (`XDP_DROP`): malformed, or for a VIP but impossible to forward.
    Drop,
    /// Send back what the datapath wrote in its place (`XDP_TX`): an ICMP error to the sender.
    Tx,
}

macro_rules! reasons {
    ($( $(#[doc = $doc:literal])* $name:ident = $slot:literal, $verdict:ident, $label:literal; )*) => {
        /// Why a packet was not forwarded. The discriminant is its COUNTERS slot: fixed for
        /// good once given (a pinned COUNTERS map outlives the program that wrote it), from 2
        /// up; slots 0 and 1 are [`Reason::FORWARDED_SLOT`] and [`Reason::REPLIES_SLOT`].
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            $( $(#[doc = $doc])* $name = $slot, )*
        }

        impl Reason {
            /// Every reason, in slot order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name),*];

            /// Pass to the kernel, drop, or send back.
            #[inline(always)]
            pub const fn verdict(self) -> Verdict {
                match self { $(Reason::$name => Verdict::$verdict,)* }
            }

            /// Short name used by `lbctl stats` and metrics.
            pub const fn label(self) -> &'static str {
                match self { $(Reason::$name => $label,)* }
            }
        }
    };
}

reasons! {
    /// Not IPv4 or IPv6 (ARP, LLDP, VLAN-tagged, ...).
    NotIp = 2, Pass, "pass_not_ip";
    /// IP, but the destination address/port/protocol is not a VIP, and the packet is no reply
    /// of a stateful flow.
    NotVip = 3, Pass, "pass_not_vip";
    /// An IP protocol other than TCP, UDP and ICMP/ICMPv6 (GRE, ESP, SCTP, OSPF, ...), or
    /// IPv6's "no next header". Checked before the VIP lookup, so it counts such packets to any
    /// address.
    OtherProtocol = 4, Pass, "pass_other_protocol";
    /// An IP fragment, to any address: without L4 ports it cannot be balanced. The kernel gets
    /// it; fragments to a VIP therefore end at the LB's own stack, not at a real.
    Fragment = 5, Pass, "pass_fragment";
    /// A header, or the IPv4 total length, runs past the end of the frame.
    Truncated = 6, Drop, "drop_truncated";
    /// IPv4 header length under 20 bytes, a total length shorter than the headers, or a
    /// version field that disagrees with the EtherType.
    BadIpHeader = 7, Drop, "drop_bad_ip_header";
    /// The VIP has no real to send a new flow to: none configured, all removed or down, or
    /// (leastconn) none up with a weight.
    NoReal = 8, Drop, "drop_no_real";
    /// The VIP's entry names a mode this program does not know (a map written by a newer
    /// control plane).
    UnknownMode = 9, Drop, "drop_unknown_mode";
    /// For a VIP, but the frame's destination MAC is not this interface's (flooded unknown
    /// unicast, broadcast, multicast, promiscuous capture): another host's to handle.
    NotForUs = 10, Pass, "pass_not_for_us";
    /// Tunnel mode: an IPv4 packet plus the outer header would exceed the interface MTU, and
    /// the sender cannot be told: DF clear (it allows fragmentation, which XDP cannot do), or
    /// IPv4 options (the error could not quote it). Raise the MTU towards the reals, or clamp
    /// the clients' MSS.
    TooBig = 11, Drop, "drop_too_big";
    /// Tunnel mode: no room in front of the frame for the outer header.
    NoHeadroom = 12, Drop, "drop_no_headroom";
    /// Decap program: not an IP-in-IP/6in4 packet the LB sends (ordinary traffic of the real,
    /// IPv6 included).
    NotTunnelled = 13, Pass, "pass_not_tunnelled";
    /// Tunnel mode: too big once wrapped; answered with ICMP "fragmentation needed" carrying
    /// the MTU that fits, so the sender's path-MTU discovery adapts.
    IcmpTooBig = 14, Tx, "tx_icmp_too_big";
    /// A reply of a stateful VIP (from a nat/router real's service port, or to a one-arm SNAT
    /// address) that matches no flow: expired, evicted, or older than the LB. The kernel gets
    /// it and answers as for any packet it has no socket for.
    NoFlow = 15, Pass, "pass_no_flow";
    /// One-arm: none of the next 16 ports of this CPU's slice of the VIP's SNAT pool is free
    /// for a new flow (the next new flow tries the 16 after), or the slice is empty (a port
    /// range narrower than the CPUs). Many at once: the pool is full; add addresses or widen
    /// the port range.
    SnatExhausted = 16, Drop, "drop_snat_exhausted";
    /// The reply tuple of a new flow belongs to another live flow: two VIPs share a real and
    /// port, and one client used the same source port towards both. The real could not tell
    /// them apart, so the new one is refused.
    FlowClash = 17, Drop, "drop_flow_clash";
    /// The flow table refused an insert for a new flow (out of memory).
    FlowInsert = 18, Drop, "drop_flow_insert_failed";
    /// Router mode: the TTL would reach zero; answered with ICMP "time exceeded".
    IcmpTtlExceeded = 19, Tx, "tx_icmp_ttl_exceeded";
    /// Router mode: the TTL would reach zero, and no ICMP may be sent about the packet: it
    /// has IPv4 options (the error could not quote it), or it is itself an ICMP error (no
    /// error is ever sent about an error).
    TtlExpired = 20, Drop, "drop_ttl_expired";
    /// The VIP has no real up and says `when_empty = "pass"`: the LB's own stack answers
    /// (a RST, a port unreachable, or a service of its own), instead of silence.
    NoRealPass = 21, Pass, "pass_no_real";
    /// An ICMP or ICMPv6 message that is no error about one of the LB's flows: an echo,
    /// neighbour discovery, an error quoting a packet of no live flow (or not TCP/UDP), any
    /// ICMP while no VIP is stateful, any ICMPv6 (no stateful mode has IPv6 yet). The
    /// kernel's to handle.
    IcmpNotOurs = 22, Pass, "pass_icmp_not_ours";
    /// An ICMP error (destination unreachable, time exceeded) whose header or quoted packet
    /// is cut short or malformed: the LB cannot tell which flow it is about, so it is the
    /// kernel's. Checked only while some VIP is stateful.
    IcmpBadQuote = 23, Pass, "pass_icmp_bad_quote";
    /// IPv6 whose next header is an extension header other than the fragment header
    /// (hop-by-hop or destination options, routing, AH, mobility, HIP, shim6, experimental):
    /// the parser does not walk extension headers, so the ports are not where it looks.
    /// Checked before the VIP lookup, so it counts such packets to any address (MLD included).
    Ipv6ExtHeader = 24, Pass, "pass_ipv6_ext_header";
    /// This CPU's scratch slot was missing. It cannot be: a one-slot per-CPU array always
    /// has slot 0 on every CPU; counted rather than assumed. No frame can produce it.
    NoScratch = 25, Drop, "drop_no_scratch";
    /// The real is reached through an interface the LB has no entry for (IFACES): not
    /// attached there, so no source MAC to send from. Attach the LB to that interface, or
    /// route the real through one it is attached to.
    EgressNotAttached = 26, Drop, "drop_egress_not_attached";
    /// An IPv6 packet to a VIP whose mode has no IPv6 yet (nat, router, one-arm).
    ModeNoIpv6 = 27, Drop, "drop_mode_no_ipv6";
    /// Decap program: the kernel refused to take the outer header off (bpf_xdp_adjust_head).
    /// It cannot refuse for a frame the program accepted (34 bytes at least); counted rather
    /// than assumed. No frame can produce it. Dropped: the frame was already rewritten.
    DecapFailed = 28, Drop, "drop_decap_failed";
    /// Tunnel mode: an IPv6 packet plus the outer header would exceed the interface MTU;
    /// ICMPv6 "packet too big" is not sent yet, so its sender is never told. Raise the MTU
    /// towards the reals, or clamp the IPv6 clients' MSS.
    TooBigIpv6 = 29, Drop, "drop_too_big_ipv6";
    /// An ICMP error was due ("fragmentation needed", "time exceeded"), but the LB has no
    /// IPv4 address to send it from: its entry for the interface the packet came in on has
    /// none (or there is no entry). Give the interface an IPv4 address.
    NoIcmpSource = 30, Drop, "drop_no_icmp_source";
    /// An ICMP error was due, but the kernel could not size the frame to it
    /// (bpf_xdp_adjust_tail: the driver left no tailroom to grow a short packet into the
    /// error). Test runs always have tailroom; no test frame can produce it.
    NoTailroom = 31, Drop, "drop_no_tailroom";
    /// The program runs on an interface it has no entry for in IFACES (attached by hand, or
    /// its state removed under it): without the interface's MAC and address it cannot tell
    /// whether a VIP's frame was sent to it (the balancer), or whether a tunnel is for this
    /// host (the decap program, for every frame), so the kernel gets the frame.
    IfaceNotConfigured = 32, Pass, "pass_iface_not_configured";
    /// Decap program: IP-in-IP/6in4 to another address than the interface's IPv4 address
    /// (IFACES): passed as it came. A tunnel to a second address of this host is not
    /// unwrapped: send the LB's tunnels to the configured one.
    TunnelNotForUs = 33, Pass, "pass_tunnel_not_for_us";
    /// The established path could not hand a packet to the full path (the tail call into
    /// `lb_full` failed: FULL_PATH is empty, as it is once the lbctl that filled it is gone
    /// without having pinned it). Passed: the kernel's stack gets what the LB cannot
    /// balance (`lbctl stats --reasons` shows it). Restart lbctl, which fills its own.
    NoFullPath = 34, Pass, "pass_no_full_path";
}

impl Reason {
    /// COUNTERS slot of forwarded requests (client → real; decapsulated packets, in the decap
    /// program).
    pub const FORWARDED_SLOT: u32 = 0;
    /// COUNTERS slot of forwarded replies (real → client through the LB).
    pub const REPLIES_SLOT: u32 = 1;

    /// Its COUNTERS slot.
    #[inline(always)]
    pub const fn slot(self) -> u32 {
        self as u32
    }
}

/// Length of the COUNTERS array: fixed, so that new reasons take free slots and a pinned
/// COUNTERS map stays this program's. Slots not given to a reason stay zero.
pub const COUNTER_SLOTS: u32 = 64;

const _: () = {
    let mut i = 0;
    while i < Reason::ALL.len() {
        let slot = Reason::ALL[i].slot();
        assert!(slot > Reason::REPLIES_SLOT && slot < COUNTER_SLOTS);
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots and labels are part of the pinned layout (COUNTERS outlives a program on
    /// upgrade, and dashboards read the labels): add, never change.
    const PINNED: &[(&str, u32)] = &[
        ("pass_not_ip", 2),
        ("pass_not_vip", 3),
        ("pass_other_protocol", 4),
        ("pass_fragment", 5),
        ("drop_truncated", 6),
        ("drop_bad_ip_header", 7),
        ("drop_no_real", 8),
        ("drop_unknown_mode", 9),
        ("pass_not_for_us", 10),
        ("drop_too_big", 11),
        ("drop_no_headroom", 12),
        ("pass_not_tunnelled", 13),
        ("tx_icmp_too_big", 14),
        ("pass_no_flow", 15),
        ("drop_snat_exhausted", 16),
        ("drop_flow_clash", 17),
        ("drop_flow_insert_failed", 18),
        ("tx_icmp_ttl_exceeded", 19),
        ("drop_ttl_expired", 20),
        ("pass_no_real", 21),
        ("pass_icmp_not_ours", 22),
        ("pass_icmp_bad_quote", 23),
        ("pass_ipv6_ext_header", 24),
        ("drop_no_scratch", 25),
        ("drop_egress_not_attached", 26),
        ("drop_mode_no_ipv6", 27),
        ("drop_decap_failed", 28),
        ("drop_too_big_ipv6", 29),
        ("drop_no_icmp_source", 30),
        ("drop_no_tailroom", 31),
        ("pass_iface_not_configured", 32),
        ("pass_tunnel_not_for_us", 33),
        ("pass_no_full_path", 34),
    ];

    #[test]
    fn every_reason_keeps_its_pinned_slot_and_label() {
        let have: Vec<(&str, u32)> = Reason::ALL.iter().map(|r| (r.label(), r.slot())).collect();
        assert_eq!(
            have, PINNED,
            "a reason was renumbered, relabelled, added or removed"
        );
    }

    #[test]
    fn slots_are_unique_in_range_and_clear_of_forwarded_and_replies() {
        assert_eq!((Reason::FORWARDED_SLOT, Reason::REPLIES_SLOT), (0, 1));
        for (i, a) in Reason::ALL.iter().enumerate() {
            let s = a.slot();
            assert!(s < COUNTER_SLOTS, "{a:?}");
            assert_ne!(s, Reason::FORWARDED_SLOT, "{a:?}");
            assert_ne!(s, Reason::REPLIES_SLOT, "{a:?}");
            for b in &Reason::ALL[i + 1..] {
                assert_ne!(s, b.slot(), "{a:?} and {b:?}");
            }
        }
    }

    #[test]
    fn labels_are_unique_and_say_the_verdict() {
        for (i, a) in Reason::ALL.iter().enumerate() {
            for b in &Reason::ALL[i + 1..] {
                assert_ne!(a.label(), b.label());
            }
            let prefix = match a.verdict() {
                Verdict::Pass => "pass_",
                Verdict::Drop => "drop_",
                Verdict::Tx => "tx_",
            };
            assert!(a.label().starts_with(prefix), "{}", a.label());
        }
    }
}
