//! The state changes' lines (a real up or down, with the flows that move), in order, off
//! the daemon's loop.

use anyhow::{Context as _, Result};
use tokio::sync::mpsc;
use tracing::warn;

/// The state changes' lines, in order, through one worker thread: a real that went down
/// (other schedulers than leastconn) has its flows counted in the flow table there (a walk
/// takes about 1.7 µs an entry: off the daemon's loop), and its line, with the count, goes
/// out before any line that came after it; downs that wait together share one walk.
pub(super) struct MovedFlows {
    jobs: std::sync::mpsc::Sender<LineJob>,
}

enum LineJob {
    /// A line as it is.
    Line(String),
    /// `head` + "; N active flows move", N counted for real `real_id`.
    Count { real_id: u32, head: String },
}

impl MovedFlows {
    /// Starts the worker: its lines come out of the returned receiver, in order.
    pub(super) fn start(
        table: crate::flowlog::FlowTable,
    ) -> Result<(Self, mpsc::UnboundedReceiver<String>)> {
        let (jobs, queue) = std::sync::mpsc::channel::<LineJob>();
        let (lines, out) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("lbctl-moved-flows".into())
            .spawn(move || {
                // Ends when the daemon drops its sender.
                while let Ok(first) = queue.recv() {
                    let mut batch = vec![first];
                    batch.extend(queue.try_iter());
                    let counts = batch
                        .iter()
                        .any(|j| matches!(j, LineJob::Count { .. }))
                        .then(|| {
                            crate::stats::FlowCount::of(&table, crate::datapath::monotonic_ns())
                        });
                    for job in batch {
                        let line = match (job, &counts) {
                            (LineJob::Line(l), _) => l,
                            (LineJob::Count { real_id, head }, Some(Ok(c))) => format!(
                                "{head}; {} active flows move",
                                c.per_real.get(&real_id).copied().unwrap_or(0)
                            ),
                            (LineJob::Count { head, .. }, Some(Err(e))) => {
                                warn!(error = %format!("{e:#}"), "counting a down real's flows failed");
                                format!("{head}; its flows move")
                            }
                            (LineJob::Count { head, .. }, None) => format!("{head}; its flows move"),
                        };
                        if lines.send(line).is_err() {
                            // The daemon stopped: nothing left to log to.
                            return;
                        }
                    }
                }
            })
            .context("starting the thread that counts a down real's flows")?;
        Ok((Self { jobs }, out))
    }

    /// A line, after those asked before it.
    pub(super) fn line(&self, line: String) {
        self.send(LineJob::Line(line));
    }

    /// `head` with "; N active flows move", `real_id`'s flows counted.
    pub(super) fn count(&self, real_id: u32, head: String) {
        self.send(LineJob::Count { real_id, head });
    }

    fn send(&self, job: LineJob) {
        if self.jobs.send(job).is_err() {
            warn!("the thread that orders state-change lines stopped; a line is lost");
        }
    }
}
