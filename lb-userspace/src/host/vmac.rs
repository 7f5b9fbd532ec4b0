//! VRRP's virtual MACs on the interfaces the balancer is attached to.
//!
//! keepalived with `use_vmac` puts the virtual router's addresses on a macvlan interface
//! (`vrrp.VRID`) on top of the real one, with the virtual router's MAC: 00-00-5E-00-01-VRID
//! for IPv4, 00-00-5E-00-02-VRID for IPv6 (RFC 5798). Routers and clients then send to that
//! MAC, and the frames reach the lower interface's XDP program first, where they must be
//! balanced like frames to the interface's own MAC. keepalived makes the macvlan when it
//! starts, which may be after lbctl: [`VmacWatch`] follows the kernel's link notifications
//! (and re-reads every few seconds, in case one was lost) and reports each change.
//!
//! Only the MAC of the macvlan is taken, never the VRRP state: frames reach the LB for its
//! virtual MAC only while keepalived holds MASTER (the switch learns the MAC from its
//! adverts and gratuitous ARPs); a backup that sees one anyway (a switch flooding an unknown
//! MAC) balances it as the master would, to the same real for dsr and tunnel (the same
//! Maglev tables).

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, Result};
use futures::{StreamExt as _, TryStreamExt as _};
use lb_common::MAX_VMACS;
use rtnetlink::{
    packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
    Handle, MulticastGroup,
};
use tokio::{sync::mpsc, task::JoinHandle, time::MissedTickBehavior};
use tracing::warn;

use crate::host::neigh;

/// The virtual MACs of one interface, as the datapath holds them (unused slots zero).
pub type Vmacs = [[u8; 6]; MAX_VMACS];

/// How often the links are re-read besides the notifications.
const REFRESH: Duration = Duration::from_secs(5);

/// Whether `mac` is a VRRP virtual router's MAC (IPv4 or IPv6).
pub fn is_vrrp(mac: &[u8; 6]) -> bool {
    mac[..4] == [0x00, 0x00, 0x5e, 0x00] && (mac[4] == 0x01 || mac[4] == 0x02)
}

/// One link, as far as virtual MACs are concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Link {
    index: u32,
    /// The bridge it is a port of.
    master: Option<u32>,
    /// The interface a macvlan sits on.
    lower: Option<u32>,
    macvlan: bool,
    mac: Option<[u8; 6]>,
}

fn link(msg: &LinkMessage) -> Link {
    let mut l = Link {
        index: msg.header.index,
        ..Link::default()
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::Controller(m) => l.master = Some(*m),
            LinkAttribute::Link(lower) => l.lower = Some(*lower),
            LinkAttribute::Address(bytes) => l.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            LinkAttribute::LinkInfo(infos) => {
                l.macvlan |= infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::MacVlan)));
            }
            _ => {}
        }
    }
    l
}

/// The virtual MACs of each of `ifindexes`: those of VRRP macvlans on the interface, or on
/// the bridge it is a port of (whose MAC and addresses are the LB's there). More than
/// [`MAX_VMACS`] on one interface: the lowest are kept, and the rest named in a warning.
fn assign(links: &[Link], ifindexes: &[u32]) -> BTreeMap<u32, Vmacs> {
    let mut out = BTreeMap::new();
    for &ifindex in ifindexes {
        let l3 = links
            .iter()
            .find(|l| l.index == ifindex)
            .and_then(|l| l.master)
            .unwrap_or(ifindex);
        let mut found: Vec<[u8; 6]> = links
            .iter()
            .filter(|l| l.macvlan && l.lower == Some(l3))
            .filter_map(|l| l.mac)
            .filter(is_vrrp)
            .collect();
        found.sort();
        found.dedup();
        if found.len() > MAX_VMACS {
            warn!(ifindex, ignored = ?&found[MAX_VMACS..], "more VRRP virtual MACs on one interface than the datapath takes ({MAX_VMACS}); frames to the others are not balanced");
        }
        let mut slots: Vmacs = Default::default();
        for (slot, mac) in slots.iter_mut().zip(found) {
            *slot = mac;
        }
        out.insert(ifindex, slots);
    }
    out
}

/// The virtual MACs of each of `ifindexes`, read from the kernel now.
pub async fn read(handle: &Handle, ifindexes: &[u32]) -> Result<BTreeMap<u32, Vmacs>> {
    let links: Vec<Link> = handle
        .link()
        .get()
        .execute()
        .map_ok(|m| link(&m))
        .try_collect()
        .await
        .context("listing the interfaces (for keepalived's virtual MACs)")?;
    Ok(assign(&links, ifindexes))
}

/// Follows the virtual MACs of a set of interfaces; stops on drop.
pub struct VmacWatch {
    task: JoinHandle<()>,
    connection: JoinHandle<()>,
    wanted: tokio::sync::watch::Sender<Vec<u32>>,
}

impl VmacWatch {
    /// Watches `ifindexes`, whose virtual MACs are `known` now: every change after that is
    /// sent, whole (each interface's slots), on the returned receiver.
    pub fn start(
        ifindexes: Vec<u32>,
        known: BTreeMap<u32, Vmacs>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<BTreeMap<u32, Vmacs>>)> {
        let (conn, _, mut events) = rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
            .context("subscribing to the kernel's link notifications")?;
        let handle = neigh::connect()?;
        let (changes_tx, changes) = mpsc::unbounded_channel();
        let (wanted, mut wanted_rx) = tokio::sync::watch::channel(ifindexes);
        let connection = tokio::spawn(conn);
        let task = tokio::spawn(async move {
            let mut known = known;
            let mut tick = tokio::time::interval(REFRESH);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut listening = true;
            loop {
                tokio::select! {
                    event = events.next(), if listening => {
                        if event.is_none() {
                            warn!(every = ?REFRESH, "the kernel's link notifications stopped: keepalived's virtual MACs are now seen only when the links are re-read");
                            listening = false;
                            continue;
                        }
                    }
                    changed = wanted_rx.changed() => if changed.is_err() { return },
                    _ = tick.tick() => {}
                }
                let ifindexes = wanted_rx.borrow_and_update().clone();
                match read(&handle, &ifindexes).await {
                    Ok(now) if now != known => {
                        known = now.clone();
                        if changes_tx.send(now).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "reading keepalived's virtual MACs failed; trying again")
                    }
                }
            }
        });
        Ok((
            Self {
                task,
                connection,
                wanted,
            },
            changes,
        ))
    }

    /// Watches these interfaces from now on (after an interface is detached).
    pub fn set_wanted(&self, ifindexes: Vec<u32>) {
        self.wanted.send_replace(ifindexes);
    }
}

impl Drop for VmacWatch {
    fn drop(&mut self) {
        self.task.abort();
        self.connection.abort();
    }
}

/// `00:00:5e:00:01:33`, or `-` for an empty slot list.
pub fn fmt(vmacs: &Vmacs) -> String {
    let names: Vec<String> = vmacs
        .iter()
        .filter(|m| **m != [0; 6])
        .map(crate::host::resolve::fmt_mac)
        .collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMAC_V4: [u8; 6] = [0, 0, 0x5e, 0, 1, 51];
    const VMAC_V6: [u8; 6] = [0, 0, 0x5e, 0, 2, 51];

    fn macvlan(index: u32, lower: u32, mac: [u8; 6]) -> Link {
        Link {
            index,
            lower: Some(lower),
            macvlan: true,
            mac: Some(mac),
            ..Link::default()
        }
    }

    #[test]
    fn vrrp_macs_are_told_from_others() {
        assert!(is_vrrp(&VMAC_V4) && is_vrrp(&VMAC_V6));
        assert!(!is_vrrp(&[0, 0, 0x5e, 0, 3, 1]));
        assert!(!is_vrrp(&[2, 0, 0x5e, 0, 1, 1]));
    }

    #[test]
    fn an_interface_gets_the_vrrp_macvlans_on_it_or_on_its_bridge() {
        let links = [
            Link {
                index: 2,
                ..Link::default()
            },
            // A port of bridge 10.
            Link {
                index: 3,
                master: Some(10),
                ..Link::default()
            },
            macvlan(20, 2, VMAC_V6),
            macvlan(21, 2, VMAC_V4),
            // Not VRRP's: a container's macvlan.
            macvlan(22, 2, [2, 1, 2, 3, 4, 5]),
            // A vlan on 2 with a VRRP MAC is not a macvlan.
            Link {
                index: 23,
                lower: Some(2),
                mac: Some([0, 0, 0x5e, 0, 1, 7]),
                ..Link::default()
            },
            macvlan(24, 10, VMAC_V4),
        ];
        let got = assign(&links, &[2, 3, 4]);
        assert_eq!(got[&2], [VMAC_V4, VMAC_V6], "sorted, only VRRP macvlans");
        assert_eq!(got[&3], [VMAC_V4, [0; 6]], "the bridge's");
        assert_eq!(got[&4], [[0; 6]; 2], "none");
    }

    #[test]
    fn more_than_the_slots_keeps_the_lowest() {
        let links = [
            macvlan(20, 2, [0, 0, 0x5e, 0, 1, 3]),
            macvlan(21, 2, [0, 0, 0x5e, 0, 1, 1]),
            macvlan(22, 2, [0, 0, 0x5e, 0, 1, 2]),
        ];
        let got = assign(&links, &[2]);
        assert_eq!(got[&2], [[0, 0, 0x5e, 0, 1, 1], [0, 0, 0x5e, 0, 1, 2]]);
    }
}
