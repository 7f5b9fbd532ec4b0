//! Following reals' MAC addresses while lbctl runs, from the kernel's neighbour table.
//!
//! The datapath sends frames straight to each real's MAC from XDP, past the kernel's
//! neighbour layer: balanced traffic never makes the kernel re-check an entry, which goes
//! STALE and keeps whatever MAC it had. When a real's MAC changes (NIC swap, VM migration, a
//! VRRP/keepalived failover that moves an address), the entry is updated by what the real
//! announces: a gratuitous ARP, which the kernel accepts for an address it already has an
//! entry for, or an unsolicited neighbour advertisement. That is what lbctl relies on.
//! keepalived sends them on failover; for a Linux real whose own MAC changes, set
//! `net.ipv4.conf.IFACE.arp_notify=1` (and `net.ipv6.conf.IFACE.ndisc_notify=1`) on the real
//! so it sends one. A real that changes MAC without announcing it keeps its old MAC in the
//! LB's table, and here, until the kernel re-checks the entry: when the LB host itself sends
//! to the real (health checks do), or, for a *managed* entry (lbctl adds those for the reals
//! it had to resolve), once it is stale, which took 47 s in a test (its last 4 s FAILED, so
//! reported as no MAC).
//!
//! [`NeighbourWatch`] listens to the kernel's neighbour notifications (the `RTNLGRP_NEIGH`
//! multicast group) and reports each wanted next hop whose usable MAC changes. Notifications
//! are lost when the socket's buffer overflows, so it also re-reads the table every
//! `refresh_every` (and at once after an overflow) and reports what differs. A wanted next hop
//! without a usable MAC is asked for on each refresh, the way `neigh::resolve_macs` does it (a
//! *managed* entry, which the kernel resolves and keeps resolving), so a real that is not
//! there yet is found once it appears. Those entries stay after lbctl, as attach's do.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        neighbour::{NeighbourFlags, NeighbourMessage},
        AddressFamily, RouteNetlinkMessage,
    },
    sys::SocketAddr,
    Handle, MulticastGroup,
};
use tokio::{
    sync::{mpsc, Notify},
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};
use tracing::warn;

use crate::host::neigh;

/// How often the table is re-read and unresolved next hops asked for, unless told otherwise.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);

/// How long one read of the table may take; a refresh that takes longer waits for the next.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// A next hop: the interface it is reached through and its address.
type Key = (u32, IpAddr);
type Mac = [u8; 6];

/// A wanted next hop's usable MAC changed: `mac` is the new one, or `None` when the kernel has
/// none any more (resolution failed, or the entry was deleted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighbourChange {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub mac: Option<[u8; 6]>,
}

/// Watches the kernel's neighbour entries of a set of next hops; stops when dropped.
pub struct NeighbourWatch {
    known: Arc<Mutex<Known>>,
    refresh_now: Arc<Notify>,
    task: JoinHandle<()>,
}

impl NeighbourWatch {
    /// Starts watching `wanted` (interface index, address) next hops, re-reading the table
    /// every `refresh_every`. Returns once the table has been read: [`current`](Self::current)
    /// then holds what the kernel knows, and the receiver gets each change after that.
    pub async fn start(
        wanted: impl IntoIterator<Item = (u32, IpAddr)>,
        refresh_every: Duration,
    ) -> Result<(Self, mpsc::UnboundedReceiver<NeighbourChange>)> {
        ensure!(
            !refresh_every.is_zero(),
            "the neighbour refresh interval must be longer than zero"
        );
        // Subscribed before the first read, so no change falls between the two.
        let (conn, _, events) = rtnetlink::new_multicast_connection(&[MulticastGroup::Neigh])
            .context("subscribing to the kernel's neighbour notifications")?;
        let (changes_tx, changes) = mpsc::unbounded_channel();
        let watcher = Watcher {
            handle: neigh::connect()?,
            known: Arc::new(Mutex::new(Known::new(wanted))),
            changes: changes_tx,
        };
        // What the kernel knows now is the starting point, not a change.
        let seen = watcher.read_table().await?;
        let unresolved = {
            let mut known = watcher.lock();
            known.observe_table(&seen);
            known.unresolved()
        };
        for key in unresolved {
            request_resolution(&watcher.handle, key).await?;
        }
        let known = watcher.known.clone();
        let refresh_now = Arc::new(Notify::new());
        let run = watcher.run(events, refresh_now.clone(), refresh_every);
        let task = tokio::spawn(async move {
            tokio::pin!(run);
            tokio::select! {
                () = conn => {
                    warn!(every = ?refresh_every, "the kernel's neighbour notifications stopped: MAC changes are now seen only when the table is re-read");
                    run.await
                }
                () = &mut run => {}
            }
        });
        Ok((
            Self {
                known,
                refresh_now,
                task,
            },
            changes,
        ))
    }

    /// Watches `wanted` from now on: next hops that stay keep their MAC, new ones start with
    /// none and are looked up at once (their MAC, when there is one, is reported as a change).
    pub fn set_wanted(&self, wanted: impl IntoIterator<Item = (u32, IpAddr)>) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_wanted(wanted.into_iter().collect());
        self.refresh_now.notify_one();
    }

    /// The MAC each wanted next hop has as far as the watch knows (`None`: no usable one).
    pub fn current(&self) -> BTreeMap<(u32, IpAddr), Option<[u8; 6]>> {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .macs
            .clone()
    }
}

impl Drop for NeighbourWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The watching task's side.
struct Watcher {
    /// Reads the table and asks for resolution; the notifications come on their own socket.
    handle: Handle,
    known: Arc<Mutex<Known>>,
    changes: mpsc::UnboundedSender<NeighbourChange>,
}

impl Watcher {
    fn lock(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(
        self,
        mut events: impl Stream<Item = (NetlinkMessage<RouteNetlinkMessage>, SocketAddr)> + Unpin,
        refresh_now: Arc<Notify>,
        refresh_every: Duration,
    ) {
        let mut tick = tokio::time::interval_at(Instant::now() + refresh_every, refresh_every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut listening = true;
        loop {
            tokio::select! {
                event = events.next(), if listening => match event {
                    Some((msg, _)) => self.on_notification(msg.payload).await,
                    None => listening = false,
                },
                () = refresh_now.notified() => self.refresh().await,
                _ = tick.tick() => self.refresh().await,
            }
        }
    }

    async fn on_notification(&self, payload: NetlinkPayload<RouteNetlinkMessage>) {
        let (key, mac) = match payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(msg)) => {
                match entry(&msg) {
                    Some(e) => e,
                    None => return,
                }
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(msg)) => {
                match entry(&msg) {
                    Some((key, _)) => (key, None),
                    None => return,
                }
            }
            NetlinkPayload::Overrun(_) => {
                warn!("neighbour notifications were lost (the socket's buffer was full): re-reading the table");
                return self.refresh().await;
            }
            _ => return,
        };
        // Notifications queued while the table was being read may be older than what it
        // said; applied in order, they still end at the kernel's latest state.
        let change = self.lock().observe(key, mac);
        self.report(change);
    }

    /// Re-reads the table, reports what changed and asks for the unresolved next hops.
    async fn refresh(&self) {
        let seen = match self.read_table().await {
            Ok(seen) => seen,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "re-reading the neighbour table failed; trying again at the next refresh");
                return;
            }
        };
        let (changes, unresolved) = {
            let mut known = self.lock();
            (known.observe_table(&seen), known.unresolved())
        };
        for change in changes {
            self.report(Some(change));
        }
        for key in unresolved {
            if let Err(e) = request_resolution(&self.handle, key).await {
                warn!(error = %format!("{e:#}"), "trying again at the next refresh");
            }
        }
    }

    fn report(&self, change: Option<NeighbourChange>) {
        if let Some(change) = change {
            // Nobody listening is no reason to stop: `current` still follows the table.
            let _ = self.changes.send(change);
        }
    }

    /// The wanted next hops' entries in the kernel's table, in the families wanted.
    async fn read_table(&self) -> Result<BTreeMap<Key, Option<Mac>>> {
        let wanted: BTreeSet<Key> = self.lock().macs.keys().copied().collect();
        let mut seen = BTreeMap::new();
        for (family, wanted_in) in [
            (AddressFamily::Inet, wanted.iter().any(|(_, a)| a.is_ipv4())),
            (
                AddressFamily::Inet6,
                wanted.iter().any(|(_, a)| a.is_ipv6()),
            ),
        ] {
            if !wanted_in {
                continue;
            }
            let entries = self
                .handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute()
                .try_filter_map(|msg| async move { Ok(entry(&msg)) })
                .try_filter(|(key, _)| std::future::ready(wanted.contains(key)))
                .try_collect::<Vec<_>>();
            let entries = tokio::time::timeout(DUMP_TIMEOUT, entries)
                .await
                .with_context(|| {
                    format!("the kernel did not list its neighbour table within {DUMP_TIMEOUT:?}")
                })?
                .context("reading the kernel's neighbour table")?;
            seen.extend(entries);
        }
        Ok(seen)
    }
}

/// Asks the kernel to resolve `addr` on interface `ifindex` and keep it resolved, as
/// `neigh::resolve_macs` does for a missing entry.
async fn request_resolution(handle: &Handle, (ifindex, addr): Key) -> Result<()> {
    // The watch knows interfaces by index only; the error names it so.
    neigh::ask_to_resolve(handle, &format!("interface {ifindex}"), ifindex, addr).await
}

/// The next hop a neighbour message is about and its usable MAC (`neigh::usable_mac`); `None` for
/// what is not an IPv4/IPv6 neighbour (bridge forwarding entries come on the same group) or is
/// a proxy entry.
fn entry(msg: &NeighbourMessage) -> Option<(Key, Option<Mac>)> {
    let h = &msg.header;
    if !matches!(h.family, AddressFamily::Inet | AddressFamily::Inet6)
        || h.flags.contains(NeighbourFlags::Proxy)
    {
        return None;
    }
    let addr = neigh::destination(msg)?;
    Some(((h.ifindex, addr), neigh::usable_mac(msg)))
}

/// The last MAC known of each wanted next hop, and what counts as a change of it.
#[derive(Debug, Default)]
struct Known {
    macs: BTreeMap<Key, Option<Mac>>,
}

impl Known {
    fn new(wanted: impl IntoIterator<Item = Key>) -> Self {
        Self {
            macs: wanted.into_iter().map(|k| (k, None)).collect(),
        }
    }

    /// Next hops that stay keep their MAC; new ones start with none.
    fn set_wanted(&mut self, wanted: BTreeSet<Key>) {
        self.macs.retain(|k, _| wanted.contains(k));
        for k in wanted {
            self.macs.entry(k).or_insert(None);
        }
    }

    /// Records that `key` has `mac` now: the change, if it is wanted and had another.
    fn observe(&mut self, key: Key, mac: Option<Mac>) -> Option<NeighbourChange> {
        let known = self.macs.get_mut(&key)?;
        if *known == mac {
            return None;
        }
        *known = mac;
        Some(NeighbourChange {
            ifindex: key.0,
            addr: key.1,
            mac,
        })
    }

    /// Records a read of the table: a wanted next hop missing from it has no usable MAC.
    fn observe_table(&mut self, seen: &BTreeMap<Key, Option<Mac>>) -> Vec<NeighbourChange> {
        let wanted: Vec<Key> = self.macs.keys().copied().collect();
        wanted
            .into_iter()
            .filter_map(|k| self.observe(k, seen.get(&k).copied().flatten()))
            .collect()
    }

    /// The wanted next hops without a usable MAC.
    fn unresolved(&self) -> Vec<Key> {
        self.macs
            .iter()
            .filter(|(_, mac)| mac.is_none())
            .map(|(k, _)| *k)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use rtnetlink::packet_route::neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourState,
    };

    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 12));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 13));
    const MAC1: Mac = [2, 0, 0, 0, 0, 1];
    const MAC2: Mac = [2, 0, 0, 0, 0, 2];

    fn msg(
        family: AddressFamily,
        state: NeighbourState,
        dst: Option<IpAddr>,
        lladdr: Option<&[u8]>,
    ) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = family;
        m.header.ifindex = 7;
        m.header.state = state;
        if let Some(dst) = dst {
            m.attributes
                .push(NeighbourAttribute::Destination(match dst {
                    IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
                    IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
                }));
        }
        if let Some(l) = lladdr {
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(l.to_vec()));
        }
        m
    }

    #[test]
    fn an_entry_gives_its_next_hop_and_its_mac_when_usable() {
        let stale = msg(
            AddressFamily::Inet,
            NeighbourState::Stale,
            Some(A),
            Some(&MAC1),
        );
        assert_eq!(entry(&stale), Some(((7, A), Some(MAC1))));
        // A failed entry may still carry the MAC it had; it is not one to send to.
        let failed = msg(
            AddressFamily::Inet,
            NeighbourState::Failed,
            Some(A),
            Some(&MAC1),
        );
        assert_eq!(entry(&failed), Some(((7, A), None)));
        let incomplete = msg(
            AddressFamily::Inet,
            NeighbourState::Incomplete,
            Some(A),
            None,
        );
        assert_eq!(entry(&incomplete), Some(((7, A), None)));
        let v6: IpAddr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x12).into();
        let reachable6 = msg(
            AddressFamily::Inet6,
            NeighbourState::Reachable,
            Some(v6),
            Some(&MAC2),
        );
        assert_eq!(entry(&reachable6), Some(((7, v6), Some(MAC2))));
        // A link-layer address that is not Ethernet's is no MAC.
        let tunnel = msg(
            AddressFamily::Inet,
            NeighbourState::Noarp,
            Some(A),
            Some(&[198, 18, 0, 1]),
        );
        assert_eq!(entry(&tunnel), Some(((7, A), None)));
    }

    #[test]
    fn bridge_proxy_and_addressless_entries_are_not_next_hops() {
        let fdb = msg(
            AddressFamily::Bridge,
            NeighbourState::Reachable,
            Some(A),
            Some(&MAC1),
        );
        assert_eq!(entry(&fdb), None);
        let mut proxy = msg(
            AddressFamily::Inet,
            NeighbourState::Reachable,
            Some(A),
            Some(&MAC1),
        );
        proxy.header.flags |= NeighbourFlags::Proxy;
        assert_eq!(entry(&proxy), None);
        let no_dst = msg(
            AddressFamily::Inet,
            NeighbourState::Reachable,
            None,
            Some(&MAC1),
        );
        assert_eq!(entry(&no_dst), None);
    }

    #[test]
    fn only_a_wanted_next_hop_whose_mac_differs_is_a_change() {
        let mut k = Known::new([(7, A)]);
        assert_eq!(
            k.observe((7, A), Some(MAC1)),
            Some(NeighbourChange {
                ifindex: 7,
                addr: A,
                mac: Some(MAC1)
            })
        );
        assert_eq!(k.observe((7, A), Some(MAC1)), None, "same MAC again");
        assert_eq!(k.observe((8, A), Some(MAC2)), None, "other interface");
        assert_eq!(k.observe((7, B), Some(MAC2)), None, "not wanted");
        assert_eq!(k.observe((7, A), Some(MAC2)).unwrap().mac, Some(MAC2));
        assert_eq!(k.observe((7, A), None).unwrap().mac, None);
        assert_eq!(k.observe((7, A), None), None, "still unresolved");
    }

    #[test]
    fn a_read_of_the_table_reports_what_differs_and_missing_means_unresolved() {
        let mut k = Known::new([(7, A), (7, B)]);
        let seen = BTreeMap::from([((7, A), Some(MAC1)), ((7, B), Some(MAC2))]);
        assert_eq!(k.observe_table(&seen).len(), 2);
        assert!(k.unresolved().is_empty());
        assert!(k.observe_table(&seen).is_empty(), "nothing changed");
        // B's entry went away and A's failed.
        let seen = BTreeMap::from([((7, A), None)]);
        let changes = k.observe_table(&seen);
        assert_eq!(
            changes.iter().map(|c| (c.addr, c.mac)).collect::<Vec<_>>(),
            [(A, None), (B, None)]
        );
        assert_eq!(k.unresolved(), [(7, A), (7, B)]);
    }

    #[test]
    fn changing_what_is_wanted_keeps_the_macs_of_next_hops_that_stay() {
        let mut k = Known::new([(7, A)]);
        k.observe((7, A), Some(MAC1));
        k.set_wanted(BTreeSet::from([(7, A), (7, B)]));
        assert_eq!(
            k.macs,
            BTreeMap::from([((7, A), Some(MAC1)), ((7, B), None)])
        );
        assert_eq!(k.unresolved(), [(7, B)]);
        k.set_wanted(BTreeSet::from([(7, B)]));
        assert_eq!(k.macs, BTreeMap::from([((7, B), None)]));
        assert_eq!(k.observe((7, A), Some(MAC2)), None, "no longer wanted");
    }
}
