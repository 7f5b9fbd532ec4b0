//! Captures (`lbctl capture`): the frames the datapath saw and sent, each with its verdict,
//! from the program's CAPTURE_FRAMES ring buffer. The capture is switched on in the program
//! (its OBSERVE slot) for as long as a [`Capture`] lives, and off when it is dropped. One
//! capture at a time per program: the ring buffer has one reader.
//!
//! The same switch turns the datapath's debug log lines on and off (`debug`).
//!
//! `describe` turns a record into words (the verdict, a one-line summary of the frame),
//! `pcapng` writes records for tcpdump and Wireshark, the verdict as each frame's comment.

pub mod debug;
pub mod describe;
pub mod pcapng;
pub mod select;

use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::{Array, Map, MapData, PerCpuArray, RingBuf};
use lb_common::{
    map_names, CaptureCounts, CaptureHeader, Observe, RealEntry, CAPTURE_ANY, CAPTURE_SNAP,
};

use crate::datapath::program;

/// What to capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Frames arriving on this interface only (0: every interface the program is on).
    pub ifindex: u32,
    /// Frames of this verdict only (its counter slot), or [`CAPTURE_ANY`].
    pub slot: u32,
    /// Bytes kept of each frame, 1..=[`CAPTURE_SNAP`].
    pub snaplen: u32,
}

impl Default for Filter {
    fn default() -> Self {
        Self {
            ifindex: 0,
            slot: CAPTURE_ANY,
            snaplen: CAPTURE_SNAP as u32,
        }
    }
}

/// One captured frame: how it arrived (`SIDE_IN`), or how it left (`SIDE_OUT`, right after
/// the same packet's in record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub header: CaptureHeader,
    pub bytes: Vec<u8>,
    /// When the frame arrived, on the wall clock.
    pub at: SystemTime,
}

/// A capture running on a loaded program. Dropping it switches the capture off.
pub struct Capture {
    switch: Switch,
    frames: Option<RingBuf<MapData>>,
    counts: PerCpuArray<MapData, CaptureCounts>,
    reals: Option<Array<MapData, RealEntry>>,
    /// Wall clock minus CLOCK_MONOTONIC, to date records.
    wall_offset: Duration,
    /// The counts when this capture started (they add up over the program's captures).
    counts_at_start: CaptureCounts,
    /// Switched off already: a later stop (or the drop) leaves the switch alone, which by
    /// then may be another capture's.
    stopped: bool,
}

impl Capture {
    /// Starts capturing on program `prog_id` (lbctl's balancer). Refused while another
    /// capture of that program runs, which would share its one ring buffer; a capture whose
    /// process died is taken over.
    pub fn start(prog_id: u32, filter: Filter) -> Result<Self> {
        if filter.snaplen == 0 || filter.snaplen as usize > CAPTURE_SNAP {
            bail!(
                "snap length {} is out of range: give 1..={CAPTURE_SNAP} bytes",
                filter.snaplen
            );
        }
        let maps = program::maps_by_name(prog_id)?;
        let open = |name: &str| -> Result<Map> {
            let id = maps.get(name).ok_or_else(|| {
                anyhow!("program {prog_id} has no map {name}: it is an older lbctl's, which cannot capture; restart it with this lbctl")
            })?;
            Ok(Map::from_map_data(MapData::from_id(*id)?)?)
        };
        let switch = Switch::open(prog_id, &maps)?;
        let running = switch.get()?;
        if running.capture != 0 && alive(running.owner_pid) {
            bail!(
                "another capture runs on this program (process {}): stop it first; one capture at a time reads its frames",
                running.owner_pid
            );
        }
        let frames = RingBuf::try_from(open(map_names::CAPTURE_FRAMES)?)
            .context("CAPTURE_FRAMES is no ring buffer")?;
        let counts = PerCpuArray::try_from(open(map_names::CAPTURE_COUNTS)?)
            .context("CAPTURE_COUNTS has an unexpected type")?;
        let reals = match maps.get(map_names::REALS) {
            Some(_) => Some(Array::try_from(open(map_names::REALS)?)?),
            None => None,
        };
        let mut capture = Self {
            switch,
            frames: Some(frames),
            counts,
            reals,
            wall_offset: wall_offset()?,
            counts_at_start: CaptureCounts::default(),
            stopped: false,
        };
        capture.counts_at_start = capture.total_counts()?;
        // Records a dead capture left in the ring are not this one's.
        capture.drain_stale();
        capture.switch.update(|o| {
            o.capture = 1;
            o.ifindex = filter.ifindex;
            o.slot = filter.slot;
            o.snaplen = filter.snaplen;
            o.owner_pid = std::process::id();
        })?;
        Ok(capture)
    }

    fn drain_stale(&mut self) {
        if let Some(ring) = self.frames.as_mut() {
            while ring.next().is_some() {}
        }
    }

    /// The ring buffer, to wait on (taken once; the records are then read with [`decode`]).
    pub fn take_frames(&mut self) -> Option<RingBuf<MapData>> {
        self.frames.take()
    }

    /// The records waiting in `ring` now, at most `max`.
    pub fn read(&self, ring: &mut RingBuf<MapData>, max: usize) -> Vec<Record> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(item) = ring.next() else {
                break;
            };
            if let Some(r) = decode(&item, self.wall_offset) {
                out.push(r);
            }
        }
        out
    }

    /// What this capture did so far, summed over CPUs: records sent and lost, packets
    /// observed (captured, or given a debug line) since it started.
    pub fn counts(&self) -> Result<CaptureCounts> {
        let now = self.total_counts()?;
        let at_start = self.counts_at_start;
        Ok(CaptureCounts {
            sent: now.sent - at_start.sent,
            ring_full: now.ring_full - at_start.ring_full,
            seen: now.seen - at_start.seen,
        })
    }

    fn total_counts(&self) -> Result<CaptureCounts> {
        let per_cpu = self.counts.get(&0, 0).context("reading CAPTURE_COUNTS")?;
        Ok(per_cpu
            .iter()
            .fold(CaptureCounts::default(), |a, c| CaptureCounts {
                sent: a.sent + c.sent,
                ring_full: a.ring_full + c.ring_full,
                seen: a.seen + c.seen,
            }))
    }

    /// The real of a forwarded frame (`real_id` of its record), by its entry now.
    pub fn real(&self, real_id: u32, vip_port: u16) -> Option<std::net::SocketAddr> {
        let e = self.reals.as_ref()?.get(&real_id, 0).ok()?;
        (e.family() != 0).then(|| e.endpoint(vip_port))
    }

    /// Switches the capture off (also done on drop), once, and only while the switch is
    /// still this process's capture; debug logs stay as they are.
    pub fn stop(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let me = std::process::id();
        self.switch.update(|o| {
            if o.capture != 0 && o.owner_pid == me {
                *o = Observe {
                    debug: o.debug,
                    ..Observe::default()
                }
            }
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %format!("{e:#}"), "the capture may still be on: run `lbctl capture` again and stop it");
        }
    }
}

/// A program's switch for what it tells userspace per packet: OBSERVE's settings, changed
/// field by field (captures and debug logs each keep the other's fields as they are), and
/// the word in the program's `.bss` every packet reads (`CAPTURED | DEBUG` bits), written
/// after them.
pub struct Switch {
    map: Array<MapData, Observe>,
    observing: Array<MapData, u32>,
}

/// The `.bss` word's bits (lb-ebpf's `observe::CAPTURED`, `observe::DEBUG`).
const CAPTURED: u32 = 1;
const DEBUG: u32 = 2;

impl Switch {
    /// The switch of program `prog_id`, whose maps are `maps` (by name).
    pub fn open(prog_id: u32, maps: &std::collections::BTreeMap<String, u32>) -> Result<Self> {
        let open = |name: &str| -> Result<Map> {
            let id = maps.get(name).ok_or_else(|| {
                anyhow!("program {prog_id} has no map {name}: it is an older lbctl's, which cannot capture or log packets; restart it with this lbctl")
            })?;
            Ok(Map::from_map_data(MapData::from_id(*id)?)?)
        };
        Ok(Self {
            map: Array::try_from(open(map_names::OBSERVE)?)
                .context("OBSERVE has an unexpected type")?,
            observing: Array::try_from(open(map_names::OBSERVING)?)
                .context("the program's .bss is not the one word lbctl expects")?,
        })
    }

    /// What is switched on now.
    pub fn get(&self) -> Result<Observe> {
        self.map.get(&0, 0).context("reading OBSERVE")
    }

    /// Changes what `change` changes.
    pub fn update(&mut self, change: impl FnOnce(&mut Observe)) -> Result<()> {
        let mut o = self.get()?;
        change(&mut o);
        self.map.set(0, o, 0).context("writing OBSERVE")?;
        let bits = if o.capture != 0 { CAPTURED } else { 0 } | if o.debug != 0 { DEBUG } else { 0 };
        self.observing
            .set(0, bits, 0)
            .context("writing the program's .bss")
    }
}

/// Switches the debug log lines of program `prog_id` on or off.
pub fn set_debug(prog_id: u32, on: bool) -> Result<()> {
    let maps = program::maps_by_name(prog_id)?;
    Switch::open(prog_id, &maps)?.update(|o| o.debug = u32::from(on))
}

/// A record from the ring buffer: its header and the bytes after it. The datapath writes
/// each record whole (header, then `cap_len` bytes): a shorter one cannot come from it.
pub fn decode(item: &[u8], wall_offset: Duration) -> Option<Record> {
    let head = std::mem::size_of::<CaptureHeader>();
    if item.len() < head {
        return None;
    }
    // SAFETY: CaptureHeader is repr(C) integers with explicit padding (any bytes are a
    // valid value); read unaligned from the record's first bytes, checked long enough.
    let header: CaptureHeader =
        unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<CaptureHeader>()) };
    let len = (header.cap_len as usize).min(item.len() - head);
    Some(Record {
        header,
        bytes: item[head..head + len].to_vec(),
        at: SystemTime::UNIX_EPOCH + wall_offset + Duration::from_nanos(header.at_ns),
    })
}

/// Wall clock minus CLOCK_MONOTONIC (the datapath's bpf_ktime_get_ns), now.
fn wall_offset() -> Result<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        bail!(
            "reading CLOCK_MONOTONIC: {}",
            std::io::Error::last_os_error()
        );
    }
    let mono = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .context("the wall clock is before 1970")?;
    Ok(wall.saturating_sub(mono))
}

/// Whether process `pid` lives.
fn alive(pid: u32) -> bool {
    pid != 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}
