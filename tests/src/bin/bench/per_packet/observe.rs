//! What captures and debug lines cost (`lbctl capture`, `lbctl debug`): off, on the
//! balancer's own path; on, per packet observed.

use anyhow::{ensure, Context as _, Result};
use lb_userspace::{
    capture::{Capture, Filter},
    declare::{service::VipSettings, spec::Mode},
};
use tests::{
    bench_object::{BalancerBench, BenchProgram},
    fixture::XDP_TX,
};

use super::{datapath, median, time, Repeats, RUNS};
use crate::report::{Figure, Section, Unit};

/// Packets per kernel run with a capture or debug log on: two capture records a packet (in
/// and out, ~120 bytes each with this frame) fit the 2 MiB ring; aya-log's 128 KiB holds
/// some 250 debug lines (a record of a few hundred bytes each: 400 a run lost a third).
/// Drained between runs, as a reader keeping up would.
const CAPTURED_PER_RUN: u32 = 4_000;
const LOGGED_PER_RUN: u32 = 150;

/// dsr/maglev established, with nothing observed (a capture and debug lines off: what every
/// packet pays for them is the one load that says so), then with a capture on, then with
/// debug lines on, on one datapath in one run.
pub(super) fn observed(s: &mut Section, frame: &[u8], reps: &Repeats) -> Result<()> {
    let settings = VipSettings::new(Mode::Dsr);
    let mut dp = datapath(&settings, None)?;
    let off = time(
        &mut dp,
        BenchProgram::Balancer,
        frame,
        None,
        reps.established,
    )?;
    let prog_id = dp
        .dp
        .loaded_program(lb_common::program_names::LB)?
        .info()?
        .id();
    let mut capture = Capture::start(prog_id, Filter::default())?;
    let mut ring = capture.take_frames().context("the capture's ring")?;
    let mut records = 0usize;
    let captured = runs(&mut dp, frame, CAPTURED_PER_RUN, || {
        records += capture.read(&mut ring, usize::MAX).len();
    })?;
    ensure!(
        capture.counts()?.ring_full == 0 && records == 2 * RUNS * CAPTURED_PER_RUN as usize,
        "{records} capture records for {} packets, {} lost",
        RUNS * CAPTURED_PER_RUN as usize,
        capture.counts()?.ring_full
    );
    drop(capture);
    let lines = CountLines::default();
    // The full path writes the lines: every packet takes it while they are on.
    let full_id = dp
        .dp
        .loaded_program(lb_common::program_names::FULL)?
        .info()?
        .id();
    let mut logger = aya_log::EbpfLogger::init_from_id_with_logger(full_id, lines.clone())?;
    lb_userspace::capture::set_debug(prog_id, true)?;
    let debug = runs(&mut dp, frame, LOGGED_PER_RUN, || logger.flush())?;
    lb_userspace::capture::set_debug(prog_id, false)?;
    let logged = lines.0.load(std::sync::atomic::Ordering::Relaxed);
    ensure!(
        logged == RUNS * LOGGED_PER_RUN as usize,
        "{logged} debug lines for {} packets",
        RUNS * LOGGED_PER_RUN as usize
    );
    for (name, on) in [("a capture on", captured), ("debug lines on", debug)] {
        s.push(
            Figure::new(
                format!("dsr, maglev, established flow, {name}"),
                on,
                Unit::Ns,
            )
            .note(format!(
                "{:+.0} ns against both off in the same run ({off:.0} ns)",
                on - off
            )),
        );
    }
    s.notes.push(
        "Captures and debug lines: off, a packet pays one load of a word of the program's .bss for both; \
         what that costs is measured against the release before them (docs/benchmarks). On, \
         a captured packet is copied into a per-CPU record and sent to the ring buffer twice \
         (as received, as sent); a debug line is formatted by aya-log into its ring buffer."
            .into(),
    );
    Ok(())
}

/// Median ns per packet over RUNS kernel runs of `count` established packets, each
/// forwarded, with `between` (draining a ring) after each run.
fn runs(
    dp: &mut BalancerBench,
    frame: &[u8],
    count: u32,
    mut between: impl FnMut(),
) -> Result<f64> {
    let mut runs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (action, ns) = dp.run(BenchProgram::Balancer, frame, None, count)?;
        ensure!(
            action == XDP_TX,
            "observed packets ended with action {action}"
        );
        runs.push(ns);
        between();
    }
    Ok(median(runs))
}

/// Counts the debug lines aya-log hands over.
#[derive(Clone, Default)]
struct CountLines(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl log::Log for CountLines {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, _: &log::Record) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn flush(&self) {}
}
