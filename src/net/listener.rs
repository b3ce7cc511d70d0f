//! The accept loop every protocol listener runs, and the per-session span.
//!
//! Limits are refusals, never silent waits: a client over the listener's
//! `max_connections_per_listener` or its IP's `max_connections_per_ip` is
//! accepted, answered with the protocol's busy reply (SMTP `421`, IMAP
//! `* BYE [UNAVAILABLE]`) and closed; every refusal is counted in
//! `mailshare_connections_refused_total{protocol,listener,reason}`. Refusals
//! are bounded in number ([`MAX_REFUSALS_IN_FLIGHT`] per listener: beyond it
//! a connection is closed without a word) and in time ([`REFUSAL_DEADLINE`]),
//! so a connection flood cannot grow memory.
//!
//! With `proxy_protocol` the PROXY v1/v2 header is read first (in the
//! connection's own task, under a deadline) and the client it names is the
//! session's client for logs and per-IP limits.
//!
//! Every session runs inside one `session` span (INFO) with the fields
//! `id` (short, unique per process), `protocol`, `listener`, `client`
//! (after PROXY), `proxy` (the balancer's address, PROXY listeners only),
//! and, recorded by the protocol, `login`, `owner` (the policy user, when
//! the login maps to one; see [`record_login`]) and `end` (why it ended).
//! One INFO line marks its start and one its end (with its duration).
//!
//! TCP_NODELAY is set on every connection; accept errors never end the loop
//! (capped back-off); the loop stops when shutdown fires, and each session
//! holds a [`DrainGuard`](crate::shutdown::DrainGuard) so `app` can wait for
//! them.

use crate::shutdown::{Drain, DrainGuard, Shutdown};
use prometheus::IntCounterVec;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{Instrument, Span};

/// Counts open connections per client IP across every listener sharing it.
#[derive(Debug)]
pub struct IpLimiter {
    max_per_ip: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; releases its count on drop.
#[derive(Debug)]
pub struct IpPermit {
    limiter: Arc<IpLimiter>,
    ip: IpAddr,
}

impl IpLimiter {
    pub fn new(max_per_ip: usize) -> Arc<IpLimiter> {
        Arc::new(IpLimiter {
            max_per_ip: max_per_ip.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Count a connection from `ip`, or `None` when it already has the maximum.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpPermit> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(IpPermit {
            limiter: self.clone(),
            ip,
        })
    }

    /// Connections currently counted for `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        let mut open = self
            .limiter
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// An accepted connection. Its permits (listener slot, per-IP count, drain
/// registration) are held by the accept loop's task for as long as the
/// session future runs, whatever the handler does with this value.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TcpStream,
    /// The client's address (with PROXY protocol: the one the header names).
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

#[derive(Debug)]
struct SessionPermits {
    _listener: OwnedSemaphorePermit,
    _ip: IpPermit,
    _drain: DrainGuard,
}

/// Why a connection was refused; each protocol maps it to its busy reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The listener already serves `max_connections_per_listener` sessions.
    ListenerFull,
    /// The client's IP already has `max_connections_per_ip` connections.
    TooManyFromIp,
}

impl Refusal {
    /// The `reason` label of `mailshare_connections_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ListenerFull => "listener_full",
            Refusal::TooManyFromIp => "per_ip",
        }
    }
}

/// The `reason` label for a connection closed because its PROXY header was
/// missing, invalid or late (no reply: the peer is not a known balancer).
pub const REFUSED_PROXY_HEADER: &str = "proxy_header";

/// Every `reason` label value of `mailshare_connections_refused_total`.
pub const REFUSAL_REASONS: &[&str] = &["listener_full", "per_ip", REFUSED_PROXY_HEADER];

/// How long a client of a `proxy_protocol` listener has to send its header.
pub const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Refusals (busy reply, then a short lingering close) in flight per
/// listener; connections refused beyond it are closed at once.
pub const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// The longest one refusal may take: PROXY header, busy reply, linger.
pub const REFUSAL_DEADLINE: Duration = Duration::from_secs(3);

/// Limits and shared counters for one listener.
#[derive(Clone, Debug)]
pub struct ListenerOptions {
    /// `smtp` or `imap`: the `protocol` of spans and metric labels.
    pub protocol: &'static str,
    /// Metric/log label, e.g. `smtp:127.0.0.1:2587`.
    pub name: Arc<str>,
    pub max_connections: usize,
    pub ip_limiter: Arc<IpLimiter>,
    pub drain: Drain,
    /// Expect a HAProxy PROXY v1/v2 header on every connection; the client
    /// address it names is the session's peer (logs, per-IP limits).
    pub proxy_protocol: bool,
    /// How long a client has to send the PROXY header.
    pub proxy_header_timeout: Duration,
    /// `mailshare_connections_refused_total` (labels `protocol`, `listener`,
    /// `reason`), usually [`crate::metrics::Metrics::connections_refused`].
    pub refused: IntCounterVec,
}

impl ListenerOptions {
    /// Options with the default PROXY-header timeout and no PROXY protocol.
    pub fn new(
        protocol: &'static str,
        name: &str,
        max_connections: usize,
        ip_limiter: Arc<IpLimiter>,
        drain: Drain,
        refused: IntCounterVec,
    ) -> Self {
        ListenerOptions {
            protocol,
            name: name.into(),
            max_connections,
            ip_limiter,
            drain,
            proxy_protocol: false,
            proxy_header_timeout: PROXY_HEADER_TIMEOUT,
            refused,
        }
    }

    fn count_refusal(&self, reason: &str) {
        self.refused
            .with_label_values(&[self.protocol, &self.name, reason])
            .inc();
    }
}

/// A short session id, unique in this process: a random per-process prefix
/// (so ids from before a restart do not repeat) and a counter, in hex.
pub fn next_session_id() -> String {
    static PREFIX: OnceLock<u16> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 2];
        // Without OS randomness the ids are still unique in the process.
        let _ = getrandom::getrandom(&mut b);
        u16::from_be_bytes(b)
    });
    format!("{prefix:04x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The `session` span of one connection (see the module docs).
fn session_span(
    protocol: &str,
    listener: &str,
    client: SocketAddr,
    via: Option<SocketAddr>,
) -> Span {
    tracing::info_span!(
        "session",
        id = %next_session_id(),
        protocol = %protocol,
        listener = %listener,
        client = %client,
        proxy = via.map(tracing::field::display),
        login = tracing::field::Empty,
        owner = tracing::field::Empty,
        end = tracing::field::Empty,
    )
}

/// Record a successful login in the current session span: `login` as the
/// client gave it (control characters escaped, at most 256 bytes kept), and
/// `owner`, the policy user it maps to (none: relayed, not captured).
/// Never a password: callers pass only the login name.
pub fn record_login(login: &str, owner: Option<&str>) {
    let span = Span::current();
    span.record("login", printable(login, 256).as_str());
    if let Some(owner) = owner {
        span.record("owner", printable(owner, 256).as_str());
    }
}

/// Record why the session ended (a short word from a fixed set) in the
/// current session span; the listener's "session ended" line shows it.
pub fn record_end(end: &'static str) {
    Span::current().record("end", tracing::field::display(end));
}

/// `s` with control characters escaped, cut to at most `max` bytes.
fn printable(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() >= max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What every connection task of one listener shares.
struct Shared<H, R> {
    options: ListenerOptions,
    handle: H,
    reply: R,
    refusals: Arc<Semaphore>,
}

/// Accept until shutdown fires. `handle` runs each session in its own task
/// (inside its `session` span); `reply` gives the protocol's busy reply to a
/// refused client (`None`: close without a word, e.g. on implicit-TLS
/// listeners where a plaintext line would mean nothing to the client).
pub async fn serve<H, HF, R>(
    listener: TcpListener,
    options: ListenerOptions,
    mut shutdown: Shutdown,
    handle: H,
    reply: R,
) where
    H: Fn(Accepted) -> HF + Send + Sync + 'static,
    HF: Future<Output = ()> + Send + 'static,
    R: Fn(Refusal) -> Option<&'static [u8]> + Send + Sync + 'static,
{
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let shared = Arc::new(Shared {
        options,
        handle,
        reply,
        refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
    });
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.fired() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(5);
                x
            }
            Err(e) => {
                // EMFILE, ENOBUFS, a reset before accept…: never fatal.
                tracing::warn!(listener = %shared.options.name, error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(connection(shared.clone(), stream, peer, slot));
            }
            Err(_) => {
                // The PROXY header (if any) is read in the refusal task.
                if let Some(refusal) =
                    start_refusal(&shared, stream, peer, None, Refusal::ListenerFull)
                {
                    tokio::spawn(refusal);
                }
            }
        }
    }
}

/// One accepted connection holding a listener slot: the PROXY header, the
/// per-IP count, then the session (or the refusal).
async fn connection<H, HF, R>(
    shared: Arc<Shared<H, R>>,
    mut stream: TcpStream,
    socket_peer: SocketAddr,
    slot: OwnedSemaphorePermit,
) where
    H: Fn(Accepted) -> HF + Send + Sync + 'static,
    HF: Future<Output = ()>,
    R: Fn(Refusal) -> Option<&'static [u8]> + Send + Sync + 'static,
{
    let options = &shared.options;
    let (client, via) = if options.proxy_protocol {
        // Read in this task: a slow client never holds up the accept loop.
        let header = tokio::time::timeout(
            options.proxy_header_timeout,
            super::proxy::read_header(&mut stream),
        )
        .await;
        match header {
            Ok(Ok(Some(client))) => (client, Some(socket_peer)),
            Ok(Ok(None)) => (socket_peer, Some(socket_peer)),
            Ok(Err(super::proxy::ProxyError::Empty)) => {
                // A balancer's TCP health check: neither a refusal nor news.
                drop(slot);
                tracing::debug!(listener = %options.name, peer = %socket_peer, "closed before a PROXY header (health check?)");
                return;
            }
            Ok(Err(e)) => {
                drop(slot);
                options.count_refusal(REFUSED_PROXY_HEADER);
                tracing::info!(listener = %options.name, peer = %socket_peer, error = %e, "PROXY header rejected; connection closed");
                return;
            }
            Err(_) => {
                drop(slot);
                options.count_refusal(REFUSED_PROXY_HEADER);
                tracing::info!(listener = %options.name, peer = %socket_peer, "no PROXY header in time; connection closed");
                return;
            }
        }
    } else {
        (socket_peer, None)
    };
    let Some(ip_permit) = options.ip_limiter.try_acquire(client.ip()) else {
        drop(slot);
        let known = Some((client, via));
        if let Some(refusal) =
            start_refusal(&shared, stream, socket_peer, known, Refusal::TooManyFromIp)
        {
            refusal.await;
        }
        return;
    };
    let local = stream.local_addr().unwrap_or(socket_peer);
    let permits = SessionPermits {
        _listener: slot,
        _ip: ip_permit,
        _drain: options.drain.enter(),
    };
    let span = session_span(options.protocol, &options.name, client, via);
    let started = Instant::now();
    span.in_scope(|| tracing::info!("session started"));
    (shared.handle)(Accepted {
        stream,
        peer: client,
        local,
    })
    .instrument(span.clone())
    .await;
    drop(permits);
    span.in_scope(|| tracing::info!(seconds = started.elapsed().as_secs_f64(), "session ended"));
}

/// Count a refusal and, if fewer than [`MAX_REFUSALS_IN_FLIGHT`] are under
/// way, return the task that answers it (busy reply, lingering close);
/// otherwise close the connection now. `known`: the client and balancer
/// addresses once the PROXY header was read; `None`: not read yet (on a
/// PROXY listener the task reads it first, for the log's client address).
fn start_refusal<H, R>(
    shared: &Arc<Shared<H, R>>,
    stream: TcpStream,
    socket_peer: SocketAddr,
    known: Option<(SocketAddr, Option<SocketAddr>)>,
    why: Refusal,
) -> Option<impl Future<Output = ()> + Send + 'static>
where
    H: Send + Sync + 'static,
    R: Fn(Refusal) -> Option<&'static [u8]> + Send + Sync + 'static,
{
    let options = &shared.options;
    options.count_refusal(why.as_str());
    let Ok(permit) = shared.refusals.clone().try_acquire_owned() else {
        tracing::debug!(listener = %options.name, peer = %socket_peer, reason = why.as_str(), "refused and closed at once: too many refusals under way");
        return None;
    };
    let shared = shared.clone();
    Some(async move {
        let _permit = permit;
        let mut stream = stream;
        let options = &shared.options;
        let reply = (shared.reply)(why);
        let _ = tokio::time::timeout(REFUSAL_DEADLINE, async {
            let (client, via) = match known {
                Some(k) => k,
                None if options.proxy_protocol => {
                    match super::proxy::read_header(&mut stream).await {
                        Ok(Some(client)) => (client, Some(socket_peer)),
                        Ok(None) => (socket_peer, Some(socket_peer)),
                        // Not a balancer we know: no reply.
                        Err(_) => return,
                    }
                }
                None => (socket_peer, None),
            };
            let span = session_span(options.protocol, &options.name, client, via);
            span.in_scope(|| tracing::info!(reason = why.as_str(), "connection refused"));
            if let Some(reply) = reply {
                if stream.write_all(reply).await.is_err() {
                    return;
                }
            }
            let _ = stream.shutdown().await;
            super::stream::linger(&mut stream).await;
        })
        .await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn refused_counter() -> IntCounterVec {
        IntCounterVec::new(
            prometheus::Opts::new("refused", "test"),
            &["protocol", "listener", "reason"],
        )
        .unwrap()
    }

    fn refusals(options: &ListenerOptions, reason: &str) -> u64 {
        options
            .refused
            .with_label_values(&[options.protocol, &options.name, reason])
            .get()
    }

    /// Greets "hello\n", then holds the session until the client closes.
    async fn hold(mut a: Accepted) {
        let _ = a.stream.write_all(b"hello\n").await;
        let mut buf = [0u8; 1];
        let _ = a.stream.read(&mut buf).await;
    }

    fn busy(why: Refusal) -> Option<&'static [u8]> {
        Some(match why {
            Refusal::ListenerFull => b"full\n",
            Refusal::TooManyFromIp => b"busy\n",
        })
    }

    /// Connect and read the first line (empty when closed without a word).
    async fn first_line(addr: SocketAddr, send: &[u8]) -> (TcpStream, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(send).await.unwrap();
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        let read = async {
            while let Ok(1) = s.read(&mut b).await {
                out.push(b[0]);
                if b[0] == b'\n' {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("a line or a close within 20 s");
        (s, String::from_utf8_lossy(&out).into_owned())
    }

    /// Poll `f` (bounded) until it holds.
    async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}: not within 5 s");
    }

    #[tokio::test]
    async fn per_ip_limit_refuses_and_releases() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = crate::shutdown::channel();
        let options = ListenerOptions::new(
            "smtp",
            "test",
            10,
            IpLimiter::new(2),
            Drain::new(),
            refused_counter(),
        );
        let server = tokio::spawn(serve(listener, options.clone(), shutdown, hold, busy));
        let (a, ga) = first_line(addr, b"").await;
        let (_b, gb) = first_line(addr, b"").await;
        let (_c, gc) = first_line(addr, b"").await;
        assert_eq!(
            (ga.as_str(), gb.as_str(), gc.as_str()),
            ("hello\n", "hello\n", "busy\n")
        );
        assert_eq!(refusals(&options, "per_ip"), 1);
        assert_eq!(refusals(&options, "listener_full"), 0);
        drop(a);
        // The count is released when the session ends.
        let mut ok = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let (_d, gd) = first_line(addr, b"").await;
            if gd == "hello\n" {
                ok = true;
                break;
            }
        }
        assert!(ok, "a slot came back after a session ended");
        trigger.fire();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("accept loop stops on shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn a_full_listener_answers_busy_and_counts_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = crate::shutdown::channel();
        let options = ListenerOptions::new(
            "imap",
            "full",
            2,
            IpLimiter::new(2),
            Drain::new(),
            refused_counter(),
        );
        tokio::spawn(serve(listener, options.clone(), shutdown, hold, busy));
        let (a, ga) = first_line(addr, b"").await;
        let (_b, gb) = first_line(addr, b"").await;
        // Not left waiting in the backlog: answered at once, then closed.
        let (mut c, gc) = first_line(addr, b"").await;
        assert_eq!(
            (ga.as_str(), gb.as_str(), gc.as_str()),
            ("hello\n", "hello\n", "full\n")
        );
        let mut rest = Vec::new();
        let eof = tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut rest)).await;
        assert!(matches!(eof, Ok(Ok(0))), "closed after the reply: {eof:?}");
        assert_eq!(refusals(&options, "listener_full"), 1);
        assert_eq!(refusals(&options, "per_ip"), 0);
        // A full listener is checked before the per-IP count: that one is
        // listener_full too, though the IP is also at its limit.
        let (_d, gd) = first_line(addr, b"").await;
        assert_eq!(gd, "full\n");
        assert_eq!(refusals(&options, "listener_full"), 2);
        // A slot comes back when a session ends.
        drop(a);
        let mut served = false;
        for _ in 0..100 {
            let (_e, ge) = first_line(addr, b"").await;
            if ge == "hello\n" {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(served, "served again once a session ended");
        trigger.fire();
    }

    #[tokio::test]
    async fn refusals_in_flight_are_capped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = crate::shutdown::channel();
        let options = ListenerOptions::new(
            "smtp",
            "flood",
            1,
            IpLimiter::new(1),
            Drain::new(),
            refused_counter(),
        );
        tokio::spawn(serve(listener, options.clone(), shutdown, hold, busy));
        let (_held, g) = first_line(addr, b"").await;
        assert_eq!(g, "hello\n");
        // More refused clients than the cap, none of them closing: each
        // answered refusal lingers (bounded) waiting for its client's close,
        // so the ones past the cap are closed without a reply.
        let n = MAX_REFUSALS_IN_FLIGHT + 8;
        let mut clients = Vec::new();
        for _ in 0..n {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        eventually("every flood connection counted", || {
            refusals(&options, "listener_full") == n as u64
        })
        .await;
        let (mut replied, mut silent) = (0, 0);
        for mut c in clients {
            let mut buf = Vec::new();
            let r = tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut buf)).await;
            match buf.as_slice() {
                b"full\n" => replied += 1,
                b"" => silent += 1,
                other => panic!("unexpected {other:?} ({r:?})"),
            }
        }
        assert_eq!(replied + silent, n);
        assert!(replied <= MAX_REFUSALS_IN_FLIGHT, "{replied} replies");
        assert!(silent >= 1, "some were closed at once");
        trigger.fire();
    }

    #[tokio::test]
    async fn proxy_protocol_peer_is_the_named_client_and_limits_count_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = crate::shutdown::channel();
        let mut options = ListenerOptions::new(
            "smtp",
            "proxied",
            3,
            IpLimiter::new(1),
            Drain::new(),
            refused_counter(),
        );
        options.proxy_protocol = true;
        options.proxy_header_timeout = Duration::from_millis(300);
        tokio::spawn(serve(
            listener,
            options.clone(),
            shutdown,
            |mut a: Accepted| async move {
                let line = format!("peer {}\n", a.peer);
                let _ = a.stream.write_all(line.as_bytes()).await;
                let mut buf = [0u8; 1];
                let _ = a.stream.read(&mut buf).await;
            },
            busy,
        ));
        let (_a, got) = first_line(addr, b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 25\r\n").await;
        assert_eq!(got, "peer 203.0.113.7:5000\n");
        // Closed before its first byte (a balancer's TCP health check): not
        // a refusal (checked below, once later connections were handled).
        drop(TcpStream::connect(addr).await.unwrap());
        // Same real client again: over its limit of one, though the socket peer differs.
        let (_b, got) = first_line(addr, b"PROXY TCP4 203.0.113.7 10.0.0.1 5001 25\r\n").await;
        assert_eq!(got, "busy\n");
        assert_eq!(refusals(&options, "per_ip"), 1);
        // Another client is fine.
        let (_c, got) = first_line(addr, b"PROXY TCP4 198.51.100.1 10.0.0.1 5002 25\r\n").await;
        assert_eq!(got, "peer 198.51.100.1:5002\n");
        // No header, or none in time: closed without a word, counted.
        let (_d, got) = first_line(addr, b"EHLO x\r\n").await;
        assert_eq!(got, "");
        let (_e, got) = first_line(addr, b"").await;
        assert_eq!(got, "");
        assert_eq!(refusals(&options, REFUSED_PROXY_HEADER), 2);
        // v2 names the client too; then the listener is full (3 sessions)
        // and the next one is refused after its header is read.
        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        v2.extend_from_slice(&[192, 0, 2, 1, 10, 0, 0, 1]);
        v2.extend_from_slice(&6000u16.to_be_bytes());
        v2.extend_from_slice(&25u16.to_be_bytes());
        let (_f, got) = first_line(addr, &v2).await;
        assert_eq!(got, "peer 192.0.2.1:6000\n");
        let (_g, got) = first_line(addr, b"PROXY TCP4 192.0.2.2 10.0.0.1 6001 25\r\n").await;
        assert_eq!(got, "full\n");
        assert_eq!(refusals(&options, "listener_full"), 1);
        trigger.fire();
    }

    #[test]
    fn session_ids_are_short_and_unique() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| next_session_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|i| i.len() <= 12), "{ids:?}");
    }

    #[test]
    fn logged_names_are_printable_and_bounded() {
        assert_eq!(printable("alice", 256), "alice");
        assert_eq!(printable("a\r\nb\x1b[31m", 256), "a\\r\\nb\\u{1b}[31m");
        let long = printable(&"x".repeat(1000), 256);
        assert!(long.len() <= 260 && long.ends_with('…'), "{long}");
    }
}

#[cfg(test)]
mod span_tests {
    use super::*;
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Log lines written by the subscriber under test.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn lines(&self) -> Vec<serde_json::Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        }
    }

    /// The session span's fields on the JSON line with this message.
    fn session_fields(lines: &[serde_json::Value], message: &str) -> serde_json::Value {
        let line = lines
            .iter()
            .find(|l| l["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in {lines:#?}"));
        let spans = line["spans"].as_array().expect("a span list");
        spans
            .iter()
            .find(|s| s["name"] == "session")
            .unwrap_or_else(|| panic!("no session span on {line}"))
            .clone()
    }

    // A current-thread runtime: every task runs on this thread, under the
    // subscriber set as its default.
    #[tokio::test]
    async fn every_session_line_carries_the_session_span_in_json() {
        let buf = Buffer::default();
        let writer = buf.clone();
        let sub = crate::logging::subscriber(
            tracing_subscriber::EnvFilter::new("info"),
            true,
            false,
            move || writer.clone(),
        );
        let _default = tracing::subscriber::set_default(sub);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = crate::shutdown::channel();
        let mut options = ListenerOptions::new(
            "imap",
            "imap:test",
            10,
            IpLimiter::new(10),
            Drain::new(),
            IntCounterVec::new(
                prometheus::Opts::new("r", "r"),
                &["protocol", "listener", "reason"],
            )
            .unwrap(),
        );
        options.proxy_protocol = true;
        tokio::spawn(serve(
            listener,
            options,
            shutdown,
            |mut a: Accepted| async move {
                tracing::info!("before login");
                record_login("Alice\r\n", Some("alice@acme.example"));
                tracing::info!("after login");
                record_end("client_closed");
                let _ = a.stream.write_all(b"done\n").await;
            },
            |_| None,
        ));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 143\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out, b"done\n");
        let mut ended = false;
        for _ in 0..500 {
            if buf
                .lines()
                .iter()
                .any(|l| l["fields"]["message"] == "session ended")
            {
                ended = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(ended, "a session ended line");
        trigger.fire();
        let lines = buf.lines();
        let start = session_fields(&lines, "session started");
        assert_eq!(start["protocol"], "imap");
        assert_eq!(start["listener"], "imap:test");
        assert_eq!(start["client"], "203.0.113.7:5000");
        assert!(start["proxy"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(start["id"].as_str().is_some_and(|i| !i.is_empty()));
        assert!(start.get("login").is_none(), "{start}");
        let before = session_fields(&lines, "before login");
        assert_eq!(before["id"], start["id"]);
        let after = session_fields(&lines, "after login");
        assert_eq!(after["id"], start["id"]);
        assert_eq!(after["login"], "Alice\\r\\n");
        assert_eq!(after["owner"], "alice@acme.example");
        let end = session_fields(&lines, "session ended");
        assert_eq!(end["end"], "client_closed");
        assert_eq!(end["client"], "203.0.113.7:5000");
        let line = lines
            .iter()
            .find(|l| l["fields"]["message"] == "session ended")
            .unwrap();
        assert!(line["fields"]["seconds"].as_f64().is_some(), "{line}");
        assert_eq!(line["level"], "INFO");
    }
}
