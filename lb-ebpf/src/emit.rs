//! Stage 5: the verdict. Every packet ends here and is counted exactly once.

use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX};
use lb_common::{Reason, Verdict};

use crate::maps::{COUNTERS, VIP_COUNTERS};

/// A rewritten frame goes back out of the interface it came in on.
#[inline(always)]
pub fn forwarded(vip_id: u32, bytes: usize) -> u32 {
    bump_global(Reason::FORWARDED_SLOT, bytes);
    if let Some(c) = VIP_COUNTERS.get_ptr_mut(vip_id) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
    XDP_TX
}

/// The decap program stripped the outer header: the inner packet goes up the stack.
#[inline(always)]
pub fn decapsulated(bytes: usize) -> u32 {
    bump_global(Reason::FORWARDED_SLOT, bytes);
    XDP_PASS
}

/// The one place a reason becomes an XDP action.
#[inline(always)]
pub fn not_forwarded(reason: Reason, bytes: usize) -> u32 {
    bump_global(reason.slot(), bytes);
    match reason.verdict() {
        Verdict::Pass => XDP_PASS,
        Verdict::Drop => XDP_DROP,
        Verdict::Tx => XDP_TX,
    }
}

#[inline(always)]
fn bump_global(slot: u32, bytes: usize) {
    if let Some(c) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
}
