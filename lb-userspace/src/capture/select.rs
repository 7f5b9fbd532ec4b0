//! Which captured packets a capture keeps (`--vip`): a packet is its in record and, when the
//! program sent a frame for it, the out record right after it on the same CPU; it is kept
//! when either frame is to or from the VIP (a nat reply arrives from the real and leaves from
//! the VIP, a request arrives for the VIP and may leave tunnelled to the real). The verdict is
//! filtered in the datapath (`--reason`); the VIP here, where the frames are parsed anyway.

use std::{collections::HashMap, net::IpAddr, str::FromStr};

use lb_common::{SIDE_IN, SIDE_OUT};

use super::Record;

/// `--vip ADDRESS[:PORT]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipFilter {
    pub addr: IpAddr,
    pub port: Option<u16>,
}

impl FromStr for VipFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(Self { addr, port: None });
        }
        match s.parse::<std::net::SocketAddr>() {
            Ok(a) => Ok(Self {
                addr: a.ip(),
                port: Some(a.port()),
            }),
            Err(_) => Err(format!(
                "{s:?} is no VIP: give ADDRESS or ADDRESS:PORT (an IPv6 one as [ADDRESS]:PORT)"
            )),
        }
    }
}

impl VipFilter {
    /// Whether `frame` is to or from the VIP (its outer IP header, and its ports when the
    /// filter has one).
    pub fn touches(&self, frame: &[u8]) -> bool {
        let Some(e) = super::describe::ends(frame) else {
            return false;
        };
        let at = |addr: IpAddr, port: Option<u16>| {
            addr == self.addr && self.port.is_none_or(|want| port == Some(want))
        };
        at(e.src, e.l4.map(|p| p.1)) || at(e.dst, e.l4.map(|p| p.2))
    }
}

/// Pairs records into packets and keeps the packets the VIP filter selects (all, without
/// one), in the order they arrived.
#[derive(Debug, Default)]
pub struct Selector {
    vip: Option<VipFilter>,
    /// Per CPU: an in record whose out record has not come yet.
    waiting: HashMap<u32, Record>,
}

impl Selector {
    pub fn new(vip: Option<VipFilter>) -> Self {
        Self {
            vip,
            waiting: HashMap::new(),
        }
    }

    /// Takes the next record; returns the records of packets now complete and selected.
    pub fn push(&mut self, r: Record) -> Vec<Record> {
        let mut out = Vec::new();
        let cpu = r.header.cpu;
        match r.header.side {
            SIDE_IN => {
                // An in record still waiting lost its out record (a full ring): alone, then.
                if let Some(alone) = self.waiting.remove(&cpu) {
                    self.keep(vec![alone], &mut out);
                }
                if sends_a_frame(r.header.action) {
                    self.waiting.insert(cpu, r);
                } else {
                    self.keep(vec![r], &mut out);
                }
            }
            SIDE_OUT => {
                let packet = match self.waiting.remove(&cpu) {
                    Some(first) if first.header.seq == r.header.seq => vec![first, r],
                    Some(other) => {
                        self.keep(vec![other], &mut out);
                        vec![r]
                    }
                    None => vec![r],
                };
                self.keep(packet, &mut out);
            }
            _ => {}
        }
        out
    }

    /// The packets still waiting for an out record, at the end of a capture.
    pub fn finish(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        let mut left: Vec<Record> = self.waiting.drain().map(|(_, r)| r).collect();
        left.sort_by_key(|r| r.header.at_ns);
        for r in left {
            self.keep(vec![r], &mut out);
        }
        out
    }

    fn keep(&self, packet: Vec<Record>, out: &mut Vec<Record>) {
        let selected = match &self.vip {
            None => true,
            Some(v) => packet.iter().any(|r| v.touches(&r.bytes)),
        };
        if selected {
            out.extend(packet);
        }
    }
}

/// XDP_TX and XDP_REDIRECT: the program sent a frame, recorded after the in record.
fn sends_a_frame(action: u32) -> bool {
    action == 3 || action == 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use lb_common::CaptureHeader;

    fn frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut f, &[1, 2, 3])
            .unwrap();
        f
    }

    fn record(side: u8, cpu: u32, seq: u32, action: u32, bytes: Vec<u8>) -> Record {
        Record {
            header: CaptureHeader {
                side,
                cpu,
                seq,
                action,
                ..Default::default()
            },
            bytes,
            at: std::time::UNIX_EPOCH,
        }
    }

    const CLIENT: [u8; 4] = [198, 18, 0, 100];
    const VIP: [u8; 4] = [198, 18, 100, 10];
    const REAL: [u8; 4] = [198, 18, 0, 12];

    #[test]
    fn a_vip_filter_takes_an_address_or_an_address_and_port() {
        let v: VipFilter = "198.18.100.10:80".parse().unwrap();
        assert_eq!(v.port, Some(80));
        assert!(v.touches(&frame(CLIENT, 40000, VIP, 80)));
        assert!(!v.touches(&frame(CLIENT, 40000, VIP, 53)));
        let any_port: VipFilter = "198.18.100.10".parse().unwrap();
        assert!(any_port.touches(&frame(CLIENT, 40000, VIP, 53)));
        assert!("[2001:2::10]:80".parse::<VipFilter>().is_ok());
        assert!("vip.example".parse::<VipFilter>().is_err());
    }

    #[test]
    fn a_nat_reply_is_kept_by_the_frame_it_leaves_as() {
        let v: VipFilter = "198.18.100.10:80".parse().unwrap();
        let mut s = Selector::new(Some(v));
        // Arrives from the real to the client: no VIP in it; leaves from the VIP.
        assert!(s
            .push(record(SIDE_IN, 1, 7, 3, frame(REAL, 80, CLIENT, 40000)))
            .is_empty());
        let kept = s.push(record(SIDE_OUT, 1, 7, 3, frame(VIP, 80, CLIENT, 40000)));
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].header.side, SIDE_IN);
        // Another VIP's packet, dropped: not kept.
        let other = frame(CLIENT, 40000, [198, 18, 100, 11], 80);
        assert!(s.push(record(SIDE_IN, 0, 1, 1, other)).is_empty());
    }

    #[test]
    fn packets_pair_per_cpu_and_an_in_record_whose_out_was_lost_is_kept_alone() {
        let mut s = Selector::new(None);
        let req = || frame(CLIENT, 40000, VIP, 80);
        assert!(s.push(record(SIDE_IN, 0, 1, 3, req())).is_empty());
        assert!(s.push(record(SIDE_IN, 1, 1, 3, req())).is_empty());
        assert_eq!(s.push(record(SIDE_OUT, 1, 1, 3, req())).len(), 2);
        // CPU 0's out record was lost; its next packet releases the first alone.
        let released = s.push(record(SIDE_IN, 0, 2, 2, req()));
        assert_eq!(
            released.iter().map(|r| r.header.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(s.finish().is_empty());
    }
}
