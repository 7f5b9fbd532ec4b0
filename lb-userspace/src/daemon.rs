//! `lbctl attach`: the balancer's life. Configuration checked before anything is touched,
//! then resolved and attached; while it runs, health checks take reals down and up, leastconn
//! flows that went idle are swept every second and SIGHUP reloads the configuration file;
//! SIGINT/SIGTERM detach.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};
use tracing::{info, warn};

use crate::{
    checks::{self, Checks, RealKey},
    config,
    datapath::{self, AttachMode, Datapath, Real},
    health::Change,
    resolve::{self, Resolved},
    service::Service,
    spec::{Mode, VipSpec},
};

/// Where the services come from.
pub enum Source {
    /// A configuration file, reloaded on SIGHUP.
    File(PathBuf),
    /// Command-line flags, checked.
    Flags(Vec<Service>),
}

/// How often leastconn's idle flows are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Serves `source` on `ifaces` until SIGINT or SIGTERM.
pub async fn run(ifaces: Vec<String>, source: Source, resolve_timeout: Duration) -> Result<()> {
    // Signals first: a Ctrl-C during set-up is handled (after it) instead of killing lbctl
    // half-way with neighbour entries added.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let services = match &source {
        Source::File(path) => config::load(path, datapath::possible_cpus()?)?,
        Source::Flags(services) => services.clone(),
    };
    let mut current = resolve::resolve(&ifaces, &services, resolve_timeout).await?;
    let (mut dp, how) = match serve(&current) {
        Ok(served) => served,
        Err(e) => {
            current.forget_neighbours().await;
            return Err(e);
        }
    };
    log_services(&current);
    let modes: Vec<&str> = how
        .iter()
        .map(|h| match h {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        })
        .collect();
    let vips: Vec<String> = current.services.iter().map(|s| s.vip.to_string()).collect();
    info!(
        ifaces = %ifaces.join(","),
        xdp = %modes.join(","),
        vips = %vips.join(","),
        "attached; forwarding until SIGINT/SIGTERM (SIGHUP reloads)"
    );

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut health: BTreeMap<RealKey, bool> = BTreeMap::new();
    let mut checks = Checks::start(&current.services, &current.reals, &health, &events_tx);
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM"); break; }
            _ = int.recv() => { info!("SIGINT"); break; }
            _ = hup.recv() => match &source {
                Source::File(path) => match reload(&ifaces, path, &mut dp, &mut current, &health, resolve_timeout).await {
                    Ok(changed) => {
                        // The checks follow the reals; each real keeps the health it had.
                        checks = Checks::start(&current.services, &current.reals, &health, &events_tx);
                        info!(file = %path.display(), vips_changed = changed, "reloaded");
                    }
                    Err(e) => warn!(file = %path.display(), error = %format!("{e:#}"), "reload refused"),
                },
                Source::Flags(_) => warn!("SIGHUP reloads the --config file, and lbctl runs from flags: nothing to reload"),
            },
            Some(event) = events.recv() => {
                let (vip, addr, port) = event.real;
                let up = event.change == Change::WentUp;
                health.insert(event.real, up);
                // Logged once the datapath has it: the line means the change is in effect.
                match apply_health(&mut dp, &current, &health, &vip) {
                    Err(e) => warn!(%vip, real = %addr, port, up, error = %format!("{e:#}"), "applying a health change failed"),
                    Ok(()) if up => info!(%vip, real = %addr, port, "real is up: its checks pass again"),
                    Ok(()) => warn!(%vip, real = %addr, port, why = %event.why, "real is down: its checks fail; its flows move"),
                }
            }
            _ = sweep.tick() => {
                if let Err(e) = dp.sweep() {
                    warn!(error = %format!("{e:#}"), "sweeping idle leastconn flows failed");
                }
            }
        }
    }
    drop(checks);
    let counters = dp.counters()?;
    drop(dp);
    info!(ifaces = %ifaces.join(","), forwarded = counters.forwarded.packets, replies = counters.replies.packets, "detached");
    Ok(())
}

/// Loads the datapath, configures every VIP and attaches.
fn serve(r: &Resolved) -> Result<(Datapath, Vec<AttachMode>)> {
    let mut dp = Datapath::load()?;
    for (s, reals) in r.services.iter().zip(&r.reals) {
        dp.add_vip(s.vip, &s.settings)?;
        dp.set_reals(&s.vip, reals)?;
    }
    let how = dp.attach_all(&r.interfaces)?;
    Ok((dp, how))
}

/// Applies the file's reals, weights and drains to the running VIPs: each VIP's reals change
/// as one (its ring swapped whole), established flows stay on reals that stay. Everything is
/// checked and resolved before the first change; what cannot change yet without a restart
/// (VIPs added or removed, a VIP's mode, balance or other settings) refuses the reload and
/// changes nothing. Returns how many VIPs changed.
async fn reload(
    ifaces: &[String],
    path: &std::path::Path,
    dp: &mut Datapath,
    current: &mut Resolved,
    health: &BTreeMap<RealKey, bool>,
    timeout: Duration,
) -> Result<usize> {
    let services = config::load(path, datapath::possible_cpus()?)?;
    let mut next = resolve::resolve(ifaces, &services, timeout).await?;
    // Reals keep the health their checks found.
    for (s, reals) in next.services.iter().zip(next.reals.iter_mut()) {
        *reals = with_health(&s.vip, reals, health);
    }
    let changes: Vec<(VipSpec, &[Real])> = next
        .services
        .iter()
        .zip(&next.reals)
        .filter(|(s, reals)| {
            let before = current.services.iter().position(|o| o.vip == s.vip);
            before.map(|i| &current.reals[i]) != Some(*reals)
        })
        .map(|(s, reals)| (s.vip, reals.as_slice()))
        .collect();
    let checked = same_vips(current, &next)
        .and_then(|()| tunnel_sources(&next))
        .and_then(|()| match dp.real_ids_short(&changes) {
            0 => Ok(()),
            n => bail!(
                "{n} more reals than the datapath holds ({} in all)",
                lb_common::MAX_REALS - 1
            ),
        });
    if let Err(e) = checked {
        next.forget_neighbours().await;
        return Err(e);
    }
    let mut changed = 0;
    for (vip, reals) in &changes {
        if let Err(e) = dp.set_reals(vip, reals) {
            // Map writes failing midway: what was applied stays applied, and is recorded.
            adopt(current, &next, &changes[..changed]);
            return Err(e.context(format!(
                "applied to {changed} of {} changed VIPs before this failure",
                changes.len()
            )));
        }
        changed += 1;
    }
    adopt(current, &next, &changes);
    log_services(current);
    Ok(changed)
}

/// `reals` of `vip`, those whose checks fail marked down.
fn with_health(vip: &VipSpec, reals: &[Real], health: &BTreeMap<RealKey, bool>) -> Vec<Real> {
    reals
        .iter()
        .map(|r| Real {
            down: health.get(&checks::real_key(vip, r)) == Some(&false),
            ..*r
        })
        .collect()
}

/// Gives the datapath the reals of `vip` as their health now says.
fn apply_health(
    dp: &mut Datapath,
    current: &Resolved,
    health: &BTreeMap<RealKey, bool>,
    vip: &VipSpec,
) -> Result<()> {
    let Some(i) = current.services.iter().position(|s| s.vip == *vip) else {
        return Ok(());
    };
    dp.set_reals(vip, &with_health(vip, &current.reals[i], health))
}

/// Records the reals of the VIPs in `applied` as running.
fn adopt(current: &mut Resolved, next: &Resolved, applied: &[(VipSpec, &[Real])]) {
    for (vip, _) in applied {
        let Some(n) = next.services.iter().position(|s| s.vip == *vip) else {
            continue;
        };
        if let Some(c) = current.services.iter().position(|s| s.vip == *vip) {
            current.reals[c] = next.reals[n].clone();
            current.services[c] = next.services[n].clone();
        }
    }
}

/// Tunnels leave from the address of the interface their real is reached through.
fn tunnel_sources(next: &Resolved) -> Result<()> {
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

/// Refuses what a reload cannot change yet: the set of VIPs, a VIP's settings (compared as
/// resolved: a one-arm default pool included).
fn same_vips(current: &Resolved, next: &Resolved) -> Result<()> {
    for s in &next.services {
        let Some(old) = current.services.iter().find(|o| o.vip == s.vip) else {
            bail!("VIP {} is new: adding VIPs needs a restart for now", s.vip);
        };
        if old.settings != s.settings {
            bail!(
                "VIP {}: only its reals and their weights change on reload; other settings need a restart for now",
                s.vip
            );
        }
    }
    if let Some(gone) = current
        .services
        .iter()
        .find(|o| !next.services.iter().any(|s| s.vip == o.vip))
    {
        bail!(
            "VIP {} is gone from the file: removing VIPs needs a restart for now",
            gone.vip
        );
    }
    Ok(())
}

fn log_services(r: &Resolved) {
    for (s, reals) in r.services.iter().zip(&r.reals) {
        for real in reals {
            info!(vip = %s.vip, mode = %s.settings.mode, balance = %s.settings.balance, real = %real.addr, port = real.port.unwrap_or(s.vip.port), weight = real.weight, mac = %resolve::fmt_mac(&real.mac), ifindex = real.ifindex, "real");
        }
        if s.settings.mode == Mode::OneArm {
            let pool: Vec<String> = s.settings.snat_pool.iter().map(|a| a.to_string()).collect();
            info!(vip = %s.vip, pool = %pool.join(","), ports = %s.settings.snat_ports, "snat pool");
        }
    }
}
