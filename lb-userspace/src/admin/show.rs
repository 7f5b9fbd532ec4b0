//! Answers as people read them: aligned tables; `--json` prints the answer as it came.

use super::{RealRow, Response, Status, VipRow};

/// The answer as text, and whether it reports success.
pub fn render(response: &Response, json: bool) -> (String, bool) {
    let ok = !matches!(response, Response::Error { .. });
    if json {
        let text = serde_json::to_string_pretty(response).unwrap_or_else(|e| {
            serde_json::json!({"result": "error", "message": format!("cannot encode the answer: {e}")}).to_string()
        });
        return (text + "\n", ok);
    }
    let text = match response {
        Response::Status(s) => status(s),
        Response::Vips { vips } => vip_table(vips),
        Response::Reals { reals } => real_table(reals),
        Response::Explained { lines, .. } => lines.iter().map(|l| format!("{l}\n")).collect(),
        Response::Checked { serving, problems } => checked(*serving, problems),
        Response::Done { message } => format!("{message}\n"),
        Response::Error { message } => format!("error: {message}\n"),
    };
    (text, ok)
}

fn status(s: &Status) -> String {
    let ifaces: Vec<String> = s
        .interfaces
        .iter()
        .map(|i| format!("{} ({})", i.name, i.xdp))
        .collect();
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<14}{v}\n"));
    line("lbctl", format!("{} (pid {})", s.version, s.pid));
    line(
        "up",
        humantime::format_duration(std::time::Duration::from_secs(s.uptime_secs)).to_string(),
    );
    line("config", s.source.clone());
    line("interfaces", ifaces.join(", "));
    line("vips", s.vips.to_string());
    line(
        "reals",
        format!("{} ({} taking new flows)", s.reals, s.reals_up),
    );
    line("forwarded", format!("{} packets", s.packets_forwarded));
    line(
        "not forwarded",
        format!(
            "{} packets (`lbctl stats IFACE` says why)",
            s.packets_not_forwarded
        ),
    );
    for v in &s.vrrp {
        let since = std::time::Duration::from_secs(v.since_secs);
        line(
            "vrrp",
            format!(
                "{} {} is {} (for {})",
                v.kind.to_lowercase(),
                v.name,
                v.state,
                humantime::format_duration(since)
            ),
        );
    }
    if let Some(b) = &s.bgp {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        line(
            "bgp",
            format!("announces {} (routes via {})", list(&b.announced), b.via),
        );
        if !b.rising.is_empty() {
            line("", format!("announcing next: {}", b.rising.join(", ")));
        }
        if let Some(e) = &b.error {
            line("", format!("BIRD did not take the last change: {e}"));
        }
    }
    if let Some(line_) = &s.sync {
        line("sync", line_.clone());
    }
    if s.stopping {
        line(
            "stopping",
            "gracefully: no longer serving, handing the traffic over".into(),
        );
    }
    line("pinned", s.pinned.clone());
    line(
        "on exit",
        if s.keep_on_exit {
            "keeps forwarding (--keep-on-exit)"
        } else {
            "detaches"
        }
        .into(),
    );
    out
}

fn checked(serving: bool, problems: &[String]) -> String {
    if serving {
        return "serving: every interface has the balancer attached, every VIP its quorum of reals\n".into();
    }
    let mut out = String::from("not serving:\n");
    for p in problems {
        out.push_str(&format!("  {p}\n"));
    }
    out
}

fn vip_table(vips: &[VipRow]) -> String {
    let mut rows = vec![row(&[
        "VIP",
        "MODE",
        "BALANCE",
        "REALS",
        "UP",
        "CHECK",
        "WHEN EMPTY",
        "PACKETS",
        "BYTES",
    ])];
    for v in vips {
        rows.push(vec![
            v.vip.to_string(),
            v.mode.clone(),
            v.balance.clone(),
            v.reals.to_string(),
            v.reals_up.to_string(),
            v.check.clone().unwrap_or_else(|| "-".into()),
            v.when_empty.clone(),
            v.packets.to_string(),
            v.bytes.to_string(),
        ]);
    }
    table(&rows)
}

fn real_table(reals: &[RealRow]) -> String {
    let mut rows = vec![row(&[
        "VIP", "REAL", "WEIGHT", "STATE", "HEALTH", "SERVING", "MAC", "WHY",
    ])];
    for r in reals {
        rows.push(vec![
            r.vip.to_string(),
            r.real.to_string(),
            r.weight.to_string(),
            r.state.clone(),
            r.health.clone(),
            if r.serving { "yes" } else { "no" }.into(),
            r.mac.clone(),
            r.why.clone().unwrap_or_default(),
        ]);
    }
    table(&rows)
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Columns padded to their widest cell; the last one is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up_and_errors_say_so() {
        let text = table(&[row(&["A", "BB", "C"]), row(&["long", "x", "y"])]);
        assert_eq!(text, "A     BB  C\nlong  x   y\n");
        let (text, ok) = render(
            &Response::Error {
                message: "no VIP".into(),
            },
            false,
        );
        assert_eq!((text.as_str(), ok), ("error: no VIP\n", false));
        let (json, ok) = render(
            &Response::Done {
                message: "done".into(),
            },
            true,
        );
        assert!(ok && json.contains("\"result\": \"done\""), "{json}");
    }
}
