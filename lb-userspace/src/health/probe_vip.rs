//! Health checks through the VIP, for dsr and tunnel: the LB sends the check as it forwards a
//! client's packet (to the real's MAC, or IP-in-IP to the real), addressed to the VIP, from
//! its own address. The real answers straight back (it holds the VIP), so a pass proves what
//! a check of the real's own address cannot: that the real accepts the VIP. The frames are
//! made and read on a packet socket (pnet). The real's half-open connection is left to time
//! out (the LB's kernel cannot reset it: the answer comes from the VIP); each check has its
//! own initial sequence number, so a late answer of an earlier check never passes a new one.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, LinkSlice, NetSlice, PacketBuilder, SlicedPacket,
    TransportSlice,
};
use pnet::datalink::{self, Channel, Config};

use crate::health::check::Probe;

/// The way a client's packet takes to a real.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipPath {
    /// The interface the real is reached through, and the LB's MAC and address on it.
    pub iface: String,
    pub src_mac: [u8; 6],
    pub src: Ipv4Addr,
    /// tunnel: the outer source (the VIP's tunnel source, or `src`).
    pub outer_src: Ipv4Addr,
    /// The real's MAC, or its next hop's.
    pub dst_mac: [u8; 6],
    pub vip: SocketAddrV4,
    /// tunnel: the real's address, the outer destination.
    pub tunnel_to: Option<Ipv4Addr>,
}

/// Source ports of the checks, in turn, in a range the LB's own connections do not use.
const PORTS: std::ops::Range<u16> = 61000..65000;
static CHECKS_SENT: AtomicU32 = AtomicU32::new(0);

/// Runs `probe` (tcp or udp) through `path` within `limit`.
pub async fn run(probe: &Probe, path: &VipPath, limit: Duration) -> Result<(), String> {
    let (probe, path) = (probe.clone(), path.clone());
    tokio::task::spawn_blocking(move || attempt(&probe, &path, limit))
        .await
        .map_err(|e| format!("the check's task failed: {e}"))?
}

fn attempt(probe: &Probe, path: &VipPath, limit: Duration) -> Result<(), String> {
    let iface = datalink::interfaces()
        .into_iter()
        .find(|i| i.name == path.iface)
        .ok_or_else(|| format!("no interface {}", path.iface))?;
    let config = Config {
        read_timeout: Some(Duration::from_millis(20)),
        // The answer is addressed to the LB: no need to see (or make the NIC pass) others'.
        promiscuous: false,
        ..Config::default()
    };
    let (mut tx, mut rx) = match datalink::channel(&iface, config) {
        Ok(Channel::Ethernet(tx, rx)) => (tx, rx),
        Ok(_) => return Err(format!("{}: not an Ethernet interface", path.iface)),
        Err(e) => return Err(format!("a packet socket on {}: {e}", path.iface)),
    };
    let sport = next_port();
    let isn = initial_sequence(sport);
    let frame = frame(probe, path, sport, isn)?;
    match tx.send_to(&frame, None) {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(format!("sending the check: {e}")),
        None => return Err("sending the check: the socket took nothing".into()),
    }
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match rx.next() {
            Ok(frame) => {
                if let Some(verdict) = answer(frame, path, sport, isn) {
                    return verdict;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => return Err(format!("reading answers: {e}")),
        }
    }
    Err(format!(
        "no answer through the VIP within {}",
        humantime::format_duration(limit)
    ))
}

fn next_port() -> u16 {
    let n = CHECKS_SENT.fetch_add(1, Ordering::Relaxed);
    PORTS.start + (n % u32::from(PORTS.end - PORTS.start)) as u16
}

/// A sequence number of this check's own: the time's nanoseconds, mixed with its port.
fn initial_sequence(sport: u16) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ u32::from(sport).rotate_left(16)
}

/// The check's frame: a TCP SYN or the UDP payload to the VIP, in a tunnel when `path` has
/// one.
fn frame(probe: &Probe, path: &VipPath, sport: u16, isn: u32) -> Result<Vec<u8>, String> {
    let (vip, dport) = (path.vip.ip().octets(), path.vip.port());
    let src = path.src.octets();
    let mut inner = Vec::new();
    let ip = PacketBuilder::ipv4(src, vip, 64);
    let built = match probe {
        Probe::Tcp => ip
            .tcp(sport, dport, isn, 64240)
            .syn()
            .write(&mut inner, &[]),
        Probe::Udp { payload } => ip.udp(sport, dport).write(&mut inner, payload.as_bytes()),
        Probe::Http { .. } => return Err("an http check cannot go through the VIP".into()),
    };
    built.map_err(|e| format!("building the check: {e}"))?;
    let mut out = Vec::with_capacity(inner.len() + 34);
    let written = match path.tunnel_to {
        Some(real) => PacketBuilder::ethernet2(path.src_mac, path.dst_mac)
            .ipv4(path.outer_src.octets(), real.octets(), 64)
            .write(&mut out, IpNumber::IPV4, &inner),
        None => {
            let header = Ethernet2Header {
                source: path.src_mac,
                destination: path.dst_mac,
                ether_type: EtherType::IPV4,
            };
            out.extend_from_slice(&header.to_bytes());
            out.extend_from_slice(&inner);
            Ok(())
        }
    };
    written.map_err(|e| format!("building the check: {e}"))?;
    Ok(out)
}

/// What `frame` says of the check, if it is its answer: the VIP's SYN-ACK (acknowledging
/// this check's sequence number) or UDP reply passes; a RST or an ICMP error fails. Only
/// frames from the way the check went (the real's MAC, or its next hop's) count.
fn answer(frame: &[u8], path: &VipPath, sport: u16, isn: u32) -> Option<Result<(), String>> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(LinkSlice::Ethernet2(eth)) = &packet.link else {
        return None;
    };
    if eth.source() != path.dst_mac {
        return None;
    }
    let Some(NetSlice::Ipv4(ip)) = &packet.net else {
        return None;
    };
    let (from, to) = (ip.header().source_addr(), ip.header().destination_addr());
    if to != path.src {
        return None;
    }
    let vip_port = path.vip.port();
    match &packet.transport {
        Some(TransportSlice::Tcp(t))
            if from == *path.vip.ip()
                && t.source_port() == vip_port
                && t.destination_port() == sport =>
        {
            if t.syn() && t.ack() && t.acknowledgment_number() == isn.wrapping_add(1) {
                Some(Ok(()))
            } else if t.rst() {
                Some(Err("refused through the VIP (RST)".into()))
            } else {
                None
            }
        }
        Some(TransportSlice::Udp(u))
            if from == *path.vip.ip()
                && u.source_port() == vip_port
                && u.destination_port() == sport =>
        {
            Some(Ok(()))
        }
        Some(TransportSlice::Icmpv4(icmp)) if quotes_our_check(icmp.payload(), sport) => {
            Some(Err(format!(
                "ICMP {:?} from {from} for the check through the VIP",
                icmp.icmp_type()
            )))
        }
        _ => None,
    }
}

/// Whether an ICMP error's quote is our check: its inner IPv4 header, then our ports.
fn quotes_our_check(quote: &[u8], sport: u16) -> bool {
    let Some(&first) = quote.first() else {
        return false;
    };
    let ihl = usize::from(first & 0x0f) * 4;
    quote
        .get(ihl..ihl + 2)
        .is_some_and(|p| u16::from_be_bytes([p[0], p[1]]) == sport)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(tunnel: bool) -> VipPath {
        VipPath {
            iface: "eth0".into(),
            src_mac: [2, 0, 0, 0, 0, 1],
            src: Ipv4Addr::new(198, 18, 0, 1),
            outer_src: Ipv4Addr::new(198, 18, 0, 1),
            dst_mac: [2, 0, 0, 0, 0, 0x11],
            vip: "198.18.100.10:80".parse().unwrap(),
            tunnel_to: tunnel.then_some(Ipv4Addr::new(198, 18, 0, 11)),
        }
    }

    #[test]
    fn the_check_is_a_syn_to_the_vip_at_the_real_s_mac_or_in_its_tunnel() {
        let f = frame(&Probe::Tcp, &path(false), 61001, 7).unwrap();
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = &p.link else {
            panic!()
        };
        assert_eq!(eth.destination(), [2, 0, 0, 0, 0, 0x11]);
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!()
        };
        assert_eq!(
            ip.header().destination_addr(),
            Ipv4Addr::new(198, 18, 100, 10)
        );
        let Some(TransportSlice::Tcp(t)) = &p.transport else {
            panic!()
        };
        assert!(t.syn() && !t.ack());
        assert_eq!((t.source_port(), t.destination_port()), (61001, 80));

        let f = frame(
            &Probe::Udp {
                payload: "ping".into(),
            },
            &path(true),
            61002,
            7,
        )
        .unwrap();
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(NetSlice::Ipv4(outer)) = &p.net else {
            panic!()
        };
        assert_eq!(
            outer.header().destination_addr(),
            Ipv4Addr::new(198, 18, 0, 11)
        );
        assert_eq!(outer.header().protocol(), IpNumber::IPV4);
        let inner = etherparse::SlicedPacket::from_ip(outer.payload().payload).unwrap();
        let Some(TransportSlice::Udp(u)) = &inner.transport else {
            panic!()
        };
        assert_eq!((u.destination_port(), u.payload()), (80, &b"ping"[..]));
    }

    #[test]
    fn a_syn_ack_from_the_vip_passes_a_rst_fails_others_are_not_the_answer() {
        let answer_with = |syn: bool, rst: bool, from: [u8; 4], dport: u16| {
            let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x11], [2, 0, 0, 0, 0, 1])
                .ipv4(from, [198, 18, 0, 1], 64)
                .tcp(80, dport, 1, 100);
            let b = if syn { b.syn().ack(8) } else { b };
            let b = if rst { b.rst() } else { b };
            let mut f = Vec::new();
            b.write(&mut f, &[]).unwrap();
            answer(&f, &path(false), 61001, 7)
        };
        // A late SYN-ACK of an earlier check (another sequence number), or one from another
        // MAC than the real's: not this check's answer.
        let stale = |ack: u32, mac: [u8; 6]| {
            let mut f = Vec::new();
            PacketBuilder::ethernet2(mac, [2, 0, 0, 0, 0, 1])
                .ipv4([198, 18, 100, 10], [198, 18, 0, 1], 64)
                .tcp(80, 61001, 1, 100)
                .syn()
                .ack(ack)
                .write(&mut f, &[])
                .unwrap();
            answer(&f, &path(false), 61001, 7)
        };
        assert_eq!(stale(99, [2, 0, 0, 0, 0, 0x11]), None);
        assert_eq!(stale(8, [2, 0, 0, 0, 0, 0x12]), None);
        assert_eq!(
            answer_with(true, false, [198, 18, 100, 10], 61001),
            Some(Ok(()))
        );
        assert!(matches!(
            answer_with(false, true, [198, 18, 100, 10], 61001),
            Some(Err(_))
        ));
        assert_eq!(
            answer_with(true, false, [198, 18, 0, 11], 61001),
            None,
            "not from the VIP"
        );
        assert_eq!(
            answer_with(true, false, [198, 18, 100, 10], 61002),
            None,
            "another check"
        );
    }
}
