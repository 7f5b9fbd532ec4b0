//! ADDR_FILTER: which IPv4 addresses may be the LB's, so that the established path passes
//! every other packet without a flow lookup. Computed here from what is served (every VIP in
//! VIPS, every key of ENDPOINTS) and written where it changed. A bit must be set before
//! anything can send a packet it lets through: a VIP's before its VIPS entry, a nat/router
//! real's before the ring sends it flows (their answers come back from it).

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{Context as _, Result};
use aya::maps::{Array, MapData};
use lb_common::{addr_filter_bit, ADDR_FILTER_DST, ADDR_FILTER_SRC, ADDR_FILTER_WORDS};

use super::Datapath;

/// The map and what it holds, as last written.
pub(super) struct AddrFilter {
    map: Array<MapData, u64>,
    words: Vec<u64>,
}

/// Which bitmap an address goes in.
#[derive(Clone, Copy)]
pub(super) enum Side {
    /// Packets to it may be the LB's: a VIP, an SNAT pool address.
    Dst,
    /// Packets from it may be: a nat or router real, whose answers the LB translates.
    Src,
}

impl AddrFilter {
    pub(super) fn new(map: Array<MapData, u64>) -> Self {
        Self {
            map,
            words: vec![0; 2 * ADDR_FILTER_WORDS as usize],
        }
    }

    /// Sets the bits of `addrs` (IPv6 ones have none: the established path is IPv4's).
    pub(super) fn add(&mut self, addrs: impl IntoIterator<Item = (IpAddr, Side)>) -> Result<()> {
        let mut words = self.words.clone();
        for (addr, side) in addrs {
            set(&mut words, addr, side);
        }
        self.write(words)
    }

    /// Makes the bitmaps exactly `addrs`' bits.
    pub(super) fn set_exactly(
        &mut self,
        addrs: impl IntoIterator<Item = (IpAddr, Side)>,
    ) -> Result<()> {
        let mut words = vec![0; self.words.len()];
        for (addr, side) in addrs {
            set(&mut words, addr, side);
        }
        self.write(words)
    }

    fn write(&mut self, words: Vec<u64>) -> Result<()> {
        let changed: BTreeMap<u32, u64> = words
            .iter()
            .zip(&self.words)
            .enumerate()
            .filter(|(_, (new, old))| new != old)
            .map(|(i, (new, _))| (i as u32, *new))
            .collect();
        for (index, word) in changed {
            self.map
                .set(index, word, 0)
                .context("writing ADDR_FILTER")?;
            self.words[index as usize] = word;
        }
        Ok(())
    }
}

fn set(words: &mut [u64], addr: IpAddr, side: Side) {
    let IpAddr::V4(a) = addr else {
        return;
    };
    let bit = addr_filter_bit(a.octets());
    let base = match side {
        Side::Dst => ADDR_FILTER_DST,
        Side::Src => ADDR_FILTER_SRC,
    };
    words[(base + bit / 64) as usize] |= 1 << (bit % 64);
}

impl Datapath {
    /// ADDR_FILTER as what is served now says: every VIP's address, every ENDPOINTS key's
    /// (a pool address, key port 0, as a destination; a real as a source).
    pub(super) fn sync_addr_filter(&mut self) -> Result<()> {
        let vips = self.services.keys().map(|v| (v.addr, Side::Dst));
        let endpoints = self.endpoints_written.keys().map(|k| {
            let addr = lb_common::ip_from_bytes(&k.addr_bytes(), k.family());
            (addr, if k.port() == 0 { Side::Dst } else { Side::Src })
        });
        let all: Vec<(IpAddr, Side)> = vips.chain(endpoints).collect();
        self.addr_filter.set_exactly(all)
    }
}
