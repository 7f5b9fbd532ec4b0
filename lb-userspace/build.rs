//! Builds the eBPF object (lb-ebpf, nightly, bpfel) so that lbctl embeds it.

include!("../lb-ebpf/build_object.rs");

fn main() -> anyhow::Result<()> {
    // Only the `ebpf` feature builds the object: `cargo test` of the pure logic must not need
    // the nightly or bpf-linker.
    if std::env::var_os("CARGO_FEATURE_EBPF").is_none() {
        return Ok(());
    }
    build_lb_ebpf(&[], false)
}
