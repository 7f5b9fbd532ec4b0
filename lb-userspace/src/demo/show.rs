//! The demo's output: 100 columns at most; what a hop changed is in bold (or between `*` when
//! the output is not a terminal).

use std::{io::IsTerminal as _, net::SocketAddr, path::Path};

use super::{failover::Failover, mode::ModeReport, DemoFacts};
use crate::declare::spec::Mode;
use lb_lab::{
    hops::{fmt_mac, Headers, Hop, Trace},
    Lab, CLIENT_ADDR, LB_ADDR, LB_B_ADDR, VIP_ADDR, VIP_PORT,
};

/// What each mode is, in a line, and the lab it needs.
fn describe(mode: Mode) -> (&'static str, &'static str) {
    match mode {
        Mode::Dsr => (
            "dsr (direct server return)",
            "one segment: client, LB and reals on one Linux bridge, 198.18.0.0/24",
        ),
        Mode::Tunnel => (
            "tunnel (IP-in-IP to the reals)",
            "the reals on 198.18.1.0/24 behind a router; client and LB on 198.18.0.0/24",
        ),
        Mode::Nat => (
            "nat (bridge/transparent: the LB bridges clients and reals)",
            "the LB bridges its eth0 (clients) and eth1 (reals), one subnet 198.18.0.0/24",
        ),
        Mode::Router => (
            "router (nat as an L3 hop between two subnets)",
            "clients on 198.18.0.0/24 (LB eth0), reals on 198.18.1.0/24 (LB eth1, their gateway)",
        ),
        Mode::OneArm => (
            "one-arm (full NAT: the reals see the LB as the client)",
            "one segment: client, LB and reals on one Linux bridge, 198.18.0.0/24",
        ),
    }
}

pub fn title(mode: Mode) {
    let (what, _) = describe(mode);
    println!(
        "\n=== {what} {}",
        "=".repeat(94usize.saturating_sub(what.len()))
    );
}

pub fn lab(mode: Mode, lab: &Lab) {
    let (_, topology) = describe(mode);
    println!("lab: {topology}");
    println!("  client {CLIENT_ADDR}  ->  VIP {VIP_ADDR}:{VIP_PORT}/tcp (routed via the LB)");
    match mode {
        Mode::Router => println!("  lb     {LB_ADDR} (eth0), {LB_B_ADDR} (eth1)  XDP on both"),
        Mode::Nat => println!("  lb     {LB_ADDR} on br0 = eth0 + eth1  XDP on both ports"),
        _ => println!("  lb     {LB_ADDR}   XDP on eth0"),
    }
    let direct = matches!(mode, Mode::Dsr | Mode::Tunnel);
    for (i, r) in lab.real_addrs().iter().enumerate() {
        let setup = if direct {
            "VIP on lo, arp_ignore=1 arp_announce=2"
        } else {
            "nothing special"
        };
        println!(
            "  r{}     {r}  {setup}, TCP server on port {VIP_PORT}",
            i + 1
        );
    }
}

/// `# where` then `$ head`, and each of `more` on a continuation line.
pub fn command(place: &str, head: &str, more: &[String]) {
    println!("# {place}:");
    let mut lines = vec![format!("$ {head}")];
    lines.extend(more.iter().map(|m| format!("      {m}")));
    let last = lines.len() - 1;
    for (i, line) in lines.iter().enumerate() {
        println!("{line}{}", if i < last { " \\" } else { "" });
    }
}

pub fn trace(t: &Trace) {
    let style = Style::detect();
    println!(
        "\none request and its reply, hop by hop ({}):",
        style.mark("what a hop changed")
    );
    for (direction, hops) in [("request", &t.request), ("reply", &t.reply)] {
        println!("  {direction}");
        let mut before: Option<&Headers> = None;
        for h in hops {
            hop(h, before, style);
            before = Some(&h.headers);
        }
    }
}

fn hop(h: &Hop, before: Option<&Headers>, style: Style) {
    println!("    {} -> {}   (seen at {})", h.from, h.to, h.at);
    let now = &h.headers;
    let field = |text: String, changed: bool| {
        if changed {
            style.mark(&text)
        } else {
            text
        }
    };
    let b = before;
    let eth = format!(
        "eth {} > {}",
        field(
            fmt_mac(&now.eth_src),
            b.is_some_and(|b| b.eth_src != now.eth_src)
        ),
        field(
            fmt_mac(&now.eth_dst),
            b.is_some_and(|b| b.eth_dst != now.eth_dst)
        ),
    );
    let ip = format!(
        "ip {} > {}",
        field(endpoint(now.src), b.is_some_and(|b| b.src != now.src)),
        field(endpoint(now.dst), b.is_some_and(|b| b.dst != now.dst)),
    );
    let ttl = field(
        format!("ttl {}", now.ttl),
        b.is_some_and(|b| b.ttl != now.ttl),
    );
    println!("      {eth}");
    println!("      {ip}   {ttl}");
    if let Some((src, dst)) = now.outer {
        let added = b.is_some_and(|b| b.outer.is_none());
        println!(
            "      {}",
            field(format!("outer ip {src} > {dst} (IP-in-IP)"), added)
        );
    }
}

fn endpoint(a: SocketAddr) -> String {
    a.to_string()
}

/// How changed fields stand out.
#[derive(Clone, Copy)]
struct Style {
    terminal: bool,
}

impl Style {
    fn detect() -> Self {
        Self {
            terminal: std::io::stdout().is_terminal(),
        }
    }

    fn mark(self, text: &str) -> String {
        if self.terminal {
            format!("\x1b[1;33m{text}\x1b[0m")
        } else {
            format!("*{text}*")
        }
    }
}

/// What the LB's datapath did with each frame of the traced request, as `command` (lbctl
/// capture) recorded it.
pub fn lb_view(command: &str, verdicts: &[super::lb_view::Verdict]) {
    println!("\nthe same request at the lb, as `{command}` shows it (the verdict of each frame):");
    for v in verdicts {
        println!("  {}\n      -> {}", v.frame, v.verdict);
    }
}

pub fn facts(f: &DemoFacts, mode: Mode, decapsulated: Option<u64>) {
    println!(
        "\nclient -> VIP: {} TCP connections, {} answered",
        f.requests, f.answered
    );
    let spread: Vec<String> = f
        .per_real
        .iter()
        .map(|(real, n)| format!("{real} {n} ({:.0}%)", *n as f64 * 100.0 / f.requests as f64))
        .collect();
    println!("spread over the reals: {}", spread.join(", "));
    let why = match mode {
        Mode::Dsr => "DSR leaves the IP header alone",
        Mode::Tunnel => "the inner packet is the client's own",
        Mode::Nat | Mode::Router => "only the destination was translated",
        Mode::OneArm => "the source was translated to the LB's SNAT pool",
    };
    println!(
        "client address the reals saw: {}  ({why})",
        f.client_addrs_seen.join(", ")
    );
    let how = match mode {
        Mode::Dsr => "only Ethernet addresses rewritten",
        Mode::Tunnel => "wrapped in an outer IPv4 header, lb -> real",
        Mode::Nat => "destination -> the real's address",
        Mode::Router => "destination -> the real's, TTL - 1",
        Mode::OneArm => "destination -> the real, source -> the LB's",
    };
    println!(
        "at the LB: {} packets to the VIP forwarded ({how}),",
        f.lb_forwarded
    );
    if let Some(d) = decapsulated {
        println!("at the reals: {d} packets unwrapped by the decap program,");
    }
    if mode.is_stateful() {
        println!(
            "           {} replies forwarded back, the VIP restored as their source:",
            f.lb_replies
        );
        println!("           the replies crossed the LB.");
    } else {
        println!(
            "           0 replies forwarded: they went from the reals straight to the client,"
        );
        println!("           not through the LB (its own traffic aside: health checks, ARP).");
    }
}

pub fn failover(f: &Failover) {
    println!(
        "\nfailover: {}'s server stopped; its health check took it out after {:.1} s;",
        f.stopped,
        f.out_after.as_secs_f64()
    );
    println!(
        "          then {} of {} requests answered, {} by {}; back {:.1} s after its server was",
        f.answered,
        f.requests,
        f.to_stopped,
        f.stopped,
        f.back_after.as_secs_f64()
    );
    println!("          started again.");
}

pub fn explore(lab: &Lab, lbctl: &Path) {
    let lb = lab.lb.name();
    let client = lab.client.name();
    let real = lab.reals[0].name();
    let sock = lab.lb_socket();
    println!("\nthe lab stays up until Ctrl-C; explore it from another shell:");
    println!(
        "  ip netns exec {client} bash -c 'exec 3<>/dev/tcp/{VIP_ADDR}/{VIP_PORT}; echo hi >&3; cat <&3'"
    );
    println!("  ip netns exec {real} tcpdump -ni eth0 -e port {VIP_PORT}");
    println!(
        "  LBCTL_SOCKET={} {} real list",
        sock.display(),
        lbctl.display()
    );
    println!("  ip netns exec {lb} {} stats eth0", lbctl.display());
}

pub fn summary(reports: &[ModeReport]) {
    println!("\n=== side by side {}", "=".repeat(83));
    println!(
        "{:<8} {:<23} {:<8} {:<14} failover: answered, out after",
        "mode", "the real saw as client", "reply", "spread"
    );
    for r in reports {
        let seen = r
            .trace
            .client_seen_by_real()
            .map_or("?".into(), |a| a.ip().to_string());
        let crossed = if r.trace.reply_crossed_lb("lb") {
            "via LB"
        } else {
            "direct"
        };
        let spread: Vec<String> = r.facts.per_real.values().map(|n| n.to_string()).collect();
        println!(
            "{:<8} {:<23} {:<8} {:<14} {}/{}, {:.1} s",
            r.mode.name(),
            seen,
            crossed,
            spread.join("/"),
            r.failover.answered,
            r.failover.requests,
            r.failover.out_after.as_secs_f64()
        );
    }
}
