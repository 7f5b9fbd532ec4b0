//! The bench's forwarding path carries what it is sent: the generator's frames reach the
//! sink through each kind of forwarder, and the balancer counts them as forwarded.

use lb_userspace::declare::spec::Mode;
use tests::veth_path::{Forwarder, VethPath};

const FRAMES: u32 = 20_000;

fn carries_every_frame(fwd: Forwarder) -> VethPath {
    tests::require_root();
    let mut path = VethPath::build(fwd).expect("path");
    let sent = path.send(FRAMES, 0).expect("send");
    assert_eq!(
        sent.arrived,
        u64::from(FRAMES),
        "{fwd:?}: every frame reaches the sink"
    );
    path
}

#[test]
fn a_bare_redirect_carries_every_frame() {
    carries_every_frame(Forwarder::Redirect);
}

#[test]
fn the_balancer_forwards_every_frame_in_each_mode() {
    for mode in [
        Mode::Dsr,
        Mode::Tunnel,
        Mode::Nat,
        Mode::Router,
        Mode::OneArm,
    ] {
        let path = carries_every_frame(Forwarder::Balancer(mode));
        assert_eq!(
            path.lb_forwarded().expect("counters"),
            u64::from(FRAMES),
            "{mode}: the balancer forwarded them"
        );
    }
}

#[test]
fn nftables_dnat_carries_every_frame() {
    carries_every_frame(Forwarder::Nftables);
}
