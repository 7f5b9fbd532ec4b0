//! The benchmark object: the harness around the shipped balancer, never part of lbctl.
//!
//! The per-packet figures run `lb_bench` with BPF_PROG_TEST_RUN: it restores the frame, then
//! tail-calls the `lb_xdp` that userspace loaded from the shipped object (slot
//! `BENCH_SLOT_BALANCER`), so what is measured is the product's program itself, on the maps
//! its `Datapath` seeded. `lb_bench_floor` pays the same harness (restore + tail call) into a
//! MAC swap, so a figure minus the floor is the balancer's own cost. The forwarding path uses
//! the generator, the sink and the bare redirect.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod harness;
#[cfg(target_arch = "bpf")]
mod maps;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_TX},
        helpers::bpf_redirect,
        macros::xdp,
        programs::XdpContext,
    };
    use lb_common::{BENCH_SLOT_BALANCER, BENCH_SLOT_SWAP};

    use crate::{harness, maps::BENCH_TAIL_CALLS};

    /// The shipped balancer on the frame restored before every test-run repeat.
    #[xdp]
    pub fn lb_bench(ctx: XdpContext) -> u32 {
        harness::restore(&ctx);
        // SAFETY: a tail call into an XDP program on the same context; it does not return.
        unsafe { BENCH_TAIL_CALLS.tail_call(&ctx, BENCH_SLOT_BALANCER) };
        // The slot is empty: the run fails loudly instead of measuring nothing.
        XDP_ABORTED
    }

    /// The floor with the balancer's harness: the restore and the tail call, into the MAC
    /// swap. It minus `lb_bench_swap` is what the harness adds to every `lb_bench` figure.
    #[xdp]
    pub fn lb_bench_floor(ctx: XdpContext) -> u32 {
        harness::restore(&ctx);
        // SAFETY: as in `lb_bench`.
        unsafe { BENCH_TAIL_CALLS.tail_call(&ctx, BENCH_SLOT_SWAP) };
        XDP_ABORTED
    }

    /// The trivial program, a MAC swap sent back; it needs no restore (its own output is a
    /// frame it handles the same way).
    #[xdp]
    pub fn lb_bench_swap(ctx: XdpContext) -> u32 {
        harness::swap_macs(&ctx);
        XDP_TX
    }

    /// The traffic generator (BPF_PROG_RUN live frames): the frame with the next source port,
    /// sent out of the interface the run names.
    #[xdp]
    pub fn lb_bench_gen(ctx: XdpContext) -> u32 {
        harness::restore(&ctx);
        XDP_TX
    }

    /// Counts and drops every frame (the receiving end of the path).
    #[xdp]
    pub fn lb_bench_sink(_ctx: XdpContext) -> u32 {
        harness::count_sink();
        XDP_DROP
    }

    /// The limit of the forwarding path: MACs set, redirected, nothing else.
    #[xdp]
    pub fn lb_bench_redirect(ctx: XdpContext) -> u32 {
        match harness::redirect_target(&ctx) {
            // SAFETY: a helper taking plain integers; with flags 0 it returns XDP_REDIRECT.
            Some(ifindex) => unsafe { bpf_redirect(ifindex, 0) as u32 },
            None => XDP_DROP,
        }
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("lb-bench is an eBPF object; it is built for bpfel and embedded in the tests crate");
}
