//! The verbs that change what the datapath serves: VIPs, their reals and weights, and what
//! follows from them (rings, REALS entries, ENDPOINTS).

use super::{addr_filter, *};

impl Datapath {
    /// Starts serving `vip` as `settings` say, with no reals yet (its packets are dropped as
    /// `drop_no_real` until `set_reals`). A one-arm VIP needs its SNAT pool filled in.
    pub fn add_vip(&mut self, vip: VipSpec, settings: &VipSettings) -> Result<u32> {
        if self.configured(&vip).is_ok() {
            bail!("VIP {vip} is already configured");
        }
        // Found in the pinned maps of an earlier lbctl: it keeps its id, and its ring serves
        // until set_reals swaps in the new one.
        let adopted = self.services.get(&vip).map(|s| (s.id, s.meta));
        let vip_id = match adopted {
            Some((id, _)) => id,
            // From where the last search ended: adding many VIPs stays linear.
            None => {
                let id = (0..MAX_VIPS)
                    .map(|i| (self.next_vip_id + i) % MAX_VIPS)
                    .find(|id| !self.vip_ids_used.contains(id))
                    .ok_or_else(|| {
                        anyhow!("cannot add {vip}: all {MAX_VIPS} VIP slots are in use")
                    })?;
                self.next_vip_id = (id + 1) % MAX_VIPS;
                id
            }
        };
        if settings.mode == Mode::OneArm {
            // Answers to its pool addresses come from the first flow that uses them.
            let pool = settings.snat_pool.iter();
            self.addr_filter
                .add(pool.map(|a| (*a, addr_filter::Side::Dst)))?;
            self.snat_pools
                .set(vip_id, snat_pool(&vip, settings)?, 0)
                .context("writing SNAT_POOLS")?;
        }
        self.write_tunnel_source(vip_id, settings)?;
        self.write_flood_limit(vip_id, settings)?;
        let mut meta = VipMeta {
            sched: settings.balance.code(),
            hash: settings.hash.code(),
            flags: vip_flags(settings),
            ..VipMeta::new(vip_id, settings.mode.code(), settings.timeouts)
        };
        match adopted {
            Some((_, old)) if old.mode == meta.mode => meta.ring_size = old.ring_size,
            Some(_) => {
                // Another mode than before: its old flows move (as `change_vip` does).
                self.remove_vip(&vip)?;
                return self.add_vip(vip, settings);
            }
            // An empty ring until set_reals: its VIPS entry waits for it (no packet finds a
            // VIP without a ring).
            None => self.rings.write(vip_id, &[], 1)?,
        }
        // Its packets must pass the address filter once VIPS has it.
        self.addr_filter.add([(vip.addr, addr_filter::Side::Dst)])?;
        // A VIP taken over keeps its entry (and old ring) until its new ring is in.
        self.after_ring.metas.insert(vip_id, (vip.key(), meta));
        let reals = self
            .services
            .remove(&vip)
            .map(|s| s.reals)
            .unwrap_or_default();
        let served = ServedVip {
            id: vip_id,
            meta,
            settings: Some(settings.clone()),
            reals,
            ring: Vec::new(),
        };
        self.services.insert(vip, served);
        self.vip_ids_used.insert(vip_id);
        self.sync_served()?;
        self.end_verb()?;
        Ok(vip_id)
    }

    /// Stops serving `vip`: its packets go to the LB's own stack again; its reals are
    /// retired and their ids and the VIP's id are freed.
    pub fn remove_vip(&mut self, vip: &VipSpec) -> Result<()> {
        let vip_id = self
            .services
            .get(vip)
            .ok_or_else(|| anyhow!("VIP {vip} is not configured"))?
            .id;
        // The VIP first: from here no packet is scheduled for it. (One added in this batch
        // is not in VIPS yet.)
        self.after_ring.metas.remove(&vip_id);
        match self.vips.remove(&vip.key()) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(e).context("removing from VIPS"),
        }
        self.sizes_written.remove(&vip_id);
        self.retire_reals(vip, vip_id, &BTreeSet::new())?;
        self.rings.remove(vip_id);
        self.services.remove(vip);
        self.vip_ids_used.remove(&vip_id);
        self.sync_served()?;
        self.end_verb()
    }

    /// Gives `vip` new settings and `reals` in one ring swap. Within a mode the VIP keeps
    /// its id and its flows (a new scheduler applies to new flows); a new mode makes it a new
    /// VIP, whose established flows move (they were rewritten the old mode's way).
    pub fn change_vip(
        &mut self,
        vip: &VipSpec,
        settings: &VipSettings,
        reals: &[Real],
    ) -> Result<()> {
        let (old, _) = self.configured(vip)?;
        if old.mode != settings.mode {
            self.remove_vip(vip)?;
            self.add_vip(*vip, settings)?;
            self.set_reals(vip, reals)?;
            // Served again at once, not when a batch ends: until then its packets, its
            // established flows' too, would go to the LB's own stack.
            return self.install_rings();
        }
        let vip_id = self.services[vip].id;
        if settings.mode == Mode::OneArm {
            // Answers to its pool addresses come from the first flow that uses them.
            let pool = settings.snat_pool.iter();
            self.addr_filter
                .add(pool.map(|a| (*a, addr_filter::Side::Dst)))?;
            self.snat_pools
                .set(vip_id, snat_pool(vip, settings)?, 0)
                .context("writing SNAT_POOLS")?;
        }
        self.write_tunnel_source(vip_id, settings)?;
        self.write_flood_limit(vip_id, settings)?;
        // set_reals writes the new scheduler's VIPS entry with the ring built for it, in the
        // order the ring's size needs.
        let served = self
            .services
            .get_mut(vip)
            .ok_or_else(|| anyhow!("VIP {vip} is not configured"))?;
        served.meta = VipMeta {
            sched: settings.balance.code(),
            hash: settings.hash.code(),
            flags: vip_flags(settings),
            timeouts: settings.timeouts,
            ..served.meta
        };
        served.settings = Some(settings.clone());
        self.set_reals(vip, reals)
    }

    /// The VIPs served, with their settings and reals as last set.
    pub fn served(&self) -> impl Iterator<Item = (&VipSpec, &VipSettings, &[Real])> {
        self.services.iter().filter_map(|(vip, s)| {
            let settings = s.settings.as_ref()?;
            Some((vip, settings, s.reals.as_slice()))
        })
    }

    /// The slots of `vip`'s ring as last written: its Maglev table's size, its round-robin
    /// sequence's length, its leastconn candidates.
    pub fn ring_len(&self, vip: &VipSpec) -> Option<usize> {
        self.services.get(vip).map(|s| s.ring.len())
    }

    /// The settings and id of `vip`, which this lbctl serves.
    fn configured(&self, vip: &VipSpec) -> Result<(&VipSettings, u32)> {
        self.services
            .get(vip)
            .and_then(|s| Some((s.settings.as_ref()?, s.id)))
            .ok_or_else(|| anyhow!("VIP {vip} is not configured"))
    }

    /// Replaces the reals of `vip`, as one change: new flows are scheduled over the new set
    /// at once (the ring swapped whole), established flows stay on their real while it
    /// stays (draining, weight 0, included), and move when it goes.
    pub fn set_reals(&mut self, vip: &VipSpec, reals: &[Real]) -> Result<()> {
        let settings = self.configured(vip)?.0.clone();
        let mut meta = self.services[vip].meta;
        let mut members = Vec::with_capacity(reals.len());
        // Reals going down are marked so after the new ring (without them) is in: the old
        // ring still sends new flows to them until then, and they must not be dropped.
        let mut going_down = Vec::new();
        for real in reals {
            let id = self.real_id(vip, real)?;
            let entry = real.entry().with_vip(meta.vip_id);
            if real.down {
                going_down.push((id, entry));
            } else {
                self.write_real(id, entry)?;
            }
            members.push(ring::Member {
                id,
                name: real.spec().endpoint(vip.port),
                // A real that is down takes no slot, as a draining one.
                weight: if real.down { 0 } else { u32::from(real.weight) },
            });
        }
        // A nat or router real's answers come back through the LB from the first flow the
        // new ring sends it: they must pass the address filter before.
        if matches!(settings.mode, Mode::Nat | Mode::Router) {
            self.addr_filter
                .add(reals.iter().map(|r| (r.addr, addr_filter::Side::Src)))?;
        }
        let maglev_size = settings.maglev_size_for(reals.len());
        let slots = ring::build(settings.balance, maglev_size, &members);
        // The datapath reads ring[hash % size]: a packet between the two writes must not find
        // a size larger than the ring it sees. Growing: ring first; shrinking: size first.
        let old_size = meta.ring_size;
        meta.ring_size = slots.len() as u32;
        if meta.ring_size < old_size {
            self.write_meta(vip, meta)?;
        }
        self.rings.write(
            meta.vip_id,
            &slots,
            ring_capacity(settings.balance, slots.len()),
        )?;
        // Each waiting ring map holds a file descriptor: a batch puts them in by the
        // hundred, not all at its end.
        if self.rings.waiting() >= RINGS_PER_INSTALL {
            self.install_rings()?;
        }
        if let Some(served) = self.services.get_mut(vip) {
            served.ring = slots;
        }
        if meta.ring_size >= old_size {
            self.write_meta(vip, meta)?;
        }
        for (id, entry) in going_down {
            self.write_real_after_ring(meta.vip_id, id, entry)?;
        }
        let kept: BTreeSet<RealKey> = reals.iter().map(|r| real_key(vip, r)).collect();
        self.retire_reals(vip, meta.vip_id, &kept)?;
        if let Some(served) = self.services.get_mut(vip) {
            served.reals = reals.to_vec();
        }
        // Only a stateful VIP's reals are in ENDPOINTS (and ADDR_FILTER's sources); SETTINGS
        // follows the modes alone.
        if matches!(settings.mode, Mode::Nat | Mode::Router | Mode::OneArm) {
            self.sync_served()?;
        }
        self.end_verb()
    }

    /// Changes one real's weight (0: drain). Refused for static-rr VIPs, whose weights are
    /// fixed at load.
    pub fn set_weight(
        &mut self,
        vip: &VipSpec,
        addr: IpAddr,
        port: Option<u16>,
        weight: u16,
    ) -> Result<()> {
        let (settings, _) = self.configured(vip)?;
        if settings.balance == Balance::StaticRr {
            bail!("VIP {vip} balances static-rr, whose weights are fixed at load: reload it, or use roundrobin to change weights at runtime");
        }
        let mut reals = self.services[vip].reals.clone();
        let want = port.unwrap_or(vip.port);
        let real = reals
            .iter_mut()
            .find(|r| r.addr == addr && r.port.unwrap_or(vip.port) == want)
            .ok_or_else(|| anyhow!("{addr} port {want} is not a real of VIP {vip}"))?;
        real.weight = weight;
        self.set_reals(vip, &reals)
    }

    /// Reals of `vip` not in `kept`: retired, so their flows move; their ids free for reuse,
    /// last (a flow also names its real's VIP and address, checked with the id).
    fn retire_reals(&mut self, vip: &VipSpec, vip_id: u32, kept: &BTreeSet<RealKey>) -> Result<()> {
        // This VIP's reals only: the ids are ordered by VIP first.
        let gone: Vec<(RealKey, u32)> = self
            .real_ids
            .range((*vip, IpAddr::from([0u8; 4]), 0)..)
            .take_while(|(k, _)| k.0 == *vip)
            .filter(|(k, _)| !kept.contains(*k))
            .map(|(k, id)| (*k, *id))
            .collect();
        // Until a takeover from a layout before 3 ends, the old lbctl may take the state back
        // (a start refused before the swap): it knows no RETIRED, so the real is written down
        // (as it wrote it), and made RETIRED when the takeover ends.
        let retired = if self.takeover.as_ref().is_some_and(|t| t.from < 3) {
            REAL_DOWN
        } else {
            REAL_RETIRED
        };
        for (key, id) in gone {
            if let Some(old) = self
                .services
                .get(vip)
                .and_then(|s| s.reals.iter().find(|r| real_key(vip, r) == key))
            {
                let entry = old.entry().with_vip(vip_id).with_state(retired);
                self.write_real_after_ring(vip_id, id, entry)?;
            }
            self.real_ids.remove(&key);
            // Free for another real once its entry says retired (see `AfterRing::freed`).
            if self.after_ring.reals.contains_key(&id) {
                self.after_ring.freed.insert(id);
            } else {
                self.real_ids_used.remove(&id);
            }
        }
        Ok(())
    }

    /// A tunnel VIP's own outer source, or zeros (the egress interface's address).
    fn write_tunnel_source(&mut self, vip_id: u32, settings: &VipSettings) -> Result<()> {
        let source = match settings.tunnel_source {
            Some(IpAddr::V4(a)) => a.octets(),
            _ => [0; 4],
        };
        self.tunnel_sources
            .set(vip_id, source, 0)
            .context("writing TUNNEL_SOURCES")
    }

    /// A dsr or tunnel VIP's flood guard rate (0: none), before its VIPS entry says it has one.
    fn write_flood_limit(&mut self, vip_id: u32, settings: &VipSettings) -> Result<()> {
        self.flood_limits
            .set(vip_id, settings.flood_guard, 0)
            .context("writing FLOOD_LIMITS")
    }

    /// A fresh real id starts its counters at zero, not at the last real's that had it.
    fn reset_real_counters(&mut self, id: u32) -> Result<()> {
        let zero = vec![RealCounters::default(); possible_cpus()? as usize];
        let values = aya::maps::PerCpuValues::try_from(zero).context("zeroed real counters")?;
        self.real_counters
            .set(id, values, 0)
            .context("zeroing REAL_COUNTERS")
    }

    /// `vip`'s VIPS entry: written now if its ring is in RINGS (and, while an earlier
    /// program runs on, no larger than the ring it has), else once it is.
    fn write_meta(&mut self, vip: &VipSpec, meta: VipMeta) -> Result<()> {
        if self.rings.is_live(meta.vip_id) && !self.held(&meta) {
            self.after_ring.metas.remove(&meta.vip_id);
            self.vips
                .insert(vip.key(), meta, 0)
                .context("writing VIPS")?;
            self.sizes_written.insert(meta.vip_id, meta.ring_size);
        } else {
            self.after_ring.metas.insert(meta.vip_id, (vip.key(), meta));
        }
        if let Some(served) = self.services.get_mut(vip) {
            served.meta = meta;
        }
        Ok(())
    }

    /// Whether `meta` must wait for the swap: an earlier program still runs and its ring of
    /// this VIP (sized by the entry it reads) is smaller, or it has none.
    fn held(&self, meta: &VipMeta) -> bool {
        self.holding
            && self
                .sizes_written
                .get(&meta.vip_id)
                .is_none_or(|written| meta.ring_size > *written)
    }

    /// A REALS entry a ring is about to send flows to: written now (and any write waiting
    /// for a ring dropped: this one is newer).
    fn write_real(&mut self, id: u32, entry: RealEntry) -> Result<()> {
        self.after_ring.reals.remove(&id);
        self.reals.set(id, entry, 0).context("writing REALS")
    }

    /// A REALS entry for a real that must stay able to take flows while VIP `vip_id`'s old
    /// ring may send it some (one leaving the ring, or going down): written now if the new
    /// ring is in, else once it is.
    fn write_real_after_ring(&mut self, vip_id: u32, id: u32, entry: RealEntry) -> Result<()> {
        if self.rings.is_live(vip_id) && !self.holding {
            self.write_real(id, entry)
        } else {
            self.after_ring.reals.insert(id, (vip_id, entry));
            Ok(())
        }
    }

    /// After a change of what is served: SETTINGS, ENDPOINTS and ADDR_FILTER follow, now or,
    /// inside a batch, when it ends (they are sums over every VIP).
    fn sync_served(&mut self) -> Result<()> {
        if self.batching {
            return Ok(());
        }
        self.write_settings()?;
        self.sync_endpoints()
    }

    /// The end of a verb: outside a batch, waiting rings go in.
    fn end_verb(&mut self) -> Result<()> {
        if self.batching {
            return Ok(());
        }
        self.install_rings()
    }

    /// Runs `change` as one: the ring maps it makes go into RINGS together when it ends (one
    /// wait on the kernel for them all, where each verb alone waits once), and the sums over
    /// every VIP (SETTINGS, ENDPOINTS, ADDR_FILTER) are written once. Until then a VIP added
    /// is not in VIPS, and a VIP whose ring outgrew its map keeps its old ring; rings that
    /// fit their maps are rewritten at once. What `change` did before failing is still
    /// installed.
    pub fn batch<T>(&mut self, change: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.batching {
            return change(self);
        }
        self.batching = true;
        let result = change(self);
        self.batching = false;
        let installed = self.sync_served().and_then(|()| self.install_rings());
        let value = result?;
        installed?;
        Ok(value)
    }

    /// Puts the waiting ring maps into RINGS (one update), then writes what waited for them
    /// (while an earlier program runs on, what must wait for the swap waits on).
    pub(super) fn install_rings(&mut self) -> Result<()> {
        self.rings.install_waiting()?;
        let metas = std::mem::take(&mut self.after_ring.metas);
        for (id, (key, meta)) in metas {
            if self.held(&meta) {
                self.after_ring.metas.insert(id, (key, meta));
                continue;
            }
            self.vips.insert(key, meta, 0).context("writing VIPS")?;
            self.sizes_written.insert(id, meta.ring_size);
        }
        if self.holding {
            return Ok(());
        }
        for (id, (_, entry)) in std::mem::take(&mut self.after_ring.reals) {
            self.reals.set(id, entry, 0).context("writing REALS")?;
        }
        for id in std::mem::take(&mut self.after_ring.freed) {
            self.real_ids_used.remove(&id);
        }
        Ok(())
    }

    /// Makes ENDPOINTS hold what the stateful VIPs' replies come from or go to: each nat and
    /// router real's service endpoint, each one-arm pool address with its ports (the union of
    /// the ranges of the VIPs sharing it).
    fn sync_endpoints(&mut self) -> Result<()> {
        let mut want: BTreeMap<VipKey, Endpoint> = BTreeMap::new();
        for (vip, served) in &self.services {
            let Some(settings) = &served.settings else {
                continue;
            };
            let proto = vip.proto.number();
            match settings.mode {
                Mode::Nat | Mode::Router => {
                    for r in &served.reals {
                        let port = r.port.unwrap_or(vip.port);
                        let real = Endpoint {
                            kind: ENDPOINT_REAL,
                            port_min: 0,
                            port_max: 0,
                        };
                        want.insert(endpoint_key(r.addr, port, proto), real);
                    }
                }
                Mode::OneArm => {
                    let ports = settings.snat_ports;
                    for a in &settings.snat_pool {
                        let e = want.entry(endpoint_key(*a, 0, proto)).or_insert(Endpoint {
                            kind: ENDPOINT_POOL,
                            port_min: ports.min,
                            port_max: ports.max,
                        });
                        e.port_min = e.port_min.min(ports.min);
                        e.port_max = e.port_max.max(ports.max);
                    }
                }
                Mode::Dsr | Mode::Tunnel => {}
            }
        }
        for (key, endpoint) in &want {
            if self.endpoints_written.get(key) == Some(endpoint) {
                continue;
            }
            self.endpoints
                .insert(key, endpoint, 0)
                .context("writing ENDPOINTS")?;
            self.endpoints_written.insert(*key, *endpoint);
        }
        let stale: Vec<VipKey> = self
            .endpoints_written
            .keys()
            .filter(|k| !want.contains_key(*k))
            .copied()
            .collect();
        for key in stale {
            self.endpoints
                .remove(&key)
                .context("removing from ENDPOINTS")?;
            self.endpoints_written.remove(&key);
        }
        self.sync_addr_filter()
    }

    /// How many real ids serving the reals of `wanted` needs that are not free now: `set_reals`
    /// takes the new reals' ids before it frees the ids of reals that leave.
    pub fn real_ids_short(&self, wanted: impl IntoIterator<Item = RealKey>) -> usize {
        let new = wanted
            .into_iter()
            .filter(|k| !self.real_ids.contains_key(k))
            .count();
        let free = (MAX_REALS - 1) as usize - self.real_ids_used.len();
        new.saturating_sub(free)
    }

    fn real_id(&mut self, vip: &VipSpec, real: &Real) -> Result<u32> {
        let key = real_key(vip, real);
        if let Some(id) = self.real_ids.get(&key) {
            return Ok(*id);
        }
        // Id 0 stays empty: it is what an unfilled ring slot points at. Ids are taken in
        // turn, not lowest first: a freed id comes back only after all the others, when
        // nothing of its old real (flows, leastconn counts) is likely left.
        let id = (0..MAX_REALS - 1)
            .map(|i| (self.next_real_id - 1 + i) % (MAX_REALS - 1) + 1)
            .find(|id| !self.real_ids_used.contains(id))
            .ok_or_else(|| {
                anyhow!(
                    "cannot add real {}: all {} real slots are in use",
                    real.addr,
                    MAX_REALS - 1
                )
            })?;
        self.next_real_id = id % (MAX_REALS - 1) + 1;
        // A reused id starts its leastconn count afresh.
        let swept = self.active.get(&id, 0).context("reading ACTIVE")?;
        self.swept.set(id, swept, 0).context("writing SWEPT")?;
        self.swept_counts.insert(id, swept);
        self.reset_real_counters(id)?;
        self.real_ids.insert(key, id);
        self.real_ids_used.insert(id);
        Ok(id)
    }
}

/// New ring maps a batch lets wait (each an open file descriptor) before it puts them in.
const RINGS_PER_INSTALL: usize = 256;

/// Slots of the ring map a ring of `len` slots gets when it needs a new one: a Maglev table
/// its own size (the size changes only with the configured reals); a round-robin sequence
/// or leastconn list, which weights and health change, room to grow to the next power of
/// two (a map never shrinks while its VIP is served).
fn ring_capacity(balance: Balance, len: usize) -> u32 {
    match balance {
        Balance::Maglev | Balance::Source => len as u32,
        Balance::Roundrobin | Balance::StaticRr | Balance::Leastconn => {
            (len.next_power_of_two() as u32).min(lb_common::RING_SIZE)
        }
    }
}

fn vip_flags(settings: &VipSettings) -> u8 {
    let mut flags = 0;
    if settings.pass_when_empty {
        flags |= VIP_PASS_WHEN_EMPTY;
    }
    if settings.flood_guard != 0 {
        flags |= VIP_FLOOD_GUARD;
    }
    flags
}

fn endpoint_key(addr: IpAddr, port: u16, proto: u8) -> VipKey {
    match addr {
        IpAddr::V4(a) => VipKey::v4(a.octets(), port, proto),
        IpAddr::V6(a) => VipKey::v6(a.octets(), port, proto),
    }
}

/// SNAT_POOLS value of a one-arm VIP.
fn snat_pool(vip: &VipSpec, settings: &VipSettings) -> Result<SnatPool> {
    let addrs = &settings.snat_pool;
    if addrs.is_empty() || addrs.len() > MAX_POOL_ADDRS {
        bail!(
            "one-arm VIP {vip} needs 1 to {MAX_POOL_ADDRS} SNAT pool addresses, has {}",
            addrs.len()
        );
    }
    let mut pool = SnatPool {
        count: addrs.len() as u32,
        port_min: settings.snat_ports.min,
        port_max: settings.snat_ports.max,
        ..SnatPool::EMPTY
    };
    for (slot, a) in pool.addrs.iter_mut().zip(addrs) {
        *slot = lb_common::ip_to_bytes(*a).0;
    }
    Ok(pool)
}
