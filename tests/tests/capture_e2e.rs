//! `lbctl capture` end to end, on the lab's balancer under real TCP traffic: the pcapng file
//! holds each packet for the VIP as the LB received it and as it sent it (to a real's MAC),
//! in order, with the verdict as the comment, and tcpdump reads it; printed as lines, the
//! verdict filter keeps only what it names.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use lb_lab::{drive_tcp, Lab, HOST_IFACE, VIP_ADDR, VIP_PORT};
use pcap_file::pcapng::{blocks::enhanced_packet::EnhancedPacketOption, Block, PcapNgReader};
use tests::{attach_args, lbctl, require_root};

/// Starts `lbctl capture eth0 ARGS` in the LB's namespace and returns once it captures.
fn start_capture(lab: &Lab, args: &[&str]) -> Child {
    let mut child = lab
        .lb
        .command(lbctl().to_str().unwrap())
        .args(["capture", HOST_IFACE])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("lbctl capture: eth0"), "{first}");
    child
}

/// Waits (at most 30 s) for the capture to end by itself; its stdout and stderr.
fn wait(mut child: Child) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("lbctl capture did not stop at its --count");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_capture_file_holds_each_frame_as_received_and_as_sent_with_its_verdict() {
    require_root();
    let mut lab = Lab::one_segment(3).unwrap();
    lab.start_lb(&lbctl(), &attach_args(&lab, "dsr")).unwrap();
    let lb_mac = lab.lb.mac(HOST_IFACE).unwrap();
    let real_macs: Vec<[u8; 6]> = lab
        .reals
        .iter()
        .map(|r| r.mac(HOST_IFACE).unwrap())
        .collect();
    let dir = std::env::temp_dir().join(format!("capture-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vip.pcapng");
    let vip = format!("{VIP_ADDR}:{VIP_PORT}");
    let capture = start_capture(
        &lab,
        &[
            "-w",
            file.to_str().unwrap(),
            "--vip",
            &vip,
            "--count",
            "6",
            "--seconds",
            "30",
        ],
    );
    let replies = drive_tcp(&lab.client, Lab::vip(), 3).unwrap();
    assert!(replies.iter().all(|r| r.is_ok()), "{replies:?}");
    let (_, summary) = wait(capture);
    assert!(summary.contains("6 packets kept"), "{summary}");

    let bytes = std::fs::read(&file).unwrap();
    let mut reader = PcapNgReader::new(&bytes[..]).unwrap();
    let mut frames = Vec::new();
    while let Some(block) = reader.next_block() {
        if let Block::EnhancedPacket(p) = block.unwrap() {
            let comment = p.options.iter().find_map(|o| match o {
                EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                _ => None,
            });
            let inbound = p.options.contains(&EnhancedPacketOption::Flags(0b01));
            frames.push((p.data.to_vec(), inbound, comment.unwrap_or_default()));
        }
    }
    assert_eq!(frames.len(), 12, "6 packets, each received and sent");
    for pair in frames.chunks(2) {
        let ((got, got_in, got_note), (sent, sent_in, sent_note)) = (&pair[0], &pair[1]);
        assert!(*got_in && !*sent_in, "received, then sent");
        // Received: from the client for the VIP, to the LB's MAC.
        assert_eq!(got[..6], lb_mac);
        assert_eq!(got[30..34], VIP_ADDR.octets());
        // Sent (dsr): the same IP packet, from the LB's MAC to one real's.
        assert_eq!(sent[6..12], lb_mac);
        assert!(
            real_macs.iter().any(|m| sent[..6] == *m),
            "{:02x?}",
            &sent[..6]
        );
        assert_eq!(sent[12..], got[12..]);
        for note in [got_note, sent_note] {
            assert!(
                note.contains("XDP_TX forwarded to real 198.18.0."),
                "{note}"
            );
        }
        assert!(got_note.starts_with("as lbctl received it"), "{got_note}");
        assert!(sent_note.starts_with("as lbctl sent it"), "{sent_note}");
    }
    // tcpdump reads it, a line a frame.
    let text = lab
        .client
        .exec("tcpdump", &["-nn", "-r", file.to_str().unwrap()])
        .unwrap();
    assert_eq!(text.lines().count(), 12, "{text}");
    assert!(text.contains(&format!("> {VIP_ADDR}.{VIP_PORT}")), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
    lab.stop_lb().unwrap();
}

#[test]
fn printed_captures_keep_only_the_verdict_asked_for() {
    require_root();
    let mut lab = Lab::one_segment(2).unwrap();
    lab.start_lb(&lbctl(), &attach_args(&lab, "dsr")).unwrap();
    let capture = start_capture(
        &lab,
        &["--reason", "forwarded", "--count", "4", "--seconds", "30"],
    );
    let replies = drive_tcp(&lab.client, Lab::vip(), 2).unwrap();
    assert!(replies.iter().all(|r| r.is_ok()), "{replies:?}");
    let (lines, _) = wait(capture);
    let received: Vec<&str> = lines.lines().filter(|l| l.contains(" in  ")).collect();
    let sent = lines.lines().filter(|l| l.contains(" out ")).count();
    assert_eq!((received.len(), sent), (4, 4), "{lines}");
    for l in received {
        assert!(l.contains(&format!("> {VIP_ADDR}:{VIP_PORT} tcp")), "{l}");
        assert!(l.contains(": XDP_TX forwarded to real 198.18.0."), "{l}");
    }
    // A name the datapath has no verdict for is refused, naming the ones it has.
    let out = lab
        .lb
        .command(lbctl().to_str().unwrap())
        .args(["capture", HOST_IFACE, "--reason", "drop_everything"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("drop_no_real"), "{err}");
    lab.stop_lb().unwrap();
}

#[test]
fn lbctl_debug_on_puts_a_line_per_packet_in_the_running_lbctls_log_and_off_stops_them() {
    require_root();
    let mut lab = Lab::one_segment(2).unwrap();
    lab.start_lb(&lbctl(), &attach_args(&lab, "dsr")).unwrap();
    let socket = lab.lb_socket();
    let debug = |state: &str| {
        let out = lab
            .lb
            .command(lbctl().to_str().unwrap())
            .args(["debug", HOST_IFACE, state, "--socket"])
            .arg(&socket)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    // With no lbctl to read the lines, on is refused.
    let refused = lab
        .lb
        .command(lbctl().to_str().unwrap())
        .args([
            "debug",
            HOST_IFACE,
            "on",
            "--socket",
            "/nonexistent/lbctl.sock",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("no lbctl answers on /nonexistent/lbctl.sock"),
        "{why}"
    );
    let datapath_lines = |lab: &Lab| {
        lab.lb_log()
            .lines()
            .filter(|l| l.contains("lbctl::datapath"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    drive_tcp(&lab.client, Lab::vip(), 1).unwrap();
    assert!(datapath_lines(&lab).is_empty(), "off by default");
    debug("on");
    let replies = drive_tcp(&lab.client, Lab::vip(), 2).unwrap();
    assert!(replies.iter().all(|r| r.is_ok()), "{replies:?}");
    // The daemon reads the lines as they come; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let wanted = format!("> {VIP_ADDR}:{VIP_PORT} proto 6");
    let mut lines = datapath_lines(&lab);
    while lines.iter().filter(|l| l.contains(&wanted)).count() < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        lines = datapath_lines(&lab);
    }
    let to_vip: Vec<&String> = lines.iter().filter(|l| l.contains(&wanted)).collect();
    // Two connections: at least SYN, ACK, request, FIN, ACK each, every one forwarded.
    assert!(to_vip.len() >= 10, "{lines:#?}");
    assert!(
        to_vip
            .iter()
            .all(|l| l.contains("XDP_TX verdict=forwarded real ")),
        "{to_vip:#?}"
    );
    debug("off");
    std::thread::sleep(Duration::from_millis(300));
    let before = datapath_lines(&lab).len();
    drive_tcp(&lab.client, Lab::vip(), 2).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(datapath_lines(&lab).len(), before, "off: no more lines");
    lab.stop_lb().unwrap();
}
