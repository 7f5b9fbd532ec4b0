//! `lbctl doctor real`: run on a real server of dsr or tunnel VIPs, it reads what those modes
//! need from the host (VIPs on `lo`, the ARP and reverse-path sysctls, the decap program, the
//! interface's address) and names the command that fixes each finding.
//!
//! Facts are gathered first (`facts`: netlink, /proc/sys, BPF program info), then judged by
//! pure code (`judge`, one module per kind of check), so every verdict is unit-tested
//! without root.

mod facts;
mod judge;
mod sysctls;
#[cfg(test)]
mod test_fixtures;
mod tunnel;
mod vip;

use std::{fmt, net::IpAddr};

use anyhow::{Context as _, Result};

/// How the load balancer sends this real the VIPs' traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RealMode {
    /// The LB rewrites only the destination MAC: the real is on its segment and receives
    /// packets addressed to the VIP.
    Dsr,
    /// The LB wraps packets in IP-in-IP to the real's address; `lbctl decap attach` unwraps
    /// them here.
    Tunnel,
}

/// Check that this host is ready to be a real server of dsr or tunnel VIPs, and print the
/// command that fixes each thing that is not.
#[derive(clap::Args, Debug, Clone)]
pub struct DoctorRealArgs {
    /// A VIP this real serves (it answers clients from it). Repeat for several.
    #[arg(long = "vip", value_name = "ADDR", required = true)]
    pub vips: Vec<IpAddr>,
    /// How the LB forwards the VIPs' traffic to this real.
    #[arg(long, value_enum, default_value_t = RealMode::Dsr)]
    pub mode: RealMode,
    /// The interface the LB's traffic arrives on [default: the default route's interface].
    #[arg(long, value_name = "NAME")]
    pub iface: Option<String>,
}

/// One thing checked, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Short name of what was checked.
    pub check: String,
    pub ok: bool,
    /// What was found, and why it matters.
    pub detail: String,
    /// When not ok: the command(s) to run, one per line.
    pub fix: Option<String>,
}

/// What `check_real` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The interface checked.
    pub iface: String,
    /// Whether `iface` was taken from the default route (no --iface given).
    pub iface_from_default_route: bool,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn all_ok(&self) -> bool {
        self.findings.iter().all(|f| f.ok)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.iface_from_default_route {
            writeln!(
                f,
                "checking {} (the default route's interface; --iface checks another)",
                self.iface
            )?;
        } else {
            writeln!(f, "checking {}", self.iface)?;
        }
        let width = self.findings.iter().map(|x| x.check.len()).max();
        let width = width.unwrap_or(0);
        for x in &self.findings {
            let status = if x.ok { "ok" } else { "FIX" };
            writeln!(f, "{status:<4} {:<width$}  {}", x.check, x.detail)?;
            for line in x.fix.iter().flat_map(|fix| fix.lines()) {
                writeln!(f, "       {line}")?;
            }
        }
        let total = self.findings.len();
        let failing = self.findings.iter().filter(|x| !x.ok).count();
        if failing == 0 {
            write!(f, "all {total} checks pass")
        } else {
            write!(f, "{failing} of {total} checks need a change")
        }
    }
}

/// Inspects the calling thread's network namespace as a real server of `args.vips` in
/// `args.mode`. Runs its own tokio runtime: call it outside one. Tunnel mode reads BPF
/// program names, which needs root (CAP_BPF or CAP_SYS_ADMIN).
pub fn check_real(args: &DoctorRealArgs) -> Result<Report> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let (iface, from_default_route) = match &args.iface {
        Some(i) => (i.clone(), false),
        None => (rt.block_on(facts::default_route_iface())?, true),
    };
    let facts = rt.block_on(facts::gather(args, &iface))?;
    Ok(Report {
        findings: judge::judge(args, &facts),
        iface,
        iface_from_default_route: from_default_route,
    })
}

#[cfg(test)]
mod tests {
    use super::{test_fixtures::VIP, *};

    #[test]
    fn the_arguments_parse_as_lbctl_doctor_real_takes_them() {
        use clap::{CommandFactory as _, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: DoctorRealArgs,
        }
        Cli::command().debug_assert();
        let cli = Cli::parse_from(["doctor", "--vip", VIP, "--vip", "2001:2::10"]);
        assert_eq!(cli.args.vips.len(), 2);
        assert_eq!(cli.args.mode, RealMode::Dsr);
        assert_eq!(cli.args.iface, None);
        let cli = Cli::parse_from([
            "doctor", "--vip", VIP, "--mode", "tunnel", "--iface", "eth1",
        ]);
        assert_eq!(cli.args.mode, RealMode::Tunnel);
        assert_eq!(cli.args.iface.as_deref(), Some("eth1"));
        assert!(
            Cli::try_parse_from(["doctor"]).is_err(),
            "--vip is required"
        );
    }

    #[test]
    fn the_report_prints_ok_or_fix_with_indented_commands_and_a_tally() {
        let report = Report {
            iface: "eth0".into(),
            iface_from_default_route: true,
            findings: vec![
                Finding {
                    check: "arp_ignore".into(),
                    ok: true,
                    detail: "fine".into(),
                    fix: None,
                },
                Finding {
                    check: "vip 198.18.100.10 on lo".into(),
                    ok: false,
                    detail: "missing".into(),
                    fix: Some("ip addr del A dev eth0\nip addr add B dev lo".into()),
                },
            ],
        };
        assert!(!report.all_ok());
        assert_eq!(
            report.to_string(),
            "checking eth0 (the default route's interface; --iface checks another)\n\
             ok   arp_ignore               fine\n\
             FIX  vip 198.18.100.10 on lo  missing\n\
             \x20      ip addr del A dev eth0\n\
             \x20      ip addr add B dev lo\n\
             1 of 2 checks need a change"
        );
        let passing = Report {
            iface: "eth0".into(),
            iface_from_default_route: false,
            findings: report.findings[..1].to_vec(),
        };
        assert!(passing.all_ok());
        assert!(passing.to_string().ends_with("\nall 1 checks pass"));
    }
}
