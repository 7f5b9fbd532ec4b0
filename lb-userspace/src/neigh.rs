//! What the kernel knows about interfaces and neighbours, over rtnetlink: interface indexes,
//! the XDP program attached to an interface, and reals' MAC addresses.

use std::{net::IpAddr, time::Duration};

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

fn connect() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().context("opening an rtnetlink socket")?;
    tokio::spawn(conn);
    Ok(handle)
}

async fn link_attributes(handle: &Handle, iface: &str) -> Result<(u32, Vec<LinkAttribute>)> {
    let mut links = handle.link().get().match_name(iface.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok((msg.header.index, msg.attributes)),
        Ok(None) | Err(_) => bail!("interface {iface} does not exist (see `ip link`)"),
    }
}

/// The id of the XDP program attached to `iface`, if any.
pub async fn xdp_prog_id(iface: &str) -> Result<Option<u32>> {
    let handle = connect()?;
    let (_, attrs) = link_attributes(&handle, iface).await?;
    Ok(attrs.iter().find_map(|a| match a {
        LinkAttribute::Xdp(xdp) => xdp.iter().find_map(|x| match x {
            LinkXdp::ProgId(id) if *id != 0 => Some(*id),
            _ => None,
        }),
        _ => None,
    }))
}

fn usable_mac(msg: &NeighbourMessage, addr: IpAddr) -> Option<[u8; 6]> {
    let state = msg.header.state;
    if matches!(
        state,
        NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
    ) {
        return None;
    }
    let mut dest = None;
    let mut mac = None;
    for a in &msg.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                dest = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                dest = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                mac = <[u8; 6]>::try_from(&l[..]).ok()
            }
            _ => {}
        }
    }
    if dest == Some(addr) {
        mac
    } else {
        None
    }
}

async fn lookup(handle: &Handle, ifindex: u32, addr: IpAddr) -> Result<Option<[u8; 6]>> {
    let mut entries = handle.neighbours().get().execute();
    while let Some(msg) = entries
        .try_next()
        .await
        .context("dumping the neighbour table")?
    {
        if msg.header.ifindex == ifindex {
            if let Some(mac) = usable_mac(&msg, addr) {
                return Ok(Some(mac));
            }
        }
    }
    Ok(None)
}

/// The MAC address of each of `addrs` on `iface`, from the kernel's neighbour table. A missing
/// entry is added as a *managed* neighbour, which the kernel resolves (ARP/ND) and keeps fresh.
pub async fn resolve_macs(
    iface: &str,
    addrs: &[IpAddr],
    timeout: Duration,
) -> Result<Vec<[u8; 6]>> {
    let handle = connect()?;
    let (ifindex, _) = link_attributes(&handle, iface).await?;
    let mut macs = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        if let Some(mac) = lookup(&handle, ifindex, addr).await? {
            macs.push(mac);
            continue;
        }
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
            .with_context(|| format!("asking the kernel to resolve {addr} on {iface}"))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mac = loop {
            if let Some(mac) = lookup(&handle, ifindex, addr).await? {
                break mac;
            }
            if tokio::time::Instant::now() >= deadline {
                // Take back the entry this call added: a failed attach leaves nothing behind.
                let mut del = handle.neighbours().add(ifindex, addr).message_mut().clone();
                del.attributes
                    .retain(|a| matches!(a, NeighbourAttribute::Destination(_)));
                let _ = handle.neighbours().del(del).execute().await;
                return Err(anyhow!(
                    "real {addr} did not answer ARP/ND on {iface} within {timeout:?}: is it up, and on the same L2 segment as {iface}?"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        macs.push(mac);
    }
    Ok(macs)
}
