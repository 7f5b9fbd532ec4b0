//! The VIPs' check: each on `lo` as a host address, and on no other interface.

use std::net::IpAddr;

use super::{facts::IfaceAddr, Finding, RealMode};

fn host_prefix_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

pub(super) fn vip_on_lo(vip: IpAddr, mode: RealMode, addrs: &[IfaceAddr]) -> Finding {
    let host = host_prefix_len(vip);
    let held: Vec<&IfaceAddr> = addrs.iter().filter(|a| a.addr == vip).collect();
    let on_lo = held.iter().any(|a| a.iface == "lo" && a.prefix_len == host);
    let misplaced: Vec<&&IfaceAddr> = held
        .iter()
        .filter(|a| a.iface != "lo" || a.prefix_len != host)
        .collect();
    let mut detail = Vec::new();
    if on_lo {
        detail.push(format!("{vip}/{host} is on lo"));
    } else {
        detail.push(format!(
            "{vip}/{host} is not on lo, so the real does not accept the VIP's packets"
        ));
    }
    for a in &misplaced {
        if a.iface == "lo" {
            detail.push(format!(
                "{vip}/{} on lo makes every address of that /{} this host's",
                a.prefix_len, a.prefix_len
            ));
        } else {
            let asked = if vip.is_ipv4() {
                "ARP"
            } else {
                "neighbour discovery"
            };
            detail.push(format!(
                "{vip} is on {}: the real answers {asked} for it there and steals the VIP's traffic from the LB",
                a.iface
            ));
        }
    }
    match (vip, mode) {
        (IpAddr::V6(_), RealMode::Tunnel) => detail.push(
            "the LB tunnels IPv4 VIPs only for now (`lbctl attach` refuses this one): serve it in dsr mode".into(),
        ),
        (IpAddr::V6(_), RealMode::Dsr) => detail.push(
            "IPv6: the ARP sysctls do not apply; neighbour discovery answers only for addresses of the interface asked, so lo's VIP stays unannounced".into(),
        ),
        (IpAddr::V4(_), _) => {}
    }
    let mut fix: Vec<String> = misplaced
        .iter()
        .map(|a| format!("ip addr del {vip}/{} dev {}", a.prefix_len, a.iface))
        .collect();
    if !on_lo {
        fix.push(format!("ip addr add {vip}/{host} dev lo"));
    }
    Finding {
        check: format!("vip {vip} on lo"),
        ok: fix.is_empty(),
        detail: detail.join("; "),
        fix: (!fix.is_empty()).then(|| fix.join("\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::test_fixtures::{addr, configured_real, VIP};

    #[test]
    fn a_vip_missing_from_lo_is_added_as_a_host_address() {
        let mut facts = configured_real();
        facts.addrs.retain(|a| a.iface != "lo");
        let f = vip_on_lo(VIP.parse().unwrap(), RealMode::Dsr, &facts.addrs);
        assert!(!f.ok);
        assert_eq!(
            f.fix.as_deref(),
            Some("ip addr add 198.18.100.10/32 dev lo")
        );
    }

    #[test]
    fn a_vip_on_the_interface_is_moved_to_lo_and_the_arp_theft_named() {
        let addrs = vec![addr("eth0", VIP, 32), addr("eth0", "198.18.0.11", 24)];
        let f = vip_on_lo(VIP.parse().unwrap(), RealMode::Dsr, &addrs);
        assert!(!f.ok);
        assert!(
            f.detail.contains("steals the VIP's traffic"),
            "{}",
            f.detail
        );
        assert_eq!(
            f.fix.as_deref(),
            Some("ip addr del 198.18.100.10/32 dev eth0\nip addr add 198.18.100.10/32 dev lo")
        );
    }

    #[test]
    fn a_vip_on_lo_with_a_wider_prefix_is_replaced() {
        let addrs = vec![addr("lo", VIP, 24)];
        let f = vip_on_lo(VIP.parse().unwrap(), RealMode::Dsr, &addrs);
        assert!(!f.ok);
        assert_eq!(
            f.fix.as_deref(),
            Some("ip addr del 198.18.100.10/24 dev lo\nip addr add 198.18.100.10/32 dev lo")
        );
    }
}
