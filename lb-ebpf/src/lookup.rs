//! Stage 2: is the packet for a VIP?

use lb_common::{Reason, VipKey, VipMeta};

use crate::{maps::VIPS, parse::Parsed};

#[inline(always)]
pub fn vip(p: &Parsed) -> Result<VipMeta, Reason> {
    let key = VipKey::from_wire(p.flow.dst, p.flow.dport, p.flow.proto, p.family);
    // SAFETY: VIPS values are plain data; the copy is taken before any later map update.
    match unsafe { VIPS.get(&key) } {
        Some(meta) => Ok(*meta),
        None => Err(Reason::NotVip),
    }
}
