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
                    assert_eq!(
                        keys_of(&e)
                            .difference(&entry_keys(e["level"].as_str().unwrap()))
                            .copied()
                            .collect::<Vec<_>>()
                            .iter()
                            .all(|k| *k == "bcc"),
                        true,
                        "{e}"
                    );
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
                    let visible_enough = match (want, min) {
                        (H, _) | (M, _) => false,
                        (S, F) => false,
                        _ => true,
                    };
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
