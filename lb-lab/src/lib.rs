//! A lab of network namespaces on 198.18.0.0/15, used by the end-to-end tests, the benchmarks
//! and `lbctl demo` alike: one implementation, so the demo shows what the tests prove. It
//! knows nothing of lbctl's code: it runs the `lbctl` binary it is given, as an operator
//! would.
//!
//! Every namespace is an RAII guard; dropping the [`Lab`] stops the balancer process and the
//! servers and deletes the namespaces, also when a test panics half-way.

pub mod capture;
pub mod ecmp;
pub mod hops;
mod lb_process;
mod netns;
pub mod pair;
pub mod programs;
pub mod push;
mod servers;
mod sessions;
mod topology;
mod xdp_pass;

pub use lb_process::LbProcess;
pub use netns::{unique_prefix, BpfMount, Netns, NsThread};
pub use servers::{drive_tcp, drive_tcp_padded, drive_udp, request_tcp, Reply, Server};
pub use sessions::{EchoServer, SessionState, Sessions, SESSION_PORT};
pub use topology::{
    Lab, ALT_PORT, BRIDGED_REAL_ADDRS, CLIENT_ADDR, HOST_IFACE, LB_ADDR, LB_B_ADDR, REAL_ADDRS,
    ROUTED_REAL_ADDRS, ROUTER_ADDRS, SNAT_ADDR, UDP_PORT, VIP_ADDR, VIP_PORT,
};
