//! `lbctl stats`: read from the maps of the program attached to an interface, so it works
//! with or without a running `lbctl attach`; a running one adds the operator's states and
//! the checks (asked over its admin socket, never waited on for long).

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::{
    admin::{client, Request, Response, DEFAULT_SOCKET},
    stats::{
        self, rates,
        show::{self, View},
    },
};

/// How long a running lbctl gets to answer before the stats go without it.
const DAEMON_WAIT: Duration = Duration::from_millis(500);

#[derive(Args, Clone, Debug)]
pub struct StatsArgs {
    /// Interface the balancer is attached to.
    pub iface: String,
    /// Refresh in place every interval, until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between the two readings rates are taken from.
    #[arg(long, default_value = "1", value_name = "SECONDS")]
    pub interval: f64,
    /// Print everything as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
    /// The packets forwarded and every reason a packet was not, instead of the VIPs.
    #[arg(long)]
    pub reasons: bool,
    /// The admin socket of the running lbctl, for its states and checks.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET, env = "LBCTL_SOCKET")]
    pub socket: PathBuf,
}

pub async fn run(args: &StatsArgs) -> Result<()> {
    if !(args.interval > 0.0 && args.interval <= 3600.0) {
        bail!(
            "--interval {} is out of range: give seconds above 0, up to 3600",
            args.interval
        );
    }
    let interval = Duration::from_secs_f64(args.interval);
    let mut before = stats::read_attached(&args.iface).await?;
    // The reasons need no rates: shown at once.
    if args.reasons && !args.watch && !args.json {
        print!("{}", View::new(&before, None, None).reasons());
        return Ok(());
    }
    loop {
        tokio::time::sleep(interval).await;
        let after = stats::read_attached(&args.iface).await?;
        let rates = rates::of(&before, &after);
        let daemon = daemon(args).await;
        let view = View::new(&after, Some(&rates), daemon.as_ref());
        let text = if args.json {
            serde_json::to_string_pretty(&view).context("encoding the stats")? + "\n"
        } else if args.reasons {
            view.reasons()
        } else {
            view.table()
        };
        if !args.watch {
            print!("{text}");
            return Ok(());
        }
        // Home, clear, then the table: refreshed in place.
        print!("\x1b[H\x1b[2J{text}");
        before = after;
    }
}

/// What the running lbctl says of each real, if one answers in time.
async fn daemon(args: &StatsArgs) -> Option<show::Daemon> {
    let call = client::call(&args.socket, &Request::RealList { vip: None });
    match tokio::time::timeout(DAEMON_WAIT, call).await {
        Ok(Ok(Response::Reals { reals })) => Some(show::daemon_rows(reals)),
        _ => None,
    }
}
