//! `lbctl explain --pcap FILE`: each TCP/UDP packet of a capture (pcap or pcapng, e.g. one
//! `lbctl capture -w` or tcpdump wrote) explained by the running lbctl as it would treat it
//! now, from its live maps. Frames a capture marks as sent (lbctl's own output) are skipped:
//! they are what the datapath did, not what it was given. Each packet is explained as sent
//! to its destination: a reply of a nat flow (real → client) is no VIP's, and says so.

use std::{collections::HashMap, net::SocketAddr, path::Path};

use anyhow::{bail, Context as _, Result};
use pcap_file::pcapng::{blocks::enhanced_packet::EnhancedPacketOption, Block, PcapNgReader};

use super::admin::Talk;
use crate::{
    admin::{client, show, Request, Response},
    capture::describe,
};

/// pcapng's section header block type, the first four bytes of a pcapng file.
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
/// epb_flags: outbound.
const OUTBOUND: u32 = 0b10;

/// The frames of a pcap or pcapng file, without those marked outbound.
pub fn frames(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    if bytes.starts_with(&PCAPNG_MAGIC) {
        let mut r = PcapNgReader::new(bytes).context("reading the pcapng file")?;
        while let Some(block) = r.next_block() {
            match block.context("reading the pcapng file")? {
                Block::InterfaceDescription(i) if i.linktype != pcap_file::DataLink::ETHERNET => {
                    bail!("the capture's interface {} is of link type {:?}, not Ethernet: capture on the interface itself (tcpdump -i eth0, lbctl capture), not on `any`", i.options.iter().find_map(|o| match o { pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption::IfName(n) => Some(n.to_string()), _ => None }).unwrap_or_default(), i.linktype);
                }
                Block::EnhancedPacket(p) => {
                    let sent = p.options.iter().any(
                        |o| matches!(o, EnhancedPacketOption::Flags(f) if f & 0b11 == OUTBOUND),
                    );
                    if !sent {
                        out.push(p.data.to_vec());
                    }
                }
                Block::SimplePacket(p) => out.push(p.data.to_vec()),
                _ => {}
            }
        }
    } else {
        let mut r = pcap_file::pcap::PcapReader::new(bytes)
            .context("reading the file: it is neither pcap nor pcapng")?;
        let linktype = r.header().datalink;
        if linktype != pcap_file::DataLink::ETHERNET {
            bail!("the capture is of link type {linktype:?}, not Ethernet: capture on the interface itself (tcpdump -i eth0), not on `any`");
        }
        while let Some(p) = r.next_packet() {
            out.push(p.context("reading the pcap file")?.data.to_vec());
        }
    }
    Ok(out)
}

/// A frame's protocol ("tcp"/"udp") and its source and destination, when it is TCP or UDP
/// over IP; else why not.
pub fn tuple(frame: &[u8]) -> Result<(&'static str, SocketAddr, SocketAddr), String> {
    let e = describe::ends(frame)
        .ok_or_else(|| "not IP: the datapath passes it (pass_not_ip)".to_string())?;
    match e.l4 {
        Some((proto, sport, dport)) => Ok((
            proto,
            SocketAddr::new(e.src, sport),
            SocketAddr::new(e.dst, dport),
        )),
        None => Err(format!(
            "{} > {}: neither TCP nor UDP (ICMP errors of flows are translated; the rest passes)",
            e.src, e.dst
        )),
    }
}

/// Explains each packet of `file` through the lbctl at `talk.socket`.
pub async fn pcap(talk: &Talk, file: &Path) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let frames = frames(&bytes)?;
    if !talk.json {
        println!(
            "{}: {} packets, each as lbctl would treat it now (from its live maps, not as it did when captured)",
            file.display(),
            frames.len()
        );
    }
    // The answer per tuple: a flow's packets share it.
    let mut first_of: HashMap<(&str, SocketAddr, SocketAddr), usize> = HashMap::new();
    for (i, frame) in frames.iter().enumerate() {
        let n = i + 1;
        let (proto, client, vip) = match tuple(frame) {
            Ok(t) => t,
            Err(why) => {
                if talk.json {
                    println!("{}", serde_json::json!({ "packet": n, "skipped": why }));
                } else {
                    println!("#{n} {why}");
                }
                continue;
            }
        };
        if let Some(first) = first_of.get(&(proto, client, vip)) {
            if talk.json {
                println!("{}", serde_json::json!({ "packet": n, "same_as": first }));
            } else {
                println!("#{n} {client} > {vip} {proto}: as #{first}");
            }
            continue;
        }
        first_of.insert((proto, client, vip), n);
        let request = Request::Explain {
            proto: proto.to_owned(),
            client,
            vip,
        };
        let response = client::call(&talk.socket, &request).await?;
        if talk.json {
            let answer: serde_json::Value = serde_json::from_str(&show::render(&response, true).0)
                .context("lbctl's answer is no JSON")?;
            println!(
                "{}",
                serde_json::json!({ "packet": n, "explained": answer })
            );
            continue;
        }
        println!("#{n} {client} > {vip} {proto}:");
        match &response {
            Response::Error { message } => println!("    {message}"),
            _ => {
                for line in show::render(&response, false).0.lines() {
                    println!("    {line}");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{pcapng, Record};
    use etherparse::PacketBuilder;
    use lb_common::{CaptureHeader, SIDE_IN, SIDE_OUT};

    fn syn(sport: u16) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 18, 0, 100], [198, 18, 100, 10], 64)
            .tcp(sport, 80, 1, 1000)
            .syn()
            .write(&mut f, &[])
            .unwrap();
        f
    }

    #[test]
    fn pcap_and_pcapng_files_give_their_received_frames() {
        // pcapng as lbctl capture writes it: the sent frame is left out.
        let rec = |side, bytes: Vec<u8>| Record {
            header: CaptureHeader {
                side,
                ..Default::default()
            },
            bytes,
            at: std::time::UNIX_EPOCH,
        };
        let mut file = Vec::new();
        {
            let mut w = pcapng::Writer::new(&mut file, "eth0", 1536).unwrap();
            w.write(&rec(SIDE_IN, syn(40000)), None).unwrap();
            w.write(&rec(SIDE_OUT, syn(40001)), None).unwrap();
            w.flush().unwrap();
        }
        assert_eq!(frames(&file).unwrap(), vec![syn(40000)]);
        // Classic pcap, as tcpdump -w writes it.
        let mut file = Vec::new();
        {
            let mut w = pcap_file::pcap::PcapWriter::new(&mut file).unwrap();
            let f = syn(40002);
            w.write_packet(&pcap_file::pcap::PcapPacket::new(
                std::time::Duration::ZERO,
                f.len() as u32,
                &f,
            ))
            .unwrap();
        }
        assert_eq!(frames(&file).unwrap(), vec![syn(40002)]);
        assert!(frames(b"not a capture at all").is_err());
    }

    #[test]
    fn a_frame_gives_its_protocol_and_ends_or_why_not() {
        assert_eq!(
            tuple(&syn(40000)),
            Ok((
                "tcp",
                "198.18.0.100:40000".parse().unwrap(),
                "198.18.100.10:80".parse().unwrap()
            ))
        );
        let arp = [0u8; 14]
            .iter()
            .copied()
            .chain([0x08, 0x06])
            .collect::<Vec<_>>();
        assert!(tuple(&arp).is_err());
    }
}
