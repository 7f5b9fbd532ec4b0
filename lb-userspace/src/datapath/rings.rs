//! RINGS and the ring map of each VIP: which are in RINGS, which wait to go in.
//!
//! A ring is rewritten in place while its ring map holds it (`ring_map`); a VIP's first ring,
//! or one outgrowing its map, needs a new map, which waits here until `install_waiting` puts
//! every waiting map into RINGS with one update (one RCU grace period for all). Until then
//! the VIP's old ring, if it has one, keeps serving, and the writes that must follow the new
//! ring (its VIPS entry, reals leaving it) wait with it (`Datapath::after_ring`).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context as _, Result};
use aya::maps::{Map, MapData};
use lb_common::RING_SIZE;

use super::ring_map::{self, RingMap};

pub(super) struct Rings {
    /// RINGS: VIP id → ring map.
    outer: MapData,
    /// The ring map of each served VIP id, in RINGS or waiting to go in.
    maps: BTreeMap<u32, RingMap>,
    /// VIP ids whose map in `maps` is not in RINGS yet.
    waiting: BTreeSet<u32>,
    /// VIP ids no longer served whose RINGS slot still holds their last ring map: it is
    /// replaced by `empty` (freeing it) with the next install.
    emptied: BTreeSet<u32>,
    /// A one-slot ring map, put where a removed VIP's ring was.
    empty: Option<RingMap>,
}

impl Rings {
    pub(super) fn new(map: Map) -> Result<Self> {
        let Map::ArrayOfMaps(outer) = map else {
            bail!("map RINGS is not an array of maps: lbctl was built wrong");
        };
        Ok(Self {
            outer,
            maps: BTreeMap::new(),
            waiting: BTreeSet::new(),
            emptied: BTreeSet::new(),
            empty: None,
        })
    }

    /// Whether VIP `vip_id`'s ring is in RINGS: what is written to it is what packets read.
    pub(super) fn is_live(&self, vip_id: u32) -> bool {
        self.maps.contains_key(&vip_id) && !self.waiting.contains(&vip_id)
    }

    /// Writes `ring` as VIP `vip_id`'s: in place if its ring map holds it, else into a new map
    /// of `capacity` slots (at least the ring's), which waits to go into RINGS.
    pub(super) fn write(&mut self, vip_id: u32, ring: &[u32], capacity: u32) -> Result<()> {
        if ring.len() > RING_SIZE as usize {
            bail!(
                "a ring of {} slots is larger than the {RING_SIZE} a ring map holds",
                ring.len()
            );
        }
        if let Some(map) = self.maps.get_mut(&vip_id) {
            if map.capacity() as usize >= ring.len() {
                return map.write(ring);
            }
        }
        let capacity = capacity.max(ring.len() as u32).clamp(1, RING_SIZE);
        let mut map = RingMap::new(capacity)?;
        map.fill(ring);
        self.maps.insert(vip_id, map);
        self.waiting.insert(vip_id);
        self.emptied.remove(&vip_id);
        Ok(())
    }

    /// VIP `vip_id` is no longer served: its ring map goes, and RINGS's slot (which may hold
    /// it, or an earlier lbctl's ring) is emptied with the next install.
    pub(super) fn remove(&mut self, vip_id: u32) {
        self.maps.remove(&vip_id);
        self.waiting.remove(&vip_id);
        self.emptied.insert(vip_id);
    }

    /// Ring maps waiting to go into RINGS.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Whether some ring map waits to go into RINGS (or some slot to be emptied).
    pub(super) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty() || !self.emptied.is_empty()
    }

    /// Puts every waiting ring map into RINGS, and empties removed VIPs' slots, with one map
    /// update: one RCU grace period, after which no running program uses a replaced map.
    pub(super) fn install_waiting(&mut self) -> Result<()> {
        if !self.has_waiting() {
            return Ok(());
        }
        let mut batch: Vec<(u32, std::os::fd::RawFd)> = self
            .waiting
            .iter()
            .map(|id| Ok((*id, self.maps[id].raw_fd()?)))
            .collect::<Result<_>>()?;
        if !self.emptied.is_empty() {
            let empty = self.empty_map()?.raw_fd()?;
            batch.extend(self.emptied.iter().map(|id| (*id, empty)));
        }
        ring_map::install_all(&self.outer, &batch)?;
        for id in std::mem::take(&mut self.waiting) {
            if let Some(map) = self.maps.get_mut(&id) {
                map.release_fd();
            }
        }
        self.emptied.clear();
        Ok(())
    }

    /// Waits until no program still runs with what RINGS held before: puts the empty ring in
    /// `free_id`'s slot (a VIP id nothing serves), an update that waits for a grace period.
    pub(super) fn wait_for_programs(&mut self, free_id: u32) -> Result<()> {
        let empty = self.empty_map()?.raw_fd()?;
        ring_map::install_all(&self.outer, &[(free_id, empty)])
            .context("waiting for running programs (a RINGS update)")
    }

    fn empty_map(&mut self) -> Result<&RingMap> {
        if self.empty.is_none() {
            self.empty = Some(RingMap::new(1)?);
        }
        self.empty
            .as_ref()
            .context("the empty ring map was just made")
    }
}
