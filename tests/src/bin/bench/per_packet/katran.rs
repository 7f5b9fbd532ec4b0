//! Katran's figures, measured by the same method (BPF_PROG_TEST_RUN, frame restored before
//! every repeat, median of 5 × 1 M repeats, CPU 0) on the two machine kinds the project runs
//! on, and the goals the performance issue sets against them. The machines differ too much
//! (a test-run floor of 6 ns on one, 24 ns on the other) for ratios to a floor to mean
//! anything: lbctl is held to Katran on the same kind of CPU.

/// Katran's cost per packet on one CPU kind, ns.
pub struct Katran {
    pub cpu: &'static str,
    pub not_a_vip: f64,
    /// An established flow of its IP-in-IP path (lbctl's tunnel mode).
    pub established: f64,
    /// A new flow, a new tuple every repeat, with room in the table.
    pub new_flow: f64,
    /// A new flow into a full table (Katran's 4 M entries).
    pub new_flow_full: f64,
}

/// Intel Xeon (Katran 19f08fe, the table).
const INTEL: Katran = Katran {
    cpu: "Intel",
    not_a_vip: 31.0,
    established: 80.0,
    new_flow: 566.0,
    new_flow_full: 1469.0,
};

/// AMD EPYC (Katran's anchor runs, docs/benchmarks).
const AMD: Katran = Katran {
    cpu: "AMD",
    not_a_vip: 69.0,
    established: 124.0,
    new_flow: 281.0,
    new_flow_full: 987.0,
};

/// Katran's figures for the CPU this runs on (by /proc/cpuinfo's vendor; Intel's when it
/// is neither).
pub fn here() -> &'static Katran {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if info.contains("AuthenticAMD") {
        &AMD
    } else {
        &INTEL
    }
}

/// What an established flow of `mode` must cost at most, as a share of Katran's established
/// IP-in-IP path: tunnel 0.75×, dsr 0.6× (it writes only the Ethernet header), the stateful
/// modes 0.9× (they rewrite addresses, ports and checksums).
pub fn established_share(mode: &str) -> f64 {
    match mode {
        "tunnel" => 0.75,
        "dsr" => 0.6,
        _ => 0.9,
    }
}

/// A new flow of `mode`: tunnel and dsr 0.75× Katran's, the stateful modes (two entries, a
/// reply to claim) 1.0×.
pub fn new_flow_share(mode: &str) -> f64 {
    match mode {
        "tunnel" | "dsr" => 0.75,
        _ => 1.0,
    }
}
