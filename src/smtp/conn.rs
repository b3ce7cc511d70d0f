//! The only async SMTP code: drives one [`Session`] over the client stream
//! and the upstream connection.
//!
//! It owns the sockets and the clocks: TLS on both legs (STARTTLS and
//! implicit; TCP_NODELAY on both), the upstream connect (greeting, EHLO,
//! STARTTLS with the check for bytes injected after its 220), the deadlines
//! (client idle, pre-login, session, upstream reply), shutdown, and the
//! capture effect (durable before the held reply is released; spooled when
//! it fails). Every wait has a deadline; nothing here decides protocol.

use super::data::{Budget, Collected, Reservation};
use super::ehlo;
use super::reply::{Reply, ReplyError, ReplyReader};
use super::session::{CaptureRequest, Effect, Event, Hooks, Options, Session, Timeout};
use super::spool::{self, SpoolMeta};
use super::{Relay, SmtpMetrics};
use crate::config::{Listener, TlsMode};
use crate::engine::Direction;
use crate::gateway::{CaptureJob, Gateway};
use crate::ingest::{IngestError, IngestOutcome};
use crate::net::listener::Accepted;
use crate::net::stream::MaybeTls;
use crate::shutdown::Shutdown;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Client reads: large enough that a message streams in few steps.
const CLIENT_READ: usize = 64 * 1024;
const UPSTREAM_READ: usize = 16 * 1024;

/// The client leg: plaintext until STARTTLS, or TLS.
enum Client<S> {
    Plain(S),
    Tls(Box<tokio_rustls::server::TlsStream<S>>),
    /// Between taking the plaintext stream and the end of the handshake.
    Gone,
}

/// The upstream leg.
type Up = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "stream gone")
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Client<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Client::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Client::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Client::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Client<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Client::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Client::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Client::Gone => Poll::Ready(Err(gone())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Client::Plain(s) => Pin::new(s).poll_flush(cx),
            Client::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Client::Gone => Poll::Ready(Err(gone())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Client::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Client::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Client::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// Why the upstream session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("TLS handshake: {0}")]
    Tls(io::Error),
    #[error("no reply in time")]
    Timeout,
    #[error("connection closed")]
    Closed,
    #[error("read: {0}")]
    Io(io::Error),
    #[error("{0}")]
    Reply(#[from] ReplyError),
    #[error("refused at {stage} with {code}")]
    Refused { stage: &'static str, code: u16 },
    #[error("upstream does not offer STARTTLS (never falling back to plaintext)")]
    NoStartTls,
    #[error("upstream sent bytes after its STARTTLS 220 (response injection); aborted")]
    InjectedAfterStartTls,
    #[error("upstream sent bytes nobody asked for")]
    Unsolicited,
}

impl OpenError {
    /// Bounded metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            OpenError::Connect(_) => "connect",
            OpenError::ConnectTimeout | OpenError::Timeout => "timeout",
            OpenError::Tls(_) => "tls",
            OpenError::Closed | OpenError::Io(_) => "closed",
            OpenError::Reply(_) | OpenError::Unsolicited => "protocol",
            OpenError::Refused { .. } => "refused",
            OpenError::NoStartTls => "no_starttls",
            OpenError::InjectedAfterStartTls => "starttls_injection",
        }
    }
}

async fn read_reply(
    up: &mut Up,
    reader: &mut ReplyReader,
    wait: Duration,
) -> Result<Reply, OpenError> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(r) = reader.next_reply()? {
            return Ok(r);
        }
        let n = timeout(wait, up.read(&mut buf))
            .await
            .map_err(|_| OpenError::Timeout)?
            .map_err(OpenError::Io)?;
        if n == 0 {
            return Err(OpenError::Closed);
        }
        reader.push(&buf[..n]);
    }
}

async fn send(up: &mut Up, line: &[u8], wait: Duration) -> Result<(), OpenError> {
    timeout(wait, async {
        up.write_all(line).await?;
        up.flush().await
    })
    .await
    .map_err(|_| OpenError::Timeout)?
    .map_err(OpenError::Io)
}

/// Connect, greet, EHLO (and STARTTLS, then EHLO again): the upstream is
/// ready for the client's next command. Returns its last EHLO reply.
async fn open_upstream(relay: &Relay, helo: &str) -> Result<(Up, Reply), OpenError> {
    let cfg = &relay.upstream;
    let connect = async {
        let tcp = TcpStream::connect((cfg.host.as_str(), cfg.port))
            .await
            .map_err(OpenError::Connect)?;
        let _ = tcp.set_nodelay(true);
        match (cfg.tls, &relay.connector) {
            (TlsMode::Implicit, Some(c)) => {
                let tls = c
                    .connect(relay.server_name.clone(), tcp)
                    .await
                    .map_err(OpenError::Tls)?;
                Ok::<Up, OpenError>(Up::Tls(Box::new(tls)))
            }
            _ => Ok(Up::Plain(tcp)),
        }
    };
    let mut up = timeout(cfg.connect_timeout(), connect)
        .await
        .map_err(|_| OpenError::ConnectTimeout)??;
    let wait = cfg.timeout();
    let mut reader = ReplyReader::new();
    let greeting = read_reply(&mut up, &mut reader, wait).await?;
    if greeting.code != 220 {
        return Err(OpenError::Refused {
            stage: "greeting",
            code: greeting.code,
        });
    }
    let ehlo_line = format!("EHLO {helo}\r\n");
    send(&mut up, ehlo_line.as_bytes(), wait).await?;
    let mut ehlo = read_reply(&mut up, &mut reader, wait).await?;
    if ehlo.code != 250 {
        return Err(OpenError::Refused {
            stage: "EHLO",
            code: ehlo.code,
        });
    }
    if cfg.tls == TlsMode::Starttls {
        if !ehlo::parse(&ehlo).starttls {
            return Err(OpenError::NoStartTls);
        }
        send(&mut up, b"STARTTLS\r\n", wait).await?;
        let ready = read_reply(&mut up, &mut reader, wait).await?;
        if ready.code != 220 {
            return Err(OpenError::Refused {
                stage: "STARTTLS",
                code: ready.code,
            });
        }
        if reader.buffered() > 0 {
            // CVE-2021-38371: anything after the 220 was sent in plaintext
            // by someone; it must never be read as a TLS-protected reply.
            return Err(OpenError::InjectedAfterStartTls);
        }
        let Up::Plain(tcp) = up else {
            return Err(OpenError::Unsolicited);
        };
        let connector = relay.connector.as_ref().ok_or(OpenError::NoStartTls)?;
        let tls = timeout(
            cfg.connect_timeout(),
            connector.connect(relay.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| OpenError::ConnectTimeout)?
        .map_err(OpenError::Tls)?;
        up = Up::Tls(Box::new(tls));
        reader = ReplyReader::new();
        send(&mut up, ehlo_line.as_bytes(), wait).await?;
        ehlo = read_reply(&mut up, &mut reader, wait).await?;
        if ehlo.code != 250 {
            return Err(OpenError::Refused {
                stage: "EHLO",
                code: ehlo.code,
            });
        }
    }
    if reader.buffered() > 0 {
        return Err(OpenError::Unsolicited);
    }
    Ok((up, ehlo))
}

/// Read from the upstream when there is one; pending forever otherwise.
async fn read_up(up: &mut Option<Up>, buf: &mut [u8]) -> io::Result<usize> {
    match up {
        Some(u) => u.read(buf).await,
        None => std::future::pending().await,
    }
}

/// The session's view of the gateway.
struct GatewayHooks(Arc<Gateway>);

impl Budget for GatewayHooks {
    fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        self.0
            .try_reserve(bytes)
            .map(|p| Box::new(p) as Reservation)
    }
}

impl Hooks for GatewayHooks {
    fn owner_for_login(&self, login: &str) -> Option<String> {
        self.0
            .policy
            .current()
            .user_by_login(login)
            // A removed user is never captured again: do not even collect.
            .filter(|u| u.status == crate::engine::policy::UserStatus::Active)
            .map(|u| u.address.clone())
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The Message-ID of a raw message, for logs (never the body).
fn message_id_of(raw: &[u8]) -> Option<String> {
    crate::mail::parse_headers(raw, &[])
        .ok()
        .filter(|f| !f.message_id_derived)
        .map(|f| f.message_id)
}

/// What a failed capture needs to be spooled.
struct SpoolInfo {
    owner: String,
    envelope_recipients: Vec<String>,
    headers_only: Option<u64>,
}

/// The capture job of a request, and what spooling it would need.
fn capture_job(req: CaptureRequest) -> (CaptureJob, SpoolInfo) {
    let (raw, headers_only) = match req.message {
        Collected::Full(b) => (b, None),
        Collected::HeadersOnly { head, size } => (head, Some(size)),
    };
    let job = CaptureJob {
        raw,
        owner: req.owner.clone(),
        direction: Direction::Outbound,
        envelope_recipients: req.envelope_recipients.clone(),
        protocol: "smtp",
    };
    let info = SpoolInfo {
        owner: req.owner,
        envelope_recipients: req.envelope_recipients,
        headers_only,
    };
    (job, info)
}

type CaptureResult = Result<Option<IngestOutcome>, (IngestError, Vec<u8>)>;

/// A message whose capture started before upstream's verdict
/// ([`Effect::Prepare`]).
enum Ahead {
    /// Parsing and blob files under way on a blocking thread, which then
    /// waits for the verdict.
    Running {
        verdict: std::sync::mpsc::SyncSender<bool>,
        task: tokio::task::JoinHandle<CaptureResult>,
        info: SpoolInfo,
    },
    /// No thread to spare: captured the usual way on [`Effect::Commit`].
    Deferred(CaptureRequest),
}

/// How much longer than upstream's reply may take a prepared capture waits
/// for the verdict (the session gives up on upstream first).
const VERDICT_MARGIN: Duration = Duration::from_secs(10);

/// Captures started ahead at once, gateway-wide: each holds a blocking
/// thread until upstream's verdict.
pub const MAX_CAPTURES_AHEAD: usize = 64;

impl Relay {
    /// Capture one accepted message; on failure keep it in the spool.
    async fn capture(&self, req: CaptureRequest) {
        let (job, info) = capture_job(req);
        let r = self
            .gateway
            .capture_or_return(job, info.headers_only, unix_now())
            .await
            .map(Some);
        self.settle(r, info).await;
    }

    /// Start the capture of a message upstream is considering.
    fn prepare(self: &Arc<Self>, req: CaptureRequest, wait: Duration) -> Ahead {
        let Ok(permit) = self.captures_ahead.clone().try_acquire_owned() else {
            self.metrics
                .captures_ahead
                .with_label_values(&["deferred"])
                .inc();
            return Ahead::Deferred(req);
        };
        self.metrics
            .captures_ahead
            .with_label_values(&["started"])
            .inc();
        let (verdict, accepted) = std::sync::mpsc::sync_channel(1);
        let (job, info) = capture_job(req);
        let relay = self.clone();
        let headers_only = info.headers_only;
        let task = tokio::spawn(async move {
            let _permit = permit;
            relay
                .gateway
                .capture_when(
                    job,
                    headers_only,
                    unix_now(),
                    accepted,
                    wait + VERDICT_MARGIN,
                )
                .await
        });
        Ahead::Running {
            verdict,
            task,
            info,
        }
    }

    /// Upstream accepted the message prepared in `ahead`: finish its capture.
    async fn commit(&self, ahead: Ahead) {
        match ahead {
            Ahead::Running {
                verdict,
                task,
                info,
            } => {
                let _ = verdict.send(true);
                let r = match task.await {
                    Ok(r) => r,
                    Err(e) => Err((IngestError::Panicked(e.to_string()), Vec::new())),
                };
                self.settle(r, info).await;
            }
            Ahead::Deferred(req) => self.capture(req).await,
        }
    }

    /// Log, count, and spool a failed capture.
    async fn settle(&self, result: CaptureResult, info: SpoolInfo) {
        let headers_only = info.headers_only;
        match result {
            Ok(Some(IngestOutcome::Stored { id, level, .. })) => {
                tracing::debug!(record = %id, level = %level, headers_only = headers_only.is_some(), "captured");
            }
            Ok(Some(IngestOutcome::Skipped(reason))) => {
                tracing::debug!(reason = reason.as_str(), "not captured");
            }
            Ok(None) => {
                // Only for a verdict that never came (timed out): the
                // message is spooled by nobody. Say so.
                self.metrics.spooled.with_label_values(&["lost"]).inc();
                tracing::error!("capture gave up waiting for upstream's verdict; not captured");
            }
            Err((error, raw)) => {
                let message_id = message_id_of(&raw);
                if raw.is_empty() {
                    self.metrics.spooled.with_label_values(&["lost"]).inc();
                    tracing::error!(%error, "capture failed and the message bytes are gone; not spooled");
                    return;
                }
                tracing::warn!(%error, message_id = message_id.as_deref().unwrap_or("-"), "capture failed; the message was relayed and goes to the spool");
                let meta = SpoolMeta {
                    owner: info.owner,
                    direction: Direction::Outbound,
                    envelope_recipients: info.envelope_recipients,
                    message_id: message_id.clone(),
                    headers_only_size: headers_only,
                    error: error.to_string(),
                    spooled_at: unix_now(),
                };
                let dir = self.spool_dir.clone();
                let written =
                    tokio::task::spawn_blocking(move || spool::write(&dir, &raw, &meta)).await;
                match written {
                    Ok(Ok(path)) => {
                        self.metrics.spooled.with_label_values(&["spooled"]).inc();
                        tracing::warn!(path = %path.display(), message_id = message_id.as_deref().unwrap_or("-"), "message spooled; replay with `mailshare ingest --spool`");
                    }
                    Ok(Err(e)) => {
                        self.metrics.spooled.with_label_values(&["failed"]).inc();
                        tracing::error!(error = %e, message_id = message_id.as_deref().unwrap_or("-"), "could not spool an uncaptured message; it is lost to capture");
                    }
                    Err(e) => {
                        self.metrics.spooled.with_label_values(&["failed"]).inc();
                        tracing::error!(error = %e, "spool task failed");
                    }
                }
            }
        }
    }
}

fn capture_timed_out(m: &SmtpMetrics, wait: Duration) {
    m.spooled.with_label_values(&["timed_out"]).inc();
    tracing::error!(
        seconds = wait.as_secs(),
        "capture did not finish in time; releasing upstream's reply"
    );
}

/// Per-listener facts a session needs.
#[derive(Clone, Debug)]
pub struct ListenerContext {
    pub config: Listener,
    /// Metric label.
    pub name: Arc<str>,
}

/// Handle one accepted connection until it ends.
pub async fn run(
    relay: Arc<Relay>,
    listener: Arc<ListenerContext>,
    accepted: Accepted,
    shutdown: Shutdown,
) {
    let open = relay
        .metrics
        .sessions_open
        .with_label_values(&[&listener.name]);
    relay
        .metrics
        .sessions
        .with_label_values(&[&listener.name])
        .inc();
    open.inc();
    // The listener runs this inside the session's span (listener, client…).
    let outcome = drive(relay.clone(), listener, accepted.stream, shutdown).await;
    open.dec();
    crate::net::listener::record_end(outcome);
}

/// The session loop, generic over the client stream.
pub async fn drive<S>(
    relay: Arc<Relay>,
    listener: Arc<ListenerContext>,
    stream: S,
    mut shutdown: Shutdown,
) -> &'static str
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = relay.gateway.config.limits;
    let now = Instant::now();
    let session_deadline = now + limits.session_timeout();
    let login_deadline = now + limits.prelogin_timeout();
    let idle = limits.smtp_idle_timeout();
    let upstream_wait = relay.upstream.timeout();

    let cfg = &listener.config;
    let mut client = match (cfg.tls, &relay.tls) {
        (TlsMode::Implicit, Some(tls)) => {
            let wait = limits.prelogin_timeout().min(idle);
            match timeout(wait, tls.acceptor().accept(stream)).await {
                Ok(Ok(s)) => Client::Tls(Box::new(s)),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return "tls_failed";
                }
                Err(_) => return "tls_timeout",
            }
        }
        _ => Client::Plain(stream),
    };
    let options = Options {
        hostname: relay.hostname.clone(),
        listener_tls: cfg.tls,
        allow_plaintext_auth: cfg.allow_plaintext_auth,
        max_message_bytes: limits.smtp_max_message_bytes,
        max_recipients: usize::try_from(limits.smtp_max_recipients).unwrap_or(usize::MAX),
        max_commands: usize::try_from(limits.smtp_max_commands).unwrap_or(usize::MAX),
        bare_line_endings: limits.smtp_bare_lf,
        max_capture_bytes: relay.gateway.max_capture_bytes(),
        max_header_bytes: usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX),
        max_pipeline: 128,
    };
    let hooks = Arc::new(GatewayHooks(relay.gateway.clone()));
    let tls_now = matches!(client, Client::Tls(_));
    let mut session = Session::new(options, hooks, tls_now);
    let mut up: Option<Up> = None;
    let mut cbuf = vec![0u8; CLIENT_READ];
    let mut ubuf = vec![0u8; UPSTREAM_READ];
    let mut sent_at: VecDeque<Instant> = VecDeque::new();
    let mut counted_sent = 0u64;
    let mut client_clock = Instant::now();
    let mut upstream_clock = Instant::now();
    let mut shutdown_seen = false;
    // A capture started before upstream's verdict on its message.
    let mut ahead: Option<Ahead> = None;
    let m = &relay.metrics;

    loop {
        // Latency bookkeeping: one instant per reply now owed by upstream.
        let (sent, _) = session.upstream_counts();
        while counted_sent < sent {
            sent_at.push_back(Instant::now());
            counted_sent += 1;
        }
        for e in session.take_events() {
            relay.observe(&e, &mut sent_at);
        }

        // Write what the session produced: upstream first (a command), then
        // the client (replies).
        if let Some(u) = up.as_mut() {
            let out = session.upstream_out();
            if !out.is_empty() {
                let n = out.len();
                let written = timeout(upstream_wait, async {
                    u.write_all(out).await?;
                    u.flush().await
                })
                .await;
                out.clear();
                match written {
                    Ok(Ok(())) => {
                        m.bytes_to_upstream.inc_by(n as u64);
                        upstream_clock = Instant::now();
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "upstream write failed");
                        m.upstream_errors.with_label_values(&["closed"]).inc();
                        up = None;
                        session.upstream_closed();
                        continue;
                    }
                    Err(_) => {
                        m.upstream_errors.with_label_values(&["timeout"]).inc();
                        up = None;
                        session.timed_out(Timeout::Upstream);
                        continue;
                    }
                }
            }
        } else {
            session.upstream_out().clear();
        }
        {
            let out = session.client_out();
            if !out.is_empty() {
                let written = timeout(idle, async {
                    client.write_all(out).await?;
                    client.flush().await
                })
                .await;
                out.clear();
                if !matches!(written, Ok(Ok(()))) {
                    session.client_closed();
                    return "client_write_failed";
                }
            }
        }
        if up.is_some() && !session.upstream_wanted() {
            // Aborted mid-message, or done: drop it (an abort never sends
            // an end of data, so upstream discards the partial message).
            up = None;
        }

        if let Some(effect) = session.take_effect() {
            match effect {
                Effect::OpenUpstream { helo } => {
                    let t = Instant::now();
                    match open_upstream(&relay, &helo).await {
                        Ok((stream, ehlo)) => {
                            m.upstream_connect_seconds
                                .observe(t.elapsed().as_secs_f64());
                            up = Some(stream);
                            upstream_clock = Instant::now();
                            session.upstream_opened(&ehlo);
                        }
                        Err(e) => {
                            m.upstream_errors.with_label_values(&[e.kind()]).inc();
                            tracing::warn!(upstream = %relay.upstream.address, error = %e, "upstream session could not be opened");
                            session.upstream_failed();
                        }
                    }
                }
                Effect::StartTls => {
                    let Some(tls) = relay.tls.as_ref() else {
                        return "no_tls_config";
                    };
                    let Client::Plain(plain) = std::mem::replace(&mut client, Client::Gone) else {
                        return "starttls_state";
                    };
                    let wait = idle.min(limits.prelogin_timeout());
                    match timeout(wait, tls.acceptor().accept(plain)).await {
                        Ok(Ok(s)) => {
                            client = Client::Tls(Box::new(s));
                            client_clock = Instant::now();
                            session.tls_started();
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "STARTTLS handshake failed");
                            return "tls_failed";
                        }
                        Err(_) => return "tls_timeout",
                    }
                }
                Effect::Capture(req) => {
                    // Bounded like any wait: a wedged store must not hold the
                    // client forever. The capture itself goes on (it runs on
                    // a blocking thread) and may still complete.
                    if timeout(upstream_wait, relay.capture(req)).await.is_err() {
                        capture_timed_out(m, upstream_wait);
                    }
                    session.capture_done();
                }
                Effect::Prepare(req) => {
                    // A previous one still here was never settled: dropping
                    // its sender tells its thread no.
                    ahead = Some(relay.prepare(req, upstream_wait));
                }
                Effect::Commit => {
                    match ahead.take() {
                        Some(a) => {
                            if timeout(upstream_wait, relay.commit(a)).await.is_err() {
                                capture_timed_out(m, upstream_wait);
                            }
                        }
                        None => tracing::error!(
                            "upstream accepted a message whose capture was not prepared"
                        ),
                    }
                    session.capture_done();
                }
                Effect::Discard => {
                    if let Some(Ahead::Running { verdict, .. }) = ahead.take() {
                        let _ = verdict.send(false);
                    }
                }
                Effect::Close => {
                    let _ = timeout(Duration::from_secs(1), client.shutdown()).await;
                    return "closed";
                }
            }
            continue;
        }
        if session.is_closed() {
            return "closed";
        }

        // Wait for the next thing to happen, under the nearest deadline.
        let mut deadline = (session_deadline, Timeout::Session);
        let mut consider = |at: Instant, kind: Timeout| {
            if at < deadline.0 {
                deadline = (at, kind);
            }
        };
        if !session.authenticated() {
            consider(login_deadline, Timeout::Login);
        }
        if session.awaiting_upstream() {
            consider(upstream_clock + upstream_wait, Timeout::Upstream);
        } else {
            consider(client_clock + idle, Timeout::Idle);
        }
        let wants_client = session.wants_client_input();
        tokio::select! {
            biased;
            _ = shutdown.fired(), if !shutdown_seen => {
                shutdown_seen = true;
                session.shutdown();
            }
            r = read_up(&mut up, &mut ubuf) => match r {
                Ok(n) if n > 0 => {
                    upstream_clock = Instant::now();
                    m.bytes_from_upstream.inc_by(n as u64);
                    session.upstream_input(&ubuf[..n]);
                }
                other => {
                    if let Err(e) = other {
                        tracing::debug!(error = %e, "upstream read failed");
                    }
                    m.upstream_errors.with_label_values(&["closed"]).inc();
                    up = None;
                    session.upstream_closed();
                }
            },
            r = client.read(&mut cbuf), if wants_client => match r {
                Ok(n) if n > 0 => {
                    client_clock = Instant::now();
                    m.bytes_from_client.inc_by(n as u64);
                    session.client_input(&cbuf[..n]);
                }
                _ => {
                    session.client_closed();
                    if let Some(u) = up.as_mut() {
                        let out = session.upstream_out();
                        if !out.is_empty() {
                            let _ = timeout(Duration::from_secs(1), u.write_all(out)).await;
                        }
                    }
                    return "client_closed";
                }
            },
            _ = tokio::time::sleep_until(deadline.0) => {
                tracing::debug!(which = ?deadline.1, "deadline passed");
                session.timed_out(deadline.1);
            }
        }
    }
}

impl Relay {
    /// Turn one session event into metrics (and a log line where useful).
    fn observe(&self, e: &Event, sent_at: &mut VecDeque<Instant>) {
        let m = &self.metrics;
        match e {
            Event::Command(verb) => {
                tracing::trace!(command = verb, "client command");
                m.commands.with_label_values(&[verb]).inc();
            }
            Event::Rejected(reason) => {
                tracing::debug!(reason, "refused");
                m.rejects.with_label_values(&[reason]).inc();
            }
            Event::Auth { ok } => {
                let result = if *ok { "success" } else { "failure" };
                tracing::debug!(result, "upstream answered AUTH");
                m.auth.with_label_values(&[result]).inc();
            }
            Event::LoggedIn { login, owner } => {
                crate::net::listener::record_login(login, owner.as_deref());
                tracing::info!(captured = owner.is_some(), "SMTP login");
            }
            Event::UpstreamReply { command, class } => {
                if let Some(t) = sent_at.pop_front() {
                    m.upstream_reply_seconds
                        .with_label_values(&[command])
                        .observe(t.elapsed().as_secs_f64());
                }
                tracing::trace!(command, class, "upstream reply");
                m.upstream_replies
                    .with_label_values(&[command, class])
                    .inc();
            }
            Event::Relayed { bytes } => {
                m.messages.inc();
                m.message_bytes.inc_by(*bytes);
            }
            Event::ShareHeaderRemoved => m.share_headers_removed.inc(),
            Event::HeadersOnly { reason } => {
                m.headers_only.with_label_values(&[reason]).inc();
                if *reason == "budget" {
                    self.gateway.budget_denied("smtp");
                }
            }
            Event::DiscardedAfterStartTls { bytes } => {
                tracing::info!(bytes, "discarded bytes pipelined after STARTTLS");
            }
        }
    }
}
