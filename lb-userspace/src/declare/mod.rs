//! What operators write: the configuration file, VIPs and reals as typed on the command line,
//! the services they make, and runtime edits of them. Pure: nothing here asks the kernel.

pub mod config;
pub mod edit;
pub mod service;
pub mod spec;
pub mod text_serde;
