//! Facts about a local interface, from the kernel of the calling thread's namespace.

use std::{ffi::CString, io, os::fd::AsRawFd as _};

use anyhow::{bail, Context as _, Result};
use lb_common::IfaceConfig;

/// What the datapath needs to know about the interface it is attached to.
pub fn config(iface: &str) -> Result<IfaceConfig> {
    let sock =
        std::net::UdpSocket::bind("0.0.0.0:0").context("opening a socket to query interfaces")?;
    let mut req = request(iface)?;
    ioctl(&sock, libc::SIOCGIFHWADDR, &mut req).map_err(|e| missing(iface, e))?;
    // SAFETY: after SIOCGIFHWADDR succeeded, the union holds ifru_hwaddr.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mac = core::array::from_fn(|i| hw[i] as u8);

    let mut req = request(iface)?;
    ioctl(&sock, libc::SIOCGIFMTU, &mut req).map_err(|e| missing(iface, e))?;
    // SAFETY: after SIOCGIFMTU succeeded, the union holds ifru_mtu.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };

    let mut req = request(iface)?;
    let ipv4 = match ioctl(&sock, libc::SIOCGIFADDR, &mut req) {
        Ok(()) => {
            // SAFETY: after SIOCGIFADDR succeeded, the union holds an AF_INET sockaddr.
            let sin = unsafe {
                *(&req.ifr_ifru.ifru_addr as *const libc::sockaddr as *const libc::sockaddr_in)
            };
            sin.sin_addr.s_addr.to_ne_bytes()
        }
        // No IPv4 address on the interface: only tunnel mode needs one, and checks.
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => [0; 4],
        Err(e) => return Err(e).with_context(|| format!("reading the IPv4 address of {iface}")),
    };
    Ok(IfaceConfig {
        mac,
        mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
        ipv4,
        vmacs: Default::default(),
    })
}

/// The interface's index.
pub fn index(iface: &str) -> Result<u32> {
    let name = CString::new(iface).context("interface names have no NUL bytes")?;
    // SAFETY: a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(missing(iface, io::Error::last_os_error()));
    }
    Ok(index)
}

fn request(iface: &str) -> Result<libc::ifreq> {
    let name = CString::new(iface).context("interface names have no NUL bytes")?;
    if name.as_bytes().len() >= libc::IFNAMSIZ {
        bail!(
            "interface name {iface:?} is longer than {} bytes",
            libc::IFNAMSIZ - 1
        );
    }
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

fn ioctl(sock: &std::net::UdpSocket, op: libc::Ioctl, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `op` is an interface ioctl that reads ifr_name and writes the union of the
    // ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), op, req as *mut libc::ifreq) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn missing(iface: &str, e: io::Error) -> anyhow::Error {
    anyhow::anyhow!("interface {iface} does not exist (see `ip link`): {e}")
}
