//! Following one FETCH response while it streams to the client: which
//! literal carries which item, the tees copying the items worth capturing,
//! and a bounded *skeleton* of the response (its lines and small literals,
//! with large literals replaced by empty ones) from which imap-codec decodes
//! ENVELOPE and RFC822.SIZE once the response is complete.
//!
//! Sans-IO: the relay feeds bytes and decides when to reserve capture
//! memory; nothing here waits.

use super::capture::Tee;
use super::scanner::Announcement;
use super::syntax::{fetch_item_before, FetchItem};

/// The most skeleton kept per response (beyond it: no ENVELOPE capture).
pub const SKELETON_MAX: usize = 64 * 1024;
/// Literals up to this size stay in the skeleton (envelope strings).
pub const SKELETON_LITERAL_MAX: u64 = 8 * 1024;
/// Bytes of the current segment kept to find the item before a literal.
const TAIL: usize = 512;

/// One FETCH response in flight.
#[derive(Debug, Default)]
pub struct FetchState {
    skeleton: Vec<u8>,
    skeleton_lost: bool,
    tail: Vec<u8>,
    /// The current literal's item and tee (if teed), and whether its bytes
    /// go into the skeleton.
    current: Option<(FetchItem, Option<Tee>)>,
    keep_literal: bool,
    /// Finished tees: the whole message, and a header block (with whether
    /// it is a subset of the fields).
    pub whole: Option<Tee>,
    pub header: Option<(Tee, bool)>,
}

impl FetchState {
    pub fn new() -> Self {
        FetchState::default()
    }

    /// Line bytes of the response.
    pub fn line(&mut self, bytes: &[u8]) {
        self.skeleton_push(bytes);
        if bytes.len() >= TAIL {
            self.tail.clear();
            self.tail.extend_from_slice(&bytes[bytes.len() - TAIL..]);
        } else {
            self.tail.extend_from_slice(bytes);
            if self.tail.len() > 2 * TAIL {
                self.tail.drain(..self.tail.len() - TAIL);
            }
        }
    }

    fn skeleton_push(&mut self, bytes: &[u8]) {
        if self.skeleton_lost {
            return;
        }
        if self.skeleton.len() + bytes.len() > SKELETON_MAX {
            self.skeleton_lost = true;
            self.skeleton = Vec::new();
            return;
        }
        self.skeleton.extend_from_slice(bytes);
    }

    /// A literal was announced at the end of the line just fed: which item
    /// is it? The caller then starts a tee if the item is worth one.
    pub fn literal_start(&mut self, a: &Announcement) -> FetchItem {
        let item = if a.suffix_len <= self.tail.len() {
            fetch_item_before(&self.tail, a.suffix_len)
        } else {
            FetchItem::Other
        };
        self.tail.clear();
        // Small literals of other items (envelope strings) stay in the
        // skeleton; message and header literals never do.
        self.keep_literal = a.size <= SKELETON_LITERAL_MAX && item == FetchItem::Other;
        if !self.keep_literal && !self.skeleton_lost {
            // `{N}` → `{0}`: the skeleton stays a valid response.
            let keep = self.skeleton.len().saturating_sub(a.suffix_len);
            self.skeleton.truncate(keep);
            self.skeleton_push(if a.binary { b"~{0}\r\n" } else { b"{0}\r\n" });
        }
        self.current = Some((item, None));
        item
    }

    /// Attach the tee for the literal just started.
    pub fn set_tee(&mut self, tee: Tee) {
        if let Some((_, slot)) = &mut self.current {
            *slot = Some(tee);
        }
    }

    /// Whether a tee for `item` is still useful (one per kind per response).
    pub fn wants(&self, item: FetchItem) -> bool {
        match item {
            FetchItem::Whole => self.whole.is_none(),
            FetchItem::Header | FetchItem::HeaderFields | FetchItem::Head => {
                self.whole.is_none() && self.header.as_ref().is_none_or(|(_, subset)| *subset)
            }
            FetchItem::Other => false,
        }
    }

    /// The tee of the current literal, to read into directly.
    pub fn tee_mut(&mut self) -> Option<&mut Tee> {
        self.current.as_mut().and_then(|(_, t)| t.as_mut())
    }

    /// The rest of the current literal is needed neither by a tee (none,
    /// or a head-only copy already full and looked at) nor by the
    /// skeleton: it may bypass this state (and the process).
    pub fn literal_unneeded(&self) -> bool {
        !self.keep_literal
            && match &self.current {
                Some((_, Some(tee))) => tee.wants() == 0 && tee.checked,
                _ => true,
            }
    }

    /// Literal bytes.
    pub fn literal(&mut self, bytes: &[u8]) {
        if self.keep_literal {
            self.skeleton_push(bytes);
        }
        if let Some((_, Some(tee))) = &mut self.current {
            tee.push(bytes);
        }
    }

    /// Literal bytes already placed in the current tee by a direct read.
    pub fn literal_in_tee(&mut self, n: usize) {
        if self.keep_literal {
            let copy = match &self.current {
                Some((_, Some(tee))) => tee.tail(n).to_vec(),
                _ => return,
            };
            self.skeleton_push(&copy);
        }
    }

    /// Drop the current whole-message tee once its header block shows a
    /// message recently captured in full for this owner (a re-fetch).
    pub fn check_known(&mut self, capture: &super::capture::SessionCapture) {
        let Some((FetchItem::Whole, slot)) = &mut self.current else {
            return;
        };
        let Some(tee) = slot.as_mut() else {
            return;
        };
        if tee.checked {
            return;
        }
        let known = match tee.header_block() {
            Some(h) => Some(capture.is_known(h)),
            None if tee.len() >= 64 * 1024 || tee.wants() == 0 => Some(false),
            None => None,
        };
        match known {
            Some(true) => *slot = None,
            Some(false) => tee.checked = true,
            None => {}
        }
    }

    /// The literal ended.
    pub fn literal_end(&mut self) {
        self.keep_literal = false;
        if let Some((item, Some(tee))) = self.current.take() {
            match item {
                FetchItem::Whole => self.whole = Some(tee),
                FetchItem::Header => self.header = Some((tee, false)),
                FetchItem::HeaderFields => self.header = Some((tee, true)),
                // A first piece cut inside the header block gives nothing
                // sure to capture.
                FetchItem::Head if tee.header_block().is_some() => self.header = Some((tee, false)),
                FetchItem::Head | FetchItem::Other => {}
            }
        }
    }

    /// The complete response skeleton, if it holds an ENVELOPE worth
    /// decoding.
    pub fn envelope_skeleton(&mut self) -> Option<Vec<u8>> {
        if self.skeleton_lost || !contains_ignore_case(&self.skeleton, b"ENVELOPE") {
            return None;
        }
        Some(std::mem::take(&mut self.skeleton))
    }

    /// RFC822.SIZE in the response so far, if present.
    pub fn rfc822_size(&self) -> Option<u64> {
        let s = &self.skeleton;
        let key = b"RFC822.SIZE ";
        let at = find_ignore_case(s, key)?;
        let digits: Vec<u8> = s[at + key.len()..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .copied()
            .collect();
        std::str::from_utf8(&digits).ok()?.parse().ok()
    }
}

/// `needle` is uppercase ASCII; servers send item names uppercase, but
/// any case is found.
fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    find_ignore_case(hay, needle).is_some()
}

fn find_ignore_case(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if let Some(i) = memchr::memmem::find(hay, needle) {
        return Some(i);
    }
    let first = needle[0];
    memchr::memchr2_iter(first, first.to_ascii_lowercase(), hay).find(|&i| {
        hay[i..].len() >= needle.len() && hay[i..i + needle.len()].eq_ignore_ascii_case(needle)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::scanner::{Piece, Scanner};

    /// Feed a response through a scanner into a FetchState.
    fn feed(bytes: &[u8]) -> (FetchState, Vec<FetchItem>) {
        let mut s = Scanner::new();
        let mut f = FetchState::new();
        let mut items = Vec::new();
        let mut rest = bytes;
        while let Some(step) = s.step(rest) {
            let (piece, r) = rest.split_at(step.len);
            rest = r;
            match step.piece {
                Piece::Line { end, announce } => {
                    f.line(piece);
                    if end {
                        if let Some(a) = announce {
                            items.push(f.literal_start(&a));
                        }
                    }
                }
                Piece::Literal { end } => {
                    f.literal(piece);
                    if end {
                        f.literal_end();
                    }
                }
            }
        }
        (f, items)
    }

    #[test]
    fn items_skeleton_and_envelope() {
        let big = vec![b'x'; 9000];
        let mut resp = b"* 1 FETCH (UID 9 RFC822.SIZE 9000 ENVELOPE (NIL {5}\r\nHello NIL NIL NIL NIL NIL NIL NIL NIL) BODY[] {9000}\r\n".to_vec();
        resp.extend_from_slice(&big);
        resp.extend_from_slice(b")\r\n");
        let (mut f, items) = feed(&resp);
        assert_eq!(items, vec![FetchItem::Other, FetchItem::Whole]);
        assert_eq!(f.rfc822_size(), Some(9000));
        let skel = f.envelope_skeleton().expect("kept");
        assert!(
            skel.ends_with(b"BODY[] {0}\r\n)\r\n"),
            "{}",
            String::from_utf8_lossy(&skel)
        );
        assert!(
            skel.windows(5).any(|w| w == b"Hello"),
            "small literals stay"
        );
        // The skeleton decodes.
        assert!(super::super::capture::envelope_headers(&skel).is_some());
    }

    #[test]
    fn skeleton_is_bounded() {
        let mut resp = b"* 1 FETCH (BODYSTRUCTURE (".to_vec();
        resp.extend(std::iter::repeat_n(b'a', SKELETON_MAX + 10));
        resp.extend_from_slice(b") ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n");
        let (mut f, _) = feed(&resp);
        assert!(f.envelope_skeleton().is_none());
        assert!(f.skeleton.capacity() <= SKELETON_MAX);
    }
}
