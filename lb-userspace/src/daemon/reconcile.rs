//! From what should be served to the datapath operations that serve it. Pure: given what the
//! datapath serves now and the target, `plan` says exactly which verbs run, in which order;
//! `effective` says how each configured real is taken (weight, up or down). Host-tested.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    datapath::{real_key, Datapath, Real, RealKey},
    declare::{
        service::VipSettings,
        spec::{RealState, VipSpec},
    },
    host::resolve::ResolvedService,
};

/// What the datapath should serve for one VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub settings: VipSettings,
    pub reals: Vec<Real>,
}

/// What the checks last found of each checked real: up or not, and why.
pub type Health = BTreeMap<RealKey, (bool, String)>;

/// One change of the datapath, as a `Datapath` verb.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `remove_vip`: the VIP is no longer served; its id and its reals' ids are freed.
    Remove(VipSpec),
    /// `change_vip`: new settings (and reals) in one ring swap.
    Change(VipSpec, Target),
    /// `set_reals`: the same settings, another set of reals (or weights, or states).
    SetReals(VipSpec, Vec<Real>),
    /// `add_vip` then `set_reals`.
    Add(VipSpec, Target),
}

/// The operations that take the datapath from `served` to `target`: VIPs gone first (their
/// ids freed for new ones), then changed ones, then new ones. A VIP whose settings and reals
/// are as served is left alone.
pub fn plan(served: &BTreeMap<VipSpec, Target>, target: &BTreeMap<VipSpec, Target>) -> Vec<Op> {
    let mut ops: Vec<Op> = served
        .keys()
        .filter(|v| !target.contains_key(v))
        .map(|v| Op::Remove(*v))
        .collect();
    for (vip, now) in served {
        let Some(want) = target.get(vip) else {
            continue;
        };
        if now.settings != want.settings {
            ops.push(Op::Change(*vip, want.clone()));
        } else if now.reals != want.reals {
            ops.push(Op::SetReals(*vip, want.reals.clone()));
        }
    }
    ops.extend(
        target
            .iter()
            .filter(|(v, _)| !served.contains_key(v))
            .map(|(v, t)| Op::Add(*v, t.clone())),
    );
    ops
}

/// Runs `ops` on the datapath, in order; stops at the first that fails.
pub fn apply(dp: &mut Datapath, ops: &[Op]) -> anyhow::Result<()> {
    // One batch: the new rings go into RINGS with one wait on the kernel, not one each.
    dp.batch(|dp| {
        for op in ops {
            match op {
                Op::Remove(vip) => dp.remove_vip(vip)?,
                Op::Change(vip, t) => dp.change_vip(vip, &t.settings, &t.reals)?,
                Op::SetReals(vip, reals) => dp.set_reals(vip, reals)?,
                Op::Add(vip, t) => {
                    dp.add_vip(*vip, &t.settings)?;
                    dp.set_reals(vip, &t.reals)?;
                }
            }
        }
        Ok(())
    })
}

/// What the datapath serves now, as targets.
pub fn served(dp: &Datapath) -> BTreeMap<VipSpec, Target> {
    dp.served()
        .map(|(v, s, r)| {
            let t = Target {
                settings: s.clone(),
                reals: r.to_vec(),
            };
            (*v, t)
        })
        .collect()
}

/// The datapath's VIPs as `services` say, each real as `effective` takes it.
pub fn targets(services: &[ResolvedService], health: &Health) -> BTreeMap<VipSpec, Target> {
    services
        .iter()
        .map(|s| {
            let t = Target {
                settings: s.settings.clone(),
                reals: effective(s, health),
            };
            (s.vip, t)
        })
        .collect()
}

/// The reals of `s` as the datapath takes them: a drained real with weight 0; down when in
/// maintenance, unresolved, or failing its checks (health counts only while the VIP has a
/// check: a check removed, the real is up again).
pub fn effective(s: &ResolvedService, health: &Health) -> Vec<Real> {
    s.reals
        .iter()
        .map(|r| {
            let key = real_key(&s.vip, &r.real);
            let failing = s.settings.check.is_some() && health.get(&key).is_some_and(|(up, _)| !up);
            Real {
                weight: if r.spec.state == RealState::Drain {
                    0
                } else {
                    r.real.weight
                },
                down: r.real.down || r.spec.state == RealState::Maint || failing,
                ..r.real
            }
        })
        .collect()
}

/// The keys of the reals whose VIP has a check: the only ones health is kept of.
pub fn checked_reals(services: &[ResolvedService]) -> BTreeSet<RealKey> {
    services
        .iter()
        .filter(|s| s.settings.check.is_some())
        .flat_map(|s| s.reals.iter().map(|r| real_key(&s.vip, &r.real)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::{
        declare::spec::{Balance, Mode, RealSpec},
        host::resolve::ResolvedReal,
    };

    fn vip(s: &str) -> VipSpec {
        s.parse().unwrap()
    }

    fn real(addr: &str, weight: u16) -> Real {
        Real {
            weight,
            ..Real::on_segment(addr.parse::<IpAddr>().unwrap(), [2, 0, 0, 0, 0, 1])
        }
    }

    fn target(mode: Mode, reals: &[Real]) -> Target {
        Target {
            settings: VipSettings::new(mode),
            reals: reals.to_vec(),
        }
    }

    fn resolved(
        vip: VipSpec,
        settings: VipSettings,
        reals: &[(&str, RealState)],
    ) -> ResolvedService {
        ResolvedService {
            vip,
            settings,
            reals: reals
                .iter()
                .map(|(text, state)| {
                    let mut spec: RealSpec = text.parse().unwrap();
                    spec.state = *state;
                    ResolvedReal {
                        real: real(&spec.addr.to_string(), spec.weight),
                        spec,
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn nothing_changes_when_served_is_the_target() {
        let a = vip("198.18.100.10:80/tcp");
        let now = BTreeMap::from([(a, target(Mode::Dsr, &[real("198.18.0.11", 1)]))]);
        assert_eq!(plan(&now, &now.clone()), []);
    }

    #[test]
    fn vips_go_first_then_change_then_come() {
        let (gone, changed, reweighted, same, new) = (
            vip("198.18.100.1:80/tcp"),
            vip("198.18.100.2:80/tcp"),
            vip("198.18.100.3:80/tcp"),
            vip("198.18.100.4:80/tcp"),
            vip("198.18.100.5:53/udp"),
        );
        let r1 = real("198.18.0.11", 1);
        let r1_heavy = real("198.18.0.11", 3);
        let mut roundrobin = VipSettings::new(Mode::Dsr);
        roundrobin.balance = Balance::Roundrobin;
        let now = BTreeMap::from([
            (gone, target(Mode::Dsr, &[r1])),
            (changed, target(Mode::Dsr, &[r1])),
            (reweighted, target(Mode::Nat, &[r1])),
            (same, target(Mode::Tunnel, &[r1])),
        ]);
        let want = BTreeMap::from([
            (
                changed,
                Target {
                    settings: roundrobin.clone(),
                    reals: vec![r1],
                },
            ),
            (reweighted, target(Mode::Nat, &[r1_heavy])),
            (same, target(Mode::Tunnel, &[r1])),
            (new, target(Mode::OneArm, &[r1])),
        ]);
        assert_eq!(
            plan(&now, &want),
            [
                Op::Remove(gone),
                Op::Change(
                    changed,
                    Target {
                        settings: roundrobin,
                        reals: vec![r1]
                    }
                ),
                Op::SetReals(reweighted, vec![r1_heavy]),
                Op::Add(new, target(Mode::OneArm, &[r1])),
            ]
        );
    }

    #[test]
    fn a_real_down_or_drained_is_one_set_reals_of_that_vip() {
        let a = vip("198.18.100.10:80/tcp");
        let (r1, r2) = (real("198.18.0.11", 1), real("198.18.0.12", 1));
        let now = BTreeMap::from([(a, target(Mode::Dsr, &[r1, r2]))]);
        let down = Real { down: true, ..r2 };
        let want = BTreeMap::from([(a, target(Mode::Dsr, &[r1, down]))]);
        assert_eq!(plan(&now, &want), [Op::SetReals(a, vec![r1, down])]);
    }

    #[test]
    fn effective_reals_follow_state_health_and_resolution() {
        let a = vip("198.18.100.10:80/tcp");
        let mut checked = VipSettings::new(Mode::Dsr);
        checked.check = Some("tcp".parse().unwrap());
        let mut s = resolved(
            a,
            checked,
            &[
                ("198.18.0.11,weight=3", RealState::Ready),
                ("198.18.0.12,weight=3", RealState::Drain),
                ("198.18.0.13", RealState::Maint),
                ("198.18.0.14", RealState::Ready),
                ("198.18.0.15", RealState::Ready),
            ],
        );
        // 14 failed its checks; 15 has no MAC yet.
        s.reals[4].real.down = true;
        let failing = real_key(&a, &s.reals[3].real);
        let health = Health::from([(failing, (false, "refused".to_string()))]);
        let got: Vec<(u16, bool)> = effective(&s, &health)
            .iter()
            .map(|r| (r.weight, r.down))
            .collect();
        assert_eq!(
            got,
            [(3, false), (0, false), (1, true), (1, true), (1, true)]
        );

        // Without a check, health no longer counts: the failing real serves again.
        s.settings.check = None;
        assert!(!effective(&s, &health)[3].down);
        assert!(checked_reals(std::slice::from_ref(&s)).is_empty());
    }

    #[test]
    fn targets_take_every_service_with_its_effective_reals() {
        let a = vip("198.18.100.10:80/tcp");
        let s = resolved(
            a,
            VipSettings::new(Mode::Nat),
            &[("198.18.0.11", RealState::Drain)],
        );
        let t = targets(&[s], &Health::new());
        assert_eq!(t.len(), 1);
        assert_eq!(t[&a].settings.mode, Mode::Nat);
        assert_eq!((t[&a].reals[0].weight, t[&a].reals[0].down), (0, false));
    }
}
