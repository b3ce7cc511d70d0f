//! Streaming IMAP framing: where lines end, where literals start and end,
//! and where one message (command or response) ends. No allocation, no
//! copies, no parsing beyond framing: the relay forwards the bytes itself and
//! asks the scanner only what the next bytes are.
//!
//! # Framing rules
//!
//! A message is a line, or a line ending in a literal announcement followed
//! by the literal's bytes and another line, and so on. A line ends at LF (a
//! CR before it is part of the line ending). An announcement is `{N}`
//! (synchronizing), `{N+}` (non-synchronizing, LITERAL+ / LITERAL-) or
//! `~{N}` (RFC 3516 literal8, framed the same way) **immediately** before the
//! line ending: `{5} \r\n` or `{5}x\r\n` announce nothing. These are the rules
//! of imap-codec's `Fragmentizer`, which the tests use as a differential
//! oracle over random streams split at random boundaries. One deliberate
//! difference: a size that does not fit in 32 bits is still an announcement
//! here (with a saturated [`Announcement::size`], which every limit rejects),
//! where the `Fragmentizer` stops treating it as one; an IMAP server would
//! read it as an (oversized) literal, so the proxy must too.
//!
//! Status responses (`* OK …`, `tag NO …`) and continuation requests carry
//! no literals in the grammar; the relay tells the scanner so with
//! [`Scanner::suppress_announcement`] once it has classified such a line, so
//! that a server echoing `{5}` at the end of an error text cannot make the
//! proxy's framing diverge from the client's.
//!
//! Cost: `memchr` to the next LF, `{` or CR inside lines; O(1) per read
//! inside literals.

/// How a literal's sender waits for the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiteralMode {
    /// `{N}`: the client waits for a `+` continuation request (from a server
    /// the distinction is meaningless).
    Sync,
    /// `{N+}`: the bytes follow at once.
    NonSync,
}

/// A literal announced at the end of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// Announced size in bytes; `u64::MAX` when the digits overflow.
    pub size: u64,
    pub mode: LiteralMode,
    /// `~{N}` (literal8).
    pub binary: bool,
    /// Bytes from the `~` or `{` to the end of the line, line ending
    /// included: the announcement is `line[line.len() - suffix_len..]`.
    pub suffix_len: usize,
}

/// What the next bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Line bytes. `end`: they reach the line's LF; `announce`: the literal
    /// announced by this (ended) line, if any. A line ending without an
    /// announcement ends the message.
    Line {
        end: bool,
        announce: Option<Announcement>,
    },
    /// Literal bytes; `end`: the literal is complete.
    Literal { end: bool },
}

/// The next `len` bytes of the input and what they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub len: usize,
    pub piece: Piece,
}

/// Where an announcement could be forming, as the last bytes of the line
/// leave it (the `Fragmentizer`'s `LatestByte`, with 64-bit sizes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tail {
    Other,
    Open,
    Digit(u64),
    Plus(u64),
    Close(u64, LiteralMode),
    Cr(Option<(u64, LiteralMode)>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Line,
    Literal { remaining: u64 },
}

/// The framing state of one direction of one connection.
#[derive(Clone, Debug)]
pub struct Scanner {
    state: State,
    tail: Tail,
    /// Bytes of the current line so far.
    line_len: u64,
    /// Offset in the line of the last `{`, and whether a `~` preceded it.
    brace_at: u64,
    tilde: bool,
    /// The last line byte seen (for `~` before a `{` at a read boundary).
    last: u8,
    /// The current line's ending announces nothing, whatever it looks like.
    suppressed: bool,
    /// Index of the current segment in its message (0: the first line).
    segment: u32,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner::new()
    }
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner {
            state: State::Line,
            tail: Tail::Other,
            line_len: 0,
            brace_at: 0,
            tilde: false,
            last: 0,
            suppressed: false,
            segment: 0,
        }
    }

    /// True before the first byte of a message.
    pub fn at_message_start(&self) -> bool {
        self.state == State::Line && self.segment == 0 && self.line_len == 0
    }

    /// True between messages or inside a line (not inside a literal).
    pub fn in_line(&self) -> bool {
        self.state == State::Line
    }

    /// Literal bytes still to come, when inside a literal.
    pub fn literal_remaining(&self) -> Option<u64> {
        match self.state {
            State::Literal { remaining } => Some(remaining),
            State::Line => None,
        }
    }

    /// `n` bytes of the current literal went past the scanner (spliced):
    /// the next [`Scanner::step`] goes on after them (a literal thus
    /// finished yields its `Literal { end: true }` step, of length 0).
    pub fn literal_consumed(&mut self, n: u64) {
        if let State::Literal { remaining } = self.state {
            self.state = State::Literal {
                remaining: remaining.saturating_sub(n),
            };
        }
    }

    /// Bytes of the current line seen so far.
    pub fn line_len(&self) -> u64 {
        self.line_len
    }

    /// 0 while in the message's first line, then 1, 2… after each literal.
    pub fn segment(&self) -> u32 {
        self.segment
    }

    /// The current line announces no literal, whatever its end looks like.
    pub fn suppress_announcement(&mut self) {
        self.suppressed = true;
    }

    /// The literal just announced will not come (its sync announcement was
    /// refused): the message ended with the announcing line.
    pub fn cancel_literal(&mut self) {
        self.state = State::Line;
        self.reset_line();
        self.segment = 0;
    }

    fn reset_line(&mut self) {
        self.tail = Tail::Other;
        self.line_len = 0;
        self.brace_at = 0;
        self.tilde = false;
        self.last = 0;
        self.suppressed = false;
    }

    /// Classify the next bytes of `input`. Returns `None` only when `input` is
    /// empty and nothing is due; a zero-length literal yields one
    /// `Literal { end: true }` step of length 0, even for empty input.
    pub fn step(&mut self, input: &[u8]) -> Option<Step> {
        match self.state {
            State::Literal { remaining } => {
                if remaining == 0 {
                    self.end_literal();
                    return Some(Step {
                        len: 0,
                        piece: Piece::Literal { end: true },
                    });
                }
                if input.is_empty() {
                    return None;
                }
                let len = usize::try_from(remaining).map_or(input.len(), |r| r.min(input.len()));
                let left = remaining - len as u64;
                if left == 0 {
                    self.end_literal();
                } else {
                    self.state = State::Literal { remaining: left };
                }
                Some(Step {
                    len,
                    piece: Piece::Literal { end: left == 0 },
                })
            }
            State::Line => {
                if input.is_empty() {
                    return None;
                }
                match memchr::memchr(b'\n', input) {
                    Some(lf) => {
                        self.scan(&input[..lf]);
                        self.line_len += lf as u64 + 1;
                        let announce = self.finish_line();
                        Some(Step {
                            len: lf + 1,
                            piece: Piece::Line {
                                end: true,
                                announce,
                            },
                        })
                    }
                    None => {
                        self.scan(input);
                        self.line_len += input.len() as u64;
                        Some(Step {
                            len: input.len(),
                            piece: Piece::Line {
                                end: false,
                                announce: None,
                            },
                        })
                    }
                }
            }
        }
    }

    fn end_literal(&mut self) {
        self.state = State::Line;
        self.reset_line();
        self.segment = self.segment.saturating_add(1);
    }

    /// The line's LF was reached: what does it announce?
    fn finish_line(&mut self) -> Option<Announcement> {
        let found = match self.tail {
            Tail::Close(size, mode) => Some((size, mode)),
            Tail::Cr(a) => a,
            _ => None,
        };
        let found = if self.suppressed { None } else { found };
        let announce = found.map(|(size, mode)| {
            let start = self.brace_at - u64::from(self.tilde);
            Announcement {
                size,
                mode,
                binary: self.tilde,
                suffix_len: usize::try_from(self.line_len - start).unwrap_or(usize::MAX),
            }
        });
        match announce {
            Some(a) => {
                self.state = State::Literal { remaining: a.size };
            }
            None => {
                self.segment = 0;
            }
        }
        self.reset_line();
        announce
    }

    /// Run the announcement automaton over line bytes without LF. `line_len`
    /// is not yet advanced: offsets are `self.line_len + i`.
    fn scan(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            if self.tail == Tail::Other {
                // Nothing forming: jump to the next byte that can start something.
                match memchr::memchr2(b'{', b'\r', &bytes[i..]) {
                    Some(off) => i += off,
                    None => {
                        self.last = bytes[bytes.len() - 1];
                        return;
                    }
                }
            }
            let b = bytes[i];
            let prev = if i == 0 { self.last } else { bytes[i - 1] };
            self.tail = match (self.tail, b) {
                (_, b'\r') => match self.tail {
                    Tail::Close(size, mode) => Tail::Cr(Some((size, mode))),
                    _ => Tail::Cr(None),
                },
                (_, b'{') => {
                    self.brace_at = self.line_len + i as u64;
                    self.tilde = prev == b'~';
                    Tail::Open
                }
                (Tail::Open, b'0'..=b'9') => Tail::Digit(u64::from(b - b'0')),
                (Tail::Digit(n), b'0'..=b'9') => {
                    Tail::Digit(n.saturating_mul(10).saturating_add(u64::from(b - b'0')))
                }
                (Tail::Digit(n), b'+') => Tail::Plus(n),
                (Tail::Digit(n), b'}') => Tail::Close(n, LiteralMode::Sync),
                (Tail::Plus(n), b'}') => Tail::Close(n, LiteralMode::NonSync),
                _ => Tail::Other,
            };
            i += 1;
        }
        if let Some(&b) = bytes.last() {
            self.last = b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer};
    use imap_codec::imap_types::core::LiteralMode as CodecMode;
    use proptest::prelude::*;

    /// A complete fragment: (is_literal, length, announced (size, sync?)).
    type Frag = (bool, usize, Option<(u64, bool)>);

    /// Our fragments over `chunks`: consecutive pieces merged, complete only.
    fn ours(chunks: &[&[u8]]) -> Vec<Frag> {
        let mut s = Scanner::new();
        let mut out = Vec::new();
        let mut acc = 0usize;
        for chunk in chunks {
            let mut rest: &[u8] = chunk;
            while let Some(step) = s.step(rest) {
                rest = &rest[step.len..];
                acc += step.len;
                match step.piece {
                    Piece::Line {
                        end: true,
                        announce,
                    } => {
                        out.push((
                            false,
                            acc,
                            announce.map(|a| (a.size, a.mode == LiteralMode::Sync)),
                        ));
                        acc = 0;
                    }
                    Piece::Literal { end: true } => {
                        out.push((true, acc, None));
                        acc = 0;
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// The oracle: imap-codec's Fragmentizer over the same chunks.
    fn oracle(chunks: &[&[u8]]) -> Vec<Frag> {
        let mut f = Fragmentizer::without_max_message_size();
        let mut out = Vec::new();
        for chunk in chunks {
            f.enqueue_bytes(chunk);
            while let Some(info) = f.progress() {
                match info {
                    FragmentInfo::Line {
                        start,
                        end,
                        announcement,
                        ..
                    } => out.push((
                        false,
                        end - start,
                        announcement
                            .map(|a| (u64::from(a.length), matches!(a.mode, CodecMode::Sync))),
                    )),
                    FragmentInfo::Literal { start, end } => out.push((true, end - start, None)),
                }
            }
        }
        out
    }

    fn split_at_all<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts {
            out.push(&bytes[at..c]);
            at = c;
        }
        out.push(&bytes[at..]);
        out
    }

    /// Streams rich in framing-relevant bytes, with literals that complete.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            Just(b"{".to_vec()),
            Just(b"}".to_vec()),
            Just(b"+".to_vec()),
            Just(b"~".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b" ".to_vec()),
            Just(b"a1 FETCH".to_vec()),
            "[0-9]{1,3}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..8),
            // A well-formed literal with its bytes.
            (0usize..40, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
                |(n, plus, tilde, crlf)| {
                    let mut v = Vec::new();
                    if tilde {
                        v.push(b'~');
                    }
                    v.extend_from_slice(
                        format!("{{{n}{}}}", if plus { "+" } else { "" }).as_bytes(),
                    );
                    v.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                    v.extend(std::iter::repeat_n(b'{', n));
                    v
                }
            ),
        ];
        proptest::collection::vec(token, 0..60).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn agrees_with_the_fragmentizer(bytes in stream(), cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
            let chunks = split_at_all(&bytes, &cuts);
            prop_assert_eq!(ours(&chunks), oracle(&[&bytes[..]]));
            prop_assert_eq!(ours(&chunks), oracle(&chunks));
        }

        #[test]
        fn agrees_on_arbitrary_bytes(bytes in proptest::collection::vec(prop_oneof![
            Just(b'{'), Just(b'}'), Just(b'+'), Just(b'\r'), Just(b'\n'), Just(b'~'),
            Just(b'0'), Just(b'1'), Just(b'7'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..20)) {
            let chunks = split_at_all(&bytes, &cuts);
            prop_assert_eq!(ours(&chunks), oracle(&[&bytes[..]]));
        }
    }

    #[test]
    fn every_split_of_a_fetch_response_frames_the_same() {
        let msg: &[u8] = b"* 1 FETCH (UID 7 BODY[] {12}\r\nHello\r\nWorld)\r\na OK done\r\n";
        let whole = ours(&[msg]);
        assert_eq!(
            whole,
            vec![
                (false, 30, Some((12, true))),
                (true, 12, None),
                (false, 3, None),
                (false, 11, None)
            ]
        );
        for i in 0..=msg.len() {
            for j in i..=msg.len() {
                assert_eq!(ours(&[&msg[..i], &msg[i..j], &msg[j..]]), whole, "{i} {j}");
            }
        }
    }

    #[test]
    fn announcement_details() {
        let mut s = Scanner::new();
        let line = b"a APPEND INBOX ~{5+}\r\n";
        let step = s.step(line).unwrap();
        let Piece::Line {
            end: true,
            announce: Some(a),
        } = step.piece
        else {
            panic!("{step:?}")
        };
        assert_eq!(a.size, 5);
        assert_eq!(a.mode, LiteralMode::NonSync);
        assert!(a.binary);
        assert_eq!(&line[line.len() - a.suffix_len..], b"~{5+}\r\n");
        assert_eq!(s.literal_remaining(), Some(5));
        assert!(!s.at_message_start());

        // Overflowing digits still announce (saturated).
        let mut s = Scanner::new();
        let step = s
            .step(b"a APPEND INBOX {99999999999999999999999}\r\n")
            .unwrap();
        assert!(matches!(
            step.piece,
            Piece::Line {
                announce: Some(Announcement { size: u64::MAX, .. }),
                ..
            }
        ));

        // `~` before a brace split across reads.
        let mut s = Scanner::new();
        s.step(b"* 1 FETCH (BINARY[] ~").unwrap();
        let step = s.step(b"{3}\r\n").unwrap();
        let Piece::Line {
            announce: Some(a), ..
        } = step.piece
        else {
            panic!()
        };
        assert!(a.binary && a.suffix_len == 6);
    }

    #[test]
    fn zero_length_literal_and_cancel_and_suppress() {
        let mut s = Scanner::new();
        s.step(b"a APPEND x {0}\r\n").unwrap();
        assert_eq!(
            s.step(b""),
            Some(Step {
                len: 0,
                piece: Piece::Literal { end: true }
            })
        );
        assert_eq!(s.segment(), 1);
        s.step(b"\r\n").unwrap();
        assert!(s.at_message_start());

        s.step(b"b APPEND x {9}\r\n").unwrap();
        s.cancel_literal();
        assert!(s.at_message_start());

        s.step(b"* NO no such mailbox {5}").unwrap();
        s.suppress_announcement();
        let step = s.step(b"\r\n").unwrap();
        assert_eq!(
            step.piece,
            Piece::Line {
                end: true,
                announce: None
            }
        );
        assert!(s.at_message_start());
    }
}
