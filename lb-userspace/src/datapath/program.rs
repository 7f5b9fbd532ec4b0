//! A loaded program as the kernel describes it, found by id: what `lbctl stats` and
//! `lbctl capture` open the maps of a running balancer by, with or without the lbctl that
//! loaded it.

use std::collections::BTreeMap;

use std::os::fd::{AsFd as _, AsRawFd as _};

use anyhow::{bail, Context as _, Result};
use aya::maps::{MapData, MapInfo};
use lb_common::map_names;

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

/// The maps of loaded program `id`, by name (the kernel's names: the first 15 bytes), and
/// those of the full path it tail-calls (`FULL_PATH`), which uses the maps the established
/// path does not (VIPS, the captures' and logs' maps).
pub fn maps_by_name(id: u32) -> Result<BTreeMap<String, u32>> {
    let mut by_name = own_maps_by_name(id)?;
    if let Some(&array) = by_name.get(map_names::FULL_PATH) {
        if let Some(full) = program_in_slot0(array)? {
            for (name, map) in own_maps_by_name(full)? {
                by_name.entry(name).or_insert(map);
            }
        }
    }
    Ok(by_name)
}

/// The id of the program in slot 0 of program array `map_id`, if one is there.
fn program_in_slot0(map_id: u32) -> Result<Option<u32>> {
    let map = MapData::from_id(map_id).with_context(|| format!("opening map {map_id}"))?;
    let fd = map.fd().as_fd().as_raw_fd();
    let key: u32 = 0;
    let mut value: u32 = 0;
    // bpf(2)'s BPF_MAP_LOOKUP_ELEM attribute: map_fd, padding, key and value pointers.
    #[repr(C)]
    struct LookupAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let attr = LookupAttr {
        map_fd: fd as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &mut value as *mut u32 as u64,
        flags: 0,
    };
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    // SAFETY: bpf(2) reads `attr` (valid for its size) and writes 4 bytes to `value`, the
    // value size of a program array (the program's id from userspace); both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_ELEM,
            &attr as *const LookupAttr,
            std::mem::size_of::<LookupAttr>(),
        )
    };
    if rc == 0 {
        return Ok(Some(value));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOENT) {
        return Ok(None);
    }
    Err(err).with_context(|| format!("reading slot 0 of program array {map_id}"))
}

/// The maps program `id` uses itself.
fn own_maps_by_name(id: u32) -> Result<BTreeMap<String, u32>> {
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
