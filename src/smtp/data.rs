//! The message stage, sans-IO: the strict DATA framer, the `X-Mailshare-Share`
//! header filter, the dot-stuffer that re-encodes what upstream receives, and
//! the capture collector.
//!
//! Why our own framer (NOTES.md, "SMTP"): smtp-proto's `DataReceiver` misses
//! an empty message, does not unstuff a dot-stuffed first line and ends a
//! message on `\r\n.\r\r\n`. A proxy and its upstream must never disagree on
//! where a message ends (SMTP smuggling, CVE-2023-51764/5/6), so:
//!
//! - only `<CRLF>.<CRLF>` ends DATA (the start of DATA counts as after a CRLF,
//!   so `.<CRLF>` right after the 354 is the empty message);
//! - a bare LF or bare CR in the content is rejected by default
//!   ([`BareLineEndings::Reject`]); configured to
//!   [`BareLineEndings::Normalize`] it becomes CRLF, yet a lone `.` line next
//!   to a bare line ending never ends the message (it stays a `.` line);
//! - a NUL byte is rejected (`<CRLF>NUL.<CRLF>` smuggles through servers that
//!   drop NULs);
//! - nothing is forwarded raw: content is unstuffed here, filtered, and
//!   re-stuffed by [`DotStuffer`], which writes the one canonical terminator.
//!
//! Every stage is incremental (input split anywhere gives the same output)
//! and holds at most a few bytes of state, so memory does not grow with the
//! message; only the [`Collector`] keeps bytes, up to its limit.

use memchr::{memchr, memchr3};

pub use crate::config::BareLineEndings;

/// Why DATA content was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("bare LF in message content")]
    BareLf,
    #[error("bare CR in message content")]
    BareCr,
    #[error("NUL byte in message content")]
    Nul,
}

impl DataError {
    /// Bounded metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DataError::BareLf => "bare_lf",
            DataError::BareCr => "bare_cr",
            DataError::Nul => "nul",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line; `crlf`: the previous line ended in a real CRLF
    /// (or DATA just began).
    LineStart { crlf: bool },
    /// A `.` at the start of a line.
    Dot { crlf: bool },
    /// `.` then CR at the start of a line.
    DotCr { crlf: bool },
    /// Inside a line.
    InLine,
    /// A CR inside or at the end of a line, LF not seen yet.
    Cr,
    /// `<CRLF>.<CRLF>` seen.
    Done,
}

/// How far one [`DataFramer::feed`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes consumed; the rest (after the end of DATA) are commands.
    pub consumed: usize,
    /// The terminating `<CRLF>.<CRLF>` was consumed.
    pub done: bool,
}

/// Strict DATA framer: client bytes after a 354 in, unstuffed content with
/// CRLF line endings out.
#[derive(Clone, Debug)]
pub struct DataFramer {
    mode: BareLineEndings,
    state: State,
    error: Option<DataError>,
}

impl DataFramer {
    pub fn new(mode: BareLineEndings) -> DataFramer {
        DataFramer {
            mode,
            state: State::LineStart { crlf: true },
            error: None,
        }
    }

    /// The first violation seen, if any. After one, output stops but the
    /// framer keeps looking for the end, so the client can be answered.
    pub fn error(&self) -> Option<DataError> {
        self.error
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn fail(&mut self, e: DataError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// Emit into `out` unless an error has stopped the output.
    fn emit(&self, out: &mut Vec<u8>, bytes: &[u8]) {
        if self.error.is_none() {
            out.extend_from_slice(bytes);
        }
    }

    /// A bare CR or LF that ends a line: rejected, or normalised to CRLF.
    fn bare_line_end(&mut self, out: &mut Vec<u8>, e: DataError) {
        match self.mode {
            BareLineEndings::Reject => self.fail(e),
            BareLineEndings::Normalize => self.emit(out, b"\r\n"),
        }
        self.state = State::LineStart { crlf: false };
    }

    /// Consume `input`, appending unstuffed content to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Progress {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => break,
                State::InLine => {
                    // The fast path: copy up to the next CR, LF or NUL.
                    let rest = &input[i..];
                    match memchr3(b'\r', b'\n', 0, rest) {
                        None => {
                            self.emit(out, rest);
                            i = input.len();
                        }
                        Some(p) => {
                            self.emit(out, &rest[..p]);
                            i += p;
                            match rest[p] {
                                b'\r' => self.state = State::Cr,
                                b'\n' => self.bare_line_end(out, DataError::BareLf),
                                _ => self.fail(DataError::Nul),
                            }
                            i += 1;
                        }
                    }
                }
                State::LineStart { crlf } => {
                    match b {
                        b'.' => self.state = State::Dot { crlf },
                        b'\r' => self.state = State::Cr,
                        b'\n' => self.bare_line_end(out, DataError::BareLf),
                        0 => {
                            self.fail(DataError::Nul);
                            self.state = State::InLine;
                        }
                        _ => {
                            self.emit(out, &[b]);
                            self.state = State::InLine;
                        }
                    }
                    i += 1;
                }
                State::Dot { crlf } => match b {
                    b'\r' => {
                        self.state = State::DotCr { crlf };
                        i += 1;
                    }
                    b'\n' => {
                        // A lone "." ended by a bare LF: content, never the end.
                        self.emit(out, b".");
                        self.bare_line_end(out, DataError::BareLf);
                        i += 1;
                    }
                    _ => {
                        // Unstuff: drop the leading dot, the line goes on.
                        self.state = State::InLine;
                        if b == 0 {
                            self.fail(DataError::Nul);
                            i += 1;
                        } else if b != b'.' {
                            // Reprocess b inside the line (InLine copies it).
                        } else {
                            self.emit(out, b".");
                            i += 1;
                        }
                    }
                },
                State::DotCr { crlf } => {
                    if b == b'\n' {
                        i += 1;
                        if crlf {
                            self.state = State::Done;
                            return Progress {
                                consumed: i,
                                done: true,
                            };
                        }
                        // "." after a bare line end: content, kept as a "." line.
                        self.emit(out, b".\r\n");
                        self.state = State::LineStart { crlf: true };
                    } else {
                        // ".\r" then something else: the CR is bare.
                        self.emit(out, b".");
                        self.bare_line_end(out, DataError::BareCr);
                        // Reprocess b at the start of the next line.
                    }
                }
                State::Cr => {
                    if b == b'\n' {
                        self.emit(out, b"\r\n");
                        self.state = State::LineStart { crlf: true };
                        i += 1;
                    } else {
                        self.bare_line_end(out, DataError::BareCr);
                        // Reprocess b at the start of the next line.
                    }
                }
            }
        }
        Progress {
            consumed: i,
            done: self.state == State::Done,
        }
    }
}

/// The per-message override header, removed before upstream sees the message.
pub const SHARE_HEADER: &[u8] = b"x-mailshare-share";

/// Bytes of a header line looked at to decide whether it is the share header.
const NAME_PREFIX_MAX: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeaderState {
    LineStart,
    /// Collecting the start of a header line into `prefix`.
    Name,
    Pass,
    Drop,
    Body,
}

/// Removes every `X-Mailshare-Share` field (any case, folded continuation
/// lines included) from the top-level header block; the body passes as is.
/// Works on CRLF content from [`DataFramer`] and on raw BDAT bytes (a line
/// ends at LF either way).
#[derive(Clone, Debug)]
pub struct HeaderFilter {
    state: HeaderState,
    prefix: Vec<u8>,
    /// The current field is being dropped (so are its continuation lines).
    dropping: bool,
    /// Input bytes seen so far.
    offset: u64,
    /// Input offset where the body begins (after the blank line), once seen.
    body_start: Option<u64>,
    removed: u32,
}

impl Default for HeaderFilter {
    fn default() -> Self {
        HeaderFilter::new()
    }
}

impl HeaderFilter {
    pub fn new() -> HeaderFilter {
        HeaderFilter {
            state: HeaderState::LineStart,
            prefix: Vec::with_capacity(NAME_PREFIX_MAX),
            dropping: false,
            offset: 0,
            body_start: None,
            removed: 0,
        }
    }

    /// Offset (in the input) of the first body byte, once the blank line
    /// ending the header block has been seen.
    pub fn body_start(&self) -> Option<u64> {
        self.body_start
    }

    /// The header block has ended: the rest passes unchanged.
    pub fn in_body(&self) -> bool {
        self.state == HeaderState::Body
    }

    /// Account for `n` body bytes passed on without [`feed`](Self::feed).
    pub fn feed_body(&mut self, n: usize) {
        debug_assert!(self.in_body());
        self.offset += n as u64;
    }

    /// How many share header fields were removed.
    pub fn removed(&self) -> u32 {
        self.removed
    }

    fn decide(&mut self, out: &mut Vec<u8>) {
        let colon = memchr(b':', &self.prefix);
        let is_share = colon.is_some_and(|c| {
            let name = self.prefix[..c].trim_ascii_end();
            name.eq_ignore_ascii_case(SHARE_HEADER)
        });
        if is_share {
            self.dropping = true;
            self.removed += 1;
            self.state = HeaderState::Drop;
        } else {
            out.extend_from_slice(&self.prefix);
            self.state = HeaderState::Pass;
        }
        self.prefix.clear();
    }

    /// The end of the message: a header line still being looked at (no
    /// line ending came) is passed on, unless it is the share header.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.state == HeaderState::Name {
            self.decide(out);
        }
    }

    /// Filter `input`, appending what upstream should see to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                HeaderState::Body => {
                    out.extend_from_slice(&input[i..]);
                    i = input.len();
                }
                HeaderState::Pass | HeaderState::Drop => {
                    let rest = &input[i..];
                    let (take, eol) = match memchr(b'\n', rest) {
                        Some(p) => (p + 1, true),
                        None => (rest.len(), false),
                    };
                    if self.state == HeaderState::Pass {
                        out.extend_from_slice(&rest[..take]);
                    }
                    i += take;
                    if eol {
                        self.state = HeaderState::LineStart;
                    }
                }
                HeaderState::LineStart => {
                    let b = input[i];
                    match b {
                        b' ' | b'\t' => {
                            self.state = if self.dropping {
                                HeaderState::Drop
                            } else {
                                HeaderState::Pass
                            };
                        }
                        b'\r' | b'\n' => {
                            // The blank line: the header block ends here.
                            let blank = if b == b'\n' {
                                1
                            } else if input.get(i + 1) == Some(&b'\n') {
                                2
                            } else {
                                1
                            };
                            self.dropping = false;
                            self.state = HeaderState::Body;
                            if b == b'\r' && blank == 1 && i + 1 == input.len() {
                                // CR at the end of this input: the LF comes next.
                                self.body_start = Some(self.offset + i as u64 + 2);
                            } else {
                                self.body_start = Some(self.offset + (i + blank) as u64);
                            }
                        }
                        _ => {
                            self.dropping = false;
                            self.state = HeaderState::Name;
                        }
                    }
                }
                HeaderState::Name => {
                    let rest = &input[i..];
                    let room = NAME_PREFIX_MAX - self.prefix.len();
                    let window = &rest[..rest.len().min(room)];
                    let stop = window.iter().position(|&c| c == b':' || c == b'\n');
                    match stop {
                        Some(p) => {
                            self.prefix.extend_from_slice(&window[..=p]);
                            i += p + 1;
                            let newline = window[p] == b'\n';
                            self.decide(out);
                            if newline {
                                self.state = HeaderState::LineStart;
                            }
                        }
                        None => {
                            self.prefix.extend_from_slice(window);
                            i += window.len();
                            if self.prefix.len() >= NAME_PREFIX_MAX {
                                self.decide(out);
                            }
                        }
                    }
                }
            }
        }
        self.offset += input.len() as u64;
    }
}

/// Dot-stuffs content for DATA to upstream and writes the one terminator.
#[derive(Clone, Debug)]
pub struct DotStuffer {
    at_line_start: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    pub fn new() -> DotStuffer {
        DotStuffer {
            at_line_start: true,
        }
    }

    /// Append `input` to `out`, doubling a `.` that starts a line.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if input.is_empty() {
            return;
        }
        out.reserve(input.len() + 8);
        let mut start = 0;
        if self.at_line_start && input[0] == b'.' {
            out.push(b'.');
        }
        for nl in memchr::memchr_iter(b'\n', input) {
            if input.get(nl + 1) == Some(&b'.') {
                out.extend_from_slice(&input[start..=nl]);
                out.push(b'.');
                start = nl + 1;
            }
        }
        out.extend_from_slice(&input[start..]);
        self.at_line_start = input.last() == Some(&b'\n');
    }

    /// The end of DATA: CRLF if the content did not end with one, then `.` CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.at_line_start = true;
    }
}

/// A reservation of the gateway's capture memory budget, released on drop.
pub type Reservation = Box<dyn Send + Sync>;

/// Reserves capture memory; `None` when the budget is exhausted.
pub trait Budget: Send + Sync {
    fn try_reserve(&self, bytes: usize) -> Option<Reservation>;
}

/// Budget granted in steps of this many bytes.
const RESERVE_STEP: usize = 1 << 20;

/// What the collector ended up with.
#[derive(Debug)]
pub enum Collected {
    /// The whole message.
    Full(Vec<u8>),
    /// Only its header block; the message had `size` bytes.
    HeadersOnly { head: Vec<u8>, size: u64 },
}

/// Keeps the original bytes of a message for capture: whole up to
/// `max_bytes` while the gateway budget allows, otherwise the header block
/// only (up to `max_header_bytes`).
pub struct Collector {
    buf: Vec<u8>,
    max_bytes: usize,
    max_header_bytes: usize,
    size: u64,
    headers_only: bool,
    reserved: usize,
    reservations: Vec<Reservation>,
    /// Why the body was dropped: `over_limit` or `budget`.
    pub dropped_reason: Option<&'static str>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("buffered", &self.buf.len())
            .field("size", &self.size)
            .field("headers_only", &self.headers_only)
            .finish_non_exhaustive()
    }
}

impl Collector {
    pub fn new(max_bytes: usize, max_header_bytes: usize) -> Collector {
        Collector {
            buf: Vec::new(),
            max_bytes,
            max_header_bytes: max_header_bytes.min(max_bytes).max(1),
            size: 0,
            headers_only: false,
            reserved: 0,
            reservations: Vec::new(),
            dropped_reason: None,
        }
    }

    /// Append content bytes; `body_start` is where the header block ended
    /// (from the [`HeaderFilter`] that saw the same bytes), if known yet.
    pub fn push(&mut self, bytes: &[u8], body_start: Option<u64>, budget: &dyn Budget) {
        self.size += bytes.len() as u64;
        if !self.headers_only {
            let want = self.buf.len() + bytes.len();
            if want > self.max_bytes {
                self.drop_body("over_limit", body_start);
            } else {
                while self.reserved < want {
                    let step = RESERVE_STEP.min(self.max_bytes - self.reserved).max(1);
                    match budget.try_reserve(step) {
                        Some(r) => {
                            self.reservations.push(r);
                            self.reserved += step;
                        }
                        None => break,
                    }
                }
                if self.reserved < want {
                    self.drop_body("budget", body_start);
                } else {
                    self.buf.extend_from_slice(bytes);
                    return;
                }
            }
        }
        // Headers only: keep bytes until the header block ends (bounded).
        let head_end = body_start
            .map(|b| usize::try_from(b).unwrap_or(usize::MAX))
            .unwrap_or(usize::MAX)
            .min(self.max_header_bytes);
        let before = (self.size - bytes.len() as u64) as usize;
        if before < head_end {
            let take = (head_end - before).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
        }
    }

    fn drop_body(&mut self, why: &'static str, body_start: Option<u64>) {
        self.headers_only = true;
        self.dropped_reason = Some(why);
        let head_end = body_start
            .map(|b| usize::try_from(b).unwrap_or(usize::MAX))
            .unwrap_or(usize::MAX)
            .min(self.max_header_bytes);
        self.buf.truncate(head_end);
        self.buf.shrink_to_fit();
        // Keep no more budget than the header block needs.
        self.reservations.clear();
        self.reserved = 0;
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Hand the bytes over (the budget reservation is released with `self`).
    pub fn finish(mut self) -> Collected {
        let buf = std::mem::take(&mut self.buf);
        if self.headers_only {
            Collected::HeadersOnly {
                head: buf,
                size: self.size,
            }
        } else {
            Collected::Full(buf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the framer over `input` split at `cut`; content, consumed, done, error.
    fn frame_split(
        mode: BareLineEndings,
        input: &[u8],
        cuts: &[usize],
    ) -> (Vec<u8>, usize, bool, Option<DataError>) {
        let mut f = DataFramer::new(mode);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut last = 0;
        for &c in cuts.iter().chain(std::iter::once(&input.len())) {
            if c < last {
                continue;
            }
            let p = f.feed(&input[last..c], &mut out);
            consumed += p.consumed;
            if p.done {
                return (out, consumed, true, f.error());
            }
            last = c;
        }
        (out, consumed, false, f.error())
    }

    fn frame(mode: BareLineEndings, input: &[u8]) -> (Vec<u8>, usize, bool, Option<DataError>) {
        frame_split(mode, input, &[])
    }

    #[test]
    fn ends_only_on_crlf_dot_crlf_and_unstuffs() {
        let (out, n, done, err) = frame(
            BareLineEndings::Reject,
            b"Subject: x\r\n\r\n..dot\r\n.a\r\n\r\n.\r\nQUIT\r\n",
        );
        assert!(done);
        assert_eq!(err, None);
        assert_eq!(out, b"Subject: x\r\n\r\n.dot\r\na\r\n\r\n");
        assert_eq!(n, b"Subject: x\r\n\r\n..dot\r\n.a\r\n\r\n.\r\n".len());
    }

    #[test]
    fn the_empty_message_and_a_stuffed_first_line() {
        // smtp-proto's receiver misses both (NOTES.md).
        assert_eq!(
            frame(BareLineEndings::Reject, b".\r\n"),
            (vec![], 3, true, None)
        );
        let (out, _, done, _) = frame(BareLineEndings::Reject, b"..x\r\n.\r\n");
        assert!(done);
        assert_eq!(out, b".x\r\n");
    }

    /// Every smuggling sequence from NOTES.md: none ends the message early
    /// in either mode; reject mode refuses the message.
    #[test]
    fn smuggling_sequences_never_end_the_message() {
        let vectors: &[&[u8]] = &[
            b"\n.\n",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r\n",
            b"\r\n.\r\r\n",
            b"\r\n\x00.\r\n",
            b"\r.\r",
            b"\n..\n",
        ];
        for v in vectors {
            let mut input = b"Subject: s\r\n\r\nhello".to_vec();
            input.extend_from_slice(v);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n");
            let end = input.len();
            input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
            for mode in [BareLineEndings::Reject, BareLineEndings::Normalize] {
                let (out, n, done, err) = frame(mode, &input);
                assert!(done, "{v:?} {mode:?}");
                assert_eq!(
                    n,
                    end + 5,
                    "{v:?} {mode:?}: ends only at the real terminator"
                );
                if mode == BareLineEndings::Reject || v.contains(&0) {
                    assert!(err.is_some(), "{v:?} {mode:?} must be refused");
                } else {
                    assert_eq!(err, None);
                    // Normalised output has CRLF only, and no "CRLF . CRLF".
                    assert!(crlf_only(&out), "{v:?}: {out:?}");
                    let mut stuffed = Vec::new();
                    let mut s = DotStuffer::new();
                    s.feed(&out, &mut stuffed);
                    s.finish(&mut stuffed);
                    assert_eq!(count_terminators(&stuffed), 1, "{v:?}");
                }
            }
        }
    }

    fn crlf_only(b: &[u8]) -> bool {
        b.iter().enumerate().all(|(i, &c)| match c {
            b'\r' => b.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && b[i - 1] == b'\r',
            _ => true,
        })
    }

    /// How many places a strict receiver would see the end of DATA.
    fn count_terminators(stuffed: &[u8]) -> usize {
        let mut n = usize::from(stuffed.starts_with(b".\r\n"));
        n += stuffed.windows(5).filter(|w| w == b"\r\n.\r\n").count();
        n
    }

    #[test]
    fn normalize_turns_bare_endings_into_crlf() {
        let (out, _, done, err) = frame(BareLineEndings::Normalize, b"a\nb\rc\r\n..d\n.\r\n.\r\n");
        assert!(done);
        assert_eq!(err, None);
        // "." after a bare LF is content, kept as a "." line.
        assert_eq!(out, b"a\r\nb\r\nc\r\n.d\r\n.\r\n");
    }

    #[test]
    fn reject_reports_the_first_violation_and_still_finds_the_end() {
        let (out, _, done, err) = frame(BareLineEndings::Reject, b"ok\r\nbad\nx\r\r\n.\r\n");
        assert!(done);
        assert_eq!(err, Some(DataError::BareLf));
        assert_eq!(out, b"ok\r\nbad", "output stops at the violation");
        let (_, _, _, err) = frame(BareLineEndings::Reject, b"a\rb\r\n.\r\n");
        assert_eq!(err, Some(DataError::BareCr));
        let (_, _, _, err) = frame(BareLineEndings::Normalize, b"a\x00b\r\n.\r\n");
        assert_eq!(err, Some(DataError::Nul));
    }

    #[test]
    fn split_at_every_byte_gives_the_same_result() {
        let inputs: &[&[u8]] = &[
            b"Subject: x\r\n\r\n..dot\r\n.a\r\nline\r\n\r\n.\r\nNEXT",
            b".\r\nNEXT",
            b"a\nb\rc\r\n..d\n.\r\n.\n\r.\r\r\n.\r\nNEXT",
            b"x\r\n.\r\r\n\r\n\x00.\r\n.\r\nNEXT",
        ];
        for input in inputs {
            for mode in [BareLineEndings::Reject, BareLineEndings::Normalize] {
                let whole = frame(mode, input);
                for cut in 0..=input.len() {
                    assert_eq!(frame_split(mode, input, &[cut]), whole, "cut {cut}");
                }
                for a in 0..input.len() {
                    for b in a..input.len() {
                        assert_eq!(frame_split(mode, input, &[a, b]), whole, "{a},{b}");
                    }
                }
                let bytewise: Vec<usize> = (0..input.len()).collect();
                assert_eq!(frame_split(mode, input, &bytewise), whole);
            }
        }
    }

    /// Where smtp-proto's receiver is right (CRLF-only lines, not empty, no
    /// stuffed first line), both produce the same message.
    #[test]
    fn agrees_with_smtp_proto_where_it_is_right() {
        let messages: &[&[u8]] = &[
            b"Subject: a\r\n\r\nbody\r\n..stuffed\r\n.\r\n",
            b"A: b\r\n\r\n\r\n\r\nx\r\n.\r\n",
            b"x\r\n..\r\n...\r\n.y.\r\n.\r\n",
        ];
        for m in messages {
            let mut theirs = Vec::new();
            let mut r = smtp_proto::request::receiver::DataReceiver::new();
            assert!(r.ingest(&mut m.iter(), &mut theirs));
            let (ours, n, done, err) = frame(BareLineEndings::Reject, m);
            assert!(done && err.is_none() && n == m.len());
            assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(m));
        }
    }

    fn filter_split(input: &[u8], cut: usize) -> (Vec<u8>, Option<u64>, u32) {
        let mut f = HeaderFilter::new();
        let mut out = Vec::new();
        f.feed(&input[..cut], &mut out);
        f.feed(&input[cut..], &mut out);
        (out, f.body_start(), f.removed())
    }

    #[test]
    fn the_share_header_is_removed_with_its_folded_lines_in_any_case() {
        let input = b"From: a@b\r\nX-Mailshare-Share: full\r\nSubject: s\r\nx-mailshare-share\t: hidden\r\n  folded\r\n\tmore\r\nTo: c@d\r\n  folded-to\r\nX-MAILSHARE-SHARE:metadata\r\n\r\nX-Mailshare-Share: body stays\r\n";
        let want = b"From: a@b\r\nSubject: s\r\nTo: c@d\r\n  folded-to\r\n\r\nX-Mailshare-Share: body stays\r\n";
        for cut in 0..=input.len() {
            let (out, body, removed) = filter_split(input, cut);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(want),
                "cut {cut}"
            );
            assert_eq!(removed, 3);
            let blank = input.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert_eq!(body, Some(blank as u64), "cut {cut}");
        }
    }

    #[test]
    fn similar_names_and_bodies_are_left_alone() {
        let input = b"X-Mailshare-Shared: 1\r\nX-Mailshare-Share-Not: 2\r\nXX-Mailshare-Share: 3\r\n\r\nbody\n";
        let (out, _, removed) = filter_split(input, 7);
        assert_eq!(out, input);
        assert_eq!(removed, 0);
        // A very long header name passes untouched.
        let mut long = vec![b'A'; 200];
        long.extend_from_slice(b": v\r\n\r\nb");
        assert_eq!(filter_split(&long, 70).0, long);
        // Bare-LF headers (raw BDAT) work too.
        let lf = b"a: 1\nX-Mailshare-Share: full\n folded\nb: 2\n\nbody";
        assert_eq!(filter_split(lf, 13).0, b"a: 1\nb: 2\n\nbody");
    }

    #[test]
    fn stuffing_round_trips_through_the_framer() {
        let content = b".a\r\n..b\r\nc.\r\n.\r\n\r\n.";
        for cut in 0..=content.len() {
            let mut s = DotStuffer::new();
            let mut wire = Vec::new();
            s.feed(&content[..cut], &mut wire);
            s.feed(&content[cut..], &mut wire);
            s.finish(&mut wire);
            assert_eq!(count_terminators(&wire), 1);
            let (back, n, done, err) = frame(BareLineEndings::Reject, &wire);
            assert!(done && err.is_none() && n == wire.len());
            // The framer always yields whole lines: the unterminated "." got a CRLF.
            assert_eq!(back, b".a\r\n..b\r\nc.\r\n.\r\n\r\n.\r\n");
        }
        let mut s = DotStuffer::new();
        let mut wire = Vec::new();
        s.finish(&mut wire);
        assert_eq!(wire, b".\r\n", "the empty message");
    }

    struct Unlimited;
    impl Budget for Unlimited {
        fn try_reserve(&self, _: usize) -> Option<Reservation> {
            Some(Box::new(()))
        }
    }
    struct Exhausted;
    impl Budget for Exhausted {
        fn try_reserve(&self, _: usize) -> Option<Reservation> {
            None
        }
    }

    #[test]
    fn the_collector_keeps_whole_messages_up_to_the_limit_then_headers() {
        let msg = b"Subject: s\r\n\r\n0123456789";
        let mut c = Collector::new(100, 50);
        c.push(msg, Some(14), &Unlimited);
        assert!(matches!(c.finish(), Collected::Full(b) if b == msg));

        let mut c = Collector::new(16, 50);
        c.push(&msg[..10], None, &Unlimited);
        c.push(&msg[10..], Some(14), &Unlimited);
        match c.finish() {
            Collected::HeadersOnly { head, size } => {
                assert_eq!(head, b"Subject: s\r\n\r\n");
                assert_eq!(size, msg.len() as u64);
            }
            other => panic!("{other:?}"),
        }

        let mut c = Collector::new(100, 50);
        c.push(msg, Some(14), &Exhausted);
        assert_eq!(c.dropped_reason, Some("budget"));
        assert!(
            matches!(c.finish(), Collected::HeadersOnly { head, .. } if head == b"Subject: s\r\n\r\n")
        );

        // Headers longer than max_header_bytes are cut there.
        let mut c = Collector::new(4, 8);
        c.push(b"Subject: long header\r\n\r\n", None, &Unlimited);
        assert!(matches!(c.finish(), Collected::HeadersOnly { head, .. } if head.len() == 4));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// CRLF-only messages whose first line does not start with a dot
        /// and that are not empty: where smtp-proto's receiver is right.
        fn crlf_message() -> impl Strategy<Value = Vec<u8>> {
            let line =
                proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'.'), Just(b' ')], 0..6);
            (proptest::collection::vec(line, 1..8), "[a-z]{1,3}").prop_map(|(lines, first)| {
                let mut m = first.into_bytes();
                m.extend_from_slice(b"\r\n");
                for l in lines {
                    m.extend_from_slice(&l);
                    m.extend_from_slice(b"\r\n");
                }
                m
            })
        }

        proptest! {
            #[test]
            fn same_message_as_smtp_proto_on_crlf_input(m in crlf_message()) {
                let mut wire = Vec::new();
                let mut st = DotStuffer::new();
                st.feed(&m, &mut wire);
                st.finish(&mut wire);
                let mut theirs = Vec::new();
                let mut r = smtp_proto::request::receiver::DataReceiver::new();
                prop_assert!(r.ingest(&mut wire.iter(), &mut theirs));
                let (ours, n, done, err) = frame(BareLineEndings::Reject, &wire);
                prop_assert!(done && err.is_none() && n == wire.len());
                prop_assert_eq!(&ours, &theirs);
                prop_assert_eq!(&ours, &m);
            }

            /// Any bytes: the framer ends only at the first real CRLF.CRLF
            /// (or a leading .CRLF), and in normalize mode what it yields,
            /// re-stuffed, holds exactly one terminator.
            #[test]
            fn arbitrary_bytes_never_end_early(
                input in proptest::collection::vec(prop_oneof![
                    Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a'), Just(0u8)
                ], 0..40),
                cut in 0usize..40,
            ) {
                let mut strict_end = None;
                if input.starts_with(b".\r\n") {
                    strict_end = Some(3);
                } else if let Some(p) = input.windows(5).position(|w| w == b"\r\n.\r\n") {
                    strict_end = Some(p + 5);
                }
                for mode in [BareLineEndings::Reject, BareLineEndings::Normalize] {
                    let cut = cut.min(input.len());
                    let (out, n, done, err) = frame_split(mode, &input, &[cut]);
                    prop_assert_eq!(done, strict_end.is_some());
                    if let Some(e) = strict_end {
                        prop_assert_eq!(n, e);
                    }
                    if mode == BareLineEndings::Normalize && err.is_none() {
                        prop_assert!(crlf_only(&out));
                        let mut wire = Vec::new();
                        let mut st = DotStuffer::new();
                        st.feed(&out, &mut wire);
                        st.finish(&mut wire);
                        prop_assert_eq!(count_terminators(&wire), 1);
                    }
                }
            }
        }
    }
}
