//! The decap program on crafted frames through BPF_PROG_TEST_RUN.

use lb_common::{IfaceConfig, Reason};
use lb_userspace::datapath::Datapath;
use tests::{fixture::*, require_root};

/// The decap program on a real (198.18.0.11): the LB's tunnel output becomes the client's
/// original packet again; everything else passes untouched.
#[test]
fn decap_table() {
    require_root();
    let lb = seeded();
    let mut real = Datapath::load().unwrap();
    real.set_interface(
        IFINDEX_A,
        IfaceConfig {
            mac: REAL_MAC,
            mtu: MTU,
            ipv4: REAL_IP,
            vmacs: Default::default(),
        },
    )
    .unwrap();

    let original = tcp4(VIP_TUNNEL, 80, b"GET / HTTP/1.0\r\n\r\n");
    let (action, tunnelled) = lb.run_frame(&original).unwrap();
    assert_eq!(action, XDP_TX);
    let mut restored = original.clone();
    restored[..6].copy_from_slice(&REAL_MAC);
    restored[6..12].copy_from_slice(&LB_MAC);

    let mut to_other = tunnelled.clone();
    to_other[14 + 19] = 12; // outer destination 198.18.0.12
    let mut arp = original.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let ipv6 = build(|v| {
        eth()
            .ipv6(CLIENT6, VIP6_TUNNEL, 64)
            .tcp(1, 80, 1, 1000)
            .write(v, b"")
            .unwrap()
    });
    // (name, frame, exact output when decapsulated, counter that moves)
    type DecapRow<'a> = (&'a str, Vec<u8>, Option<Vec<u8>>, &'a str);
    let rows: Vec<DecapRow> = vec![
        (
            "lb's tunnel output: the client's packet again",
            tunnelled.clone(),
            Some(restored),
            "forwarded",
        ),
        (
            "6in4: the inner ipv6 packet",
            ipip_out(
                &build(|v| {
                    eth()
                        .ipv6(CLIENT6, VIP6_TUNNEL, 64)
                        .tcp(1, 80, 1, 1000)
                        .write(v, b"")
                        .unwrap()
                }),
                41,
            ),
            None,
            "forwarded",
        ),
        (
            "tunnel to another address",
            to_other,
            None,
            Reason::TunnelNotForUs.label(),
        ),
        ("plain ipv6", ipv6, None, Reason::NotTunnelled.label()),
        (
            "plain tcp",
            original.clone(),
            None,
            Reason::NotTunnelled.label(),
        ),
        ("arp", arp, None, Reason::NotIp.label()),
    ];
    for (name, frame, want, counter) in rows {
        let before = real.counters().unwrap();
        let (action, out) = real.run_decap_frame(&frame).unwrap();
        assert_eq!(action, XDP_PASS, "{name}: action");
        match (counter, want) {
            ("forwarded", Some(want)) => assert_eq!(out, want, "{name}: output"),
            ("forwarded", None) => {
                assert_eq!(out.len(), frame.len() - 20, "{name}: outer header removed");
                assert_eq!(out[12..14], [0x86, 0xdd], "{name}: inner ethertype");
                assert_eq!(out[14..], frame[34..], "{name}: inner packet");
            }
            _ => assert_eq!(out, frame, "{name}: untouched"),
        }
        let moved = delta(&before, &real.counters().unwrap());
        assert_eq!(
            moved,
            vec![(counter.to_owned(), 1, frame.len() as u64)],
            "{name}: counters"
        );
    }
}

/// The decap program on an interface it has no entry for: it cannot know this host's
/// address, so even the LB's tunnel passes as it came, counted as such.
#[test]
fn decap_on_an_interface_without_an_entry_passes_everything() {
    require_root();
    let lb = seeded();
    let (action, tunnelled) = lb
        .run_frame(&tcp4(VIP_TUNNEL, 80, b"GET / HTTP/1.0\r\n\r\n"))
        .unwrap();
    assert_eq!(action, XDP_TX);
    let real = Datapath::load().unwrap();
    let before = real.counters().unwrap();
    let (action, out) = real.run_decap_frame(&tunnelled).unwrap();
    assert_eq!((action, &out), (XDP_PASS, &tunnelled));
    assert_eq!(
        delta(&before, &real.counters().unwrap()),
        vec![(
            Reason::IfaceNotConfigured.label().to_owned(),
            1,
            tunnelled.len() as u64
        )]
    );
}
