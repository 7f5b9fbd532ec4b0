//! A captured frame in words: its verdict ("XDP_TX forwarded to real 198.18.0.12:80") and a
//! one-line summary of its headers, as `lbctl capture` prints them and pcapng comments carry
//! them.

use std::fmt::Write as _;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use lb_common::{CaptureHeader, Reason, CAPTURE_ANY, SIDE_OUT};

/// The name of XDP action `action`.
pub fn action_name(action: u32) -> String {
    match action {
        0 => "XDP_ABORTED".into(),
        1 => "XDP_DROP".into(),
        2 => "XDP_PASS".into(),
        3 => "XDP_TX".into(),
        4 => "XDP_REDIRECT".into(),
        n => format!("action {n}"),
    }
}

/// The verdict of counter slot `slot`: "forwarded", "reply", or its reason's label.
pub fn slot_name(slot: u32) -> String {
    match slot {
        Reason::FORWARDED_SLOT => "forwarded".into(),
        Reason::REPLIES_SLOT => "reply".into(),
        s => Reason::ALL
            .iter()
            .find(|r| r.slot() == s)
            .map_or_else(|| format!("slot {s}"), |r| r.label().into()),
    }
}

/// The counter slot `--reason NAME` names: forwarded, reply, a reason's label, or "any".
pub fn parse_slot(name: &str) -> Result<u32, String> {
    match name {
        "any" => Ok(CAPTURE_ANY),
        "forwarded" => Ok(Reason::FORWARDED_SLOT),
        "reply" => Ok(Reason::REPLIES_SLOT),
        _ => Reason::ALL
            .iter()
            .find(|r| r.label() == name)
            .map(|r| r.slot())
            .ok_or_else(|| {
                let all: Vec<&str> = Reason::ALL.iter().map(|r| r.label()).collect();
                format!(
                    "no verdict is called {name:?}: give any, forwarded, reply or one of {}",
                    all.join(", ")
                )
            }),
    }
}

/// What the program did with the packet: "XDP_TX forwarded to real 198.18.0.12:80 (id 3)",
/// "XDP_DROP drop_no_real". `real` is the forwarded frame's real, when known.
pub fn verdict(h: &CaptureHeader, real: Option<std::net::SocketAddr>) -> String {
    let mut s = format!("{} {}", action_name(h.action), slot_name(h.slot));
    let sent = h.slot == Reason::FORWARDED_SLOT || h.slot == Reason::REPLIES_SLOT;
    if sent {
        let to = if h.slot == Reason::REPLIES_SLOT {
            "from"
        } else {
            "to"
        };
        match real {
            Some(r) => write!(s, " {to} real {r} (id {})", h.real_id),
            None => write!(s, " {to} real id {}", h.real_id),
        }
        .expect("writing to a String");
        if h.egress != 0 && h.egress != h.ingress {
            write!(s, ", out of ifindex {}", h.egress).expect("writing to a String");
        }
    }
    s
}

/// The comment a record carries: which side of the program it is, and the verdict.
pub fn comment(h: &CaptureHeader, real: Option<std::net::SocketAddr>) -> String {
    let side = if h.side == SIDE_OUT {
        "as lbctl sent it"
    } else {
        "as lbctl received it"
    };
    format!(
        "{side}: {} (cpu {}, packet {})",
        verdict(h, real),
        h.cpu,
        h.seq
    )
}

/// A frame's outer IP addresses, and its ports and protocol when it is TCP or UDP: what
/// the capture's VIP filter, its reals' names and `explain --pcap` read of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ends {
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    /// "tcp" or "udp" with the source and destination ports; `None` for other protocols.
    pub l4: Option<(&'static str, u16, u16)>,
}

/// The [`Ends`] of an Ethernet frame; `None` when it is not IP.
pub fn ends(frame: &[u8]) -> Option<Ends> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let (src, dst): (std::net::IpAddr, std::net::IpAddr) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        Some(NetSlice::Ipv6(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        _ => return None,
    };
    let l4 = match &p.transport {
        Some(TransportSlice::Tcp(t)) => Some(("tcp", t.source_port(), t.destination_port())),
        Some(TransportSlice::Udp(u)) => Some(("udp", u.source_port(), u.destination_port())),
        _ => None,
    };
    Some(Ends { src, dst, l4 })
}

/// One line for a frame's headers: "02:..:01 > 02:..:02 198.18.0.100:40000 > 198.18.100.10:80
/// tcp [S] 74 B" (the MACs, the outer and inner addresses of a tunnel, what is not IP by its
/// EtherType).
pub fn summary(bytes: &[u8], wire_len: u32) -> String {
    let mut s = String::new();
    if bytes.len() >= 12 {
        write!(s, "{} > {} ", mac(&bytes[6..12]), mac(&bytes[0..6])).expect("writing to a String");
    }
    match SlicedPacket::from_ethernet(bytes) {
        Ok(p) => describe_net(&mut s, p.net.as_ref(), p.transport.as_ref()),
        Err(e) => write!(s, "({e})").expect("writing to a String"),
    }
    write!(s, " {wire_len} B").expect("writing to a String");
    s
}

fn describe_net(s: &mut String, net: Option<&NetSlice>, transport: Option<&TransportSlice>) {
    let (src, dst, tunnelled) = match net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let tunnelled = matches!(h.protocol().0, 4 | 41);
            (
                std::net::IpAddr::from(h.source_addr()),
                std::net::IpAddr::from(h.destination_addr()),
                tunnelled.then_some(h.protocol().0),
            )
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            (
                std::net::IpAddr::from(h.source_addr()),
                std::net::IpAddr::from(h.destination_addr()),
                None,
            )
        }
        Some(NetSlice::Arp(_)) => {
            s.push_str("arp");
            return;
        }
        None => {
            s.push_str("not IP");
            return;
        }
    };
    if let Some(proto) = tunnelled {
        write!(
            s,
            "tunnel {src} > {dst} ({}) ",
            if proto == 4 { "ipip" } else { "6in4" }
        )
        .expect("writing to a String");
        // etherparse reads the outer header; the inner one is shown by the tools.
        return;
    }
    match transport {
        Some(TransportSlice::Tcp(t)) => {
            let mut flags = String::new();
            for (on, c) in [
                (t.syn(), 'S'),
                (t.fin(), 'F'),
                (t.rst(), 'R'),
                (t.psh(), 'P'),
                (t.ack(), '.'),
            ] {
                if on {
                    flags.push(c);
                }
            }
            write!(
                s,
                "{} > {} tcp [{flags}]",
                sock(src, t.source_port()),
                sock(dst, t.destination_port())
            )
        }
        Some(TransportSlice::Udp(u)) => write!(
            s,
            "{} > {} udp",
            sock(src, u.source_port()),
            sock(dst, u.destination_port())
        ),
        Some(TransportSlice::Icmpv4(i)) => write!(s, "{src} > {dst} icmp {:?}", i.icmp_type()),
        Some(TransportSlice::Icmpv6(i)) => write!(s, "{src} > {dst} icmp6 {:?}", i.icmp_type()),
        Some(_) | None => write!(s, "{src} > {dst}"),
    }
    .expect("writing to a String");
}

fn sock(ip: std::net::IpAddr, port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::new(ip, port)
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    #[test]
    fn every_verdict_has_a_name_and_names_parse_back() {
        assert_eq!(parse_slot("forwarded"), Ok(Reason::FORWARDED_SLOT));
        assert_eq!(parse_slot("reply"), Ok(Reason::REPLIES_SLOT));
        assert_eq!(parse_slot("any"), Ok(CAPTURE_ANY));
        for r in Reason::ALL {
            assert_eq!(parse_slot(r.label()), Ok(r.slot()));
            assert_eq!(slot_name(r.slot()), r.label());
        }
        let e = parse_slot("drop_everything").unwrap_err();
        assert!(e.contains("drop_no_real"), "{e}");
    }

    #[test]
    fn a_forwarded_frame_names_its_real_and_a_dropped_one_its_reason() {
        let fwd = CaptureHeader {
            action: 3,
            slot: Reason::FORWARDED_SLOT,
            real_id: 3,
            ingress: 2,
            ..Default::default()
        };
        let real = "198.18.0.12:80".parse().ok();
        assert_eq!(
            verdict(&fwd, real),
            "XDP_TX forwarded to real 198.18.0.12:80 (id 3)"
        );
        let drop = CaptureHeader {
            action: 1,
            slot: Reason::NoReal.slot(),
            ..Default::default()
        };
        assert_eq!(verdict(&drop, None), "XDP_DROP drop_no_real");
    }

    #[test]
    fn a_tcp_syn_is_summed_up_with_its_addresses_ports_and_flags() {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 18, 0, 100], [198, 18, 100, 10], 64)
            .tcp(40000, 80, 1, 1000)
            .syn()
            .write(&mut frame, &[])
            .unwrap();
        assert_eq!(
            summary(&frame, frame.len() as u32),
            "02:00:00:00:00:01 > 02:00:00:00:00:02 198.18.0.100:40000 > 198.18.100.10:80 tcp [S] 54 B"
        );
    }
}
