//! What the datapath tells userspace about each packet, when asked (OBSERVE slot 0):
//! captures for `lbctl capture` and debug log lines for `lbctl debug`. Either way the frame
//! is first copied as it arrived into this CPU's record (CAPTURE_SCRATCH), before the
//! pipeline touches it. After the verdict, a capture sends the record to the ring buffer
//! with the verdict, and a frame the program sends after it as it left; a full ring drops
//! records and counts them, never waits. A debug line says where the packet came from and
//! what became of it. When neither is on, a packet pays the one load in [`on`].

use core::slice;

use aya_ebpf::{
    bindings::xdp_action::{XDP_REDIRECT, XDP_TX},
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use aya_log_ebpf::info;
use lb_common::{CaptureHeader, CaptureRecord, CAPTURE_ANY, CAPTURE_SNAP, SIDE_IN, SIDE_OUT};

use crate::maps::{CAPTURE_COUNTS, CAPTURE_FRAMES, CAPTURE_SCRATCH, OBSERVE};

const HEADER_LEN: usize = core::mem::size_of::<CaptureHeader>();

/// [`arm`]: this packet is captured.
pub const CAPTURED: u32 = 1;
/// [`arm`]: this packet gets a debug line.
pub const DEBUG: u32 = 2;

/// What is observed, `CAPTURED | DEBUG` bits, written by userspace into the program's
/// `.bss` (see lb-userspace's `capture::Switch`), with OBSERVE's settings written before it:
/// the switch every packet reads, one load from the program's own data and no map lookup.
#[unsafe(no_mangle)]
static mut OBSERVING: u32 = 0;

/// Whether anything is observed: the one load every packet pays for captures and debug
/// lines.
#[inline(always)]
pub fn on() -> bool {
    // SAFETY: a plain aligned load of a u32 of the program's .bss, which only userspace
    // writes (a whole word at a time); volatile, so it is read on every packet.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(OBSERVING)) != 0 }
}

/// What is observed of this packet, once [`on`] said something is (0: nothing after all;
/// else [`CAPTURED`] and/or [`DEBUG`]), as OBSERVE's settings say. If anything, the frame as
/// it arrived is now in this CPU's record.
#[inline(never)]
pub fn arm(ctx: &XdpContext, ingress: u32) -> u32 {
    match OBSERVE.get(0) {
        Some(o) if o.capture | o.debug != 0 => {
            let captured = o.capture != 0 && (o.ifindex == 0 || o.ifindex == ingress);
            let what = if captured { CAPTURED } else { 0 } | if o.debug != 0 { DEBUG } else { 0 };
            if what == 0 {
                return 0;
            }
            copy_in(ctx, ingress, o.snaplen) * what
        }
        _ => 0,
    }
}

/// `after`'s second argument: what [`arm`] said, and the XDP action (in one register: BPF
/// functions take five).
#[inline(always)]
pub fn verdict(what: u32, action: u32) -> u32 {
    what << 8 | action
}

/// After the verdict (`what_action` from [`verdict`], counter slot `slot`; a forwarded
/// frame's `real_id` and `egress`): the capture's records and the debug line that [`arm`]
/// said.
#[inline(never)]
pub fn after(ctx: &XdpContext, what_action: u32, slot: u32, real_id: u32, egress: u32) {
    let (what, action) = (what_action >> 8, what_action & 0xff);
    if what & DEBUG != 0 {
        debug_line(ctx, action, slot, real_id);
    }
    if what & CAPTURED != 0 {
        record(ctx, action, slot, real_id, egress);
    }
}

/// Copies the frame in `ctx` into this CPU's record; 1 when it did.
#[inline(always)]
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
    // Debug lines alone read the headers only.
    load(ctx, r, if snaplen == 0 { 64 } else { snaplen });
    1
}

/// Sends this CPU's record (armed by [`arm`]) with the verdict, when it is one the capture
/// asked for, and, for a frame the program sent (`action` XDP_TX or XDP_REDIRECT), the frame
/// as it leaves. `slot` is the verdict's counter slot.
#[inline(always)]
fn record(ctx: &XdpContext, action: u32, slot: u32, real_id: u32, egress: u32) {
    let Some(s) = OBSERVE.get(0) else {
        return;
    };
    // Stopped since `arm` (its filter fields are zero then, and slot 0 would match).
    if s.capture == 0 || (s.slot != CAPTURE_ANY && s.slot != slot) {
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

/// The debug line of this CPU's record (the frame as it arrived): where from, the IPv4
/// addresses and ports when it has them, and the verdict; lbctl names the verdict's slot.
#[inline(always)]
fn debug_line(ctx: &XdpContext, action: u32, slot: u32, real_id: u32) {
    let Some(r) = CAPTURE_SCRATCH.get_ptr(0) else {
        return;
    };
    // SAFETY: this CPU's slot, as in `copy_in`; only read here.
    let r = unsafe { &*r };
    let (h, b) = (&r.header, &r.bytes);
    let ipv4 = b[12] == 0x08 && b[13] == 0 && b[14] == 0x45;
    if h.cap_len >= 38 && ipv4 && (b[23] == 6 || b[23] == 17) {
        let src = [b[26], b[27], b[28], b[29]];
        let dst = [b[30], b[31], b[32], b[33]];
        let sport = u16::from_be_bytes([b[34], b[35]]);
        let dport = u16::from_be_bytes([b[36], b[37]]);
        info!(
            ctx,
            "ifindex {} {:i}:{} > {:i}:{} proto {} {} B: action {} verdict={} real {}",
            h.ingress,
            src,
            sport,
            dst,
            dport,
            b[23],
            h.wire_len,
            action,
            slot,
            real_id
        );
    } else {
        let ethertype = u16::from_be_bytes([b[12], b[13]]);
        info!(
            ctx,
            "ifindex {} ethertype {:x} {} B: action {} verdict={} real {}",
            h.ingress,
            ethertype,
            h.wire_len,
            action,
            slot,
            real_id
        );
    }
}
