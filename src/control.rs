//! The local control socket of a running `mailshare serve`: `<store>/control.sock`,
//! mode 0600 (only the service's user, and root, can connect). Commands that
//! need the open store while the server holds its lock go through it; today
//! that is `mailshare backup`. One JSON line in, one JSON line out.

use crate::shutdown::Shutdown;
use crate::store::{BackupReport, Store};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// The socket's path for a store directory.
pub fn socket_path(store: &Path) -> PathBuf {
    store.join("control.sock")
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    /// Back the store up into this (absolute, new or empty) directory.
    Backup(PathBuf),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Backup(BackupReport),
    Error(String),
}

/// Longest request line accepted.
const MAX_REQUEST: usize = 8192;

/// Serve the control socket until shutdown. A stale socket file from a
/// crashed process is replaced (the store's LOCK already proved no other
/// server runs).
pub async fn serve(
    store_dir: &Path,
    store: Arc<dyn Store>,
    mut shutdown: Shutdown,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(store_dir);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                _ = shutdown.fired() => break,
                c = listener.accept() => c,
            };
            let Ok((stream, _)) = conn else { continue };
            let store = store.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut line = String::new();
                let mut r = tokio::io::BufReader::new(r).take(MAX_REQUEST as u64);
                let reply =
                    match tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
                        .await
                    {
                        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim_end()) {
                            Ok(Request::Backup(dest)) if dest.is_absolute() => {
                                tracing::info!(dest = %dest.display(), "backup requested");
                                match tokio::task::spawn_blocking(move || store.backup(&dest)).await
                                {
                                    Ok(Ok(report)) => Reply::Backup(report),
                                    Ok(Err(e)) => Reply::Error(e.to_string()),
                                    Err(e) => Reply::Error(format!("backup task failed: {e}")),
                                }
                            }
                            Ok(Request::Backup(_)) => {
                                Reply::Error("the backup directory must be an absolute path".into())
                            }
                            Err(e) => Reply::Error(format!("bad request: {e}")),
                        },
                        _ => Reply::Error("no request in time".into()),
                    };
                let mut out = serde_json::to_string(&reply).unwrap_or_default();
                out.push('\n');
                let _ = w.write_all(out.as_bytes()).await;
            });
        }
        let _ = std::fs::remove_file(&path);
    }))
}

/// Ask the running server to back its store up into `dest`.
pub fn request_backup(store_dir: &Path, dest: &Path) -> anyhow::Result<BackupReport> {
    let path = socket_path(store_dir);
    let stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        anyhow::anyhow!(
            "the store is in use, but its control socket {} does not answer ({e}); is `mailshare serve` running as this user?",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(3600)))?;
    let mut req = serde_json::to_string(&Request::Backup(dest.to_path_buf()))?;
    req.push('\n');
    (&stream).write_all(req.as_bytes())?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    match serde_json::from_str::<Reply>(line.trim_end())? {
        Reply::Backup(r) => Ok(r),
        Reply::Error(e) => Err(anyhow::anyhow!("the server could not back up: {e}")),
    }
}
