//! The tunnel mode checks: the decap program attached to the interface, and the IPv4 address
//! it accepts tunnels to.

use std::net::{IpAddr, Ipv4Addr};

use lb_common::program_names;

use super::{
    facts::{IfaceAddr, XdpProgram},
    Finding,
};

/// Whether a kernel-kept program name is the decap program's: the kernel keeps 15 bytes.
fn is_decap(name: &str) -> bool {
    let full = program_names::DECAP;
    name == &full[..full.len().min(15)]
}

pub(super) fn decap_attached(iface: &str, xdp: Option<&XdpProgram>) -> Finding {
    let attach = format!("lbctl decap attach {iface}");
    let (ok, detail, fix) = match xdp {
        Some(p) if is_decap(&p.name) => (
            true,
            format!("{} (id {}) is attached to {iface}", p.name, p.id),
            None,
        ),
        Some(p) => {
            let balancer = if p.name == program_names::LB {
                " (that is the balancer: is this the LB rather than a real?)"
            } else {
                ""
            };
            (
                false,
                format!(
                    "{} (id {}) is attached to {iface}, not {}{balancer}; if `ip link set ... xdp off` says busy, stop the process holding it",
                    p.name,
                    p.id,
                    program_names::DECAP,
                ),
                Some(format!("ip link set dev {iface} xdp off\n{attach}")),
            )
        }
        None => (
            false,
            format!(
                "no XDP program on {iface}, so the LB's IP-in-IP packets reach the stack still wrapped; `{attach}` stays in the foreground: run it as a service"
            ),
            Some(attach),
        ),
    };
    Finding {
        check: "decap program".into(),
        ok,
        detail,
        fix,
    }
}

pub(super) fn tunnel_address(
    iface: &str,
    decap_addr: Option<Ipv4Addr>,
    addrs: &[IfaceAddr],
) -> Finding {
    let check = format!("{iface} IPv4 address");
    match decap_addr {
        Some(a) => {
            let others: Vec<String> = addrs
                .iter()
                .filter(|x| x.iface == iface && x.addr.is_ipv4() && x.addr != IpAddr::V4(a))
                .map(|x| x.addr.to_string())
                .collect();
            let mut detail = format!(
                "{a}: decap unwraps tunnels sent to it, so it is this real's --real address on the LB"
            );
            if !others.is_empty() {
                detail += &format!(" (not {}: only the first address counts)", others.join(", "));
            }
            Finding {
                check,
                ok: true,
                detail,
                fix: None,
            }
        }
        None => Finding {
            check,
            ok: false,
            detail: format!("{iface} has no IPv4 address: the LB tunnels to one, and decap accepts tunnels sent to it"),
            fix: Some(format!("ip addr add ADDRESS/PREFIX dev {iface}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{
        judge::judge,
        test_fixtures::{addr, args, configured_real, find, VIP},
        RealMode,
    };

    #[test]
    fn tunnel_names_a_missing_or_foreign_xdp_program() {
        let mut facts = configured_real();
        facts.xdp = Some(None);
        let findings = judge(&args(RealMode::Tunnel, &[VIP]), &facts);
        let f = find(&findings, "decap program");
        assert!(!f.ok);
        assert_eq!(f.fix.as_deref(), Some("lbctl decap attach eth0"));

        facts.xdp = Some(Some(XdpProgram {
            id: 42,
            name: "lb_xdp".into(),
        }));
        let findings = judge(&args(RealMode::Tunnel, &[VIP]), &facts);
        let f = find(&findings, "decap program");
        assert!(!f.ok);
        assert!(f.detail.contains("lb_xdp (id 42)"), "{}", f.detail);
        assert!(f.detail.contains("is this the LB"), "{}", f.detail);
        assert_eq!(
            f.fix.as_deref(),
            Some("ip link set dev eth0 xdp off\nlbctl decap attach eth0")
        );
    }

    #[test]
    fn decap_names_are_compared_as_the_kernel_truncates_them() {
        assert!(is_decap(program_names::DECAP));
        assert!(!is_decap("lb_xdp"));
        assert!(!is_decap(""));
    }

    #[test]
    fn tunnel_needs_an_ipv4_address_and_says_which_one_counts() {
        let mut facts = configured_real();
        facts.addrs.push(addr("eth0", "198.18.0.12", 24));
        let f = tunnel_address("eth0", facts.decap_addr, &facts.addrs);
        assert!(f.ok);
        assert!(f.detail.starts_with("198.18.0.11: "), "{}", f.detail);
        assert!(f.detail.contains("not 198.18.0.12"), "{}", f.detail);
        let f = tunnel_address("eth0", None, &facts.addrs);
        assert!(!f.ok);
        assert_eq!(
            f.fix.as_deref(),
            Some("ip addr add ADDRESS/PREFIX dev eth0")
        );
    }
}
