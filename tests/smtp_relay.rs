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
use support::mailshare::{cert, run, InProcess, ListenerSpec, Spec};
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
