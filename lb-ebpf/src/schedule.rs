//! Stage 3: pick the real for a new flow: the flow hash selects a slot of the VIP's ring.

use lb_common::{RealEntry, Reason, VipMeta, FLOW_HASH_SEED, RING_SIZE};

use crate::{
    hash,
    maps::{REALS, RINGS},
    parse::Parsed,
};

/// The real's id and entry.
#[inline(always)]
pub fn real(p: &Parsed, vip: &VipMeta) -> Result<(u32, RealEntry), Reason> {
    let slot = hash::flow(&p.flow, FLOW_HASH_SEED) % RING_SIZE;
    let real_id = match RINGS.get_value(vip.vip_id, &slot) {
        Some(id) => *id,
        None => return Err(Reason::NoReal),
    };
    match REALS.get(real_id) {
        Some(real) if real.in_use() => Ok((real_id, *real)),
        _ => Err(Reason::NoReal),
    }
}
