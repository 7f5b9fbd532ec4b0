//! What the host looks like as far as `doctor real`'s checks go, read from the system:
//! addresses and routes over rtnetlink, sysctls from /proc/sys, the attached XDP program's
//! name from the kernel's BPF program list. Judging them is `judge`'s.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use anyhow::{anyhow, bail, Context as _, Result};
use futures::TryStreamExt as _;
use rtnetlink::packet_route::{address::AddressAttribute, link::LinkAttribute};

use super::{DoctorRealArgs, RealMode};
use crate::host::{neigh, route};

/// An address configured on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct IfaceAddr {
    pub(super) iface: String,
    pub(super) addr: IpAddr,
    pub(super) prefix_len: u8,
}

/// A per-interface IPv4 sysctl: the kernel acts on max(all, iface) for arp_ignore,
/// arp_announce and rp_filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sysctl {
    pub(super) all: u32,
    pub(super) iface: u32,
}

impl Sysctl {
    pub(super) fn effective(self) -> u32 {
        self.all.max(self.iface)
    }
}

/// The XDP program attached to the interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct XdpProgram {
    pub(super) id: u32,
    /// As the kernel keeps it: at most 15 bytes.
    pub(super) name: String,
}

/// What the host looks like, as far as the checks go. Sysctls and the XDP program are read
/// only when a check needs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Facts {
    pub(super) iface: String,
    pub(super) addrs: Vec<IfaceAddr>,
    pub(super) mtu: u32,
    pub(super) arp_ignore: Option<Sysctl>,
    pub(super) arp_announce: Option<Sysctl>,
    pub(super) rp_filter: Option<Sysctl>,
    /// Tunnel mode: what is attached to the interface (`None` inside: nothing).
    pub(super) xdp: Option<Option<XdpProgram>>,
    /// The address decap accepts tunnels to: the interface's first IPv4 address, read the way
    /// `Datapath::attach_decap` reads it.
    pub(super) decap_addr: Option<Ipv4Addr>,
}

/// Reads what the checks of `args` need about `iface` and the host.
pub(super) async fn gather(args: &DoctorRealArgs, iface: &str) -> Result<Facts> {
    let handle = neigh::connect()?;
    let (_, attrs) = neigh::link_attributes(&handle, iface).await?;
    let mtu = attrs
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        })
        .unwrap_or(0);
    let any_v4 = args.vips.iter().any(IpAddr::is_ipv4);
    let tunnel = args.mode == RealMode::Tunnel;
    let decap_addr = if tunnel {
        let ipv4 = crate::host::iface::config(iface)?.ipv4;
        (ipv4 != [0; 4]).then(|| Ipv4Addr::from(ipv4))
    } else {
        None
    };
    Ok(Facts {
        iface: iface.to_owned(),
        addrs: addresses(&handle).await?,
        mtu,
        arp_ignore: any_v4
            .then(|| read_sysctl(iface, "arp_ignore"))
            .transpose()?,
        arp_announce: any_v4
            .then(|| read_sysctl(iface, "arp_announce"))
            .transpose()?,
        rp_filter: tunnel
            .then(|| read_sysctl(iface, "rp_filter"))
            .transpose()?,
        xdp: if tunnel {
            Some(attached_program(iface).await?)
        } else {
            None
        },
        decap_addr,
    })
}

/// The interface of the main table's default route (IPv4 first, else IPv6).
pub(super) async fn default_route_iface() -> Result<String> {
    let handle = neigh::connect()?;
    let mut multipath = false;
    for v6 in [false, true] {
        let routes = route::routes(&handle, v6).await?;
        let defaults = routes.iter().filter(|r| r.prefix_len == 0);
        // A multipath default route names no single interface (oif 0).
        multipath |= defaults.clone().any(|r| r.oif == 0);
        if let Some(r) = defaults.filter(|r| r.oif != 0).min_by_key(|r| r.metric) {
            let names = link_names(&handle).await?;
            return names.get(&r.oif).cloned().ok_or_else(|| {
                anyhow!(
                    "the default route's interface (index {}) vanished: pass --iface NAME",
                    r.oif
                )
            });
        }
    }
    if multipath {
        bail!("the default route has several next hops, so it names no one interface the LB's traffic arrives on: pass --iface NAME");
    }
    bail!("there is no default route to tell which interface the LB's traffic arrives on: pass --iface NAME")
}

async fn link_names(handle: &rtnetlink::Handle) -> Result<BTreeMap<u32, String>> {
    let mut links = handle.link().get().execute();
    let mut names = BTreeMap::new();
    while let Some(msg) = links.try_next().await.context("listing interfaces")? {
        for a in &msg.attributes {
            if let LinkAttribute::IfName(n) = a {
                names.insert(msg.header.index, n.clone());
            }
        }
    }
    Ok(names)
}

async fn addresses(handle: &rtnetlink::Handle) -> Result<Vec<IfaceAddr>> {
    let names = link_names(handle).await?;
    let mut dump = handle.address().get().execute();
    let mut out = Vec::new();
    while let Some(msg) = dump.try_next().await.context("listing addresses")? {
        // IPv4: IFA_LOCAL is the host's own address (IFA_ADDRESS is the peer's on
        // point-to-point links); IPv6 has only IFA_ADDRESS.
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(l) => Some(*l),
            _ => None,
        });
        let address = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(l) => Some(*l),
            _ => None,
        });
        if let (Some(addr), Some(iface)) = (local.or(address), names.get(&msg.header.index)) {
            out.push(IfaceAddr {
                iface: iface.clone(),
                addr,
                prefix_len: msg.header.prefix_len,
            });
        }
    }
    Ok(out)
}

fn read_sysctl(iface: &str, name: &str) -> Result<Sysctl> {
    let read = |dev: &str| -> Result<u32> {
        let path = format!("/proc/sys/net/ipv4/conf/{dev}/{name}");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        text.trim()
            .parse()
            .with_context(|| format!("{path} holds {text:?}, not a number"))
    };
    Ok(Sysctl {
        all: read("all")?,
        iface: read(iface)?,
    })
}

/// The program attached to `iface`, with the name the kernel keeps for it.
async fn attached_program(iface: &str) -> Result<Option<XdpProgram>> {
    let Some(id) = neigh::xdp_prog_id(iface).await? else {
        return Ok(None);
    };
    let mut failure = None;
    for info in aya::programs::loaded_programs() {
        match info {
            Ok(p) if p.id() == id => {
                let name = String::from_utf8_lossy(p.name()).into_owned();
                return Ok(Some(XdpProgram { id, name }));
            }
            Ok(_) => {}
            // A program unloaded mid-listing fails alone; lacking privileges fails them all.
            Err(e) => failure = Some(e),
        }
    }
    match failure {
        Some(e) => Err(anyhow!(e)).with_context(|| {
            format!("reading the name of XDP program {id} on {iface} (needs root)")
        }),
        None => bail!("XDP program {id} on {iface} was unloaded while being checked: run again"),
    }
}
