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
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Datapath {
    /// The flow table's entry under `key`, if any.
    pub fn flow(&self, key: &FlowKey) -> Option<Flow> {
        self.flows.get(key, 0).ok()
    }

    /// The id `vip` has in the datapath, once served.
    pub fn vip_id(&self, vip: &VipSpec) -> Option<u32> {
        self.services.get(vip).map(|s| s.id)
    }

    /// A synced flow's entries as this datapath would make them, from what it serves: the
    /// record's VIP and real (by address, in this LB's ids, MACs and interfaces); the client
    /// arrives on `ingress`. Refused, by name, when this LB does not serve them.
    pub fn synced_entries(
        &self,
        r: &crate::sync::wire::Record,
        ingress: u32,
        now_ns: u64,
    ) -> Result<crate::sync::flows::Entries, crate::sync::Refused> {
        use crate::sync::{flows, Refused};
        let proto = match r.proto {
            lb_common::PROTO_TCP => crate::declare::spec::Proto::Tcp,
            lb_common::PROTO_UDP => crate::declare::spec::Proto::Udp,
            _ => return Err(Refused::UnknownVip),
        };
        let spec = VipSpec {
            addr: r.vip,
            port: r.vip_port,
            proto,
        };
        let served = self.services.get(&spec).ok_or(Refused::UnknownVip)?;
        let settings = served.settings.as_ref().ok_or(Refused::UnknownVip)?;
        if !settings.mode.is_stateful() {
            return Err(Refused::NotStateful);
        }
        let real = served
            .reals
            .iter()
            .find(|x| x.addr == r.real && x.port.unwrap_or(spec.port) == r.real_port)
            .ok_or(Refused::UnknownReal)?;
        let real_id = self
            .id_of_real(&spec, r.real, r.real_port)
            .ok_or(Refused::UnknownReal)?;
        let iface = |i: u32| self.ifaces.get(&i, 0).map_err(|_| Refused::NoInterface);
        let ingress_mac = iface(ingress)?.mac;
        let egress = if real.ifindex == 0 {
            ingress
        } else {
            real.ifindex
        };
        let (timeout, short_timeout) = flows::timeouts(&settings.timeouts, r.proto);
        let local = flows::Local {
            mode: settings.mode,
            vip_id: served.id,
            real_id,
            real_mac: real.mac,
            real_ifindex: real.ifindex,
            ingress,
            ingress_mac,
            egress_mac: iface(egress)?.mac,
            timeout,
            short_timeout,
        };
        Ok(flows::entries(r, &local, now_ns))
    }

    /// Puts a flow's two entries in the table (replacing what the keys held): a flow the
    /// peer LB has (flow sync). The reply entry first, as the datapath does: once a request
    /// leaves, its answer finds the way back.
    pub fn install_flow(&mut self, e: &crate::sync::flows::Entries) -> Result<()> {
        self.flows
            .insert(e.reply_key, e.reply, 0)
            .context("writing a synced flow's reply entry")?;
        self.flows
            .insert(e.key, e.forward, 0)
            .context("writing a synced flow's entry")
    }

    /// Removes the one entry under `key`, as the kernel's LRU evicts one entry of a flow and
    /// leaves the other: what the datapath must then mend. Returns whether it was there.
    pub fn evict_flow_entry(&mut self, key: &FlowKey) -> Result<bool> {
        match self.flows.remove(key) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(e).context("removing a flow entry"),
        }
    }

    /// Removes a flow's two entries (the peer saw it end), when they are still `real_id`'s.
    pub fn remove_flow(
        &mut self,
        key: &FlowKey,
        reply_key: &FlowKey,
        real_id: u32,
    ) -> Result<bool> {
        match self.flows.get(key, 0) {
            Ok(f) if f.real_id == real_id => {}
            Ok(_) | Err(aya::maps::MapError::KeyNotFound) => return Ok(false),
            Err(e) => return Err(e).context("reading FLOWS"),
        }
        for k in [key, reply_key] {
            match self.flows.remove(k) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(e).context("removing a synced flow's entry"),
            }
        }
        Ok(true)
    }
}
