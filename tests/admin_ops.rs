//! The operations side of the admin API: `/metrics` read back by a strict
//! Prometheus text-format parser, health and readiness, and the OpenAPI
//! document held equal to the router (every route documented and nothing
//! else) and to the responses the server really gives (their JSON validated
//! against the documented schemas, examples too).

mod support;

use mailshare::admin;
use mailshare::engine::{self, Direction};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::*;

const POLICY: &str = r#"
[organization]
name = "Acme"
internal_domains = ["acme.example"]

[defaults]
inbound = "subject"
outbound = "full"

[[users]]
address = "alice@acme.example"
token_sha256 = "ALICE"

[[users]]
address = "bob@acme.example"
token_sha256 = "BOB"
outbound = "BOBOUT"

[[contacts]]
name = "Client A"
kind = "organization"
domains = ["client-a.example"]
"#;

/// At capture bob shares his sent mail in full; when read, only its subject.
fn policy(read_time: bool) -> String {
    POLICY
        .replace("BOBOUT", if read_time { "subject" } else { "full" })
        .replace("ALICE", &sha256_hex(&token("alice")))
        .replace("BOB\"", &format!("{}\"", sha256_hex(&token("bob"))))
}

async fn server() -> Server {
    let mut m1 = Eml::new(
        "o1@acme.example",
        "2 Mar 2026 09:00:00 +0000",
        "Alice <alice@acme.example>",
        "pat@client-a.example",
        "Figures",
        "Numbers inside.",
    );
    m1.attachment = Some(("q3.txt".into(), "q3".into()));
    let m2 = Eml::new(
        "o2@acme.example",
        "3 Mar 2026 09:00:00 +0000",
        "bob@acme.example",
        "pat@client-a.example",
        "Reply",
        "Thanks.",
    );
    let mail = vec![
        Capture {
            owner: "alice@acme.example",
            direction: Direction::Outbound,
            raw: m1.render(),
        },
        Capture {
            owner: "bob@acme.example",
            direction: Direction::Outbound,
            raw: m2.render(),
        },
    ];
    Server::start(&policy(false), &policy(true), &mail).await
}

// ------------------------------------------------- Prometheus text format

/// A sample's labels other than `le`, sorted: one histogram series.
type LabelSet = Vec<(String, String)>;

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    chars.next().is_some_and(ok_first)
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// Parse the text exposition format strictly: HELP/TYPE comments, samples
/// with escaped label values, every sample of a declared family, histogram
/// families with ordered cumulative buckets ending in +Inf = _count.
fn parse_prometheus(text: &str) -> Result<(BTreeMap<String, String>, Vec<Sample>), String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            return Err(err("empty line".into()));
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().ok_or_else(|| err("no metric name".into()))?;
            if !is_name(name, true) {
                return Err(err(format!("bad metric name {name:?}")));
            }
            match kind {
                "HELP" => {}
                "TYPE" => {
                    let t = parts.next().ok_or_else(|| err("no type".into()))?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(err(format!("bad type {t}")));
                    }
                    if types.insert(name.to_string(), t.to_string()).is_some() {
                        return Err(err("TYPE declared twice".into()));
                    }
                }
                _ => return Err(err("unknown comment kind".into())),
            }
            continue;
        }
        // name{labels} value
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => return Err(err("no value".into())),
        };
        if !is_name(name, true) {
            return Err(err(format!("bad metric name {name:?}")));
        }
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let body_end;
            loop {
                // label name
                let start = chars
                    .peek()
                    .map(|&(i, _)| i)
                    .ok_or_else(|| err("unterminated labels".into()))?;
                if r[start..].starts_with('}') {
                    body_end = start;
                    break;
                }
                let eq = r[start..]
                    .find('=')
                    .ok_or_else(|| err("label without =".into()))?
                    + start;
                let lname = &r[start..eq];
                if !is_name(lname, false) {
                    return Err(err(format!("bad label name {lname:?}")));
                }
                while chars.peek().is_some_and(|&(i, _)| i <= eq) {
                    chars.next();
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(err("label value not quoted".into()));
                }
                let mut value = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('\\') => match chars.next().map(|(_, c)| c) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            _ => return Err(err("bad escape".into())),
                        },
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => return Err(err("unterminated label value".into())),
                    }
                }
                if labels.insert(lname.to_string(), value).is_some() {
                    return Err(err("duplicate label".into()));
                }
                match chars.peek().map(|&(_, c)| c) {
                    Some(',') => {
                        chars.next();
                    }
                    Some('}') => {}
                    _ => return Err(err("expected , or }".into())),
                }
            }
            rest = &r[body_end + 1..];
        }
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before value".into()))?
            .split(' ');
        let value = parse_value(fields.next().unwrap()).map_err(err)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| err("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(err(format!("sample of undeclared family {family}")));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histograms: per label set, buckets cumulative, ending with +Inf = count.
    for (family, t) in &types {
        if t != "histogram" {
            continue;
        }
        let mut series: BTreeMap<LabelSet, Vec<(f64, f64)>> = BTreeMap::new();
        let mut counts: BTreeMap<LabelSet, f64> = BTreeMap::new();
        for s in samples
            .iter()
            .filter(|s| s.name.starts_with(family.as_str()))
        {
            let mut key: Vec<(String, String)> = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "le")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            key.sort();
            if s.name == format!("{family}_bucket") {
                let le = parse_value(s.labels.get("le").ok_or("bucket without le")?)?;
                series.entry(key).or_default().push((le, s.value));
            } else if s.name == format!("{family}_count") {
                counts.insert(key, s.value);
            }
        }
        for (key, buckets) in &series {
            if !buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
            {
                return Err(format!("{family}{key:?}: buckets not cumulative"));
            }
            let last = buckets.last().unwrap();
            if last.0 != f64::INFINITY || Some(&last.1) != counts.get(key) {
                return Err(format!("{family}{key:?}: +Inf bucket is not _count"));
            }
        }
    }
    Ok((types, samples))
}

#[test]
fn the_parser_rejects_what_is_not_the_text_format() {
    for bad in [
        "x 1",                                                                          // undeclared
        "# TYPE x counter\nx{a=\"1\" 1", // unterminated
        "# TYPE x counter\nx{a=1} 1",    // unquoted
        "# TYPE x counter\nx 1 2 3",     // trailing
        "# TYPE x counter\nx one",       // value
        "# TYPE x nonsense",             // type
        "# TYPE x counter\n\nx 1",       // empty line
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1", // not cumulative
    ] {
        assert!(parse_prometheus(bad).is_err(), "{bad}");
    }
    let ok = "# HELP x a \"help\"\n# TYPE x counter\nx{a=\"q\\\"\\\\\\n\",b=\"\"} 1.5 1700000000\n";
    let (_, s) = parse_prometheus(ok).unwrap();
    assert_eq!(s[0].labels["a"], "q\"\\\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_label_routes_by_template_never_by_user_or_id() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let server = server().await;
        let id = engine::message_key("o1@acme.example");
        for _ in 0..3 {
            server
                .get(&format!("/api/v1/messages/{id}"), Some(&token("alice")))
                .await;
        }
        server
            .get(
                "/api/v1/messages/0123456789abcdef01234567",
                Some(&token("alice")),
            )
            .await;
        server
            .get("/api/v1/nope/alice@acme.example", Some(&token("alice")))
            .await;
        server.get("/api/v1/contacts", None).await;
        let resp = server.get("/metrics", None).await;
        assert_eq!(resp.status, 200);
        assert!(resp
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        let (types, samples) =
            parse_prometheus(&resp.text()).unwrap_or_else(|e| panic!("{e}\n{}", resp.text()));
        assert!(
            types.keys().all(|n| n.starts_with("mailshare_")),
            "{types:?}"
        );
        assert_eq!(types["mailshare_http_requests_total"], "counter");
        assert_eq!(
            types["mailshare_http_request_duration_seconds"],
            "histogram"
        );
        let count = |route: &str, status: &str| -> f64 {
            samples
                .iter()
                .filter(|s| {
                    s.name == "mailshare_http_requests_total"
                        && s.labels["route"] == route
                        && s.labels["status"] == status
                })
                .map(|s| s.value)
                .sum()
        };
        assert_eq!(count("/api/v1/messages/{id}", "2xx"), 3.0);
        assert_eq!(count("/api/v1/messages/{id}", "4xx"), 1.0);
        assert_eq!(count("unmatched", "4xx"), 1.0);
        assert_eq!(count("/api/v1/contacts", "4xx"), 1.0);
        // Bounded labels: templates, methods, status classes; no address,
        // no id, no raw path anywhere.
        for s in &samples {
            for v in s.labels.values() {
                assert!(!v.contains('@'), "{s:?}");
                assert!(!v.contains(id.as_str()), "{s:?}");
                assert!(v.len() < 64, "{s:?}");
            }
        }
        // Store gauges are refreshed on scrape.
        let gauge = |n: &str| samples.iter().find(|s| s.name == n).map(|s| s.value);
        assert_eq!(gauge("mailshare_store_messages"), Some(2.0));
        assert!(gauge("mailshare_store_size_bytes").unwrap() > 0.0);
        assert!(gauge("mailshare_policy_reloads_total").is_some());
        server.stop().await;
    })
    .await
    .expect("deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let server = server().await;
    let h = server.get("/healthz", None).await;
    assert_eq!(
        (h.status, h.json()),
        (200, serde_json::json!({"status": "ok"}))
    );
    let r = server.get("/readyz", None).await.json();
    assert_eq!(r["status"], "ready");
    assert_eq!(r["users"], 2);
    server.stop().await;
}

// ---------------------------------------------------------------- OpenAPI

fn doc() -> Value {
    serde_json::from_str(admin::OPENAPI_JSON).expect("docs/openapi.json is JSON")
}

/// Validate `v` against the subset of JSON Schema the document uses:
/// `$ref`, `anyOf`, `type` (one or several), `enum`, `properties`,
/// `required`, `additionalProperties: false`, `items`.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r
            .strip_prefix("#/components/schemas/")
            .ok_or(format!("{at}: bad $ref {r}"))?;
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{at}: no schema {name}"));
        }
        return validate(doc, target, v, at);
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        if !any.iter().any(|s| validate(doc, s, v, at).is_ok()) {
            return Err(format!("{at}: {v} matches no alternative"));
        }
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return Err(format!("{at}: bad type")),
        };
        let ok = types.iter().any(|t| match *t {
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => false,
        });
        if !ok {
            return Err(format!("{at}: {v} is not {types:?}"));
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return Err(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let (Some(obj), Some(props)) = (
        v.as_object(),
        schema.get("properties").and_then(Value::as_object),
    ) {
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !obj.contains_key(r) {
                return Err(format!("{at}: missing {r}"));
            }
        }
        for (k, val) in obj {
            match props.get(k) {
                Some(s) => validate(doc, s, val, &format!("{at}.{k}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{at}: undocumented field {k}"))
                }
                None => {}
            }
        }
    }
    if let (Some(arr), Some(items)) = (v.as_array(), schema.get("items")) {
        for (i, x) in arr.iter().enumerate() {
            validate(doc, items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[test]
fn the_document_lists_exactly_the_routes_of_the_router() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            if method != "parameters" {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let routed: BTreeSet<(String, String)> = admin::route_table()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routed);
}

#[test]
fn every_example_in_the_document_matches_its_schema() {
    let doc = doc();
    let mut n = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let bodies = op["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(s, r)| (s.clone(), &r["content"]))
                .chain(std::iter::once((
                    "request".to_string(),
                    &op["requestBody"]["content"],
                )));
            for (status, content) in bodies {
                let Some(media) = content.get("application/json") else {
                    continue;
                };
                if let Some(example) = media.get("example") {
                    validate(
                        &doc,
                        &media["schema"],
                        example,
                        &format!("{method} {path} {status}"),
                    )
                    .unwrap();
                    n += 1;
                }
            }
        }
    }
    assert!(n >= 15, "{n} examples");
}

/// (method, route template, concrete path, token, body).
type Call = (
    &'static str,
    &'static str,
    String,
    Option<String>,
    Option<String>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_responses_match_the_documented_schemas_and_statuses() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let server = server().await;
        let doc = doc();
        let m1 = engine::message_key("o1@acme.example");
        let m2 = engine::message_key("o2@acme.example");
        let client_a = engine::policy_contact_id("Client A");
        let (alice, bob) = (token("alice"), token("bob"));
        let thread = {
            let v = server
                .get(&format!("/api/v1/messages/{m1}"), Some(&alice))
                .await
                .json();
            v["thread_id"].as_str().unwrap().to_string()
        };
        // (method, template, concrete path, token, body)
        let mut calls: Vec<Call> = vec![
            ("GET", "/healthz", "/healthz".into(), None, None),
            ("GET", "/readyz", "/readyz".into(), None, None),
            (
                "GET",
                "/api/v1/openapi.json",
                "/api/v1/openapi.json".into(),
                None,
                None,
            ),
            (
                "GET",
                "/api/v1/contacts",
                "/api/v1/contacts".into(),
                Some(bob.clone()),
                None,
            ),
            (
                "GET",
                "/api/v1/contacts",
                "/api/v1/contacts".into(),
                None,
                None,
            ),
            (
                "GET",
                "/api/v1/contacts",
                "/api/v1/contacts?limit=x".into(),
                Some(bob.clone()),
                None,
            ),
            (
                "GET",
                "/api/v1/contacts/{id}",
                format!("/api/v1/contacts/{client_a}"),
                Some(bob.clone()),
                None,
            ),
            (
                "GET",
                "/api/v1/contacts/{id}",
                "/api/v1/contacts/00".into(),
                Some(bob.clone()),
                None,
            ),
            (
                "GET",
                "/api/v1/contacts/{id}/timeline",
                format!("/api/v1/contacts/{client_a}/timeline?limit=1"),
                Some(bob.clone()),
                None,
            ),
            (
                "GET",
                "/api/v1/contacts/{id}/timeline",
                format!("/api/v1/contacts/{client_a}/timeline?as=bob%40acme.example"),
                Some(bob.clone()),
                None,
            ),
            (
                "GET",
                "/api/v1/messages/{id}",
                format!("/api/v1/messages/{m1}"),
                Some(alice.clone()),
                None,
            ),
            (
                "GET",
                "/api/v1/messages/{id}",
                format!("/api/v1/messages/{m1}"),
                Some(bob.clone()),
                None,
            ),
            (
                "GET",
                "/api/v1/messages/{id}",
                format!("/api/v1/messages/{m2}"),
                Some(alice.clone()),
                None,
            ),
            (
                "GET",
                "/api/v1/messages/{id}",
                format!("/api/v1/messages/{m1}"),
                Some(ADMIN_TOKEN.into()),
                None,
            ),
            (
                "GET",
                "/api/v1/messages/{id}/attachments/{n}",
                format!("/api/v1/messages/{m1}/attachments/0"),
                Some(bob.clone()),
                None,
            ),
            (
                "GET",
                "/api/v1/messages/{id}/attachments/{n}",
                format!("/api/v1/messages/{m1}/attachments/9"),
                Some(bob.clone()),
                None,
            ),
            (
                "GET",
                "/api/v1/threads/{id}",
                format!("/api/v1/threads/{thread}"),
                Some(bob.clone()),
                None,
            ),
            (
                "GET",
                "/api/v1/search",
                "/api/v1/search?q=figures".into(),
                Some(bob.clone()),
                None,
            ),
            (
                "GET",
                "/api/v1/search",
                "/api/v1/search".into(),
                Some(bob.clone()),
                None,
            ),
            (
                "POST",
                "/api/v1/messages/{id}/share",
                format!("/api/v1/messages/{m1}/share"),
                Some(bob.clone()),
                Some(r#"{"level":"full"}"#.into()),
            ),
            (
                "POST",
                "/api/v1/messages/{id}/share",
                format!("/api/v1/messages/{m2}/share"),
                Some(alice.clone()),
                Some(r#"{"level":"full"}"#.into()),
            ),
            (
                "POST",
                "/api/v1/messages/{id}/share",
                format!("/api/v1/messages/{m1}/share"),
                Some(alice.clone()),
                Some(r#"{"level":"full","viewers":["bob@acme.example"]}"#.into()),
            ),
            (
                "POST",
                "/api/v1/messages/{id}/share",
                format!("/api/v1/messages/{m1}/share"),
                Some(alice.clone()),
                Some(r#"{"nope":1}"#.into()),
            ),
            (
                "POST",
                "/api/v1/messages/{id}/access-requests",
                format!("/api/v1/messages/{m2}/access-requests"),
                Some(alice.clone()),
                Some("{}".into()),
            ),
            (
                "POST",
                "/api/v1/messages/{id}/access-requests",
                format!("/api/v1/messages/{m2}/access-requests"),
                Some(alice.clone()),
                Some("{}".into()),
            ),
            (
                "GET",
                "/api/v1/access-requests",
                "/api/v1/access-requests".into(),
                Some(bob.clone()),
                None,
            ),
        ];
        let mut request_id = None;
        let mut seen_statuses: BTreeSet<(String, String, u16)> = BTreeSet::new();
        let mut i = 0;
        while i < calls.len() {
            let (method, template, path, tok, body) = calls[i].clone();
            i += 1;
            let resp = call(server.addr, method, &path, tok.as_deref(), body.as_deref()).await;
            let op = &doc["paths"][template][method.to_lowercase()];
            assert!(op.is_object(), "{method} {template} documented");
            let documented = &op["responses"][resp.status.to_string()];
            assert!(
                documented.is_object(),
                "{method} {path} answered {} which is not documented: {}",
                resp.status,
                resp.text()
            );
            if let Some(media) = documented["content"].get("application/json") {
                if template != "/api/v1/openapi.json" {
                    validate(
                        &doc,
                        &media["schema"],
                        &resp.json(),
                        &format!("{method} {path} {}", resp.status),
                    )
                    .unwrap();
                }
            }
            seen_statuses.insert((method.to_string(), template.to_string(), resp.status));
            if template == "/api/v1/messages/{id}/access-requests" && resp.status == 201 {
                let rid = resp.json()["id"].as_str().unwrap().to_string();
                let first = request_id.is_none();
                request_id = Some(rid.clone());
                let approve = (
                    "POST",
                    "/api/v1/access-requests/{id}/approve",
                    format!("/api/v1/access-requests/{rid}/approve"),
                );
                let deny = (
                    "POST",
                    "/api/v1/access-requests/{id}/deny",
                    format!("/api/v1/access-requests/{rid}/deny"),
                );
                if first {
                    // The requester may not decide; the owner denies; ask again.
                    calls.push((approve.0, approve.1, approve.2, Some(alice.clone()), None));
                    calls.push((deny.0, deny.1, deny.2, Some(bob.clone()), None));
                    calls.push((
                        "POST",
                        "/api/v1/messages/{id}/access-requests",
                        format!("/api/v1/messages/{m2}/access-requests"),
                        Some(alice.clone()),
                        Some(r#"{"level":"full","note":"again"}"#.into()),
                    ));
                } else {
                    calls.push((
                        approve.0,
                        approve.1,
                        approve.2.clone(),
                        Some(bob.clone()),
                        None,
                    ));
                    calls.push((approve.0, approve.1, approve.2, Some(bob.clone()), None));
                    calls.push((deny.0, deny.1, deny.2, Some(bob.clone()), None));
                    calls.push((
                        "GET",
                        "/api/v1/access-requests",
                        "/api/v1/access-requests?status=approved".into(),
                        Some(alice.clone()),
                        None,
                    ));
                }
            }
        }
        assert!(request_id.is_some());
        // The served document is the file.
        let served = server.get("/api/v1/openapi.json", None).await;
        assert_eq!(served.json(), doc);
        // Every route was exercised with at least one 2xx.
        for (m, p) in admin::route_table() {
            if p == "/metrics" || (m, p) == ("DELETE", "/api/v1/contacts/{id}") {
                continue; // covered in their own tests
            }
            assert!(
                seen_statuses
                    .iter()
                    .any(|(sm, sp, st)| sm == m && sp == p && (200..300).contains(st)),
                "{m} {p} never succeeded"
            );
        }
        server.stop().await;
    })
    .await
    .expect("deadline");
}
