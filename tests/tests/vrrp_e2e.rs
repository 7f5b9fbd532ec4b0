//! Active/standby with keepalived (docs/beyond-one-machine.md): two LBs share a virtual
//! router (VRRP, `use_vmac`) that clients route the VIPs through; keepalived tracks
//! `lbctl status --check` and tells lbctl its state through the notify hook. When the
//! active LB's lbctl is sick (its datapath detached, or lbctl killed) or its host dies, the
//! standby takes MASTER within 3 s, established dsr and tunnel connections go on (both LBs
//! build the same Maglev tables, so the standby picks the same reals without any state) and
//! new connections succeed. A graceful stop (`lbctl stop`) hands 100 live sessions to the
//! peer without losing one.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use lb_lab::{
    drive_tcp,
    pair::{
        HaPair, PAIR_DSR_VIP, PAIR_LB_ADDRS, PAIR_NAT_VIP, PAIR_ONE_ARM_VIP, PAIR_TUNNEL_VIP,
        PUSH_PORT, SYNC_PORT, VIRTUAL_MAC,
    },
    push::Waiters,
    Sessions, SESSION_PORT, VIP_PORT,
};
use tests::{lbctl, require_root};

/// How long the standby may take to serve after the active fails.
const TAKEOVER: Duration = Duration::from_secs(3);
/// Sessions count a stall longer than this as lost (a takeover's gap is shorter).
const PATIENCE: Duration = Duration::from_secs(8);
const SESSIONS_PER_VIP: usize = 20;

fn at(vip: std::net::Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(vip), port)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

fn states(pair: &HaPair, lbctl: &Path) -> [Option<String>; 2] {
    [pair.lbs[0].vrrp_state(lbctl), pair.lbs[1].vrrp_state(lbctl)]
}

/// `lbctl status --check` against LB `i`: exit code and output.
fn check(pair: &HaPair, lbctl: &Path, i: usize) -> (bool, String) {
    let out = std::process::Command::new(lbctl)
        .args(["status", "--check", "--socket"])
        .arg(pair.lbs[i].socket())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn lbctl_cmd(pair: &HaPair, lbctl: &Path, i: usize, args: &[&str]) -> String {
    let out = std::process::Command::new(lbctl)
        .args(args)
        .arg("--socket")
        .arg(pair.lbs[i].socket())
        .output()
        .unwrap();
    assert!(out.status.success(), "lbctl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// New connections to both VIPs succeed.
fn new_connections_succeed(pair: &HaPair, when: &str) {
    for vip in [PAIR_DSR_VIP, PAIR_TUNNEL_VIP] {
        let replies = drive_tcp(&pair.client, at(vip, VIP_PORT), 10).unwrap();
        let failed: Vec<_> = replies.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(
            failed.is_empty(),
            "{when}: new connections to {vip} failed: {failed:?}"
        );
    }
}

fn all_talk(sessions: &[&Sessions], pair: &HaPair, when: &str) {
    for s in sessions {
        s.keep_talking_within(3, PATIENCE * 2).unwrap();
        let broken: Vec<_> = s
            .states()
            .into_iter()
            .filter(|c| c.failure.is_some())
            .collect();
        assert!(
            broken.is_empty(),
            "{when}: {} sessions broke: {broken:?}\nlb1 keepalived:\n{}\nlb2 keepalived:\n{}",
            broken.len(),
            pair.lbs[0].keepalived_log(),
            pair.lbs[1].keepalived_log()
        );
    }
}

/// Makes LB `active` fail by `how`, and waits for the other to serve: its notify says
/// MASTER and a new connection gets through. Returns the time that took.
fn fail_over(
    pair: &mut HaPair,
    lbctl: &Path,
    active: usize,
    how: impl FnOnce(&mut HaPair),
) -> Duration {
    let standby = 1 - active;
    let start = Instant::now();
    how(pair);
    wait_for("the standby's MASTER", TAKEOVER * 2, || {
        pair.lbs[standby].vrrp_state(lbctl).as_deref() == Some("MASTER")
    });
    // Through the standby's datapath: a connection succeeds and it counts the packets
    // (the failed LB's program may still forward what reaches it).
    let dsr = at(PAIR_DSR_VIP, VIP_PORT);
    wait_for("a new connection through the standby", TAKEOVER * 2, || {
        let before = forwarded(pair, lbctl, standby);
        drive_tcp(&pair.client, dsr, 1).unwrap()[0].is_ok()
            && forwarded(pair, lbctl, standby) > before
    });
    start.elapsed()
}

/// Packets LB `i` forwarded, as `lbctl status` says.
fn forwarded(pair: &HaPair, lbctl: &Path, i: usize) -> u64 {
    let status = lbctl_cmd(pair, lbctl, i, &["status"]);
    status
        .lines()
        .find_map(|l| l.strip_prefix("forwarded"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no forwarded count in {status}"))
}

#[test]
fn keepalived_moves_the_virtual_router_when_lbctl_is_sick_or_its_host_dies() {
    require_root();
    let lbctl = lbctl();
    let mut pair = HaPair::build().unwrap();
    pair.start_decap(&lbctl).unwrap();
    for i in 0..2 {
        let config = pair.lbctl_config(i).unwrap();
        pair.lbs[i].start_lbctl(&lbctl, &config).unwrap();
    }

    // The check: serving; a VIP below its quorum is not; nor is a detached datapath.
    let (ok, said) = check(&pair, &lbctl, 1);
    assert!(ok, "{said}");
    let dsr80 = format!("{PAIR_DSR_VIP}:{VIP_PORT}/tcp");
    for r in lb_lab::REAL_ADDRS {
        lbctl_cmd(
            &pair,
            &lbctl,
            1,
            &["real", "maint", &r.to_string(), "--vip", &dsr80],
        );
    }
    let (ok, said) = check(&pair, &lbctl, 1);
    assert!(!ok, "no real up must fail the check: {said}");
    assert!(
        said.contains(&format!(
            "VIP {dsr80}: 0 of 3 reals take new flows, quorum 1"
        )),
        "{said}"
    );
    for r in lb_lab::REAL_ADDRS {
        lbctl_cmd(
            &pair,
            &lbctl,
            1,
            &["real", "ready", &r.to_string(), "--vip", &dsr80],
        );
    }
    assert!(check(&pair, &lbctl, 1).0);

    // keepalived on both, lb1 MASTER.
    keepalived_lb1_first(&mut pair, &lbctl);
    // lbctl found keepalived's virtual MAC on both LBs (a macvlan on eth0).
    let vmac = lb_lab::hops::fmt_mac(&VIRTUAL_MAC);
    for lb in &pair.lbs {
        wait_for(
            "lbctl taking the virtual MAC",
            Duration::from_secs(10),
            || lb.lbctl_log().contains(&vmac),
        );
    }
    new_connections_succeed(&pair, "lb1 active");
    let stats = lbctl_cmd(&pair, &lbctl, 0, &["status"]);
    assert!(stats.contains("instance lbctl is MASTER"), "{stats}");

    let open = |vip| {
        Sessions::open_patient(
            &pair.client,
            at(vip, SESSION_PORT),
            SESSIONS_PER_VIP,
            PATIENCE,
        )
        .unwrap()
    };
    let (dsr, tunnel) = (open(PAIR_DSR_VIP), open(PAIR_TUNNEL_VIP));
    all_talk(&[&dsr, &tunnel], &pair, "lb1 active");

    // (a) lb1's datapath detached behind lbctl's back: its check fails, lb2 takes over.
    let took = fail_over(&mut pair, &lbctl, 0, |pair| {
        pair.lbs[0]
            .ns
            .ip(&["link", "set", "dev", "eth0", "xdp", "off"])
            .unwrap();
    });
    println!("datapath detached on lb1: lb2 served after {took:?}");
    assert!(took <= TAKEOVER, "took {took:?}");
    let (ok, said) = check(&pair, &lbctl, 0);
    assert!(
        !ok && said.contains("eth0: no XDP program is attached"),
        "{said}"
    );
    all_talk(&[&dsr, &tunnel], &pair, "after lb1's datapath was detached");
    new_connections_succeed(&pair, "lb2 active");

    // lb1 is made whole again (a new lbctl): it comes back as the standby (nopreempt).
    pair.lbs[0].stop_lbctl().unwrap();
    let config = pair.lbctl_config(0).unwrap();
    pair.lbs[0].start_lbctl(&lbctl, &config).unwrap();
    wait_for("lb1 BACKUP again", Duration::from_secs(15), || {
        states(&pair, &lbctl) == [Some("BACKUP".into()), Some("MASTER".into())]
    });

    // (a) lb2's lbctl killed: its program forwards on, but keepalived hears nothing from
    // lbctl and gives MASTER up.
    let took = fail_over(&mut pair, &lbctl, 1, |pair| {
        pair.lbs[1].kill_lbctl().unwrap();
    });
    println!("lbctl killed on lb2: lb1 served after {took:?}");
    assert!(took <= TAKEOVER, "took {took:?}");
    all_talk(&[&dsr, &tunnel], &pair, "after lb2's lbctl was killed");
    new_connections_succeed(&pair, "lb1 active again");

    // lb2's lbctl restarted: it takes its pinned state and program over, standby again.
    let config = pair.lbctl_config(1).unwrap();
    pair.lbs[1].start_lbctl(&lbctl, &config).unwrap();
    wait_for("lb2 BACKUP again", Duration::from_secs(15), || {
        pair.lbs[1].vrrp_state(&lbctl).as_deref() == Some("BACKUP")
    });

    // (b) lb1's host dies (its wire cut: no goodbye advert): lb2 takes over on the missed
    // adverts alone.
    let took = fail_over(&mut pair, &lbctl, 0, |pair| pair.cut_wire(0).unwrap());
    println!("lb1's host gone: lb2 served after {took:?}");
    assert!(took <= TAKEOVER, "took {took:?}");
    all_talk(&[&dsr, &tunnel], &pair, "after lb1's host died");
    new_connections_succeed(&pair, "lb2 active, lb1 gone");
}

/// keepalived on lb1, MASTER once alone, then on lb2, which stands by (nopreempt: whoever
/// is MASTER stays so; started together, the first to pass its checks would win).
fn keepalived_lb1_first(pair: &mut HaPair, lbctl: &Path) {
    pair.lbs[0].start_keepalived(lbctl, 150).unwrap();
    wait_for("lb1 MASTER", Duration::from_secs(15), || {
        pair.lbs[0].vrrp_state(lbctl).as_deref() == Some("MASTER")
    });
    pair.lbs[1].start_keepalived(lbctl, 100).unwrap();
    wait_for("lb2 BACKUP", Duration::from_secs(15), || {
        states(pair, lbctl) == [Some("MASTER".into()), Some("BACKUP".into())]
    });
}

/// Both LBs up under keepalived, lb1 MASTER (lb2 BACKUP), each knowing its state; with
/// `sync`, syncing their flows.
fn pair_with_lb1_active(lbctl: &Path, sync: bool) -> HaPair {
    let mut pair = HaPair::build().unwrap();
    pair.start_decap(lbctl).unwrap();
    for i in 0..2 {
        let config = pair.lbctl_config(i).unwrap();
        let extra = if sync {
            pair.sync_args(i).unwrap()
        } else {
            Vec::new()
        };
        pair.lbs[i]
            .start_lbctl_with(lbctl, &config, &extra)
            .unwrap();
    }
    keepalived_lb1_first(&mut pair, lbctl);
    pair
}

#[test]
fn a_graceful_stop_hands_live_sessions_to_the_peer() {
    require_root();
    let lbctl = lbctl();
    let mut pair = pair_with_lb1_active(&lbctl, false);
    let open =
        |vip| Sessions::open_patient(&pair.client, at(vip, SESSION_PORT), 50, PATIENCE).unwrap();
    let (dsr, tunnel) = (open(PAIR_DSR_VIP), open(PAIR_TUNNEL_VIP));
    all_talk(&[&dsr, &tunnel], &pair, "lb1 active");
    let before = forwarded(&pair, &lbctl, 0);

    // `lbctl stop` returns once lbctl has exited.
    let asked = Instant::now();
    let said = lbctl_cmd(&pair, &lbctl, 0, &["stop", "--grace", "30s"]);
    let took = asked.elapsed();
    assert!(said.contains("stopping: no longer serving"), "{said}");
    assert!(said.contains("stopped after"), "{said}");
    let (status, log) = pair.lbs[0].wait_lbctl().unwrap();
    assert!(status.success(), "{status}: {log}");
    println!("graceful stop of lb1 with 100 sessions took {took:?}");
    // It ended because the traffic moved, not on its grace; it forwarded while stopping.
    assert!(
        log.contains("graceful stop (lbctl stop): nothing forwarded for 1s"),
        "{log}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(!pair.lbs[0]
        .ns
        .ip(&["link", "show", "eth0"])
        .unwrap()
        .contains(" xdp"));
    assert!(before > 0);
    assert_eq!(pair.lbs[1].vrrp_state(&lbctl).as_deref(), Some("MASTER"));
    all_talk(&[&dsr, &tunnel], &pair, "after lb1's graceful stop");
    new_connections_succeed(&pair, "lb2 active after lb1 stopped");
}

/// lbctl status's `sync` line of LB `i`.
fn sync_line(pair: &HaPair, lbctl: &Path, i: usize) -> String {
    lbctl_cmd(pair, lbctl, i, &["status"])
        .lines()
        .find(|l| l.starts_with("sync"))
        .unwrap_or_default()
        .to_owned()
}

/// The peer's flows LB `i` holds, as its status says.
fn holding(pair: &HaPair, lbctl: &Path, i: usize) -> u64 {
    let line = sync_line(pair, lbctl, i);
    line.split("holding ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no holding count in {line:?}"))
}

/// Sends `bytes` to lb2's sync port from `ns`, from `from` (an address of `ns`).
fn send_to_lb2(ns: &lb_lab::Netns, from: std::net::Ipv4Addr, bytes: Vec<u8>) {
    ns.run(move || {
        let s = std::net::UdpSocket::bind((from, 0)).unwrap();
        s.send_to(&bytes, (PAIR_LB_ADDRS[1], SYNC_PORT)).unwrap();
    })
    .unwrap();
}

#[test]
fn with_flow_sync_a_failover_keeps_every_one_arm_and_nat_session() {
    use lb_userspace::sync::wire::{self, Header, Record};
    require_root();
    let lbctl = lbctl();
    let mut pair = pair_with_lb1_active(&lbctl, true);
    wait_for("both LBs synced", Duration::from_secs(15), || {
        (0..2).all(|i| sync_line(&pair, &lbctl, i).contains(": synced"))
    });
    let sessions = Sessions::open_patient(
        &pair.client,
        at(PAIR_ONE_ARM_VIP, SESSION_PORT),
        200,
        PATIENCE,
    )
    .unwrap();
    all_talk(&[&sessions], &pair, "lb1 active");
    // 200 nat connections whose real will speak first after the failover.
    let waiting = Waiters::open(&pair.client2, at(PAIR_NAT_VIP, PUSH_PORT), 200, PATIENCE).unwrap();
    wait_for("lb2 holds lb1's 400 flows", Duration::from_secs(10), || {
        holding(&pair, &lbctl, 1) == 400
    });

    // What lb2 takes from no one but its peer, with the key, once: a foreign sender,
    // garbage, another key, a stale message, a replay. None is installed; each is counted.
    let key = b"lab-pair-key-0123456789abcdef".to_vec();
    let header = |seq, sent_ms| Header {
        kind: wire::KIND_DELTA,
        boot: 42,
        seq,
        sent_ms,
        round: 0,
        part: 0,
        parts: 1,
    };
    let flow = Record {
        op: wire::OP_FLOW,
        proto: 6,
        state: wire::STATE_ANSWERED,
        client: "198.18.0.100".parse().unwrap(),
        client_port: 1,
        vip: "198.18.100.99".parse().unwrap(),
        vip_port: 9000,
        real: "198.18.0.11".parse().unwrap(),
        real_port: 9000,
        src: "198.18.0.201".parse().unwrap(),
        src_port: 1,
        client_mac: [2, 0, 0, 0, 0, 1],
    };
    let now = wire::now_ms();
    let good = wire::encode(&key, &header(1, now), &[flow]);
    let lb1 = PAIR_LB_ADDRS[0];
    send_to_lb2(&pair.client, lb_lab::CLIENT_ADDR, good.clone());
    send_to_lb2(
        &pair.lbs[0].ns,
        lb1,
        b"not a sync message at all, but long enough".to_vec(),
    );
    send_to_lb2(
        &pair.lbs[0].ns,
        lb1,
        wire::encode(b"another key, 16+ bytes", &header(2, now), &[flow]),
    );
    send_to_lb2(
        &pair.lbs[0].ns,
        lb1,
        wire::encode(&key, &header(3, now - 60_000), &[flow]),
    );
    send_to_lb2(&pair.lbs[0].ns, lb1, good.clone());
    send_to_lb2(&pair.lbs[0].ns, lb1, good);
    wait_for("each counted", Duration::from_secs(5), || {
        let l = sync_line(&pair, &lbctl, 1);
        [
            "foreign 1",
            "garbage 1",
            "bad_tag 1",
            "stale 1",
            "replayed 1",
            "unknown_vip 1",
        ]
        .iter()
        .all(|c| l.contains(c))
    });

    // lb1's host dies: lb2 takes over with lb1's flows, SNAT ports included.
    let took = fail_over(&mut pair, &lbctl, 0, |pair| pair.cut_wire(0).unwrap());
    println!("one-arm with flow sync, lb1's host gone: lb2 served after {took:?}");
    all_talk(&[&sessions], &pair, "after lb1's host died, flows synced");
    // The nat reals speak first: their packets reach lb2 first, which has the flows.
    let pushed: usize = pair.push.iter().map(|p| p.push_all()).sum();
    assert_eq!(pushed, 200);
    let outcomes = waiting.answer_pushes(PATIENCE * 2);
    let lost: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        lost.is_empty(),
        "{} of 200 nat sessions lost: {lost:?}",
        lost.len()
    );
    println!("lb2: {}", sync_line(&pair, &lbctl, 1));
}
