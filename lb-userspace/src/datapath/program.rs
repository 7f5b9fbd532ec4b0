//! A loaded program as the kernel describes it, found by id: what `lbctl stats` and
//! `lbctl capture` open the maps of a running balancer by, with or without the lbctl that
//! loaded it.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use aya::maps::MapInfo;

/// What the kernel says of the loaded program `id`.
pub fn info(id: u32) -> Result<aya::programs::ProgramInfo> {
    for info in aya::programs::loaded_programs() {
        let info = info.context("listing the loaded BPF programs (needs root)")?;
        if info.id() == id {
            return Ok(info);
        }
    }
    bail!("no BPF program has id {id}: was lbctl just stopped?")
}

/// The maps of loaded program `id`, by name (the kernel's names: the first 15 bytes).
pub fn maps_by_name(id: u32) -> Result<BTreeMap<String, u32>> {
    let prog = info(id)?;
    let map_ids = prog
        .map_ids()
        .context("reading the program's map ids (needs root)")?;
    let mut by_name = BTreeMap::new();
    for map in map_ids.unwrap_or_default() {
        let info =
            MapInfo::from_id(map).with_context(|| format!("reading map {map} of program {id}"))?;
        if let Some(name) = info.name_as_str() {
            by_name.insert(name.to_owned(), map);
        }
    }
    Ok(by_name)
}
