//! XDP programs of lbctl. The entry points are thin: the stages live in the library.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        bindings::xdp_action::XDP_PASS,
        helpers::{bpf_redirect, bpf_xdp_adjust_head},
        macros::xdp,
        programs::XdpContext,
    };
    use lb_common::Reason;
    use lb_ebpf::{bench, decap, emit, lookup, packet::Packet, pipeline};

    /// The load balancer: parse → lookup → schedule → rewrite → emit.
    #[xdp]
    pub fn lb_xdp(ctx: XdpContext) -> u32 {
        run(&ctx)
    }

    #[inline(always)]
    fn run(ctx: &XdpContext) -> u32 {
        let len = ctx.data_end() - ctx.data();
        let ingress = ctx.ingress_ifindex() as u32;
        match pipeline::run(ctx, ingress) {
            Ok(sent) => emit::forwarded(&sent, ingress, len),
            Err(reason) => emit::not_forwarded(reason, len),
        }
    }

    /// For real servers of tunnel-mode VIPs: strips the outer header of IP-in-IP/6in4 sent to
    /// this host and passes the inner packet up the stack. Everything else passes untouched.
    #[xdp]
    pub fn lb_decap(ctx: XdpContext) -> u32 {
        let len = ctx.data_end() - ctx.data();
        match strip(&ctx) {
            Ok(()) => emit::decapsulated(len),
            Err(reason) => emit::not_forwarded(reason, len),
        }
    }

    #[inline(always)]
    fn strip(ctx: &XdpContext) -> Result<(), Reason> {
        // SAFETY: data..data_end is the frame the kernel handed this program.
        let pkt = unsafe { Packet::new(ctx.data(), ctx.data_end()) };
        let host = lookup::iface(ctx.ingress_ifindex() as u32)
            .ok_or(Reason::IfaceNotConfigured)?
            .ipv4;
        decap::prepare(&pkt, host)?;
        // SAFETY: adjust_head on our own context; no packet pointer is used afterwards.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, decap::OUTER_LEN as i32) } != 0 {
            return Err(Reason::DecapFailed);
        }
        Ok(())
    }

    /// Benchmarks only: the balancer on the frame restored before every test-run repeat.
    #[xdp]
    pub fn lb_bench(ctx: XdpContext) -> u32 {
        bench::restore(&ctx);
        run(&ctx)
    }

    /// Benchmarks only: the restore and a MAC swap, the floor of the path.
    #[xdp]
    pub fn lb_bench_floor(ctx: XdpContext) -> u32 {
        bench::restore(&ctx);
        bench::swap_macs(&ctx);
        aya_ebpf::bindings::xdp_action::XDP_TX
    }

    /// Benchmarks only: the trivial program, a MAC swap sent back; it needs no restore (its
    /// own output is a frame it handles the same way).
    #[xdp]
    pub fn lb_bench_swap(ctx: XdpContext) -> u32 {
        bench::swap_macs(&ctx);
        aya_ebpf::bindings::xdp_action::XDP_TX
    }

    /// Benchmarks only: the traffic generator (BPF_PROG_RUN live frames): the frame with the
    /// next source port, sent out of the interface the run names.
    #[xdp]
    pub fn lb_bench_gen(ctx: XdpContext) -> u32 {
        bench::restore(&ctx);
        aya_ebpf::bindings::xdp_action::XDP_TX
    }

    /// Benchmarks only: counts and drops every frame (the receiving end of the path).
    #[xdp]
    pub fn lb_bench_sink(_ctx: XdpContext) -> u32 {
        bench::count_sink();
        aya_ebpf::bindings::xdp_action::XDP_DROP
    }

    /// Benchmarks only: the limit of the forwarding path: MACs set, redirected, nothing else.
    #[xdp]
    pub fn lb_bench_redirect(ctx: XdpContext) -> u32 {
        match bench::redirect_target(&ctx) {
            // SAFETY: a helper taking plain integers; with flags 0 it returns XDP_REDIRECT.
            Some(ifindex) => unsafe { bpf_redirect(ifindex, 0) as u32 },
            None => aya_ebpf::bindings::xdp_action::XDP_DROP,
        }
    }

    /// Passes every frame. veth drops frames that XDP_TX sends to a peer without an XDP
    /// program, so the lab attaches this one to the LB's peer.
    #[xdp]
    pub fn lb_pass(_ctx: XdpContext) -> u32 {
        XDP_PASS
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("lb-ebpf is an eBPF object; it is built for bpfel and embedded in lbctl");
}
