//! The commands' end of the admin socket.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::UnixStream,
};

use super::{Request, Response};

/// Sends `request` to the lbctl listening on `socket` and returns its answer.
pub async fn call(socket: &Path, request: &Request) -> Result<Response> {
    let stream = UnixStream::connect(socket).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => anyhow!(
            "no lbctl is running with admin socket {}: start one (`lbctl attach IFACE ...`), or name its socket with --socket",
            socket.display()
        ),
        std::io::ErrorKind::PermissionDenied => {
            anyhow!("{} is root's: run this as root", socket.display())
        }
        _ => anyhow!(e).context(format!("connecting to {}", socket.display())),
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(request).context("encoding the request")?;
    line.push('\n');
    write
        .write_all(line.as_bytes())
        .await
        .context("sending the request")?;
    let mut answer = String::new();
    BufReader::new(read)
        .read_line(&mut answer)
        .await
        .context("reading the answer")?;
    if answer.is_empty() {
        return Err(anyhow!("lbctl closed the admin socket without answering"));
    }
    serde_json::from_str(&answer).with_context(|| format!("an answer lbctl cannot read: {answer}"))
}
