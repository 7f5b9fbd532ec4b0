//! The tables a VIP's new flows are scheduled by, built in userspace and read by the
//! datapath: Maglev, the weighted round-robin sequence, and the ring that holds either.
//! Pure and deterministic.

pub mod maglev;
pub mod ring;
pub mod wrr;
