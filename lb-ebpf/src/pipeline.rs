//! The pipeline: each packet's path through the stages. A VIP's packets go
//! `parse → lookup → schedule → rewrite → emit` in their mode's way; replies and ICMP errors
//! of stateful flows go `parse → lookup (flow) → rewrite → emit`.

use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{
    mode_is_stateful, Family, Flow, FlowKey, IfaceConfig, Reason, VipMeta, FLOW_CLOSING,
    FLOW_REPLY, MODE_DSR, MODE_ONE_ARM, MODE_ROUTER, MODE_TUNNEL, PROTO_TCP, VIP_PASS_WHEN_EMPTY,
};

use crate::{
    decap,
    emit::Sent,
    established::{self, Fast},
    flood, flow, flowlog,
    headers::IPPROTO_ICMP,
    icmp,
    icmp_nat::{self, Quote},
    lookup,
    maps::{self, Scratch},
    nat,
    packet::Packet,
    parse::{self, Parsed, ETH_LEN, TCP_ACK, TCP_SYN},
    rewrite::{self, Tunnel},
};

const V4: u8 = Family::V4 as u8;

/// The established path (`lb_xdp`): the packet in `ctx`, which arrived on `ingress`,
/// forwarded from its flow's entry (`Some`), or left to the full path (`None`), which parses
/// it again and counts what is wrong with it. When the flow table has no entry for it, the
/// full path is told so in the scratch space and does not look again.
#[inline(always)]
pub fn established(ctx: &XdpContext, ingress: u32) -> Result<Option<Sent>, Reason> {
    // SAFETY: data..data_end is the frame the kernel handed this program.
    let pkt = unsafe { Packet::new(ctx.data(), ctx.data_end()) };
    let Some(scratch) = maps::scratch() else {
        return Ok(None);
    };
    scratch.no_entry = 0;
    match parse::parse(&pkt, &mut scratch.parsed) {
        Ok(()) => {}
        Err(_counted_by_the_full_path) => return Ok(None),
    }
    let p = &scratch.parsed;
    if p.family != V4 || p.flow.proto == IPPROTO_ICMP {
        return Ok(None);
    }
    if !lookup::may_be_ours_v4(p) {
        return Err(Reason::NotVip);
    }
    match established::forward(ctx, &pkt, scratch, ingress)? {
        Fast::Sent => Ok(Some(scratch.sent)),
        Fast::NoEntry => {
            scratch.no_entry = 1;
            Ok(None)
        }
        Fast::Slow => Ok(None),
    }
}

/// For a packet the established path does not look at (a capture or debug lines are on):
/// no hint of an earlier packet's may reach the full path.
#[inline(always)]
pub fn no_hint() {
    if let Some(scratch) = maps::scratch() {
        scratch.no_entry = 0;
    }
}

/// The full path (`lb_full`): decides what happens to the frame in `ctx`, which arrived on
/// `ingress`.
///
/// The heavy steps are functions of their own, not inlined, called from here or from the
/// steps: the verifier limits the stack of a whole call chain to 512 bytes, and a function's
/// frame counts only on the chains that call it. Large values live in the per-CPU scratch
/// map. BPF functions take five arguments and return one register, so steps write to `out`.
/// Steps that only read and write the frame get it as a [`Packet`] built here: handed the
/// context instead, the compiler passes them its 32-bit `data` fields, and the verifier
/// rejects the widening of a packet pointer.
#[inline(always)]
pub fn run(ctx: &XdpContext, ingress: u32) -> Result<Sent, Reason> {
    // SAFETY: data..data_end is the frame the kernel handed this program.
    let pkt = unsafe { Packet::new(ctx.data(), ctx.data_end()) };
    let scratch = scratch()?;
    parse_step(&pkt, &mut scratch.parsed)?;
    full(ctx, scratch, ingress)?;
    Ok(scratch.sent)
}

/// Stage 1, on a frame of its own.
#[inline(never)]
fn parse_step(pkt: &Packet, p: &mut Parsed) -> Result<(), Reason> {
    parse::parse(pkt, p)
}

/// [`run`] once the packet is parsed; what is sent goes to `scratch.sent`.
#[inline(always)]
fn full(ctx: &XdpContext, scratch: &mut Scratch, ingress: u32) -> Result<(), Reason> {
    // SAFETY: data..data_end is the frame the kernel handed this program (unchanged by the
    // established path, which leaves a packet it rewrote nothing of to this one).
    let pkt = unsafe { Packet::new(ctx.data(), ctx.data_end()) };
    let p = &scratch.parsed;
    if p.flow.proto == IPPROTO_ICMP {
        let q = &mut scratch.quote;
        icmp_flow(&pkt, p, &mut scratch.key, &mut scratch.flow, q)?;
        icmp_translate_quote(&pkt, q, &scratch.flow)?;
        icmp_translate_outer(&pkt, &scratch.key, &scratch.flow, &mut scratch.sent)?;
        return Ok(());
    }
    let Some(vip) = lookup::vip(p) else {
        reply_flow(p, scratch.no_entry, &mut scratch.flow)?;
        // A flow whose request entry was evicted while its reply entry lived: put back.
        flow::restore_partner(scratch, ingress);
        forward(ctx, &pkt, &scratch.parsed, &scratch.flow, &mut scratch.sent)?;
        return Ok(());
    };
    // A packet of no flow's entry to a VIP starts a new flow: counted for the flood guards,
    // and held out of the flow table when its VIP's guard is up. Decided here, in the
    // program's own frame: in the flow stage the stack would pass the verifier's limit.
    // (Reopened flows had an entry, and observed packets do not know: neither is guarded.)
    scratch.flood_guarded = if scratch.no_entry != 0 {
        u8::from(flood::guards(&vip, flow::now()))
    } else {
        0
    };
    let mode = vip.mode;
    if mode != MODE_DSR && mode != MODE_TUNNEL && !(mode_is_stateful(mode) && p.family == V4) {
        return Err(unsupported(mode));
    }
    if mode == MODE_ONE_ARM {
        note_syn_timestamps(&pkt, scratch);
    } else {
        scratch.syn_timestamps = 0;
    }
    scratch.snat_pending = 0;
    match flow_of(ctx, scratch, &vip) {
        Err(Reason::NoReal) if vip.flags & VIP_PASS_WHEN_EMPTY != 0 => {
            return Err(Reason::NoRealPass)
        }
        done => done?,
    }
    // Tested with the mode: paths of other modes then skip the call without the verifier
    // walking it (it does not know what the scratch map holds, but knows `mode` here).
    if mode == MODE_ONE_ARM && scratch.snat_pending != 0 {
        flow::finish_one_arm(scratch)?;
    }
    if mode_is_stateful(mode) {
        // A flow whose reply entry was evicted while its request lived: put back (called
        // here, not in the flow stage: its chain of calls has no stack left).
        if scratch.was_live != 0 {
            flow::restore_partner(scratch, ingress);
        }
        forward(ctx, &pkt, &scratch.parsed, &scratch.flow, &mut scratch.sent)?;
        return Ok(());
    }
    match direct(ctx, &pkt, scratch, mode) {
        // Sent from here: under `direct`, the call chain's stack would be too deep.
        Err(Reason::IcmpTooBig) => {
            let iface = lookup::iface(ingress).ok_or(Reason::NoIcmpSource)?;
            let error = icmp::Error::fragmentation_needed(scratch.next_hop_mtu);
            Err(answer(ctx, &iface, error, Reason::IcmpTooBig))
        }
        done => done,
    }
}

/// Notes whether the one-arm packet in `scratch` is a SYN with a TCP timestamp option,
/// which lets its client reuse a pool port at once (`flow::claim_snat`). Not inlined: its
/// frame then counts only here, not on the flow stage's chain of calls.
#[inline(never)]
fn note_syn_timestamps(pkt: &Packet, scratch: &mut Scratch) {
    let p = &scratch.parsed;
    let syn = p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    scratch.syn_timestamps = u8::from(syn && parse::syn_timestamp(pkt, p.l4_off));
}

/// Why a VIP of `mode` cannot take the packet: a stateful mode's VIP got an IPv6 packet, or
/// the mode is none this program knows.
#[inline(always)]
fn unsupported(mode: u8) -> Reason {
    if mode_is_stateful(mode) {
        Reason::ModeNoIpv6
    } else {
        Reason::UnknownMode
    }
}

/// dsr and tunnel: the frame rewritten for the real of its flow (in `scratch.flow`). A
/// packet too big to tunnel is [`Reason::IcmpTooBig`], with the MTU that fits in
/// `scratch.next_hop_mtu`, for the caller to answer.
#[inline(never)]
fn direct(ctx: &XdpContext, pkt: &Packet, scratch: &mut Scratch, mode: u8) -> Result<(), Reason> {
    let flow = &scratch.flow;
    scratch.sent = Sent {
        real_id: flow.real_id,
        egress: flow.egress_ifindex,
        reply: false,
    };
    let ingress = ctx.ingress_ifindex() as u32;
    // Most reals are reached through the interface the packet came in on, found already.
    let egress = if flow.egress_ifindex == 0 || flow.egress_ifindex == ingress {
        scratch.ingress_iface
    } else {
        egress_iface(flow.egress_ifindex, ingress)?
    };
    if mode == MODE_DSR {
        return rewrite::dsr(pkt, egress.mac, flow.dst_mac);
    }
    let tunnelled = tunnel(ctx, &scratch.parsed, flow, &egress);
    if tunnelled == Err(Reason::IcmpTooBig) {
        scratch.next_hop_mtu = egress.mtu - decap::OUTER_LEN as u16;
    }
    tunnelled
}

/// Puts the flow of the packet in `scratch` to `vip` into `scratch.flow`: its entry, or a
/// new flow's when there is none, or when its real no longer keeps flows (down, or out of the
/// VIP: its flows move, and reset at the new real as in every L4 LB).
#[inline(never)]
fn flow_of(ctx: &XdpContext, scratch: &mut Scratch, vip: &VipMeta) -> Result<(), Reason> {
    let ingress = ctx.ingress_ifindex() as u32;
    let p = &scratch.parsed;
    let iface = lookup::addressed_to_us(p, ingress)?;
    scratch.ingress_iface = iface;
    let (tcp, tcp_flags) = (p.flow.proto == PROTO_TCP, p.tcp_flags);
    // A TTL that would run out gets its ICMP before any state is made for it.
    if vip.mode == MODE_ROUTER && p.ttl <= 1 {
        return Err(answer(
            ctx,
            &iface,
            icmp::Error::TIME_EXCEEDED,
            Reason::IcmpTtlExceeded,
        ));
    }
    let live = scratch.no_entry == 0 && flow::live(&p.flow, flow::now(), &mut scratch.flow);
    // A SYN on the tuple of a closing flow starts a new connection.
    let syn = tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    let closing = scratch.flow.flags & FLOW_CLOSING != 0;
    let reopen =
        live && ((syn && closing) || !flow::real_keeps(&scratch.parsed.flow, &mut scratch.flow));
    scratch.was_live = u8::from(live && !reopen);
    if !live || reopen {
        flow::create(vip, &iface, ingress, scratch, reopen)?;
        // A one-arm flow's entries are not in yet: see `flow::finish_one_arm`.
        scratch.snat_pending = u8::from(vip.mode == MODE_ONE_ARM);
        if scratch.new.created != 0 {
            flowlog::new_flow(&scratch.parsed.flow, &scratch.flow, &scratch.new);
        }
    }
    // dsr and tunnel see a flow's end here; the stateful modes when they translate it.
    if !mode_is_stateful(vip.mode) && tcp {
        let end = flow::track_tcp(&scratch.parsed.flow, &scratch.flow, tcp_flags);
        if end != 0 {
            flowlog::flow_end(&scratch.parsed.flow, &scratch.flow, end);
        }
    }
    Ok(())
}

/// The LB's side of interface `egress` (0: `ingress`), where a frame leaves.
#[inline(always)]
fn egress_iface(egress: u32, ingress: u32) -> Result<IfaceConfig, Reason> {
    let ifindex = if egress == 0 { ingress } else { egress };
    // A real behind an interface the LB is not attached to cannot be sent to.
    lookup::iface(ifindex).ok_or(Reason::EgressNotAttached)
}

/// This CPU's scratch space (always there: slot 0 of a one-slot per-CPU array).
#[inline(always)]
fn scratch() -> Result<&'static mut Scratch, Reason> {
    maps::scratch().ok_or(Reason::NoScratch)
}

/// For a packet that is not for a VIP: copies its flow's entry to `flow` when it is a reply of
/// a stateful flow (`no_entry`: the established path found none); [`Reason::NotVip`] when it is not the LB's at all.
#[inline(never)]
fn reply_flow(p: &Parsed, no_entry: u8, flow: &mut Flow) -> Result<(), Reason> {
    if lookup::settings().stateful == 0 || p.family != V4 {
        return Err(Reason::NotVip);
    }
    if no_entry == 0 && flow::live(&p.flow, flow::now(), flow) {
        return Ok(());
    }
    if lookup::is_stateful_reply(p) {
        return Err(Reason::NoFlow);
    }
    Err(Reason::NotVip)
}

/// Sends a packet of a stateful flow on as its entry says, or answers it with ICMP "time
/// exceeded" when the TTL runs out.
#[inline(always)]
fn forward(
    ctx: &XdpContext,
    pkt: &Packet,
    p: &Parsed,
    flow: &Flow,
    out: &mut Sent,
) -> Result<(), Reason> {
    match translate(pkt, p, flow, out) {
        Err(Reason::IcmpTtlExceeded) => {
            let Some(iface) = lookup::iface(ctx.ingress_ifindex() as u32) else {
                return Err(Reason::NoIcmpSource);
            };
            Err(answer(
                ctx,
                &iface,
                icmp::Error::TIME_EXCEEDED,
                Reason::IcmpTtlExceeded,
            ))
        }
        done => done,
    }
}

/// Rewrites a TCP/UDP packet of a stateful flow as its entry says. When the TTL would run out
/// it changes nothing and returns [`Reason::IcmpTtlExceeded`], for the caller to answer.
#[inline(never)]
fn translate(pkt: &Packet, p: &Parsed, flow: &Flow, out: &mut Sent) -> Result<(), Reason> {
    if nat::ttl_expires(pkt, flow)? {
        return Err(Reason::IcmpTtlExceeded);
    }
    nat::translate_v4(pkt, p.l4_off, p.flow.proto, flow)?;
    flow::answered(&p.flow, flow);
    if p.flow.proto == PROTO_TCP {
        let end = flow::track_tcp(&p.flow, flow, p.tcp_flags);
        if end != 0 {
            flowlog::flow_end(&p.flow, flow, end);
        }
    }
    *out = sent(flow);
    Ok(())
}

/// For an ICMP error about a stateful flow: where its quote is (`q`), the key of the flow
/// entry that translates it (`key`), and the entry (`flow`). Any other ICMP is the kernel's:
/// [`Reason::IcmpNotOurs`], or [`Reason::IcmpBadQuote`] for an error cut short.
#[inline(never)]
fn icmp_flow(
    pkt: &Packet,
    p: &Parsed,
    key: &mut FlowKey,
    flow: &mut Flow,
    q: &mut Quote,
) -> Result<(), Reason> {
    if lookup::settings().stateful == 0 || p.family != V4 {
        return Err(Reason::IcmpNotOurs);
    }
    icmp_nat::quoted_flow_v4(pkt, p.l4_off, p.ip_end, q, key)?;
    if !flow::live(key, flow::now(), flow) {
        return Err(Reason::IcmpNotOurs);
    }
    // No ICMP error is ever sent about an ICMP error (RFC 1122 3.2.2).
    if nat::ttl_expires(pkt, flow)? {
        return Err(Reason::TtlExpired);
    }
    Ok(())
}

/// Translates the quote of the ICMP error found by [`icmp_flow`].
#[inline(never)]
fn icmp_translate_quote(pkt: &Packet, q: &Quote, flow: &Flow) -> Result<(), Reason> {
    icmp_nat::translate_quote_v4(pkt, q, flow)
}

/// Translates the outer headers of the ICMP error found by [`icmp_flow`].
#[inline(never)]
fn icmp_translate_outer(
    pkt: &Packet,
    key: &FlowKey,
    flow: &Flow,
    out: &mut Sent,
) -> Result<(), Reason> {
    icmp_nat::translate_outer_v4(pkt, key, flow)?;
    *out = sent(flow);
    Ok(())
}

#[inline(always)]
fn sent(flow: &Flow) -> Sent {
    Sent {
        real_id: flow.real_id,
        egress: flow.egress_ifindex,
        reply: flow.flags & FLOW_REPLY != 0,
    }
}

/// Tunnel mode: IP-in-IP to the real of `flow`, from the VIP's tunnel source or else the LB's
/// side of `egress`; when that would not fit
/// its MTU, [`Reason::IcmpTooBig`] for the caller to answer "fragmentation needed". Not
/// inlined, for a stack frame of its own.
#[inline(never)]
fn tunnel(ctx: &XdpContext, p: &Parsed, flow: &Flow, egress: &IfaceConfig) -> Result<(), Reason> {
    let len = ctx.data_end() - ctx.data();
    let inner_len = len - ETH_LEN;
    if inner_len + decap::OUTER_LEN > egress.mtu as usize {
        if p.family != V4 {
            return Err(Reason::TooBigIpv6);
        }
        return Err(Reason::IcmpTooBig);
    }
    // SAFETY: adjust_head on our own context; every packet pointer is re-derived below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(decap::OUTER_LEN as i32)) } != 0 {
        return Err(Reason::NoHeadroom);
    }
    // SAFETY: the frame as it is after adjust_head.
    let pkt = unsafe { Packet::new(ctx.data(), ctx.data_end()) };
    let a = flow.dst;
    let src = match maps::TUNNEL_SOURCES.get(flow.vip_id) {
        Some(own) if *own != [0; 4] => *own,
        _ => egress.ipv4,
    };
    let tunnel = Tunnel {
        lb_mac: egress.mac,
        next_hop_mac: flow.dst_mac,
        src,
        dst: [a[0], a[1], a[2], a[3]],
    };
    rewrite::ipip(&pkt, &tunnel, p.family, inner_len)
}

/// Turns the frame into ICMP `error` back to its sender, from the LB's address on `iface`.
/// Returns the reason to count: `sent` when the error goes out (XDP_TX), else why not.
/// Not inlined, for a stack frame of its own.
#[inline(never)]
fn answer(ctx: &XdpContext, iface: &IfaceConfig, error: icmp::Error, sent: Reason) -> Reason {
    // SAFETY: data..data_end is the frame the kernel handed this program.
    let pkt = unsafe { Packet::new(ctx.data(), ctx.data_end()) };
    if let Err(reason) = icmp::check(&pkt, iface.ipv4, error) {
        return reason;
    }
    let len = pkt.len();
    let delta = icmp::ERROR_FRAME_LEN as i32 - len as i32;
    // SAFETY: adjust_tail on our own context; the packet is re-derived below. Shrinking
    // keeps the quoted bytes (the first 42), growing keeps all.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Reason::NoTailroom;
    }
    // SAFETY: the frame as it is after adjust_tail.
    let pkt = unsafe { Packet::new(ctx.data(), ctx.data_end()) };
    match icmp::write_error(&pkt, iface.mac, iface.ipv4, error) {
        Ok(()) => sent,
        Err(reason) => reason,
    }
}
