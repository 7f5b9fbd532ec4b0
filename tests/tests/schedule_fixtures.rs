//! The schedulers and flow affinity on crafted frames through BPF_PROG_TEST_RUN: which real a
//! new flow gets, per algorithm, and that an established flow keeps its real while the reals
//! change. A dsr VIP makes the choice readable: the output's destination MAC is the real's.

use std::{collections::BTreeMap, net::IpAddr};

use lb_userspace::{
    datapath::{Datapath, Real},
    declare::{
        service::VipSettings,
        spec::{Balance, HashFields, Mode, VipSpec},
    },
};
use tests::{
    fixture::*,
    frames::{hop, Tcp},
};

const VIP_S: [u8; 4] = [198, 18, 100, 30];

fn real(i: u8, weight: u16) -> Real {
    Real {
        weight,
        ..Real::on_segment(
            IpAddr::from([198, 18, 0, 10 + i]),
            [2, 0, 0, 0, 0, 0x10 + i],
        )
    }
}

/// A datapath with one dsr VIP 198.18.100.30:80/tcp balanced by `settings` over `reals`.
fn vip_with(settings: VipSettings, reals: &[Real]) -> (Datapath, VipSpec) {
    let mut dp = Datapath::load().unwrap();
    dp.set_interface(IFINDEX_A, lb_iface()).unwrap();
    let v = vip("198.18.100.30:80/tcp");
    dp.add_vip(v, &settings).unwrap();
    dp.set_reals(&v, reals).unwrap();
    (dp, v)
}

fn balanced(balance: Balance) -> VipSettings {
    VipSettings {
        balance,
        ..VipSettings::new(Mode::Dsr)
    }
}

/// A segment from `client` port `sport` to the VIP.
fn segment(client: [u8; 4], sport: u16, flags: Tcp) -> Vec<u8> {
    hop(CLIENT_MAC, LB_MAC, client, VIP_S).tcp(sport, 80, flags, b"")
}

/// The real (by the last byte of its MAC) that a packet went to.
fn sent_to(dp: &Datapath, frame: &[u8]) -> u8 {
    let (action, out) = dp.run_frame(frame).unwrap();
    assert_eq!(action, XDP_TX, "forwarded");
    out[5] - 0x10
}

fn tally(picks: impl IntoIterator<Item = u8>) -> BTreeMap<u8, usize> {
    let mut t = BTreeMap::new();
    for p in picks {
        *t.entry(p).or_insert(0) += 1;
    }
    t
}

#[test]
fn roundrobin_splits_new_flows_exactly_by_weight_and_weights_change_at_runtime() {
    pin_to_cpu0();
    let (mut dp, v) = vip_with(
        balanced(Balance::Roundrobin),
        &[real(1, 1), real(2, 2), real(3, 3)],
    );
    let picks: Vec<u8> = (0..600)
        .map(|i| sent_to(&dp, &segment(CLIENT, 20000 + i, Tcp::Syn)))
        .collect();
    assert_eq!(
        tally(picks.iter().copied()),
        BTreeMap::from([(1, 100), (2, 200), (3, 300)])
    );
    // Each flow stays where it went.
    for (i, p) in picks.iter().enumerate().step_by(37) {
        assert_eq!(
            sent_to(&dp, &segment(CLIENT, 20000 + i as u16, Tcp::Ack)),
            *p
        );
    }
    dp.set_weight(&v, IpAddr::from([198, 18, 0, 11]), None, 3)
        .unwrap();
    let picks = (0..600).map(|i| sent_to(&dp, &segment(CLIENT, 30000 + i, Tcp::Syn)));
    assert_eq!(tally(picks), BTreeMap::from([(1, 225), (2, 150), (3, 225)]));
}

#[test]
fn static_rr_weights_are_fixed_at_load() {
    pin_to_cpu0();
    let (mut dp, v) = vip_with(balanced(Balance::StaticRr), &[real(1, 1), real(2, 2)]);
    let picks = (0..300).map(|i| sent_to(&dp, &segment(CLIENT, 20000 + i, Tcp::Syn)));
    assert_eq!(tally(picks), BTreeMap::from([(1, 100), (2, 200)]));
    let err = dp
        .set_weight(&v, IpAddr::from([198, 18, 0, 11]), None, 5)
        .unwrap_err();
    assert!(err.to_string().contains("fixed at load"), "{err}");
}

#[test]
fn source_sends_a_client_to_one_real_and_spreads_clients() {
    let (dp, _) = vip_with(
        balanced(Balance::Source),
        &[real(1, 1), real(2, 1), real(3, 1)],
    );
    let mut per_client = BTreeMap::new();
    for c in 0..60u8 {
        let client = [198, 18, 7, c + 1];
        let picks = tally((0..10).map(|p| sent_to(&dp, &segment(client, 40000 + p, Tcp::Syn))));
        assert_eq!(
            picks.len(),
            1,
            "client {c}: one real for all its ports: {picks:?}"
        );
        per_client.insert(c, *picks.keys().next().unwrap());
    }
    let spread = tally(per_client.values().copied());
    assert_eq!(spread.len(), 3, "60 clients over 3 reals: {spread:?}");
}

#[test]
fn hash_fields_choose_what_keeps_flows_together() {
    let reals = [real(1, 1), real(2, 1), real(3, 1)];
    let no_sport = VipSettings {
        hash: HashFields::NoSourcePort,
        ..balanced(Balance::Maglev)
    };
    let (dp, _) = vip_with(no_sport, &reals);
    let one_client = tally((0..50).map(|p| sent_to(&dp, &segment(CLIENT, 41000 + p, Tcp::Syn))));
    assert_eq!(one_client.len(), 1, "{one_client:?}");
    let clients =
        tally((0..60).map(|c| sent_to(&dp, &segment([198, 18, 8, c + 1], 41000, Tcp::Syn))));
    assert!(clients.len() > 1, "{clients:?}");

    let dport = VipSettings {
        hash: HashFields::DestinationPort,
        ..balanced(Balance::Maglev)
    };
    let (dp, _) = vip_with(dport, &reals);
    let everyone = tally((0..60).map(|c| {
        sent_to(
            &dp,
            &segment([198, 18, 8, c + 1], 42000 + c as u16, Tcp::Syn),
        )
    }));
    assert_eq!(everyone.len(), 1, "one port, one real: {everyone:?}");
}

#[test]
fn maglev_spreads_by_weight_in_a_table_of_the_vips_size() {
    let settings = VipSettings {
        maglev_size: Some(251),
        ..balanced(Balance::Maglev)
    };
    let (dp, _) = vip_with(settings, &[real(1, 1), real(2, 3)]);
    let picks = tally((0..4000).map(|p| sent_to(&dp, &segment(CLIENT, 10000 + p, Tcp::Syn))));
    let share = picks[&2] as f64 / 4000.0;
    assert!((0.70..0.80).contains(&share), "weight 3 of 4: {picks:?}");
}

/// Flow affinity: established flows keep their real while reals are added, removed,
/// reweighted or drained; a removed real's flows move; a drained real takes no new flows.
#[test]
fn established_flows_keep_their_real_while_the_reals_change() {
    let (mut dp, v) = vip_with(
        balanced(Balance::Maglev),
        &[real(1, 1), real(2, 1), real(3, 1)],
    );
    let flow = |p: u16| segment(CLIENT, 10000 + p, Tcp::Ack);
    let first: Vec<u8> = (0..300).map(|p| sent_to(&dp, &flow(p))).collect();
    assert_eq!(tally(first.iter().copied()).len(), 3);

    // A fourth real and a new weight: new flows reach the fourth, old ones stay put.
    dp.set_reals(&v, &[real(1, 1), real(2, 2), real(3, 1), real(4, 1)])
        .unwrap();
    for (p, r) in first.iter().enumerate() {
        assert_eq!(
            sent_to(&dp, &flow(p as u16)),
            *r,
            "flow {p} moved when a real was added"
        );
    }
    let new = tally((300..600).map(|p| sent_to(&dp, &flow(p))));
    assert!(
        new.contains_key(&4),
        "new flows reach the new real: {new:?}"
    );

    // Real 3 leaves: its flows move (and reset at their new real, as in every L4 LB); the
    // others stay. Real 1 drains: its flows stay, new ones avoid it.
    dp.set_reals(&v, &[real(1, 0), real(2, 2), real(4, 1)])
        .unwrap();
    for (p, r) in first.iter().enumerate() {
        let now = sent_to(&dp, &flow(p as u16));
        if *r == 3 {
            assert_ne!(now, 3, "flow {p} of the removed real moved");
        } else {
            assert_eq!(now, *r, "flow {p} stays on real {r}");
        }
    }
    let new = tally((600..900).map(|p| sent_to(&dp, &flow(p))));
    assert!(!new.contains_key(&1) && !new.contains_key(&3), "{new:?}");
}

#[test]
fn udp_flows_keep_their_real_too() {
    let mut dp = Datapath::load().unwrap();
    dp.set_interface(IFINDEX_A, lb_iface()).unwrap();
    let v = vip("198.18.100.30:53/udp");
    dp.add_vip(v, &balanced(Balance::Maglev)).unwrap();
    dp.set_reals(&v, &[real(1, 1), real(2, 1)]).unwrap();
    let datagram = |p: u16| hop(CLIENT_MAC, LB_MAC, CLIENT, VIP_S).udp(10000 + p, 53, b"q");
    let first: Vec<u8> = (0..200).map(|p| sent_to(&dp, &datagram(p))).collect();
    dp.set_reals(&v, &[real(1, 1), real(2, 1), real(3, 1)])
        .unwrap();
    for (p, r) in first.iter().enumerate() {
        assert_eq!(sent_to(&dp, &datagram(p as u16)), *r);
    }
}

#[test]
fn leastconn_sends_new_flows_to_the_reals_with_the_fewest() {
    let mut settings = balanced(Balance::Leastconn);
    settings.timeouts.tcp = 1;
    settings.timeouts.tcp_fin = 1;
    // Real 1 alone takes flows: 20 are held on it.
    let (mut dp, v) = vip_with(settings, &[real(1, 1), real(2, 0), real(3, 0)]);
    let r1 = IpAddr::from([198, 18, 0, 11]);
    let held = tally((0..20).map(|p| sent_to(&dp, &segment(CLIENT, 10000 + p, Tcp::Syn))));
    assert_eq!(held, BTreeMap::from([(1, 20)]));
    assert_eq!(dp.active_flows(&v, r1, None).unwrap(), 20);

    // All up: the next 20 go to the others, evenly, none to the busy one.
    dp.set_reals(&v, &[real(1, 1), real(2, 1), real(3, 1)])
        .unwrap();
    let next = tally((20..40).map(|p| sent_to(&dp, &segment(CLIENT, 10000 + p, Tcp::Syn))));
    assert_eq!(next, BTreeMap::from([(2, 10), (3, 10)]));

    // FINs end five of real 1's flows, RSTs five more: it counts 10.
    for p in 0..5 {
        sent_to(&dp, &segment(CLIENT, 10000 + p, Tcp::Fin));
        sent_to(&dp, &segment(CLIENT, 10000 + p, Tcp::Fin)); // a retransmission counts once
    }
    for p in 5..10 {
        sent_to(&dp, &segment(CLIENT, 10000 + p, Tcp::Rst));
    }
    assert_eq!(dp.active_flows(&v, r1, None).unwrap(), 10);

    // Idle past the timeout: the sweep ends the rest.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(dp.sweep().unwrap(), 30);
    for r in 1..=3u8 {
        assert_eq!(
            dp.active_flows(&v, IpAddr::from([198, 18, 0, 10 + r]), None)
                .unwrap(),
            0
        );
    }
}

#[test]
fn every_real_weight_zero_drops_new_flows() {
    let (dp, _) = vip_with(balanced(Balance::Maglev), &[real(1, 0), real(2, 0)]);
    assert_eq!(
        dp.run_frame(&segment(CLIENT, 1, Tcp::Syn)).unwrap().0,
        XDP_DROP
    );
}

/// A leastconn VIP whose flows expire after a second.
fn short_leastconn(reals: &[Real]) -> (Datapath, VipSpec) {
    let mut settings = balanced(Balance::Leastconn);
    settings.timeouts.tcp = 1;
    settings.timeouts.tcp_fin = 1;
    vip_with(settings, reals)
}

#[test]
fn leastconn_counts_a_tuple_reused_after_its_flow_expired_once() {
    let (mut dp, v) = short_leastconn(&[real(1, 1)]);
    let r1 = IpAddr::from([198, 18, 0, 11]);
    sent_to(&dp, &segment(CLIENT, 10000, Tcp::Syn));
    assert_eq!(dp.active_flows(&v, r1, None).unwrap(), 1);
    // Expired, but still in the table (nothing evicted it): the same tuple starts anew.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    sent_to(&dp, &segment(CLIENT, 10000, Tcp::Syn));
    assert_eq!(
        dp.active_flows(&v, r1, None).unwrap(),
        1,
        "the old flow's count ended, the new one's began"
    );
    assert_eq!(dp.sweep().unwrap(), 0, "the new flow is live");
    assert_eq!(dp.active_flows(&v, r1, None).unwrap(), 1);
}

#[test]
fn leastconn_counts_a_moved_flow_on_its_new_real() {
    let (mut dp, v) = short_leastconn(&[real(1, 1), real(2, 0)]);
    let (r1, r2) = (
        IpAddr::from([198, 18, 0, 11]),
        IpAddr::from([198, 18, 0, 12]),
    );
    assert_eq!(sent_to(&dp, &segment(CLIENT, 10000, Tcp::Syn)), 1);
    // Real 1 leaves: the flow's next packet goes to real 2, and counts there.
    dp.set_reals(&v, &[real(2, 1)]).unwrap();
    assert_eq!(sent_to(&dp, &segment(CLIENT, 10000, Tcp::Ack)), 2);
    assert_eq!(dp.active_flows(&v, r2, None).unwrap(), 1);
    assert!(
        dp.active_flows(&v, r1, None).is_err(),
        "real 1 is no longer the VIP's"
    );
}

#[test]
fn a_real_moving_to_another_vip_takes_no_flows_of_the_old_one_with_it() {
    let mut dp = Datapath::load().unwrap();
    dp.set_interface(IFINDEX_A, lb_iface()).unwrap();
    let (a, b) = (vip("198.18.100.30:80/tcp"), vip("198.18.100.31:80/tcp"));
    dp.add_vip(a, &balanced(Balance::Maglev)).unwrap();
    dp.add_vip(b, &balanced(Balance::Maglev)).unwrap();
    dp.set_reals(&a, &[real(1, 1), real(2, 1)]).unwrap();
    dp.set_reals(&b, &[real(3, 1)]).unwrap();
    let on_1: Vec<u16> = (0..200)
        .filter(|p| sent_to(&dp, &segment(CLIENT, 10000 + p, Tcp::Syn)) == 1)
        .collect();
    assert!(!on_1.is_empty());
    // Real 1 leaves VIP a and joins VIP b: a's flows on it move to real 2.
    dp.set_reals(&a, &[real(2, 1)]).unwrap();
    dp.set_reals(&b, &[real(3, 1), real(1, 1)]).unwrap();
    for p in on_1 {
        assert_eq!(
            sent_to(&dp, &segment(CLIENT, 10000 + p, Tcp::Ack)),
            2,
            "flow {p}"
        );
    }
}

#[test]
fn a_flow_follows_its_reals_new_mac() {
    let (mut dp, v) = vip_with(balanced(Balance::Maglev), &[real(1, 1)]);
    let flow = segment(CLIENT, 10000, Tcp::Syn);
    assert_eq!(sent_to(&dp, &flow), 1);
    let moved_nic = Real {
        mac: [2, 0, 0, 0, 0, 0x10 + 9],
        ..real(1, 1)
    };
    dp.set_reals(&v, &[moved_nic]).unwrap();
    assert_eq!(
        sent_to(&dp, &segment(CLIENT, 10000, Tcp::Ack)),
        9,
        "to the real's new MAC"
    );
}

#[test]
fn a_real_marked_down_takes_no_new_flows_and_its_flows_move() {
    let (mut dp, v) = vip_with(
        balanced(Balance::Maglev),
        &[real(1, 1), real(2, 1), real(3, 1)],
    );
    let first: Vec<u8> = (0..300)
        .map(|p| sent_to(&dp, &segment(CLIENT, 10000 + p, Tcp::Syn)))
        .collect();
    let down = Real {
        down: true,
        ..real(2, 1)
    };
    dp.set_reals(&v, &[real(1, 1), down, real(3, 1)]).unwrap();
    let new = tally((0..300).map(|p| sent_to(&dp, &segment(CLIENT, 20000 + p, Tcp::Syn))));
    assert!(
        !new.contains_key(&2),
        "no new flow to a real that is down: {new:?}"
    );
    for (p, r) in first.iter().enumerate() {
        let now = sent_to(&dp, &segment(CLIENT, 10000 + p as u16, Tcp::Ack));
        if *r == 2 {
            assert_ne!(now, 2, "flow {p} moved off the real that is down");
        } else {
            assert_eq!(now, *r);
        }
    }
}

/// A SYN retransmitted (the client heard nothing back yet) finds its flow's entry: the
/// established path sends it to the same real and counts nothing; the flow is counted once,
/// and its end ends the count once.
#[test]
fn leastconn_counts_a_retransmitted_syn_once() {
    let (dp, v) = short_leastconn(&[real(1, 1), real(2, 1)]);
    let first = sent_to(&dp, &segment(CLIENT, 10000, Tcp::Syn));
    for _ in 0..3 {
        assert_eq!(sent_to(&dp, &segment(CLIENT, 10000, Tcp::Syn)), first);
    }
    let on = IpAddr::from([198, 18, 0, 10 + first]);
    assert_eq!(dp.active_flows(&v, on, None).unwrap(), 1);
    sent_to(&dp, &segment(CLIENT, 10000, Tcp::Fin));
    sent_to(&dp, &segment(CLIENT, 10000, Tcp::Fin));
    assert_eq!(dp.active_flows(&v, on, None).unwrap(), 0);
}

#[test]
fn a_round_robin_sequence_outgrowing_its_ring_map_moves_to_a_larger_one() {
    pin_to_cpu0();
    // Weights 1 + 1: a sequence of 2 in a ring map of 2 slots.
    let (mut dp, v) = vip_with(balanced(Balance::Roundrobin), &[real(1, 1), real(2, 1)]);
    let before: Vec<u8> = (0..4)
        .map(|i| sent_to(&dp, &segment(CLIENT, 21000 + i, Tcp::Syn)))
        .collect();
    assert_eq!(
        tally(before.iter().copied()),
        BTreeMap::from([(1, 2), (2, 2)])
    );
    // Weights 1 + 99: a sequence of 100, past the map's 2 slots: a new ring map.
    dp.set_weight(&v, IpAddr::from([198, 18, 0, 12]), None, 99)
        .unwrap();
    let picks = (0..400).map(|i| sent_to(&dp, &segment(CLIENT, 22000 + i, Tcp::Syn)));
    assert_eq!(tally(picks), BTreeMap::from([(1, 4), (2, 396)]));
    // The flows made before kept their reals.
    for (i, p) in before.iter().enumerate() {
        assert_eq!(
            sent_to(&dp, &segment(CLIENT, 21000 + i as u16, Tcp::Ack)),
            *p
        );
    }
    // Back to 1 + 1, in place in the larger map: the slots past the sequence are not read.
    dp.set_weight(&v, IpAddr::from([198, 18, 0, 12]), None, 1)
        .unwrap();
    let picks = (0..400).map(|i| sent_to(&dp, &segment(CLIENT, 23000 + i, Tcp::Syn)));
    assert_eq!(tally(picks), BTreeMap::from([(1, 200), (2, 200)]));
}

#[test]
fn a_batch_serves_its_new_vips_when_it_ends_and_old_ones_until_then() {
    pin_to_cpu0();
    let (mut dp, v) = vip_with(balanced(Balance::Roundrobin), &[real(1, 1)]);
    let other = vip("198.18.100.31:80/tcp");
    let to_other =
        hop(CLIENT_MAC, LB_MAC, CLIENT, [198, 18, 100, 31]).tcp(24000, 80, Tcp::Syn, b"");
    dp.batch(|dp| {
        dp.add_vip(other, &balanced(Balance::Roundrobin))?;
        dp.set_reals(&other, &[real(3, 1)])?;
        // Not in VIPS until its ring is in RINGS: passed as any address not a VIP's.
        assert_eq!(
            dp.run_frame(&to_other)?.0,
            XDP_PASS,
            "a VIP of an unfinished batch"
        );
        // The served VIP's sequence outgrows its ring map (1 slot → 3): its old ring serves
        // until the batch ends.
        dp.set_reals(&v, &[real(1, 1), real(2, 2)])?;
        for i in 0..6 {
            assert_eq!(
                sent_to(dp, &segment(CLIENT, 25000 + i, Tcp::Syn)),
                1,
                "the old ring"
            );
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(
        sent_to(&dp, &to_other),
        3,
        "the new VIP once the batch ended"
    );
    let picks = (0..300).map(|i| sent_to(&dp, &segment(CLIENT, 26000 + i, Tcp::Syn)));
    assert_eq!(tally(picks), BTreeMap::from([(1, 100), (2, 200)]));
}

#[test]
fn a_maglev_table_is_sized_by_the_configured_reals_up_or_not() {
    pin_to_cpu0();
    let mut reals: Vec<Real> = (1..=3).map(|i| real(i, 1)).collect();
    let (mut dp, v) = vip_with(balanced(Balance::Maglev), &reals);
    // Three reals: 300 slots wanted, 521 (the first size past it).
    assert_eq!(dp.ring_len(&v), Some(521));
    let picks: Vec<u8> = (0..300)
        .map(|i| sent_to(&dp, &segment(CLIENT, 27000 + i, Tcp::Syn)))
        .collect();
    assert_eq!(tally(picks.iter().copied()).len(), 3, "{picks:?}");
    // A real going down leaves the size alone: a check flapping never resizes the table.
    reals[2].down = true;
    dp.set_reals(&v, &reals).unwrap();
    assert_eq!(dp.ring_len(&v), Some(521));
    let picks = (0..300).map(|i| sent_to(&dp, &segment(CLIENT, 28000 + i, Tcp::Syn)));
    assert!(
        !tally(picks).contains_key(&3),
        "a down real takes no new flow"
    );
    // Six configured reals: 600 wanted, 1031; a size set in the configuration wins.
    reals.extend((4..=6).map(|i| real(i, 1)));
    dp.set_reals(&v, &reals).unwrap();
    assert_eq!(dp.ring_len(&v), Some(1031));
    let set = VipSettings {
        maglev_size: Some(251),
        ..balanced(Balance::Maglev)
    };
    dp.change_vip(&v, &set, &reals).unwrap();
    assert_eq!(dp.ring_len(&v), Some(251));
    let picks = (0..600).map(|i| sent_to(&dp, &segment(CLIENT, 29000 + i, Tcp::Syn)));
    assert_eq!(
        tally(picks).len(),
        5,
        "five reals up share a table shrunk in place"
    );
}

#[test]
fn a_real_whose_id_is_past_16_383_forwards_as_any() {
    pin_to_cpu0();
    // One VIP's 16 400 reals take ids 1 to 16 400 (layout 4 held 16 383).
    let many: Vec<Real> = (0..16_400u16)
        .map(|i| Real {
            port: Some(1000 + i),
            ..Real::on_segment(IpAddr::from([198, 18, 1, 1]), [2, 0, 0, 1, 0, 1])
        })
        .collect();
    let (mut dp, _) = vip_with(balanced(Balance::Maglev), &many);
    let other = vip("198.18.100.31:80/tcp");
    dp.add_vip(other, &balanced(Balance::Maglev)).unwrap();
    dp.set_reals(&other, &[real(7, 1)]).unwrap();
    let to_other =
        hop(CLIENT_MAC, LB_MAC, CLIENT, [198, 18, 100, 31]).tcp(24000, 80, Tcp::Syn, b"");
    assert_eq!(sent_to(&dp, &to_other), 7, "the real of id 16 401");
}

#[test]
fn a_flow_moving_cpu_while_the_ring_changes_keeps_its_real() {
    // Flows made on CPU 0; the ring rewritten (weights and a real added, in place and into a
    // larger map); their next packets on CPU 1 (RSS moved them): the one flow table is
    // every CPU's, so each keeps its real.
    pin_to_cpu(0);
    let (mut dp, v) = vip_with(balanced(Balance::Roundrobin), &[real(1, 1), real(2, 1)]);
    let first: Vec<u8> = (0..20)
        .map(|i| sent_to(&dp, &segment(CLIENT, 31000 + i, Tcp::Syn)))
        .collect();
    assert_eq!(
        tally(first.iter().copied()),
        BTreeMap::from([(1, 10), (2, 10)])
    );
    dp.set_reals(&v, &[real(1, 1), real(2, 5), real(3, 10)])
        .unwrap();
    pin_to_cpu(1);
    for (i, p) in first.iter().enumerate() {
        assert_eq!(
            sent_to(&dp, &segment(CLIENT, 31000 + i as u16, Tcp::Ack)),
            *p,
            "flow {i} on the other CPU"
        );
    }
    // New flows on CPU 1 follow the new ring.
    let picks = (0..160).map(|i| sent_to(&dp, &segment(CLIENT, 32000 + i, Tcp::Syn)));
    assert_eq!(tally(picks), BTreeMap::from([(1, 10), (2, 50), (3, 100)]));
    pin_to_cpu0();
}
