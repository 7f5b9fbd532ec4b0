//! `cargo xtask`: set up the toolchain, build, test, run the demo.
//!
//! Every command first runs `setup`, which installs only what is missing, so a fresh machine
//! needs nothing but `cargo xtask demo` or `cargo xtask test` (as root).

mod previous;
mod programs;
#[cfg(test)]
mod scan;
mod setup;
mod tiers;

use std::process::Command;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (idempotent): nightly rust-src, LLVM 22
    /// development packages, bpf-linker 0.13, iproute2 and ethtool; mount bpffs.
    Setup,
    /// Build lbctl (release), with the eBPF object embedded.
    Build,
    /// Run every test tier to the end, whatever fails: host (pure logic, what `cargo test`
    /// runs), bpf (BPF_PROG_TEST_RUN fixtures) and netns (network-namespace end-to-end tests);
    /// ends with one line per tier. Installs the programs the tests run (needs root).
    Test {
        /// Test name filters, passed to every test binary.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks (needs root): per-packet cost against the XDP floor, forwarding
    /// through veth against bare XDP redirect and nftables, real TCP against nftables,
    /// HAProxy and no LB, scale; writes target/bench/report.md, report.json and PNG plots.
    Bench {
        /// Arguments for the bench, e.g. `--only per-packet,scale` or `--quick`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build lbctl and run `lbctl demo` (needs root): the lab, on real packets.
    Demo {
        /// Arguments for `lbctl demo`, e.g. `--requests 300`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(Into::into)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    setup::ensure()?;
    match cli.command {
        Cmd::Setup => Ok(()),
        Cmd::Build => build_lbctl(Profile::Release),
        Cmd::Test { args } => {
            setup::programs(programs::Need::Test)?;
            // The end-to-end tests run the real binary, built in the same profile.
            build_lbctl(Profile::Debug)?;
            test(&args)
        }
        Cmd::Bench { args } => {
            setup::programs(programs::Need::Bench)?;
            setup::apt_packages(setup::BENCH_FILES)?;
            build_lbctl(Profile::Release)?;
            run(cargo()
                .args(["run", "--release", "-p", "tests", "--bin", "bench", "--"])
                .args(&args)
                .env("LBCTL", Profile::Release.lbctl()))
        }
        Cmd::Demo { args } => {
            setup::programs(programs::Need::Demo)?;
            build_lbctl(Profile::Release)?;
            run(Command::new(Profile::Release.lbctl())
                .arg("demo")
                .args(&args))
        }
    }
}

/// Runs the three tiers, each to its end, then prints a line per tier; fails if any failed.
fn test(filter: &[String]) -> Result<()> {
    let lbctl = Profile::Debug.lbctl();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tests_dir = repo.join("tests/tests");
    // The releases whose pinned state the upgrade test has this lbctl take over.
    let previous = previous::build_all(&repo, &target_dir(), cargo);
    let mut lines = Vec::new();
    let mut ok = true;
    let mut passed = 0;
    for tier in tiers::tiers(&tests_dir, filter)? {
        let mut tally = tiers::Tally::default();
        for args in &tier.runs {
            eprintln!(
                "xtask test: {} tier: cargo test --no-fail-fast {}",
                tier.name,
                args.join(" ")
            );
            let mut cmd = cargo();
            cmd.args(["test", "--no-fail-fast"])
                .args(args)
                .env("LBCTL", &lbctl)
                .envs(previous.iter().map(|(k, v)| (k, v)));
            tiers::run(&mut cmd, &mut tally)?;
        }
        ok &= tally.ok();
        passed += tally.passed;
        lines.push(tally.line(tier.name));
    }
    println!();
    for line in &lines {
        println!("{line}");
    }
    if !filter.is_empty() && passed == 0 {
        bail!("no test matched {filter:?}");
    }
    if !ok {
        bail!("some tests failed (the lines above say in which tier)");
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Profile {
    Debug,
    Release,
}

impl Profile {
    /// Where `build_lbctl` puts the binary.
    fn lbctl(self) -> std::path::PathBuf {
        let dir = match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        };
        target_dir().join(dir).join("lbctl")
    }
}

/// Builds lbctl, with its eBPF object.
fn build_lbctl(profile: Profile) -> Result<()> {
    let mut cmd = cargo();
    cmd.arg("build");
    if let Profile::Release = profile {
        cmd.arg("--release");
    }
    run(cmd.args(["-p", "lb-userspace", "--features", "ebpf", "--bin", "lbctl"]))
}
