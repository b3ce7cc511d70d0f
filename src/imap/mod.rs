//! The IMAP proxy (DESIGN §5): mail clients log in to mailshare, which logs
//! in to the firm's IMAP server with the same credentials and then relays
//! both directions byte for byte, teeing fetched and appended messages into
//! the capture path.
//!
//! How, in the manner of nginx's mail proxy: mailshare *is* the server
//! before login ([`prelogin`], with imap-codec), so it controls STARTTLS,
//! LOGINDISABLED, literal sizes and buffers while nobody is authenticated,
//! and learns the login that names the policy user. After a successful login
//! it relays raw bytes ([`relay`]) through a framing [`scanner`] that only
//! follows lines, literals, tags and the FETCH items carrying messages; it
//! never re-encodes, never buffers a whole response, and rewrites nothing
//! but capability lists ([`capability`]).
//!
//! | file | owns |
//! |---|---|
//! | `scanner.rs` | streaming framing: lines, `{N}` / `{N+}` / `~{N}` literals, message ends |
//! | `syntax.rs` | the little syntax read after login: tags, commands, APPEND, LIST, FETCH items |
//! | `capability.rs` | pre-login capabilities; the filter over the upstream's |
//! | `prelogin.rs` | sans-IO pre-login server: CAPABILITY, STARTTLS, LOGIN, AUTHENTICATE… |
//! | `upstream.rs` | connecting and logging in to the upstream (TLS, STARTTLS, credentials) |
//! | `relay.rs` | the two pumps after login, limits, timeouts, shutdown |
//! | `fetch.rs` | one FETCH response in flight: items, tees, skeleton |
//! | `capture.rs` | tees, capture memory budget, the capture queue and workers |
//! | `stream.rs` | plain-or-TLS streams |
//! | `metrics.rs` | `mailshare_imap_*` |
//!
//! The seam for tests and `app`: [`Proxy::new`] then [`Proxy::serve`] on a
//! bound listener.

pub mod capability;
pub mod capture;
pub mod fetch;
pub mod metrics;
pub mod prelogin;
pub mod relay;
pub mod scanner;
pub mod stream;
pub mod syntax;
pub mod upstream;

use crate::config::{Limits, Listener, ProxyConfig, TlsMode};
use crate::engine::policy::UserStatus;
use crate::gateway::Gateway;
use crate::net::listener::{self, Accepted, IpLimiter, ListenerOptions, Refusal};
use crate::net::splice::SplicePair;
use crate::net::tls::ServerTls;
use crate::shutdown::{Drain, Shutdown};
use capture::{CaptureQueue, SessionCapture};
use metrics::ImapMetrics;
use prelogin::{Credentials, Event, Prelogin, PreloginLimits};
use relay::{RelayEnd, RelayOptions};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use stream::ClientStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use upstream::{AuthReply, Upstream, UpstreamError, UpstreamSettings};

/// Concurrent captures (parse + durable store write) across all sessions:
/// most of a capture's time is the wait for the group commit, so more
/// captures in flight make larger commits, not more CPU.
const CAPTURE_WORKERS: usize = 32;
/// Captures queued before sessions wait.
const CAPTURE_QUEUE: usize = 256;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("[imap.upstream] TLS: {0}")]
    UpstreamTls(#[from] crate::net::tls::TlsError),
    #[error("an IMAP listener uses TLS but no [tls] certificate is loaded")]
    NoCertificate,
}

/// Limits and timeouts of every IMAP session (from `[limits]`).
#[derive(Clone, Copy, Debug)]
pub struct ImapOptions {
    pub prelogin: PreloginLimits,
    pub prelogin_timeout: Duration,
    pub idle_timeout: Duration,
    pub session_timeout: Duration,
    pub max_line: usize,
    pub max_literal: u64,
    pub max_pending: usize,
    pub max_connections: usize,
}

impl ImapOptions {
    pub fn from_limits(l: &Limits) -> ImapOptions {
        ImapOptions {
            prelogin: PreloginLimits::default(),
            prelogin_timeout: l.prelogin_timeout(),
            idle_timeout: l.imap_idle_timeout(),
            session_timeout: l.session_timeout(),
            max_line: l.imap_max_line(),
            max_literal: l.imap_max_literal_bytes,
            max_pending: l.imap_max_pending(),
            max_connections: usize::try_from(l.max_connections_per_listener).unwrap_or(usize::MAX),
        }
    }
}

/// The IMAP proxy: shared by every IMAP listener.
pub struct Proxy {
    gateway: Arc<Gateway>,
    tls: Option<Arc<ServerTls>>,
    upstream: UpstreamSettings,
    options: ImapOptions,
    metrics: ImapMetrics,
    queue: CaptureQueue,
    shutdown: Shutdown,
}

/// A session that logged in.
struct LoggedIn {
    client: ClientStream,
    upstream: Upstream,
    client_pending: Vec<u8>,
    login: String,
}

/// Why a session ended before login.
#[derive(Debug, thiserror::Error)]
enum Before {
    #[error("the client closed the connection")]
    ClientClosed,
    #[error("login timeout")]
    Timeout,
    #[error("shutting down")]
    Shutdown,
    /// Bytes pipelined after STARTTLS (CVE-2011-0411): dropped.
    #[error("commands sent after STARTTLS before the handshake")]
    Injection,
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    #[error("closed")]
    Closed,
}

impl Before {
    /// The session span's `end` field.
    fn label(&self) -> &'static str {
        match self {
            Before::ClientClosed => "client_closed",
            Before::Timeout => "login_timeout",
            Before::Shutdown => "shutdown",
            Before::Injection => "starttls_injection",
            Before::Tls(_) => "tls_failed",
            Before::Io(_) => "client_error",
            Before::Closed => "closed",
        }
    }
}

/// The busy reply to a refused client (none on implicit-TLS listeners: a
/// plaintext line would mean nothing to a client starting TLS).
pub fn busy_reply(why: Refusal, implicit_tls: bool) -> Option<&'static [u8]> {
    if implicit_tls {
        return None;
    }
    Some(match why {
        Refusal::ListenerFull => b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
        Refusal::TooManyFromIp => b"* BYE [UNAVAILABLE] Too many connections from your address\r\n",
    })
}

impl Proxy {
    /// Build the proxy for `config` (registers the IMAP metrics in the
    /// gateway's registry, starts the capture workers: call inside a tokio
    /// runtime, once per gateway).
    ///
    /// # Errors
    /// The upstream's TLS roots cannot be loaded, or a TLS listener has no
    /// certificate.
    pub fn new(
        gateway: Arc<Gateway>,
        tls: Option<Arc<ServerTls>>,
        config: &ProxyConfig,
        shutdown: Shutdown,
    ) -> Result<Arc<Proxy>, ImapError> {
        if tls.is_none() && config.listeners.iter().any(|l| l.tls != TlsMode::None) {
            return Err(ImapError::NoCertificate);
        }
        let u = &config.upstream;
        let connector = match u.tls {
            TlsMode::None => None,
            _ => Some(tokio_rustls::TlsConnector::from(
                crate::net::tls::client_config(u.ca_file.as_deref())?,
            )),
        };
        let options = ImapOptions::from_limits(&gateway.config.limits);
        let metrics = ImapMetrics::new(&gateway.metrics.registry);
        let queue = CaptureQueue::start(
            gateway.clone(),
            metrics.clone(),
            CAPTURE_WORKERS,
            CAPTURE_QUEUE,
        );
        Ok(Arc::new(Proxy {
            upstream: UpstreamSettings {
                address: u.address.clone(),
                host: u.host.clone(),
                tls: u.tls,
                connector,
                connect_timeout: u.connect_timeout(),
                timeout: u.timeout(),
                max_line: options.max_line,
            },
            gateway,
            tls,
            options,
            metrics,
            queue,
            shutdown,
        }))
    }

    /// Captures queued or running: on shutdown `app` waits for them once the
    /// sessions have ended.
    pub fn captures_in_flight(&self) -> Drain {
        self.queue.in_flight().clone()
    }

    /// The accept loop of one listener, until shutdown.
    pub fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        config: Listener,
        drain: Drain,
        ip_limiter: Arc<IpLimiter>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let name: Arc<str> = format!("imap:{}", config.listen).into();
        let mut options = ListenerOptions::new(
            "imap",
            &name,
            self.options.max_connections,
            ip_limiter,
            drain,
            self.gateway.metrics.connections_refused.clone(),
        );
        options.proxy_protocol = config.proxy_protocol;
        let proxy = self.clone();
        let implicit = config.tls == TlsMode::Implicit;
        let shutdown = self.shutdown.clone();
        listener::serve(
            listener,
            options,
            shutdown,
            move |a: Accepted| proxy.clone().session(a, config.clone(), name.clone()),
            move |why| busy_reply(why, implicit),
        )
    }

    /// One client connection, from accept to close (inside the listener's
    /// session span).
    async fn session(self: Arc<Self>, a: Accepted, listener: Listener, name: Arc<str>) {
        let m = &self.metrics;
        m.sessions.with_label_values(&[&name]).inc();
        m.sessions_open.with_label_values(&[&name]).inc();
        let _open = scopeguard(m.sessions_open.with_label_values(&[&name]));
        let started = Instant::now();
        let logged_in = match self.prelogin(a.stream, &listener, started).await {
            Ok(l) => l,
            Err(why) => {
                tracing::debug!(why = %why, "IMAP session ended before login");
                crate::net::listener::record_end(why.label());
                return;
            }
        };
        let LoggedIn {
            client,
            upstream,
            client_pending,
            login,
        } = logged_in;
        let owner = {
            let policy = self.gateway.policy.current();
            policy
                .user_by_login(&login)
                .filter(|u| u.status == UserStatus::Active)
                .map(|u| u.address.clone())
        };
        crate::net::listener::record_login(&login, owner.as_deref());
        tracing::info!(captured = owner.is_some(), "IMAP login");
        let capture = owner.map(|o| {
            Arc::new(SessionCapture::new(
                o,
                self.gateway.clone(),
                self.queue.clone(),
                self.metrics.clone(),
            ))
        });
        let (upstream, upstream_pending) = upstream.into_parts();
        // Both legs plain TCP: large literals nothing looks at are spliced.
        let splice = match (upstream.plain(), client.plain()) {
            (Some(u), Some(c)) => SplicePair::new(u, c)
                .inspect_err(|e| tracing::debug!(error = %e, "no splice for this session"))
                .ok(),
            _ => None,
        };
        let options = RelayOptions {
            max_line: self.options.max_line,
            max_literal: self.options.max_literal,
            max_pending: self.options.max_pending,
            idle_timeout: self.options.idle_timeout,
            upstream_timeout: self.upstream.timeout,
            session_deadline: started + self.options.session_timeout,
        };
        let end = relay::relay(
            client,
            upstream,
            client_pending,
            upstream_pending,
            options,
            capture,
            self.metrics.clone(),
            self.shutdown.clone(),
            splice,
        )
        .await;
        crate::net::listener::record_end(end.label());
        match &end {
            RelayEnd::ClientError(e) | RelayEnd::UpstreamError(e) => {
                tracing::debug!(error = %e, "IMAP session ended")
            }
            RelayEnd::UpstreamProtocol(why) => {
                self.metrics
                    .upstream_errors
                    .with_label_values(&["protocol"])
                    .inc();
                tracing::warn!(why, "IMAP session ended: upstream protocol error")
            }
            other => {
                tracing::debug!(end = ?other, "IMAP session ended")
            }
        }
    }

    /// Before login: speak IMAP with the client until the upstream accepts
    /// its credentials.
    async fn prelogin(
        &self,
        tcp: TcpStream,
        listener: &Listener,
        started: Instant,
    ) -> Result<LoggedIn, Before> {
        let deadline = started + self.options.prelogin_timeout;
        let mut shutdown = self.shutdown.clone();
        let mut client: ClientStream = match listener.tls {
            TlsMode::Implicit => {
                let acceptor = self.tls.as_ref().ok_or(Before::Closed)?.acceptor();
                let tls = tokio::time::timeout_at(deadline, acceptor.accept(tcp))
                    .await
                    .map_err(|_| Before::Timeout)?
                    .map_err(Before::Tls)?;
                ClientStream::Tls(Box::new(tls))
            }
            _ => ClientStream::Plain(tcp),
        };
        let mut p = Prelogin::new(
            self.options.prelogin,
            listener.tls == TlsMode::Starttls,
            client.is_tls(),
            listener.allow_plaintext_auth,
        );
        write(&mut client, &p.greeting(), deadline).await?;
        let mut buf = vec![0u8; 4096];
        loop {
            match p.next_event() {
                Event::NeedInput => {
                    let read = tokio::select! {
                        r = tokio::time::timeout_at(deadline, client.read(&mut buf)) => r,
                        _ = shutdown.fired() => {
                            let _ = write(&mut client, b"* BYE Server shutting down\r\n", deadline).await;
                            return Err(Before::Shutdown);
                        }
                    };
                    match read {
                        Err(_) => {
                            self.metrics.limits.with_label_values(&["prelogin"]).inc();
                            let _ = write(
                                &mut client,
                                b"* BYE Login timeout\r\n",
                                Instant::now() + Duration::from_secs(5),
                            )
                            .await;
                            return Err(Before::Timeout);
                        }
                        Ok(Ok(0)) => return Err(Before::ClientClosed),
                        Ok(Ok(n)) => p.input(&buf[..n]),
                        Ok(Err(e)) => return Err(Before::Io(e)),
                    }
                }
                Event::Reply(bytes) => write(&mut client, &bytes, deadline).await?,
                Event::StartTls => {
                    if p.has_pending_input() {
                        tracing::warn!("IMAP client sent commands after STARTTLS before the handshake; connection dropped");
                        return Err(Before::Injection);
                    }
                    let ClientStream::Plain(tcp) = client else {
                        return Err(Before::Closed);
                    };
                    let acceptor = self.tls.as_ref().ok_or(Before::Closed)?.acceptor();
                    let tls = tokio::time::timeout_at(deadline, acceptor.accept(tcp))
                        .await
                        .map_err(|_| Before::Timeout)?
                        .map_err(Before::Tls)?;
                    client = ClientStream::Tls(Box::new(tls));
                    p.tls_started();
                }
                Event::Login { tag, credentials } => {
                    match tokio::time::timeout_at(deadline, self.login(&tag, &credentials)).await {
                        Ok(Ok((upstream, AuthReply { ok: true, reply }))) => {
                            self.metrics.logins.with_label_values(&["ok"]).inc();
                            write(&mut client, &reply, deadline).await?;
                            return Ok(LoggedIn {
                                client,
                                upstream,
                                client_pending: p.take_pending_input(),
                                login: credentials.login.clone(),
                            });
                        }
                        Ok(Ok((_, AuthReply { ok: false, reply }))) => {
                            self.metrics.logins.with_label_values(&["rejected"]).inc();
                            tracing::info!(login = %credentials.login.escape_default(), "IMAP login rejected by the upstream");
                            write(&mut client, &reply, deadline).await?;
                            p.login_failed();
                        }
                        failed => {
                            self.metrics
                                .logins
                                .with_label_values(&["unavailable"])
                                .inc();
                            let kind = match &failed {
                                Ok(Err(e)) => e.kind(),
                                _ => "timeout",
                            };
                            self.metrics
                                .upstream_errors
                                .with_label_values(&[kind])
                                .inc();
                            match failed {
                                Ok(Err(e)) => {
                                    tracing::warn!(upstream = %self.upstream.address, error = %e, "IMAP upstream unavailable")
                                }
                                _ => {
                                    tracing::warn!(upstream = %self.upstream.address, "IMAP upstream login timed out")
                                }
                            }
                            let text = format!("{tag} NO [UNAVAILABLE] The mail server is unavailable, try again later\r\n");
                            write(&mut client, text.as_bytes(), deadline).await?;
                            p.login_unavailable();
                        }
                    }
                }
                Event::Close => {
                    let _ = client.shutdown().await;
                    relay::linger(&mut client).await;
                    return Err(Before::Closed);
                }
            }
        }
    }

    /// Connect to the upstream and replay the credentials.
    async fn login(
        &self,
        tag: &str,
        credentials: &Credentials,
    ) -> Result<(Upstream, AuthReply), UpstreamError> {
        let t = Instant::now();
        let mut upstream = Upstream::connect(&self.upstream).await?;
        self.metrics
            .upstream_connect_seconds
            .observe(t.elapsed().as_secs_f64());
        let reply = upstream.authenticate(tag, credentials).await?;
        Ok((upstream, reply))
    }
}

async fn write(client: &mut ClientStream, bytes: &[u8], deadline: Instant) -> Result<(), Before> {
    tokio::time::timeout_at(deadline, async {
        client.write_all(bytes).await?;
        client.flush().await
    })
    .await
    .map_err(|_| Before::Timeout)?
    .map_err(Before::Io)
}

/// Decrements an open-sessions gauge when dropped.
struct GaugeGuard(prometheus::IntGauge);

fn scopeguard(g: prometheus::IntGauge) -> GaugeGuard {
    GaugeGuard(g)
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
