//! The bench's forwarding path carries what it is sent: the generator's frames reach the
//! sink through each kind of forwarder, and the balancer counts them as forwarded.

use lb_userspace::declare::spec::Mode;
use tests::veth_path::{Forwarder, Tuples, VethPath};

const FRAMES: u32 = 20_000;
/// Past 65 536 frames of new flows the source address changes too (its checksum with it).
const NEW_FLOW_FRAMES: u32 = 150_000;

fn carries_every_frame(fwd: Forwarder) -> VethPath {
    carries_every_frame_of(fwd, Tuples::Cycled)
}

fn carries_every_frame_of(fwd: Forwarder, tuples: Tuples) -> VethPath {
    tests::require_root();
    let mut path = VethPath::build(fwd).expect("path");
    let frames = match tuples {
        Tuples::Cycled => FRAMES,
        Tuples::New => NEW_FLOW_FRAMES,
    };
    let sent = path.send(frames, 0, tuples).expect("send");
    assert_eq!(
        sent.arrived,
        u64::from(frames),
        "{fwd:?}, {tuples:?}: every frame reaches the sink"
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

#[test]
fn frames_each_of_a_new_flow_pass_the_kernels_checks_and_the_balancer() {
    // The kernel's stack drops an IPv4 header with a wrong checksum: every frame arriving
    // through nftables says the generator keeps it right as it varies the address.
    carries_every_frame_of(Forwarder::Nftables, Tuples::New);
    let path = carries_every_frame_of(Forwarder::Balancer(Mode::Nat), Tuples::New);
    assert_eq!(
        path.lb_forwarded().expect("counters"),
        u64::from(NEW_FLOW_FRAMES)
    );
}
