//! Rates from two readings of the counters: per second, per real, matched by name (a real
//! added since has none yet; a counter that went back, its id given anew, is taken from
//! zero), and per VIP as its reals' summed.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{RealTraffic, Stats};

/// Per second, between two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Both ways.
    pub packets_per_sec: f64,
    pub bytes_per_sec: f64,
    pub new_flows_per_sec: f64,
}

impl Rates {
    /// From `before` to `after`, `secs` apart.
    pub fn between(before: &RealTraffic, after: &RealTraffic, secs: f64) -> Self {
        if secs <= 0.0 {
            return Self::default();
        }
        let (b, a) = (before.total(), after.total());
        // A counter that went back was zeroed (its id given anew): count from zero.
        let grew = |then: u64, now: u64| if now >= then { now - then } else { now } as f64;
        Self {
            packets_per_sec: grew(b.packets, a.packets) / secs,
            bytes_per_sec: grew(b.bytes, a.bytes) / secs,
            new_flows_per_sec: grew(before.new_flows, after.new_flows) / secs,
        }
    }
}

/// Where a rate belongs: a VIP (`real` none) or one of its reals.
pub type RateKey = (String, Option<String>);

/// The rates of every VIP and real of `after` that `before` has too.
pub fn of(before: &Stats, after: &Stats) -> BTreeMap<RateKey, Rates> {
    let secs = after.at_ns.saturating_sub(before.at_ns) as f64 / 1e9;
    let mut then: BTreeMap<RateKey, RealTraffic> = BTreeMap::new();
    for v in &before.vips {
        then.insert((v.vip.clone(), None), v.traffic);
        for r in &v.reals {
            then.insert((v.vip.clone(), Some(r.real.clone())), r.traffic);
        }
    }
    let mut rates = BTreeMap::new();
    for v in &after.vips {
        // A VIP's rate is its reals' summed: its total drops when a real leaves, which is
        // no traffic going backwards.
        let mut sum: Option<Rates> = None;
        for r in &v.reals {
            let key = (v.vip.clone(), Some(r.real.clone()));
            if let Some(b) = then.get(&key) {
                let rate = Rates::between(b, &r.traffic, secs);
                let s = sum.get_or_insert_with(Rates::default);
                s.packets_per_sec += rate.packets_per_sec;
                s.bytes_per_sec += rate.bytes_per_sec;
                s.new_flows_per_sec += rate.new_flows_per_sec;
                rates.insert(key, rate);
            }
        }
        if let Some(sum) = sum {
            rates.insert((v.vip.clone(), None), sum);
        }
    }
    rates
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{CounterTable, RealRow, Traffic, VipRow};

    fn traffic(packets: u64, bytes: u64, new_flows: u64) -> RealTraffic {
        RealTraffic {
            requests: Traffic { packets, bytes },
            replies: Traffic {
                packets: packets / 2,
                bytes: bytes / 2,
            },
            new_flows,
            picked_up: 0,
        }
    }

    fn reading(at_s: u64, reals: &[(&str, RealTraffic)]) -> Stats {
        let reals: Vec<RealRow> = reals
            .iter()
            .map(|(name, t)| RealRow {
                real: name.to_string(),
                state: "ready",
                weight: 1,
                traffic: *t,
                active_flows: 0,
            })
            .collect();
        let total = reals
            .iter()
            .fold(RealTraffic::default(), |s, r| s.plus(r.traffic));
        Stats {
            prog_id: 1,
            at_ns: at_s * 1_000_000_000,
            counters: CounterTable::default(),
            per_cpu: vec![],
            flow_entries: 0,
            flow_capacity: 0,
            flow_log: Default::default(),
            flood_guarded: 0,
            vips: vec![VipRow {
                vip: "198.18.100.10:80/tcp".into(),
                mode: "nat",
                balance: "maglev",
                traffic: total,
                reals,
            }],
        }
    }

    #[test]
    fn rates_are_both_directions_per_second_per_real_and_vip() {
        let before = reading(
            10,
            &[("a", traffic(100, 10_000, 5)), ("b", traffic(0, 0, 0))],
        );
        let after = reading(
            12,
            &[("a", traffic(300, 30_000, 9)), ("b", traffic(20, 2_000, 2))],
        );
        let r = of(&before, &after);
        let vip = "198.18.100.10:80/tcp".to_string();
        let a = r[&(vip.clone(), Some("a".into()))];
        // 200 requests and 100 replies in 2 s.
        assert_eq!(a.packets_per_sec, 150.0);
        assert_eq!(a.bytes_per_sec, 15_000.0);
        assert_eq!(a.new_flows_per_sec, 2.0);
        let v = r[&(vip, None)];
        assert_eq!(v.packets_per_sec, 150.0 + 15.0);
        assert_eq!(v.new_flows_per_sec, 3.0);
    }

    #[test]
    fn a_real_new_since_has_no_rate_and_a_counter_that_went_back_counts_from_zero() {
        let before = reading(10, &[("a", traffic(500, 50_000, 9))]);
        let after = reading(11, &[("a", traffic(10, 1_000, 1)), ("c", traffic(7, 7, 7))]);
        let r = of(&before, &after);
        let vip = "198.18.100.10:80/tcp".to_string();
        assert_eq!(r[&(vip.clone(), Some("a".into()))].packets_per_sec, 15.0);
        assert!(!r.contains_key(&(vip.clone(), Some("c".into()))));
        // The VIP: its reals' rates (a real leaving is no spike).
        let gone = reading(12, &[("c", traffic(9, 9, 9))]);
        let r = of(&after, &gone);
        assert_eq!(r[&(vip.clone(), None)].packets_per_sec, 3.0);
        assert_eq!(r[&(vip, None)].new_flows_per_sec, 2.0);
        assert_eq!(
            Rates::between(&traffic(1, 1, 1), &traffic(2, 2, 2), 0.0),
            Rates::default()
        );
    }
}
