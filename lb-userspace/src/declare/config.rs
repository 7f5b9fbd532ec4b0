//! The configuration file (TOML): one `[[vip]]` table per service. See `lbctl.example.toml`.
//! Every error names the file, the line and the field, and says what is wrong.

use std::{fmt, net::IpAddr, ops::Range, path::Path, str::FromStr};

use lb_common::Timeouts;
use serde::{de::Error as _, Deserialize, Deserializer};
use toml::Spanned;

use crate::{
    declare::{
        service::{self, Service, VipSettings},
        spec::{Balance, HashFields, Mode, PortRange, RealSpec, VipSpec},
    },
    health::check::Check,
};

/// Why a configuration file was rejected.
#[derive(Debug)]
pub struct ConfigError {
    /// The file, and the line and column (1-based) where the problem is, when known.
    pub path: String,
    pub line: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Settings every VIP has unless its table says otherwise.
    #[serde(default)]
    defaults: Defaults,
    #[serde(default, rename = "vip")]
    vips: Vec<VipTable>,
}

/// Declares a table with the settings a VIP can have, and `extra` fields before them: the
/// `[defaults]` table and each `[[vip]]` take the same settings by the same names.
macro_rules! with_vip_settings {
    ($(#[$meta:meta])* struct $name:ident { $($extra:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($extra: $ty,)*
            #[serde(default)]
            mode: Option<FromText<Named<Mode>>>,
            #[serde(default)]
            balance: Option<FromText<Named<Balance>>>,
            #[serde(default)]
            hash: Option<FromText<Named<HashFields>>>,
            #[serde(default)]
            maglev_size: Option<u32>,
            #[serde(default)]
            snat_pool: Option<Vec<FromText<IpAddr>>>,
            #[serde(default)]
            snat_ports: Option<FromText<PortRange>>,
            #[serde(default)]
            tunnel_source: Option<FromText<IpAddr>>,
            #[serde(default)]
            tcp_timeout: Option<u32>,
            #[serde(default)]
            tcp_fin_timeout: Option<u32>,
            #[serde(default)]
            udp_timeout: Option<u32>,
            #[serde(default)]
            check: Option<FromText<CheckOrNone>>,
            #[serde(default)]
            when_empty: Option<FromText<WhenEmpty>>,
            #[serde(default)]
            quorum: Option<u16>,
            #[serde(default)]
            flood_guard: Option<u32>,
        }
    };
}

with_vip_settings!(
    /// `[defaults]`: what a `[[vip]]` that does not say gets.
    #[derive(Default)]
    struct Defaults {}
);

with_vip_settings!(
    struct VipTable {
        address: Spanned<FromText<VipSpec>>,
        reals: Vec<FromText<RealSpec>>,
    }
);

impl VipTable {
    /// This VIP's settings: its own, else the defaults', else lbctl's.
    fn settings(self, d: &Defaults) -> (VipSpec, VipSettings, Vec<RealSpec>) {
        let built_in = Timeouts::DEFAULT;
        let settings = VipSettings {
            mode: self.mode.or(d.mode).map_or(Mode::Dsr, |m| m.0 .0),
            balance: self
                .balance
                .or(d.balance)
                .map_or(Balance::Maglev, |b| b.0 .0),
            hash: self
                .hash
                .or(d.hash)
                .map_or(HashFields::FiveTuple, |h| h.0 .0),
            maglev_size: self.maglev_size.or(d.maglev_size),
            timeouts: Timeouts {
                tcp: self.tcp_timeout.or(d.tcp_timeout).unwrap_or(built_in.tcp),
                tcp_fin: self
                    .tcp_fin_timeout
                    .or(d.tcp_fin_timeout)
                    .unwrap_or(built_in.tcp_fin),
                udp: self.udp_timeout.or(d.udp_timeout).unwrap_or(built_in.udp),
            },
            snat_pool: self
                .snat_pool
                .or_else(|| d.snat_pool.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|a| a.0)
                .collect(),
            snat_ports: self
                .snat_ports
                .or(d.snat_ports)
                .map_or(PortRange::SNAT_DEFAULT, |p| p.0),
            tunnel_source: self.tunnel_source.or(d.tunnel_source).map(|a| a.0),
            check: self.check.or_else(|| d.check.clone()).and_then(|c| c.0 .0),
            pass_when_empty: self.when_empty.or(d.when_empty).is_some_and(|w| w.0 .0),
            quorum: self.quorum.or(d.quorum).unwrap_or(1),
            flood_guard: self.flood_guard.or(d.flood_guard).unwrap_or(0),
        };
        let reals = self.reals.into_iter().map(|r| r.0).collect();
        (self.address.into_inner().0, settings, reals)
    }
}

/// A check, or `none`: a VIP's way out of a default check.
#[derive(Clone)]
struct CheckOrNone(Option<Check>);

impl FromStr for CheckOrNone {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(CheckOrNone(None)),
            _ => s
                .parse()
                .map(|c| CheckOrNone(Some(c)))
                .map_err(|e| format!("{e}")),
        }
    }
}

/// What a VIP does with new flows when no real is up.
#[derive(Clone, Copy)]
struct WhenEmpty(bool);

impl FromStr for WhenEmpty {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "drop" => Ok(WhenEmpty(false)),
            "pass" => Ok(WhenEmpty(true)),
            _ => Err(format!(
                "`{s}`: must be drop (the default) or pass (to the LB's own stack)"
            )),
        }
    }
}

/// A value written as a string and parsed with `FromStr`; its error becomes the file's.
#[derive(Clone, Copy)]
struct FromText<T>(T);

impl<'de, T: FromStr> Deserialize<'de> for FromText<T>
where
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(FromText).map_err(D::Error::custom)
    }
}

/// A value of a command-line enum (mode, balance, hash), by the name the command line takes.
#[derive(Clone, Copy)]
struct Named<T>(T);

impl<T: clap::ValueEnum> FromStr for Named<T> {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        T::from_str(s, false).map(Named).map_err(|_| {
            let names: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
                .collect();
            format!("`{s}`: must be one of {}", names.join(", "))
        })
    }
}

/// Reads and checks `path`. `cpus`: see [`service::validate`].
pub fn load(path: &Path, cpus: u32) -> Result<Vec<Service>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.display().to_string(),
        line: None,
        message: format!("cannot read it: {e}"),
    })?;
    parse(&text, &path.display().to_string(), cpus)
}

/// Parses and checks the text of a configuration file named `path`.
pub fn parse(text: &str, path: &str, cpus: u32) -> Result<Vec<Service>, ConfigError> {
    let at = |span: Option<Range<usize>>, message: String| ConfigError {
        path: path.to_owned(),
        line: span.map(|s| line_col(text, s.start)),
        message,
    };
    let file: File = toml::from_str(text).map_err(|e| at(e.span(), e.message().to_owned()))?;
    let mut spans = Vec::with_capacity(file.vips.len());
    let mut services = Vec::with_capacity(file.vips.len());
    for v in file.vips {
        spans.push(v.address.span());
        let (vip, settings, reals) = v.settings(&file.defaults);
        services.push(Service {
            vip,
            settings,
            reals,
        });
    }
    if services.is_empty() {
        return Err(at(
            None,
            "no [[vip]] tables: nothing to serve (see lbctl.example.toml)".into(),
        ));
    }
    service::validate(&services, cpus).map_err(|e| {
        at(
            spans.get(e.index).cloned(),
            format!("in the [[vip]] of {}: {}: {}", e.vip, e.field, e.problem),
        )
    })?;
    Ok(services)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../lbctl.example.toml");

    #[test]
    fn the_example_in_the_repository_is_valid() {
        let services = parse(EXAMPLE, "lbctl.example.toml", 2).unwrap();
        let modes: Vec<Mode> = services.iter().map(|s| s.settings.mode).collect();
        assert_eq!(
            modes,
            [
                Mode::Dsr,
                Mode::Tunnel,
                Mode::Nat,
                Mode::Router,
                Mode::OneArm
            ]
        );
    }

    #[test]
    fn defaults_apply_to_every_vip_that_does_not_say_otherwise() {
        let text = r#"
[defaults]
mode = "nat"
balance = "roundrobin"
check = "tcp,inter=1s"
udp_timeout = 60

[[vip]]
address = "198.18.100.10:80/tcp"
reals = ["198.18.0.11", "198.18.0.12,weight=2,state=drain"]

[[vip]]
address = "198.18.100.11:53/udp"
mode = "dsr"
check = "udp,payload=q"
reals = ["198.18.0.11,state=maint"]

[[vip]]
address = "198.18.100.12:80/tcp"
check = "none"
reals = ["198.18.0.11"]
"#;
        let s = parse(text, "lb.toml", 2).unwrap();
        assert_eq!(s[0].settings.mode, Mode::Nat);
        assert_eq!(s[0].settings.balance, Balance::Roundrobin);
        assert_eq!(s[0].settings.check, Some("tcp,inter=1s".parse().unwrap()));
        assert_eq!(s[0].settings.timeouts.udp, 60);
        assert_eq!(s[0].reals[1].state, crate::declare::spec::RealState::Drain);
        assert_eq!(s[1].settings.mode, Mode::Dsr);
        assert_eq!(s[1].settings.balance, Balance::Roundrobin);
        assert_eq!(s[1].settings.check, Some("udp,payload=q".parse().unwrap()));
        assert_eq!(
            s[2].settings.check, None,
            "check = \"none\" opts out of the default"
        );
        assert_eq!(s[1].reals[0].state, crate::declare::spec::RealState::Maint);

        let e = error("[defaults]\nmode = \"nat\"\nreals = []\n[[vip]]\naddress = \"198.18.100.10:80/tcp\"\nreals = [\"198.18.0.11\"]\n");
        assert!(e.starts_with("lb.toml:3:") && e.contains("reals"), "{e}");
        let e = error("[[vip]]\naddress = \"198.18.100.10:80/tcp\"\nreals = [\"198.18.0.11\"]\ntunnel_source = \"198.18.0.5\"\n");
        assert!(
            e.starts_with("lb.toml:2:") && e.contains("is for tunnel VIPs"),
            "{e}"
        );
        let e = error(
            "[[vip]]\naddress = \"198.18.100.10:80/tcp\"\nreals = [\"198.18.0.11,state=down\"]\n",
        );
        assert!(
            e.starts_with("lb.toml:3:") && e.contains("ready, drain or maint"),
            "{e}"
        );
    }

    fn error(text: &str) -> String {
        parse(text, "lb.toml", 2).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let e = error("[[vip]]\naddress = \"198.18.100.10:80\"\nreals = [\"198.18.0.11\"]\n");
        assert!(e.starts_with("lb.toml:2:"), "{e}");
        assert!(e.contains("ADDRESS:PORT/PROTO"), "{e}");

        let e = error("[[vip]]\naddress = \"198.18.100.10:80/tcp\"\nmode = \"bridge\"\nreals = [\"198.18.0.11\"]\n");
        assert!(e.starts_with("lb.toml:3:"), "{e}");
        assert!(
            e.contains("one of dsr, tunnel, nat, router, one-arm"),
            "{e}"
        );

        let e = error(
            "[[vip]]\naddress = \"198.18.100.10:80/tcp\"\nreals = [\"198.18.0.11\"]\nweight = 3\n",
        );
        assert!(e.starts_with("lb.toml:4:") && e.contains("weight"), "{e}");

        let e = error("\n[[vip]]\naddress = \"198.18.100.10:80/tcp\"\nmode = \"dsr\"\nreals = [\"198.18.0.11:8080\"]\n");
        assert!(e.starts_with("lb.toml:3:"), "{e}");
        assert!(
            e.contains("reals") && e.contains("cannot translate ports"),
            "{e}"
        );

        let e = error("");
        assert!(e.contains("no [[vip]]"), "{e}");

        let e = error("[[vip]]\naddress = \"198.18.100.10:80/tcp\"\nmode = \"one-arm\"\nreals = [\"198.18.0.11\"]\nsnat_ports = \"2000\"\n");
        assert!(e.starts_with("lb.toml:5:") && e.contains("MIN-MAX"), "{e}");
    }
}
