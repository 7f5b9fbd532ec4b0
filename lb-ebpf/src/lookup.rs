//! Stage 2: is the packet for a VIP served here?

use lb_common::{IfaceConfig, Reason, VipKey, VipMeta};

use crate::{
    maps::{CONFIG, VIPS},
    parse::Parsed,
};

/// The VIP the packet is for, and the interface it was (and had to be) addressed to.
#[inline(always)]
pub fn vip(p: &Parsed) -> Result<(VipMeta, IfaceConfig), Reason> {
    let key = VipKey::from_wire(p.flow.dst, p.flow.dport, p.flow.proto, p.family);
    // SAFETY: VIPS values are plain data; the copy is taken at once.
    let meta = match unsafe { VIPS.get(&key) } {
        Some(meta) => *meta,
        None => return Err(Reason::NotVip),
    };
    let iface = match CONFIG.get(0) {
        Some(c) => *c,
        None => return Err(Reason::NotForUs),
    };
    if p.dst_mac != iface.mac {
        return Err(Reason::NotForUs);
    }
    Ok((meta, iface))
}
