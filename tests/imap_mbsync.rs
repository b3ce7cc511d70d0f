//! mbsync (isync) syncs a mailbox of 500+ varied messages through the proxy
//! (STARTTLS, the demo certificate) and directly from Dovecot: the two local
//! maildirs hold byte-identical messages. Afterwards the store holds what the
//! canonical capture path (`ingest`, as `mailshare ingest` would) stores for
//! the same messages, and a colleague sees each at the same level.

#[path = "../benches/support/corpus.rs"]
mod corpus;
#[path = "imap_support/mod.rs"]
mod imap_support;
mod support;

use imap_support::{append_direct, maildir_contents, repo, wait_output, Options, Proxied};
use mailshare::engine::{self, Direction, Level, Viewer};
use mailshare::ingest::{self, IngestOutcome, IngestRequest};
use mailshare::store::{Durability, SledStore, Store, StoreOptions};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn mbsync(config: &str, dir: &Path) {
    let path = dir.join("mbsyncrc");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(support::upstreams::require("mbsync", "isync"))
        .arg("-c")
        .arg(&path)
        .arg("-a")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(300), "mbsync");
    assert!(
        out.status.success(),
        "mbsync failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn channel(name: &str, port: u16, ssl: &str, local: &Path) -> String {
    std::fs::create_dir_all(local).unwrap();
    format!(
        "IMAPAccount {name}\nHost 127.0.0.1\nPort {port}\nUser alice\nPass pw-alice\nSSLType {ssl}\n\
         AuthMechs LOGIN PLAIN\nCertificateFile {cert}\nSystemCertificates no\n\n\
         IMAPStore {name}-far\nAccount {name}\n\n\
         MaildirStore {name}-near\nPath {local}/\nInbox {local}/INBOX\n\n\
         Channel {name}\nFar :{name}-far:\nNear :{name}-near:\nPatterns INBOX\nCreate Near\nSync Pull\nSyncState *\n",
        cert = repo().join("config/tls/cert.pem").display(),
        local = local.display(),
    )
}

/// Drop the one `X-TUID: …` header line mbsync adds to each file.
fn without_tuid(files: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = files
        .into_iter()
        .map(|f| {
            let head_end = f.windows(2).position(|w| w == b"\n\n").unwrap_or(f.len());
            let Some(at) = f[..head_end].windows(8).position(|w| w == b"X-TUID: ") else {
                return f;
            };
            let eol = at + f[at..].iter().position(|&b| b == b'\n').unwrap() + 1;
            assert!(at == 0 || f[at - 1] == b'\n');
            [&f[..at], &f[eol..]].concat()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn mbsync_through_the_proxy_is_byte_identical_and_captured() {
    let p = Proxied::start(Options::default());
    // 400 small text mails plus the full mix (HTML, attachments, a few MB).
    let mut messages = corpus::small_messages(400, 7);
    messages.extend(corpus::generate(12 << 20, 11));
    assert!(messages.len() >= 500, "{}", messages.len());
    append_direct(&p.up, "alice", "INBOX", &messages);

    let tmp = tempfile::tempdir().unwrap();
    let t = Instant::now();
    mbsync(
        &channel(
            "direct",
            p.up.imap.port(),
            "None",
            &tmp.path().join("direct"),
        ),
        tmp.path(),
    );
    let direct_time = t.elapsed();
    let t = Instant::now();
    mbsync(
        &channel(
            "proxied",
            p.starttls.port(),
            "STARTTLS",
            &tmp.path().join("proxied"),
        ),
        tmp.path(),
    );
    let proxied_time = t.elapsed();
    // mbsync writes a random X-TUID header into every file it stores (its
    // transaction id); everything else must be identical.
    let direct = without_tuid(maildir_contents(&tmp.path().join("direct/INBOX")));
    let proxied = without_tuid(maildir_contents(&tmp.path().join("proxied/INBOX")));
    assert_eq!(direct.len(), messages.len());
    assert_eq!(proxied.len(), direct.len());
    if proxied != direct {
        for (a, b) in direct.iter().zip(&proxied) {
            if a != b {
                let at = a
                    .iter()
                    .zip(b)
                    .position(|(x, y)| x != y)
                    .unwrap_or(a.len().min(b.len()));
                let show = |v: &[u8]| {
                    String::from_utf8_lossy(&v[at.saturating_sub(80)..(at + 80).min(v.len())])
                        .into_owned()
                };
                panic!(
                    "the synced files differ at byte {at} (lengths {} / {}):\ndirect:  {:?}\nproxied: {:?}",
                    a.len(),
                    b.len(),
                    show(a),
                    show(b)
                );
            }
        }
    }
    eprintln!(
        "mbsync of {} messages: direct {direct_time:?}, through mailshare (STARTTLS) {proxied_time:?}",
        messages.len()
    );

    // The reference: the same messages through the canonical capture path.
    let policy = p.gateway.policy.current();
    let refdir = tempfile::tempdir().unwrap();
    let reference = SledStore::open(&refdir.path().join("store"), StoreOptions::default()).unwrap();
    let alice = policy.find_user("alice").unwrap().clone();
    let mut expected = Vec::new();
    for m in &messages {
        let facts = mailshare::mail::parse_headers(m, &[]).unwrap();
        let direction = if facts.from.iter().any(|f| alice.has_address(&f.address)) {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        let req = IngestRequest {
            owner: "alice",
            direction,
            envelope_recipients: &[],
            now: 1_800_000_000,
            max_capture_bytes: p.gateway.max_capture_bytes(),
            durability: Durability::Wait,
        };
        let out = ingest::ingest(&reference, &policy, m, &req).unwrap();
        expected.push((facts.message_id, out));
    }
    let stored: Vec<_> = expected
        .iter()
        .filter(|(_, o)| matches!(o, IngestOutcome::Stored { .. }))
        .collect();
    assert!(
        stored.len() > 100,
        "a meaningful share is captured: {}",
        stored.len()
    );

    // Wait for the proxy's captures, then compare record by record.
    let end = Instant::now() + Duration::from_secs(120);
    let colleagues = ["bob@acme.example", "carol@acme.example"];
    let mut levels_seen = std::collections::BTreeSet::new();
    for (message_id, outcome) in &expected {
        let key = engine::message_key(message_id);
        match outcome {
            IngestOutcome::Stored { .. } => {
                let want = reference.message(&key).unwrap().unwrap();
                let got = loop {
                    match p.store().message(&key).unwrap() {
                        Some(r) if r.stored >= want.stored => break r,
                        _ if Instant::now() > end => {
                            panic!("{message_id} not captured as expected")
                        }
                        _ => std::thread::sleep(Duration::from_millis(20)),
                    }
                };
                assert_eq!(got.ceiling(), want.ceiling(), "{message_id}");
                assert_eq!(got.stored, want.stored, "{message_id}");
                assert_eq!(got.direction, want.direction, "{message_id}");
                assert_eq!(got.subject, want.subject, "{message_id}");
                assert_eq!(
                    got.content.is_some(),
                    want.content.is_some(),
                    "{message_id}"
                );
                for c in colleagues {
                    let v = |r| engine::visible(&policy, &Viewer::new(c), r).level;
                    assert_eq!(v(&got), v(&want), "{message_id} for {c}");
                    levels_seen.insert(v(&got));
                }
            }
            IngestOutcome::Skipped(_) => {
                assert!(
                    p.store().message(&key).unwrap().is_none(),
                    "{message_id} must not be stored"
                );
            }
        }
    }
    // The policy's levels actually vary across the corpus.
    assert!(levels_seen.contains(&Level::Full), "{levels_seen:?}");
    assert!(levels_seen.len() >= 2, "{levels_seen:?}");
}
