//! `/metrics`: the stats in Prometheus' text format (OpenMetrics), through prometheus-client.
//! Counters are read from the datapath's maps at each scrape, so a fresh registry is filled
//! per scrape; names follow Prometheus' conventions: `lbctl_` prefix, base units in the
//! name, `_total` on counters.

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::stats::{show::View, Traffic};

type Labels = Vec<(&'static str, String)>;

/// The text a scrape gets: everything `view` holds, and the time changes took to apply.
pub fn render(
    view: &View,
    apply: Option<&Histogram>,
    ha: &super::Ha,
) -> Result<String, std::fmt::Error> {
    let mut r = Registry::with_prefix("lbctl");

    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    let new_flows = Family::<Labels, Counter>::default();
    let picked_up = Family::<Labels, Counter>::default();
    let active = Family::<Labels, Gauge>::default();
    let up = Family::<Labels, Gauge>::default();
    let weight = Family::<Labels, Gauge>::default();
    let check_seconds = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for v in &view.vips {
        for real in &v.reals {
            let who = || vec![("vip", v.vip.clone()), ("real", real.real.clone())];
            for (direction, t) in [
                ("request", real.traffic.requests),
                ("reply", real.traffic.replies),
            ] {
                let mut l = who();
                l.push(("direction", direction.to_string()));
                packets.get_or_create(&l).inc_by(t.packets);
                bytes.get_or_create(&l).inc_by(t.bytes);
            }
            new_flows
                .get_or_create(&who())
                .inc_by(real.traffic.new_flows);
            picked_up
                .get_or_create(&who())
                .inc_by(real.traffic.picked_up);
            active.get_or_create(&who()).set(real.active_flows as i64);
            up.get_or_create(&who())
                .set(i64::from(real.state == "ready" || real.state == "drain"));
            weight.get_or_create(&who()).set(i64::from(real.weight));
            if let Some(c) = &real.last_check {
                check_seconds
                    .get_or_create(&who())
                    .set(c.took_ms as f64 / 1000.0);
            }
        }
    }
    r.register(
        "real_packets",
        "Packets forwarded for each real of each VIP, by direction (request: client to real; reply: real to client through the LB)",
        packets,
    );
    r.register_with_unit(
        "real",
        "Bytes forwarded for each real of each VIP, by direction",
        Unit::Bytes,
        bytes,
    );
    r.register(
        "real_new_flows",
        "Flows the datapath scheduled to each real",
        new_flows,
    );
    r.register(
        "real_picked_up_flows",
        "New TCP flows whose first packet seen was not a SYN (their entry was evicted or expired, or their real left)",
        picked_up,
    );
    r.register(
        "real_active_flows",
        "Flows open to each real (leastconn's count, else the live entries of the flow table)",
        active,
    );
    r.register(
        "real_up",
        "1 when the real takes or keeps flows (ready or draining), 0 when down or in maintenance",
        up,
    );
    r.register("real_weight", "Each real's weight", weight);
    r.register_with_unit(
        "real_last_check",
        "How long each checked real's last check took",
        Unit::Seconds,
        check_seconds,
    );

    let forwarded = Family::<Labels, Counter>::default();
    let forwarded_bytes = Family::<Labels, Counter>::default();
    for (direction, t) in [
        ("request", view.forwarded),
        ("reply", view.forwarded_replies),
    ] {
        let l = vec![("direction", direction.to_string())];
        forwarded.get_or_create(&l).inc_by(t.packets);
        forwarded_bytes.get_or_create(&l).inc_by(t.bytes);
    }
    r.register(
        "packets_forwarded",
        "Packets forwarded, by direction",
        forwarded,
    );
    r.register_with_unit(
        "forwarded",
        "Bytes forwarded, by direction",
        Unit::Bytes,
        forwarded_bytes,
    );

    let dropped = Family::<Labels, Counter>::default();
    let dropped_bytes = Family::<Labels, Counter>::default();
    for (reason, t) in &view.not_forwarded {
        let l = vec![("reason", reason.to_string())];
        let Traffic { packets, bytes } = *t;
        dropped.get_or_create(&l).inc_by(packets);
        dropped_bytes.get_or_create(&l).inc_by(bytes);
    }
    r.register(
        "packets_not_forwarded",
        "Packets the datapath did not forward, by reason (pass_: to the kernel; drop_: dropped; tx_: answered with ICMP)",
        dropped,
    );
    r.register_with_unit(
        "not_forwarded",
        "Bytes of the packets not forwarded, by reason",
        Unit::Bytes,
        dropped_bytes,
    );

    let per_cpu = Family::<Labels, Counter>::default();
    for (cpu, n) in view.per_cpu.iter().enumerate() {
        per_cpu
            .get_or_create(&vec![("cpu", cpu.to_string())])
            .inc_by(*n);
    }
    r.register(
        "cpu_packets_forwarded",
        "Packets forwarded (both directions) by each CPU: how the NIC's queues spread the load",
        per_cpu,
    );

    let entries = Gauge::<i64>::default();
    entries.set(view.flow_entries as i64);
    r.register(
        "flow_table_entries",
        "Entries in the flow table (a stateful flow has two)",
        entries,
    );
    let capacity = Gauge::<i64>::default();
    capacity.set(i64::from(view.flow_capacity));
    r.register(
        "flow_table_capacity",
        "Entries the flow table holds before the oldest are evicted",
        capacity,
    );
    let guarded = Counter::<u64>::default();
    guarded.inc_by(view.flood_guarded);
    r.register(
        "flood_guarded",
        "New flows a flood guard forwarded by the ring without a flow entry (dsr and tunnel VIPs with flood_guard, above its rate of new flows a second on a CPU)",
        guarded,
    );
    let flow_log = Family::<Labels, Counter>::default();
    for (outcome, n) in [
        ("sent", view.flow_log.sent),
        ("over_rate", view.flow_log.over_rate),
        ("ring_full", view.flow_log.ring_full),
    ] {
        flow_log
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc_by(n);
    }
    r.register(
        "flow_log_events",
        "Flow log events: sent, or dropped over the per-CPU rate or into a full ring (the reader lagging); forwarding never waits for them",
        flow_log,
    );
    if let Some(h) = apply {
        r.register_with_unit(
            "config_apply",
            "Time from a change being asked (reload, runtime edit, health change) to the datapath serving it",
            Unit::Seconds,
            h.clone(),
        );
    }
    let vrrp = Family::<Labels, Gauge>::default();
    for (name, state) in &ha.vrrp {
        for s in ["MASTER", "BACKUP", "FAULT", "STOP"] {
            let l = vec![("instance", name.clone()), ("state", s.to_owned())];
            vrrp.get_or_create(&l).set(i64::from(state == s));
        }
    }
    r.register(
        "vrrp_state",
        "1 for the state keepalived last reported of each VRRP instance (its notify hook, `lbctl notify`), 0 for the others",
        vrrp,
    );
    if let Some(addrs) = &ha.bgp {
        let announced = Family::<Labels, Gauge>::default();
        for (addr, on) in addrs {
            announced
                .get_or_create(&vec![("address", addr.clone())])
                .set(i64::from(*on));
        }
        r.register(
            "bgp_announced",
            "1 while this LB announces the VIP address over BGP (through BIRD), 0 while it is withdrawn",
            announced,
        );
    }
    if let Some(s) = &ha.sync {
        let records = Family::<Labels, Counter>::default();
        for (direction, n) in &s.records {
            records
                .get_or_create(&vec![("direction", direction.to_string())])
                .inc_by(*n);
        }
        r.register(
            "sync_records",
            "Flow sync records: sent to the peer, received from it, installed in the flow table, removed (the peer's flow ended)",
            records,
        );
        let dropped = Family::<Labels, Counter>::default();
        for (reason, n) in &s.dropped {
            dropped
                .get_or_create(&vec![("reason", reason.to_string())])
                .inc_by(*n);
        }
        r.register(
            "sync_dropped",
            "Flow sync messages dropped (foreign, garbage, bad_tag, stale, replayed) and records refused (unknown_vip, not_stateful, unknown_real, no_interface), by reason",
            dropped,
        );
        let lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        lag.set(s.lag_ms as f64 / 1000.0);
        r.register_with_unit(
            "sync_lag",
            "From the peer sending its last flow sync message to its arrival here",
            Unit::Seconds,
            lag,
        );
        let synced = Gauge::<i64>::default();
        synced.set(i64::from(s.synced));
        r.register(
            "sync_synced",
            "1 once a whole round of the peer's flows arrived",
            synced,
        );
    }
    let stopping = Gauge::<i64>::default();
    stopping.set(i64::from(ha.stopping));
    r.register(
        "stopping",
        "1 during a graceful stop (lbctl stop, SIGTERM): the LB no longer serves and hands its traffic over",
        stopping,
    );
    let mut text = String::new();
    encode(&mut text, &r)?;
    Ok(text)
}
