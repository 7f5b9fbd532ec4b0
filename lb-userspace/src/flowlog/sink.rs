//! Where flow log lines go: stdout, a file (appended), or syslog (RFC 5424, facility local0,
//! to /dev/log or over UDP, as HAProxy's `log 127.0.0.1 local0` sends to rsyslog).

use std::{
    fmt,
    fs::{File, OpenOptions},
    io::Write as _,
    net::{SocketAddr, UdpSocket},
    os::unix::net::UnixDatagram,
    path::PathBuf,
    str::FromStr,
    time::SystemTime,
};

use anyhow::{anyhow, bail, Context as _, Result};

/// A flow log target, as `--flow-log` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Stdout,
    /// `file:PATH`: appended to.
    File(PathBuf),
    /// `syslog`: the local syslog daemon's socket, /dev/log.
    DevLog,
    /// `syslog:udp:ADDR:PORT`.
    SyslogUdp(SocketAddr),
}

impl FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        if s == "stdout" {
            return Ok(Target::Stdout);
        }
        if s == "syslog" {
            return Ok(Target::DevLog);
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                bail!("--flow-log file: needs a path, e.g. file:/var/log/lbctl-flows.log");
            }
            return Ok(Target::File(path.into()));
        }
        if let Some(addr) = s.strip_prefix("syslog:udp:") {
            let addr = addr.parse().map_err(|_| {
                anyhow!("--flow-log syslog:udp:{addr}: not an ADDRESS:PORT, e.g. syslog:udp:127.0.0.1:514")
            })?;
            return Ok(Target::SyslogUdp(addr));
        }
        bail!(
            "--flow-log {s}: give stdout, file:PATH, syslog (/dev/log) or syslog:udp:ADDRESS:PORT"
        )
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Stdout => f.write_str("stdout"),
            Target::File(p) => write!(f, "file:{}", p.display()),
            Target::DevLog => f.write_str("syslog"),
            Target::SyslogUdp(a) => write!(f, "syslog:udp:{a}"),
        }
    }
}

/// An open target. Sockets are non-blocking: a syslog that cannot keep up loses lines (the
/// caller counts them), it never stalls the daemon.
pub enum Sink {
    Stdout,
    File(std::io::BufWriter<File>),
    DevLog(UnixDatagram, String),
    Udp(UdpSocket, SocketAddr, String),
}

/// RFC 5424 PRI of local0.info: facility 16, severity 6.
const PRI: u8 = 16 * 8 + 6;

impl Sink {
    /// Opens `target`: a file that cannot be opened, or a syslog that is not there, refuses
    /// the start.
    pub fn open(target: &Target) -> Result<Self> {
        Ok(match target {
            Target::Stdout => Sink::Stdout,
            Target::File(path) => Sink::File(std::io::BufWriter::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening the flow log {}", path.display()))?,
            )),
            Target::DevLog => {
                let s = UnixDatagram::unbound().context("a socket for /dev/log")?;
                s.connect("/dev/log")
                    .context("connecting to /dev/log: is a syslog daemon running?")?;
                s.set_nonblocking(true)
                    .context("a non-blocking /dev/log socket")?;
                Sink::DevLog(s, hostname())
            }
            Target::SyslogUdp(addr) => {
                let local: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse()?
                } else {
                    "[::]:0".parse()?
                };
                let s = UdpSocket::bind(local).context("a UDP socket for syslog")?;
                s.set_nonblocking(true)
                    .context("a non-blocking syslog socket")?;
                Sink::Udp(s, *addr, hostname())
            }
        })
    }

    /// Writes one line that happened at `at`. A line that cannot be written (a closed
    /// stdout, a syslog that is gone or full) is an error for the caller to count, not to
    /// stop on.
    pub fn write(&mut self, line: &str, at: SystemTime) -> Result<()> {
        let time = humantime::format_rfc3339_millis(at);
        match self {
            Sink::Stdout => writeln!(std::io::stdout().lock(), "{time} {line}")
                .context("writing the flow log to stdout"),
            Sink::File(f) => writeln!(f, "{time} {line}").context("writing the flow log"),
            Sink::DevLog(s, host) => s
                .send(syslog_message(line, &time.to_string(), host).as_bytes())
                .map(drop)
                .context("sending to /dev/log"),
            Sink::Udp(s, to, host) => s
                .send_to(
                    syslog_message(line, &time.to_string(), host).as_bytes(),
                    *to,
                )
                .map(drop)
                .with_context(|| format!("sending to syslog at {to}")),
        }
    }

    /// Hands what is buffered to the kernel (a file's lines).
    pub fn flush(&mut self) -> Result<()> {
        match self {
            Sink::File(f) => f.flush().context("writing the flow log"),
            _ => Ok(()),
        }
    }
}

/// RFC 5424: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG`.
pub fn syslog_message(line: &str, time: &str, host: &str) -> String {
    format!(
        "<{PRI}>1 {time} {host} lbctl {} flow - {line}",
        std::process::id()
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_say_what_to_give() {
        assert_eq!("stdout".parse::<Target>().unwrap(), Target::Stdout);
        assert_eq!("syslog".parse::<Target>().unwrap(), Target::DevLog);
        assert_eq!(
            "file:/var/log/f.log".parse::<Target>().unwrap(),
            Target::File("/var/log/f.log".into())
        );
        assert_eq!(
            "syslog:udp:127.0.0.1:514".parse::<Target>().unwrap(),
            Target::SyslogUdp("127.0.0.1:514".parse().unwrap())
        );
        for bad in ["", "file:", "syslog:udp:localhost", "tcp:1.2.3.4:5"] {
            let err = bad.parse::<Target>().unwrap_err().to_string();
            assert!(err.contains("--flow-log"), "{bad}: {err}");
        }
        for t in ["stdout", "syslog", "file:/x", "syslog:udp:127.0.0.1:514"] {
            assert_eq!(t.parse::<Target>().unwrap().to_string(), t);
        }
    }

    #[test]
    fn syslog_messages_are_rfc_5424_local0_info() {
        let m = syslog_message("a b", "2026-12-03T07:40:01.123Z", "lb1");
        assert!(m.starts_with("<134>1 2026-12-03T07:40:01.123Z "), "{m}");
        assert!(
            m.contains(" lb1 lbctl ") && m.ends_with(" flow - a b"),
            "{m}"
        );
    }
}
