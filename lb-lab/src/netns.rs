//! A network namespace that exists as long as its guard, and a bpffs mount likewise.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::programs::program;

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A prefix unique to this process and call, so labs of parallel tests never collide.
pub fn unique_prefix() -> String {
    format!(
        "lbl{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn check(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

impl Netns {
    /// Creates the namespace with loopback up and IPv6 off (the IPv4 lab stays free of
    /// neighbour-discovery chatter, so counters count only what the tests send).
    pub fn create(name: &str) -> Result<Self> {
        check(program("ip").args(["netns", "add", name]))
            .context("creating a network namespace needs root and iproute2")?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let out = check(program("ip").arg("-n").arg(&self.name).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The MAC of each Ethernet interface in the namespace, by interface name.
    pub fn macs(&self) -> Result<Vec<(String, [u8; 6])>> {
        let out = self.ip(&["-o", "link", "show"])?;
        Ok(out
            .lines()
            .filter_map(|line| {
                // "2: eth0@if3: <...> ... link/ether 02:00:00:00:00:01 brd ..."
                let name = line.split(": ").nth(1)?.split('@').next()?;
                let text = line
                    .split("link/ether ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?;
                Some((name.to_owned(), parse_mac(text)?))
            })
            .collect())
    }

    /// The MAC of `iface` in the namespace.
    pub fn mac(&self, iface: &str) -> Result<[u8; 6]> {
        self.macs()?
            .into_iter()
            .find_map(|(name, mac)| (name == iface).then_some(mac))
            .ok_or_else(|| anyhow!("{iface} in {} has no Ethernet address", self.name))
    }

    /// Runs a program inside the namespace and returns its standard output.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = check(self.command(program).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command that will run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        crate::programs::assert_listed(program);
        let mut c = crate::programs::program("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it opens live there.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
        self.spawn(f)?.join()
    }

    /// Starts `f` on a thread inside this namespace. `f` never runs anywhere else: when the
    /// namespace cannot be entered, this returns the error and `f` is dropped unrun.
    pub fn spawn<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<NsThread<R>> {
        let file = File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("opening namespace {}", self.name))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            // SAFETY: setns changes this thread only; the fd is a valid namespace file.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                let _ = tx.send(Err(std::io::Error::last_os_error()));
                return None;
            }
            let _ = tx.send(Ok(()));
            Some(f())
        });
        rx.recv()
            .map_err(|_| anyhow!("the thread for namespace {} died", self.name))?
            .with_context(|| format!("entering namespace {}", self.name))?;
        Ok(NsThread {
            handle,
            ns: self.name.clone(),
        })
    }
}

/// A thread running inside a namespace.
pub struct NsThread<R> {
    handle: std::thread::JoinHandle<Option<R>>,
    ns: String,
}

impl<R> NsThread<R> {
    pub fn join(self) -> Result<R> {
        match self.handle.join() {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(anyhow!("could not enter namespace {}", self.ns)),
            Err(_) => Err(anyhow!("a thread in namespace {} panicked", self.ns)),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let status = program("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "warning: could not delete network namespace {}; remove it with `ip netns del {}`",
                self.name, self.name
            );
        }
    }
}

/// A bpffs instance of the lab's own, mounted in the test's mount namespace (which the
/// namespaces' `ip netns exec` processes see): the balancer pins its state there, so a
/// restarted balancer finds it, and labs running side by side never share it. Unmounted on
/// drop, with whatever is still pinned in it.
pub struct BpfMount {
    path: PathBuf,
}

impl BpfMount {
    pub fn new(name: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("{name}-bpf"));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let status = program("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&path)
            .status()
            .context("running mount")?;
        if !status.success() {
            bail!("mounting bpffs at {} failed ({status})", path.display());
        }
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpfMount {
    fn drop(&mut self) {
        // Lazy: a process still holding a pinned object does not keep the lab from ending.
        let unmounted = program("umount")
            .arg("-l")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if unmounted {
            if let Err(e) = std::fs::remove_dir(&self.path) {
                eprintln!("could not remove {}: {e}", self.path.display());
            }
        } else {
            eprintln!("could not unmount {}", self.path.display());
        }
    }
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}
