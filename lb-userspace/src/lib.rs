//! lbctl's control plane: loads the embedded XDP object, fills its maps through domain verbs,
//! resolves reals' MAC addresses from the kernel, and reads counters back.
//!
//! Each folder is one kind of knowledge:
//! - `declare`: what operators write (the config file, VIP and real specs, runtime edits);
//! - `host`: what the kernel knows (interfaces, routes, neighbours, and resolving what is
//!   declared against them);
//! - `health`: health checks (what a check is, its probes, the running tasks);
//! - `tables`: the lookup tables new flows are scheduled by (Maglev, weighted round robin);
//! - `datapath`: the loaded XDP object, its maps and pinned state;
//! - `daemon`: the running balancer and the one way it changes;
//! - `admin`: the admin socket; `cli`: the command line; `doctor`: checks of a real;
//! - `demo`: `lbctl demo`, run in the lab (the `lb-lab` crate); `stats`: counters;
//!   `http`: the stats over HTTP (`/metrics`, the page, `/healthz`); `flowlog`: flow logs;
//!   `capture`: frames with the datapath's verdicts (`lbctl capture`); `announce`: the VIPs
//!   announced over BGP through BIRD.

pub mod admin;
pub mod announce;
pub mod capture;
pub mod cli;
pub mod daemon;
pub mod datapath;
pub mod declare;
pub mod demo;
pub mod doctor;
pub mod flowlog;
pub mod health;
pub mod host;
pub mod http;
pub mod stats;
pub mod sync;
pub mod tables;

/// The eBPF object built from lb-ebpf, embedded so lbctl is one binary.
#[cfg(feature = "ebpf")]
pub static LB_EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// Built without the `ebpf` feature (the host-tier tests): no object, and nothing loads.
#[cfg(not(feature = "ebpf"))]
pub static LB_EBPF_OBJECT: &[u8] = &[];

/// The embedded object, or what to do when this build has none.
pub fn ebpf_object() -> anyhow::Result<&'static [u8]> {
    if LB_EBPF_OBJECT.is_empty() {
        anyhow::bail!("this build of lbctl's library has no eBPF object (built without the `ebpf` feature, as plain `cargo test` builds it): build lbctl with `cargo xtask build`, or run root tests with `cargo xtask test`");
    }
    Ok(LB_EBPF_OBJECT)
}
