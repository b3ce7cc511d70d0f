//! The AUTH stage, sans-IO: SASL PLAIN, LOGIN and XOAUTH2 pass through to
//! upstream untouched; the proxy only reads the login name out of them, to
//! know whose mail this is once upstream says 235.
//!
//! Everything a client sends during AUTH (the command's initial response and
//! each response line) is held in a [`Secret`], whose `Debug` prints only its
//! length: a password or token cannot reach a log line by accident.

use std::fmt;

/// Bytes that must never be logged (AUTH lines, SASL responses).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The bytes, to be written to upstream (never to a log).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: do not leave credentials in freed memory.
        for b in &mut self.0 {
            *b = 0;
        }
    }
}

/// The mechanisms relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
    XOauth2,
}

impl Mechanism {
    /// From smtp-proto's mechanism bit.
    pub fn from_smtp_proto(bits: u64) -> Option<Mechanism> {
        match bits {
            smtp_proto::AUTH_PLAIN => Some(Mechanism::Plain),
            smtp_proto::AUTH_LOGIN => Some(Mechanism::Login),
            smtp_proto::AUTH_XOAUTH2 => Some(Mechanism::XOauth2),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::XOauth2 => "XOAUTH2",
        }
    }
}

/// One AUTH exchange: which mechanism, how many client responses so far, and
/// the login once it has been seen.
#[derive(Clone, PartialEq, Eq)]
pub struct Exchange {
    mechanism: Mechanism,
    responses: u32,
    login: Option<String>,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("mechanism", &self.mechanism)
            .field("responses", &self.responses)
            .field("login_seen", &self.login.is_some())
            .finish()
    }
}

impl Exchange {
    /// Start with the AUTH command's initial response (base64, `=` for
    /// empty), if it had one.
    pub fn start(mechanism: Mechanism, initial: Option<&[u8]>) -> Exchange {
        let mut e = Exchange {
            mechanism,
            responses: 0,
            login: None,
        };
        if let Some(ir) = initial.filter(|ir| !ir.is_empty()) {
            e.response(ir);
        }
        e
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// A client response line (base64, without its line ending).
    pub fn response(&mut self, line: &[u8]) {
        self.responses += 1;
        if self.login.is_some() || line == b"*" {
            return;
        }
        let decoded = if line == b"=" {
            Some(Vec::new())
        } else {
            decode_base64(line)
        };
        let Some(decoded) = decoded else { return };
        self.login = match self.mechanism {
            Mechanism::Plain => plain_login(&decoded),
            // The first response is the user name.
            Mechanism::Login if self.responses == 1 => utf8_login(&decoded),
            Mechanism::Login => None,
            Mechanism::XOauth2 => xoauth2_login(&decoded),
        };
    }

    /// The login name, once seen.
    pub fn login(&self) -> Option<&str> {
        self.login.as_deref()
    }
}

fn utf8_login(b: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(b).ok()?.trim();
    (!s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control)).then(|| s.to_string())
}

/// RFC 4616: `authzid NUL authcid NUL passwd`. The identity acted as is the
/// authzid when given (upstream has then allowed it), else the authcid.
fn plain_login(b: &[u8]) -> Option<String> {
    let mut parts = b.splitn(3, |&c| c == 0);
    let authz = parts.next()?;
    let authc = parts.next()?;
    parts.next()?;
    if authz.is_empty() {
        utf8_login(authc)
    } else {
        utf8_login(authz)
    }
}

/// `user=<login>^Aauth=Bearer <token>^A^A`.
fn xoauth2_login(b: &[u8]) -> Option<String> {
    b.split(|&c| c == 1)
        .find_map(|kv| kv.strip_prefix(b"user="))
        .and_then(utf8_login)
}

/// Standard base64 with optional padding; `None` for anything else.
pub fn decode_base64(s: &[u8]) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim_ascii();
    let body = s.strip_suffix(b"==").or(s.strip_suffix(b"=")).unwrap_or(s);
    if body.len() % 4 == 1 || s.len() - body.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn b64(s: &[u8]) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(s)
            .into_bytes()
    }

    #[test]
    fn base64_matches_a_reference_decoder() {
        for s in [
            &b""[..],
            b"a",
            b"ab",
            b"abc",
            b"abcd",
            b"\0alice\0pw",
            &[255u8; 17],
        ] {
            assert_eq!(decode_base64(&b64(s)).as_deref(), Some(s));
            let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(s);
            assert_eq!(decode_base64(unpadded.as_bytes()).as_deref(), Some(s));
        }
        for bad in [&b"a"[..], b"a===", b"ab$d", b"abcde"] {
            assert_eq!(decode_base64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn plain_with_and_without_initial_response() {
        let e = Exchange::start(Mechanism::Plain, Some(&b64(b"\0alice\0pw-alice")));
        assert_eq!(e.login(), Some("alice"));
        let mut e = Exchange::start(Mechanism::Plain, None);
        assert_eq!(e.login(), None);
        e.response(&b64(b"bob\0admin\0secret"));
        assert_eq!(e.login(), Some("bob"), "the authzid is who acts");
        let mut e = Exchange::start(Mechanism::Plain, None);
        e.response(b"*");
        assert_eq!(e.login(), None);
        let e = Exchange::start(Mechanism::Plain, Some(&b64(b"no-nuls")));
        assert_eq!(e.login(), None);
    }

    #[test]
    fn login_takes_the_first_response_only() {
        let mut e = Exchange::start(Mechanism::Login, None);
        e.response(&b64(b"carol"));
        e.response(&b64(b"pw-carol"));
        assert_eq!(e.login(), Some("carol"));
        let mut e = Exchange::start(Mechanism::Login, Some(&b64(b"dave")));
        e.response(&b64(b"pw"));
        assert_eq!(e.login(), Some("dave"));
    }

    #[test]
    fn xoauth2_reads_the_user() {
        let e = Exchange::start(
            Mechanism::XOauth2,
            Some(&b64(
                b"user=alice@acme.example\x01auth=Bearer ya29.tok\x01\x01",
            )),
        );
        assert_eq!(e.login(), Some("alice@acme.example"));
    }

    #[test]
    fn secrets_and_exchanges_never_print_their_content() {
        let s = Secret::new(b"AUTH PLAIN AGFsaWNlAHB3".to_vec());
        let e = Exchange::start(Mechanism::Plain, Some(&b64(b"\0alice\0pw-alice")));
        let shown = format!("{s:?} {e:?}");
        assert!(!shown.contains("AGFs") && !shown.contains("alice") && !shown.contains("pw"));
        assert!(shown.contains("redacted"));
    }
}
