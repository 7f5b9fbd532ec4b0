//! The lab's real servers and client: plain sockets opened inside the namespaces.
//!
//! Protocol: the client sends one line (TCP) or datagram (UDP); the server answers `NAME
//! CLIENT-ADDRESS PORT` (the address it saw the request come from, the port it serves) and,
//! for TCP, closes. That one line proves which real answered, what each mode does to the
//! client's address, and where port translation led.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _, Result};

use super::Netns;

const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A TCP or UDP server in a real's namespace; stops when dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `addr` inside `ns` and answers every connection with `name`.
    pub fn start_tcp(ns: &Netns, name: &str, addr: SocketAddr) -> Result<Self> {
        let name = name.to_owned();
        Self::listen(ns, addr, move |stream, peer, _| {
            answer(stream, &name, peer.ip(), addr.port())
        })
    }

    /// Listens on TCP `addr` inside `ns` and hands every connection to `serve`, with the flag
    /// that says the server is stopping, until it stops.
    pub fn listen(
        ns: &Netns,
        addr: SocketAddr,
        mut serve: impl FnMut(TcpStream, SocketAddr, &Arc<AtomicBool>) + Send + 'static,
    ) -> Result<Self> {
        let listener = ns
            .run(move || TcpListener::bind(addr))?
            .with_context(|| format!("binding {addr} in {}", ns.name()))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => serve(stream, peer, &flag),
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Listens on UDP `addr` inside `ns` and answers every datagram with `name`.
    pub fn start_udp(ns: &Netns, name: &str, addr: SocketAddr) -> Result<Self> {
        let socket = ns
            .run(move || UdpSocket::bind(addr))?
            .with_context(|| format!("binding udp {addr} in {}", ns.name()))?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let name = name.to_owned();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                // A timeout or a bad datagram costs only its own answer.
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let text = format!("{name} {} {}\n", peer.ip(), addr.port());
                    let _ = socket.send_to(text.as_bytes(), peer);
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops accepting; what is already accepted has been answered.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(stream: TcpStream, name: &str, peer: IpAddr, port: u16) {
    // A client that misbehaves only costs itself: errors end this connection, nothing else.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    // Connect-and-close (a TCP health check) reads end of file: nothing was asked, nothing
    // is answered.
    if reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        let _ = (&stream).write_all(format!("{name} {peer} {port}\n").as_bytes());
    }
}

/// One answered request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Name of the real that answered.
    pub real: String,
    /// The client address that real saw.
    pub client_seen: IpAddr,
    /// The port the real served the request on.
    pub port: u16,
}

/// Makes `count` TCP connections from `ns` to `target`, one request each, one after another.
/// Each element is the reply or why there was none.
pub fn drive_tcp(
    ns: &Netns,
    target: SocketAddr,
    count: usize,
) -> Result<Vec<Result<Reply, String>>> {
    drive_tcp_padded(ns, target, count, 0)
}

/// As [`drive_tcp`], with `padding` extra bytes in each request (larger than one segment, to
/// exercise path-MTU handling).
pub fn drive_tcp_padded(
    ns: &Netns,
    target: SocketAddr,
    count: usize,
    padding: usize,
) -> Result<Vec<Result<Reply, String>>> {
    ns.run(move || {
        (0..count)
            .map(|i| request(target, i, padding).map_err(|e| format!("{e:#}")))
            .collect()
    })
}

/// One TCP request `i` to `target` from the calling thread, which must be in the client's
/// namespace (a thread of `Netns::spawn`): for load generators that run there.
pub fn request_tcp(target: SocketAddr, i: usize) -> Result<Reply> {
    request(target, i, 0)
}

fn request(target: SocketAddr, i: usize, padding: usize) -> Result<Reply> {
    let start = Instant::now();
    let mut s =
        TcpStream::connect_timeout(&target, IO_TIMEOUT).with_context(|| format!("connect #{i}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(format!("request {i} {}\n", "x".repeat(padding)).as_bytes())
        .context("send")?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .with_context(|| format!("reply #{i} after {:?}", start.elapsed()))?;
    parse_reply(&text)
}

/// Sends `count` UDP requests from `ns` to `target`, each from a new socket (a new source
/// port: a new flow), one after another. Each element is the reply or why there was none.
pub fn drive_udp(
    ns: &Netns,
    target: SocketAddr,
    count: usize,
) -> Result<Vec<Result<Reply, String>>> {
    ns.run(move || {
        (0..count)
            .map(|i| udp_request(target, i).map_err(|e| format!("{e:#}")))
            .collect()
    })
}

fn udp_request(target: SocketAddr, i: usize) -> Result<Reply> {
    let s = UdpSocket::bind("0.0.0.0:0").context("bind")?;
    s.connect(target).context("connect")?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.send(format!("request {i}\n").as_bytes())
        .context("send")?;
    let mut buf = [0u8; 512];
    let n = s
        .recv(&mut buf)
        .with_context(|| format!("udp reply #{i}"))?;
    parse_reply(&String::from_utf8_lossy(&buf[..n]))
}

fn parse_reply(text: &str) -> Result<Reply> {
    let mut words = text.split_whitespace();
    let (Some(real), Some(seen), Some(port)) = (words.next(), words.next(), words.next()) else {
        return Err(anyhow!("malformed reply {text:?}"));
    };
    Ok(Reply {
        real: real.to_owned(),
        client_seen: seen.parse().context("client address in reply")?,
        port: port.parse().context("port in reply")?,
    })
}
