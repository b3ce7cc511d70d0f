//! The EHLO stage, sans-IO: the keywords offered to the client are those both
//! mailshare and the upstream support.
//!
//! Passed through with upstream's own parameters: PIPELINING, 8BITMIME,
//! SMTPUTF8, CHUNKING, ENHANCEDSTATUSCODES, DSN, DELIVERBY, MT-PRIORITY and
//! FUTURERELEASE (envelope parameters are relayed verbatim and replies
//! unchanged, so these need nothing from the proxy). Rewritten: SIZE (the
//! smaller of both limits; ours when upstream names none) and AUTH (only
//! PLAIN, LOGIN and XOAUTH2, whose login the proxy can read, and only where
//! authentication is allowed on the client's leg). STARTTLS is the proxy's
//! own, never upstream's. Everything else is dropped: BURL and BINARYMIME
//! would move message bytes past the parser, XCLIENT/XFORWARD would let a
//! client speak with the proxy's authority, and unknown keywords are not
//! seen through.

use super::reply::Reply;

/// Keywords relayed as upstream wrote them.
const PASS: &[&str] = &[
    "PIPELINING",
    "8BITMIME",
    "SMTPUTF8",
    "CHUNKING",
    "ENHANCEDSTATUSCODES",
    "DSN",
    "DELIVERBY",
    "MT-PRIORITY",
    "FUTURERELEASE",
];

/// SASL mechanisms relayed: the proxy can read the login from each.
pub const MECHANISMS: &[&str] = &["PLAIN", "LOGIN", "XOAUTH2"];

/// What an upstream EHLO reply says, as far as the session needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamCaps {
    pub starttls: bool,
    pub pipelining: bool,
    pub chunking: bool,
    /// SIZE limit; `None` when not advertised or 0 (no limit).
    pub size: Option<u64>,
    /// AUTH mechanisms, uppercase.
    pub auth: Vec<String>,
}

/// What the proxy itself adds or allows on this client leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// Offer STARTTLS (a starttls listener before TLS).
    pub starttls: bool,
    /// Offer AUTH (TLS is up, or plaintext AUTH is allowed).
    pub auth: bool,
    /// The proxy's own message size limit.
    pub max_size: u64,
}

/// Split an EHLO line's text into its keyword (uppercased) and the rest.
fn keyword(text: &[u8]) -> (String, &[u8]) {
    let end = text
        .iter()
        .position(|&b| b == b' ' || b == b'=')
        .unwrap_or(text.len());
    let kw = String::from_utf8_lossy(&text[..end]).to_ascii_uppercase();
    let rest = text.get(end + 1..).unwrap_or_default();
    (kw, rest)
}

fn words(params: &[u8]) -> impl Iterator<Item = String> + '_ {
    params
        .split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).to_ascii_uppercase())
}

/// Read the capabilities of a 250 EHLO reply.
pub fn parse(reply: &Reply) -> UpstreamCaps {
    let mut caps = UpstreamCaps::default();
    for text in reply.texts().skip(1) {
        let (kw, params) = keyword(text);
        match kw.as_str() {
            "STARTTLS" => caps.starttls = true,
            "PIPELINING" => caps.pipelining = true,
            "CHUNKING" => caps.chunking = true,
            "SIZE" => {
                caps.size = std::str::from_utf8(params)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .filter(|&n| n > 0);
            }
            "AUTH" => {
                for w in words(params) {
                    if !caps.auth.contains(&w) {
                        caps.auth.push(w);
                    }
                }
            }
            _ => {}
        }
    }
    caps
}

fn push_lines(out: &mut Vec<u8>, lines: &[Vec<u8>]) {
    for (i, l) in lines.iter().enumerate() {
        out.extend_from_slice(b"250");
        out.push(if i + 1 == lines.len() { b' ' } else { b'-' });
        out.extend_from_slice(l);
        out.extend_from_slice(b"\r\n");
    }
}

/// The client's EHLO reply from upstream's: the intersection (module docs).
/// A reply other than 250 is relayed unchanged.
pub fn client_reply(upstream: &Reply, offer: &Offer) -> Vec<u8> {
    if upstream.code != 250 {
        return upstream.raw.clone();
    }
    let mut texts = upstream.texts();
    let mut lines: Vec<Vec<u8>> = vec![texts.next().unwrap_or_default().to_vec()];
    let mut size = None;
    for text in texts {
        let (kw, params) = keyword(text);
        if PASS.contains(&kw.as_str()) {
            if !lines.iter().skip(1).any(|l| keyword(l).0 == kw) {
                lines.push(text.to_vec());
            }
        } else if kw == "SIZE" {
            size = Some(
                std::str::from_utf8(params)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0),
            );
        }
    }
    let caps = parse(upstream);
    let limit = match size {
        Some(n) if n > 0 => n.min(offer.max_size),
        _ => offer.max_size,
    };
    lines.push(format!("SIZE {limit}").into_bytes());
    if offer.auth {
        let mechs: Vec<&str> = MECHANISMS
            .iter()
            .copied()
            .filter(|m| caps.auth.iter().any(|a| a == m))
            .collect();
        if !mechs.is_empty() {
            lines.push(format!("AUTH {}", mechs.join(" ")).into_bytes());
        }
    }
    if offer.starttls {
        lines.push(b"STARTTLS".to_vec());
    }
    let mut out = Vec::with_capacity(256);
    push_lines(&mut out, &lines);
    out
}

/// The EHLO reply given before TLS on a listener that requires it: nothing
/// can happen but STARTTLS, so no upstream is involved yet.
pub fn local_reply(hostname: &str) -> Vec<u8> {
    let mut out = Vec::new();
    push_lines(
        &mut out,
        &[
            hostname.as_bytes().to_vec(),
            b"PIPELINING".to_vec(),
            b"ENHANCEDSTATUSCODES".to_vec(),
            b"STARTTLS".to_vec(),
        ],
    );
    out
}

/// The reply to HELO: one line, upstream's greeting text from its EHLO reply.
pub fn helo_reply(upstream: &Reply) -> Vec<u8> {
    if upstream.code != 250 {
        return upstream.raw.clone();
    }
    let first = upstream.texts().next().unwrap_or_default().to_vec();
    let mut out = Vec::new();
    push_lines(&mut out, &[first]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dovecot() -> Reply {
        Reply {
            code: 250,
            raw: b"250-mail.acme.example\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN CRAM-MD5\r\n250-BURL imap\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-SIZE 104857600\r\n250-STARTTLS\r\n250-XCLIENT ADDR NAME\r\n250 PIPELINING\r\n".to_vec(),
        }
    }

    fn lines(b: &[u8]) -> Vec<String> {
        String::from_utf8(b.to_vec())
            .unwrap()
            .split_inclusive("\r\n")
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn caps_are_read() {
        let c = parse(&dovecot());
        assert!(c.starttls && c.pipelining && c.chunking);
        assert_eq!(c.size, Some(104_857_600));
        assert_eq!(c.auth, vec!["PLAIN", "LOGIN", "CRAM-MD5"]);
    }

    #[test]
    fn the_intersection_keeps_what_both_support() {
        let offer = Offer {
            starttls: false,
            auth: true,
            max_size: 50_000_000,
        };
        let got = lines(&client_reply(&dovecot(), &offer));
        assert_eq!(
            got,
            vec![
                "250-mail.acme.example\r\n",
                "250-8BITMIME\r\n",
                "250-CHUNKING\r\n",
                "250-ENHANCEDSTATUSCODES\r\n",
                "250-PIPELINING\r\n",
                "250-SIZE 50000000\r\n",
                "250 AUTH PLAIN LOGIN\r\n",
            ]
        );
        // smtp-proto reads the result as we mean it.
        let parsed =
            smtp_proto::EhloResponse::parse(&mut client_reply(&dovecot(), &offer).iter()).unwrap();
        assert_eq!(parsed.size, 50_000_000);
        assert_eq!(
            parsed.auth_mechanisms,
            smtp_proto::AUTH_PLAIN | smtp_proto::AUTH_LOGIN
        );
        assert!(!parsed.has_capability(smtp_proto::EXT_BURL));
        assert!(!parsed.has_capability(smtp_proto::EXT_START_TLS));
    }

    #[test]
    fn size_is_the_smaller_limit_and_auth_follows_the_offer() {
        let up = Reply {
            code: 250,
            raw: b"250-h\r\n250-SIZE 0\r\n250 AUTH=PLAIN\r\n".to_vec(),
        };
        let offer = Offer {
            starttls: true,
            auth: false,
            max_size: 1000,
        };
        assert_eq!(
            lines(&client_reply(&up, &offer)),
            vec!["250-h\r\n", "250-SIZE 1000\r\n", "250 STARTTLS\r\n"]
        );
        let small = Reply {
            code: 250,
            raw: b"250-h\r\n250 SIZE 10\r\n".to_vec(),
        };
        assert!(String::from_utf8(client_reply(&small, &offer))
            .unwrap()
            .contains("SIZE 10\r\n"));
        let refused = Reply {
            code: 554,
            raw: b"554 5.7.1 no\r\n".to_vec(),
        };
        assert_eq!(client_reply(&refused, &offer), refused.raw);
        assert_eq!(helo_reply(&dovecot()), b"250 mail.acme.example\r\n");
        assert!(String::from_utf8(local_reply("m"))
            .unwrap()
            .ends_with("250 STARTTLS\r\n"));
    }
}
