//! Running the programs on given frames (BPF_PROG_TEST_RUN) for the fixture tables, and
//! handing them out: the benchmarks (the tests crate's benchmark object) tail-call the
//! balancer loaded here.

use super::*;

impl Datapath {
    /// The program `name` of [`lb_common::program_names`] (all are loaded with the object), to
    /// run on frames or inspect: the benchmark object tail-calls the balancer by its fd.
    pub fn loaded_program(&self, name: &str) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(name)
            .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))?
            .try_into()?)
    }

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
        let prog = self.loaded_program(name)?;
        let mut out = vec![0u8; frame.len() + 256];
        let res = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })?;
        out.truncate(res.data_size_out as usize);
        Ok((res.return_value, out))
    }
}
