//! Where a real is reached from an interface: on the segment, or through a gateway. The MAC
//! the datapath writes is the next hop's, so tunnel-mode reals may sit behind routers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context as _, Result};
use futures::TryStreamExt as _;
use rtnetlink::{
    packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
    RouteMessageBuilder,
};

/// The main routing table's id.
const MAIN_TABLE: u32 = 254;

/// One unicast route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub prefix: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub oif: u32,
    pub metric: u32,
}

/// The first hop towards a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// On the interface's segment: the destination answers ARP/ND itself.
    OnLink(IpAddr),
    /// Behind a router on the segment.
    Via(IpAddr),
}

impl NextHop {
    /// The address whose MAC frames are sent to.
    pub fn addr(self) -> IpAddr {
        match self {
            NextHop::OnLink(a) | NextHop::Via(a) => a,
        }
    }
}

/// The route the kernel would pick for `dst` (longest prefix, then lowest metric): the first
/// hop it gives and the interface it leaves through. `iface` names where the balancer is, for
/// the error.
pub fn route_to(routes: &[Route], dst: IpAddr, iface: &str) -> Result<(NextHop, u32)> {
    let best = routes
        .iter()
        .filter(|r| contains(r.prefix, r.prefix_len, dst))
        .max_by(|a, b| {
            a.prefix_len
                .cmp(&b.prefix_len)
                .then(b.metric.cmp(&a.metric))
        });
    let Some(route) = best else {
        bail!("no route to {dst}: add one, or put the real on {iface}'s segment");
    };
    let hop = match route.gateway {
        Some(gw) => NextHop::Via(gw),
        None => NextHop::OnLink(dst),
    };
    Ok((hop, route.oif))
}

fn contains(prefix: IpAddr, len: u8, addr: IpAddr) -> bool {
    match (prefix, addr) {
        (IpAddr::V4(p), IpAddr::V4(a)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            u32::from(p) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(p), IpAddr::V6(a)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            u128::from(p) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The main table's unicast routes of `v6`'s family, from the kernel.
pub async fn routes(handle: &rtnetlink::Handle, v6: bool) -> Result<Vec<Route>> {
    let request = if v6 {
        RouteMessageBuilder::<Ipv6Addr>::new().build()
    } else {
        RouteMessageBuilder::<Ipv4Addr>::new().build()
    };
    let mut dump = handle.route().get(request).execute();
    let mut out = Vec::new();
    while let Some(msg) = dump
        .try_next()
        .await
        .context("dumping the routing table (needs root?)")?
    {
        if let Some(r) = from_message(&msg, v6) {
            out.push(r);
        }
    }
    Ok(out)
}

fn from_message(msg: &RouteMessage, v6: bool) -> Option<Route> {
    if msg.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(msg.header.table);
    let unspecified = if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let mut r = Route {
        prefix: unspecified,
        prefix_len: msg.header.destination_prefix_length,
        gateway: None,
        oif: 0,
        metric: 0,
    };
    let addr = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(d) => r.prefix = addr(d)?,
            RouteAttribute::Gateway(g) => r.gateway = addr(g),
            RouteAttribute::Oif(i) => r.oif = *i,
            RouteAttribute::Priority(m) => r.metric = *m,
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    (table == MAIN_TABLE).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, len: u8, gateway: Option<&str>, oif: u32, metric: u32) -> Route {
        Route {
            prefix: prefix.parse().unwrap(),
            prefix_len: len,
            gateway: gateway.map(|g| g.parse().unwrap()),
            oif,
            metric,
        }
    }

    fn table() -> Vec<Route> {
        vec![
            route("0.0.0.0", 0, Some("198.18.0.254"), 2, 0),
            route("198.18.0.0", 24, None, 2, 0),
            route("198.18.1.0", 24, Some("198.18.0.253"), 2, 100),
            route("198.18.1.0", 24, Some("198.18.0.252"), 2, 50),
            route("198.18.2.0", 24, None, 3, 0),
            route("2001:2::", 64, None, 2, 256),
        ]
    }

    fn hop(dst: &str) -> Result<NextHop> {
        route_to(&table(), dst.parse().unwrap(), "eth0").map(|(hop, _)| hop)
    }

    #[test]
    fn on_link_beats_the_default_route() {
        assert_eq!(
            hop("198.18.0.11").unwrap(),
            NextHop::OnLink("198.18.0.11".parse().unwrap())
        );
    }

    #[test]
    fn a_routed_real_goes_via_the_gateway_of_the_lowest_metric() {
        assert_eq!(
            hop("198.18.1.11").unwrap(),
            NextHop::Via("198.18.0.252".parse().unwrap())
        );
        assert_eq!(
            hop("198.18.9.9").unwrap(),
            NextHop::Via("198.18.0.254".parse().unwrap())
        );
    }

    #[test]
    fn the_route_names_its_interface_and_no_route_is_an_error() {
        let (_, oif) = route_to(&table(), "198.18.2.5".parse().unwrap(), "eth0").unwrap();
        assert_eq!(oif, 3);
        let only_v6 = vec![route("2001:2::", 64, None, 2, 0)];
        let err = route_to(&only_v6, "198.18.0.1".parse().unwrap(), "eth0").unwrap_err();
        assert!(err.to_string().contains("no route"));
    }

    #[test]
    fn ipv6_prefixes_match_too() {
        assert_eq!(
            hop("2001:2::11").unwrap(),
            NextHop::OnLink("2001:2::11".parse().unwrap())
        );
    }
}
