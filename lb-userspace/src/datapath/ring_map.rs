//! A VIP's ring as an array map of its own, sized to the ring and mapped into this process for
//! as long as the VIP is served, so that a change is written in place: no map update, no
//! wait on the kernel.
//!
//! A packet reads one slot of the ring (leastconn: a few), each an aligned 4-byte word
//! written whole, so while a ring is rewritten a packet finds in its slot the real of the old
//! ring or of the new one, never anything else: for a new flow that is the ring before the
//! change or the one after, and its flow entry keeps the real it got from then on. A draining
//! or down real stays in REALS as able to take flows until the rewrite ends (`set_reals`
//! marks it after), so a slot read mid-rewrite never names a real that cannot take the flow.
//! Ring maps are created `BPF_F_MMAPABLE | BPF_F_INNER_MAP` (the eBPF side's inner-map
//! template has the same flags, which the kernel requires): each its own size. A new ring map
//! goes into RINGS by a map update, which waits for the kernel's RCU grace period (about
//! 10 ms); `Batch` puts many in with one update (one wait).

use std::{
    os::fd::{AsFd as _, AsRawFd as _, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context as _, Result};
use aya::maps::MapData;
use lb_common::{RING_MAP_FLAGS, RING_SIZE};

/// `BPF_MAP_TYPE_ARRAY` in the kernel's enum.
const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_UPDATE_BATCH` in the kernel's enum of commands.
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
/// Bytes between two values of an array map: the value size rounded up to 8.
const ELEM_STRIDE: usize = size_of::<u32>().next_multiple_of(8);

/// A ring map, mapped into this process.
pub(super) struct RingMap {
    /// This process's descriptor of the map, until it is in RINGS: from then on RINGS and
    /// the mapping hold the map (a mapping keeps its map's file open), and a served VIP
    /// costs no descriptor.
    map: Option<MapData>,
    /// The mapping of the map's values: `capacity` slots of `ELEM_STRIDE` bytes.
    base: NonNull<u8>,
    /// Bytes mapped.
    len: usize,
    capacity: u32,
}

// SAFETY: the mapping belongs to this value alone (made in `new`, unmapped in `drop`); the
// kernel side of it is the map, which any thread may use.
unsafe impl Send for RingMap {}
// SAFETY: `&RingMap` only reads (`capacity`, the fd) or stores atomically; writes take `&mut`.
unsafe impl Sync for RingMap {}

impl RingMap {
    /// An empty ring map of `capacity` slots (all 0: "no real").
    pub(super) fn new(capacity: u32) -> Result<Self> {
        if capacity == 0 || capacity > RING_SIZE {
            bail!("a ring map holds 1 to {RING_SIZE} slots, not {capacity}");
        }
        let def = aya_obj::Map::new_from_params(
            BPF_MAP_TYPE_ARRAY,
            size_of::<u32>() as u32,
            size_of::<u32>() as u32,
            capacity,
            RING_MAP_FLAGS,
        );
        let map = MapData::create(def, "lb_ring", None).context("creating a ring map")?;
        let len = capacity as usize * ELEM_STRIDE;
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: maps `len` bytes of an array map we created with BPF_F_MMAPABLE and whose
        // values span exactly `len` bytes (`capacity` elements of ELEM_STRIDE bytes).
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
        let base = NonNull::new(base.cast::<u8>()).context("mmap returned a null mapping")?;
        Ok(Self {
            map: Some(map),
            base,
            len,
            capacity,
        })
    }

    /// Slots this ring map holds.
    pub(super) fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The map's descriptor, while this process holds one (see `map`).
    pub(super) fn raw_fd(&self) -> Result<RawFd> {
        self.map
            .as_ref()
            .map(|m| m.fd().as_fd().as_raw_fd())
            .context("a ring map already in RINGS has no descriptor left")
    }

    /// Closes the descriptor: the map is in RINGS.
    pub(super) fn release_fd(&mut self) {
        self.map = None;
    }

    /// Writes `ring` over the first slots, each slot one atomic store (see the module's
    /// note); the slots past it keep what they held.
    pub(super) fn write(&mut self, ring: &[u32]) -> Result<()> {
        if ring.len() > self.capacity as usize {
            bail!(
                "a ring of {} slots does not fit a ring map of {}",
                ring.len(),
                self.capacity
            );
        }
        for (i, id) in ring.iter().enumerate() {
            self.slot(i).store(*id, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Writes `ring` over every slot, repeated: a ring map going in in place of another, which
    /// a packet may still index by the other's size, finds a real of `ring` in every slot.
    pub(super) fn fill(&mut self, ring: &[u32]) {
        if ring.is_empty() {
            return;
        }
        for i in 0..self.capacity as usize {
            self.slot(i).store(ring[i % ring.len()], Ordering::Relaxed);
        }
    }

    fn slot(&self, i: usize) -> &AtomicU32 {
        assert!(i < self.capacity as usize, "slot {i} past the ring map");
        // SAFETY: slot `i` starts `i * ELEM_STRIDE` bytes into the mapping, within its `len`
        // bytes (i < capacity); the kernel aligns array values to 8 bytes, the mapping is
        // page-aligned, so the word is aligned for AtomicU32; it lives as long as `self`.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(i * ELEM_STRIDE).cast::<u32>()) }
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made; no slot reference outlives `self`.
        if unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) } != 0 {
            tracing::warn!("unmapping a ring map: {}", std::io::Error::last_os_error());
        }
    }
}

/// Puts each `(index, map fd)` into the map-of-maps `outer` with one `BPF_MAP_UPDATE_BATCH`:
/// one RCU grace period for them all (Linux 6.8 on; 5.19 to 6.7 wait once per map), where an
/// update each waits for one each. Kernels before 5.19 have no batch updates of maps of
/// maps: lbctl needs 5.19 or later.
pub(super) fn install_all(outer: &MapData, rings: &[(u32, RawFd)]) -> Result<()> {
    if rings.is_empty() {
        return Ok(());
    }
    let keys: Vec<u32> = rings.iter().map(|(index, _)| *index).collect();
    let fds: Vec<u32> = rings.iter().map(|(_, fd)| *fd as u32).collect();
    // The `batch` member of the kernel's `union bpf_attr`.
    #[repr(C)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: fds.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: outer.fd().as_fd().as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: BPF_MAP_UPDATE_BATCH reads `count` keys and values from the two vectors, which
    // outlive the call, and writes back only `attr.count`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            size_of::<BatchAttr>(),
        )
    };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        return Err(error).with_context(|| {
            format!(
                "installing {} ring maps in RINGS (one batch; {} went in)",
                keys.len(),
                attr.count
            )
        });
    }
    Ok(())
}
