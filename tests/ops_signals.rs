//! Operations signals on the real `mailshare serve` binary, in front of a
//! real Dovecot (IMAP + submission relaying to smtp-sink), with the admin
//! API and JSON logs:
//!
//! - SIGHUP with a valid policy while an authenticated SMTP session and an
//!   IMAP session in IDLE are open: both keep working, the next capture and
//!   the next API request follow the new policy; with an invalid policy the
//!   `file:line:column` error is logged, the failure metrics rise and the
//!   old policy keeps deciding; fixing the file recovers.
//! - SIGHUP swaps the TLS certificate for new connections (open TLS
//!   sessions keep theirs); a broken certificate file keeps the old one.
//! - SIGTERM drains: no new connections, 421 to an idle SMTP client, `* BYE`
//!   to an IMAP client in IDLE, a message in the middle of DATA may finish
//!   (250, captured) before its 421; exit 0; the store reopens consistent.
//! - The grace deadline and a second SIGTERM end it early, exit 0, store
//!   consistent with every acknowledged capture.
//!
//! Every wait is bounded; conditions are polled, not slept for.

mod imap_support;
mod support;

use imap_support::{append_direct, metric_sum, Raw};
use mailshare::engine;
use mailshare::store::{SledStore, Store, StoreOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::server::{run, Binary, ListenerSpec, Spec};
use support::upstreams::{require, LineClient, Upstreams};
use support::{sha256_hex, token, Deadline, Resp};

const ADMIN: &str = "ops-admin-token";
const WAIT: Duration = Duration::from_secs(20);

/// A policy: alice's outbound level and whether bob shares at all. Every
/// user has the token `tok-<login>`.
fn policy(alice_outbound: &str, bob_activity: bool) -> String {
    let user = |login: &str, extra: &str| {
        format!(
            "\n[[users]]\naddress = \"{login}@acme.example\"\nlogins = [\"{login}\"]\n{extra}token_sha256 = \"{}\"\n",
            sha256_hex(&token(login))
        )
    };
    format!(
        "[organization]\nname = \"Acme\"\ninternal_domains = [\"acme.example\"]\n\n\
         [defaults]\nactivity = true\ninbound = \"full\"\noutbound = \"full\"\n{}{}{}",
        user("alice", &format!("outbound = \"{alice_outbound}\"\n")),
        user("bob", &format!("activity = {bob_activity}\n")),
        user("carol", ""),
    )
}

/// mailshare with one plaintext SMTP listener, one plaintext IMAP listener
/// and the admin API, in front of `up`.
fn spec(up: &Upstreams, policy_text: String, limits: &[&str]) -> Spec {
    let mut spec = Spec::new(up.submission, vec![ListenerSpec::plain()]);
    spec.imap = Some((up.imap, vec![ListenerSpec::plain()]));
    spec.admin_token = Some(ADMIN);
    spec.policy = Some(policy_text);
    spec.log_level = "info";
    for l in limits {
        spec = spec.limit(l);
    }
    spec
}

fn message(from: &str, to: &str, id: &str, subject: &str) -> String {
    format!(
        "Date: Mon, 24 Nov 2025 10:00:00 +0000\r\nFrom: {from}\r\nTo: {to}\r\nSubject: {subject}\r\n\
         Message-ID: <{id}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Hello from {from}.\r\n"
    )
}

/// Start a transaction on an authenticated session up to the 354.
fn smtp_begin(c: &mut LineClient, from: &str, to: &str) {
    c.send(format!("MAIL FROM:<{from}>\r\n").as_bytes());
    let r = c.smtp_reply().concat();
    assert!(r.starts_with("250"), "MAIL: {r}");
    c.send(format!("RCPT TO:<{to}>\r\n").as_bytes());
    let r = c.smtp_reply().concat();
    assert!(r.starts_with("250"), "RCPT: {r}");
    c.send(b"DATA\r\n");
    let r = c.smtp_reply().concat();
    assert!(r.starts_with("354"), "DATA: {r}");
}

/// Send one message on an authenticated session; the final reply.
fn smtp_send(c: &mut LineClient, from: &str, to: &str, id: &str) -> String {
    smtp_begin(c, from, to);
    c.send(message(from, to, id, "Quarterly figures").as_bytes());
    c.send(b".\r\n");
    c.smtp_reply().concat()
}

/// One admin API request (blocking).
fn api(addr: SocketAddr, path: &str, token: Option<&str>) -> Resp {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(support::call(addr, "GET", path, token, None))
}

/// A message's level as carol (a colleague) sees it; `None` when hidden.
fn level_for_carol(bin: &Binary, message_id: &str) -> Option<String> {
    let path = format!("/api/v1/messages/{}", engine::message_key(message_id));
    let r = api(bin.admin.unwrap(), &path, Some(&token("carol")));
    match r.status {
        200 => Some(r.json()["level"].as_str().unwrap().to_string()),
        404 => None,
        s => panic!("GET {path}: {s} {}", r.text()),
    }
}

fn metric(bin: &Binary, name: &str) -> f64 {
    let r = api(bin.admin.unwrap(), "/metrics", None);
    assert_eq!(r.status, 200);
    metric_sum(&r.text(), name, &[])
}

/// The `fields` of every JSON log line whose message contains `needle`.
fn log_fields(bin: &Binary, needle: &str) -> Vec<Value> {
    bin.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle))
        })
        .map(|v| v["fields"].clone())
        .collect()
}

/// Until connecting to `addr` is refused (the listener is closed).
fn wait_refused(addr: SocketAddr) {
    let end = Instant::now() + WAIT;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ => {}
        }
        assert!(Instant::now() < end, "{addr} still accepts connections");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Open the store the stopped server left: every id in `ids` is there and
/// the indexes agree with the records.
fn assert_store(bin: &Binary, ids: &[&str]) -> SledStore {
    let store = SledStore::open(&bin.store_path(), StoreOptions::default())
        .expect("the store reopens after exit");
    for id in ids {
        assert!(
            store
                .message(&engine::message_key(id))
                .unwrap()
                .is_some(),
            "{id} was acknowledged (SMTP 250) or relayed (IMAP FETCH) before the stop, so it is in the store"
        );
    }
    let problems = store.check_consistency().unwrap();
    assert!(problems.is_empty(), "store inconsistent: {problems:#?}");
    store
}

fn assert_exit_0(bin: &mut Binary, within: Duration) -> Duration {
    let t = Instant::now();
    let status = bin
        .wait_exit(within)
        .unwrap_or_else(|| panic!("still running after {within:?}: {}", bin.log_text()));
    assert!(status.success(), "{status}: {}", bin.log_text());
    t.elapsed()
}

#[test]
fn sighup_reloads_the_policy_with_sessions_open_and_keeps_it_on_error() {
    let _d = Deadline::new("policy reload", 90);
    let up = Upstreams::start();
    append_direct(
        &up,
        "alice",
        "INBOX",
        &[message(
            "x@client-a.example",
            "alice@acme.example",
            "in1@client-a.example",
            "Hi",
        )
        .into_bytes()],
    );
    let mut bin = Binary::start(&spec(&up, policy("subject", true), &[]), &[]);
    let smtp = bin.addrs[0];

    // Before: bob shares; alice's outbound mail is captured at subject.
    let mut b = LineClient::connect(smtp);
    b.smtp_login("bob");
    let r = smtp_send(
        &mut b,
        "bob@acme.example",
        "y@client-b.example",
        "b1@acme.example",
    );
    assert!(r.starts_with("250"), "{r}");
    b.send(b"QUIT\r\n");
    let mut a = LineClient::connect(smtp);
    a.smtp_login("alice");
    let r = smtp_send(
        &mut a,
        "alice@acme.example",
        "x@client-a.example",
        "a1@acme.example",
    );
    assert!(r.starts_with("250"), "{r}");
    let mut i = Raw::login(bin.imap_addrs[0], "alice");
    i.send(b"s SELECT INBOX\r\n");
    assert!(i.until("s").last().unwrap().starts_with("s OK"));
    i.send(b"i IDLE\r\n");
    assert!(i.line().starts_with('+'), "IDLE continuation");
    assert_eq!(
        level_for_carol(&bin, "b1@acme.example").as_deref(),
        Some("full")
    );
    assert_eq!(
        level_for_carol(&bin, "a1@acme.example").as_deref(),
        Some("subject")
    );
    let reloads = metric(&bin, "mailshare_policy_reloads_total");

    // A valid new policy: alice's outbound full, bob shares nothing.
    std::fs::write(bin.policy_path(), policy("full", false)).unwrap();
    bin.signal("HUP");
    bin.wait_log("policy reloaded", 1, WAIT);
    assert_eq!(
        metric(&bin, "mailshare_policy_reloads_total"),
        reloads + 1.0
    );
    assert_eq!(metric(&bin, "mailshare_policy_reload_failures_total"), 0.0);
    // The next API request: bob's past mail is hidden from colleagues at once.
    assert_eq!(level_for_carol(&bin, "b1@acme.example"), None);
    // The next capture, on the SMTP session opened before the reload.
    let r = smtp_send(
        &mut a,
        "alice@acme.example",
        "x@client-a.example",
        "a2@acme.example",
    );
    assert!(r.starts_with("250"), "same session after SIGHUP: {r}");
    assert_eq!(
        level_for_carol(&bin, "a2@acme.example").as_deref(),
        Some("full")
    );
    assert_eq!(
        level_for_carol(&bin, "a1@acme.example").as_deref(),
        Some("subject"),
        "captured under the old policy: stored at subject"
    );
    // The IMAP session in IDLE: DONE answered, a FETCH works (and captures).
    i.send(b"DONE\r\n");
    assert!(i.until("i").last().unwrap().starts_with("i OK"));
    i.send(b"f FETCH 1 BODY.PEEK[]\r\n");
    let f = i.until("f");
    assert!(f.last().unwrap().starts_with("f OK"), "{f:?}");
    assert!(f.concat().contains("in1@client-a.example"), "{f:?}");
    i.send(b"i IDLE\r\n");
    assert!(i.line().starts_with('+'), "IDLE again");

    // An invalid policy: the error with its position, the old policy stays.
    let broken =
        policy("metadata", true).replace("outbound = \"metadata\"", "outbound = \"everything\"");
    let line = broken
        .lines()
        .position(|l| l.contains("everything"))
        .unwrap()
        + 1;
    std::fs::write(bin.policy_path(), broken).unwrap();
    bin.signal("HUP");
    bin.wait_log("policy reload rejected", 1, WAIT);
    let errors = log_fields(&bin, "policy reload rejected");
    let error = errors[0]["error"].as_str().unwrap();
    let prefix = format!("{}:{line}:", bin.policy_path().display());
    let rest = error
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{error:?} starts with {prefix:?}"));
    let (column, message) = rest.split_once(": ").expect("file:line:column: message");
    assert!(column.parse::<u32>().is_ok_and(|c| c > 0), "{error}");
    assert!(!message.is_empty(), "{error}");
    assert_eq!(
        metric(&bin, "mailshare_policy_reloads_total"),
        reloads + 2.0
    );
    assert_eq!(metric(&bin, "mailshare_policy_reload_failures_total"), 1.0);
    assert_eq!(metric(&bin, "mailshare_policy_reload_failed"), 1.0);
    // The old policy (alice full, bob hidden) still decides captures and reads.
    let r = smtp_send(
        &mut a,
        "alice@acme.example",
        "x@client-a.example",
        "a3@acme.example",
    );
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(
        level_for_carol(&bin, "a3@acme.example").as_deref(),
        Some("full")
    );
    assert_eq!(level_for_carol(&bin, "b1@acme.example"), None);
    i.send(b"DONE\r\n");
    assert!(i.until("i").last().unwrap().starts_with("i OK"));
    i.send(b"n NOOP\r\n");
    assert!(i.until("n").last().unwrap().starts_with("n OK"));

    // Fixed: the next SIGHUP recovers.
    std::fs::write(bin.policy_path(), policy("metadata", true)).unwrap();
    bin.signal("HUP");
    bin.wait_log("policy reloaded", 2, WAIT);
    assert_eq!(metric(&bin, "mailshare_policy_reload_failed"), 0.0);
    assert_eq!(metric(&bin, "mailshare_policy_reload_failures_total"), 1.0);
    let r = smtp_send(
        &mut a,
        "alice@acme.example",
        "x@client-a.example",
        "a4@acme.example",
    );
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(
        level_for_carol(&bin, "a4@acme.example").as_deref(),
        Some("metadata")
    );
    assert_eq!(
        level_for_carol(&bin, "b1@acme.example").as_deref(),
        Some("full")
    );

    a.send(b"QUIT\r\n");
    assert!(a.smtp_reply()[0].starts_with("221"));
    i.send(b"z LOGOUT\r\n");
    assert!(i.until("z").last().unwrap().starts_with("z OK"));
    bin.signal("TERM");
    assert_exit_0(&mut bin, WAIT);
    let store = assert_store(
        &bin,
        &[
            "b1@acme.example",
            "a1@acme.example",
            "a2@acme.example",
            "a3@acme.example",
            "a4@acme.example",
            "in1@client-a.example",
        ],
    );
    let stored = |id: &str| {
        store
            .message(&engine::message_key(id))
            .unwrap()
            .unwrap()
            .stored
            .as_str()
    };
    assert_eq!(stored("a1@acme.example"), "subject");
    assert_eq!(stored("a2@acme.example"), "full");
    assert_eq!(stored("a3@acme.example"), "full");
    assert_eq!(stored("a4@acme.example"), "metadata");
}

// ---- TLS ---------------------------------------------------------------

/// A self-signed certificate for localhost / 127.0.0.1: (cert, key).
fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let openssl = require("openssl", "openssl");
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = run(
        Command::new(openssl)
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", &format!("/CN=localhost/O={name}")])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

fn der(cert: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(cert)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

/// Replace `to` with a copy of `from` in one rename.
fn replace_file(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

type TlsLines = BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

/// Connect over implicit TLS trusting `roots`; the stream (greeting read)
/// and the certificate the server presented.
fn tls_connect(addr: SocketAddr, roots: &[&Path]) -> (TlsLines, CertificateDer<'static>) {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(der(r)).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let mut s = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    let greeting = tls_reply(&mut s);
    assert!(greeting.starts_with("220"), "{greeting}");
    let cert = s.get_ref().conn.peer_certificates().unwrap()[0].clone();
    (s, cert)
}

/// One SMTP reply over TLS (multi-line joined).
fn tls_reply(s: &mut TlsLines) -> String {
    let mut out = String::new();
    loop {
        let mut l = String::new();
        s.read_line(&mut l).expect("read a reply line");
        assert!(!l.is_empty(), "closed; got {out}");
        let last = l.as_bytes().get(3) != Some(&b'-');
        out.push_str(&l);
        if last {
            return out;
        }
    }
}

fn tls_command(s: &mut TlsLines, line: &str) -> String {
    s.get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .unwrap();
    s.get_mut().flush().unwrap();
    tls_reply(s)
}

#[test]
fn sighup_swaps_the_tls_certificate_for_new_connections_and_keeps_it_on_error() {
    let _d = Deadline::new("tls reload", 90);
    let certs = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = make_cert(certs.path(), "first");
    let (cert_b, key_b) = make_cert(certs.path(), "second");
    let live = (certs.path().join("live.crt"), certs.path().join("live.key"));
    replace_file(&cert_a, &live.0);
    replace_file(&key_a, &live.1);
    let up = Upstreams::start();
    let mut spec = Spec::new(up.submission, vec![ListenerSpec::implicit()]);
    spec.tls_files = Some(live.clone());
    spec.log_level = "info";
    let mut bin = Binary::start(&spec, &[]);
    let addr = bin.addrs[0];
    let roots = [cert_a.as_path(), cert_b.as_path()];

    let (mut old, seen) = tls_connect(addr, &roots);
    assert_eq!(seen, der(&cert_a), "served the first certificate");
    assert!(tls_command(&mut old, "EHLO client.example").starts_with("250"));

    replace_file(&cert_b, &live.0);
    replace_file(&key_b, &live.1);
    bin.signal("HUP");
    bin.wait_log("TLS certificate reloaded", 1, WAIT);
    let (mut new, seen) = tls_connect(addr, &roots);
    assert_eq!(
        seen,
        der(&cert_b),
        "a new connection gets the second certificate"
    );
    assert!(tls_command(&mut new, "NOOP").starts_with("250"));
    // The session opened before the reload goes on with its certificate.
    assert!(tls_command(&mut old, "NOOP").starts_with("250"));
    assert_eq!(
        old.get_ref().conn.peer_certificates().unwrap()[0],
        der(&cert_a)
    );

    // A broken certificate file: logged, the second certificate stays.
    std::fs::write(&live.0, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    bin.signal("HUP");
    bin.wait_log("TLS reload failed", 1, WAIT);
    let failed = log_fields(&bin, "TLS reload failed");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains(&live.0.display().to_string()), "{error}");
    let (mut third, seen) = tls_connect(addr, &roots);
    assert_eq!(seen, der(&cert_b), "the previous certificate stays in use");
    assert!(tls_command(&mut third, "NOOP").starts_with("250"));
    assert!(tls_command(&mut old, "NOOP").starts_with("250"));
    for s in [&mut old, &mut new, &mut third] {
        assert!(tls_command(s, "QUIT").starts_with("221"));
    }
    bin.signal("TERM");
    assert_exit_0(&mut bin, WAIT);
}

// ---- SIGTERM -----------------------------------------------------------

#[test]
fn sigterm_drains_open_sessions_with_421_and_bye_and_exits_0() {
    let _d = Deadline::new("sigterm drain", 90);
    let up = Upstreams::start();
    append_direct(
        &up,
        "alice",
        "INBOX",
        &[message(
            "x@client-a.example",
            "alice@acme.example",
            "in2@client-a.example",
            "Hi",
        )
        .into_bytes()],
    );
    let mut bin = Binary::start(
        &spec(&up, policy("full", true), &["shutdown_grace_secs = 20"]),
        &[],
    );
    let (smtp, imap) = (bin.addrs[0], bin.imap_addrs[0]);

    // An idle authenticated SMTP session that already sent a message.
    let mut idle = LineClient::connect(smtp);
    idle.smtp_login("alice");
    let r = smtp_send(
        &mut idle,
        "alice@acme.example",
        "x@client-a.example",
        "d0@acme.example",
    );
    assert!(r.starts_with("250"), "{r}");
    // An IMAP session in IDLE (after a FETCH that captures).
    let mut i = Raw::login(imap, "alice");
    i.send(b"s SELECT INBOX\r\nf FETCH 1 BODY.PEEK[]\r\n");
    assert!(i.until("s").last().unwrap().starts_with("s OK"));
    assert!(i.until("f").last().unwrap().starts_with("f OK"));
    i.send(b"i IDLE\r\n");
    assert!(i.line().starts_with('+'));
    // An SMTP session in the middle of DATA.
    let mut mid = LineClient::connect(smtp);
    mid.smtp_login("bob");
    smtp_begin(&mut mid, "bob@acme.example", "y@client-b.example");
    let body = message(
        "bob@acme.example",
        "y@client-b.example",
        "d1@acme.example",
        "Mid",
    );
    let (head, tail) = body.split_at(body.len() / 2);
    mid.send(head.as_bytes());
    // Clients that have not logged in yet.
    let mut smtp_new = LineClient::connect(smtp);
    assert!(smtp_new.smtp_reply()[0].starts_with("220"));
    let mut imap_new = Raw::greeted(imap);

    bin.signal("TERM");
    bin.wait_log("shutting down: no new connections", 1, WAIT);
    wait_refused(smtp);
    wait_refused(imap);
    wait_refused(bin.admin.unwrap());

    let r = idle.smtp_reply().concat();
    assert!(r.starts_with("421 4.3.2"), "idle SMTP client: {r}");
    assert_eq!(idle.line(), "", "closed after the 421");
    let bye = i.line();
    assert!(bye.starts_with("* BYE"), "IMAP client in IDLE: {bye}");
    assert_eq!(i.rest(), "", "closed after the BYE");
    let r = smtp_new.smtp_reply().concat();
    assert!(r.starts_with("421 4.3.2"), "SMTP client before AUTH: {r}");
    let bye = imap_new.line();
    assert!(bye.starts_with("* BYE"), "IMAP client before LOGIN: {bye}");

    // The message in flight may finish: upstream's 250 reaches the client,
    // then the goodbye.
    mid.send(tail.as_bytes());
    mid.send(b".\r\n");
    let r = mid.smtp_reply().concat();
    assert!(r.starts_with("250"), "mid-DATA client: {r}");
    let r = mid.smtp_reply().concat();
    assert!(r.starts_with("421 4.3.2"), "then: {r}");
    assert_eq!(mid.line(), "", "closed after the 421");

    let took = assert_exit_0(&mut bin, WAIT);
    assert!(
        took < Duration::from_secs(15),
        "every session ended, so no need to wait for the deadline ({took:?})"
    );
    let log = bin.log_text();
    assert!(log.contains("all sessions finished"), "{log}");
    assert_store(
        &bin,
        &["d0@acme.example", "d1@acme.example", "in2@client-a.example"],
    );
    let sink = up.wait_for_sink(2, WAIT);
    assert!(
        sink.iter().any(|m| m.data.contains("<d1@acme.example>")),
        "the mid-DATA message was relayed"
    );
}

/// A server with one acknowledged capture and a client stalled mid-DATA.
fn stalled(up: &Upstreams, grace_secs: u64) -> (Binary, LineClient) {
    let grace = format!("shutdown_grace_secs = {grace_secs}");
    let bin = Binary::start(&spec(up, policy("full", true), &[&grace]), &[]);
    let mut c = LineClient::connect(bin.addrs[0]);
    c.smtp_login("alice");
    let id = format!("ok-{grace_secs}@acme.example");
    let r = smtp_send(&mut c, "alice@acme.example", "x@client-a.example", &id);
    assert!(r.starts_with("250"), "{r}");
    smtp_begin(&mut c, "alice@acme.example", "x@client-a.example");
    c.send(b"Subject: never finished\r\n\r\nhalf a message");
    (bin, c)
}

/// The stalled client saw no 250 and its connection is closed.
fn assert_cut_off(c: &mut LineClient) {
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut c.stream().try_clone().unwrap(), &mut rest);
    assert!(!rest.contains("250"), "{rest}");
}

#[test]
fn the_grace_deadline_and_a_second_sigterm_end_it_early_with_a_consistent_store() {
    let _d = Deadline::new("deadline and second signal", 90);
    let up = Upstreams::start();

    // The deadline: exits soon after 2 s.
    let (mut bin, mut c) = stalled(&up, 2);
    bin.signal("TERM");
    let took = assert_exit_0(&mut bin, WAIT);
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "exit {took:?} after SIGTERM with a 2 s grace period"
    );
    assert!(
        bin.log_text().contains("grace period over"),
        "{}",
        bin.log_text()
    );
    assert_cut_off(&mut c);
    assert_store(&bin, &["ok-2@acme.example"]);

    // A second SIGTERM: at once, well before the 60 s grace period.
    let (mut bin, mut c) = stalled(&up, 60);
    bin.signal("TERM");
    bin.wait_log("shutting down: no new connections", 1, WAIT);
    bin.signal("TERM");
    let took = assert_exit_0(&mut bin, WAIT);
    assert!(took < Duration::from_secs(10), "second SIGTERM: {took:?}");
    assert!(
        bin.log_text().contains("second signal"),
        "{}",
        bin.log_text()
    );
    assert_cut_off(&mut c);
    assert_store(&bin, &["ok-60@acme.example"]);
}

#[test]
fn a_sigterm_right_after_a_sighup_is_not_lost() {
    let _d = Deadline::new("hup then term", 90);
    // No upstream is contacted: nothing connects to the listener.
    let mut spec = Spec::new(([127, 0, 0, 1], 9).into(), vec![ListenerSpec::plain()]);
    spec.log_level = "info";
    for round in 0..5 {
        let mut bin = Binary::start(&spec, &[]);
        bin.signal("HUP");
        bin.signal("TERM");
        let status = bin.wait_exit(WAIT).unwrap_or_else(|| {
            panic!(
                "round {round}: SIGTERM after SIGHUP was ignored: {}",
                bin.log_text()
            )
        });
        assert!(status.success(), "{status}: {}", bin.log_text());
    }
}

/// IMAP captures run on a queue behind the relay: a FETCH is answered
/// before its messages are stored. SIGTERM right after the answer must
/// still store them all (the drain waits for the queue).
#[test]
fn imap_captures_queued_before_sigterm_are_stored() {
    let _d = Deadline::new("imap queue drain", 90);
    let up = Upstreams::start();
    // Enough (300 × 55 KB) that the captures lag behind the relay.
    let n = 300;
    let filler = "some longer body text of the message, line after line\r\n".repeat(1000);
    let msgs: Vec<Vec<u8>> = (0..n)
        .map(|k| {
            let id = format!("q{k}@client-a.example");
            (message("x@client-a.example", "alice@acme.example", &id, "Hi") + &filler).into_bytes()
        })
        .collect();
    append_direct(&up, "alice", "INBOX", &msgs);
    let mut bin = Binary::start(&spec(&up, policy("full", true), &[]), &[]);
    let mut i = Raw::login(bin.imap_addrs[0], "alice");
    i.send(b"s SELECT INBOX\r\n");
    assert!(i.until("s").last().unwrap().starts_with("s OK"));
    i.send(format!("f FETCH 1:{n} BODY.PEEK[]\r\n").as_bytes());
    assert!(i.until("f").last().unwrap().starts_with("f OK"));
    bin.signal("TERM");
    assert!(i.line().starts_with("* BYE"), "BYE to a selected session");
    assert_exit_0(&mut bin, WAIT);
    let ids: Vec<String> = (0..n).map(|k| format!("q{k}@client-a.example")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_store(&bin, &ids);
}
