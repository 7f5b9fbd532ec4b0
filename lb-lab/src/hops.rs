//! One request and its reply, hop by hop, from the frames captured in the lab: the headers
//! each hop carried and what changed from the hop before. Pure: frames in, hops out.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
};

use etherparse::{IpNumber, LinkSlice, NetSlice, SlicedPacket, TransportSlice};

use super::capture::Frame;

/// The headers of one frame of the traced exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    /// Tunnel mode's outer IPv4 header: source, destination.
    pub outer: Option<(Ipv4Addr, Ipv4Addr)>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub ttl: u8,
}

/// One hop: who sent the frame to whom, where it was seen, what it carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub from: String,
    pub to: String,
    pub at: String,
    pub headers: Headers,
}

/// The traced request and its reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    pub request: Vec<Hop>,
    pub reply: Vec<Hop>,
}

impl Trace {
    /// Whether the reply crossed the LB (named `lb`): it left the LB's MAC, or it left the
    /// real with other addresses than it reached the client with (the LB as a transparent
    /// bridge keeps the MACs but restores the VIP).
    pub fn reply_crossed_lb(&self, lb: &str) -> bool {
        let rewritten = match (self.reply.first(), self.reply.last()) {
            (Some(a), Some(b)) => (a.headers.src, a.headers.dst) != (b.headers.src, b.headers.dst),
            _ => false,
        };
        rewritten || self.reply.iter().any(|h| h.from == lb)
    }

    /// The client address the real saw: the request's source at its last hop.
    pub fn client_seen_by_real(&self) -> Option<SocketAddr> {
        self.request.last().map(|h| h.headers.src)
    }
}

/// The lab's exchange in `frames`: the frames whose TCP payload `is_request` says is the
/// client's data, and those `is_reply` says are the real's answer. `path` lists the capture
/// points from the client's side to the reals': the request is put in that order, the reply
/// in the reverse one (the capture threads' clocks are too coarse to order frames seen at
/// different points). `macs` names the hosts by MAC. A frame seen at two points unchanged
/// (one hop on a shared segment) is one hop.
pub fn trace(
    frames: &[Frame],
    is_request: impl Fn(&[u8]) -> bool,
    is_reply: impl Fn(&[u8]) -> bool,
    path: &[String],
    macs: &BTreeMap<[u8; 6], String>,
) -> Trace {
    let place = |f: &Frame| path.iter().position(|p| *p == f.at).unwrap_or(path.len());
    let pick = |wanted: &dyn Fn(&Frame) -> bool, outward: bool| {
        let mut hops: Vec<Hop> = Vec::new();
        let mut seen: Vec<&Frame> = frames.iter().filter(|f| wanted(f)).collect();
        seen.sort_by_key(|f| {
            let at = place(f);
            (if outward { at } else { path.len() - at }, f.when)
        });
        for f in seen {
            let Some((headers, _)) = parse(&f.bytes) else {
                continue;
            };
            if let Some(last) = hops.last_mut() {
                if last.headers == headers {
                    if !last.at.contains(&f.at) {
                        last.at = format!("{} and {}", last.at, f.at);
                    }
                    continue;
                }
            }
            let name = |mac: &[u8; 6]| macs.get(mac).cloned().unwrap_or_else(|| fmt_mac(mac));
            hops.push(Hop {
                from: name(&headers.eth_src),
                to: name(&headers.eth_dst),
                at: f.at.clone(),
                headers,
            });
        }
        hops
    };
    // The reply is the request's flow turned around at each point: an answer to some other
    // connection (a health check's, say) with the same payload is not part of this exchange.
    let request_flows: Vec<(&str, SocketAddr, SocketAddr)> = frames
        .iter()
        .filter_map(|f| {
            let (h, payload) = parse(&f.bytes)?;
            is_request(payload).then_some((f.at.as_str(), h.src, h.dst))
        })
        .collect();
    let in_flow = |f: &Frame| {
        parse(&f.bytes).is_some_and(|(h, payload)| {
            is_reply(payload)
                && request_flows
                    .iter()
                    .any(|&(at, src, dst)| at == f.at && src == h.dst && dst == h.src)
        })
    };
    Trace {
        request: pick(
            &|f: &Frame| parse(&f.bytes).is_some_and(|(_, p)| is_request(p)),
            true,
        ),
        reply: pick(&in_flow, false),
    }
}

/// Ethernet, IPv4 (inside IP-in-IP too), TCP: the headers and the TCP payload.
pub fn parse(frame: &[u8]) -> Option<(Headers, &[u8])> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
        return None;
    };
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        return None;
    };
    let (outer, inner) = if ip.header().protocol() == IpNumber::IPV4 {
        let outer = (ip.header().source_addr(), ip.header().destination_addr());
        (
            Some(outer),
            SlicedPacket::from_ip(ip.payload().payload).ok()?,
        )
    } else {
        (None, p.clone())
    };
    let Some(NetSlice::Ipv4(ip)) = &inner.net else {
        return None;
    };
    let Some(TransportSlice::Tcp(tcp)) = &inner.transport else {
        return None;
    };
    let headers = Headers {
        eth_src: eth.source(),
        eth_dst: eth.destination(),
        outer,
        src: SocketAddr::new(ip.header().source_addr().into(), tcp.source_port()),
        dst: SocketAddr::new(
            ip.header().destination_addr().into(),
            tcp.destination_port(),
        ),
        ttl: ip.header().ttl(),
    };
    Some((headers, tcp.payload()))
}

/// `02:00:00:00:00:01`, as `ip link` writes a MAC.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;

    use super::*;

    const CLIENT: [u8; 6] = [2, 0, 0, 0, 0, 0x64];
    const LB: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const R1: [u8; 6] = [2, 0, 0, 0, 0, 0x11];

    fn frame(
        at: &str,
        t: u64,
        src: [u8; 6],
        dst: [u8; 6],
        ips: ([u8; 4], [u8; 4]),
        ports: (u16, u16),
        payload: &[u8],
    ) -> Frame {
        let mut bytes = Vec::new();
        PacketBuilder::ethernet2(src, dst)
            .ipv4(ips.0, ips.1, 64)
            .tcp(ports.0, ports.1, 1, 100)
            .write(&mut bytes, payload)
            .unwrap();
        Frame {
            at: at.into(),
            when: std::time::UNIX_EPOCH + std::time::Duration::from_millis(t),
            bytes,
        }
    }

    #[test]
    fn dsr_hops_the_request_through_the_lb_and_the_reply_straight_back() {
        let macs = BTreeMap::from([
            (CLIENT, "client".to_string()),
            (LB, "lb".to_string()),
            (R1, "r1".to_string()),
        ]);
        let (client, vip, real) = ([198, 18, 0, 100], [198, 18, 100, 10], [198, 18, 0, 11]);
        let frames = vec![
            frame(
                "r1 eth0",
                2,
                LB,
                R1,
                (client, vip),
                (40000, 80),
                b"request 0\n",
            ),
            frame(
                "client eth0",
                1,
                CLIENT,
                LB,
                (client, vip),
                (40000, 80),
                b"request 0\n",
            ),
            frame(
                "r1 eth0",
                3,
                R1,
                CLIENT,
                (vip, client),
                (80, 40000),
                b"r1 198.18.0.100 80\n",
            ),
            frame(
                "client eth0",
                4,
                R1,
                CLIENT,
                (vip, client),
                (80, 40000),
                b"r1 198.18.0.100 80\n",
            ),
            // A health check's SYN: no payload, not the exchange.
            frame("r1 eth0", 5, LB, R1, (real, real), (50000, 80), b""),
            // An answer with the same look on another connection (the LB's own): not the
            // traced reply.
            frame(
                "r1 eth0",
                6,
                R1,
                LB,
                (real, [198, 18, 0, 1]),
                (80, 50000),
                b"r1 198.18.0.1 50000\n",
            ),
        ];
        let path = ["client eth0".to_string(), "r1 eth0".to_string()];
        let t = trace(
            &frames,
            |p| p.starts_with(b"request "),
            |p| p.starts_with(b"r1 "),
            &path,
            &macs,
        );
        let path: Vec<(&str, &str)> = t
            .request
            .iter()
            .map(|h| (h.from.as_str(), h.to.as_str()))
            .collect();
        assert_eq!(path, [("client", "lb"), ("lb", "r1")]);
        assert_eq!(t.reply.len(), 1, "one hop, seen at both ends: {t:?}");
        assert_eq!(t.reply[0].at, "r1 eth0 and client eth0");
        assert!(!t.reply_crossed_lb("lb"));
        assert_eq!(
            t.client_seen_by_real().unwrap().to_string(),
            "198.18.0.100:40000"
        );
    }

    #[test]
    fn a_tunnelled_frame_shows_its_outer_header_and_the_inner_flow() {
        let mut inner = Vec::new();
        PacketBuilder::ipv4([198, 18, 0, 100], [198, 18, 100, 10], 64)
            .tcp(40000, 80, 1, 100)
            .write(&mut inner, b"request 0\n")
            .unwrap();
        let mut bytes = Vec::new();
        PacketBuilder::ethernet2(LB, R1)
            .ipv4([198, 18, 0, 1], [198, 18, 1, 11], 64)
            .write(&mut bytes, IpNumber::IPV4, &inner)
            .unwrap();
        let (h, payload) = parse(&bytes).unwrap();
        assert_eq!(
            h.outer,
            Some((Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 1, 11)))
        );
        assert_eq!(h.dst.to_string(), "198.18.100.10:80");
        assert_eq!(payload, b"request 0\n");
    }
}
