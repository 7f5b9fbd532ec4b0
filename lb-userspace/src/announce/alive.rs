//! An interface that lives exactly as long as lbctl: a TUN device, which the kernel removes
//! when the last file descriptor on it closes (lbctl exiting, or killed). BIRD announces
//! lbctl's VIPs through routes via this interface, so when lbctl dies, however it dies, BIRD
//! sees the interface go (a link notification, at once), the routes become unreachable and
//! their announcements are withdrawn: no supervisor, no timer.

use std::{ffi::CString, fs::File, os::fd::AsRawFd as _};

use anyhow::{bail, Context as _, Result};

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::Ioctl = 0x4004_54ca;
/// `_IOW('T', 203, int)`.
const TUNSETPERSIST: libc::Ioctl = 0x4004_54cb;

/// The interface, up while this lives.
pub struct AliveIface {
    name: String,
    tun: File,
    /// It was there already: kept by an lbctl that handed over (`--keep-on-exit`).
    pub existed: bool,
}

impl AliveIface {
    /// Creates the interface `name` (a TUN device that is not persistent) and brings it up.
    pub fn create(name: &str) -> Result<Self> {
        let cname = CString::new(name).context("an interface name has no NUL bytes")?;
        if cname.as_bytes().len() >= libc::IFNAMSIZ {
            bail!(
                "interface name {name:?} is longer than {} bytes",
                libc::IFNAMSIZ - 1
            );
        }
        let existed = crate::host::iface::index(name).is_ok();
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .context(
                "opening /dev/net/tun (the tun driver), for the interface BIRD's routes go via",
            )?;
        // SAFETY: ifreq is plain data; all-zero is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(cname.as_bytes()) {
            *dst = *src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads the ifreq we own, on the tun fd we own.
        if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req as *mut libc::ifreq) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| {
                format!("creating the interface {name} (is another lbctl using it?)")
            });
        }
        let alive = Self {
            name: name.to_owned(),
            tun,
            existed,
        };
        // Taken over from an lbctl that kept it: from now on it ends with this one.
        alive.persist(false)?;
        set_up(name)?;
        Ok(alive)
    }

    /// Keeps the interface after lbctl exits (a hand-over with `--keep-on-exit`: the program
    /// goes on forwarding, so its addresses stay announced until the next lbctl takes the
    /// interface over, or `lbctl detach` removes it).
    pub fn persist(&self, keep: bool) -> Result<()> {
        // SAFETY: TUNSETPERSIST takes its argument by value, on the tun fd we own.
        if unsafe {
            libc::ioctl(
                self.tun.as_raw_fd(),
                TUNSETPERSIST,
                libc::c_ulong::from(keep),
            )
        } != 0
        {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setting {} to outlive lbctl: {keep}", self.name));
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Removes the interface `name` an lbctl kept (`--keep-on-exit` with BGP) when no lbctl
/// holds it: BIRD then withdraws what it announced. Returns whether there was one.
pub fn remove_kept(name: &str) -> Result<bool> {
    if crate::host::iface::index(name).is_err() {
        return Ok(false);
    }
    // Taking it (TUNSETIFF on its name), then not keeping it: it goes when closed.
    let taken = AliveIface::create(name)?;
    taken.persist(false)?;
    drop(taken);
    Ok(true)
}

/// The name of the interface for lbctl attached to `first_iface`: `lbctl-` and the
/// interface's name, cut to the kernel's 15 bytes.
pub fn name_for(first_iface: &str) -> String {
    let mut name = format!("lbctl-{first_iface}");
    name.truncate(libc::IFNAMSIZ - 1);
    name
}

fn set_up(name: &str) -> Result<()> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").context("opening a socket")?;
    // SAFETY: as above.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFFLAGS,
            &mut req as *mut libc::ifreq,
        ) != 0
        {
            return Err(std::io::Error::last_os_error()).context("reading its flags");
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCSIFFLAGS,
            &mut req as *mut libc::ifreq,
        ) != 0
        {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("bringing {name} up"));
        }
    }
    Ok(())
}
