//! The capture path shared by `mailshare ingest` and (later) the SMTP and
//! IMAP adapters: raw bytes → `mail` facts → `engine::decide` → `store`.
//!
//! Parsing borrows from the caller's buffer; the store writes bodies only
//! within the ceiling. A message larger than `max_capture_bytes` is still
//! captured, from its headers alone (metadata and subject, no content).

use crate::engine::{self, Decision, Direction, Level, Policy, Reason};
use crate::mail;
use crate::store::{CaptureInput, Durability, Store, StoreError};

/// What one capture needs besides the bytes.
#[derive(Clone, Debug)]
pub struct IngestRequest<'a> {
    /// A login or an address of a policy user.
    pub owner: &'a str,
    pub direction: Direction,
    /// SMTP envelope recipients (empty outside SMTP).
    pub envelope_recipients: &'a [String],
    /// Unix seconds: dates a message without a Date header.
    pub now: i64,
    /// Above this size only the headers are parsed and captured.
    pub max_capture_bytes: usize,
    /// Whether the call returns only once the capture is durable.
    pub durability: Durability,
}

/// What happened to one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored (or merged into the record of the same Message-ID).
    Stored {
        id: String,
        /// This owner's level and why.
        level: Level,
        reason: Reason,
        /// The record's ceiling and the fields it holds after the merge.
        ceiling: Level,
        stored: Level,
        /// Only the headers were captured (message above the capture limit,
        /// or a MIME structure the parser could not take apart).
        headers_only: bool,
    },
    /// Nothing stored for this owner.
    Skipped(Reason),
}

impl std::fmt::Display for IngestOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngestOutcome::Stored {
                id,
                level,
                reason,
                ceiling,
                stored,
                headers_only,
            } => {
                write!(
                    f,
                    "stored: {level} ({reason}), message {id}, ceiling {ceiling}, fields {stored}",
                    reason = reason.as_str()
                )?;
                if *headers_only {
                    f.write_str(", headers only")?;
                }
                Ok(())
            }
            IngestOutcome::Skipped(r) => write!(f, "skipped: {}", r.as_str()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("not a mail message: {0}")]
    Parse(#[from] mail::ParseError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The capture task died (a bug: parsing is panic-guarded).
    #[error("capture task failed: {0}")]
    Panicked(String),
}

impl IngestError {
    /// A bounded label for metrics: `parse`, `store` or `internal`.
    pub fn kind(&self) -> &'static str {
        match self {
            IngestError::Parse(_) => "parse",
            IngestError::Store(_) => "store",
            IngestError::Panicked(_) => "internal",
        }
    }
}

/// Capture one raw message for one owner. Durable when it returns `Ok`.
pub fn ingest(
    store: &dyn Store,
    policy: &Policy,
    raw: &[u8],
    req: &IngestRequest<'_>,
) -> Result<IngestOutcome, IngestError> {
    settled(ingest_gated(store, policy, raw, None, req, Gate::Open))
}

/// Capture one message from its header block alone: `head` holds at least
/// the headers of a message of `size` bytes whose body was not kept (over
/// the capture limit, or the memory budget). Metadata and subject only.
pub fn ingest_headers(
    store: &dyn Store,
    policy: &Policy,
    head: &[u8],
    size: u64,
    req: &IngestRequest<'_>,
) -> Result<IngestOutcome, IngestError> {
    settled(ingest_gated(
        store,
        policy,
        head,
        Some(size),
        req,
        Gate::Open,
    ))
}

/// Like [`ingest`] (or [`ingest_headers`] with `headers_only_size`), for a
/// message whose acceptance is not known yet: an SMTP upstream is still
/// considering it. Parsing, the decision and writing the content's blob
/// files (none referenced yet) happen first; then `accepted` is asked, and
/// only on `true` is the capture stored. `Ok(None)`: not accepted, nothing
/// stored, the blob files released.
pub fn ingest_when(
    store: &dyn Store,
    policy: &Policy,
    raw: &[u8],
    headers_only_size: Option<u64>,
    req: &IngestRequest<'_>,
    accepted: &mut dyn FnMut() -> bool,
) -> Result<Option<IngestOutcome>, IngestError> {
    ingest_gated(
        store,
        policy,
        raw,
        headers_only_size,
        req,
        Gate::Verdict(accepted),
    )
}

/// Whether a capture waits for a verdict before its store write.
enum Gate<'v> {
    Open,
    Verdict(&'v mut dyn FnMut() -> bool),
    /// The verdict, once asked.
    Answered(bool),
}

impl Gate<'_> {
    /// Asks the verdict once; later calls repeat the answer.
    fn accepted(&mut self) -> bool {
        let yes = match self {
            Gate::Open => return true,
            Gate::Verdict(f) => f(),
            Gate::Answered(yes) => return *yes,
        };
        *self = Gate::Answered(yes);
        yes
    }

    fn speculative(&self) -> bool {
        matches!(self, Gate::Verdict(_))
    }
}

/// An open gate always stores or skips.
fn settled(r: Result<Option<IngestOutcome>, IngestError>) -> Result<IngestOutcome, IngestError> {
    r?.ok_or_else(|| IngestError::Panicked("a capture without a verdict was refused".into()))
}

fn ingest_gated(
    store: &dyn Store,
    policy: &Policy,
    raw: &[u8],
    headers_only_size: Option<u64>,
    req: &IngestRequest<'_>,
    mut gate: Gate<'_>,
) -> Result<Option<IngestOutcome>, IngestError> {
    match parse_and_capture(store, policy, raw, headers_only_size, req, &mut gate) {
        // A message that fails before the verdict is an error only if it
        // was accepted (a refused one is nobody's concern).
        Err(e) if !gate.accepted() => {
            tracing::debug!(error = %e, "capture failed for a message upstream did not accept");
            Ok(None)
        }
        r => r,
    }
}

fn parse_and_capture(
    store: &dyn Store,
    policy: &Policy,
    raw: &[u8],
    headers_only_size: Option<u64>,
    req: &IngestRequest<'_>,
    gate: &mut Gate<'_>,
) -> Result<Option<IngestOutcome>, IngestError> {
    if let Some(size) = headers_only_size {
        let mut facts = mail::parse_headers(raw, req.envelope_recipients)?;
        facts.size = size;
        return capture(store, policy, &facts, None, req, true, gate);
    }
    if raw.len() > req.max_capture_bytes {
        let facts = mail::parse_headers(raw, req.envelope_recipients)?;
        return capture(store, policy, &facts, None, req, true, gate);
    }
    let parsed = match mail::parse(raw) {
        Ok(p) => p,
        // The full parser gave up on a hostile MIME tree (panic contained,
        // or nesting too deep): what the headers say is still captured.
        Err(mail::ParseError::ParserPanicked | mail::ParseError::TooDeep) => {
            let facts = mail::parse_headers(raw, req.envelope_recipients)?;
            return capture(store, policy, &facts, None, req, true, gate);
        }
        Err(e) => return Err(e.into()),
    };
    let facts = parsed.facts(req.envelope_recipients);
    let content = parsed.content();
    capture(store, policy, &facts, Some(&content), req, false, gate)
}

/// Capture the metadata in `facts` read from a header block alone (IMAP
/// `BODY[HEADER]` and `ENVELOPE` fetches, or the head of a message over the
/// capture limit): no content is stored, and a later full capture of the same
/// Message-ID fills it in up to the ceiling. Durable when it returns `Ok`.
pub fn ingest_facts(
    store: &dyn Store,
    policy: &Policy,
    facts: &engine::MessageFacts,
    req: &IngestRequest<'_>,
) -> Result<IngestOutcome, IngestError> {
    settled(capture(
        store,
        policy,
        facts,
        None,
        req,
        true,
        &mut Gate::Open,
    ))
}

fn capture(
    store: &dyn Store,
    policy: &Policy,
    facts: &engine::MessageFacts,
    content: Option<&engine::Content<'_>>,
    req: &IngestRequest<'_>,
    headers_only: bool,
    gate: &mut Gate<'_>,
) -> Result<Option<IngestOutcome>, IngestError> {
    let copy = match engine::decide(policy, facts, req.owner, req.direction, req.now) {
        Decision::Skip(reason) => {
            return Ok(gate.accepted().then_some(IngestOutcome::Skipped(reason)))
        }
        Decision::Capture(c) if c.level == Level::Hidden && c.override_level.is_none() => {
            return Ok(gate.accepted().then_some(IngestOutcome::Skipped(c.reason)));
        }
        Decision::Capture(c) => c,
    };
    // Blob files first, while the verdict is pending (a failure here is
    // met again, and reported, by the capture's own write).
    let prewritten = match content {
        Some(c) if gate.speculative() => store.prewrite(facts, &copy, c).unwrap_or_else(|e| {
            tracing::debug!(error = %e, "writing blobs ahead failed");
            None
        }),
        _ => None,
    };
    if !gate.accepted() {
        if let Some(p) = prewritten {
            store.release(p);
        }
        return Ok(None);
    }
    let (level, reason) = (copy.level, copy.reason);
    let out = store.capture(
        policy,
        CaptureInput {
            facts,
            copy,
            content,
            now: req.now,
            durability: req.durability,
            prewritten,
        },
    )?;
    Ok(Some(IngestOutcome::Stored {
        id: out.id,
        level,
        reason,
        ceiling: out.ceiling,
        stored: out.stored,
        headers_only,
    }))
}
