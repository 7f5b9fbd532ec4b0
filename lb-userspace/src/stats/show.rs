//! `lbctl stats` as people read it, after HAProxy's stats page: each VIP with its reals under
//! it (state, weight, checks, rates, totals, active flows), the flow table and the spread
//! over CPUs; `--reasons` the counters of what was not forwarded; `--json` all of it.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use super::{
    rates::{RateKey, Rates},
    RealRow, RealTraffic, Stats, Traffic, VipRow,
};
use crate::admin;

/// What a running lbctl adds about a real: the operator's state, the checks.
pub type Daemon = BTreeMap<(String, String), admin::RealRow>;

/// The daemon's rows, by (VIP, ADDRESS:PORT) as the stats name them.
pub fn daemon_rows(rows: Vec<admin::RealRow>) -> Daemon {
    rows.into_iter()
        .map(|r| {
            let port = r.real.port.unwrap_or(r.vip.port);
            let real = std::net::SocketAddr::new(r.real.addr, port).to_string();
            ((r.vip.to_string(), real), r)
        })
        .collect()
}

/// One real's line, everything known of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RealView {
    pub real: String,
    /// ready, drain, maint (set by the operator) or down (its checks failed, or the
    /// datapath has it down for another reason, such as an unresolved MAC).
    pub state: String,
    pub weight: u16,
    /// up, down or unchecked; none without a running lbctl.
    pub check: Option<String>,
    pub last_check: Option<admin::CheckRow>,
    /// Seconds in its current check state.
    pub in_state_secs: Option<u64>,
    pub traffic: RealTraffic,
    pub rates: Option<Rates>,
    pub active_flows: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VipView {
    pub vip: String,
    pub mode: &'static str,
    pub balance: &'static str,
    pub traffic: RealTraffic,
    pub rates: Option<Rates>,
    pub active_flows: u64,
    pub reals: Vec<RealView>,
}

/// Everything `lbctl stats` shows, as `--json` prints it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct View {
    pub prog_id: u32,
    /// Whether a running lbctl answered (checks and operator states are its).
    pub daemon: bool,
    pub forwarded: Traffic,
    pub forwarded_replies: Traffic,
    /// Packets not forwarded, by reason (every reason, zero or not).
    pub not_forwarded: BTreeMap<&'static str, Traffic>,
    /// Packets forwarded (both ways) per CPU.
    pub per_cpu: Vec<u64>,
    pub flow_entries: u64,
    pub flow_capacity: u32,
    pub flow_log: super::FlowLogCounts,
    /// New flows the flood guards forwarded without an entry.
    pub flood_guarded: u64,
    pub vips: Vec<VipView>,
}

impl View {
    pub fn new(
        stats: &Stats,
        rates: Option<&BTreeMap<RateKey, Rates>>,
        daemon: Option<&Daemon>,
    ) -> Self {
        let rate = |vip: &str, real: Option<&str>| {
            rates.map(|r| {
                r.get(&(vip.to_string(), real.map(str::to_string)))
                    .copied()
                    .unwrap_or_default()
            })
        };
        let vips = stats
            .vips
            .iter()
            .map(|v| VipView {
                vip: v.vip.clone(),
                mode: v.mode,
                balance: v.balance,
                traffic: v.traffic,
                rates: rate(&v.vip, None),
                active_flows: v.reals.iter().map(|r| r.active_flows).sum(),
                reals: v
                    .reals
                    .iter()
                    .map(|r| real_view(v, r, rate(&v.vip, Some(&r.real)), daemon))
                    .collect(),
            })
            .collect();
        Self {
            prog_id: stats.prog_id,
            daemon: daemon.is_some(),
            forwarded: stats.counters.forwarded.into(),
            forwarded_replies: stats.counters.replies.into(),
            not_forwarded: stats
                .counters
                .reasons
                .iter()
                .map(|(r, c)| (r.label(), (*c).into()))
                .collect(),
            per_cpu: stats.per_cpu.clone(),
            flow_entries: stats.flow_entries,
            flow_capacity: stats.flow_capacity,
            flow_log: stats.flow_log,
            flood_guarded: stats.flood_guarded,
            vips,
        }
    }

    /// The VIPs and their reals, as a table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<34} {:<6} {:>6} {:<9} {:<26} {:>8} {:>9} {:>10} {:>7} {:>7} {:>11} {:>13}",
            "VIP / REAL",
            "STATE",
            "WEIGHT",
            "CHECK",
            "LAST CHECK",
            "IN STATE",
            "PKT/S",
            "BYTES/S",
            "NEW/S",
            "ACTIVE",
            "PACKETS",
            "BYTES"
        );
        for v in &self.vips {
            let t = v.traffic.total();
            let _ = writeln!(
                out,
                "{:<34} {:<6} {:>6} {:<9} {:<26} {:>8} {} {:>7} {:>11} {:>13}",
                format!("{} {} {}", v.vip, v.mode, v.balance),
                "",
                "",
                "",
                "",
                "",
                rate_cells(v.rates),
                v.active_flows,
                t.packets,
                t.bytes
            );
            for r in &v.reals {
                let t = r.traffic.total();
                let last = r.last_check.as_ref().map_or("-".to_string(), |c| {
                    let what = if c.ok { "ok" } else { c.result.as_str() };
                    format!("{} in {} ms", clip(what, 16), c.took_ms)
                });
                let _ = writeln!(
                    out,
                    "  {:<32} {:<6} {:>6} {:<9} {:<26} {:>8} {} {:>7} {:>11} {:>13}",
                    r.real,
                    r.state,
                    r.weight,
                    r.check.as_deref().unwrap_or("-"),
                    last,
                    r.in_state_secs.map_or("-".to_string(), short_duration),
                    rate_cells(r.rates),
                    r.active_flows,
                    t.packets,
                    t.bytes
                );
            }
        }
        if self.vips.is_empty() {
            out.push_str("(no VIPs)\n");
        }
        let _ = writeln!(
            out,
            "\nflow table: {} of {} entries ({} new flows forwarded without one by a flood guard); forwarded per CPU: {}",
            self.flow_entries,
            self.flow_capacity,
            self.flood_guarded,
            self.per_cpu
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        if !self.daemon {
            out.push_str("no lbctl answered on the admin socket: states are the datapath's, no checks shown\n");
        }
        out
    }

    /// Forwarded, and every reason a packet was not, with packets and bytes.
    pub fn reasons(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{:<26} {:>12} {:>14}", "COUNTER", "PACKETS", "BYTES");
        let mut row = |name: &str, c: &Traffic| {
            let _ = writeln!(out, "{name:<26} {:>12} {:>14}", c.packets, c.bytes);
        };
        row("forwarded", &self.forwarded);
        row("forwarded_replies", &self.forwarded_replies);
        for (label, c) in &self.not_forwarded {
            row(label, c);
        }
        out
    }
}

fn real_view(v: &VipRow, r: &RealRow, rates: Option<Rates>, daemon: Option<&Daemon>) -> RealView {
    let said = daemon.and_then(|d| d.get(&(v.vip.clone(), r.real.clone())));
    let state = match said {
        // Down by its checks: down, whatever the operator set.
        Some(s) if s.health == "down" => "down".to_string(),
        // Set out by the operator: maint (the datapath has it down).
        Some(s) if s.state == "maint" => s.state.clone(),
        // Down in the datapath for another reason (its MAC unresolved, say): down.
        Some(_) if r.state == "down" => "down".to_string(),
        Some(s) => s.state.clone(),
        None => r.state.to_string(),
    };
    RealView {
        real: r.real.clone(),
        state,
        weight: r.weight,
        check: said.map(|s| s.health.clone()),
        last_check: said.and_then(|s| s.last_check.clone()),
        in_state_secs: said.and_then(|s| s.since_secs),
        traffic: r.traffic,
        rates,
        active_flows: r.active_flows,
    }
}

fn rate_cells(rates: Option<Rates>) -> String {
    match rates {
        Some(r) => format!(
            "{:>9.0} {:>10.0} {:>7.1}",
            r.packets_per_sec, r.bytes_per_sec, r.new_flows_per_sec
        ),
        None => format!("{:>9} {:>10} {:>7}", "-", "-", "-"),
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

/// 42s, 3m12s, 5h3m, 2d4h.
fn short_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::CounterTable;

    fn stats() -> Stats {
        let traffic = RealTraffic {
            requests: Traffic {
                packets: 10,
                bytes: 1000,
            },
            ..Default::default()
        };
        Stats {
            prog_id: 7,
            at_ns: 0,
            counters: CounterTable::default(),
            per_cpu: vec![4, 6],
            flow_entries: 3,
            flow_capacity: 262_144,
            flow_log: Default::default(),
            flood_guarded: 0,
            vips: vec![VipRow {
                vip: "198.18.100.10:80/tcp".into(),
                mode: "dsr",
                balance: "maglev",
                traffic,
                reals: vec![RealRow {
                    real: "198.18.0.11:80".into(),
                    state: "ready",
                    weight: 1,
                    traffic,
                    active_flows: 3,
                }],
            }],
        }
    }

    #[test]
    fn the_daemon_says_the_state_and_the_checks_else_the_datapath_does() {
        let s = stats();
        let alone = View::new(&s, None, None);
        assert_eq!(alone.vips[0].reals[0].state, "ready");
        assert_eq!(alone.vips[0].reals[0].check, None);
        let table = alone.table();
        assert!(table.contains("198.18.0.11:80"), "{table}");
        assert!(table.contains("no lbctl answered"), "{table}");

        let row = admin::RealRow {
            vip: "198.18.100.10:80/tcp".parse().unwrap(),
            real: crate::declare::edit::RealRef {
                addr: "198.18.0.11".parse().unwrap(),
                port: None,
            },
            weight: 1,
            state: "ready".into(),
            health: "down".into(),
            mac: "02:00:00:00:00:0b".into(),
            serving: false,
            why: Some("connection refused".into()),
            since_secs: Some(125),
            last_check: Some(admin::CheckRow {
                ok: false,
                result: "connection refused".into(),
                took_ms: 2,
                ago_ms: 300,
            }),
        };
        let daemon = daemon_rows(vec![row]);
        let v = View::new(&s, None, Some(&daemon));
        let r = &v.vips[0].reals[0];
        assert_eq!(
            (r.state.as_str(), r.check.as_deref()),
            ("down", Some("down"))
        );
        assert_eq!(r.in_state_secs, Some(125));
        let table = v.table();
        assert!(
            table.contains("2m5s") && table.contains("connection ref"),
            "{table}"
        );
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["vips"][0]["reals"][0]["last_check"]["took_ms"], 2);
        assert_eq!(json["vips"][0]["active_flows"], 3);
        assert_eq!(json["per_cpu"][1], 6);
    }
}
