//! The benchmark object (lb-ebpf's `lb-bench` bin, built by this crate's build script, never
//! in lbctl): the per-packet harness around the shipped balancer, and the forwarding path's
//! generator, sink and bare redirect.
//!
//! Per packet, [`BalancerBench`] runs `lb_bench` with BPF_PROG_TEST_RUN: it restores the frame
//! and tail-calls the `lb_xdp` of a [`Datapath`] loaded from the shipped object, seeded by its
//! verbs, so the figures are those of the program lbctl runs, on maps it filled.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{Array, MapData, PerCpuArray, PerCpuValues, ProgramArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use lb_common::{
    map_names, program_names, BenchFrame, BenchRedirect, BENCH_FRAME_LEN, BENCH_SLOT_BALANCER,
    BENCH_SLOT_SWAP,
};
use lb_userspace::datapath::{possible_cpus, Datapath};

/// The benchmark object, as lb-ebpf's build for this crate made it.
pub static LB_BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-bench"));

/// The benchmark object loaded: every program verified, the floor's tail call in place.
pub struct BenchObject {
    ebpf: Ebpf,
    frame: Array<MapData, BenchFrame>,
    tail_calls: ProgramArray<MapData>,
}

/// What [`BalancerBench::run`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchProgram {
    /// The shipped balancer, behind the harness: the frame restored, then a tail call.
    Balancer,
    /// The same harness in front of a MAC swap sent back: the floor with the balancer's
    /// harness (what the harness costs is this minus `Swap`).
    Floor,
    /// A MAC swap sent back, no harness: the trivial XDP_TX program, the floor of the path.
    Swap,
    /// The shipped pass-everything program, no harness: the test-run loop's own cost.
    Pass,
}

/// What [`BenchObject::attach`] attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchAttach {
    Sink,
    Redirect,
}

/// How a benchmark frame changes from repeat to repeat: a per-CPU count written as the source
/// port at `sport_at`, its high half added at `addr_at` (0: not written), wrapping at
/// `modulo` (0: never); the IPv4 header checksum at `csum_at` kept right (0: left). No `Vary`
/// at all: every repeat is the same frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vary {
    pub sport_at: usize,
    pub addr_at: usize,
    pub modulo: u32,
    pub csum_at: usize,
}

impl BenchObject {
    /// Loads the object into the kernel (nothing attached) and points the floor's tail call at
    /// the object's MAC swap. The balancer's slot stays empty until
    /// [`BenchObject::tail_call_balancer`].
    pub fn load() -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .load(LB_BENCH_OBJECT)
            .context("loading the benchmark object (root, a kernel with BTF)")?;
        for name in [
            program_names::BENCH,
            program_names::BENCH_FLOOR,
            program_names::BENCH_SWAP,
            program_names::BENCH_GEN,
            program_names::BENCH_SINK,
            program_names::BENCH_REDIRECT,
        ] {
            program_mut(&mut ebpf, name)?
                .load()
                .with_context(|| format!("the kernel rejected program {name}"))?;
        }
        let frame = take(&mut ebpf, map_names::BENCH_FRAME)?;
        let mut tail_calls: ProgramArray<MapData> = take(&mut ebpf, map_names::BENCH_TAIL_CALLS)?;
        let swap = program(&ebpf, program_names::BENCH_SWAP)?.fd()?;
        tail_calls
            .set(BENCH_SLOT_SWAP, swap, 0)
            .context("putting the MAC swap in BENCH_TAIL_CALLS")?;
        Ok(Self {
            ebpf,
            frame,
            tail_calls,
        })
    }

    /// `lb_bench` tail-calls the balancer of `dp` from now on: the program lbctl runs, as
    /// loaded from the shipped object, on the maps `dp` seeds.
    pub fn tail_call_balancer(&mut self, dp: &Datapath) -> Result<()> {
        let lb = dp.loaded_program(program_names::LB)?;
        self.tail_calls
            .set(BENCH_SLOT_BALANCER, lb.fd()?, 0)
            .context("putting the balancer in BENCH_TAIL_CALLS")
    }

    /// The frame the harness restores (and the generator sends), and how it varies.
    pub fn set_frame(&mut self, frame: &[u8], vary: Option<Vary>) -> Result<()> {
        if frame.len() < BENCH_FRAME_LEN {
            bail!(
                "benchmark frames are {BENCH_FRAME_LEN} bytes or more, this one {}",
                frame.len()
            );
        }
        let mut bytes = [0u8; BENCH_FRAME_LEN];
        bytes.copy_from_slice(&frame[..BENCH_FRAME_LEN]);
        let vary = vary.unwrap_or_default();
        for at in [vary.sport_at, vary.addr_at, vary.csum_at] {
            if at + 2 > BENCH_FRAME_LEN {
                bail!("a varied field must lie in the first {BENCH_FRAME_LEN} bytes, not at {at}");
            }
        }
        let value = BenchFrame {
            bytes,
            vary_sport_at: vary.sport_at as u32,
            vary_addr_at: vary.addr_at as u32,
            vary_modulo: vary.modulo,
            len: frame.len() as u32,
            vary_csum_at: vary.csum_at as u32,
        };
        self.frame.set(0, value, 0).context("writing BENCH_FRAME")
    }

    /// Starts the varied count over on every CPU.
    pub fn reset_seq(&mut self) -> Result<()> {
        let cpus = possible_cpus()? as usize;
        let mut seq: PerCpuArray<&mut MapData, u32> = borrow(&mut self.ebpf, map_names::BENCH_SEQ)?;
        let zeros = PerCpuValues::try_from(vec![0u32; cpus])?;
        seq.set(0, zeros, 0).context("resetting BENCH_SEQ")
    }

    /// The traffic generator: `count` copies of `frame` (varied as `vary` says), sent out of
    /// `ifindex` by BPF_PROG_RUN live frames, `batch` per kernel batch. Call it from a thread
    /// in the namespace of `ifindex`. Returns how long the kernel took.
    pub fn generate(
        &mut self,
        frame: &[u8],
        vary: Option<Vary>,
        ifindex: u32,
        count: u32,
        batch: u32,
    ) -> Result<Duration> {
        self.set_frame(frame, vary)?;
        let prog = program(&self.ebpf, program_names::BENCH_GEN)?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex; the kernel wants data_end = the frame's length.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let start = std::time::Instant::now();
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: count,
            attrs: TestRunAttrs::new().xdp_live_frames(batch),
            ..Default::default()
        })
        .context("BPF_PROG_RUN with live frames (kernel 5.18 or later)")?;
        Ok(start.elapsed())
    }

    /// Attaches the sink or the bare redirect to `iface`, in the calling thread's namespace;
    /// detached when the object is dropped.
    pub fn attach(&mut self, program: BenchAttach, iface: &str) -> Result<()> {
        let name = match program {
            BenchAttach::Sink => program_names::BENCH_SINK,
            BenchAttach::Redirect => program_names::BENCH_REDIRECT,
        };
        program_mut(&mut self.ebpf, name)?
            .attach(iface, XdpMode::Driver)
            .with_context(|| format!("attaching {name} to {iface}"))?;
        Ok(())
    }

    /// Frames the sink program has counted, over all CPUs.
    pub fn sink_count(&self) -> Result<u64> {
        let name = map_names::BENCH_SINK;
        let map = self
            .ebpf
            .map(name)
            .ok_or_else(|| anyhow!("the benchmark object has no map {name}"))?;
        let sink: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        Ok(sink.get(&0, 0).context("reading BENCH_SINK")?.iter().sum())
    }

    /// Where the bare-redirect program sends frames.
    pub fn set_redirect(&mut self, to: BenchRedirect) -> Result<()> {
        let mut map: Array<&mut MapData, BenchRedirect> =
            borrow(&mut self.ebpf, map_names::BENCH_REDIRECT)?;
        map.set(0, to, 0).context("writing BENCH_REDIRECT")
    }
}

/// The shipped balancer of `dp` under the harness of a benchmark object.
pub struct BalancerBench {
    /// The balancer, seeded through its verbs (VIPs, reals, interfaces).
    pub dp: Datapath,
    harness: BenchObject,
}

impl BalancerBench {
    /// Loads a benchmark object whose harness tail-calls `dp`'s balancer.
    pub fn new(dp: Datapath) -> Result<Self> {
        let mut harness = BenchObject::load()?;
        harness.tail_call_balancer(&dp)?;
        Ok(Self { dp, harness })
    }

    /// `which` run `repeat` times in the kernel on `frame`, restored before every repeat
    /// (the balancer and the floor; the others need no restore), varied as `vary` says.
    /// Returns the last repeat's XDP action and the kernel's mean ns per run.
    pub fn run(
        &mut self,
        which: BenchProgram,
        frame: &[u8],
        vary: Option<Vary>,
        repeat: u32,
    ) -> Result<(u32, f64)> {
        self.harness.set_frame(frame, vary)?;
        let prog = match which {
            BenchProgram::Balancer => program(&self.harness.ebpf, program_names::BENCH)?,
            BenchProgram::Floor => program(&self.harness.ebpf, program_names::BENCH_FLOOR)?,
            BenchProgram::Swap => program(&self.harness.ebpf, program_names::BENCH_SWAP)?,
            BenchProgram::Pass => self.dp.loaded_program(program_names::PASS)?,
        };
        let mut out = vec![0u8; frame.len() + 256];
        let res = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })?;
        Ok((res.return_value, res.duration.as_nanos() as f64))
    }

    /// Starts the varied count over on every CPU.
    pub fn reset_seq(&mut self) -> Result<()> {
        self.harness.reset_seq()
    }

    /// The balancer's size as the kernel sees it.
    pub fn balancer_size(&self) -> Result<ProgramSize> {
        let info = self.dp.loaded_program(program_names::LB)?.info()?;
        Ok(ProgramSize {
            verified_insns: info.verified_instruction_count().unwrap_or(0),
            insns: info.size_translated().unwrap_or(0) / 8,
            jitted_bytes: info.size_jitted(),
        })
    }
}

/// What the kernel says about a loaded program.
#[derive(Clone, Copy, Debug)]
pub struct ProgramSize {
    /// Instructions the verifier processed (every path walked, not the program's length).
    pub verified_insns: u32,
    /// The program's length in BPF instructions after the verifier's rewrites.
    pub insns: u32,
    /// Bytes of machine code.
    pub jitted_bytes: u32,
}

fn program<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    Ok(ebpf
        .program(name)
        .ok_or_else(|| anyhow!("the benchmark object has no program {name}"))?
        .try_into()?)
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    Ok(ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("the benchmark object has no program {name}"))?
        .try_into()?)
}

/// A map of the object, taken out with its type.
fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("the benchmark object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

/// A map of the object, borrowed with its type.
fn borrow<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| anyhow!("the benchmark object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}
