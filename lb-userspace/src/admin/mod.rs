//! The admin socket: how `lbctl vip|real|reload|status|detach` talk to a running `lbctl
//! attach`. A root-only Unix stream socket; one JSON request per line, one JSON response per
//! line (a shell can speak it: `echo '{"command":"status"}' | socat - UNIX:/run/lbctl.sock`).

pub mod client;
pub mod server;
pub mod show;

use serde::{Deserialize, Serialize};

use crate::declare::edit::{Edit, RealRef};
use crate::declare::spec::VipSpec;

/// Where `lbctl attach` listens and the other commands connect, unless `--socket` says.
pub const DEFAULT_SOCKET: &str = "/run/lbctl.sock";

/// What a command asks of the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status,
    /// Whether this LB serves: what keepalived's track script asks (`lbctl status --check`).
    Check,
    /// keepalived's notify hook: a VRRP instance (or group) `name` entered `state`.
    Vrrp {
        kind: String,
        name: String,
        state: String,
    },
    VipList,
    /// The reals of one VIP, or of all.
    RealList {
        vip: Option<VipSpec>,
    },
    /// A change to the served VIPs and reals, checked and applied as a reload is.
    Edit {
        edit: Edit,
    },
    /// Read the configuration file again and apply it; runtime edits not in it are undone.
    Reload,
    /// Stop gracefully: no longer serve (the check fails, announcements end), forward what
    /// still arrives until nothing has for a second or `grace_ms` runs out, then detach.
    Stop {
        grace_ms: u64,
    },
    /// Stop balancing on one interface; on the last one, the daemon stops.
    Detach {
        iface: String,
    },
    /// What the datapath would do with a packet from `client` to `vip` (tcp or udp).
    Explain {
        proto: String,
        client: std::net::SocketAddr,
        vip: std::net::SocketAddr,
    },
}

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Status(Box<Status>),
    Vips {
        vips: Vec<VipRow>,
    },
    Reals {
        reals: Vec<RealRow>,
    },
    /// What the datapath would do with a packet, a line per step, and the real it goes to.
    Explained {
        lines: Vec<String>,
        real: Option<std::net::SocketAddr>,
        existing_flow: bool,
    },
    /// Whether this LB serves, and each reason it does not.
    Checked {
        serving: bool,
        problems: Vec<String>,
    },
    /// Done, and what changed.
    Done {
        message: String,
    },
    /// Refused or failed; nothing changed unless `message` says otherwise.
    Error {
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    /// The configuration file, or "command line".
    pub source: String,
    pub interfaces: Vec<IfaceRow>,
    pub vips: usize,
    pub reals: usize,
    /// Reals taking new flows.
    pub reals_up: usize,
    pub packets_forwarded: u64,
    pub packets_not_forwarded: u64,
    /// Where the maps and links are pinned.
    pub pinned: String,
    /// Whether forwarding goes on after the daemon stops.
    pub keep_on_exit: bool,
    /// What keepalived's notify hook last said of each VRRP instance (`lbctl notify`).
    #[serde(default)]
    pub vrrp: Vec<VrrpRow>,
    /// What is announced over BGP (through BIRD), when lbctl announces.
    #[serde(default)]
    pub bgp: Option<BgpRow>,
    /// A graceful stop is under way.
    #[serde(default)]
    pub stopping: bool,
    /// Flow sync with the peer LB, when set up: one line.
    #[serde(default)]
    pub sync: Option<String>,
}

/// The BGP announcements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpRow {
    /// Addresses announced.
    pub announced: Vec<String>,
    /// Eligible, waiting out `rise`: "ADDRESS in 1s 200ms".
    pub rising: Vec<String>,
    /// BIRD refused the last change, or could not be reached: why.
    pub error: Option<String>,
    /// The interface the routes go via (it lives as long as lbctl).
    pub via: String,
}

/// A VRRP instance or group, as keepalived's notify hook last reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpRow {
    /// INSTANCE or GROUP.
    pub kind: String,
    pub name: String,
    /// MASTER, BACKUP, FAULT or STOP.
    pub state: String,
    pub since_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceRow {
    pub name: String,
    /// native or generic.
    pub xdp: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipRow {
    pub vip: VipSpec,
    pub mode: String,
    pub balance: String,
    pub check: Option<String>,
    pub when_empty: String,
    pub reals: usize,
    pub reals_up: usize,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealRow {
    pub vip: VipSpec,
    pub real: RealRef,
    pub weight: u16,
    /// ready, drain or maint: what the operator set.
    pub state: String,
    /// up, down or unchecked: what the checks found.
    pub health: String,
    /// Its next hop's MAC, or why there is none.
    pub mac: String,
    /// Whether it takes new flows now.
    pub serving: bool,
    /// The last check's result when it is down.
    pub why: Option<String>,
    /// Checked reals: how long it has been up or down (since its checks started, or its
    /// last change).
    #[serde(default)]
    pub since_secs: Option<u64>,
    /// Checked reals: the last check.
    #[serde(default)]
    pub last_check: Option<CheckRow>,
}

/// One check's result, as the daemon last saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRow {
    pub ok: bool,
    /// "ok", or why it failed.
    pub result: String,
    /// How long the check took.
    pub took_ms: u64,
    /// How long ago it ended.
    pub ago_ms: u64,
}

impl From<crate::health::board::LastCheck> for CheckRow {
    fn from(l: crate::health::board::LastCheck) -> Self {
        Self {
            ok: l.ok,
            result: l.result,
            took_ms: l.took.as_millis() as u64,
            ago_ms: l.at.elapsed().as_millis() as u64,
        }
    }
}
