//! What the datapath would do with a packet (`lbctl explain`), from the live maps and the
//! rings this lbctl installed: which VIP, whether a flow exists (its real, idle time, state),
//! else the ring slot and real a new flow would get and why, and how the packet would
//! leave. Reads only: no map changes.

use std::net::{IpAddr, SocketAddr};

use lb_common::{
    ip_from_bytes, Family, Flow, FlowKey, RealEntry, VipKey, VipMeta, FLOW_ANSWERED, FLOW_CLOSING,
    FLOW_HASH_SEED, FLOW_SET_SRC_MAC, HASH_DESTINATION_PORT, HASH_NO_SOURCE_PORT, RR_CPU_STRIDE,
    SCHED_LEASTCONN, SCHED_ROUNDROBIN, SCHED_SOURCE, SCHED_STATIC_RR,
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
                    lines.push(self.leaves_by_flow(meta.mode, &flow, key.family, client, vip));
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
                let mut cpu0_real = None;
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
                    cpu0_real.get_or_insert(real);
                }
                // Told for certain only when every CPU would pick the same real.
                let same = reals.windows(2).all(|w| w[0] == w[1]);
                let first = *ring.first().context("an empty ring")?;
                let real = self.reals.get(&first, 0).context("reading REALS")?;
                lines.push(self.leaves_new(
                    &meta,
                    &real,
                    *reals.first().context("no CPU")?,
                    client,
                ));
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
                lines.push(self.leaves_new(&meta, &real, to, client));
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
        lines.push(self.leaves_new(&meta, &real, to, client));
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

/// "frame from FROM to DST out of ...", leaving through `ifindex` (0: the interface the
/// packet came in on).
fn frame(ifindex: u32, from: &str, dst: [u8; 6]) -> String {
    let out = if ifindex == 0 {
        "out of the interface it came in on".to_string()
    } else {
        format!("out of ifindex {ifindex}")
    };
    format!(
        "frame from {from} to {} {out}",
        crate::host::resolve::fmt_mac(&dst)
    )
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

impl Datapath {
    /// How a packet of an existing flow leaves: as its entry rewrites it.
    fn leaves_by_flow(
        &self,
        mode: u8,
        flow: &Flow,
        family: u8,
        client: SocketAddr,
        vip: SocketAddr,
    ) -> String {
        let to = SocketAddr::new(
            ip_from_bytes(&flow.dst, family),
            u16::from_be_bytes(flow.dport),
        );
        let from = SocketAddr::new(
            ip_from_bytes(&flow.src, family),
            u16::from_be_bytes(flow.sport),
        );
        // dsr and tunnel send from the egress interface's MAC; the stateful modes as the
        // entry says.
        let source_mac = if mode == lb_common::MODE_DSR || mode == lb_common::MODE_TUNNEL {
            self.lb_mac(flow.egress_ifindex)
        } else if flow.flags & FLOW_SET_SRC_MAC != 0 {
            crate::host::resolve::fmt_mac(&flow.src_mac)
        } else {
            "the sender's MAC (kept: nat bridges between segments)".into()
        };
        let frame = frame(flow.egress_ifindex, &source_mac, flow.dst_mac);
        match Mode::name_of(mode) {
            "dsr" => format!("leaves: {client} → {vip} as it came, {frame}; the real answers the client directly"),
            "tunnel" => format!("leaves: {client} → {vip} inside IP-in-IP {} → {}, {frame}", self.tunnel_source(flow.vip_id, flow.egress_ifindex), to.ip()),
            "router" => format!("leaves: {from} → {to} (TTL − 1), {frame}; replies come back through the LB"),
            _ => format!("leaves: {from} → {to}, {frame}; replies come back through the LB"),
        }
    }

    /// How a new flow's first packet leaves, for `real` (at `to`).
    fn leaves_new(
        &self,
        meta: &VipMeta,
        real: &RealEntry,
        to: SocketAddr,
        client: SocketAddr,
    ) -> String {
        let frame = self.frame_to(real.ifindex(), real.mac());
        let frame = if meta.mode == lb_common::MODE_NAT {
            format!("{frame} (nat keeps the client's source MAC when the real is on another segment than the client)")
        } else {
            frame
        };
        match Mode::name_of(meta.mode) {
            "dsr" => format!("leaves: addresses and ports as they are, {frame}; the real answers the client directly"),
            "tunnel" => format!("leaves: the packet as it is inside IP-in-IP {} → {}, {frame}", self.tunnel_source(meta.vip_id, real.ifindex()), to.ip()),
            "nat" => format!("leaves: {client} → {to}, {frame}; replies come back through the LB"),
            "router" => format!("leaves: {client} → {to} (TTL − 1), {frame}; replies come back through the LB"),
            "one-arm" => {
                let pool = self.snat_pools.get(&meta.vip_id, 0).ok();
                let (addrs, ports) = match pool {
                    Some(p) => (
                        p.addrs[..(p.count as usize).min(p.addrs.len())]
                            .iter()
                            .map(|a| ip_from_bytes(a, Family::V4 as u8).to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        format!("{}–{}", p.port_min, p.port_max),
                    ),
                    None => ("?".into(), "?".into()),
                };
                format!("leaves: from a SNAT address ({addrs}) and a free port of the CPU's slice of {ports} → {to}, {frame}; replies come back to that address and port")
            }
            _ => "leaves: unknown mode".into(),
        }
    }

    /// "frame from the LB's MAC to MAC M out of ifindex N", for a frame leaving through
    /// `ifindex` (0: the one it came in on).
    fn frame_to(&self, ifindex: u32, mac: [u8; 6]) -> String {
        frame(ifindex, &self.lb_mac(ifindex), mac)
    }

    /// The LB's MAC on `ifindex`, as text.
    fn lb_mac(&self, ifindex: u32) -> String {
        match self.ifaces.get(&ifindex, 0) {
            Ok(c) => crate::host::resolve::fmt_mac(&c.mac),
            Err(_) => "the LB's MAC".into(),
        }
    }

    /// A tunnel VIP's outer source: its own, or the LB's address on the egress interface.
    fn tunnel_source(&self, vip_id: u32, egress: u32) -> String {
        match self.tunnel_sources.get(&vip_id, 0) {
            Ok(own) if own != [0; 4] => std::net::Ipv4Addr::from(own).to_string(),
            _ => self
                .ifaces
                .get(&egress, 0)
                .map(|c| std::net::Ipv4Addr::from(c.ipv4).to_string())
                .unwrap_or_else(|_| "the LB's address".into()),
        }
    }
}
