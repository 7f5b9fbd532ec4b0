//! Where the time of one per-packet case goes: `perf record` samples the CPU the test runs
//! on while the kernel repeats the case; the samples are split by function. The datapath's
//! stages that are BPF functions of their own show by name (`bpf_prog_<tag>_<name>`), the
//! kernel's map code by its own (an LRU update, a hash lookup), the test-run loop by its.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// How long one case is sampled.
const SAMPLE_FOR: Duration = Duration::from_secs(2);

/// One function's share of the samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub function: String,
    pub percent: f64,
}

/// Samples CPU `cpu` while `work` runs (called again and again until the sampling ends;
/// each call should take well under a second). The functions with at least 1 % of the
/// samples, largest first.
pub fn sample(cpu: usize, mut work: impl FnMut() -> Result<()>) -> Result<Vec<Share>> {
    let data = std::env::temp_dir().join(format!("lbctl-bench-{}.perf", std::process::id()));
    let mut perf = lb_lab::programs::program("perf")
        .args(["record", "-q", "-C", &cpu.to_string(), "-o"])
        .arg(&data)
        .args(["--", "sleep", &SAMPLE_FOR.as_secs().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running perf (apt-get install linux-perf)")?;
    let start = Instant::now();
    // Busy until perf has stopped sampling (it starts up slowly), and bounded whatever it
    // does.
    while start.elapsed() < SAMPLE_FOR * 5 {
        work()?;
        if perf.try_wait()?.is_some() {
            break;
        }
    }
    let out = perf.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "perf record failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let report = lb_lab::programs::program("perf")
        .args([
            "report",
            "--stdio",
            "-q",
            "--sort",
            "sym",
            "--percent-limit",
            "1",
            "-i",
        ])
        .arg(&data)
        .output()
        .context("running perf report")?;
    let removed = std::fs::remove_file(&data);
    if !report.status.success() {
        bail!(
            "perf report failed: {}",
            String::from_utf8_lossy(&report.stderr).trim()
        );
    }
    removed.with_context(|| format!("removing {}", data.display()))?;
    Ok(parse_report(&String::from_utf8_lossy(&report.stdout)))
}

/// `perf report --sort sym` lines ("  11.02%  [k] htab_lru_map_update_elem"), BPF program
/// names shortened to "bpf:<name>". The CPU's idle time (while perf starts and stops) is
/// left out and the rest scaled to 100 %.
pub fn parse_report(text: &str) -> Vec<Share> {
    let shares: Vec<Share> = text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let percent = words.next()?.strip_suffix('%')?.parse().ok()?;
            let function = words.find(|w| !w.starts_with('['))?;
            Some(Share {
                function: short_name(function),
                percent,
            })
        })
        .collect();
    let idle = |s: &Share| IDLE.iter().any(|i| s.function.contains(i));
    let idle_share: f64 = shares.iter().filter(|s| idle(s)).map(|s| s.percent).sum();
    let scale = 100.0 / (100.0 - idle_share).max(1.0);
    shares
        .into_iter()
        .filter(|s| !idle(s))
        .map(|s| Share {
            percent: s.percent * scale,
            ..s
        })
        .collect()
}

/// What the kernel runs on an idle CPU.
const IDLE: [&str; 5] = [
    "safe_halt",
    "default_idle",
    "cpuidle",
    "poll_idle",
    "mwait_idle",
];

fn short_name(symbol: &str) -> String {
    // bpf_prog_<16 hex digits>_<name>
    match symbol
        .strip_prefix("bpf_prog_")
        .and_then(|rest| rest.split_once('_'))
    {
        Some((tag, name)) if tag.len() == 16 => format!("bpf:{name}"),
        _ => symbol.to_string(),
    }
}

/// The shares as "name 12 % (40 ns)", given the case's ns per packet.
pub fn describe(shares: &[Share], ns_per_packet: f64) -> String {
    shares
        .iter()
        .map(|s| {
            format!(
                "{} {:.0} % ({:.0} ns)",
                s.function,
                s.percent,
                s.percent / 100.0 * ns_per_packet
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_lines_become_named_shares() {
        let text = "    11.02%  [k] htab_lru_map_update_elem\n     5.32%  [k] bpf_prog_3182b369e8d2becc_create\n\n     1.00%  [k] bpf_prog_62f0517ee3d81067_memmove\n    50.00%  [k] pv_native_safe_halt\n";
        let shares = parse_report(text);
        assert_eq!(
            shares,
            vec![
                Share {
                    function: "htab_lru_map_update_elem".into(),
                    percent: 22.04
                },
                Share {
                    function: "bpf:create".into(),
                    percent: 10.64
                },
                Share {
                    function: "bpf:memmove".into(),
                    percent: 2.0
                },
            ]
        );
        assert_eq!(describe(&shares[1..2], 1000.0), "bpf:create 11 % (106 ns)");
    }
}
