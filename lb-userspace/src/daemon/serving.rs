//! Whether this LB serves: what keepalived's track script asks (`lbctl status --check`) and
//! what decides which VIPs are announced over BGP. An LB serves while it is not stopping,
//! its own program is the one attached to each of its interfaces, and a VIP serves while at
//! least its quorum of reals take new flows.

use std::collections::BTreeMap;

use super::{answer::Facts, running::Running};
use crate::declare::spec::VipSpec;

/// What stands in the way of serving, on the whole LB and per VIP.
#[derive(Debug, Default)]
pub struct Assessment {
    /// Reasons the LB serves nothing (stopping, a datapath not attached).
    pub lb: Vec<String>,
    /// VIPs below their quorum, each with why.
    pub vips_below: BTreeMap<VipSpec, String>,
}

impl Assessment {
    pub fn serving(&self) -> bool {
        self.lb.is_empty() && self.vips_below.is_empty()
    }

    /// Every reason, the LB's first.
    pub fn problems(&self) -> Vec<String> {
        self.lb
            .iter()
            .cloned()
            .chain(self.vips_below.values().cloned())
            .collect()
    }
}

/// Looks at the running LB now (asks the kernel what is attached to each interface).
pub async fn assess(r: &Running, facts: &Facts) -> Assessment {
    let mut a = Assessment::default();
    if facts.stopping {
        a.lb.push("stopping (lbctl stop, or SIGTERM): handing the traffic over".to_owned());
    }
    if let Some(why) = facts.sync.as_ref().and_then(|s| s.not_synced()) {
        a.lb.push(why);
    }
    let ours = r.dp.program_id();
    for (name, _) in &facts.attached {
        match (crate::host::neigh::xdp_prog_id(name).await, &ours) {
            (Ok(Some(id)), Ok(our)) if id == *our => {}
            (Ok(Some(id)), Ok(our)) => a.lb.push(format!(
                "{name}: another XDP program (id {id}) is attached, not this lbctl's ({our})"
            )),
            (Ok(None), _) => a.lb.push(format!(
                "{name}: no XDP program is attached (detached behind lbctl's back?)"
            )),
            (Err(e), _) => {
                a.lb.push(format!("{name}: cannot tell what is attached: {e:#}"))
            }
            (_, Err(e)) => a.lb.push(format!(
                "{name}: cannot tell which program is lbctl's: {e:#}"
            )),
        }
    }
    for s in &r.current.services {
        let up = r
            .effective(s)
            .iter()
            .filter(|x| !x.down && x.weight > 0)
            .count();
        if up < usize::from(s.settings.quorum) {
            a.vips_below.insert(
                s.vip,
                format!(
                    "VIP {}: {up} of {} reals take new flows, quorum {}",
                    s.vip,
                    s.reals.len(),
                    s.settings.quorum
                ),
            );
        }
    }
    a
}

/// Which VIP addresses may be announced now: none while the LB does not serve; else those
/// whose every VIP has its quorum.
pub async fn eligible(running: &Running, facts: &Facts) -> BTreeMap<std::net::IpAddr, bool> {
    let a = assess(running, facts).await;
    let mut out = BTreeMap::new();
    for s in &running.current.services {
        let ok = a.lb.is_empty() && !a.vips_below.contains_key(&s.vip);
        let e = out.entry(s.vip.addr).or_insert(true);
        *e &= ok;
    }
    out
}
