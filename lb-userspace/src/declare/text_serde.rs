//! Serde for the types operators write as text (`198.18.100.10:80/tcp`, `tcp,inter=2s`,
//! `maglev`): they cross the admin socket in the same form, so a request reads like the
//! command line that made it and is checked by the same parser.

use std::fmt;

use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

use crate::{
    declare::spec::{Balance, HashFields, Mode, PortRange, RealSpec, VipSpec},
    health::check::Check,
};

/// Implements Serialize/Deserialize through `Display` and a parse function.
macro_rules! as_text {
    ($($ty:ty => $parse:expr),* $(,)?) => {$(
        impl serde::Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                let parse: fn(&str) -> Result<$ty, String> = $parse;
                parse(&text).map_err(D::Error::custom)
            }
        }
    )*};
}

fn parsed<T: std::str::FromStr>(text: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    text.parse().map_err(|e: T::Err| e.to_string())
}

fn named<T: clap::ValueEnum>(text: &str) -> Result<T, String> {
    T::from_str(text, false)
}

as_text! {
    VipSpec => parsed,
    RealSpec => parsed,
    PortRange => parsed,
    Check => parsed,
    Mode => named,
    Balance => named,
    HashFields => named,
}

/// `lb_common::Timeouts` (no serde in the eBPF-shared crate), for `#[serde(with)]`.
pub mod timeouts {
    use lb_common::Timeouts;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Fields {
        tcp: u32,
        tcp_fin: u32,
        udp: u32,
    }

    pub fn serialize<S: Serializer>(t: &Timeouts, s: S) -> Result<S::Ok, S::Error> {
        Fields {
            tcp: t.tcp,
            tcp_fin: t.tcp_fin,
            udp: t.udp,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timeouts, D::Error> {
        let f = Fields::deserialize(d)?;
        Ok(Timeouts {
            tcp: f.tcp,
            tcp_fin: f.tcp_fin,
            udp: f.udp,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::declare::service::{Service, VipSettings};

    #[test]
    fn a_service_crosses_as_json_and_back() {
        let mut settings = VipSettings::new(crate::declare::spec::Mode::OneArm);
        settings.snat_pool = vec!["198.18.0.1".parse().unwrap()];
        settings.check = Some("http,path=/h,inter=1s".parse().unwrap());
        let s = Service {
            vip: "198.18.100.10:80/tcp".parse().unwrap(),
            settings,
            reals: vec!["198.18.0.11:8080,weight=3,state=drain".parse().unwrap()],
        };
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"198.18.100.10:80/tcp\""), "{json}");
        assert!(json.contains("\"one-arm\""), "{json}");
        let back: Service = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn a_bad_value_is_refused_with_the_parser_s_words() {
        let e = serde_json::from_str::<crate::declare::spec::VipSpec>("\"198.18.100.10:80\"")
            .unwrap_err();
        assert!(e.to_string().contains("ADDRESS:PORT/PROTO"), "{e}");
    }
}
