//! A VIP's ring as a standalone, memory-mappable array map, filled in one copy.
//!
//! A ring has 65,537 slots; one `bpf_map_update_elem` per slot took over 100 ms in a debug
//! build, long enough for a health change to lag behind its log line. The ring maps are
//! created `BPF_F_MMAPABLE` (the eBPF side's inner-map template has the same flags, which the
//! kernel requires), so the whole table is written through a shared mapping instead.

use std::os::fd::{AsFd as _, AsRawFd as _};

use anyhow::{bail, Context as _, Result};
use aya::maps::MapData;
use lb_common::{RING_MAP_FLAGS, RING_SIZE};

/// `BPF_MAP_TYPE_ARRAY` in the kernel's enum.
const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// Bytes between two values of an array map: the value size rounded up to 8.
const ELEM_STRIDE: usize = size_of::<u32>().next_multiple_of(8);

/// Creates a ring map holding `slots` (real ids; slots past its end are 0, "no real").
pub(super) fn filled(slots: &[u32]) -> Result<MapData> {
    if slots.len() > RING_SIZE as usize {
        bail!(
            "a ring of {} slots is larger than the {RING_SIZE} a ring map holds",
            slots.len()
        );
    }
    let def = aya_obj::Map::new_from_params(
        BPF_MAP_TYPE_ARRAY,
        size_of::<u32>() as u32,
        size_of::<u32>() as u32,
        RING_SIZE,
        RING_MAP_FLAGS,
    );
    let map = MapData::create(def, "lb_ring", None).context("creating a ring map")?;
    // The kernel stores array values 8-byte aligned: each u32 slot takes 8 bytes.
    let len = RING_SIZE as usize * ELEM_STRIDE;
    let fd = map.fd().as_fd().as_raw_fd();
    // SAFETY: maps `len` bytes of an array map we created with BPF_F_MMAPABLE and whose
    // values span exactly `len` bytes (RING_SIZE elements of ELEM_STRIDE bytes).
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()).context("mapping a ring map into memory");
    }
    // SAFETY: `base` is a fresh, writable, page-aligned mapping of `len` bytes that no one
    // else references yet (the map is not installed in RINGS).
    let table = unsafe { std::slice::from_raw_parts_mut(base.cast::<u8>(), len) };
    for (elem, real_id) in table.chunks_exact_mut(ELEM_STRIDE).zip(slots) {
        elem[..size_of::<u32>()].copy_from_slice(&real_id.to_ne_bytes());
    }
    // SAFETY: unmaps exactly the mapping made above; `table` is not used after this.
    if unsafe { libc::munmap(base, len) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unmapping a ring map");
    }
    Ok(map)
}
