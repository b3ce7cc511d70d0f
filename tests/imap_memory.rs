//! Memory of `mailshare serve` (a separate process, measured from /proc):
//! a 50 MB FETCH streams through with bounded RSS, and 500 concurrent idle
//! IMAP sessions cost little each. Figures are printed (`--nocapture`).

#[path = "imap_support/mod.rs"]
mod imap_support;
mod support;

use imap_support::{append_direct, literal_size, Binary, Raw};
use std::io::{BufRead, Read};
use std::time::Duration;
use support::upstreams::{UpstreamOptions, Upstreams};

/// A message of about `size` bytes: headers, then 76-column text lines.
fn big_message(size: usize, id: &str) -> Vec<u8> {
    let mut m = format!(
        "From: Grace Kim <grace@client-c.example>\r\nTo: Alice Smith <alice@acme.example>\r\nSubject: Big file\r\nMessage-ID: <{id}>\r\nDate: Thu, 12 Nov 2026 08:00:00 +0000\r\n\r\n"
    )
    .into_bytes();
    let mut i = 0u64;
    while m.len() < size {
        m.extend_from_slice(format!("{i:074}\r\n").as_bytes());
        i += 1;
    }
    m
}

/// FETCH message 1's BODY[] through `addr`; returns the literal, read in
/// 64 KiB pieces.
fn fetch_body(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut c = Raw::login(addr, "alice");
    c.send(b"s SELECT INBOX\r\n");
    c.until("s");
    c.send(b"f FETCH 1 BODY.PEEK[]\r\n");
    let line = c.line();
    let n = literal_size(&line).unwrap_or_else(|| panic!("{line}"));
    let mut body = Vec::with_capacity(n);
    let mut chunk = vec![0u8; 1 << 16];
    while body.len() < n {
        let want = (n - body.len()).min(chunk.len());
        let got = c.r.read(&mut chunk[..want]).unwrap();
        assert!(got > 0);
        body.extend_from_slice(&chunk[..got]);
    }
    let mut rest = Vec::new();
    c.r.read_until(b'\n', &mut rest).unwrap();
    assert_eq!(rest, b")\r\n");
    assert!(c.until("f").last().unwrap().starts_with("f OK"));
    body
}

#[test]
fn fifty_megabyte_fetch_streams_with_bounded_memory() {
    let up = Upstreams::start_with(UpstreamOptions::default());
    let msg = big_message(50 << 20, "big@client-c.example");
    append_direct(&up, "alice", "INBOX", std::slice::from_ref(&msg));
    for (label, limits, bound_mib) in [
        // Over the capture limit: headers captured, the body only relayed.
        (
            "relay, headers-only capture",
            "max_capture_bytes = 8388608\nmax_header_bytes = 1048576",
            24,
        ),
        // Captured in full: the capture buffer (within the budget) and the parse.
        ("relay + full capture", "", 200),
    ] {
        let mut b = Binary::start(&up, limits);
        // Warm up (a login, a small fetch path) before the baseline.
        let mut warm = Raw::login(b.plain, "alice");
        warm.send(b"n NOOP\r\n");
        warm.until("n");
        std::thread::sleep(Duration::from_millis(200));
        let (rss0, _) = b.memory_kib();
        let body = fetch_body(b.plain);
        assert!(body == msg, "50 MB arrived intact");
        std::thread::sleep(Duration::from_millis(500));
        let (rss1, hwm) = b.memory_kib();
        let growth = hwm.saturating_sub(rss0);
        eprintln!(
            "50 MB FETCH, {label}: RSS before {} MiB, peak {} MiB (+{} MiB), after {} MiB",
            rss0 / 1024,
            hwm / 1024,
            growth / 1024,
            rss1 / 1024
        );
        assert!(
            growth < bound_mib * 1024,
            "{label}: peak grew by {} MiB",
            growth / 1024
        );
        b.stop();
    }
}

#[test]
fn five_hundred_idle_sessions() {
    let up = Upstreams::start_with_conf(
        UpstreamOptions::default(),
        // inotify instances run out past ~128 processes: let Dovecot poll fast.
        "mail_max_userip_connections = 1000\nmailbox_idle_check_interval = 1 secs\nservice imap {\n  process_limit = 1100\n}\n",
    );
    let b = Binary::start(
        &up,
        "max_connections_per_ip = 1000\nmax_connections_per_listener = 1024",
    );
    let users = ["alice", "bob", "carol", "dave"];
    let mut warm = Raw::login(b.plain, "alice");
    warm.send(b"n NOOP\r\n");
    warm.until("n");
    std::thread::sleep(Duration::from_millis(300));
    let (rss0, _) = b.memory_kib();
    let mut sessions = Vec::new();
    for i in 0..500 {
        let mut c = Raw::login(b.plain, users[i % users.len()]);
        c.send(b"s SELECT INBOX\r\ni IDLE\r\n");
        c.until("s");
        let cont = c.line();
        assert!(cont.starts_with('+'), "{i}: {cont}");
        sessions.push(c);
    }
    std::thread::sleep(Duration::from_secs(3)); // buffers shrink after 2 s of quiet
    let (rss1, _) = b.memory_kib();
    let per = (rss1.saturating_sub(rss0)) * 1024 / 500;
    eprintln!(
        "500 idle IMAP sessions (plaintext both legs): RSS {} MiB → {} MiB, {:.1} KiB per session",
        rss0 / 1024,
        rss1 / 1024,
        per as f64 / 1024.0
    );
    // Every session is alive: a message delivered now reaches all of them.
    append_direct(
        &up,
        "alice",
        "INBOX",
        &[b"From: x@client-a.example\r\nSubject: ping\r\nMessage-ID: <ping@client-a.example>\r\n\r\nping\r\n".to_vec()],
    );
    for (i, c) in sessions.iter_mut().enumerate().step_by(4) {
        // Dovecot may say "* OK Still here" first.
        let mut l = c.line();
        while l.starts_with("* OK") {
            l = c.line();
        }
        assert!(l.contains("EXISTS"), "session {i}: {l}");
    }
    for c in sessions.iter_mut().take(10) {
        c.send(b"DONE\r\n");
        let r = c.until("i");
        assert!(r.last().unwrap().starts_with("i OK"), "{r:?}");
    }
    assert!(per < 64 * 1024, "{per} bytes per idle session");
}
