//! Flow sync with the peer LB over UDP: a sender thread that walks the flow table every
//! [`TICK`] and sends what changed (and everything every [`FULL_EVERY`], a full round), and
//! a receiver task that takes the peer's messages (authenticated, fresh, from the peer's
//! address only) and hands their records to the daemon, which installs them.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use lb_common::{Flow, FlowKey};
use tokio::sync::mpsc;
use tracing::warn;

use super::{
    flows,
    wire::{self, Dropped, Header, Record, KIND_DELTA, KIND_FULL, MAX_RECORDS, OP_END},
};

/// How often the flow table is walked for changes.
pub const TICK: Duration = Duration::from_millis(200);
/// How often every flow is sent again: a round the peer can check itself against.
pub const FULL_EVERY: Duration = Duration::from_secs(2);

/// How flow sync is set up (`lbctl attach --sync-*`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where this LB listens for its peer's messages (its address: also the source of its own).
    pub listen: SocketAddr,
    /// The peer's address and port: where messages go, and the only source taken.
    pub peer: SocketAddr,
    pub key: Vec<u8>,
    /// How long without a message from the peer before this LB stops waiting to be synced.
    pub wait: Duration,
}

/// Reads the shared key: the file's bytes, whitespace around them trimmed; at least
/// [`wire::MIN_KEY`] of them.
pub fn read_key(path: &Path) -> Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading the sync key {}", path.display()))?;
    let key = bytes.trim_ascii().to_vec();
    if key.len() < wire::MIN_KEY {
        bail!(
            "the sync key in {} has {} bytes; give at least {} (e.g. `head -c 32 /dev/urandom | base64 > {}` on one LB, copied to the other)",
            path.display(),
            key.len(),
            wire::MIN_KEY,
            path.display()
        );
    }
    Ok(key)
}

/// What both sides count, for `status` and `/metrics`.
#[derive(Debug, Default)]
pub struct Counts {
    pub sent_records: AtomicU64,
    pub sent_messages: AtomicU64,
    pub send_errors: AtomicU64,
    pub received_records: AtomicU64,
    pub received_messages: AtomicU64,
    /// Per [`Dropped`], in `Dropped::ALL` order.
    pub dropped: [AtomicU64; 6],
    /// Unix ms the peer sent its last message taken at, and when it arrived (ms).
    pub last_sent_ms: AtomicU64,
    pub last_arrived_ms: AtomicU64,
}

impl Counts {
    fn count_drop(&self, why: Dropped) {
        let i = Dropped::ALL.iter().position(|d| *d == why).unwrap_or(0);
        self.dropped[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// A batch of the peer's records, as one message brought them.
#[derive(Debug)]
pub struct Batch {
    pub header: Header,
    pub records: Vec<Record>,
}

/// The flows installed from the peer, and when (the datapath's clock): the sender leaves
/// them out until this LB's datapath has seen them since (a failover made them this LB's).
/// Sending them back would keep them alive on the peer after they ended there, and could
/// undo what the peer saw last (a FIN).
pub type FromPeer = Arc<Mutex<HashMap<FlowKey, u64>>>;

/// The running sync: the sender thread (stopped on drop) and the receiver task.
pub struct Sync {
    pub settings: Settings,
    pub counts: Arc<Counts>,
    pub from_peer: FromPeer,
    stop: Arc<AtomicBool>,
    sender: Option<std::thread::JoinHandle<()>>,
    receiver: tokio::task::JoinHandle<()>,
}

impl Sync {
    /// Binds the listening socket (refused if taken) and starts both sides; the peer's
    /// batches come out of the returned receiver.
    pub async fn start(
        settings: Settings,
        table: aya::maps::HashMap<aya::maps::MapData, FlowKey, Flow>,
    ) -> Result<(Self, mpsc::Receiver<Batch>)> {
        let socket = tokio::net::UdpSocket::bind(settings.listen)
            .await
            .with_context(|| format!("listening for flow sync on {}", settings.listen))?;
        let send = UdpSocket::bind(SocketAddr::new(settings.listen.ip(), 0))
            .context("opening the flow sync sending socket")?;
        let counts = Arc::new(Counts::default());
        let from_peer = FromPeer::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(1024);
        // This run's id: in every message sent, and refused in any received (reflected).
        let boot = random_u64();
        let receiver = tokio::spawn(receive(socket, settings.clone(), counts.clone(), tx, boot));
        let (s, c, st, fp) = (
            settings.clone(),
            counts.clone(),
            stop.clone(),
            from_peer.clone(),
        );
        let sender = std::thread::Builder::new()
            .name("lbctl-sync-send".into())
            .spawn(move || send_loop(&send, &s, &c, &st, &table, &fp, boot))
            .context("starting the flow sync sender")?;
        Ok((
            Self {
                settings,
                counts,
                from_peer,
                stop,
                sender: Some(sender),
                receiver,
            },
            rx,
        ))
    }
}

impl Drop for Sync {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.receiver.abort();
        if let Some(t) = self.sender.take() {
            let _ = t.join();
        }
    }
}

async fn receive(
    socket: tokio::net::UdpSocket,
    s: Settings,
    counts: Arc<Counts>,
    tx: mpsc::Sender<Batch>,
    own_boot: u64,
) {
    let mut replay = wire::Replay::default();
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "receiving flow sync failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if from.ip() != s.peer.ip() {
            counts.count_drop(Dropped::Foreign);
            continue;
        }
        let (header, records) = match wire::decode(&s.key, &buf[..n]) {
            Ok(m) => m,
            Err(why) => {
                counts.count_drop(why);
                continue;
            }
        };
        if header.boot == own_boot {
            counts.count_drop(Dropped::Own);
            continue;
        }
        let now = wire::now_ms();
        if let Err(why) = replay.check(&header, now) {
            counts.count_drop(why);
            continue;
        }
        counts.received_messages.fetch_add(1, Ordering::Relaxed);
        counts
            .received_records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        counts.last_sent_ms.store(header.sent_ms, Ordering::Relaxed);
        counts.last_arrived_ms.store(now, Ordering::Relaxed);
        if tx.send(Batch { header, records }).await.is_err() {
            return;
        }
    }
}

fn send_loop(
    socket: &UdpSocket,
    s: &Settings,
    counts: &Counts,
    stop: &AtomicBool,
    table: &aya::maps::HashMap<aya::maps::MapData, FlowKey, Flow>,
    from_peer: &FromPeer,
    boot: u64,
) {
    let mut seq = 0u64;
    let mut round = 0u32;
    let mut sent: HashMap<FlowKey, Record> = HashMap::new();
    let mut last_full = Instant::now() - FULL_EVERY;
    let mut send = |kind: u8, round: u32, chunks: Vec<&[Record]>| {
        // Parts are numbered in 16 bits: a round of more (over 850 k flows) is not sent,
        // rather than wrap; deltas still are.
        let Ok(parts) = u16::try_from(chunks.len()) else {
            warn!(
                flows = chunks.len() * MAX_RECORDS,
                "too many flows for a full sync round; only changes are sent"
            );
            return;
        };
        for (part, chunk) in chunks.into_iter().enumerate() {
            seq += 1;
            let header = Header {
                kind,
                boot,
                seq,
                sent_ms: wire::now_ms(),
                round,
                part: part as u16,
                parts,
            };
            let bytes = wire::encode(&s.key, &header, chunk);
            match socket.send_to(&bytes, s.peer) {
                Ok(_) => {
                    counts.sent_messages.fetch_add(1, Ordering::Relaxed);
                    counts
                        .sent_records
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    counts.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let entries: Vec<(FlowKey, Flow)> = table.iter().filter_map(Result::ok).collect();
        let now = flows_now();
        let mut current = flows::records(&entries, now);
        // Flows installed from the peer and not served here since: not sent (neither as
        // flows nor as ends: they did not end).
        let mut hidden = std::collections::HashSet::new();
        {
            let installed = from_peer.lock().unwrap_or_else(|p| p.into_inner());
            if !installed.is_empty() {
                let seen: HashMap<FlowKey, u64> =
                    entries.iter().map(|(k, f)| (*k, f.last_seen_ns)).collect();
                current.retain(|k, _| match installed.get(k) {
                    Some(at) if seen.get(k).is_none_or(|s| s <= at) => {
                        hidden.insert(*k);
                        false
                    }
                    _ => true,
                });
            }
        }
        // What changed: new or different flows, and those gone (ended, expired).
        let mut delta: Vec<Record> = current
            .iter()
            .filter(|(k, r)| sent.get(*k) != Some(*r))
            .map(|(_, r)| *r)
            .collect();
        delta.extend(
            sent.iter()
                .filter(|(k, _)| !current.contains_key(*k) && !hidden.contains(*k))
                .map(|(_, r)| Record { op: OP_END, ..*r }),
        );
        if !delta.is_empty() {
            send(KIND_DELTA, 0, delta.chunks(MAX_RECORDS).collect());
        }
        sent = current;
        if last_full.elapsed() >= FULL_EVERY {
            last_full = Instant::now();
            round += 1;
            let all: Vec<Record> = sent.values().copied().collect();
            let mut chunks: Vec<&[Record]> = all.chunks(MAX_RECORDS).collect();
            if chunks.is_empty() {
                // An empty round says "nothing": the peer is synced with it too.
                chunks.push(&[]);
            }
            send(KIND_FULL, round, chunks);
        }
        std::thread::sleep(TICK.saturating_sub(started.elapsed()));
    }
}

fn flows_now() -> u64 {
    crate::datapath::monotonic_ns()
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = f.read_exact(&mut b);
    }
    u64::from_ne_bytes(b) ^ u64::from(std::process::id())
}

/// The receiving side's view of full rounds: synced once every part of one round arrived.
#[derive(Debug, Default)]
pub struct Rounds {
    current: Option<(u64, u32, u16, Vec<bool>)>,
    pub synced_at: Option<Instant>,
    /// Keys seen in the round being assembled (the flows the peer has).
    pub seen: std::collections::HashSet<FlowKey>,
}

impl Rounds {
    /// Takes in a full-round part; returns the flows of the round once it is complete (the
    /// peer's whole table at that time).
    pub fn part(
        &mut self,
        h: &Header,
        keys: impl Iterator<Item = FlowKey>,
    ) -> Option<std::collections::HashSet<FlowKey>> {
        let same = matches!(&self.current, Some((b, r, p, _)) if *b == h.boot && *r == h.round && *p == h.parts);
        if !same {
            self.current = Some((h.boot, h.round, h.parts, vec![false; usize::from(h.parts)]));
            self.seen.clear();
        }
        let (_, _, _, got) = self.current.as_mut()?;
        if let Some(slot) = got.get_mut(usize::from(h.part)) {
            *slot = true;
        }
        self.seen.extend(keys);
        if got.iter().all(|g| *g) {
            self.synced_at = Some(Instant::now());
            self.current = None;
            return Some(std::mem::take(&mut self.seen));
        }
        None
    }
}

/// The peer as the check sees it.
pub fn peer_of(s: &Settings) -> IpAddr {
    s.peer.ip()
}

/// Shared view of the sync for the check and status (written by the daemon).
pub type Shared = Arc<Mutex<Rounds>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn h(round: u32, part: u16, parts: u16) -> Header {
        Header {
            kind: KIND_FULL,
            boot: 1,
            seq: 0,
            sent_ms: 0,
            round,
            part,
            parts,
        }
    }

    #[test]
    fn synced_once_every_part_of_one_round_arrived() {
        let k = |i: u8| FlowKey {
            src: [i; 16],
            ..FlowKey::default()
        };
        let mut r = Rounds::default();
        assert!(r.part(&h(1, 0, 2), [k(1)].into_iter()).is_none());
        // Part 1 of round 1 lost; round 2 starts over.
        assert!(r.part(&h(2, 1, 2), [k(2)].into_iter()).is_none());
        assert!(r.synced_at.is_none());
        let done = r.part(&h(2, 0, 2), [k(3)].into_iter()).unwrap();
        assert_eq!(done, [k(2), k(3)].into_iter().collect());
        assert!(r.synced_at.is_some());
        // An empty round of one part.
        assert_eq!(
            r.part(&h(3, 0, 1), std::iter::empty()),
            Some(Default::default())
        );
    }
}
