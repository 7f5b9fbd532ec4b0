//! Parsing of what operators type: `198.18.100.10:80/tcp`, `--mode dsr`, real addresses.

use std::{fmt, net::IpAddr, str::FromStr};

use lb_common::{VipKey, MODE_DSR, MODE_TUNNEL, PROTO_TCP, PROTO_UDP};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Mode {
    /// Direct server return: only the destination MAC is rewritten; reals answer clients directly.
    /// Reals must be on the LB interface's segment.
    Dsr,
    /// IP-in-IP to the real, which strips the outer header (`lbctl decap attach` on the real)
    /// and answers clients directly. Reals may be on the segment or behind routers.
    Tunnel,
}

impl Mode {
    pub fn code(self) -> u8 {
        match self {
            Mode::Dsr => MODE_DSR,
            Mode::Tunnel => MODE_TUNNEL,
        }
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
