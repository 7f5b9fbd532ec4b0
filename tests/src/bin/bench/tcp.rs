//! Real TCP through the balancer (issue 7, item 3): connections/s and request latency with
//! `wrk` against three nginx reals, one request per connection (`Connection: close`) and over
//! kept-alive connections, for lbctl in dsr, nat and one-arm, nftables DNAT, HAProxy in TCP
//! mode, no LB at all, and plain routing through the LB's namespace (the hop every LB adds).
//! Each system has a lab of its own, all up at once, and the runs go round them in turn (the
//! best of three kept); every process started here is killed on drop, also on failure.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    process::Stdio,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use lb_common::Verdict;
use lb_lab::{Lab, Netns, LB_ADDR, SNAT_ADDR, VIP_ADDR};

mod process;
mod wrk;

use process::{start_server, Proc};
use wrk::{combine, parse_stub_status, parse_wrk, Load};

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
    let stats = lb_userspace::stats::of_lab_host(&lab.lb).context("reading lbctl's counters")?;
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
