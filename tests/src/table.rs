//! A fixture table: input frame, expected XDP action, expected output bytes, the one counter
//! that must move (and, for a forwarded frame, its real's counter of that direction); run
//! in order against one datapath (rows may depend on the flows the rows before them made).

use lb_common::{Counter, Reason};
use lb_userspace::datapath::Datapath;

use crate::{
    assert_checksums_valid,
    fixture::{delta, XDP_REDIRECT, XDP_TX},
};

/// The counter a row moves, by one packet and the frame's bytes.
pub enum Counted {
    /// `forwarded`: client → real.
    Request,
    /// `forwarded_replies`: real → client through the LB.
    Reply,
    Because(Reason),
}

pub struct Row {
    pub name: &'static str,
    pub frame: Vec<u8>,
    pub action: u32,
    /// `None`: the frame must leave unchanged.
    pub output: Option<Vec<u8>>,
    pub counted: Counted,
}

/// A row whose frame is rewritten into `output`.
pub fn row(
    name: &'static str,
    frame: Vec<u8>,
    action: u32,
    output: Vec<u8>,
    counted: Counted,
) -> Row {
    Row {
        name,
        frame,
        action,
        output: Some(output),
        counted,
    }
}

/// A row whose frame leaves unchanged (passed or dropped), counted under `reason`.
pub fn untouched(name: &'static str, frame: Vec<u8>, action: u32, reason: Reason) -> Row {
    Row {
        name,
        frame,
        action,
        output: None,
        counted: Counted::Because(reason),
    }
}

/// Runs every row in order; every output frame sent on must have valid checksums as
/// etherparse computes them.
pub fn run(dp: &Datapath, rows: Vec<Row>) {
    for row in rows {
        let before = dp.counters().unwrap();
        let reals_before = dp.reals_forwarded().unwrap();
        let (action, out) = dp.run_frame(&row.frame).unwrap();
        let moved = delta(&before, &dp.counters().unwrap());
        let reals_after = dp.reals_forwarded().unwrap();
        assert_eq!(
            action, row.action,
            "{}: action (counted {moved:?})",
            row.name
        );
        let want = row.output.clone().unwrap_or_else(|| row.frame.clone());
        assert_eq!(out, want, "{}: output bytes", row.name);
        if action == XDP_TX || action == XDP_REDIRECT {
            assert_checksums_valid(&out);
        }
        let label = match row.counted {
            Counted::Request => "forwarded",
            Counted::Reply => "forwarded_replies",
            Counted::Because(r) => r.label(),
        };
        assert_eq!(
            moved,
            vec![(label.to_owned(), 1, row.frame.len() as u64)],
            "{}: counters",
            row.name
        );
        // The real of the frame's flow counts it in its direction; nothing else moves.
        let one = Counter {
            packets: 1,
            bytes: row.frame.len() as u64,
        };
        let (requests, replies) = match row.counted {
            Counted::Request => (one, Counter::default()),
            Counted::Reply => (Counter::default(), one),
            Counted::Because(_) => (Counter::default(), Counter::default()),
        };
        let minus = |a: Counter, b: Counter| Counter {
            packets: a.packets - b.packets,
            bytes: a.bytes - b.bytes,
        };
        assert_eq!(
            (
                minus(reals_after.requests, reals_before.requests),
                minus(reals_after.replies, reals_before.replies)
            ),
            (requests, replies),
            "{}: the real's counters",
            row.name
        );
    }
}
