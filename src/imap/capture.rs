//! Teeing relayed messages into the capture path.
//!
//! The relay copies the bytes of a message literal into a [`Tee`] while it
//! forwards them (it never waits for the capture), and hands the buffer to
//! the [`CaptureQueue`] once the literal (FETCH) or the command (APPEND,
//! after the upstream's `OK`) is complete. A bounded set of workers parses
//! and stores off the I/O tasks.
//!
//! Memory: every tee reserves its bytes from the gateway's capture budget
//! before buffering. When the budget is exhausted a session waits (the relay
//! pauses: backpressure, never an unbounded buffer, never a dropped capture)
//! — unless the session itself already holds budget in buffers that only its
//! own progress releases (a MULTIAPPEND waiting for its `OK`), where waiting
//! could deadlock: then the message is captured from its headers only. A
//! full queue also makes the session wait.
//!
//! What is captured (DESIGN §5): whole messages (`BODY[]`, `RFC822`,
//! `BINARY[]`, APPEND) with content up to `max_capture_bytes`, larger ones
//! from their headers; `BODY[HEADER]`, `RFC822.HEADER`, `BODY[HEADER.FIELDS
//! …]` and `ENVELOPE` as metadata — only when they carry a real Message-ID
//! (a derived id would not match the full message's), and for header-field
//! subsets only when they include From. Direction: outbound when a From
//! address is one of the owner's, inbound otherwise.

use super::metrics::ImapMetrics;
use crate::engine::{Direction, MessageFacts, Policy};
use crate::gateway::{BudgetPermit, Gateway};
use crate::ingest::{self, IngestError, IngestOutcome, IngestRequest};
use crate::mail;
use crate::shutdown::{Drain, DrainGuard};
use crate::store::Durability;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::core::NString;
use imap_codec::imap_types::envelope::{Address, Envelope};
use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::response::{Data, Response};
use imap_codec::ResponseCodec;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Where a capture came from (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Fetch,
    Header,
    Envelope,
    Append,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Fetch => "fetch",
            Source::Header => "header",
            Source::Envelope => "envelope",
            Source::Append => "append",
        }
    }
}

/// What a job carries.
#[derive(Debug)]
pub enum Payload {
    /// A message of `size` bytes; `raw` is all of it, or only its head when
    /// it is over the capture limit (then captured from its headers).
    Message { raw: Vec<u8>, size: u64 },
    /// A header block; `subset`: only some fields (HEADER.FIELDS), which
    /// must include From to be captured. `size`: RFC822.SIZE when known.
    Headers {
        raw: Vec<u8>,
        subset: bool,
        size: Option<u64>,
    },
    /// A FETCH response (large literals replaced by empty ones) holding an
    /// ENVELOPE.
    Envelope { response: Vec<u8> },
}

/// One capture for the workers.
#[derive(Debug)]
pub struct Job {
    /// The owner's primary address.
    pub owner: String,
    pub source: Source,
    pub payload: Payload,
    /// Released when the job is done.
    pub permit: Option<BudgetPermit>,
}

/// What became of a job.
#[derive(Debug)]
pub enum JobOutcome {
    Done(Result<IngestOutcome, IngestError>),
    /// Not captured, with a bounded reason.
    Ignored(&'static str),
    /// The store already holds everything this capture could add.
    Unchanged,
}

/// The process-wide queue of captures and its workers.
#[derive(Clone)]
pub struct CaptureQueue {
    tx: mpsc::Sender<(Job, DrainGuard)>,
    known: Arc<Known>,
    /// Jobs queued or being captured: shutdown waits for them (within its
    /// grace period) so a message relayed to a client is not lost with
    /// the process.
    in_flight: Drain,
}

impl CaptureQueue {
    /// Start `workers` capture threads fed by a queue of `depth` jobs.
    /// Dedicated threads (not a task and a blocking-pool hop per message):
    /// most of a capture is the wait for the store's group commit.
    pub fn start(
        gateway: Arc<Gateway>,
        metrics: ImapMetrics,
        workers: usize,
        depth: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<(Job, DrainGuard)>(depth.max(1));
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let known = Arc::new(Known::default());
        for i in 0..workers.max(1) {
            let (rx, gateway, metrics, known) =
                (rx.clone(), gateway.clone(), metrics.clone(), known.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("imap-capture-{i}"))
                .spawn(move || loop {
                    let next = {
                        let mut rx = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        rx.blocking_recv()
                    };
                    let Some((job, in_flight)) = next else {
                        return; // every sender is gone: the proxy stopped
                    };
                    let source = job.source;
                    let started = Instant::now();
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_job(&gateway, &job)
                    }))
                    .unwrap_or_else(|_| {
                        JobOutcome::Done(Err(IngestError::Panicked("capture panicked".into())))
                    });
                    if complete(&outcome) {
                        if let Payload::Message { raw, .. } = &job.payload {
                            if let Some(id) = header_message_id(raw) {
                                known.insert(&gateway.policy.current(), &job.owner, id);
                            }
                        }
                    }
                    drop(job);
                    record(&gateway, &metrics, source, started, &outcome);
                    drop(in_flight);
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start an IMAP capture thread");
            }
        }
        CaptureQueue {
            tx,
            known,
            in_flight: Drain::new(),
        }
    }

    /// Jobs queued or being captured (`wait_idle`: all of them stored).
    pub fn in_flight(&self) -> &Drain {
        &self.in_flight
    }

    /// Whether `owner`'s copy of the message with this raw Message-ID is
    /// known to be stored as completely as the policy allows.
    pub fn is_known(&self, policy: &Arc<Policy>, owner: &str, message_id: &[u8]) -> bool {
        self.known.check(policy, owner, message_id)
    }

    /// Queue a job; waits while the queue is full (backpressure).
    pub async fn submit(&self, job: Job) {
        let in_flight = self.in_flight.enter();
        // The receiver lives as long as the runtime: a send error means the
        // process is shutting down, and the capture is lost with it.
        let _ = self.tx.send((job, in_flight)).await;
    }
}

/// The message is stored as completely as the policy allows for its owner.
fn complete(outcome: &JobOutcome) -> bool {
    match outcome {
        JobOutcome::Unchanged => true,
        // Not to be captured under this policy: nothing to do next time either.
        JobOutcome::Done(Ok(IngestOutcome::Skipped(_))) => true,
        JobOutcome::Done(Ok(IngestOutcome::Stored {
            ceiling,
            stored,
            headers_only: false,
            ..
        })) => stored >= ceiling,
        _ => false,
    }
}

/// How long a message stays known as fully captured (an owner raising a
/// message's level through the API is picked up by fetches after this).
const KNOWN_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// Most messages remembered (about 100 bytes each).
const KNOWN_MAX: usize = 100_000;

/// Messages recently captured as completely as the policy allows, per
/// owner: a later FETCH of one is relayed without a copy for capture once
/// its header block shows the Message-ID. Forgotten when the policy is
/// reloaded, after [`KNOWN_TTL`], and at restart.
#[derive(Default)]
struct Known {
    inner: std::sync::Mutex<KnownInner>,
}

#[derive(Default)]
struct KnownInner {
    /// The policy the entries were decided under.
    policy: std::sync::Weak<Policy>,
    entries: std::collections::HashMap<(String, Vec<u8>), Instant>,
}

impl Known {
    fn lock(&self) -> std::sync::MutexGuard<'_, KnownInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check(&self, policy: &Arc<Policy>, owner: &str, id: &[u8]) -> bool {
        let inner = self.lock();
        if !std::ptr::eq(inner.policy.as_ptr(), Arc::as_ptr(policy)) {
            return false;
        }
        inner
            .entries
            .get(&(owner.to_string(), id.to_vec()))
            .is_some_and(|at| at.elapsed() < KNOWN_TTL)
    }

    fn insert(&self, policy: &Arc<Policy>, owner: &str, id: &[u8]) {
        let mut inner = self.lock();
        if !std::ptr::eq(inner.policy.as_ptr(), Arc::as_ptr(policy)) {
            inner.entries.clear();
            inner.policy = Arc::downgrade(policy);
        }
        if inner.entries.len() >= KNOWN_MAX {
            inner.entries.retain(|_, at| at.elapsed() < KNOWN_TTL);
            if inner.entries.len() >= KNOWN_MAX {
                inner.entries.clear();
            }
        }
        inner
            .entries
            .insert((owner.to_string(), id.to_vec()), Instant::now());
    }
}

/// The raw Message-ID value in a header block (the first `Message-ID:`
/// field, unfolded lines not supported, trimmed): a cache key only.
pub fn header_message_id(raw: &[u8]) -> Option<&[u8]> {
    let head_end = memchr::memmem::find(raw, b"\r\n\r\n").unwrap_or(raw.len());
    let head = &raw[..head_end];
    let mut at = 0;
    while at < head.len() {
        let end = memchr::memchr(b'\n', &head[at..]).map_or(head.len(), |i| at + i);
        let line = &head[at..end];
        const NAME: &[u8] = b"message-id:";
        if line.len() > NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            let v = line[NAME.len()..].trim_ascii();
            return (!v.is_empty()).then_some(v);
        }
        at = end + 1;
    }
    None
}

fn record(
    gateway: &Gateway,
    metrics: &ImapMetrics,
    source: Source,
    started: Instant,
    outcome: &JobOutcome,
) {
    let result = match outcome {
        JobOutcome::Done(r) => {
            gateway.count("imap", r);
            gateway
                .metrics
                .capture_seconds
                .with_label_values(&["imap"])
                .observe(started.elapsed().as_secs_f64());
            match r {
                Ok(IngestOutcome::Stored { stored, .. }) => stored.as_str(),
                Ok(IngestOutcome::Skipped(_)) => "skipped",
                Err(e) => {
                    tracing::warn!(source = source.as_str(), error = %e, "IMAP capture failed; the session is unaffected");
                    "error"
                }
            }
        }
        JobOutcome::Ignored(reason) => {
            tracing::debug!(source = source.as_str(), reason, "IMAP capture ignored");
            "ignored"
        }
        JobOutcome::Unchanged => "unchanged",
    };
    metrics
        .captures
        .with_label_values(&[source.as_str(), result])
        .inc();
}

/// Parse, decide and store one job (blocking).
pub fn run_job(gateway: &Gateway, job: &Job) -> JobOutcome {
    let policy = gateway.policy.current();
    let store = gateway.store.as_ref();
    let now = unix_now();
    let max = gateway.max_capture_bytes();
    let req = |direction| IngestRequest {
        owner: &job.owner,
        direction,
        envelope_recipients: &[],
        now,
        max_capture_bytes: max,
        // A fetched message lost in a crash is captured again at its next
        // fetch: no worker waits for a flush (DESIGN §7).
        durability: Durability::Background,
    };
    match &job.payload {
        Payload::Message { raw, size } => {
            let head = match mail::parse_headers(raw, &[]) {
                Ok(f) => f,
                Err(e) => return JobOutcome::Done(Err(e.into())),
            };
            let direction = direction_of(&policy, &job.owner, &head);
            let whole = raw.len() as u64 >= *size;
            if unchanged(store, &policy, &job.owner, &head, direction, now, whole) {
                return JobOutcome::Unchanged;
            }
            if !whole {
                let mut facts = head;
                facts.size = *size;
                JobOutcome::Done(ingest::ingest_facts(
                    store,
                    &policy,
                    &facts,
                    &req(direction),
                ))
            } else {
                JobOutcome::Done(ingest::ingest(store, &policy, raw, &req(direction)))
            }
        }
        Payload::Headers { raw, subset, size } => {
            headers_job(store, &policy, &job.owner, raw, *subset, *size, &req)
        }
        Payload::Envelope { response } => match envelope_headers(response) {
            Some((raw, size)) => headers_job(store, &policy, &job.owner, &raw, false, size, &req),
            None => JobOutcome::Ignored("envelope-unreadable"),
        },
    }
}

fn headers_job<'a>(
    store: &dyn crate::store::Store,
    policy: &Policy,
    owner: &str,
    raw: &[u8],
    subset: bool,
    size: Option<u64>,
    req: &dyn Fn(Direction) -> IngestRequest<'a>,
) -> JobOutcome {
    let mut facts = match mail::parse_headers(raw, &[]) {
        Ok(f) => f,
        Err(e) => return JobOutcome::Done(Err(e.into())),
    };
    if facts.message_id_derived {
        return JobOutcome::Ignored("no-message-id");
    }
    if subset && facts.from.is_empty() {
        return JobOutcome::Ignored("no-from");
    }
    if let Some(size) = size {
        facts.size = size;
    }
    let direction = direction_of(policy, owner, &facts);
    if unchanged(store, policy, owner, &facts, direction, unix_now(), false) {
        return JobOutcome::Unchanged;
    }
    JobOutcome::Done(ingest::ingest_facts(store, policy, &facts, &req(direction)))
}

/// True when capturing this message again for `owner` could change
/// nothing: the record has this owner's copy exactly as the policy decides
/// it now, and already holds every field its ceiling allows (or, without
/// `content`, everything a header-only capture could add). Mail clients
/// fetch the same messages over and over (every device, every resync): this
/// keeps those fetches from re-parsing and re-writing what is stored.
fn unchanged(
    store: &dyn crate::store::Store,
    policy: &Policy,
    owner: &str,
    facts: &MessageFacts,
    direction: Direction,
    now: i64,
    content: bool,
) -> bool {
    if facts.message_id_derived {
        return false;
    }
    let Ok(Some(record)) = store.message(&crate::engine::message_key(&facts.message_id)) else {
        return false;
    };
    let crate::engine::Decision::Capture(copy) =
        crate::engine::decide(policy, facts, owner, direction, now)
    else {
        return false;
    };
    let same = record.owners.iter().any(|o| {
        o.user == copy.user
            && o.level == copy.level
            && o.direction == copy.direction
            && o.override_level == copy.override_level
    });
    let adds = if content {
        crate::engine::Level::Full
    } else {
        crate::engine::Level::Subject
    };
    same && record.stored >= record.ceiling().min(adds)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Outbound when a From address is one of the owner's addresses.
pub fn direction_of(policy: &Policy, owner: &str, facts: &MessageFacts) -> Direction {
    match policy.find_user(owner) {
        Some(user) if facts.from.iter().any(|m| user.has_address(&m.address)) => {
            Direction::Outbound
        }
        _ => Direction::Inbound,
    }
}

/// A header block rebuilt from the ENVELOPE in a FETCH response, and the
/// RFC822.SIZE in the same response. `None` when the response does not
/// decode or has no envelope.
pub fn envelope_headers(response: &[u8]) -> Option<(Vec<u8>, Option<u64>)> {
    let (_, decoded) = ResponseCodec::default().decode(response).ok()?;
    let Response::Data(Data::Fetch { items, .. }) = decoded else {
        return None;
    };
    let mut envelope = None;
    let mut size = None;
    for item in items.as_ref() {
        match item {
            MessageDataItem::Envelope(e) => envelope = Some(e),
            MessageDataItem::Rfc822Size(s) => size = Some(u64::from(*s)),
            _ => {}
        }
    }
    Some((headers_from_envelope(envelope?), size))
}

fn nstring(n: &NString<'_>) -> Option<Vec<u8>> {
    n.0.as_ref().map(|s| {
        s.as_ref()
            .iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
            .collect()
    })
}

fn headers_from_envelope(e: &Envelope<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut field = |name: &str, value: Option<Vec<u8>>| {
        if let Some(v) = value {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(&v);
            out.extend_from_slice(b"\r\n");
        }
    };
    field("Date", nstring(&e.date));
    field("Subject", nstring(&e.subject));
    field("From", addresses(&e.from));
    field("Sender", addresses(&e.sender));
    field("Reply-To", addresses(&e.reply_to));
    field("To", addresses(&e.to));
    field("Cc", addresses(&e.cc));
    field("Bcc", addresses(&e.bcc));
    field("In-Reply-To", nstring(&e.in_reply_to));
    field("Message-ID", nstring(&e.message_id));
    out.extend_from_slice(b"\r\n");
    out
}

fn addresses(list: &[Address<'_>]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for a in list {
        // Group markers (RFC 3501 §7.4.2) have no host.
        let (Some(mailbox), Some(host)) = (nstring(&a.mailbox), nstring(&a.host)) else {
            continue;
        };
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        if let Some(name) = nstring(&a.name).filter(|n| !n.is_empty()) {
            let plain = name
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b" =?_-.!#$%&'*+/^`{|}~".contains(&b));
            if plain {
                out.extend_from_slice(&name);
            } else {
                out.push(b'"');
                for &b in &name {
                    if b == b'"' || b == b'\\' {
                        out.push(b'\\');
                    }
                    out.push(b);
                }
                out.push(b'"');
            }
            out.push(b' ');
        }
        out.push(b'<');
        out.extend_from_slice(&mailbox);
        out.push(b'@');
        out.extend_from_slice(&host);
        out.push(b'>');
    }
    (!out.is_empty()).then_some(out)
}

/// What a tee is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeeKind {
    /// A whole message: all of it up to the capture limit, else its head.
    Message,
    /// A header block: up to `max_header_bytes`.
    Header,
}

/// Capture memory held by a session: budget plus a count of what the
/// session holds in buffers only its own progress releases.
#[derive(Debug)]
pub struct Held {
    permit: Option<BudgetPermit>,
    bytes: usize,
    counter: Arc<AtomicUsize>,
}

impl Held {
    /// The budget permit, no longer counted against the session.
    fn release(mut self) -> Option<BudgetPermit> {
        self.permit.take()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Bytes of one literal being copied for capture.
#[derive(Debug)]
pub struct Tee {
    pub kind: TeeKind,
    /// The literal's size.
    pub size: u64,
    keep: usize,
    buf: Vec<u8>,
    held: Held,
    /// The header block was looked at (see [`SessionCapture::is_known`]).
    pub checked: bool,
}

impl Tee {
    /// Copy what is still wanted of `bytes`.
    pub fn push(&mut self, bytes: &[u8]) {
        let room = self.keep - self.buf.len();
        let n = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..n]);
    }

    /// Bytes still wanted.
    pub fn wants(&self) -> usize {
        self.keep - self.buf.len()
    }

    /// Room to read up to `n` wanted bytes straight into the buffer (no
    /// extra copy); call [`Tee::commit`] with what was read.
    pub fn spare(&mut self, n: usize) -> &mut [u8] {
        let n = n.min(self.wants());
        let len = self.buf.len();
        self.buf.resize(len + n, 0);
        &mut self.buf[len..]
    }

    /// After reading `read` bytes into [`Tee::spare`] of `offered` bytes.
    pub fn commit(&mut self, offered: usize, read: usize) {
        let len = self.buf.len();
        self.buf.truncate(len - offered + read);
    }

    /// The last `n` bytes pushed.
    pub fn tail(&self, n: usize) -> &[u8] {
        &self.buf[self.buf.len() - n..]
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The header block, once it is complete in the buffer.
    pub fn header_block(&self) -> Option<&[u8]> {
        memchr::memmem::find(&self.buf, b"\r\n\r\n").map(|i| &self.buf[..i + 4])
    }

    /// Everything was kept (not a head-only copy).
    pub fn is_whole(&self) -> bool {
        self.buf.len() as u64 == self.size
    }

    /// Into a job payload and its permit.
    pub fn into_message(self) -> (Vec<u8>, u64, Option<BudgetPermit>) {
        (self.buf, self.size, self.held.release())
    }
}

/// The outcome of [`SessionCapture::tee_now`].
#[derive(Debug)]
pub enum TeeStart {
    Ready(Tee),
    /// The budget is exhausted and waiting is safe.
    Wait,
    /// Nothing can be reserved without risking a deadlock: not captured.
    Skip,
}

/// A session's handle on capture: whose mail it is and where it goes.
pub struct SessionCapture {
    pub owner: String,
    gateway: Arc<Gateway>,
    queue: CaptureQueue,
    metrics: ImapMetrics,
    held: Arc<AtomicUsize>,
}

impl SessionCapture {
    pub fn new(
        owner: String,
        gateway: Arc<Gateway>,
        queue: CaptureQueue,
        metrics: ImapMetrics,
    ) -> Self {
        SessionCapture {
            owner,
            gateway,
            queue,
            metrics,
            held: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Bytes to keep of a literal of `size` for `kind`, and the header-only
    /// fallback.
    fn sizes(&self, kind: TeeKind, size: u64) -> (usize, usize) {
        let max = self.gateway.max_capture_bytes() as u64;
        let max_header =
            usize::try_from(self.gateway.config.limits.max_header_bytes).unwrap_or(usize::MAX);
        let head = usize::try_from(size).unwrap_or(usize::MAX).min(max_header);
        match kind {
            TeeKind::Message if size <= max => (size as usize, head),
            TeeKind::Message | TeeKind::Header => (head, head),
        }
    }

    fn make(&self, kind: TeeKind, size: u64, keep: usize, permit: BudgetPermit) -> Tee {
        self.held.fetch_add(keep, Ordering::Relaxed);
        Tee {
            kind,
            size,
            keep,
            buf: Vec::with_capacity(keep.min(16 << 10)),
            held: Held {
                permit: Some(permit),
                bytes: keep,
                counter: self.held.clone(),
            },
            checked: false,
        }
    }

    /// Start copying a literal of `size` bytes if the budget allows now.
    /// `Wait`: call [`SessionCapture::tee_wait`] (after flushing what the
    /// client should see first). See the module docs for the fallbacks.
    pub fn tee_now(&self, kind: TeeKind, size: u64) -> TeeStart {
        let (keep, head) = self.sizes(kind, size);
        if kind == TeeKind::Message && (keep as u64) < size {
            self.metrics
                .capture_degraded
                .with_label_values(&["too_large"])
                .inc();
        }
        if let Some(p) = self.gateway.try_reserve(keep) {
            return TeeStart::Ready(self.make(kind, size, keep, p));
        }
        if self.held.load(Ordering::Relaxed) == 0 {
            return TeeStart::Wait;
        }
        self.metrics
            .capture_degraded
            .with_label_values(&["budget"])
            .inc();
        self.gateway.budget_denied("imap");
        match self.gateway.try_reserve(head) {
            Some(p) => TeeStart::Ready(self.make(kind, size, head, p)),
            None => TeeStart::Skip,
        }
    }

    /// Wait for the budget, then start copying (backpressure).
    pub async fn tee_wait(&self, kind: TeeKind, size: u64) -> Option<Tee> {
        let (keep, _) = self.sizes(kind, size);
        let permit = self.gateway.reserve(keep, "imap").await;
        Some(self.make(kind, size, keep, permit))
    }

    /// Whether the message with this header block was recently captured
    /// for this owner as completely as the policy allows (then its copy can
    /// be dropped: counted as `unchanged`).
    pub fn is_known(&self, header: &[u8]) -> bool {
        let known = header_message_id(header).is_some_and(|id| {
            self.queue
                .is_known(&self.gateway.policy.current(), &self.owner, id)
        });
        if known {
            self.metrics
                .captures
                .with_label_values(&[Source::Fetch.as_str(), "known"])
                .inc();
        }
        known
    }

    /// Queue a finished tee (or header block) as a capture.
    pub async fn submit(&self, source: Source, tee: Tee, subset: bool, size: Option<u64>) {
        let kind = tee.kind;
        let (raw, literal_size, permit) = tee.into_message();
        let payload = match kind {
            TeeKind::Message => Payload::Message {
                raw,
                size: literal_size,
            },
            TeeKind::Header => Payload::Headers { raw, subset, size },
        };
        self.queue
            .submit(Job {
                owner: self.owner.clone(),
                source,
                payload,
                permit,
            })
            .await;
    }

    /// Queue an ENVELOPE capture from a FETCH response skeleton.
    pub async fn submit_envelope(&self, response: Vec<u8>) {
        let permit = self.gateway.try_reserve(response.len());
        self.queue
            .submit(Job {
                owner: self.owner.clone(),
                source: Source::Envelope,
                payload: Payload::Envelope { response },
                permit,
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_becomes_headers() {
        let response = b"* 3 FETCH (RFC822.SIZE 4321 ENVELOPE (\"Tue, 3 Nov 2026 10:00:00 +0000\" \"=?UTF-8?Q?Caf=C3=A9?= plans\" ((\"Bob \\\"B\\\" Stone\" NIL \"bob\" \"client-a.example\")) NIL NIL ((NIL NIL \"team\" NIL)(\"Alice\" NIL \"alice\" \"acme.example\")(NIL NIL NIL NIL)) ((NIL NIL \"carol\" \"acme.example\")) NIL \"<p@x>\" \"<m1@client-a.example>\"))\r\n";
        let (h, size) = envelope_headers(response).expect("decodes");
        assert_eq!(size, Some(4321));
        let text = String::from_utf8(h.clone()).unwrap();
        assert!(
            text.contains("From: \"Bob \\\"B\\\" Stone\" <bob@client-a.example>\r\n"),
            "{text}"
        );
        assert!(
            text.contains("To: Alice <alice@acme.example>\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Message-ID: <m1@client-a.example>\r\n"),
            "{text}"
        );
        let facts = mail::parse_headers(&h, &[]).unwrap();
        assert_eq!(facts.message_id, "m1@client-a.example");
        assert!(!facts.message_id_derived);
        assert_eq!(facts.from[0].address, "bob@client-a.example");
        assert_eq!(facts.to.len(), 1);
        assert_eq!(facts.cc[0].address, "carol@acme.example");
        assert_eq!(facts.subject.as_deref(), Some("Café plans"));
        assert_eq!(facts.in_reply_to, vec!["p@x".to_string()]);
        assert!(facts.date.is_some());
        assert_eq!(envelope_headers(b"* 3 FETCH (FLAGS (\\Seen))\r\n"), None);
        assert_eq!(envelope_headers(b"garbage\r\n"), None);
    }
}
