//! Health checks as HAProxy has them: `check` is what a check is and how results make a real
//! up or down (pure); `probe` and `probe_vip` send one check; `runner` runs a task per
//! checked real and tells the daemon of changes; `board` keeps every real's last result for
//! the daemon's answers.

pub mod board;
pub mod check;
pub mod probe;
pub mod probe_vip;
pub mod runner;
