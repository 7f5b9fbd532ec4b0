//! Flow sync between two LBs (active/standby): each sends its stateful flows (nat, router,
//! one-arm) to its peer, which installs them in its own flow table, so that a failover keeps
//! them. See docs/beyond-one-machine.md.

pub mod flows;
pub mod install;
pub mod peer;
pub mod wire;

/// Why a synced flow was not installed: this LB does not serve what the record names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refused {
    /// No VIP of that address, port and protocol here.
    UnknownVip,
    /// The VIP is dsr or tunnel here: nothing to sync (replies do not cross the LB).
    NotStateful,
    /// The real is not one of the VIP's here.
    UnknownReal,
    /// No interface of this LB for the client's or the real's side.
    NoInterface,
    /// This LB serves a flow of that tuple itself (made here, or served since it came from
    /// the peer): the peer's copy does not overwrite it.
    HeldHere,
    /// The reply entry's key (a one-arm SNAT address and port, or nat's real and client)
    /// belongs to another live flow here.
    Clash,
}

impl Refused {
    pub const ALL: [Refused; 6] = [
        Refused::UnknownVip,
        Refused::NotStateful,
        Refused::UnknownReal,
        Refused::NoInterface,
        Refused::HeldHere,
        Refused::Clash,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Refused::UnknownVip => "unknown_vip",
            Refused::NotStateful => "not_stateful",
            Refused::UnknownReal => "unknown_real",
            Refused::NoInterface => "no_interface",
            Refused::HeldHere => "held_here",
            Refused::Clash => "clash",
        }
    }
}
