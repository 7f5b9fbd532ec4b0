//! Stage 3: pick the real for a new flow, by the VIP's scheduler: Maglev over the flow hash
//! (or the client address), the CPU's next turn in the weighted round-robin sequence, or the
//! up real with the fewest active flows for its weight.

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_smp_processor_id, bpf_loop},
};
use lb_common::{
    RealEntry, Reason, VipMeta, FLOW_HASH_SEED, HASH_DESTINATION_PORT, HASH_NO_SOURCE_PORT,
    MAX_LEASTCONN_REALS, NO_SLOT, RR_CPU_STRIDE, SCHED_LEASTCONN, SCHED_ROUNDROBIN, SCHED_SOURCE,
    SCHED_STATIC_RR,
};

use crate::{
    hash,
    maps::{ACTIVE, REALS, RINGS, RR_CURSOR, SWEPT},
    parse::Parsed,
};

/// The real's id and entry, and the ring slot it was picked by (`NO_SLOT`: leastconn).
#[inline(always)]
pub fn real(p: &Parsed, vip: &VipMeta) -> Result<(u32, RealEntry, u32), Reason> {
    let size = vip.ring_size;
    if size == 0 {
        return Err(Reason::NoReal);
    }
    let slot = match vip.sched {
        // Each CPU from its own place in the sequence, so that at low rates the first real of
        // the sequence does not take every CPU's first flow; each CPU's split stays exact.
        SCHED_ROUNDROBIN | SCHED_STATIC_RR => {
            // SAFETY: a helper without arguments.
            let cpu = unsafe { bpf_get_smp_processor_id() };
            next_turn(vip.vip_id).wrapping_add(cpu.wrapping_mul(RR_CPU_STRIDE)) % size
        }
        SCHED_LEASTCONN => return least_loaded(p, vip).map(|(id, real)| (id, real, NO_SLOT)),
        SCHED_SOURCE => hash::flow_fields(&p.flow, &hash::SOURCE_ADDRESS, FLOW_HASH_SEED) % size,
        _ => flow_hash(p, vip) % size,
    };
    let real_id = ring_slot(vip, slot)?;
    // A real the ring names is in it by its weight: a draining one here is a ring about to be
    // replaced (userspace drains a real, then swaps in the ring without it); better it than
    // no real. A real taken down is out of every ring before it is marked down.
    match REALS.get(real_id) {
        Some(real) if real.keeps_flows() => Ok((real_id, *real, slot)),
        _ => Err(Reason::NoReal),
    }
}

/// The flow hash over the fields the VIP hashes.
#[inline(always)]
fn flow_hash(p: &Parsed, vip: &VipMeta) -> u32 {
    let fields = match vip.hash {
        HASH_NO_SOURCE_PORT => &hash::NO_SOURCE_PORT,
        HASH_DESTINATION_PORT => &hash::DESTINATION_PORT,
        _ => &hash::FIVE_TUPLE,
    };
    hash::flow_fields(&p.flow, fields, FLOW_HASH_SEED)
}

#[inline(always)]
fn ring_slot(vip: &VipMeta, slot: u32) -> Result<u32, Reason> {
    match RINGS.get_value(vip.vip_id, &slot) {
        Some(id) => Ok(*id),
        None => Err(Reason::NoReal),
    }
}

/// This CPU's next position in the VIP's round-robin sequence.
#[inline(always)]
fn next_turn(vip_id: u32) -> u32 {
    match RR_CURSOR.get_ptr_mut(vip_id) {
        // SAFETY: this CPU's own slot; one program runs on a CPU at a time (see
        // `maps::scratch`).
        Some(cursor) => unsafe {
            let turn = *cursor;
            *cursor = turn.wrapping_add(1);
            turn
        },
        None => 0,
    }
}

/// The up real of the VIP's candidates (its ring) with the fewest active flows per unit of
/// weight. Ties go to the first found, and the search starts at a slot picked by the flow
/// hash, so equal reals share new flows instead of the first taking them all. The loop is
/// `bpf_loop`'s: the verifier checks its body once, not once per candidate.
#[inline(always)]
fn least_loaded(p: &Parsed, vip: &VipMeta) -> Result<(u32, RealEntry), Reason> {
    let n = if vip.ring_size < MAX_LEASTCONN_REALS {
        vip.ring_size
    } else {
        MAX_LEASTCONN_REALS
    };
    let mut search = Search {
        vip_id: vip.vip_id,
        n,
        start: flow_hash(p, vip) % n,
        best_id: 0,
        best_load: 0,
        best_weight: 0,
    };
    // SAFETY: bpf_loop calls `weigh` n times with a pointer to `search`, which outlives it.
    unsafe {
        bpf_loop(
            n,
            weigh as *const () as *mut c_void,
            &mut search as *mut Search as *mut c_void,
            0,
        )
    };
    match REALS.get(search.best_id) {
        Some(real) if search.best_weight != 0 => Ok((search.best_id, *real)),
        _ => Err(Reason::NoReal),
    }
}

/// The state of a leastconn search.
#[repr(C)]
struct Search {
    vip_id: u32,
    /// Candidates, and the slot to start at.
    n: u32,
    start: u32,
    best_id: u32,
    best_load: u64,
    /// 0: none found yet.
    best_weight: u64,
}

/// One step of the leastconn search: weighs the candidate `index` slots past the start.
extern "C" fn weigh(index: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes the `Search` least_loaded handed it.
    let s = unsafe { &mut *(ctx as *mut Search) };
    if s.n == 0 {
        return 1;
    }
    let mut slot = s.start.wrapping_add(index);
    if slot >= s.n {
        slot -= s.n;
    }
    let id = RINGS.get_value(s.vip_id, &slot).copied().unwrap_or(0);
    let weight = match REALS.get(id) {
        Some(real) if real.is_up() => u64::from(real.weight()),
        _ => 0,
    };
    let load = active(id);
    // load / weight < best_load / best_weight, without division; any beats none.
    if weight != 0 && (s.best_weight == 0 || load * s.best_weight < s.best_load * weight) {
        s.best_id = id;
        s.best_load = load;
        s.best_weight = weight;
    }
    0
}

/// A real's active leastconn flows: started and not ended, less those that ended idle. Read
/// as signed, so a count a race took below zero reads as none, not as 2^64.
#[inline(always)]
fn active(real_id: u32) -> u64 {
    let started = ACTIVE.get(real_id).copied().unwrap_or(0) as i64;
    let swept = SWEPT.get(real_id).copied().unwrap_or(0) as i64;
    let n = started.wrapping_sub(swept);
    if n < 0 {
        0
    } else {
        n as u64
    }
}

/// Counts a leastconn flow started (+1) or ended (−1) on `real_id`.
#[inline(always)]
pub fn count(real_id: u32, delta: i64) {
    if let Some(c) = ACTIVE.get_ptr_mut(real_id) {
        // SAFETY: a pointer into the array's value; an atomic add whose result is unused
        // (BPF_XADD, which every BPF CPU version has), as CPUs update the same counter.
        // `AtomicU64::fetch_add` does not exist for this target: it returns the old value.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                c,
                delta as u64,
            );
        }
    }
}
