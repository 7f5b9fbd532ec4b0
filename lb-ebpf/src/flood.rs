//! The flood guard (Katran's LRU bypass): a flood of new tuples to a dsr or tunnel VIP would
//! fill the flow table and evict the established flows, each of which, when its entry is
//! gone, is scheduled anew and moves when the ring changed. Above a rate of new flows on a
//! CPU, a guarded VIP's new flows are forwarded by the ring alone, without an entry: the
//! ring sends every packet of such a flow to the same real while it does not change, and
//! the flows that have entries keep them.

use lb_common::{VipMeta, VIP_FLOOD_GUARD};

use crate::maps::{FLOOD_LIMITS, FLOOD_STATE};

/// The window new flows are counted over.
const WINDOW_NS: u64 = 1_000_000_000;

/// Counts a new flow this CPU starts at `now`, for any VIP, and says whether `vip`'s guard
/// keeps it out of the flow table: the VIP has one, and this CPU started more new flows in
/// the current second than its limit. A guarded flow is counted (`FloodState::guarded`).
/// Not inlined: inlined into the flow stage, its stack would take that chain past the
/// verifier's 512 bytes. New flows only: the established path never comes here.
#[inline(never)]
pub fn guards(vip: &VipMeta, now: u64) -> bool {
    let Some(state) = FLOOD_STATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot: one program runs on a CPU at a time (see `maps::scratch`);
    // userspace only reads it.
    let state = unsafe { &mut *state };
    if now.wrapping_sub(state.window_start_ns) >= WINDOW_NS {
        state.window_start_ns = now;
        state.new_flows = 0;
    }
    state.new_flows += 1;
    if vip.flags & VIP_FLOOD_GUARD == 0 {
        return false;
    }
    let limit = FLOOD_LIMITS.get(vip.vip_id).copied().unwrap_or(0);
    if limit == 0 || state.new_flows <= u64::from(limit) {
        return false;
    }
    state.guarded += 1;
    true
}
