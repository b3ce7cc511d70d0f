//! SMTP replies, sans-IO: framing the upstream's (possibly multi-line)
//! replies so they can be forwarded byte for byte, and writing our own.
//!
//! Upstream replies are relayed unchanged (codes, enhanced status codes,
//! text); only their framing is checked, so a broken or hostile upstream
//! cannot make the proxy buffer without bound or desynchronise the reply
//! order.

use std::fmt;

/// The most bytes one upstream reply may take (an EHLO reply is < 1 KiB).
pub const MAX_REPLY_BYTES: usize = 64 * 1024;
/// The longest reply line accepted from upstream.
pub const MAX_REPLY_LINE: usize = 4096;

/// One complete reply as upstream sent it.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Every line, with its line ending, exactly as received.
    pub raw: Vec<u8>,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reply({})", self.code)
    }
}

impl Reply {
    /// 2, 3, 4 or 5.
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    pub fn is_positive(&self) -> bool {
        self.class() == 2
    }

    /// The lines without their code, separator and line ending.
    pub fn texts(&self) -> impl Iterator<Item = &[u8]> {
        self.raw
            .split_inclusive(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\n").unwrap_or(l))
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .map(|l| l.get(4..).unwrap_or_default())
    }

    /// A bounded label for metrics: `2xx` … `5xx`.
    pub fn class_label(&self) -> &'static str {
        match self.class() {
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            5 => "5xx",
            _ => "other",
        }
    }
}

/// Why upstream's bytes are not a valid reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("upstream reply line does not start with a 3-digit code")]
    Malformed,
    #[error("upstream reply lines carry different codes")]
    MixedCodes,
    #[error("upstream reply too long")]
    TooLong,
}

/// Accumulates upstream bytes and yields complete replies in order.
#[derive(Debug, Default)]
pub struct ReplyReader {
    buf: Vec<u8>,
}

impl ReplyReader {
    pub fn new() -> ReplyReader {
        ReplyReader::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet returned as a reply.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete reply, if one has arrived.
    ///
    /// # Errors
    /// Malformed framing, or a reply over [`MAX_REPLY_BYTES`] / a line over
    /// [`MAX_REPLY_LINE`]: the upstream session cannot be trusted any more.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        let mut code = None;
        let mut pos = 0;
        loop {
            let rest = &self.buf[pos..];
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                if rest.len() > MAX_REPLY_LINE || self.buf.len() > MAX_REPLY_BYTES {
                    return Err(ReplyError::TooLong);
                }
                return Ok(None);
            };
            if nl > MAX_REPLY_LINE {
                return Err(ReplyError::TooLong);
            }
            let line = &rest[..nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
                return Err(ReplyError::Malformed);
            }
            let c = u16::from(line[0] - b'0') * 100
                + u16::from(line[1] - b'0') * 10
                + u16::from(line[2] - b'0');
            if code.is_some_and(|prev| prev != c) {
                return Err(ReplyError::MixedCodes);
            }
            code = Some(c);
            let more = match line.get(3) {
                None | Some(b' ') => false,
                Some(b'-') => true,
                Some(_) => return Err(ReplyError::Malformed),
            };
            pos += nl + 1;
            if pos > MAX_REPLY_BYTES {
                return Err(ReplyError::TooLong);
            }
            if !more {
                let raw: Vec<u8> = self.buf.drain(..pos).collect();
                return Ok(Some(Reply { code: c, raw }));
            }
        }
    }
}

/// One of our own replies: `code esc text` CRLF. `text` must come from us,
/// never from the client (see [`sanitize`]).
pub fn local(code: u16, esc: &str, text: &str) -> Vec<u8> {
    format!("{code} {esc} {text}\r\n").into_bytes()
}

/// Client-supplied text made safe to quote in a reply: printable ASCII only,
/// at most 64 characters.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_replies_split_anywhere_come_out_whole() {
        let wire = b"250-mail.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n354 go\r\n";
        for cut in 0..=wire.len() {
            let mut r = ReplyReader::new();
            let mut got = Vec::new();
            r.push(&wire[..cut]);
            while let Some(x) = r.next_reply().unwrap() {
                got.push(x);
            }
            r.push(&wire[cut..]);
            while let Some(x) = r.next_reply().unwrap() {
                got.push(x);
            }
            assert_eq!(got.len(), 2, "cut {cut}");
            assert_eq!(got[0].code, 250);
            assert_eq!(got[0].raw, &wire[..47]);
            assert_eq!(got[1].raw, b"354 go\r\n");
            assert_eq!(r.buffered(), 0);
        }
    }

    #[test]
    fn bad_framing_is_an_error() {
        for bad in [
            &b"25 x\r\n"[..],
            b"abc def\r\n",
            b"250-a\r\n251 b\r\n",
            b"250xa\r\n",
        ] {
            let mut r = ReplyReader::new();
            r.push(bad);
            assert!(r.next_reply().is_err(), "{bad:?}");
        }
        let mut r = ReplyReader::new();
        r.push(&vec![b'2'; MAX_REPLY_LINE + 10]);
        assert_eq!(r.next_reply(), Err(ReplyError::TooLong));
        let mut r = ReplyReader::new();
        r.push(b"250\r\n");
        assert_eq!(r.next_reply().unwrap().unwrap().code, 250);
    }

    #[test]
    fn texts_and_sanitize() {
        let r = Reply {
            code: 250,
            raw: b"250-a b\r\n250 c\r\n".to_vec(),
        };
        let t: Vec<&[u8]> = r.texts().collect();
        assert_eq!(t, vec![&b"a b"[..], b"c"]);
        assert_eq!(sanitize("x\r\n250 fake\u{7f}é"), "x250 fake");
    }
}
