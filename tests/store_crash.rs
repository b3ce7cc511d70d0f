//! Crash safety of group commit: a capture acknowledged to its caller (the
//! SMTP 250) survives SIGKILL.
//!
//! The parent test re-executes this test binary as a writer child
//! (`MAILSHARE_CRASH_CHILD=<dir>`, running only `crash_child`). The child
//! captures from several threads and prints `ack <round> <thread> <i>` only
//! after `capture` returned. The parent reads acks, SIGKILLs the child after
//! [`ACKS_BEFORE_KILL`], reopens the store and checks that every acknowledged
//! message is there with its fields and blobs, that the store is internally
//! consistent, and that new captures work; three rounds on the same store.
//! Every wait has a deadline, and the child exits by itself after
//! [`CHILD_LIFETIME`], so nothing can hang or leak.

mod common;

use common::*;
use mailshare::engine::{Direction, Level};
use mailshare::store::{sha256_hex, Durability, SledStore, Store, StoreOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "MAILSHARE_CRASH_CHILD";
const ROUND_ENV: &str = "MAILSHARE_CRASH_ROUND";
const THREADS: usize = 4;
const ROUNDS: usize = 3;
const ACKS_BEFORE_KILL: usize = 300;
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
const OVERALL_DEADLINE: Duration = Duration::from_secs(240);

/// 20 kB shared by many messages (dedup and refcounts under crashes).
fn shared_attachment() -> Vec<u8> {
    (0..20_000u32).map(|i| (i % 251) as u8).collect()
}

/// Message `i` of `thread` in `round`, and whether a second owner restricts
/// it to metadata before it is acknowledged (releases blobs under crashes).
fn crash_mail(round: usize, thread: usize, i: usize) -> (Mail, bool) {
    let mut m = Mail::new(
        &format!("crash-{round}-{thread}-{i}@acme.example"),
        1_700_000_000 + (i as i64) * 7 + thread as i64,
        &format!("client{}@client{}.example", i % 13, thread),
        &format!("crash {round} {thread} {i}"),
    );
    if i.is_multiple_of(5) {
        m = m.attach("shared.bin", shared_attachment());
    }
    if i.is_multiple_of(3) {
        m = m.attach("own.txt", format!("own {round} {thread} {i}").into_bytes());
    }
    (m, i % 7 == 3)
}

/// The writer child. A no-op when run as an ordinary test.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let round: usize = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    // Lingering before each flush widens the window in which applied but
    // unflushed captures exist: a capture acknowledged before its flush
    // would be caught.
    let opts = StoreOptions {
        max_batch_delay: Duration::from_millis(2),
        ..options()
    };
    let store = Arc::new(SledStore::open(Path::new(&dir), opts).unwrap());
    let p = Arc::new(policy());
    let deadline = Instant::now() + CHILD_LIFETIME;
    // One more writer captures without waiting for durability (as IMAP
    // does): what it loses in the kill is never acknowledged, but it must
    // never leave the store inconsistent.
    let background = {
        let (store, p) = (store.clone(), p.clone());
        std::thread::spawn(move || {
            for i in 0.. {
                if Instant::now() > deadline {
                    std::process::exit(3);
                }
                let (m, _) = crash_mail(round, THREADS, i);
                let c = m.content();
                let mut input = m.input(&c, copy(BOB, Direction::Inbound, Level::Full));
                input.durability = Durability::Background;
                store.capture(&p, input).unwrap();
            }
        })
    };
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (store, p) = (store.clone(), p.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if Instant::now() > deadline {
                        // The parent should have killed us long ago.
                        std::process::exit(3);
                    }
                    let (m, restricted) = crash_mail(round, t, i);
                    let c = m.content();
                    store
                        .capture(
                            &p,
                            m.input(&c, copy(ALICE, Direction::Outbound, Level::Full)),
                        )
                        .unwrap();
                    if restricted {
                        let bob = override_copy(BOB, Direction::Inbound, Level::Metadata);
                        store.capture(&p, m.input(&c, bob)).unwrap();
                    }
                    // Straight to fd 1 (not print!, which the harness captures).
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {round} {t} {i}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for h in handles.into_iter().chain([background]) {
        h.join().unwrap();
    }
}

fn parse_ack(line: &str) -> Option<(usize, usize, usize)> {
    let mut it = line.strip_prefix("ack ")?.split(' ');
    let mut n = || it.next()?.parse().ok();
    Some((n()?, n()?, n()?))
}

/// Everything acknowledged must be there, exactly as captured.
fn verify_acked(store: &SledStore, acks: &[(usize, usize, usize)]) {
    let shared_sha = sha256_hex(&shared_attachment());
    for &(round, t, i) in acks {
        let (m, restricted) = crash_mail(round, t, i);
        let r = store
            .message(&m.id())
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged message {round}/{t}/{i} lost"));
        assert_eq!(r.message_id, m.facts.message_id);
        assert_eq!(r.date, m.facts.date.unwrap());
        assert_eq!(r.to, m.facts.to);
        assert_eq!(r.attachment_count, m.facts.attachment_count);
        if restricted {
            assert_eq!(r.owners.len(), 2, "{round}/{t}/{i}");
            assert_eq!(r.stored, Level::Metadata);
            assert!(r.subject.is_none() && r.content.is_none());
            continue;
        }
        assert_eq!(r.stored, Level::Full, "{round}/{t}/{i}");
        assert_eq!(r.subject, m.facts.subject);
        let content = r.content.as_ref().unwrap();
        let text = store
            .blob(&content.text.as_ref().unwrap().sha256)
            .unwrap()
            .expect("text blob");
        assert_eq!(text, m.text.as_bytes());
        assert_eq!(content.attachments.len(), m.attachments.len());
        for (stored, (name, bytes)) in content.attachments.iter().zip(&m.attachments) {
            assert_eq!(stored.name.as_deref(), Some(name.as_str()));
            assert_eq!(store.blob(&stored.blob.sha256).unwrap().unwrap(), *bytes);
            if name == "shared.bin" {
                assert_eq!(stored.blob.sha256, shared_sha);
            }
        }
    }
}

#[test]
fn acknowledged_captures_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let deadline = Instant::now() + OVERALL_DEADLINE;
    let mut all_acks = Vec::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        let mut acks = Vec::new();
        let failure = loop {
            if acks.len() >= ACKS_BEFORE_KILL {
                break None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_secs(60))) {
                Ok(line) => acks.extend(parse_ack(&line)),
                Err(RecvTimeoutError::Timeout) => break Some("timed out waiting for acks"),
                Err(RecvTimeoutError::Disconnected) => break Some("child exited early"),
            }
        };
        // SIGKILL: no destructor, no final flush.
        let _ = child.kill();
        let status = child.wait().unwrap();
        if let Some(why) = failure {
            panic!("round {round}: {why} after {} acks ({status})", acks.len());
        }
        // Lines already written before the kill were acknowledged too.
        acks.extend(rx.iter().filter_map(|l| parse_ack(&l)));
        reader.join().unwrap();
        assert!(acks.iter().all(|a| a.0 == round));
        all_acks.extend(acks.iter().copied());

        let store = SledStore::open(dir.path(), options()).unwrap();
        let problems = store.check_consistency().unwrap();
        assert!(problems.is_empty(), "round {round}: {problems:#?}");
        verify_acked(&store, &all_acks);

        // And the store keeps working.
        let m = Mail::new(
            &format!("after-{round}@acme.example"),
            1_800_000_000,
            "carol@client.example",
            "after",
        )
        .attach("shared.bin", shared_attachment());
        let c = m.content();
        let out = store
            .capture(
                &policy(),
                m.input(&c, copy(ALICE, Direction::Outbound, Level::Full)),
            )
            .unwrap();
        assert_eq!(out.stored, Level::Full);
        assert!(store.check_consistency().unwrap().is_empty());
        eprintln!(
            "round {round}: {} acks survived, {} messages stored",
            acks.len(),
            store.stats().unwrap().messages
        );
        store.close().unwrap();
    }
}
