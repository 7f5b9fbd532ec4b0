//! Real TCP through the balancer (issue 7, item 3): connections/s and request latency with
//! `wrk` against three nginx reals, one request per connection (`Connection: close`) and over
//! kept-alive connections, for lbctl in dsr, nat and one-arm, nftables DNAT, HAProxy in TCP
//! mode, no LB at all, and plain routing through the LB's namespace (the hop every LB adds).
//! Each system has a lab of its own, all up at once, and the runs go round them in turn (the
//! best of three kept); every process started here is killed on drop, also on failure.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use lb_common::Verdict;
use lb_userspace::lab::{Lab, Netns, LB_ADDR, SNAT_ADDR, VIP_ADDR};

use crate::{
    report::{Figure, Plot, PlotKind, Section, Unit},
    Opts,
};

/// nginx's port on the reals and the VIP's: the lab's own servers hold 80 and 8080, and dsr
/// cannot translate ports.
const PORT: u16 = 8081;
/// nginx's stub_status on each real's loopback: requests served, for the spread.
const STATUS_PORT: u16 = 8082;

#[derive(Clone, Copy, PartialEq)]
enum System {
    NoLb,
    /// To the reals' own addresses, routed by the kernel through the LB's namespace.
    Routed,
    Lbctl(&'static str),
    Nftables,
    Haproxy,
}

const SYSTEMS: [System; 7] = [
    System::NoLb,
    System::Routed,
    System::Lbctl("dsr"),
    System::Lbctl("nat"),
    System::Lbctl("one-arm"),
    System::Nftables,
    System::Haproxy,
];

/// (label, one request per connection, plot file, plot title, y label)
const VARIANTS: [(&str, bool, &str, &str, &str); 2] = [
    (
        "Connection: close",
        true,
        "tcp.png",
        "TCP connections/s, one request each",
        "connections/s",
    ),
    (
        "keep-alive",
        false,
        "tcp-keepalive.png",
        "HTTP requests/s, kept-alive connections",
        "requests/s",
    ),
];

impl System {
    fn label(self) -> String {
        match self {
            System::NoLb => "no LB".into(),
            System::Routed => "routed, no LB".into(),
            System::Lbctl(mode) => format!("lbctl {mode}"),
            System::Nftables => "nftables DNAT".into(),
            System::Haproxy => "HAProxy tcp".into(),
        }
    }

    /// The share of the no-LB `Connection: close` rate the issue asks of it, if any.
    fn rate_goal(self) -> Option<f64> {
        match self {
            System::Lbctl("dsr") => Some(0.95),
            System::Lbctl(_) => Some(0.9),
            _ => None,
        }
    }

    /// wrk goes to the reals' own addresses, not to the VIP.
    fn direct(self) -> bool {
        matches!(self, System::NoLb | System::Routed)
    }
}

/// What one wrk run (or the direct runs together) measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Load {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
}

/// The best run of a system and variant.
struct Measured {
    load: Load,
    /// Requests each real's nginx served in that run.
    per_real: Vec<u64>,
    /// What lbctl dropped over all the runs and warm-ups, by reason.
    drops: Vec<(&'static str, u64)>,
}

impl Measured {
    /// The faster of two runs, with the drops of both.
    fn best_of(self, other: Measured) -> Measured {
        let drops = self.drops.iter().zip(&other.drops);
        let drops = drops.map(|(a, b)| (a.0, a.1 + b.1)).collect();
        let best = if other.load.rate > self.load.rate {
            other
        } else {
            self
        };
        Measured { drops, ..best }
    }
}

/// A system's lab and the servers in it. Field order is drop order: the servers are killed
/// before the lab deletes their namespaces.
struct Setup {
    _servers: Vec<Proc>,
    lab: Lab,
}

pub fn run(opts: &Opts) -> Result<Section> {
    for tool in ["nginx", "wrk", "haproxy", "nft"] {
        let path = std::env::var_os("PATH").unwrap_or_default();
        if !std::env::split_paths(&path).any(|dir| dir.join(tool).exists()) {
            let hint = "apt-get install nginx wrk haproxy nftables (cargo xtask bench does)";
            bail!("{tool} is missing: {hint}");
        }
    }
    // Seconds of warm-up and per run, and runs (the best is kept).
    let (warmup, secs, rounds) = if opts.quick { (1, 3, 1) } else { (2, 10, 3) };
    let mut section = Section::new(
        "Real TCP (wrk against nginx reals)",
        format!(
            "wrk -t2 -c32 -d{}s --latency from the lab's client to the VIP \
             (198.18.100.10:{PORT}), with `Connection: close` (one request per connection: the \
             rate is connections/s) and with keep-alive, each run after a {} s warm-up whose \
             figures are dropped; the best of {} runs by rate. Every system's lab is up at once \
             and the runs go round the systems in turn, so a change in the box's load (it may be \
             shared) falls on all of them alike. Three nginx reals, one process each answering \
             `return 200`, all in this box's namespaces. lbctl dsr and one-arm, and HAProxy 2.6 \
             (`mode tcp`, roundrobin) on the LB, share the reals' segment; lbctl nat and nftables \
             DNAT (numgen round robin, conntrack) are the reals' gateway. No LB: three wrk at \
             once, one per real (-t1, 11+11+10 connections: the same 32), rates summed, \
             percentiles averaged weighted by requests; \"routed, no LB\" does the same through \
             the LB's namespace as a plain kernel router (two-subnet lab). wrk's latency runs \
             from a request's send to its answer: a connection's handshake, and a SYN lost and \
             resent, show only in the rate. Any non-2xx answer, or more than one socket error per 10 000 requests, fails the figure.",
            secs, warmup, rounds
        ),
    );
    println!("  setting up a lab per system");
    let setups: Vec<Result<Setup>> = SYSTEMS.iter().map(|&s| set_up(opts, s)).collect();
    // Per system and variant: the best run so far, or the error that failed it. A system
    // that did not come up fails every figure with its error.
    let mut results: Vec<Vec<Result<Option<Measured>, String>>> = setups
        .iter()
        .zip(SYSTEMS)
        .map(|(s, system)| {
            if let Err(e) = s {
                println!("  {}: set-up failed: {e:#}", system.label());
            }
            let r = || s.as_ref().map(|_| None).map_err(|e| format!("{e:#}"));
            vec![r(), r()]
        })
        .collect();
    for round in 1..=rounds {
        for (i, system) in SYSTEMS.into_iter().enumerate() {
            let Ok(setup) = &setups[i] else { continue };
            for (v, &(variant, close, ..)) in VARIANTS.iter().enumerate() {
                let Ok(best) = &mut results[i][v] else {
                    continue;
                };
                println!("  run {round}/{rounds}: {}, {variant} ...", system.label());
                match measure(&setup.lab, system, close, warmup, secs) {
                    Ok(m) => {
                        *best = Some(match best.take() {
                            Some(b) => b.best_of(m),
                            None => m,
                        })
                    }
                    Err(e) => {
                        println!("  {} failed: {e:#}", system.label());
                        results[i][v] = Err(format!("{e:#}"));
                    }
                }
            }
        }
    }
    drop(setups);
    let results: Vec<(System, Vec<Result<Measured, String>>)> = SYSTEMS
        .into_iter()
        .zip(results)
        .map(|(s, r)| {
            (
                s,
                r.into_iter()
                    .map(|m| m?.ok_or_else(|| "no run".to_string()))
                    .collect(),
            )
        })
        .collect();
    let direct = |i: usize| match &results[i].1[..] {
        [Ok(close), Ok(keep)] => Ok([close.load, keep.load]),
        _ => bail!("{} failed, nothing to compare with", results[i].0.label()),
    };
    let (base, routed) = (direct(0)?, direct(1)?);
    for (v, &(variant, close, file, title, y_label)) in VARIANTS.iter().enumerate() {
        let mut bars = Vec::new();
        for (system, measured) in &results {
            let name = format!("{}, {variant}", system.label());
            let goal = system.rate_goal().filter(|_| close);
            push_figures(
                &mut section,
                &name,
                close,
                goal,
                &measured[v],
                base[v],
                routed[v],
            );
            let rate = measured[v].as_ref().map_or(0.0, |m| m.load.rate);
            bars.push((system.label(), rate));
        }
        let (file, title, y_label) = (file.into(), title.into(), y_label.into());
        let kind = PlotKind::Bars(bars);
        section.plots.push(Plot {
            file,
            title,
            y_label,
            kind,
        });
    }
    section.notes.push(format!(
        "Client, reals and LB share this box's {} CPUs, so an LB's work is taken from the \
         client and the reals too. The hop alone, plain routing through the LB's namespace, \
         gives {:.2}× the no-LB connection rate here: the \"× routed\" ratios show what each LB \
         costs beyond it. On separate machines the LB's cost would not slow the others.",
        lb_userspace::datapath::possible_cpus()?,
        routed[0].rate / base[0].rate
    ));
    Ok(section)
}

/// Rate, p50 and p99 of one system and variant, against no LB; `goal`: the share of the no-LB
/// rate it must reach (and then its p99 must be within 10% of no LB's). A failed measurement
/// is a zero that misses its targets, with the error in the notes.
fn push_figures(
    section: &mut Section,
    name: &str,
    close: bool,
    goal: Option<f64>,
    result: &Result<Measured, String>,
    base: Load,
    routed: Load,
) {
    let (load, spread) = match result {
        Ok(m) => {
            let total = m.per_real.iter().sum::<u64>().max(1);
            let shares: Vec<String> = m
                .per_real
                .iter()
                .map(|n| (n * 100 / total).to_string())
                .collect();
            let drops: Vec<String> = m
                .drops
                .iter()
                .filter(|d| d.1 > 0)
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            let mut spread = format!("requests per real {}%", shares.join("/"));
            if !drops.is_empty() {
                spread += &format!("; lbctl dropped {} packets", drops.join(", "));
            }
            (m.load, spread)
        }
        Err(e) => {
            // One line, so the markdown list stays a list.
            let e = e.replace('\n', " ");
            section.notes.push(format!("{name}: **failed**: {e}"));
            (Load::default(), "**failed**, see the notes".into())
        }
    };
    let ok = result.is_ok();
    let unit = if close {
        Unit::ConnectionsPerSec
    } else {
        Unit::RequestsPerSec
    };
    let note = format!(
        "{:.2}× no LB, {:.2}× routed; {spread}",
        load.rate / base.rate,
        load.rate / routed.rate
    );
    let mut f = Figure::new(format!("{name}: rate"), load.rate, unit).note(note);
    if let Some(goal) = goal {
        f = f.target(
            format!("≥ {goal}× no LB"),
            ok && load.rate >= goal * base.rate,
        );
    }
    section.push(f);
    let vs = |value: f64, of: f64| format!("{:.2}× no LB", value / of);
    section.push(
        Figure::new(format!("{name}: p50"), load.p50_ms, Unit::Ms)
            .note(vs(load.p50_ms, base.p50_ms)),
    );
    let mut f = Figure::new(format!("{name}: p99"), load.p99_ms, Unit::Ms)
        .note(vs(load.p99_ms, base.p99_ms));
    if goal.is_some() {
        f = f.target("≤ 1.1× no LB's p99", ok && load.p99_ms <= 1.1 * base.p99_ms);
    }
    section.push(f);
}

/// Builds the system's lab and starts nginx on its reals and the LB.
fn set_up(opts: &Opts, system: System) -> Result<Setup> {
    let mut lab = match system {
        System::Routed | System::Lbctl("nat") | System::Nftables => Lab::two_subnets(3)?,
        _ => Lab::one_segment(3)?,
    };
    let reals = lab.real_addrs();
    let mut servers = Vec::new();
    for (i, real) in lab.reals.iter().enumerate() {
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid DIR/pid; error_log DIR/log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; keepalive_requests 100000000; keepalive_timeout 60s;\n\
             client_body_temp_path DIR; proxy_temp_path DIR; fastcgi_temp_path DIR;\n\
             uwsgi_temp_path DIR; scgi_temp_path DIR;\n\
             server {{ listen {PORT} backlog=4096; location / {{ return 200 \"r{}\\n\"; }} }}\n\
             server {{ listen 127.0.0.1:{STATUS_PORT}; location / {{ stub_status; }} }} }}\n",
            i + 1
        );
        // One process (master_process off): killing it leaves no worker behind.
        let args = ["-p", "DIR", "-c", "DIR/conf", "-e", "DIR/log"];
        let listening = SocketAddr::from((Ipv4Addr::LOCALHOST, PORT));
        servers.push(start_server(real, "nginx", &conf, &args, listening)?);
    }
    match system {
        System::NoLb => {}
        System::Routed => {
            // The lab's client routes only the VIPs via the LB.
            let via = LB_ADDR.to_string();
            lab.client
                .ip(&["route", "add", "198.18.1.0/24", "via", &via])?;
        }
        System::Lbctl(mode) => {
            let mut args = vec![
                "--mode".into(),
                mode.into(),
                "--vip".into(),
                format!("{VIP_ADDR}:{PORT}/tcp"),
            ];
            if mode == "one-arm" {
                lab.add_snat_addr()?;
                args.extend(["--snat-pool".into(), SNAT_ADDR.to_string()]);
            }
            for r in &reals {
                args.extend(["--real".into(), r.to_string()]);
            }
            lab.start_lb(&opts.lbctl, &args)?;
        }
        System::Nftables => {
            // The table lives in the LB's namespace and goes with it.
            let map: Vec<String> = reals
                .iter()
                .enumerate()
                .map(|(i, r)| format!("{i} : {r}"))
                .collect();
            let rules = format!(
                "add table ip bench; \
                 add chain ip bench pre {{ type nat hook prerouting priority -100; }}; \
                 add rule ip bench pre ip daddr {VIP_ADDR} tcp dport {PORT} \
                 dnat to numgen inc mod {} map {{ {} }}",
                reals.len(),
                map.join(", ")
            );
            lab.lb
                .exec("nft", &[rules.as_str()])
                .context("loading the nftables DNAT rules")?;
        }
        System::Haproxy => {
            // The lab puts the VIP on the LB's loopback: HAProxy listens on it.
            let mut conf = format!(
                "global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
                 timeout client 30s\n  timeout server 30s\n\
                 listen vip\n  bind {VIP_ADDR}:{PORT}\n  balance roundrobin\n"
            );
            for (i, r) in reals.iter().enumerate() {
                conf += &format!("  server r{} {r}:{PORT}\n", i + 1);
            }
            let listening = SocketAddr::from((VIP_ADDR, PORT));
            servers.push(start_server(
                &lab.lb,
                "haproxy",
                &conf,
                &["-db", "-f", "DIR/conf"],
                listening,
            )?);
        }
    }
    Ok(Setup {
        _servers: servers,
        lab,
    })
}

/// A warm-up run whose figures are dropped, then the measured run, with the requests each real
/// served in it and what lbctl dropped in both.
fn measure(lab: &Lab, system: System, close: bool, warmup: u64, secs: u64) -> Result<Measured> {
    let drops_before = lb_drops(lab, system)?;
    wrk(lab, system, close, warmup).context("warm-up")?;
    let before = requests_per_real(lab)?;
    let load = wrk(lab, system, close, secs)?;
    let after = requests_per_real(lab)?;
    let per_real = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let drops = lb_drops(lab, system)?.into_iter().zip(drops_before);
    let drops = drops.map(|(a, b)| (a.0, a.1 - b.1)).collect();
    Ok(Measured {
        load,
        per_real,
        drops,
    })
}

/// The balancer's drop counters (none for the other systems): a dropped SYN costs a connection
/// a 1 s retransmit, which wrk's latency does not show (it starts once connected).
fn lb_drops(lab: &Lab, system: System) -> Result<Vec<(&'static str, u64)>> {
    if !matches!(system, System::Lbctl(_)) {
        return Ok(Vec::new());
    }
    let stats = lab.lb_stats().context("reading lbctl's counters")?;
    let reasons = stats.counters.reasons.iter();
    let drops = reasons.filter(|(r, _)| r.verdict() == Verdict::Drop);
    Ok(drops.map(|(r, c)| (r.label(), c.packets)).collect())
}

/// Runs wrk from the lab's client for `secs`: at the VIP, or at each real at once.
fn wrk(lab: &Lab, system: System, close: bool, secs: u64) -> Result<Load> {
    let targets: Vec<(Ipv4Addr, u32)> = if system.direct() {
        lab.real_addrs().into_iter().zip([11, 11, 10]).collect()
    } else {
        vec![(VIP_ADDR, 32)]
    };
    let threads = if system.direct() { 1 } else { 2 };
    let mut runs = Vec::new();
    for (addr, connections) in targets {
        let mut cmd = lab.client.command("wrk");
        cmd.args([
            format!("-t{threads}"),
            format!("-c{connections}"),
            format!("-d{secs}s"),
        ]);
        cmd.arg("--latency");
        if close {
            cmd.args(["-H", "Connection: close"]);
        }
        cmd.arg(format!("http://{addr}:{PORT}/"));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        runs.push(Proc::spawn(cmd, format!("wrk against {addr}"), None)?);
    }
    let mut loads = Vec::new();
    for run in &mut runs {
        let out = run.output(Duration::from_secs(secs + 30))?;
        let load = parse_wrk(&out).with_context(|| run.what.clone());
        if load.is_err() {
            // The report keeps the error in one line; the whole output goes to the terminal.
            eprintln!("{}:\n{out}", run.what);
        }
        loads.push(load?);
    }
    Ok(combine(&loads))
}

/// Runs side by side as one: rates and requests summed, percentiles weighted by requests (the
/// runs are alike, so this is close to the percentile of all their requests).
fn combine(loads: &[Load]) -> Load {
    let requests: u64 = loads.iter().map(|l| l.requests).sum();
    let weighted = |f: fn(&Load) -> f64| {
        loads.iter().map(|l| f(l) * l.requests as f64).sum::<f64>() / requests.max(1) as f64
    };
    let rate = loads.iter().map(|l| l.rate).sum();
    Load {
        rate,
        p50_ms: weighted(|l| l.p50_ms),
        p99_ms: weighted(|l| l.p99_ms),
        requests,
    }
}

/// wrk's summary: requests/s, p50 and p99, the request count; an error for any socket error
/// or non-2xx/3xx answer, which would make the figures lie.
fn parse_wrk(out: &str) -> Result<Load> {
    let field = |prefix: &str| {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    if let Some(n) = field("Non-2xx or 3xx responses:") {
        bail!("{n} answers were not 2xx/3xx");
    }
    let rate: f64 = field("Requests/sec:")
        .context("no Requests/sec line")?
        .parse()?;
    let count = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "));
    let requests: u64 = count.context("no \"N requests in\" line")?.0.parse()?;
    if requests == 0 {
        bail!("no request was answered");
    }
    if let Some(errors) = field("Socket errors:") {
        // "connect 0, read 1, write 0, timeout 0". wrk cuts a connection now and then when
        // it stops; more than one error per 10 000 requests is a real failure.
        let total: u64 = errors
            .split(',')
            .filter_map(|kind| kind.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        if total == 0 || total.saturating_mul(10_000) > requests {
            bail!("wrk saw socket errors ({errors}): connections failed or were reset");
        }
    }
    let p50_ms = duration_ms(field("50%").context("no 50% latency (run with --latency)")?)?;
    let p99_ms = duration_ms(field("99%").context("no 99% latency (run with --latency)")?)?;
    Ok(Load {
        rate,
        p50_ms,
        p99_ms,
        requests,
    })
}

/// wrk's "812.00us", "1.99ms", "1.02s", "1.50m" in milliseconds.
fn duration_ms(text: &str) -> Result<f64> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let scale = match &text[digits.len()..] {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        unit => bail!("unknown unit {unit:?} in wrk's {text:?}"),
    };
    Ok(digits
        .parse::<f64>()
        .with_context(|| format!("wrk's {text:?}"))?
        * scale)
}

/// Requests each real's nginx has served so far, from its stub_status.
fn requests_per_real(lab: &Lab) -> Result<Vec<u64>> {
    let get = || -> Result<String> {
        let at = SocketAddr::from((Ipv4Addr::LOCALHOST, STATUS_PORT));
        let mut s = TcpStream::connect_timeout(&at, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    };
    let status = |real: &Netns| -> Result<u64> {
        let text = real.run(get)??;
        parse_stub_status(&text)
            .with_context(|| format!("nginx status in {}:\n{text}", real.name()))
    };
    lab.reals.iter().map(status).collect()
}

/// The `requests` count of nginx's stub_status page: the third number on the line after
/// "server accepts handled requests".
fn parse_stub_status(text: &str) -> Result<u64> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.contains("accepts handled requests"));
    let counts = lines
        .nth(1)
        .context("no counts after \"accepts handled requests\"")?;
    Ok(counts
        .split_whitespace()
        .nth(2)
        .context("no requests count")?
        .parse()?)
}

/// Starts `program ARGS` in `ns` with `config` written to DIR/conf, DIR being a directory of
/// its own (the string "DIR" in `config` and `args` stands for it) that also holds its log,
/// and waits up to 10 s until something accepts connections at `listening` in `ns`.
fn start_server(
    ns: &Netns,
    program: &str,
    config: &str,
    args: &[&str],
    listening: SocketAddr,
) -> Result<Proc> {
    let dir = std::env::temp_dir().join(format!("{}-bench-{program}", ns.name()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let d = dir.display().to_string();
    std::fs::write(dir.join("conf"), config.replace("DIR", &d))?;
    let out = File::create(dir.join("out"))?;
    let mut cmd = ns.command(program);
    cmd.args(args.iter().map(|a| a.replace("DIR", &d)));
    cmd.stdout(out.try_clone()?).stderr(out);
    let what = format!("{program} in {}", ns.name());
    let mut p = Proc::spawn(cmd, what, Some(dir))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = p.child.try_wait()? {
            bail!("{} exited ({status}) at start:\n{}", p.what, p.log());
        }
        let up = move || TcpStream::connect_timeout(&listening, Duration::from_millis(200)).is_ok();
        if ns.run(up)? {
            return Ok(p);
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not listen on {listening} within 10 s:\n{}",
                p.what,
                p.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process of the bench: SIGTERM, then SIGKILL, and reaped on drop; its directory removed.
struct Proc {
    child: Child,
    what: String,
    dir: Option<PathBuf>,
}

impl Proc {
    fn spawn(mut cmd: Command, what: String, dir: Option<PathBuf>) -> Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Self { child, what, dir })
    }

    /// What a server wrote to its stdout, stderr and error log.
    fn log(&self) -> String {
        let dir = self.dir.as_ref();
        // A file the server never wrote is simply not shown.
        let read = |f: &str| dir.and_then(|d| std::fs::read_to_string(d.join(f)).ok());
        format!(
            "{}{}",
            read("out").unwrap_or_default(),
            read("log").unwrap_or_default()
        )
    }

    /// Waits up to `limit` for the process to end; its output, or its error output as the error.
    fn output(&mut self, limit: Duration) -> Result<String> {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bail!("{} still ran after {limit:?}: killed", self.what);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(s) = self.child.stdout.as_mut() {
            s.read_to_string(&mut out)?;
        }
        if let Some(s) = self.child.stderr.as_mut() {
            s.read_to_string(&mut err)?;
        }
        if !status.success() {
            bail!("{} failed ({status}): {err}{out}", self.what);
        }
        Ok(out)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Ok(None): still running. An error of try_wait means there is no child left to stop.
        if matches!(self.child.try_wait(), Ok(None)) {
            // `ip netns exec` execs the program: the child's pid is the server's own.
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                eprintln!("{} ignored SIGTERM for 5 s: killed", self.what);
                // Nothing more to do if even SIGKILL fails; wait() reaps it either way.
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if let Some(dir) = &self.dir {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                eprintln!("could not remove {}: {e}", dir.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// wrk 4.1.0, -t2 -c32 --latency -H "Connection: close", against nginx in a lab.
    const CLOSE: &str = "Running 2s test @ http://198.18.0.11:8081/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.84ms    1.04ms  13.62ms   84.32%
    Req/Sec     7.10k   618.90     9.63k    80.00%
  Latency Distribution
     50%    1.74ms
     75%    2.11ms
     90%    2.62ms
     99%    6.38ms
  28434 requests in 2.02s, 3.93MB read
Requests/sec:  14084.88
Transfer/sec:      1.95MB
";

    /// The server killed half-way: read and write errors.
    const ERRORS: &str = "  Latency Distribution
     50%   33.00us
     99%    4.96ms
  38159 requests in 3.01s, 5.46MB read
  Socket errors: connect 0, read 4, write 664, timeout 0
Requests/sec:  12673.78
";

    /// nginx answering 503.
    const NON_2XX: &str = "  Latency Distribution
     50%   51.00us
     99%  113.00us
  63310 requests in 1.10s, 10.81MB read
  Non-2xx or 3xx responses: 63310
Requests/sec:  57580.40
";

    fn load(rate: f64, p50_ms: f64, p99_ms: f64, requests: u64) -> Load {
        Load {
            rate,
            p50_ms,
            p99_ms,
            requests,
        }
    }

    #[test]
    fn a_rare_socket_error_is_tolerated() {
        let one_cut = CLOSE.replace(
            "Requests/sec:",
            "  Socket errors: connect 0, read 1, write 0, timeout 0\nRequests/sec:",
        );
        assert_eq!(
            parse_wrk(&one_cut).unwrap(),
            load(14084.88, 1.74, 6.38, 28434)
        );
    }

    #[test]
    fn wrk_summary_gives_rate_percentiles_and_count() {
        assert_eq!(parse_wrk(CLOSE).unwrap(), load(14084.88, 1.74, 6.38, 28434));
    }

    #[test]
    fn socket_errors_and_non_2xx_fail_the_run() {
        let e = format!("{:#}", parse_wrk(ERRORS).unwrap_err());
        assert!(e.contains("read 4, write 664"), "{e}");
        let e = format!("{:#}", parse_wrk(NON_2XX).unwrap_err());
        assert!(e.contains("63310 answers were not 2xx"), "{e}");
        assert!(parse_wrk("unable to connect to 198.18.0.11:8089 Connection refused").is_err());
    }

    #[test]
    fn durations_in_every_unit_wrk_prints() {
        assert_eq!(duration_ms("332.00us").unwrap(), 0.332);
        assert_eq!(duration_ms("9.60ms").unwrap(), 9.6);
        assert_eq!(duration_ms("1.02s").unwrap(), 1020.0);
        assert_eq!(duration_ms("1.50m").unwrap(), 90_000.0);
        assert!(duration_ms("3.0xs").is_err());
    }

    #[test]
    fn runs_side_by_side_add_up_and_weigh_their_percentiles() {
        let both = combine(&[load(100.0, 1.0, 4.0, 300), load(50.0, 4.0, 10.0, 100)]);
        assert_eq!(both, load(150.0, 1.75, 5.5, 400));
    }

    #[test]
    fn stub_status_gives_the_requests_count() {
        let text = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nConnection: close\r\n\r\n\
                    Active connections: 1 \nserver accepts handled requests\n 28678 28678 229562 \n\
                    Reading: 0 Writing: 1 Waiting: 0 \n";
        assert_eq!(parse_stub_status(text).unwrap(), 229_562);
        assert!(parse_stub_status("HTTP/1.1 404 Not Found\r\n\r\n").is_err());
    }
}
