//! Telling BIRD 2 which addresses to announce: the include file lbctl writes, and
//! `birdc configure`, which makes BIRD read it (a soft reconfiguration: sessions stay up,
//! only the routes that changed are sent).
//!
//! BIRD's configuration includes the file and exports its protocol's routes to the BGP
//! peers (docs/examples/bird-lb.conf):
//!
//! ```text
//! include "/run/lbctl/bird-vips.conf";
//! protocol bgp router { ...; ipv4 { import none; export where proto = "lbctl_vips"; }; }
//! ```

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// How long birdc may take to reconfigure BIRD.
const BIRDC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where BIRD listens for birdc, unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/bird/bird.ctl";

/// How lbctl reaches BIRD.
#[derive(Clone, Debug)]
pub struct Bird {
    /// The file BIRD's configuration includes; lbctl owns it.
    pub include: PathBuf,
    /// BIRD's control socket.
    pub socket: PathBuf,
}

/// The include file announcing `addrs`, each a host route via `alive` (the interface that
/// lives as long as lbctl).
pub fn render(addrs: &BTreeSet<IpAddr>, alive: &str) -> String {
    let mut out = String::from(
        "# Written by lbctl: the VIP addresses this LB announces (docs/beyond-one-machine.md).\n\
         # Do not edit: lbctl rewrites it and runs `birdc configure` on every change. The routes\n\
         # go via an interface that exists only while lbctl runs: if lbctl dies, BIRD withdraws\n\
         # them at once.\n",
    );
    for (name, channel, v6) in [("lbctl_vips", "ipv4", false), ("lbctl_vips6", "ipv6", true)] {
        out += &format!("protocol static {name} {{\n    {channel};\n");
        for a in addrs.iter().filter(|a| a.is_ipv6() == v6) {
            let len = if v6 { 128 } else { 32 };
            out += &format!("    route {a}/{len} via \"{alive}\";\n");
        }
        out += "}\n";
    }
    out
}

impl Bird {
    /// Writes the include file (whole, by a rename) and has BIRD read it.
    pub fn announce(&self, addrs: &BTreeSet<IpAddr>, alive: &str) -> Result<()> {
        self.write(addrs, alive)?;
        self.configure()
    }

    /// Writes the include file (whole, by a rename), without telling BIRD.
    pub fn write(&self, addrs: &BTreeSet<IpAddr>, alive: &str) -> Result<()> {
        write_atomically(&self.include, &render(addrs, alive))
    }

    /// `birdc configure`: BIRD reads its configuration again, the include with it.
    fn configure(&self) -> Result<()> {
        let mut child = Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .arg("configure")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running birdc (apt-get install bird2)")?;
        // A BIRD that does not answer must not hold the announcements up for good: the
        // task tries again.
        let deadline = std::time::Instant::now() + BIRDC_TIMEOUT;
        while child.try_wait()?.is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "`birdc -s {} configure` did not answer within {BIRDC_TIMEOUT:?}",
                    self.socket.display()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let out = child.wait_with_output()?;
        let said = String::from_utf8_lossy(&out.stdout);
        // birdc exits 0 even when BIRD refuses the configuration: its answer says.
        if !out.status.success()
            || !(said.contains("Reconfigured")
                || said.contains("Reconfiguration in progress")
                || said.contains("Reconfiguration already in progress"))
        {
            bail!(
                "`birdc -s {} configure` did not reconfigure BIRD: {}{}",
                self.socket.display(),
                said.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// The addresses an include file announces (what the last lbctl left), none if unreadable.
pub fn read_announced(path: &Path) -> BTreeSet<IpAddr> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("route "))
        .filter_map(|r| r.split('/').next())
        .filter_map(|a| a.parse().ok())
        .collect()
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("lbctl-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_include_has_a_host_route_per_address_via_the_alive_interface() {
        let addrs: BTreeSet<IpAddr> = ["198.18.100.10", "2001:2::10", "198.18.100.11"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let text = render(&addrs, "lbctl-eth0");
        let v4 = text.split("protocol static lbctl_vips6").next().unwrap();
        assert!(v4.contains("protocol static lbctl_vips {\n    ipv4;\n"));
        assert!(v4.contains("    route 198.18.100.10/32 via \"lbctl-eth0\";\n"));
        assert!(v4.contains("    route 198.18.100.11/32 via \"lbctl-eth0\";\n"));
        assert!(!v4.contains("2001:2::10"));
        assert!(text.contains("protocol static lbctl_vips6 {\n    ipv6;\n    route 2001:2::10/128 via \"lbctl-eth0\";\n}\n"));
        let path = std::env::temp_dir().join(format!("lbctl-bird-test-{}", std::process::id()));
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_announced(&path), addrs, "read back");
        std::fs::remove_file(&path).unwrap();
        // Nothing announced: both protocols, empty.
        let none = render(&BTreeSet::new(), "lbctl-eth0");
        assert!(!none.contains("route "));
        assert!(
            none.contains("protocol static lbctl_vips {")
                && none.contains("protocol static lbctl_vips6 {")
        );
    }
}
