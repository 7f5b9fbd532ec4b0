//! `lbctl attach`: the balancer's life. The configuration is checked and the admin socket
//! claimed before anything is touched; then reals are resolved, the datapath filled and
//! attached. While it runs, one loop takes every change in turn: health checks taking reals
//! down and up, admin commands, SIGHUP reloads, and a sweep of idle leastconn flows every
//! second. SIGINT/SIGTERM (or detaching the last interface) stop it.

mod answer;
mod moved_flows;
pub mod reconcile;
mod running;
mod serving;
mod stopping;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};
use tracing::{debug, info, warn};

use crate::{
    admin::{server::AdminSocket, Request, Response},
    datapath::{self, pins::StateDir, AttachMode, Datapath},
    declare::{config, edit, service::Service},
    health::{
        board::CheckBoard,
        check::Change,
        runner::{Checks, Event},
    },
    host::{
        neigh_watch::{self, NeighbourChange, NeighbourWatch},
        resolve,
        vmac::VmacWatch,
    },
    http,
};
use moved_flows::MovedFlows;
use running::Running;
use stopping::Stopping;

/// Where the services come from.
pub enum Source {
    /// A configuration file, reloaded on SIGHUP and `lbctl reload`.
    File(PathBuf),
    /// Command-line flags, checked.
    Flags(Vec<Service>),
}

/// How `lbctl attach` runs, besides what it serves.
pub struct Options {
    pub ifaces: Vec<String>,
    pub source: Source,
    /// How long to wait for reals to answer ARP/ND when they are first named.
    pub resolve_timeout: Duration,
    pub socket: PathBuf,
    /// Where maps and links are pinned.
    pub pin_dir: PathBuf,
    /// Leave the program forwarding when the daemon stops, for the next one to take over.
    pub keep_on_exit: bool,
    /// Where the HTTP listener serves the stats, if anywhere.
    pub http: Option<std::net::SocketAddr>,
    /// Whether `http` may be an address other hosts reach.
    pub http_public: bool,
    /// Where new flows are logged, if anywhere, and each CPU's rate.
    pub flow_log: Option<crate::flowlog::sink::Target>,
    pub flow_log_rate: u32,
    /// SIGTERM without `keep_on_exit`: how long a graceful stop may forward before it
    /// detaches (zero: at once).
    pub stop_grace: Duration,
    /// Announce the VIPs over BGP through BIRD: how to reach it, and `rise`.
    pub bgp: Option<(crate::announce::bird::Bird, Duration)>,
    /// Sync stateful flows with the peer LB.
    pub sync: Option<crate::sync::peer::Settings>,
}

/// How often what is announced over BGP is looked at again (besides after each change).
const ANNOUNCE_EVERY: Duration = Duration::from_millis(200);

/// How often leastconn's idle flows are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Serves until SIGINT or SIGTERM, or until its last interface is detached.
pub async fn run(opts: Options) -> Result<()> {
    // Signals first: a Ctrl-C during set-up is handled (after it) instead of killing lbctl
    // half-way with neighbour entries added.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let services = match &opts.source {
        Source::File(path) => config::load(path, datapath::possible_cpus()?)?,
        Source::Flags(services) => services.clone(),
    };
    // Checked and bound before anything is touched: a port in use refuses the start.
    let http = match opts.http {
        Some(addr) => {
            http::check_address(addr, opts.http_public)?;
            Some(http::bind(addr).await?)
        }
        None => None,
    };
    // Opened before anything is touched: a file or a syslog that is not there refuses.
    let flow_log = opts
        .flow_log
        .as_ref()
        .map(crate::flowlog::sink::Sink::open)
        .transpose()?;
    let (_socket, mut calls) = AdminSocket::listen(&opts.socket)?;
    let pins = StateDir::open(&opts.pin_dir)?;
    if opts.keep_on_exit && pins.dies_with_this_process()? {
        bail!("--keep-on-exit cannot keep its promise here: {} is on a bpffs of this process's own mount namespace (`ip netns exec` mounts a fresh /sys for the command it runs, and /sys/fs/bpf there with it), so the pinned state would end with lbctl and the next lbctl could not take its flows over. Give --pin-dir on a bpffs mounted in the host's mount namespace (`mount -t bpf bpf /run/lbctl-bpf` outside the netns, then `--pin-dir /run/lbctl-bpf/IFACE`)", opts.pin_dir.display());
    }
    let (mut running, attached) = start(&opts, services, pins).await?;
    running.dp.keep_on_exit(opts.keep_on_exit);
    // Before the attached line: the include file BIRD reads is there once lbctl says so.
    let mut announcer = match &opts.bgp {
        Some((bird, rise)) => {
            let name = crate::announce::alive::name_for(&opts.ifaces[0]);
            let a = crate::announce::Announcer::start(bird.clone(), &name, *rise)?;
            info!(include = %bird.include.display(), alive = %name, rise = %humantime::format_duration(*rise), "announcing VIPs over BGP through BIRD");
            Some(a)
        }
        None => {
            // An lbctl before this one announced and handed over; this one does not
            // announce: its interface goes, and BIRD withdraws.
            let name = crate::announce::alive::name_for(&opts.ifaces[0]);
            match crate::announce::alive::remove_kept(&name) {
                Ok(true) => {
                    info!(alive = %name, "removed the BGP interface the last lbctl kept: its announcements end (this one runs without --bgp-include)")
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(alive = %name, error = %format!("{e:#}"), "could not remove the BGP interface the last lbctl kept: `ip link del` it, or BIRD goes on announcing")
                }
            }
            None
        }
    };
    running.log_services();
    let mut facts = answer::Facts {
        started: Instant::now(),
        source: match &opts.source {
            Source::File(p) => p.display().to_string(),
            Source::Flags(_) => "command line".into(),
        },
        attached: opts.ifaces.iter().cloned().zip(attached).collect(),
        pinned: opts.pin_dir.display().to_string(),
        keep_on_exit: opts.keep_on_exit,
        vrrp: BTreeMap::new(),
        stopping: false,
        announce: None,
        sync: None,
    };
    info!(
        ifaces = %opts.ifaces.join(","),
        xdp = %facts.attached.iter().map(|(_, h)| h.name()).collect::<Vec<_>>().join(","),
        vips = %running.current.services.iter().map(|s| s.vip.to_string()).collect::<Vec<_>>().join(","),
        socket = %opts.socket.display(),
        "attached; forwarding until SIGINT/SIGTERM (SIGHUP reloads)"
    );

    let flow_log = flow_log.map(|sink| std::sync::Arc::new(std::sync::Mutex::new(sink)));
    running.log = flow_log.clone();
    let _flow_log = match flow_log {
        Some(sink) => {
            let ring = running.dp.start_flow_log(opts.flow_log_rate)?;
            let flows = std::sync::Arc::new(running.dp.flow_table_reader()?);
            info!(to = %opts.flow_log.as_ref().map(|t| t.to_string()).unwrap_or_default(), per_cpu_per_sec = opts.flow_log_rate, "logging new flows");
            Some(http::AbortOnDrop(tokio::spawn(async move {
                if let Err(e) = crate::flowlog::run(ring, flows, sink).await {
                    warn!(error = %format!("{e:#}"), "the flow log stopped");
                }
            })))
        }
        None => None,
    };
    // Quiet until `lbctl debug IFACE on`: the datapath writes no record before.
    let debug_log = running.dp.take_debug_log()?;
    let _debug_log = http::AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = crate::capture::debug::run(debug_log).await {
            warn!(error = %format!("{e:#}"), "the datapath's debug log stopped");
        }
    }));
    let board = http::Board::new(running.board.clone());
    let _listener = http.map(|listener| {
        info!(address = %opts.http.map(|a| a.to_string()).unwrap_or_default(), "serving /metrics, / and /healthz over HTTP");
        http::AbortOnDrop(tokio::spawn(http::serve(
            listener,
            opts.ifaces.clone(),
            board.clone(),
        )))
    });
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut checks = Checks::new(events_tx, running.board.clone());
    sync_checks(&running, &mut checks);
    let (neighbours, mut neighbour_changes) = NeighbourWatch::start(
        running.current.next_hops.iter().copied(),
        neigh_watch::DEFAULT_REFRESH,
    )
    .await?;
    let (_sync, mut sync_batches) = match &opts.sync {
        Some(settings) => {
            let (sync, batches) =
                crate::sync::peer::Sync::start(settings.clone(), running.dp.flow_table_reader()?)
                    .await?;
            info!(listen = %settings.listen, peer = %settings.peer, "syncing stateful flows with the peer");
            facts.sync = Some(crate::sync::install::Installer::new(
                settings.clone(),
                sync.counts.clone(),
                sync.from_peer.clone(),
            ));
            (Some(sync), batches)
        }
        // A channel nothing sends on: the loop's branch never fires.
        None => (None, tokio::sync::mpsc::channel(1).1),
    };
    let mut announce_tick = tokio::time::interval(ANNOUNCE_EVERY);
    let (vmacs, mut vmac_changes) = VmacWatch::start(
        running
            .current
            .interfaces
            .iter()
            .map(|i| i.ifindex)
            .collect(),
        running
            .current
            .interfaces
            .iter()
            .map(|i| (i.ifindex, i.config.vmacs))
            .collect(),
    )?;
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    let mut stopping: Option<Stopping> = None;
    let mut stop_tick = tokio::time::interval(stopping::TICK);
    let (moved, mut moved_lines) = MovedFlows::start(running.dp.flow_table_reader()?)?;
    loop {
        // What the listener shows: as the last change left it.
        publish(&running, &facts, &board);
        tokio::select! {
            _ = term.recv() => {
                // --keep-on-exit: a hand-over to the next lbctl, nothing given up. A second
                // SIGTERM ends a graceful stop at once.
                if opts.keep_on_exit || opts.stop_grace.is_zero() || stopping.is_some() {
                    info!("SIGTERM");
                    break;
                }
                stopping = Some(stopping::begin(&running, &mut facts, opts.stop_grace, "SIGTERM"));
            }
            _ = int.recv() => { info!("SIGINT"); break; }
            _ = announce_tick.tick(), if announcer.is_some() => {
                if let Some(a) = announcer.as_mut() {
                    a.update(&serving::eligible(&running, &facts).await);
                    facts.announce = Some(a.shown());
                }
            }
            _ = stop_tick.tick(), if stopping.is_some() => {
                if let Some(s) = stopping.as_mut() {
                    if let Some(ended) = s.ended(&running.dp) {
                        info!("{}", s.said(&ended));
                        running.dp.keep_on_exit(false);
                        break;
                    }
                }
            }
            _ = hup.recv() => {
                let asked = Instant::now();
                match reload(&mut running, &opts).await {
                    Ok(message) => {
                        board.apply.observe(asked.elapsed().as_secs_f64());
                        info!("{message}");
                        sync_checks(&running, &mut checks);
                        neighbours.set_wanted(running.current.next_hops.iter().copied());
                    }
                    Err(e) => warn!(error = %format!("{e:#}"), "reload refused"),
                }
            }
            Some(call) = calls.recv() => {
                if let Request::Stop { grace_ms } = call.request {
                    let grace = Duration::from_millis(grace_ms);
                    let message = if stopping.is_some() {
                        "already stopping".to_owned()
                    } else {
                        stopping = Some(stopping::begin(&running, &mut facts, grace, "lbctl stop"));
                        format!("stopping: no longer serving (keepalived gives MASTER up, announcements end), forwarding what still arrives for up to {}, then detaching", humantime::format_duration(grace))
                    };
                    if call.reply.send(Response::Done { message }).is_err() {
                        debug!("the stop command went before its answer");
                    }
                    continue;
                }
                let stop = matches!(&call.request, Request::Detach { iface } if facts.attached.len() == 1 && facts.attached[0].0 == *iface);
                let asked = Instant::now();
                let response = answer_request(&mut running, &opts, &mut facts, call.request).await;
                let changed = matches!(response, Response::Done { .. });
                if changed {
                    board.apply.observe(asked.elapsed().as_secs_f64());
                }
                if changed {
                    // The checks follow the reals; each real keeps its task and health.
                    sync_checks(&running, &mut checks);
                    neighbours.set_wanted(running.current.next_hops.iter().copied());
                    vmacs.set_wanted(running.current.interfaces.iter().map(|i| i.ifindex).collect());
                }
                if call.reply.send(response).is_err() {
                    debug!("the command went before its answer; what it did stands");
                }
                if stop && changed {
                    info!("the last interface was detached");
                    // Nothing left to keep forwarding.
                    running.dp.keep_on_exit(false);
                    break;
                }
            }
            Some(event) = events.recv() => {
                if checks.is_current(&event) {
                    let asked = Instant::now();
                    if on_health(&mut running, &moved, event) {
                        board.apply.observe(asked.elapsed().as_secs_f64());
                    }
                } else {
                    debug!(real = ?event.real, "a finding of a check since replaced; dropped");
                }
            }
            Some(change) = neighbour_changes.recv() => {
                if on_neighbour(&mut running, change).await {
                    sync_checks(&running, &mut checks);
                    neighbours.set_wanted(running.current.next_hops.iter().copied());
                }
            }
            Some(now) = vmac_changes.recv() => running.set_vmacs(&now),
            Some(batch) = sync_batches.recv() => {
                if let Some(installer) = facts.sync.as_mut() {
                    let ingress = running.current.interfaces.first().map_or(0, |i| i.ifindex);
                    installer.apply(&mut running.dp, &batch, ingress);
                }
            }
            Some(line) = moved_lines.recv() => running.note_change(line),
            _ = sweep.tick() => {
                if let Err(e) = running.dp.sweep() {
                    warn!(error = %format!("{e:#}"), "sweeping idle leastconn flows failed");
                }
            }
        }
    }
    drop(checks);
    if let Some(a) = &announcer {
        if opts.keep_on_exit && !facts.stopping {
            // A hand-over: the program forwards on, so its addresses stay announced.
            if let Err(e) = a.hand_over() {
                warn!(error = %format!("{e:#}"), "keeping the BGP announcements for the next lbctl failed: they are withdrawn until it announces them");
            }
        }
    }
    drop(announcer);
    let counters = running.dp.counters()?;
    drop(running);
    if opts.keep_on_exit {
        info!(pinned = %opts.pin_dir.display(), forwarded = counters.forwarded.packets, "stopped; the program keeps forwarding (--keep-on-exit) until the next lbctl takes over or `lbctl detach`");
    } else {
        info!(ifaces = %opts.ifaces.join(","), forwarded = counters.forwarded.packets, replies = counters.replies.packets, "detached");
    }
    Ok(())
}

/// Resolves, loads (taking over what an earlier lbctl left pinned), fills and attaches.
async fn start(
    opts: &Options,
    services: Vec<Service>,
    pins: StateDir,
) -> Result<(Running, Vec<AttachMode>)> {
    let current = resolve::resolve(
        &opts.ifaces,
        &services,
        opts.resolve_timeout,
        &BTreeSet::new(),
    )
    .await?;
    let dp = match Datapath::load_pinned(pins) {
        Ok(dp) => dp,
        Err(e) => {
            current.forget_neighbours().await;
            return Err(e);
        }
    };
    // Reals an earlier lbctl had down stay down until their checks pass `rise` times.
    let down = dp.recovered_down();
    let mut running = Running {
        ifaces: opts.ifaces.clone(),
        dp,
        configured: services,
        current: resolve::Resolved::empty(),
        health: BTreeMap::new(),
        board: CheckBoard::default(),
        changes: Default::default(),
        log: None,
    };
    running.seed_health(&current, &down);
    let kept: Vec<_> = current.services.iter().map(|s| s.vip).collect();
    // Everything that can refuse is asked before the maps (maybe in use) change; VIPs the
    // new configuration drops go first, freeing their ids.
    let filled = running
        .dp
        .check_attachable(&current.interfaces)
        .and_then(|()| running.check(&current))
        .and_then(|()| running.dp.retire_unclaimed(&kept))
        .and_then(|()| running.serve(&current))
        .and_then(|()| running.dp.attach_all(&current.interfaces));
    match filled {
        Ok(how) => {
            running.current = current;
            // Attached: the old program no longer runs; what it left is carried over now.
            // Serving beats stopping: a failure here costs the counters, not a flow.
            match running.dp.finish_takeover() {
                Ok(Some(done)) => info!("{done}"),
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "the pinned state was taken over, but not all of it could be carried over or pinned again; the next lbctl may refuse it (`lbctl detach` starts afresh)")
                }
            }
            Ok((running, how))
        }
        Err(e) => {
            current.forget_neighbours().await;
            Err(e)
        }
    }
}

fn sync_checks(running: &Running, checks: &mut Checks) {
    let known: BTreeMap<_, bool> = running
        .health
        .iter()
        .map(|(k, (up, _))| (*k, *up))
        .collect();
    let r = &running.current;
    checks.sync(&r.services, &r.interfaces, &known);
}

/// Applies a health change; returns whether the datapath changed. The change is logged once
/// the datapath has it (the line means it is in effect), and listed on the stats page.
fn on_health(running: &mut Running, moved: &MovedFlows, event: Event) -> bool {
    let (vip, addr, port) = event.real;
    let up = event.change == Change::WentUp;
    match running.set_health(event.real, up, event.why.clone()) {
        Err(e) => {
            warn!(%vip, real = %addr, port, up, error = %format!("{e:#}"), "applying a health change failed");
            false
        }
        Ok(false) => {
            debug!(%vip, real = %addr, port, "a finding about a real no longer checked; dropped");
            false
        }
        Ok(true) => {
            let (rise, fall) = running
                .current
                .services
                .iter()
                .find(|s| s.vip == vip)
                .and_then(|s| s.settings.check.as_ref())
                .map_or((1, 1), |c| (c.rise, c.fall));
            let line = if up {
                info!(%vip, real = %addr, port, "real is up: its checks pass again");
                format!("real {addr}:{port} of {vip} is UP: {rise} of {rise} checks passed; it takes new flows")
            } else {
                warn!(%vip, real = %addr, port, why = %event.why, "real is down: its checks fail; its flows move");
                let head = format!(
                    "real {addr}:{port} of {vip} is DOWN: {}, {fall} of {fall} checks failed",
                    event.why
                );
                let leastconn = running.current.services.iter().any(|s| {
                    s.vip == vip && s.settings.balance == crate::declare::spec::Balance::Leastconn
                });
                match (leastconn, running.dp.id_of_real(&vip, addr, port)) {
                    // leastconn counts a real's flows exactly, at once.
                    (true, _) => match running.dp.active_flows(&vip, addr, Some(port)) {
                        Ok(n) => format!("{head}; {n} active flows move"),
                        Err(e) => {
                            warn!(%vip, real = %addr, error = %format!("{e:#}"), "reading a down real's leastconn count failed");
                            format!("{head}; its flows move")
                        }
                    },
                    // Other schedulers' flows are counted in the flow table, off this loop;
                    // the line follows when the count is done.
                    (false, Some(real_id)) => {
                        moved.count(real_id, head);
                        return true;
                    }
                    (false, None) => format!("{head}; its flows move"),
                }
            };
            // After any DOWN line still being counted for.
            moved.line(line);
            true
        }
    }
}

/// Publishes what the HTTP listener shows: each real's state and health, the last changes.
fn publish(running: &Running, facts: &answer::Facts, board: &http::Board) {
    let reals = match answer::reals(running, None) {
        Response::Reals { reals } => reals,
        _ => Vec::new(),
    };
    let mut published = board.published.lock().unwrap_or_else(|p| p.into_inner());
    published.reals = reals;
    published.changes = running.changes.clone();
    published.real_ids = running.dp.real_ids();
    published.ha = http::Ha {
        vrrp: facts
            .vrrp
            .iter()
            .map(|((_, name), (state, _))| (name.clone(), state.clone()))
            .collect(),
        bgp: facts.announce.as_ref().map(|a| {
            let mut addrs: Vec<_> = running
                .current
                .services
                .iter()
                .map(|s| s.vip.addr)
                .collect();
            addrs.sort();
            addrs.dedup();
            addrs
                .into_iter()
                .map(|x| (x.to_string(), a.announced.contains(&x)))
                .collect()
        }),
        stopping: facts.stopping,
        sync: facts.sync.as_ref().map(|s| s.view()),
    };
}

/// Follows a next hop's MAC: the kernel learnt a new one (a gratuitous ARP, an unsolicited
/// NA, a real that came up), so everything is resolved again and what changed is applied.
/// A MAC lost (an entry failing or deleted) is not followed: the last one stays in use, as
/// such gaps are mostly brief and a real that is really gone fails its checks. Returns
/// whether what is served changed.
async fn on_neighbour(running: &mut Running, change: NeighbourChange) -> bool {
    let Some(mac) = change.mac else {
        debug!(addr = %change.addr, ifindex = change.ifindex, "a next hop lost its MAC; keeping the last one");
        return false;
    };
    info!(addr = %change.addr, mac = %resolve::fmt_mac(&mac), "a next hop's MAC changed: following it");
    match running.resolve_again().await {
        Ok(changed) => {
            info!(vips_changed = changed, "reals follow their next hops' MACs");
            changed > 0
        }
        Err(e) => {
            warn!(error = %format!("{e:#}"), "following a MAC change failed");
            false
        }
    }
}

/// Reads the configuration file again and serves it.
async fn reload(running: &mut Running, opts: &Options) -> Result<String> {
    let Source::File(path) = &opts.source else {
        anyhow::bail!("lbctl runs from command-line flags: there is no file to reload");
    };
    let services = config::load(path, datapath::possible_cpus()?)?;
    let changed = running.apply(services, opts.resolve_timeout).await?;
    running.log_services();
    Ok(format!(
        "reloaded {}: {changed} VIPs changed",
        path.display()
    ))
}

async fn answer_request(
    running: &mut Running,
    opts: &Options,
    facts: &mut answer::Facts,
    request: Request,
) -> Response {
    match request {
        Request::Status => answer::status(running, facts),
        // Handled by the loop, which owns the stop.
        Request::Stop { .. } => Response::Error {
            message: "stop is answered by the daemon's loop".into(),
        },
        Request::Check => answer::check(running, facts).await,
        Request::Vrrp { kind, name, state } => answer::vrrp(facts, kind, name, state),
        Request::Explain { proto, client, vip } => {
            let proto = match proto.as_str() {
                "tcp" => lb_common::PROTO_TCP,
                "udp" => lb_common::PROTO_UDP,
                other => {
                    return Response::Error {
                        message: format!("{other}: give tcp or udp"),
                    }
                }
            };
            match running.dp.explain(proto, client, vip) {
                Ok(e) => Response::Explained {
                    lines: e.lines,
                    real: e.real,
                    existing_flow: e.existing_flow,
                },
                Err(e) => answer::error(e),
            }
        }
        Request::VipList => answer::vips(running),
        Request::RealList { vip } => answer::reals(running, vip),
        Request::Reload => match reload(running, opts).await {
            Ok(message) => {
                info!("{message}");
                Response::Done { message }
            }
            Err(e) => answer::error(e),
        },
        Request::Edit { edit } => {
            let (next, said) = match edit::apply(&running.configured, &edit) {
                Ok(done) => done,
                Err(message) => return Response::Error { message },
            };
            match running.apply(next, opts.resolve_timeout).await {
                Ok(_) => {
                    info!(change = %said, "runtime change");
                    Response::Done { message: said }
                }
                Err(e) => answer::error(e),
            }
        }
        Request::Detach { iface } => match running.detach(&iface).await {
            Ok(()) => {
                facts.attached.retain(|(name, _)| *name != iface);
                info!(%iface, "detached from one interface");
                Response::Done {
                    message: format!("detached from {iface}"),
                }
            }
            Err(e) => answer::error(e),
        },
    }
}
