//! `lbctl doctor real` on real network namespaces: a misconfigured real is told the exact
//! commands, and running them makes it pass; in tunnel mode the decap program is found
//! missing, then foreign, then attached by `lbctl decap attach`.

use std::{
    io::Read as _,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use lb_lab::{unique_prefix, Netns};
use lb_userspace::{
    datapath::Datapath,
    doctor::{check_real, DoctorRealArgs, Finding, RealMode, Report},
};
use tests::{lbctl, require_root};

const VIP: &str = "198.18.100.10";
const IFACE: &str = "eth0";

/// A namespace whose eth0 (a veth, its peer in the same namespace) holds 198.18.0.11/24, and
/// nothing else a real needs.
fn bare_real() -> Netns {
    let ns = Netns::create(&format!("{}-real", unique_prefix())).unwrap();
    ns.ip(&[
        "link", "add", IFACE, "type", "veth", "peer", "name", "peer0",
    ])
    .unwrap();
    ns.ip(&["addr", "add", "198.18.0.11/24", "dev", IFACE])
        .unwrap();
    for link in [IFACE, "peer0"] {
        ns.ip(&["link", "set", link, "up"]).unwrap();
    }
    ns
}

fn args(mode: RealMode, vips: &[&str], iface: Option<&str>) -> DoctorRealArgs {
    DoctorRealArgs {
        vips: vips.iter().map(|v| v.parse().unwrap()).collect(),
        mode,
        iface: iface.map(str::to_owned),
    }
}

fn doctor(ns: &Netns, args: DoctorRealArgs) -> anyhow::Result<Report> {
    ns.run(move || check_real(&args)).unwrap()
}

fn fixes(report: &Report) -> Vec<String> {
    report
        .findings
        .iter()
        .filter_map(|f| f.fix.as_deref())
        .flat_map(str::lines)
        .map(str::to_owned)
        .collect()
}

fn finding<'a>(report: &'a Report, check: &str) -> &'a Finding {
    report
        .findings
        .iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no {check} finding:\n{report}"))
}

/// Runs each command of `commands` in `ns`, as the report's reader would paste it.
fn run_in(ns: &Netns, commands: &[String]) {
    for c in commands {
        ns.exec("sh", &["-c", c])
            .unwrap_or_else(|e| panic!("running the suggested fix {c:?}: {e:#}"));
    }
}

#[test]
fn a_misconfigured_dsr_real_is_told_the_exact_fixes_and_passes_once_they_are_run() {
    require_root();
    let ns = bare_real();
    // One VIP missing, one on eth0 where it would answer ARP; the ARP sysctls at defaults.
    ns.ip(&["addr", "add", "198.18.100.11/32", "dev", IFACE])
        .unwrap();
    let vips = [VIP, "198.18.100.11"];
    let report = doctor(&ns, args(RealMode::Dsr, &vips, Some(IFACE))).unwrap();
    assert!(!report.all_ok(), "{report}");
    let fixes = fixes(&report);
    for want in [
        "ip addr add 198.18.100.10/32 dev lo",
        "ip addr del 198.18.100.11/32 dev eth0",
        "ip addr add 198.18.100.11/32 dev lo",
        "arp_ignore=1",
        "arp_announce=2",
    ] {
        assert!(
            fixes.iter().any(|f| f.contains(want)),
            "no fix says {want:?}:\n{report}"
        );
    }
    let stolen = finding(&report, "vip 198.18.100.11 on lo");
    assert!(stolen.detail.contains("ARP"), "{report}");
    assert!(report.to_string().ends_with("4 of 5 checks need a change"));

    run_in(&ns, &fixes);
    let report = doctor(&ns, args(RealMode::Dsr, &vips, Some(IFACE))).unwrap();
    assert!(report.all_ok(), "{report}");
    assert_eq!(
        finding(&report, "mtu").detail,
        "eth0 has MTU 1500 (reported only)"
    );
    assert!(
        report.to_string().ends_with("all 5 checks pass"),
        "{report}"
    );
}

#[test]
fn without_iface_the_default_routes_interface_is_checked_or_the_error_asks_for_iface() {
    require_root();
    let ns = bare_real();
    let err = doctor(&ns, args(RealMode::Dsr, &[VIP], None)).unwrap_err();
    assert!(format!("{err:#}").contains("pass --iface"), "{err:#}");

    ns.ip(&["route", "add", "default", "via", "198.18.0.1", "dev", IFACE])
        .unwrap();
    let report = doctor(&ns, args(RealMode::Dsr, &[VIP], None)).unwrap();
    assert_eq!(report.iface, IFACE);
    assert!(report.iface_from_default_route);
    assert!(report.to_string().contains("default route"), "{report}");
}

#[test]
fn an_ipv6_vip_wants_a_128_on_lo_and_no_arp_sysctls() {
    require_root();
    let ns = bare_real();
    // The lab's namespaces start with IPv6 off.
    ns.sysctl("net.ipv6.conf.lo.disable_ipv6", "0").unwrap();
    let vip = ["2001:2::10"];
    let report = doctor(&ns, args(RealMode::Dsr, &vip, Some(IFACE))).unwrap();
    assert_eq!(
        fixes(&report),
        ["ip addr add 2001:2::10/128 dev lo"],
        "{report}"
    );
    assert!(
        report.findings.iter().all(|f| !f.check.starts_with("arp")),
        "{report}"
    );
    run_in(&ns, &fixes(&report));
    let report = doctor(&ns, args(RealMode::Dsr, &vip, Some(IFACE))).unwrap();
    assert!(report.all_ok(), "{report}");
}

/// `lbctl decap attach eth0` running in a namespace; stopped on drop.
struct DecapProcess {
    child: Child,
}

impl DecapProcess {
    /// Starts it and waits until an XDP program is on eth0.
    fn start(ns: &Netns) -> Self {
        let child = ns
            .command(&lbctl().display().to_string())
            .args(["decap", "attach", IFACE])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut process = Self { child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ns.ip(&["link", "show", IFACE]).unwrap().contains(" xdp") {
            if let Some(status) = process.child.try_wait().unwrap() {
                let mut log = String::new();
                let _ = process
                    .child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut log);
                panic!("`lbctl decap attach {IFACE}` exited ({status}) before attaching:\n{log}");
            }
            assert!(Instant::now() < deadline, "decap did not attach in 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        process
    }
}

impl Drop for DecapProcess {
    fn drop(&mut self) {
        // `ip netns exec` execs lbctl, so the child's pid is lbctl's.
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn tunnel_finds_decap_missing_then_foreign_then_attached() {
    require_root();
    let ns = bare_real();
    ns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])
        .unwrap();
    ns.sysctl("net.ipv4.conf.all.arp_ignore", "1").unwrap();
    ns.sysctl("net.ipv4.conf.all.arp_announce", "2").unwrap();
    ns.sysctl("net.ipv4.conf.all.rp_filter", "1").unwrap();
    let tunnel = || args(RealMode::Tunnel, &[VIP], Some(IFACE));

    let report = doctor(&ns, tunnel()).unwrap();
    let decap = finding(&report, "decap program");
    assert!(!decap.ok, "{report}");
    assert_eq!(decap.fix.as_deref(), Some("lbctl decap attach eth0"));
    let rp = finding(&report, "rp_filter");
    assert_eq!(
        rp.fix.as_deref(),
        Some("sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.eth0.rp_filter=2"),
        "{report}"
    );
    let addr = finding(&report, "eth0 IPv4 address");
    assert!(
        addr.ok && addr.detail.starts_with("198.18.0.11: "),
        "{report}"
    );
    run_in(&ns, &[rp.fix.clone().unwrap()]);

    // Another program on eth0 is named. It is attached, checked and detached on one thread
    // inside the namespace, so the detach finds the namespace's eth0.
    let args = tunnel();
    let report = ns
        .run(move || -> anyhow::Result<Report> {
            let mut dp = Datapath::load()?;
            dp.attach_pass(IFACE)?;
            let report = check_real(&args);
            drop(dp);
            report
        })
        .unwrap()
        .unwrap();
    let decap = finding(&report, "decap program");
    assert!(!decap.ok, "{report}");
    assert!(decap.detail.starts_with("lb_pass (id "), "{report}");

    let _decap = DecapProcess::start(&ns);
    let report = doctor(&ns, tunnel()).unwrap();
    assert!(finding(&report, "decap program").ok, "{report}");
    assert!(report.all_ok(), "{report}");
}
