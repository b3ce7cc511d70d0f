//! The relay session, sans-IO: client bytes and upstream bytes in; bytes for
//! each side, events and one pending [`Effect`] out. No sockets, no timers,
//! no tokio: [`conn`](super::conn) drives it, tests feed it directly.
//!
//! How the mirror works:
//!
//! - Command lines are framed here (CRLF; bare LF per
//!   [`BareLineEndings`], at most 4096 bytes, 12288 for AUTH), parsed with
//!   smtp-proto, and either answered locally or forwarded to upstream as a
//!   canonical CRLF line.
//! - Every reply owed to the client is a slot in one ordered queue
//!   ([`Pending`]): local replies and upstream replies interleave in command
//!   order, so PIPELINING works whichever side answers.
//! - Commands whose reply changes how the next client bytes are read (AUTH,
//!   a SASL step, DATA, QUIT) are barriers: nothing more is read until
//!   upstream has answered. So is every command when upstream lacks
//!   PIPELINING.
//! - DATA content goes through the strict framer, the share-header filter
//!   and the dot-stuffer (see [`data`](super::data)); BDAT chunks are relayed
//!   as BDAT chunks of our own size (the filter may shorten them), the client
//!   getting upstream's reply to the last piece of each of its chunks.
//! - Upstream's final 2xx for a message is held until the capture is durable
//!   ([`Effect::Capture`]), then released to the client.
//! - A message refused mid-stream (bare LF, NUL, too big) cannot be taken back
//!   from upstream: the upstream connection is aborted (it never sees an end
//!   of data), the client is answered at its end of data, and the session
//!   ends at the next command.

use super::auth::{Exchange, Mechanism, Secret};
use super::data::{
    BareLineEndings, Budget, Collected, Collector, DataError, DataFramer, DotStuffer, HeaderFilter,
};
use super::ehlo::{self, Offer, UpstreamCaps};
use super::reply::{self, Reply, ReplyReader};
use crate::config::TlsMode;
use smtp_proto::{Error as ProtoError, Request};
use std::collections::VecDeque;
use std::sync::Arc;

/// Longest command line (smtp-proto's `MAX_LINE_LENGTH`).
pub const MAX_COMMAND_LINE: usize = smtp_proto::request::receiver::MAX_LINE_LENGTH;
/// Longest AUTH command or SASL response line (RFC 4954 §4: 12288).
pub const MAX_AUTH_LINE: usize = 12288;

/// Limits and behaviour of one session. `Default` is the configuration
/// defaults on a STARTTLS listener.
#[derive(Clone, Debug)]
pub struct Options {
    /// Name in our own greeting and pre-TLS EHLO reply.
    pub hostname: String,
    /// The listener's TLS mode.
    pub listener_tls: TlsMode,
    /// AUTH (and mail) allowed before TLS on a STARTTLS listener.
    pub allow_plaintext_auth: bool,
    /// Largest message relayed (552 above it); also the SIZE offered.
    pub max_message_bytes: u64,
    /// RCPT commands per transaction (452 above it).
    pub max_recipients: usize,
    /// Commands between two accepted messages (421 and close above it).
    pub max_commands: usize,
    pub bare_line_endings: BareLineEndings,
    /// Messages up to this size are collected whole for capture.
    pub max_capture_bytes: usize,
    /// Header bytes kept for a headers-only capture.
    pub max_header_bytes: usize,
    /// Replies owed to the client at once (pipelined commands in flight).
    pub max_pipeline: usize,
}

impl Default for Options {
    fn default() -> Self {
        let limits = crate::config::Limits::default();
        Options {
            hostname: "localhost".into(),
            listener_tls: TlsMode::Starttls,
            allow_plaintext_auth: false,
            max_message_bytes: limits.smtp_max_message_bytes,
            max_recipients: limits.smtp_max_recipients as usize,
            max_commands: limits.smtp_max_commands as usize,
            bare_line_endings: limits.smtp_bare_lf,
            max_capture_bytes: limits.max_capture_bytes as usize,
            max_header_bytes: limits.max_header_bytes as usize,
            max_pipeline: 128,
        }
    }
}

/// What the session needs from the gateway, synchronously.
pub trait Hooks: Budget {
    /// The policy user (address) a login belongs to; `None`: relayed, not captured.
    fn owner_for_login(&self, login: &str) -> Option<String>;
}

/// One message to capture before upstream's reply is released.
#[derive(Debug)]
pub struct CaptureRequest {
    /// The policy user's address.
    pub owner: String,
    /// RCPT addresses upstream accepted (lowercase), bcc included.
    pub envelope_recipients: Vec<String>,
    pub message: Collected,
}

/// Asynchronous work the driver must do before the session can go on.
#[derive(Debug)]
pub enum Effect {
    /// Connect to upstream (TLS as configured), read its greeting, EHLO with
    /// this name; then call [`Session::upstream_opened`] or
    /// [`Session::upstream_failed`].
    OpenUpstream { helo: String },
    /// Write out the client bytes, then run the TLS handshake on the client
    /// leg; then [`Session::tls_started`].
    StartTls,
    /// Capture durably, then [`Session::capture_done`].
    Capture(CaptureRequest),
    /// The message was relayed whole and upstream is considering it: its
    /// capture may start (parse, blob files), to be stored only on
    /// [`Effect::Commit`]. The driver goes on at once.
    Prepare(CaptureRequest),
    /// Upstream accepted the prepared message: store its capture durably,
    /// then [`Session::capture_done`].
    Commit,
    /// Upstream did not accept the prepared message: drop its capture. The
    /// driver goes on at once.
    Discard,
    /// Write out the client bytes and close both legs.
    Close,
}

/// Things worth a metric or a log line (never with credentials or content).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A client command, by verb (bounded set).
    Command(&'static str),
    /// A client request refused by the proxy itself, by reason (bounded set).
    Rejected(&'static str),
    /// Upstream answered an AUTH exchange.
    Auth { ok: bool },
    /// Upstream accepted the login `login` (never a password), which maps to
    /// the policy user `owner` (`None`: relayed, not captured).
    LoggedIn {
        login: String,
        owner: Option<String>,
    },
    /// An upstream reply to a command (verb) of a class (`2xx`…).
    UpstreamReply {
        command: &'static str,
        class: &'static str,
    },
    /// Upstream accepted a message of this many bytes.
    Relayed { bytes: u64 },
    /// `X-Mailshare-Share` fields removed from a message.
    ShareHeaderRemoved,
    /// The message was too large (or the budget too tight) to collect whole.
    HeadersOnly { reason: &'static str },
    /// Bytes pipelined after STARTTLS, discarded unread.
    DiscardedAfterStartTls { bytes: usize },
}

/// Why a message was refused mid-stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MessageError {
    Data(DataError),
    TooBig,
    UpstreamLost,
}

impl MessageError {
    fn reply(self) -> Vec<u8> {
        match self {
            MessageError::Data(DataError::BareLf) => reply::local(
                554,
                "5.6.0",
                "Message refused: bare LF in content (every line must end in CRLF)",
            ),
            MessageError::Data(DataError::BareCr) => reply::local(
                554,
                "5.6.0",
                "Message refused: bare CR in content (every line must end in CRLF)",
            ),
            MessageError::Data(DataError::Nul) => {
                reply::local(554, "5.6.0", "Message refused: NUL byte in content")
            }
            MessageError::TooBig => reply::local(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ),
            MessageError::UpstreamLost => {
                reply::local(451, "4.4.2", "Upstream connection lost; message not sent")
            }
        }
    }

    fn reason(self) -> &'static str {
        match self {
            MessageError::Data(e) => e.as_str(),
            MessageError::TooBig => "message_too_big",
            MessageError::UpstreamLost => "upstream_lost",
        }
    }
}

/// A message being received (DATA, or a run of BDAT chunks).
struct Message {
    framer: Option<DataFramer>,
    filter: HeaderFilter,
    stuffer: DotStuffer,
    collector: Option<Collector>,
    owner: Option<String>,
    size: u64,
    error: Option<MessageError>,
}

/// A message fully sent to upstream, waiting for its reply.
#[derive(Debug)]
pub struct Finished {
    collected: Option<Collected>,
    owner: Option<String>,
    size: u64,
    /// The collected message went out in an [`Effect::Prepare`].
    prepared: bool,
}

/// What an upstream reply answers.
#[derive(Debug)]
enum Expect {
    Ehlo {
        helo: bool,
    },
    Auth,
    Mail,
    Rcpt(String),
    Data,
    DataEnd(Box<Finished>),
    /// One of our BDAT pieces; `end`: the last piece of a client chunk.
    BdatPart {
        end: bool,
        finished: Option<Box<Finished>>,
    },
    Rset,
    Noop,
    Quit,
}

impl Expect {
    fn command(&self) -> &'static str {
        match self {
            Expect::Ehlo { helo: false } => "EHLO",
            Expect::Ehlo { helo: true } => "HELO",
            Expect::Auth => "AUTH",
            Expect::Mail => "MAIL",
            Expect::Rcpt(_) => "RCPT",
            Expect::Data => "DATA",
            Expect::DataEnd(_) => "DATA_END",
            Expect::BdatPart { .. } => "BDAT",
            Expect::Rset => "RSET",
            Expect::Noop => "NOOP",
            Expect::Quit => "QUIT",
        }
    }

    /// The client's next bytes cannot be read before this reply.
    fn is_barrier(&self) -> bool {
        matches!(self, Expect::Auth | Expect::Data | Expect::Quit)
    }
}

/// A reply slot owed to the client, in command order.
#[derive(Debug)]
enum Pending {
    Local(Vec<u8>),
    Upstream(Expect),
    /// Upstream's final reply, held until the capture is done.
    Held(Vec<u8>),
    /// Close once everything before is written.
    Close,
}

#[derive(Debug)]
enum UpstreamState {
    NotOpen,
    Open(UpstreamCaps),
    /// Failed or aborted: every further command ends the session.
    Gone,
}

#[derive(Debug)]
enum AuthState {
    None,
    InProgress(Exchange),
    Done { owner: Option<String> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Command,
    /// The next client line is a SASL response.
    Sasl,
    Data,
    Bdat {
        remaining: u64,
        last: bool,
    },
    /// Skip a refused BDAT chunk's bytes, then answer.
    Discard {
        remaining: u64,
    },
}

/// One client session mirrored onto one upstream session.
pub struct Session {
    opts: Options,
    hooks: Arc<dyn Hooks>,
    tls: bool,
    input: Vec<u8>,
    /// Discarding the rest of an over-long line.
    skip_line: bool,
    client_out: Vec<u8>,
    upstream_out: Vec<u8>,
    pending: VecDeque<Pending>,
    replies: ReplyReader,
    upstream: UpstreamState,
    opening_helo: bool,
    phase: Phase,
    discard_reply: Vec<u8>,
    auth: AuthState,
    msg: Option<Message>,
    /// RCPT commands sent in this transaction (the limit counts these).
    rcpt_attempts: usize,
    /// RCPT addresses upstream accepted in this transaction.
    rcpts: Vec<String>,
    /// First failed BDAT piece of the current client chunk.
    chunk_failure: Option<Vec<u8>>,
    commands: usize,
    effect: Option<Effect>,
    closed: bool,
    shutdown: bool,
    events: Vec<Event>,
    scratch: Vec<u8>,
    scratch2: Vec<u8>,
    sent: u64,
    answered: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("tls", &self.tls)
            .field("phase", &self.phase)
            .field("upstream", &self.upstream)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

fn owned(req: Request<std::borrow::Cow<'_, str>>) -> Request<String> {
    req.into_owned()
}

impl Session {
    /// A new session; our greeting is already in [`take_client_out`](Self::take_client_out).
    /// `tls`: the client leg is already encrypted (implicit TLS).
    pub fn new(opts: Options, hooks: Arc<dyn Hooks>, tls: bool) -> Session {
        let greeting = format!("220 {} ESMTP mailshare\r\n", opts.hostname).into_bytes();
        Session {
            opts,
            hooks,
            tls,
            input: Vec::new(),
            skip_line: false,
            client_out: greeting,
            upstream_out: Vec::new(),
            pending: VecDeque::new(),
            replies: ReplyReader::new(),
            upstream: UpstreamState::NotOpen,
            opening_helo: false,
            phase: Phase::Command,
            discard_reply: Vec::new(),
            auth: AuthState::None,
            msg: None,
            rcpt_attempts: 0,
            rcpts: Vec::new(),
            chunk_failure: None,
            commands: 0,
            effect: None,
            closed: false,
            shutdown: false,
            events: Vec::new(),
            scratch: Vec::new(),
            scratch2: Vec::new(),
            sent: 0,
            answered: 0,
        }
    }

    // --- driver interface ---------------------------------------------------

    /// Bytes from the client.
    pub fn client_input(&mut self, bytes: &[u8]) {
        if self.closed {
            return;
        }
        if self.input.is_empty() && self.phase == Phase::Data && self.effect.is_none() {
            // The hot path: message content straight from the read buffer.
            let consumed = self.data_chunk(bytes);
            self.input.extend_from_slice(&bytes[consumed..]);
        } else {
            self.input.extend_from_slice(bytes);
        }
        self.process();
    }

    /// Bytes from upstream.
    pub fn upstream_input(&mut self, bytes: &[u8]) {
        if self.closed {
            return;
        }
        self.replies.push(bytes);
        loop {
            match self.replies.next_reply() {
                Ok(Some(r)) => self.on_reply(r),
                Ok(None) => break,
                Err(_) => {
                    self.upstream_lost("upstream_protocol");
                    break;
                }
            }
        }
        self.process();
    }

    /// Upstream closed its side or failed.
    pub fn upstream_closed(&mut self) {
        if !matches!(self.upstream, UpstreamState::Gone) {
            self.upstream_lost("upstream_closed");
            self.process();
        }
    }

    /// The client closed its side: say QUIT upstream if that is clean.
    pub fn client_closed(&mut self) {
        if matches!(self.upstream, UpstreamState::Open(_)) && self.msg.is_none() {
            self.upstream_out.extend_from_slice(b"QUIT\r\n");
        }
        self.upstream = UpstreamState::Gone;
        self.closed = true;
    }

    /// The pending effect, if any (taken once). The driver goes on at once
    /// after [`Effect::Prepare`] and [`Effect::Discard`]: so does the
    /// session, with any input it held back meanwhile.
    pub fn take_effect(&mut self) -> Option<Effect> {
        let e = self.effect.take();
        if matches!(e, Some(Effect::Prepare(_) | Effect::Discard)) {
            self.process();
        }
        e
    }

    /// The session has ended (after its last words are written).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn take_client_out(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.client_out)
    }

    pub fn take_upstream_out(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.upstream_out)
    }

    /// Borrow the output buffers (the driver writes and then clears them,
    /// keeping their allocations).
    pub fn client_out(&mut self) -> &mut Vec<u8> {
        &mut self.client_out
    }

    pub fn upstream_out(&mut self) -> &mut Vec<u8> {
        &mut self.upstream_out
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Whether the driver should read from the client now.
    pub fn wants_client_input(&self) -> bool {
        !self.closed
            && self.effect.is_none()
            && (self.input.is_empty() || (!self.blocked() && self.input.len() <= MAX_AUTH_LINE))
    }

    /// Whether the driver should hold an upstream connection.
    pub fn upstream_wanted(&self) -> bool {
        matches!(self.upstream, UpstreamState::Open(_))
    }

    /// Upstream owes a reply (its timeout applies rather than the client's).
    pub fn awaiting_upstream(&self) -> bool {
        self.pending
            .iter()
            .any(|p| matches!(p, Pending::Upstream(_)))
    }

    /// Replies expected from upstream so far, and received so far (for latency).
    pub fn upstream_counts(&self) -> (u64, u64) {
        (self.sent, self.answered)
    }

    /// The client has authenticated (the pre-login timeout stops).
    pub fn authenticated(&self) -> bool {
        matches!(self.auth, AuthState::Done { .. })
    }

    /// A message is being received from the client.
    pub fn in_message(&self) -> bool {
        matches!(self.phase, Phase::Data | Phase::Bdat { .. })
    }

    /// Upstream is connected and said this to our EHLO.
    pub fn upstream_opened(&mut self, ehlo_reply: &Reply) {
        let caps = ehlo::parse(ehlo_reply);
        let out = if self.opening_helo {
            ehlo::helo_reply(ehlo_reply)
        } else {
            ehlo::client_reply(ehlo_reply, &self.offer())
        };
        self.upstream = UpstreamState::Open(caps);
        self.pending.push_back(Pending::Local(out));
        self.process();
    }

    /// Upstream could not be reached (or refused us): tell the client, close.
    pub fn upstream_failed(&mut self) {
        self.upstream = UpstreamState::Gone;
        self.events.push(Event::Rejected("upstream_unavailable"));
        self.finish_with(reply::local(
            421,
            "4.4.1",
            "Upstream server unavailable, try again later",
        ));
        self.process();
    }

    /// The client leg is now TLS: start afresh (RFC 3207 §4.2).
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.auth = AuthState::None;
        self.reset_transaction();
        self.phase = Phase::Command;
        self.input.clear();
        self.process();
    }

    /// The capture of the held message is durable (or spooled): release the reply.
    pub fn capture_done(&mut self) {
        for p in &mut self.pending {
            if let Pending::Held(bytes) = p {
                *p = Pending::Local(std::mem::take(bytes));
                break;
            }
        }
        self.process();
    }

    /// Shutdown: at the next safe point, 421 and close.
    pub fn shutdown(&mut self) {
        self.shutdown = true;
        self.process();
    }

    /// A deadline passed: say why, close.
    pub fn timed_out(&mut self, what: Timeout) {
        let (reason, bytes) = match what {
            Timeout::Idle => (
                "idle_timeout",
                reply::local(421, "4.4.2", "Idle timeout, closing connection"),
            ),
            Timeout::Login => (
                "login_timeout",
                reply::local(421, "4.7.0", "Login timeout, closing connection"),
            ),
            Timeout::Session => (
                "session_timeout",
                reply::local(
                    421,
                    "4.4.2",
                    "Session time limit reached, closing connection",
                ),
            ),
            Timeout::Upstream => (
                "upstream_timeout",
                if self.in_message() {
                    reply::local(451, "4.4.1", "Upstream server timed out; message not sent")
                } else {
                    reply::local(
                        421,
                        "4.4.1",
                        "Upstream server timed out, closing connection",
                    )
                },
            ),
        };
        self.events.push(Event::Rejected(reason));
        // Whatever was owed is abandoned: this is the last word.
        self.pending.clear();
        self.upstream = UpstreamState::Gone;
        self.finish_with(bytes);
        self.process();
    }

    // --- internals ----------------------------------------------------------

    fn offer(&self) -> Offer {
        Offer {
            starttls: self.opts.listener_tls == TlsMode::Starttls && !self.tls,
            auth: self.tls || self.opts.allow_plaintext_auth,
            max_size: self.opts.max_message_bytes,
        }
    }

    /// A STARTTLS listener, no TLS yet, plaintext AUTH not allowed.
    fn tls_required(&self) -> bool {
        self.opts.listener_tls == TlsMode::Starttls && !self.tls && !self.opts.allow_plaintext_auth
    }

    fn pipelining(&self) -> bool {
        matches!(&self.upstream, UpstreamState::Open(c) if c.pipelining)
    }

    fn blocked(&self) -> bool {
        if self.effect.is_some() || self.closed {
            return true;
        }
        let mut upstream = 0usize;
        for p in &self.pending {
            match p {
                Pending::Upstream(e) if e.is_barrier() => return true,
                Pending::Upstream(_) => upstream += 1,
                Pending::Held(_) | Pending::Close => return true,
                Pending::Local(_) => {}
            }
        }
        (upstream > 0 && !self.pipelining()) || self.pending.len() >= self.opts.max_pipeline
    }

    fn local(&mut self, bytes: Vec<u8>) {
        self.pending.push_back(Pending::Local(bytes));
    }

    fn reject(&mut self, reason: &'static str, bytes: Vec<u8>) {
        self.events.push(Event::Rejected(reason));
        self.local(bytes);
    }

    /// Answer, then close.
    fn finish_with(&mut self, bytes: Vec<u8>) {
        self.pending.push_back(Pending::Local(bytes));
        self.pending.push_back(Pending::Close);
    }

    fn forward(&mut self, line: &[u8], expect: Expect) {
        self.upstream_out.extend_from_slice(line);
        self.upstream_out.extend_from_slice(b"\r\n");
        self.expect(expect);
    }

    fn expect(&mut self, expect: Expect) {
        self.sent += 1;
        self.pending.push_back(Pending::Upstream(expect));
    }

    fn reset_transaction(&mut self) {
        self.rcpt_attempts = 0;
        self.rcpts.clear();
        self.msg = None;
        self.chunk_failure = None;
    }

    /// Move replies at the head of the queue to the client.
    fn flush_head(&mut self) {
        while let Some(front) = self.pending.front_mut() {
            match front {
                Pending::Local(bytes) => {
                    self.client_out.extend_from_slice(bytes);
                    self.pending.pop_front();
                }
                Pending::Close => {
                    self.pending.clear();
                    self.closed = true;
                    self.effect = Some(Effect::Close);
                    return;
                }
                Pending::Upstream(_) | Pending::Held(_) => return,
            }
        }
    }

    fn process(&mut self) {
        loop {
            self.flush_head();
            if self.closed || self.effect.is_some() {
                return;
            }
            let progressed = match self.phase {
                Phase::Command => self.step_command(),
                Phase::Sasl => self.step_sasl(),
                Phase::Data => self.step_data(),
                Phase::Bdat { remaining, last } => self.step_bdat(remaining, last),
                Phase::Discard { remaining } => self.step_discard(remaining),
            };
            if !progressed {
                break;
            }
        }
        self.flush_head();
        if self.shutdown && !self.closed && self.effect.is_none() && self.at_safe_point() {
            if matches!(self.upstream, UpstreamState::Open(_)) {
                self.upstream_out.extend_from_slice(b"QUIT\r\n");
            }
            self.upstream = UpstreamState::Gone;
            self.finish_with(reply::local(421, "4.3.2", "Service shutting down"));
            self.flush_head();
        }
    }

    fn at_safe_point(&self) -> bool {
        matches!(self.phase, Phase::Command | Phase::Sasl)
            && self.msg.is_none()
            && self.pending.is_empty()
    }

    /// The next complete line (without its ending) and whether it ended in
    /// CRLF; `Err(())`-like `None` when more input is needed. Over-long
    /// lines are answered here.
    fn take_line(&mut self, limit: usize) -> Option<Option<(Vec<u8>, bool)>> {
        if self.skip_line {
            match memchr::memchr(b'\n', &self.input) {
                Some(p) => {
                    self.input.drain(..=p);
                    self.skip_line = false;
                    return Some(None);
                }
                None => {
                    self.input.clear();
                    return None;
                }
            }
        }
        match memchr::memchr(b'\n', &self.input) {
            Some(p) if p <= limit + 1 => {
                let mut line: Vec<u8> = self.input.drain(..=p).collect();
                line.pop();
                let crlf = line.last() == Some(&b'\r');
                if crlf {
                    line.pop();
                }
                Some(Some((line, crlf)))
            }
            Some(p) => {
                self.input.drain(..=p);
                self.reject("line_too_long", reply::local(500, "5.5.6", "Line too long"));
                Some(None)
            }
            None if self.input.len() > limit + 1 => {
                self.input.clear();
                self.skip_line = true;
                self.reject("line_too_long", reply::local(500, "5.5.6", "Line too long"));
                Some(None)
            }
            None => None,
        }
    }

    fn line_limit(&self) -> usize {
        let head = &self.input[..self.input.len().min(5)];
        if head.len() == 5 && head[..4].eq_ignore_ascii_case(b"AUTH") && head[4] == b' ' {
            MAX_AUTH_LINE
        } else {
            MAX_COMMAND_LINE
        }
    }

    /// STARTTLS and EHLO-that-opens-upstream wait for every earlier reply.
    fn next_needs_idle(&self) -> bool {
        let line = self.input.trim_ascii_start();
        let starts = |w: &[u8]| line.len() >= w.len() && line[..w.len()].eq_ignore_ascii_case(w);
        let opening =
            matches!(self.upstream, UpstreamState::NotOpen) && (starts(b"EHLO") || starts(b"HELO"));
        (starts(b"STARTTLS") || opening) && !self.pending.is_empty()
    }

    fn step_command(&mut self) -> bool {
        if self.blocked() || self.input.is_empty() || self.next_needs_idle() {
            return false;
        }
        let limit = self.line_limit();
        match self.take_line(limit) {
            None => false,
            Some(None) => true,
            Some(Some((line, crlf))) => {
                self.handle_line(line, crlf);
                true
            }
        }
    }

    fn handle_line(&mut self, line: Vec<u8>, crlf: bool) {
        self.commands += 1;
        if self.commands > self.opts.max_commands {
            self.events.push(Event::Rejected("too_many_commands"));
            self.finish_with(reply::local(
                421,
                "4.7.0",
                "Too many commands without a message, closing connection",
            ));
            return;
        }
        if !crlf && self.opts.bare_line_endings == BareLineEndings::Reject {
            self.reject(
                "bare_lf_command",
                reply::local(
                    500,
                    "5.5.2",
                    "Bare LF line ending not allowed; end commands with CRLF",
                ),
            );
            return;
        }
        if line.iter().any(|&b| b == b'\r' || b == 0) {
            self.reject(
                "bad_command",
                reply::local(500, "5.5.2", "Invalid character in command"),
            );
            return;
        }
        let mut wire = line;
        wire.extend_from_slice(b"\r\n");
        let parsed = Request::parse(&mut wire.iter()).map(owned);
        wire.truncate(wire.len() - 2);
        match parsed {
            Ok(req) => {
                self.events.push(Event::Command(req.name()));
                self.dispatch(req, Secret::new(wire));
            }
            Err(e) => {
                // MAIL and RCPT that smtp-proto finds wrong go to upstream,
                // whose verdict (and text) the client gets: upstream decides
                // what it accepts (`RCPT TO:<Postmaster>` has no domain).
                let verb = wire
                    .split(|&b| b == b' ')
                    .next()
                    .map(<[u8]>::to_ascii_uppercase)
                    .unwrap_or_default();
                let envelope = matches!(verb.as_slice(), b"MAIL" | b"RCPT")
                    && !matches!(e, ProtoError::ResponseTooLong)
                    && !self.tls_required()
                    && matches!(self.upstream, UpstreamState::Open(_));
                if envelope && verb == b"MAIL" {
                    self.events.push(Event::Command("MAIL"));
                    self.rcpt_attempts = 0;
                    self.msg = None;
                    self.forward(&wire, Expect::Mail);
                } else if envelope {
                    self.events.push(Event::Command("RCPT"));
                    self.rcpt(&wire, lenient_address(&wire));
                } else {
                    self.events.push(Event::Command("INVALID"));
                    let r = syntax_reply(&e);
                    self.reject("syntax", r);
                }
            }
        }
    }

    /// Queue the reply for a command that needs upstream when it is not
    /// there; `true` when upstream is open.
    fn upstream_ready(&mut self) -> bool {
        match self.upstream {
            UpstreamState::Open(_) => true,
            UpstreamState::NotOpen => {
                self.reject("ehlo_first", reply::local(503, "5.5.1", "Send EHLO first"));
                false
            }
            UpstreamState::Gone => {
                self.finish_with(reply::local(
                    421,
                    "4.4.2",
                    "Upstream session ended, closing connection",
                ));
                false
            }
        }
    }

    fn dispatch(&mut self, req: Request<String>, line: Secret) {
        // Before TLS (when required) only these are served.
        if self.tls_required()
            && !matches!(
                req,
                Request::Ehlo { .. }
                    | Request::Helo { .. }
                    | Request::StartTls
                    | Request::Noop { .. }
                    | Request::Rset
                    | Request::Quit
                    | Request::Help { .. }
            )
        {
            let reason = if matches!(req, Request::Auth { .. }) {
                "plaintext_auth"
            } else {
                "tls_required"
            };
            let r = reply::local(530, "5.7.0", "Must issue a STARTTLS command first");
            if let Request::Bdat { chunk_size, .. } = req {
                self.events.push(Event::Rejected(reason));
                self.discard(chunk_size as u64, r);
            } else {
                self.reject(reason, r);
            }
            return;
        }
        match req {
            Request::Ehlo { host } => self.handle_ehlo(host, false, line),
            Request::Helo { host } => self.handle_ehlo(host, true, line),
            Request::StartTls => self.handle_starttls(),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.handle_auth(mechanism, &initial_response, line),
            Request::Mail { from } => {
                if !self.upstream_ready() {
                    return;
                }
                if from.size as u64 > self.opts.max_message_bytes {
                    self.reject(
                        "message_too_big",
                        reply::local(
                            552,
                            "5.3.4",
                            "Message size exceeds fixed maximum message size",
                        ),
                    );
                    return;
                }
                self.rcpt_attempts = 0;
                self.msg = None;
                self.forward(line.expose(), Expect::Mail);
            }
            Request::Rcpt { to } => {
                if !self.upstream_ready() {
                    return;
                }
                let address = to.address.trim().to_lowercase();
                self.rcpt(line.expose(), address);
            }
            Request::Data => {
                if self.upstream_ready() {
                    self.forward(line.expose(), Expect::Data);
                }
            }
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.handle_bdat(chunk_size as u64, is_last),
            Request::Rset => {
                self.msg = None;
                self.rcpt_attempts = 0;
                match self.upstream {
                    UpstreamState::Open(_) => self.forward(line.expose(), Expect::Rset),
                    UpstreamState::NotOpen => self.local(reply::local(250, "2.0.0", "OK")),
                    UpstreamState::Gone => {
                        self.upstream_ready();
                    }
                }
            }
            Request::Noop { .. } => match self.upstream {
                UpstreamState::Open(_) => self.forward(line.expose(), Expect::Noop),
                UpstreamState::NotOpen => self.local(reply::local(250, "2.0.0", "OK")),
                UpstreamState::Gone => {
                    self.upstream_ready();
                }
            },
            Request::Quit => {
                if matches!(self.upstream, UpstreamState::Open(_)) {
                    self.forward(line.expose(), Expect::Quit);
                } else {
                    self.finish_with(reply::local(221, "2.0.0", "Bye"));
                }
            }
            Request::Vrfy { .. } => self.local(reply::local(
                252,
                "2.5.2",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Request::Help { .. } => self.local(reply::local(
                214,
                "2.0.0",
                "See RFC 5321 (mailshare submission relay)",
            )),
            Request::Lhlo { .. } => self.reject(
                "unknown_command",
                reply::local(500, "5.5.1", "Command unrecognized"),
            ),
            Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.reject(
                "not_implemented",
                reply::local(502, "5.5.1", "Command not implemented"),
            ),
        }
    }

    fn rcpt(&mut self, line: &[u8], address: String) {
        if self.rcpt_attempts >= self.opts.max_recipients {
            self.reject(
                "too_many_recipients",
                reply::local(452, "4.5.3", "Too many recipients"),
            );
            return;
        }
        self.rcpt_attempts += 1;
        self.forward(line, Expect::Rcpt(address));
    }

    fn handle_ehlo(&mut self, host: String, helo: bool, line: Secret) {
        self.reset_transaction();
        if self.tls_required() {
            let out = if helo {
                format!("250 {}\r\n", self.opts.hostname).into_bytes()
            } else {
                ehlo::local_reply(&self.opts.hostname)
            };
            self.local(out);
            return;
        }
        match self.upstream {
            UpstreamState::NotOpen => {
                self.opening_helo = helo;
                self.effect = Some(Effect::OpenUpstream { helo: host });
            }
            UpstreamState::Open(_) => {
                if helo {
                    // Upstream keeps speaking ESMTP with us; the client gets
                    // HELO's one-line answer.
                    let ehlo = format!("EHLO {host}");
                    self.forward(ehlo.as_bytes(), Expect::Ehlo { helo: true });
                } else {
                    self.forward(line.expose(), Expect::Ehlo { helo: false });
                }
            }
            UpstreamState::Gone => {
                self.upstream_ready();
            }
        }
    }

    fn handle_starttls(&mut self) {
        if self.tls {
            self.reject(
                "starttls_again",
                reply::local(503, "5.5.1", "TLS already active"),
            );
        } else if self.opts.listener_tls != TlsMode::Starttls {
            self.reject(
                "starttls_unavailable",
                reply::local(454, "4.7.0", "TLS not available on this port"),
            );
        } else if self.authenticated() {
            self.reject(
                "starttls_after_auth",
                reply::local(503, "5.5.1", "Already authenticated"),
            );
        } else {
            self.local(reply::local(220, "2.0.0", "Ready to start TLS"));
            // Bytes pipelined after STARTTLS were sent in plaintext: never
            // execute them (CVE-2011-0411).
            if !self.input.is_empty() {
                self.events.push(Event::DiscardedAfterStartTls {
                    bytes: self.input.len(),
                });
                self.events.push(Event::Rejected("starttls_pipelined"));
                self.input.clear();
            }
            // Upstream knew the plaintext session: start a fresh one later.
            if matches!(self.upstream, UpstreamState::Open(_)) {
                self.upstream_out.extend_from_slice(b"QUIT\r\n");
            }
            self.upstream = UpstreamState::NotOpen;
            self.replies = ReplyReader::new();
            self.flush_head();
            self.effect = Some(Effect::StartTls);
        }
    }

    fn handle_auth(&mut self, mechanism: u64, initial: &str, line: Secret) {
        if self.authenticated() {
            self.reject(
                "auth_again",
                reply::local(503, "5.5.1", "Already authenticated"),
            );
            return;
        }
        if !self.upstream_ready() {
            return;
        }
        let Some(mech) = Mechanism::from_smtp_proto(mechanism) else {
            self.reject(
                "auth_mechanism",
                reply::local(504, "5.5.4", "Unrecognized authentication type"),
            );
            return;
        };
        let ir = (!initial.is_empty()).then_some(initial.as_bytes());
        self.auth = AuthState::InProgress(Exchange::start(mech, ir));
        self.forward(line.expose(), Expect::Auth);
    }

    fn step_sasl(&mut self) -> bool {
        if self.blocked() || self.input.is_empty() {
            return false;
        }
        match self.take_line(MAX_AUTH_LINE) {
            None => false,
            Some(None) => true,
            Some(Some((line, _))) => {
                let line = Secret::new(line);
                if let AuthState::InProgress(x) = &mut self.auth {
                    x.response(line.expose());
                }
                self.phase = Phase::Command;
                if matches!(self.upstream, UpstreamState::Open(_)) {
                    self.forward(line.expose(), Expect::Auth);
                } else {
                    self.upstream_ready();
                }
                true
            }
        }
    }

    fn new_message(&self) -> Message {
        let owner = match &self.auth {
            AuthState::Done { owner } => owner.clone(),
            _ => None,
        };
        Message {
            framer: Some(DataFramer::new(self.opts.bare_line_endings)),
            filter: HeaderFilter::new(),
            stuffer: DotStuffer::new(),
            collector: owner
                .as_ref()
                .map(|_| Collector::new(self.opts.max_capture_bytes, self.opts.max_header_bytes)),
            owner,
            size: 0,
            error: None,
        }
    }

    /// Abort upstream mid-message: it must never see an end of data.
    fn abort_upstream(&mut self) {
        self.upstream = UpstreamState::Gone;
    }

    fn step_data(&mut self) -> bool {
        if self.input.is_empty() {
            return false;
        }
        let input = std::mem::take(&mut self.input);
        let consumed = self.data_chunk(&input);
        self.input = input;
        self.input.drain(..consumed);
        true
    }

    /// Frame, filter, stuff and collect one piece of DATA content; returns
    /// the bytes consumed (all of them, unless the message ended inside).
    fn data_chunk(&mut self, input: &[u8]) -> usize {
        let Some(mut msg) = self.msg.take() else {
            self.phase = Phase::Command;
            return 0;
        };
        let mut content = std::mem::take(&mut self.scratch);
        content.clear();
        let framer = msg.framer.as_mut().expect("DATA messages have a framer");
        let p = framer.feed(input, &mut content);
        if msg.error.is_none() {
            if let Some(e) = framer.error() {
                msg.error = Some(MessageError::Data(e));
            } else if msg.size + content.len() as u64 > self.opts.max_message_bytes {
                msg.error = Some(MessageError::TooBig);
            }
            if msg.error.is_some() {
                self.abort_upstream();
            }
        }
        if msg.error.is_none() {
            msg.size += content.len() as u64;
            self.relay_content(&mut msg, &content, true);
        }
        self.scratch = content;
        if p.done {
            self.phase = Phase::Command;
            self.end_message(msg, true);
        } else {
            self.msg = Some(msg);
        }
        p.consumed
    }

    /// Filter and collect `content`; for DATA, stuff it into the upstream
    /// stream; for BDAT leave the filtered bytes in `scratch2`.
    fn relay_content(&mut self, msg: &mut Message, content: &[u8], stuff: bool) {
        if stuff && msg.filter.in_body() {
            // The body passes the filter unchanged: stuff it directly.
            msg.filter.feed_body(content.len());
            if let Some(c) = &mut msg.collector {
                c.push(content, msg.filter.body_start(), self.hooks.as_ref());
            }
            msg.stuffer.feed(content, &mut self.upstream_out);
            return;
        }
        let mut filtered = std::mem::take(&mut self.scratch2);
        filtered.clear();
        msg.filter.feed(content, &mut filtered);
        if let Some(c) = &mut msg.collector {
            c.push(content, msg.filter.body_start(), self.hooks.as_ref());
        }
        if stuff {
            msg.stuffer.feed(&filtered, &mut self.upstream_out);
            filtered.clear();
        }
        self.scratch2 = filtered;
    }

    /// The client finished sending a message (DATA end or BDAT LAST); for
    /// BDAT, `scratch2` holds the last piece.
    fn end_message(&mut self, mut msg: Message, data: bool) {
        // A last line without a line ending may still sit in the filter.
        let mut tail = std::mem::take(&mut self.scratch2);
        msg.filter.finish(&mut tail);
        if data {
            msg.stuffer.feed(&tail, &mut self.upstream_out);
            tail.clear();
        }
        self.scratch2 = tail;
        if let Some(e) = msg.error {
            self.events.push(Event::Rejected(e.reason()));
            self.local(e.reply());
            return;
        }
        if msg.filter.removed() > 0 {
            self.events.push(Event::ShareHeaderRemoved);
        }
        let collected = msg.collector.take().map(|c| {
            if let Some(why) = c.dropped_reason {
                self.events.push(Event::HeadersOnly { reason: why });
            }
            c.finish()
        });
        let mut finished = Box::new(Finished {
            collected,
            owner: msg.owner.take(),
            size: msg.size,
            prepared: false,
        });
        // Upstream takes a while over a whole message: the capture starts
        // meanwhile. Only after DATA: DATA waits for every RCPT reply (the
        // recipients are final) and for the reply to the message before
        // it, so one message at a time is prepared. Pipelined BDAT
        // transactions may end before their RCPT replies arrive: captured
        // after the reply, as before.
        if let (true, None, Some(owner)) = (data, &self.effect, &finished.owner) {
            if let Some(message) = finished.collected.take() {
                self.effect = Some(Effect::Prepare(CaptureRequest {
                    owner: owner.clone(),
                    envelope_recipients: self.rcpts.clone(),
                    message,
                }));
                finished.prepared = true;
            }
        }
        if data {
            msg.stuffer.finish(&mut self.upstream_out);
            self.expect(Expect::DataEnd(finished));
        } else {
            self.send_bdat_piece(true, true, Some(finished));
        }
    }

    fn handle_bdat(&mut self, size: u64, last: bool) {
        if !self.upstream_ready() {
            // Keep the byte stream in step: skip the chunk.
            if self.closed || matches!(self.pending.back(), Some(Pending::Close)) {
                return;
            }
            let r = match self.pending.pop_back() {
                Some(Pending::Local(r)) => r,
                _ => reply::local(503, "5.5.1", "Send EHLO first"),
            };
            self.discard(size, r);
            return;
        }
        let chunking = matches!(&self.upstream, UpstreamState::Open(c) if c.chunking);
        if !chunking {
            self.events.push(Event::Rejected("bdat_unsupported"));
            self.discard(size, reply::local(502, "5.5.1", "BDAT not supported"));
            return;
        }
        let so_far = self.msg.as_ref().map_or(0, |m| m.size);
        if so_far.saturating_add(size) > self.opts.max_message_bytes {
            // The chunk cannot be skipped cheaply: refuse and close.
            self.events.push(Event::Rejected("message_too_big"));
            self.abort_upstream();
            self.finish_with(reply::local(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ));
            return;
        }
        if self.msg.is_none() {
            let mut m = self.new_message();
            m.framer = None;
            self.msg = Some(m);
        }
        self.chunk_failure = None;
        if size == 0 {
            self.phase = Phase::Command;
            if last {
                let msg = self.msg.take().expect("set above");
                self.end_message(msg, false);
            } else {
                self.send_bdat_piece(true, false, None);
            }
        } else {
            self.phase = Phase::Bdat {
                remaining: size,
                last,
            };
        }
    }

    /// Send `scratch2` as one BDAT piece.
    fn send_bdat_piece(&mut self, end: bool, last: bool, finished: Option<Box<Finished>>) {
        let piece = std::mem::take(&mut self.scratch2);
        let header = format!(
            "BDAT {}{}\r\n",
            piece.len(),
            if last { " LAST" } else { "" }
        );
        self.upstream_out.extend_from_slice(header.as_bytes());
        self.upstream_out.extend_from_slice(&piece);
        self.scratch2 = piece;
        self.scratch2.clear();
        self.expect(Expect::BdatPart { end, finished });
    }

    fn step_bdat(&mut self, remaining: u64, last: bool) -> bool {
        if self.input.is_empty() || self.blocked() {
            return false;
        }
        let Some(mut msg) = self.msg.take() else {
            self.phase = Phase::Command;
            return true;
        };
        let n = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(self.input.len());
        let chunk: Vec<u8> = self.input.drain(..n).collect();
        let remaining = remaining - n as u64;
        let end = remaining == 0;
        msg.size += n as u64;
        if msg.error.is_none() {
            self.relay_content(&mut msg, &chunk, false);
            if end && last {
                self.phase = Phase::Command;
                self.end_message(msg, false);
                return true;
            }
            if !self.scratch2.is_empty() || end {
                self.send_bdat_piece(end, false, None);
            }
        }
        if end {
            self.phase = Phase::Command;
            if let Some(e) = msg.error {
                self.events.push(Event::Rejected(e.reason()));
                self.local(e.reply());
                if last {
                    return true;
                }
            }
        } else {
            self.phase = Phase::Bdat { remaining, last };
        }
        self.msg = Some(msg);
        true
    }

    fn discard(&mut self, size: u64, reply: Vec<u8>) {
        if size == 0 {
            self.local(reply);
        } else {
            self.discard_reply = reply;
            self.phase = Phase::Discard { remaining: size };
        }
    }

    fn step_discard(&mut self, remaining: u64) -> bool {
        if self.input.is_empty() {
            return false;
        }
        let n = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(self.input.len());
        self.input.drain(..n);
        let remaining = remaining - n as u64;
        if remaining == 0 {
            self.phase = Phase::Command;
            let r = std::mem::take(&mut self.discard_reply);
            self.local(r);
        } else {
            self.phase = Phase::Discard { remaining };
        }
        true
    }

    fn upstream_lost(&mut self, reason: &'static str) {
        self.upstream = UpstreamState::Gone;
        self.events.push(Event::Rejected(reason));
        let in_message = self.in_message();
        if let Some(m) = &mut self.msg {
            if in_message {
                m.error.get_or_insert(MessageError::UpstreamLost);
            }
        }
        let owed = self
            .pending
            .iter()
            .position(|p| matches!(p, Pending::Upstream(_)));
        match owed {
            Some(i) => {
                self.pending.truncate(i);
                self.finish_with(reply::local(
                    421,
                    "4.4.2",
                    "Upstream connection lost, closing connection",
                ));
            }
            None if !self.in_message() => {
                self.finish_with(reply::local(
                    421,
                    "4.4.2",
                    "Upstream connection lost, closing connection",
                ));
            }
            None => {}
        }
    }

    fn on_reply(&mut self, r: Reply) {
        let Some(i) = self
            .pending
            .iter()
            .position(|p| matches!(p, Pending::Upstream(_)))
        else {
            // Unsolicited: a 421 before closing is relayed, anything else
            // means the upstream session is out of step.
            if r.code == 421 {
                self.upstream = UpstreamState::Gone;
                self.events.push(Event::Rejected("upstream_closed"));
                self.finish_with(r.raw);
            } else {
                self.upstream_lost("upstream_protocol");
            }
            return;
        };
        let Some(Pending::Upstream(expect)) = self
            .pending
            .get_mut(i)
            .map(|p| std::mem::replace(p, Pending::Local(Vec::new())))
        else {
            return;
        };
        self.answered += 1;
        self.events.push(Event::UpstreamReply {
            command: expect.command(),
            class: r.class_label(),
        });
        let out: Option<Pending> = match expect {
            Expect::Ehlo { helo } => {
                if r.code == 250 {
                    self.rcpts.clear();
                    let caps = ehlo::parse(&r);
                    let out = if helo {
                        ehlo::helo_reply(&r)
                    } else {
                        ehlo::client_reply(&r, &self.offer())
                    };
                    self.upstream = UpstreamState::Open(caps);
                    Some(Pending::Local(out))
                } else {
                    Some(Pending::Local(r.raw))
                }
            }
            Expect::Auth => {
                match r.code {
                    334 => self.phase = Phase::Sasl,
                    235 => {
                        let login = match &self.auth {
                            AuthState::InProgress(x) => x.login().map(str::to_string),
                            _ => None,
                        };
                        let owner = login.as_deref().and_then(|l| self.hooks.owner_for_login(l));
                        self.events.push(Event::Auth { ok: true });
                        if let Some(login) = login {
                            self.events.push(Event::LoggedIn {
                                login,
                                owner: owner.clone(),
                            });
                        }
                        self.auth = AuthState::Done { owner };
                        self.phase = Phase::Command;
                    }
                    _ => {
                        self.auth = AuthState::None;
                        self.events.push(Event::Auth { ok: false });
                        self.phase = Phase::Command;
                    }
                }
                Some(Pending::Local(r.raw))
            }
            Expect::Mail => {
                if r.is_positive() {
                    self.rcpts.clear();
                }
                Some(Pending::Local(r.raw))
            }
            Expect::Rcpt(address) => {
                if r.is_positive() && !self.rcpts.contains(&address) {
                    self.rcpts.push(address);
                }
                Some(Pending::Local(r.raw))
            }
            Expect::Data => {
                if r.code == 354 {
                    self.msg = Some(self.new_message());
                    self.phase = Phase::Data;
                }
                Some(Pending::Local(r.raw))
            }
            Expect::DataEnd(finished) => Some(self.message_reply(r, *finished)),
            Expect::BdatPart { end, finished } => {
                if !r.is_positive() && self.chunk_failure.is_none() {
                    self.chunk_failure = Some(r.raw.clone());
                }
                if !end {
                    None
                } else if let Some(failure) = self.chunk_failure.take() {
                    if let Some(f) = finished {
                        self.rcpts.clear();
                        self.discard_prepared(&f);
                    }
                    Some(Pending::Local(failure))
                } else if let Some(f) = finished {
                    Some(self.message_reply(r, *f))
                } else {
                    Some(Pending::Local(r.raw))
                }
            }
            Expect::Rset => {
                self.rcpts.clear();
                Some(Pending::Local(r.raw))
            }
            Expect::Noop => Some(Pending::Local(r.raw)),
            Expect::Quit => {
                self.upstream = UpstreamState::Gone;
                self.pending.insert(i + 1, Pending::Close);
                Some(Pending::Local(r.raw))
            }
        };
        match out {
            Some(p) => self.pending[i] = p,
            None => {
                self.pending.remove(i);
            }
        }
    }

    /// A prepared capture whose message upstream did not accept is dropped
    /// (if the effect slot is taken, the driver drops it when the session
    /// ends or the next message is prepared).
    fn discard_prepared(&mut self, f: &Finished) {
        if f.prepared && self.effect.is_none() {
            self.effect = Some(Effect::Discard);
        }
    }

    /// Upstream's final reply to a message: hold a 2xx until it is captured.
    fn message_reply(&mut self, r: Reply, f: Finished) -> Pending {
        let rcpts = std::mem::take(&mut self.rcpts);
        self.rcpt_attempts = 0;
        if !r.is_positive() {
            self.discard_prepared(&f);
            return Pending::Local(r.raw);
        }
        self.commands = 0;
        self.events.push(Event::Relayed { bytes: f.size });
        if f.prepared {
            self.effect = Some(Effect::Commit);
            return Pending::Held(r.raw);
        }
        match (f.owner, f.collected) {
            (Some(owner), Some(message)) => {
                self.effect = Some(Effect::Capture(CaptureRequest {
                    owner,
                    envelope_recipients: rcpts,
                    message,
                }));
                Pending::Held(r.raw)
            }
            _ => Pending::Local(r.raw),
        }
    }
}

/// Deadlines the driver enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    Idle,
    Login,
    Session,
    Upstream,
}

/// The address between `<` and `>` of a MAIL/RCPT line smtp-proto could
/// not parse (lowercase; empty when there is none).
fn lenient_address(line: &[u8]) -> String {
    let start = memchr::memchr(b'<', line).map_or(line.len(), |p| p + 1);
    let end = memchr::memchr(b'>', &line[start..]).map_or(start, |p| start + p);
    String::from_utf8_lossy(&line[start..end])
        .trim()
        .to_lowercase()
}

fn syntax_reply(e: &ProtoError) -> Vec<u8> {
    match e {
        ProtoError::UnknownCommand => reply::local(500, "5.5.1", "Command unrecognized"),
        ProtoError::InvalidSenderAddress => reply::local(501, "5.1.7", "Bad sender address syntax"),
        ProtoError::InvalidRecipientAddress => {
            reply::local(501, "5.1.3", "Bad recipient address syntax")
        }
        ProtoError::SyntaxError { syntax } => {
            reply::local(501, "5.5.4", &format!("Syntax: {syntax}"))
        }
        ProtoError::InvalidParameter { param } => {
            reply::local(501, "5.5.4", &format!("Invalid parameter {param}"))
        }
        ProtoError::UnsupportedParameter { param } => reply::local(
            555,
            "5.5.4",
            &format!("Unsupported parameter {}", reply::sanitize(param)),
        ),
        ProtoError::ResponseTooLong => reply::local(500, "5.5.6", "Line too long"),
        ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
            reply::local(500, "5.5.2", "Syntax error")
        }
    }
}

#[cfg(test)]
mod tests;
