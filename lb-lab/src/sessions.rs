//! Long-lived TCP connections: an echo server on the reals and clients that keep talking,
//! to show what happens to established flows while the reals change (flow affinity, drain,
//! a real going away).
//!
//! Protocol: the client sends a line; the server answers its name; again and again until the
//! client closes.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _, Result};

use super::{Netns, Server};

/// The port of the echo servers.
pub const SESSION_PORT: u16 = 9000;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// An echo server in a real's namespace: every connection on its own thread, answering
/// until the client closes or the server stops (when dropped).
pub struct EchoServer {
    /// Its stop flag stops the connections' threads too.
    listener: Server,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl EchoServer {
    pub fn start(ns: &Netns, name: &str, addr: SocketAddr) -> Result<Self> {
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (name, all) = (name.to_owned(), conns.clone());
        let listener = Server::listen(ns, addr, move |stream, _, stop| {
            let (name, stop) = (name.clone(), stop.clone());
            let conn = std::thread::spawn(move || echo(stream, &name, &stop));
            if let Ok(mut all) = all.lock() {
                all.push(conn);
            }
        })?;
        Ok(Self { listener, conns })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.listener.stop();
        let conns = self.conns.lock().map(|mut c| std::mem::take(&mut *c));
        for c in conns.unwrap_or_default() {
            let _ = c.join();
        }
    }
}

fn echo(stream: TcpStream, name: &str, stop: &AtomicBool) {
    // Each answer names the real and the client address:port it sees: a session that
    // survives something (a restart, an upgrade) must keep both (a one-arm SNAT port).
    // No peer address: the connection is gone already, and so is this handler.
    let Ok(peer) = stream.peer_addr().map(|p| p.to_string()) else {
        return;
    };
    serve_lines(&stream, stop, |_| format!("{name} {peer}\n"));
}

/// Answers each line the client sends with `answer(line)`, until it closes, an error, or
/// `stop`: the lab's line servers (echo, push).
pub(crate) fn serve_lines(
    stream: &TcpStream,
    stop: &AtomicBool,
    mut answer: impl FnMut(&str) -> String,
) {
    // Errors end this connection only.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                let mut out = stream;
                if out.write_all(answer(line.trim()).as_bytes()).is_err() {
                    return;
                }
                line.clear();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// One client connection and what became of it.
#[derive(Clone, Debug, Default)]
pub struct SessionState {
    /// The real that answered first.
    pub real: String,
    /// The client's address and port as that real sees them (one-arm: the SNAT source).
    pub seen_as: Option<SocketAddr>,
    /// Exchanges answered.
    pub answered: u64,
    /// The first failure: a reset, a stall (no answer within 2 s), another real answering,
    /// the real seeing the client from another address or port.
    pub failure: Option<String>,
}

/// Client connections opened from a namespace to a target, talked to in turn by a thread of
/// their own every 50 ms until dropped.
pub struct Sessions {
    states: Arc<Mutex<Vec<SessionState>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sessions {
    /// Opens `count` connections from `ns` to `target` and starts talking.
    pub fn open(ns: &Netns, target: SocketAddr, count: usize) -> Result<Self> {
        Self::open_patient(ns, target, count, IO_TIMEOUT)
    }

    /// As [`Sessions::open`], a connection failing only when an answer takes longer than
    /// `patience` (a failover's gap is a stall, not a loss, as long as TCP gets through).
    pub fn open_patient(
        ns: &Netns,
        target: SocketAddr,
        count: usize,
        patience: Duration,
    ) -> Result<Self> {
        let streams = ns.run(move || -> Result<Vec<BufReader<TcpStream>>> {
            (0..count)
                .map(|i| {
                    let s = TcpStream::connect_timeout(&target, IO_TIMEOUT)
                        .with_context(|| format!("connect #{i} to {target}"))?;
                    s.set_read_timeout(Some(patience))?;
                    Ok(BufReader::new(s))
                })
                .collect()
        })??;
        let states = Arc::new(Mutex::new(vec![SessionState::default(); count]));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, flag) = (states.clone(), stop.clone());
        let thread = std::thread::spawn(move || talk(streams, &st, &flag));
        let s = Self {
            states,
            stop,
            thread: Some(thread),
        };
        // Every connection answered once: each knows its real.
        s.wait_for(Duration::from_secs(5), |all| {
            all.iter().all(|c| c.answered > 0)
        })?;
        Ok(s)
    }

    /// What became of each connection so far.
    pub fn states(&self) -> Vec<SessionState> {
        self.states.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until every connection answered `more` exchanges past now (or failed).
    pub fn keep_talking(&self, more: u64) -> Result<()> {
        self.keep_talking_within(more, Duration::from_secs(10))
    }

    /// As [`Sessions::keep_talking`], waiting up to `limit`.
    pub fn keep_talking_within(&self, more: u64, limit: Duration) -> Result<()> {
        let base: Vec<u64> = self.states().iter().map(|c| c.answered).collect();
        self.wait_for(limit, |all| {
            all.iter()
                .zip(&base)
                .all(|(c, b)| c.failure.is_some() || c.answered >= b + more)
        })
    }

    fn wait_for(&self, limit: Duration, done: impl Fn(&[SessionState]) -> bool) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let states = self.states();
            if done(&states) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "sessions did not get there within {limit:?}: {states:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends a line on every live connection in turn, reads the answer, every 50 ms.
fn talk(
    mut streams: Vec<BufReader<TcpStream>>,
    states: &Mutex<Vec<SessionState>>,
    stop: &AtomicBool,
) {
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        for (i, s) in streams.iter_mut().enumerate() {
            // Stopping: no more exchanges (each may wait out its read timeout).
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let failed = states
                .lock()
                .map(|st| st[i].failure.is_some())
                .unwrap_or(true);
            if failed {
                continue;
            }
            line.clear();
            let result = s
                .get_mut()
                .write_all(b"ping\n")
                .and_then(|()| s.read_line(&mut line));
            let Ok(mut st) = states.lock() else { return };
            let c = &mut st[i];
            match result {
                Ok(0) => c.failure = Some("closed by the other end".into()),
                Ok(_) => {
                    let mut words = line.split_whitespace();
                    let real = words.next().unwrap_or_default();
                    let seen_as = words.next().and_then(|w| w.parse().ok());
                    if c.real.is_empty() {
                        c.real = real.to_owned();
                        c.seen_as = seen_as;
                    }
                    if c.real != real {
                        c.failure = Some(format!("{real} answered, not {}", c.real));
                    } else if c.seen_as != seen_as {
                        c.failure = Some(format!(
                            "{real} now sees the session from {seen_as:?}, before from {:?}",
                            c.seen_as
                        ));
                    } else {
                        c.answered += 1;
                    }
                }
                Err(e) => c.failure = Some(format!("{e}")),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
