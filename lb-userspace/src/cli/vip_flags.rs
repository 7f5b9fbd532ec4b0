//! How a VIP is served, as flags: shared by `lbctl attach --vip` and `lbctl vip add`.

use std::net::IpAddr;

use clap::Args;
use lb_common::Timeouts;

use crate::{
    declare::{
        service::VipSettings,
        spec::{Balance, HashFields, Mode, PortRange},
    },
    health::check::Check,
};

#[derive(Args, Clone, Debug)]
pub struct VipFlags {
    /// Forwarding mode.
    #[arg(long, value_enum, default_value_t = Mode::Dsr)]
    pub mode: Mode,
    /// How new flows are spread over the reals.
    #[arg(long, value_enum, default_value_t = Balance::Maglev)]
    pub balance: Balance,
    /// maglev: what the flow hash covers.
    #[arg(long, value_enum, default_value_t = HashFields::FiveTuple)]
    pub hash: HashFields,
    /// maglev and source: the table's size, a prime; larger spreads finer (at least the
    /// number of reals; 100 slots per real or more is good) [default: the first of 257, 521,
    /// 1031 … 65537 with 100 slots per real].
    #[arg(long, value_name = "PRIME")]
    pub maglev_size: Option<u32>,
    /// one-arm: LB-owned source addresses for the flows [default: the address of the
    /// interface the reals are reached through].
    #[arg(long, value_name = "ADDRESS,...", value_delimiter = ',')]
    pub snat_pool: Vec<IpAddr>,
    /// one-arm: source ports for the flows.
    #[arg(long, value_name = "MIN-MAX", default_value_t = PortRange::SNAT_DEFAULT)]
    pub snat_ports: PortRange,
    /// tunnel: the LB-owned IPv4 address tunnels leave from [default: the address of the
    /// interface the real is reached through].
    #[arg(long, value_name = "ADDRESS")]
    pub tunnel_source: Option<IpAddr>,
    /// Check the reals' health, HAProxy-like: `tcp`, `http,path=/health,status=200` or
    /// `udp,payload=ping`, then `,inter=2s,fastinter=..,downinter=..,rise=2,fall=3,timeout=..,
    /// port=N`. A real failing `fall` checks in a row is down (its flows move) until `rise`
    /// checks pass. dsr and tunnel: `,via=vip` checks through the VIP as clients reach the
    /// real, proving it accepts the VIP (tcp and udp).
    #[arg(long, value_name = "CHECK")]
    pub check: Option<Check>,
    /// With no real up, pass new flows to the LB's own stack instead of dropping them.
    #[arg(long)]
    pub pass_when_empty: bool,
    /// How many reals must take new flows for the VIP to count as served (`lbctl status
    /// --check`, BGP announcements).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub quorum: u16,
    /// dsr and tunnel: above N new flows a second on a CPU, forward new flows by the ring
    /// without a flow entry, so a flood of new connections cannot evict established ones
    /// [default: no guard].
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub flood_guard: u32,
    /// Seconds a TCP flow lives without packets (nat, router, one-arm).
    #[arg(long, value_name = "SECONDS", default_value_t = Timeouts::DEFAULT.tcp)]
    pub tcp_timeout: u32,
    /// Seconds a TCP flow lives without packets once a FIN was seen.
    #[arg(long, value_name = "SECONDS", default_value_t = Timeouts::DEFAULT.tcp_fin)]
    pub tcp_fin_timeout: u32,
    /// Seconds a UDP flow lives without packets.
    #[arg(long, value_name = "SECONDS", default_value_t = Timeouts::DEFAULT.udp)]
    pub udp_timeout: u32,
}

impl VipFlags {
    pub fn settings(&self) -> VipSettings {
        VipSettings {
            mode: self.mode,
            balance: self.balance,
            hash: self.hash,
            maglev_size: self.maglev_size,
            timeouts: Timeouts {
                tcp: self.tcp_timeout,
                tcp_fin: self.tcp_fin_timeout,
                udp: self.udp_timeout,
            },
            snat_pool: self.snat_pool.clone(),
            snat_ports: self.snat_ports,
            tunnel_source: self.tunnel_source,
            check: self.check.clone(),
            pass_when_empty: self.pass_when_empty,
            quorum: self.quorum,
            flood_guard: self.flood_guard,
        }
    }
}
