//! What a running balancer serves, and the one way it changes: a target (from the file, a
//! runtime edit, a health or neighbour change) is checked and resolved first, then the
//! datapath is taken from what it serves to it, VIP by VIP, each VIP's change atomic (its
//! ring swapped whole). A change that fails half-way is rolled back the same way.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{bail, Result};
use tracing::{info, warn};

use crate::{
    checks::{real_key, RealKey},
    datapath::{self, Datapath, Real},
    resolve::{self, Resolved},
    service::{self, Service, VipSettings},
    spec::{Mode, RealState, VipSpec},
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
    pub health: BTreeMap<RealKey, (bool, String)>,
}

/// What the datapath should serve for one VIP.
struct Target {
    settings: VipSettings,
    reals: Vec<Real>,
}

impl Running {
    /// The reals of the `i`th service as the datapath takes them: a drained real with weight
    /// 0; down when in maintenance, unresolved, or failing its checks.
    pub fn effective(&self, i: usize) -> Vec<Real> {
        effective(&self.current, &self.health, i)
    }

    /// Fills a fresh datapath with `r`, which becomes what is served once the caller has
    /// attached (or been refused).
    pub fn serve(&mut self, r: &Resolved) -> Result<()> {
        tunnel_sources(r)?;
        let target = self.targets(r);
        converge(&mut self.dp, &target).map(drop)
    }

    /// Serves `services` instead of what is served now. Checked and resolved before anything
    /// changes: refused, it changes nothing. Returns how many VIPs changed.
    pub async fn apply(&mut self, services: Vec<Service>, timeout: Duration) -> Result<usize> {
        service::validate(&services, datapath::possible_cpus()?)?;
        let next = resolve::resolve(&self.ifaces, &services, timeout).await?;
        // (`services` is kept as configured; `next` has what resolving filled in.)
        let checked = tunnel_sources(&next).and_then(|()| self.capacity(&next));
        if let Err(e) = checked {
            next.forget_neighbours().await;
            return Err(e);
        }
        let before = self.targets(&self.current);
        let after = self.targets(&next);
        match converge(&mut self.dp, &after) {
            Ok(changed) => {
                self.current = next;
                self.configured = services;
                self.health.retain(|k, _| keys(&self.current).contains(k));
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

    /// Records a check's finding and, when a real went up or down, gives its VIP the new
    /// set of reals.
    pub fn set_health(&mut self, key: RealKey, up: bool, why: String) -> Result<()> {
        self.health.insert(key, (up, why));
        let Some(i) = self.current.services.iter().position(|s| s.vip == key.0) else {
            return Ok(());
        };
        let reals = self.effective(i);
        self.dp.set_reals(&key.0, &reals)
    }

    /// The datapath's VIPs as `r` says, with every real's effective state.
    fn targets(&self, r: &Resolved) -> BTreeMap<VipSpec, Target> {
        r.services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let t = Target {
                    settings: s.settings.clone(),
                    reals: effective(r, &self.health, i),
                };
                (s.vip, t)
            })
            .collect()
    }

    /// Refuses a target with more new reals than the datapath has free ids.
    fn capacity(&self, next: &Resolved) -> Result<()> {
        let changes: Vec<(VipSpec, &[Real])> = next
            .services
            .iter()
            .zip(&next.reals)
            .map(|(s, reals)| (s.vip, reals.as_slice()))
            .collect();
        match self.dp.real_ids_short(&changes) {
            0 => Ok(()),
            n => bail!(
                "{n} more reals than the datapath holds ({} in all)",
                lb_common::MAX_REALS - 1
            ),
        }
    }

    /// Logs every real as it is served.
    pub fn log_services(&self) {
        for (i, s) in self.current.services.iter().enumerate() {
            for real in self.effective(i) {
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

/// Every real's key in `r`.
fn keys(r: &Resolved) -> Vec<RealKey> {
    r.services
        .iter()
        .zip(&r.reals)
        .flat_map(|(s, reals)| reals.iter().map(|real| real_key(&s.vip, real)))
        .collect()
}

fn effective(r: &Resolved, health: &BTreeMap<RealKey, (bool, String)>, i: usize) -> Vec<Real> {
    let s = &r.services[i];
    s.reals
        .iter()
        .zip(&r.reals[i])
        .map(|(spec, real)| {
            let key = real_key(&s.vip, real);
            let failing = health.get(&key).is_some_and(|(up, _)| !up);
            Real {
                weight: if spec.state == RealState::Drain {
                    0
                } else {
                    real.weight
                },
                down: real.down || spec.state == RealState::Maint || failing,
                ..*real
            }
        })
        .collect()
}

/// Takes the datapath from what it serves to `target`: VIPs gone first (freeing ids), then
/// changed ones, then new ones. Returns how many VIPs changed.
fn converge(dp: &mut Datapath, target: &BTreeMap<VipSpec, Target>) -> Result<usize> {
    let served: BTreeMap<VipSpec, (VipSettings, Vec<Real>)> = dp
        .served()
        .map(|(v, s, r)| (*v, (s.clone(), r.to_vec())))
        .collect();
    let mut changed = 0;
    for vip in served.keys().filter(|v| !target.contains_key(v)) {
        dp.remove_vip(vip)?;
        changed += 1;
    }
    for (vip, (settings, reals)) in &served {
        let Some(t) = target.get(vip) else { continue };
        if *settings != t.settings {
            dp.change_vip(vip, &t.settings)?;
        } else if *reals == t.reals {
            continue;
        }
        dp.set_reals(vip, &t.reals)?;
        changed += 1;
    }
    for (vip, t) in target.iter().filter(|(v, _)| !served.contains_key(v)) {
        dp.add_vip(*vip, &t.settings)?;
        dp.set_reals(vip, &t.reals)?;
        changed += 1;
    }
    Ok(changed)
}

/// Tunnels leave from the address of the interface their real is reached through.
pub fn tunnel_sources(next: &Resolved) -> Result<()> {
    for (s, reals) in next.services.iter().zip(&next.reals) {
        if s.settings.mode != Mode::Tunnel {
            continue;
        }
        for r in reals {
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
