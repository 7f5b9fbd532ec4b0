//! XDP programs of lbctl. The entry points are thin: the stages live in the library.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{bindings::xdp_action::XDP_PASS, macros::xdp, programs::XdpContext};
    use lb_common::{Reason, MODE_DSR};
    use lb_ebpf::{emit, lookup, packet::Packet, parse, rewrite, schedule};

    /// The load balancer: parse → lookup → schedule → rewrite → emit.
    #[xdp]
    pub fn lb_xdp(ctx: XdpContext) -> u32 {
        // SAFETY: data..data_end is the frame the kernel handed this program.
        let pkt = unsafe { Packet::new(ctx.data(), ctx.data_end()) };
        match balance(&pkt) {
            Ok(vip_id) => emit::forwarded(vip_id, pkt.len()),
            Err(reason) => emit::not_forwarded(reason, pkt.len()),
        }
    }

    #[inline(always)]
    fn balance(pkt: &Packet) -> Result<u32, Reason> {
        let parsed = parse::parse(pkt)?;
        let (vip, iface) = lookup::vip(&parsed)?;
        if vip.mode != MODE_DSR {
            return Err(Reason::UnknownMode);
        }
        let real = schedule::real(&parsed, &vip)?;
        rewrite::dsr(pkt, iface.mac, real.mac())?;
        Ok(vip.vip_id)
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
