//! The admin API over real HTTP against a store filled through the real
//! capture path: the level every endpoint shows each viewer of each message
//! (a table written by hand from DESIGN §3, not computed by the engine),
//! the no-leak property over every response body, sharing, access
//! requests, contacts, and the negative cases.

mod support;

use mailshare::engine::{self, Direction, MessageFacts};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;
use support::*;

const IN: Direction = Direction::Inbound;
const OUT: Direction = Direction::Outbound;

/// Every test body runs under a deadline: a hang is a failure, not a stall.
async fn deadline<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("test finished within its deadline");
}

// ------------------------------------------------------------- fixtures

/// The team-mode policy. `read_time`: the policy in force when the API
/// serves, after carol turned activity off and dave left.
fn team_policy(read_time: bool) -> String {
    let (carol_activity, dave_status) = if read_time {
        ("false", "removed")
    } else {
        ("true", "active")
    };
    let t = |u: &str| sha256_hex(&token(u));
    format!(
        r#"
[organization]
name = "Acme"
internal_domains = ["acme.example"]
contacts = "team"
auto_create_contacts = "sent"

[defaults]
activity = true
inbound = "subject"
outbound = "full"

[[users]]
address = "alice@acme.example"
inbound = "full"
outbound = "full"
token_sha256 = "{alice}"

[[users.contacts]]
contact = "Globex"
level = "metadata"

[[users]]
address = "bob@acme.example"
share_since = 2026-01-01T00:00:00Z
token_sha256 = "{bob}"

[[users]]
address = "carol@acme.example"
activity = {carol_activity}
token_sha256 = "{carol}"

[[users]]
address = "dave@acme.example"
status = "{dave_status}"
token_sha256 = "{dave}"

[[users]]
address = "erin@acme.example"
token_sha256 = "{erin}"

[[contacts]]
name = "Client A"
kind = "organization"
domains = ["client-a.example"]

[[contacts]]
name = "Globex"
kind = "organization"
domains = ["globex.example"]
"#,
        alice = t("alice"),
        bob = t("bob"),
        carol = t("carol"),
        dave = t("dave"),
        erin = t("erin"),
    )
}

const ALICE: &str = "alice@acme.example";
const BOB: &str = "bob@acme.example";
const CAROL: &str = "carol@acme.example";
const ERIN: &str = "erin@acme.example";
const VIEWERS: [&str; 4] = [ALICE, BOB, CAROL, ERIN];

/// Level names as the API writes them; `-` = not visible at all.
const F: &str = "full";
const S: &str = "subject";
const M: &str = "metadata";
const H: &str = "-";

/// One fixture message: its key (`m1` …), Message-ID, the timeline it is
/// on, its thread root, and the level alice, bob, carol, erin see, from
/// the rules by hand:
struct Case {
    key: &'static str,
    message_id: &'static str,
    contact: &'static str,
    thread_root: Option<&'static str>,
    expect: [&'static str; 4],
    why: &'static str,
}

const CASES: &[Case] = &[
    Case { key: "m1", message_id: "m1@acme.example", contact: "Client A", thread_root: None,
        expect: [F, F, F, F], why: "alice outbound full; everyone sees her current full" },
    Case { key: "m2", message_id: "m2@client-a.example", contact: "Client A", thread_root: None,
        expect: [S, S, S, S], why: "bob inbound, org default subject (after his share_since)" },
    Case { key: "m3", message_id: "m3@client-a.example", contact: "Client A", thread_root: None,
        expect: [H, H, H, H], why: "dated before bob's share_since: never stored" },
    Case { key: "m4", message_id: "m4@acme.example", contact: "Client A", thread_root: None,
        expect: [H, H, F, H], why: "carol's own; her activity is off now: hidden from others at once" },
    Case { key: "m5", message_id: "m5@acme.example", contact: "Globex", thread_root: None,
        expect: [M, M, M, M], why: "alice's per-contact setting for Globex is metadata (carol cc'd sees the ceiling)" },
    Case { key: "m6", message_id: "m6@client-a.example", contact: "Client A", thread_root: None,
        expect: [M, M, M, M], why: "confidential subject caps alice's full at metadata" },
    Case { key: "m7", message_id: "m7@acme.example", contact: "Client A", thread_root: None,
        expect: [S, S, S, S], why: "alice's X-Mailshare-Share: subject binds every copy (bob's too)" },
    Case { key: "m8", message_id: "m8@acme.example", contact: "Client A", thread_root: None,
        expect: [S, F, F, S], why: "stored full by carol (activity off now); bob's copy subject; bob and carol participants" },
    Case { key: "m9", message_id: "m9@acme.example", contact: "Client A", thread_root: None,
        expect: [F, F, F, F], why: "alice outbound full with blind copies" },
    Case { key: "m10", message_id: "m10@acme.example", contact: "Client A", thread_root: None,
        expect: [F, F, F, F], why: "dave left; his copies stay shared as his settings say" },
    Case { key: "m11", message_id: "m11@acme.example", contact: "Client A", thread_root: Some("m2@client-a.example"),
        expect: [F, F, F, F], why: "bob's outbound reply to m2, org default full" },
    Case { key: "m13", message_id: "m13@acme.example", contact: "Client A", thread_root: Some("m2@client-a.example"),
        expect: [H, H, H, H], why: "alice's X-Mailshare-Share: hidden" },
];

fn case(key: &str) -> &'static Case {
    CASES.iter().find(|c| c.key == key).unwrap()
}

fn subject_token(key: &str) -> String {
    format!("sx{key}q")
}

fn body_token(key: &str) -> String {
    format!("bx{key}q")
}

fn attachment_tokens(key: &str) -> [String; 2] {
    [format!("ax{key}q"), format!("cx{key}q")]
}

fn eml(key: &str, date: &'static str, from: &str, to: &str) -> Eml {
    let c = case(key);
    let mut e = Eml::new(
        c.message_id,
        date,
        from,
        to,
        &format!("Topic {}", subject_token(key)),
        &format!("Hello, {} here.", body_token(key)),
    );
    e.in_reply_to = c.thread_root.map(str::to_string);
    e
}

fn team_mail() -> Vec<Capture> {
    let cap = |owner, direction, e: Eml| Capture {
        owner,
        direction,
        raw: e.render(),
    };
    let mut m1 = eml(
        "m1",
        "2 Mar 2026 09:00:00 +0000",
        "Alice <alice@acme.example>",
        "Bob Stone <bob@client-a.example>",
    );
    let [an, ac] = attachment_tokens("m1");
    m1.attachment = Some((format!("report-{an}.txt"), format!("attachment {ac}")));
    let m2 = eml(
        "m2",
        "2 Mar 2026 10:00:00 +0000",
        "x@client-a.example",
        "bob@acme.example",
    );
    let m3 = eml(
        "m3",
        "2 Jun 2025 10:00:00 +0000",
        "y@client-a.example",
        "bob@acme.example",
    );
    let m4 = eml(
        "m4",
        "3 Mar 2026 10:00:00 +0000",
        "carol@acme.example",
        "z@client-a.example",
    );
    let mut m5 = eml(
        "m5",
        "4 Mar 2026 10:00:00 +0000",
        "alice@acme.example",
        "hank@globex.example",
    );
    m5.cc = Some("carol@acme.example".into());
    let mut m6 = eml(
        "m6",
        "5 Mar 2026 10:00:00 +0000",
        "boss@client-a.example",
        "alice@acme.example",
    );
    m6.subject = format!("Private matter {}", subject_token("m6"));
    let mut m7 = eml(
        "m7",
        "6 Mar 2026 10:00:00 +0000",
        "alice@acme.example",
        "office@client-a.example",
    );
    m7.cc = Some("bob@acme.example".into());
    m7.share = Some("subject");
    let [an7, ac7] = attachment_tokens("m7");
    m7.attachment = Some((format!("{an7}.txt"), ac7));
    let mut m8 = eml(
        "m8",
        "7 Mar 2026 10:00:00 +0000",
        "carol@acme.example",
        "pat@client-a.example",
    );
    m8.cc = Some("bob@acme.example".into());
    let mut m9 = eml(
        "m9",
        "8 Mar 2026 10:00:00 +0000",
        "alice@acme.example",
        "pat@client-a.example",
    );
    m9.bcc = Some("erin@acme.example, secret@partner.example".into());
    let m10 = eml(
        "m10",
        "9 Mar 2026 10:00:00 +0000",
        "dave@acme.example",
        "q@client-a.example",
    );
    let m11 = eml(
        "m11",
        "10 Mar 2026 10:00:00 +0000",
        "bob@acme.example",
        "x@client-a.example",
    );
    let mut m13 = eml(
        "m13",
        "11 Mar 2026 10:00:00 +0000",
        "alice@acme.example",
        "x@client-a.example",
    );
    m13.share = Some("hidden");
    vec![
        cap("alice@acme.example", OUT, m1),
        cap("bob@acme.example", IN, m2),
        cap("bob@acme.example", IN, m3),
        cap("carol@acme.example", OUT, m4),
        cap("alice@acme.example", OUT, m5),
        cap("alice@acme.example", IN, m6),
        cap("alice@acme.example", OUT, eml_clone(&m7)),
        cap("bob@acme.example", IN, m7),
        cap("carol@acme.example", OUT, eml_clone(&m8)),
        cap("bob@acme.example", IN, m8),
        cap("alice@acme.example", OUT, m9),
        cap("dave@acme.example", OUT, m10),
        cap("bob@acme.example", OUT, m11),
        cap("alice@acme.example", OUT, m13),
    ]
}

fn eml_clone(e: &Eml) -> Eml {
    Eml {
        message_id: e.message_id.clone(),
        date: e.date,
        from: e.from.clone(),
        to: e.to.clone(),
        cc: e.cc.clone(),
        bcc: e.bcc.clone(),
        subject: e.subject.clone(),
        body: e.body.clone(),
        in_reply_to: e.in_reply_to.clone(),
        share: e.share,
        attachment: e.attachment.clone(),
    }
}

async fn team_server() -> Server {
    Server::start(&team_policy(false), &team_policy(true), &team_mail()).await
}

fn message_id_key(c: &Case) -> String {
    engine::message_key(c.message_id)
}

fn thread_key(c: &Case) -> String {
    let facts = MessageFacts {
        message_id: c.message_id.to_string(),
        in_reply_to: c.thread_root.iter().map(|s| s.to_string()).collect(),
        references: c.thread_root.iter().map(|s| s.to_string()).collect(),
        ..MessageFacts::default()
    };
    engine::thread_id(&facts)
}

/// Who reads: a user with their own token, or the admin token `?as=` them.
#[derive(Clone, Copy)]
struct Reader {
    user: &'static str,
    admin: bool,
}

impl Reader {
    fn token(&self) -> String {
        if self.admin {
            ADMIN_TOKEN.to_string()
        } else {
            token(self.user)
        }
    }

    /// `path` with `as=` added for the admin.
    fn path(&self, path: &str) -> String {
        if !self.admin {
            return path.to_string();
        }
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{path}{sep}as={}", enc(self.user))
    }

    fn index(&self) -> usize {
        VIEWERS.iter().position(|v| *v == self.user).unwrap()
    }

    fn name(&self) -> String {
        if self.admin {
            format!("admin?as={}", self.user)
        } else {
            self.user.to_string()
        }
    }
}

fn readers() -> Vec<Reader> {
    let mut r: Vec<Reader> = VIEWERS
        .iter()
        .map(|&user| Reader { user, admin: false })
        .collect();
    r.extend(VIEWERS.iter().map(|&user| Reader { user, admin: true }));
    r
}

/// The keys a timeline entry has at a level (plus `bcc` for participants).
fn entry_keys(level: &str) -> BTreeSet<&'static str> {
    let mut k: BTreeSet<&str> = [
        "id",
        "thread_id",
        "date",
        "direction",
        "level",
        "from",
        "to",
        "cc",
        "message_id",
        "owners",
        "size",
        "attachment_count",
    ]
    .into();
    if level != M {
        k.insert("subject");
    }
    k
}

fn keys_of(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

/// Collects every response body a reader got, for the leak check.
#[derive(Default)]
struct Seen(BTreeMap<String, Vec<String>>);

impl Seen {
    fn add(&mut self, r: &Reader, resp: &Resp) {
        self.0.entry(r.name()).or_default().push(resp.text());
    }
}

/// Every page of a listing, following `next_cursor`.
async fn all_pages(
    server: &Server,
    r: &Reader,
    base: &str,
    field: &str,
    seen: &mut Seen,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let sep = if base.contains('?') { '&' } else { '?' };
        let path = match &cursor {
            Some(c) => format!("{base}{sep}cursor={c}"),
            None => base.to_string(),
        };
        let resp = server.get(&r.path(&path), Some(&r.token())).await;
        assert_eq!(resp.status, 200, "{} GET {path}: {}", r.name(), resp.text());
        seen.add(r, &resp);
        let v = resp.json();
        out.extend(v[field].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_shows_each_viewer_exactly_the_level_the_rules_allow() {
    deadline(async {
        let server = team_server().await;
        let mut seen = Seen::default();
        let client_a = engine::policy_contact_id("Client A");
        let globex = engine::policy_contact_id("Globex");
        for r in readers() {
            let tok = r.token();
            // Timelines, in pages of 2 to exercise cursors past hidden entries.
            let mut on_timeline: BTreeMap<String, String> = BTreeMap::new();
            for contact in [&client_a, &globex] {
                let entries = all_pages(
                    &server,
                    &r,
                    &format!("/api/v1/contacts/{contact}/timeline?limit=2"),
                    "entries",
                    &mut seen,
                )
                .await;
                let dates: Vec<&str> = entries
                    .iter()
                    .map(|e| e["date"].as_str().unwrap())
                    .collect();
                let mut sorted = dates.clone();
                sorted.sort_by(|a, b| b.cmp(a));
                assert_eq!(dates, sorted, "{} newest first", r.name());
                for e in entries {
                    let prev = on_timeline.insert(
                        e["id"].as_str().unwrap().to_string(),
                        e["level"].as_str().unwrap().to_string(),
                    );
                    assert!(prev.is_none(), "an entry appears once per timeline");
                    let got: BTreeSet<&str> =
                        keys_of(&e).into_iter().filter(|k| *k != "bcc").collect();
                    assert_eq!(got, entry_keys(e["level"].as_str().unwrap()), "{e}");
                }
            }
            for c in CASES {
                let want = c.expect[r.index()];
                let id = message_id_key(c);
                let ctx = format!("{} reading {} ({})", r.name(), c.key, c.why);

                // One message.
                let resp = server
                    .get(&r.path(&format!("/api/v1/messages/{id}")), Some(&tok))
                    .await;
                seen.add(&r, &resp);
                if want == H {
                    assert_eq!(resp.error(), (404, "not_found".to_string()), "{ctx}");
                } else {
                    assert_eq!(resp.status, 200, "{ctx}: {}", resp.text());
                    let v = resp.json();
                    assert_eq!(v["level"], want, "{ctx}");
                    let mut keys = entry_keys(want);
                    if want == F {
                        keys.extend(["text", "html", "attachments"]);
                    }
                    let got: BTreeSet<&str> =
                        keys_of(&v).into_iter().filter(|k| *k != "bcc").collect();
                    assert_eq!(got, keys, "{ctx}: fields above the level are absent");
                    if want == F {
                        assert!(
                            v["text"].as_str().unwrap().contains(&body_token(c.key)),
                            "{ctx}"
                        );
                    }
                }

                // Its timeline entry.
                let entry = on_timeline.get(&id).map(String::as_str).unwrap_or(H);
                let expected_entry = if c.contact == "Client A" || c.contact == "Globex" {
                    want
                } else {
                    H
                };
                assert_eq!(entry, expected_entry, "{ctx}: timeline of {}", c.contact);

                // Its thread.
                let thread = thread_key(c);
                let resp = server
                    .get(&r.path(&format!("/api/v1/threads/{thread}")), Some(&tok))
                    .await;
                seen.add(&r, &resp);
                let in_thread = if resp.status == 404 {
                    H.to_string()
                } else {
                    assert_eq!(resp.status, 200, "{ctx}");
                    let v = resp.json();
                    let entries = v["entries"].as_array().unwrap();
                    assert!(!entries.is_empty(), "an empty thread is a 404");
                    entries
                        .iter()
                        .find(|e| e["id"] == id.as_str())
                        .map_or(H.to_string(), |e| e["level"].as_str().unwrap().to_string())
                };
                assert_eq!(in_thread, want, "{ctx}: thread");

                // Search: the subject word finds it only at subject or
                // above, the body word only at full.
                for (word, min) in [(subject_token(c.key), S), (body_token(c.key), F)] {
                    let resp = server
                        .get(&r.path(&format!("/api/v1/search?q={word}")), Some(&tok))
                        .await;
                    seen.add(&r, &resp);
                    assert_eq!(resp.status, 200, "{ctx}");
                    let results = resp.json()["results"].as_array().unwrap().clone();
                    let found: Vec<&Value> =
                        results.iter().filter(|e| e["id"] == id.as_str()).collect();
                    let visible_enough = !matches!((want, min), (H | M, _) | (S, F));
                    assert_eq!(
                        found.len(),
                        usize::from(visible_enough),
                        "{ctx}: search {word}"
                    );
                    assert_eq!(
                        results.len(),
                        found.len(),
                        "{ctx}: search {word} finds only its message"
                    );
                    if let Some(e) = found.first() {
                        assert_eq!(e["level"], want, "{ctx}");
                    }
                }
                // The sender's address is metadata: found at any visible level.
                if c.key == "m10" {
                    let resp = server
                        .get(&r.path("/api/v1/search?q=dave%40acme.example"), Some(&tok))
                        .await;
                    seen.add(&r, &resp);
                    let n = resp.json()["results"].as_array().unwrap().len();
                    assert_eq!(n, usize::from(want != H), "{ctx}");
                }

                // The attachment: bytes only at full.
                let att = server
                    .get(
                        &r.path(&format!("/api/v1/messages/{id}/attachments/0")),
                        Some(&tok),
                    )
                    .await;
                seen.add(&r, &att);
                let err = |code: &str, status| {
                    assert_eq!(att.error(), (status, code.to_string()), "{ctx}")
                };
                match (want, c.key) {
                    (H, _) => err("not_found", 404),
                    (F, "m1") => {
                        assert_eq!(att.status, 200, "{ctx}");
                        assert_eq!(att.header("content-type"), Some("text/plain"));
                        assert_eq!(att.header("x-content-type-options"), Some("nosniff"));
                        let cd = att.header("content-disposition").unwrap();
                        assert!(
                            cd.starts_with("attachment; ")
                                && cd.contains("filename*=UTF-8''report-axm1q.txt"),
                            "{cd}"
                        );
                        assert!(att.text().contains("cxm1q"));
                    }
                    (_, "m1" | "m7") => err("level_too_low", 403),
                    _ => err("not_found", 404),
                }
            }
        }

        // Bcc: the sender sees every blind copy, a blind recipient their
        // own, everyone else none (the key is absent).
        let m9 = message_id_key(case("m9"));
        let bcc_of = |v: &Value| -> Option<Vec<String>> {
            v.get("bcc").map(|b| {
                b.as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["address"].as_str().unwrap().to_string())
                    .collect()
            })
        };
        for (user, want) in [
            (
                ALICE,
                Some(vec!["erin@acme.example", "secret@partner.example"]),
            ),
            (ERIN, Some(vec!["erin@acme.example"])),
            (BOB, None),
            (CAROL, None),
        ] {
            let v = server
                .get(&format!("/api/v1/messages/{m9}"), Some(&token(user)))
                .await
                .json();
            let got = bcc_of(&v);
            assert_eq!(
                got,
                want.map(|w| w.into_iter().map(String::from).collect()),
                "{user}"
            );
        }

        // Owners whose current level is hidden are not listed to others:
        // carol (activity off) is not among m8's owners for alice.
        let m8 = message_id_key(case("m8"));
        let v = server
            .get(&format!("/api/v1/messages/{m8}"), Some(&token(ALICE)))
            .await
            .json();
        assert_eq!(v["owners"], serde_json::json!([BOB]));

        // The no-leak property: no body a reader got holds a subject word
        // of a message they may not see at subject, nor a body or
        // attachment word of one they may not see at full.
        let mut checked = 0;
        for r in readers() {
            let bodies = &seen.0[&r.name()];
            for c in CASES {
                let want = c.expect[r.index()];
                let mut forbidden = Vec::new();
                if want == H || want == M {
                    forbidden.push(subject_token(c.key));
                }
                if want != F {
                    forbidden.push(body_token(c.key));
                    forbidden.extend(attachment_tokens(c.key));
                }
                for word in &forbidden {
                    for b in bodies {
                        checked += 1;
                        assert!(
                            !b.contains(word.as_str()),
                            "{} got {word} ({} at {want}): {b}",
                            r.name(),
                            c.key
                        );
                    }
                }
            }
        }
        assert!(checked > 1000, "the property looked at many bodies");
        server.stop().await;
    })
    .await;
}

// ------------------------------------------------------------ buckets

fn buckets_policy() -> String {
    let t = |u: &str| sha256_hex(&token(u));
    format!(
        r#"
[organization]
name = "Acme"
internal_domains = ["acme.example"]
contacts = "buckets"
auto_create_contacts = "sent"

[defaults]
inbound = "subject"
outbound = "full"

[[users]]
address = "alice@acme.example"
token_sha256 = "{alice}"

[[users]]
address = "bob@acme.example"
token_sha256 = "{bob}"

[[users]]
address = "carol@acme.example"
token_sha256 = "{carol}"

[[users]]
address = "erin@acme.example"
token_sha256 = "{erin}"

[[contacts]]
name = "Client A"
kind = "organization"
domains = ["client-a.example"]

[[contacts]]
name = "Globex"
kind = "organization"
domains = ["globex.example"]

[[buckets]]
name = "Key accounts"
owner = "alice@acme.example"
contacts = ["Client A"]
members = [
    {{ user = "bob@acme.example", role = "viewer", view_conversations = true }},
    {{ user = "carol@acme.example", role = "manager", view_conversations = false }},
]
"#,
        alice = t("alice"),
        bob = t("bob"),
        carol = t("carol"),
        erin = t("erin"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_mode_opens_only_bucket_timelines_and_managers_delete() {
    deadline(async {
        let mail = |id: &str, from: &'static str, to: &str, key: &str| Capture {
            owner: from,
            direction: OUT,
            raw: Eml::new(
                id,
                "2 Mar 2026 09:00:00 +0000",
                from,
                to,
                &format!("Topic {}", subject_token(key)),
                &body_token(key),
            )
            .render(),
        };
        let policy = buckets_policy();
        let server = Server::start(
            &policy,
            &policy,
            &[
                mail(
                    "b1@acme.example",
                    "alice@acme.example",
                    "office@client-a.example",
                    "b1",
                ),
                mail(
                    "b2@acme.example",
                    "alice@acme.example",
                    "hank@globex.example",
                    "b2",
                ),
                mail(
                    "b3@acme.example",
                    "erin@acme.example",
                    "pat@client-a.example",
                    "b3",
                ),
            ],
        )
        .await;
        let client_a = engine::policy_contact_id("Client A");
        let globex = engine::policy_contact_id("Globex");
        // (message, [alice, bob, carol, erin]): alice owns the bucket, bob may
        // view its conversations, carol manages it without viewing, erin is
        // outside it; participants always see their own mail.
        let table: [(&str, &str, [&str; 4]); 3] = [
            ("b1@acme.example", "b1", [F, F, H, H]),
            ("b2@acme.example", "b2", [F, H, H, H]),
            ("b3@acme.example", "b3", [F, F, H, F]),
        ];
        for (mid, key, expect) in table {
            let id = engine::message_key(mid);
            for (i, user) in VIEWERS.iter().enumerate() {
                let resp = server
                    .get(&format!("/api/v1/messages/{id}"), Some(&token(user)))
                    .await;
                let got = if resp.status == 404 {
                    H.to_string()
                } else {
                    resp.json()["level"].as_str().unwrap().to_string()
                };
                assert_eq!(got, expect[i], "{user} reading {mid}");
                let found = server
                    .get(
                        &format!("/api/v1/search?q={}", subject_token(key)),
                        Some(&token(user)),
                    )
                    .await
                    .json()["results"]
                    .as_array()
                    .unwrap()
                    .len();
                assert_eq!(found, usize::from(expect[i] != H), "{user} searching {mid}");
            }
        }
        for (user, a, g) in [
            (ALICE, 200, 404),
            (BOB, 200, 404),
            (CAROL, 404, 404),
            (ERIN, 404, 404),
        ] {
            for (contact, want) in [(&client_a, a), (&globex, g)] {
                let t = server
                    .get(
                        &format!("/api/v1/contacts/{contact}/timeline"),
                        Some(&token(user)),
                    )
                    .await;
                assert_eq!(t.status, want, "{user} timeline {contact}");
                let c = server
                    .get(&format!("/api/v1/contacts/{contact}"), Some(&token(user)))
                    .await;
                assert_eq!(c.status, want, "{user} contact {contact}");
            }
            let listed: BTreeSet<String> = server
                .get("/api/v1/contacts", Some(&token(user)))
                .await
                .json()["contacts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect();
            // The organization in the bucket brings its people along (pat,
            // auto-created by erin's mail); Globex's hank stays out.
            let want: BTreeSet<String> = if a == 200 {
                ["Client A", "pat@client-a.example"]
                    .map(String::from)
                    .into()
            } else {
                BTreeSet::new()
            };
            assert_eq!(listed, want, "{user} lists the contacts they can open");
        }
        // Erin's own b3 is on Client A's timeline, which erin cannot open.
        let bob_entries = server
            .get(
                &format!("/api/v1/contacts/{client_a}/timeline"),
                Some(&token(BOB)),
            )
            .await
            .json();
        assert_eq!(bob_entries["entries"].as_array().unwrap().len(), 2);

        // Deleting: a viewer who can open it 403, an outsider 404, the
        // bucket's manager 204; then it is gone for everyone.
        let del = |user: &str| {
            let path = format!("/api/v1/contacts/{client_a}");
            let tok = token(user);
            let addr = server.addr;
            async move { call(addr, "DELETE", &path, Some(&tok), None).await }
        };
        assert_eq!(del(BOB).await.error(), (403, "not_manager".into()));
        assert_eq!(del(ERIN).await.error(), (404, "not_found".into()));
        assert_eq!(del(CAROL).await.status, 204);
        assert_eq!(del(CAROL).await.status, 404, "already tombstoned");
        assert_eq!(
            server
                .get(&format!("/api/v1/contacts/{client_a}"), Some(&token(ALICE)))
                .await
                .status,
            404
        );
        assert_eq!(
            server
                .get(
                    &format!("/api/v1/contacts/{client_a}/timeline"),
                    Some(&token(ALICE))
                )
                .await
                .status,
            404
        );
        let left: Vec<Value> = server
            .get("/api/v1/contacts", Some(&token(ALICE)))
            .await
            .json()["contacts"]
            .as_array()
            .unwrap()
            .clone();
        assert!(
            left.iter().all(|c| c["id"] != client_a.as_str()),
            "{left:?}"
        );
        server.stop().await;
    })
    .await;
}

// ------------------------------------------- sharing and access requests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_is_for_owners_and_never_above_the_ceiling() {
    deadline(async {
        let server = team_server().await;
        let id = |k: &str| message_id_key(case(k));
        let share = |user: &str, key: &str, body: &str| {
            let (addr, path, tok, body) = (
                server.addr,
                format!("/api/v1/messages/{}/share", id(key)),
                token(user),
                body.to_string(),
            );
            async move { call(addr, "POST", &path, Some(&tok), Some(&body)).await }
        };
        // A non-owner who sees the message: 403; one who does not: 404.
        assert_eq!(
            share(ERIN, "m1", r#"{"level":"full"}"#).await.error(),
            (403, "not_owner".into())
        );
        assert_eq!(
            share(ERIN, "m4", r#"{"level":"full"}"#).await.error(),
            (404, "not_found".into())
        );
        assert_eq!(
            share(BOB, "m13", r#"{"level":"full"}"#).await.error(),
            (404, "not_found".into())
        );
        // Above the ceiling: a grant above it, or an override another
        // owner's lower override keeps down (alice's `subject` on m7 binds bob).
        assert_eq!(
            share(
                ALICE,
                "m7",
                r#"{"level":"full","viewers":["erin@acme.example"]}"#
            )
            .await
            .error(),
            (422, "above_ceiling".into())
        );
        assert_eq!(
            share(BOB, "m7", r#"{"level":"full"}"#).await.error(),
            (422, "above_ceiling".into())
        );
        // Unknown or removed viewers, empty lists: 422.
        assert_eq!(
            share(
                ALICE,
                "m1",
                r#"{"level":"full","viewers":["nobody@acme.example"]}"#
            )
            .await
            .error(),
            (422, "unknown_viewer".into())
        );
        assert_eq!(
            share(
                ALICE,
                "m1",
                r#"{"level":"full","viewers":["dave@acme.example"]}"#
            )
            .await
            .error(),
            (422, "unknown_viewer".into())
        );
        assert_eq!(
            share(ALICE, "m1", r#"{"level":"full","viewers":[]}"#)
                .await
                .error(),
            (422, "invalid_viewers".into())
        );
        // Garbage levels and fields.
        assert_eq!(
            share(ALICE, "m1", r#"{"level":"everything"}"#)
                .await
                .error(),
            (422, "invalid_body".into())
        );
        assert_eq!(
            share(ALICE, "m1", r#"{"level":"full","extra":1}"#)
                .await
                .error(),
            (422, "invalid_body".into())
        );
        assert_eq!(
            share(ALICE, "m1", r#"{"level":"#).await.error(),
            (400, "bad_request".into())
        );

        // The owner lowers m1 to metadata: everyone else sees metadata at
        // once, and the stored fields above it are gone for good.
        let resp = share(ALICE, "m1", r#"{"level":"metadata"}"#).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let v = resp.json();
        assert_eq!(
            (
                v["ceiling"].as_str(),
                v["stored"].as_str(),
                v["override"].as_str()
            ),
            (Some(M), Some(M), Some(M))
        );
        let seen = server
            .get(
                &format!("/api/v1/messages/{}", id("m1")),
                Some(&token(ERIN)),
            )
            .await
            .json();
        assert_eq!(seen["level"], M);
        assert!(seen.get("subject").is_none());
        // Raising again shows only what is stored.
        let v = share(ALICE, "m1", r#"{"level":"full"}"#).await.json();
        assert_eq!(
            (v["ceiling"].as_str(), v["stored"].as_str()),
            (Some(F), Some(M))
        );
        assert_eq!(
            server
                .get(
                    &format!("/api/v1/messages/{}", id("m1")),
                    Some(&token(ERIN))
                )
                .await
                .json()["level"],
            M
        );

        // A grant to named viewers: m8 is stored full, alice and erin see
        // subject; bob (an owner) grants erin full.
        let v = share(
            BOB,
            "m8",
            r#"{"level":"full","viewers":["Erin@Acme.example"]}"#,
        )
        .await;
        assert_eq!(v.status, 200, "{}", v.text());
        assert_eq!(
            v.json()["grants"],
            serde_json::json!([{"viewer": ERIN, "level": F, "by": BOB}])
        );
        let e = server
            .get(
                &format!("/api/v1/messages/{}", id("m8")),
                Some(&token(ERIN)),
            )
            .await
            .json();
        assert_eq!(e["level"], F);
        assert!(e["text"].as_str().unwrap().contains(&body_token("m8")));
        assert_eq!(
            server
                .get(
                    &format!("/api/v1/messages/{}", id("m8")),
                    Some(&token(ALICE))
                )
                .await
                .json()["level"],
            S
        );
        // `hidden` with viewers revokes.
        assert_eq!(
            share(
                BOB,
                "m8",
                r#"{"level":"hidden","viewers":["erin@acme.example"]}"#
            )
            .await
            .status,
            200
        );
        assert_eq!(
            server
                .get(
                    &format!("/api/v1/messages/{}", id("m8")),
                    Some(&token(ERIN))
                )
                .await
                .json()["level"],
            S
        );

        // Hiding a message: the owner's override `hidden` makes it a 404 for
        // others, also in timelines, threads and search.
        assert_eq!(share(BOB, "m11", r#"{"level":"hidden"}"#).await.status, 200);
        for user in [ALICE, ERIN] {
            assert_eq!(
                server
                    .get(
                        &format!("/api/v1/messages/{}", id("m11")),
                        Some(&token(user))
                    )
                    .await
                    .status,
                404
            );
            let s = server
                .get(
                    &format!("/api/v1/search?q={}", subject_token("m11")),
                    Some(&token(user)),
                )
                .await
                .json();
            assert!(s["results"].as_array().unwrap().is_empty());
            let t = server
                .get(
                    &format!("/api/v1/threads/{}", thread_key(case("m11"))),
                    Some(&token(user)),
                )
                .await
                .json();
            assert!(t["entries"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["id"] != id("m11").as_str()));
        }
        // Hidden drops every stored field: the message is gone for its owner
        // too, so there is nothing left to share.
        assert_eq!(share(BOB, "m11", r#"{"level":"full"}"#).await.status, 404);
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_requests_go_to_owners_and_approval_grants_up_to_the_ceiling() {
    deadline(async {
        let server = team_server().await;
        let m8 = message_id_key(case("m8"));
        let post = |user: &str, path: String, body: &str| {
            let (addr, tok, body) = (server.addr, token(user), body.to_string());
            async move { call(addr, "POST", &path, Some(&tok), Some(&body)).await }
        };
        let ask = |user: &str, key: &str, body: &str| {
            post(
                user,
                format!(
                    "/api/v1/messages/{}/access-requests",
                    message_id_key(case(key))
                ),
                body,
            )
        };
        // Asking for what one sees already: 409; for what one cannot see at all: 404.
        assert_eq!(
            ask(ERIN, "m8", r#"{"level":"subject"}"#).await.error(),
            (409, "already_visible".into())
        );
        assert_eq!(
            ask(ERIN, "m4", r#"{}"#).await.error(),
            (404, "not_found".into())
        );
        // Above the ceiling is accepted (refusing would reveal the ceiling);
        // approval caps the grant at it.
        let capped = ask(ERIN, "m6", r#"{"level":"full"}"#).await;
        assert_eq!(capped.status, 201, "{}", capped.text());
        let capped_id = capped.json()["id"].as_str().unwrap().to_string();
        let granted = post(
            ALICE,
            format!("/api/v1/access-requests/{capped_id}/approve"),
            "",
        )
        .await
        .json();
        assert_eq!(granted["granted"], M, "m6 is capped at metadata");
        let m6 = message_id_key(case("m6"));
        let seen = server
            .get(&format!("/api/v1/messages/{m6}"), Some(&token(ERIN)))
            .await;
        assert_eq!(seen.json()["level"], M);
        assert_eq!(
            ask(ERIN, "m8", r#"{"note": "x\u0000y"}"#).await.error(),
            (422, "invalid_note".into())
        );
        let created = ask(ERIN, "m8", r#"{"note":"for the audit"}"#).await;
        assert_eq!(created.status, 201, "{}", created.text());
        let req = created.json();
        assert_eq!(
            (
                req["level"].as_str(),
                req["status"].as_str(),
                req["message"].as_str()
            ),
            (Some(F), Some("pending"), Some(m8.as_str()))
        );
        assert!(
            req.get("owners").is_none(),
            "owners are not shown to the requester"
        );
        assert_eq!(
            ask(ERIN, "m8", "{}").await.error(),
            (409, "duplicate_request".into())
        );
        let rid = req["id"].as_str().unwrap().to_string();

        // Listed to both owners (bob, and carol whose activity is off) and to erin.
        for owner in [BOB, CAROL] {
            let l = server
                .get("/api/v1/access-requests", Some(&token(owner)))
                .await
                .json();
            assert_eq!(l["to_me"][0]["id"], rid.as_str(), "{owner}");
            assert_eq!(l["to_me"][0]["note"], "for the audit");
        }
        let mine = server
            .get("/api/v1/access-requests?status=pending", Some(&token(ERIN)))
            .await
            .json();
        assert_eq!(mine["from_me"][0]["id"], rid.as_str());
        assert!(mine["to_me"].as_array().unwrap().is_empty());
        let admin_view = server
            .get(
                &format!("/api/v1/access-requests?as={}", enc(ERIN)),
                Some(ADMIN_TOKEN),
            )
            .await
            .json();
        let own = server
            .get("/api/v1/access-requests", Some(&token(ERIN)))
            .await
            .json();
        assert_eq!(admin_view, own, "an admin reads as erin, no more");

        // Only an owner decides: the requester 403, anyone else 404, an
        // admin token 403 (it cannot act for a user).
        let approve = |user: &str| post(user, format!("/api/v1/access-requests/{rid}/approve"), "");
        assert_eq!(approve(ERIN).await.error(), (403, "not_owner".into()));
        assert_eq!(approve(ALICE).await.error(), (404, "not_found".into()));
        let admin = call(
            server.addr,
            "POST",
            &format!("/api/v1/access-requests/{rid}/approve"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
        assert_eq!(admin.error(), (403, "user_token_required".into()));
        assert_eq!(
            server
                .get(&format!("/api/v1/messages/{m8}"), Some(&token(ERIN)))
                .await
                .json()["level"],
            S
        );
        let done = approve(CAROL).await;
        assert_eq!(done.status, 200, "{}", done.text());
        let done = done.json();
        assert_eq!(
            (
                done["status"].as_str(),
                done["granted"].as_str(),
                done["decided_by"].as_str()
            ),
            (Some("approved"), Some(F), Some(CAROL))
        );
        assert_eq!(
            server
                .get(&format!("/api/v1/messages/{m8}"), Some(&token(ERIN)))
                .await
                .json()["level"],
            F
        );
        assert_eq!(approve(BOB).await.error(), (409, "already_decided".into()));
        let deny = post(BOB, format!("/api/v1/access-requests/{rid}/deny"), "").await;
        assert_eq!(deny.error(), (409, "already_decided".into()));
        // Alice still sees subject: the grant was erin's.
        assert_eq!(
            server
                .get(&format!("/api/v1/messages/{m8}"), Some(&token(ALICE)))
                .await
                .json()["level"],
            S
        );

        // A denial grants nothing.
        let r2 = ask(ALICE, "m8", "{}").await.json();
        let d = post(
            BOB,
            format!(
                "/api/v1/access-requests/{}/deny",
                r2["id"].as_str().unwrap()
            ),
            "",
        )
        .await
        .json();
        assert_eq!(d["status"], "denied");
        assert_eq!(
            server
                .get(&format!("/api/v1/messages/{m8}"), Some(&token(ALICE)))
                .await
                .json()["level"],
            S
        );
        server.stop().await;
    })
    .await;
}

// ----------------------------------------------------------- contacts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_list_with_prefix_search_and_pages_and_admins_delete() {
    deadline(async {
        let server = team_server().await;
        let tok = token(ERIN);
        // Policy contacts plus those alice's and bob's sent mail created.
        let all = all_pages(
            &server,
            &Reader {
                user: ERIN,
                admin: false,
            },
            "/api/v1/contacts?limit=1",
            "contacts",
            &mut Seen::default(),
        )
        .await;
        let names: BTreeSet<&str> = all.iter().map(|c| c["name"].as_str().unwrap()).collect();
        for n in ["Client A", "Globex", "Bob Stone", "hank@globex.example"] {
            assert!(names.contains(n), "{n} in {names:?}");
        }
        let ids: Vec<&str> = all.iter().map(|c| c["id"].as_str().unwrap()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids, sorted, "ordered by id, each once");
        let bob_stone = all.iter().find(|c| c["name"] == "Bob Stone").unwrap();
        assert_eq!(bob_stone["kind"], "person");
        assert_eq!(
            bob_stone["addresses"],
            serde_json::json!(["bob@client-a.example"])
        );
        assert_eq!(
            bob_stone["organization_id"],
            engine::policy_contact_id("Client A").as_str()
        );

        let q = |q: &str| {
            let (addr, tok, path) = (
                server.addr,
                tok.clone(),
                format!("/api/v1/contacts?q={}", enc(q)),
            );
            async move {
                call(addr, "GET", &path, Some(&tok), None).await.json()["contacts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["name"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(q("glob").await, ["Globex"]);
        assert_eq!(
            q("STONE").await,
            ["Bob Stone"],
            "any word of the name, any case"
        );
        assert_eq!(q("bob@client").await, ["Bob Stone"], "addresses");
        assert_eq!(q("client-a.ex").await, ["Client A"], "domains");
        assert!(q("zzz").await.is_empty());

        // One contact; unknown ids 404; a user who can open it cannot delete it.
        let globex = engine::policy_contact_id("Globex");
        let one = server
            .get(&format!("/api/v1/contacts/{globex}"), Some(&tok))
            .await
            .json();
        assert_eq!(one["domains"], serde_json::json!(["globex.example"]));
        assert_eq!(
            server
                .get("/api/v1/contacts/0123456789abcdef", Some(&tok))
                .await
                .error(),
            (404, "not_found".into())
        );
        assert_eq!(
            server
                .delete(&format!("/api/v1/contacts/{globex}"), Some(&tok))
                .await
                .error(),
            (403, "not_manager".into())
        );
        assert_eq!(
            server
                .delete(
                    &format!("/api/v1/contacts/{globex}?as=erin%40acme.example"),
                    Some(ADMIN_TOKEN)
                )
                .await
                .error(),
            (400, "as_not_applicable".into())
        );
        assert_eq!(
            server
                .delete(&format!("/api/v1/contacts/{globex}"), Some(ADMIN_TOKEN))
                .await
                .status,
            204
        );
        assert_eq!(
            server
                .get(&format!("/api/v1/contacts/{globex}"), Some(&tok))
                .await
                .status,
            404
        );
        assert_eq!(
            server
                .get(&format!("/api/v1/contacts/{globex}/timeline"), Some(&tok))
                .await
                .status,
            404
        );
        assert_eq!(
            server
                .delete(&format!("/api/v1/contacts/{globex}"), Some(ADMIN_TOKEN))
                .await
                .status,
            404
        );
        assert!(!q("glob").await.contains(&"Globex".to_string()));
        // An auto-created contact: only an admin deletes it.
        let hank = all
            .iter()
            .find(|c| c["name"] == "hank@globex.example")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            server
                .delete(&format!("/api/v1/contacts/{hank}"), Some(&token(ALICE)))
                .await
                .error(),
            (403, "not_manager".into())
        );
        assert_eq!(
            server
                .delete(&format!("/api/v1/contacts/{hank}"), Some(ADMIN_TOKEN))
                .await
                .status,
            204
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_filters_by_direction_and_query_within_the_level() {
    deadline(async {
        let server = team_server().await;
        let client_a = engine::policy_contact_id("Client A");
        let ids = |v: Value| -> BTreeSet<String> {
            v["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect()
        };
        let get = |q: &str| {
            let (addr, path) = (
                server.addr,
                format!("/api/v1/contacts/{client_a}/timeline?{q}"),
            );
            async move {
                call(addr, "GET", &path, Some(&token(ALICE)), None)
                    .await
                    .json()
            }
        };
        let inbound = ids(get("direction=inbound").await);
        let expected: BTreeSet<String> = ["m2", "m6", "m8"]
            .iter()
            .map(|k| message_id_key(case(k)))
            .collect();
        // m8 is inbound for bob and outbound for carol: a record's direction
        // is its owners' highest (outbound), so it is not inbound.
        let expected: BTreeSet<String> = expected
            .into_iter()
            .filter(|i| *i != message_id_key(case("m8")))
            .collect();
        assert_eq!(inbound, expected);
        // q matches the subject at subject level, never the body below full.
        assert_eq!(
            ids(get(&format!("q={}", subject_token("m2"))).await),
            [message_id_key(case("m2"))].into()
        );
        assert!(
            ids(get(&format!("q={}", body_token("m8"))).await).is_empty(),
            "alice sees m8 at subject only"
        );
        assert_eq!(
            ids(get(&format!("q={}", body_token("m9"))).await),
            [message_id_key(case("m9"))].into()
        );
        // Several terms must all match (sender and subject here).
        assert_eq!(
            ids(get(&format!("q=x%40client-a.example+{}", subject_token("m2"))).await).len(),
            1
        );
        assert!(ids(get(&format!("q=nobody+{}", subject_token("m2"))).await).is_empty());
        server.stop().await;
    })
    .await;
}

// ------------------------------------------------------------ negatives

/// A GET path per read endpoint, with real ids.
fn read_paths() -> Vec<String> {
    let m1 = message_id_key(case("m1"));
    let client_a = engine::policy_contact_id("Client A");
    vec![
        "/api/v1/contacts".into(),
        format!("/api/v1/contacts/{client_a}"),
        format!("/api/v1/contacts/{client_a}/timeline"),
        format!("/api/v1/messages/{m1}"),
        format!("/api/v1/messages/{m1}/attachments/0"),
        format!("/api/v1/threads/{}", thread_key(case("m1"))),
        "/api/v1/search?q=figures".into(),
        "/api/v1/access-requests".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_missing_invalid_removed_and_as_misuse_are_refused() {
    deadline(async {
        let server = team_server().await;
        let m1 = message_id_key(case("m1"));
        for path in read_paths() {
            // No token, a wrong one, a malformed header, a removed user's.
            for auth in [
                None,
                Some("Bearer nope"),
                Some("Basic dG9rLWFsaWNl"),
                Some("Bearer "),
                Some(&*format!("Bearer {}", token("dave"))),
            ] {
                let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
                if let Some(a) = auth {
                    req.push_str(&format!("Authorization: {a}\r\n"));
                }
                req.push_str("\r\n");
                let resp = raw(server.addr, req.as_bytes()).await;
                assert_eq!(
                    resp.error(),
                    (401, "unauthorized".into()),
                    "{path} with {auth:?}"
                );
                assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
            }
            // ?as= by a user: 403; an admin without ?as=: 400; ?as= naming a
            // removed or unknown user: 400.
            let sep = if path.contains('?') { '&' } else { '?' };
            let as_bob = format!("{path}{sep}as=bob%40acme.example");
            assert_eq!(
                server.get(&as_bob, Some(&token(ALICE))).await.error(),
                (403, "as_forbidden".into()),
                "{path}"
            );
            assert_eq!(
                server.get(&path, Some(ADMIN_TOKEN)).await.error(),
                (400, "as_required".into()),
                "{path}"
            );
            for who in ["dave%40acme.example", "nobody%40acme.example", ""] {
                let p = format!("{path}{sep}as={who}");
                assert_eq!(
                    server.get(&p, Some(ADMIN_TOKEN)).await.error(),
                    (400, "unknown_user".into()),
                    "{p}"
                );
            }
        }
        // Owner actions with the wrong token.
        let share = format!("/api/v1/messages/{m1}/share");
        assert_eq!(
            server
                .post(&share, Some(ADMIN_TOKEN), r#"{"level":"full"}"#)
                .await
                .error(),
            (403, "user_token_required".into())
        );
        let share_as = format!("{share}?as=alice%40acme.example");
        assert_eq!(
            server
                .post(&share_as, Some(ADMIN_TOKEN), r#"{"level":"full"}"#)
                .await
                .error(),
            (403, "user_token_required".into())
        );
        assert_eq!(
            server
                .post(&share_as, Some(&token(ALICE)), r#"{"level":"full"}"#)
                .await
                .error(),
            (403, "as_forbidden".into())
        );
        assert_eq!(
            server
                .post(&share, Some(&token("dave")), r#"{"level":"full"}"#)
                .await
                .error(),
            (401, "unauthorized".into())
        );
        assert_eq!(
            server
                .post(&share, None, r#"{"level":"full"}"#)
                .await
                .error(),
            (401, "unauthorized".into())
        );
        assert_eq!(
            server
                .delete(
                    &format!("/api/v1/contacts/{}", engine::policy_contact_id("Globex")),
                    None
                )
                .await
                .status,
            401
        );
        // Responses are private to their viewer.
        let r = server
            .get(&format!("/api/v1/messages/{m1}"), Some(&token(ALICE)))
            .await;
        assert_eq!(r.header("cache-control"), Some("private, no-store"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        // An admin reading as alice sees what alice sees.
        let a = r.json();
        let b = server
            .get(
                &format!("/api/v1/messages/{m1}?as=ALICE%40acme.example"),
                Some(ADMIN_TOKEN),
            )
            .await
            .json();
        assert_eq!(a, b);
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_query_and_body_abuse_gets_4xx_json_never_500() {
    deadline(async {
        let server = team_server().await;
        let tok = token(ALICE);
        let m1 = message_id_key(case("m1"));
        let client_a = engine::policy_contact_id("Client A");
        let long = "a".repeat(10_000);
        let cases: Vec<(String, u16, &str)> = vec![
            (format!("/api/v1/messages/{long}"), 400, "invalid_id"),
            (format!("/api/v1/contacts/{long}/timeline"), 400, "invalid_id"),
            ("/api/v1/messages/%ff%fe".into(), 400, "bad_request"),
            ("/api/v1/messages/%zz".into(), 400, "invalid_id"),
            ("/api/v1/messages/..%2f..%2fetc".into(), 400, "invalid_id"),
            ("/api/v1/messages/ABCDEF".into(), 400, "invalid_id"),
            ("/api/v1/messages/abc%00def".into(), 400, "invalid_id"),
            ("/api/v1/threads/x".into(), 400, "invalid_id"),
            ("/api/v1/access-requests/zz/approve".into(), 405, "method_not_allowed"),
            (format!("/api/v1/messages/{m1}/attachments/abc"), 400, "invalid_index"),
            (format!("/api/v1/messages/{m1}/attachments/99999999999999999999"), 400, "invalid_index"),
            (format!("/api/v1/messages/{m1}/attachments/-1"), 400, "invalid_index"),
            (format!("/api/v1/messages/{m1}/attachments/5"), 404, "not_found"),
            (format!("/api/v1/contacts/{client_a}/timeline?limit=-1"), 400, "invalid_limit"),
            (format!("/api/v1/contacts/{client_a}/timeline?limit=0"), 400, "invalid_limit"),
            (format!("/api/v1/contacts/{client_a}/timeline?limit=1e9"), 400, "invalid_limit"),
            (format!("/api/v1/contacts/{client_a}/timeline?cursor=garbage"), 400, "invalid_cursor"),
            (format!("/api/v1/contacts/{client_a}/timeline?cursor={long}"), 400, "invalid_cursor"),
            (format!("/api/v1/contacts/{client_a}/timeline?cursor=%ff"), 400, "invalid_cursor"),
            (format!("/api/v1/contacts/{client_a}/timeline?direction=sideways"), 400, "invalid_direction"),
            (format!("/api/v1/contacts/{client_a}/timeline?limit=1&limit=2"), 400, "bad_request"),
            (format!("/api/v1/contacts/{client_a}/timeline?bogus=1"), 400, "bad_request"),
            ("/api/v1/contacts?cursor=NOTHEX".into(), 400, "invalid_cursor"),
            (format!("/api/v1/contacts?q={long}"), 400, "invalid_query"),
            ("/api/v1/search".into(), 400, "invalid_query"),
            ("/api/v1/search?q=%20%20".into(), 400, "invalid_query"),
            (format!("/api/v1/search?q={}", "a+".repeat(40)), 400, "invalid_query"),
            ("/api/v1/access-requests?status=maybe".into(), 400, "invalid_status"),
            ("/api/v1/nope".into(), 404, "no_route"),
            ("/api/v1/messages".into(), 404, "no_route"),
        ];
        for (path, status, code) in cases {
            let resp = server.get(&path, Some(&tok)).await;
            let shown: String = path.chars().take(80).collect();
            assert_eq!(resp.error(), (status, code.to_string()), "GET {shown}");
        }
        // Huge limits are clamped, not refused; odd but valid queries answer.
        for path in [
            format!("/api/v1/contacts/{client_a}/timeline?limit=99999999999999999999999999"),
            "/api/v1/search?q=%ff%fe".into(),
            "/api/v1/search?q=%25zz".into(),
            format!("/api/v1/contacts/{client_a}/timeline?cursor=7fffffffffffffff{m1}"),
        ] {
            let resp = server.get(&path, Some(&tok)).await;
            assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        }
        // Bodies: too large 413, not JSON 415, malformed 400, wrong shape 422.
        let share = format!("/api/v1/messages/{m1}/share");
        let big = format!(r#"{{"level":"full","viewers":["{}"]}}"#, "x".repeat(100 * 1024));
        assert_eq!(server.post(&share, Some(&tok), &big).await.error(), (413, "payload_too_large".into()));
        let plain = format!("POST {share} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {tok}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi");
        assert_eq!(raw(server.addr, plain.as_bytes()).await.error(), (415, "unsupported_media_type".into()));
        assert_eq!(server.post(&share, Some(&tok), "").await.error(), (400, "bad_request".into()));
        let (status, _) = server.post(&share, Some(&tok), "[1,2]").await.error();
        assert!(status == 400 || status == 422, "{status}");
        assert_eq!(server.post(&share, Some(&tok), r#"{"level":"full","viewers":"x"}"#).await.error(), (422, "invalid_body".into()));
        assert_eq!(server.post(&share, Some(&tok), "\u{0}\u{1}").await.error(), (400, "bad_request".into()));
        // Methods a path does not serve.
        assert_eq!(server.delete(&format!("/api/v1/messages/{m1}"), Some(&tok)).await.error(), (405, "method_not_allowed".into()));
        // Bytes hyper refuses before any handler (raw non-ASCII in the
        // request line): still a 4xx, never a 5xx.
        let resp = raw(server.addr, b"GET /api/v1/messages/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!((400..500).contains(&resp.status), "{}", resp.status);
        server.stop().await;
    })
    .await;
}
