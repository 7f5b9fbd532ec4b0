//! The IPv4 sysctl checks: arp_ignore and arp_announce (dsr and tunnel, IPv4 VIPs), rp_filter
//! (tunnel).

use super::{facts::Sysctl, Finding};

/// `sysctl -w` key of an IPv4 per-interface setting. Interface names with dots (VLANs) need
/// the slash form, where a dot is not a separator.
fn sysctl_key(iface: &str, name: &str) -> String {
    if iface.contains('.') {
        format!("net/ipv4/conf/{iface}/{name}")
    } else {
        format!("net.ipv4.conf.{iface}.{name}")
    }
}

/// What was read, then what the value achieves (`ok`) or why it must be `want`.
fn sysctl_detail(iface: &str, s: Sysctl, ok: bool, want: &str, good: &str, bad: &str) -> String {
    let read = format!(
        "effective {} (all {}, {iface} {})",
        s.effective(),
        s.all,
        s.iface
    );
    if ok {
        format!("{read}: {good}")
    } else {
        format!("{read}, must be {want}: {bad}")
    }
}

pub(super) fn arp_ignore(iface: &str, s: Sysctl) -> Finding {
    let ok = matches!(s.effective(), 1 | 2);
    let detail = sysctl_detail(
        iface,
        s,
        ok,
        "1 or 2",
        &format!("ARP is answered only for {iface}'s own addresses, never for the VIPs on lo"),
        "else the real answers ARP for the VIPs on lo and takes their traffic from the LB",
    );
    // all=1 makes max(all, iface) right unless the interface's own value is above 2.
    let mut set = vec![format!("{}=1", sysctl_key("all", "arp_ignore"))];
    if s.iface > 2 {
        set.push(format!("{}=1", sysctl_key(iface, "arp_ignore")));
    }
    Finding {
        check: "arp_ignore".into(),
        ok,
        detail,
        fix: (!ok).then(|| format!("sysctl -w {}", set.join(" "))),
    }
}

pub(super) fn arp_announce(iface: &str, s: Sysctl) -> Finding {
    let ok = s.effective() == 2;
    let detail = sysctl_detail(
        iface,
        s,
        ok,
        "2",
        &format!("ARP requests name {iface}'s own address as their source, never a VIP"),
        "else an ARP request may name a VIP as its source, and neighbours send the VIP's traffic to the real",
    );
    Finding {
        check: "arp_announce".into(),
        ok,
        detail,
        fix: (!ok).then(|| format!("sysctl -w {}=2", sysctl_key("all", "arp_announce"))),
    }
}

pub(super) fn rp_filter(iface: &str, s: Sysctl) -> Finding {
    let ok = matches!(s.effective(), 0 | 2);
    let detail = sysctl_detail(
        iface,
        s,
        ok,
        "0 or 2",
        "not strict, so unwrapped client packets pass whatever the route back",
        &format!("strict (1) drops unwrapped packets whose client is not routed back out {iface}"),
    );
    Finding {
        check: "rp_filter".into(),
        ok,
        detail,
        fix: (!ok).then(|| {
            format!(
                "sysctl -w {}=2 {}=2",
                sysctl_key("all", "rp_filter"),
                sysctl_key(iface, "rp_filter")
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_value_is_the_larger_of_all_and_the_interface() {
        assert_eq!(Sysctl { all: 0, iface: 2 }.effective(), 2);
        assert_eq!(Sysctl { all: 1, iface: 0 }.effective(), 1);
        let f = arp_ignore("eth0", Sysctl { all: 0, iface: 1 });
        assert!(f.ok, "{f:?}");
        let f = arp_announce("eth0", Sysctl { all: 0, iface: 1 });
        assert!(!f.ok);
        assert_eq!(
            f.fix.as_deref(),
            Some("sysctl -w net.ipv4.conf.all.arp_announce=2")
        );
    }

    #[test]
    fn arp_ignore_fixes_the_interface_too_when_its_value_would_win() {
        let f = arp_ignore("eth0", Sysctl { all: 0, iface: 0 });
        assert_eq!(
            f.fix.as_deref(),
            Some("sysctl -w net.ipv4.conf.all.arp_ignore=1")
        );
        let f = arp_ignore("eth0", Sysctl { all: 1, iface: 8 });
        assert!(!f.ok);
        assert_eq!(
            f.fix.as_deref(),
            Some("sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.eth0.arp_ignore=1")
        );
    }

    #[test]
    fn strict_rp_filter_needs_a_change_and_vlan_names_use_the_slash_form() {
        assert!(rp_filter("eth0", Sysctl { all: 2, iface: 0 }).ok);
        let f = rp_filter("eth0.100", Sysctl { all: 1, iface: 0 });
        assert!(!f.ok);
        assert_eq!(
            f.fix.as_deref(),
            Some("sysctl -w net.ipv4.conf.all.rp_filter=2 net/ipv4/conf/eth0.100/rp_filter=2")
        );
    }
}
