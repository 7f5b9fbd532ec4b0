//! The bench's server processes (nginx, HAProxy) in lab namespaces: started with a
//! directory of their own, waited for, and stopped and reaped on drop, also on failure.

use std::{
    fs::File,
    io::Read as _,
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use lb_lab::Netns;

/// Starts `program ARGS` in `ns` with `config` written to DIR/conf, DIR being a directory of
/// its own (the string "DIR" in `config` and `args` stands for it) that also holds its log,
/// and waits up to 10 s until something accepts connections at `listening` in `ns`.
pub(super) fn start_server(
    ns: &Netns,
    program: &str,
    config: &str,
    args: &[&str],
    listening: SocketAddr,
) -> Result<Proc> {
    let dir = std::env::temp_dir().join(format!("{}-bench-{program}", ns.name()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let d = dir.display().to_string();
    std::fs::write(dir.join("conf"), config.replace("DIR", &d))?;
    let out = File::create(dir.join("out"))?;
    let mut cmd = ns.command(program);
    cmd.args(args.iter().map(|a| a.replace("DIR", &d)));
    cmd.stdout(out.try_clone()?).stderr(out);
    let what = format!("{program} in {}", ns.name());
    let mut p = Proc::spawn(cmd, what, Some(dir))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = p.child.try_wait()? {
            bail!("{} exited ({status}) at start:\n{}", p.what, p.log());
        }
        let up = move || TcpStream::connect_timeout(&listening, Duration::from_millis(200)).is_ok();
        if ns.run(up)? {
            return Ok(p);
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not listen on {listening} within 10 s:\n{}",
                p.what,
                p.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process of the bench: SIGTERM, then SIGKILL, and reaped on drop; its directory removed.
pub(super) struct Proc {
    child: Child,
    pub(super) what: String,
    dir: Option<PathBuf>,
}

impl Proc {
    pub(super) fn spawn(mut cmd: Command, what: String, dir: Option<PathBuf>) -> Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Self { child, what, dir })
    }

    /// What a server wrote to its stdout, stderr and error log.
    fn log(&self) -> String {
        let dir = self.dir.as_ref();
        // A file the server never wrote is simply not shown.
        let read = |f: &str| dir.and_then(|d| std::fs::read_to_string(d.join(f)).ok());
        format!(
            "{}{}",
            read("out").unwrap_or_default(),
            read("log").unwrap_or_default()
        )
    }

    /// Waits up to `limit` for the process to end; its output, or its error output as the error.
    pub(super) fn output(&mut self, limit: Duration) -> Result<String> {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bail!("{} still ran after {limit:?}: killed", self.what);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(s) = self.child.stdout.as_mut() {
            s.read_to_string(&mut out)?;
        }
        if let Some(s) = self.child.stderr.as_mut() {
            s.read_to_string(&mut err)?;
        }
        if !status.success() {
            bail!("{} failed ({status}): {err}{out}", self.what);
        }
        Ok(out)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Ok(None): still running. An error of try_wait means there is no child left to stop.
        if matches!(self.child.try_wait(), Ok(None)) {
            // `ip netns exec` execs the program: the child's pid is the server's own.
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                eprintln!("{} ignored SIGTERM for 5 s: killed", self.what);
                // Nothing more to do if even SIGKILL fails; wait() reaps it either way.
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if let Some(dir) = &self.dir {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                eprintln!("could not remove {}: {e}", dir.display());
            }
        }
    }
}
