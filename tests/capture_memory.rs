//! Memory of one large capture: a 10 MB message (a base64 attachment and a
//! text body) through the real path (`ingest::ingest`: mail-parser, the
//! engine, the sled store and its blob files) raises the process's peak RSS
//! by less than the message itself. The parser borrows from the input; the
//! only copy of the attachment is its decoded bytes (base64 decodes to 3/4
//! of its size), which go straight to a blob file.
//!
//! Alone in its own test binary: peak RSS (`VmHWM`) is per process, and no
//! other test may allocate while this one measures.

use mailshare::engine::{Direction, Level};
use mailshare::ingest::{self, IngestOutcome, IngestRequest};
use mailshare::store::{Durability, SledStore, Store, StoreOptions};
use std::path::Path;

/// A field of /proc/self/status in kB.
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Base64 of `n` pseudo-random bytes, in 76-character CRLF lines.
fn base64_lines(n: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u32 = 0x2545_f491;
    let mut out = Vec::with_capacity(n * 4 / 3 + n / 38 + 8);
    let mut col = 0;
    for _ in 0..n.div_ceil(3) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        for shift in [18, 12, 6, 0] {
            out.push(ALPHABET[((x >> shift) & 63) as usize]);
        }
        col += 4;
        if col == 76 {
            out.extend_from_slice(b"\r\n");
            col = 0;
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn ten_mb_message() -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(
        b"From: Dana Reyes <dana@client-a.example>\r\n\
          To: Alice <alice@acme.example>\r\n\
          Subject: The full data room export\r\n\
          Message-ID: <ten-mb@client-a.example>\r\n\
          Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
          MIME-Version: 1.0\r\n\
          Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
          --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
    );
    for i in 0..2000 {
        m.extend_from_slice(
            format!("Line {i} of the covering note about the export.\r\n").as_bytes(),
        );
    }
    m.extend_from_slice(
        b"--b1\r\nContent-Type: application/zip\r\n\
          Content-Disposition: attachment; filename=\"export.zip\"\r\n\
          Content-Transfer-Encoding: base64\r\n\r\n",
    );
    m.extend_from_slice(&base64_lines(7_500_000));
    m.extend_from_slice(b"--b1--\r\n");
    m
}

#[test]
fn a_10_mb_capture_costs_less_peak_memory_than_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let policy = mailshare::config::load_policy(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/policy.toml"
    )))
    .expect("example policy");
    let store = SledStore::open(&dir.path().join("store"), StoreOptions::default()).unwrap();
    let raw = ten_mb_message();
    assert!(raw.len() > 10_000_000, "{} bytes", raw.len());
    // Warm up the store and the parser on a small message so one-time
    // allocations (sled's pages, the flusher) are in the baseline.
    let small = b"From: bob@client-a.example\r\nTo: alice@acme.example\r\nSubject: warm-up\r\nMessage-ID: <warm@client-a.example>\r\n\r\nhello\r\n";
    let req = IngestRequest {
        owner: "alice",
        direction: Direction::Inbound,
        envelope_recipients: &[],
        now: 1_800_000_000,
        max_capture_bytes: 64 << 20,
        durability: Durability::Wait,
    };
    ingest::ingest(&store, &policy, small, &req).unwrap();

    // Reset the peak to what is resident now (Linux ≥ 4.0): building the
    // message above peaked higher than the message itself.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let before = status_kb("VmHWM");
    let out = ingest::ingest(&store, &policy, &raw, &req).unwrap();
    let peak = status_kb("VmHWM");
    let grew_kb = peak.saturating_sub(before);
    eprintln!(
        "10 MB capture ({} bytes): peak RSS {before} kB before, {peak} kB after (+{grew_kb} kB, {:.2}x the message)",
        raw.len(),
        (grew_kb * 1024) as f64 / raw.len() as f64
    );

    // It was captured with its content (the example policy: alice shares inbound mail in full).
    let IngestOutcome::Stored { stored, id, .. } = out else {
        panic!("not stored: {out}");
    };
    assert_eq!(stored, Level::Full);
    let record = store.message(&id).unwrap().expect("record");
    let content = record.content.expect("content stored");
    assert_eq!(content.attachments.len(), 1, "{content:?}");
    assert_eq!(content.attachments[0].size, 7_500_000, "{content:?}");
    // The decoded attachment (7.5 MB) is the one copy; no second copy of
    // the input, no buffer of the whole message.
    assert!(
        grew_kb * 1024 < raw.len() as u64,
        "peak RSS grew by {grew_kb} kB for a {} byte message",
        raw.len()
    );
}
