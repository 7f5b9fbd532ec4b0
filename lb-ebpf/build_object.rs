// Builds lb-ebpf for bpfel with the pinned nightly and bpf-linker: the shared body of the
// build scripts that embed an object of it (lb-userspace: the shipped object; tests: the
// benchmark object). Included by each (`include!`), so both build the same way.

/// The nightly that builds the eBPF crate, pinned: its LLVM must be the one bpf-linker was
/// built against (22), and a moving `nightly` would break the build the day it moves on.
const NIGHTLY: &str = include_str!("nightly-toolchain").trim_ascii();

/// The BPF instruction set the objects are compiled for. v3 has the atomic OR that sets a
/// flow entry's flags bits shared by CPUs (`lb_ebpf::flow::set_flags`), with 32-bit registers
/// and jumps; kernels since 5.12 run it. rustc's BPF target defaults to v1 ("generic").
const BPF_CPU: &str = "v3";

/// Builds lb-ebpf's bins with `features` (and its default features unless
/// `no_default_features`) into the calling build's OUT_DIR, as aya-build does.
fn build_lb_ebpf(features: &[&str], no_default_features: bool) -> anyhow::Result<()> {
    use anyhow::{anyhow, Context as _};
    let meta = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = meta
        .packages
        .iter()
        .find(|p| p.name.as_str() == "lb-ebpf")
        .ok_or_else(|| anyhow!("lb-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .context("lb-ebpf manifest has no parent")?
        .as_str();
    // aya-build sets the eBPF build's RUSTFLAGS itself, so the CPU goes in as the release
    // profile's rustflags (an unstable cargo feature; the nightly is pinned). The bitcode is
    // compiled for the CPU by bpf-linker, which rustc tells it. Build scripts and proc
    // macros of that build run on the host, and get none.
    std::env::set_var("CARGO_UNSTABLE_PROFILE_RUSTFLAGS", "true");
    std::env::set_var(
        "CARGO_PROFILE_RELEASE_RUSTFLAGS",
        format!("-Ctarget-cpu={BPF_CPU}"),
    );
    std::env::set_var("CARGO_PROFILE_RELEASE_BUILD_OVERRIDE_RUSTFLAGS", "");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir,
            no_default_features,
            features,
        }],
        aya_build::Toolchain::Custom(NIGHTLY),
    )
}
