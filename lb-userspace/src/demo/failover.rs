//! The demo's failover: one real's server stops; its health check takes it out of the VIP;
//! requests keep being answered by the others; it comes back when its server does.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use lb_lab::{drive_tcp, Lab, VIP_PORT};

/// What happened when a real's server stopped.
#[derive(Debug)]
pub struct Failover {
    /// The real whose server was stopped ("r2").
    pub stopped: String,
    /// From the stop until `lbctl real list` showed it out.
    pub out_after: Duration,
    pub requests: usize,
    pub answered: usize,
    /// Requests it answered while out: none expected.
    pub to_stopped: usize,
    /// From its server's restart until it took new flows again.
    pub back_after: Duration,
}

/// How long a real may take to go out or come back before the demo gives up.
const PATIENCE: Duration = Duration::from_secs(10);

pub fn run(lab: &mut Lab, lbctl: &Path, requests: usize) -> Result<Failover> {
    let (index, name) = (1, "r2");
    let addr = lab.real_addrs()[index].to_string();
    lab.stop_tcp_server(index, VIP_PORT)?;
    let out_after = wait_for(lab, lbctl, &addr, false)?;
    let results = drive_tcp(&lab.client, Lab::vip(), requests)?;
    let answered = results.iter().filter(|r| r.is_ok()).count();
    let to_stopped = results.iter().flatten().filter(|r| r.real == name).count();
    lab.start_tcp_server(index, VIP_PORT)?;
    let back_after = wait_for(lab, lbctl, &addr, true)?;
    Ok(Failover {
        stopped: name.into(),
        out_after,
        requests,
        answered,
        to_stopped,
        back_after,
    })
}

/// Waits until `lbctl real list` says the real at `addr` takes new flows (`serving`) or not.
fn wait_for(lab: &Lab, lbctl: &Path, addr: &str, serving: bool) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let text = lab.lbctl(lbctl, &["real", "list", "--json"])?;
        let list: serde_json::Value = serde_json::from_str(&text).context("reading real list")?;
        let now = list["reals"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["real"]["addr"] == addr)
            .and_then(|r| r["serving"].as_bool());
        if now == Some(serving) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > PATIENCE {
            bail!(
                "real {addr} was not {} within {PATIENCE:?}:\n{}",
                if serving { "back" } else { "out" },
                lab.lb_log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
