// The one list of external programs lbctl's tests, lab, demo and benchmarks run, with the
// Debian package that installs each. `cargo xtask test|demo|bench` install the packages of
// the programs their command needs, so a fresh machine runs them all; the lab refuses at run
// time to start a program this list does not name, and a host test (xtask's
// `every_program_run_is_listed`) finds the programs named in the code of `tests/`, the lab
// and the demo and fails for any not listed here.
//
// Plain data, no imports: the lab includes this file as it is (`include!`), so the list
// exists once.

/// Which xtask command needs a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// `cargo xtask test`: the lab of the end-to-end tests and the tests themselves.
    Test,
    /// `cargo xtask demo`: the lab `lbctl demo` builds.
    Demo,
    /// `cargo xtask bench`: the lab, the alternatives compared and the profiler.
    Bench,
}

impl Need {
    /// The command, as typed.
    pub fn command(self) -> &'static str {
        match self {
            Need::Test => "cargo xtask test",
            Need::Demo => "cargo xtask demo",
            Need::Bench => "cargo xtask bench",
        }
    }
}

/// An external program and where it comes from.
#[derive(Clone, Copy, Debug)]
pub struct Program {
    /// The name it is run by (looked up in PATH).
    pub name: &'static str,
    /// The Debian package that installs it.
    pub package: &'static str,
    /// The commands that run it.
    pub needed_by: &'static [Need],
}

const ALL: &[Need] = &[Need::Test, Need::Demo, Need::Bench];

/// Every external program run by code under `tests/`, `lb-lab/`, the demo and xtask's test
/// command.
#[rustfmt::skip]
pub const PROGRAMS: &[Program] = &[
    // Namespaces, links, addresses, routes, neighbours, XDP state.
    Program { name: "ip", package: "iproute2", needed_by: ALL },
    // Checksum offload off on the lab's veths (XDP-forwarded TCP keeps partial checksums).
    Program { name: "ethtool", package: "ethtool", needed_by: ALL },
    Program { name: "sysctl", package: "procps", needed_by: ALL },
    // The lab's own bpffs, where a restarted balancer finds its pinned state.
    Program { name: "mount", package: "mount", needed_by: ALL },
    Program { name: "umount", package: "mount", needed_by: ALL },
    // Shell snippets a test runs inside a namespace (doctor's broken reals).
    Program { name: "sh", package: "dash", needed_by: &[Need::Test] },
    // nftables DNAT: the alternative lbctl is measured against, on veth and real TCP.
    Program { name: "nft", package: "nftables", needed_by: &[Need::Test, Need::Bench] },
    Program { name: "nginx", package: "nginx", needed_by: &[Need::Bench] },
    Program { name: "wrk", package: "wrk", needed_by: &[Need::Bench] },
    Program { name: "haproxy", package: "haproxy", needed_by: &[Need::Bench] },
    Program { name: "perf", package: "linux-perf", needed_by: &[Need::Bench] },
    Program { name: "date", package: "coreutils", needed_by: &[Need::Bench] },
    // The syslog daemon flow logs go to, set up as the HAProxy tutorial sets it up.
    Program { name: "rsyslogd", package: "rsyslog", needed_by: &[Need::Test] },
    // A real browser loading the stats page (`lbctl attach --http`), headless.
    Program { name: "chromium", package: "chromium", needed_by: &[Need::Test] },
    // Reads back the pcapng files `lbctl capture -w` writes, as an operator would.
    Program { name: "tcpdump", package: "tcpdump", needed_by: &[Need::Test] },
    // VRRP between two LBs (active/standby), as the HAProxy tutorial sets it up.
    Program { name: "keepalived", package: "keepalived", needed_by: &[Need::Test] },
    // BGP: BIRD 2 on each LB (lbctl runs birdc to reconfigure it) and on the ECMP router.
    Program { name: "bird", package: "bird2", needed_by: &[Need::Test] },
    Program { name: "birdc", package: "bird2", needed_by: &[Need::Test] },
    // xtask itself: the previous release the upgrade test starts, from git.
    Program { name: "git", package: "git", needed_by: &[Need::Test] },
    Program { name: "tar", package: "tar", needed_by: &[Need::Test] },
];

/// The listed program called `name`, if any.
#[allow(dead_code)] // xtask's scan test and the lab use it; the xtask binary does not.
pub fn program(name: &str) -> Option<&'static Program> {
    PROGRAMS.iter().find(|p| p.name == name)
}
