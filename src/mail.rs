//! Raw RFC 5322 bytes → [`MessageFacts`] for the engine and borrowed
//! [`Content`] for the store, on top of mail-parser 0.11.
//!
//! # Zero-copy, and what is owned
//!
//! [`parse`] runs mail-parser over the caller's buffer and keeps borrowing it:
//! a [`ParsedMail<'a>`] is a view of `raw`, so the buffer must outlive it.
//! Header values and body parts are `Cow`s that point into `raw` wherever no
//! decoding was needed. They are *owned* copies only where the bytes on the
//! wire are not the bytes meant:
//!
//! - bodies and attachments with a `base64` or `quoted-printable`
//!   Content-Transfer-Encoding (decoded into the parser's own buffers: budget
//!   about 0.75× the encoded size on top of `raw`);
//! - text parts that declare a charset other than UTF-8 (converted to UTF-8;
//!   mail-parser does this even for `us-ascii`), and text that is not valid
//!   UTF-8 (lossily converted);
//! - header values with RFC 2047 encoded words, folded lines or comments.
//!
//! [`ParsedMail::content`] hands out `&str` / `&[u8]` into those parser-held
//! buffers (never `body_text()`, which renders HTML into a new `String`), so a
//! UTF-8 (or charset-less) text or HTML body without transfer encoding reaches
//! the store without a single copy.
//! [`MessageFacts`] is small and owned: addresses, ids and the subject are
//! copied out because they outlive the message.
//!
//! # Robustness
//!
//! Every entry point accepts any bytes. mail-parser is written to never panic
//! and parses hostile shapes (deep nesting, huge lines, 100k recipients) in
//! linear time; we still run it under `catch_unwind` so a parser bug becomes
//! [`ParseError::ParserPanicked`] for this one message instead of taking a
//! session down (this relies on the crate's `panic = "unwind"`, the default).
//! The extraction code here only uses checked indexing.
//!
//! A stack overflow is not a panic: it aborts the process. Two places in
//! mail-parser recurse once per level of attached messages (message/rfc822
//! inside message/rfc822…), which an attacker can nest tens of thousands deep
//! in a few hundred kilobytes:
//!
//! - dropping a parsed message: [`ParsedMail`] tears nested messages down
//!   iteratively instead;
//! - `into_owned` on the result of parsing a base64 or quoted-printable
//!   encoded attached message, inside the parser (about 0.85 KiB of stack per
//!   level in release builds, 3.8 KiB in debug). When the input could hold
//!   such a part (it names `rfc822`, `global` or `digest` and has an encoding
//!   that could apply) and is larger than a few kilobytes, the parse runs on a
//!   scoped thread whose stack covers the deepest nesting the input's size
//!   allows; past [`MAX_PARSE_STACK`] it is refused ([`ParseError::TooDeep`]).
//!   The check reads only header-like lines (memchr, about 3.8 GB/s, some 15 %
//!   of mail-parser's own time); inputs of a few kilobytes skip it and run on
//!   the caller's thread, which should have 1 MiB of stack or more (tokio's
//!   threads have 2 MiB).
//!
//! # Header rules
//!
//! - Single-valued fields (Subject, Message-ID, Date, Sender, In-Reply-To,
//!   References, Auto-Submitted, Precedence): the **first** occurrence wins
//!   (mail-parser's own accessors return the last one; we do not use them).
//! - Address fields (From, To, Cc, Bcc): every occurrence is read (RFC 5322
//!   §4.5.3 obsolete syntax), groups are flattened, entries without an address
//!   are dropped, duplicates within one field are dropped.
//! - `X-Mailshare-Share`: the lowest valid level over all occurrences (privacy
//!   wins when a message carries contradictory headers); invalid values are
//!   ignored.
//! - A message without a usable Message-ID gets a derived one (below).
//!
//! # Derived Message-IDs
//!
//! `<64 hex>@mailshare.invalid` (stored without brackets, like every id),
//! `message_id_derived = true`. The hex is the SHA-256 of
//!
//! - the first From, To, Cc, Date and Subject header values, raw (before
//!   RFC 2047 decoding), unfolded with whitespace runs collapsed, each
//!   length-prefixed and marked absent when missing;
//! - the body: the bytes after the first empty line, with CR bytes dropped and
//!   trailing line breaks trimmed.
//!
//! Trace headers that relays prepend (Received, Return-Path, DKIM-Signature,
//! …) and CRLF/LF conversion by a mail store do not change it, so the same
//! message seen via SMTP and later via IMAP gets the same id; any change to
//! the body or to those five headers gives a different one. (An upstream that
//! *adds* a Message-ID to submitted mail that had none defeats this: the IMAP
//! copy then carries the upstream's id.)

use crate::engine::{AttachmentContent, Content, Level, Mailbox, MessageFacts};
use mail_parser::{
    Address, DateTime, Header, HeaderName, HeaderValue, Message, MessageParser, MessagePart,
    MimeHeaders, PartType,
};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Domain of derived Message-IDs (RFC 6761 reserves `.invalid`).
pub const DERIVED_ID_DOMAIN: &str = "mailshare.invalid";

/// Why bytes could not be turned into a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Empty input, or not a single header line before the end of the input.
    #[error("not an RFC 5322 message: no header found")]
    NotAMessage,
    /// mail-parser panicked on this input; the panic was contained.
    #[error("the MIME parser panicked on this message")]
    ParserPanicked,
    /// The message may nest encoded attached messages deeper than can be
    /// parsed with a bounded stack (or no thread with that stack could be
    /// started). Its headers can still be read with [`parse_headers`].
    #[error("the message may nest attached messages too deeply to parse safely")]
    TooDeep,
}

/// The largest stack a parse thread gets (see "Robustness" in the module
/// docs): enough for about 27 MB of risky input in release builds.
pub const MAX_PARSE_STACK: usize = 1 << 30;

/// Stack per input byte that mail-parser's recursion over encoded attached
/// messages can need: a nesting level takes at least 30 decoded bytes and
/// 0.85 KiB of stack (release) or 3.8 KiB (debug), measured; with margin.
const STACK_PER_INPUT_BYTE: usize = if cfg!(debug_assertions) { 160 } else { 40 };

/// Up to this much estimated recursion runs on the caller's thread.
const INLINE_STACK: usize = 256 << 10;

/// Fixed part of a parse thread's stack.
const BASE_PARSE_STACK: usize = 2 << 20;

/// A fully parsed message borrowing from the raw bytes it was parsed from.
pub struct ParsedMail<'a> {
    raw: &'a [u8],
    message: Message<'a>,
}

impl Drop for ParsedMail<'_> {
    /// Detach nested messages level by level so that dropping a deeply nested
    /// message does not recurse (mail-parser's derived drop would).
    fn drop(&mut self) {
        let mut pending = Vec::new();
        detach_nested(&mut self.message, &mut pending);
        while let Some(mut m) = pending.pop() {
            detach_nested(&mut m, &mut pending);
        }
    }
}

fn detach_nested<'x>(message: &mut Message<'x>, out: &mut Vec<Message<'x>>) {
    for part in &mut message.parts {
        if let PartType::Message(nested) = &mut part.body {
            out.push(std::mem::take(nested));
        }
    }
}

impl fmt::Debug for ParsedMail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedMail")
            .field("size", &self.raw.len())
            .field("parts", &self.message.parts.len())
            .field("attachments", &self.message.attachments.len())
            .finish_non_exhaustive()
    }
}

/// Parse a whole message (headers, MIME structure, decoded parts).
///
/// Zero-copy: the result borrows `raw`. Cost is linear in `raw.len()`
/// (0.7–0.9 GiB/s per core measured on attachment-heavy mail); decoded parts
/// are owned (see the module docs). It is CPU-bound: async callers run it off
/// the I/O task (`spawn_blocking`).
///
/// # Errors
///
/// [`ParseError::NotAMessage`] for empty input or input without any header;
/// [`ParseError::ParserPanicked`] if mail-parser panicked (contained);
/// [`ParseError::TooDeep`] for input that could nest encoded messages beyond
/// what [`MAX_PARSE_STACK`] covers (use [`parse_headers`] for those).
pub fn parse(raw: &[u8]) -> Result<ParsedMail<'_>, ParseError> {
    if raw.is_empty() {
        return Err(ParseError::NotAMessage);
    }
    let message = with_parse_stack(raw, || {
        guarded(|| {
            if ends_inside_headers(raw) {
                let copy = with_final_line_break(raw);
                MessageParser::default()
                    .parse(&copy)
                    .map(Message::into_owned)
            } else {
                MessageParser::default().parse(raw)
            }
        })
    })?
    .ok_or(ParseError::NotAMessage)?;
    let mail = ParsedMail { raw, message };
    if root_headers(&mail.message).is_empty() {
        return Err(ParseError::NotAMessage);
    }
    Ok(mail)
}

/// Run `parse` on this thread, or on a scoped thread with a stack large
/// enough for the deepest recursion `raw` could cause (module docs).
fn with_parse_stack<T: Send>(
    raw: &[u8],
    parse: impl FnOnce() -> Result<T, ParseError> + Send,
) -> Result<T, ParseError> {
    let need = raw.len().saturating_mul(STACK_PER_INPUT_BYTE);
    if need <= INLINE_STACK || !may_hold_encoded_message(raw) {
        return parse();
    }
    let stack = need.saturating_add(BASE_PARSE_STACK);
    if stack > MAX_PARSE_STACK {
        return Err(ParseError::TooDeep);
    }
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("mail-parse".into())
            .stack_size(stack)
            .spawn_scoped(scope, parse)
            .map_err(|_| ParseError::TooDeep)?
            .join()
            .unwrap_or(Err(ParseError::ParserPanicked))
    })
}

/// Whether mail-parser could find an attached message with a transfer
/// encoding in `raw`. That needs a part whose Content-Type names `rfc822` or
/// `global` (or a part of a `multipart/digest`) and a Content-Transfer-Encoding
/// that reads `base64` or `quoted-printable`, possibly via an RFC 2047 word.
/// Header values sit on lines with a `:` or on continuation lines (leading SP
/// or HT), so only those lines are searched: the base64 bodies that make up
/// most of the bytes are skipped at memchr speed. Conservative: a false
/// positive costs a thread, never correctness.
fn may_hold_encoded_message(raw: &[u8]) -> bool {
    const MESSAGE: &[&[u8]] = &[b"rfc822", b"global", b"digest"];
    const ENCODING: &[&[u8]] = &[b"base64", b"quoted-printable", b"=?"];
    let (mut message, mut encoding) = (false, false);
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', raw).chain(std::iter::once(raw.len())) {
        let line = raw.get(start..end).unwrap_or_default();
        start = end + 1;
        let header_like =
            matches!(line.first(), Some(b' ' | b'\t')) || memchr::memchr(b':', line).is_some();
        if header_like {
            message = message || contains_any_ignore_case(line, MESSAGE);
            encoding = encoding || contains_any_ignore_case(line, ENCODING);
            if message && encoding {
                return true;
            }
        }
    }
    false
}

/// Case-insensitive search for any of `needles` (lowercase ASCII).
fn contains_any_ignore_case(haystack: &[u8], needles: &[&[u8]]) -> bool {
    haystack.iter().enumerate().any(|(i, &b)| {
        let b = b.to_ascii_lowercase();
        needles.iter().any(|n| {
            n.first() == Some(&b)
                && haystack
                    .get(i..i + n.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(n))
        })
    })
}

/// Parse only the header block and extract the facts: for metadata-only
/// captures (oversize messages, IMAP `BODY[HEADER]` fetches). Costs almost
/// nothing beyond the header block; `attachment_count` is 0.
///
/// `size` is `raw.len()`: a caller that passes only the head of a larger
/// message sets `size` to the real size itself. When the message has no
/// Message-ID the derived id hashes the body bytes present in `raw`, so it
/// matches the id of a full parse only when `raw` is the whole message.
///
/// # Errors
///
/// [`ParseError::NotAMessage`] or [`ParseError::ParserPanicked`] as for
/// [`parse`]; never [`ParseError::TooDeep`] (no body is parsed).
pub fn parse_headers(
    raw: &[u8],
    envelope_recipients: &[String],
) -> Result<MessageFacts, ParseError> {
    if raw.is_empty() {
        return Err(ParseError::NotAMessage);
    }
    guarded(|| {
        let copy;
        let input = if ends_inside_headers(raw) {
            copy = with_final_line_break(raw);
            &copy[..]
        } else {
            raw
        };
        let message = MessageParser::default()
            .parse_headers(input)
            .ok_or(ParseError::NotAMessage)?;
        let headers = root_headers(&message);
        if headers.is_empty() {
            return Err(ParseError::NotAMessage);
        }
        Ok(extract_facts(headers, raw, envelope_recipients, 0))
    })?
}

impl<'a> ParsedMail<'a> {
    /// The bytes this message was parsed from.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// What the engine decides on. `envelope_recipients` are the SMTP `RCPT TO`
    /// addresses (empty for IMAP); they are trimmed and lowercased.
    pub fn facts(&self, envelope_recipients: &[String]) -> MessageFacts {
        let attachments = u32::try_from(self.message.attachments.len()).unwrap_or(u32::MAX);
        extract_facts(
            root_headers(&self.message),
            self.raw,
            envelope_recipients,
            attachments,
        )
    }

    /// The bodies and attachments, borrowed from the parsed message.
    ///
    /// `text` is the first `text/plain` body part, `html` the first
    /// `text/html` body part (each as sent, never converted from the other);
    /// `attachments` are mail-parser's attachment parts in order (including
    /// inline images and attached messages), with decoded bytes.
    pub fn content(&self) -> Content<'_> {
        let m = &self.message;
        let text = m
            .text_body
            .iter()
            .filter_map(|&id| m.parts.get(id as usize))
            .find_map(|p| match &p.body {
                PartType::Text(t) => Some(t.as_ref()),
                _ => None,
            });
        let html = m
            .html_body
            .iter()
            .filter_map(|&id| m.parts.get(id as usize))
            .find_map(|p| match &p.body {
                PartType::Html(t) => Some(t.as_ref()),
                _ => None,
            });
        let attachments = m
            .attachments
            .iter()
            .filter_map(|&id| m.parts.get(id as usize))
            .map(|p| AttachmentContent {
                name: p.attachment_name(),
                content_type: content_type_of(p),
                bytes: p.contents(),
            })
            .collect();
        Content {
            text,
            html,
            attachments,
        }
    }
}

/// True when `raw` is all header block and its last line has no line break.
/// mail-parser drops the value of a header that runs into the end of the
/// input, so such input (a head cut mid-line, a header-only message without a
/// final CRLF) is parsed from a copy with CRLF appended. It has no body, so
/// the copy costs no more than the header block.
fn ends_inside_headers(raw: &[u8]) -> bool {
    !raw.ends_with(b"\n") && body_start(raw) == raw.len()
}

fn with_final_line_break(raw: &[u8]) -> Vec<u8> {
    let mut copy = Vec::with_capacity(raw.len() + 2);
    copy.extend_from_slice(raw);
    copy.extend_from_slice(b"\r\n");
    copy
}

/// Run `f`, turning a panic into [`ParseError::ParserPanicked`].
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, ParseError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| ParseError::ParserPanicked)
}

fn root_headers<'x, 'm>(message: &'m Message<'x>) -> &'m [Header<'x>] {
    message
        .parts
        .first()
        .map(|p| p.headers.as_slice())
        .unwrap_or(&[])
}

/// `type/subtype`, lowercase, both RFC 2045 tokens; a part without
/// Content-Type gets its RFC default (text/plain, or message/rfc822 for an
/// attached message), anything unusable `application/octet-stream`.
fn content_type_of(part: &MessagePart<'_>) -> String {
    const OCTET_STREAM: &str = "application/octet-stream";
    let Some(ct) = part.content_type() else {
        return match part.body {
            PartType::Text(_) => "text/plain".to_string(),
            PartType::Html(_) => "text/html".to_string(),
            PartType::Message(_) => "message/rfc822".to_string(),
            _ => OCTET_STREAM.to_string(),
        };
    };
    let (ty, sub) = (ct.ctype().trim(), ct.subtype().unwrap_or("").trim());
    if is_token(ty) && is_token(sub) {
        format!("{ty}/{sub}").to_ascii_lowercase()
    } else {
        OCTET_STREAM.to_string()
    }
}

/// An RFC 2045 token of sane length (it ends up in HTTP headers).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 127
        && s.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'(' | b')'
                        | b'<'
                        | b'>'
                        | b'@'
                        | b','
                        | b';'
                        | b':'
                        | b'\\'
                        | b'"'
                        | b'/'
                        | b'['
                        | b']'
                        | b'?'
                        | b'='
                )
        })
}

/// The first header called `name`.
fn first<'m, 'x>(headers: &'m [Header<'x>], name: &HeaderName<'_>) -> Option<&'m Header<'x>> {
    headers.iter().find(|h| &h.name == name)
}

/// Every header whose (non-standard) name equals `name`, case-insensitively.
fn named<'m, 'x>(
    headers: &'m [Header<'x>],
    name: &'static str,
) -> impl Iterator<Item = &'m Header<'x>> {
    headers
        .iter()
        .filter(move |h| h.name.as_str().eq_ignore_ascii_case(name))
}

fn text_of<'m>(header: &'m Header<'_>) -> Option<&'m str> {
    match &header.value {
        HeaderValue::Text(t) => Some(t.as_ref()),
        HeaderValue::TextList(l) => l.first().map(|t| t.as_ref()),
        _ => None,
    }
}

fn extract_facts(
    headers: &[Header<'_>],
    raw: &[u8],
    envelope_recipients: &[String],
    attachment_count: u32,
) -> MessageFacts {
    let explicit_id = first(headers, &HeaderName::MessageId)
        .and_then(text_of)
        .map(clean_id)
        .filter(|id| !id.is_empty());
    let (message_id, message_id_derived) = match explicit_id {
        Some(id) => (id, false),
        None => (derived_message_id(headers, raw), true),
    };

    MessageFacts {
        message_id,
        message_id_derived,
        date: first(headers, &HeaderName::Date).and_then(|h| match &h.value {
            HeaderValue::DateTime(d) => unix_seconds(d),
            _ => None,
        }),
        from: mailboxes(headers, &HeaderName::From),
        sender: first(headers, &HeaderName::Sender)
            .and_then(|h| h.value.as_address())
            .and_then(|a| a.iter().find_map(to_mailbox)),
        to: mailboxes(headers, &HeaderName::To),
        cc: mailboxes(headers, &HeaderName::Cc),
        bcc: mailboxes(headers, &HeaderName::Bcc),
        envelope_recipients: envelope_recipients
            .iter()
            .map(|r| r.trim().to_ascii_lowercase())
            .filter(|r| !r.is_empty())
            .collect(),
        subject: first(headers, &HeaderName::Subject)
            .and_then(text_of)
            .map(str::to_string),
        in_reply_to: ids(headers, &HeaderName::InReplyTo),
        references: ids(headers, &HeaderName::References),
        size: raw.len() as u64,
        attachment_count,
        automated: is_automated(headers),
        share_header: named(headers, "X-Mailshare-Share")
            .filter_map(|h| text_of(h)?.parse::<Level>().ok())
            .min(),
    }
}

/// Unix seconds, or None for an invalid date or a year outside 1970..=9999
/// (mail-parser's own validity check already caps the year at 3000).
fn unix_seconds(d: &DateTime) -> Option<i64> {
    (d.is_valid() && (1970..=9999).contains(&d.year)).then(|| d.to_timestamp())
}

fn to_mailbox(a: &mail_parser::Addr<'_>) -> Option<Mailbox> {
    let address = a.address.as_deref()?.trim();
    if address.is_empty() {
        return None;
    }
    Some(Mailbox::new(address, a.name.as_deref()))
}

/// Every address of every `name` header, groups flattened, first occurrence
/// of each address kept.
fn mailboxes(headers: &[Header<'_>], name: &HeaderName<'_>) -> Vec<Mailbox> {
    let mut seen = HashSet::new();
    headers
        .iter()
        .filter(|h| &h.name == name)
        .filter_map(|h| h.value.as_address())
        .flat_map(Address::iter)
        .filter_map(to_mailbox)
        .filter(|m| seen.insert(m.address.clone()))
        .collect()
}

/// The ids of the first `name` header (In-Reply-To, References), cleaned.
fn ids(headers: &[Header<'_>], name: &HeaderName<'_>) -> Vec<String> {
    let Some(h) = first(headers, name) else {
        return Vec::new();
    };
    let list: Vec<&str> = match &h.value {
        HeaderValue::Text(t) => vec![t.as_ref()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.as_ref()).collect(),
        _ => Vec::new(),
    };
    list.into_iter()
        .map(clean_id)
        .filter(|id| !id.is_empty())
        .collect()
}

/// A message id without angle brackets, whitespace or control characters.
fn clean_id(id: &str) -> String {
    id.chars()
        .filter(|c| !c.is_whitespace() && !c.is_control() && *c != '<' && *c != '>')
        .collect()
}

/// DESIGN §3: `Auto-Submitted` other than `no`, `Precedence: bulk|list|junk`,
/// `List-Id` or `List-Unsubscribe`.
fn is_automated(headers: &[Header<'_>]) -> bool {
    let auto_submitted = named(headers, "Auto-Submitted").next().is_some_and(|h| {
        let v = text_of(h).unwrap_or("");
        let keyword = v.split(';').next().unwrap_or("").trim();
        !keyword.eq_ignore_ascii_case("no")
    });
    let precedence = named(headers, "Precedence").next().is_some_and(|h| {
        let v = text_of(h).unwrap_or("");
        let keyword = v
            .split(|c: char| c == ';' || c == '(' || c.is_whitespace())
            .find(|s| !s.is_empty())
            .unwrap_or("");
        ["bulk", "list", "junk"]
            .iter()
            .any(|k| keyword.eq_ignore_ascii_case(k))
    });
    let list = headers
        .iter()
        .any(|h| matches!(h.name, HeaderName::ListId | HeaderName::ListUnsubscribe));
    auto_submitted || precedence || list
}

/// See "Derived Message-IDs" in the module docs.
fn derived_message_id(headers: &[Header<'_>], raw: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"mailshare-derived-message-id-v1\0");
    for name in [
        HeaderName::From,
        HeaderName::To,
        HeaderName::Cc,
        HeaderName::Date,
        HeaderName::Subject,
    ] {
        h.update(name.as_str().as_bytes());
        match first(headers, &name) {
            Some(hdr) => {
                // Clamped: offsets may count a line break appended by
                // `with_final_line_break`.
                let end = (hdr.offset_end as usize).min(raw.len());
                let value = raw.get(hdr.offset_start as usize..end).unwrap_or_default();
                let value = normalize_header_value(value);
                h.update([1u8]);
                h.update((value.len() as u64).to_le_bytes());
                h.update(&value);
            }
            None => h.update([0u8]),
        }
    }
    let mut body = raw.get(body_start(raw)..).unwrap_or_default();
    while let [rest @ .., b'\r' | b'\n'] = body {
        body = rest;
    }
    h.update(b"body\0");
    for chunk in body.split(|&b| b == b'\r') {
        h.update(chunk);
    }
    format!("{}@{DERIVED_ID_DOMAIN}", hex::encode(h.finalize()))
}

/// Unfold and collapse every run of SP/HT/CR/LF to one space; trim.
fn normalize_header_value(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut pending_space = false;
    for &b in value {
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(b);
        }
    }
    out
}

/// Offset of the first byte after the header block's empty line (CRLF or LF),
/// or `raw.len()` when there is none.
fn body_start(raw: &[u8]) -> usize {
    let mut line = 0;
    while line < raw.len() {
        match raw.get(line..) {
            Some([b'\n', ..]) => return line + 1,
            Some([b'\r', b'\n', ..]) => return line + 2,
            _ => {}
        }
        match raw[line..].iter().position(|&b| b == b'\n') {
            Some(nl) => line += nl + 1,
            None => return raw.len(),
        }
    }
    raw.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_body_is_borrowed_from_the_input() {
        let raw = b"From: a@b.example\r\nTo: c@d.example\r\nSubject: hi\r\n\r\nHello there,\r\nplain body.\r\n";
        let mail = parse(raw).unwrap();
        let text = mail.content().text.unwrap();
        assert!(text.starts_with("Hello there"));
        assert!(raw.as_ptr_range().contains(&text.as_ptr()));
    }

    #[test]
    fn multipart_text_part_is_borrowed_too() {
        let raw = b"From: a@b.example\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain \xc3\xa9\r\n--b1\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--b1--\r\n";
        let mail = parse(raw).unwrap();
        let content = mail.content();
        let (text, html) = (content.text.unwrap(), content.html.unwrap());
        assert_eq!(text, "plain \u{e9}");
        assert_eq!(html, "<p>html</p>");
        assert!(raw.as_ptr_range().contains(&text.as_ptr()));
        assert!(raw.as_ptr_range().contains(&html.as_ptr()));
    }

    #[test]
    fn parsed_mail_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<ParsedMail<'static>>();
        send_sync::<Content<'static>>();
    }

    #[test]
    fn encoded_message_risk_is_seen_only_in_header_lines() {
        let risky = |raw: &[u8]| may_hold_encoded_message(raw);
        assert!(risky(
            b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: BASE64\r\n"
        ));
        assert!(risky(
            b"Content-Type: message/\r\n\tRFC822\r\nX: =?utf-8?q?x?=\r\n"
        ));
        assert!(risky(b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\nContent-Transfer-Encoding: quoted-printable\r\n"));
        assert!(risky(b"A: global\nB: =?"));
        // Body lines without a colon or leading whitespace are not headers.
        assert!(!risky(
            b"Content-Type: text/plain\r\n\r\nrfc822 base64\r\nglobal=?\r\n"
        ));
        assert!(!risky(
            b"Content-Type: message/rfc822\r\n\r\nFrom: a@b\r\n\r\n"
        ));
        assert!(!risky(
            b"Content-Transfer-Encoding: base64\r\n\r\ncmZjODIy\r\n"
        ));
        assert!(!risky(b""));
    }

    #[test]
    fn a_panic_is_contained() {
        let r: Result<(), _> = guarded(|| panic!("boom"));
        assert_eq!(r, Err(ParseError::ParserPanicked));
    }

    #[test]
    fn body_start_finds_the_empty_line() {
        assert_eq!(body_start(b"A: b\r\n\r\nbody"), 8);
        assert_eq!(body_start(b"A: b\n\nbody"), 6);
        assert_eq!(body_start(b"A: b\r\nC: d"), 10);
        assert_eq!(body_start(b"\r\nbody"), 2);
        assert_eq!(body_start(b""), 0);
    }

    #[test]
    fn header_values_are_unfolded_for_hashing() {
        assert_eq!(normalize_header_value(b" a\r\n\t b  c \r\n"), b"a b c");
        assert_eq!(normalize_header_value(b"\r\n"), b"");
    }

    #[test]
    fn content_types_are_tokens() {
        assert!(is_token(
            "vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        ));
        assert!(!is_token("x\r\nSet-Cookie"));
        assert!(!is_token(""));
        assert!(!is_token("a b"));
    }
}
