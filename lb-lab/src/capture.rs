//! Capturing frames in the lab's namespaces while something happens: a packet socket (pnet)
//! per capture point, each on a thread inside its namespace, for the demo's hop-by-hop view
//! and its `--pcap` files.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use anyhow::{anyhow, Context as _, Result};
use pnet::datalink::{self, Channel, Config};

use super::{netns::NsThread, Netns};

/// One frame seen at a capture point.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The capture point, as people name it: "client eth0", "r2 eth0".
    pub at: String,
    pub when: SystemTime,
    pub bytes: Vec<u8>,
}

/// Where to capture: a namespace's interface, and its name in the output.
pub struct Point<'a> {
    pub ns: &'a Netns,
    pub iface: &'a str,
    pub label: String,
}

/// The frames seen at `points` while `during` ran (and for a moment after, so the last
/// answers are in), in the order they were seen at each point.
pub fn capture<R>(points: &[Point<'_>], during: impl FnOnce() -> R) -> Result<(R, Vec<Frame>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads: Vec<NsThread<Result<Vec<Frame>>>> = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for p in points {
        let (iface, label, stop, ready) = (
            p.iface.to_owned(),
            p.label.clone(),
            stop.clone(),
            ready_tx.clone(),
        );
        threads.push(p.ns.spawn(move || listen(&iface, &label, &stop, &ready))?);
    }
    // Every socket open before anything happens.
    for _ in points {
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow!("a capture did not start within 5 s"))??;
    }
    let result = during();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let mut frames = Vec::new();
    for t in threads {
        frames.extend(t.join()??);
    }
    Ok((result, frames))
}

fn listen(
    iface: &str,
    label: &str,
    stop: &AtomicBool,
    ready: &std::sync::mpsc::Sender<Result<()>>,
) -> Result<Vec<Frame>> {
    let opened = open(iface);
    let mut rx = match opened {
        Ok(rx) => {
            ready.send(Ok(())).context("the capture's caller is gone")?;
            rx
        }
        Err(e) => {
            let said = anyhow!("capturing on {label}: {e:#}");
            ready
                .send(Err(said))
                .context("the capture's caller is gone")?;
            return Ok(Vec::new());
        }
    };
    let mut frames = Vec::new();
    // Bounded by the caller: it stops every capture once `during` is done.
    while !stop.load(Ordering::Relaxed) {
        match rx.next() {
            Ok(bytes) => frames.push(Frame {
                at: label.to_owned(),
                when: SystemTime::now(),
                bytes: bytes.to_vec(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => return Err(e).with_context(|| format!("capturing on {label}")),
        }
    }
    Ok(frames)
}

fn open(iface: &str) -> Result<Box<dyn datalink::DataLinkReceiver>> {
    let interface = datalink::interfaces()
        .into_iter()
        .find(|i| i.name == iface)
        .ok_or_else(|| anyhow!("no interface {iface}"))?;
    let config = Config {
        read_timeout: Some(Duration::from_millis(10)),
        // A host's own frames are all the demo shows.
        promiscuous: false,
        ..Config::default()
    };
    match datalink::channel(&interface, config).context("opening a packet socket")? {
        Channel::Ethernet(_, rx) => Ok(rx),
        _ => Err(anyhow!("{iface} is not an Ethernet interface")),
    }
}
