//! Benchmark support, never attached: before every BPF_PROG_TEST_RUN repeat, the frame is
//! put back as the benchmark gave it (the run reuses one buffer, and a rewriting program
//! would otherwise process its own output), optionally with the next source port so that
//! every packet starts a new flow.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::BENCH_FRAME_LEN;

use crate::{
    decap::OUTER_LEN,
    maps::{BENCH_FRAME, BENCH_SEQ},
    packet::Packet,
};

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
    if let Ok(bytes) = pkt.ptr_at::<[u8; BENCH_FRAME_LEN]>(0) {
        // SAFETY: ptr_at checked that the bytes are in the frame.
        unsafe { *bytes = frame.bytes };
    }
    if frame.vary_sport_at == 0 {
        return;
    }
    let Some(seq) = BENCH_SEQ.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot.
    let n = unsafe {
        *seq = (*seq).wrapping_add(1);
        *seq
    };
    if let Ok(sport) = pkt.ptr_at::<[u8; 2]>(frame.vary_sport_at as usize) {
        // SAFETY: ptr_at checked that the two bytes are in the frame.
        unsafe { *sport = (n as u16).to_be_bytes() };
    }
    if let Ok(addr) = pkt.ptr_at::<[u8; 2]>(frame.vary_addr_at as usize) {
        // SAFETY: ptr_at checked that the two bytes are in the frame.
        unsafe { *addr = ((n >> 16) as u16).to_be_bytes() };
    }
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
