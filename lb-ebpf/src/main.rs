//! XDP programs of lbctl. The entry points are thin: the stages live in the library.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        bindings::xdp_action::XDP_PASS,
        helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
        macros::xdp,
        programs::XdpContext,
    };
    use lb_common::{Reason, MODE_DSR, MODE_TUNNEL};
    use lb_ebpf::{
        decap, emit, icmp, lookup,
        maps::CONFIG,
        packet::Packet,
        parse::{self, ETH_LEN},
        rewrite::{self, Tunnel},
        schedule,
    };

    /// The load balancer: parse → lookup → schedule → rewrite → emit.
    #[xdp]
    pub fn lb_xdp(ctx: XdpContext) -> u32 {
        let len = ctx.data_end() - ctx.data();
        match balance(&ctx) {
            Ok(vip_id) => emit::forwarded(vip_id, len),
            Err(reason) => emit::not_forwarded(reason, len),
        }
    }

    #[inline(always)]
    fn balance(ctx: &XdpContext) -> Result<u32, Reason> {
        // SAFETY: data..data_end is the frame the kernel handed this program.
        let pkt = unsafe { Packet::new(ctx.data(), ctx.data_end()) };
        let parsed = parse::parse(&pkt)?;
        let (vip, iface) = lookup::vip(&parsed)?;
        if vip.mode != MODE_DSR && vip.mode != MODE_TUNNEL {
            return Err(Reason::UnknownMode);
        }
        let real = schedule::real(&parsed, &vip)?;
        if vip.mode == MODE_DSR {
            rewrite::dsr(&pkt, iface.mac, real.mac())?;
            return Ok(vip.vip_id);
        }
        let inner_len = pkt.len() - ETH_LEN;
        if inner_len + decap::OUTER_LEN > iface.mtu as usize {
            if parsed.family != lb_common::Family::V4 as u8 {
                return Err(Reason::TooBig);
            }
            let fits = iface.mtu - decap::OUTER_LEN as u16;
            icmp::write_too_big(&pkt, iface.mac, iface.ipv4, fits)?;
            let shrink = icmp::TOO_BIG_FRAME_LEN as i32 - pkt.len() as i32;
            // SAFETY: adjust_tail on our own context; no packet pointer is used afterwards.
            if unsafe { bpf_xdp_adjust_tail(ctx.ctx, shrink) } != 0 {
                return Err(Reason::TooBig);
            }
            return Err(Reason::IcmpTooBig);
        }
        // SAFETY: adjust_head on our own context; every packet pointer is re-derived below.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(decap::OUTER_LEN as i32)) } != 0 {
            return Err(Reason::NoHeadroom);
        }
        // SAFETY: the frame as it is after adjust_head.
        let pkt = unsafe { Packet::new(ctx.data(), ctx.data_end()) };
        let a = real.addr_bytes();
        let tunnel = Tunnel {
            lb_mac: iface.mac,
            next_hop_mac: real.mac(),
            src: iface.ipv4,
            dst: [a[0], a[1], a[2], a[3]],
        };
        rewrite::ipip(&pkt, &tunnel, parsed.family, inner_len)?;
        Ok(vip.vip_id)
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
        let host = match CONFIG.get(0) {
            Some(c) => c.ipv4,
            None => return Err(Reason::NotForUs),
        };
        decap::prepare(&pkt, host)?;
        // SAFETY: adjust_head on our own context; no packet pointer is used afterwards.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, decap::OUTER_LEN as i32) } != 0 {
            return Err(Reason::Truncated);
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
