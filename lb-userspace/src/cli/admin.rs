//! The commands that talk to a running `lbctl attach` over its admin socket.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::vip_flags::VipFlags;
use crate::{
    admin::{client, show, Request, Response, DEFAULT_SOCKET},
    declare::{
        edit::{Edit, RealRef},
        service::Service,
        spec::{RealSpec, RealState, VipSpec},
    },
};

/// Where the running lbctl is, and how to print its answer.
#[derive(Args, Clone, Debug)]
pub struct Talk {
    /// The admin socket of the lbctl to talk to (`lbctl attach --socket`).
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_SOCKET, env = "LBCTL_SOCKET")]
    pub socket: PathBuf,
    /// Print the answer as JSON, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

// Parsed once per run: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Clone, Debug)]
pub enum VipCommand {
    /// List the VIPs served: mode, scheduler, check, reals taking new flows, packets.
    List,
    /// Serve a new VIP, as `lbctl attach --vip` would; its reals are resolved first.
    Add {
        /// ADDRESS:PORT/PROTO (tcp or udp).
        vip: VipSpec,
        #[command(flatten)]
        flags: VipFlags,
        /// Real server: ADDRESS or ADDRESS:PORT, then `,weight=N` and `,state=...`. Repeat.
        #[arg(long = "real", value_name = "REAL", required = true)]
        reals: Vec<RealSpec>,
    },
    /// Stop serving a VIP: its packets go to the LB's own stack again.
    Del {
        /// ADDRESS:PORT/PROTO.
        vip: VipSpec,
    },
}

#[derive(Subcommand, Clone, Debug)]
pub enum RealCommand {
    /// List the reals: weight, state, health, MAC, whether they take new flows.
    List {
        /// Only this VIP's.
        #[arg(long)]
        vip: Option<VipSpec>,
    },
    /// Add a real to a VIP: ADDRESS or ADDRESS:PORT, then `,weight=N` and `,state=...`.
    Add {
        real: RealSpec,
        /// The VIP it serves.
        #[arg(long)]
        vip: VipSpec,
    },
    /// Remove a real: its flows move to the others.
    Del {
        /// ADDRESS, or ADDRESS:PORT.
        real: RealRef,
        /// Only in this VIP [default: every VIP that has it].
        #[arg(long)]
        vip: Option<VipSpec>,
    },
    /// Change a real's weight (0 to 256; 0 drains).
    Weight {
        /// ADDRESS, or ADDRESS:PORT.
        real: RealRef,
        weight: u16,
        /// Only in this VIP [default: every VIP that has it].
        #[arg(long)]
        vip: Option<VipSpec>,
    },
    /// Take no new flows; established ones stay until they end (HAProxy's drain).
    Drain {
        /// ADDRESS, or ADDRESS:PORT.
        real: RealRef,
        /// Only in this VIP [default: every VIP that has it].
        #[arg(long)]
        vip: Option<VipSpec>,
    },
    /// Take no flows at all: established ones move to the other reals (maintenance).
    Maint {
        /// ADDRESS, or ADDRESS:PORT.
        real: RealRef,
        /// Only in this VIP [default: every VIP that has it].
        #[arg(long)]
        vip: Option<VipSpec>,
    },
    /// Back from drain or maint: take new flows again (when its checks pass).
    Ready {
        /// ADDRESS, or ADDRESS:PORT.
        real: RealRef,
        /// Only in this VIP [default: every VIP that has it].
        #[arg(long)]
        vip: Option<VipSpec>,
    },
}

impl VipCommand {
    pub fn request(self) -> Request {
        match self {
            VipCommand::List => Request::VipList,
            VipCommand::Add { vip, flags, reals } => Request::Edit {
                edit: Edit::AddVip {
                    service: Box::new(Service {
                        vip,
                        settings: flags.settings(),
                        reals,
                    }),
                },
            },
            VipCommand::Del { vip } => Request::Edit {
                edit: Edit::DelVip { vip },
            },
        }
    }
}

impl RealCommand {
    pub fn request(self) -> Request {
        let state = |vip, real, state| Request::Edit {
            edit: Edit::State { vip, real, state },
        };
        match self {
            RealCommand::List { vip } => Request::RealList { vip },
            RealCommand::Add { real, vip } => Request::Edit {
                edit: Edit::AddReal { vip, real },
            },
            RealCommand::Del { real, vip } => Request::Edit {
                edit: Edit::DelReal { vip, real },
            },
            RealCommand::Weight { real, weight, vip } => Request::Edit {
                edit: Edit::Weight { vip, real, weight },
            },
            RealCommand::Drain { real, vip } => state(vip, real, RealState::Drain),
            RealCommand::Maint { real, vip } => state(vip, real, RealState::Maint),
            RealCommand::Ready { real, vip } => state(vip, real, RealState::Ready),
        }
    }
}

/// Sends `request`, prints the answer; an error answer fails the command.
/// `lbctl status --check`: Ok when the running lbctl says it serves within `timeout`; the
/// reasons it does not (or that it did not answer) as the error, so the exit code says it.
pub async fn check(talk: &Talk, timeout: std::time::Duration) -> Result<()> {
    let response = tokio::time::timeout(timeout, client::call(&talk.socket, &Request::Check))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "not serving: lbctl did not answer within {}",
                humantime::format_duration(timeout)
            )
        })??;
    print!("{}", show::render(&response, talk.json).0);
    match response {
        Response::Checked { serving: true, .. } => Ok(()),
        Response::Checked { problems, .. } => anyhow::bail!("not serving: {}", problems.join("; ")),
        Response::Error { message } => anyhow::bail!("{message}"),
        other => anyhow::bail!("lbctl answered the check with {other:?}"),
    }
}

/// `lbctl stop`: asks for a graceful stop and, with `wait`, waits until lbctl has exited
/// (its admin socket no longer answers): what a service manager's stop command must do.
pub async fn stop(talk: &Talk, grace: std::time::Duration, wait: bool) -> Result<()> {
    let asked = std::time::Instant::now();
    let request = Request::Stop {
        grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
    };
    self::talk(talk, request).await?;
    if !wait {
        return Ok(());
    }
    // The grace, and as long again for the detach and exit.
    let limit = grace * 2 + std::time::Duration::from_secs(5);
    while tokio::net::UnixStream::connect(&talk.socket).await.is_ok() {
        if asked.elapsed() > limit {
            anyhow::bail!(
                "lbctl is still running {} after the stop was asked",
                humantime::format_duration(limit)
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!(
        "stopped after {}",
        humantime::format_duration(std::time::Duration::from_millis(
            asked.elapsed().as_millis() as u64
        ))
    );
    Ok(())
}

pub async fn talk(talk: &Talk, request: Request) -> Result<()> {
    let response = client::call(&talk.socket, &request).await?;
    match (&response, talk.json) {
        (Response::Error { message }, false) => anyhow::bail!("{message}"),
        (Response::Error { .. }, true) => {
            print!("{}", show::render(&response, true).0);
            anyhow::bail!("lbctl refused the command")
        }
        _ => {
            print!("{}", show::render(&response, talk.json).0);
            Ok(())
        }
    }
}
