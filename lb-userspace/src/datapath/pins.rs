//! The balancer's pinned state: a directory on bpffs (by default /sys/fs/bpf/lbctl/IFACE,
//! after the first interface) holding the maps of `map_names::KEPT`: what is served, the
//! flows, the counters. The program is attached over netlink, so it stays attached when
//! lbctl exits with `--keep-on-exit` (or dies). The next lbctl on the same directory takes
//! both over: it loads its program onto the same maps, and swaps it for the attached one in
//! one step per interface, so no packet finds the interface without a program, nor a flow
//! without its entry.

use std::{
    fs::File,
    os::{
        fd::{AsFd as _, AsRawFd as _},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use aya::maps::{HashMap, Map, MapData, MapInfo};
use lb_common::{map_names, IfaceConfig};
use tracing::{debug, info};

use super::{program::info as program_info, xdp_netlink};

/// The magic number of bpffs in statfs(2)'s f_type.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Where pinned state lives unless `--pin-dir` says otherwise.
pub const PIN_ROOT: &str = "/sys/fs/bpf/lbctl";

/// The default state directory of a balancer whose first interface is `iface`.
pub fn default_dir(iface: &str) -> PathBuf {
    Path::new(PIN_ROOT).join(iface)
}

/// An opened state directory, locked against a second lbctl for as long as it is held.
pub struct StateDir {
    path: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Opens (creating it when missing) the state directory `path`, which must be on bpffs
    /// (mounted at /sys/fs/bpf here when nothing is), and takes its lock.
    pub fn open(path: &Path) -> Result<Self> {
        let bpf = Path::new("/sys/fs/bpf");
        if path.starts_with(bpf) && !on_bpffs(bpf)? {
            mount_bpffs()?;
        }
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating the state directory {}", path.display()))?;
        if !on_bpffs(path)? {
            bail!("{} is not on bpffs, where BPF objects are pinned: give a --pin-dir on one (`mount -t bpf bpf DIR`)", path.display());
        }
        let lock = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!("another lbctl holds {}: it serves these interfaces already (`lbctl status`), or give this one its own --pin-dir", path.display());
        }
        Ok(Self {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this directory is on a bpffs that ends with this process: lbctl runs in a
    /// mount namespace that the host's init (or, when that cannot be read, the nearest
    /// ancestor in another mount namespace) does not share, and which holds this directory
    /// where that process does not see it. `ip netns exec` does exactly that: it makes a
    /// mount namespace for the command it runs (and a shell or sudo it runs), with a fresh
    /// /sys, on whose /sys/fs/bpf lbctl mounts bpffs. When no such process can be read, it
    /// cannot tell and says no; a container's own bpffs is not seen (its processes share
    /// its namespace).
    pub fn dies_with_this_process(&self) -> Result<bool> {
        let path = std::fs::canonicalize(&self.path)
            .with_context(|| format!("resolving {}", self.path.display()))?;
        let ours = mount_ns("self").context("reading /proc/self/ns/mnt")?;
        let Some(other) = outside_process(ours) else {
            return Ok(false);
        };
        let here =
            std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        let relative = path.strip_prefix("/").unwrap_or(&path);
        let seen_there = Path::new("/proc")
            .join(other.to_string())
            .join("root")
            .join(relative);
        Ok(match std::fs::metadata(&seen_there) {
            Ok(there) => there.dev() != here.dev(),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        })
    }

    pub fn map_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The kernel's id of the pinned map `name`: what tells this lbctl's program (and an
    /// earlier one on the same maps) from any other.
    pub fn map_id(&self, name: &str) -> Result<u32> {
        let path = self.map_path(name);
        Ok(MapInfo::from_pin(&path)
            .with_context(|| format!("reading the pinned map {}", path.display()))?
            .id())
    }

    /// Removes everything pinned here (the maps are freed once nothing uses them) and the
    /// directory.
    pub fn remove_all(&self) -> Result<()> {
        for entry in std::fs::read_dir(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?
        {
            let path = entry?.path();
            std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
        }
        std::fs::remove_dir(&self.path).with_context(|| format!("removing {}", self.path.display()))
    }
}

/// `lbctl detach IFACE` with no lbctl running: takes the program an earlier lbctl left
/// forwarding (`--keep-on-exit`, or a crash) off `iface`, and removes the pinned state once
/// no interface has it any more. Returns what was done.
pub fn detach_kept(iface: &str, dir: &Path) -> Result<String> {
    if !dir.exists() {
        bail!("no lbctl is running, and none left state in {}: lbctl has nothing attached to {iface} (another pin directory? `--pin-dir`)", dir.display());
    }
    let pins = StateDir::open(dir)?;
    let flows = pins.map_id(map_names::FLOWS)?;
    let ifindex = crate::host::iface::index(iface)?;
    let attached = xdp_netlink::attached(ifindex)?;
    let Some(attached) = attached.filter(|a| runs_on(a.prog_id, flows)) else {
        bail!(
            "{iface} has no program of the state in {} attached",
            dir.display()
        );
    };
    let prog = program_info(attached.prog_id)?;
    let fd = prog.fd().context("opening the attached program")?;
    xdp_netlink::set(ifindex, None, attached.mode, Some(fd.as_fd()))
        .with_context(|| format!("detaching from {iface}"))?;
    // The other interfaces it may be on: those the program was told about.
    for other in pinned_ifaces(&pins.map_path(map_names::IFACES))? {
        match xdp_netlink::attached(other) {
            Ok(Some(a)) if runs_on(a.prog_id, flows) => {
                return Ok(format!(
                    "detached from {iface}; interface {other} still has it (`lbctl detach` it too to remove the state)"
                ));
            }
            Ok(_) => {}
            // An interface gone since: nothing attached there.
            Err(e) => debug!(ifindex = other, error = %format!("{e:#}"), "not asking about it"),
        }
    }
    pins.remove_all()?;
    // The BGP announcements a kept lbctl left (their routes go via its interface) end too.
    let alive = crate::announce::alive::name_for(iface);
    let withdrawn = match crate::announce::alive::remove_kept(&alive) {
        Ok(true) => format!("; removed {alive}, so BIRD withdraws its VIPs"),
        Ok(false) => String::new(),
        Err(e) => format!(
            "; could not remove {alive} ({e:#}): `ip link del {alive}` so BIRD withdraws its VIPs"
        ),
    };
    Ok(format!(
        "detached from {iface}; the flows and the rest of {} are removed{withdrawn}",
        dir.display()
    ))
}

/// The interfaces a program was told about: IFACES' keys, whichever layout pinned it (its
/// values grew from 12 to 24 bytes in layout 4; `lbctl detach` serves both).
fn pinned_ifaces(path: &Path) -> Result<Vec<u32>> {
    let open = || -> Result<Map> {
        let data =
            MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Map::HashMap(data))
    };
    let keys: Result<Vec<u32>, _> = match HashMap::<MapData, u32, IfaceConfig>::try_from(open()?) {
        Ok(ifaces) => ifaces.keys().collect(),
        Err(_) => HashMap::<MapData, u32, [u8; 12]>::try_from(open()?)?
            .keys()
            .collect(),
    };
    keys.context("reading the pinned IFACES")
}

/// Whether program `prog_id` works on the map of id `flows`: an lbctl's on this state.
fn runs_on(prog_id: u32, flows: u32) -> bool {
    program_info(prog_id)
        .and_then(|p| Ok(p.map_ids()?.unwrap_or_default()))
        .is_ok_and(|ids| ids.contains(&flows))
}

/// The (device, inode) of the mount namespace of process `pid` ("self" for this one).
fn mount_ns(pid: &str) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(format!("/proc/{pid}/ns/mnt"))?;
    Ok((m.dev(), m.ino()))
}

/// A process in another mount namespace than `ours` whose namespace can be read: the host's
/// init, else the nearest such ancestor of this process.
fn outside_process(ours: (u64, u64)) -> Option<u32> {
    if mount_ns("1").is_ok_and(|ns| ns != ours) {
        return Some(1);
    }
    let mut pid = std::os::unix::process::parent_id();
    // Bounded: a chain of parents ends at init long before this.
    for _ in 0..64 {
        if pid <= 1 {
            return None;
        }
        match mount_ns(&pid.to_string()) {
            Ok(ns) if ns != ours => return Some(pid),
            Ok(_) => {}
            // Another user's process: its namespace cannot be read, nor its parents' trusted.
            Err(e) => {
                debug!(pid, error = %e, "cannot read a parent's mount namespace");
                return None;
            }
        }
        pid = parent_of(pid)?;
    }
    None
}

/// The parent of process `pid`, from /proc/PID/stat.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses; the last ')' ends it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn on_bpffs(path: &Path) -> Result<bool> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .context("a path with a NUL byte")?;
    // SAFETY: statfs(2) writes into the zeroed struct we pass; `c` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs {}", path.display()));
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Mounts bpffs at /sys/fs/bpf, as bpftool does when nothing is mounted there.
fn mount_bpffs() -> Result<()> {
    std::fs::create_dir_all("/sys/fs/bpf").context("creating /sys/fs/bpf")?;
    // SAFETY: mount(2) with constant, NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .context("mounting bpffs at /sys/fs/bpf (`mount -t bpf bpf /sys/fs/bpf`)");
    }
    info!("mounted bpffs at /sys/fs/bpf");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_process_parent_is_read_from_proc() {
        assert_eq!(
            super::parent_of(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
        assert_eq!(super::parent_of(u32::MAX), None);
    }
}
