//! A graceful stop (`lbctl stop --grace D`, or SIGTERM without `--keep-on-exit`): the LB
//! says it no longer serves (`lbctl status --check` fails, so keepalived gives MASTER to the
//! peer; BGP announcements are withdrawn), forwards what still reaches it, and detaches once
//! nothing has for [`QUIET`] (the traffic moved to the peer, or every connection ended) or
//! when the grace period runs out, whichever comes first. New flows that still arrive are
//! served: a peer may still be taking over, and a refused SYN is a failed connection.

use std::time::{Duration, Instant};

use crate::datapath::Datapath;

/// How long the datapath must have forwarded nothing for the stop to end before its grace.
pub const QUIET: Duration = Duration::from_secs(1);

/// How often the datapath's counters are read while stopping.
pub const TICK: Duration = Duration::from_millis(100);

/// A stop under way.
#[derive(Debug)]
pub struct Stopping {
    pub asked: Instant,
    pub deadline: Instant,
    /// What asked for it, for the log.
    pub by: &'static str,
    /// Packets forwarded (both directions), last read.
    seen: u64,
    last_packet: Instant,
}

/// How a stop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Nothing forwarded for QUIET.
    Quiet,
    /// The grace period ran out with packets still arriving.
    GraceOver,
}

fn forwarded(dp: &Datapath) -> u64 {
    // A failed read counts as traffic: the stop then ends on its grace, never too early.
    dp.counters()
        .map(|c| c.forwarded.packets + c.replies.packets)
        .unwrap_or(u64::MAX)
}

impl Stopping {
    pub fn begin(dp: &Datapath, grace: Duration, by: &'static str) -> Self {
        let now = Instant::now();
        Self {
            asked: now,
            deadline: now + grace,
            by,
            seen: forwarded(dp),
            last_packet: now,
        }
    }

    /// Whether the stop is over, read now.
    pub fn ended(&mut self, dp: &Datapath) -> Option<Ended> {
        let now = Instant::now();
        let count = forwarded(dp);
        // A failed read (u64::MAX) counts as traffic every time.
        if count == u64::MAX || count != self.seen {
            self.seen = count;
            self.last_packet = now;
        }
        if now.duration_since(self.last_packet) >= QUIET {
            return Some(Ended::Quiet);
        }
        (now >= self.deadline).then_some(Ended::GraceOver)
    }

    /// The log line for how it ended.
    pub fn said(&self, ended: &Ended) -> String {
        let took = humantime::format_duration(Duration::from_millis(
            self.asked.elapsed().as_millis() as u64,
        ));
        match ended {
            Ended::Quiet => format!(
                "graceful stop ({}): nothing forwarded for {} after {took}; detaching",
                self.by,
                humantime::format_duration(QUIET)
            ),
            Ended::GraceOver => format!(
                "graceful stop ({}): the grace period ran out after {took} with packets still arriving; detaching (their flows end here)",
                self.by
            ),
        }
    }
}

/// Starts a graceful stop: from now on the LB says it does not serve.
pub(super) fn begin(
    running: &super::running::Running,
    facts: &mut super::answer::Facts,
    grace: Duration,
    by: &'static str,
) -> Stopping {
    facts.stopping = true;
    tracing::info!(grace = %humantime::format_duration(grace), by, "stopping gracefully: no longer serving (status --check fails), forwarding what still arrives until nothing has for {} or the grace runs out", humantime::format_duration(QUIET));
    Stopping::begin(&running.dp, grace, by)
}
