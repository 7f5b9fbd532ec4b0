//! XDP programs of lbctl. The entry points are thin: the stages live in the library.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        bindings::xdp_action::XDP_PASS, helpers::bpf_xdp_adjust_head, macros::xdp,
        programs::XdpContext,
    };
    use lb_common::Reason;
    use lb_ebpf::{decap, emit, lookup, maps::FULL_PATH, observe, packet::Packet, pipeline};

    /// The load balancer's established path: a packet of a flow the table knows is
    /// forwarded here in one inlined pass (`established`); every other packet, and every
    /// packet while a capture or debug lines are on, goes to the full path, `lb_full`.
    #[xdp]
    pub fn lb_xdp(ctx: XdpContext) -> u32 {
        if observe::on() {
            pipeline::no_hint();
            return full_path(&ctx);
        }
        let len = ctx.data_end() - ctx.data();
        let ingress = ctx.ingress_ifindex() as u32;
        match pipeline::established(&ctx, ingress) {
            Ok(Some(sent)) => emit::forwarded(&sent, ingress, len),
            Ok(None) => full_path(&ctx),
            Err(reason) => emit::not_forwarded(reason, len),
        }
    }

    /// Tail-calls the full path; returns only when that fails.
    #[inline(always)]
    fn full_path(ctx: &XdpContext) -> u32 {
        // SAFETY: a tail call from an XDP program to the XDP program in FULL_PATH slot 0,
        // with the same context; on success it does not return.
        unsafe { FULL_PATH.tail_call(ctx, 0) };
        emit::not_forwarded(Reason::NoFullPath, ctx.data_end() - ctx.data())
    }

    /// The full path: parse → lookup → schedule → rewrite → emit, for what the established
    /// path leaves (new flows, flows ending, ICMP, IPv6, packets not for a VIP). While a
    /// capture or debug lines are on, the same with the packet observed; otherwise the path
    /// is exactly the balancer's, after one load of the switch.
    #[xdp]
    pub fn lb_full(ctx: XdpContext) -> u32 {
        if observe::on() {
            run_observed(&ctx)
        } else {
            run(&ctx)
        }
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

    /// [`run`], with the frame copied before and the verdict recorded after (`observe`).
    #[inline(always)]
    fn run_observed(ctx: &XdpContext) -> u32 {
        let len = ctx.data_end() - ctx.data();
        let ingress = ctx.ingress_ifindex() as u32;
        let observed = observe::arm(ctx, ingress);
        let (action, slot, real_id, egress) = match pipeline::run(ctx, ingress) {
            Ok(sent) => (
                emit::forwarded(&sent, ingress, len),
                sent.slot(),
                sent.real_id,
                sent.egress,
            ),
            Err(reason) => (emit::not_forwarded(reason, len), reason.slot(), 0, 0),
        };
        if observed != 0 {
            observe::after(
                ctx,
                observe::verdict(observed, action),
                slot,
                real_id,
                egress,
            );
        }
        action
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
