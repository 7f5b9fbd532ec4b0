//! Flow logs (`lbctl attach --flow-log TARGET`): the datapath's new-flow events, read from its
//! ring buffer as they come, one line each (`line`) to stdout, a file or syslog (`sink`). The
//! datapath never waits for this reader: past its per-CPU rate, or with the ring full, it
//! drops events and counts them (`lbctl_flow_log_events_total{outcome}`). The daemon's state
//! changes go to the same target.

pub mod line;
pub mod sink;

use std::time::SystemTime;

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use lb_common::FlowEvent;
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

/// Reads events from `ring` and writes a line for each to `sink`, until the task is dropped.
pub async fn run(ring: RingBuf<MapData>, sink: SharedSink) -> Result<()> {
    // Readable only: a ring buffer's epoll says "records to read".
    // SAFETY: the ring buffer owns its map's file descriptor, open until it is dropped with
    // the AsyncFd, and returns that same descriptor from every as_raw_fd.
    let mut ready = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("waiting on the flow log's ring buffer: {e}"))?;
    let mut failed_writes = 0u64;
    loop {
        let mut guard = ready
            .readable_mut()
            .await
            .context("waiting for flow events")?;
        let ring = guard.get_inner_mut();
        let (mono_now, wall_now) = (crate::datapath::monotonic_ns(), SystemTime::now());
        let mut read = 0;
        {
            let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
            while read < BATCH {
                let Some(item) = ring.next() else {
                    break;
                };
                read += 1;
                let Some(event) = decode(&item) else {
                    continue;
                };
                let at = line::wall_time(event.at_ns, mono_now, wall_now);
                if let Err(e) = sink.write(&line::format(&event), at) {
                    failed_writes += 1;
                    // Once, then every thousandth: a syslog that went away must not flood
                    // the log.
                    if failed_writes % 1000 == 1 {
                        warn!(error = %format!("{e:#}"), failed_writes, "writing a flow log line failed");
                    }
                }
            }
            if let Err(e) = sink.flush() {
                warn!(error = %format!("{e:#}"), "writing the flow log failed");
            }
        }
        if read == BATCH {
            // More may be waiting: the other tasks first, then back here (still readable).
            drop(guard);
            tokio::task::yield_now().await;
        } else {
            guard.clear_ready();
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
