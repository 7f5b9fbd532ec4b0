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
    ip_from_bytes, FlowEvent, HOW_PICKED_UP, HOW_REOPENED, NO_SLOT, PROTO_TCP, PROTO_UDP,
};

use crate::declare::spec::{Balance, Mode};

/// When an event stamped `at_ns` (CLOCK_MONOTONIC) happened, given that the monotonic clock
/// reads `mono_now` at wall-clock `wall_now`.
pub fn wall_time(at_ns: u64, mono_now: u64, wall_now: SystemTime) -> SystemTime {
    wall_now
        .checked_sub(Duration::from_nanos(mono_now.saturating_sub(at_ns)))
        .unwrap_or(wall_now)
}

/// The line for `e`, which happened at `at` (the time is the caller's to write).
pub fn format(e: &FlowEvent) -> String {
    let proto = match e.proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => "?",
    };
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
