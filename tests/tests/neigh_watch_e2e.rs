//! Following reals' MACs end to end, between two namespaces joined by a veth pair: a real
//! whose MAC changes announces it (gratuitous ARP, unsolicited NA) and the watch reports the
//! new MAC; an address nobody has is unresolved until a real takes it, then found by the
//! watch's refresh.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use lb_lab::{unique_prefix, Netns, NsThread};
use lb_userspace::host::neigh_watch::{NeighbourChange, NeighbourWatch};
use tests::require_root;

const LB_IFACE: &str = "lbv";
const REAL_IFACE: &str = "realv";
const LB_V4: &str = "198.18.0.1/24";
const REAL_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);
const NOBODY_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 99);
const LB_V6: &str = "2001:2::1/64";
const REAL_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x12);
const OLD_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x12];
const NEW_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x01, 0x12];

fn mac_str(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// An LB namespace and a real's, joined by a veth pair whose real end has `OLD_MAC`.
struct Segment {
    lb: Netns,
    real: Netns,
    /// The index of the LB's end.
    ifindex: u32,
}

impl Segment {
    fn new(ipv6: bool) -> Result<Self> {
        let p = unique_prefix();
        let lb = Netns::create(&format!("{p}lb"))?;
        let real = Netns::create(&format!("{p}real"))?;
        if ipv6 {
            for ns in [&lb, &real] {
                ns.sysctl("net.ipv6.conf.all.disable_ipv6", "0")?;
                ns.sysctl("net.ipv6.conf.default.disable_ipv6", "0")?;
            }
        }
        lb.ip(&[
            "link",
            "add",
            LB_IFACE,
            "type",
            "veth",
            "peer",
            "name",
            REAL_IFACE,
            "address",
            &mac_str(OLD_MAC),
            "netns",
            real.name(),
        ])?;
        lb.ip(&["addr", "add", LB_V4, "dev", LB_IFACE])?;
        real.ip(&["addr", "add", &format!("{REAL_V4}/24"), "dev", REAL_IFACE])?;
        if ipv6 {
            lb.ip(&["addr", "add", LB_V6, "dev", LB_IFACE, "nodad"])?;
            real.ip(&[
                "addr",
                "add",
                &format!("{REAL_V6}/64"),
                "dev",
                REAL_IFACE,
                "nodad",
            ])?;
        }
        lb.ip(&["link", "set", LB_IFACE, "up"])?;
        real.ip(&["link", "set", REAL_IFACE, "up"])?;
        let link = lb.ip(&["-o", "link", "show", "dev", LB_IFACE])?;
        let ifindex = link
            .split(':')
            .next()
            .and_then(|i| i.trim().parse().ok())
            .with_context(|| format!("no interface index in {link:?}"))?;
        Ok(Self { lb, real, ifindex })
    }

    /// Makes the LB's kernel resolve `addr` as any traffic would (a UDP datagram to it), and
    /// waits until its entry has a MAC.
    fn resolve_from_lb(&self, addr: IpAddr) -> Result<()> {
        self.lb.run(move || -> Result<()> {
            let any: IpAddr = if addr.is_ipv4() {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                Ipv6Addr::UNSPECIFIED.into()
            };
            let sock = UdpSocket::bind(SocketAddr::new(any, 0))?;
            sock.send_to(b"who", SocketAddr::new(addr, 9))?;
            Ok(())
        })??;
        for _ in 0..50 {
            let entry = self
                .lb
                .ip(&["neigh", "show", &addr.to_string(), "dev", LB_IFACE])?;
            if entry.contains("lladdr") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the LB did not resolve {addr} within 5 s")
    }
}

/// A watch running in the LB's namespace, collecting changes until it has seen `until`.
struct Running {
    initial: BTreeMap<(u32, IpAddr), Option<[u8; 6]>>,
    thread: NsThread<Result<Vec<(NeighbourChange, Instant)>>>,
}

fn watch_in(
    ns: &Netns,
    wanted: Vec<(u32, IpAddr)>,
    refresh_every: Duration,
    until: Vec<NeighbourChange>,
    within: Duration,
) -> Result<Running> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = ns.spawn(move || -> Result<Vec<(NeighbourChange, Instant)>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let (watch, mut changes) = NeighbourWatch::start(wanted, refresh_every).await?;
            ready_tx.send(watch.current())?;
            let deadline = tokio::time::Instant::now() + within;
            let mut seen = Vec::new();
            while !until.iter().all(|u| seen.iter().any(|(c, _)| c == u)) {
                match tokio::time::timeout_at(deadline, changes.recv()).await {
                    Ok(Some(change)) => seen.push((change, Instant::now())),
                    Ok(None) => bail!("the watch stopped; changes so far: {seen:?}"),
                    Err(_) => {
                        bail!("no {until:?} within {within:?}; changes seen: {seen:?}")
                    }
                }
            }
            Ok(seen)
        })
    })?;
    let initial = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the watch did not start within 10 s")?;
    Ok(Running { initial, thread })
}

fn change(ifindex: u32, addr: impl Into<IpAddr>, mac: [u8; 6]) -> NeighbourChange {
    NeighbourChange {
        ifindex,
        addr: addr.into(),
        mac: Some(mac),
    }
}

/// When the last of `wanted` arrived, after `since`.
fn took(
    seen: &[(NeighbourChange, Instant)],
    wanted: &[NeighbourChange],
    since: Instant,
) -> Duration {
    wanted
        .iter()
        .filter_map(|w| seen.iter().find(|(c, _)| c == w))
        .map(|(_, at)| at.saturating_duration_since(since))
        .max()
        .unwrap_or_default()
}

#[test]
fn a_real_that_announces_its_new_mac_is_reported_with_it() {
    require_root();
    let seg = Segment::new(false).unwrap();
    seg.resolve_from_lb(REAL_V4.into()).unwrap();
    let hop = (seg.ifindex, IpAddr::from(REAL_V4));
    let wanted = vec![change(seg.ifindex, REAL_V4, NEW_MAC)];
    // A refresh far away: the change must come from the kernel's notification.
    let running = watch_in(
        &seg.lb,
        vec![hop],
        Duration::from_secs(60),
        wanted.clone(),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(running.initial, BTreeMap::from([(hop, Some(OLD_MAC))]));

    seg.real
        .sysctl(&format!("net.ipv4.conf.{REAL_IFACE}.arp_notify"), "1")
        .unwrap();
    let changed_at = Instant::now();
    seg.real
        .ip(&[
            "link",
            "set",
            "dev",
            REAL_IFACE,
            "address",
            &mac_str(NEW_MAC),
        ])
        .unwrap();
    let seen = running.thread.join().unwrap().unwrap();
    let took = took(&seen, &wanted, changed_at);
    eprintln!("new MAC reported {took:?} after the change; changes: {seen:?}");
    assert_eq!(seen.len(), 1, "only the new MAC: {seen:?}");
    assert!(took < Duration::from_secs(2), "reported after {took:?}");
}

#[test]
fn a_real_that_announces_its_new_mac_over_ipv6_is_reported_with_it_too() {
    require_root();
    let seg = Segment::new(true).unwrap();
    seg.resolve_from_lb(REAL_V4.into()).unwrap();
    seg.resolve_from_lb(REAL_V6.into()).unwrap();
    let hops = vec![
        (seg.ifindex, IpAddr::from(REAL_V4)),
        (seg.ifindex, IpAddr::from(REAL_V6)),
    ];
    let wanted = vec![
        change(seg.ifindex, REAL_V4, NEW_MAC),
        change(seg.ifindex, REAL_V6, NEW_MAC),
    ];
    let running = watch_in(
        &seg.lb,
        hops.clone(),
        Duration::from_secs(60),
        wanted.clone(),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        running.initial,
        hops.iter().map(|h| (*h, Some(OLD_MAC))).collect()
    );

    seg.real
        .sysctl(&format!("net.ipv4.conf.{REAL_IFACE}.arp_notify"), "1")
        .unwrap();
    seg.real
        .sysctl(&format!("net.ipv6.conf.{REAL_IFACE}.ndisc_notify"), "1")
        .unwrap();
    let changed_at = Instant::now();
    seg.real
        .ip(&[
            "link",
            "set",
            "dev",
            REAL_IFACE,
            "address",
            &mac_str(NEW_MAC),
        ])
        .unwrap();
    let seen = running.thread.join().unwrap().unwrap();
    let took = took(&seen, &wanted, changed_at);
    eprintln!("both new MACs reported {took:?} after the change; changes: {seen:?}");
    assert!(took < Duration::from_secs(2), "reported after {took:?}");
}

#[test]
fn an_address_nobody_has_is_unresolved_until_a_real_takes_it() {
    require_root();
    let seg = Segment::new(false).unwrap();
    let hop = (seg.ifindex, IpAddr::from(NOBODY_V4));
    let wanted = vec![change(seg.ifindex, NOBODY_V4, OLD_MAC)];
    let running = watch_in(
        &seg.lb,
        vec![hop],
        Duration::from_secs(1),
        wanted.clone(),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(running.initial, BTreeMap::from([(hop, None)]));
    // Asked for and unanswered a few times over.
    std::thread::sleep(Duration::from_secs(2));
    let entry = seg
        .lb
        .ip(&["neigh", "show", &NOBODY_V4.to_string(), "dev", LB_IFACE])
        .unwrap();
    assert!(
        entry.contains("managed") && !entry.contains("lladdr"),
        "{entry}"
    );

    // Without its entry the kernel asks no more (as after a flush): only the watch's refresh
    // can find the address now.
    seg.lb
        .ip(&["neigh", "del", &NOBODY_V4.to_string(), "dev", LB_IFACE])
        .unwrap();
    let added_at = Instant::now();
    seg.real
        .ip(&["addr", "add", &format!("{NOBODY_V4}/24"), "dev", REAL_IFACE])
        .unwrap();
    let seen = running.thread.join().unwrap().unwrap();
    let took = took(&seen, &wanted, added_at);
    eprintln!("the new address's MAC reported {took:?} after it was added; changes: {seen:?}");
    assert_eq!(seen.len(), 1, "only the MAC found: {seen:?}");
    assert!(took < Duration::from_secs(3), "reported after {took:?}");
}

#[test]
fn a_deleted_entry_is_reported_unusable_then_resolved_again() {
    require_root();
    let seg = Segment::new(false).unwrap();
    seg.resolve_from_lb(REAL_V4.into()).unwrap();
    let hop = (seg.ifindex, IpAddr::from(REAL_V4));
    let wanted = vec![
        NeighbourChange {
            ifindex: seg.ifindex,
            addr: REAL_V4.into(),
            mac: None,
        },
        change(seg.ifindex, REAL_V4, OLD_MAC),
    ];
    let running = watch_in(
        &seg.lb,
        vec![hop],
        Duration::from_secs(1),
        wanted.clone(),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(running.initial, BTreeMap::from([(hop, Some(OLD_MAC))]));

    let deleted_at = Instant::now();
    seg.lb
        .ip(&["neigh", "del", &REAL_V4.to_string(), "dev", LB_IFACE])
        .unwrap();
    let seen = running.thread.join().unwrap().unwrap();
    let took = took(&seen, &wanted, deleted_at);
    eprintln!("deleted and found again within {took:?}; changes: {seen:?}");
    let macs: Vec<_> = seen.iter().map(|(c, _)| c.mac).collect();
    assert_eq!(macs, [None, Some(OLD_MAC)]);
    assert!(took < Duration::from_secs(3), "found again after {took:?}");
}
