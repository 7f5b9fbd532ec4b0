//! The established path: an IPv4 TCP/UDP packet of a flow the table knows, forwarded in one
//! inlined pass. The flow table is looked up first, and its entry says everything the packet
//! needs (mode, real, rewrite), so the VIPS lookup, the scheduler and every BPF-to-BPF call
//! stay off it: one FLOWS lookup (the one hash lookup), and array reads (the interface's
//! entry by its ifindex's slot, the real's by id, counters).
//!
//! Anything the entry cannot settle alone goes the full way ([`Fast::Slow`]): a packet the
//! full path must see (a SYN on a closing flow, a FIN or RST, a TTL running out, the first
//! answer, a real gone or moved, a dsr or tunnel real behind another interface than the
//! packet's, a tunnel packet too big), or an entry written before flows carried their mode ([`FLOW_DSR`],
//! [`FLOW_TUNNEL`]). The full path then does exactly what it did before this one existed.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{
    Flow, Reason, FLOW_ANSWERED, FLOW_CLOSING, FLOW_DEC_TTL, FLOW_DSR, FLOW_ONE_WAY, FLOW_REPLY,
    FLOW_TUNNEL, IFACE_SLOTS as IFACE_SLOTS_LEN,
};

use crate::{
    decap,
    emit::Sent,
    flow,
    maps::{Scratch, FLOWS, IFACE_SLOTS, REALS, TUNNEL_SOURCES},
    nat,
    packet::Packet,
    parse::{Parsed, ETH_LEN, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    rewrite::{self, Tunnel},
};

/// What the established path did with a packet.
pub enum Fast {
    /// Rewritten and sent as `scratch.sent` says.
    Sent,
    /// The table has no entry for it: the full path need not look again.
    NoEntry,
    /// The full path must decide (see the module's notes). The frame is as it came.
    Slow,
}

/// Forwards the parsed IPv4 TCP/UDP packet in `scratch.parsed` if its flow entry alone can
/// say how. An error: not sent, for this reason, after the frame was changed (a tunnel
/// header that did not go in after its room was made).
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    pkt: &Packet,
    scratch: &mut Scratch,
    ingress: u32,
) -> Result<Fast, Reason> {
    let p = &scratch.parsed;
    let Some(entry) = FLOWS.get_ptr_mut(&p.flow) else {
        return Ok(Fast::NoEntry);
    };
    // Fields are read where they are needed, not copied whole: the copy of all 80 bytes
    // was a good part of this path's instructions.
    // SAFETY: `entry` points into the map's value memory, valid while the program runs (see
    // `flow::live` on what other CPUs may write meanwhile: each field read holds a value the
    // flow had). The reference lives until the refresh below, which this CPU writes after it.
    let f = unsafe { &*entry };
    let flags = f.flags;
    // A SYN on a closing flow reopens it, a FIN or RST ends it: the full path's work.
    if p.tcp_flags & (TCP_FIN | TCP_RST) != 0
        || (p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN && flags & FLOW_CLOSING != 0)
    {
        return Ok(Fast::Slow);
    }
    let now = flow::now();
    let last_seen = f.last_seen_ns;
    if f.expired(now) {
        return Ok(Fast::Slow);
    }
    let reply = flags & FLOW_REPLY != 0;
    // A refresh (every REFRESH_NS) finds the flow's other entry first: a packet whose flow
    // lost its other entry (the LRU evicted it while this one lived) goes the full way,
    // which puts it back.
    let refresh_due = now.saturating_sub(last_seen) > flow::REFRESH_NS;
    let mut partner = None;
    if refresh_due && flags & FLOW_ONE_WAY == 0 {
        match FLOWS.get_ptr_mut(&flow::partner_key(&p.flow, f)) {
            Some(other) => partner = Some(other),
            None => return Ok(Fast::Slow),
        }
    }
    if reply {
        if flags & FLOW_ANSWERED == 0 || !translate(pkt, p, f) {
            return Ok(Fast::Slow);
        }
    } else {
        match request(ctx, pkt, p, f, ingress)? {
            Fast::Sent => {}
            not_sent => return Ok(not_sent),
        }
    }
    scratch.sent = Sent {
        real_id: f.real_id,
        egress: f.egress_ifindex,
        reply,
    };
    if refresh_due {
        // SAFETY: `entry` and `other` point into the map's value memory (see `flow::live`);
        // aligned 8-byte stores, which another CPU may make at once with its own `now`.
        unsafe {
            (*entry).last_seen_ns = now;
            if let Some(other) = partner {
                (*other).last_seen_ns = now;
            }
        }
    }
    Ok(Fast::Sent)
}

/// A request of flow `f`: sent on when its real still keeps it and the frame was addressed
/// to the LB; [`Fast::Slow`] (nothing written) when the full path must decide.
#[inline(always)]
fn request(
    ctx: &XdpContext,
    pkt: &Packet,
    p: &Parsed,
    f: &Flow,
    ingress: u32,
) -> Result<Fast, Reason> {
    let Some(real) = REALS.get(f.real_id) else {
        return Ok(Fast::Slow);
    };
    // The real of its id, of its VIP and address, up or draining, at the MAC the entry has
    // (a real taken out or moved, a VIP removed or re-moded: the full path moves the flow).
    if !real.keeps_flows()
        || real.vip_id() != f.vip_id
        || real.addr_bytes() != f.dst
        || real.mac() != f.dst_mac
    {
        return Ok(Fast::Slow);
    }
    // The interface's entry by an array index, not a hash: an interface whose slot another
    // one holds takes the full path.
    let Some(slot) = IFACE_SLOTS.get(ingress % IFACE_SLOTS_LEN) else {
        return Ok(Fast::Slow);
    };
    if slot.ifindex != ingress {
        return Ok(Fast::Slow);
    }
    let iface = &slot.config;
    if !iface.is_ours(&p.dst_mac) {
        return Ok(Fast::Slow);
    }
    // A stateful flow's entry has both MACs to write (the egress interface's taken when it
    // was made): it leaves from any interface. dsr and tunnel write the egress interface's
    // MAC (and address, MTU): a real behind another interface than the packet's needs that
    // interface's entry, which the full path looks up.
    let done = if f.flags & FLOW_ONE_WAY == 0 {
        translate(pkt, p, f)
    } else if f.egress_ifindex != ingress && f.egress_ifindex != 0 {
        return Ok(Fast::Slow);
    } else if f.flags & FLOW_DSR != 0 {
        rewrite::dsr(pkt, iface.mac, f.dst_mac).is_ok()
    } else if f.flags & FLOW_TUNNEL != 0 {
        let src = match TUNNEL_SOURCES.get(f.vip_id) {
            Some(own) if *own != [0; 4] => *own,
            _ => iface.ipv4,
        };
        return tunnel(ctx, f, iface.mac, iface.mtu, src);
    } else {
        // A dsr or tunnel entry of a release before flows carried their mode.
        false
    };
    Ok(if done { Fast::Sent } else { Fast::Slow })
}

/// A stateful flow's packet rewritten as its entry says; false (nothing written) when its
/// TTL would run out, for the full path to answer.
#[inline(always)]
fn translate(pkt: &Packet, p: &Parsed, f: &Flow) -> bool {
    if f.flags & FLOW_DEC_TTL != 0 && p.ttl <= 1 {
        return false;
    }
    nat::translate_v4(pkt, p.l4_off, p.flow.proto, f).is_ok()
}

/// IP-in-IP to the real of `f`, from `src`, out of the interface with `mac` and `mtu`;
/// [`Fast::Slow`] (nothing written) when it would not fit, for the full path to answer.
#[inline(always)]
fn tunnel(
    ctx: &XdpContext,
    f: &Flow,
    mac: [u8; 6],
    mtu: u16,
    src: [u8; 4],
) -> Result<Fast, Reason> {
    let inner_len = ctx.data_end() - ctx.data() - ETH_LEN;
    if inner_len + decap::OUTER_LEN > mtu as usize {
        return Ok(Fast::Slow);
    }
    // SAFETY: adjust_head on our own context; every packet pointer is re-derived below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(decap::OUTER_LEN as i32)) } != 0 {
        return Err(Reason::NoHeadroom);
    }
    // SAFETY: the frame as it is after adjust_head.
    let pkt = unsafe { Packet::new(ctx.data(), ctx.data_end()) };
    let a = f.dst;
    let t = Tunnel {
        lb_mac: mac,
        next_hop_mac: f.dst_mac,
        src,
        dst: [a[0], a[1], a[2], a[3]],
    };
    rewrite::ipip(&pkt, &t, 4, inner_len)?;
    Ok(Fast::Sent)
}
