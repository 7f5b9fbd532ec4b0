//! Debug log lines from the datapath (`lbctl debug IFACE on`): aya-log's records, which the
//! program writes to its AYA_LOGS ring buffer only while OBSERVE's `debug` is on, read by the
//! running lbctl and written to its log with the verdict named ("verdict=pass_not_vip").

use anyhow::{Context as _, Result};
use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;

use super::describe;

/// The `log::Log` the records go through: each becomes a line of lbctl's log.
pub struct Lines;

impl log::Log for Lines {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let line = name_verdict(&record.args().to_string());
        tracing::info!(target: "lbctl::datapath", "{line}");
    }

    fn flush(&self) {}
}

/// The line with its numbers named: "action 3" → "XDP_TX", "verdict=15" → "verdict=pass_no_flow".
pub fn name_verdict(line: &str) -> String {
    let mut out = Vec::new();
    let mut words = line.split(' ').peekable();
    while let Some(w) = words.next() {
        if w == "action" {
            if let Some(n) = words
                .peek()
                .and_then(|n| n.trim_end_matches(':').parse().ok())
            {
                words.next();
                out.push(describe::action_name(n));
                continue;
            }
        }
        match w.strip_prefix("verdict=").and_then(|n| n.parse().ok()) {
            Some(slot) => out.push(format!("verdict={}", describe::slot_name(slot))),
            None => out.push(w.to_owned()),
        }
    }
    out.join(" ")
}

/// Reads the program's debug records as they come and logs them, until the task is dropped.
pub async fn run(logger: EbpfLogger<Lines>) -> Result<()> {
    // SAFETY: the logger owns its ring buffer's file descriptor, open until it is dropped
    // with the AsyncFd, and returns that same descriptor from every as_raw_fd.
    let mut ready =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
            .context("waiting on the datapath's debug log (AYA_LOGS)")?;
    loop {
        let mut guard = ready
            .readable_mut()
            .await
            .context("waiting for debug log records")?;
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_verdicts_are_named() {
        assert_eq!(
            name_verdict("ifindex 2 198.18.0.100:40000 > 198.18.100.10:80 proto 6 74 B: action 3 verdict=0 real 2"),
            "ifindex 2 198.18.0.100:40000 > 198.18.100.10:80 proto 6 74 B: XDP_TX verdict=forwarded real 2"
        );
        assert_eq!(
            name_verdict("ifindex 2 ethertype 806 42 B: action 2 verdict=2 real 0"),
            "ifindex 2 ethertype 806 42 B: XDP_PASS verdict=pass_not_ip real 0"
        );
    }
}
