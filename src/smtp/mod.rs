//! SMTP submission relay (DESIGN §5): each client session is mirrored onto
//! one session with the configured upstream submission server; every
//! message upstream accepts is captured (outbound, owned by the
//! authenticated user) before the client sees upstream's 250.
//!
//! | file | owns |
//! |---|---|
//! | [`session`] | sans-IO relay state: command framing and dispatch, the ordered reply queue, barriers, message phases |
//! | [`ehlo`] | keyword intersection with the upstream, SIZE = the smaller limit, AUTH filtered |
//! | [`auth`] | SASL PLAIN / LOGIN / XOAUTH2 pass-through: the login, credentials as [`auth::Secret`] |
//! | [`data`] | the strict DATA framer, `X-Mailshare-Share` removal, re-stuffing, capture collection |
//! | [`reply`] | upstream reply framing, our own replies |
//! | [`conn`] | the async driver: sockets, TLS on both legs, deadlines, capture, shutdown |
//! | [`spool`] | messages whose capture failed, for `mailshare ingest --spool` |
//!
//! Start-up ([`Relay::new`], then [`serve`] per bound listener) is called
//! by `app::serve`; tests call the same two functions on `127.0.0.1:0`.

pub mod auth;
pub mod conn;
pub mod data;
pub mod ehlo;
pub mod reply;
pub mod session;
pub mod spool;

use crate::config::{Listener, ProxyConfig, TlsMode, Upstream};
use crate::gateway::Gateway;
use crate::net::listener::{self, ListenerOptions, Refusal};
use crate::net::tls::{self, ServerTls, TlsError};
use crate::shutdown::Shutdown;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use rustls::pki_types::ServerName;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why the relay cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("upstream TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("upstream host {0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("listener {0} uses TLS but there is no [tls] certificate")]
    NoCertificate(std::net::SocketAddr),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The SMTP metrics (`mailshare_smtp_*`); labels from bounded sets only.
pub struct SmtpMetrics {
    pub sessions_open: IntGaugeVec,
    pub sessions: IntCounterVec,
    pub commands: IntCounterVec,
    pub rejects: IntCounterVec,
    pub auth: IntCounterVec,
    pub messages: IntCounter,
    pub message_bytes: IntCounter,
    pub bytes_from_client: IntCounter,
    pub bytes_to_upstream: IntCounter,
    pub bytes_from_upstream: IntCounter,
    pub upstream_replies: IntCounterVec,
    pub upstream_reply_seconds: HistogramVec,
    pub upstream_connect_seconds: Histogram,
    pub upstream_errors: IntCounterVec,
    pub share_headers_removed: IntCounter,
    pub headers_only: IntCounterVec,
    pub spooled: IntCounterVec,
    pub captures_ahead: IntCounterVec,
}

fn reg<C: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    c: C,
) -> Result<C, prometheus::Error> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl SmtpMetrics {
    /// Create and register every SMTP metric in `r`.
    ///
    /// # Errors
    /// When they are already registered there.
    pub fn register(r: &Registry) -> Result<SmtpMetrics, prometheus::Error> {
        let cv = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).and_then(|c| reg(r, c))
        };
        let c = |name: &str, help: &str| IntCounter::new(name, help).and_then(|c| reg(r, c));
        Ok(SmtpMetrics {
            sessions_open: reg(
                r,
                IntGaugeVec::new(
                    Opts::new("mailshare_smtp_sessions_open", "SMTP client sessions open, by listener."),
                    &["listener"],
                )?,
            )?,
            sessions: cv(
                "mailshare_smtp_sessions_total",
                "SMTP client sessions accepted, by listener.",
                &["listener"],
            )?,
            commands: cv(
                "mailshare_smtp_commands_total",
                "Client commands, by verb.",
                &["command"],
            )?,
            rejects: cv(
                "mailshare_smtp_rejects_total",
                "Client requests the proxy refused or sessions it ended, by reason.",
                &["reason"],
            )?,
            auth: cv(
                "mailshare_smtp_auth_total",
                "AUTH exchanges answered by upstream, by result (success, failure).",
                &["result"],
            )?,
            messages: c(
                "mailshare_smtp_messages_relayed_total",
                "Messages upstream accepted.",
            )?,
            message_bytes: c(
                "mailshare_smtp_message_bytes_total",
                "Bytes of the messages upstream accepted.",
            )?,
            bytes_from_client: c(
                "mailshare_smtp_client_read_bytes_total",
                "Bytes read from SMTP clients.",
            )?,
            bytes_to_upstream: c(
                "mailshare_smtp_upstream_written_bytes_total",
                "Bytes written to the upstream submission server.",
            )?,
            bytes_from_upstream: c(
                "mailshare_smtp_upstream_read_bytes_total",
                "Bytes read from the upstream submission server.",
            )?,
            upstream_replies: cv(
                "mailshare_smtp_upstream_replies_total",
                "Upstream replies, by command and class (2xx, 3xx, 4xx, 5xx).",
                &["command", "class"],
            )?,
            upstream_reply_seconds: crate::metrics::histogram_vec(
                r,
                "mailshare_smtp_upstream_reply_seconds",
                "From sending a command upstream to its reply, by command.",
                &["command"],
            ),
            upstream_connect_seconds: crate::metrics::histogram(
                r,
                "mailshare_smtp_upstream_connect_seconds",
                "Opening an upstream session: connect, TLS, greeting, EHLO.",
            ),
            upstream_errors: cv(
                "mailshare_smtp_upstream_errors_total",
                "Upstream failures, by kind (connect, timeout, tls, closed, refused, protocol, …).",
                &["kind"],
            )?,
            share_headers_removed: c(
                "mailshare_smtp_share_headers_removed_total",
                "Messages whose X-Mailshare-Share header was removed before upstream.",
            )?,
            headers_only: cv(
                "mailshare_smtp_capture_headers_only_total",
                "Messages collected for capture from their headers only, by reason (over_limit, budget).",
                &["reason"],
            )?,
            spooled: cv(
                "mailshare_smtp_spooled_total",
                "Messages whose capture failed, by what happened next (spooled, failed, lost, timed_out).",
                &["result"],
            )?,
            captures_ahead: cv(
                "mailshare_smtp_captures_ahead_total",
                "Captures of relayed messages, by whether they started while upstream considered the message (started) or after its reply (deferred: no thread to spare).",
                &["result"],
            )?,
        })
    }
}

/// Everything the SMTP sessions of one process share.
pub struct Relay {
    pub gateway: Arc<Gateway>,
    /// The certificate served to clients (STARTTLS and implicit listeners).
    pub tls: Option<Arc<ServerTls>>,
    pub upstream: Upstream,
    connector: Option<tokio_rustls::TlsConnector>,
    server_name: ServerName<'static>,
    /// The name in our greeting (the upstream's host name).
    pub hostname: String,
    pub spool_dir: PathBuf,
    pub metrics: SmtpMetrics,
    /// Threads for captures started before upstream's verdict.
    pub captures_ahead: Arc<tokio::sync::Semaphore>,
}

impl Relay {
    /// Build the relay for `config`; registers the SMTP metrics.
    ///
    /// # Errors
    /// An unusable upstream TLS configuration (CA file), a TLS listener
    /// without a certificate, an unsupported listener option, or metrics
    /// already registered.
    pub fn new(
        gateway: Arc<Gateway>,
        tls: Option<Arc<ServerTls>>,
        config: &ProxyConfig,
    ) -> Result<Arc<Relay>, SmtpError> {
        let upstream = config.upstream.clone();
        for l in &config.listeners {
            if l.tls != TlsMode::None && tls.is_none() {
                return Err(SmtpError::NoCertificate(l.listen));
            }
        }
        let connector = match upstream.tls {
            TlsMode::None => None,
            _ => Some(tokio_rustls::TlsConnector::from(tls::client_config(
                upstream.ca_file.as_deref(),
            )?)),
        };
        let server_name = ServerName::try_from(upstream.host.clone())
            .map_err(|_| SmtpError::ServerName(upstream.host.clone()))?;
        let metrics = SmtpMetrics::register(&gateway.metrics.registry)?;
        Ok(Arc::new(Relay {
            spool_dir: gateway.config.store.spool_path.clone(),
            hostname: upstream.host.clone(),
            gateway,
            tls,
            upstream,
            connector,
            server_name,
            metrics,
            captures_ahead: Arc::new(tokio::sync::Semaphore::new(conn::MAX_CAPTURES_AHEAD)),
        }))
    }
}

/// The busy reply to a refused client (none on implicit-TLS listeners: a
/// plaintext line would mean nothing to a client starting TLS).
pub fn busy_reply(why: Refusal, implicit_tls: bool) -> Option<&'static [u8]> {
    if implicit_tls {
        return None;
    }
    Some(match why {
        Refusal::ListenerFull => b"421 4.7.0 Too many connections, try again later\r\n",
        Refusal::TooManyFromIp => b"421 4.7.0 Too many connections from your address\r\n",
    })
}

/// Accept SMTP clients on `tcp` until shutdown; each session runs in its own
/// task holding the listener's permits (see [`listener::serve`]).
pub async fn serve(
    relay: Arc<Relay>,
    tcp: TcpListener,
    config: Listener,
    options: ListenerOptions,
    shutdown: Shutdown,
) {
    let implicit_tls = config.tls == TlsMode::Implicit;
    let ctx = Arc::new(conn::ListenerContext {
        name: options.name.clone(),
        config,
    });
    let sessions_shutdown = shutdown.clone();
    listener::serve(
        tcp,
        options,
        shutdown,
        move |accepted| {
            conn::run(
                relay.clone(),
                ctx.clone(),
                accepted,
                sessions_shutdown.clone(),
            )
        },
        move |why| busy_reply(why, implicit_tls),
    )
    .await;
}
