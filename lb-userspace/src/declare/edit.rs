//! The runtime commands as changes to the configured services (`lbctl vip add`, `lbctl real
//! drain ...`). Pure: each edit returns the new list or says why not, and the daemon applies
//! the result as it applies a reloaded file, so both go through the same checks.

use std::net::IpAddr;

use crate::declare::{
    service::Service,
    spec::{Balance, RealSpec, RealState, VipSpec, MAX_WEIGHT},
};

/// A real as a command names it: `ADDRESS` (any port) or `ADDRESS:PORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RealRef {
    pub addr: IpAddr,
    pub port: Option<u16>,
}

impl RealRef {
    fn matches(&self, vip: &VipSpec, real: &RealSpec) -> bool {
        real.addr == self.addr && self.port.is_none_or(|p| real.port.unwrap_or(vip.port) == p)
    }
}

impl std::fmt::Display for RealRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = RealSpec {
            port: self.port,
            ..RealSpec::new(self.addr)
        };
        write!(f, "{r}")
    }
}

impl std::str::FromStr for RealRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.contains(',') {
            return Err(format!(
                "`{s}`: name a real by ADDRESS or ADDRESS:PORT only"
            ));
        }
        let r: RealSpec = s.parse().map_err(|e| format!("{e}"))?;
        Ok(RealRef {
            addr: r.addr,
            port: r.port,
        })
    }
}

/// One runtime change.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "edit", rename_all = "kebab-case")]
pub enum Edit {
    AddVip {
        service: Box<Service>,
    },
    DelVip {
        vip: VipSpec,
    },
    AddReal {
        vip: VipSpec,
        real: RealSpec,
    },
    /// `vip: None`: from every VIP that has it.
    DelReal {
        vip: Option<VipSpec>,
        real: RealRef,
    },
    Weight {
        vip: Option<VipSpec>,
        real: RealRef,
        weight: u16,
    },
    State {
        vip: Option<VipSpec>,
        real: RealRef,
        state: RealState,
    },
}

/// `services` with `edit` made, and a line saying what changed; or why it cannot be made.
pub fn apply(services: &[Service], edit: &Edit) -> Result<(Vec<Service>, String), String> {
    let mut next = services.to_vec();
    let find = |vip: &VipSpec| {
        services
            .iter()
            .position(|s| s.vip == *vip)
            .ok_or_else(|| format!("no VIP {vip} (see `lbctl vip list`)"))
    };
    let said = match edit {
        Edit::AddVip { service } => {
            if find(&service.vip).is_ok() {
                return Err(format!(
                    "VIP {} exists: `lbctl vip del` it first to change its settings",
                    service.vip
                ));
            }
            next.push(service.as_ref().clone());
            format!(
                "VIP {} added with {} reals",
                service.vip,
                service.reals.len()
            )
        }
        Edit::DelVip { vip } => {
            next.remove(find(vip)?);
            format!("VIP {vip} removed")
        }
        Edit::AddReal { vip, real } => {
            let s = &mut next[find(vip)?];
            if let Some(r) = s.reals.iter().find(|r| same_real(vip, r, real)) {
                return Err(format!(
                    "{r} is already a real of {vip}: change it with `lbctl real weight|drain|maint|ready`"
                ));
            }
            s.reals.push(*real);
            format!("{real} added to {vip}")
        }
        Edit::DelReal { vip, real } => {
            let hit = for_each_real(&mut next, vip.as_ref(), real, |_, _| Ok(()))?;
            for s in &mut next {
                if vip.is_none_or(|v| v == s.vip) {
                    let v = s.vip;
                    s.reals.retain(|r| !real.matches(&v, r));
                    if s.reals.is_empty() {
                        return Err(format!(
                            "{real} is the last real of {v}: add another first, or remove the VIP (`lbctl vip del {v}`)"
                        ));
                    }
                }
            }
            format!("{real} removed from {hit}")
        }
        Edit::Weight { vip, real, weight } => {
            if *weight > MAX_WEIGHT {
                return Err(format!(
                    "weight {weight}: a weight is 0 (drain) to {MAX_WEIGHT}"
                ));
            }
            let hit = for_each_real(&mut next, vip.as_ref(), real, |s, r| {
                if s.settings.balance == Balance::StaticRr {
                    return Err(format!(
                        "VIP {} balances static-rr, whose weights are fixed at load (as HAProxy's): change the file and reload, or use roundrobin",
                        s.vip
                    ));
                }
                r.weight = *weight;
                Ok(())
            })?;
            format!("{real} weight {weight} in {hit}")
        }
        Edit::State { vip, real, state } => {
            let mut weightless = false;
            let hit = for_each_real(&mut next, vip.as_ref(), real, |_, r| {
                r.state = *state;
                weightless |= r.weight == 0;
                Ok(())
            })?;
            if *state == RealState::Ready && weightless {
                format!("{real} ready in {hit}, but its weight is 0, which drains it still: `lbctl real weight {real} N`")
            } else {
                format!("{real} {state} in {hit}")
            }
        }
    };
    Ok((next, said))
}

fn same_real(vip: &VipSpec, a: &RealSpec, b: &RealSpec) -> bool {
    a.addr == b.addr && a.port.unwrap_or(vip.port) == b.port.unwrap_or(vip.port)
}

/// Calls `change` on `real` in `vip` (or in every VIP that has it); returns the VIPs it
/// changed, as a list to print, or says that none has it.
fn for_each_real(
    services: &mut [Service],
    vip: Option<&VipSpec>,
    real: &RealRef,
    mut change: impl FnMut(&Service, &mut RealSpec) -> Result<(), String>,
) -> Result<String, String> {
    if let Some(v) = vip {
        if !services.iter().any(|s| s.vip == *v) {
            return Err(format!("no VIP {v} (see `lbctl vip list`)"));
        }
    }
    let mut hit = Vec::new();
    for s in services.iter_mut() {
        if vip.is_some_and(|v| *v != s.vip) {
            continue;
        }
        let view = Service {
            reals: Vec::new(),
            ..s.clone()
        };
        for r in s.reals.iter_mut().filter(|r| real.matches(&view.vip, r)) {
            change(&view, r)?;
            hit.push(view.vip.to_string());
        }
    }
    if hit.is_empty() {
        let place = vip.map_or("any VIP".to_string(), |v| format!("VIP {v}"));
        return Err(format!(
            "{real} is not a real of {place} (see `lbctl real list`)"
        ));
    }
    hit.dedup();
    Ok(hit.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declare::service::VipSettings;
    use crate::declare::spec::Mode;

    fn services() -> Vec<Service> {
        let reals = |rs: &[&str]| rs.iter().map(|r| r.parse().unwrap()).collect();
        vec![
            Service {
                vip: "198.18.100.10:80/tcp".parse().unwrap(),
                settings: VipSettings::new(Mode::Dsr),
                reals: reals(&["198.18.0.11", "198.18.0.12"]),
            },
            Service {
                vip: "198.18.100.11:80/tcp".parse().unwrap(),
                settings: VipSettings::new(Mode::Nat),
                reals: reals(&["198.18.0.12:8080", "198.18.0.13:8080"]),
            },
        ]
    }

    fn r(s: &str) -> RealRef {
        s.parse().unwrap()
    }

    #[test]
    fn a_real_named_without_a_vip_changes_in_every_vip_that_has_it() {
        let edit = Edit::State {
            vip: None,
            real: r("198.18.0.12"),
            state: RealState::Drain,
        };
        let (next, said) = apply(&services(), &edit).unwrap();
        assert_eq!(next[0].reals[1].state, RealState::Drain);
        assert_eq!(next[1].reals[0].state, RealState::Drain);
        assert_eq!(next[0].reals[0].state, RealState::Ready);
        assert!(
            said.contains("198.18.100.10:80/tcp, 198.18.100.11:80/tcp"),
            "{said}"
        );

        // With a port, only the real serving that port.
        let edit = Edit::Weight {
            vip: None,
            real: r("198.18.0.12:8080"),
            weight: 5,
        };
        let (next, _) = apply(&services(), &edit).unwrap();
        assert_eq!((next[0].reals[1].weight, next[1].reals[0].weight), (1, 5));
    }

    #[test]
    fn edits_that_cannot_be_made_say_why_and_change_nothing() {
        let s = services();
        let vip = "198.18.100.10:80/tcp".parse().unwrap();
        let e = apply(
            &s,
            &Edit::DelVip {
                vip: "198.18.100.99:80/tcp".parse().unwrap(),
            },
        );
        assert!(e.unwrap_err().contains("no VIP 198.18.100.99:80/tcp"));
        let del = |real| Edit::DelReal {
            vip: None,
            real: r(real),
        };
        let (one_left, _) = apply(&s, &del("198.18.0.11")).unwrap();
        let e = apply(&one_left, &del("198.18.0.12"));
        assert!(e.unwrap_err().contains("last real of 198.18.100.10:80/tcp"));
        let e = "198.18.0.11,weight=2".parse::<RealRef>();
        assert!(e.unwrap_err().contains("ADDRESS or ADDRESS:PORT only"));
        let e = apply(
            &s,
            &Edit::AddReal {
                vip,
                real: "198.18.0.11:80".parse().unwrap(),
            },
        );
        assert!(e.unwrap_err().contains("already a real"));
        let e = apply(
            &s,
            &Edit::State {
                vip: Some(vip),
                real: r("198.18.0.13"),
                state: RealState::Maint,
            },
        );
        assert!(e
            .unwrap_err()
            .contains("not a real of VIP 198.18.100.10:80/tcp"));
        let e = apply(
            &s,
            &Edit::Weight {
                vip: None,
                real: r("198.18.0.11"),
                weight: 300,
            },
        );
        assert!(e.unwrap_err().contains("0 (drain) to 256"));
        let e = apply(
            &s,
            &Edit::AddVip {
                service: Box::new(s[0].clone()),
            },
        );
        assert!(e.unwrap_err().contains("exists"));
        let mut rr = services();
        rr[0].settings.balance = Balance::StaticRr;
        let e = apply(
            &rr,
            &Edit::Weight {
                vip: None,
                real: r("198.18.0.11"),
                weight: 2,
            },
        );
        assert!(e.unwrap_err().contains("static-rr"));
    }

    #[test]
    fn vips_and_reals_come_and_go() {
        let s = services();
        let vip: VipSpec = "198.18.100.11:80/tcp".parse().unwrap();
        let (next, _) = apply(
            &s,
            &Edit::DelReal {
                vip: Some(vip),
                real: r("198.18.0.13"),
            },
        )
        .unwrap();
        assert_eq!(next[1].reals.len(), 1);
        let (next, _) = apply(
            &next,
            &Edit::AddReal {
                vip,
                real: "198.18.0.14:8080,weight=2".parse().unwrap(),
            },
        )
        .unwrap();
        assert_eq!(next[1].reals[1].to_string(), "198.18.0.14:8080,weight=2");
        let (next, _) = apply(&next, &Edit::DelVip { vip }).unwrap();
        assert_eq!(next.len(), 1);
        let (next, said) = apply(
            &next,
            &Edit::AddVip {
                service: Box::new(s[1].clone()),
            },
        )
        .unwrap();
        assert_eq!(next.len(), 2);
        assert!(said.contains("2 reals"), "{said}");
    }
}
