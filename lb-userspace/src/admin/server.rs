//! The daemon's end of the admin socket: accepts root's connections and hands each request
//! to the daemon's loop, which answers it between packets of other work (so a command never
//! races a reload or a health change).

use std::{
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tracing::warn;

use super::{Request, Response};

/// A request and where its answer goes.
pub struct Call {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

/// The listening socket; removed when dropped.
pub struct AdminSocket {
    path: PathBuf,
    task: JoinHandle<()>,
}

/// The longest request line taken: a VIP with a few thousand reals fits.
const MAX_REQUEST: usize = 1 << 20;

impl AdminSocket {
    /// Listens on `path` (mode 0600: root only), refusing when another lbctl listens there.
    pub fn listen(path: &Path) -> Result<(Self, mpsc::Receiver<Call>)> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                bail!(
                    "{} exists and is not a socket: give the admin socket another path (--socket)",
                    path.display()
                );
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!("another lbctl is running with admin socket {}: stop it, or give this one its own with --socket PATH", path.display());
            }
            // Left by an lbctl that did not stop cleanly.
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale admin socket {}", path.display()))?;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating {} for the admin socket", dir.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("listening on the admin socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} root-only", path.display()))?;
        let (calls, rx) = mpsc::channel(16);
        let task = tokio::spawn(accept(listener, calls));
        Ok((
            Self {
                path: path.to_owned(),
                task,
            },
            rx,
        ))
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        self.task.abort();
        // Gone already is fine: nothing to clean.
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(path = %self.path.display(), error = %e, "could not remove the admin socket");
            }
        }
    }
}

async fn accept(listener: UnixListener, calls: mpsc::Sender<Call>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, calls.clone()));
            }
            Err(e) => {
                warn!(error = %e, "accepting on the admin socket failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers the requests of one connection, a line each, until it closes.
async fn serve(stream: UnixStream, calls: mpsc::Sender<Call>) {
    // The socket's mode keeps others out; the peer's uid is checked as well, so a socket
    // made reachable by mistake (a bind mount, a chmod) still answers only root.
    let root = stream.peer_cred().is_ok_and(|c| c.uid() == 0);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        // At most one byte past the limit is read: a huge line costs no memory.
        let mut limited = (&mut reader).take(MAX_REQUEST as u64 + 1);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "reading from the admin socket failed");
                return;
            }
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let too_long = line.len() > MAX_REQUEST;
        let response = if !root {
            Response::Error {
                message: "the admin socket answers root only".into(),
            }
        } else if too_long {
            Response::Error {
                message: format!("a request is at most {MAX_REQUEST} bytes"),
            }
        } else {
            answer(&String::from_utf8_lossy(&line), &calls).await
        };
        let mut text = match serde_json::to_string(&response) {
            Ok(text) => text,
            Err(e) => serde_json::json!({"result": "error", "message": format!("cannot encode the answer: {e}")}).to_string(),
        };
        text.push('\n');
        if let Err(e) = write.write_all(text.as_bytes()).await {
            warn!(error = %e, "answering on the admin socket failed");
            return;
        }
        if too_long {
            // The rest of that line would read as requests of its own.
            return;
        }
    }
}

async fn answer(line: &str, calls: &mpsc::Sender<Call>) -> Response {
    let request = match serde_json::from_str::<Request>(line) {
        Ok(r) => r,
        Err(e) => {
            return Response::Error {
                message: format!("not a request lbctl knows: {e}"),
            }
        }
    };
    let (reply, answer) = oneshot::channel();
    if calls.send(Call { request, reply }).await.is_err() {
        return Response::Error {
            message: "lbctl is stopping".into(),
        };
    }
    answer.await.unwrap_or(Response::Error {
        message: "lbctl stopped before answering".into(),
    })
}
