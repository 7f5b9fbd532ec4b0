//! The health checks' probes: a TCP connect, an HTTP GET, a UDP exchange, each within its
//! timeout, from the LB to a real.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
    time::timeout,
};

use crate::health::check::Probe;

/// Runs `probe` against `target` within `limit`: `Ok` when the real answered as it should,
/// else why not.
pub async fn run(probe: &Probe, target: SocketAddr, limit: Duration) -> Result<(), String> {
    match timeout(limit, attempt(probe, target)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(limit)
        )),
    }
}

async fn attempt(probe: &Probe, target: SocketAddr) -> Result<(), String> {
    match probe {
        Probe::Tcp => TcpStream::connect(target)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Probe::Http { path, status } => http(target, path, *status).await,
        Probe::Udp { payload } => udp(target, payload).await,
    }
}

async fn http(target: SocketAddr, path: &str, want: u16) -> Result<(), String> {
    let mut s = TcpStream::connect(target)
        .await
        .map_err(|e| e.to_string())?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {target}\r\nUser-Agent: lbctl-check\r\n\r\n");
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    // The status line is all a check needs: "HTTP/1.x NNN ...".
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let mut words = line.split_whitespace();
    let status = match (words.next(), words.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code.parse::<u16>().ok(),
        _ => None,
    };
    match status {
        Some(s) if s == want => Ok(()),
        Some(s) => Err(format!("HTTP status {s}, not {want}")),
        None => Err(format!("not an HTTP answer: {line:?}")),
    }
}

async fn udp(target: SocketAddr, payload: &str) -> Result<(), String> {
    let local: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|e| format!("{e}"))?;
    let s = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
    s.connect(target).await.map_err(|e| e.to_string())?;
    s.send(payload.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    // A closed port answers ICMP port unreachable: the connected socket's recv fails.
    s.recv(&mut buf).await.map(drop).map_err(|e| e.to_string())
}
