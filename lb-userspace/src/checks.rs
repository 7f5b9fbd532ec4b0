//! The running health checks: one task per checked real, probing at its interval and telling
//! the daemon when the real goes up or down. Tasks outlive configuration changes that do not
//! concern their real, so a change elsewhere never resets a count half-way to `fall`.

use std::{collections::BTreeMap, net::SocketAddr};

use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    datapath::{real_key, Real, RealKey},
    health::{Change, Check, Health},
    probe,
    service::Service,
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
    target: SocketAddr,
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
}

impl Checks {
    /// No checks yet; their events will go to `events`.
    pub fn new(events: mpsc::UnboundedSender<Event>) -> Self {
        Self {
            tasks: BTreeMap::new(),
            next_id: 0,
            events,
        }
    }

    /// Runs a task for every real of `services` that has a check: one checking the same
    /// target the same way goes on (with its counts); others start from the health `known`
    /// says the real has (up when unknown). Tasks of reals no longer checked stop.
    pub fn sync(
        &mut self,
        services: &[Service],
        reals: &[Vec<Real>],
        known: &BTreeMap<RealKey, bool>,
    ) {
        let mut wanted = BTreeMap::new();
        for (s, reals) in services.iter().zip(reals) {
            let Some(check) = &s.settings.check else {
                continue;
            };
            for r in reals {
                let key = real_key(&s.vip, r);
                let target = SocketAddr::new(r.addr, check.port.unwrap_or(key.2));
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
        for (key, spec) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let up = known.get(&key).copied().unwrap_or(true);
            let handle = tokio::spawn(watch(key, id, spec.clone(), up, self.events.clone()));
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

/// Checks `spec.target` for ever, sending a change of state when the check's rise or fall
/// is met.
async fn watch(
    real: RealKey,
    task: u64,
    spec: Spec,
    up: bool,
    events: mpsc::UnboundedSender<Event>,
) {
    let check = spec.check;
    let mut health = Health::starting(up);
    loop {
        let result = probe::run(&check.probe, spec.target, check.timeout).await;
        if let Some(change) = health.observe(result.is_ok(), &check) {
            let why = result.err().unwrap_or_else(|| "ok".into());
            let event = Event {
                real,
                task,
                change,
                why,
            };
            if events.send(event).is_err() {
                // The daemon is gone: nobody to tell.
                return;
            }
        }
        tokio::time::sleep(health.next_in(&check)).await;
    }
}
