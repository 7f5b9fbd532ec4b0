//! Health checks as HAProxy has them (`check inter 2s rise 2 fall 3`): what a check is, as
//! operators write it, and the state machine that turns results into up and down. Pure: the
//! probes themselves are in `probe`.

use std::{fmt, str::FromStr, time::Duration};

/// What a check sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connection that opens.
    Tcp,
    /// An HTTP/1.0 GET of `path` answered with `status`.
    Http { path: String, status: u16 },
    /// A UDP datagram of `payload` that gets a reply.
    Udp { payload: String },
}

/// A check of a VIP's reals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub probe: Probe,
    /// The port checked; `None`: the real's service port.
    pub port: Option<u16>,
    /// Between checks of a real that is up and steady.
    pub inter: Duration,
    /// Between checks while a real is changing state (up, failing; down, succeeding).
    pub fastinter: Duration,
    /// Between checks of a real that is down.
    pub downinter: Duration,
    /// Successes in a row that bring a down real up; failures in a row that take it down.
    pub rise: u32,
    pub fall: u32,
    /// How long one check may take.
    pub timeout: Duration,
    /// dsr and tunnel: check through the VIP, as clients reach the real (the LB's frame to
    /// the real's MAC, or its tunnel, addressed to the VIP), which proves the real accepts
    /// the VIP; else the real's own address is checked.
    pub via_vip: bool,
}

impl Check {
    /// HAProxy's defaults: every 2 s, up after 2 successes, down after 3 failures, fastinter
    /// and downinter as inter, a check given as long as the interval.
    pub fn new(probe: Probe) -> Self {
        let inter = Duration::from_secs(2);
        Self {
            probe,
            port: None,
            inter,
            fastinter: inter,
            downinter: inter,
            rise: 2,
            fall: 3,
            timeout: inter,
            via_vip: false,
        }
    }
}

/// Why a check string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckError {
    #[error("`{0}`: expected tcp, http or udp, then options, e.g. `http,path=/health,inter=1s,rise=2,fall=3`")]
    Kind(String),
    #[error("`{0}`: unknown option `{1}`; a check takes port, inter, fastinter, downinter, rise, fall, timeout, via (http: path, status; udp: payload)")]
    Option(String, String),
    #[error("`{0}`: `{1}` is not a duration like 2s or 500ms")]
    Duration(String, String),
    #[error("`{0}`: `{1}` must be a whole number {2}")]
    Number(String, String, &'static str),
    #[error("`{0}`: via is `vip` (through the VIP, as clients) or `real` (its own address)")]
    Via(String),
    #[error("`{0}`: an http check goes to the real's own address; via=vip takes tcp or udp")]
    HttpViaVip(String),
}

impl FromStr for Check {
    type Err = CheckError;

    /// `KIND[,OPTION=VALUE]...`, as in `tcp`, `http,path=/health,status=200,inter=1s`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split(',').map(str::trim);
        let mut check = Check::new(match parts.next() {
            Some("tcp") => Probe::Tcp,
            Some("http") => Probe::Http {
                path: "/".into(),
                status: 200,
            },
            Some("udp") => Probe::Udp {
                payload: "ping".into(),
            },
            _ => return Err(CheckError::Kind(text.into())),
        });
        let (mut fast, mut down, mut timeout) = (None, None, None);
        for part in parts {
            let Some((key, value)) = part.split_once('=') else {
                return Err(CheckError::Option(text.into(), part.into()));
            };
            let duration = || {
                humantime::parse_duration(value)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| CheckError::Duration(text.into(), part.into()))
            };
            let number = |what| {
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| CheckError::Number(text.into(), part.into(), what))
            };
            match (key, &mut check.probe) {
                ("inter", _) => check.inter = duration()?,
                ("fastinter", _) => fast = Some(duration()?),
                ("downinter", _) => down = Some(duration()?),
                ("timeout", _) => timeout = Some(duration()?),
                ("rise", _) => check.rise = number("from 1")?,
                ("fall", _) => check.fall = number("from 1")?,
                ("port", _) => {
                    check.port = Some(value.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(
                        || CheckError::Number(text.into(), part.into(), "from 1 to 65535"),
                    )?)
                }
                ("path", Probe::Http { path, .. }) => *path = value.into(),
                ("status", Probe::Http { status, .. }) => {
                    *status = value
                        .parse::<u16>()
                        .ok()
                        .filter(|s| (100..600).contains(s))
                        .ok_or_else(|| {
                            CheckError::Number(text.into(), part.into(), "from 100 to 599")
                        })?
                }
                ("payload", Probe::Udp { payload }) => *payload = value.into(),
                ("via", _) => {
                    check.via_vip = match value {
                        "vip" => true,
                        "real" => false,
                        _ => return Err(CheckError::Via(text.into())),
                    }
                }
                _ => return Err(CheckError::Option(text.into(), part.into())),
            }
        }
        check.fastinter = fast.unwrap_or(check.inter);
        check.downinter = down.unwrap_or(check.inter);
        check.timeout = timeout.unwrap_or(check.inter);
        if check.via_vip && matches!(check.probe, Probe::Http { .. }) {
            return Err(CheckError::HttpViaVip(text.into()));
        }
        Ok(check)
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.probe {
            Probe::Tcp => write!(f, "tcp")?,
            Probe::Http { path, status } => write!(f, "http,path={path},status={status}")?,
            Probe::Udp { payload } => write!(f, "udp,payload={payload}")?,
        }
        if let Some(p) = self.port {
            write!(f, ",port={p}")?;
        }
        let d = humantime::format_duration;
        write!(
            f,
            ",inter={},rise={},fall={}",
            d(self.inter),
            self.rise,
            self.fall
        )?;
        // The rest only when not what `inter` implies, so the common case reads short.
        for (name, value) in [
            ("fastinter", self.fastinter),
            ("downinter", self.downinter),
            ("timeout", self.timeout),
        ] {
            if value != self.inter {
                write!(f, ",{name}={}", d(value))?;
            }
        }
        if self.via_vip {
            write!(f, ",via=vip")?;
        }
        Ok(())
    }
}

/// A real's health as its checks found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub up: bool,
    /// Results in a row against the current state (failures while up, successes while down).
    against: u32,
}

/// A change of state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    WentUp,
    WentDown,
}

impl Health {
    /// A real starts up: it serves from the start, as HAProxy's servers do, until `fall`
    /// checks in a row fail.
    pub const fn new() -> Self {
        Self::starting(true)
    }

    /// A real whose health is already known (its checks restarted with a reload).
    pub const fn starting(up: bool) -> Self {
        Self { up, against: 0 }
    }

    /// Takes one check's result; says when the state changes.
    pub fn observe(&mut self, ok: bool, check: &Check) -> Option<Change> {
        if ok == self.up {
            self.against = 0;
            return None;
        }
        self.against += 1;
        let needed = if self.up { check.fall } else { check.rise };
        if self.against < needed {
            return None;
        }
        self.up = ok;
        self.against = 0;
        Some(if ok { Change::WentUp } else { Change::WentDown })
    }

    /// How long until the next check: `fastinter` while a change is under way, `downinter`
    /// while down, else `inter`.
    pub fn next_in(&self, check: &Check) -> Duration {
        if self.against > 0 {
            check.fastinter
        } else if self.up {
            check.inter
        } else {
            check.downinter
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_haproxy_like_checks() {
        let c: Check = "tcp".parse().unwrap();
        assert_eq!(c, Check::new(Probe::Tcp));
        let c: Check =
            "http,path=/health,status=204,inter=500ms,fastinter=100ms,rise=1,fall=2,port=8081"
                .parse()
                .unwrap();
        assert_eq!(
            c.probe,
            Probe::Http {
                path: "/health".into(),
                status: 204
            }
        );
        assert_eq!(
            (c.inter, c.fastinter, c.downinter, c.timeout),
            (
                Duration::from_millis(500),
                Duration::from_millis(100),
                Duration::from_millis(500),
                Duration::from_millis(500)
            )
        );
        assert_eq!((c.rise, c.fall, c.port), (1, 2, Some(8081)));
        let c: Check = "udp,payload=hello,timeout=1s".parse().unwrap();
        assert_eq!(
            c.probe,
            Probe::Udp {
                payload: "hello".into()
            }
        );
        assert_eq!(c.timeout, Duration::from_secs(1));
    }

    #[test]
    fn a_check_reads_back_as_it_prints() {
        for text in [
            "tcp",
            "http,path=/health,status=204,port=8081,inter=1s,fastinter=200ms,timeout=500ms",
            "udp,payload=hello,downinter=10s,rise=5,fall=1",
            "tcp,via=vip,inter=500ms",
        ] {
            let c: Check = text.parse().unwrap();
            assert_eq!(c.to_string().parse::<Check>().unwrap(), c, "{text} → {c}");
        }
    }

    #[test]
    fn rejects_with_what_is_wrong() {
        let err = |s: &str| s.parse::<Check>().unwrap_err();
        assert!(matches!(err("icmp"), CheckError::Kind(_)));
        assert!(matches!(err("tcp,path=/"), CheckError::Option(..)));
        assert!(matches!(err("tcp,inter=soon"), CheckError::Duration(..)));
        assert!(matches!(err("tcp,inter=0s"), CheckError::Duration(..)));
        assert!(matches!(err("tcp,rise=0"), CheckError::Number(..)));
        assert!(matches!(err("http,status=999"), CheckError::Number(..)));
        assert!(matches!(err("tcp,port=0"), CheckError::Number(..)));
        assert!(matches!(err("tcp,via=lb"), CheckError::Via(..)));
        assert!(matches!(err("http,via=vip"), CheckError::HttpViaVip(..)));
        assert!(matches!(err("tcp,fall"), CheckError::Option(..)));
    }

    #[test]
    fn down_after_fall_failures_in_a_row_up_after_rise_successes() {
        let c: Check = "tcp,rise=2,fall=3,inter=2s,fastinter=500ms,downinter=5s"
            .parse()
            .unwrap();
        let mut h = Health::new();
        assert!(h.up);
        assert_eq!(h.next_in(&c), Duration::from_secs(2));
        assert_eq!(h.observe(false, &c), None);
        assert_eq!(
            h.next_in(&c),
            Duration::from_millis(500),
            "fastinter while failing"
        );
        assert_eq!(h.observe(true, &c), None, "a success resets the count");
        assert_eq!(h.observe(false, &c), None);
        assert_eq!(h.observe(false, &c), None);
        assert_eq!(h.observe(false, &c), Some(Change::WentDown));
        assert!(!h.up);
        assert_eq!(
            h.next_in(&c),
            Duration::from_secs(5),
            "downinter while down"
        );
        assert_eq!(h.observe(false, &c), None);
        assert_eq!(h.observe(true, &c), None);
        assert_eq!(h.observe(true, &c), Some(Change::WentUp));
        assert!(h.up);
    }
}
