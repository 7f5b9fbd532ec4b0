//! `/`: the stats page, after HAProxy's: one self-contained HTML document (no external
//! assets) that reloads itself every two seconds: each VIP with its reals, their states,
//! checks, rates and totals, the reasons packets were not forwarded, the last state changes.

use std::fmt::Write as _;

use crate::stats::show::{RealView, View};

/// Seconds between the page's reloads.
pub const REFRESH_SECS: u32 = 2;

/// The page for `view` (rates since the last reading), with the daemon's last `changes`,
/// newest first.
pub fn render(view: &View, iface: &str, changes: &[String]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>lbctl on {iface}</title><style>{STYLE}</style></head><body>\
         <h1>lbctl on {iface}</h1><p class=\"meta\">program {} · flow table {} of {} entries · \
         forwarded per CPU: {} · refreshes every {REFRESH_SECS} s</p>",
        view.prog_id,
        view.flow_entries,
        view.flow_capacity,
        view.per_cpu
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        iface = esc(iface),
    );
    h.push_str(
        "<table><tr><th>VIP / real</th><th>state</th><th>weight</th><th>check</th>\
         <th>last check</th><th>in state</th><th>packets/s</th><th>bytes/s</th>\
         <th>new flows/s</th><th>active flows</th><th>packets</th><th>bytes</th></tr>",
    );
    for v in &view.vips {
        let t = v.traffic.total();
        let _ = write!(
            h,
            "<tr class=\"vip\"><td>{} <small>{} {}</small></td><td></td><td></td><td></td>\
             <td></td><td></td>{}<td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&v.vip),
            v.mode,
            v.balance,
            rate_cells(v.rates),
            v.active_flows,
            t.packets,
            t.bytes
        );
        for r in &v.reals {
            real_row(&mut h, r);
        }
    }
    h.push_str("</table>");
    if view.vips.is_empty() {
        h.push_str("<p>No VIPs.</p>");
    }
    h.push_str("<h2>Last state changes</h2><ul class=\"changes\">");
    if changes.is_empty() {
        h.push_str("<li>none since lbctl started</li>");
    }
    for c in changes {
        let _ = write!(h, "<li>{}</li>", esc(c));
    }
    h.push_str("</ul><h2>Packets not forwarded</h2><table><tr><th>reason</th><th>packets</th><th>bytes</th></tr>");
    for (reason, c) in &view.not_forwarded {
        let class = if c.packets > 0 { " class=\"seen\"" } else { "" };
        let _ = write!(
            h,
            "<tr{class}><td>{reason}</td><td>{}</td><td>{}</td></tr>",
            c.packets, c.bytes
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

fn real_row(h: &mut String, r: &RealView) {
    let t = r.traffic.total();
    let last = r.last_check.as_ref().map_or(String::from("-"), |c| {
        format!(
            "{} in {} ms, {} s ago",
            if c.ok { "ok" } else { &c.result },
            c.took_ms,
            c.ago_ms / 1000
        )
    });
    let _ = write!(
        h,
        "<tr class=\"real {state}\"><td>{}</td><td>{state}</td><td>{}</td><td>{}</td>\
         <td>{}</td><td>{}</td>{}<td>{}</td><td>{}</td><td>{}</td></tr>",
        esc(&r.real),
        r.weight,
        esc(r.check.as_deref().unwrap_or("-")),
        esc(&last),
        r.in_state_secs
            .map_or(String::from("-"), |s| format!("{s} s")),
        rate_cells(r.rates),
        r.active_flows,
        t.packets,
        t.bytes,
        state = esc(&r.state),
    );
}

fn rate_cells(rates: Option<crate::stats::rates::Rates>) -> String {
    match rates {
        Some(r) => format!(
            "<td>{:.0}</td><td>{:.0}</td><td>{:.1}</td>",
            r.packets_per_sec, r.bytes_per_sec, r.new_flows_per_sec
        ),
        None => "<td>-</td><td>-</td><td>-</td>".to_string(),
    }
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font:14px sans-serif;margin:1em}table{border-collapse:collapse}\
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child,th:first-child\
{text-align:left}tr.vip{background:#dde6f3;font-weight:bold}tr.real td:first-child\
{padding-left:1.5em}tr.down{background:#f4c7c3}tr.drain,tr.maint{background:#fce8b2}\
tr.ready{background:#d9ead3}tr.seen{font-weight:bold}.meta{color:#555}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{RealTraffic, Traffic};

    #[test]
    fn the_page_lists_vips_reals_and_changes_escaped() {
        let view = View {
            prog_id: 3,
            daemon: true,
            forwarded: Traffic::default(),
            forwarded_replies: Traffic::default(),
            not_forwarded: [(
                "pass_not_vip",
                Traffic {
                    packets: 4,
                    bytes: 9,
                },
            )]
            .into(),
            per_cpu: vec![1, 2],
            flow_entries: 5,
            flow_capacity: 10,
            flow_log: Default::default(),
            flood_guarded: 0,
            vips: vec![crate::stats::show::VipView {
                vip: "198.18.100.10:80/tcp".into(),
                mode: "dsr",
                balance: "maglev",
                traffic: RealTraffic::default(),
                rates: None,
                active_flows: 0,
                reals: vec![RealView {
                    real: "198.18.0.11:80".into(),
                    state: "down".into(),
                    weight: 1,
                    check: Some("down".into()),
                    last_check: None,
                    in_state_secs: Some(3),
                    traffic: RealTraffic::default(),
                    rates: None,
                    active_flows: 0,
                }],
            }],
        };
        let page = render(&view, "eth0", &["real <x> is DOWN".into()]);
        assert!(page.contains("198.18.100.10:80/tcp") && page.contains("198.18.0.11:80"));
        assert!(page.contains("real &lt;x&gt; is DOWN"), "{page}");
        assert!(page.contains("http-equiv=\"refresh\""));
        assert!(
            !page.contains("src=") && !page.contains("href="),
            "no external assets"
        );
    }
}
