//! Flow logs (`lbctl attach --flow-log TARGET`): the datapath's new-flow and TCP flow-end
//! events, read from its ring buffer as they come, one line each (`line`) to stdout, a file
//! or syslog (`sink`); the ends of flows that go idle are found in the flow table (`open`),
//! and every end says how long its flow lived when its start was logged. The datapath never
//! waits for this reader: past its per-CPU rate, or with the ring full, it drops events and
//! counts them (`lbctl_flow_log_events_total{outcome}`). Per-flow packet and byte counts are
//! not logged: counting them would be a write to the shared flow entry on every packet. The
//! daemon's state changes go to the same target.

pub mod line;
pub mod open;
pub mod sink;

use std::time::SystemTime;

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use lb_common::{Flow, FlowEvent, FlowKey, EVENT_END};
use tokio::io::unix::AsyncFd;
use tracing::warn;

use sink::Sink;

/// Events each CPU may send per second unless `--flow-log-rate` says.
pub const DEFAULT_RATE: u32 = 10_000;

/// A log target shared by the flow log and the daemon's state changes.
pub type SharedSink = std::sync::Arc<std::sync::Mutex<Sink>>;

/// Writes `line` to `sink` now; a failure is the caller's to report.
pub fn write_now(sink: &SharedSink, line: &str) -> Result<()> {
    let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
    sink.write(line, SystemTime::now())?;
    sink.flush()
}

/// Records read per wake-up before the reader lets the daemon's other tasks run (they share
/// one thread).
const BATCH: usize = 256;

/// How often followed flows are checked for going idle.
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The flow table, read to find flows that went idle.
pub type FlowTable = aya::maps::HashMap<MapData, FlowKey, Flow>;

/// Reads events from `ring` and writes a line for each to `sink`, and every second the ends
/// of followed flows that went idle in `flows`, until the task is dropped.
pub async fn run(
    ring: RingBuf<MapData>,
    flows: std::sync::Arc<FlowTable>,
    sink: SharedSink,
) -> Result<()> {
    // Readable only: a ring buffer's epoll says "records to read".
    // SAFETY: the ring buffer owns its map's file descriptor, open until it is dropped with
    // the AsyncFd, and returns that same descriptor from every as_raw_fd.
    let mut ready = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("waiting on the flow log's ring buffer: {e}"))?;
    let mut writer = Writer {
        sink,
        failed_writes: 0,
    };
    let mut open = open::Open::default();
    let mut tick = tokio::time::interval(IDLE_CHECK);
    loop {
        let mut guard = tokio::select! {
            g = ready.readable_mut() => g.context("waiting for flow events")?,
            _ = tick.tick() => {
                // Up to CHECKS_PER_TICK lookups: off the daemon's one thread.
                let table = flows.clone();
                let (back, ended, unreadable) = tokio::task::spawn_blocking(move || {
                    let now = crate::datapath::monotonic_ns();
                    let mut unreadable = None;
                    let ended = open.idle(|key| match table.get(key, 0) {
                        Ok(f) if f.expired(now) => {
                            open::Entry::Expired { last_seen_ns: f.last_seen_ns }
                        }
                        Ok(_) => open::Entry::Live,
                        Err(aya::maps::MapError::KeyNotFound) => open::Entry::Gone,
                        Err(e) => {
                            // Checked again next time; said once a tick.
                            unreadable.get_or_insert(format!("{e:#}"));
                            open::Entry::Live
                        }
                    });
                    (open, ended, unreadable.map(|e| (e, now)))
                })
                .await
                .context("the flow log's idle check stopped")?;
                open = back;
                if let Some((error, _)) = unreadable {
                    warn!(%error, "reading the flow table for idle flows failed; their ends wait");
                }
                let now = crate::datapath::monotonic_ns();
                let lines: Vec<(String, u64)> = ended
                    .iter()
                    .map(|(start, how)| {
                        let at = match how {
                            open::Idle::Expired { last_seen_ns } => *last_seen_ns,
                            open::Idle::Gone => now,
                        };
                        (line::format_end(start, Some(start), line::End::Idle(*how)), at)
                    })
                    .collect();
                writer.write_all(&lines);
                continue;
            }
        };
        let ring = guard.get_inner_mut();
        let mut lines = Vec::new();
        while lines.len() < BATCH {
            let Some(item) = ring.next() else {
                break;
            };
            let Some(event) = decode(&item) else {
                continue;
            };
            let text = if event.kind == EVENT_END {
                let start = open.ended(&event);
                let end = line::End::Closed {
                    how: event.how,
                    at_ns: event.at_ns,
                };
                line::format_end(&event, start.as_ref(), end)
            } else {
                open.started(&event);
                line::format(&event)
            };
            lines.push((text, event.at_ns));
        }
        let full = lines.len() == BATCH;
        writer.write_all(&lines);
        if full {
            // More may be waiting: the other tasks first, then back here (still readable).
            drop(guard);
            tokio::task::yield_now().await;
        } else {
            guard.clear_ready();
        }
    }
}

/// Lines to the sink, failures reported without flooding the log.
struct Writer {
    sink: SharedSink,
    failed_writes: u64,
}

impl Writer {
    /// Writes each line stamped with its CLOCK_MONOTONIC time, placed on the wall clock.
    fn write_all(&mut self, lines: &[(String, u64)]) {
        if lines.is_empty() {
            return;
        }
        let (mono_now, wall_now) = (crate::datapath::monotonic_ns(), SystemTime::now());
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        for (text, at_ns) in lines {
            let at = line::wall_time(*at_ns, mono_now, wall_now);
            if let Err(e) = sink.write(text, at) {
                self.failed_writes += 1;
                // Once, then every thousandth: a syslog that went away must not flood the
                // log.
                if self.failed_writes % 1000 == 1 {
                    warn!(error = %format!("{e:#}"), failed_writes = self.failed_writes, "writing a flow log line failed");
                }
            }
        }
        if let Err(e) = sink.flush() {
            warn!(error = %format!("{e:#}"), "writing the flow log failed");
        }
    }
}

/// The event in a ring buffer record (records are the datapath's, of its exact size).
fn decode(bytes: &[u8]) -> Option<FlowEvent> {
    if bytes.len() < size_of::<FlowEvent>() {
        return None;
    }
    // SAFETY: the record holds at least a FlowEvent's bytes; FlowEvent is plain data (any
    // bytes are a value), read unaligned.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FlowEvent>()) })
}
