//! Captures (`lbctl capture`) through BPF_PROG_TEST_RUN: with a capture on, each frame the
//! balancer takes comes back from its ring buffer as it arrived, with the verdict and the
//! counters' slot, followed by the frame it sent, byte for byte what BPF_PROG_TEST_RUN
//! returns; the verdict filter runs in the datapath; with the capture off, nothing is
//! recorded.

use aya::maps::{MapData, RingBuf};
use lb_common::{program_names, Reason, CAPTURE_ANY, SIDE_IN, SIDE_OUT};
use lb_userspace::{
    capture::{Capture, Filter, Record},
    datapath::Datapath,
};
use tests::fixture::*;

fn prog_id(dp: &Datapath) -> u32 {
    dp.loaded_program(program_names::LB)
        .unwrap()
        .info()
        .unwrap()
        .id()
}

fn drain(c: &Capture, ring: &mut RingBuf<MapData>) -> Vec<Record> {
    c.read(ring, usize::MAX)
}

#[test]
fn a_forwarded_frame_is_recorded_as_received_and_as_sent_with_its_verdict() {
    let dp = seeded();
    let mut c = Capture::start(prog_id(&dp), Filter::default()).unwrap();
    let mut ring = c.take_frames().unwrap();
    // dsr: forwarded; a tunnel VIP: grows by its outer header; not a VIP: passed.
    let dsr = tcp4(VIP, 80, b"hello");
    let tunnelled = tcp4(VIP_TUNNEL, 80, b"hello");
    let not_vip = tcp4([198, 18, 100, 99], 80, b"");
    let empty = tcp4(VIP_EMPTY, 80, b"");
    let mut expected = Vec::new();
    for frame in [&dsr, &tunnelled, &not_vip, &empty] {
        let (action, out) = dp.run_frame(frame).unwrap();
        expected.push((frame.clone(), action, out));
    }
    let records = drain(&c, &mut ring);
    let sides: Vec<u8> = records.iter().map(|r| r.header.side).collect();
    assert_eq!(
        sides,
        [SIDE_IN, SIDE_OUT, SIDE_IN, SIDE_OUT, SIDE_IN, SIDE_IN],
        "an out record only for the frames the program sent"
    );
    let (in_dsr, out_dsr) = (&records[0], &records[1]);
    assert_eq!(in_dsr.bytes, dsr);
    assert_eq!(in_dsr.header.wire_len as usize, dsr.len());
    assert_eq!(in_dsr.header.action, XDP_TX);
    assert_eq!(in_dsr.header.slot, Reason::FORWARDED_SLOT);
    assert_ne!(in_dsr.header.real_id, 0);
    assert_eq!(out_dsr.bytes, expected[0].2);
    assert_eq!(out_dsr.bytes, dsr_out(&dsr));
    assert_eq!(out_dsr.header.seq, in_dsr.header.seq);
    assert_eq!(
        c.real(in_dsr.header.real_id, 80),
        Some("198.18.0.11:80".parse().unwrap())
    );
    // The tunnelled frame leaves 20 bytes longer, as BPF_PROG_TEST_RUN returns it.
    assert_eq!(records[2].bytes, tunnelled);
    assert_eq!(records[3].bytes, expected[1].2);
    assert_eq!(records[3].header.wire_len as usize, tunnelled.len() + 20);
    assert_eq!(records[4].bytes, not_vip);
    assert_eq!(
        (records[4].header.action, records[4].header.slot),
        (XDP_PASS, Reason::NotVip.slot())
    );
    assert_eq!(
        (records[5].header.action, records[5].header.slot),
        (XDP_DROP, Reason::NoReal.slot())
    );
    let counts = c.counts().unwrap();
    assert_eq!((counts.seen, counts.sent, counts.ring_full), (4, 6, 0));
}

#[test]
fn the_verdict_filter_runs_in_the_datapath_and_the_snap_length_cuts_frames() {
    let dp = seeded();
    let mut c = Capture::start(
        prog_id(&dp),
        Filter {
            slot: Reason::NoReal.slot(),
            snaplen: 40,
            ..Filter::default()
        },
    )
    .unwrap();
    let mut ring = c.take_frames().unwrap();
    let empty = tcp4(VIP_EMPTY, 80, b"a payload past the snap length");
    for frame in [
        tcp4(VIP, 80, b""),
        empty.clone(),
        tcp4([198, 18, 100, 99], 80, b""),
    ] {
        dp.run_frame(&frame).unwrap();
    }
    let records = drain(&c, &mut ring);
    assert_eq!(records.len(), 1, "only the drop_no_real frame");
    assert_eq!(records[0].header.slot, Reason::NoReal.slot());
    assert_eq!(records[0].bytes, empty[..40]);
    assert_eq!(records[0].header.wire_len as usize, empty.len());
}

#[test]
fn with_the_capture_off_nothing_is_recorded_and_a_second_capture_is_refused() {
    let dp = seeded();
    let id = prog_id(&dp);
    let mut c = Capture::start(id, Filter::default()).unwrap();
    let e = match Capture::start(id, Filter::default()) {
        Ok(_) => panic!("a second capture of one program started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("another capture runs"), "{e}");
    let mut ring = c.take_frames().unwrap();
    c.stop().unwrap();
    for _ in 0..3 {
        dp.run_frame(&tcp4(VIP, 80, b"")).unwrap();
    }
    assert!(drain(&c, &mut ring).is_empty());
    let counts = c.counts().unwrap();
    assert_eq!((counts.seen, counts.sent), (0, 0));
    drop(c);
    // Stopped: the next capture starts (and finds the switch as this one left it).
    let next = Capture::start(
        id,
        Filter {
            slot: CAPTURE_ANY,
            ..Filter::default()
        },
    );
    assert!(next.is_ok());
}

/// Collects the lines aya-log hands over.
#[derive(Clone, Default)]
struct Collect(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl log::Log for Collect {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        self.0.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

#[test]
fn debug_lines_say_each_packets_addresses_and_verdict_while_on_and_nothing_while_off() {
    let dp = seeded();
    let id = prog_id(&dp);
    let lines = Collect::default();
    // The debug lines are written by the full path, which every packet takes while they are on.
    let full = dp
        .loaded_program(program_names::FULL)
        .unwrap()
        .info()
        .unwrap()
        .id();
    let mut logger = aya_log::EbpfLogger::init_from_id_with_logger(full, lines.clone()).unwrap();
    dp.run_frame(&tcp4(VIP, 80, b"")).unwrap();
    logger.flush();
    assert!(lines.0.lock().unwrap().is_empty(), "off by default");
    lb_userspace::capture::set_debug(id, true).unwrap();
    dp.run_frame(&tcp4(VIP, 80, b"")).unwrap();
    dp.run_frame(&udp4([198, 18, 100, 99], 53, b"")).unwrap();
    logger.flush();
    let got = lines.0.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with("ifindex 1 198.18.0.100:40000 > 198.18.100.10:80 proto 6 54 B: action 3 verdict=0 real "),
        "{got:?}"
    );
    assert!(
        got[1].contains("> 198.18.100.99:53 proto 17 42 B: action 2 verdict=3 real 0"),
        "{got:?}"
    );
    assert_eq!(
        lb_userspace::capture::debug::name_verdict(&got[1])
            .split(": ")
            .nth(1),
        Some("XDP_PASS verdict=pass_not_vip real 0")
    );
    // A capture switched on and off leaves the debug log on; off is off.
    drop(Capture::start(id, Filter::default()).unwrap());
    dp.run_frame(&tcp4(VIP, 80, b"")).unwrap();
    lb_userspace::capture::set_debug(id, false).unwrap();
    dp.run_frame(&tcp4(VIP, 80, b"")).unwrap();
    logger.flush();
    assert_eq!(lines.0.lock().unwrap().len(), 3);
}
