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
include!("../lb-ebpf/build_object.rs");

fn main() -> anyhow::Result<()> {
    build_lb_ebpf(&["bench"], true)
}
