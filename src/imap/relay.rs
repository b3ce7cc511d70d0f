//! After login: a byte-faithful relay in both directions.
//!
//! Two pumps run in the session's task. Each reads into an adaptive buffer
//! (4 KiB while quiet, 128 KiB under load, shrunk again after two idle
//! seconds, so an idle session holds little), frames the bytes with a
//! [`Scanner`], and forwards them unchanged. What they read on the way:
//!
//! - **client → upstream**: command lines are forwarded whole (each ≤
//!   `imap_max_line_bytes`), literals stream through. The pump tracks tags
//!   (pending commands, bounded: at the limit it stops reading the client
//!   until responses arrive), IDLE/DONE, APPEND's arguments (to tee whole
//!   messages that are not drafts), and literal sizes (a synchronizing
//!   literal over `imap_max_literal_bytes` gets `NO [TOOBIG]` without being
//!   forwarded, a non-synchronizing one `* BYE`). After a synchronizing
//!   literal announcement it reads no further client byte until the
//!   upstream has answered with `+` (literal accepted) or a tagged response
//!   (refused: the literal never comes), exactly as the upstream frames it.
//!   STARTTLS and COMPRESS are answered by the proxy (`NO`): both would take
//!   the stream out of its sight.
//! - **upstream → client**: lines stream through after a short head
//!   (≤ 512 bytes) classifies them. Capability lists (untagged CAPABILITY,
//!   `[CAPABILITY …]` codes) are buffered and filtered; status responses and
//!   continuations announce no literal whatever their text ends with; tagged
//!   responses complete pending commands (and release APPEND captures on
//!   `OK`); LIST/LSUB lines marked `\Drafts` teach the \Drafts mailbox; FETCH
//!   responses are followed by [`FetchState`] and their message literals
//!   teed. Nothing is buffered beyond a line head, a capability line or a
//!   FETCH skeleton: a 50 MB literal streams in 128 KiB reads.
//!
//! Replies the proxy makes itself (refusals, `* BYE`) are written by the
//! upstream→client pump at a message boundary, so they never land inside a
//! response. Timeouts: the client's silence (`imap_idle_timeout_secs`, IDLE
//! included), the upstream's silence while it owes a response
//! (`timeout_secs`), and the session's total lifetime. On shutdown the
//! session says `* BYE` at the first point where no command is in flight.

use super::capability;
use super::capture::{SessionCapture, Source, TeeKind};
use super::fetch::FetchState;
use super::metrics::ImapMetrics;
use super::scanner::{Announcement, LiteralMode, Piece, Scanner};
use super::syntax::{
    classify, command_head, drafts_from_list, is_drafts_name, trim_eol, AppendParser, AppendRole,
    FetchItem, ServerLine, CLASSIFY_HEAD,
};
use crate::net::splice::{SpliceError, SplicePair};
use crate::shutdown::Shutdown;
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

/// Read buffer while quiet.
const SMALL: usize = 4 * 1024;
/// Read buffer under load: 128 KiB halves the syscalls and wake-ups of
/// 64 KiB (measured: 0.47 instead of 0.58 CPU-seconds per GB relayed at 8
/// clients) for 128 KiB per direction of a session that is streaming.
const LARGE: usize = 128 * 1024;
/// A literal's rest, when nothing needs to see it and both legs are plain
/// TCP, is spliced from this size on (below it the pipe's set-up costs more
/// than the copies it saves).
const SPLICE_MIN: u64 = 32 * 1024;
/// Quiet time after which a large read buffer is given back.
const SHRINK_AFTER: Duration = Duration::from_secs(2);
/// Small writes are coalesced up to this much.
const COALESCE: usize = 16 * 1024;
/// Most \Drafts names remembered per session.
const MAX_DRAFTS: usize = 16;
/// A mailbox name sent as a literal longer than this is not collected.
const MAX_MAILBOX: usize = 1024;
/// After the client closes, how long the upstream's last responses may take.
const LINGER: Duration = Duration::from_secs(5);

/// Limits and timeouts of one relayed session.
#[derive(Clone, Copy, Debug)]
pub struct RelayOptions {
    /// Longest client command line, and longest upstream capability line.
    pub max_line: usize,
    /// Largest literal a client may send.
    pub max_literal: u64,
    /// Commands in flight before the proxy stops reading the client.
    pub max_pending: usize,
    /// Longest client silence.
    pub idle_timeout: Duration,
    /// Longest upstream silence while it owes a response.
    pub upstream_timeout: Duration,
    /// End of the session's lifetime.
    pub session_deadline: Instant,
}

/// Why a relayed session ended.
#[derive(Debug)]
pub enum RelayEnd {
    ClientClosed,
    UpstreamClosed,
    /// The proxy said `* BYE` (limit, timeout, shutdown); the reason.
    Bye(&'static str),
    ClientError(io::Error),
    UpstreamError(io::Error),
    /// The upstream broke the protocol.
    UpstreamProtocol(&'static str),
}

impl RelayEnd {
    /// The session span's `end` field.
    pub fn label(&self) -> &'static str {
        match self {
            RelayEnd::ClientClosed => "client_closed",
            RelayEnd::UpstreamClosed => "upstream_closed",
            RelayEnd::Bye(why) => why,
            RelayEnd::ClientError(_) => "client_error",
            RelayEnd::UpstreamError(_) => "upstream_error",
            RelayEnd::UpstreamProtocol(_) => "upstream_protocol",
        }
    }
}

/// State both pumps see.
struct Shared {
    inner: Mutex<Inner>,
    /// Signalled when a pending command completes.
    room: Notify,
    /// Signalled when the upstream comes to owe a response.
    owed: Notify,
}

#[derive(Default)]
struct Inner {
    pending: VecDeque<Pending>,
    awaiting: Option<Awaiting>,
    drafts: Vec<Vec<u8>>,
}

impl Inner {
    /// The upstream owes a response.
    fn owed(&self) -> bool {
        self.awaiting.is_some() || self.pending.iter().any(|p| !p.idle || p.idle_done)
    }

    fn in_flight(&self) -> usize {
        self.pending.iter().filter(|p| !p.idle).count()
    }
}

struct Pending {
    tag: Vec<u8>,
    label: &'static str,
    started: Instant,
    idle: bool,
    idle_done: bool,
    /// Appended messages teed, released to capture on `OK`.
    appends: Vec<super::capture::Tee>,
}

/// The client waits for the upstream's verdict on a synchronizing literal.
struct Awaiting {
    tag: Vec<u8>,
    tx: oneshot::Sender<Verdict>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Continue,
    Refused,
}

/// What the client pump asks the upstream pump to write to the client.
enum Ctrl {
    Reply(Vec<u8>),
    Bye(Vec<u8>, &'static str),
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    shared.inner.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Relay until either side ends. `client_pending` / `upstream_pending`:
/// bytes already read from each before the relay started. `splice`: the
/// upstream and client sockets, when both legs are plain TCP.
#[allow(clippy::too_many_arguments)]
pub async fn relay<C, U>(
    client: C,
    upstream: U,
    client_pending: Vec<u8>,
    upstream_pending: Vec<u8>,
    options: RelayOptions,
    capture: Option<Arc<SessionCapture>>,
    metrics: ImapMetrics,
    shutdown: Shutdown,
    splice: Option<SplicePair>,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Send,
    U: AsyncRead + AsyncWrite + Send,
{
    let (cr, cw) = tokio::io::split(client);
    let (ur, uw) = tokio::io::split(upstream);
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner::default()),
        room: Notify::new(),
        owed: Notify::new(),
    });
    let (ctrl_tx, ctrl_rx) = mpsc::channel(64);
    let mut c2s = ClientPump {
        reader: cr,
        writer: uw,
        shared: shared.clone(),
        ctrl: ctrl_tx,
        options,
        capture: capture.clone(),
        metrics: metrics.clone(),
        scanner: Scanner::new(),
        line: Vec::new(),
        seg: 0,
        cmd: None,
        literal: LiteralUse::Forward,
        out: Vec::new(),
        buf: ReadBuf::new(),
    };
    let mut s2c = ServerPump {
        reader: ur,
        writer: cw,
        shared,
        ctrl: ctrl_rx,
        options,
        capture,
        metrics,
        shutdown,
        shutdown_seen: false,
        scanner: Scanner::new(),
        seg: 0,
        class: None,
        head: Vec::new(),
        capline: Vec::new(),
        listline: Some(Vec::new()),
        fetch: None,
        out: Vec::new(),
        buf: ReadBuf::new(),
        upstream_bye: false,
        splice,
    };
    let end = tokio::select! {
        end = c2s.run(client_pending) => end,
        end = s2c.run(upstream_pending) => end,
    };
    if matches!(
        end,
        RelayEnd::Bye(_) | RelayEnd::UpstreamClosed | RelayEnd::UpstreamProtocol(_)
    ) {
        // The proxy closes while the client may still be sending: read and
        // discard a little first, or the close would reset the connection
        // and the client could lose the BYE.
        linger(&mut c2s.reader).await;
    }
    end
}

/// Write `a` then `b` with as few system calls as the stream allows (one
/// `writev` for a small buffered line and the literal bytes after it).
async fn write_both<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut a: &[u8],
    mut b: &[u8],
) -> io::Result<()> {
    while !a.is_empty() {
        let n = w
            .write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    w.write_all(b).await
}

pub use crate::net::stream::linger;

/// A read buffer that grows under load and shrinks when quiet.
struct ReadBuf {
    data: Vec<u8>,
    grow: bool,
}

enum Read {
    Data(usize),
    Eof,
    TimedOut,
}

impl ReadBuf {
    fn new() -> Self {
        ReadBuf {
            data: vec![0; SMALL],
            grow: false,
        }
    }

    /// Read once; `limit`: give up (TimedOut) at this instant.
    async fn read<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        limit: Option<Instant>,
    ) -> io::Result<Read> {
        if self.grow && self.data.len() < LARGE {
            self.data.resize(LARGE, 0);
        }
        self.grow = false;
        loop {
            let big = self.data.len() > SMALL;
            let wake = match (big, limit) {
                (true, Some(l)) => l.min(Instant::now() + SHRINK_AFTER),
                (true, None) => Instant::now() + SHRINK_AFTER,
                (false, Some(l)) => l,
                (false, None) => Instant::now() + Duration::from_secs(86_400 * 365),
            };
            match tokio::time::timeout_at(wake, r.read(&mut self.data)).await {
                Ok(Ok(0)) => return Ok(Read::Eof),
                Ok(Ok(n)) => {
                    self.grow = n == self.data.len();
                    return Ok(Read::Data(n));
                }
                Ok(Err(e)) => return Err(e),
                Err(_) if limit.is_some_and(|l| Instant::now() >= l) => return Ok(Read::TimedOut),
                Err(_) => {
                    self.data = vec![0; SMALL];
                }
            }
        }
    }
}

/// What the current client literal is for.
enum LiteralUse {
    Forward,
    Mailbox(Vec<u8>),
    Message(super::capture::Tee),
}

/// The client command being relayed.
struct Cmd {
    tag: Vec<u8>,
    append: Option<AppendParser>,
}

struct ClientPump<C, U> {
    reader: ReadHalf<C>,
    writer: WriteHalf<U>,
    shared: Arc<Shared>,
    ctrl: mpsc::Sender<Ctrl>,
    options: RelayOptions,
    capture: Option<Arc<SessionCapture>>,
    metrics: ImapMetrics,
    scanner: Scanner,
    line: Vec<u8>,
    seg: u32,
    cmd: Option<Cmd>,
    literal: LiteralUse,
    out: Vec<u8>,
    buf: ReadBuf,
}

/// Why the client pump stopped (the upstream pump ends the session).
enum Stop {
    /// A `Ctrl::Bye` was sent; wait for the other pump.
    Bye,
    End(RelayEnd),
}

impl<C: AsyncRead + Send, U: AsyncWrite + Send> ClientPump<C, U> {
    async fn run(&mut self, initial: Vec<u8>) -> RelayEnd {
        let stop = self.pump(initial).await;
        match stop {
            Stop::Bye => std::future::pending().await,
            Stop::End(RelayEnd::ClientClosed) => {
                // Let the upstream answer what was sent (LOGOUT) and close.
                let _ = self.writer.shutdown().await;
                tokio::time::sleep(LINGER).await;
                RelayEnd::ClientClosed
            }
            Stop::End(e) => e,
        }
    }

    async fn pump(&mut self, initial: Vec<u8>) -> Stop {
        let bytes = self
            .metrics
            .bytes
            .with_label_values(&["client_to_upstream"]);
        if !initial.is_empty() {
            if let Err(s) = self.process(&initial).await {
                return s;
            }
        }
        loop {
            let idle_limit = Instant::now() + self.options.idle_timeout;
            let limit = idle_limit.min(self.options.session_deadline);
            let n = match self.buf.read(&mut self.reader, Some(limit)).await {
                Ok(Read::Data(n)) => n,
                Ok(Read::Eof) => return Stop::End(RelayEnd::ClientClosed),
                Ok(Read::TimedOut) => {
                    let (limit, text) = if Instant::now() >= self.options.session_deadline {
                        ("session", "* BYE Session time limit reached\r\n")
                    } else {
                        ("idle", "* BYE Autologout; idle for too long\r\n")
                    };
                    return self.bye(limit, text).await;
                }
                Err(e) => return Stop::End(RelayEnd::ClientError(e)),
            };
            bytes.inc_by(n as u64);
            let chunk = std::mem::take(&mut self.buf.data);
            let result = self.process(&chunk[..n]).await;
            self.buf.data = chunk;
            if let Err(s) = result {
                return s;
            }
        }
    }

    async fn bye(&mut self, limit: &'static str, text: &str) -> Stop {
        self.metrics.limits.with_label_values(&[limit]).inc();
        let _ = self.flush().await;
        let _ = self
            .ctrl
            .send(Ctrl::Bye(text.as_bytes().to_vec(), limit))
            .await;
        Stop::Bye
    }

    async fn reply(&mut self, text: String) -> Result<(), Stop> {
        self.flush().await?;
        self.ctrl
            .send(Ctrl::Reply(text.into_bytes()))
            .await
            .map_err(|_| Stop::End(RelayEnd::UpstreamClosed))
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        if self.out.is_empty() {
            return Ok(());
        }
        let t = self.options.upstream_timeout;
        let r = tokio::time::timeout(t, async {
            self.writer.write_all(&self.out).await?;
            self.writer.flush().await
        })
        .await;
        self.out.clear();
        if self.out.capacity() > 4 * COALESCE {
            self.out.shrink_to(COALESCE);
        }
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Stop::End(RelayEnd::UpstreamError(e))),
            Err(_) => Err(Stop::End(RelayEnd::UpstreamError(
                io::ErrorKind::TimedOut.into(),
            ))),
        }
    }

    async fn forward(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        if self.out.len() + bytes.len() <= COALESCE {
            self.out.extend_from_slice(bytes);
            return Ok(());
        }
        let t = self.options.upstream_timeout;
        let r = tokio::time::timeout(t, write_both(&mut self.writer, &self.out, bytes)).await;
        self.out.clear();
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Stop::End(RelayEnd::UpstreamError(e))),
            Err(_) => Err(Stop::End(RelayEnd::UpstreamError(
                io::ErrorKind::TimedOut.into(),
            ))),
        }
    }

    async fn process(&mut self, mut rest: &[u8]) -> Result<(), Stop> {
        while let Some(step) = self.scanner.step(rest) {
            let (piece, tail) = rest.split_at(step.len);
            rest = tail;
            match step.piece {
                Piece::Line { end, announce } => {
                    self.line.extend_from_slice(piece);
                    if self.line.len() > self.options.max_line {
                        return Err(self.bye("line", "* BYE Command line too long\r\n").await);
                    }
                    if end {
                        self.segment(announce).await?;
                        self.line.clear();
                        if self.line.capacity() > 4 * SMALL {
                            self.line.shrink_to(SMALL);
                        }
                    }
                }
                Piece::Literal { end } => {
                    match &mut self.literal {
                        LiteralUse::Forward => {}
                        LiteralUse::Mailbox(m) => {
                            if m.len() + piece.len() <= MAX_MAILBOX {
                                m.extend_from_slice(piece);
                            }
                        }
                        LiteralUse::Message(tee) => tee.push(piece),
                    }
                    self.forward(piece).await?;
                    if end {
                        self.literal_end();
                    }
                }
            }
        }
        self.flush().await
    }

    fn literal_end(&mut self) {
        match std::mem::replace(&mut self.literal, LiteralUse::Forward) {
            LiteralUse::Forward => {}
            LiteralUse::Mailbox(m) => {
                if let Some(Cmd {
                    append: Some(p), ..
                }) = &mut self.cmd
                {
                    p.mailbox = Some(m);
                }
            }
            LiteralUse::Message(tee) => {
                if let Some(cmd) = &self.cmd {
                    let mut inner = lock(&self.shared);
                    if let Some(p) = inner.pending.iter_mut().rev().find(|p| p.tag == cmd.tag) {
                        p.appends.push(tee);
                    }
                }
            }
        }
        self.seg += 1;
    }

    /// A complete line segment of a client message is in `self.line`.
    async fn segment(&mut self, announce: Option<Announcement>) -> Result<(), Stop> {
        let mut role = AppendRole::Other;
        if self.seg == 0 {
            let line = std::mem::take(&mut self.line);
            let r = self.first_segment(&line, announce).await;
            self.line = line;
            match r? {
                Some(r) => role = r,
                None => return Ok(()), // answered by the proxy, not forwarded
            }
        } else {
            if let Some(a) = announce {
                if a.size > self.options.max_literal {
                    return Err(self.bye("literal", "* BYE Literal too large\r\n").await);
                }
            }
            if let Some(Cmd {
                append: Some(p), ..
            }) = &mut self.cmd
            {
                role = p.segment(&self.line, announce.map(|a| a.suffix_len));
            }
        }
        let line = std::mem::take(&mut self.line);
        let r = self.forward(&line).await;
        self.line = line;
        r?;
        let Some(a) = announce else {
            // The message is complete.
            self.seg = 0;
            self.cmd = None;
            return Ok(());
        };
        self.metrics
            .literal_bytes
            .with_label_values(&["client"])
            .observe(a.size as f64);
        self.literal = self.literal_use(role, a.size).await;
        if a.mode == LiteralMode::Sync {
            let tag = self.cmd.as_ref().map(|c| c.tag.clone()).unwrap_or_default();
            if self.verdict(tag).await? == Verdict::Refused {
                self.scanner.cancel_literal();
                self.literal = LiteralUse::Forward;
                self.seg = 0;
                self.cmd = None;
            }
        }
        Ok(())
    }

    async fn literal_use(&mut self, role: AppendRole, size: u64) -> LiteralUse {
        match role {
            AppendRole::Mailbox => LiteralUse::Mailbox(Vec::new()),
            AppendRole::Message { draft: false } => {
                let (
                    Some(capture),
                    Some(Cmd {
                        append: Some(p), ..
                    }),
                ) = (&self.capture, &self.cmd)
                else {
                    return LiteralUse::Forward;
                };
                let drafts = match &p.mailbox {
                    Some(m) => {
                        is_drafts_name(m) || lock(&self.shared).drafts.iter().any(|d| d == m)
                    }
                    None => false,
                };
                if drafts {
                    return LiteralUse::Forward;
                }
                let capture = capture.clone();
                match capture.tee_now(TeeKind::Message, size) {
                    super::capture::TeeStart::Ready(t) => LiteralUse::Message(t),
                    super::capture::TeeStart::Skip => LiteralUse::Forward,
                    super::capture::TeeStart::Wait => {
                        let _ = self.flush().await;
                        match capture.tee_wait(TeeKind::Message, size).await {
                            Some(t) => LiteralUse::Message(t),
                            None => LiteralUse::Forward,
                        }
                    }
                }
            }
            _ => LiteralUse::Forward,
        }
    }

    /// Wait for `+` or the tagged response to a synchronizing literal.
    async fn verdict(&mut self, tag: Vec<u8>) -> Result<Verdict, Stop> {
        let (tx, rx) = oneshot::channel();
        lock(&self.shared).awaiting = Some(Awaiting { tag, tx });
        self.shared.owed.notify_one();
        self.flush().await?;
        rx.await.map_err(|_| Stop::End(RelayEnd::UpstreamClosed))
    }

    /// The first line of a client message. `Ok(None)`: the proxy answered
    /// it and it is not forwarded.
    async fn first_segment(
        &mut self,
        line: &[u8],
        announce: Option<Announcement>,
    ) -> Result<Option<AppendRole>, Stop> {
        let Some(head) = command_head(line) else {
            // Not a command: DONE ending IDLE, or bytes the upstream will judge.
            if trim_eol(line).eq_ignore_ascii_case(b"DONE") {
                let mut inner = lock(&self.shared);
                if let Some(p) = inner
                    .pending
                    .iter_mut()
                    .rev()
                    .find(|p| p.idle && !p.idle_done)
                {
                    p.idle_done = true;
                }
            }
            let tag = trim_eol(line)
                .split(|&b| b == b' ')
                .next()
                .unwrap_or_default();
            self.cmd = Some(Cmd {
                tag: tag.to_vec(),
                append: None,
            });
            return Ok(Some(AppendRole::Other));
        };
        let label = head.label();
        self.metrics.commands.with_label_values(&[label]).inc();
        let tag = String::from_utf8_lossy(head.tag).into_owned();
        let refuse = |scanner: &mut Scanner, text: String| {
            if let Some(a) = announce {
                if a.mode == LiteralMode::NonSync {
                    return None;
                }
                scanner.cancel_literal();
            }
            Some(text)
        };
        if head.is("STARTTLS") || head.is("COMPRESS") {
            let text = format!("{tag} NO This proxy does not support {label} after login\r\n");
            return match refuse(&mut self.scanner, text) {
                Some(t) => self.reply(t).await.map(|()| None),
                None => Err(self.bye("literal", "* BYE Protocol error\r\n").await),
            };
        }
        if let Some(a) = announce {
            if a.size > self.options.max_literal {
                self.metrics.limits.with_label_values(&["literal"]).inc();
                let text = format!("{tag} NO [TOOBIG] Literal too large\r\n");
                return match refuse(&mut self.scanner, text) {
                    Some(t) => self.reply(t).await.map(|()| None),
                    None => Err(self.bye("literal", "* BYE Literal too large\r\n").await),
                };
            }
        }
        self.wait_for_room().await?;
        let idle = head.is("IDLE");
        let append = (self.capture.is_some() && (head.is("APPEND") || head.is("REPLACE")))
            .then(AppendParser::new);
        let tag_bytes = head.tag.to_vec();
        let mut rest_at = head.rest_at;
        if head.is("REPLACE") {
            let rest = &line[rest_at..];
            rest_at += rest.len() - AppendParser::skip_replace_seq(rest).len();
        }
        lock(&self.shared).pending.push_back(Pending {
            tag: tag_bytes.clone(),
            label,
            started: Instant::now(),
            idle,
            idle_done: false,
            appends: Vec::new(),
        });
        self.shared.owed.notify_one();
        self.cmd = Some(Cmd {
            tag: tag_bytes,
            append,
        });
        let mut role = AppendRole::Other;
        if let Some(Cmd {
            append: Some(p), ..
        }) = &mut self.cmd
        {
            role = p.segment(&line[rest_at..], announce.map(|a| a.suffix_len));
        }
        Ok(Some(role))
    }

    /// Backpressure: at the pending limit, read no more commands until one
    /// completes.
    async fn wait_for_room(&mut self) -> Result<(), Stop> {
        let shared = self.shared.clone();
        loop {
            let room = shared.room.notified();
            if lock(&shared).in_flight() < self.options.max_pending {
                return Ok(());
            }
            self.flush().await?;
            room.await;
        }
    }
}

/// A server line's class, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Class {
    Continuation,
    /// A capability list to filter.
    Capabilities,
    Status {
        bye: bool,
    },
    Tagged {
        tag: Vec<u8>,
        ok: bool,
    },
    Fetch,
    List,
    Other,
}

impl Class {
    fn of(line: ServerLine<'_>) -> (Class, bool) {
        match line {
            ServerLine::Continuation => (Class::Continuation, false),
            ServerLine::Capability => (Class::Capabilities, true),
            ServerLine::Status { bye, capability } => (Class::Status { bye }, capability),
            ServerLine::Tagged {
                tag,
                ok,
                capability,
            } => (
                Class::Tagged {
                    tag: tag.to_vec(),
                    ok,
                },
                capability,
            ),
            ServerLine::Fetch => (Class::Fetch, false),
            ServerLine::List => (Class::List, false),
            ServerLine::Other => (Class::Other, false),
        }
    }

    /// Lines that carry no literal in the grammar.
    fn no_literal(&self) -> bool {
        matches!(
            self,
            Class::Continuation | Class::Status { .. } | Class::Tagged { .. } | Class::Capabilities
        )
    }
}

struct ServerPump<U, C> {
    reader: ReadHalf<U>,
    writer: WriteHalf<C>,
    shared: Arc<Shared>,
    ctrl: mpsc::Receiver<Ctrl>,
    options: RelayOptions,
    capture: Option<Arc<SessionCapture>>,
    metrics: ImapMetrics,
    shutdown: Shutdown,
    shutdown_seen: bool,
    scanner: Scanner,
    seg: u32,
    /// The first line's class, and whether it is buffered to be filtered.
    class: Option<(Class, bool)>,
    head: Vec<u8>,
    capline: Vec<u8>,
    /// A LIST line being collected (None: too long or has a literal).
    listline: Option<Vec<u8>>,
    fetch: Option<FetchState>,
    out: Vec<u8>,
    buf: ReadBuf,
    upstream_bye: bool,
    splice: Option<SplicePair>,
}

impl<U: AsyncRead + Send, C: AsyncWrite + Send> ServerPump<U, C> {
    async fn run(&mut self, initial: Vec<u8>) -> RelayEnd {
        match self.pump(initial).await {
            Ok(end) | Err(end) => {
                let _ = self.flush().await;
                let _ = self.writer.shutdown().await;
                end
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.scanner.at_message_start() && self.head.is_empty()
    }

    async fn pump(&mut self, initial: Vec<u8>) -> Result<RelayEnd, RelayEnd> {
        let bytes = self
            .metrics
            .bytes
            .with_label_values(&["upstream_to_client"]);
        if !initial.is_empty() {
            self.process(&initial).await?;
        }
        loop {
            if self.shutdown_seen && self.at_boundary() {
                let idle = {
                    let inner = lock(&self.shared);
                    inner.awaiting.is_none() && inner.pending.iter().all(|p| p.idle && !p.idle_done)
                };
                if idle {
                    self.metrics.shutdown_byes.inc();
                    self.write(b"* BYE Server shutting down\r\n").await?;
                    return Ok(RelayEnd::Bye("shutdown"));
                }
            }
            let owed = lock(&self.shared).owed();
            let limit = owed.then(|| Instant::now() + self.options.upstream_timeout);
            let boundary = self.at_boundary();
            let ServerPump {
                reader,
                ctrl,
                shutdown,
                shutdown_seen,
                buf,
                shared,
                ..
            } = self;
            let event = tokio::select! {
                biased;
                c = ctrl.recv(), if boundary => Event::Ctrl(c),
                _ = shutdown.fired(), if !*shutdown_seen => Event::Shutdown,
                _ = shared.owed.notified(), if !owed => Event::Recheck,
                r = buf.read(reader, limit) => Event::Read(r),
            };
            match event {
                Event::Ctrl(Some(Ctrl::Reply(b))) => self.write(&b).await?,
                Event::Ctrl(Some(Ctrl::Bye(b, why))) => {
                    self.write(&b).await?;
                    return Ok(RelayEnd::Bye(why));
                }
                Event::Ctrl(None) => {}
                Event::Shutdown => self.shutdown_seen = true,
                Event::Recheck => {}
                Event::Read(Ok(Read::Data(n))) => {
                    bytes.inc_by(n as u64);
                    let chunk = std::mem::take(&mut self.buf.data);
                    let r = self.process(&chunk[..n]).await;
                    self.buf.data = chunk;
                    r?;
                }
                Event::Read(Ok(Read::Eof)) => {
                    self.flush().await?;
                    if self.at_boundary() && !self.upstream_bye {
                        self.metrics
                            .upstream_errors
                            .with_label_values(&["closed"])
                            .inc();
                        self.write(
                            b"* BYE [UNAVAILABLE] The mail server closed the connection\r\n",
                        )
                        .await?;
                    }
                    return Ok(RelayEnd::UpstreamClosed);
                }
                Event::Read(Ok(Read::TimedOut)) => {
                    self.metrics
                        .upstream_errors
                        .with_label_values(&["timeout"])
                        .inc();
                    self.flush().await?;
                    if self.at_boundary() {
                        self.write(b"* BYE [UNAVAILABLE] The mail server is not responding\r\n")
                            .await?;
                    }
                    return Ok(RelayEnd::Bye("upstream timeout"));
                }
                Event::Read(Err(e)) => {
                    self.metrics
                        .upstream_errors
                        .with_label_values(&["closed"])
                        .inc();
                    return Err(RelayEnd::UpstreamError(e));
                }
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), RelayEnd> {
        self.out.extend_from_slice(bytes);
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), RelayEnd> {
        if self.out.is_empty() {
            return Ok(());
        }
        let t = self.options.idle_timeout;
        let r = tokio::time::timeout(t, async {
            self.writer.write_all(&self.out).await?;
            self.writer.flush().await
        })
        .await;
        self.out.clear();
        if self.out.capacity() > 4 * COALESCE {
            self.out.shrink_to(COALESCE);
        }
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RelayEnd::ClientError(e)),
            Err(_) => Err(RelayEnd::ClientError(io::ErrorKind::TimedOut.into())),
        }
    }

    async fn forward(&mut self, bytes: &[u8]) -> Result<(), RelayEnd> {
        if self.out.len() + bytes.len() <= COALESCE {
            self.out.extend_from_slice(bytes);
            return Ok(());
        }
        let t = self.options.idle_timeout;
        let r = tokio::time::timeout(t, write_both(&mut self.writer, &self.out, bytes)).await;
        self.out.clear();
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RelayEnd::ClientError(e)),
            Err(_) => Err(RelayEnd::ClientError(io::ErrorKind::TimedOut.into())),
        }
    }

    async fn process(&mut self, mut rest: &[u8]) -> Result<(), RelayEnd> {
        while let Some(step) = self.scanner.step(rest) {
            let (piece, tail) = rest.split_at(step.len);
            rest = tail;
            match step.piece {
                Piece::Line { end, announce } => {
                    self.line_bytes(piece).await?;
                    if end {
                        self.line_end(announce).await?;
                    }
                }
                Piece::Literal { end } => {
                    if let Some(f) = &mut self.fetch {
                        f.literal(piece);
                        if let Some(c) = &self.capture {
                            f.check_known(c);
                        }
                    }
                    self.forward(piece).await?;
                    if end {
                        if let Some(f) = &mut self.fetch {
                            f.literal_end();
                        }
                        self.seg += 1;
                    } else {
                        // The read ended inside the literal.
                        self.splice_rest().await?;
                    }
                }
            }
        }
        self.flush().await
    }

    /// Inside a literal that nothing needs to see (not teed, not kept in a
    /// FETCH skeleton), with both legs plain TCP: move the rest of it
    /// inside the kernel. The scanner then goes on after it.
    async fn splice_rest(&mut self) -> Result<(), RelayEnd> {
        let Some(left) = self.scanner.literal_remaining() else {
            return Ok(());
        };
        if self.splice.is_none()
            || left < SPLICE_MIN
            || self.fetch.as_ref().is_some_and(|f| !f.literal_unneeded())
        {
            return Ok(());
        }
        // Everything before the literal's rest goes out first.
        self.flush().await?;
        let read_wait = lock(&self.shared)
            .owed()
            .then_some(self.options.upstream_timeout);
        let Some(pair) = &self.splice else {
            return Ok(());
        };
        let upstream_error = |m: &ImapMetrics, why: &str| {
            m.upstream_errors.with_label_values(&[why]).inc();
        };
        match pair
            .forward(left, read_wait, self.options.idle_timeout)
            .await
        {
            Ok(()) => {}
            Err(SpliceError::SourceClosed) => {
                upstream_error(&self.metrics, "closed");
                return Err(RelayEnd::UpstreamClosed);
            }
            Err(SpliceError::SourceTimedOut) => {
                upstream_error(&self.metrics, "timeout");
                return Err(RelayEnd::Bye("upstream timeout"));
            }
            Err(SpliceError::Source(e)) => {
                upstream_error(&self.metrics, "closed");
                return Err(RelayEnd::UpstreamError(e));
            }
            Err(SpliceError::DestinationTimedOut) => {
                return Err(RelayEnd::ClientError(io::ErrorKind::TimedOut.into()))
            }
            Err(SpliceError::Destination(e)) => return Err(RelayEnd::ClientError(e)),
        }
        self.metrics
            .bytes
            .with_label_values(&["upstream_to_client"])
            .inc_by(left);
        self.metrics.spliced_bytes.inc_by(left);
        self.scanner.literal_consumed(left);
        Ok(())
    }

    async fn line_bytes(&mut self, piece: &[u8]) -> Result<(), RelayEnd> {
        if self.seg == 0 && self.class.is_none() {
            let take = (CLASSIFY_HEAD - self.head.len()).min(piece.len());
            self.head.extend_from_slice(&piece[..take]);
            let Some(line) = classify(&self.head) else {
                return Ok(());
            };
            let (class, filter) = Class::of(line);
            if class == Class::Fetch && self.capture.is_some() {
                self.fetch = Some(FetchState::new());
            }
            if class == Class::List {
                self.listline = Some(Vec::new());
            }
            self.class = Some((class, filter));
            let head = std::mem::take(&mut self.head);
            self.emit(&head).await?;
            self.emit(&piece[take..]).await?;
            self.head = head;
            self.head.clear();
            return Ok(());
        }
        self.emit(piece).await
    }

    async fn emit(&mut self, bytes: &[u8]) -> Result<(), RelayEnd> {
        if bytes.is_empty() {
            return Ok(());
        }
        if let Some(f) = &mut self.fetch {
            f.line(bytes);
        }
        if self.seg == 0 {
            match &self.class {
                Some((_, true)) => {
                    self.capline.extend_from_slice(bytes);
                    if self.capline.len() > self.options.max_line {
                        return Err(RelayEnd::UpstreamProtocol("capability line too long"));
                    }
                    return Ok(());
                }
                Some((Class::List, _)) => {
                    if let Some(l) = &mut self.listline {
                        if l.len() + bytes.len() <= 4096 {
                            l.extend_from_slice(bytes);
                        } else {
                            self.listline = None;
                        }
                    }
                }
                _ => {}
            }
        }
        self.forward(bytes).await
    }

    async fn line_end(&mut self, announce: Option<Announcement>) -> Result<(), RelayEnd> {
        let mut announce = announce;
        if self.seg == 0 {
            let (class, filter) = self.class.clone().unwrap_or((Class::Other, false));
            if announce.is_some() && class.no_literal() {
                // Text that merely looks like an announcement.
                self.scanner.cancel_literal();
                announce = None;
            }
            if filter {
                let line = std::mem::take(&mut self.capline);
                let filtered = capability::filter_line(&line);
                self.forward(&filtered).await?;
                self.capline = line;
                self.capline.clear();
            }
            match class {
                Class::Tagged { tag, ok } => self.complete(&tag, ok).await?,
                Class::Continuation => {
                    let waiting = lock(&self.shared).awaiting.take();
                    if let Some(a) = waiting {
                        let _ = a.tx.send(Verdict::Continue);
                    }
                }
                Class::Status { bye: true } => self.upstream_bye = true,
                Class::List if announce.is_none() => {
                    if let Some(name) = self.listline.take().and_then(|l| drafts_from_list(&l)) {
                        let mut inner = lock(&self.shared);
                        if inner.drafts.len() < MAX_DRAFTS && !inner.drafts.contains(&name) {
                            inner.drafts.push(name);
                        }
                    }
                }
                Class::List => self.listline = None,
                _ => {}
            }
        }
        match announce {
            Some(a) => {
                if a.size >= 1 << 62 {
                    return Err(RelayEnd::UpstreamProtocol("impossible literal size"));
                }
                self.metrics
                    .literal_bytes
                    .with_label_values(&["upstream"])
                    .observe(a.size as f64);
                self.fetch_literal(&a).await?;
            }
            None => {
                self.seg = 0;
                self.class = None;
                if let Some(f) = self.fetch.take() {
                    self.fetch_done(f).await?;
                }
            }
        }
        Ok(())
    }

    /// A literal starts in a FETCH response: tee it if it is worth it.
    async fn fetch_literal(&mut self, a: &Announcement) -> Result<(), RelayEnd> {
        let (Some(f), Some(capture)) = (&mut self.fetch, &self.capture) else {
            return Ok(());
        };
        let item = f.literal_start(a);
        if !f.wants(item) {
            return Ok(());
        }
        let kind = match item {
            FetchItem::Whole => TeeKind::Message,
            FetchItem::Header | FetchItem::HeaderFields | FetchItem::Head => TeeKind::Header,
            FetchItem::Other => return Ok(()),
        };
        let capture = capture.clone();
        let tee = match capture.tee_now(kind, a.size) {
            super::capture::TeeStart::Ready(t) => Some(t),
            super::capture::TeeStart::Skip => None,
            super::capture::TeeStart::Wait => {
                self.flush().await?;
                capture.tee_wait(kind, a.size).await
            }
        };
        if let (Some(t), Some(f)) = (tee, &mut self.fetch) {
            f.set_tee(t);
        }
        Ok(())
    }

    /// A FETCH response ended: queue what it carried.
    async fn fetch_done(&mut self, mut f: FetchState) -> Result<(), RelayEnd> {
        let Some(capture) = self.capture.clone() else {
            return Ok(());
        };
        if let Some(tee) = f.whole.take() {
            self.flush().await?;
            capture.submit(Source::Fetch, tee, false, None).await;
        } else if let Some((tee, subset)) = f.header.take() {
            let size = f.rfc822_size();
            capture.submit(Source::Header, tee, subset, size).await;
        } else if let Some(skeleton) = f.envelope_skeleton() {
            capture.submit_envelope(skeleton).await;
        }
        Ok(())
    }

    /// A tagged response: the command is complete.
    async fn complete(&mut self, tag: &[u8], ok: bool) -> Result<(), RelayEnd> {
        let (entry, verdict) = {
            let mut inner = lock(&self.shared);
            let entry = inner
                .pending
                .iter()
                .position(|p| p.tag == tag)
                .and_then(|i| inner.pending.remove(i));
            let verdict = match &inner.awaiting {
                Some(a) if a.tag == tag => inner.awaiting.take(),
                _ => None,
            };
            (entry, verdict)
        };
        if let Some(a) = verdict {
            let _ = a.tx.send(Verdict::Refused);
        }
        self.shared.room.notify_one();
        let Some(p) = entry else {
            return Ok(());
        };
        self.metrics
            .command_seconds
            .with_label_values(&[p.label])
            .observe(p.started.elapsed().as_secs_f64());
        if ok && !p.appends.is_empty() {
            if let Some(capture) = self.capture.clone() {
                self.flush().await?;
                for tee in p.appends {
                    capture.submit(Source::Append, tee, false, None).await;
                }
            }
        }
        Ok(())
    }
}

enum Event {
    Ctrl(Option<Ctrl>),
    Shutdown,
    Recheck,
    Read(io::Result<Read>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::ShutdownTrigger;
    use tokio::io::DuplexStream;
    use tokio::task::JoinHandle;

    struct Rig {
        client: DuplexStream,
        upstream: DuplexStream,
        trigger: ShutdownTrigger,
        task: JoinHandle<RelayEnd>,
    }

    fn options() -> RelayOptions {
        RelayOptions {
            max_line: 1024,
            max_literal: 1 << 20,
            max_pending: 4,
            idle_timeout: Duration::from_secs(1860),
            upstream_timeout: Duration::from_secs(300),
            session_deadline: Instant::now() + Duration::from_secs(86_400),
        }
    }

    fn rig(options: RelayOptions) -> Rig {
        let (client, proxy_c) = tokio::io::duplex(1 << 16);
        let (proxy_u, upstream) = tokio::io::duplex(1 << 16);
        let (trigger, shutdown) = crate::shutdown::channel();
        let metrics = ImapMetrics::new(&prometheus::Registry::new());
        let task = tokio::spawn(relay(
            proxy_c,
            proxy_u,
            Vec::new(),
            Vec::new(),
            options,
            None,
            metrics,
            shutdown,
            None,
        ));
        Rig {
            client,
            upstream,
            trigger,
            task,
        }
    }

    /// Read until `needle` has arrived (or fail after 10 s of test time).
    async fn until<R: AsyncRead + Unpin>(r: &mut R, needle: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let end = Instant::now() + Duration::from_secs(10);
        while !got.windows(needle.len()).any(|w| w == needle) {
            match tokio::time::timeout_at(end, r.read(&mut buf)).await {
                Ok(Ok(0)) => panic!(
                    "closed before {:?}; got {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&got)
                ),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => panic!("read: {e}"),
                Err(_) => panic!(
                    "timed out waiting for {:?}; got {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&got)
                ),
            }
        }
        got
    }

    /// Nothing arrives within `d`.
    async fn silent<R: AsyncRead + Unpin>(r: &mut R, d: Duration) {
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(d, r.read(&mut buf)).await {
            assert_eq!(
                n,
                0,
                "expected silence, got {:?}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
    }

    /// Read to end of stream.
    async fn to_end<R: AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(4000), r.read_to_end(&mut got))
            .await
            .expect("closed in time")
            .expect("read");
        got
    }

    #[tokio::test(start_paused = true)]
    async fn idle_survives_29_minutes_and_autologout_follows_the_idle_timeout() {
        let mut r = rig(options());
        r.client.write_all(b"t IDLE\r\n").await.unwrap();
        until(&mut r.upstream, b"t IDLE\r\n").await;
        r.upstream.write_all(b"+ idling\r\n").await.unwrap();
        until(&mut r.client, b"+ idling\r\n").await;
        tokio::time::sleep(Duration::from_secs(29 * 60)).await;
        assert!(!r.task.is_finished(), "IDLE must survive 29 minutes");
        r.upstream.write_all(b"* 2 EXISTS\r\n").await.unwrap();
        until(&mut r.client, b"* 2 EXISTS\r\n").await;
        r.client.write_all(b"DONE\r\n").await.unwrap();
        until(&mut r.upstream, b"DONE\r\n").await;
        r.upstream
            .write_all(b"t OK Idle completed\r\n")
            .await
            .unwrap();
        until(&mut r.client, b"t OK Idle completed\r\n").await;
        // Now silence past the idle timeout: autologout.
        let got = to_end(&mut r.client).await;
        assert_eq!(got, b"* BYE Autologout; idle for too long\r\n");
        assert!(matches!(r.task.await.unwrap(), RelayEnd::Bye("idle")));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_that_owes_a_response_and_goes_silent_gets_a_bye() {
        let mut r = rig(options());
        r.client.write_all(b"a NOOP\r\n").await.unwrap();
        until(&mut r.upstream, b"a NOOP\r\n").await;
        let t = Instant::now();
        let got = to_end(&mut r.client).await;
        assert_eq!(
            got,
            b"* BYE [UNAVAILABLE] The mail server is not responding\r\n"
        );
        assert!(t.elapsed() >= Duration::from_secs(300) && t.elapsed() < Duration::from_secs(302));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_synchronizing_literal_is_never_read_as_literal() {
        let mut r = rig(options());
        r.client
            .write_all(b"a APPEND INBOX {10}\r\n")
            .await
            .unwrap();
        until(&mut r.upstream, b"a APPEND INBOX {10}\r\n").await;
        r.upstream
            .write_all(b"a NO [TRYCREATE] No such mailbox\r\n")
            .await
            .unwrap();
        until(&mut r.client, b"a NO [TRYCREATE]").await;
        // The next bytes are a command: the proxy answers COMPRESS itself.
        r.client.write_all(b"c COMPRESS DEFLATE\r\n").await.unwrap();
        until(&mut r.client, b"c NO This proxy does not support compress").await;
        silent(&mut r.upstream, Duration::from_millis(100)).await;

        // Accepted: the same bytes are literal data and go upstream.
        r.client
            .write_all(b"d APPEND INBOX {10}\r\n")
            .await
            .unwrap();
        until(&mut r.upstream, b"d APPEND INBOX {10}\r\n").await;
        r.upstream.write_all(b"+ go ahead\r\n").await.unwrap();
        until(&mut r.client, b"+ go ahead\r\n").await;
        r.client.write_all(b"c COMPRESS\r\n").await.unwrap();
        until(&mut r.upstream, b"c COMPRESS\r\n").await;
        silent(&mut r.client, Duration::from_millis(100)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn capability_lists_are_filtered_whatever_the_read_boundaries() {
        let script: &[u8] = b"* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\n* 1 FETCH (BODY[] {5}\r\nhe\r\no)\r\n* OK [CAPABILITY IMAP4rev1 AUTH=SCRAM-SHA-1-PLUS] x {3}\r\na OK [CAPABILITY COMPRESS=DEFLATE MOVE] done\r\n";
        let want: &[u8] = b"* CAPABILITY IMAP4rev1 IDLE\r\n* 1 FETCH (BODY[] {5}\r\nhe\r\no)\r\n* OK [CAPABILITY IMAP4rev1] x {3}\r\na OK [CAPABILITY MOVE] done\r\n";
        for cut in 0..=script.len() {
            let mut r = rig(options());
            r.client.write_all(b"a CAPABILITY\r\n").await.unwrap();
            until(&mut r.upstream, b"a CAPABILITY\r\n").await;
            r.upstream.write_all(&script[..cut]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
            r.upstream.write_all(&script[cut..]).await.unwrap();
            let got = until(&mut r.client, b"done\r\n").await;
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(want),
                "cut {cut}"
            );
            // The status line's `{3}` announced nothing: the proxy can still
            // answer at a message boundary at once.
            r.client.write_all(b"x COMPRESS\r\n").await.unwrap();
            until(&mut r.client, b"x NO").await;
        }
    }

    /// Over plain TCP legs, a large FETCH literal that nothing captures
    /// is spliced: the client gets every byte unchanged, the responses
    /// after it are framed as before, and the metric counts the splice.
    #[tokio::test]
    async fn large_literals_are_spliced_over_plain_tcp_byte_for_byte() {
        use tokio::net::{TcpListener, TcpStream};
        async fn pair() -> (TcpStream, TcpStream) {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            let (b, _) = l.accept().await.unwrap();
            (a, b)
        }
        let (mut client, proxy_c) = pair().await;
        let (proxy_u, mut upstream) = pair().await;
        let splice = SplicePair::new(&proxy_u, &proxy_c).unwrap();
        let registry = prometheus::Registry::new();
        let metrics = ImapMetrics::new(&registry);
        let (_trigger, shutdown) = crate::shutdown::channel();
        let task = tokio::spawn(relay(
            proxy_c,
            proxy_u,
            Vec::new(),
            Vec::new(),
            options(),
            None,
            metrics.clone(),
            shutdown,
            Some(splice),
        ));
        let body: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
        let mut script = b"* 1 FETCH (UID 5 BODY[] {700000}\r\n".to_vec();
        script.extend_from_slice(&body);
        // A literal announcement inside the next response still counts.
        script.extend_from_slice(
            b" FLAGS (\\Seen))\r\n* 2 FETCH (BODY[] {3}\r\nabc)\r\na OK done\r\n",
        );
        client.write_all(b"a FETCH 1:2 BODY[]\r\n").await.unwrap();
        until(&mut upstream, b"a FETCH 1:2 BODY[]\r\n").await;
        let writer = {
            let script = script.clone();
            tokio::spawn(async move {
                for chunk in script.chunks(65_537) {
                    upstream.write_all(chunk).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                upstream
            })
        };
        let mut got = vec![0u8; script.len()];
        tokio::time::timeout(Duration::from_secs(20), client.read_exact(&mut got))
            .await
            .expect("the whole response in time")
            .unwrap();
        assert!(got == script, "the client got other bytes");
        assert!(
            metrics.spliced_bytes.get() > 500_000,
            "spliced {}",
            metrics.spliced_bytes.get()
        );
        // At a message boundary again: the proxy can answer at once.
        client.write_all(b"x COMPRESS DEFLATE\r\n").await.unwrap();
        until(&mut client, b"x NO").await;
        drop(writer.await.unwrap());
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }

    #[tokio::test(start_paused = true)]
    async fn client_bytes_pass_unchanged_at_every_split() {
        let msg: &[u8] = b"a APPEND INBOX (\\Seen) {19+}\r\nSubject: x\r\n\r\nbody\r\n b APPEND INBOX {0+}\r\n\r\nc NOOP\r\n";
        for cut in 0..=msg.len() {
            let mut r = rig(options());
            r.client.write_all(&msg[..cut]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
            r.client.write_all(&msg[cut..]).await.unwrap();
            let got = until(&mut r.upstream, b"c NOOP\r\n").await;
            assert_eq!(got, msg, "cut {cut}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_says_bye_at_a_safe_point() {
        let mut r = rig(options());
        r.client.write_all(b"a NOOP\r\n").await.unwrap();
        until(&mut r.upstream, b"a NOOP\r\n").await;
        r.trigger.fire();
        silent(&mut r.client, Duration::from_millis(200)).await;
        r.upstream
            .write_all(b"a OK NOOP completed\r\n")
            .await
            .unwrap();
        let got = to_end(&mut r.client).await;
        assert_eq!(
            got,
            b"a OK NOOP completed\r\n* BYE Server shutting down\r\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_pending_limit_applies_backpressure() {
        let mut o = options();
        o.max_pending = 2;
        let mut r = rig(o);
        r.client
            .write_all(b"a NOOP\r\nb NOOP\r\nc NOOP\r\n")
            .await
            .unwrap();
        until(&mut r.upstream, b"b NOOP\r\n").await;
        silent(&mut r.upstream, Duration::from_millis(100)).await;
        r.upstream.write_all(b"a OK done\r\n").await.unwrap();
        until(&mut r.upstream, b"c NOOP\r\n").await;
    }

    #[tokio::test(start_paused = true)]
    async fn oversized_literals_are_refused() {
        let mut r = rig(options());
        r.client
            .write_all(b"a APPEND INBOX {1073741824}\r\n")
            .await
            .unwrap();
        let got = until(&mut r.client, b"\r\n").await;
        assert_eq!(got, b"a NO [TOOBIG] Literal too large\r\n");
        silent(&mut r.upstream, Duration::from_millis(100)).await;
        r.client.write_all(b"b NOOP\r\n").await.unwrap();
        until(&mut r.upstream, b"b NOOP\r\n").await;
        r.client
            .write_all(b"c APPEND INBOX {1073741824+}\r\n")
            .await
            .unwrap();
        let got = to_end(&mut r.client).await;
        assert_eq!(got, b"* BYE Literal too large\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_line_gets_bye() {
        let mut r = rig(options());
        let mut client = r.client;
        let (mut cr, mut cw) = tokio::io::split(&mut client);
        let writer = async {
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..160 {
                if cw.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        };
        let reader = async {
            let mut got = Vec::new();
            let _ = cr.read_to_end(&mut got).await;
            got
        };
        let (_, got) = tokio::join!(writer, reader);
        assert_eq!(got, b"* BYE Command line too long\r\n");
        silent(&mut r.upstream, Duration::from_millis(10)).await;
    }
}
