//! From what operators name to what the datapath needs, asked of the kernel: the interfaces
//! to attach to and the LB's side of each, every real's egress interface and next-hop MAC,
//! one-arm SNAT pools. Nothing is attached here; neighbour entries added to resolve MACs are
//! returned so a failed attach can take them back.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use futures::TryStreamExt as _;
use rtnetlink::{
    packet_route::{
        address::AddressAttribute,
        link::LinkAttribute,
        neighbour::{NeighbourAttribute, NeighbourMessage},
        AddressFamily,
    },
    Handle,
};

use crate::{
    datapath::{real_key, Interface, Real, RealKey},
    declare::{
        service::{Service, VipSettings},
        spec::{Mode, RealSpec, VipSpec},
    },
    host::{
        iface, neigh,
        route::{self, NextHop, Route},
        vmac,
    },
};

/// Everything `Datapath` needs to serve `services` on the interfaces.
pub struct Resolved {
    pub interfaces: Vec<Interface>,
    /// The services, each real resolved.
    pub services: Vec<ResolvedService>,
    /// Neighbour entries lbctl added; `remove` them if the attach fails.
    pub added: Vec<neigh::AddedNeighbours>,
    /// Reals whose next hop has no MAC yet, and why: they are in `services`, down, until it
    /// resolves (the kernel keeps trying: their neighbour entries are managed).
    pub unresolved: BTreeMap<RealKey, String>,
    /// Every next hop's (interface or bridge index, address): the neighbour entries to watch.
    pub next_hops: BTreeSet<(u32, IpAddr)>,
    /// The next hops without a MAC: not waited for again by the next resolve.
    pub unresolved_hops: BTreeSet<IpAddr>,
}

/// A configured service with each of its reals resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedService {
    pub vip: VipSpec,
    /// As configured, a one-arm VIP's default SNAT pool filled in.
    pub settings: VipSettings,
    pub reals: Vec<ResolvedReal>,
}

/// A configured real and how the datapath reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedReal {
    /// As configured: address, port, weight, state.
    pub spec: RealSpec,
    /// Where it is reached (egress, next hop's MAC); down while that MAC is unknown.
    pub real: Real,
}

impl ResolvedService {
    /// The service as configured.
    pub fn service(&self) -> Service {
        Service {
            vip: self.vip,
            settings: self.settings.clone(),
            reals: self.reals.iter().map(|r| r.spec).collect(),
        }
    }
}

impl Resolved {
    /// Nothing served yet.
    pub fn empty() -> Self {
        Self {
            interfaces: Vec::new(),
            services: Vec::new(),
            added: Vec::new(),
            unresolved: BTreeMap::new(),
            next_hops: BTreeSet::new(),
            unresolved_hops: BTreeSet::new(),
        }
    }

    /// The same, without the neighbour entries it added (they stay with this one).
    pub fn clone_for_restate(&self) -> Self {
        Self {
            interfaces: self.interfaces.clone(),
            services: self.services.clone(),
            added: Vec::new(),
            unresolved: self.unresolved.clone(),
            next_hops: self.next_hops.clone(),
            unresolved_hops: self.unresolved_hops.clone(),
        }
    }

    /// Takes back the neighbour entries lbctl added.
    pub async fn forget_neighbours(self) {
        for a in self.added {
            a.remove().await;
        }
    }
}

/// How a real is reached: an attached interface, or a bridge whose ports are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Egress {
    Direct(u32),
    Bridge(u32),
}

/// Resolves `services` for the interfaces named `ifaces`, waiting up to `timeout` for next
/// hops to answer ARP/ND, except those in `no_wait` (known not to answer).
pub async fn resolve(
    ifaces: &[String],
    services: &[Service],
    timeout: Duration,
    no_wait: &BTreeSet<IpAddr>,
) -> Result<Resolved> {
    let handle = neigh::connect()?;
    let mut interfaces = Vec::new();
    // Bridges some attached interfaces are ports of: bridge ifindex → (name, ports).
    let mut bridges: BTreeMap<u32, (String, BTreeSet<u32>)> = BTreeMap::new();
    for name in ifaces {
        let (ifindex, attrs) = neigh::link_attributes(&handle, name).await?;
        let own = iface::config(name)?;
        let master = attrs.iter().find_map(|a| match a {
            LinkAttribute::Controller(m) => Some(*m),
            _ => None,
        });
        // A bridge port's L3 identity is its bridge's: frames for the LB carry the bridge's
        // MAC, and the bridge holds the address.
        let config = match master {
            Some(m) => {
                let bridge = link_name(&handle, m).await?;
                let b = iface::config(&bridge)?;
                bridges
                    .entry(m)
                    .or_insert_with(|| (bridge, BTreeSet::new()))
                    .1
                    .insert(ifindex);
                lb_common::IfaceConfig {
                    mac: b.mac,
                    mtu: own.mtu,
                    ipv4: b.ipv4,
                    vmacs: Default::default(),
                }
            }
            None => own,
        };
        interfaces.push(Interface {
            name: name.clone(),
            ifindex,
            config,
        });
    }
    let indexes: Vec<u32> = interfaces.iter().map(|i| i.ifindex).collect();
    let vmacs = vmac::read(&handle, &indexes).await?;
    for i in &mut interfaces {
        i.config.vmacs = vmacs.get(&i.ifindex).copied().unwrap_or_default();
    }
    let attached: BTreeSet<u32> = indexes.into_iter().collect();
    let names: BTreeMap<u32, String> = interfaces
        .iter()
        .map(|i| (i.ifindex, i.name.clone()))
        .chain(bridges.iter().map(|(m, (n, _))| (*m, n.clone())))
        .collect();
    let here = ifaces.join(", ");

    // Where each real goes: egress and next hop.
    let mut tables: [Option<Vec<Route>>; 2] = [None, None];
    let mut hops = Vec::new();
    for s in services {
        let mut per_real = Vec::new();
        for r in &s.reals {
            let table = &mut tables[usize::from(r.addr.is_ipv6())];
            if table.is_none() {
                *table = Some(route::routes(&handle, r.addr.is_ipv6()).await?);
            }
            let (hop, oif) = route::route_to(table.as_deref().unwrap_or_default(), r.addr, &here)?;
            let egress = if attached.contains(&oif) {
                Egress::Direct(oif)
            } else if bridges.contains_key(&oif) {
                Egress::Bridge(oif)
            } else {
                let via = link_name(&handle, oif)
                    .await
                    .unwrap_or_else(|_| format!("index {oif}"));
                bail!("real {r} of VIP {} is reached through {via}, which lbctl is not attached to: add {via} to the interfaces (`lbctl attach {here} {via} ...`)", s.vip);
            };
            if s.settings.mode == Mode::Dsr {
                if let NextHop::Via(gw) = hop {
                    bail!("dsr needs reals on the segment of {here}, but {} is routed via {gw}: use mode tunnel for routed reals", r.addr);
                }
            }
            per_real.push((egress, hop));
        }
        hops.push(per_real);
    }

    // The MAC of every next hop, resolved on the interface (or bridge) it is reached on.
    let mut wanted: BTreeMap<u32, Vec<IpAddr>> = BTreeMap::new();
    for (egress, hop) in hops.iter().flatten() {
        let (Egress::Direct(i) | Egress::Bridge(i)) = *egress;
        let list = wanted.entry(i).or_default();
        if !list.contains(&hop.addr()) {
            list.push(hop.addr());
        }
    }
    let mut resolved = Resolved {
        interfaces,
        services: Vec::new(),
        added: Vec::new(),
        unresolved: BTreeMap::new(),
        next_hops: BTreeSet::new(),
        unresolved_hops: BTreeSet::new(),
    };
    let mut macs: BTreeMap<(u32, IpAddr), Result<[u8; 6], String>> = BTreeMap::new();
    for (ifindex, addrs) in &wanted {
        let name = &names[ifindex];
        match neigh::resolve_macs(name, addrs, timeout, no_wait).await {
            Ok((found, added)) => {
                resolved.added.push(added);
                for (a, m) in addrs.iter().zip(found) {
                    resolved.next_hops.insert((*ifindex, *a));
                    macs.insert((*ifindex, *a), m);
                }
            }
            Err(e) => {
                resolved.forget_neighbours().await;
                return Err(e);
            }
        }
    }
    match finish(&handle, &mut resolved, services, &hops, &macs, &bridges).await {
        Ok(()) => Ok(resolved),
        Err(e) => {
            resolved.forget_neighbours().await;
            Err(e)
        }
    }
}

/// Turns next hops and MACs into reals (a bridge's port found in its forwarding database),
/// and fills in one-arm pools. A real whose next hop has no MAC is kept, down, and recorded.
async fn finish(
    handle: &Handle,
    resolved: &mut Resolved,
    services: &[Service],
    hops: &[Vec<(Egress, NextHop)>],
    macs: &BTreeMap<(u32, IpAddr), Result<[u8; 6], String>>,
    bridges: &BTreeMap<u32, (String, BTreeSet<u32>)>,
) -> Result<()> {
    let local = local_addresses(handle).await?;
    for (s, per_real) in services.iter().zip(hops) {
        let mut s = s.clone();
        let mut reals = Vec::new();
        for (r, (egress, hop)) in s.reals.iter().zip(per_real) {
            let (Egress::Direct(i) | Egress::Bridge(i)) = *egress;
            let mut real = Real {
                addr: r.addr,
                port: r.port,
                mac: [0; 6],
                ifindex: i,
                weight: r.weight,
                down: false,
            };
            let mac = match &macs[&(i, hop.addr())] {
                Ok(mac) => *mac,
                Err(why) => {
                    real.down = true;
                    resolved.unresolved_hops.insert(hop.addr());
                    let key = real_key(&s.vip, &real);
                    resolved.unresolved.insert(key, why.clone());
                    reals.push(real);
                    continue;
                }
            };
            real.mac = mac;
            if let Egress::Bridge(b) = *egress {
                let (bridge, ports) = &bridges[&b];
                real.ifindex = bridge_port(handle, mac, ports).await?.ok_or_else(|| {
                    anyhow!(
                        "bridge {bridge} does not know which port {} ({}) is behind: is it up?",
                        hop.addr(),
                        fmt_mac(&mac)
                    )
                })?;
            }
            reals.push(real);
        }
        if let Some(a) = s.settings.tunnel_source.filter(|a| !local.contains(a)) {
            bail!("tunnel source {a} of VIP {} is not an address of this host, so ICMP errors about its tunnels would not reach the LB: add it (`ip addr add {a}/32 dev IFACE`)", s.vip);
        }
        if s.settings.mode == Mode::OneArm {
            if s.settings.snat_pool.is_empty() {
                let first = reals.first().map(|r| r.ifindex).unwrap_or_default();
                if reals.iter().any(|r| r.ifindex != first) {
                    bail!("one-arm VIP {}: its reals are reached through several interfaces, so no one interface address suits them all as source; give a snat_pool", s.vip);
                }
                let ipv4 = resolved
                    .interfaces
                    .iter()
                    .find(|i| i.ifindex == first)
                    .map(|i| i.config.ipv4)
                    .unwrap_or_default();
                if ipv4 == [0; 4] {
                    bail!("one-arm VIP {}: the interface its reals are reached through has no IPv4 address to use as source; give a snat_pool", s.vip);
                }
                s.settings.snat_pool = vec![IpAddr::from(ipv4)];
            }
            if let Some(a) = s.settings.snat_pool.iter().find(|a| !local.contains(a)) {
                bail!("SNAT pool address {a} of VIP {} is not an address of this host, so replies to it would not reach the LB: add it (`ip addr add {a}/32 dev IFACE`)", s.vip);
            }
            warn_if_ephemeral(&s);
        }
        let reals = s
            .reals
            .into_iter()
            .zip(reals)
            .map(|(spec, real)| ResolvedReal { spec, real })
            .collect();
        resolved.services.push(ResolvedService {
            vip: s.vip,
            settings: s.settings,
            reals,
        });
    }
    Ok(())
}

/// The host's own connections from a pool address take ephemeral ports: a SNAT range that
/// overlaps them can meet such a connection to the same real (its replies would be taken
/// for a flow's). Worth a warning, not a refusal: the host may never connect to its reals.
fn warn_if_ephemeral(s: &Service) {
    let Ok(text) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else {
        return;
    };
    let mut bounds = text
        .split_whitespace()
        .filter_map(|w| w.parse::<u16>().ok());
    let (Some(lo), Some(hi)) = (bounds.next(), bounds.next()) else {
        return;
    };
    let ports = s.settings.snat_ports;
    if ports.min <= hi && lo <= ports.max {
        tracing::warn!(vip = %s.vip, snat_ports = %ports, ephemeral = %format!("{lo}-{hi}"), "the SNAT ports overlap the kernel's ephemeral ports (net.ipv4.ip_local_port_range): a connection of this host from a pool address to a real could meet a flow's; choose ports outside it");
    }
}

async fn link_name(handle: &Handle, index: u32) -> Result<String> {
    let mut links = handle.link().get().match_index(index).execute();
    let msg = links
        .try_next()
        .await
        .with_context(|| format!("asking the kernel about interface {index}"))?
        .ok_or_else(|| anyhow!("interface {index} does not exist"))?;
    msg.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .ok_or_else(|| anyhow!("interface {index} has no name"))
}

/// The port among `ports` that the bridge's forwarding database has `mac` behind.
async fn bridge_port(handle: &Handle, mac: [u8; 6], ports: &BTreeSet<u32>) -> Result<Option<u32>> {
    let mut req = handle.neighbours().get();
    req.message_mut().header.family = AddressFamily::Bridge;
    let mut entries = req.execute();
    while let Some(msg) = entries
        .try_next()
        .await
        .context("dumping the bridge forwarding database")?
    {
        if ports.contains(&msg.header.ifindex) && lladdr(&msg) == Some(mac) {
            return Ok(Some(msg.header.ifindex));
        }
    }
    Ok(None)
}

fn lladdr(msg: &NeighbourMessage) -> Option<[u8; 6]> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) => <[u8; 6]>::try_from(&l[..]).ok(),
        _ => None,
    })
}

/// Every address assigned to this host's interfaces.
async fn local_addresses(handle: &Handle) -> Result<BTreeSet<IpAddr>> {
    let mut out = BTreeSet::new();
    let mut dump = handle.address().get().execute();
    while let Some(msg) = dump
        .try_next()
        .await
        .context("dumping the host's addresses")?
    {
        for a in &msg.attributes {
            if let AddressAttribute::Local(ip) | AddressAttribute::Address(ip) = a {
                out.insert(*ip);
            }
        }
    }
    Ok(out)
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
