//! What the kernel knows about interfaces and neighbours, over rtnetlink: interface indexes,
//! the XDP program attached to an interface, and reals' MAC addresses.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use anyhow::{anyhow, bail, Context as _, Result};
use futures::TryStreamExt as _;
use rtnetlink::{
    packet_route::{
        link::{LinkAttribute, LinkXdp},
        neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourMessage,
            NeighbourState,
        },
    },
    Handle,
};

pub(crate) fn connect() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().context("opening an rtnetlink socket")?;
    tokio::spawn(conn);
    Ok(handle)
}

pub(crate) async fn link_attributes(
    handle: &Handle,
    iface: &str,
) -> Result<(u32, Vec<LinkAttribute>)> {
    let mut links = handle.link().get().match_name(iface.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok((msg.header.index, msg.attributes)),
        Ok(None) => bail!("interface {iface} does not exist (see `ip link`)"),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => {
            bail!("interface {iface} does not exist (see `ip link`)")
        }
        Err(e) => Err(anyhow!(e)).with_context(|| {
            format!("asking the kernel about interface {iface} (lbctl needs root)")
        }),
    }
}

/// The id of the XDP program attached to `iface`, if any.
pub async fn xdp_prog_id(iface: &str) -> Result<Option<u32>> {
    let handle = connect()?;
    let (_, attrs) = link_attributes(&handle, iface).await?;
    Ok(attrs.iter().find_map(|a| match a {
        LinkAttribute::Xdp(xdp) => xdp.iter().find_map(|x| match x {
            // One mode attached: ProgId; several: only the per-mode ids are reported.
            LinkXdp::ProgId(id) | LinkXdp::DrvProgId(id) | LinkXdp::SkbProgId(id) if *id != 0 => {
                Some(*id)
            }
            _ => None,
        }),
        _ => None,
    }))
}

/// Whether an entry in `state` holds a MAC frames can be sent to: resolved, or resolved once
/// and being re-checked (STALE, DELAY, PROBE), or set by hand. A FAILED entry may still carry
/// the MAC it had, and is not one to send to.
fn usable(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    )
}

/// The MAC a neighbour entry gives for sending frames to its address: its link-layer address
/// when that is Ethernet's (6 bytes) and the entry's state is [`usable`]. This is the one rule
/// for both attach's lookups and the neighbour watch.
pub(crate) fn usable_mac(msg: &NeighbourMessage) -> Option<[u8; 6]> {
    if !usable(msg.header.state) {
        return None;
    }
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) => <[u8; 6]>::try_from(&l[..]).ok(),
        _ => None,
    })
}

/// The IPv4 or IPv6 address a neighbour entry is about.
pub(crate) fn destination(msg: &NeighbourMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })
}

async fn lookup(handle: &Handle, ifindex: u32, addr: IpAddr) -> Result<Option<[u8; 6]>> {
    let mut entries = handle.neighbours().get().execute();
    while let Some(msg) = entries
        .try_next()
        .await
        .context("dumping the neighbour table")?
    {
        if msg.header.ifindex == ifindex && destination(&msg) == Some(addr) {
            if let Some(mac) = usable_mac(&msg) {
                return Ok(Some(mac));
            }
        }
    }
    Ok(None)
}

/// Neighbour entries that `resolve_macs` added, to take back when what they were for fails.
#[must_use = "remove() them when the attach they were added for fails"]
pub struct AddedNeighbours {
    handle: Handle,
    ifindex: u32,
    addrs: Vec<IpAddr>,
}

impl AddedNeighbours {
    pub async fn remove(self) {
        for addr in self.addrs {
            let mut msg = self
                .handle
                .neighbours()
                .add(self.ifindex, addr)
                .message_mut()
                .clone();
            msg.attributes
                .retain(|a| matches!(a, NeighbourAttribute::Destination(_)));
            if let Err(e) = self.handle.neighbours().del(msg).execute().await {
                tracing::warn!(%addr, error = %e, "could not remove the neighbour entry lbctl added; `ip neigh del` it by hand");
            }
        }
    }
}

/// The MAC address of each of `addrs` on `iface`, from the kernel's neighbour table, or why
/// there is none. A missing entry is added as a *managed* neighbour, which the kernel resolves
/// (ARP/ND) and keeps resolving and fresh; all but those in `no_wait` are waited for
/// together, up to `timeout`. An
/// address that does not answer is not an error here: the caller reports it and keeps the
/// managed entry, so it resolves when the host appears. The entries added are returned so a
/// failed attach can remove them.
pub async fn resolve_macs(
    iface: &str,
    addrs: &[IpAddr],
    timeout: Duration,
    no_wait: &BTreeSet<IpAddr>,
) -> Result<(Vec<Result<[u8; 6], String>>, AddedNeighbours)> {
    let handle = connect()?;
    let (ifindex, _) = link_attributes(&handle, iface).await?;
    let mut added = AddedNeighbours {
        handle: handle.clone(),
        ifindex,
        addrs: Vec::new(),
    };
    let mut macs = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let known = match lookup(&handle, ifindex, addr).await {
            Ok(known) => known,
            Err(e) => {
                added.remove().await;
                return Err(e);
            }
        };
        if known.is_none() {
            if let Err(e) = ask_to_resolve(&handle, iface, ifindex, addr).await {
                added.remove().await;
                return Err(e);
            }
            added.addrs.push(addr);
        }
        macs.push(known);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let waiting = |macs: &[Option<[u8; 6]>]| {
        macs.iter()
            .zip(addrs)
            .any(|(m, a)| m.is_none() && !no_wait.contains(a))
    };
    while waiting(&macs) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (mac, &addr) in macs.iter_mut().zip(addrs) {
            if mac.is_none() {
                *mac = lookup(&handle, ifindex, addr).await?;
            }
        }
    }
    let found = macs
        .into_iter()
        .zip(addrs)
        .map(|(mac, addr)| {
            mac.ok_or_else(|| {
                format!("{addr} did not answer ARP/ND on {iface} within {timeout:?}: is it up, and on the same L2 segment as {iface}?")
            })
        })
        .collect();
    Ok((found, added))
}

/// Adds `addr` on `ifindex` as a *managed* neighbour entry, replacing one that failed, which
/// the kernel resolves and keeps resolving. `iface` names the interface in the error.
pub(crate) async fn ask_to_resolve(
    handle: &Handle,
    iface: &str,
    ifindex: u32,
    addr: IpAddr,
) -> Result<()> {
    let mut req = handle
        .neighbours()
        .add(ifindex, addr)
        .state(NeighbourState::None)
        .replace();
    req.message_mut()
        .attributes
        .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
    req.execute()
        .await
        .with_context(|| format!("asking the kernel to resolve {addr} on {iface}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_is_usable_in_resolved_and_rechecked_states_only() {
        use NeighbourState::*;
        for state in [Reachable, Stale, Delay, Probe, Permanent, Noarp] {
            assert!(usable(state), "{state:?}");
        }
        for state in [Incomplete, Failed, None, Other(0x100)] {
            assert!(!usable(state), "{state:?}");
        }
    }
}
