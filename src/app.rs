//! Composition root: loads configuration and policy, opens the store, runs
//! the commands that need them. The only module that wires everything
//! together (nothing imports `app`).

use crate::config;
use crate::engine::Direction;
use crate::ingest::{self, IngestRequest};
use crate::store::{SledStore, Store, StoreError, StoreOptions};
use anyhow::{anyhow, Context};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

/// A new API token and the hash to put in the policy.
pub struct NewToken {
    pub token: String,
    pub sha256_hex: String,
}

/// 256 random bits from the OS, as `ms_` + 64 hex digits.
pub fn new_token() -> NewToken {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("ms_{}", hex::encode(bytes));
    let sha256_hex = hex::encode(Sha256::digest(token.as_bytes()));
    NewToken { token, sha256_hex }
}

/// Seconds since the epoch (0 if the clock is before it).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn load(config_path: &Path) -> anyhow::Result<config::Loaded> {
    config::load(config_path).map_err(|diags| {
        let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
        anyhow!(
            "invalid configuration ({} error(s)):\n{}",
            diags.len(),
            lines.join("\n")
        )
    })
}

fn open_store(loaded: &config::Loaded) -> anyhow::Result<SledStore> {
    let path = &loaded.config.store.path;
    match SledStore::open(path, StoreOptions::default()) {
        Ok(s) => Ok(s),
        Err(StoreError::Locked { path }) => Err(anyhow!(
            "store {} is in use by another mailshare process (is `mailshare serve` running?)",
            path.display()
        )),
        Err(e) => Err(e).with_context(|| format!("opening store {}", path.display())),
    }
}

/// `mailshare ingest`: capture each file, report each outcome on stdout;
/// a file that cannot be read or parsed is reported and the rest go on.
pub fn ingest_files(
    config_path: &Path,
    owner: &str,
    direction: Direction,
    envelope: &[String],
    files: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let loaded = load(config_path)?;
    if loaded.policy.find_user(owner).is_none() {
        return Err(anyhow!(
            "--owner {owner}: no such user (login or address) in {}",
            loaded.policy_path.display()
        ));
    }
    let store = open_store(&loaded)?;
    let envelope: Vec<String> = envelope
        .iter()
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    let mut failures = 0usize;
    for file in files {
        let raw = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                println!("{}: error: cannot read: {e}", file.display());
                failures += 1;
                continue;
            }
        };
        let req = IngestRequest {
            owner,
            direction,
            envelope_recipients: &envelope,
            now: unix_now(),
            max_capture_bytes: usize::try_from(loaded.config.limits.max_capture_bytes)
                .unwrap_or(usize::MAX),
        };
        match ingest::ingest(&store, &loaded.policy, &raw, &req) {
            Ok(outcome) => println!("{}: {outcome}", file.display()),
            Err(e) => {
                println!("{}: error: {e}", file.display());
                failures += 1;
            }
        }
    }
    store.flush().context("flushing the store")?;
    if failures > 0 {
        eprintln!(
            "mailshare ingest: {failures} of {} file(s) failed",
            files.len()
        );
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// `mailshare serve`: hold the store and policy until SIGTERM/SIGINT. The
/// admin API and the SMTP/IMAP listeners attach here.
pub fn serve(config_path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = load(config_path)?;
    crate::logging::init(&loaded.config.log);
    let store = open_store(&loaded)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        tracing::info!(
            store = %loaded.config.store.path.display(),
            policy = %loaded.policy_path.display(),
            users = loaded.policy.users.len(),
            "mailshare ready"
        );
        wait_for_shutdown().await;
        tracing::info!("shutting down");
    });
    store.flush().context("flushing the store")?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
