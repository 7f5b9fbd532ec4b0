//! A service as configured — a VIP, how it is served, by which reals — and the checks that
//! need nothing but the configuration, run before anything is touched.

use std::{collections::BTreeSet, fmt, net::IpAddr};

use lb_common::{Timeouts, MAX_LEASTCONN_REALS, MAX_POOL_ADDRS, MAX_VIPS, RING_SIZE};

use crate::{
    declare::spec::{Balance, HashFields, Mode, PortRange, RealSpec, VipSpec},
    health::check::Check,
    tables::maglev,
};

/// How a VIP is served.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VipSettings {
    pub mode: Mode,
    pub balance: Balance,
    /// maglev: what the flow hash covers.
    pub hash: HashFields,
    /// maglev and source: the table's size, a prime; `None`: chosen from the VIP's configured
    /// reals (`maglev::size_for`).
    pub maglev_size: Option<u32>,
    #[serde(with = "crate::declare::text_serde::timeouts")]
    pub timeouts: Timeouts,
    /// One-arm: the LB-owned addresses flows get as their source. Empty: the IPv4 address of
    /// the interface the reals are reached through.
    pub snat_pool: Vec<IpAddr>,
    /// One-arm: the source ports flows get.
    pub snat_ports: PortRange,
    /// Tunnel: the LB-owned IPv4 address tunnels leave from. `None`: the address of the
    /// interface the real is reached through.
    pub tunnel_source: Option<IpAddr>,
    /// How the reals' health is checked; `None`: not checked, always up.
    pub check: Option<Check>,
    /// With no real up: pass new flows to the LB's own stack (which answers them as its
    /// own: a RST, a port unreachable) instead of dropping them.
    pub pass_when_empty: bool,
    /// How many of its reals must take new flows for the VIP to count as served: below it,
    /// `lbctl status --check` fails (keepalived gives up MASTER) and, with BGP, the VIP is
    /// withdrawn. At least 1, at most the number of reals.
    #[serde(default = "one")]
    pub quorum: u16,
    /// dsr and tunnel: new flows a second per CPU above which new flows are forwarded by the
    /// ring without a flow entry, so a flood of new tuples does not evict established flows
    /// (Katran's LRU bypass). 0: no guard.
    #[serde(default)]
    pub flood_guard: u32,
}

fn one() -> u16 {
    1
}

impl VipSettings {
    /// `mode` with the default timeouts and SNAT ports, and no pool addresses.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            balance: Balance::Maglev,
            hash: HashFields::FiveTuple,
            maglev_size: None,
            timeouts: Timeouts::DEFAULT,
            snat_pool: Vec::new(),
            snat_ports: PortRange::SNAT_DEFAULT,
            tunnel_source: None,
            check: None,
            pass_when_empty: false,
            quorum: 1,
            flood_guard: 0,
        }
    }

    /// The Maglev table size of this VIP with `reals` configured reals: its own, else the one
    /// `maglev::size_for` chooses.
    pub fn maglev_size_for(&self, reals: usize) -> u32 {
        self.maglev_size.unwrap_or_else(|| maglev::size_for(reals))
    }
}

/// One VIP and its reals.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Service {
    pub vip: VipSpec,
    pub settings: VipSettings,
    pub reals: Vec<RealSpec>,
}

/// A configuration that cannot be served, and which field of which VIP says so.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid {
    /// Index of the service in the list checked.
    pub index: usize,
    pub vip: VipSpec,
    /// The field at fault, as the config file names it.
    pub field: &'static str,
    pub problem: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VIP {} ({}): {}", self.vip, self.field, self.problem)
    }
}

impl std::error::Error for Invalid {}

/// Checks what can be checked without the kernel: families, port translation, SNAT pools,
/// timeouts, duplicates. `cpus` is the number of possible CPUs: each gets its own slice of a
/// one-arm VIP's port range.
pub fn validate(services: &[Service], cpus: u32) -> Result<(), Invalid> {
    let mut vips = BTreeSet::new();
    for (index, s) in services.iter().enumerate() {
        let fail = |field, problem: String| Invalid {
            index,
            vip: s.vip,
            field,
            problem,
        };
        if !vips.insert(s.vip) {
            return Err(fail("address", "listed twice; list each VIP once".into()));
        }
        if index >= MAX_VIPS as usize {
            return Err(fail(
                "address",
                format!("more than the {MAX_VIPS} VIPs the datapath holds"),
            ));
        }
        let mode = s.settings.mode;
        if s.vip.addr.is_ipv6() && mode != Mode::Dsr {
            return Err(fail(
                "mode",
                format!("{mode} supports IPv4 VIPs for now; use dsr for IPv6"),
            ));
        }
        if s.reals.is_empty() {
            return Err(fail("reals", "no reals: list at least one".into()));
        }
        let quorum = usize::from(s.settings.quorum);
        if quorum == 0 || quorum > s.reals.len() {
            return Err(fail(
                "quorum",
                format!(
                    "{quorum} of {} reals: give 1 to {} (how many reals up make the VIP served)",
                    s.reals.len(),
                    s.reals.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for r in &s.reals {
            if r.addr.is_ipv4() != s.vip.addr.is_ipv4() {
                return Err(fail(
                    "reals",
                    format!("real {r} is of another IP family than the VIP; use reals of the VIP's family"),
                ));
            }
            // Two processes on one host, on two ports, are two reals; the same port twice is
            // one real listed twice.
            if !seen.insert((r.addr, r.port.unwrap_or(s.vip.port))) {
                return Err(fail(
                    "reals",
                    format!("real {r} is listed twice; list each real once"),
                ));
            }
            if let Some(port) = r.port.filter(|p| *p != s.vip.port) {
                if !mode.is_stateful() {
                    return Err(fail(
                        "reals",
                        format!("real {r} listens on port {port}, but {mode} cannot translate ports (the real answers the client directly, from the VIP's port): use nat, router or one-arm, or port {}", s.vip.port),
                    ));
                }
            }
        }
        if s.settings.flood_guard != 0 && !matches!(mode, Mode::Dsr | Mode::Tunnel) {
            return Err(fail(
                "flood_guard",
                format!("is for dsr and tunnel VIPs; a {mode} flow needs its entries to translate its replies, so its new flows cannot go without them"),
            ));
        }
        if let Some(source) = s.settings.tunnel_source {
            if mode != Mode::Tunnel {
                return Err(fail(
                    "tunnel_source",
                    format!("is for tunnel VIPs; this one is {mode}"),
                ));
            }
            if !source.is_ipv4() {
                return Err(fail(
                    "tunnel_source",
                    format!("{source}: tunnels leave from an IPv4 address"),
                ));
            }
        }
        if s.settings.check.as_ref().is_some_and(|c| c.via_vip) {
            if !matches!(mode, Mode::Dsr | Mode::Tunnel) {
                return Err(fail("check", format!("via=vip checks dsr and tunnel VIPs, whose reals hold the VIP; {mode} reals are checked at their own address (via=real)")));
            }
            if s.vip.addr.is_ipv6() {
                return Err(fail(
                    "check",
                    "via=vip checks IPv4 VIPs for now; use via=real".into(),
                ));
            }
        }
        check_balance(s).map_err(|(field, problem)| fail(field, problem))?;
        let t = s.settings.timeouts;
        for (field, v) in [
            ("tcp_timeout", t.tcp),
            ("tcp_fin_timeout", t.tcp_fin),
            ("udp_timeout", t.udp),
        ] {
            if v == 0 {
                return Err(fail(
                    field,
                    "a timeout of 0 s would expire every flow at once; give seconds >= 1".into(),
                ));
            }
        }
        if mode != Mode::OneArm {
            if !s.settings.snat_pool.is_empty() {
                return Err(fail(
                    "snat_pool",
                    format!(
                        "only one-arm VIPs translate sources; {mode} keeps the client's address"
                    ),
                ));
            }
            continue;
        }
        let pool = &s.settings.snat_pool;
        if pool.len() > MAX_POOL_ADDRS {
            return Err(fail(
                "snat_pool",
                format!("{} addresses; at most {MAX_POOL_ADDRS}", pool.len()),
            ));
        }
        if let Some(a) = pool.iter().find(|a| a.is_ipv4() != s.vip.addr.is_ipv4()) {
            return Err(fail(
                "snat_pool",
                format!("{a} is of another IP family than the VIP"),
            ));
        }
        if let Some(a) = pool
            .iter()
            .find(|a| services.iter().any(|v| v.vip.addr == **a))
        {
            return Err(fail(
                "snat_pool",
                format!("{a} is a VIP address: replies to it would be taken for new requests; use an address of its own"),
            ));
        }
        if pool.iter().collect::<BTreeSet<_>>().len() != pool.len() {
            return Err(fail("snat_pool", "an address is listed twice".into()));
        }
        let ports = s.settings.snat_ports;
        if ports.count() < cpus {
            return Err(fail(
                "snat_ports",
                format!("{ports} has {} ports, fewer than the {cpus} CPUs that each allocate from their own share: widen it", ports.count()),
            ));
        }
    }
    Ok(())
}

/// What the scheduler of a service needs of its reals and settings.
fn check_balance(s: &Service) -> Result<(), (&'static str, String)> {
    let set = &s.settings;
    let consistent = matches!(set.balance, Balance::Maglev | Balance::Source);
    if set.hash != HashFields::FiveTuple && set.balance != Balance::Maglev {
        return Err((
            "hash",
            format!(
                "chooses what maglev hashes; balance {} does not hash flows",
                set.balance
            ),
        ));
    }
    if consistent {
        let size = set.maglev_size_for(s.reals.len());
        if size > RING_SIZE {
            return Err((
                "maglev_size",
                format!("{size} is more than the {RING_SIZE} slots a VIP's table has"),
            ));
        }
        maglev::check_size(size, s.reals.len()).map_err(|e| ("maglev_size", e.to_string()))?;
        // A real's share of the table is its share of the weights: at least one slot each.
        let total: u64 = s.reals.iter().map(|r| u64::from(r.weight)).sum();
        if let Some(light) = s
            .reals
            .iter()
            .filter(|r| r.weight > 0)
            .min_by_key(|r| r.weight)
        {
            if u64::from(size) * u64::from(light.weight) < total {
                return Err((
                    "maglev_size",
                    format!(
                        "{size} slots{} would give real {light} no slot at all (its weight against the total {total}): set maglev_size, a prime, to at least {}",
                        if set.maglev_size.is_none() { " (the size chosen for its reals)" } else { "" },
                        total.div_ceil(u64::from(light.weight))
                    ),
                ));
            }
        }
    } else if set.maglev_size.is_some() {
        return Err((
            "maglev_size",
            format!("sizes a maglev table; balance {} has none", set.balance),
        ));
    }
    match set.balance {
        Balance::Leastconn if s.reals.len() > MAX_LEASTCONN_REALS as usize => Err((
            "reals",
            format!(
                "{} reals; leastconn weighs at most {MAX_LEASTCONN_REALS} against each other",
                s.reals.len()
            ),
        )),
        Balance::Roundrobin | Balance::StaticRr => {
            let total: u32 = s.reals.iter().map(|r| u32::from(r.weight)).sum();
            if total > RING_SIZE {
                return Err((
                    "reals",
                    format!("the weights add up to {total}; a round-robin cycle holds at most {RING_SIZE}"),
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(vip: &str, mode: Mode, reals: &[&str]) -> Service {
        Service {
            vip: vip.parse().unwrap(),
            settings: VipSettings::new(mode),
            reals: reals.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    fn problem(s: Service) -> Invalid {
        validate(&[s], 4).unwrap_err()
    }

    #[test]
    fn a_service_per_mode_is_valid() {
        let mut one_arm = service("198.18.100.14:80/tcp", Mode::OneArm, &["198.18.0.11:8080"]);
        one_arm.settings.snat_pool = vec!["198.18.0.201".parse().unwrap()];
        let all = vec![
            service(
                "198.18.100.10:80/tcp",
                Mode::Dsr,
                &["198.18.0.11", "198.18.0.12:80"],
            ),
            service("198.18.100.11:80/tcp", Mode::Tunnel, &["198.18.1.11"]),
            service("198.18.100.12:80/tcp", Mode::Nat, &["198.18.0.11:8080"]),
            service("198.18.100.13:53/udp", Mode::Router, &["198.18.1.11:5353"]),
            one_arm,
            service("[2001:2::10]:80/tcp", Mode::Dsr, &["2001:2::11"]),
        ];
        validate(&all, 4).unwrap();
    }

    #[test]
    fn a_flood_guard_only_for_dsr_and_tunnel() {
        for mode in [Mode::Dsr, Mode::Tunnel] {
            let mut s = service("198.18.100.10:80/tcp", mode, &["198.18.0.11"]);
            s.settings.flood_guard = 1000;
            validate(&[s], 4).unwrap();
        }
        for mode in [Mode::Nat, Mode::Router] {
            let mut s = service("198.18.100.10:80/tcp", mode, &["198.18.0.11"]);
            s.settings.flood_guard = 1000;
            let e = problem(s);
            assert_eq!(e.field, "flood_guard");
            assert!(e.problem.contains("dsr and tunnel"), "{e}");
        }
    }

    #[test]
    fn port_translation_only_where_the_lb_sees_replies() {
        for mode in [Mode::Dsr, Mode::Tunnel] {
            let e = problem(service("198.18.100.10:80/tcp", mode, &["198.18.0.11:8080"]));
            assert_eq!(e.field, "reals");
            assert!(e.problem.contains("cannot translate ports"), "{e}");
        }
    }

    #[test]
    fn a_quorum_is_between_one_and_the_number_of_reals() {
        let reals = ["198.18.0.11", "198.18.0.12"];
        let mut s = service("198.18.100.10:80/tcp", Mode::Dsr, &reals);
        for ok in [1, 2] {
            s.settings.quorum = ok;
            assert!(validate(std::slice::from_ref(&s), 2).is_ok(), "quorum {ok}");
        }
        for bad in [0, 3] {
            s.settings.quorum = bad;
            let e = problem(s.clone());
            assert_eq!(e.field, "quorum");
            assert!(e.problem.contains("give 1 to 2"), "{}", e.problem);
        }
    }

    #[test]
    fn each_mistake_names_its_field() {
        let e = problem(service("198.18.100.10:80/tcp", Mode::Nat, &["2001:2::11"]));
        assert_eq!(e.field, "reals");
        let e = problem(service(
            "[2001:2::10]:80/tcp",
            Mode::OneArm,
            &["2001:2::11"],
        ));
        assert_eq!(e.field, "mode");
        let e = problem(service("198.18.100.10:80/tcp", Mode::Nat, &[]));
        assert_eq!(e.field, "reals");
        let e = problem(service(
            "198.18.100.10:80/tcp",
            Mode::Nat,
            &["198.18.0.11", "198.18.0.11:80"],
        ));
        assert!(e.problem.contains("listed twice"), "{e}");
        validate(
            &[service(
                "198.18.100.10:80/tcp",
                Mode::Nat,
                &["198.18.0.11:8080", "198.18.0.11:8081"],
            )],
            1,
        )
        .unwrap();

        let mut s = service("198.18.100.10:80/tcp", Mode::Nat, &["198.18.0.11"]);
        s.settings.snat_pool = vec!["198.18.0.201".parse().unwrap()];
        assert_eq!(problem(s).field, "snat_pool");

        let mut s = service("198.18.100.10:80/tcp", Mode::OneArm, &["198.18.0.11"]);
        s.settings.snat_ports = "2000-2002".parse().unwrap();
        let e = problem(s);
        assert_eq!(e.field, "snat_ports");
        assert!(e.problem.contains("4 CPUs"), "{e}");

        let mut s = service("198.18.100.10:80/tcp", Mode::OneArm, &["198.18.0.11"]);
        s.settings.snat_pool = (1..=9)
            .map(|i| IpAddr::from([198, 18, 0, 200 + i]))
            .collect();
        assert_eq!(problem(s).field, "snat_pool");

        let mut s = service("198.18.100.10:80/tcp", Mode::OneArm, &["198.18.0.11"]);
        s.settings.snat_pool = vec!["198.18.100.10".parse().unwrap()];
        let e = problem(s);
        assert!(e.problem.contains("is a VIP address"), "{e}");

        let mut s = service("198.18.100.10:80/tcp", Mode::Router, &["198.18.0.11"]);
        s.settings.timeouts.udp = 0;
        assert_eq!(problem(s).field, "udp_timeout");

        let mut s = service("198.18.100.10:80/tcp", Mode::Dsr, &["198.18.0.11"]);
        s.settings.maglev_size = Some(65536);
        let e = problem(s);
        assert!(
            e.field == "maglev_size" && e.problem.contains("not a prime"),
            "{e}"
        );
        let mut s = service(
            "198.18.100.10:80/tcp",
            Mode::Dsr,
            &["198.18.0.11", "198.18.0.12,weight=256"],
        );
        s.settings.maglev_size = Some(251);
        let e = problem(s);
        assert!(e.problem.contains("no slot at all"), "{e}");
        let mut s = service("198.18.100.10:80/tcp", Mode::Dsr, &["198.18.0.11"]);
        s.settings.balance = Balance::Roundrobin;
        s.settings.hash = HashFields::NoSourcePort;
        assert_eq!(problem(s).field, "hash");
        let many: Vec<String> = (0..300)
            .map(|i| format!("198.18.{}.{}", i / 200, i % 200 + 1))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut s = service("198.18.100.10:80/tcp", Mode::Dsr, &refs);
        s.settings.balance = Balance::Leastconn;
        assert!(problem(s).problem.contains("at most 256"));

        let twice = service("198.18.100.10:80/tcp", Mode::Dsr, &["198.18.0.11"]);
        let e = validate(&[twice.clone(), twice], 1).unwrap_err();
        assert_eq!((e.index, e.field), (1, "address"));
    }
}
