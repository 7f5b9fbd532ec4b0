//! What the datapath would do with a packet (`lbctl explain`), from the live maps and the
//! rings this lbctl installed: which VIP, whether a flow exists (its real, idle time, state),
//! else the ring slot and real a new flow would get and why, and how the packet would
//! leave. Reads only: no map changes.

use std::net::{IpAddr, SocketAddr};

use lb_common::{
    ip_from_bytes, Family, Flow, FlowKey, VipKey, FLOW_ANSWERED, FLOW_CLOSING, FLOW_HASH_SEED,
    HASH_DESTINATION_PORT, HASH_NO_SOURCE_PORT, RR_CPU_STRIDE, SCHED_LEASTCONN, SCHED_ROUNDROBIN,
    SCHED_SOURCE, SCHED_STATIC_RR,
};
use lb_ebpf::hash;

use super::*;

/// What `explain` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The answer, a line per step.
    pub lines: Vec<String>,
    /// The real the packet goes to, when the datapath would forward it and it can be told.
    pub real: Option<SocketAddr>,
    /// Whether it goes by an existing flow (else a new one would be made).
    pub existing_flow: bool,
    /// Round robin: the real a new flow gets on each CPU, by CPU.
    pub per_cpu: Vec<SocketAddr>,
}

impl Datapath {
    /// Explains a packet from `client` to `vip` of protocol `proto` (6 or 17).
    pub fn explain(&self, proto: u8, client: SocketAddr, vip: SocketAddr) -> Result<Explanation> {
        let mut lines = Vec::new();
        let key = flow_key(proto, client, vip)?;
        let proto_name = if proto == lb_common::PROTO_TCP {
            "tcp"
        } else {
            "udp"
        };
        let vip_key = match vip.ip() {
            IpAddr::V4(a) => VipKey::v4(a.octets(), vip.port(), proto),
            IpAddr::V6(a) => VipKey::v6(a.octets(), vip.port(), proto),
        };
        let meta = match self.vips.get(&vip_key, 0) {
            Ok(m) => m,
            Err(aya::maps::MapError::KeyNotFound) => {
                lines.push(format!("{vip}/{proto_name} is not a VIP: the packet goes to the LB's own stack (pass_not_vip), unless it is the reply of a stateful flow"));
                return Ok(Explanation {
                    lines,
                    real: None,
                    per_cpu: Vec::new(),
                    existing_flow: false,
                });
            }
            Err(e) => return Err(e).context("reading VIPS"),
        };
        let served = self
            .services
            .iter()
            .find(|(_, s)| s.id == meta.vip_id)
            .map(|(_, s)| s);
        lines.push(format!(
            "VIP {vip}/{proto_name}: id {}, {} {}",
            meta.vip_id,
            Mode::name_of(meta.mode),
            Balance::name_of(meta.sched)
        ));
        // An existing flow whose real still keeps flows takes the packet.
        match self.flows.get(&key, 0) {
            Ok(flow) if !flow.expired(monotonic_ns()) => {
                let real = self.reals.get(&flow.real_id, 0).context("reading REALS")?;
                let to = SocketAddr::new(
                    ip_from_bytes(&flow.dst, key.family),
                    u16::from_be_bytes(flow.dport),
                );
                if real.keeps_flows()
                    && real.vip_id() == flow.vip_id
                    && real.addr_bytes() == flow.dst
                {
                    lines.push(format!(
                        "flow {client} → {vip}: exists (real id {}), idle {:.1} s, {}: goes to {to}",
                        flow.real_id,
                        monotonic_ns().saturating_sub(flow.last_seen_ns) as f64 / 1e9,
                        flow_state(&flow)
                    ));
                    lines.push(leaves(meta.mode, to));
                    return Ok(Explanation {
                        lines,
                        real: Some(to),
                        per_cpu: Vec::new(),
                        existing_flow: true,
                    });
                }
                lines.push(format!("flow {client} → {vip}: exists, but its real {to} no longer keeps flows (down or removed): the flow is made anew"));
            }
            Ok(_) => lines.push(format!(
                "flow {client} → {vip}: expired: a new flow is made"
            )),
            Err(aya::maps::MapError::KeyNotFound) => lines.push(format!(
                "flow {client} → {vip}: none yet: a new flow is made"
            )),
            Err(e) => return Err(e).context("reading FLOWS"),
        }
        let ring = served.map(|s| s.ring.as_slice()).unwrap_or(&[]);
        if meta.ring_size == 0 || ring.is_empty() {
            lines.push(
                "no real takes new flows (drop_no_real, or pass_no_real with when_empty = pass)"
                    .into(),
            );
            return Ok(Explanation {
                lines,
                real: None,
                per_cpu: Vec::new(),
                existing_flow: false,
            });
        }
        let slot = match meta.sched {
            SCHED_ROUNDROBIN | SCHED_STATIC_RR => {
                // Each CPU walks the sequence from its own place: which real depends on the
                // CPU the packet arrives on (its NIC queue).
                let turns = self.round_robin_turns(meta.vip_id)?;
                let mut reals = Vec::new();
                for (cpu, turn) in turns.iter().enumerate() {
                    let slot = turn.wrapping_add((cpu as u32).wrapping_mul(RR_CPU_STRIDE))
                        % meta.ring_size;
                    let id = ring.get(slot as usize).copied().unwrap_or(0);
                    let real = self.reals.get(&id, 0).context("reading REALS")?;
                    let to = real.endpoint(vip.port());
                    lines.push(format!(
                        "new flow on CPU {cpu}: its turn {turn}, slot {slot} → real id {id}, {to}"
                    ));
                    reals.push(to);
                }
                // Told for certain only when every CPU would pick the same real.
                let same = reals.windows(2).all(|w| w[0] == w[1]);
                lines.push(leaves(meta.mode, *reals.first().context("no CPU")?));
                return Ok(Explanation {
                    lines,
                    real: same.then(|| reals[0]),
                    per_cpu: reals,
                    existing_flow: false,
                });
            }
            SCHED_LEASTCONN => {
                // As the datapath searches: from a slot the flow hash picks, the up real with
                // the fewest active flows for its weight; ties to the first found.
                let n = meta.ring_size.min(lb_common::MAX_LEASTCONN_REALS);
                let start = hash::flow_fields(&key, hash_fields(meta.hash), FLOW_HASH_SEED) % n;
                let mut best: Option<(u32, u64, u64)> = None;
                for index in 0..n {
                    let slot = (start + index) % n;
                    let id = ring.get(slot as usize).copied().unwrap_or(0);
                    let real = self.reals.get(&id, 0).context("reading REALS")?;
                    let weight = if real.is_up() {
                        u64::from(real.weight())
                    } else {
                        0
                    };
                    let started = self.active.get(&id, 0).context("reading ACTIVE")? as i64;
                    let swept = self.swept.get(&id, 0).context("reading SWEPT")? as i64;
                    let load = started.wrapping_sub(swept).max(0) as u64;
                    let beats = match best {
                        None => true,
                        Some((_, best_load, best_weight)) => {
                            load * best_weight < best_load * weight
                        }
                    };
                    if weight != 0 && beats {
                        best = Some((id, load, weight));
                    }
                }
                let Some((id, load, weight)) = best else {
                    lines.push("leastconn: no real up with a weight (drop_no_real)".into());
                    return Ok(Explanation {
                        lines,
                        real: None,
                        per_cpu: Vec::new(),
                        existing_flow: false,
                    });
                };
                let real = self.reals.get(&id, 0).context("reading REALS")?;
                let to = real.endpoint(vip.port());
                lines.push(format!("new flow: leastconn, searched from slot {start} of {n}: real id {id}, {to}, the fewest active flows for its weight ({load} for weight {weight})"));
                lines.push(leaves(meta.mode, to));
                return Ok(Explanation {
                    lines,
                    real: Some(to),
                    per_cpu: Vec::new(),
                    existing_flow: false,
                });
            }
            SCHED_SOURCE => {
                hash::flow_fields(&key, &hash::SOURCE_ADDRESS, FLOW_HASH_SEED) % meta.ring_size
            }
            _ => hash::flow_fields(&key, hash_fields(meta.hash), FLOW_HASH_SEED) % meta.ring_size,
        };
        let id = ring.get(slot as usize).copied().unwrap_or(0);
        let real = self.reals.get(&id, 0).context("reading REALS")?;
        let to = real.endpoint(vip.port());
        let share = ring.iter().filter(|r| **r == id).count() as f64 / ring.len() as f64;
        lines.push(format!(
            "new flow: hash slot {slot} of {} → real id {id}, {to} (weight {}, {:.1} % of the slots)",
            meta.ring_size,
            real.weight(),
            share * 100.0
        ));
        lines.push(leaves(meta.mode, to));
        Ok(Explanation {
            lines,
            real: Some(to),
            per_cpu: Vec::new(),
            existing_flow: false,
        })
    }

    /// Each CPU's cursor in VIP `vip_id`'s round-robin sequence.
    fn round_robin_turns(&self, vip_id: u32) -> Result<Vec<u32>> {
        let map = self
            .ebpf
            .map(map_names::RR_CURSOR)
            .context("the eBPF object has no RR_CURSOR")?;
        let cursors: aya::maps::PerCpuArray<&MapData, u32> =
            aya::maps::PerCpuArray::try_from(map).context("RR_CURSOR has an unexpected type")?;
        let values = cursors.get(&vip_id, 0).context("reading RR_CURSOR")?;
        Ok(values.iter().copied().collect())
    }
}

/// The fields a VIP's flow hash covers.
fn hash_fields(h: u8) -> &'static hash::Fields {
    match h {
        HASH_NO_SOURCE_PORT => &hash::NO_SOURCE_PORT,
        HASH_DESTINATION_PORT => &hash::DESTINATION_PORT,
        _ => &hash::FIVE_TUPLE,
    }
}

fn flow_key(proto: u8, client: SocketAddr, vip: SocketAddr) -> Result<FlowKey> {
    let (src, dst, family) = match (client.ip(), vip.ip()) {
        (IpAddr::V4(c), IpAddr::V4(v)) => {
            let mut s = [0; 16];
            let mut d = [0; 16];
            s[..4].copy_from_slice(&c.octets());
            d[..4].copy_from_slice(&v.octets());
            (s, d, Family::V4 as u8)
        }
        (IpAddr::V6(c), IpAddr::V6(v)) => (c.octets(), v.octets(), Family::V6 as u8),
        _ => bail!("the client {client} and the VIP {vip} are of different IP versions"),
    };
    Ok(FlowKey {
        src,
        dst,
        sport: client.port().to_be_bytes(),
        dport: vip.port().to_be_bytes(),
        proto,
        family,
        _pad: [0; 2],
    })
}

fn flow_state(flow: &Flow) -> &'static str {
    if flow.flags & FLOW_CLOSING != 0 {
        "closing (a FIN seen)"
    } else if flow.flags & FLOW_ANSWERED != 0 {
        "established"
    } else {
        "not answered yet"
    }
}

/// How the packet leaves, by mode.
fn leaves(mode: u8, to: SocketAddr) -> String {
    match Mode::name_of(mode) {
        "dsr" => format!("leaves: addresses and ports as they are, the destination MAC the real's ({}); the real answers the client directly", to.ip()),
        "tunnel" => format!("leaves: wrapped in IP-in-IP to {} (the VIP's tunnel source, or the LB's address), the inner packet as it is", to.ip()),
        "nat" => format!("leaves: destination rewritten to {to}, the client's source kept; replies come back through the LB"),
        "router" => format!("leaves: destination rewritten to {to}, routed (TTL − 1); replies come back through the LB"),
        "one-arm" => format!("leaves: destination rewritten to {to}, source to a SNAT pool address and port of the CPU's slice"),
        _ => "leaves: unknown mode".into(),
    }
}
