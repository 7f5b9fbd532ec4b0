//! Flow logs: an event per new flow, and per TCP flow's end (its first FIN or RST), to the
//! FLOW_EVENTS ring buffer, when userspace turned them on (FLOW_LOG), within each CPU's rate
//! (FLOW_LOG_BUDGET): an event over the rate, or into a full ring, is dropped and counted,
//! never waited for. Only new flows and FIN/RST segments come here, so the established
//! path never does.

use core::ptr::addr_of_mut;

use aya_ebpf::helpers::bpf_get_smp_processor_id;
use lb_common::{Flow, FlowKey, FlowLogBudget, EVENT_END, EVENT_NEW, FLOW_REPLY, NO_SLOT};

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

/// Logs the end of the flow whose entry for `key` is `flow` (either direction's), `how`
/// being `END_FIN` or `END_RST`, if flow logs are on.
#[inline(always)]
pub fn flow_end(key: &FlowKey, flow: &Flow, how: u8) {
    match FLOW_LOG.get(0) {
        Some(s) if s.enabled != 0 => send_end(key, flow, how, s.per_cpu_per_sec),
        _ => {}
    }
}

/// This CPU's budget, when it has room for one more event this second (which it then
/// counts as used); `None` when the event is over the rate (counted).
#[inline(always)]
fn take_budget(now: u64, rate: u32) -> Option<&'static mut FlowLogBudget> {
    let budget = FLOW_LOG_BUDGET.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; one program runs on a CPU at a time (see `maps::scratch`),
    // and userspace only reads it.
    let budget = unsafe { &mut *budget };
    if now.saturating_sub(budget.window_ns) >= WINDOW_NS {
        budget.window_ns = now;
        budget.used = 0;
    }
    if budget.used >= u64::from(rate) {
        budget.over_rate += 1;
        return None;
    }
    Some(budget)
}

/// Not inlined, and the event is written in place in the ring buffer (never on the stack).
#[inline(never)]
fn send(key: &FlowKey, flow: &Flow, d: &New, rate: u32) {
    let now = d.now;
    let Some(budget) = take_budget(now, rate) else {
        return;
    };
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

/// As [`send`], for a flow's end. A request entry (client → VIP, rewritten to the real)
/// names the three ends as they are; a reply entry (real → client or SNAT address,
/// rewritten from the VIP to the client) names them the other way round.
#[inline(never)]
fn send_end(key: &FlowKey, flow: &Flow, how: u8, rate: u32) {
    let now = crate::flow::now();
    let Some(budget) = take_budget(now, rate) else {
        return;
    };
    let Some(mut entry) = FLOW_EVENTS.reserve(0) else {
        budget.ring_full += 1;
        return;
    };
    let e = entry.as_mut_ptr();
    let reply = flow.flags & FLOW_REPLY != 0;
    // SAFETY: as in `send`: the reserved entry, every field written once before submitting.
    unsafe {
        addr_of_mut!((*e).at_ns).write(now);
        if reply {
            addr_of_mut!((*e).client).write(flow.dst);
            addr_of_mut!((*e).client_port).write(flow.dport);
            addr_of_mut!((*e).vip).write(flow.src);
            addr_of_mut!((*e).vip_port).write(flow.sport);
            addr_of_mut!((*e).real).write(key.src);
            addr_of_mut!((*e).real_port).write(key.sport);
        } else {
            addr_of_mut!((*e).client).write(key.src);
            addr_of_mut!((*e).client_port).write(key.sport);
            addr_of_mut!((*e).vip).write(key.dst);
            addr_of_mut!((*e).vip_port).write(key.dport);
            addr_of_mut!((*e).real).write(flow.dst);
            addr_of_mut!((*e).real_port).write(flow.dport);
        }
        addr_of_mut!((*e).proto).write(key.proto);
        addr_of_mut!((*e).family).write(key.family);
        addr_of_mut!((*e).mode).write(0);
        addr_of_mut!((*e).sched).write(0);
        addr_of_mut!((*e).kind).write(EVENT_END);
        addr_of_mut!((*e).how).write(how);
        addr_of_mut!((*e).slot).write(NO_SLOT);
        addr_of_mut!((*e).real_id).write(flow.real_id);
        addr_of_mut!((*e).vip_id).write(flow.vip_id);
        addr_of_mut!((*e).cpu).write(bpf_get_smp_processor_id());
        addr_of_mut!((*e)._pad).write([0; 4]);
    }
    entry.submit(0);
    budget.used += 1;
    budget.sent += 1;
}
