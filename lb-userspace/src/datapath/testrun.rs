//! Running the programs on given frames (BPF_PROG_TEST_RUN): the fixture tables and the
//! benchmarks.

use aya::{maps::PerCpuValues, programs::TestRunAttrs};
use lb_common::BenchRedirect;

use super::*;

impl Datapath {
    /// Runs the balancer once on `frame` with BPF_PROG_TEST_RUN: the XDP action and the frame
    /// as it would leave.
    pub fn run_frame(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        self.run_program(program_names::LB, frame)
    }

    /// Runs the decap program once on `frame`, as [`Datapath::run_frame`] does the balancer.
    pub fn run_decap_frame(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        self.run_program(program_names::DECAP, frame)
    }

    fn run_program(&self, name: &str, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let prog: &Xdp = self
            .ebpf
            .program(name)
            .ok_or_else(|| anyhow!("no program {name}"))?
            .try_into()?;
        let mut out = vec![0u8; frame.len() + 256];
        let res = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })?;
        out.truncate(res.data_size_out as usize);
        Ok((res.return_value, out))
    }

    /// Benchmarks: `program` run `repeat` times in the kernel on `frame`, restored before
    /// every repeat (the balancer and the floor; the pass program needs no restore), varied as
    /// `vary` says. Returns the last repeat's XDP action and the kernel's mean ns per run.
    pub fn bench(
        &mut self,
        program: BenchProgram,
        frame: &[u8],
        vary: Option<Vary>,
        repeat: u32,
    ) -> Result<(u32, f64)> {
        self.set_bench_frame(frame, vary)?;
        let name = match program {
            BenchProgram::Balancer => program_names::BENCH,
            BenchProgram::Floor => program_names::BENCH_FLOOR,
            BenchProgram::Swap => program_names::BENCH_SWAP,
            BenchProgram::Pass => program_names::PASS,
        };
        let prog = self.loaded(name)?;
        let mut out = vec![0u8; frame.len() + 256];
        let res = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })?;
        Ok((res.return_value, res.duration.as_nanos() as f64))
    }

    /// The frame the benchmark programs restore (and the generator sends), and how it varies.
    pub fn set_bench_frame(&mut self, frame: &[u8], vary: Option<Vary>) -> Result<()> {
        if frame.len() < BENCH_FRAME_LEN {
            bail!(
                "benchmark frames are {BENCH_FRAME_LEN} bytes or more, this one {}",
                frame.len()
            );
        }
        let mut bytes = [0u8; BENCH_FRAME_LEN];
        bytes.copy_from_slice(&frame[..BENCH_FRAME_LEN]);
        let vary = vary.unwrap_or_default();
        for at in [vary.sport_at, vary.addr_at] {
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
        };
        self.bench_frame
            .set(0, value, 0)
            .context("writing BENCH_FRAME")
    }

    /// Starts the varied count over on every CPU.
    pub fn reset_bench_seq(&mut self) -> Result<()> {
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
    ) -> Result<std::time::Duration> {
        self.set_bench_frame(frame, vary)?;
        let prog = self.loaded(program_names::BENCH_GEN)?;
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

    /// Attaches a benchmark program (the sink or the bare redirect) to `iface`, in the
    /// calling thread's namespace; detached when the `Datapath` is dropped.
    pub fn attach_bench(&mut self, program: BenchAttach, iface: &str) -> Result<()> {
        let name = match program {
            BenchAttach::Sink => program_names::BENCH_SINK,
            BenchAttach::Redirect => program_names::BENCH_REDIRECT,
        };
        self.loaded(name)?
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
            .ok_or_else(|| anyhow!("the eBPF object has no map {name}"))?;
        let sink: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        Ok(sink.get(&0, 0).context("reading BENCH_SINK")?.iter().sum())
    }

    /// Where the bare-redirect program sends frames.
    pub fn set_bench_redirect(&mut self, to: BenchRedirect) -> Result<()> {
        let mut map: Array<&mut MapData, BenchRedirect> =
            borrow(&mut self.ebpf, map_names::BENCH_REDIRECT)?;
        map.set(0, to, 0).context("writing BENCH_REDIRECT")
    }

    /// The program called `name`, loaded into the kernel.
    fn loaded(&mut self, name: &str) -> Result<&mut Xdp> {
        let prog = self.program(name)?;
        if prog.fd().is_err() {
            prog.load()
                .with_context(|| format!("the kernel rejected program {name}"))?;
        }
        Ok(prog)
    }
}

/// What [`Datapath::bench`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchProgram {
    /// The balancer, the frame restored before every repeat.
    Balancer,
    /// The restore and a MAC swap sent back: the trivial program with the balancer's
    /// harness (what the harness costs is this minus `Swap`).
    Floor,
    /// A MAC swap sent back, no restore: the trivial XDP_TX program, the floor of the path.
    Swap,
    /// The pass-everything program, no restore: the test-run loop's own cost.
    Pass,
}

/// What [`Datapath::attach_bench`] attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchAttach {
    Sink,
    Redirect,
}

/// How a benchmark frame changes from repeat to repeat: a per-CPU count written as the source
/// port at `sport_at`, its high half at `addr_at` (0: not written), wrapping at `modulo`
/// (0: never). No `Vary` at all: every repeat is the same frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vary {
    pub sport_at: usize,
    pub addr_at: usize,
    pub modulo: u32,
}

/// A map of the object, borrowed with its type.
fn borrow<'a, T>(ebpf: &'a mut aya::Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| anyhow!("the eBPF object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

/// What the kernel says about one of the object's programs once loaded.
#[derive(Clone, Copy, Debug)]
pub struct ProgramSize {
    /// Instructions the verifier processed (every path walked, not the program's length).
    pub verified_insns: u32,
    /// The program's length in BPF instructions after the verifier's rewrites.
    pub insns: u32,
    /// Bytes of machine code.
    pub jitted_bytes: u32,
}

impl Datapath {
    /// The balancer's size as the kernel sees it.
    pub fn balancer_size(&mut self) -> Result<ProgramSize> {
        let info = self.loaded(program_names::LB)?.info()?;
        Ok(ProgramSize {
            verified_insns: info.verified_instruction_count().unwrap_or(0),
            insns: info.size_translated().unwrap_or(0) / 8,
            jitted_bytes: info.size_jitted(),
        })
    }
}
