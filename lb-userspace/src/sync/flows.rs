//! From flow table entries to sync records (the sender) and back (the receiver), as the
//! datapath makes a stateful flow's two entries (lb-ebpf `flow::create`): the forward entry
//! (client → VIP, rewritten to the real, from the client or the SNAT address) and the reply
//! entry (real → that source, rewritten back to the client, from the VIP).

use std::collections::HashMap;

use lb_common::{
    ip_from_bytes, ip_to_bytes, Flow, FlowKey, FLOW_ANSWERED, FLOW_CLOSING, FLOW_DEC_TTL,
    FLOW_ONE_WAY, FLOW_REPLY, FLOW_SET_SRC_MAC, PROTO_TCP,
};

use super::wire::{Record, OP_FLOW, STATE_ANSWERED, STATE_CLOSING};
use crate::declare::spec::Mode;

/// The record of each live stateful flow in `entries` (a walk of the flow table), keyed by
/// its forward key. Flows whose reply entry is gone (ending) are left out.
pub fn records(entries: &[(FlowKey, Flow)], now_ns: u64) -> HashMap<FlowKey, Record> {
    let all: HashMap<&FlowKey, &Flow> = entries.iter().map(|(k, f)| (k, f)).collect();
    let mut out = HashMap::new();
    for (key, f) in entries {
        if f.flags & (FLOW_REPLY | FLOW_ONE_WAY) != 0 || f.expired(now_ns) {
            continue;
        }
        let reply_key = f.rewritten_key(key.proto, key.family).reversed();
        let Some(reply) = all.get(&reply_key) else {
            continue;
        };
        let state = if f.flags & FLOW_ANSWERED != 0 || reply.flags & FLOW_ANSWERED != 0 {
            STATE_ANSWERED
        } else {
            0
        } | if f.flags & FLOW_CLOSING != 0 {
            STATE_CLOSING
        } else {
            0
        };
        let ip = |b: &[u8; 16]| ip_from_bytes(b, key.family);
        out.insert(
            *key,
            Record {
                op: OP_FLOW,
                proto: key.proto,
                state,
                client: ip(&key.src),
                client_port: u16::from_be_bytes(key.sport),
                vip: ip(&key.dst),
                vip_port: u16::from_be_bytes(key.dport),
                real: ip(&f.dst),
                real_port: u16::from_be_bytes(f.dport),
                src: ip(&f.src),
                src_port: u16::from_be_bytes(f.sport),
                client_mac: reply.dst_mac,
            },
        );
    }
    out
}

/// What the receiving LB knows of the flow's VIP and real, in its own terms.
#[derive(Clone, Copy, Debug)]
pub struct Local {
    pub mode: Mode,
    pub vip_id: u32,
    pub real_id: u32,
    /// The real's MAC (or its next hop's) and the interface it is reached through.
    pub real_mac: [u8; 6],
    pub real_ifindex: u32,
    /// The interface the client's packets arrive on, and this LB's MAC there.
    pub ingress: u32,
    pub ingress_mac: [u8; 6],
    /// This LB's MAC on the real's interface.
    pub egress_mac: [u8; 6],
    /// The VIP's timeouts for the flow's protocol: established, and closing or not answered.
    pub timeout: u32,
    pub short_timeout: u32,
}

/// A flow's two entries, as this LB's datapath would have made them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entries {
    pub key: FlowKey,
    pub forward: Flow,
    pub reply_key: FlowKey,
    pub reply: Flow,
}

/// The keys of a record's two entries.
pub fn keys(r: &Record) -> (FlowKey, FlowKey) {
    let (client, family) = ip_to_bytes(r.client);
    let key = FlowKey {
        src: client,
        dst: ip_to_bytes(r.vip).0,
        sport: r.client_port.to_be_bytes(),
        dport: r.vip_port.to_be_bytes(),
        proto: r.proto,
        family,
        _pad: [0; 2],
    };
    let reply_key = FlowKey {
        src: ip_to_bytes(r.real).0,
        dst: ip_to_bytes(r.src).0,
        sport: r.real_port.to_be_bytes(),
        dport: r.src_port.to_be_bytes(),
        proto: r.proto,
        family,
        _pad: [0; 2],
    };
    (key, reply_key)
}

/// The entries of `r` on this LB, last seen `now_ns`.
pub fn entries(r: &Record, l: &Local, now_ns: u64) -> Entries {
    let (key, reply_key) = keys(r);
    let egress = if l.real_ifindex == 0 {
        l.ingress
    } else {
        l.real_ifindex
    };
    let mut flags = match l.mode {
        Mode::Router => FLOW_SET_SRC_MAC | FLOW_DEC_TTL,
        Mode::OneArm => FLOW_SET_SRC_MAC,
        Mode::Nat if egress == l.ingress => FLOW_SET_SRC_MAC,
        _ => 0,
    };
    if r.state & STATE_ANSWERED != 0 {
        flags |= FLOW_ANSWERED;
    }
    if r.state & STATE_CLOSING != 0 {
        flags |= FLOW_CLOSING;
    }
    let forward = Flow {
        src: ip_to_bytes(r.src).0,
        dst: ip_to_bytes(r.real).0,
        sport: r.src_port.to_be_bytes(),
        dport: r.real_port.to_be_bytes(),
        dst_mac: l.real_mac,
        src_mac: l.egress_mac,
        flags,
        egress_ifindex: egress,
        vip_id: l.vip_id,
        real_id: l.real_id,
        timeout: l.timeout,
        short_timeout: l.short_timeout,
        last_seen_ns: now_ns,
    };
    let reply = Flow {
        src: key.dst,
        dst: key.src,
        sport: key.dport,
        dport: key.sport,
        dst_mac: r.client_mac,
        src_mac: l.ingress_mac,
        flags: flags | FLOW_REPLY,
        egress_ifindex: l.ingress,
        ..forward
    };
    Entries {
        key,
        forward,
        reply_key,
        reply,
    }
}

/// The VIP's timeouts for `proto`: (established, closing or not answered yet).
pub fn timeouts(t: &lb_common::Timeouts, proto: u8) -> (u32, u32) {
    if proto == PROTO_TCP {
        (t.tcp, t.tcp_fin)
    } else {
        (t.udp, t.udp)
    }
}
