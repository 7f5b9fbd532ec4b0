//! The daemon's answers to admin requests (`lbctl status`, `vip list`, `real drain`, ...).

use std::time::{Duration, Instant};

use super::running::Running;
use crate::{
    admin::{CheckRow, IfaceRow, RealRow, Response, Status, VipRow},
    datapath::{real_key, AttachMode},
    declare::{edit::RealRef, spec::VipSpec},
    host::resolve::fmt_mac,
};

/// What `status` reports besides the running state.
pub struct Facts {
    pub started: Instant,
    pub source: String,
    pub attached: Vec<(String, AttachMode)>,
    pub pinned: String,
    pub keep_on_exit: bool,
    /// What keepalived's notify hook last said of each VRRP instance or group, by (kind,
    /// name): its state and since when.
    pub vrrp: std::collections::BTreeMap<(String, String), (String, Instant)>,
    /// A graceful stop is under way.
    pub stopping: bool,
    /// What is announced over BGP, when lbctl announces.
    pub announce: Option<crate::announce::Shown>,
    /// Flow sync with the peer, when set up.
    pub sync: Option<crate::sync::install::Installer>,
}

/// Whether this LB serves, as keepalived's track script asks it (`lbctl status --check`):
/// the daemon answers (this is its answer), and [`serving::assess`] finds nothing in the way.
pub async fn check(r: &Running, facts: &Facts) -> Response {
    let a = super::serving::assess(r, facts).await;
    Response::Checked {
        serving: a.serving(),
        problems: a.problems(),
    }
}

/// keepalived's notify hook: records the instance's state (shown by `status`) and logs it.
pub fn vrrp(facts: &mut Facts, kind: String, name: String, state: String) -> Response {
    let kind = kind.to_uppercase();
    let state = state.to_uppercase();
    if !matches!(kind.as_str(), "INSTANCE" | "GROUP") {
        return Response::Error {
            message: format!("{kind}: keepalived notifies INSTANCE or GROUP"),
        };
    }
    if !matches!(
        state.as_str(),
        "MASTER" | "BACKUP" | "FAULT" | "STOP" | "DELETED"
    ) {
        return Response::Error {
            message: format!(
                "{state}: keepalived's states are MASTER, BACKUP, FAULT, STOP and DELETED"
            ),
        };
    }
    tracing::info!(%kind, %name, %state, "VRRP state (keepalived's notify)");
    let message = format!("{} {name}: {state}", kind.to_lowercase());
    facts.vrrp.insert((kind, name), (state, Instant::now()));
    Response::Done { message }
}

pub fn status(r: &Running, facts: &Facts) -> Response {
    let counters = match r.dp.counters() {
        Ok(c) => c,
        Err(e) => return error(e),
    };
    let not_forwarded = counters.reasons.iter().map(|(_, c)| c.packets).sum();
    let (mut reals, mut up) = (0, 0);
    for s in &r.current.services {
        let e = r.effective(s);
        reals += e.len();
        up += e.iter().filter(|x| !x.down && x.weight > 0).count();
    }
    Response::Status(Box::new(Status {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        uptime_secs: facts.started.elapsed().as_secs(),
        source: facts.source.clone(),
        interfaces: facts
            .attached
            .iter()
            .map(|(name, how)| IfaceRow {
                name: name.clone(),
                xdp: how.name().into(),
            })
            .collect(),
        vips: r.current.services.len(),
        reals,
        reals_up: up,
        packets_forwarded: counters.forwarded.packets + counters.replies.packets,
        packets_not_forwarded: not_forwarded,
        pinned: facts.pinned.clone(),
        keep_on_exit: facts.keep_on_exit,
        vrrp: facts
            .vrrp
            .iter()
            .map(|((kind, name), (state, since))| crate::admin::VrrpRow {
                kind: kind.clone(),
                name: name.clone(),
                state: state.clone(),
                since_secs: since.elapsed().as_secs(),
            })
            .collect(),
        bgp: facts.announce.as_ref().map(|a| crate::admin::BgpRow {
            announced: a.announced.iter().map(|x| x.to_string()).collect(),
            rising: a
                .rising
                .iter()
                .map(|(x, left)| {
                    format!(
                        "{x} in {}",
                        humantime::format_duration(Duration::from_millis(left.as_millis() as u64))
                    )
                })
                .collect(),
            error: a.error.clone(),
            via: a.alive_iface.clone(),
        }),
        stopping: facts.stopping,
        sync: facts.sync.as_ref().map(|s| s.line()),
    }))
}

pub fn vips(r: &Running) -> Response {
    let mut rows = Vec::new();
    for s in &r.current.services {
        let reals = r.effective(s);
        let counters = match r.dp.vip_forwarded(&s.vip) {
            Ok(c) => c,
            Err(e) => return error(e),
        };
        rows.push(VipRow {
            vip: s.vip,
            mode: s.settings.mode.to_string(),
            balance: s.settings.balance.to_string(),
            check: s.settings.check.as_ref().map(|c| c.to_string()),
            when_empty: if s.settings.pass_when_empty {
                "pass"
            } else {
                "drop"
            }
            .into(),
            reals: reals.len(),
            reals_up: reals.iter().filter(|x| !x.down && x.weight > 0).count(),
            packets: counters.requests.packets + counters.replies.packets,
            bytes: counters.requests.bytes + counters.replies.bytes,
        });
    }
    Response::Vips { vips: rows }
}

pub fn reals(r: &Running, only: Option<VipSpec>) -> Response {
    if let Some(v) = only {
        if !r.current.services.iter().any(|s| s.vip == v) {
            return Response::Error {
                message: format!("no VIP {v} (see `lbctl vip list`)"),
            };
        }
    }
    let mut rows = Vec::new();
    for s in &r.current.services {
        if only.is_some_and(|v| v != s.vip) {
            continue;
        }
        for (resolved, real) in s.reals.iter().zip(r.effective(s)) {
            let spec = &resolved.spec;
            let key = real_key(&s.vip, &real);
            let unresolved = r.current.unresolved.get(&key);
            let health = r.health.get(&key);
            let checked = s.settings.check.as_ref().and_then(|_| r.board.get(&key));
            let (health_word, why) = match (&s.settings.check, health) {
                (None, _) => ("unchecked", None),
                (Some(_), None) => ("up", None),
                (Some(_), Some((true, _))) => ("up", None),
                (Some(_), Some((false, why))) => ("down", Some(why.clone())),
            };
            rows.push(RealRow {
                vip: s.vip,
                real: RealRef {
                    addr: real.addr,
                    port: real.port,
                },
                weight: spec.weight,
                state: spec.state.to_string(),
                health: health_word.into(),
                mac: match unresolved {
                    Some(_) => "unresolved".into(),
                    None => fmt_mac(&real.mac),
                },
                serving: !real.down && real.weight > 0,
                why: unresolved.cloned().or(why),
                since_secs: checked.as_ref().map(|c| c.since.elapsed().as_secs()),
                last_check: checked.and_then(|c| c.last).map(CheckRow::from),
            });
        }
    }
    Response::Reals { reals: rows }
}

pub fn error(e: anyhow::Error) -> Response {
    Response::Error {
        message: format!("{e:#}"),
    }
}
