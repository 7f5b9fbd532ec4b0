//! The one way the datapath touches packet bytes: a bounds-checked pointer into the frame.

use core::mem::size_of;

use lb_common::Reason;

/// No frame the datapath handles is longer: XDP frames are a page, or one jumbo buffer of 9k.
/// (Below the verifier's own limit on packet offsets, 0xffff, with room for the access size:
/// at the limit itself it would not learn the access is in bounds.)
const MAX_OFFSET: usize = 0x3fff;

/// The frame as the XDP context gives it: `[start, end)`.
#[derive(Clone, Copy)]
pub struct Packet {
    start: usize,
    end: usize,
}

impl Packet {
    /// # Safety
    /// `start..end` must be one readable and writable byte range that outlives the `Packet`
    /// (the XDP `data`/`data_end` pair, or a host test's buffer).
    #[inline(always)]
    pub unsafe fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    #[inline(always)]
    #[expect(
        clippy::len_without_is_empty,
        reason = "frames reaching XDP are never empty"
    )]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// A pointer to a `T` at `offset`, or [`Reason::Truncated`] when it would reach past the
    /// frame. The comparison is written against `end` the way the verifier tracks packet bounds.
    #[inline(always)]
    pub fn ptr_at<T>(&self, offset: usize) -> Result<*mut T, Reason> {
        // An offset read back from memory (the per-CPU scratch map) has no bounds the verifier
        // knows of, and it refuses pointer arithmetic with it; this check gives it one.
        if offset > MAX_OFFSET {
            return Err(Reason::Truncated);
        }
        let at = self.start + offset;
        if at + size_of::<T>() > self.end {
            return Err(Reason::Truncated);
        }
        Ok(at as *mut T)
    }
}
