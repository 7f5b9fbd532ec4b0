//! Taking over the maps an earlier lbctl left pinned. Flows name their VIP and real by id,
//! so what the ids stand for is read back from VIPS and REALS: a VIP that stays keeps its
//! id, a real that stays keeps its id, and their flows go on. VIPs and reals the new
//! configuration does not have are retired the usual way once it is applied.

use super::*;

impl Datapath {
    /// Reads back what the pinned maps serve. The VIPs found are not `served` yet: `add_vip`
    /// adopts them (keeping id and ring until the new ring replaces it), and
    /// `retire_unclaimed` removes those no `add_vip` claimed.
    pub(super) fn recover(&mut self) -> Result<()> {
        let mut vips_by_id = BTreeMap::new();
        for item in self.vips.iter() {
            let (key, meta) = item.context("reading the pinned VIPS")?;
            let Some(vip) = VipSpec::from_key(&key) else {
                warn!("the pinned VIPS has an entry lbctl cannot read; it is left alone");
                continue;
            };
            vips_by_id.insert(meta.vip_id, vip);
            let found = ServedVip {
                id: meta.vip_id,
                meta,
                settings: None,
                reals: Vec::new(),
                ring: Vec::new(),
            };
            self.services.insert(vip, found);
            self.vip_ids_used.insert(meta.vip_id);
            self.sizes_written.insert(meta.vip_id, meta.ring_size);
        }
        // Reals up or draining first: a real removed before and added again has a freed
        // id (retired; down in layouts before 3) and a live one; the live one is its id.
        let mut down = Vec::new();
        for id in 1..MAX_REALS {
            let entry = self.reals.get(&id, 0).context("reading the pinned REALS")?;
            let Some(vip) = vips_by_id.get(&entry.vip_id()) else {
                continue;
            };
            match entry.state() {
                0 | REAL_RETIRED => continue,
                REAL_DOWN => down.push((*vip, id, entry)),
                _ => self.adopt_real(*vip, id, &entry)?,
            }
        }
        for (vip, id, entry) in down {
            if !self
                .real_ids
                .contains_key(&real_key(&vip, &Real::from_entry(&entry)))
            {
                self.adopt_real(vip, id, &entry)?;
            }
        }
        for entry in self.endpoints.iter() {
            let (key, endpoint) = entry.context("reading the pinned ENDPOINTS")?;
            self.endpoints_written.insert(key, endpoint);
        }
        Ok(())
    }

    /// The reals found down in the pinned REALS: the daemon keeps them down (their checks
    /// bring them back after `rise` passes) rather than sending new flows to a dead real.
    pub fn recovered_down(&self) -> Vec<RealKey> {
        self.services
            .iter()
            .flat_map(|(vip, s)| {
                s.reals
                    .iter()
                    .filter(|r| r.down)
                    .map(move |r| real_key(vip, r))
            })
            .filter(|k| self.real_ids.contains_key(k))
            .collect()
    }

    fn adopt_real(&mut self, vip: VipSpec, id: u32, entry: &RealEntry) -> Result<()> {
        let real = Real::from_entry(entry);
        self.real_ids.insert(real_key(&vip, &real), id);
        self.real_ids_used.insert(id);
        if let Some(served) = self.services.get_mut(&vip) {
            served.reals.push(real);
        }
        self.next_real_id = self.next_real_id.max(id % (MAX_REALS - 1) + 1);
        let swept = self.swept.get(&id, 0).context("reading the pinned SWEPT")?;
        self.swept_counts.insert(id, swept);
        Ok(())
    }

    /// Stops serving the VIPs found pinned that are not (yet) configured again, but those of
    /// `kept` (about to be: they keep serving until `add_vip` claims them).
    pub fn retire_unclaimed(&mut self, kept: &[VipSpec]) -> Result<()> {
        let unclaimed: Vec<VipSpec> = self
            .services
            .iter()
            .filter(|(v, s)| s.settings.is_none() && !kept.contains(v))
            .map(|(v, _)| *v)
            .collect();
        self.batch(|dp| {
            for vip in &unclaimed {
                dp.remove_vip(vip)?;
            }
            Ok(())
        })
    }
}

impl Real {
    /// The real a REALS entry describes.
    fn from_entry(e: &RealEntry) -> Self {
        Real {
            addr: e.ip(),
            port: (e.port() != 0).then_some(e.port()),
            mac: e.mac(),
            ifindex: e.ifindex(),
            weight: e.weight(),
            down: e.state() == REAL_DOWN,
        }
    }
}
