//! The LB's own view of the traced request: what `lbctl capture` records on the LB while the
//! request runs, each frame as it arrived with what the datapath did with it. The client's
//! and the reals' captures show frames on the wire; this shows the verdicts between them.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use lb_lab::{Lab, VIP_ADDR, VIP_PORT};
use pcap_file::pcapng::{blocks::enhanced_packet::EnhancedPacketOption, Block, PcapNgReader};

use crate::capture::describe;

/// A frame the LB received for the VIP, and the verdict on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub frame: String,
    pub verdict: String,
}

/// `lbctl capture` running on the LB's first interface.
pub struct LbCapture {
    child: Child,
    file: PathBuf,
    /// The command, as the demo shows it.
    pub command: String,
}

/// Starts `lbctl capture IFACE --vip VIP:PORT -w FILE` on the lab's LB and returns once it
/// captures.
pub fn start(lab: &Lab, lbctl: &Path, file: &Path) -> Result<LbCapture> {
    let iface = lab.lb_ifaces()[0].clone();
    let vip = format!("{VIP_ADDR}:{VIP_PORT}");
    let args = [
        "capture",
        iface.as_str(),
        "--vip",
        vip.as_str(),
        "-w",
        file.to_str().context("a capture path that is not UTF-8")?,
        "--seconds",
        "60",
    ];
    let mut child = lab
        .lb
        .command(lbctl.to_str().context("an lbctl path that is not UTF-8")?)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting lbctl capture on the lb")?;
    let mut first = String::new();
    BufReader::new(child.stderr.as_mut().context("lbctl capture's stderr")?)
        .read_line(&mut first)
        .context("waiting for lbctl capture to start")?;
    if !first.starts_with("lbctl capture:") {
        // It did not start; the error below says why, whatever kill finds.
        let _killed = child.kill();
        bail!("lbctl capture did not start: {first}");
    }
    Ok(LbCapture {
        child,
        file: file.to_owned(),
        command: format!("lbctl capture {iface} --vip {vip}"),
    })
}

impl LbCapture {
    /// Stops the capture (SIGINT, as Ctrl-C) and reads what it wrote.
    pub fn finish(mut self) -> Result<Vec<Verdict>> {
        // SAFETY: plain kill(2) on our own child (`ip netns exec` execs lbctl).
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                // Killed as a last resort; the error below says why.
                let _killed = self.child.kill();
                bail!("lbctl capture ignored SIGINT for 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            bail!("lbctl capture on the lb failed ({status})");
        }
        let bytes = std::fs::read(&self.file)
            .with_context(|| format!("reading {}", self.file.display()))?;
        read(&bytes)
    }
}

/// The received frames of a capture file, each with the verdict its comment carries.
fn read(bytes: &[u8]) -> Result<Vec<Verdict>> {
    let mut reader = PcapNgReader::new(bytes).context("reading the LB's capture")?;
    let mut out = Vec::new();
    while let Some(block) = reader.next_block() {
        let Block::EnhancedPacket(p) = block.context("reading the LB's capture")? else {
            continue;
        };
        if !p.options.contains(&EnhancedPacketOption::Flags(0b01)) {
            continue;
        }
        let verdict = p.options.iter().find_map(|o| match o {
            EnhancedPacketOption::Comment(c) => c.split_once(": ").map(|(_, v)| v.to_owned()),
            _ => None,
        });
        out.push(Verdict {
            frame: describe::summary(&p.data, p.original_len),
            verdict: verdict.unwrap_or_default(),
        });
    }
    Ok(out)
}
