//! The sled store against a real temp directory: dedup, restriction and blob
//! release, content-addressed attachments, timelines and cursors, threads,
//! tombstones, reopening, the LOCK file, the schema check and group commit.
//! Every test ends with the store's own consistency check.

mod common;

use common::*;
use mailshare::engine::{self, ContactState, Direction, Grant, Level};
use mailshare::store::{
    sha256_hex, AccessRequest, CaptureInput, Cursor, RequestRole, RequestStatus, SledStore, Store,
    StoreError, StoreOptions,
};
use std::path::Path;
use std::sync::Arc;

fn open(dir: &Path) -> SledStore {
    SledStore::open(dir, options()).expect("store opens")
}

fn assert_consistent(store: &SledStore) {
    let problems = store.check_consistency().unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}

const OUT: Direction = Direction::Outbound;
const IN: Direction = Direction::Inbound;

#[test]
fn same_message_id_makes_one_record_with_owners_merged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = policy();
    let m = Mail::new(
        "m1@acme.example",
        1_700_000_000,
        "carol@client.example",
        "Hello",
    );
    let c = m.content();
    let first = store
        .capture(&p, m.input(&c, copy(ALICE, OUT, Level::Full)))
        .unwrap();
    assert!(first.new_record);
    assert_eq!(first.stored, Level::Full);
    assert_eq!(first.contacts_created, 2, "carol and client.example");
    let second = store
        .capture(&p, m.input(&c, copy(BOB, IN, Level::Subject)))
        .unwrap();
    assert!(!second.new_record);
    assert_eq!(second.id, first.id);
    assert_eq!(second.contacts_created, 0);

    let r = store.message(&first.id).unwrap().unwrap();
    let owners: Vec<&str> = r.owners.iter().map(|o| o.user.as_str()).collect();
    assert_eq!(owners, [ALICE, BOB]);
    assert_eq!(r.subject.as_deref(), Some("Hello"));
    let text = r.content.as_ref().unwrap().text.as_ref().unwrap();
    assert_eq!(
        store.blob(&text.sha256).unwrap().unwrap(),
        m.text.as_bytes()
    );
    let s = store.stats().unwrap();
    assert_eq!((s.messages, s.contacts, s.blobs), (1, 2, 1));
    assert!(s.bytes_on_disk > 0);
    assert_consistent(&store);
}

#[test]
fn later_restriction_drops_fields_and_deletes_unreferenced_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = policy();
    let m = Mail::new(
        "m2@acme.example",
        1_700_000_000,
        "carol@client.example",
        "Plans",
    )
    .attach("plan.pdf", b"%PDF only in this message".to_vec());
    let c = m.content();
    store
        .capture(&p, m.input(&c, copy(ALICE, OUT, Level::Full)))
        .unwrap();
    assert_eq!(blob_files(dir.path()).len(), 2, "text and attachment");

    // Bob's copy arrives with an explicit restriction to metadata.
    let out = store
        .capture(&p, m.input(&c, override_copy(BOB, IN, Level::Metadata)))
        .unwrap();
    assert_eq!(out.ceiling, Level::Metadata);
    assert_eq!(out.stored, Level::Metadata);
    let r = store.message(&m.id()).unwrap().unwrap();
    assert_eq!(r.subject, None);
    assert_eq!(r.content, None);
    assert_eq!(r.attachment_count, 1, "metadata stays");
    assert!(blob_files(dir.path()).is_empty(), "blob files deleted");
    assert_eq!(store.stats().unwrap().blobs, 0);
    assert_consistent(&store);
}

#[test]
fn owner_override_lowers_then_raising_shows_only_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = policy();
    let m = Mail::new(
        "m3@acme.example",
        1_700_000_000,
        "carol@client.example",
        "Fees",
    );
    let c = m.content();
    store
        .capture(&p, m.input(&c, copy(ALICE, OUT, Level::Full)))
        .unwrap();
    let r = store
        .set_override(&p, &m.id(), ALICE, Level::Subject)
        .unwrap();
    assert_eq!((r.ceiling(), r.stored), (Level::Subject, Level::Subject));
    assert_eq!(r.subject.as_deref(), Some("Fees"));
    assert!(r.content.is_none());
    assert!(blob_files(dir.path()).is_empty());

    let r = store.set_override(&p, &m.id(), ALICE, Level::Full).unwrap();
    assert_eq!(r.ceiling(), Level::Full);
    assert_eq!(r.stored, Level::Subject, "nothing comes back by itself");
    assert!(r.content.is_none());

    // A later capture with content fills the rest.
    let out = store
        .capture(&p, m.input(&c, override_copy(ALICE, OUT, Level::Full)))
        .unwrap();
    assert_eq!(out.stored, Level::Full);
    assert_eq!(blob_files(dir.path()).len(), 1);

    assert!(matches!(
        store.set_override(&p, &m.id(), "mallory@acme.example", Level::Hidden),
        Err(StoreError::NotOwner { .. })
    ));
    assert!(matches!(
        store.set_override(&p, "nope", ALICE, Level::Hidden),
        Err(StoreError::NoSuchMessage { .. })
    ));
    assert_consistent(&store);
}

#[test]
fn identical_attachments_are_stored_once_and_released_by_refcount() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = policy();
    let logo = vec![7u8; 300_000];
    let a = Mail::new(
        "a@acme.example",
        1_700_000_000,
        "carol@client.example",
        "One",
    )
    .attach("logo.png", logo.clone());
    let b = Mail::new("b@acme.example", 1_700_000_100, "dave@other.example", "Two")
        .attach("logo-copy.png", logo.clone());
    let (ca, cb) = (a.content(), b.content());
    store
        .capture(&p, a.input(&ca, copy(ALICE, OUT, Level::Full)))
        .unwrap();
    store
        .capture(&p, b.input(&cb, copy(ALICE, OUT, Level::Full)))
        .unwrap();
    let logo_sha = sha256_hex(&logo);
    let files = blob_files(dir.path());
    assert_eq!(files.len(), 3, "two texts, one logo: {files:?}");
    assert_eq!(files.iter().filter(|f| **f == logo_sha).count(), 1);
    let s = store.stats().unwrap();
    assert_eq!(s.blobs, 3);
    assert!(s.blob_bytes >= logo.len() as u64 && s.blob_bytes < 2 * logo.len() as u64);

    store
        .set_override(&p, &a.id(), ALICE, Level::Metadata)
        .unwrap();
    assert!(
        blob_files(dir.path()).contains(&logo_sha),
        "b still uses it"
    );
    store
        .set_override(&p, &b.id(), ALICE, Level::Subject)
        .unwrap();
    assert!(blob_files(dir.path()).is_empty());
    assert_consistent(&store);
}

#[test]
fn timeline_is_newest_first_with_cursor_pagination() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = policy();
    // 25 messages, some sharing a date, captured out of order.
    let mut mails: Vec<Mail> = (0..25)
        .map(|i| {
            let date = 1_700_000_000 + (i / 2) * 60;
            Mail::new(
                &format!("t{i}@acme.example"),
                date,
                "carol@client.example",
                "x",
            )
        })
        .collect();
    mails.reverse();
    mails.swap(3, 17);
    for m in &mails {
        store
            .capture(&p, m.input(&m.content(), copy(ALICE, OUT, Level::Subject)))
            .unwrap();
    }
    let carol = engine::person_contact_id("carol@client.example");
    let mut seen = Vec::new();
    let mut cursor: Option<Cursor> = None;
    let mut pages = 0;
    loop {
        let (page, next) = store.timeline(&carol, cursor.as_ref(), 10).unwrap();
        pages += 1;
        seen.extend(page.into_iter().map(|r| (r.date, r.id)));
        match next {
            // Through its string form, as the API will.
            Some(c) => cursor = Some(Cursor::decode(&c.encode()).unwrap()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25);
    let mut expected = seen.clone();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    assert_eq!(seen, expected, "newest first, ties by id, no repeats");
    expected.dedup();
    assert_eq!(expected.len(), 25);

    // The organization's timeline has them too; an unknown contact has none.
    let org = engine::org_contact_id("client.example");
    assert_eq!(store.timeline(&org, None, 100).unwrap().0.len(), 25);
    assert!(store.timeline("nobody", None, 10).unwrap().0.is_empty());
    assert!(store.timeline(&carol, None, 0).unwrap().0.is_empty());

    for garbage in [
        "",
        "zzz",
        "not a cursor",
        "0000000000000000",
        "../x",
        "0000000000000000ABC",
    ] {
        assert!(matches!(
            Cursor::decode(garbage),
            Err(StoreError::BadCursor)
        ));
    }
    assert_consistent(&store);
}

#[test]
fn hidden_records_keep_owners_but_are_in_no_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = policy();
    let m = Mail::new("h@acme.example", 1_700_000_000, "carol@client.example", "x");
    let c = m.content();
    let out = store
        .capture(&p, m.input(&c, copy(ALICE, OUT, Level::Full)))
        .unwrap();
    let r = store
        .set_override(&p, &out.id, ALICE, Level::Hidden)
        .unwrap();
    assert_eq!(r.stored, Level::Hidden);
    assert_eq!(r.owners.len(), 1);
    assert!(r.contacts.is_empty() && r.to.is_empty());
    let carol = engine::person_contact_id("carol@client.example");
    assert!(store.timeline(&carol, None, 10).unwrap().0.is_empty());
    assert!(store.thread(&r.thread_id).unwrap().is_empty());
    assert!(blob_files(dir.path()).is_empty());
    assert_consistent(&store);
}

#[test]
fn thread_lists_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = policy();
    let root = Mail::new(
        "root@acme.example",
        1_700_000_000,
        "carol@client.example",
        "Q",
    );
    let r1 = Mail::new(
        "r1@client.example",
        1_700_000_500,
        "carol@client.example",
        "Re: Q",
    )
    .reply_to(&root.facts);
    let r2 = Mail::new(
        "r2@acme.example",
        1_700_000_900,
        "carol@client.example",
        "Re: Q",
    )
    .reply_to(&r1.facts);
    let other = Mail::new(
        "other@acme.example",
        1_700_000_100,
        "carol@client.example",
        "Z",
    );
    for m in [&r2, &other, &root, &r1] {
        store
            .capture(&p, m.input(&m.content(), copy(ALICE, OUT, Level::Metadata)))
            .unwrap();
    }
    let tid = engine::thread_id(&root.facts);
    let ids: Vec<String> = store
        .thread(&tid)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [root.id(), r1.id(), r2.id()]);
    assert!(store.thread("no-such-thread").unwrap().is_empty());
    assert_consistent(&store);
}

#[test]
fn deleted_contact_is_tombstoned_and_never_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = policy();
    let m = Mail::new("d1@acme.example", 1_700_000_000, "erin@client.example", "x");
    store
        .capture(&p, m.input(&m.content(), copy(ALICE, OUT, Level::Subject)))
        .unwrap();
    let erin = engine::person_contact_id("erin@client.example");
    let c = store.contact(&erin).unwrap().unwrap();
    assert_eq!(c.addresses, ["erin@client.example"]);
    assert_eq!(
        c.organization_id.as_deref(),
        Some(engine::org_contact_id("client.example").as_str())
    );
    assert_eq!(
        store.contact_for_address("Erin@Client.example").unwrap(),
        Some(c.clone())
    );
    assert_eq!(
        store
            .contact_for_address("someone-else@client.example")
            .unwrap()
            .map(|c| c.kind.as_str()),
        Some("organization")
    );
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["kind"], "person");

    assert!(store.delete_contact(&erin).unwrap());
    assert!(!store.delete_contact(&erin).unwrap(), "already tombstoned");
    assert_eq!(
        store.contact_state(&erin).unwrap(),
        ContactState::Tombstoned
    );
    assert!(store.contact(&erin).unwrap().is_none());
    assert!(store
        .contacts(None, 100)
        .unwrap()
        .iter()
        .all(|c| c.id != erin));
    assert!(store.timeline(&erin, None, 10).unwrap().0.is_empty());
    assert_eq!(
        store
            .contact_for_address("erin@client.example")
            .unwrap()
            .map(|c| c.kind.as_str()),
        Some("organization"),
        "the address falls back to its organization"
    );

    let again = Mail::new("d2@acme.example", 1_700_000_100, "erin@client.example", "y");
    let out = store
        .capture(
            &p,
            again.input(&again.content(), copy(ALICE, OUT, Level::Subject)),
        )
        .unwrap();
    assert_eq!(out.contacts_created, 0);
    assert_eq!(
        store.contact_state(&erin).unwrap(),
        ContactState::Tombstoned
    );
    assert!(store.timeline(&erin, None, 10).unwrap().0.is_empty());

    // Any id can be tombstoned, e.g. a policy contact's.
    let policy_id = engine::policy_contact_id("Client A Ltd");
    assert_eq!(
        store.contact_state(&policy_id).unwrap(),
        ContactState::Absent
    );
    assert!(store.delete_contact(&policy_id).unwrap());
    assert_eq!(
        store.contact_state(&policy_id).unwrap(),
        ContactState::Tombstoned
    );
    assert_eq!(
        store.stats().unwrap().contacts,
        1,
        "only the organization is left"
    );
    assert_consistent(&store);
}

#[test]
fn contacts_list_in_id_order_after_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = policy();
    for i in 0..7 {
        let m = Mail::new(
            &format!("c{i}@acme.example"),
            1_700_000_000,
            &format!("p{i}@gmail.com"),
            "x",
        );
        store
            .capture(&p, m.input(&m.content(), copy(ALICE, OUT, Level::Metadata)))
            .unwrap();
    }
    let all = store.contacts(None, 100).unwrap();
    assert_eq!(all.len(), 7, "personal domain: no organizations");
    let first = store.contacts(None, 3).unwrap();
    let rest = store.contacts(Some(&first[2].id), 100).unwrap();
    let ids: Vec<_> = first.iter().chain(&rest).map(|c| c.id.clone()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 7);
}

#[test]
fn grants_are_stored_per_viewer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = policy();
    let m = Mail::new("g@acme.example", 1_700_000_000, "carol@client.example", "x");
    store
        .capture(&p, m.input(&m.content(), copy(ALICE, OUT, Level::Subject)))
        .unwrap();
    let g = |level| Grant {
        viewer: BOB.into(),
        level,
        by: ALICE.into(),
    };
    store.add_grant(&m.id(), g(Level::Metadata)).unwrap();
    let r = store.add_grant(&m.id(), g(Level::Subject)).unwrap();
    assert_eq!(r.grants, [g(Level::Subject)]);
    assert_eq!(store.message(&m.id()).unwrap().unwrap().grants.len(), 1);
}

#[test]
fn blob_names_are_never_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for bad in ["../LOCK", "..", "", "/etc/passwd", &"A".repeat(64)] {
        assert!(store.blob(bad).unwrap().is_none(), "{bad}");
    }
    assert!(store.message("").unwrap().is_none());
    assert!(store.message("a\0b").unwrap().is_none());
}

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy();
    let m = Mail::new(
        "keep@acme.example",
        1_700_000_000,
        "carol@client.example",
        "Keep",
    )
    .attach("a.txt", b"attachment".to_vec());
    let stats = {
        let store = open(dir.path());
        store
            .capture(&p, m.input(&m.content(), copy(ALICE, OUT, Level::Full)))
            .unwrap();
        let s = store.stats().unwrap();
        store.close().unwrap();
        s
    };
    let store = open(dir.path());
    let r = store.message(&m.id()).unwrap().unwrap();
    assert_eq!(r.subject.as_deref(), Some("Keep"));
    let att = &r.content.as_ref().unwrap().attachments[0];
    assert_eq!(
        store.blob(&att.blob.sha256).unwrap().unwrap(),
        b"attachment"
    );
    let carol = engine::person_contact_id("carol@client.example");
    assert_eq!(store.timeline(&carol, None, 10).unwrap().0, [r]);
    let again = store.stats().unwrap();
    assert_eq!(
        (
            again.messages,
            again.contacts,
            again.blobs,
            again.blob_bytes
        ),
        (
            stats.messages,
            stats.contacts,
            stats.blobs,
            stats.blob_bytes
        )
    );
    assert_consistent(&store);
}

#[test]
fn a_second_open_is_refused_with_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = SledStore::open(dir.path(), options()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let line = err.to_string();
    assert!(
        line.contains("in use by another mailshare process"),
        "{line}"
    );
    assert!(line.contains("mailshare serve"), "{line}");
    drop(store);
    open(dir.path());
}

#[test]
fn unknown_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    {
        // sled releases its file lock from background threads that may
        // outlive the dropped store by a moment: wait for it, bounded.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match sled::open(dir.path().join("db")) {
                Ok(db) => break db,
                Err(e) if std::time::Instant::now() < deadline => {
                    assert!(e.to_string().contains("could not acquire lock"), "{e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("sled lock still held after 10 s: {e}"),
            }
        };
        db.insert("meta:schema", "99").unwrap();
        db.flush().unwrap();
    }
    let err = SledStore::open(dir.path(), options()).unwrap_err();
    match &err {
        StoreError::Schema {
            found, supported, ..
        } => {
            assert_eq!(found, "99");
            assert_eq!(*supported, mailshare::store::SCHEMA_VERSION);
        }
        other => panic!("expected Schema, got {other:?}"),
    }
    assert!(err.to_string().contains("unsupported schema version"));
}

#[test]
fn leftover_files_are_swept_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let orphan = sha256_hex(b"orphan");
    let shard = dir.path().join("blobs").join(&orphan[..2]);
    std::fs::write(shard.join(&orphan), b"orphan").unwrap();
    std::fs::write(shard.join(".tmp.1.2"), b"half").unwrap();
    let store = open(dir.path());
    assert!(blob_files(dir.path()).is_empty());
    assert_consistent(&store);
}

#[test]
fn concurrent_captures_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    // A lingering flusher gathers every writer waiting at the time, so the
    // grouping does not depend on how the machine schedules the threads.
    let mut opts = options();
    opts.max_batch_delay = std::time::Duration::from_millis(20);
    let store = Arc::new(SledStore::open(dir.path(), opts).unwrap());
    let p = Arc::new(policy());
    let threads = 8;
    let per_thread = 40;
    let shared = vec![3u8; 10_000];
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, p, shared) = (store.clone(), p.clone(), shared.clone());
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let m = Mail::new(
                        &format!("gc{t}-{i}@acme.example"),
                        1_700_000_000 + i,
                        &format!("client{t}@client{i}.example"),
                        "load",
                    )
                    .attach("shared.bin", shared.clone());
                    let c = m.content();
                    store
                        .capture(&p, m.input(&c, copy(ALICE, OUT, Level::Full)))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = store.stats().unwrap();
    let captures = (threads * per_thread) as u64;
    assert_eq!(s.messages, captures);
    assert!(s.commits >= captures);
    eprintln!("{captures} captures, {} flushes", s.flushes);
    assert!(
        s.flushes * 2 < captures,
        "{} flushes for {captures} captures: group commit is not grouping",
        s.flushes
    );
    assert_consistent(&store);
}

#[test]
fn capture_without_content_stores_below_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = policy();
    let m = Mail::new(
        "hdr@acme.example",
        1_700_000_000,
        "carol@client.example",
        "Headers",
    );
    let out = store
        .capture(
            &p,
            CaptureInput {
                facts: &m.facts,
                copy: copy(ALICE, IN, Level::Full),
                content: None,
                now: 0,
                durability: Default::default(),
                prewritten: None,
            },
        )
        .unwrap();
    assert_eq!((out.ceiling, out.stored), (Level::Full, Level::Subject));
    assert!(blob_files(dir.path()).is_empty());
    // The full fetch later fills the content in.
    let c = m.content();
    let out = store
        .capture(&p, m.input(&c, copy(ALICE, IN, Level::Full)))
        .unwrap();
    assert_eq!(out.stored, Level::Full);
    assert_eq!(blob_files(dir.path()).len(), 1);
    assert_consistent(&store);
}

#[test]
fn default_options_are_documented_values() {
    let o = StoreOptions::default();
    assert_eq!(o.cache_capacity_bytes, 64 * 1024 * 1024);
    assert!(o.max_batch_delay <= std::time::Duration::from_millis(2));
}

#[test]
fn recent_lists_every_visible_record_newest_first_with_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = policy();
    for i in 0..5i64 {
        let m = Mail::new(
            &format!("r{i}@acme.example"),
            1_700_000_000 + i,
            "carol@client.example",
            "x",
        );
        store
            .capture(&p, m.input(&m.content(), copy(ALICE, OUT, Level::Full)))
            .unwrap();
    }
    // A hidden record (an owner's override) is in no index.
    let h = Mail::new(
        "rh@acme.example",
        1_800_000_000,
        "carol@client.example",
        "x",
    );
    store
        .capture(
            &p,
            h.input(&h.content(), override_copy(ALICE, OUT, Level::Hidden)),
        )
        .unwrap();
    let (first, next) = store.recent(None, 3).unwrap();
    let dates: Vec<i64> = first.iter().map(|r| r.date).collect();
    assert_eq!(dates, [1_700_000_004, 1_700_000_003, 1_700_000_002]);
    let next = Cursor::decode(&next.unwrap().encode()).unwrap();
    let (rest, end) = store.recent(Some(&next), 3).unwrap();
    assert_eq!(rest.len(), 2);
    assert!(end.is_none());
    // Hiding a record later takes it out of the index.
    store
        .set_override(&p, &first[0].id, ALICE, Level::Hidden)
        .unwrap();
    assert_eq!(store.recent(None, 10).unwrap().0.len(), 4);
    assert_consistent(&store);
}

#[test]
fn a_version_1_store_gains_the_recent_index_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy();
    {
        let store = open(dir.path());
        let m = Mail::new(
            "v1@acme.example",
            1_700_000_000,
            "carol@client.example",
            "x",
        );
        store
            .capture(&p, m.input(&m.content(), copy(ALICE, OUT, Level::Full)))
            .unwrap();
    }
    {
        // Make it look like version 1: no `n:` entries, schema "1".
        let db = raw_db(dir.path());
        let keys: Vec<_> = db.scan_prefix("n:").keys().map(Result::unwrap).collect();
        assert_eq!(keys.len(), 1);
        for k in keys {
            db.remove(k).unwrap();
        }
        db.insert("meta:schema", "1").unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.recent(None, 10).unwrap().0.len(), 1);
    assert_consistent(&store);
}

/// The store's sled database opened directly (the store must be closed).
/// sled releases its file lock from background threads that may outlive a
/// dropped store by a moment: wait for it, bounded.
fn raw_db(store_dir: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(store_dir.join("db")) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("could not acquire lock"), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("sled lock still held after 10 s: {e}"),
        }
    }
}

#[test]
fn a_version_2_store_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy();
    let m = Mail::new(
        "v2@acme.example",
        1_700_000_000,
        "carol@client.example",
        "x",
    );
    {
        let store = open(dir.path());
        store
            .capture(&p, m.input(&m.content(), copy(ALICE, OUT, Level::Full)))
            .unwrap();
    }
    {
        let db = raw_db(dir.path());
        db.insert("meta:schema", "2").unwrap();
        db.flush().unwrap();
    }
    {
        let store = open(dir.path());
        assert!(store.message(&m.id()).unwrap().is_some());
        assert_consistent(&store);
    }
    let db = raw_db(dir.path());
    let version = db.get("meta:schema").unwrap().unwrap();
    assert_eq!(
        &version[..],
        mailshare::store::SCHEMA_VERSION.to_string().as_bytes()
    );
}

fn request(id: &str, message: &str, requester: &str, created: i64) -> AccessRequest {
    AccessRequest {
        id: id.into(),
        message: message.into(),
        requester: requester.into(),
        owners: vec![ALICE.into()],
        level: Level::Full,
        note: Some("please".into()),
        status: RequestStatus::Pending,
        created,
        decided_by: None,
        decided_at: None,
        granted: None,
    }
}

#[test]
fn access_requests_are_listed_both_ways_and_approval_grants_up_to_the_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = policy();
    let m = Mail::new(
        "ar@acme.example",
        1_700_000_000,
        "carol@client.example",
        "x",
    );
    store
        .capture(&p, m.input(&m.content(), copy(ALICE, OUT, Level::Subject)))
        .unwrap();
    let r1 = request("aa01", &m.id(), BOB, 10);
    store.create_access_request(&r1).unwrap();
    // One pending request per requester and message.
    assert!(matches!(
        store.create_access_request(&request("aa02", &m.id(), BOB, 11)),
        Err(StoreError::DuplicateRequest { existing }) if existing == "aa01"
    ));
    assert_eq!(
        store
            .access_requests(ALICE, RequestRole::Owner, 10)
            .unwrap(),
        std::slice::from_ref(&r1)
    );
    assert_eq!(
        store
            .access_requests(BOB, RequestRole::Requester, 10)
            .unwrap(),
        std::slice::from_ref(&r1)
    );
    assert!(store
        .access_requests(BOB, RequestRole::Owner, 10)
        .unwrap()
        .is_empty());

    // Only an owner decides.
    assert!(matches!(
        store.decide_access_request("aa01", BOB, true, 20),
        Err(StoreError::NotOwner { .. })
    ));
    let done = store
        .decide_access_request("aa01", ALICE, true, 20)
        .unwrap();
    assert_eq!(done.status, RequestStatus::Approved);
    assert_eq!(done.granted, Some(Level::Subject), "capped by the ceiling");
    let rec = store.message(&m.id()).unwrap().unwrap();
    assert_eq!(
        rec.grants,
        [Grant {
            viewer: BOB.into(),
            level: Level::Subject,
            by: ALICE.into()
        }]
    );
    assert!(matches!(
        store.decide_access_request("aa01", ALICE, false, 21),
        Err(StoreError::AlreadyDecided { .. })
    ));
    assert_eq!(store.access_request("aa01").unwrap(), Some(done));

    // Decided, so a new request may be made; a denial grants nothing more.
    store
        .create_access_request(&request("aa03", &m.id(), BOB, 30))
        .unwrap();
    let denied = store
        .decide_access_request("aa03", ALICE, false, 31)
        .unwrap();
    assert_eq!(denied.status, RequestStatus::Denied);
    assert_eq!(store.message(&m.id()).unwrap().unwrap().grants.len(), 1);
    let mine: Vec<String> = store
        .access_requests(BOB, RequestRole::Requester, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(mine, ["aa03", "aa01"], "newest first");
    assert!(matches!(
        store.decide_access_request("nope", ALICE, true, 1),
        Err(StoreError::NoSuchRequest { .. })
    ));
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        store
            .access_requests(ALICE, RequestRole::Owner, 10)
            .unwrap()
            .len(),
        2
    );
    assert_consistent(&store);
}

/// Poll until `blob_files` satisfies `ok` (the flusher deletes released
/// blobs after its next flush), for at most ten seconds.
fn wait_for_blobs(dir: &Path, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let files = blob_files(dir);
        if ok(&files) || std::time::Instant::now() > end {
            return files;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Blob files written ahead of a capture (while an SMTP upstream considers
/// the message): used by the capture, deleted when released, and never
/// deleted while in flight, even when a record that shared them lets go.
#[test]
fn prewritten_blobs_are_used_released_or_kept_while_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = policy();
    let logo = vec![9u8; 200_000];
    let logo_sha = sha256_hex(&logo);

    // Released: nothing refers to them, so they go.
    let refused = Mail::new(
        "r@acme.example",
        1_700_000_000,
        "carol@client.example",
        "No",
    )
    .attach("x.bin", vec![1u8; 5000]);
    let c = refused.content();
    let pre = store
        .prewrite(&refused.facts, &copy(ALICE, OUT, Level::Full), &c)
        .unwrap()
        .expect("content would be kept");
    assert_eq!(
        blob_files(dir.path()).len(),
        2,
        "text and attachment written ahead"
    );
    store.release(pre);
    let left = wait_for_blobs(dir.path(), |f| f.is_empty());
    assert!(left.is_empty(), "released blobs stay: {left:?}");
    assert!(store.message(&refused.id()).unwrap().is_none());

    // Used: the capture takes them as they are.
    let a = Mail::new(
        "a@acme.example",
        1_700_000_100,
        "carol@client.example",
        "One",
    )
    .attach("logo.png", logo.clone());
    let ca = a.content();
    let pre = store
        .prewrite(&a.facts, &copy(ALICE, OUT, Level::Full), &ca)
        .unwrap();
    let mut input = a.input(&ca, copy(ALICE, OUT, Level::Full));
    input.prewritten = pre;
    let out = store.capture(&p, input).unwrap();
    assert_eq!(out.stored, Level::Full);
    assert!(blob_files(dir.path()).contains(&logo_sha));

    // In flight: b's logo is a's. a lets its content go (the logo's
    // refcount falls to zero) while b's capture is pending: the file
    // stays for b.
    let b = Mail::new("b@acme.example", 1_700_000_200, "dave@other.example", "Two")
        .attach("logo-copy.png", logo.clone());
    let cb = b.content();
    let pre = store
        .prewrite(&b.facts, &copy(ALICE, OUT, Level::Full), &cb)
        .unwrap();
    store
        .set_override(&p, &a.id(), ALICE, Level::Metadata)
        .unwrap();
    // A later durable write: its flush runs the deletions that are due.
    let later = Mail::new("c@acme.example", 1_700_000_300, "erin@x.example", "Three");
    let cl = later.content();
    store
        .capture(&p, later.input(&cl, copy(ALICE, OUT, Level::Full)))
        .unwrap();
    assert!(
        blob_files(dir.path()).contains(&logo_sha),
        "a blob in flight was deleted"
    );
    let mut input = b.input(&cb, copy(ALICE, OUT, Level::Full));
    input.prewritten = pre;
    assert_eq!(store.capture(&p, input).unwrap().stored, Level::Full);
    let rec = store.message(&b.id()).unwrap().unwrap();
    let logo_ref = &rec.content.as_ref().unwrap().attachments[0].blob;
    assert_eq!(store.blob(&logo_ref.sha256).unwrap(), Some(logo));
    assert_consistent(&store);
}

/// `ingest_when`: the verdict comes between the preparation (parse, blob
/// files) and the store write. No: nothing stored, no error even for a
/// message that cannot be parsed. Yes: stored, and an unparsable message
/// is the error it always was.
#[test]
fn ingest_when_stores_only_what_was_accepted() {
    use mailshare::ingest::{ingest_when, IngestError, IngestOutcome, IngestRequest};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = policy();
    let req = IngestRequest {
        owner: ALICE,
        direction: OUT,
        envelope_recipients: &[],
        now: 1_800_000_000,
        max_capture_bytes: 1 << 20,
        durability: Default::default(),
    };
    let raw = |id: &str| {
        format!(
            "From: {ALICE}\r\nTo: carol@client.example\r\nSubject: verdict\r\nX-Mailshare-Share: full\r\nMessage-ID: <{id}>\r\nDate: Tue, 10 Nov 2026 10:00:00 +0000\r\n\r\nThe body of {id}.\r\n"
        )
        .into_bytes()
    };
    let mut asked = 0;
    let mut no = || {
        asked += 1;
        false
    };
    let r = ingest_when(&store, &p, &raw("no@acme.example"), None, &req, &mut no).unwrap();
    assert_eq!(r, None);
    assert_eq!(asked, 1, "asked once");
    let key = |id: &str| engine::message_key(id);
    assert!(store.message(&key("no@acme.example")).unwrap().is_none());
    let left = wait_for_blobs(dir.path(), |f| f.is_empty());
    assert!(left.is_empty(), "the refused body's blob stays: {left:?}");

    let r = ingest_when(
        &store,
        &p,
        &raw("yes@acme.example"),
        None,
        &req,
        &mut || true,
    );
    assert!(matches!(r, Ok(Some(IngestOutcome::Stored { .. }))), "{r:?}");
    assert!(store.message(&key("yes@acme.example")).unwrap().is_some());
    // Captured in full, so the refused one above had a blob to release.
    assert_eq!(blob_files(dir.path()).len(), 1);

    // Not a message at all: no error when refused, the error when accepted.
    assert!(matches!(
        ingest_when(&store, &p, b"", None, &req, &mut || false),
        Ok(None)
    ));
    assert!(matches!(
        ingest_when(&store, &p, b"", None, &req, &mut || true),
        Err(IngestError::Parse(_))
    ));
    assert_consistent(&store);
}
