//! The running health checks: one task per checked real, probing at its interval and telling
//! the daemon when the real goes up or down. Tasks outlive configuration changes that do not
//! concern their real, so a change elsewhere never resets a count half-way to `fall`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    time::Instant,
};

use tokio::{sync::mpsc, task::JoinHandle};
use tracing::warn;

use crate::{
    datapath::{real_key, Interface, Real, RealKey},
    declare::spec::Mode,
    health::{
        board::CheckBoard,
        check::{Change, Check, Health},
        probe,
        probe_vip::{self, VipPath},
    },
    host::resolve::ResolvedService,
};

/// A real went up or down.
#[derive(Debug)]
pub struct Event {
    pub real: RealKey,
    /// The task that saw it: an event of a task since replaced is stale.
    pub task: u64,
    pub change: Change,
    /// The last check's result: why it went down, or "ok".
    pub why: String,
}

/// What a task checks, and how: a task is replaced when this changes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Spec {
    check: Check,
    target: Target,
}

/// Where a check goes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// The real's own address.
    Real(SocketAddr),
    /// The VIP, the way clients' packets reach the real (`via=vip`).
    Vip(VipPath),
    /// `via=vip` asked, but no interface of the LB with an IPv4 address reaches the real:
    /// its own address instead (said when the task starts).
    RealInstead(SocketAddr),
}

struct Task {
    id: u64,
    spec: Spec,
    handle: JoinHandle<()>,
}

/// The check tasks of the services served; stopped when dropped.
pub struct Checks {
    tasks: BTreeMap<RealKey, Task>,
    next_id: u64,
    events: mpsc::UnboundedSender<Event>,
    board: CheckBoard,
}

impl Checks {
    /// No checks yet; their events will go to `events`, every result to `board`.
    pub fn new(events: mpsc::UnboundedSender<Event>, board: CheckBoard) -> Self {
        Self {
            tasks: BTreeMap::new(),
            next_id: 0,
            events,
            board,
        }
    }

    /// Runs a task for every real of `services` that has a check: one checking the same
    /// target the same way goes on (with its counts); others start from the health `known`
    /// says the real has (up when unknown). Tasks of reals no longer checked stop.
    pub fn sync(
        &mut self,
        services: &[ResolvedService],
        interfaces: &[Interface],
        known: &BTreeMap<RealKey, bool>,
    ) {
        let mut wanted = BTreeMap::new();
        for s in services {
            let Some(check) = &s.settings.check else {
                continue;
            };
            for r in s.reals.iter().map(|r| &r.real) {
                let key = real_key(&s.vip, r);
                let port = check.port.unwrap_or(key.2);
                let target = match check.via_vip.then(|| vip_path(s, r, interfaces, port)) {
                    Some(Some(path)) => Target::Vip(path),
                    Some(None) => Target::RealInstead(SocketAddr::new(r.addr, port)),
                    None => Target::Real(SocketAddr::new(r.addr, port)),
                };
                wanted.insert(
                    key,
                    Spec {
                        check: check.clone(),
                        target,
                    },
                );
            }
        }
        self.tasks.retain(|key, task| {
            let keep = wanted.get(key) == Some(&task.spec);
            if !keep {
                task.handle.abort();
            }
            keep
        });
        self.board.retain(|key| wanted.contains_key(key));
        for (key, spec) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let up = known.get(&key).copied().unwrap_or(true);
            if let Target::RealInstead(addr) = &spec.target {
                warn!(vip = %key.0, real = %addr, "no interface of the LB with an IPv4 address reaches this real: checking its own address instead of through the VIP");
            }
            self.board.start(key, up);
            let to = Report {
                real: key,
                task: id,
                events: self.events.clone(),
                board: self.board.clone(),
            };
            let handle = tokio::spawn(watch(to, spec.clone(), up));
            self.tasks.insert(key, Task { id, spec, handle });
        }
    }

    /// Whether `event` comes from the task checking its real now.
    pub fn is_current(&self, event: &Event) -> bool {
        self.tasks
            .get(&event.real)
            .is_some_and(|t| t.id == event.task)
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.handle.abort();
        }
    }
}

/// The way clients' packets take from the LB to `real` of dsr or tunnel VIP `s`, to `port`.
fn vip_path(
    s: &ResolvedService,
    real: &Real,
    interfaces: &[Interface],
    port: u16,
) -> Option<VipPath> {
    let (IpAddr::V4(vip), IpAddr::V4(real_addr)) = (s.vip.addr, real.addr) else {
        return None;
    };
    let iface = interfaces.iter().find(|i| i.ifindex == real.ifindex)?;
    // The answer comes back to this address: without one, no check through the VIP.
    if iface.config.ipv4 == [0; 4] {
        return None;
    }
    let src = Ipv4Addr::from(iface.config.ipv4);
    let outer_src = match s.settings.tunnel_source {
        Some(IpAddr::V4(own)) => own,
        _ => src,
    };
    Some(VipPath {
        iface: iface.name.clone(),
        src_mac: iface.config.mac,
        src,
        outer_src,
        dst_mac: real.mac,
        vip: SocketAddrV4::new(vip, port),
        tunnel_to: (s.settings.mode == Mode::Tunnel).then_some(real_addr),
    })
}

/// Where a task reports: changes to the daemon, every result to the board.
struct Report {
    real: RealKey,
    task: u64,
    events: mpsc::UnboundedSender<Event>,
    board: CheckBoard,
}

/// Checks `spec.target` for ever, sending a change of state when the check's rise or fall
/// is met, and every result to the board.
async fn watch(to: Report, spec: Spec, up: bool) {
    let check = spec.check;
    let mut health = Health::starting(up);
    loop {
        let started = Instant::now();
        let result = match &spec.target {
            Target::Real(addr) | Target::RealInstead(addr) => {
                probe::run(&check.probe, *addr, check.timeout).await
            }
            Target::Vip(path) => probe_vip::run(&check.probe, path, check.timeout).await,
        };
        let took = started.elapsed();
        let change = health.observe(result.is_ok(), &check);
        let ok = result.is_ok();
        let why = result.err().unwrap_or_else(|| "ok".into());
        to.board
            .record(to.real, ok, why.clone(), took, change.is_some());
        if let Some(change) = change {
            let event = Event {
                real: to.real,
                task: to.task,
                change,
                why,
            };
            if to.events.send(event).is_err() {
                // The daemon is gone: nobody to tell.
                return;
            }
        }
        tokio::time::sleep(health.next_in(&check)).await;
    }
}
