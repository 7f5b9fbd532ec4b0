//! The HTTP listener of `lbctl attach --http ADDR` (off by default): `/metrics` for
//! Prometheus, `/` the stats page, `/healthz` for supervisors. Every answer is made from the
//! datapath's maps (read at the request, as `lbctl stats` reads them) and from what the
//! daemon last published; it never waits for a change the daemon is making (a reload stuck on
//! ARP, a slow check, both asynchronous). It shares the daemon's one thread, so it waits for
//! the short synchronous steps the daemon takes between them (a map update, a sweep of
//! leastconn's idle flows, a batch of flow log lines).

pub mod metrics;
pub mod page;

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use http_body_util::Full;
use hyper::{
    body::Bytes, header, server::conn::http1, service::service_fn, Method, Request, StatusCode,
};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio::net::TcpListener;
use tracing::debug;

use crate::{
    admin,
    health::board::CheckBoard,
    stats::{self, rates, show},
};

/// How many state changes the page lists.
pub const CHANGES: usize = 20;

/// What the daemon publishes after every change it makes, for the listener to read.
#[derive(Debug, Default)]
pub struct Published {
    /// Each real with the operator's state and its health.
    pub reals: Vec<admin::RealRow>,
    /// The last state changes, newest first, each with its time.
    pub changes: VecDeque<String>,
    /// The real ids in use: a scrape reads only their counters.
    pub real_ids: Vec<u32>,
    /// Beyond one machine: VRRP states, BGP announcements, a stop under way.
    pub ha: Ha,
}

/// What the daemon knows of its place among several LBs.
#[derive(Clone, Debug, Default)]
pub struct Ha {
    /// Each VRRP instance (or group) keepalived told of, and its state.
    pub vrrp: Vec<(String, String)>,
    /// With BGP: each configured VIP address and whether it is announced.
    pub bgp: Option<Vec<(String, bool)>>,
    pub stopping: bool,
    /// With flow sync: records by direction (sent, received, installed, removed), drops
    /// and refusals by reason, the last message's lag, whether synced.
    pub sync: Option<SyncView>,
}

#[derive(Clone, Debug, Default)]
pub struct SyncView {
    pub records: Vec<(&'static str, u64)>,
    pub dropped: Vec<(&'static str, u64)>,
    pub lag_ms: u64,
    pub synced: bool,
}

/// Shared by the daemon (which writes) and the listener (which reads).
#[derive(Clone, Debug)]
pub struct Board {
    pub published: Arc<Mutex<Published>>,
    pub checks: CheckBoard,
    /// Seconds from a change asked to the datapath serving it.
    pub apply: Histogram,
}

impl Board {
    pub fn new(checks: CheckBoard) -> Self {
        Self {
            published: Arc::default(),
            checks,
            // 1 ms to ~16 s.
            apply: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        }
    }

    /// The daemon's rows, with the checks as they are now.
    fn daemon_rows(&self) -> show::Daemon {
        let mut rows = lock(&self.published).reals.clone();
        for r in &mut rows {
            let key = (r.vip, r.real.addr, r.real.port.unwrap_or(r.vip.port));
            if let Some(c) = self.checks.get(&key) {
                r.since_secs = Some(c.since.elapsed().as_secs());
                r.last_check = c.last.map(admin::CheckRow::from);
            }
        }
        show::daemon_rows(rows)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every write is a whole assignment: a poisoned lock still holds a whole value.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks the address `--http` names: loopback, unless `public` (`--http-public`).
pub fn check_address(addr: SocketAddr, public: bool) -> Result<()> {
    if !addr.ip().is_loopback() && !public {
        bail!("--http {addr} is not a loopback address: the stats show your VIPs, reals and traffic to whoever reaches it. Give 127.0.0.1 (or ::1), or add --http-public to serve them on {} anyway", addr.ip());
    }
    Ok(())
}

/// Binds `addr` (before anything else is touched: a port in use refuses the start).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} for --http"))
}

/// How often the flow table is walked for the active flows per real, at most (a scrape never
/// walks it: at a million flows a walk takes seconds).
pub const FLOW_COUNT_EVERY: Duration = Duration::from_secs(5);

/// A walk's time × this is the least time until the next: walking takes at most a tenth of
/// a CPU (1 M dsr flows, 1.7 s a walk in the bench: every 17 s).
const FLOW_COUNT_DUTY: u32 = 10;

/// The listener's state.
struct Site {
    /// The interfaces lbctl serves on: the maps are those of the program on the first one
    /// still attached (one may be detached at runtime).
    ifaces: Vec<String>,
    board: Board,
    /// The maps of the program attached, opened once per program.
    reader: Mutex<Option<stats::Reader>>,
    /// The flow table's last count.
    flows: Mutex<stats::FlowCount>,
    /// The last reading, for the page's rates.
    last: Mutex<Option<stats::Stats>>,
}

impl Site {
    /// The interface whose program is read, and that program's id.
    async fn program(&self) -> Result<(String, u32)> {
        let mut last = None;
        for iface in &self.ifaces {
            match stats::attached_program(iface).await {
                Ok(id) => return Ok((iface.clone(), id)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("lbctl serves no interface")))
    }

    /// Reads the counters of program `prog_id`, opening its maps when it is new.
    fn read(&self, iface: &str, prog_id: u32) -> Result<stats::Stats> {
        let ids = lock(&self.board.published).real_ids.clone();
        let flows = lock(&self.flows).clone();
        let mut reader = lock(&self.reader);
        if reader.as_ref().is_none_or(|r| r.prog_id != prog_id) {
            *reader = Some(stats::Reader::open(iface, prog_id)?);
        }
        let how = stats::How {
            real_ids: Some(&ids),
            flows: Some(&flows),
        };
        reader
            .as_ref()
            .context("the maps were just opened")?
            .read(&how)
    }
}

/// Counts the flow table every FLOW_COUNT_EVERY (or, for a table so large that a walk takes
/// over a tenth of that, ten walks' time apart), off the runtime's thread.
async fn count_flows(site: Arc<Site>) {
    loop {
        let started = std::time::Instant::now();
        if let Ok((iface, prog_id)) = site.program().await {
            let counted = tokio::task::spawn_blocking(move || {
                stats::Reader::open(&iface, prog_id)?.count_flows()
            })
            .await;
            match counted {
                Ok(Ok(count)) => *lock(&site.flows) = count,
                Ok(Err(e)) => debug!(error = %format!("{e:#}"), "counting the flow table failed"),
                Err(e) => debug!(error = %e, "the flow count task failed"),
            }
        }
        let walked = started.elapsed();
        tokio::time::sleep(FLOW_COUNT_EVERY.max(walked * FLOW_COUNT_DUTY)).await;
    }
}

/// Answers HTTP on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, ifaces: Vec<String>, board: Board) {
    let site = Arc::new(Site {
        ifaces,
        board,
        reader: Mutex::new(None),
        flows: Mutex::new(stats::FlowCount::default()),
        last: Mutex::new(None),
    });
    let counter = tokio::spawn(count_flows(site.clone()));
    let _stop_counting = AbortOnDrop(counter);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "accepting an HTTP connection failed");
                continue;
            }
        };
        let site = site.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let site = site.clone();
                async move { Ok::<_, Infallible>(answer(&site, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "an HTTP connection ended badly");
            }
        });
    }
}

type Answer = hyper::Response<Full<Bytes>>;

async fn answer(site: &Site, req: Request<hyper::body::Incoming>) -> Answer {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    let path = req.uri().path();
    if !matches!(path, "/" | "/metrics" | "/healthz") {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /, /metrics or /healthz\n".into(),
        );
    }
    let reading = match site
        .program()
        .await
        .and_then(|(iface, prog_id)| site.read(&iface, prog_id))
    {
        Ok(s) => s,
        Err(e) => {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not serving: {e:#}\n"),
            )
        }
    };
    let daemon = site.board.daemon_rows();
    match path {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/metrics" => {
            let view = show::View::new(&reading, None, Some(&daemon));
            let ha = site
                .board
                .published
                .lock()
                .map(|p| p.ha.clone())
                .unwrap_or_default();
            match metrics::render(&view, Some(&site.board.apply), &ha) {
                Ok(text) => reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("encoding the metrics failed: {e}\n"),
                ),
            }
        }
        _ => {
            let rates = {
                let mut last = lock(&site.last);
                let rates = last.as_ref().map(|before| rates::of(before, &reading));
                *last = Some(reading.clone());
                rates
            };
            let view = show::View::new(&reading, rates.as_ref(), Some(&daemon));
            let changes: Vec<String> = lock(&site.board.published)
                .changes
                .iter()
                .cloned()
                .collect();
            reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                page::render(&view, &site.ifaces.join(", "), &changes),
            )
        }
    }
}

/// A task stopped when its handle is dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Answer {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_without_http_public() {
        assert!(check_address("127.0.0.1:9180".parse().unwrap(), false).is_ok());
        assert!(check_address("[::1]:9180".parse().unwrap(), false).is_ok());
        let err = check_address("198.18.0.1:9180".parse().unwrap(), false).unwrap_err();
        assert!(err.to_string().contains("--http-public"), "{err}");
        assert!(check_address("198.18.0.1:9180".parse().unwrap(), true).is_ok());
    }
}
