//! `lbctl capture`: the frames the balancer on an interface receives and sends, with its
//! verdict on each, as lines or into a pcapng file. Works with or without a running
//! `lbctl attach`: it switches the capture on in the attached program and off at the end.

use std::{io::Write as _, path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lb_common::{CAPTURE_ANY, CAPTURE_SNAP, SIDE_IN, SIDE_OUT};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::capture::{
    describe, pcapng,
    select::{Selector, VipFilter},
    Capture, Filter, Record,
};

/// Records read per wake-up.
const BATCH: usize = 512;

#[derive(Args, Clone, Debug)]
pub struct CaptureArgs {
    /// Interface the balancer is attached to: frames arriving on it are captured.
    pub iface: String,
    /// Write the frames to FILE as pcapng (tcpdump -r FILE, Wireshark) instead of a line
    /// each; the verdict is each frame's comment.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// Only packets to or from this VIP: ADDRESS or ADDRESS:PORT.
    #[arg(long, value_name = "VIP")]
    pub vip: Option<VipFilter>,
    /// Only packets of this verdict: forwarded, reply, or a reason as `lbctl stats --reasons`
    /// names it (drop_no_real, pass_not_vip, ...).
    #[arg(long, value_name = "REASON", value_parser = describe::parse_slot)]
    pub reason: Option<u32>,
    /// Stop after this many packets (each with the frame sent for it).
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub seconds: Option<f64>,
    /// Bytes kept of each frame.
    #[arg(short = 's', long, default_value_t = CAPTURE_SNAP as u32, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(1..=CAPTURE_SNAP as i64))]
    pub snaplen: u32,
}

pub async fn run(args: &CaptureArgs) -> Result<()> {
    if let Some(s) = args.seconds {
        if !(s > 0.0 && s <= 86_400.0) {
            bail!("--seconds {s} is out of range: give seconds above 0, up to 86400");
        }
    }
    let prog_id = crate::stats::attached_program(&args.iface).await?;
    let ifindex = crate::host::iface::index(&args.iface)?;
    let mut capture = Capture::start(
        prog_id,
        Filter {
            ifindex,
            slot: args.reason.unwrap_or(CAPTURE_ANY),
            snaplen: args.snaplen,
        },
    )?;
    let mut out = Output::open(args)?;
    let ring = capture
        .take_frames()
        .context("the capture's ring buffer is taken already")?;
    // SAFETY: the ring buffer owns its map's file descriptor, open until it is dropped with
    // the AsyncFd, and returns that same descriptor from every as_raw_fd.
    let mut ready = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .context("waiting on the capture's ring buffer")?;
    let mut sigint = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let deadline = args.seconds.map(Duration::from_secs_f64);
    let started = tokio::time::Instant::now();
    let mut selector = Selector::new(args.vip);
    let mut vip_ports = VipPorts::new();
    let mut packets = 0u64;
    eprintln!(
        "lbctl capture: {} (program {prog_id}){}; Ctrl-C to stop",
        args.iface,
        args.write
            .as_ref()
            .map_or(String::new(), |p| format!(", writing {}", p.display()))
    );
    'capture: loop {
        let until = deadline.map(|d| started + d);
        let mut guard = tokio::select! {
            g = ready.readable_mut() => g.context("waiting for captured frames")?,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sleep_until(until) => break,
        };
        let records = capture.read(guard.get_inner_mut(), BATCH);
        if records.len() < BATCH {
            guard.clear_ready();
        }
        for r in records {
            for kept in selector.push(r) {
                out.write(&capture, &kept, &mut vip_ports)?;
                if kept.header.side == SIDE_IN {
                    packets += 1;
                }
            }
            if args.count.is_some_and(|n| packets >= n) {
                break 'capture;
            }
        }
        out.flush()?;
    }
    // Off first, so what is left in the ring is all there is.
    capture.stop()?;
    let ring = ready.get_mut();
    for r in capture.read(ring, usize::MAX) {
        if args.count.is_some_and(|n| packets >= n) {
            break;
        }
        for kept in selector.push(r) {
            out.write(&capture, &kept, &mut vip_ports)?;
            packets += u64::from(kept.header.side == SIDE_IN);
        }
    }
    if args.count.is_none_or(|n| packets < n) {
        for kept in selector.finish() {
            out.write(&capture, &kept, &mut vip_ports)?;
            packets += u64::from(kept.header.side == SIDE_IN);
        }
    }
    out.flush()?;
    let counts = capture.counts()?;
    eprintln!(
        "lbctl capture: {packets} packets kept; the datapath saw {} while capturing and lost {} records to a full ring buffer",
        counts.seen, counts.ring_full
    );
    Ok(())
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Lines on stdout, or a pcapng file.
enum Output {
    Lines(std::io::BufWriter<std::io::Stdout>),
    File(pcapng::Writer<std::io::BufWriter<std::fs::File>>),
}

impl Output {
    fn open(args: &CaptureArgs) -> Result<Self> {
        Ok(match &args.write {
            None => Self::Lines(std::io::BufWriter::new(std::io::stdout())),
            Some(path) => {
                let file = std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                Self::File(pcapng::Writer::new(
                    std::io::BufWriter::new(file),
                    &args.iface,
                    args.snaplen,
                )?)
            }
        })
    }

    fn write(&mut self, capture: &Capture, r: &Record, vip_port: &mut VipPorts) -> Result<()> {
        let real = real_of(capture, r, vip_port);
        match self {
            Self::File(w) => w.write(r, real),
            Self::Lines(out) => {
                let line = line(r, real);
                writeln!(out, "{line}").context("writing to stdout")
            }
        }
    }

    fn flush(&mut self) -> Result<()> {
        match self {
            Self::File(w) => w.flush(),
            Self::Lines(out) => out.flush().context("writing to stdout"),
        }
    }
}

/// Per CPU: the VIP port of the packet whose in record came last, for its out record.
type VipPorts = std::collections::HashMap<u32, u16>;

/// The real of a forwarded frame (request or reply), named with the VIP's port: a
/// request's in frame has it as its destination port, a reply's as its source port once
/// sent; an out record takes its in record's.
fn real_of(
    capture: &Capture,
    r: &Record,
    vip_ports: &mut VipPorts,
) -> Option<std::net::SocketAddr> {
    if r.header.slot > lb_common::Reason::REPLIES_SLOT {
        return None;
    }
    let reply = r.header.slot == lb_common::Reason::REPLIES_SLOT;
    let port = match r.header.side {
        SIDE_IN if !reply => ports(&r.bytes).map(|(_, dst)| dst),
        SIDE_IN => None,
        _ => vip_ports.get(&r.header.cpu).copied(),
    };
    let port = match (port, reply, r.header.side) {
        (Some(p), _, _) => p,
        // A reply leaves from the VIP's port.
        (None, true, SIDE_OUT) => ports(&r.bytes).map(|(src, _)| src)?,
        (None, ..) => 0,
    };
    if r.header.side == SIDE_IN && !reply {
        vip_ports.insert(r.header.cpu, port);
    }
    capture.real(r.header.real_id, port)
}

/// A TCP or UDP frame's source and destination ports.
fn ports(frame: &[u8]) -> Option<(u16, u16)> {
    describe::ends(frame)?
        .l4
        .map(|(_, sport, dport)| (sport, dport))
}

/// "09:12:01.123456 in  02:..:01 > 02:..:02 198.18.0.100:40000 > 198.18.100.10:80 tcp [S]
/// 74 B: XDP_TX forwarded to real 198.18.0.12:80 (id 3)"; an out frame without the verdict.
fn line(r: &Record, real: Option<std::net::SocketAddr>) -> String {
    let at = humantime::format_rfc3339_micros(r.at).to_string();
    let time = at.get(11..26).unwrap_or(&at);
    let summary = describe::summary(&r.bytes, r.header.wire_len);
    match r.header.side {
        SIDE_OUT => format!("{time} out {summary}"),
        _ => format!(
            "{time} in  {summary}: {}",
            describe::verdict(&r.header, real)
        ),
    }
}

/// `lbctl debug IFACE on|off`. On only with a running lbctl, which reads the lines: with
/// none, they would only fill aya-log's ring buffer, each packet still paying for its line.
pub async fn debug(iface: &str, on: bool, socket: &std::path::Path) -> Result<()> {
    let prog_id = crate::stats::attached_program(iface).await?;
    if on {
        if let Err(e) = tokio::net::UnixStream::connect(socket).await {
            bail!("no lbctl answers on {} ({e}): the debug lines are read and logged by the running lbctl; start it (`lbctl attach {iface} ...`) or name its socket with --socket", socket.display());
        }
    }
    crate::capture::set_debug(prog_id, on)?;
    if on {
        println!("debug log on for {iface} (program {prog_id}): a line per packet in the running lbctl's log; `lbctl debug {iface} off` to stop");
    } else {
        println!("debug log off for {iface} (program {prog_id})");
    }
    Ok(())
}
