//! JSON shapes of DESIGN §6, built per level: a field above the viewer's
//! level is absent (not null, not empty). Only [`View`] decides what goes
//! in: `owners` and `bcc` come from the view, never from the record.

use crate::engine::{Level, Mailbox, Record, View};
use crate::store::{AccessRequest, StoredContact};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};

/// RFC 3339 UTC (`2026-11-20T09:14:00Z`) from Unix seconds.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm; the inverse of `config::policy::days_from_civil`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A mailbox as JSON: `{"address", "name"}`.
#[derive(Serialize)]
pub struct MailboxJson<'a> {
    address: &'a str,
    name: Option<&'a str>,
}

fn mailbox(m: &Mailbox) -> MailboxJson<'_> {
    MailboxJson {
        address: &m.address,
        name: m.name.as_deref(),
    }
}

/// One attachment's description (level full).
#[derive(Serialize)]
pub struct AttachmentJson<'a> {
    index: usize,
    name: Option<&'a str>,
    content_type: &'a str,
    size: u64,
}

/// A timeline entry (also a search result and a thread entry) and, with
/// [`Entry::with_content`], the message object of `GET /messages/{id}`.
/// Built only from a record and the [`View`] the engine gave: a field above
/// the view's level is `None` and absent from the JSON (an outer `Some`
/// with an inner `None` is a present `null`, e.g. a missing subject).
#[derive(Serialize)]
pub struct Entry<'a> {
    id: &'a str,
    thread_id: &'a str,
    date: String,
    direction: &'static str,
    level: &'static str,
    from: Option<MailboxJson<'a>>,
    to: Vec<MailboxJson<'a>>,
    cc: Vec<MailboxJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bcc: Option<Vec<MailboxJson<'a>>>,
    message_id: String,
    owners: &'a [String],
    size: u64,
    attachment_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attachments: Option<Vec<AttachmentJson<'a>>>,
}

impl<'a> Entry<'a> {
    /// The entry at the view's level. The caller has checked
    /// `view.level > Hidden`.
    pub fn new(r: &'a Record, view: &'a View) -> Entry<'a> {
        // Blind recipients only as the view allows (a participant's own),
        // and the key only for participants.
        let bcc = view.participant.then(|| {
            view.bcc
                .iter()
                .map(|a| match r.bcc.iter().find(|b| &b.address == a) {
                    Some(b) => mailbox(b),
                    None => MailboxJson {
                        address: a,
                        name: None,
                    },
                })
                .collect()
        });
        Entry {
            id: &r.id,
            thread_id: &r.thread_id,
            date: rfc3339(r.date),
            direction: r.direction.as_str(),
            level: view.level.as_str(),
            from: r.from.as_ref().map(mailbox),
            to: r.to.iter().map(mailbox).collect(),
            cc: r.cc.iter().map(mailbox).collect(),
            bcc,
            message_id: format!("<{}>", r.message_id),
            owners: &view.owners,
            size: r.size,
            attachment_count: r.attachment_count,
            subject: (view.level >= Level::Subject).then_some(r.subject.as_deref()),
            text: None,
            html: None,
            attachments: None,
        }
    }

    /// Add the `full` part: bodies (already read) and attachment
    /// descriptions. Only at level full.
    pub fn with_content(
        mut self,
        r: &'a Record,
        text: Option<String>,
        html: Option<String>,
    ) -> Self {
        debug_assert_eq!(self.level, Level::Full.as_str());
        self.text = Some(text);
        self.html = Some(html);
        self.attachments = Some(
            r.content
                .iter()
                .flat_map(|c| c.attachments.iter())
                .enumerate()
                .map(|(index, a)| AttachmentJson {
                    index,
                    name: a.name.as_deref(),
                    content_type: &a.content_type,
                    size: a.size,
                })
                .collect(),
        );
        self
    }
}

/// A page of entries: `{"<field>": [...], "next_cursor": …}` for timelines
/// and threads (`entries`) or search (`results`), serialized at once.
pub fn entry_page(field: &str, items: &[(Record, View)], next: Option<String>) -> Response {
    #[derive(Serialize)]
    struct Page<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        entries: Option<Vec<Entry<'a>>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        results: Option<Vec<Entry<'a>>>,
        next_cursor: Option<String>,
    }
    let list: Vec<Entry<'_>> = items.iter().map(|(r, v)| Entry::new(r, v)).collect();
    let page = if field == "results" {
        Page {
            entries: None,
            results: Some(list),
            next_cursor: next,
        }
    } else {
        Page {
            entries: Some(list),
            results: None,
            next_cursor: next,
        }
    };
    json(&page)
}

/// A 200 JSON response serialized here (off the async workers when called
/// in a blocking closure).
pub fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => super::error::ApiError::internal(e).into_response(),
    }
}

/// A contact as listed: `{"id","kind","name","addresses","domains","organization_id"}`.
pub fn contact(c: &StoredContact) -> Value {
    json!({
        "id": c.id,
        "kind": c.kind.as_str(),
        "name": c.name,
        "addresses": c.addresses,
        "domains": c.domains,
        "organization_id": c.organization_id,
    })
}

/// An access request. Its `owners` are not shown: a requester must not learn
/// owners the read rules hide from them.
pub fn access_request(r: &AccessRequest) -> Value {
    json!({
        "id": r.id,
        "message": r.message,
        "requester": r.requester,
        "level": r.level.as_str(),
        "note": r.note,
        "status": r.status.as_str(),
        "created": rfc3339(r.created),
        "decided_by": r.decided_by,
        "decided_at": r.decided_at.map(rfc3339),
        "granted": r.granted.map(Level::as_str),
    })
}

/// A `Content-Disposition` value that cannot inject headers: an ASCII
/// fallback `filename` (quoted, unsafe characters replaced) and the exact
/// name as RFC 8187 `filename*=UTF-8''…` (percent-encoded).
pub fn content_disposition(name: Option<&str>, index: usize) -> String {
    let fallback_name = format!("attachment-{index}");
    let name = name
        .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n))
        .map(|n| n.chars().filter(|c| !c.is_control()).collect::<String>())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .unwrap_or(fallback_name);
    let name: String = name.chars().take(200).collect();
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " .-_()+,[]@!#$&'~^".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        // RFC 8187 attr-char.
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// A stored content type if it is a plain `type/subtype` token pair, else
/// `application/octet-stream` (never parameters, never anything a header
/// could be split on).
pub fn safe_content_type(ct: &str) -> &str {
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match ct.split_once('/') {
        Some((t, s)) if token(t) && token(s) => ct,
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_338_840), "2026-11-22T09:14:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn content_disposition_cannot_inject_and_keeps_the_name() {
        let v = content_disposition(Some("r\u{e9}sum\u{e9} \"x\"\r\nSet-Cookie: a=b.pdf"), 0);
        assert!(!v.contains('\r') && !v.contains('\n'));
        assert!(v.is_ascii());
        assert_eq!(v.matches('"').count(), 2, "{v}");
        assert!(
            v.contains("filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22Set-Cookie%3A%20a%3Db.pdf"),
            "{v}"
        );
        assert!(axum::http::HeaderValue::from_str(&v).is_ok());
        let v = content_disposition(Some("../../etc/passwd"), 3);
        assert!(v.contains("filename=\"passwd\""), "{v}");
        let v = content_disposition(None, 3);
        assert!(v.contains("filename=\"attachment-3\""), "{v}");
        let v = content_disposition(Some(".."), 1);
        assert!(v.contains("attachment-1"), "{v}");
    }

    #[test]
    fn content_types_are_tokens_or_octet_stream() {
        assert_eq!(safe_content_type("application/pdf"), "application/pdf");
        assert_eq!(safe_content_type("image/svg+xml"), "image/svg+xml");
        for bad in [
            "",
            "text",
            "text/html; charset=x",
            "a/b\r\nX: y",
            "/x",
            "a/",
        ] {
            assert_eq!(
                safe_content_type(bad),
                "application/octet-stream",
                "{bad:?}"
            );
        }
    }
}
