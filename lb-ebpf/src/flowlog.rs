//! Flow logs: an event per new flow to the FLOW_EVENTS ring buffer, when userspace turned
//! them on (FLOW_LOG), within each CPU's rate (FLOW_LOG_BUDGET): an event over the rate, or
//! into a full ring, is dropped and counted, never waited for. Only new flows log, so the
//! established path never comes here.

use core::ptr::addr_of_mut;

use aya_ebpf::helpers::bpf_get_smp_processor_id;
use lb_common::{Flow, FlowKey, EVENT_NEW};

use crate::{
    flow::New,
    maps::{FLOW_EVENTS, FLOW_LOG, FLOW_LOG_BUDGET},
};

/// One second, in ns: the rate limit's window.
const WINDOW_NS: u64 = 1_000_000_000;

/// Logs the new flow of `key` (its request entry `flow`) if flow logs are on.
#[inline(always)]
pub fn new_flow(key: &FlowKey, flow: &Flow, new: &New) {
    match FLOW_LOG.get(0) {
        Some(s) if s.enabled != 0 => send(key, flow, new, s.per_cpu_per_sec),
        _ => {}
    }
}

/// Not inlined, and the event is written in place in the ring buffer (never on the stack).
#[inline(never)]
fn send(key: &FlowKey, flow: &Flow, d: &New, rate: u32) {
    let now = d.now;
    let Some(budget) = FLOW_LOG_BUDGET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot; one program runs on a CPU at a time (see `maps::scratch`),
    // and userspace only reads it.
    let budget = unsafe { &mut *budget };
    if now.saturating_sub(budget.window_ns) >= WINDOW_NS {
        budget.window_ns = now;
        budget.used = 0;
    }
    if budget.used >= u64::from(rate) {
        budget.over_rate += 1;
        return;
    }
    let Some(mut entry) = FLOW_EVENTS.reserve(0) else {
        budget.ring_full += 1;
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved entry, a FlowEvent's size and 8-aligned, ours until
    // submitted; each field is written once through a raw place (no reference to the
    // uninitialised memory), and every field is written before it is submitted.
    unsafe {
        addr_of_mut!((*e).at_ns).write(now);
        addr_of_mut!((*e).client).write(key.src);
        addr_of_mut!((*e).vip).write(key.dst);
        addr_of_mut!((*e).real).write(flow.dst);
        addr_of_mut!((*e).client_port).write(key.sport);
        addr_of_mut!((*e).vip_port).write(key.dport);
        addr_of_mut!((*e).real_port).write(flow.dport);
        addr_of_mut!((*e).proto).write(key.proto);
        addr_of_mut!((*e).family).write(key.family);
        addr_of_mut!((*e).mode).write(d.mode);
        addr_of_mut!((*e).sched).write(d.sched);
        addr_of_mut!((*e).kind).write(EVENT_NEW);
        addr_of_mut!((*e).how).write(d.how);
        addr_of_mut!((*e).slot).write(d.slot);
        addr_of_mut!((*e).real_id).write(flow.real_id);
        addr_of_mut!((*e).vip_id).write(flow.vip_id);
        addr_of_mut!((*e).cpu).write(bpf_get_smp_processor_id());
        addr_of_mut!((*e)._pad).write([0; 4]);
    }
    entry.submit(0);
    budget.used += 1;
    budget.sent += 1;
}
