//! lbctl's control plane: loads the embedded XDP object, fills its maps through domain verbs,
//! resolves reals' MAC addresses from the kernel, and reads counters back.

pub mod admin;
pub mod checks;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod doctor;
pub mod edit;
pub mod health;
pub mod iface;
pub mod lab;
pub mod maglev;
pub mod neigh;
pub mod neigh_watch;
pub mod probe;
pub mod probe_vip;
pub mod resolve;
pub mod ring;
pub mod route;
pub mod service;
pub mod spec;
pub mod stats;
pub mod text_serde;
pub mod wrr;

/// The eBPF object built from lb-ebpf, embedded so lbctl is one binary.
pub static LB_EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));
