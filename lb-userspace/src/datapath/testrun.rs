//! Running the programs on given frames (BPF_PROG_TEST_RUN): the fixture tables and the
//! benchmarks.

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

    /// Benchmarks: the balancer (or, `floor`, a program that only swaps MACs) run `repeat`
    /// times in the kernel on `frame`, restored before every repeat; `vary`: the offsets of
    /// the source port and of the source address's last two bytes, counted up so that every
    /// repeat is a new flow. Returns the
    /// last repeat's XDP action and the kernel's mean nanoseconds per run.
    pub fn bench(
        &mut self,
        floor: bool,
        frame: &[u8],
        vary: Option<(usize, usize)>,
        repeat: u32,
    ) -> Result<(u32, f64)> {
        if frame.len() < BENCH_FRAME_LEN {
            bail!(
                "benchmark frames are {BENCH_FRAME_LEN} bytes or more, this one {}",
                frame.len()
            );
        }
        let mut bytes = [0u8; BENCH_FRAME_LEN];
        bytes.copy_from_slice(&frame[..BENCH_FRAME_LEN]);
        let value = BenchFrame {
            bytes,
            vary_sport_at: vary.map_or(0, |v| v.0) as u32,
            vary_addr_at: vary.map_or(0, |v| v.1) as u32,
            len: frame.len() as u32,
        };
        self.bench_frame
            .set(0, value, 0)
            .context("writing BENCH_FRAME")?;
        let name = if floor {
            program_names::BENCH_FLOOR
        } else {
            program_names::BENCH
        };
        let prog = self.program(name)?;
        if prog.fd().is_err() {
            prog.load()
                .with_context(|| format!("the kernel rejected program {name}"))?;
        }
        let mut out = vec![0u8; frame.len() + 256];
        let res = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })?;
        Ok((res.return_value, res.duration.as_nanos() as f64))
    }
}
