//! The capture spool: a message upstream accepted but whose capture failed
//! (store full, parse panic…) is written here, so nothing is silently lost.
//! `mailshare ingest -c mailshare.toml --spool` replays every entry through
//! the normal capture path and removes the entries it captured.
//!
//! An entry is two files with one name: `NAME.eml` (the message as the
//! client sent it, `X-Mailshare-Share` included; only its header block when
//! the message was over the capture limit) and `NAME.json`, the sidecar:
//!
//! ```json
//! {"owner": "alice@acme.example", "direction": "outbound",
//!  "envelope_recipients": ["bob@client-a.example"],
//!  "message_id": "abc@acme.example", "headers_only_size": null,
//!  "error": "store: …", "spooled_at": 1764000000}
//! ```
//!
//! The `.eml` is written and synced first, the sidecar second: an entry
//! without its sidecar is incomplete and skipped by replay. Files are mode
//! 0600 in a 0700 directory (they hold mail).

use crate::engine::Direction;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The sidecar of one spooled message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolMeta {
    /// The policy user (address) whose session relayed it.
    pub owner: String,
    pub direction: Direction,
    pub envelope_recipients: Vec<String>,
    /// For the operator: which message this is.
    pub message_id: Option<String>,
    /// Set when the `.eml` holds only the header block of a message of this size.
    pub headers_only_size: Option<u64>,
    /// Why the capture failed.
    pub error: String,
    /// Unix seconds.
    pub spooled_at: i64,
}

/// One complete spool entry.
#[derive(Clone, Debug)]
pub struct SpoolEntry {
    pub eml: PathBuf,
    pub sidecar: PathBuf,
    pub meta: SpoolMeta,
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// Write one entry; returns the `.eml` path.
///
/// # Errors
/// Any file system error (the caller logs it: the message is then lost to
/// capture, though upstream has it).
pub fn write(dir: &Path, raw: &[u8], meta: &SpoolMeta) -> io::Result<PathBuf> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut rnd = [0u8; 6];
    getrandom::getrandom(&mut rnd).map_err(|e| io::Error::other(e.to_string()))?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let name = format!("{millis}-{}", hex::encode(rnd));
    let eml = dir.join(format!("{name}.eml"));
    write_synced(&eml, raw)?;
    let json = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
    write_synced(&dir.join(format!("{name}.json")), &json)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(eml)
}

/// Every complete entry in `dir`, oldest first; unreadable sidecars are
/// reported as errors alongside.
///
/// # Errors
/// The directory cannot be read.
pub fn list(dir: &Path) -> io::Result<Vec<Result<SpoolEntry, String>>> {
    let mut sidecars: Vec<PathBuf> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    sidecars.sort();
    Ok(sidecars
        .into_iter()
        .map(|sidecar| {
            let eml = sidecar.with_extension("eml");
            if !eml.exists() {
                return Err(format!("{}: no matching .eml", sidecar.display()));
            }
            let text = fs::read(&sidecar).map_err(|e| format!("{}: {e}", sidecar.display()))?;
            let meta: SpoolMeta = serde_json::from_slice(&text)
                .map_err(|e| format!("{}: invalid sidecar: {e}", sidecar.display()))?;
            Ok(SpoolEntry { eml, sidecar, meta })
        })
        .collect())
}

/// Remove a replayed entry.
///
/// # Errors
/// The files cannot be removed.
pub fn remove(entry: &SpoolEntry) -> io::Result<()> {
    fs::remove_file(&entry.sidecar)?;
    fs::remove_file(&entry.eml)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let meta = SpoolMeta {
            owner: "alice@acme.example".into(),
            direction: Direction::Outbound,
            envelope_recipients: vec!["bob@client-a.example".into()],
            message_id: Some("m1@acme.example".into()),
            headers_only_size: None,
            error: "store: disk full".into(),
            spooled_at: 1,
        };
        let eml = write(&spool, b"Subject: s\r\n\r\nbody\r\n", &meta).unwrap();
        // An incomplete entry (no sidecar) is skipped.
        fs::write(spool.join("0-dead.eml"), b"x").unwrap();
        let entries = list(&spool).unwrap();
        assert_eq!(entries.len(), 1);
        let e = entries[0].as_ref().unwrap();
        assert_eq!(e.eml, eml);
        assert_eq!(e.meta, meta);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&eml).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&spool).unwrap().permissions().mode() & 0o777,
            0o700
        );
        remove(e).unwrap();
        assert!(list(&spool).unwrap().is_empty());
    }
}
