//! Records to a pcapng file: one interface block for the capture, an enhanced packet block per
//! record with its direction (inbound as received, outbound as sent) and the verdict as its
//! comment, which Wireshark shows as the packet's comment (`frame.comment`) and tcpdump
//! reads past.

use std::{borrow::Cow, io::Write};

use anyhow::{Context as _, Result};
use lb_common::SIDE_OUT;
use pcap_file::{
    pcapng::{
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
        PcapNgWriter,
    },
    DataLink,
};

use super::{describe, Record};

/// pcapng's epb_flags direction bits.
const INBOUND: u32 = 0b01;
const OUTBOUND: u32 = 0b10;

/// A pcapng file being written.
pub struct Writer<W: Write> {
    out: PcapNgWriter<W>,
}

impl<W: Write> Writer<W> {
    /// Starts the file: its section header, and the capture's interface (`iface`, frames
    /// cut at `snaplen`, timestamps in nanoseconds).
    pub fn new(out: W, iface: &str, snaplen: u32) -> Result<Self> {
        let mut out = PcapNgWriter::new(out).context("writing the pcapng section header")?;
        out.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(iface.to_owned())),
                InterfaceDescriptionOption::IfDescription(Cow::Borrowed(
                    "lbctl capture: frames as the XDP datapath received and sent them",
                )),
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        })
        .context("writing the pcapng interface block")?;
        Ok(Self { out })
    }

    /// Writes `r`, with `real` (its real, when known) in its comment.
    pub fn write(&mut self, r: &Record, real: Option<std::net::SocketAddr>) -> Result<()> {
        let timestamp =
            r.at.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
        let direction = if r.header.side == SIDE_OUT {
            OUTBOUND
        } else {
            INBOUND
        };
        self.out
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp,
                original_len: r.header.wire_len,
                data: Cow::Borrowed(&r.bytes),
                options: vec![
                    EnhancedPacketOption::Comment(Cow::Owned(describe::comment(&r.header, real))),
                    EnhancedPacketOption::Flags(direction),
                ],
            })
            .context("writing a captured frame")?;
        Ok(())
    }

    /// Flushes what is written.
    pub fn flush(&mut self) -> Result<()> {
        self.out
            .get_mut()
            .flush()
            .context("writing the capture file")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{CaptureHeader, Reason, SIDE_IN};
    use pcap_file::pcapng::{Block, PcapNgReader};

    #[test]
    fn a_record_reads_back_with_its_bytes_direction_and_verdict() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(1_700_000_000_123_456_789);
        let rec = |side, bytes: &[u8]| Record {
            header: CaptureHeader {
                side,
                action: 3,
                slot: Reason::FORWARDED_SLOT,
                real_id: 7,
                wire_len: bytes.len() as u32,
                cap_len: bytes.len() as u32,
                ..Default::default()
            },
            bytes: bytes.to_vec(),
            at,
        };
        let mut w = Writer::new(Vec::new(), "eth0", 1536).unwrap();
        w.write(&rec(SIDE_IN, &[1; 60]), None).unwrap();
        w.write(&rec(SIDE_OUT, &[2; 60]), "198.18.0.12:80".parse().ok())
            .unwrap();
        let file = w.out.into_inner();
        let mut r = PcapNgReader::new(&file[..]).unwrap();
        let mut seen = Vec::new();
        while let Some(block) = r.next_block() {
            if let Block::EnhancedPacket(p) = block.unwrap() {
                let options: Vec<_> = p.options.iter().map(|o| o.clone().into_owned()).collect();
                seen.push((p.data.to_vec(), p.timestamp, options));
            }
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, vec![1; 60]);
        assert_eq!(seen[1].0, vec![2; 60]);
        assert_eq!(seen[0].1, at.duration_since(std::time::UNIX_EPOCH).unwrap());
        assert!(seen[0].2.contains(&EnhancedPacketOption::Flags(INBOUND)));
        let comment = seen[1].2.iter().find_map(|o| match o {
            EnhancedPacketOption::Comment(c) => Some(c.to_string()),
            _ => None,
        });
        assert_eq!(
            comment.as_deref(),
            Some("as lbctl sent it: XDP_TX forwarded to real 198.18.0.12:80 (id 7) (cpu 0, packet 0)")
        );
    }
}
