//! wrk's and nginx's output, read: pure functions, tested on real samples.

use anyhow::{bail, Context as _, Result};

/// What one wrk run (or the direct runs together) measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct Load {
    pub(super) rate: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) requests: u64,
}

/// Runs side by side as one: rates and requests summed, percentiles weighted by requests (the
/// runs are alike, so this is close to the percentile of all their requests).
pub(super) fn combine(loads: &[Load]) -> Load {
    let requests: u64 = loads.iter().map(|l| l.requests).sum();
    let weighted = |f: fn(&Load) -> f64| {
        loads.iter().map(|l| f(l) * l.requests as f64).sum::<f64>() / requests.max(1) as f64
    };
    let rate = loads.iter().map(|l| l.rate).sum();
    Load {
        rate,
        p50_ms: weighted(|l| l.p50_ms),
        p99_ms: weighted(|l| l.p99_ms),
        requests,
    }
}

/// wrk's summary: requests/s, p50 and p99, the request count; an error for any socket error
/// or non-2xx/3xx answer, which would make the figures lie.
pub(super) fn parse_wrk(out: &str) -> Result<Load> {
    let field = |prefix: &str| {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    if let Some(n) = field("Non-2xx or 3xx responses:") {
        bail!("{n} answers were not 2xx/3xx");
    }
    let rate: f64 = field("Requests/sec:")
        .context("no Requests/sec line")?
        .parse()?;
    let count = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "));
    let requests: u64 = count.context("no \"N requests in\" line")?.0.parse()?;
    if requests == 0 {
        bail!("no request was answered");
    }
    if let Some(errors) = field("Socket errors:") {
        // "connect 0, read 1, write 0, timeout 0". wrk cuts a connection now and then when
        // it stops; more than one error per 10 000 requests is a real failure.
        let total: u64 = errors
            .split(',')
            .filter_map(|kind| kind.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        if total == 0 || total.saturating_mul(10_000) > requests {
            bail!("wrk saw socket errors ({errors}): connections failed or were reset");
        }
    }
    let p50_ms = duration_ms(field("50%").context("no 50% latency (run with --latency)")?)?;
    let p99_ms = duration_ms(field("99%").context("no 99% latency (run with --latency)")?)?;
    Ok(Load {
        rate,
        p50_ms,
        p99_ms,
        requests,
    })
}

/// wrk's "812.00us", "1.99ms", "1.02s", "1.50m" in milliseconds.
fn duration_ms(text: &str) -> Result<f64> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let scale = match &text[digits.len()..] {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        unit => bail!("unknown unit {unit:?} in wrk's {text:?}"),
    };
    Ok(digits
        .parse::<f64>()
        .with_context(|| format!("wrk's {text:?}"))?
        * scale)
}

/// The `requests` count of nginx's stub_status page: the third number on the line after
/// "server accepts handled requests".
pub(super) fn parse_stub_status(text: &str) -> Result<u64> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.contains("accepts handled requests"));
    let counts = lines
        .nth(1)
        .context("no counts after \"accepts handled requests\"")?;
    Ok(counts
        .split_whitespace()
        .nth(2)
        .context("no requests count")?
        .parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// wrk 4.1.0, -t2 -c32 --latency -H "Connection: close", against nginx in a lab.
    const CLOSE: &str = "Running 2s test @ http://198.18.0.11:8081/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.84ms    1.04ms  13.62ms   84.32%
    Req/Sec     7.10k   618.90     9.63k    80.00%
  Latency Distribution
     50%    1.74ms
     75%    2.11ms
     90%    2.62ms
     99%    6.38ms
  28434 requests in 2.02s, 3.93MB read
Requests/sec:  14084.88
Transfer/sec:      1.95MB
";

    /// The server killed half-way: read and write errors.
    const ERRORS: &str = "  Latency Distribution
     50%   33.00us
     99%    4.96ms
  38159 requests in 3.01s, 5.46MB read
  Socket errors: connect 0, read 4, write 664, timeout 0
Requests/sec:  12673.78
";

    /// nginx answering 503.
    const NON_2XX: &str = "  Latency Distribution
     50%   51.00us
     99%  113.00us
  63310 requests in 1.10s, 10.81MB read
  Non-2xx or 3xx responses: 63310
Requests/sec:  57580.40
";

    fn load(rate: f64, p50_ms: f64, p99_ms: f64, requests: u64) -> Load {
        Load {
            rate,
            p50_ms,
            p99_ms,
            requests,
        }
    }

    #[test]
    fn a_rare_socket_error_is_tolerated() {
        let one_cut = CLOSE.replace(
            "Requests/sec:",
            "  Socket errors: connect 0, read 1, write 0, timeout 0\nRequests/sec:",
        );
        assert_eq!(
            parse_wrk(&one_cut).unwrap(),
            load(14084.88, 1.74, 6.38, 28434)
        );
    }

    #[test]
    fn wrk_summary_gives_rate_percentiles_and_count() {
        assert_eq!(parse_wrk(CLOSE).unwrap(), load(14084.88, 1.74, 6.38, 28434));
    }

    #[test]
    fn socket_errors_and_non_2xx_fail_the_run() {
        let e = format!("{:#}", parse_wrk(ERRORS).unwrap_err());
        assert!(e.contains("read 4, write 664"), "{e}");
        let e = format!("{:#}", parse_wrk(NON_2XX).unwrap_err());
        assert!(e.contains("63310 answers were not 2xx"), "{e}");
        assert!(parse_wrk("unable to connect to 198.18.0.11:8089 Connection refused").is_err());
    }

    #[test]
    fn durations_in_every_unit_wrk_prints() {
        assert_eq!(duration_ms("332.00us").unwrap(), 0.332);
        assert_eq!(duration_ms("9.60ms").unwrap(), 9.6);
        assert_eq!(duration_ms("1.02s").unwrap(), 1020.0);
        assert_eq!(duration_ms("1.50m").unwrap(), 90_000.0);
        assert!(duration_ms("3.0xs").is_err());
    }

    #[test]
    fn runs_side_by_side_add_up_and_weigh_their_percentiles() {
        let both = combine(&[load(100.0, 1.0, 4.0, 300), load(50.0, 4.0, 10.0, 100)]);
        assert_eq!(both, load(150.0, 1.75, 5.5, 400));
    }

    #[test]
    fn stub_status_gives_the_requests_count() {
        let text = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nConnection: close\r\n\r\n\
                    Active connections: 1 \nserver accepts handled requests\n 28678 28678 229562 \n\
                    Reading: 0 Writing: 1 Waiting: 0 \n";
        assert_eq!(parse_stub_status(text).unwrap(), 229_562);
        assert!(parse_stub_status("HTTP/1.1 404 Not Found\r\n\r\n").is_err());
    }
}
