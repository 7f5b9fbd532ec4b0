//! Builds the benchmark object (lb-ebpf's `lb-bench` bin, nightly, bpfel) for the bench and
//! the tests that drive traffic with it.
//!
//! Why here and not in lb-userspace: the benchmark object must never be in lbctl. It is a
//! bin of lb-ebpf that requires the `bench` feature, so lbctl's build script (aya-build builds
//! every bin of the package the features allow; it asks for none but the default) skips it,
//! and only this script, which asks for `bench`, builds it. A feature of lb-userspace would
//! not hold that line: cargo unifies features over one build, so a workspace build of the
//! tests crate would have built lbctl with the benchmark programs. Without lb-ebpf's default
//! `datapath` feature the shipped bin is not built here, and the benchmark object carries no
//! map of the balancer (every map of a linked crate lands in the object).
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

/// The nightly that builds the eBPF crate: the one lbctl's build uses (see there).
const NIGHTLY: &str = include_str!("../lb-ebpf/nightly-toolchain").trim_ascii();

fn main() -> anyhow::Result<()> {
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
            no_default_features: true,
            features: &["bench"],
        }],
        Toolchain::Custom(NIGHTLY),
    )
}
