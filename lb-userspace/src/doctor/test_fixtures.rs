//! Facts and arguments the verdict tests start from.

use std::net::Ipv4Addr;

use lb_common::program_names;

use super::{
    facts::{Facts, IfaceAddr, Sysctl, XdpProgram},
    DoctorRealArgs, Finding, RealMode,
};

pub(super) const VIP: &str = "198.18.100.10";

pub(super) fn addr(iface: &str, a: &str, len: u8) -> IfaceAddr {
    IfaceAddr {
        iface: iface.into(),
        addr: a.parse().unwrap(),
        prefix_len: len,
    }
}

pub(super) fn args(mode: RealMode, vips: &[&str]) -> DoctorRealArgs {
    DoctorRealArgs {
        vips: vips.iter().map(|v| v.parse().unwrap()).collect(),
        mode,
        iface: Some("eth0".into()),
    }
}

/// A real configured as dsr and tunnel want it.
pub(super) fn configured_real() -> Facts {
    Facts {
        iface: "eth0".into(),
        addrs: vec![
            addr("lo", "127.0.0.1", 8),
            addr("lo", VIP, 32),
            addr("eth0", "198.18.0.11", 24),
        ],
        mtu: 1500,
        arp_ignore: Some(Sysctl { all: 1, iface: 0 }),
        arp_announce: Some(Sysctl { all: 2, iface: 0 }),
        rp_filter: Some(Sysctl { all: 0, iface: 2 }),
        xdp: Some(Some(XdpProgram {
            id: 7,
            name: program_names::DECAP.into(),
        })),
        decap_addr: Some(Ipv4Addr::new(198, 18, 0, 11)),
    }
}

pub(super) fn find<'a>(findings: &'a [Finding], check: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no {check} in {findings:?}"))
}
