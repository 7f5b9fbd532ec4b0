//! Stage 2: is the packet for a VIP served here, or a reply of a flow?

use lb_common::{
    addr_filter_bit, IfaceConfig, Reason, Settings, VipKey, VipMeta, ADDR_FILTER_DST,
    ADDR_FILTER_SRC, ENDPOINT_POOL, ENDPOINT_REAL,
};

use crate::{
    maps::{ADDR_FILTER, ENDPOINTS, IFACES, SETTINGS, VIPS},
    parse::Parsed,
};

/// The VIP the packet is addressed to, if any.
#[inline(always)]
pub fn vip(p: &Parsed) -> Option<VipMeta> {
    let key = VipKey::from_wire(p.flow.dst, p.flow.dport, p.flow.proto, p.family);
    // SAFETY: VIPS values are plain data (any bytes are a value) in map memory that stays
    // valid while the program runs; the reference ends with the copy. Userspace replaces
    // values whole, never in place.
    unsafe { VIPS.get(&key) }.copied()
}

/// The LB's side of interface `ifindex`, where the frame came in. A VIP frame must have been
/// addressed to the LB there.
#[inline(always)]
pub fn addressed_to_us(p: &Parsed, ifindex: u32) -> Result<IfaceConfig, Reason> {
    let iface = iface(ifindex).ok_or(Reason::IfaceNotConfigured)?;
    if !iface.is_ours(&p.dst_mac) {
        return Err(Reason::NotForUs);
    }
    Ok(iface)
}

/// The LB's side of interface `ifindex`.
#[inline(always)]
pub fn iface(ifindex: u32) -> Option<IfaceConfig> {
    // SAFETY: as for VIPS in `vip`.
    unsafe { IFACES.get(&ifindex) }.copied()
}

#[inline(always)]
pub fn settings() -> Settings {
    SETTINGS.get(0).copied().unwrap_or_default()
}

/// Whether a packet that matched no flow looks like a reply of a stateful VIP: from a
/// nat/router real's service endpoint, or to a one-arm SNAT address.
#[inline(always)]
pub fn is_stateful_reply(p: &Parsed) -> bool {
    let from = VipKey::from_wire(p.flow.src, p.flow.sport, p.flow.proto, p.family);
    // SAFETY: as for VIPS in `vip`; the reference ends with the read.
    if unsafe { ENDPOINTS.get(&from) }.is_some_and(|e| e.kind == ENDPOINT_REAL) {
        return true;
    }
    let to = VipKey::from_wire(p.flow.dst, [0; 2], p.flow.proto, p.family);
    let port = u16::from_be_bytes(p.flow.dport);
    // SAFETY: as above.
    unsafe { ENDPOINTS.get(&to) }
        .is_some_and(|e| e.kind == ENDPOINT_POOL && e.port_min <= port && port <= e.port_max)
}

/// Whether an IPv4 packet may be the LB's: to a VIP or SNAT pool address, or from a real
/// that answers through the LB (ADDR_FILTER). False: certainly not (`pass_not_vip`).
#[inline(always)]
pub fn may_be_ours_v4(p: &Parsed) -> bool {
    let d = p.flow.dst;
    let s = p.flow.src;
    filter_has(ADDR_FILTER_DST, addr_filter_bit([d[0], d[1], d[2], d[3]]))
        || filter_has(ADDR_FILTER_SRC, addr_filter_bit([s[0], s[1], s[2], s[3]]))
}

#[inline(always)]
fn filter_has(bitmap: u32, bit: u32) -> bool {
    ADDR_FILTER
        .get(bitmap + bit / 64)
        .is_some_and(|w| w & (1 << (bit % 64)) != 0)
}
