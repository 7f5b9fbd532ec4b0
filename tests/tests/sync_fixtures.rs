//! Flow sync on the datapath: stateful flows one LB made (nat, router, one-arm, TCP and
//! UDP) are read from its flow table as sync records, which name addresses only, and the
//! peer builds from them the very entries its own datapath would have made. Installed, they
//! make the peer translate the flows' next packets both ways byte for byte as the LB that
//! made them: the real answering first (nat) and the SNAT source (one-arm) included.

use lb_userspace::{
    datapath::monotonic_ns,
    sync::{flows, wire::Record, Refused},
};
use tests::{
    fixture::*,
    frames::{hop, Tcp},
};

fn client_to_lb(vip: [u8; 4]) -> tests::frames::Hop {
    hop(CLIENT_MAC, LB_MAC, CLIENT, vip)
}

#[test]
fn a_synced_flow_is_translated_by_the_peer_as_by_the_lb_that_made_it() {
    pin_to_cpu0();
    let active = seeded_stateful();
    let mut standby = seeded_stateful();
    // New flows on the active: one-arm TCP and UDP, nat and router TCP.
    let opened = [
        client_to_lb(VIP_ONE_ARM).tcp(40000, 80, Tcp::Syn, b""),
        client_to_lb(VIP_ONE_ARM).udp(40001, 53, b"query"),
        client_to_lb(VIP_NAT).tcp(40002, 80, Tcp::Syn, b""),
        client_to_lb(VIP_ROUTER).tcp(40003, 80, Tcp::Syn, b""),
    ];
    for f in &opened {
        let action = active.run_frame(f).unwrap().0;
        assert!(action == XDP_TX || action == XDP_REDIRECT, "{action}");
    }
    let made = active.flows().unwrap();
    let records = flows::records(&made, monotonic_ns());
    assert_eq!(
        records.len(),
        opened.len(),
        "one record per flow: {records:?}\n{made:#?}"
    );

    let now = monotonic_ns();
    for r in records.values() {
        let e = standby.synced_entries(r, IFINDEX_A, now).unwrap();
        // Both entries as the active has them, but for when they were last seen.
        for (key, value) in [(e.key, e.forward), (e.reply_key, e.reply)] {
            let (_, theirs) = made
                .iter()
                .find(|(k, _)| *k == key)
                .unwrap_or_else(|| panic!("the active has no entry {key:?}"));
            assert_eq!(
                lb_common::Flow {
                    last_seen_ns: 0,
                    ..value
                },
                lb_common::Flow {
                    last_seen_ns: 0,
                    ..*theirs
                },
                "{r:?}"
            );
        }
        standby.install_flow(&e).unwrap();
    }

    // The next packets, each way, leave the standby exactly as they leave the active.
    let next = [
        // one-arm: the real answers the pool port, the client goes on.
        hop(REAL_MAC, LB_MAC, REAL_IP, POOL_IP).tcp(8080, pool_port(40000), Tcp::Ack, b""),
        client_to_lb(VIP_ONE_ARM).tcp(40000, 80, Tcp::Ack, b"more"),
        hop(REAL_MAC, LB_MAC, REAL_IP, POOL_IP).udp(5353, pool_port(40001), b"answer"),
        // nat: the real speaks first.
        hop(REAL_B_MAC, LB_B_MAC, REAL_B_IP, CLIENT).tcp(8080, 40002, Tcp::Ack, b"hello"),
        client_to_lb(VIP_NAT).tcp(40002, 80, Tcp::Ack, b""),
        hop(REAL_B_MAC, LB_B_MAC, REAL_B_IP, CLIENT).tcp(80, 40003, Tcp::Ack, b""),
    ];
    for f in &next {
        let want = active.run_frame(f).unwrap();
        let got = standby.run_frame(f).unwrap();
        assert!(
            got.0 == XDP_TX || got.0 == XDP_REDIRECT,
            "the standby forwards it"
        );
        assert_eq!(got, want, "the standby translates as the active");
    }

    // The flow ends on the active: the standby removes both entries.
    let one = records
        .values()
        .find(|r| r.vip_port == 80 && r.proto == 6)
        .unwrap();
    let (key, reply_key) = flows::keys(one);
    let real_id = standby
        .synced_entries(one, IFINDEX_A, now)
        .unwrap()
        .forward
        .real_id;
    assert!(standby.remove_flow(&key, &reply_key, real_id).unwrap());
    let left = standby.flows().unwrap();
    assert!(!left.iter().any(|(k, _)| *k == key || *k == reply_key));
}

#[test]
fn records_of_what_this_lb_does_not_serve_are_refused_by_name() {
    let standby = seeded_stateful();
    let active = seeded_stateful();
    pin_to_cpu0();
    active
        .run_frame(&client_to_lb(VIP_NAT).tcp(40010, 80, Tcp::Syn, b""))
        .unwrap();
    let r: Record = *flows::records(&active.flows().unwrap(), monotonic_ns())
        .values()
        .next()
        .unwrap();
    let now = monotonic_ns();
    let refused = |r: Record| standby.synced_entries(&r, IFINDEX_A, now).unwrap_err();
    assert_eq!(
        refused(Record {
            vip: "198.18.100.99".parse().unwrap(),
            ..r
        }),
        Refused::UnknownVip
    );
    assert_eq!(refused(Record { vip_port: 81, ..r }), Refused::UnknownVip);
    assert_eq!(
        refused(Record {
            real: "198.18.1.99".parse().unwrap(),
            ..r
        }),
        Refused::UnknownReal
    );
    assert_eq!(
        refused(Record {
            vip: std::net::IpAddr::from(VIP_DSR_B),
            ..r
        }),
        Refused::NotStateful
    );
    assert_eq!(
        standby
            .synced_entries(&r, IFINDEX_UNATTACHED, now)
            .unwrap_err(),
        Refused::NoInterface
    );
}
