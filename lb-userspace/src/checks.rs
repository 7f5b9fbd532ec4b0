//! The running health checks: one task per checked real, probing at its interval and telling
//! the daemon when the real goes up or down.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    datapath::Real,
    health::{Change, Check, Health},
    probe,
    service::Service,
    spec::VipSpec,
};

/// A real of a VIP, as health is kept: VIP, address, service port.
pub type RealKey = (VipSpec, IpAddr, u16);

pub fn real_key(vip: &VipSpec, real: &Real) -> RealKey {
    (*vip, real.addr, real.port.unwrap_or(vip.port))
}

/// A real went up or down.
#[derive(Debug)]
pub struct Event {
    pub real: RealKey,
    pub change: Change,
    /// The last check's result: why it went down, or "ok".
    pub why: String,
}

/// The check tasks of a set of services; stopped when dropped.
pub struct Checks {
    tasks: Vec<JoinHandle<()>>,
}

impl Checks {
    /// Starts a task per real of every service that has a check, each from the health
    /// `known` says the real has (up when unknown), sending changes to `events`.
    pub fn start(
        services: &[Service],
        reals: &[Vec<Real>],
        known: &BTreeMap<RealKey, bool>,
        events: &mpsc::UnboundedSender<Event>,
    ) -> Self {
        let mut tasks = Vec::new();
        for (s, reals) in services.iter().zip(reals) {
            let Some(check) = &s.settings.check else {
                continue;
            };
            for r in reals {
                let key = real_key(&s.vip, r);
                let port = check.port.unwrap_or(key.2);
                let target = SocketAddr::new(r.addr, port);
                let up = known.get(&key).copied().unwrap_or(true);
                tasks.push(tokio::spawn(watch(
                    key,
                    target,
                    check.clone(),
                    up,
                    events.clone(),
                )));
            }
        }
        Self { tasks }
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Checks `target` for ever, sending a change of state when `check`'s rise or fall is met.
async fn watch(
    real: RealKey,
    target: SocketAddr,
    check: Check,
    up: bool,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut health = Health::starting(up);
    loop {
        let result = probe::run(&check.probe, target, check.timeout).await;
        if let Some(change) = health.observe(result.is_ok(), &check) {
            let why = result.err().unwrap_or_else(|| "ok".into());
            if events.send(Event { real, change, why }).is_err() {
                // The daemon is gone: nobody to tell.
                return;
            }
        }
        tokio::time::sleep(health.next_in(&check)).await;
    }
}
