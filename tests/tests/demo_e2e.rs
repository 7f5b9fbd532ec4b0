//! The demo, run as `lbctl demo` runs it, checked on the facts it reports (not on how they
//! read): for each mode, what each hop of one request changed, what the real saw, whether the
//! reply crossed the LB, that every request was answered, and that a real whose server
//! stopped was taken out with no request lost. Its `--pcap` files open as captures.

use std::net::IpAddr;

use lb_lab::{CLIENT_ADDR, LB_ADDR, VIP_ADDR};
use lb_userspace::declare::spec::Mode;
use lb_userspace::demo::{run_mode, ModeReport};
use tests::{lbctl, require_root};

fn run(mode: Mode) -> ModeReport {
    require_root();
    run_mode(mode, 30, &lbctl(), None).unwrap()
}

/// What every mode shows: all answered, the failover lossless, the request reaching a real
/// with the client's data.
fn common(r: &ModeReport) {
    assert_eq!(
        r.facts.answered, r.facts.requests,
        "{:?}",
        r.facts.first_error
    );
    assert_eq!(r.facts.per_real.len(), 3, "{:?}", r.facts.per_real);
    let f = &r.failover;
    assert_eq!((f.answered, f.to_stopped), (f.requests, 0), "{f:?}");
    assert!(
        r.trace.request.len() >= 2 && !r.trace.reply.is_empty(),
        "{:?}",
        r.trace
    );
    let first = &r.trace.request[0];
    assert_eq!((first.from.as_str(), first.to.as_str()), ("client", "lb"));
    assert_eq!(first.headers.dst.ip(), IpAddr::V4(VIP_ADDR));
    // The LB's own view (lbctl capture): the SYN for the VIP, forwarded to a real.
    let syn =
        r.lb.iter()
            .find(|v| v.frame.contains(&format!("> {VIP_ADDR}:80 tcp [S]")))
            .unwrap_or_else(|| panic!("no SYN in the LB's view: {:#?}", r.lb));
    assert!(syn.verdict.contains("forwarded to real 198.18."), "{syn:?}");
}

fn last_request_dst(r: &ModeReport) -> IpAddr {
    r.trace.request.last().unwrap().headers.dst.ip()
}

#[test]
fn dsr_changes_only_macs_and_the_reply_goes_around_the_lb() {
    let r = run(Mode::Dsr);
    common(&r);
    let [a, b] = [&r.trace.request[0], &r.trace.request[1]];
    assert_eq!(
        (a.headers.src, a.headers.dst),
        (b.headers.src, b.headers.dst)
    );
    assert_ne!(a.headers.eth_dst, b.headers.eth_dst);
    assert!(!r.trace.reply_crossed_lb("lb"));
    assert_eq!(
        r.trace.client_seen_by_real().unwrap().ip(),
        IpAddr::V4(CLIENT_ADDR)
    );
}

#[test]
fn tunnel_wraps_the_client_s_packet_and_the_reply_goes_around_the_lb() {
    let r = run(Mode::Tunnel);
    common(&r);
    let wrapped = r
        .trace
        .request
        .iter()
        .find(|h| h.headers.outer.is_some())
        .unwrap();
    let (outer_src, _) = wrapped.headers.outer.unwrap();
    assert_eq!(outer_src, LB_ADDR);
    assert_eq!(
        last_request_dst(&r),
        IpAddr::V4(VIP_ADDR),
        "the inner packet is untouched"
    );
    assert!(!r.trace.reply_crossed_lb("lb"));
}

#[test]
fn nat_translates_the_destination_and_the_reply_crosses_the_lb() {
    let r = run(Mode::Nat);
    common(&r);
    assert_ne!(last_request_dst(&r), IpAddr::V4(VIP_ADDR));
    assert_eq!(
        r.trace.client_seen_by_real().unwrap().ip(),
        IpAddr::V4(CLIENT_ADDR)
    );
    assert!(r.trace.reply_crossed_lb("lb"));
    assert_eq!(
        r.trace.reply.last().unwrap().headers.src.ip(),
        IpAddr::V4(VIP_ADDR)
    );
}

#[test]
fn router_also_decrements_the_ttl() {
    let r = run(Mode::Router);
    common(&r);
    let (a, b) = (&r.trace.request[0], r.trace.request.last().unwrap());
    assert_eq!(b.headers.ttl + 1, a.headers.ttl);
    assert_eq!(b.from, "lb");
    assert!(r.trace.reply_crossed_lb("lb"));
}

#[test]
fn one_arm_shows_the_real_the_lb_as_the_client() {
    let r = run(Mode::OneArm);
    common(&r);
    assert_eq!(
        r.trace.client_seen_by_real().unwrap().ip(),
        IpAddr::V4(LB_ADDR)
    );
    assert_eq!(r.facts.client_addrs_seen, [LB_ADDR.to_string()]);
    assert!(r.trace.reply_crossed_lb("lb"));
}

#[test]
fn the_pcap_files_open_as_captures_of_the_traced_request() {
    require_root();
    let dir = std::env::temp_dir().join(format!("lbctl-demo-pcap-{}", std::process::id()));
    let r = run_mode(Mode::Dsr, 5, &lbctl(), Some(dir.clone())).unwrap();
    let client = dir.join("dsr").join("client-eth0.pcap");
    let file = std::fs::File::open(&client).unwrap();
    let mut reader = pcap_file::pcap::PcapReader::new(file).unwrap();
    let mut frames = 0;
    while let Some(packet) = reader.next_packet() {
        packet.unwrap();
        frames += 1;
    }
    assert!(
        frames >= 4,
        "the handshake, request, reply and close: {frames} frames"
    );
    assert!(
        dir.join("dsr").read_dir().unwrap().count() >= 3,
        "client, real and LB captures"
    );
    assert!(dir.join("dsr").join("lb-xdp.pcapng").exists());
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(r.facts.answered, 5);
}

/// `--keep` leaves the lab up until Ctrl-C, and Ctrl-C takes all of it down: namespaces,
/// the balancer, the bpffs mount.
#[test]
fn ctrl_c_tears_a_kept_lab_down() {
    use std::{
        io::{BufRead as _, BufReader},
        process::{Command, Stdio},
        time::{Duration, Instant},
    };
    require_root();
    let mut demo = Command::new(lbctl())
        .args(["demo", "--mode", "dsr", "--requests", "5", "--keep"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prefix = format!("lbl{}x", demo.id());
    let mut out = BufReader::new(demo.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("stays up until Ctrl-C") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the demo ended without keeping its lab"
        );
    }
    let netns = || {
        String::from_utf8(
            lb_lab::programs::program("ip")
                .args(["netns", "list"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    };
    assert!(netns().contains(&prefix), "the lab is up: {}", netns());
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(demo.id() as libc::pid_t, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while demo.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the demo did not end after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!netns().contains(&prefix), "left behind: {}", netns());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&prefix), "a bpffs mount left behind");
}
