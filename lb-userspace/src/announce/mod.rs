//! Announcing the VIPs over BGP through BIRD 2 (active/active behind ECMP). lbctl decides
//! which VIP addresses this LB announces and tells BIRD through its own interfaces: it
//! writes a file BIRD's configuration includes (a static protocol, `lbctl_vips`, with a
//! route per announced address) and runs `birdc configure`. BIRD speaks BGP; lbctl never
//! touches BIRD's state behind its back.
//!
//! The policy ([`Announcements`]): an address is announced while the LB serves (not
//! stopping, its program attached to each interface) and every VIP on the address has its
//! quorum of reals up. It is withdrawn at once when that stops being so; announced again
//! only after it has held for `rise` without a break (hysteresis: a real that flaps does not
//! make the route flap). When lbctl dies, the routes go with it: they are routes via an
//! interface that lives as long as lbctl ([`alive`]).

pub mod alive;
pub mod bird;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio::sync::watch;
use tracing::{info, warn};

use self::{alive::AliveIface, bird::Bird};

/// What `lbctl status` shows of the announcements.
#[derive(Clone, Debug, Default)]
pub struct Shown {
    pub announced: Vec<IpAddr>,
    /// Eligible, waiting out `rise`: address and what is left.
    pub rising: Vec<(IpAddr, Duration)>,
    /// The last time BIRD was told, if it refused: why.
    pub error: Option<String>,
    pub alive_iface: String,
}

/// The announcing side of a running lbctl: the policy, the interface the routes go via, and
/// a task that tells BIRD (off the daemon's loop: birdc may be slow or BIRD down, and is
/// tried again every second until it takes the set).
pub struct Announcer {
    policy: Announcements,
    alive: AliveIface,
    wanted: watch::Sender<BTreeSet<IpAddr>>,
    error: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Announcer {
    /// Creates the interface `alive_name` and starts telling BIRD. An lbctl that handed
    /// over left the interface and its announcements: those stay announced (no `rise`) as
    /// long as they are still eligible at the first step.
    pub fn start(bird: Bird, alive_name: &str, rise: Duration) -> Result<Self> {
        let alive = AliveIface::create(alive_name)?;
        let mut policy = Announcements::new(rise);
        if alive.existed {
            policy.announced = bird::read_announced(&bird.include);
            info!(addrs = ?policy.announced, "announcements handed over by the last lbctl");
        }
        // The file first, at once: BIRD's configuration includes it, and refuses to start
        // without it.
        bird.write(&policy.announced, alive.name())?;
        let (wanted, mut rx) = watch::channel(policy.announced.clone());
        let error = Arc::new(Mutex::new(None));
        let (err, name) = (error.clone(), alive.name().to_owned());
        let task = tokio::spawn(async move {
            loop {
                let set = rx.borrow_and_update().clone();
                let (b, n) = (bird.clone(), name.clone());
                let done = tokio::task::spawn_blocking(move || b.announce(&set, &n)).await;
                let failed = match done {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("{e:#}")),
                    Err(e) => Some(format!("the announcing task failed: {e}")),
                };
                if let Some(why) = &failed {
                    warn!(error = %why, "telling BIRD the announcements failed; trying again in 1s");
                }
                let retry = failed.is_some();
                *err.lock().unwrap_or_else(|p| p.into_inner()) = failed;
                if retry {
                    tokio::select! {
                        changed = rx.changed() => if changed.is_err() { return },
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                } else if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            policy,
            alive,
            wanted,
            error,
            task,
        })
    }

    /// Takes in which addresses are eligible now; tells BIRD when the set changes.
    pub fn update(&mut self, eligible: &BTreeMap<IpAddr, bool>) {
        if self.policy.step(Instant::now(), eligible) {
            let set = self.policy.announced().clone();
            info!(announced = ?set, "BGP announcements change");
            self.wanted.send_replace(set);
        }
    }

    /// Leaves the announcements up after lbctl exits, for the next lbctl (a hand-over).
    pub fn hand_over(&self) -> Result<()> {
        self.alive.persist(true)
    }

    pub fn shown(&self) -> Shown {
        Shown {
            announced: self.policy.announced().iter().copied().collect(),
            rising: self.policy.rising(Instant::now()),
            error: self.error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            alive_iface: self.alive.name().to_owned(),
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which addresses are announced, and since when the others have been eligible.
#[derive(Debug)]
pub struct Announcements {
    rise: Duration,
    announced: BTreeSet<IpAddr>,
    /// Eligible, not announced yet: since when.
    eligible_since: BTreeMap<IpAddr, Instant>,
}

impl Announcements {
    pub fn new(rise: Duration) -> Self {
        Self {
            rise,
            announced: BTreeSet::new(),
            eligible_since: BTreeMap::new(),
        }
    }

    pub fn announced(&self) -> &BTreeSet<IpAddr> {
        &self.announced
    }

    /// Takes in which addresses are eligible `now` (every configured VIP address, eligible or
    /// not); returns whether the announced set changed.
    pub fn step(&mut self, now: Instant, eligible: &BTreeMap<IpAddr, bool>) -> bool {
        let before = self.announced.clone();
        self.announced
            .retain(|a| eligible.get(a).copied().unwrap_or(false));
        self.eligible_since
            .retain(|a, _| eligible.get(a).copied().unwrap_or(false));
        for (addr, ok) in eligible {
            if !ok || self.announced.contains(addr) {
                continue;
            }
            let since = *self.eligible_since.entry(*addr).or_insert(now);
            if now.duration_since(since) >= self.rise {
                self.announced.insert(*addr);
                self.eligible_since.remove(addr);
            }
        }
        self.announced != before
    }

    /// Addresses eligible but still waiting out `rise`, with how long is left.
    pub fn rising(&self, now: Instant) -> Vec<(IpAddr, Duration)> {
        self.eligible_since
            .iter()
            .map(|(a, since)| (*a, self.rise.saturating_sub(now.duration_since(*since))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn announced_after_rise_withdrawn_at_once_and_rise_starts_again() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut a = Announcements::new(s(3));
        let (v1, v2) = (addr("198.18.100.10"), addr("198.18.100.11"));
        let both = BTreeMap::from([(v1, true), (v2, true)]);
        assert!(!a.step(t0, &both), "nothing before rise");
        assert!(!a.step(t0 + s(2), &both));
        assert!(a.step(t0 + s(3), &both));
        assert_eq!(a.announced(), &BTreeSet::from([v1, v2]));
        // v1 below quorum: withdrawn at once.
        let v1_down = BTreeMap::from([(v1, false), (v2, true)]);
        assert!(a.step(t0 + s(4), &v1_down));
        assert_eq!(a.announced(), &BTreeSet::from([v2]));
        // Back, but flapping: each break starts rise again.
        assert!(!a.step(t0 + s(5), &both));
        assert!(!a.step(t0 + s(6), &v1_down));
        assert!(!a.step(t0 + s(7), &both));
        assert!(!a.step(t0 + s(9), &both));
        assert_eq!(a.rising(t0 + s(9)), vec![(v1, s(1))]);
        assert!(a.step(t0 + s(10), &both));
        // An address no longer configured is withdrawn.
        assert!(a.step(t0 + s(11), &BTreeMap::from([(v2, true)])));
        assert_eq!(a.announced(), &BTreeSet::from([v2]));
    }
}
