//! What a running balancer serves, and the one way it changes: a target (from the file, a
//! runtime edit, a health or neighbour change) is checked and resolved first, then the
//! datapath is taken from what it serves to it, VIP by VIP, each VIP's change atomic (its
//! ring swapped whole). A change that fails half-way is rolled back the same way.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use tracing::{info, warn};

use super::reconcile::{self, checked_reals, Health};
use crate::{
    datapath::{self, real_key, Datapath, Real, RealKey},
    declare::{
        service::{self, Service},
        spec::{Mode, VipSpec},
    },
    health::board::CheckBoard,
    host::{
        resolve::{self, Resolved, ResolvedService},
        vmac,
    },
};

/// The balancer as it runs.
pub struct Running {
    pub ifaces: Vec<String>,
    pub dp: Datapath,
    /// The services as configured (the file, the flags, and runtime edits since).
    pub configured: Vec<Service>,
    /// The services served, as resolved, with each real's next hop.
    pub current: Resolved,
    /// What the checks last found of each checked real: up or not, and the last result.
    pub health: Health,
    /// Every checked real's last check and time in its state, as the check tasks write it.
    pub board: CheckBoard,
    /// The last state changes, newest first, with their time (the stats page lists them).
    pub changes: std::collections::VecDeque<String>,
    /// The log target state changes go to besides the daemon's log (`--flow-log`'s).
    pub log: Option<crate::flowlog::SharedSink>,
}

impl Running {
    /// Keeps `line` among the last state changes, with the time it happened.
    pub fn note_change(&mut self, line: String) {
        if let Some(sink) = &self.log {
            if let Err(e) = crate::flowlog::write_now(sink, &line) {
                warn!(error = %format!("{e:#}"), "writing a state change to the log target failed");
            }
        }
        let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        self.changes.push_front(format!("{at} {line}"));
        self.changes.truncate(crate::http::CHANGES);
    }

    /// The reals of `s` as the datapath takes them (see `reconcile::effective`).
    pub fn effective(&self, s: &ResolvedService) -> Vec<Real> {
        reconcile::effective(s, &self.health)
    }

    /// Fills a fresh (or taken over) datapath with `r`, which becomes what is served once
    /// the caller has attached (or been refused).
    pub fn serve(&mut self, r: &Resolved) -> Result<()> {
        let target = reconcile::targets(&r.services, &self.health);
        converge(&mut self.dp, &target).map(drop)
    }

    /// What `serve(r)` would be refused for, asked before anything changes.
    pub fn check(&self, r: &Resolved) -> Result<()> {
        tunnel_sources(r).and_then(|()| self.capacity(r))
    }

    /// Marks `down` reals of checked VIPs in `r` as failing their checks.
    pub fn seed_health(&mut self, r: &Resolved, down: &[RealKey]) {
        let checked = checked_reals(&r.services);
        for key in down.iter().filter(|k| checked.contains(k)) {
            let why = "down when the last lbctl stopped; up after rise checks".to_string();
            self.health.insert(*key, (false, why));
        }
    }

    /// Serves `services` instead of what is served now. Checked and resolved before anything
    /// changes: refused, it changes nothing. Only next hops not seen before are waited for
    /// (up to `timeout`); a change of weights and states alone resolves nothing. Returns how
    /// many VIPs changed.
    pub async fn apply(&mut self, services: Vec<Service>, timeout: Duration) -> Result<usize> {
        service::validate(&services, datapath::possible_cpus()?)?;
        if let Some(next) = restated(&self.current, &self.configured, &services) {
            return self.converge_to(next, services).await;
        }
        let next = resolve::resolve(
            &self.ifaces,
            &services,
            timeout,
            &self.current.unresolved_hops,
        )
        .await?;
        self.converge_to(next, services).await
    }

    /// Resolves what is served again and applies what changed (a next hop's new MAC). No
    /// waiting: the kernel has the MACs already; hops still unresolved stay so.
    pub async fn resolve_again(&mut self) -> Result<usize> {
        let services = self.configured.clone();
        let next =
            resolve::resolve(&self.ifaces, &services, Duration::ZERO, &BTreeSet::new()).await?;
        self.converge_to(next, services).await
    }

    /// Stops balancing on `iface`; refused while reals are reached through it.
    pub async fn detach(&mut self, iface: &str) -> Result<()> {
        if !self.ifaces.iter().any(|i| i == iface) {
            bail!("lbctl is not attached to {iface}");
        }
        let rest: Vec<String> = self
            .ifaces
            .iter()
            .filter(|i| *i != iface)
            .cloned()
            .collect();
        if rest.is_empty() {
            return self.dp.detach(iface);
        }
        let next = resolve::resolve(
            &rest,
            &self.configured,
            Duration::ZERO,
            &self.current.unresolved_hops,
        )
        .await
        .with_context(|| format!("{iface} stays: what is served needs it"))?;
        let services = self.configured.clone();
        let kept = std::mem::replace(&mut self.ifaces, rest);
        if let Err(e) = self.converge_to(next, services).await {
            self.ifaces = kept;
            return Err(e);
        }
        self.dp.detach(iface)
    }

    /// Takes the datapath to `next` (resolved from `services`), or back where it was.
    async fn converge_to(&mut self, next: Resolved, services: Vec<Service>) -> Result<usize> {
        let checked = tunnel_sources(&next).and_then(|()| self.capacity(&next));
        if let Err(e) = checked {
            next.forget_neighbours().await;
            return Err(e);
        }
        let before = reconcile::targets(&self.current.services, &self.health);
        let after = reconcile::targets(&next.services, &self.health);
        match converge(&mut self.dp, &after) {
            Ok(changed) => {
                // An interface's side may have changed too (keepalived's virtual MACs).
                for i in &next.interfaces {
                    let was = self
                        .current
                        .interfaces
                        .iter()
                        .find(|c| c.ifindex == i.ifindex);
                    if was.is_some_and(|c| c.config != i.config) {
                        if let Err(e) = self.dp.set_interface(i.ifindex, i.config) {
                            warn!(iface = %i.name, error = %format!("{e:#}"), "updating the interface's entry failed; it keeps the last one");
                        }
                    }
                }
                self.current = next;
                self.configured = services;
                let checked = checked_reals(&self.current.services);
                self.health.retain(|k, _| checked.contains(k));
                Ok(changed)
            }
            Err(e) => {
                let undo = converge(&mut self.dp, &before);
                next.forget_neighbours().await;
                match undo {
                    Ok(_) => Err(e.context("the change was rolled back; nothing changed")),
                    Err(u) => Err(e.context(format!(
                        "rolling the change back failed too ({u:#}): what the datapath serves is between the two; `lbctl reload` to try again"
                    ))),
                }
            }
        }
    }

    /// Gives each attached interface the VRRP virtual MACs it has now (keepalived made or
    /// removed its macvlan): frames to them are balanced from this write on.
    pub fn set_vmacs(&mut self, now: &BTreeMap<u32, vmac::Vmacs>) {
        for i in &mut self.current.interfaces {
            let Some(vmacs) = now.get(&i.ifindex) else {
                continue;
            };
            if *vmacs == i.config.vmacs {
                continue;
            }
            let config = lb_common::IfaceConfig {
                vmacs: *vmacs,
                ..i.config
            };
            match self.dp.set_interface(i.ifindex, config) {
                Ok(()) => {
                    i.config = config;
                    info!(iface = %i.name, vmacs = %vmac::fmt(vmacs), "VRRP virtual MACs on the interface: frames to them are balanced");
                }
                Err(e) => {
                    warn!(iface = %i.name, error = %format!("{e:#}"), "taking keepalived's virtual MACs failed")
                }
            }
        }
    }

    /// Records a check's finding and gives the real's VIP its new set of reals. A finding
    /// about a real no longer checked is dropped.
    pub fn set_health(&mut self, key: RealKey, up: bool, why: String) -> Result<bool> {
        if !checked_reals(&self.current.services).contains(&key) {
            return Ok(false);
        }
        self.health.insert(key, (up, why));
        let Some(s) = self.current.services.iter().find(|s| s.vip == key.0) else {
            return Ok(false);
        };
        let reals = self.effective(s);
        self.dp.set_reals(&key.0, &reals).map(|()| true)
    }

    /// Refuses a target with more new reals than the datapath has free ids.
    fn capacity(&self, next: &Resolved) -> Result<()> {
        let wanted = next
            .services
            .iter()
            .flat_map(|s| s.reals.iter().map(|r| real_key(&s.vip, &r.real)));
        match self.dp.real_ids_short(wanted) {
            0 => Ok(()),
            n => bail!(
                "{n} more reals than the datapath holds ({} in all)",
                lb_common::MAX_REALS - 1
            ),
        }
    }

    /// Logs every real as it is served.
    pub fn log_services(&self) {
        for s in &self.current.services {
            for real in self.effective(s) {
                let key = real_key(&s.vip, &real);
                let problem = self.current.unresolved.get(&key);
                info!(vip = %s.vip, mode = %s.settings.mode, balance = %s.settings.balance, real = %real.addr, port = key.2, weight = real.weight, down = real.down, mac = %resolve::fmt_mac(&real.mac), ifindex = real.ifindex, "real");
                if let Some(why) = problem {
                    warn!(vip = %s.vip, real = %real.addr, why = %why, "real unresolved: not used until its MAC is known");
                }
            }
            if s.settings.mode == Mode::OneArm {
                let pool: Vec<String> =
                    s.settings.snat_pool.iter().map(|a| a.to_string()).collect();
                info!(vip = %s.vip, pool = %pool.join(","), ports = %s.settings.snat_ports, "snat pool");
            }
        }
    }
}

/// `current` with `services`' weights and states, when that is all that differs from
/// `configured` (same VIPs, settings and reals): nothing to resolve again.
fn restated(current: &Resolved, configured: &[Service], services: &[Service]) -> Option<Resolved> {
    let same_shape = configured.len() == services.len()
        && configured.iter().zip(services).all(|(a, b)| {
            a.vip == b.vip
                && a.settings == b.settings
                && a.reals.len() == b.reals.len()
                && a.reals
                    .iter()
                    .zip(&b.reals)
                    .all(|(x, y)| (x.addr, x.port) == (y.addr, y.port))
        });
    if !same_shape {
        return None;
    }
    let mut next = current.clone_for_restate();
    for (resolved, wanted) in next.services.iter_mut().zip(services) {
        for (r, spec) in resolved.reals.iter_mut().zip(&wanted.reals) {
            r.real.weight = spec.weight;
            r.spec = *spec;
        }
    }
    Some(next)
}

/// Takes the datapath from what it serves to `target` (see `reconcile::plan`). Returns how
/// many VIPs changed.
fn converge(dp: &mut Datapath, target: &BTreeMap<VipSpec, reconcile::Target>) -> Result<usize> {
    let ops = reconcile::plan(&reconcile::served(dp), target);
    reconcile::apply(dp, &ops)?;
    Ok(ops.len())
}

/// Tunnels leave from the address of the interface their real is reached through.
pub fn tunnel_sources(next: &Resolved) -> Result<()> {
    for s in &next.services {
        // Even with a tunnel source of its own: the LB answers "fragmentation needed" from
        // the interface's address.
        if s.settings.mode != Mode::Tunnel {
            continue;
        }
        for r in s.reals.iter().map(|r| &r.real) {
            let iface = next.interfaces.iter().find(|i| i.ifindex == r.ifindex);
            if iface.is_some_and(|i| i.config.ipv4 == [0; 4]) {
                bail!(
                    "real {} of tunnel VIP {} is reached through an interface without an IPv4 address to tunnel from",
                    r.addr,
                    s.vip
                );
            }
        }
    }
    Ok(())
}
