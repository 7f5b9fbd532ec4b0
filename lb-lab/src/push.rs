//! Connections on which the real speaks first: after a failover, the first packet of such a
//! connection to cross the new LB is the real's (a server push, a database notifying, an
//! SSH session printing), which a stateful LB can only translate if it has the flow.
//!
//! Protocol: the client says `hello`, the server answers `hi NAME`; then both wait. When
//! told ([`PushServer::push_all`]) the server writes `push NAME`; the client answers
//! `ack`, the server `ok NAME`.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use super::{Netns, Server};

/// The server side, in a real's namespace; stops when dropped.
pub struct PushServer {
    _listener: Server,
    name: String,
    /// A write handle on every connection greeted so far.
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl PushServer {
    pub fn start(ns: &Netns, name: &str, addr: SocketAddr) -> Result<Self> {
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (n, all) = (name.to_owned(), conns.clone());
        let listener = Server::listen(ns, addr, move |stream, _, stop| {
            let (n, all, stop) = (n.clone(), all.clone(), stop.clone());
            std::thread::spawn(move || {
                super::sessions::serve_lines(&stream, &stop, |line| {
                    if line == "hello" {
                        if let (Ok(w), Ok(mut all)) = (stream.try_clone(), all.lock()) {
                            all.push(w);
                        }
                        format!("hi {n}\n")
                    } else {
                        format!("ok {n}\n")
                    }
                });
            });
        })?;
        Ok(Self {
            _listener: listener,
            name: name.to_owned(),
            conns,
        })
    }

    /// The real speaks first on every connection it greeted; returns on how many.
    pub fn push_all(&self) -> usize {
        let conns = self.conns.lock().map(|c| {
            c.iter()
                .filter_map(|s| s.try_clone().ok())
                .collect::<Vec<_>>()
        });
        let mut pushed = 0;
        for mut s in conns.unwrap_or_default() {
            if s.write_all(format!("push {}\n", self.name).as_bytes())
                .is_ok()
            {
                pushed += 1;
            }
        }
        pushed
    }
}

/// Client connections that wait for their real to speak.
pub struct Waiters {
    conns: Vec<(BufReader<TcpStream>, String)>,
}

impl Waiters {
    /// Opens `count` connections from `ns` to `target`, each greeted by its real; an answer
    /// may take up to `patience`.
    pub fn open(ns: &Netns, target: SocketAddr, count: usize, patience: Duration) -> Result<Self> {
        let conns = ns.run(move || -> Result<Vec<(BufReader<TcpStream>, String)>> {
            (0..count)
                .map(|i| {
                    let s = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                        .with_context(|| format!("connect #{i} to {target}"))?;
                    s.set_read_timeout(Some(patience))?;
                    (&s).write_all(b"hello\n")?;
                    let mut r = BufReader::new(s);
                    let mut line = String::new();
                    r.read_line(&mut line)
                        .with_context(|| format!("greeting #{i}"))?;
                    let real = line
                        .trim()
                        .strip_prefix("hi ")
                        .with_context(|| format!("greeting #{i}: {line:?}"))?
                        .to_owned();
                    Ok((r, real))
                })
                .collect()
        })??;
        Ok(Self { conns })
    }

    /// Waits on each connection for its real's push, answers it, and reads the real's
    /// answer, all within `within`: each connection's outcome (the first thing that went
    /// wrong).
    pub fn answer_pushes(self, within: Duration) -> Vec<Result<(), String>> {
        let deadline = std::time::Instant::now() + within;
        self.conns
            .into_iter()
            .map(|(mut r, real)| {
                // What is left of the batch's time, at least a moment to read what came.
                let left = deadline
                    .saturating_duration_since(std::time::Instant::now())
                    .max(Duration::from_millis(10));
                r.get_ref()
                    .set_read_timeout(Some(left))
                    .map_err(|e| format!("{e}"))?;
                let push = read(&mut r, "the push").map_err(|e| format!("{e:#}"))?;
                if push != format!("push {real}") {
                    return Err(format!("{push:?}, not from {real}"));
                }
                r.get_mut()
                    .write_all(b"ack\n")
                    .map_err(|e| format!("ack: {e}"))?;
                let ok = read(&mut r, "the answer to ack").map_err(|e| format!("{e:#}"))?;
                if ok != format!("ok {real}") {
                    return Err(format!("{ok:?}, not from {real}"));
                }
                Ok(())
            })
            .collect()
    }
}

fn read(r: &mut BufReader<TcpStream>, what: &str) -> Result<String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => bail!("closed waiting for {what}"),
        Ok(_) => Ok(line.trim().to_owned()),
        Err(e) => Err(e).with_context(|| format!("waiting for {what}")),
    }
}
