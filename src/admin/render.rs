//! JSON shapes of DESIGN §6, built per level: a field above the viewer's
//! level is absent (not null, not empty). Only [`View`] decides what goes
//! in: `owners` and `bcc` come from the view, never from the record.

use crate::engine::{Level, Mailbox, Record, View};
use crate::store::{AccessRequest, StoredContact};
use serde_json::{json, Map, Value};

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

fn mailbox(m: &Mailbox) -> Value {
    json!({ "address": m.address, "name": m.name })
}

/// A timeline entry (also a search result and a thread entry) at the view's
/// level. The caller has checked `view.level > Hidden`.
pub fn entry(r: &Record, view: &View) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(r.id));
    m.insert("thread_id".into(), json!(r.thread_id));
    m.insert("date".into(), json!(rfc3339(r.date)));
    m.insert("direction".into(), json!(r.direction.as_str()));
    m.insert("level".into(), json!(view.level.as_str()));
    m.insert("from".into(), r.from.as_ref().map_or(Value::Null, mailbox));
    m.insert("to".into(), r.to.iter().map(mailbox).collect());
    m.insert("cc".into(), r.cc.iter().map(mailbox).collect());
    if view.participant {
        // Blind recipients only as the view allows (a participant's own).
        let bcc: Vec<Value> = view
            .bcc
            .iter()
            .map(|a| match r.bcc.iter().find(|b| &b.address == a) {
                Some(b) => mailbox(b),
                None => json!({ "address": a, "name": null }),
            })
            .collect();
        m.insert("bcc".into(), Value::Array(bcc));
    }
    m.insert("message_id".into(), json!(format!("<{}>", r.message_id)));
    m.insert("owners".into(), json!(view.owners));
    m.insert("size".into(), json!(r.size));
    m.insert("attachment_count".into(), json!(r.attachment_count));
    if view.level >= Level::Subject {
        m.insert("subject".into(), json!(r.subject));
    }
    m
}

/// The `full` part of a message: bodies (already read) and attachment
/// descriptions. Only called at level full.
pub fn add_content(
    m: &mut Map<String, Value>,
    r: &Record,
    text: Option<String>,
    html: Option<String>,
) {
    m.insert("text".into(), json!(text));
    m.insert("html".into(), json!(html));
    let attachments: Vec<Value> = r
        .content
        .iter()
        .flat_map(|c| c.attachments.iter())
        .enumerate()
        .map(|(i, a)| {
            json!({
                "index": i,
                "name": a.name,
                "content_type": a.content_type,
                "size": a.size,
            })
        })
        .collect();
    m.insert("attachments".into(), Value::Array(attachments));
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
