//! What the kernel of this host knows, over rtnetlink and sysfs: interfaces, routes,
//! neighbours (and following them), keepalived's virtual MACs, and what the declared
//! services resolve to on them.

pub mod iface;
pub mod neigh;
pub mod neigh_watch;
pub mod resolve;
pub mod route;
pub mod vmac;
