//! Parsing of what operators type: `198.18.100.10:80/tcp`, `--mode dsr`, real addresses.

use std::{fmt, net::IpAddr, str::FromStr};

use lb_common::{
    VipKey, HASH_DESTINATION_PORT, HASH_FIVE_TUPLE, HASH_NO_SOURCE_PORT, MODE_DSR, MODE_NAT,
    MODE_ONE_ARM, MODE_ROUTER, MODE_TUNNEL, PROTO_TCP, PROTO_UDP, SCHED_LEASTCONN, SCHED_MAGLEV,
    SCHED_ROUNDROBIN, SCHED_SOURCE, SCHED_STATIC_RR,
};

/// L4 protocol of a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => PROTO_TCP,
            Proto::Udp => PROTO_UDP,
        }
    }
}

/// A virtual service: address, port, protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipSpec {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: Proto,
}

impl VipSpec {
    pub fn key(&self) -> VipKey {
        match self.addr {
            IpAddr::V4(a) => VipKey::v4(a.octets(), self.port, self.proto.number()),
            IpAddr::V6(a) => VipKey::v6(a.octets(), self.port, self.proto.number()),
        }
    }

    /// The VIP a map key stands for (`None` for a key no lbctl wrote).
    pub fn from_key(key: &VipKey) -> Option<Self> {
        let a = key.addr_bytes();
        let addr = match key.family() {
            4 => IpAddr::from([a[0], a[1], a[2], a[3]]),
            6 => IpAddr::from(a),
            _ => return None,
        };
        let proto = match key.proto() {
            PROTO_TCP => Proto::Tcp,
            PROTO_UDP => Proto::Udp,
            _ => return None,
        };
        Some(VipSpec {
            addr,
            port: key.port(),
            proto,
        })
    }
}

impl fmt::Display for VipSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}/{proto}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{proto}", self.port),
        }
    }
}

/// Why a VIP string was rejected; each variant says what a correct one looks like.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VipSpecError {
    #[error(
        "`{0}`: expected ADDRESS:PORT/PROTO, e.g. 198.18.100.10:80/tcp or [2001:2::10]:53/udp"
    )]
    Shape(String),
    #[error("`{0}`: the protocol must be tcp or udp")]
    Proto(String),
    #[error("`{0}`: the port must be a number from 1 to 65535")]
    Port(String),
    #[error("`{0}`: not an IPv4 or IPv6 address (IPv6 goes in brackets: [2001:2::10]:80/tcp)")]
    Addr(String),
}

impl FromStr for VipSpec {
    type Err = VipSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_port, proto) = s
            .rsplit_once('/')
            .ok_or_else(|| VipSpecError::Shape(s.into()))?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(VipSpecError::Proto(s.into())),
        };
        let (addr, port) = addr_port
            .rsplit_once(':')
            .ok_or_else(|| VipSpecError::Shape(s.into()))?;
        let port: u16 = port.parse().map_err(|_| VipSpecError::Port(s.into()))?;
        if port == 0 {
            return Err(VipSpecError::Port(s.into()));
        }
        let addr = match addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().map(IpAddr::V6),
            None => addr.parse::<std::net::Ipv4Addr>().map(IpAddr::V4),
        }
        .map_err(|_| VipSpecError::Addr(s.into()))?;
        Ok(VipSpec { addr, port, proto })
    }
}

/// Forwarding mode of a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Mode {
    /// Direct server return: only the destination MAC is rewritten; reals answer clients directly.
    /// Reals must be on the LB interface's segment.
    Dsr,
    /// IP-in-IP to the real, which strips the outer header (`lbctl decap attach` on the real)
    /// and answers clients directly. Reals may be on the segment or behind routers.
    Tunnel,
    /// Bridge/transparent: the destination address (and port) becomes the real's, the MACs
    /// stay a bridge's; replies cross the LB, which restores the VIP as their source. The LB
    /// sits inline (a bridge between clients and reals, or the reals' gateway).
    Nat,
    /// As nat, as an L3 hop between two subnets: source MAC of the LB, TTL decremented.
    Router,
    /// Full NAT: destination to the real, source to an address:port of the VIP's SNAT pool,
    /// so replies come back to the LB wherever the reals route. Reals need nothing special.
    OneArm,
}

impl Mode {
    /// The mode of a VIPS entry's code, if this lbctl knows it.
    pub fn from_code(code: u8) -> Option<Self> {
        [
            Mode::Dsr,
            Mode::Tunnel,
            Mode::Nat,
            Mode::Router,
            Mode::OneArm,
        ]
        .into_iter()
        .find(|m| m.code() == code)
    }

    /// The name of the mode of `code`, "unknown" for none this lbctl knows.
    pub fn name_of(code: u8) -> &'static str {
        Self::from_code(code).map_or("unknown", Self::name)
    }

    pub fn code(self) -> u8 {
        match self {
            Mode::Dsr => MODE_DSR,
            Mode::Tunnel => MODE_TUNNEL,
            Mode::Nat => MODE_NAT,
            Mode::Router => MODE_ROUTER,
            Mode::OneArm => MODE_ONE_ARM,
        }
    }

    /// The name operators type (`--mode one-arm`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Dsr => "dsr",
            Mode::Tunnel => "tunnel",
            Mode::Nat => "nat",
            Mode::Router => "router",
            Mode::OneArm => "one-arm",
        }
    }

    /// Replies cross the LB, which keeps per-flow state to translate them.
    pub fn is_stateful(self) -> bool {
        matches!(self, Mode::Nat | Mode::Router | Mode::OneArm)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a VIP picks the real of a new flow (HAProxy's `balance`). Established flows keep
/// their real whatever the algorithm, while it stays up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Balance {
    /// Maglev consistent hashing of the flow: a real's removal moves only its own flows'
    /// hashes; several LBs with the same config pick the same reals.
    Maglev,
    /// Maglev over the client's address only: a client sticks to a real.
    Source,
    /// Weighted round robin over new flows; weights can change at runtime.
    Roundrobin,
    /// Weighted round robin, weights fixed at load.
    StaticRr,
    /// The up real with the fewest active flows for its weight (at most 256 reals).
    Leastconn,
}

impl Balance {
    /// The scheduler of a VIPS entry's code, if this lbctl knows it.
    pub fn from_code(code: u8) -> Option<Self> {
        [
            Balance::Maglev,
            Balance::Source,
            Balance::Roundrobin,
            Balance::StaticRr,
            Balance::Leastconn,
        ]
        .into_iter()
        .find(|b| b.code() == code)
    }

    /// The name of the scheduler of `code`, "unknown" for none this lbctl knows.
    pub fn name_of(code: u8) -> &'static str {
        Self::from_code(code).map_or("unknown", Self::name)
    }

    pub fn code(self) -> u8 {
        match self {
            Balance::Maglev => SCHED_MAGLEV,
            Balance::Source => SCHED_SOURCE,
            Balance::Roundrobin => SCHED_ROUNDROBIN,
            Balance::StaticRr => SCHED_STATIC_RR,
            Balance::Leastconn => SCHED_LEASTCONN,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Balance::Maglev => "maglev",
            Balance::Source => "source",
            Balance::Roundrobin => "roundrobin",
            Balance::StaticRr => "static-rr",
            Balance::Leastconn => "leastconn",
        }
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the flow hash of a maglev VIP covers (Katran's hash flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum HashFields {
    /// Addresses, ports and protocol: each flow on its own.
    FiveTuple,
    /// All but the client's port: a client's connections go to one real.
    NoSourcePort,
    /// The destination port only: every client of a port to one real.
    DestinationPort,
}

impl HashFields {
    pub fn code(self) -> u8 {
        match self {
            HashFields::FiveTuple => HASH_FIVE_TUPLE,
            HashFields::NoSourcePort => HASH_NO_SOURCE_PORT,
            HashFields::DestinationPort => HASH_DESTINATION_PORT,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HashFields::FiveTuple => "five-tuple",
            HashFields::NoSourcePort => "no-source-port",
            HashFields::DestinationPort => "destination-port",
        }
    }
}

impl fmt::Display for HashFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A real server as operators name it: `ADDRESS` or `ADDRESS:PORT` (`[2001:2::11]:8080`),
/// then options: `,weight=N` (0 to 256, default 1; 0 drains: established flows stay, no new
/// ones come) and `,state=ready|drain|maint`. Without a port, the real serves the VIP's port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RealSpec {
    pub addr: IpAddr,
    pub port: Option<u16>,
    pub weight: u16,
    pub state: RealState,
}

/// What the operator wants of a real, as HAProxy's `set server state`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RealState {
    /// Takes new flows (when its checks pass).
    #[default]
    Ready,
    /// Keeps its established flows, takes no new ones: for taking it out gently.
    Drain,
    /// Out: no new flows, and its established flows move to the other reals.
    Maint,
}

impl RealState {
    pub fn name(self) -> &'static str {
        match self {
            RealState::Ready => "ready",
            RealState::Drain => "drain",
            RealState::Maint => "maint",
        }
    }
}

impl fmt::Display for RealState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RealState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ready" => Ok(RealState::Ready),
            "drain" => Ok(RealState::Drain),
            "maint" => Ok(RealState::Maint),
            other => Err(format!(
                "`{other}` is not a real state: ready, drain or maint"
            )),
        }
    }
}

/// The largest weight: as HAProxy's.
pub const MAX_WEIGHT: u16 = 256;

impl RealSpec {
    /// `addr` on the VIP's port, weight 1.
    pub fn new(addr: IpAddr) -> Self {
        Self {
            addr,
            port: None,
            weight: 1,
            state: RealState::Ready,
        }
    }

    /// How Maglev and logs name the real: its address and port, the same on every LB.
    pub fn endpoint(&self, vip_port: u16) -> String {
        let port = self.port.unwrap_or(vip_port);
        match self.addr {
            IpAddr::V4(a) => format!("{a}:{port}"),
            IpAddr::V6(a) => format!("[{a}]:{port}"),
        }
    }
}

impl fmt::Display for RealSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr, self.port) {
            (a, None) => write!(f, "{a}")?,
            (IpAddr::V4(a), Some(p)) => write!(f, "{a}:{p}")?,
            (IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}")?,
        }
        if self.weight != 1 {
            write!(f, ",weight={}", self.weight)?;
        }
        if self.state != RealState::Ready {
            write!(f, ",state={}", self.state)?;
        }
        Ok(())
    }
}

/// Why a real string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RealSpecError {
    #[error("`{0}`: expected ADDRESS or ADDRESS:PORT, then options, e.g. 198.18.0.11, 198.18.0.11:8080,weight=2 or [2001:2::11]:8080")]
    Shape(String),
    #[error("`{0}`: the port must be a number from 1 to 65535")]
    Port(String),
    #[error("`{0}`: the weight must be a number from 0 (drain) to 256")]
    Weight(String),
    #[error(
        "`{0}`: unknown option `{1}`; a real takes `,weight=N` and `,state=ready|drain|maint`"
    )]
    Option(String, String),
    #[error("`{0}`: the state must be ready, drain or maint")]
    State(String),
}

impl FromStr for RealSpec {
    type Err = RealSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split(',');
        let mut real = parse_address(parts.next().unwrap_or_default(), text)?;
        for option in parts {
            match option.trim().split_once('=') {
                Some(("weight", w)) => {
                    real.weight = match w.trim().parse::<u16>() {
                        Ok(w) if w <= MAX_WEIGHT => w,
                        _ => return Err(RealSpecError::Weight(text.into())),
                    };
                }
                Some(("state", st)) => {
                    real.state = st
                        .trim()
                        .parse()
                        .map_err(|_| RealSpecError::State(text.into()))?;
                }
                _ => return Err(RealSpecError::Option(text.into(), option.into())),
            }
        }
        Ok(real)
    }
}

/// `ADDRESS` or `ADDRESS:PORT`: `s`, the first part of the real `text`.
fn parse_address(s: &str, text: &str) -> Result<RealSpec, RealSpecError> {
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(RealSpec::new(addr));
    }
    let (addr, port) = s
        .rsplit_once(':')
        .ok_or_else(|| RealSpecError::Shape(text.into()))?;
    let addr = match addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().map(IpAddr::V6),
        None => addr.parse::<std::net::Ipv4Addr>().map(IpAddr::V4),
    }
    .map_err(|_| RealSpecError::Shape(text.into()))?;
    let port = match port.parse::<u16>() {
        Ok(p) if p != 0 => p,
        _ => return Err(RealSpecError::Port(text.into())),
    };
    Ok(RealSpec {
        port: Some(port),
        ..RealSpec::new(addr)
    })
}

/// An inclusive port range, `MIN-MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl PortRange {
    /// Where one-arm takes source ports by default: below Linux's ephemeral range
    /// (32768-60999), so the LB host's own connections from a pool address never collide
    /// with the flows it translates.
    pub const SNAT_DEFAULT: Self = Self {
        min: 1024,
        max: 32767,
    };

    /// How many ports the range holds (never zero: MIN <= MAX).
    pub fn count(self) -> u32 {
        u32::from(self.max) - u32::from(self.min) + 1
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}`: expected a port range MIN-MAX with 1 <= MIN <= MAX <= 65535, e.g. 1024-32767")]
pub struct PortRangeError(String);

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PortRangeError(s.into());
        let (min, max) = s.split_once('-').ok_or_else(err)?;
        let min: u16 = min.trim().parse().map_err(|_| err())?;
        let max: u16 = max.trim().parse().map_err(|_| err())?;
        if min == 0 || min > max {
            return Err(err());
        }
        Ok(PortRange { min, max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6() {
        let v: VipSpec = "198.18.100.10:80/tcp".parse().unwrap();
        assert_eq!(
            (v.addr.to_string(), v.port, v.proto),
            ("198.18.100.10".into(), 80, Proto::Tcp)
        );
        assert_eq!(v.to_string(), "198.18.100.10:80/tcp");
        let v: VipSpec = "[2001:2::10]:53/UDP".parse().unwrap();
        assert_eq!(
            (v.addr.to_string(), v.port, v.proto),
            ("2001:2::10".into(), 53, Proto::Udp)
        );
        assert_eq!(v.to_string(), "[2001:2::10]:53/udp");
    }

    #[test]
    fn key_is_network_order() {
        let v: VipSpec = "198.18.100.10:8080/udp".parse().unwrap();
        let k = v.key();
        assert_eq!(k.addr_bytes()[..4], [198, 18, 100, 10]);
        assert_eq!(k.port(), 8080);
        assert_eq!((k.proto(), k.family()), (17, 4));
        assert_eq!(VipSpec::from_key(&k), Some(v));
        let v6: VipSpec = "[2001:2::10]:53/udp".parse().unwrap();
        assert_eq!(VipSpec::from_key(&v6.key()), Some(v6));
    }

    #[test]
    fn reals_with_and_without_ports() {
        let r: RealSpec = "198.18.0.11".parse().unwrap();
        assert_eq!((r.addr.to_string(), r.port), ("198.18.0.11".into(), None));
        let r: RealSpec = "198.18.0.11:8080".parse().unwrap();
        assert_eq!(r.port, Some(8080));
        assert_eq!(r.to_string(), "198.18.0.11:8080");
        let r: RealSpec = "[2001:2::11]:53".parse().unwrap();
        assert_eq!(
            (r.addr.to_string(), r.port),
            ("2001:2::11".into(), Some(53))
        );
        assert_eq!(r.to_string(), "[2001:2::11]:53");
        let r: RealSpec = "2001:2::11".parse().unwrap();
        assert_eq!(r.port, None);
        for bad in ["198.18.0.11:0", "198.18.0.11:99999", "198.18.0.11:x"] {
            assert!(
                matches!(bad.parse::<RealSpec>(), Err(RealSpecError::Port(_))),
                "{bad}"
            );
        }
        for bad in ["nope", "198.18.0.300:80", "2001:2::11]:80"] {
            assert!(
                matches!(bad.parse::<RealSpec>(), Err(RealSpecError::Shape(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn port_ranges() {
        let r: PortRange = "1024-2047".parse().unwrap();
        assert_eq!((r.min, r.max, r.count()), (1024, 2047, 1024));
        assert_eq!("7-7".parse::<PortRange>().unwrap().count(), 1);
        for bad in ["0-10", "10-9", "1024", "a-b", "1-70000"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mode_names_are_what_clap_accepts() {
        use clap::ValueEnum;
        for m in Mode::value_variants() {
            assert_eq!(m.to_possible_value().unwrap().get_name(), m.name(), "{m:?}");
        }
    }

    #[test]
    fn rejects_with_a_specific_error() {
        let err = |s: &str| s.parse::<VipSpec>().unwrap_err();
        assert!(matches!(err("198.18.100.10:80"), VipSpecError::Shape(_)));
        assert!(matches!(err("198.18.100.10/tcp"), VipSpecError::Shape(_)));
        assert!(matches!(
            err("198.18.100.10:80/sctp"),
            VipSpecError::Proto(_)
        ));
        assert!(matches!(err("198.18.100.10:0/tcp"), VipSpecError::Port(_)));
        assert!(matches!(
            err("198.18.100.10:70000/tcp"),
            VipSpecError::Port(_)
        ));
        assert!(matches!(
            err("198.18.100.300:80/tcp"),
            VipSpecError::Addr(_)
        ));
        assert!(matches!(err("2001:2::10:80/tcp"), VipSpecError::Addr(_)));
        assert!(err("x:80/sctp").to_string().contains("tcp or udp"));
    }
}
