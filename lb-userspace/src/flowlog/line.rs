//! A flow log line, in the spirit of HAProxy's `tcplog`: when, who, to which VIP, how it
//! was balanced and to which real.
//!
//! `2026-12-03T07:40:01.123Z 198.18.0.100:40000 198.18.100.10:80/tcp dsr maglev slot=4711
//! 198.18.0.11:80 new cpu=1`

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use lb_common::{
    ip_from_bytes, FlowEvent, END_RST, HOW_PICKED_UP, HOW_REOPENED, NO_SLOT, PROTO_TCP, PROTO_UDP,
};

use super::open::Idle;

use crate::declare::spec::{Balance, Mode};

/// When an event stamped `at_ns` (CLOCK_MONOTONIC) happened, given that the monotonic clock
/// reads `mono_now` at wall-clock `wall_now`.
pub fn wall_time(at_ns: u64, mono_now: u64, wall_now: SystemTime) -> SystemTime {
    wall_now
        .checked_sub(Duration::from_nanos(mono_now.saturating_sub(at_ns)))
        .unwrap_or(wall_now)
}

/// The line for new flow `e`, which happened at `at` (the time is the caller's to write).
pub fn format(e: &FlowEvent) -> String {
    let proto = proto_name(e.proto);
    let decision = if e.slot == NO_SLOT {
        "least-loaded".to_string()
    } else {
        format!("slot={}", e.slot)
    };
    let how = if e.how & HOW_PICKED_UP != 0 {
        "picked-up"
    } else if e.how & HOW_REOPENED != 0 {
        "reopened"
    } else {
        "new"
    };
    format!(
        "{} {}/{proto} {} {} {decision} {} {how} cpu={}",
        endpoint(&e.client, e.client_port, e.family),
        endpoint(&e.vip, e.vip_port, e.family),
        Mode::name_of(e.mode),
        Balance::name_of(e.sched),
        endpoint(&e.real, e.real_port, e.family),
        e.cpu
    )
}

/// How a flow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The datapath saw its first FIN or RST: an end event (`how`: `END_FIN` or `END_RST`).
    Closed { how: u8, at_ns: u64 },
    /// It went idle, or its entry went, as the flow table says.
    Idle(Idle),
}

/// The line for a flow's end: `e` names the flow (the end event, or the new-flow event
/// when the flow went idle), `start` its new-flow event when it was followed.
/// `198.18.0.100:40000 198.18.100.10:80/tcp nat maglev 198.18.0.11:80 end fin after 1.204s`
pub fn format_end(e: &FlowEvent, start: Option<&FlowEvent>, end: End) -> String {
    let (mode, sched) = match start {
        Some(s) => (Mode::name_of(s.mode), Balance::name_of(s.sched)),
        None => ("-", "-"),
    };
    let seconds = |from: u64, to: u64| format!("{:.3}s", to.saturating_sub(from) as f64 / 1e9);
    let (how, duration) = match end {
        End::Closed { how, at_ns } => (
            if how == END_RST { "rst" } else { "fin" },
            start.map(|s| seconds(s.at_ns, at_ns)),
        ),
        End::Idle(Idle::Expired { last_seen_ns }) => {
            ("idle", start.map(|s| seconds(s.at_ns, last_seen_ns)))
        }
        End::Idle(Idle::Gone) => ("gone", None),
    };
    let duration = match (duration, end) {
        (Some(d), _) => format!("after {d}"),
        (None, End::Idle(Idle::Gone)) => "(its entry went: evicted, or its RST unlogged)".into(),
        (None, _) => "(duration unknown: its start was not logged)".into(),
    };
    format!(
        "{} {}/{} {mode} {sched} {} end {how} {duration}",
        endpoint(&e.client, e.client_port, e.family),
        endpoint(&e.vip, e.vip_port, e.family),
        proto_name(e.proto),
        endpoint(&e.real, e.real_port, e.family),
    )
}

fn proto_name(proto: u8) -> &'static str {
    match proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => "?",
    }
}

fn endpoint(addr: &[u8; 16], port: [u8; 2], family: u8) -> SocketAddr {
    SocketAddr::new(ip_from_bytes(addr, family), u16::from_be_bytes(port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{Family, EVENT_NEW, MODE_NAT, SCHED_LEASTCONN, SCHED_MAGLEV};

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut x = [0; 16];
        x[..4].copy_from_slice(&a);
        x
    }

    #[test]
    fn a_line_says_who_where_how_and_to_which_real() {
        let e = FlowEvent {
            at_ns: 5,
            client: v4([198, 18, 0, 100]),
            vip: v4([198, 18, 100, 10]),
            real: v4([198, 18, 0, 11]),
            client_port: 40000u16.to_be_bytes(),
            vip_port: 80u16.to_be_bytes(),
            real_port: 8080u16.to_be_bytes(),
            proto: PROTO_TCP,
            family: Family::V4 as u8,
            mode: MODE_NAT,
            sched: SCHED_MAGLEV,
            kind: EVENT_NEW,
            how: HOW_PICKED_UP,
            slot: 4711,
            real_id: 3,
            vip_id: 1,
            cpu: 1,
            _pad: [0; 4],
        };
        assert_eq!(
            format(&e),
            "198.18.0.100:40000 198.18.100.10:80/tcp nat maglev slot=4711 198.18.0.11:8080 picked-up cpu=1"
        );
        let least = FlowEvent {
            slot: NO_SLOT,
            sched: SCHED_LEASTCONN,
            how: 0,
            ..e
        };
        assert!(format(&least).contains("leastconn least-loaded 198.18.0.11:8080 new"));
    }

    #[test]
    fn an_end_line_says_how_and_after_how_long() {
        let start = FlowEvent {
            at_ns: 1_000_000_000,
            client: v4([198, 18, 0, 100]),
            vip: v4([198, 18, 100, 10]),
            real: v4([198, 18, 0, 11]),
            client_port: 40000u16.to_be_bytes(),
            vip_port: 80u16.to_be_bytes(),
            real_port: 80u16.to_be_bytes(),
            proto: PROTO_TCP,
            family: Family::V4 as u8,
            mode: MODE_NAT,
            sched: SCHED_MAGLEV,
            kind: EVENT_NEW,
            how: 0,
            slot: 7,
            real_id: 3,
            vip_id: 1,
            cpu: 0,
            _pad: [0; 4],
        };
        let fin = End::Closed {
            how: lb_common::END_FIN,
            at_ns: 2_204_000_000,
        };
        assert_eq!(
            format_end(&start, Some(&start), fin),
            "198.18.0.100:40000 198.18.100.10:80/tcp nat maglev 198.18.0.11:80 end fin after 1.204s"
        );
        assert!(format_end(&start, None, fin)
            .ends_with("end fin (duration unknown: its start was not logged)"));
        let idle = End::Idle(Idle::Expired {
            last_seen_ns: 31_000_000_000,
        });
        assert!(format_end(&start, Some(&start), idle).ends_with("end idle after 30.000s"));
        assert!(format_end(&start, Some(&start), End::Idle(Idle::Gone))
            .contains("end gone (its entry went"));
    }

    #[test]
    fn event_times_are_placed_on_the_wall_clock() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = wall_time(7_000_000_000, 9_000_000_000, wall);
        assert_eq!(at, SystemTime::UNIX_EPOCH + Duration::from_secs(998));
        assert_eq!(
            wall_time(10, 5, wall),
            wall,
            "an event from the future is now"
        );
    }
}
