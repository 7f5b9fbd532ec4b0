//! Captures: frames as the datapath saw them and as it sent them, with its verdict, through a
//! ring buffer (CAPTURE_FRAMES) to `lbctl capture`. Off unless a capture runs: then a packet
//! pays one load of a word of the program's `.bss` (lb-ebpf's `observe::OBSERVING`), and
//! OBSERVE's settings are read only when it is on. None of these maps is pinned: a capture
//! belongs to the program it was started on.

use core::mem::size_of;

/// Bytes of a frame a record keeps at most (an Ethernet frame at MTU 1500 with a VLAN tag
/// fits; of a larger frame, the first this many bytes).
pub const CAPTURE_SNAP: usize = 1536;

/// `CaptureSettings::slot`: frames of every verdict.
pub const CAPTURE_ANY: u32 = u32::MAX;

/// `CaptureHeader::side`: the frame as it arrived.
pub const SIDE_IN: u8 = 0;
/// `CaptureHeader::side`: the frame as the program sent it (XDP_TX or redirect).
pub const SIDE_OUT: u8 = 1;

/// Value of OBSERVE (one slot): what the datapath tells userspace about each packet, read
/// only while the `.bss` switch is on: captures (`lbctl capture`) and debug logs
/// (`lbctl debug`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observe {
    /// Non-zero: frames are captured.
    pub capture: u32,
    /// Only frames that arrived on this interface (0: any the program is attached to).
    pub ifindex: u32,
    /// Only frames of this verdict: its counter slot (`Reason::FORWARDED_SLOT`,
    /// `Reason::REPLIES_SLOT`, a reason's `slot()`), or [`CAPTURE_ANY`].
    pub slot: u32,
    /// Bytes kept of each frame, 1..=[`CAPTURE_SNAP`].
    pub snaplen: u32,
    /// The process reading the captures, so that a second capture is refused while it lives.
    pub owner_pid: u32,
    /// Non-zero: a debug log line per packet (aya-log's AYA_LOGS ring buffer, which the
    /// running lbctl writes to its log).
    pub debug: u32,
}
const _: () = assert!(size_of::<Observe>() == 24);

/// The head of each record in CAPTURE_FRAMES; `cap_len` bytes of the frame follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureHeader {
    /// bpf_ktime_get_ns (CLOCK_MONOTONIC) when the frame arrived.
    pub at_ns: u64,
    /// The frame's length on the wire (this side's).
    pub wire_len: u32,
    /// Bytes of it that follow.
    pub cap_len: u32,
    /// Interface it arrived on.
    pub ingress: u32,
    /// Interface a forwarded frame left from (0: none, or the one it came in on).
    pub egress: u32,
    /// The XDP action returned.
    pub action: u32,
    /// The verdict's counter slot: forwarded, reply, or the reason's.
    pub slot: u32,
    /// A forwarded frame's real id.
    pub real_id: u32,
    pub cpu: u32,
    /// Per CPU, the number of the packet: the in and out records of one packet share it.
    pub seq: u32,
    /// `SIDE_IN` or `SIDE_OUT`.
    pub side: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<CaptureHeader>() == 48);

/// Per CPU (CAPTURE_SCRATCH): the record being built, and what the captures did.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureRecord {
    pub header: CaptureHeader,
    pub bytes: [u8; CAPTURE_SNAP],
}
const _: () = assert!(size_of::<CaptureRecord>() == 48 + CAPTURE_SNAP);

/// Value of CAPTURE_BUDGET (per CPU, one slot): what this CPU's captures did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureCounts {
    /// Records sent to the ring buffer.
    pub sent: u64,
    /// Records lost: the ring buffer was full (the reader lagging behind the traffic).
    pub ring_full: u64,
    /// Packets observed, captured or logged (numbers the records' `seq`).
    pub seen: u64,
}
const _: () = assert!(size_of::<CaptureCounts>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integers (and a byte array), no padding (asserted sizes).
    unsafe impl aya::Pod for super::Observe {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CaptureCounts {}
}
