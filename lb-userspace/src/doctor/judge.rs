//! Which checks a real gets, in the order they are reported: each VIP on lo, then the ARP
//! sysctls (IPv4 VIPs), then the MTU (dsr) or the tunnel checks. Each check's verdict is its
//! own module's.

use super::{
    facts::Facts,
    sysctls::{arp_announce, arp_ignore, rp_filter},
    tunnel::{decap_attached, tunnel_address},
    vip::vip_on_lo,
    DoctorRealArgs, Finding, RealMode,
};

/// What each check of a real of `args` finds in `f`.
pub(super) fn judge(args: &DoctorRealArgs, f: &Facts) -> Vec<Finding> {
    let mut out: Vec<Finding> = args
        .vips
        .iter()
        .map(|&vip| vip_on_lo(vip, args.mode, &f.addrs))
        .collect();
    if let Some(s) = f.arp_ignore {
        out.push(arp_ignore(&f.iface, s));
    }
    if let Some(s) = f.arp_announce {
        out.push(arp_announce(&f.iface, s));
    }
    match args.mode {
        RealMode::Dsr => out.push(Finding {
            check: "mtu".into(),
            ok: true,
            detail: format!("{} has MTU {} (reported only)", f.iface, f.mtu),
            fix: None,
        }),
        RealMode::Tunnel => {
            if let Some(s) = f.rp_filter {
                out.push(rp_filter(&f.iface, s));
            }
            if let Some(xdp) = &f.xdp {
                out.push(decap_attached(&f.iface, xdp.as_ref()));
            }
            out.push(tunnel_address(&f.iface, f.decap_addr, &f.addrs));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::test_fixtures::{addr, args, configured_real, find, VIP};

    #[test]
    fn a_configured_real_passes_every_check_in_both_modes() {
        for mode in [RealMode::Dsr, RealMode::Tunnel] {
            let findings = judge(&args(mode, &[VIP]), &configured_real());
            assert!(findings.iter().all(|f| f.ok), "{mode:?}: {findings:?}");
        }
    }

    #[test]
    fn ipv6_vips_want_a_128_on_lo_and_no_arp_checks() {
        let mut facts = configured_real();
        facts.arp_ignore = None;
        facts.arp_announce = None;
        let findings = judge(&args(RealMode::Dsr, &["2001:2::10"]), &facts);
        let f = find(&findings, "vip 2001:2::10 on lo");
        assert_eq!(f.fix.as_deref(), Some("ip addr add 2001:2::10/128 dev lo"));
        assert!(
            f.detail.contains("ARP sysctls do not apply"),
            "{}",
            f.detail
        );
        assert!(findings.iter().all(|f| !f.check.starts_with("arp")));
        facts.addrs.push(addr("lo", "2001:2::10", 128));
        let findings = judge(&args(RealMode::Dsr, &["2001:2::10"]), &facts);
        assert!(findings.iter().all(|f| f.ok), "{findings:?}");
    }

    #[test]
    fn dsr_reports_the_mtu_and_skips_the_tunnel_checks() {
        let findings = judge(&args(RealMode::Dsr, &[VIP]), &configured_real());
        let checks: Vec<&str> = findings.iter().map(|f| f.check.as_str()).collect();
        assert_eq!(
            checks,
            [
                "vip 198.18.100.10 on lo",
                "arp_ignore",
                "arp_announce",
                "mtu"
            ]
        );
        assert_eq!(
            find(&findings, "mtu").detail,
            "eth0 has MTU 1500 (reported only)"
        );
    }
}
