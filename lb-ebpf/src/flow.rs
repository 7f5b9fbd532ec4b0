//! The flow table of the stateful modes (nat, router, one-arm): a new flow gets two entries,
//! one per direction, each saying how to rewrite its packets. The two live and die together:
//! a packet either way refreshes both, the first answer marks both answered, a FIN shortens
//! both timeouts, a RST removes both; idle ones expire. One-arm flows get a source from the
//! SNAT pool.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_EXIST, BPF_NOEXIST},
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_coarse_ns},
};
use lb_common::{
    mode_is_stateful, Flow, FlowKey, IfaceConfig, Reason, SnatPool, VipMeta, END_FIN, END_RST,
    FLOW_ANSWERED, FLOW_CLOSING, FLOW_COUNTED, FLOW_DEC_TTL, FLOW_DSR, FLOW_FIN_SEEN, FLOW_ONE_WAY,
    FLOW_REPLY, FLOW_SET_SRC_MAC, FLOW_TIMESTAMPS, FLOW_TUNNEL, HOW_FRESH, HOW_PICKED_UP,
    HOW_REOPENED, MAX_POOL_ADDRS, MODE_DSR, MODE_NAT, MODE_ONE_ARM, MODE_ROUTER, MODE_TUNNEL,
    PROTO_TCP, SCHED_LEASTCONN, SNAT_CLIENT_TRIES, SNAT_TRIES,
};

use crate::{
    emit, flowlog, lookup,
    maps::{Scratch, FLOWS, OPEN, REALS, SNAT_CURSOR, SNAT_POOLS},
    parse::{Parsed, TCP_FIN, TCP_RST, TCP_SYN},
    schedule,
};

const EEXIST: i32 = -17;
/// A flow's last-seen time is refreshed at most this often, so that a busy flow does not
/// write its shared entries on every packet from every CPU. Well under the shortest timeout
/// userspace allows (1 s), so a flow is never found expired between its packets.
pub const REFRESH_NS: u64 = 200_000_000;

/// CLOCK_MONOTONIC at the last tick: flow times need milliseconds, not a clock read (the
/// precise helper reads the TSC: a tenth of an established flow's cost).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Copies the entry of `key` to `out` if it has not expired, and refreshes it and its
/// partner. Not inlined: the partner's key needs stack of its own.
///
/// FLOWS is shared by all CPUs, and its entries are written in place: `last_seen_ns` (a plain
/// store, here and in [`mark_answered`]), flag bits (an atomic OR, [`set_flags`]), `dst_mac`
/// ([`real_keeps`]). A pointer from the map points into its preallocated value memory, valid
/// while the program runs; an entry another CPU deletes meanwhile may be reused for another
/// flow under it (the LRU map recycles elements at once), which at worst refreshes or marks
/// that flow once.
#[inline(never)]
pub fn live(key: &FlowKey, now: u64, out: &mut Flow) -> bool {
    let Some(entry) = FLOWS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: `entry` points into the map's value memory (see above). Other CPUs may write
    // fields meanwhile; the copy's loads are aligned words, each taken before or after such a
    // write, so every field holds a value the flow had (but `dst_mac` while it changes: see
    // `real_keeps`).
    *out = unsafe { entry.read() };
    if out.expired(now) {
        return false;
    }
    if now.saturating_sub(out.last_seen_ns) > REFRESH_NS {
        let partner = (out.flags & FLOW_ONE_WAY == 0).then(|| partner_key(key, out));
        refresh(entry, partner.as_ref(), now);
        out.last_seen_ns = now;
    }
    true
}

/// Stores `now` as the last-seen time of the FLOWS entry `entry` and of its partner's,
/// under `partner` (none for a flow one way only).
#[inline(always)]
pub fn refresh(entry: *mut Flow, partner: Option<&FlowKey>, now: u64) {
    // SAFETY: `entry` points into the map's value memory (see `live`); an aligned 8-byte
    // store. Another CPU may store its own `now` at the same time: either is the flow's last
    // packet to within the refresh interval.
    unsafe { (*entry).last_seen_ns = now };
    // A flow one way only (UDP to a sink, a server pushing) keeps its other entry, and with
    // it a one-arm port, alive too.
    if let Some(key) = partner {
        if let Some(p) = FLOWS.get_ptr_mut(key) {
            // SAFETY: as above.
            unsafe { (*p).last_seen_ns = now };
        }
    }
}

/// The key of the other direction's entry of `flow`, the entry of `key`.
#[inline(always)]
pub fn partner_key(key: &FlowKey, flow: &Flow) -> FlowKey {
    flow.rewritten_key(key.proto, key.family).reversed()
}

/// Marks a flow answered, the first time a reply crosses its reply entry `key` (`flow`, its
/// copy): from then on both entries live the VIP's full timeout. Every other packet costs a
/// test of the copy's flags, not a call.
#[inline(always)]
pub fn answered(key: &FlowKey, flow: &Flow) {
    if flow.flags & (FLOW_REPLY | FLOW_ANSWERED) == FLOW_REPLY {
        mark_answered(key, flow);
    }
}

/// [`answered`]'s first time. Not inlined: the partner's key needs stack of its own.
#[inline(never)]
fn mark_answered(key: &FlowKey, flow: &Flow) {
    if let Some(entry) = FLOWS.get_ptr_mut(key) {
        set_flags(entry, FLOW_ANSWERED);
    }
    if let Some(partner) = partner(key, flow) {
        // SAFETY: a pointer into the map's value memory (see `live`); an aligned 8-byte
        // store, which another CPU may make at the same time with its own `now`.
        unsafe { (*partner).last_seen_ns = now() };
        set_flags(partner, FLOW_ANSWERED);
    }
}

/// The FLOWS entry of the other direction of `flow`, the entry of `key`.
#[inline(always)]
fn partner(key: &FlowKey, flow: &Flow) -> Option<*mut Flow> {
    FLOWS.get_ptr_mut(&flow.rewritten_key(key.proto, key.family).reversed())
}

/// Sets `bits` in the flags of the FLOWS entry `entry`, unless they are set already. CPUs
/// share the entry: a plain read-modify-write by two CPUs setting different bits at once
/// would lose one (a lost FLOW_CLOSING keeps a closed flow for the full timeout), so the
/// bits go in with one atomic OR, made only when a bit is missing (once per flow and bit).
/// True when this call found a bit missing and set it: of CPUs racing to, rarely more than
/// one (both may find it missing before either sets it).
#[inline(always)]
fn set_flags(entry: *mut Flow, bits: u32) -> bool {
    // SAFETY: `entry` points into the map's value memory (see `live`); `flags` is an
    // aligned u32 (asserted in lb-common). The read is a plain aligned load: a bit another
    // CPU sets meanwhile is either seen (nothing to do) or set again by the OR below, which
    // is atomic, so no CPU's bit is lost. Relaxed: the bit publishes no other memory.
    unsafe {
        let flags = core::ptr::addr_of_mut!((*entry).flags);
        if *flags & bits != bits {
            // The OR's old value is not used: the BPF target lowers this OR without a fetch.
            core::intrinsics::atomic_or::<u32, u32, { core::intrinsics::AtomicOrdering::Relaxed }>(
                flags, bits,
            );
            return true;
        }
        false
    }
}

/// Schedules the new flow of `vip` that the packet `scratch.parsed` starts, which came in on
/// `ingress` (where the LB is `iface`), creates its entries (a stateful flow's two, a dsr or
/// tunnel flow's one) and writes the request direction's to `scratch.flow`. `reopen`: the
/// new flow replaces one of the same tuple (a SYN on a closing flow, a flow whose real is
/// gone). Not inlined: a function of its own has a stack frame of its own, which the
/// verifier's 512-byte limit counts only on the paths that call it.
#[inline(never)]
pub fn create(
    vip: &VipMeta,
    iface: &IfaceConfig,
    ingress: u32,
    scratch: &mut Scratch,
    reopen: bool,
) -> Result<(), Reason> {
    let now = now();
    let Scratch {
        parsed: p,
        flow: out,
        reply,
        key,
        new,
        flood_guarded,
        ..
    } = scratch;
    let p = &*p;
    new.created = 0;
    let (real_id, real, slot) = schedule::real(p, vip)?;
    let egress = if real.ifindex() == 0 {
        ingress
    } else {
        real.ifindex()
    };
    let out_mac = if egress == ingress {
        iface.mac
    } else {
        // A real behind an interface the LB is not attached to cannot be sent to.
        lookup::iface(egress).ok_or(Reason::EgressNotAttached)?.mac
    };
    let stateful = mode_is_stateful(vip.mode);
    let mut flags = match vip.mode {
        MODE_ROUTER => FLOW_SET_SRC_MAC | FLOW_DEC_TTL,
        MODE_ONE_ARM => FLOW_SET_SRC_MAC,
        // nat bridges: frames keep their source MAC between two segments. Sent back out of
        // the segment they came from, they must not: a switch would learn the client's MAC
        // on the LB's port and send the client's replies there.
        MODE_NAT if egress == ingress => FLOW_SET_SRC_MAC,
        MODE_NAT => 0,
        // dsr and tunnel never see the answers: their flows live the full timeout at once.
        _ => FLOW_SET_SRC_MAC | FLOW_ONE_WAY | FLOW_ANSWERED,
    };
    if vip.sched == SCHED_LEASTCONN {
        flags |= FLOW_COUNTED;
    }
    // The established path's mark of a dsr or tunnel flow.
    flags |= direct_mode_bit(vip.mode);
    let (timeout, short_timeout) = if p.flow.proto == PROTO_TCP {
        (vip.timeouts.tcp, vip.timeouts.tcp_fin)
    } else {
        (vip.timeouts.udp, vip.timeouts.udp)
    };
    *out = Flow {
        src: p.flow.src,
        dst: real.addr_bytes(),
        sport: p.flow.sport,
        dport: real.port_or(p.flow.dport),
        dst_mac: real.mac(),
        src_mac: out_mac,
        flags,
        egress_ifindex: egress,
        vip_id: vip.vip_id,
        real_id,
        timeout,
        short_timeout,
        last_seen_ns: now,
    };
    // No SYN: the flow's entry was lost (evicted, expired idle, older than the LB).
    let picked_up = p.flow.proto == PROTO_TCP && p.tcp_flags & TCP_SYN == 0;
    *new = New {
        now,
        slot,
        mode: vip.mode,
        sched: vip.sched,
        how: if reopen { HOW_REOPENED } else { HOW_FRESH }
            | if picked_up { HOW_PICKED_UP } else { HOW_FRESH },
        stateful: u8::from(stateful),
        created: 0,
    };
    if !stateful {
        if *flood_guarded != 0 {
            // Forwarded by the ring alone: no entry, nothing counted as created.
            return Ok(());
        }
        return insert_request(&p.flow, key, out, new);
    }
    // Replies go back where the request came from, to the MAC it came from, as from the VIP.
    *reply = Flow {
        src: p.flow.dst,
        dst: p.flow.src,
        sport: p.flow.dport,
        dport: p.flow.sport,
        dst_mac: p.src_mac,
        src_mac: iface.mac,
        flags: flags | FLOW_REPLY,
        egress_ifindex: ingress,
        ..*out
    };
    // The reply entry goes in first: once a request leaves, its answer must find it.
    *key = reply_key(p, out);
    if vip.mode == MODE_ONE_ARM {
        // Its pool tuple is claimed by `finish_one_arm`, which the pipeline calls next.
        return Ok(());
    }
    claim(key, reply, now)?;
    insert_request(&p.flow, key, out, new)
}

/// The rest of `create` for a one-arm flow (`scratch.snat_pending`): marks it
/// `FLOW_TIMESTAMPS` if its SYN had them, claims its pool tuple for the reply entry, then
/// inserts the request entry and logs the new flow. Called from
/// the pipeline's own frame, not from `create`: the verifier walks a function once per state
/// it is called in, and `create` is walked in many (one per mode and path into it), each of
/// which would walk the allocator's sixteen tries again; and the flow stage's chain of calls
/// has no stack left for it.
#[inline(never)]
pub fn finish_one_arm(scratch: &mut Scratch) -> Result<(), Reason> {
    let Scratch {
        parsed: p,
        flow: out,
        reply,
        key,
        new,
        syn_timestamps,
        ..
    } = scratch;
    if *syn_timestamps != 0 {
        out.flags |= FLOW_TIMESTAMPS;
        reply.flags |= FLOW_TIMESTAMPS;
    }
    claim_snat(out.vip_id, key, out, reply, new.now)?;
    insert_request(&p.flow, key, out, new)?;
    if new.created != 0 {
        flowlog::new_flow(&p.flow, out, new);
    }
    Ok(())
}

/// Puts back the other entry of the live flow entry in `scratch.flow` when the table lost
/// it: the kernel's LRU evicts either entry of a flow, and without the other one the flow's
/// packets that way would find none. Built as `create` builds it, from the packet in
/// `scratch.parsed` (which came in on `ingress`) turned around: a reply entry sends answers
/// back where this request came from (its MAC, this interface); a request entry sends to the
/// real by its REALS entry, out where the reply entry's answers came in. Not inlined: it runs
/// only behind the established path's check.
#[inline(never)]
pub fn restore_partner(scratch: &mut Scratch, ingress: u32) {
    let Scratch {
        parsed: p,
        flow,
        reply: other,
        key,
        ..
    } = scratch;
    if flow.flags & FLOW_ONE_WAY != 0 {
        return;
    }
    *key = partner_key(&p.flow, flow);
    if FLOWS.get_ptr(&*key).is_some() {
        return;
    }
    let (dst_mac, egress) = if flow.flags & FLOW_REPLY == 0 {
        (p.src_mac, ingress)
    } else {
        let Some(real) = REALS.get(flow.real_id) else {
            return;
        };
        let egress = if real.ifindex() == 0 {
            flow.egress_ifindex
        } else {
            real.ifindex()
        };
        (real.mac(), egress)
    };
    let Some(iface) = lookup::iface(egress) else {
        return;
    };
    *other = Flow {
        src: p.flow.dst,
        dst: p.flow.src,
        sport: p.flow.dport,
        dport: p.flow.sport,
        dst_mac,
        src_mac: iface.mac,
        // Which sides closed is each entry's own: the rebuilt one knows none.
        flags: (flow.flags ^ FLOW_REPLY) & !FLOW_FIN_SEEN,
        egress_ifindex: egress,
        last_seen_ns: now(),
        ..*flow
    };
    match FLOWS.insert(&*key, &*other, BPF_NOEXIST as u64) {
        // Put back, or another CPU (or this flow's next packet) put one there first.
        Ok(()) | Err(EEXIST) => {}
        // Not put back (a full table that evicted nothing): the next refresh tries again.
        Err(_errno) => {}
    }
}

/// [`FLOW_DSR`] or [`FLOW_TUNNEL`] for a flow of `mode`, 0 for a stateful one. Computed
/// without a branch (FLOW_TUNNEL is FLOW_DSR one bit up): a branch per mode here would
/// multiply the states the verifier walks through the rest of `create`.
#[inline(always)]
fn direct_mode_bit(mode: u8) -> u32 {
    const _: () = assert!(FLOW_TUNNEL == FLOW_DSR << 1);
    const _: () = assert!(MODE_DSR == 1 && MODE_TUNNEL == 2 && FLOW_DSR == 1 << 7);
    // dsr 1 → bit 7, tunnel 2 → bit 8; the stateful modes (3..=5) → 0 after the mask. The
    // shift stays below 32 for any mode byte a VIP entry holds (userspace writes 1..=5).
    let m = (mode & 15) as u32;
    (1u32 << (m + 6)) & (FLOW_DSR | FLOW_TUNNEL)
}

/// What is known of a new flow while its entries go in, and what its flow log event says.
/// In the per-CPU scratch space: the flow's creation is the deepest call chain the verifier
/// counts against its 512 bytes of stack.
#[derive(Clone, Copy)]
pub struct New {
    pub now: u64,
    /// The ring slot the real was picked by, or `NO_SLOT`.
    pub slot: u32,
    pub mode: u8,
    pub sched: u8,
    /// `HOW_*` bits: replacing a flow of the same tuple, picked up mid-stream; none: fresh.
    pub how: u8,
    /// Non-zero: nat, router or one-arm (it has a reply entry).
    pub stateful: u8,
    /// Non-zero once this CPU put the flow in (not another CPU's, adopted): it is counted,
    /// and logged by the pipeline (`flowlog`, called from there to keep this chain short).
    pub created: u8,
}

impl New {
    /// It replaces a live flow of the same tuple (a SYN on a closing flow, a flow whose
    /// real left).
    fn replaces(&self) -> bool {
        self.how & HOW_REOPENED != 0
    }
}

/// Inserts the request entry `out` of a new flow under `request_key` (over a flow it
/// replaces when `reopen`), and counts it. `claimed`: the reply entry a stateful flow
/// claimed, taken back if another CPU's flow wins.
#[inline(always)]
fn insert_request(
    request_key: &FlowKey,
    claimed: &FlowKey,
    out: &mut Flow,
    new: &mut New,
) -> Result<(), Reason> {
    let flags = if new.replaces() { BPF_ANY } else { BPF_NOEXIST };
    match FLOWS.insert(request_key, &*out, flags as u64) {
        Ok(()) => {
            started(request_key, out, new);
            Ok(())
        }
        // Another CPU created this flow meanwhile (its first packets arrived on two CPUs).
        // Its entries win (and it counts the flow); the reply entry claimed here goes,
        // unless it is the same one.
        Err(EEXIST) => adopt(request_key, claimed, out, new),
        Err(_errno) => Err(Reason::FlowInsert),
    }
}

/// Takes the live entry of `request_key` that another CPU created for the same flow into
/// `out`, and removes the reply entry `claimed` this CPU claimed for it, if it differs from
/// that flow's own. An expired entry is replaced by `out` instead.
#[inline(always)]
fn adopt(
    request_key: &FlowKey,
    claimed: &FlowKey,
    out: &mut Flow,
    new: &mut New,
) -> Result<(), Reason> {
    let Some(entry) = FLOWS.get_ptr(request_key) else {
        // Gone again (evicted): this CPU's flow stands.
        return stand(request_key, out, new);
    };
    // SAFETY: a pointer into the map's value memory (see `live`), copied: fields other CPUs
    // write meanwhile are each taken before or after the write.
    let theirs = unsafe { *entry };
    if theirs.expired(new.now) {
        // An old flow of the same tuple, expired but not yet evicted: this one replaces it.
        return stand(request_key, out, new);
    }
    let same = theirs.src == claimed.dst
        && theirs.dst == claimed.src
        && theirs.sport == claimed.dport
        && theirs.dport == claimed.sport;
    if new.stateful != 0 && !same {
        // Not there any more is fine: nothing else can hold a key claimed this instant.
        let _gone = FLOWS.remove(claimed).is_ok();
    }
    *out = theirs;
    Ok(())
}

/// Puts this CPU's request entry `out` in over whatever `key` holds, and counts it.
#[inline(always)]
fn stand(key: &FlowKey, out: &Flow, new: &mut New) -> Result<(), Reason> {
    FLOWS
        .insert(key, out, BPF_ANY as u64)
        .map_err(|_errno| Reason::FlowInsert)?;
    started(key, out, new);
    Ok(())
}

/// The new flow `flow` of `request_key` is in: counted for its real, and as active on it
/// when it is a leastconn flow.
#[inline(always)]
fn started(request_key: &FlowKey, flow: &Flow, new: &mut New) {
    emit::new_flow(flow.real_id, new.how & HOW_PICKED_UP != 0);
    new.created = 1;
    start_count(request_key, flow);
}

/// Counts the new leastconn flow `flow` of `request_key` active on its real. An OPEN entry
/// of the same tuple belongs to the flow this one replaces (expired, closing, or whose real
/// went away): that one's count ends first.
#[inline(always)]
fn start_count(request_key: &FlowKey, flow: &Flow) {
    if flow.flags & FLOW_COUNTED == 0 {
        return;
    }
    let mut inserted = OPEN.insert(request_key, flow.real_id, BPF_NOEXIST as u64);
    if inserted == Err(EEXIST) {
        end_count(request_key);
        inserted = OPEN.insert(request_key, flow.real_id, BPF_NOEXIST as u64);
    }
    if inserted.is_ok() {
        schedule::count(flow.real_id, 1);
    }
}

/// The key the answers to `request`'s packets arrive with.
#[inline(always)]
fn reply_key(p: &Parsed, request: &Flow) -> FlowKey {
    request
        .rewritten_key(p.flow.proto, p.flow.family)
        .reversed()
}

/// Inserts the reply entry `reply` under `key` unless a live entry of another flow holds it.
#[inline(always)]
fn claim(key: &FlowKey, reply: &Flow, now: u64) -> Result<(), Reason> {
    match FLOWS.insert(key, reply, BPF_NOEXIST as u64) {
        Ok(()) => Ok(()),
        Err(EEXIST) => {
            // Free to take: this very flow's own (its request entry expired or was evicted,
            // and it is being created again), or no live flow holds it.
            let free = match FLOWS.get_ptr(key) {
                None => true,
                // SAFETY: a pointer into the map's value memory (see `live`). The addresses
                // and ports compared are never written in place; the times and flags another
                // CPU writes meanwhile are read before or after the write.
                Some(held) => unsafe {
                    same_peer(&*held, reply) || claimable(key, &*held, reply, now)
                },
            };
            if !free {
                return Err(Reason::FlowClash);
            }
            if FLOWS.insert(key, reply, BPF_ANY as u64).is_err() {
                return Err(Reason::FlowInsert);
            }
            Ok(())
        }
        Err(_errno) => Err(Reason::FlowInsert),
    }
}

#[inline(always)]
fn same_peer(a: &Flow, b: &Flow) -> bool {
    a.src == b.src && a.dst == b.dst && a.sport == b.sport && a.dport == b.dport
}

/// Whether the reply entry `held`, another flow's, under `key` (a pool tuple towards a
/// real), may become `reply`'s, a new flow's: when the other flow is over for the real.
/// That is, when it expired (idle past its timeout, or its FIN timeout after a FIN) or its
/// request entry is gone or translates to another tuple; or, for the same client to the same
/// VIP address with TCP timestamps on both SYNs, as soon as both sides sent their FIN: the
/// real holds the tuple in TIME_WAIT (or has closed it), and takes this client's new SYN
/// there, its timestamp being newer. (Another client's would not be: a real answers a SYN
/// with an older timestamp in TIME_WAIT with the old connection's ACK, and the connection
/// stalls until the client retries.) Not the same client: the FIN timeout must pass.
#[inline(always)]
fn claimable(key: &FlowKey, held: &Flow, reply: &Flow, now: u64) -> bool {
    const CLOSED_WITH_TIMESTAMPS: u32 = FLOW_FIN_SEEN | FLOW_TIMESTAMPS;
    let same_client = reply.flags & FLOW_TIMESTAMPS != 0
        && held.flags & CLOSED_WITH_TIMESTAMPS == CLOSED_WITH_TIMESTAMPS
        && held.dst == reply.dst
        && held.src == reply.src;
    if !same_client && !held.expired(now) {
        return false;
    }
    let request = held.rewritten_key(key.proto, key.family).reversed();
    match FLOWS.get_ptr(&request) {
        None => true,
        // SAFETY: a pointer into the map's value memory (see `live`): addresses and ports are
        // never written in place, times and flags read before or after another CPU's write.
        Some(r) => unsafe {
            let r = &*r;
            let elsewhere = r.src != key.dst || r.sport != key.dport;
            let client_closed = same_client && r.flags & FLOW_FIN_SEEN != 0;
            elsewhere || r.expired(now) || client_closed
        },
    }
}

/// Takes the entry `held` for this CPU, when no other CPU took it since its last-seen time
/// read `seen`: a compare-and-swap of that time to one nanosecond off, which only one CPU
/// of any racing for it wins (a CPU refreshing the entry meanwhile makes all of them lose).
/// Without it two CPUs could both find a tuple claimable and give it to two new flows.
#[inline(always)]
fn take(held: *mut Flow, seen: u64) -> bool {
    // SAFETY: `held` points into the map's value memory (see `live`); `last_seen_ns` is an
    // aligned u64 (asserted in lb-common), as BPF's 64-bit cmpxchg needs.
    unsafe {
        let at = core::ptr::addr_of_mut!((*held).last_seen_ns);
        core::intrinsics::atomic_cxchg::<
            u64,
            { core::intrinsics::AtomicOrdering::Relaxed },
            { core::intrinsics::AtomicOrdering::Relaxed },
        >(at, seen, seen ^ 1)
        .1
    }
}

/// One-arm: finds a free (pool address, port) towards the real for a new flow, inserts the
/// reply entry `reply` under it (`key` holds the real's side and receives the pool's), and
/// makes it `request`'s source. Tried in turn (see `SnatPool`): the client's own port from
/// each pool address, starting at the client's; then this CPU's slice of the range from
/// where its last search ended. A tuple is free when no entry holds it, or the flow of the
/// entry that does is over for its real ([`claimable`]): the same port serves every real
/// (and every real port) at once.
#[inline(always)]
fn claim_snat(
    vip_id: u32,
    key: &mut FlowKey,
    request: &mut Flow,
    reply: &Flow,
    now: u64,
) -> Result<(), Reason> {
    let pool = SNAT_POOLS.get(vip_id).ok_or(Reason::SnatExhausted)?;
    let count = pool.count;
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let (first, span) = pool.cpu_slice(cpu, lookup::settings().cpus);
    if count == 0 || span == 0 {
        return Err(Reason::SnatExhausted);
    }
    let cursor = SNAT_CURSOR.get_ptr_mut(0).ok_or(Reason::SnatExhausted)?;
    // SAFETY: this CPU's own slot; one program runs on a CPU at a time (see `maps::scratch`).
    let start = unsafe { *cursor };
    let size = pool.ports();
    if size == 0 {
        return Err(Reason::SnatExhausted);
    }
    // The reply entry goes back to the client (`dst`) from the VIP (`src`).
    let slot = SnatPool::client_slot(&reply.dst, &reply.src);
    let own = pool.client_port(u16::from_be_bytes(reply.dport)) - pool.port_min as u32;
    let mut i = 0;
    while i < SNAT_TRIES {
        let n = start.wrapping_add(i).wrapping_sub(SNAT_CLIENT_TRIES);
        // Arithmetic, not branches, on `count`: a branch on it would split the verifier's
        // states by its value at every try, and the walk would outgrow its limit. (`i` is
        // known at each try: the test of it is no split.) With fewer addresses than client
        // tries, the client's tries go on to its next ports.
        let (index, port) = if i < SNAT_CLIENT_TRIES {
            let next = own.wrapping_add(i / count) % size;
            (slot.wrapping_add(i), pool.port_min as u32 + next)
        } else {
            (n / span, first + n % span)
        };
        // Masked: the verifier does not know a 32-bit remainder's upper half is zero, and
        // would find the index unbounded below its bounds check; a 32-bit AND it follows.
        // Below MAX_POOL_ADDRS the mask changes nothing (userspace writes count <= it).
        let index = index % count & (MAX_POOL_ADDRS as u32 - 1);
        const _: () = assert!(MAX_POOL_ADDRS.is_power_of_two());
        let Some(addr) = pool.addrs.get(index as usize) else {
            return Err(Reason::SnatExhausted);
        };
        key.dst = *addr;
        key.dport = (port as u16).to_be_bytes();
        let claimed = match FLOWS.insert(&*key, reply, BPF_NOEXIST as u64) {
            Ok(()) => true,
            Err(EEXIST) => match FLOWS.get_ptr_mut(&*key) {
                // SAFETY: as in `claimable`; `seen` is read before the checks, so that a CPU
                // taking the entry after them makes `take` fail.
                Some(held) => unsafe {
                    let seen = (*held).last_seen_ns;
                    claimable(key, &*held, reply, now)
                        && take(held, seen)
                        && FLOWS.insert(&*key, reply, BPF_EXIST as u64).is_ok()
                },
                None => false,
            },
            Err(_errno) => return Err(Reason::FlowInsert),
        };
        if claimed {
            if i >= SNAT_CLIENT_TRIES {
                // SAFETY: as above.
                unsafe { *cursor = n.wrapping_add(1) };
            }
            request.src = *addr;
            request.sport = key.dport;
            return Ok(());
        }
        i += 1;
    }
    // SAFETY: as above. The next search of this CPU's slice starts past the ports found taken.
    unsafe { *cursor = start.wrapping_add(SNAT_TRIES - SNAT_CLIENT_TRIES) };
    Err(Reason::SnatExhausted)
}

/// Follows a TCP flow's end: after a RST its entries go (the connection is gone at both
/// ends); after a FIN they live only the VIP's FIN timeout past their last packet. Either
/// ends a leastconn flow's count. Returns `END_FIN` or `END_RST` when this segment ended the
/// flow (for the flow log), else 0.
#[inline(always)]
pub fn track_tcp(key: &FlowKey, flow: &Flow, tcp_flags: u8) -> u8 {
    if tcp_flags & (TCP_RST | TCP_FIN) == 0 {
        return 0;
    }
    let one_way = flow.flags & FLOW_ONE_WAY != 0;
    let partner = flow.rewritten_key(key.proto, key.family).reversed();
    if flow.flags & FLOW_COUNTED != 0 {
        let request = if flow.flags & FLOW_REPLY != 0 {
            &partner
        } else {
            key
        };
        end_count(request);
    }
    // A flow ends once: at its first FIN (the CPU that sets CLOSING on this entry; two racing
    // FINs may both), or at an RST before any (the CPU that removes this entry).
    let closing = flow.flags & FLOW_CLOSING != 0;
    if tcp_flags & TCP_RST != 0 {
        // Either entry may be gone already (evicted, or the other direction's RST removed
        // it on another CPU): removing what is not there is no error here.
        let removed = FLOWS.remove(key).is_ok();
        let _partner_gone = one_way || FLOWS.remove(&partner).is_ok();
        return if removed && !closing { END_RST } else { 0 };
    }
    // A FIN: this entry's side has closed (each entry marks its own side's, for
    // `claimable`), and the flow closes, both entries, at the first FIN of either side.
    const OWN_SIDE_CLOSED: u32 = FLOW_CLOSING | FLOW_FIN_SEEN;
    if flow.flags & OWN_SIDE_CLOSED == OWN_SIDE_CLOSED {
        return 0;
    }
    let marked = mark(key, OWN_SIDE_CLOSED);
    if closing {
        return 0;
    }
    if !one_way {
        mark(&partner, FLOW_CLOSING);
    }
    if marked {
        END_FIN
    } else {
        0
    }
}

/// Sets `bits` on `key`'s entry; true when this call set one.
#[inline(always)]
fn mark(key: &FlowKey, bits: u32) -> bool {
    match FLOWS.get_ptr_mut(key) {
        Some(entry) => set_flags(entry, bits),
        None => false,
    }
}

/// Ends the count of the leastconn flow of `request_key`, once: only the one who removes
/// its OPEN entry (a CPU seeing its FIN or RST, or userspace sweeping it idle) counts it.
#[inline(always)]
fn end_count(request_key: &FlowKey) {
    let Some(real_id) = OPEN.get_ptr(request_key) else {
        return;
    };
    // SAFETY: a pointer into OPEN's value memory, valid while the program runs; OPEN
    // values are written whole at insert, never in place.
    let real_id = unsafe { *real_id };
    if OPEN.remove(request_key).is_ok() {
        schedule::count(real_id, -1);
    }
}

/// Whether the request entry `flow` still goes to a real that keeps its flows: the real of
/// its id, of its VIP and address, up or draining. A real taken down or out of its VIP moves
/// its flows (they reset at the new real, as in every L4 LB). When the real's MAC changed
/// (a new NIC, a gateway moved), the flow follows it: `flow` and its entry `key` take it.
#[inline(always)]
pub fn real_keeps(key: &FlowKey, flow: &mut Flow) -> bool {
    let Some(real) = REALS.get(flow.real_id) else {
        return false;
    };
    let same = real.keeps_flows()
        && real.vip_id() == flow.vip_id
        && real.addr_bytes() == flow.dst
        && (real.ifindex() == 0 || real.ifindex() == flow.egress_ifindex);
    if same && real.mac() != flow.dst_mac {
        flow.dst_mac = real.mac();
        if let Some(entry) = FLOWS.get_ptr_mut(key) {
            // SAFETY: a pointer into the map's value memory (see `live`). The 6 bytes are
            // stored in pieces: another CPU copying the entry meanwhile may take half the old
            // MAC and half the new for one packet; every CPU that sees the old MAC writes the
            // same new one.
            unsafe { (*entry).dst_mac = real.mac() };
        }
    }
    same
}
