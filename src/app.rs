//! Composition root: loads configuration and policy, opens the store, runs
//! the commands that need them. The only module that wires everything
//! together (nothing imports `app`).

use crate::config;
use crate::engine::Direction;
use crate::gateway::Gateway;
use crate::ingest::{self, IngestRequest};
use crate::metrics::Metrics;
use crate::net::listener::IpLimiter;
use crate::net::tls::ServerTls;
use crate::shutdown::{Drain, Shutdown};
use crate::store::{Durability, SledStore, Store, StoreError, StoreOptions};
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
    let options = StoreOptions {
        max_batch_delay: loaded.config.limits.group_commit_max_delay(),
        ..StoreOptions::default()
    };
    match SledStore::open(path, options) {
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
            // Durable at the final flush below (whose failure fails the
            // command): one flush for the whole run, not one per file.
            durability: Durability::Background,
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

/// `mailshare backup`: a consistent copy of the store into `dest`, taken by
/// this process when the store is free, else by the running server (through
/// its control socket).
pub fn backup(config_path: &Path, dest: &Path) -> anyhow::Result<ExitCode> {
    let loaded = load(config_path)?;
    let dest = std::path::absolute(dest).context("resolving the backup directory")?;
    let store_path = &loaded.config.store.path;
    let report = match SledStore::open(store_path, StoreOptions::default()) {
        Ok(store) => store.backup(&dest)?,
        Err(StoreError::Locked { .. }) => crate::control::request_backup(store_path, &dest)?,
        Err(e) => return Err(e).with_context(|| format!("opening store {}", store_path.display())),
    };
    println!(
        "backed up {} messages and {} blobs into {} ({} bytes of database)",
        report.messages,
        report.blobs,
        dest.display(),
        report.bytes
    );
    Ok(ExitCode::SUCCESS)
}

/// `mailshare ingest --spool`: capture every message the SMTP relay spooled
/// (see [`crate::smtp::spool`]), each with the owner, direction and
/// envelope of its sidecar; entries captured (or skipped by the policy) are
/// removed, failures are reported and kept.
pub fn replay_spool(config_path: &Path, dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    use crate::smtp::spool;
    let loaded = load(config_path)?;
    let dir = dir.map_or_else(|| loaded.config.store.spool_path.clone(), Path::to_path_buf);
    let entries = match spool::list(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("{}: no spool (nothing to replay)", dir.display());
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e).with_context(|| format!("reading the spool {}", dir.display())),
    };
    let store = open_store(&loaded)?;
    let max = usize::try_from(loaded.config.limits.max_capture_bytes).unwrap_or(usize::MAX);
    let (mut failures, total) = (0usize, entries.len());
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(why) => {
                println!("error: {why}");
                failures += 1;
                continue;
            }
        };
        let name = entry.eml.display().to_string();
        let raw = match std::fs::read(&entry.eml) {
            Ok(b) => b,
            Err(e) => {
                println!("{name}: error: cannot read: {e}");
                failures += 1;
                continue;
            }
        };
        let req = IngestRequest {
            owner: &entry.meta.owner,
            direction: entry.meta.direction,
            envelope_recipients: &entry.meta.envelope_recipients,
            now: entry.meta.spooled_at,
            max_capture_bytes: max,
            durability: Durability::Wait,
        };
        let result = match entry.meta.headers_only_size {
            Some(size) => ingest::ingest_headers(&store, &loaded.policy, &raw, size, &req),
            None => ingest::ingest(&store, &loaded.policy, &raw, &req),
        };
        match result {
            Ok(outcome) => {
                store.flush().context("flushing the store")?;
                match spool::remove(&entry) {
                    Ok(()) => println!("{name}: {outcome}; removed from the spool"),
                    Err(e) => println!("{name}: {outcome}; could not remove it: {e}"),
                }
            }
            Err(e) => {
                println!("{name}: error: {e} (kept in the spool)");
                failures += 1;
            }
        }
    }
    store.flush().context("flushing the store")?;
    if failures > 0 {
        eprintln!("mailshare ingest --spool: {failures} of {total} entries failed");
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
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = rt.block_on(async {
        let mut signals = Signals::install()?;
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
        tasks.push(
            crate::control::serve(&config.store.path, store.clone(), services.shutdown.clone())
                .await
                .context("starting the control socket")?,
        );

        // --- admin API (issue 3): bound now (a taken port fails start-up),
        // served once every mail listener is bound, so /readyz never
        // answers before the mail ports do.
        let mut admin_api = None;
        if let Some(admin) = &config.admin {
            let listener = tokio::net::TcpListener::bind(admin.listen)
                .await
                .with_context(|| format!("binding the admin API on {}", admin.listen))?;
            let state = crate::admin::AdminState::new(gateway.clone())
                .context("registering the admin API metrics")?;
            admin_api = Some((listener, state));
        }

        // --- SMTP submission relay (issue 4) ---------------------------------
        if let Some(smtp) = &config.smtp {
            let relay = crate::smtp::Relay::new(gateway.clone(), tls.clone(), smtp)
                .context("starting the SMTP relay")?;
            for l in &smtp.listeners {
                // Bind before "ready": a port in use fails start-up.
                let tcp = tokio::net::TcpListener::bind(l.listen)
                    .await
                    .with_context(|| format!("binding the SMTP listener {}", l.listen))?;
                let name: Arc<str> = format!("smtp:{}", l.listen).into();
                tracing::info!(listener = %name, tls = %l.tls, proxy_protocol = l.proxy_protocol, upstream = %smtp.upstream.address, "SMTP listener bound");
                let mut options = crate::net::listener::ListenerOptions::new(
                    "smtp",
                    &name,
                    usize::try_from(limits.max_connections_per_listener).unwrap_or(usize::MAX),
                    services.ip_limiter.clone(),
                    services.drain.clone(),
                    gateway.metrics.connections_refused.clone(),
                );
                options.proxy_protocol = l.proxy_protocol;
                tasks.push(tokio::spawn(crate::smtp::serve(
                    relay.clone(),
                    tcp,
                    l.clone(),
                    options,
                    services.shutdown.clone(),
                )));
            }
        }

        // --- IMAP proxy (issue 5) --------------------------------------------
        let mut captures = Drain::new();
        if let Some(imap) = &config.imap {
            let proxy = crate::imap::Proxy::new(
                gateway.clone(),
                tls.clone(),
                imap,
                services.shutdown.clone(),
            )
            .context("starting the IMAP proxy")?;
            captures = proxy.captures_in_flight();
            for l in &imap.listeners {
                let listener = tokio::net::TcpListener::bind(l.listen)
                    .await
                    .with_context(|| format!("binding the IMAP listener {}", l.listen))?;
                tracing::info!(listener = %format_args!("imap:{}", l.listen), tls = %l.tls, proxy_protocol = l.proxy_protocol, upstream = %imap.upstream.address, "IMAP listener bound");
                tasks.push(tokio::spawn(proxy.serve(
                    listener,
                    l.clone(),
                    services.drain.clone(),
                    services.ip_limiter.clone(),
                )));
            }
        }

        if let Some((listener, state)) = admin_api {
            let bound = listener
                .local_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string());
            tracing::info!(listen = %bound, "admin API listening");
            let shutdown = services.shutdown.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = crate::admin::serve(listener, state, shutdown).await {
                    tracing::error!(error = %e, "admin API stopped");
                }
            }));
        }

        tracing::info!(
            store = %config.store.path.display(),
            policy = %gateway.policy_path.display(),
            users = gateway.policy.current().users.len(),
            "mailshare ready"
        );
        notify(&[sd_notify::NotifyState::Ready]);
        run_signals(&mut signals, &gateway, tls.as_deref()).await;
        notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!(
            sessions = services.drain.live(),
            "shutting down: no new connections"
        );
        trigger.fire();
        let grace = std::time::Duration::from_secs(limits.shutdown_grace_secs);
        // Sessions first, then the IMAP captures they queued (SMTP captures
        // before answering the client, inside its session).
        let finished = async {
            services.drain.wait_idle().await;
            captures.wait_idle().await;
        };
        tokio::select! {
            _ = finished => tracing::info!("all sessions finished"),
            _ = tokio::time::sleep(grace) => tracing::warn!(
                sessions = services.drain.live(),
                captures = captures.live(),
                "shutdown grace period over; closing the remaining sessions"
            ),
            _ = signals.terminate() => tracing::warn!("second signal: stopping at once"),
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

/// The signal streams `serve` listens to, registered once for the whole
/// run: a tokio stream only sees signals delivered after it was created, so
/// one made afresh for each wait would miss a SIGTERM that arrives during a
/// reload or between the first SIGTERM and the grace-period wait.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// The next SIGTERM or SIGINT.
    async fn terminate(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Serve signals until SIGTERM or SIGINT: SIGHUP reloads (a termination
/// signal pending at the same time wins).
async fn run_signals(signals: &mut Signals, gateway: &Gateway, tls: Option<&ServerTls>) {
    let Signals { term, int, hup } = signals;
    loop {
        tokio::select! {
            biased;
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => reload(gateway, tls),
        }
    }
}

/// Tell systemd (`Type=notify`) about a state change; a no-op outside systemd.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// SIGHUP: re-read the policy and the TLS certificate; keep what runs on error.
pub fn reload(gateway: &Gateway, tls: Option<&ServerTls>) {
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[sd_notify::NotifyState::Reloading, now]),
        Err(e) => tracing::warn!(error = %e, "no monotonic clock for the reload notification"),
    }
    reload_files(gateway, tls);
    notify(&[sd_notify::NotifyState::Ready]);
}

fn reload_files(gateway: &Gateway, tls: Option<&ServerTls>) {
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
