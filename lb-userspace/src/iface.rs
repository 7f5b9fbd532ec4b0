//! Facts about a local interface, from the kernel of the calling thread's namespace.

use std::{ffi::CString, os::fd::AsRawFd as _};

use anyhow::{bail, Context as _, Result};

/// The interface's Ethernet address (SIOCGIFHWADDR).
pub fn mac(iface: &str) -> Result<[u8; 6]> {
    let name = CString::new(iface).context("interface names have no NUL bytes")?;
    if name.as_bytes().len() >= libc::IFNAMSIZ {
        bail!(
            "interface name {iface:?} is longer than {} bytes",
            libc::IFNAMSIZ - 1
        );
    }
    let sock =
        std::net::UdpSocket::bind("0.0.0.0:0").context("opening a socket to query interfaces")?;
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads ifr_name and writes ifr_hwaddr of the ifreq we own.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!("interface {iface} does not exist (see `ip link`): {err}");
    }
    // SAFETY: after SIOCGIFHWADDR succeeded, the union holds ifru_hwaddr.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(core::array::from_fn(|i| data[i] as u8))
}
