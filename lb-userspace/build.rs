//! Builds the eBPF object (lb-ebpf, nightly, bpfel) so that lbctl embeds it.
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

/// The nightly that builds the eBPF crate, pinned: its LLVM must be the one bpf-linker was
/// built against (22), and a moving `nightly` would break the build the day it moves on.
const NIGHTLY: &str = include_str!("../lb-ebpf/nightly-toolchain").trim_ascii();

fn main() -> anyhow::Result<()> {
    // Only the `ebpf` feature builds the object: `cargo test` of the pure logic must not need
    // the nightly or bpf-linker.
    if std::env::var_os("CARGO_FEATURE_EBPF").is_none() {
        return Ok(());
    }
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
    aya_build::build_ebpf(
        [Package {
            name: "lb-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(NIGHTLY),
    )
}
