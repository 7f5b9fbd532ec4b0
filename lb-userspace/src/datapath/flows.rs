//! The flow table as userspace sees it: its entries, and leastconn's counts of active flows
//! (ending those that went idle).

use super::*;

impl Datapath {
    /// Ends the count of leastconn flows that went idle without a FIN or RST (their OPEN
    /// entry outlived their flow entry): what `lbctl attach` runs every second. Returns how
    /// many it ended.
    pub fn sweep(&mut self) -> Result<u64> {
        let now = monotonic_ns();
        let mut ended: Vec<(FlowKey, u32)> = Vec::new();
        for entry in self.open.iter() {
            let (key, real_id) = entry.context("reading OPEN")?;
            let live = match self.flows.get(&key, 0) {
                Ok(flow) => !flow.expired(now),
                Err(aya::maps::MapError::KeyNotFound) => false,
                Err(e) => return Err(e).context("reading FLOWS"),
            };
            if !live {
                ended.push((key, real_id));
            }
        }
        let mut count = 0;
        for (key, real_id) in ended {
            // Only who removes the entry ends the count: the datapath may have seen the
            // flow's FIN meanwhile.
            if self.open.remove(&key).is_ok() {
                let swept = self.swept_counts.entry(real_id).or_insert(0);
                *swept += 1;
                self.swept
                    .set(real_id, *swept, 0)
                    .context("writing SWEPT")?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// A real's active leastconn flows of `vip`, as the datapath weighs them.
    pub fn active_flows(&self, vip: &VipSpec, addr: IpAddr, port: Option<u16>) -> Result<u64> {
        let key = (*vip, addr, port.unwrap_or(vip.port));
        let id = *self
            .real_ids
            .get(&key)
            .ok_or_else(|| anyhow!("{addr} is not a real of VIP {vip}"))?;
        let started = self.active.get(&id, 0).context("reading ACTIVE")?;
        let swept = self.swept.get(&id, 0).context("reading SWEPT")?;
        Ok(started.saturating_sub(swept))
    }

    /// Every entry of the flow table.
    pub fn flows(&self) -> Result<Vec<(FlowKey, Flow)>> {
        self.flows
            .iter()
            .map(|e| e.context("reading FLOWS"))
            .collect()
    }
}

/// CLOCK_MONOTONIC at the last tick, in nanoseconds: the clock of the datapath's
/// `bpf_ktime_get_coarse_ns`.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
