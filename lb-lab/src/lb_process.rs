//! The balancer processes of a lab: `lbctl attach` (and `lbctl decap attach` on reals)
//! started in a namespace with a log file, waited for until attached, stopped on drop.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{Netns, HOST_IFACE};

pub(super) fn xdp_attached(ns: &Netns) -> Result<bool> {
    Ok(ns.ip(&["link", "show", HOST_IFACE])?.contains(" xdp"))
}

/// Runs `lbctl ARGS...` in `ns`, logging to a file, and waits until it says it is attached
/// (and an XDP program is on the namespace's eth0).
pub(super) fn spawn_lbctl(ns: &Netns, lbctl: &Path, args: &[String]) -> Result<LbProcess> {
    let log_path = std::env::temp_dir().join(format!("{}.{}.log", ns.name(), args[0]));
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let child = ns
        .command(&lbctl.display().to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", lbctl.display()))?;
    let mut process = LbProcess { child, log_path };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = process.child.try_wait()? {
            bail!(
                "`lbctl {}` exited ({status}) before attaching:\n{}",
                args.join(" "),
                process.log()
            );
        }
        // The log line, not only an attached program: a restarted balancer finds the last
        // one's program still attached (--keep-on-exit) until it swaps in its own.
        if xdp_attached(ns)? && process.log().contains("attached;") {
            return Ok(process);
        }
        if Instant::now() > deadline {
            bail!(
                "`lbctl {}` did not attach within 20s:\n{}",
                args.join(" "),
                process.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An `lbctl attach` process; terminated on drop.
pub struct LbProcess {
    child: Child,
    log_path: PathBuf,
}

impl LbProcess {
    /// Sends the process `signal` (SIGHUP: reload).
    pub(super) fn signal(&self, signal: libc::c_int) {
        // `ip netns exec` execs lbctl, so the child pid is lbctl's.
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// The exit status, if it has exited.
    pub(super) fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits for the process to end (after a signal that ends it).
    pub(super) fn wait(&mut self) -> Result<std::process::ExitStatus> {
        Ok(self.child.wait()?)
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Stops lbctl at once: SIGINT (SIGTERM would stop gracefully, forwarding until traffic
    /// ends, up to `--stop-grace`; every lbctl release stops at once on SIGINT).
    pub(super) fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        // `ip netns exec` execs lbctl, so the child pid is lbctl's.
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!(
                    "lbctl ignored SIGINT for 10s and was killed:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LbProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.terminate();
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}
