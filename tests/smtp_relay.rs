//! The SMTP relay against real servers: Dovecot's submission service
//! relaying to Postfix's smtp-sink, mailshare in front (in-process through
//! the library seam, or the binary where its process is what is measured).
//! Clients are swaks and Python's smtplib as child processes, or raw lines.
//! Every test runs under a deadline.

mod support;

use base64::Engine as _;
use mailshare::engine::{self, Level, Viewer};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::server::{cert, run, InProcess, ListenerSpec, Spec};
use support::upstreams::{password, LineClient, SinkMessage, Upstreams};
use support::Deadline;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn plain(login: &str, pw: &str) -> String {
    b64(&format!("\0{login}\0{pw}"))
}

/// A message from alice; `share` adds an `X-Mailshare-Share` header (folded
/// when it says so) between Subject and Message-ID.
fn message(id: &str, to: &str, subject: &str, share: Option<&str>) -> String {
    let mut m = format!(
        "Date: Mon, 24 Nov 2025 10:00:00 +0000\r\nFrom: Alice Smith <alice@acme.example>\r\nTo: {to}\r\nSubject: {subject}\r\n"
    );
    if let Some(level) = share {
        m.push_str(&format!("X-Mailshare-Share:\r\n {level}\r\n"));
    }
    m.push_str(&format!(
        "Message-ID: <{id}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nHello,\r\n.a line that starts with a dot\r\n..and one with two\r\nGr\u{fc}\u{df}e, \u{e9}t\u{e9}\r\n\r\n-- \r\nAlice\r\n"
    ));
    m
}

fn swaks(args: &[&str]) -> std::process::Output {
    support::upstreams::require("swaks", "swaks");
    run(Command::new("swaks").args(args), Duration::from_secs(60))
}

fn swaks_send(server: SocketAddr, extra: &[&str], login: &str, to: &str, file: &Path) {
    let port = server.port().to_string();
    let pw = password(login);
    let mut args = vec![
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--auth-user",
        login,
        "--auth-password",
        pw,
        "--from",
        "alice@acme.example",
        "--to",
        to,
        "--data",
    ];
    let f = format!("@{}", file.display());
    args.push(&f);
    args.extend_from_slice(extra);
    let out = swaks(&args);
    assert!(
        out.status.success(),
        "swaks {extra:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const SMTPLIB: &str = r#"
import smtplib, ssl, sys
host, port, cafile, user, pw, mfrom, rcpts, path = sys.argv[1:9]
ctx = ssl.create_default_context(cafile=cafile)
s = smtplib.SMTP_SSL(host, int(port), context=ctx, timeout=30)
s.ehlo("python.example")
s.user, s.password = user, pw
code, resp = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
assert code == 235, (code, resp)
refused = s.sendmail(mfrom, rcpts.split(","), open(path, "rb").read())
assert not refused, refused
s.quit()
print("sent")
"#;

fn smtplib_send(server: SocketAddr, login: &str, rcpts: &str, file: &Path) {
    let out = run(
        Command::new("python3").args([
            "-c",
            SMTPLIB,
            "127.0.0.1",
            &server.port().to_string(),
            cert().to_str().unwrap(),
            login,
            password(login),
            "alice@acme.example",
            rcpts,
            file.to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "smtplib failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The transactions smtp-sink completed. It also dumps an empty record for
/// a transaction aborted mid-DATA (which is what aborting upstream does):
/// those were never delivered.
fn delivered(up: &Upstreams) -> Vec<SinkMessage> {
    up.sink_messages()
        .into_iter()
        .filter(|m| !m.mail_from.is_empty())
        .collect()
}

/// The sink messages holding `Message-ID: <id>`.
fn sink_with(up: &Upstreams, id: &str, n: usize) -> Vec<SinkMessage> {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let found: Vec<SinkMessage> = up
            .sink_messages()
            .into_iter()
            .filter(|m| m.data.contains(&format!("Message-ID: <{id}>")))
            .collect();
        if found.len() >= n || Instant::now() > end {
            return found;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// What a colleague who took no part in the message sees of it.
fn colleague_level(ms: &InProcess, message_id: &str, colleague: &str) -> Level {
    let record = ms
        .gateway
        .store
        .message(&engine::message_key(message_id))
        .unwrap()
        .unwrap_or_else(|| panic!("{message_id} was captured"));
    let policy = ms.gateway.policy.current();
    engine::visible(&policy, &Viewer::new(colleague), &record).level
}

#[test]
fn swaks_and_smtplib_over_tls_deliver_byte_identical_messages_and_capture_them() {
    let _d = Deadline::new("swaks_and_smtplib", 180);
    let up = Upstreams::start();
    let ms = InProcess::start(&Spec::new(
        up.submission,
        vec![ListenerSpec::starttls(), ListenerSpec::implicit()],
    ));
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, body: &str| {
        let p = dir.path().join(name);
        fs::write(&p, body).unwrap();
        p
    };

    // 1. swaks, STARTTLS + AUTH PLAIN, with a folded share header lowering
    //    the level to subject. The same message without the header goes
    //    directly to Dovecot for comparison.
    let to1 = "Office <office@client-a.example>";
    let direct1 = file(
        "d1.eml",
        &message("m1@acme.example", to1, "Q3 figures", None),
    );
    let relay1 = file(
        "r1.eml",
        &message("m1@acme.example", to1, "Q3 figures", Some("subject")),
    );
    swaks_send(
        up.submission,
        &["--auth", "PLAIN"],
        "alice",
        "office@client-a.example",
        &direct1,
    );
    swaks_send(
        ms.addrs[0],
        &[
            "--auth",
            "PLAIN",
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            cert().to_str().unwrap(),
        ],
        "alice",
        "office@client-a.example",
        &relay1,
    );
    let got = sink_with(&up, "m1@acme.example", 2);
    assert_eq!(got.len(), 2, "direct and relayed copies at the sink");
    assert_eq!(got[1].data, got[0].data, "relayed = direct, header removed");
    assert!(!got[1]
        .data
        .to_ascii_lowercase()
        .contains("x-mailshare-share"));
    assert!(got[1].data.contains("..and one with two"), "dots restuffed");

    // 2. smtplib, implicit TLS + AUTH LOGIN, with a bcc only in the envelope.
    let to2 = "Bob Stone <bob@client-a.example>";
    let direct2 = file(
        "d2.eml",
        &message("m2@acme.example", to2, "Contract draft", None),
    );
    let out = run(
        Command::new("python3").args([
            "-c",
            r#"
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=30)
s.login(sys.argv[3], sys.argv[4])
s.sendmail("alice@acme.example", ["bob@client-a.example", "secret@other.example"], open(sys.argv[5], "rb").read())
s.quit()
"#,
            "127.0.0.1",
            &up.submission.port().to_string(),
            "alice",
            password("alice"),
            direct2.to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    smtplib_send(
        ms.addrs[1],
        "alice",
        "bob@client-a.example,secret@other.example",
        &direct2,
    );
    let got = sink_with(&up, "m2@acme.example", 2);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].data, got[0].data);
    assert_eq!(got[1].rcpt_to.len(), 2, "the bcc reached upstream too");

    // 3. No override, to a contact without a setting: alice's outbound default.
    let relay3 = file(
        "r3.eml",
        &message("m3@acme.example", "hank@globex.example", "Dinner", None),
    );
    swaks_send(
        ms.addrs[0],
        &[
            "--auth",
            "PLAIN",
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            cert().to_str().unwrap(),
        ],
        "alice",
        "hank@globex.example",
        &relay3,
    );
    let relay4 = file(
        "r4.eml",
        &message(
            "m4@acme.example",
            "office@client-a.example",
            "Board pack",
            None,
        ),
    );
    smtplib_send(ms.addrs[1], "alice", "office@client-a.example", &relay4);

    // The store holds each at the policy's level for a colleague (bob@acme
    // took part in none): the header's override; alice's per-contact setting
    // for bob@client-a.example (subject); Globex's (metadata); her default (full).
    assert_eq!(
        colleague_level(&ms, "m1@acme.example", "bob@acme.example"),
        Level::Subject
    );
    assert_eq!(
        colleague_level(&ms, "m2@acme.example", "bob@acme.example"),
        Level::Subject
    );
    assert_eq!(
        colleague_level(&ms, "m3@acme.example", "bob@acme.example"),
        Level::Metadata
    );
    assert_eq!(
        colleague_level(&ms, "m4@acme.example", "bob@acme.example"),
        Level::Full
    );
    // Carol shares nothing by default but is a viewer like bob here.
    assert_eq!(
        colleague_level(&ms, "m4@acme.example", "carol@acme.example"),
        Level::Full
    );
    // The captured copy kept the header's decision; the envelope-only
    // recipient is a blind copy.
    let r2 = ms
        .gateway
        .store
        .message(&engine::message_key("m2@acme.example"))
        .unwrap()
        .unwrap();
    assert!(
        r2.bcc.iter().any(|m| m.address == "secret@other.example"),
        "{:?}",
        r2.bcc
    );
    assert_eq!(r2.owners[0].user, "alice@acme.example");
    let r1 = ms
        .gateway
        .store
        .message(&engine::message_key("m1@acme.example"))
        .unwrap()
        .unwrap();
    assert_eq!(r1.owners[0].override_level, Some(Level::Subject));
    assert_eq!(
        ms.metric("mailshare_smtp_messages_relayed_total"),
        4.0,
        "{}",
        ms.metrics()
    );
    assert_eq!(ms.metric("mailshare_smtp_share_headers_removed_total"), 1.0);
    assert_eq!(
        ms.metric("mailshare_smtp_auth_total{result=\"success\"}"),
        4.0
    );
}

/// EHLO (returning its lines) then AUTH PLAIN as `login`.
fn ehlo_auth(c: &mut LineClient, login: &str) -> Vec<String> {
    c.smtp_login(login)
}

fn one(c: &mut LineClient) -> String {
    c.smtp_reply().concat()
}

#[test]
fn pipelining_bdat_8bitmime_smtputf8_size_and_upstream_rejections() {
    let _d = Deadline::new("pipelining_bdat", 120);
    let up = Upstreams::start();
    let ms = InProcess::start(
        &Spec::new(up.submission, vec![ListenerSpec::plain()])
            .limit("smtp_max_message_bytes = 1000000"),
    );
    let mut c = LineClient::connect(ms.addrs[0]);
    let ehlo = ehlo_auth(&mut c, "alice").concat();
    for kw in [
        "PIPELINING",
        "CHUNKING",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SIZE 1000000",
        "AUTH PLAIN LOGIN",
    ] {
        assert!(ehlo.contains(kw), "{kw} offered: {ehlo}");
    }
    // Dovecot 2.3 lacks SMTPUTF8; BURL is never relayed; STARTTLS not on a plain port.
    for kw in ["SMTPUTF8", "BURL", "STARTTLS"] {
        assert!(!ehlo.contains(kw), "{kw} not offered: {ehlo}");
    }

    // The same rejections straight from Dovecot, for comparison.
    let mut d = LineClient::connect(up.submission);
    ehlo_auth(&mut d, "alice");
    d.send(b"MAIL FROM:<alice@acme.example> SMTPUTF8\r\n");
    let direct_utf8 = one(&mut d);
    d.send(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<nobody>\r\n");
    one(&mut d);
    let direct_rcpt = one(&mut d);
    d.send(b"QUIT\r\n");

    // PIPELINING: a whole envelope in one write; replies in order, the
    // rejected RCPT answered with upstream's exact line.
    c.send(b"MAIL FROM:<alice@acme.example> BODY=8BITMIME\r\nRCPT TO:<bob@client-a.example>\r\nRCPT TO:<nobody>\r\nRCPT TO:<carol@client-a.example>\r\nDATA\r\n");
    assert!(one(&mut c).starts_with("250"));
    assert!(one(&mut c).starts_with("250"));
    assert_eq!(
        one(&mut c),
        direct_rcpt,
        "upstream's RCPT rejection, unchanged"
    );
    assert!(one(&mut c).starts_with("250"));
    assert!(one(&mut c).starts_with("354"));
    c.send("Subject: 8bit\r\nMessage-ID: <p1@acme.example>\r\nTo: bob@client-a.example\r\n\r\nGr\u{fc}\u{df}e aus K\u{f6}ln\r\n.\r\n".as_bytes());
    assert!(one(&mut c).starts_with("250"));

    // BDAT in two chunks, the second LAST, pipelined with the envelope.
    let c1 = b"Subject: chunked\r\nMessage-ID: <p2@acme.example>\r\n";
    let c2 = b"To: bob@client-a.example\r\n\r\nbody in chunks\r\n";
    let mut w = b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<bob@client-a.example>\r\n".to_vec();
    w.extend_from_slice(format!("BDAT {}\r\n", c1.len()).as_bytes());
    w.extend_from_slice(c1);
    w.extend_from_slice(format!("BDAT {} LAST\r\n", c2.len()).as_bytes());
    w.extend_from_slice(c2);
    c.send(&w);
    for _ in 0..4 {
        let r = one(&mut c);
        assert!(r.starts_with("250"), "{r}");
    }

    // SMTPUTF8 relayed to an upstream without it: upstream's answer.
    c.send(b"MAIL FROM:<alice@acme.example> SMTPUTF8\r\n");
    assert_eq!(one(&mut c), direct_utf8);
    c.send(b"RSET\r\n");
    assert!(one(&mut c).starts_with("250"));

    // SIZE: over our limit at MAIL, and while streaming.
    c.send(b"MAIL FROM:<alice@acme.example> SIZE=2000000\r\n");
    assert!(one(&mut c).starts_with("552 5.3.4"));
    c.send(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<bob@client-a.example>\r\nDATA\r\n");
    one(&mut c);
    one(&mut c);
    assert!(one(&mut c).starts_with("354"));
    let line = format!("{}\r\n", "x".repeat(998));
    c.send(b"Subject: too big\r\n\r\n");
    for _ in 0..1100 {
        c.send(line.as_bytes());
    }
    c.send(b".\r\n");
    assert!(one(&mut c).starts_with("552 5.3.4"));

    let sink = up.wait_for_sink(2, Duration::from_secs(10));
    assert_eq!(
        delivered(&up).len(),
        2,
        "two messages delivered, the big one not"
    );
    assert!(!sink.iter().any(|m| m.data.contains("too big")));
    let p1 = sink.iter().find(|m| m.data.contains("<p1@")).unwrap();
    assert!(
        p1.data.contains("Gr\u{fc}\u{df}e aus K\u{f6}ln"),
        "8-bit body intact"
    );
    assert_eq!(p1.rcpt_to.len(), 2);
    let p2 = sink.iter().find(|m| m.data.contains("<p2@")).unwrap();
    assert!(p2.data.contains("Subject: chunked\nMessage-ID: <p2@acme.example>\nTo: bob@client-a.example\n\nbody in chunks"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        up.sink_messages().len(),
        2,
        "the oversized message never arrives"
    );
}

#[test]
fn a_wrong_password_gets_upstreams_535_and_nothing_is_captured() {
    let _d = Deadline::new("wrong_password", 60);
    let up = Upstreams::start();
    let ms = InProcess::start(&Spec::new(up.submission, vec![ListenerSpec::plain()]));
    let auth = format!("AUTH PLAIN {}\r\n", plain("alice", "wrong"));
    let mut d = LineClient::connect(up.submission);
    d.smtp_reply();
    d.send(b"EHLO x\r\n");
    d.smtp_reply();
    d.send(auth.as_bytes());
    let direct = one(&mut d);
    let mut c = LineClient::connect(ms.addrs[0]);
    c.smtp_reply();
    c.send(b"EHLO x\r\n");
    c.smtp_reply();
    c.send(auth.as_bytes());
    assert_eq!(one(&mut c), direct);
    assert!(direct.starts_with("535"), "{direct}");
    c.send(b"MAIL FROM:<alice@acme.example>\r\n");
    assert!(
        one(&mut c).starts_with("530"),
        "upstream still wants a login"
    );
    assert_eq!(ms.gateway.store.stats().unwrap().messages, 0);
    assert_eq!(
        ms.metric("mailshare_smtp_auth_total{result=\"failure\"}"),
        1.0
    );
}

#[test]
fn starttls_injection_is_never_answered_and_plaintext_auth_needs_permission() {
    let _d = Deadline::new("starttls_injection", 60);
    let up = Upstreams::start();
    let ms = InProcess::start(&Spec::new(
        up.submission,
        vec![
            ListenerSpec::starttls(),
            ListenerSpec {
                allow_plaintext_auth: true,
                ..ListenerSpec::starttls()
            },
        ],
    ));
    // Before TLS: no AUTH offered, AUTH and MAIL refused; no upstream yet.
    let mut c = LineClient::connect(ms.addrs[0]);
    c.smtp_reply();
    c.send(b"EHLO x\r\n");
    let ehlo = c.smtp_reply().concat();
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    c.send(format!("AUTH PLAIN {}\r\n", plain("alice", password("alice"))).as_bytes());
    assert!(one(&mut c).starts_with("530 5.7.0"));
    c.send(b"MAIL FROM:<alice@acme.example>\r\n");
    assert!(one(&mut c).starts_with("530 5.7.0"));
    // STARTTLS with NOOP injected in the same write.
    let mut raw = TcpStream::connect(ms.addrs[0]).unwrap();
    raw.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 512];
    let n = raw.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"220"));
    raw.write_all(b"EHLO x\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let _ = raw.read(&mut buf).unwrap();
    raw.write_all(b"STARTTLS\r\nNOOP\r\n").unwrap();
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < end {
        match raw.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    let got = String::from_utf8_lossy(&got);
    assert_eq!(
        got, "220 2.0.0 Ready to start TLS\r\n",
        "the NOOP is never answered"
    );
    assert_eq!(
        ms.metric("mailshare_smtp_rejects_total{reason=\"starttls_pipelined\"}"),
        1.0
    );
    // The listener that allows it: AUTH in plaintext works.
    let mut p = LineClient::connect(ms.addrs[1]);
    let ehlo = ehlo_auth(&mut p, "bob").concat();
    assert!(
        ehlo.contains("STARTTLS") && ehlo.contains("AUTH PLAIN"),
        "{ehlo}"
    );
}

/// A fake upstream: greets, answers EHLO offering STARTTLS, then answers
/// STARTTLS with `after_starttls` in one write.
fn fake_upstream(after_starttls: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = s.write_all(b"220 fake ESMTP\r\n");
                let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) > 0 {
                    let cmd = line.to_ascii_uppercase();
                    if cmd.starts_with("EHLO") {
                        let _ = s.write_all(b"250-fake\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
                    } else if cmd.starts_with("STARTTLS") {
                        let _ = s.write_all(after_starttls);
                    }
                    line.clear();
                }
            });
        }
    });
    addr
}

#[test]
fn upstream_response_injection_after_starttls_aborts() {
    let _d = Deadline::new("upstream_injection", 60);
    let fake = fake_upstream(b"220 go\r\n250 fake\r\n");
    let mut spec = Spec::new(fake, vec![ListenerSpec::plain()]);
    spec.upstream_tls = "starttls";
    let ms = InProcess::start(&spec);
    let mut c = LineClient::connect(ms.addrs[0]);
    c.smtp_reply();
    let t = Instant::now();
    c.send(b"EHLO x\r\n");
    let r = one(&mut c);
    assert!(r.starts_with("421 4.4.1"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(
        ms.metric("mailshare_smtp_upstream_errors_total{kind=\"starttls_injection\"}"),
        1.0,
        "{}",
        ms.metrics()
    );
    assert_eq!(c.line(), "", "and the session is closed");
}

#[test]
fn a_dead_or_silent_upstream_yields_421_within_the_timeout() {
    let _d = Deadline::new("dead_upstream", 60);
    // Dead: nothing listens.
    let dead: SocketAddr = ([127, 0, 0, 1], support::upstreams::free_port()).into();
    let ms = InProcess::start(&Spec::new(dead, vec![ListenerSpec::plain()]));
    let mut c = LineClient::connect(ms.addrs[0]);
    c.smtp_reply();
    let t = Instant::now();
    c.send(b"EHLO x\r\n");
    assert!(one(&mut c).starts_with("421 4.4.1"));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Silent: accepts, never greets; timeout_secs = 2.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut spec = Spec::new(silent.local_addr().unwrap(), vec![ListenerSpec::plain()]);
    spec.upstream_timeout_secs = 2;
    let ms = InProcess::start(&spec);
    let mut c = LineClient::connect(ms.addrs[0]);
    c.smtp_reply();
    let t = Instant::now();
    c.send(b"EHLO x\r\n");
    assert!(one(&mut c).starts_with("421 4.4.1"));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(
        ms.metric("mailshare_smtp_upstream_errors_total{kind=\"timeout\"}"),
        1.0
    );
    drop(silent);
}

/// A fake upstream that takes one message up to the 354 and then stops reading.
fn stalling_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Some(Ok(s)) = l.incoming().next() {
            let mut s = s;
            let _ = s.write_all(b"220 staller\r\n");
            let mut r = std::io::BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) > 0 {
                let cmd = line.to_ascii_uppercase();
                let reply: &[u8] = if cmd.starts_with("EHLO") {
                    b"250-staller\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n"
                } else if cmd.starts_with("AUTH") {
                    b"235 ok\r\n"
                } else if cmd.starts_with("DATA") {
                    let _ = s.write_all(b"354 go\r\n");
                    // Stop reading; hold the socket open.
                    std::thread::sleep(Duration::from_secs(30));
                    return;
                } else {
                    b"250 ok\r\n"
                };
                let _ = s.write_all(reply);
                line.clear();
            }
        }
    });
    addr
}

#[test]
fn an_upstream_stalling_mid_data_gets_the_client_an_answer_not_a_hang() {
    let _d = Deadline::new("stall_mid_data", 60);
    let mut spec = Spec::new(stalling_upstream(), vec![ListenerSpec::plain()]);
    spec.upstream_timeout_secs = 2;
    let ms = InProcess::start(&spec);
    let mut c = LineClient::connect(ms.addrs[0]);
    ehlo_auth(&mut c, "alice");
    c.send(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<bob@client-a.example>\r\nDATA\r\n");
    one(&mut c);
    one(&mut c);
    assert!(one(&mut c).starts_with("354"));
    // Stream far more than the socket buffers hold, from another thread.
    let addr_writer = c_writer(&c);
    let t = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut w = addr_writer;
        let chunk = vec![b'x'; 64 * 1024];
        let mut line = Vec::new();
        for _ in 0..800 {
            line.clear();
            line.extend_from_slice(&chunk[..990]);
            line.extend_from_slice(b"\r\n");
            if w.write_all(&line.repeat(60)).is_err() {
                return;
            }
        }
    });
    // The reply (451) arrives, or the connection closes: either way promptly.
    let mut reply = String::new();
    let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(c_writer(&c)), &mut reply);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        reply.is_empty() || reply.starts_with("451 4.4.1"),
        "{reply}"
    );
    let _ = writer.join();
    assert!(ms.metric("mailshare_smtp_upstream_errors_total{kind=\"timeout\"}") >= 1.0);
}

/// Another handle on the client's socket.
fn c_writer(c: &LineClient) -> TcpStream {
    c.stream().try_clone().unwrap()
}

/// NOTES.md's smuggling sequences.
const SMUGGLING: &[&[u8]] = &[
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r\r\n",
    b"\r\n\x00.\r\n",
];

/// Send each vector in its own session; the replies to the DATA.
fn smuggle_all(addr: SocketAddr) -> Vec<String> {
    let mut replies = Vec::new();
    for (i, v) in SMUGGLING.iter().enumerate() {
        let mut c = LineClient::connect(addr);
        ehlo_auth(&mut c, "alice");
        c.send(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<bob@client-a.example>\r\nDATA\r\n");
        one(&mut c);
        one(&mut c);
        assert!(one(&mut c).starts_with("354"));
        let mut m = format!("Subject: smuggle {i}\r\nMessage-ID: <s{i}@acme.example>\r\n\r\nhello")
            .into_bytes();
        m.extend_from_slice(v);
        m.extend_from_slice(b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@client-a.example>\r\nDATA\r\nSubject: smuggled\r\n\r\nowned\r\n");
        m.extend_from_slice(b"\r\n.\r\n");
        c.send(&m);
        replies.push(one(&mut c));
    }
    replies
}

#[test]
fn every_smuggling_vector_gives_upstream_one_message_or_none() {
    let _d = Deadline::new("smuggling", 120);
    let up = Upstreams::start();
    // Default: refused, nothing delivered.
    let strict = InProcess::start(&Spec::new(up.submission, vec![ListenerSpec::plain()]));
    for r in smuggle_all(strict.addrs[0]) {
        assert!(r.starts_with("554 5.6.0"), "{r}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(delivered(&up).len(), 0, "nothing reached the sink");
    // Normalising: each DATA is exactly one message from alice, the
    // "smuggled" commands inside its body; NUL is refused either way.
    let lenient = InProcess::start(
        &Spec::new(up.submission, vec![ListenerSpec::plain()])
            .limit("smtp_bare_lf = \"normalize\""),
    );
    let replies = smuggle_all(lenient.addrs[0]);
    for (r, v) in replies.iter().zip(SMUGGLING) {
        if v.contains(&0) {
            assert!(r.starts_with("554 5.6.0"), "{r}");
        } else {
            assert!(r.starts_with("250"), "{r}");
        }
    }
    let sink = up.wait_for_sink(SMUGGLING.len() - 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let sink_now = delivered(&up);
    assert_eq!(
        sink_now.len(),
        SMUGGLING.len() - 1,
        "one message per DATA: {sink:?}"
    );
    for m in &sink_now {
        assert!(m.mail_from.contains("alice@acme.example"), "{m:?}");
        assert!(!m.mail_from.contains("evil"), "{m:?}");
        assert!(
            m.data.contains("owned"),
            "the smuggled part stayed inside: {m:?}"
        );
    }
}

#[test]
fn a_failed_capture_still_answers_250_and_spools_for_ingest_to_replay() {
    let _d = Deadline::new("spool", 90);
    let up = Upstreams::start();
    let ms = InProcess::start(&Spec::new(up.submission, vec![ListenerSpec::plain()]));
    let mut c = LineClient::connect(ms.addrs[0]);
    ehlo_auth(&mut c, "alice");
    // No header at all: upstream takes it, the parser cannot.
    c.send(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<bob@client-a.example>\r\nDATA\r\n");
    one(&mut c);
    one(&mut c);
    assert!(one(&mut c).starts_with("354"));
    c.send(b"\r\nno header here\r\n.\r\n");
    assert!(
        one(&mut c).starts_with("250"),
        "upstream took it: relayed as 250"
    );
    assert_eq!(up.wait_for_sink(1, Duration::from_secs(10)).len(), 1);
    let spool = ms.spool_dir();
    let entries = mailshare::smtp::spool::list(&spool).unwrap();
    assert_eq!(entries.len(), 1, "spooled");
    let e = entries[0].as_ref().unwrap();
    assert_eq!(e.meta.owner, "alice@acme.example");
    assert_eq!(e.meta.envelope_recipients, vec!["bob@client-a.example"]);
    assert_eq!(fs::read(&e.eml).unwrap(), b"\r\nno header here\r\n");
    assert_eq!(
        ms.metric("mailshare_smtp_spooled_total{result=\"spooled\"}"),
        1.0
    );
    assert_eq!(
        ms.metric("mailshare_capture_errors_total{kind=\"parse\",protocol=\"smtp\"}"),
        1.0,
        "{}",
        ms.metrics()
    );

    // Replay: a message that now parses is captured and leaves the spool.
    let good = b"From: alice@acme.example\r\nTo: bob@client-a.example\r\nSubject: replayed\r\nMessage-ID: <replay@acme.example>\r\n\r\nhi\r\n";
    fs::write(&e.eml, good).unwrap();
    // The running gateway holds the store: stop it first.
    let dir = ms.stop();
    let config = dir.path().join("mailshare.toml");
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_mailshare"))
            .args(["ingest", "-c"])
            .arg(&config)
            .arg("--spool"),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("stored: subject") && stdout.contains("removed from the spool"),
        "{stdout}"
    );
    assert!(mailshare::smtp::spool::list(&spool).unwrap().is_empty());
}

/// Poll a metric sample (bounded) until it has `value`.
fn wait_metric(ms: &InProcess, sample: &str, value: f64) {
    let end = Instant::now() + Duration::from_secs(20);
    while ms.metric(sample) != value {
        assert!(
            Instant::now() < end,
            "{sample} never reached {value}:\n{}",
            ms.metrics()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_exhausted_capture_budget_never_holds_up_the_relay() {
    let _d = Deadline::new("smtp_budget", 90);
    let up = Upstreams::start();
    let ms = InProcess::start(
        &Spec::new(up.submission, vec![ListenerSpec::plain()])
            .limit("capture_memory_budget_bytes = 1048576"),
    );
    assert_eq!(ms.metric("mailshare_capture_budget_bytes"), 1048576.0);
    // Alice's first message, half sent, holds the whole budget (1 MiB is
    // reserved at once for a message being collected).
    let mut a = LineClient::connect(ms.addrs[0]);
    ehlo_auth(&mut a, "alice");
    a.send(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<office@client-a.example>\r\nDATA\r\n");
    one(&mut a);
    one(&mut a);
    assert!(one(&mut a).starts_with("354"));
    a.send(b"From: alice@acme.example\r\nTo: office@client-a.example\r\nSubject: first\r\nMessage-ID: <budget-a@acme.example>\r\n\r\n");
    a.send("some body text\r\n".repeat(1000).as_bytes());
    wait_metric(&ms, "mailshare_capture_budget_used_bytes", 1048576.0);

    // Meanwhile a second message goes through at once, captured from its
    // headers only, and the denial is counted.
    let mut b = LineClient::connect(ms.addrs[0]);
    ehlo_auth(&mut b, "alice");
    b.send(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<office@client-a.example>\r\nDATA\r\n");
    one(&mut b);
    one(&mut b);
    assert!(one(&mut b).starts_with("354"));
    b.send(
        message(
            "budget-b@acme.example",
            "office@client-a.example",
            "second",
            None,
        )
        .as_bytes(),
    );
    b.send(b".\r\n");
    assert!(one(&mut b).starts_with("250"));
    assert_eq!(sink_with(&up, "budget-b@acme.example", 1).len(), 1);
    assert_eq!(
        ms.metric("mailshare_capture_budget_exhausted_total{outcome=\"denied\",protocol=\"smtp\"}"),
        1.0,
        "{}",
        ms.metrics()
    );
    assert_eq!(
        ms.metric("mailshare_smtp_capture_headers_only_total{reason=\"budget\"}"),
        1.0
    );
    let r = ms
        .gateway
        .store
        .message(&engine::message_key("budget-b@acme.example"))
        .unwrap()
        .expect("captured from its headers");
    assert!(r.content.is_none() && r.stored <= Level::Subject, "{r:?}");

    // The first message completes, captured whole; the budget comes back.
    a.send(b".\r\n");
    assert!(one(&mut a).starts_with("250"));
    let r = ms
        .gateway
        .store
        .message(&engine::message_key("budget-a@acme.example"))
        .unwrap()
        .expect("captured");
    assert!(r.content.is_some(), "captured with its content: {r:?}");
    wait_metric(&ms, "mailshare_capture_budget_used_bytes", 0.0);
}

#[test]
fn connection_limits_answer_421_and_are_counted() {
    let _d = Deadline::new("smtp_limits", 60);
    let up = Upstreams::start();
    let ms = InProcess::start(
        &Spec::new(
            up.submission,
            vec![ListenerSpec::plain(), ListenerSpec::implicit()],
        )
        .limit("max_connections_per_listener = 2")
        .limit("max_connections_per_ip = 2"),
    );
    let refused = |listener: &str, reason: &str| {
        ms.metric(&format!(
            "mailshare_connections_refused_total{{listener=\"{listener}\",protocol=\"smtp\",reason=\"{reason}\"}}"
        ))
    };
    let mut a = LineClient::connect(ms.addrs[0]);
    assert!(one(&mut a).starts_with("220"));
    let mut b = LineClient::connect(ms.addrs[0]);
    assert!(one(&mut b).starts_with("220"));
    // The listener is full: answered, not left in the backlog.
    let mut c = LineClient::connect(ms.addrs[0]);
    assert_eq!(
        c.rest(),
        "421 4.7.0 Too many connections, try again later\r\n"
    );
    assert_eq!(refused("smtp:none", "listener_full"), 1.0);
    // The address has two sessions: refused on the other listener too,
    // silently there (implicit TLS: a plaintext 421 would mean nothing).
    let mut d = LineClient::connect(ms.addrs[1]);
    assert_eq!(d.rest(), "");
    assert_eq!(refused("smtp:implicit", "per_ip"), 1.0);
    assert_eq!(refused("smtp:none", "per_ip"), 0.0);
    // Slots come back when sessions end.
    a.send(b"QUIT\r\n");
    assert!(one(&mut a).starts_with("221"));
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let mut e = LineClient::connect(ms.addrs[0]);
        if e.line().starts_with("220") {
            break;
        }
        assert!(Instant::now() < end, "never served again");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_hundred_concurrent_sessions() {
    let _d = Deadline::new("concurrency", 180);
    // Through a proxy every session comes from one address: lift Dovecot's
    // per user+IP cap (10) and its default process limit (100).
    let up = Upstreams::start_with_config(
        Default::default(),
        "mail_max_userip_connections = 1000\ndefault_process_limit = 1000\ndefault_client_limit = 4000",
    );
    let ms = InProcess::start(&Spec::new(up.submission, vec![ListenerSpec::plain()]));
    const N: usize = 200;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(N));
    let addr = ms.addrs[0];
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let login = ["alice", "bob", "carol"][i % 3];
                let mut c = LineClient::connect(addr);
                c.smtp_reply();
                c.send(b"EHLO client.example\r\n");
                c.smtp_reply();
                c.send(format!("AUTH PLAIN {}\r\n", plain(login, password(login))).as_bytes());
                let auth = one(&mut c);
                // Every session is open (and logged in) at once; never
                // leave the others waiting at the barrier.
                barrier.wait();
                if !auth.starts_with("235") {
                    return Err(format!("session {i}: {auth}"));
                }
                c.send(format!("MAIL FROM:<{login}@acme.example>\r\nRCPT TO:<office@client-a.example>\r\nDATA\r\n").as_bytes());
                let (a, b, d) = (one(&mut c), one(&mut c), one(&mut c));
                if !(a.starts_with("250") && b.starts_with("250") && d.starts_with("354")) {
                    return Err(format!("session {i}: {a}{b}{d}"));
                }
                c.send(format!("From: {login}@acme.example\r\nTo: office@client-a.example\r\nSubject: concurrent {i}\r\nMessage-ID: <c{i}@acme.example>\r\n\r\nbody {i}\r\n.\r\nQUIT\r\n").as_bytes());
                let r = one(&mut c);
                if !r.starts_with("250") {
                    return Err(format!("session {i}: {r}"));
                }
                let q = one(&mut c);
                q.starts_with("221").then_some(()).ok_or(q)
            })
        })
        .collect();
    let errors: Vec<String> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())).err())
        .collect();
    assert!(
        errors.is_empty(),
        "{} failed, e.g. {:?}",
        errors.len(),
        errors.first()
    );
    assert_eq!(up.wait_for_sink(N, Duration::from_secs(30)).len(), N);
    assert_eq!(ms.metric("mailshare_smtp_messages_relayed_total"), N as f64);
    // alice's and bob's are stored; carol's activity sharing is off, so
    // hers are hidden and not stored at all.
    let carol = (0..N).filter(|i| i % 3 == 2).count();
    assert_eq!(
        ms.gateway.store.stats().unwrap().messages,
        (N - carol) as u64
    );
    assert_eq!(
        ms.metric("mailshare_capture_skips_total{protocol=\"smtp\",reason=\"activity-off\"}"),
        carol as f64,
        "{}",
        ms.metrics()
    );
}

#[test]
fn shutdown_says_421_to_idle_sessions() {
    let _d = Deadline::new("shutdown", 60);
    let up = Upstreams::start();
    let ms = InProcess::start(&Spec::new(up.submission, vec![ListenerSpec::plain()]));
    let mut c = LineClient::connect(ms.addrs[0]);
    ehlo_auth(&mut c, "alice");
    ms.fire_shutdown();
    assert!(one(&mut c).starts_with("421 4.3.2"));
    assert_eq!(c.line(), "", "closed after the goodbye");
}

/// Send a message of about `mb` MiB through `addr` as alice, streaming it in
/// 64 KiB writes; returns the final reply.
fn send_big(addr: SocketAddr, mb: usize, id: &str) -> String {
    let mut c = LineClient::connect(addr);
    ehlo_auth(&mut c, "alice");
    c.send(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<office@client-a.example>\r\nDATA\r\n");
    one(&mut c);
    one(&mut c);
    assert!(one(&mut c).starts_with("354"));
    c.send(format!("From: alice@acme.example\r\nTo: office@client-a.example\r\nSubject: big\r\nMessage-ID: <{id}>\r\n\r\n").as_bytes());
    let line = format!("{}\r\n", "0123456789abcdef".repeat(4)); // 66 bytes
    let block = line.repeat(1000);
    let blocks = mb * 1024 * 1024 / block.len();
    for _ in 0..blocks {
        c.send(block.as_bytes());
    }
    c.send(b".\r\n");
    one(&mut c)
}

#[test]
fn a_50_mb_message_streams_with_bounded_memory() {
    let _d = Deadline::new("50mb", 300);
    let up = Upstreams::start();
    let mut spec =
        Spec::new(up.submission, vec![ListenerSpec::plain()]).limit("max_capture_bytes = 1048576");
    spec.log_level = "info";
    let mut bin = support::server::Binary::start(&spec, &[]);
    // Warm up (TLS-free session, store, parser), then measure the peak.
    assert!(send_big(bin.addrs[0], 1, "warm@acme.example").starts_with("250"));
    let before = bin.status_kb("VmHWM");
    let t = Instant::now();
    let reply = send_big(bin.addrs[0], 50, "big@acme.example");
    let secs = t.elapsed().as_secs_f64();
    assert!(reply.starts_with("250"), "{reply}");
    let peak = bin.status_kb("VmHWM");
    eprintln!(
        "50 MB relayed in {secs:.2} s; mailshare VmHWM {before} kB before, {peak} kB after (+{} kB)",
        peak.saturating_sub(before)
    );
    assert!(
        peak.saturating_sub(before) < 16 * 1024,
        "peak memory grew by {} kB for a 50 MB message",
        peak - before
    );
    let sink = up.wait_for_sink(2, Duration::from_secs(30));
    let big = sink
        .iter()
        .find(|m| m.data.contains("<big@acme.example>"))
        .unwrap();
    assert!(big.data.len() > 50_000_000, "{}", big.data.len());
    bin.stop();
    // Captured from its headers only (the stopped binary's store; `bin`
    // keeps its directory alive).
    let dir = bin.dir.path().join("store");
    let store = mailshare::store::SledStore::open(&dir, Default::default()).unwrap();
    let r = mailshare::store::Store::message(&store, &engine::message_key("big@acme.example"))
        .unwrap()
        .expect("captured");
    assert!(r.stored <= Level::Subject && r.content.is_none());
    assert!(r.size > 50_000_000, "the real size is kept: {}", r.size);
}

#[test]
fn trace_logs_never_show_credentials() {
    let _d = Deadline::new("trace_logs", 120);
    let up = Upstreams::start();
    let mut spec = Spec::new(up.submission, vec![ListenerSpec::plain()]);
    spec.log_level = "trace";
    let mut bin = support::server::Binary::start(&spec, &[("RUST_LOG", "trace")]);
    let secrets = [
        password("alice").to_string(),
        plain("alice", password("alice")),
        b64("carol"),
        b64("Sup3r-Secret!"),
        b64("user=dave@acme.example\x01auth=Bearer ya29.t0ken\x01\x01"),
        "Sup3r-Secret!".to_string(),
        "ya29.t0ken".to_string(),
    ];
    // AUTH PLAIN that works, AUTH LOGIN that fails, XOAUTH2 upstream refuses.
    let mut c = LineClient::connect(bin.addrs[0]);
    ehlo_auth(&mut c, "alice");
    c.send(b"QUIT\r\n");
    one(&mut c);
    let mut c = LineClient::connect(bin.addrs[0]);
    c.smtp_reply();
    c.send(b"EHLO x\r\n");
    c.smtp_reply();
    c.send(b"AUTH LOGIN\r\n");
    assert!(one(&mut c).starts_with("334"));
    c.send(format!("{}\r\n", b64("carol")).as_bytes());
    assert!(one(&mut c).starts_with("334"));
    c.send(format!("{}\r\n", b64("Sup3r-Secret!")).as_bytes());
    assert!(one(&mut c).starts_with("535"));
    c.send(format!("AUTH XOAUTH2 {}\r\n", secrets[4]).as_bytes());
    let r = one(&mut c);
    assert!(r.starts_with('5') || r.starts_with("334"), "{r}");
    drop(c);
    bin.stop();
    let log = bin.log_text();
    assert!(
        log.contains("client command") && log.contains("AUTH"),
        "trace logging was on"
    );
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "the log holds {s:?}");
    }
    // The session span names who logged in (after success only), never how.
    let sessions: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "session ended")
        .map(|l| l["spans"][0].clone())
        .collect();
    assert_eq!(sessions.len(), 2, "{log}");
    assert_eq!(sessions[0]["login"], "alice", "{:?}", sessions);
    assert_eq!(sessions[0]["owner"], "alice@acme.example");
    assert_eq!(sessions[0]["protocol"], "smtp");
    assert!(sessions[1].get("login").is_none(), "{:?}", sessions);
}

#[test]
fn idle_and_login_deadlines_close_with_421() {
    let _d = Deadline::new("deadlines", 60);
    let up = Upstreams::start();
    // Idle: silence after the greeting.
    let ms = InProcess::start(
        &Spec::new(up.submission, vec![ListenerSpec::plain()]).limit("smtp_idle_timeout_secs = 1"),
    );
    let mut c = LineClient::connect(ms.addrs[0]);
    c.smtp_reply();
    let t = Instant::now();
    assert!(one(&mut c).starts_with("421 4.4.2 Idle timeout"));
    assert!(t.elapsed() < Duration::from_secs(3));
    // Pre-login: busy but never authenticated.
    let ms = InProcess::start(
        &Spec::new(up.submission, vec![ListenerSpec::plain()]).limit("prelogin_timeout_secs = 2"),
    );
    let mut c = LineClient::connect(ms.addrs[0]);
    c.smtp_reply();
    c.send(b"EHLO x\r\n");
    c.smtp_reply();
    let t = Instant::now();
    let last = loop {
        c.send(b"NOOP\r\n");
        let r = one(&mut c);
        if !r.starts_with("250") || t.elapsed() > Duration::from_secs(5) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(last.starts_with("421 4.7.0 Login timeout"), "{last}");
    assert!(ms.metric("mailshare_smtp_rejects_total{reason=\"login_timeout\"}") >= 1.0);
}

/// A fake upstream that refuses the first message at its end of data
/// (554) and accepts the second (250).
fn refusing_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let Some(Ok(s)) = l.incoming().next() else {
            return;
        };
        let mut w = s.try_clone().unwrap();
        let _ = w.write_all(b"220 refuser\r\n");
        let mut r = std::io::BufReader::new(s);
        let mut line = String::new();
        let mut messages = 0;
        let mut in_data = false;
        while std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) > 0 {
            let reply: &[u8] = if in_data {
                if line != ".\r\n" {
                    line.clear();
                    continue;
                }
                in_data = false;
                messages += 1;
                if messages == 1 {
                    b"554 5.7.1 Refused by content policy\r\n"
                } else {
                    b"250 2.0.0 Ok: queued\r\n"
                }
            } else {
                let cmd = line.to_ascii_uppercase();
                if cmd.starts_with("EHLO") {
                    b"250-refuser\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n"
                } else if cmd.starts_with("AUTH") {
                    b"235 2.7.0 ok\r\n"
                } else if cmd.starts_with("DATA") {
                    in_data = true;
                    b"354 go\r\n"
                } else if cmd.starts_with("QUIT") {
                    let _ = w.write_all(b"221 bye\r\n");
                    return;
                } else {
                    b"250 ok\r\n"
                }
            };
            let _ = w.write_all(reply);
            line.clear();
        }
    });
    addr
}

/// The capture starts while upstream considers a message (parse, blob
/// files); a message upstream refuses at its end of data leaves nothing in
/// the store, not even its blob files, and the next one is captured.
#[test]
fn a_message_refused_at_end_of_data_leaves_nothing_captured() {
    let _d = Deadline::new("refused_end_of_data", 60);
    let ms = InProcess::start(&Spec::new(refusing_upstream(), vec![ListenerSpec::plain()]));
    let mut c = LineClient::connect(ms.addrs[0]);
    ehlo_auth(&mut c, "alice");
    let blobs = ms.gateway.config.store.path.join("blobs");
    let blob_count = || {
        fs::read_dir(&blobs)
            .unwrap()
            .flatten()
            .map(|d| fs::read_dir(d.path()).unwrap().count())
            .sum::<usize>()
    };
    for (id, want) in [
        ("refused@acme.example", "554 5.7.1"),
        ("taken@acme.example", "250 2.0.0"),
    ] {
        c.send(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<bob@client-a.example>\r\nDATA\r\n");
        assert!(one(&mut c).starts_with("250"));
        assert!(one(&mut c).starts_with("250"));
        assert!(one(&mut c).starts_with("354"));
        // Bodies differ, so each has a blob file of its own.
        let m = message(id, "bob@client-a.example", "Refusal", Some("full"))
            .replace("Hello,", &format!("Hello from {id},"));
        c.send(m.as_bytes());
        c.send(b".\r\n");
        let reply = one(&mut c);
        assert!(reply.starts_with(want), "{id}: {reply}");
    }
    let store = &ms.gateway.store;
    assert!(store
        .message(&engine::message_key("taken@acme.example"))
        .unwrap()
        .is_some());
    assert!(store
        .message(&engine::message_key("refused@acme.example"))
        .unwrap()
        .is_none());
    assert_eq!(
        ms.metric("mailshare_smtp_captures_ahead_total{result=\"started\"}"),
        2.0
    );
    // The refused message's body blob goes with the next flushes; the
    // accepted one's stays.
    let end = Instant::now() + Duration::from_secs(10);
    while blob_count() > 1 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(blob_count(), 1, "only the accepted message's body is kept");
}
