//! Flow sync messages on the wire: UDP datagrams from one LB to its peer, each a header,
//! up to [`MAX_RECORDS`] flow records, and an HMAC-SHA256 tag over both with the pair's
//! shared key. Records speak in addresses, never in local ids: the two LBs number their
//! VIPs, reals and interfaces independently.
//!
//! A receiver takes a message only when its tag is right (the key), it comes from the
//! configured peer (checked by the caller), its send time is within [`WINDOW`] of the
//! receiver's clock, and its sequence number is above every one seen from that sender's run
//! (`boot`, random per run). Anything else is dropped and counted by its [`Dropped`] reason;
//! nothing of it is installed.

use std::net::IpAddr;

use hmac::{Hmac, Mac as _};
use lb_common::{ip_from_bytes, ip_to_bytes, Family};
use sha2::Sha256;

const MAGIC: [u8; 4] = *b"LBS1";
const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 40;
pub const RECORD_LEN: usize = 96;
const TAG_LEN: usize = 32;
/// Records per datagram: it stays under 1400 bytes, one frame on any path.
pub const MAX_RECORDS: usize = 13;
/// How far a message's send time may be from the receiver's clock (both LBs keep time with
/// NTP): older messages are replays, or too late to matter.
pub const WINDOW_MS: u64 = 30_000;
/// The shortest key taken.
pub const MIN_KEY: usize = 16;

/// `Header::kind`: flows created, changed or ended since the last walk.
pub const KIND_DELTA: u8 = 1;
/// `Header::kind`: one part of a full round (every flow the sender has).
pub const KIND_FULL: u8 = 2;

/// A message's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    /// The sender's run: random, new at each start.
    pub boot: u64,
    pub seq: u64,
    /// Unix time of sending, in milliseconds.
    pub sent_ms: u64,
    /// Full rounds: the round's number, this part (from 0) and how many parts it has.
    pub round: u32,
    pub part: u16,
    pub parts: u16,
}

/// `Record::op`.
pub const OP_FLOW: u8 = 1;
pub const OP_END: u8 = 2;
/// `Record::state` bits.
pub const STATE_ANSWERED: u8 = 1;
pub const STATE_CLOSING: u8 = 2;

/// One stateful flow (nat, router, one-arm), as its forward entry on the sender says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Record {
    /// OP_FLOW: the flow as it is; OP_END: it ended.
    pub op: u8,
    pub proto: u8,
    pub state: u8,
    pub client: IpAddr,
    pub client_port: u16,
    pub vip: IpAddr,
    pub vip_port: u16,
    pub real: IpAddr,
    pub real_port: u16,
    /// The source the real sees: the client (nat, router) or the SNAT address (one-arm).
    pub src: IpAddr,
    pub src_port: u16,
    /// The MAC the client's packets came from (its router, or the client), on the segment
    /// both LBs share: where replies go.
    pub client_mac: [u8; 6],
}

/// Why a datagram was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dropped {
    /// Not from the configured peer.
    Foreign,
    /// Not a sync message: too short, another magic or version, lengths that disagree.
    Garbage,
    /// The tag is wrong: another key, or altered on the way.
    BadTag,
    /// Sent too long ago, or ahead of the receiver's clock (outside [`WINDOW_MS`]).
    Stale,
    /// Its sequence number was seen already from that run.
    Replayed,
    /// This LB's own message, sent back to it (reflected).
    Own,
}

impl Dropped {
    pub const ALL: [Dropped; 6] = [
        Dropped::Foreign,
        Dropped::Garbage,
        Dropped::BadTag,
        Dropped::Stale,
        Dropped::Replayed,
        Dropped::Own,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dropped::Foreign => "foreign",
            Dropped::Garbage => "garbage",
            Dropped::BadTag => "bad_tag",
            Dropped::Stale => "stale",
            Dropped::Replayed => "replayed",
            Dropped::Own => "own",
        }
    }
}

fn addr_from(b: &[u8], family: u8) -> Option<IpAddr> {
    let b: [u8; 16] = b.try_into().ok()?;
    let known = [Family::V4 as u8, Family::V6 as u8].contains(&family);
    known.then(|| ip_from_bytes(&b, family))
}

impl Record {
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let (client, family) = ip_to_bytes(self.client);
        out.extend([self.op, self.proto, family, self.state]);
        for (a, port) in [
            (client, self.client_port),
            (ip_to_bytes(self.vip).0, self.vip_port),
            (ip_to_bytes(self.real).0, self.real_port),
            (ip_to_bytes(self.src).0, self.src_port),
        ] {
            out.extend(a);
            out.extend(port.to_be_bytes());
        }
        out.extend(self.client_mac);
        out.resize(start + RECORD_LEN, 0);
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let (op, proto, family, state) = (b[0], b[1], b[2], b[3]);
        if !matches!(op, OP_FLOW | OP_END) {
            return None;
        }
        let field = |i: usize| {
            let at = 4 + i * 18;
            Some((
                addr_from(&b[at..at + 16], family)?,
                u16::from_be_bytes([b[at + 16], b[at + 17]]),
            ))
        };
        let (client, client_port) = field(0)?;
        let (vip, vip_port) = field(1)?;
        let (real, real_port) = field(2)?;
        let (src, src_port) = field(3)?;
        let at = 4 + 4 * 18;
        Some(Self {
            op,
            proto,
            state,
            client,
            client_port,
            vip,
            vip_port,
            real,
            real_port,
            src,
            src_port,
            client_mac: b[at..at + 6].try_into().ok()?,
        })
    }
}

fn tag(key: &[u8], body: &[u8]) -> [u8; TAG_LEN] {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The datagram of `header` and `records` (at most [`MAX_RECORDS`]), tagged with `key`.
pub fn encode(key: &[u8], header: &Header, records: &[Record]) -> Vec<u8> {
    assert!(
        records.len() <= MAX_RECORDS,
        "a message holds {MAX_RECORDS} records"
    );
    let mut out = Vec::with_capacity(HEADER_LEN + records.len() * RECORD_LEN + TAG_LEN);
    out.extend(MAGIC);
    out.extend([VERSION, header.kind]);
    out.extend((records.len() as u16).to_be_bytes());
    out.extend(header.boot.to_be_bytes());
    out.extend(header.seq.to_be_bytes());
    out.extend(header.sent_ms.to_be_bytes());
    out.extend(header.round.to_be_bytes());
    out.extend(header.part.to_be_bytes());
    out.extend(header.parts.to_be_bytes());
    for r in records {
        r.encode(&mut out);
    }
    let t = tag(key, &out);
    out.extend(t);
    out
}

/// Reads and authenticates a datagram (not its freshness: see [`Replay`]).
pub fn decode(key: &[u8], bytes: &[u8]) -> Result<(Header, Vec<Record>), Dropped> {
    if bytes.len() < HEADER_LEN + TAG_LEN || bytes[..4] != MAGIC || bytes[4] != VERSION {
        return Err(Dropped::Garbage);
    }
    let count = usize::from(u16::from_be_bytes([bytes[6], bytes[7]]));
    if count > MAX_RECORDS || bytes.len() != HEADER_LEN + count * RECORD_LEN + TAG_LEN {
        return Err(Dropped::Garbage);
    }
    let (body, got) = bytes.split_at(bytes.len() - TAG_LEN);
    // Constant time: the tag is compared by the MAC, not byte by byte here.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    if mac.verify_slice(got).is_err() {
        return Err(Dropped::BadTag);
    }
    let u64_at = |i: usize| u64::from_be_bytes(body[i..i + 8].try_into().unwrap_or_default());
    let header = Header {
        kind: body[5],
        boot: u64_at(8),
        seq: u64_at(16),
        sent_ms: u64_at(24),
        round: u32::from_be_bytes(body[32..36].try_into().unwrap_or_default()),
        part: u16::from_be_bytes([body[36], body[37]]),
        parts: u16::from_be_bytes([body[38], body[39]]),
    };
    if !matches!(header.kind, KIND_DELTA | KIND_FULL)
        || (header.kind == KIND_FULL && header.part >= header.parts)
    {
        return Err(Dropped::Garbage);
    }
    let records = body[HEADER_LEN..]
        .chunks_exact(RECORD_LEN)
        .map(Record::decode)
        .collect::<Option<Vec<_>>>()
        .ok_or(Dropped::Garbage)?;
    Ok((header, records))
}

/// What a receiver remembers to refuse replays: the highest sequence number of each of the
/// sender's last runs.
#[derive(Debug, Default)]
pub struct Replay {
    runs: Vec<(u64, u64)>,
}

/// Runs remembered: a sender restarting this often within the window is not a sender.
const RUNS: usize = 8;

impl Replay {
    /// Takes `header` if it is fresh at `now_ms`: within the window and above every
    /// sequence number of its run seen so far.
    pub fn check(&mut self, header: &Header, now_ms: u64) -> Result<(), Dropped> {
        if header.sent_ms.abs_diff(now_ms) > WINDOW_MS {
            return Err(Dropped::Stale);
        }
        match self.runs.iter_mut().find(|(boot, _)| *boot == header.boot) {
            Some((_, last)) if header.seq <= *last => Err(Dropped::Replayed),
            Some((_, last)) => {
                *last = header.seq;
                Ok(())
            }
            None => {
                if self.runs.len() == RUNS {
                    self.runs.remove(0);
                }
                self.runs.push((header.boot, header.seq));
                Ok(())
            }
        }
    }
}

/// Unix time now, in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef-pair-key";

    fn record(i: u16) -> Record {
        Record {
            op: OP_FLOW,
            proto: 6,
            state: STATE_ANSWERED,
            client: "198.18.0.100".parse().unwrap(),
            client_port: 40000 + i,
            vip: "198.18.100.13".parse().unwrap(),
            vip_port: 9000,
            real: "198.18.0.12".parse().unwrap(),
            real_port: 9000,
            src: "198.18.0.201".parse().unwrap(),
            src_port: 1024 + i,
            client_mac: [2, 0, 0, 0, 0, 0x64],
        }
    }

    fn header(seq: u64, sent_ms: u64) -> Header {
        Header {
            kind: KIND_FULL,
            boot: 7,
            seq,
            sent_ms,
            round: 3,
            part: 1,
            parts: 2,
        }
    }

    #[test]
    fn a_message_reads_back_as_it_was_written() {
        let records: Vec<Record> = (0..MAX_RECORDS as u16).map(record).collect();
        let mut six = record(1);
        six.client = "2001:2::100".parse().unwrap();
        six.vip = "2001:2::13".parse().unwrap();
        six.real = "2001:2::12".parse().unwrap();
        six.src = "2001:2::201".parse().unwrap();
        six.op = OP_END;
        let h = header(5, 1_000);
        for rs in [records.clone(), vec![six], vec![]] {
            let bytes = encode(KEY, &h, &rs);
            assert!(bytes.len() <= 1400);
            assert_eq!(decode(KEY, &bytes), Ok((h, rs)));
        }
    }

    #[test]
    fn garbage_another_key_and_altered_bytes_are_refused() {
        let bytes = encode(KEY, &header(1, 1_000), &[record(0)]);
        assert_eq!(
            decode(b"another key of the right length", &bytes),
            Err(Dropped::BadTag)
        );
        for i in [0, 9, HEADER_LEN + 5, bytes.len() - 1] {
            let mut altered = bytes.clone();
            altered[i] ^= 0x40;
            let got = decode(KEY, &altered);
            assert!(
                matches!(got, Err(Dropped::BadTag | Dropped::Garbage)),
                "byte {i}: {got:?}"
            );
        }
        assert_eq!(
            decode(KEY, &bytes[..bytes.len() - 1]),
            Err(Dropped::Garbage)
        );
        assert_eq!(
            decode(KEY, b"GET / HTTP/1.0\r\n\r\n"),
            Err(Dropped::Garbage)
        );
        assert_eq!(decode(KEY, &[]), Err(Dropped::Garbage));
        // Right length and magic, records not of their kind: garbage, even well tagged.
        let mut bad_op = bytes[..bytes.len() - TAG_LEN].to_vec();
        bad_op[HEADER_LEN] = 9;
        let t = tag(KEY, &bad_op);
        bad_op.extend(t);
        assert_eq!(decode(KEY, &bad_op), Err(Dropped::Garbage));
    }

    #[test]
    fn replays_and_stale_messages_are_refused() {
        let mut r = Replay::default();
        let now = 100_000;
        assert_eq!(r.check(&header(1, now), now), Ok(()));
        assert_eq!(r.check(&header(2, now), now), Ok(()));
        assert_eq!(r.check(&header(2, now), now), Err(Dropped::Replayed));
        assert_eq!(r.check(&header(1, now), now), Err(Dropped::Replayed));
        assert_eq!(
            r.check(&header(3, now - WINDOW_MS - 1), now),
            Err(Dropped::Stale)
        );
        assert_eq!(
            r.check(&header(3, now + WINDOW_MS + 1), now),
            Err(Dropped::Stale)
        );
        // A new run starts its own numbering; the old run's old numbers stay refused.
        let restarted = Header {
            boot: 8,
            ..header(1, now)
        };
        assert_eq!(r.check(&restarted, now), Ok(()));
        assert_eq!(r.check(&header(2, now), now), Err(Dropped::Replayed));
        assert_eq!(r.check(&header(3, now), now), Ok(()));
    }
}
