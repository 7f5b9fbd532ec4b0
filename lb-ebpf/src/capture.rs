//! Captures for `lbctl capture`: when one runs (CAPTURE slot 0), each frame is copied as it
//! arrived into this CPU's record (CAPTURE_SCRATCH) before the pipeline touches it; after the
//! verdict, the record goes to the ring buffer with the verdict, and a frame the program sends
//! goes after it as it left. A full ring drops records and counts them, never waits. When no
//! capture runs, a packet pays the one lookup in [`arm`].

use core::slice;

use aya_ebpf::{
    bindings::xdp_action::{XDP_REDIRECT, XDP_TX},
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use lb_common::{CaptureHeader, CaptureRecord, CAPTURE_ANY, CAPTURE_SNAP, SIDE_IN, SIDE_OUT};

use crate::maps::{CAPTURE, CAPTURE_COUNTS, CAPTURE_FRAMES, CAPTURE_SCRATCH};

const HEADER_LEN: usize = core::mem::size_of::<CaptureHeader>();

/// Whether this packet is captured: a capture runs, for frames of `ingress`. If so, the frame
/// as it arrived is now in this CPU's record.
#[inline(always)]
pub fn arm(ctx: &XdpContext, ingress: u32) -> bool {
    match CAPTURE.get(0) {
        Some(s) if s.enabled != 0 && (s.ifindex == 0 || s.ifindex == ingress) => {
            copy_in(ctx, ingress, s.snaplen) != 0
        }
        _ => false,
    }
}

/// Copies the frame in `ctx` into this CPU's record; 1 when it did.
#[inline(never)]
fn copy_in(ctx: &XdpContext, ingress: u32, snaplen: u32) -> u32 {
    let Some(r) = CAPTURE_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot; one program runs on a CPU at a time (see `maps::scratch`),
    // and nothing else reads it.
    let r = unsafe { &mut *r };
    let Some(counts) = CAPTURE_COUNTS.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: as above.
    let counts = unsafe { &mut *counts };
    counts.seen += 1;
    let h = &mut r.header;
    // SAFETY: helpers taking no arguments.
    h.at_ns = unsafe { bpf_ktime_get_ns() };
    h.cpu = unsafe { bpf_get_smp_processor_id() };
    h.seq = counts.seen as u32;
    h.ingress = ingress;
    load(ctx, r, snaplen);
    1
}

/// Sends this CPU's record (armed by [`arm`]) with the verdict, when it is one the capture
/// asked for, and, for a frame the program sent (`action` XDP_TX or XDP_REDIRECT), the frame
/// as it leaves. `slot` is the verdict's counter slot.
#[inline(never)]
pub fn record(ctx: &XdpContext, action: u32, slot: u32, real_id: u32, egress: u32) {
    let Some(s) = CAPTURE.get(0) else {
        return;
    };
    if s.slot != CAPTURE_ANY && s.slot != slot {
        return;
    }
    let snaplen = s.snaplen;
    let Some(r) = CAPTURE_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot, as in `copy_in`.
    let r = unsafe { &mut *r };
    let h = &mut r.header;
    h.action = action;
    h.slot = slot;
    h.real_id = real_id;
    h.egress = egress;
    h.side = SIDE_IN;
    send(r);
    if action == XDP_TX || action == XDP_REDIRECT {
        load(ctx, r, snaplen);
        r.header.side = SIDE_OUT;
        send(r);
    }
}

/// The frame in `ctx` (its first `snaplen` bytes, at most [`CAPTURE_SNAP`]) into `r`.
#[inline(always)]
fn load(ctx: &XdpContext, r: &mut CaptureRecord, snaplen: u32) {
    let len = (ctx.data_end() - ctx.data()) as u32;
    r.header.wire_len = len;
    r.header.cap_len = 0;
    let want = if len < snaplen { len } else { snaplen };
    if want == 0 {
        return;
    }
    // Bounded as the verifier needs it, 1..=CAPTURE_SNAP in the register passed (a test for
    // zero on another copy of the value does not carry over to this one).
    let last = want - 1;
    let last = if last > CAPTURE_SNAP as u32 - 1 {
        CAPTURE_SNAP as u32 - 1
    } else {
        last
    };
    let want = last + 1;
    // SAFETY: copies `want` (1..=CAPTURE_SNAP) bytes of the frame into the record's buffer,
    // which has CAPTURE_SNAP; the helper checks the frame's bounds itself.
    let done = unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, r.bytes.as_mut_ptr().cast(), want) };
    if done == 0 {
        r.header.cap_len = want;
    }
}

/// `r`'s header and its frame bytes to the ring buffer, or counted as lost.
#[inline(always)]
fn send(r: &CaptureRecord) {
    let len = r.header.cap_len as usize;
    let len = if len > CAPTURE_SNAP {
        CAPTURE_SNAP
    } else {
        len
    };
    // SAFETY: `r` is a CaptureRecord: its header and at least `len` (≤ CAPTURE_SNAP) bytes
    // after it are one initialised value.
    let bytes = unsafe {
        slice::from_raw_parts((r as *const CaptureRecord).cast::<u8>(), HEADER_LEN + len)
    };
    let sent = CAPTURE_FRAMES.output_untyped::<[u8]>(bytes, 0).is_ok();
    if let Some(counts) = CAPTURE_COUNTS.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, as in `copy_in`.
        let counts = unsafe { &mut *counts };
        if sent {
            counts.sent += 1;
        } else {
            counts.ring_full += 1;
        }
    }
}
