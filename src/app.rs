//! Composition root: loads configuration and policy, opens the store, runs
//! the commands that need them. The only module that wires everything
//! together (nothing imports `app`).

use crate::config;
use crate::engine::Direction;
use crate::gateway::{Gateway, DEFAULT_CAPTURE_BUDGET_BYTES};
use crate::ingest::{self, IngestRequest};
use crate::metrics::Metrics;
use crate::net::listener::IpLimiter;
use crate::net::tls::ServerTls;
use crate::shutdown::{Drain, Shutdown};
use crate::store::{SledStore, Store, StoreError, StoreOptions};
use anyhow::{anyhow, Context};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A new API token and the hash to put in the policy.
pub struct NewToken {
    pub token: String,
    pub sha256_hex: String,
}

/// 256 random bits from the OS, as `ms_` + 64 hex digits.
///
/// # Panics
/// If the OS random number generator fails.
pub fn new_token() -> NewToken {
    let mut bytes = [0u8; 32];
    // The OS generator does not fail on Linux once booted; a failure here
    // must never yield a predictable token.
    getrandom::getrandom(&mut bytes).expect("the OS random number generator failed");
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

/// What `serve` hands every protocol adapter when it starts it.
pub struct Services {
    pub gateway: Arc<Gateway>,
    /// The certificate served to mail clients (when `[tls]` is configured).
    pub tls: Option<Arc<ServerTls>>,
    pub shutdown: Shutdown,
    pub drain: Drain,
    /// Per-client-IP connection counts, shared by every listener.
    pub ip_limiter: Arc<IpLimiter>,
}

/// `mailshare serve`: open the store, load the policy, start every configured
/// listener, then run until SIGTERM/SIGINT; SIGHUP reloads the policy and the
/// TLS certificate (a bad file keeps the running one and is logged).
pub fn serve(config_path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = load(config_path)?;
    crate::logging::init(&loaded.config.log);
    let store: Arc<dyn Store> = Arc::new(open_store(&loaded)?);
    let metrics = Arc::new(Metrics::new());
    if let Ok(stats) = store.stats() {
        metrics.observe_store(&stats);
    }
    let tls = match &loaded.config.tls {
        Some(t) => Some(Arc::new(
            ServerTls::load(&t.cert_file, &t.key_file).context("loading the TLS certificate")?,
        )),
        None => None,
    };
    let limits = loaded.config.limits;
    let config = Arc::new(loaded.config);
    let gateway = Arc::new(Gateway::new(
        store.clone(),
        loaded.policy,
        loaded.policy_path.clone(),
        config.clone(),
        metrics,
        DEFAULT_CAPTURE_BUDGET_BYTES,
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = rt.block_on(async {
        let (trigger, shutdown) = crate::shutdown::channel();
        let services = Services {
            gateway: gateway.clone(),
            tls: tls.clone(),
            shutdown,
            drain: Drain::new(),
            ip_limiter: IpLimiter::new(
                usize::try_from(limits.max_connections_per_ip).unwrap_or(usize::MAX),
            ),
        };
        #[allow(unused_mut)] // each adapter below pushes its accept loops
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();

        // --- admin API (issue 3) -------------------------------------------

        // --- SMTP submission relay (issue 4) ---------------------------------

        // --- IMAP proxy (issue 5) --------------------------------------------
        if let Some(imap) = &config.imap {
            let proxy = crate::imap::Proxy::new(
                gateway.clone(),
                tls.clone(),
                imap,
                services.shutdown.clone(),
            )
            .context("starting the IMAP proxy")?;
            for l in &imap.listeners {
                let listener = tokio::net::TcpListener::bind(l.listen)
                    .await
                    .with_context(|| format!("binding the IMAP listener {}", l.listen))?;
                tracing::info!(listen = %l.listen, tls = %l.tls, upstream = %imap.upstream.address, "IMAP listener");
                tasks.push(tokio::spawn(proxy.serve(
                    listener,
                    l.clone(),
                    services.drain.clone(),
                    services.ip_limiter.clone(),
                )));
            }
        }

        tracing::info!(
            store = %config.store.path.display(),
            policy = %gateway.policy_path.display(),
            users = gateway.policy.current().users.len(),
            "mailshare ready"
        );
        run_signals(&gateway, tls.as_deref()).await?;
        tracing::info!(
            sessions = services.drain.live(),
            "shutting down: no new connections"
        );
        trigger.fire();
        let grace = std::time::Duration::from_secs(limits.shutdown_grace_secs);
        tokio::select! {
            _ = services.drain.wait_idle() => tracing::info!("all sessions finished"),
            _ = tokio::time::sleep(grace) => tracing::warn!(
                sessions = services.drain.live(),
                "shutdown grace period over; closing the remaining sessions"
            ),
            _ = wait_for_terminate() => tracing::warn!("second signal: stopping at once"),
        }
        for t in tasks {
            t.abort();
        }
        anyhow::Ok(())
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    result?;
    store.flush().context("flushing the store")?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Serve signals until SIGTERM or SIGINT: SIGHUP reloads.
async fn run_signals(gateway: &Gateway, tls: Option<&ServerTls>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = wait_for_terminate() => return Ok(()),
            _ = hup.recv() => reload(gateway, tls),
        }
    }
}

/// SIGHUP: re-read the policy and the TLS certificate; keep what runs on error.
pub fn reload(gateway: &Gateway, tls: Option<&ServerTls>) {
    match gateway.reload_policy() {
        Ok(()) => tracing::info!(
            policy = %gateway.policy_path.display(),
            users = gateway.policy.current().users.len(),
            "policy reloaded"
        ),
        Err(diags) => {
            for d in &diags {
                tracing::error!(error = %d, "policy reload rejected; the previous policy stays in force");
            }
        }
    }
    if let Some(tls) = tls {
        match tls.reload() {
            Ok(()) => tracing::info!("TLS certificate reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; the previous certificate stays in use")
            }
        }
    }
}

async fn wait_for_terminate() {
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
