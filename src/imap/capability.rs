//! Capability lists: what mailshare advertises before login, and the filter
//! over the upstream's lists after it.
//!
//! The proxy must never let a client enable something that would take the
//! stream out of its sight, and never advertise what it does not implement
//! (DESIGN §5). Removed from the upstream's lists:
//!
//! - `COMPRESS=…` (RFC 4978): a compressed stream cannot be framed or teed;
//! - SASL mechanisms ending in `-PLUS` (channel binding): they bind to the
//!   TLS session between client and proxy, which the upstream never sees;
//! - `STARTTLS` and `LOGINDISABLED`: TLS towards the client is the proxy's
//!   own business (a post-login STARTTLS would start TLS with the upstream
//!   through the proxy).
//!
//! Everything else (IDLE, LITERAL+, BINARY, CONDSTORE, unknown extensions…)
//! passes: the relay frames any command or response.

/// Whether an upstream capability is removed (case-insensitive).
pub fn is_stripped(cap: &[u8]) -> bool {
    let up = |p: &str| cap.len() >= p.len() && cap[..p.len()].eq_ignore_ascii_case(p.as_bytes());
    let ends = |s: &str| {
        cap.len() >= s.len() && cap[cap.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
    };
    up("COMPRESS=")
        || (up("AUTH=") && ends("-PLUS"))
        || cap.eq_ignore_ascii_case(b"STARTTLS")
        || cap.eq_ignore_ascii_case(b"LOGINDISABLED")
}

/// Rewrite one complete server line that carries a capability list (`*
/// CAPABILITY …`, or a status response with a `[CAPABILITY …]` code):
/// stripped capabilities are removed, every other byte is kept. A line that
/// is neither comes back unchanged.
pub fn filter_line(line: &[u8]) -> Vec<u8> {
    let Some((start, end)) = list_span(line) else {
        return line.to_vec();
    };
    let mut out = Vec::with_capacity(line.len());
    out.extend_from_slice(&line[..start]);
    let mut first = true;
    for cap in line[start..end].split(|&b| b == b' ') {
        if cap.is_empty() || is_stripped(cap) {
            continue;
        }
        if !first {
            out.push(b' ');
        }
        out.extend_from_slice(cap);
        first = false;
    }
    out.extend_from_slice(&line[end..]);
    out
}

/// The capability names in a `* CAPABILITY` line or a `[CAPABILITY …]`
/// code, uppercased; `None` when the line has no list.
pub fn names(line: &[u8]) -> Option<Vec<String>> {
    let (start, end) = list_span(line)?;
    Some(
        line[start..end]
            .split(|&b| b == b' ')
            .filter(|c| !c.is_empty())
            .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
            .collect(),
    )
}

/// The byte range of the capability names in `line`.
fn list_span(line: &[u8]) -> Option<(usize, usize)> {
    let find = |needle: &[u8]| {
        line.windows(needle.len())
            .position(|w| w.eq_ignore_ascii_case(needle))
    };
    if let Some(i) = find(b"[CAPABILITY ") {
        let start = i + b"[CAPABILITY ".len();
        let end = start + memchr::memchr(b']', &line[start..])?;
        return Some((start, end));
    }
    if line.len() >= 13 && line[..13].eq_ignore_ascii_case(b"* CAPABILITY ") {
        let body_end = line.len() - eol_len(line);
        return Some((13, body_end.max(13)));
    }
    None
}

fn eol_len(line: &[u8]) -> usize {
    if line.ends_with(b"\r\n") {
        2
    } else if line.ends_with(b"\n") {
        1
    } else {
        0
    }
}

/// What mailshare itself offers before login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreloginCaps {
    /// STARTTLS is possible (a `starttls` listener before the handshake).
    pub starttls: bool,
    /// Logging in is allowed now (TLS is up, or the listener allows
    /// plaintext authentication); otherwise LOGINDISABLED and no AUTH=.
    pub auth: bool,
}

/// SASL mechanisms mailshare accepts from clients and passes upstream.
pub const MECHANISMS: &[&str] = &["PLAIN", "LOGIN", "XOAUTH2"];

impl PreloginCaps {
    /// The capability names, space separated.
    pub fn list(&self) -> String {
        let mut caps = vec!["IMAP4rev1", "SASL-IR", "LITERAL-", "ID"];
        if self.starttls {
            caps.push("STARTTLS");
        }
        let mut s = caps.join(" ");
        if self.auth {
            for m in MECHANISMS {
                s.push_str(" AUTH=");
                s.push_str(m);
            }
        } else {
            s.push_str(" LOGINDISABLED");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_what_the_proxy_cannot_see_through() {
        let line = b"* CAPABILITY IMAP4rev1 LITERAL+ COMPRESS=DEFLATE IDLE AUTH=SCRAM-SHA-256-PLUS AUTH=PLAIN compress=zstd STARTTLS X-UNKNOWN\r\n";
        assert_eq!(
            filter_line(line),
            b"* CAPABILITY IMAP4rev1 LITERAL+ IDLE AUTH=PLAIN X-UNKNOWN\r\n".to_vec()
        );
        let line = b"a1 OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE MOVE] Logged in\r\n";
        assert_eq!(
            filter_line(line),
            b"a1 OK [CAPABILITY IMAP4rev1 MOVE] Logged in\r\n".to_vec()
        );
        let line = b"* OK [capability IMAP4rev1 COMPRESS=DEFLATE] ready\r\n";
        assert_eq!(
            filter_line(line),
            b"* OK [capability IMAP4rev1] ready\r\n".to_vec()
        );
        // Lines without a list, or with nothing to strip, are unchanged.
        for l in [
            &b"* OK [ALERT] COMPRESS=DEFLATE is fine in text\r\n"[..],
            b"* CAPABILITY IMAP4rev1 IDLE\r\n",
            b"* CAPABILITY IMAP4rev1 IDLE\n",
        ] {
            assert_eq!(filter_line(l), l.to_vec());
        }
        assert!(!is_stripped(b"AUTH=PLAIN") && !is_stripped(b"BINARY"));
        assert_eq!(
            names(b"* OK [CAPABILITY IMAP4rev1 auth=plain] Dovecot\r\n"),
            Some(vec!["IMAP4REV1".to_string(), "AUTH=PLAIN".to_string()])
        );
        assert_eq!(names(b"* OK ready\r\n"), None);
    }

    #[test]
    fn prelogin_lists() {
        let plain = PreloginCaps {
            starttls: true,
            auth: false,
        };
        assert_eq!(
            plain.list(),
            "IMAP4rev1 SASL-IR LITERAL- ID STARTTLS LOGINDISABLED"
        );
        let tls = PreloginCaps {
            starttls: false,
            auth: true,
        };
        assert_eq!(
            tls.list(),
            "IMAP4rev1 SASL-IR LITERAL- ID AUTH=PLAIN AUTH=LOGIN AUTH=XOAUTH2"
        );
    }
}
