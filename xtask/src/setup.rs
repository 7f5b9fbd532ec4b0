//! The toolchain this project builds with, installed when missing. Each step checks first,
//! so running it again costs a few process spawns.

use std::{path::Path, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::{
    programs::{Need, PROGRAMS},
    run,
};

/// Debian packages the build needs: LLVM 22 for bpf-linker. The programs tests, the demo
/// and the bench run are in `programs.rs`, installed by the command that runs them.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

/// Files (not programs) `cargo xtask bench` needs: a font for the plots.
pub const BENCH_FILES: &[&str] = &["fonts-dejavu-core"];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

pub fn ensure() -> Result<()> {
    apt_packages(APT_PACKAGES)?;
    nightly_rust_src()?;
    bpf_linker()?;
    bpffs()
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs the packages of the programs `need` runs (see `programs.rs`), those missing.
pub fn programs(need: Need) -> Result<()> {
    let needed: Vec<_> = PROGRAMS
        .iter()
        .filter(|p| p.needed_by.contains(&need))
        .collect();
    let mut packages: Vec<&str> = needed.iter().map(|p| p.package).collect();
    packages.sort_unstable();
    packages.dedup();
    apt_packages(&packages).with_context(|| {
        let names: Vec<&str> = needed.iter().map(|p| p.name).collect();
        format!(
            "installing what {} needs ({})",
            need.command(),
            names.join(", ")
        )
    })
}

/// Installs those of `packages` that are missing.
pub fn apt_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask setup: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"])).context("apt-get needs root")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The pinned nightly of the eBPF build (see lb-userspace/build.rs).
const NIGHTLY: &str = include_str!("../../lb-ebpf/nightly-toolchain").trim_ascii();

/// The pinned nightly with rust-src, installed by its dated name, so a newer `nightly` (with
/// an LLVM that bpf-linker cannot read) never takes its place.
fn nightly_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        NIGHTLY,
        "--installed",
    ]));
    if installed
        .as_deref()
        .is_some_and(|s| s.lines().any(|l| l.starts_with("rust-src")))
    {
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing {NIGHTLY} with rust-src (the eBPF crate builds core from source)"
    );
    run(Command::new("rustup").args([
        "toolchain",
        "install",
        NIGHTLY,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn bpf_linker() -> Result<()> {
    let version = output(Command::new("bpf-linker").arg("--version"));
    if version
        .as_deref()
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
    {
        return Ok(());
    }
    eprintln!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"
    );
    let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
    run(Command::new("cargo")
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--no-default-features",
            "--features",
            "llvm-22",
            "--force",
        ])
        .env("PATH", path))
}

fn bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if mounts.lines().any(|l| {
        l.split_whitespace().nth(2) == Some("bpf")
            && l.split_whitespace().nth(1) == Some("/sys/fs/bpf")
    }) {
        return Ok(());
    }
    if !Path::new("/sys/fs/bpf").exists() {
        bail!("/sys/fs/bpf does not exist: this kernel lacks bpffs");
    }
    eprintln!("xtask setup: mounting bpffs on /sys/fs/bpf");
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("mounting bpffs needs root")
}
