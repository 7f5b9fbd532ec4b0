//! What the benchmark programs do: before every BPF_PROG_TEST_RUN repeat, the frame is put
//! back as the benchmark gave it (the run reuses one buffer, and a rewriting program would
//! otherwise process its own output), optionally with the next source port so that every
//! packet starts a new flow; the sink's count; the bare redirect; the MAC swap.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::BENCH_FRAME_LEN;
use lb_ebpf::{decap::OUTER_LEN, packet::Packet};

use crate::maps::{BENCH_FRAME, BENCH_REDIRECT, BENCH_SEQ, BENCH_SINK};

/// Restores the benchmark frame in `ctx`.
#[inline(always)]
pub fn restore(ctx: &XdpContext) {
    let Some(frame) = BENCH_FRAME.get(0) else {
        return;
    };
    // A tunnelled repeat left an outer header in front: take it off first.
    if ctx.data_end() - ctx.data() == frame.len as usize + OUTER_LEN {
        // SAFETY: adjust_head on our own context; the packet is derived after it.
        unsafe { bpf_xdp_adjust_head(ctx.ctx, OUTER_LEN as i32) };
    }
    // SAFETY: data..data_end is the frame the kernel handed this program.
    let pkt = unsafe { Packet::new(ctx.data(), ctx.data_end()) };
    // Copied as 8-byte words, volatile so that LLVM does not turn the copy back into a call
    // to the byte-by-byte memmove (which would make the harness cost more than what it
    // measures).
    if let Ok(words) = pkt.ptr_at::<[u64; BENCH_FRAME_LEN / 8]>(0) {
        let from = frame.bytes.as_ptr() as *const u64;
        let to = words as *mut u64;
        let mut i = 0;
        while i < BENCH_FRAME_LEN / 8 {
            // SAFETY: ptr_at checked that the 64 bytes are in the frame. Both ends are 8-byte
            // aligned: map values always are, and test-run and live frames start at a fixed
            // headroom into their page (this code runs only there).
            unsafe { core::ptr::write_volatile(to.add(i), core::ptr::read_volatile(from.add(i))) };
            i += 1;
        }
    }
    if frame.vary_sport_at == 0 {
        return;
    }
    let Some(seq) = BENCH_SEQ.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot.
    let n = unsafe {
        // 1, 2, ... (a source port of 0 would be a malformed packet), wrapping back to 1.
        let mut next = (*seq).wrapping_add(1);
        if frame.vary_modulo != 0 && next > frame.vary_modulo {
            next = 1;
        }
        *seq = next;
        next
    };
    if let Ok(sport) = pkt.ptr_at::<[u8; 2]>(frame.vary_sport_at as usize) {
        // SAFETY: ptr_at checked that the two bytes are in the frame.
        unsafe { *sport = (n as u16).to_be_bytes() };
    }
    if frame.vary_addr_at == 0 {
        return;
    }
    let Ok(addr) = pkt.ptr_at::<[u8; 2]>(frame.vary_addr_at as usize) else {
        return;
    };
    // SAFETY: ptr_at checked that the two bytes are in the frame.
    let old = u16::from_be_bytes(unsafe { *addr });
    let new = old.wrapping_add((n >> 16) as u16);
    // SAFETY: as above.
    unsafe { *addr = new.to_be_bytes() };
    if frame.vary_csum_at == 0 {
        return;
    }
    if let Ok(csum) = pkt.ptr_at::<[u8; 2]>(frame.vary_csum_at as usize) {
        // SAFETY: ptr_at checked that the two bytes are in the frame.
        let hc = u16::from_be_bytes(unsafe { *csum });
        // RFC 1624: HC' = ~(~HC + ~m + m'), folded to 16 bits.
        let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        // SAFETY: as above.
        unsafe { *csum = (!(sum as u16)).to_be_bytes() };
    }
}

/// The sink: counts the frame on this CPU.
#[inline(always)]
pub fn count_sink() {
    if let Some(c) = BENCH_SINK.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, only this CPU writes it.
        unsafe { *c += 1 };
    }
}

/// The bare redirect: the frame's MACs set as BENCH_REDIRECT says; its egress interface, or
/// `None` when the map is not set.
#[inline(always)]
pub fn redirect_target(ctx: &XdpContext) -> Option<u32> {
    let to = BENCH_REDIRECT.get(0)?;
    // SAFETY: data..data_end is the frame the kernel handed this program.
    let pkt = unsafe { Packet::new(ctx.data(), ctx.data_end()) };
    let eth = pkt.ptr_at::<[u8; 12]>(0).ok()?;
    // SAFETY: ptr_at checked that the Ethernet addresses are in the frame.
    let eth = unsafe { &mut *eth };
    eth[..6].copy_from_slice(&to.dst_mac);
    eth[6..].copy_from_slice(&to.src_mac);
    Some(to.ifindex)
}

/// The floor: a frame's MACs swapped, as the simplest XDP_TX program does.
#[inline(always)]
pub fn swap_macs(ctx: &XdpContext) {
    // SAFETY: data..data_end is the frame the kernel handed this program.
    let pkt = unsafe { Packet::new(ctx.data(), ctx.data_end()) };
    if let Ok(eth) = pkt.ptr_at::<[u8; 12]>(0) {
        // SAFETY: ptr_at checked that the Ethernet addresses are in the frame.
        let eth = unsafe { &mut *eth };
        let mut i = 0;
        while i < 6 {
            eth.swap(i, i + 6);
            i += 1;
        }
    }
}
