//! Stage 5: the verdict. Every packet ends here and is counted exactly once.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::bpf_redirect,
};
use lb_common::{Counter, Reason, Verdict};

use crate::maps::{COUNTERS, REAL_COUNTERS};

/// A rewritten frame and where it goes.
#[derive(Clone, Copy)]
pub struct Sent {
    /// The real of the frame's flow (its VIP's: ids are per VIP and real).
    pub real_id: u32,
    /// Interface it leaves from.
    pub egress: u32,
    /// A reply (real → client) rather than a request.
    pub reply: bool,
}

impl Sent {
    /// The counter slot of its verdict: a request or a reply forwarded.
    #[inline(always)]
    pub fn slot(&self) -> u32 {
        if self.reply {
            Reason::REPLIES_SLOT
        } else {
            Reason::FORWARDED_SLOT
        }
    }
}

/// A rewritten frame leaves from the interface it came in on (XDP_TX), or is redirected to
/// the one its destination is reached through.
#[inline(always)]
pub fn forwarded(sent: &Sent, ingress: u32, bytes: usize) -> u32 {
    bump_global(sent.slot(), bytes);
    if let Some(c) = REAL_COUNTERS.get_ptr_mut(sent.real_id) {
        // SAFETY: this CPU's slot: programs on other CPUs have their own, and one program
        // runs on a CPU at a time (see `maps::scratch`). Userspace reads it, and zeroes it
        // when the real id is given anew: a stray packet's increment racing with that is
        // kept or lost, a count either way. (A retired real's reply entries, which are not
        // checked against REALS, count into its id until they expire; ids are given anew
        // only after all 16 383 others, so such counts are rare, and at worst misplaced.)
        let c = unsafe { &mut *c };
        bump(
            if sent.reply {
                &mut c.replies
            } else {
                &mut c.requests
            },
            bytes,
        );
    }
    if sent.egress == ingress || sent.egress == 0 {
        return XDP_TX;
    }
    // SAFETY: a helper taking plain integers. With flags 0 it returns XDP_REDIRECT; an
    // interface that cannot take the frame drops it in the kernel's redirect path.
    unsafe { bpf_redirect(sent.egress, 0) as u32 }
}

/// A new flow to the real `real_id` was created on this CPU; `picked_up`: mid-stream (a TCP
/// packet without SYN found no entry).
#[inline(always)]
pub fn new_flow(real_id: u32, picked_up: bool) {
    if let Some(c) = REAL_COUNTERS.get_ptr_mut(real_id) {
        // SAFETY: this CPU's slot, as in `forwarded`.
        let c = unsafe { &mut *c };
        c.new_flows += 1;
        c.picked_up += u64::from(picked_up);
    }
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
        // SAFETY: this CPU's slot: programs on other CPUs have their own, one program runs
        // on a CPU at a time (see `maps::scratch`), and userspace only reads it.
        bump(unsafe { &mut *c }, bytes);
    }
}

#[inline(always)]
fn bump(c: &mut Counter, bytes: usize) {
    c.packets += 1;
    c.bytes += bytes as u64;
}
