//! The IMAP proxy against a real Dovecot started by the test: Python's
//! imaplib through it, raw protocol edge cases, STARTTLS and its injection
//! attack, limits, a dead upstream, COMPRESS, shutdown, and what the store
//! holds afterwards (at the policy's levels for a colleague).

#[path = "imap_support/mod.rs"]
mod imap_support;
mod support;

use imap_support::{append_direct, python, repo, Options, Proxied, Raw};
use mailshare::config::TlsMode;
use mailshare::engine::{self, Level, Viewer};
use std::io::Read;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);

fn mail(id: &str, from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Tue, 10 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// The level a non-participant colleague sees of a record now.
fn colleague_level(p: &Proxied, colleague: &str, r: &engine::Record) -> Level {
    engine::visible(&p.gateway.policy.current(), &Viewer::new(colleague), r).level
}

fn wait_stored(p: &Proxied, id: &str, level: Level) -> engine::Record {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(r) = p.wait_for_record(id, Duration::from_millis(100)) {
            if r.stored >= level || Instant::now() > end {
                return r;
            }
        }
        assert!(Instant::now() < end, "{id} never captured");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const IMAPLIB: &str = r#"
import imaplib, json, ssl, sys
host = "127.0.0.1"
plain, starttls_port, direct, cafile = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = {}

def msg(mid, frm, to, subject):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s>\r\n"
            "Date: Wed, 11 Nov 2026 09:00:00 +0000\r\n\r\nHello,\r\nsome text.\r\n" % (frm, to, subject, mid)).encode()

M = imaplib.IMAP4(host, plain, timeout=30)
out["login"] = M.login("alice", "pw-alice")[0]
typ, data = M.select("INBOX")
out["select"] = [typ, data[0].decode()]
# 1 and 2 were delivered directly: metadata from ENVELOPE and BODY[HEADER].
typ, data = M.fetch("1", "(ENVELOPE)")
out["envelope"] = data[0].decode()
typ, data = M.fetch("2", "(BODY.PEEK[HEADER])")
out["header"] = data[0][1].decode()
out["append"] = M.append("INBOX", None, None, msg("py-1@client-a.example", "Bob Stone <bob@client-a.example>", "Alice Smith <alice@acme.example>", "Quarterly numbers"))[0]
out["append_draft_flag"] = M.append("INBOX", "(\\Draft)", None, msg("py-draft@acme.example", "alice@acme.example", "bob@client-a.example", "Draft reply"))[0]
out["append_drafts_box"] = M.append("Drafts", None, None, msg("py-draftsbox@acme.example", "alice@acme.example", "bob@client-a.example", "Drafts folder"))[0]
out["append_sent"] = M.append("Sent", "(\\Seen)", None, msg("py-sent@acme.example", "Alice Smith <alice@acme.example>", "Dana Lee <dana@client-b.example>", "Proposal"))[0]
M.select("INBOX")
typ, data = M.fetch("3", "(BODY.PEEK[])")
out["body"] = data[0][1].decode()
typ, data = M.fetch("3", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
out["fields"] = data[0][1].decode()
typ, data = M.uid("FETCH", "1:*", "(UID FLAGS)")
out["uid_fetch"] = [d.decode() for d in data]
typ, data = M.uid("FETCH", "2", "(BODY.PEEK[])")
out["uid_body"] = data[0][1].decode()

# IDLE, and a message delivered meanwhile on a direct connection.
tag = M._new_tag().decode()
M.send(("%s IDLE\r\n" % tag).encode())
out["idle_continuation"] = M.readline().decode()
D = imaplib.IMAP4(host, direct, timeout=30)
D.login("alice", "pw-alice")
D.append("INBOX", None, None, msg("py-idle@client-a.example", "bob@client-a.example", "alice@acme.example", "During idle"))
D.logout()
line = M.readline().decode()
while "EXISTS" not in line:
    line = M.readline().decode()
out["idle_exists"] = line
M.send(b"DONE\r\n")
line = M.readline().decode()
while not line.startswith(tag):
    line = M.readline().decode()
out["idle_done"] = line
out["logout"] = M.logout()[0]

# STARTTLS on the starttls listener, trusting the demo certificate.
S = imaplib.IMAP4(host, starttls_port, timeout=30)
out["caps_before_tls"] = list(S.capabilities)
S.starttls(ssl_context=ssl.create_default_context(cafile=cafile))
out["caps_after_tls"] = list(S.capabilities)
out["tls_login"] = S.login("bob", "pw-bob")[0]
out["tls_select"] = S.select("INBOX")[0]
S.logout()
print(json.dumps(out))
"#;

#[test]
fn imaplib_through_the_proxy_and_what_colleagues_see() {
    let p = Proxied::start(Options::default());
    append_direct(
        &p.up,
        "alice",
        "INBOX",
        &[
            mail(
                "env-only@client-a.example",
                "Office <office@client-a.example>",
                "alice@acme.example",
                "Envelope only",
                "not fetched",
            ),
            mail(
                "hdr-then-body@client-b.example",
                "Dana Lee <dana@client-b.example>",
                "alice@acme.example",
                "Header first",
                "then the body",
            ),
        ],
    );
    let args = vec![
        p.plain.port().to_string(),
        p.starttls.port().to_string(),
        p.up.imap.port().to_string(),
        repo().join("config/tls/cert.pem").display().to_string(),
    ];
    let out = python(IMAPLIB, &args, DEADLINE);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    for k in [
        "login",
        "append",
        "append_draft_flag",
        "append_drafts_box",
        "append_sent",
        "logout",
        "tls_login",
        "tls_select",
    ] {
        assert_eq!(s(k), if k == "logout" { "BYE" } else { "OK" }, "{k}: {v}");
    }
    assert_eq!(v["select"][0], "OK");
    // Byte-faithful: the fetched message is exactly what was appended.
    assert_eq!(
        s("body"),
        "From: Bob Stone <bob@client-a.example>\r\nTo: Alice Smith <alice@acme.example>\r\nSubject: Quarterly numbers\r\nMessage-ID: <py-1@client-a.example>\r\nDate: Wed, 11 Nov 2026 09:00:00 +0000\r\n\r\nHello,\r\nsome text.\r\n"
    );
    assert!(s("fields").contains("Subject: Quarterly numbers"), "{v}");
    assert!(
        s("envelope").contains("Envelope only")
            && s("envelope").contains("env-only@client-a.example")
    );
    assert!(s("header").contains("Subject: Header first"));
    assert!(s("uid_body").contains("then the body"));
    assert_eq!(v["uid_fetch"].as_array().unwrap().len(), 4, "{v}");
    assert!(s("idle_continuation").starts_with('+'), "{v}");
    assert!(s("idle_exists").contains("EXISTS"), "{v}");
    assert!(s("idle_done").contains("OK"), "{v}");
    let caps = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    };
    let before = caps("caps_before_tls");
    assert!(before.contains(&"STARTTLS".into()) && before.contains(&"LOGINDISABLED".into()));
    assert!(!before.iter().any(|c| c.starts_with("AUTH=")), "{before:?}");
    let after = caps("caps_after_tls");
    assert!(after.contains(&"AUTH=PLAIN".into()) && !after.contains(&"STARTTLS".into()));

    // The store: appended and fetched mail, at the policy's levels.
    let bob = "bob@acme.example";
    // Alice's setting for bob@client-a.example is `subject`.
    let r = wait_stored(&p, "py-1@client-a.example", Level::Subject);
    assert_eq!(colleague_level(&p, bob, &r), Level::Subject);
    assert!(r.owners.iter().any(|o| o.user == "alice@acme.example"));
    // Sent mail: outbound for Alice (From is hers), shared in full.
    let r = wait_stored(&p, "py-sent@acme.example", Level::Full);
    assert_eq!(r.owners[0].direction, engine::Direction::Outbound);
    assert_eq!(colleague_level(&p, bob, &r), Level::Full);
    // Header first (metadata), then the whole message fills in the content.
    let r = wait_stored(&p, "hdr-then-body@client-b.example", Level::Full);
    assert_eq!(
        r.stored,
        Level::Full,
        "the later BODY[] raised the stored fields"
    );
    assert_eq!(colleague_level(&p, bob, &r), Level::Full);
    // ENVELOPE only: metadata and subject, no content.
    let r = wait_stored(&p, "env-only@client-a.example", Level::Subject);
    assert_eq!(r.stored, Level::Subject);
    assert!(r.content.is_none());
    // Drafts are never captured, nor what was only announced by IDLE.
    std::thread::sleep(Duration::from_millis(300));
    for id in [
        "py-draft@acme.example",
        "py-draftsbox@acme.example",
        "py-idle@client-a.example",
    ] {
        assert!(
            p.wait_for_record(id, Duration::ZERO).is_none(),
            "{id} captured"
        );
    }
    assert!(p.metric("mailshare_imap_captures_total", &[("source", "append")]) >= 2.0);
    assert!(p.metric("mailshare_imap_captures_total", &[("source", "envelope")]) >= 1.0);
    assert!(p.metric("mailshare_imap_commands_total", &[("command", "idle")]) >= 1.0);
    assert!(p.metric("mailshare_imap_logins_total", &[("result", "ok")]) >= 2.0);
}

#[test]
fn starttls_injection_is_never_answered() {
    let p = Proxied::start(Options::default());
    let mut c = Raw::greeted(p.starttls);
    c.send(b"a STARTTLS\r\nb CAPABILITY\r\n");
    assert_eq!(c.line(), "a OK Begin TLS negotiation now\r\n");
    // The connection is dropped: no TLS, and `b` is never answered.
    let rest = c.rest();
    assert!(
        !rest.contains("b OK") && !rest.contains("CAPABILITY"),
        "{rest:?}"
    );
    // A clean STARTTLS still works (LOGIN refused before it).
    let mut c = Raw::greeted(p.starttls);
    c.send(b"a LOGIN alice pw-alice\r\n");
    assert!(c.line().starts_with("a NO [PRIVACYREQUIRED]"));
}

#[test]
fn implicit_tls_and_tls_upstreams() {
    use rustls::pki_types::pem::PemObject;
    use std::sync::Arc;
    for upstream_tls in [TlsMode::Starttls, TlsMode::Implicit] {
        let p = Proxied::start(Options {
            upstream_tls,
            ..Options::default()
        });
        // The proxy verifies the upstream's certificate and logs in through it.
        let mut c = Raw::login(p.plain, "carol");
        c.send(b"a CAPABILITY\r\n");
        let caps = c.until("a").concat();
        assert!(
            caps.contains("IMAP4rev1") && !caps.contains("STARTTLS"),
            "{caps}"
        );
        // A client over implicit TLS.
        let mut roots = rustls::RootCertStore::empty();
        for cert in
            rustls::pki_types::CertificateDer::pem_file_iter(repo().join("config/tls/cert.pem"))
                .unwrap()
        {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let conn = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
        let tcp = std::net::TcpStream::connect(p.implicit).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        use std::io::Write;
        tls.write_all(b"a LOGIN dave pw-dave\r\nb LOGOUT\r\n")
            .unwrap();
        let mut got = String::new();
        let _ = tls.read_to_string(&mut got);
        assert!(
            got.starts_with("* OK [CAPABILITY") && got.contains("AUTH=PLAIN"),
            "{got}"
        );
        assert!(got.contains("a OK") && got.contains("b OK"), "{got}");
    }
}

#[test]
fn wrong_password_and_dead_upstream() {
    let p = Proxied::start(Options::default());
    let mut c = Raw::greeted(p.plain);
    c.send(b"a LOGIN alice wrong\r\n");
    let r = c.until("a").concat();
    assert!(
        r.starts_with("a NO [AUTHENTICATIONFAILED]"),
        "Dovecot's own answer: {r}"
    );
    c.send(b"b LOGIN alice pw-alice\r\n");
    assert!(c.until("b").concat().starts_with("b OK"));
    assert_eq!(
        p.metric("mailshare_imap_logins_total", &[("result", "rejected")]),
        1.0
    );

    // An upstream that is not there: a prompt tagged NO.
    let dead = Proxied::start(Options {
        upstream_address: Some(format!("127.0.0.1:{}", support::upstreams::free_port())),
        ..Options::default()
    });
    let mut c = Raw::greeted(dead.plain);
    let t = Instant::now();
    c.send(b"a LOGIN alice pw-alice\r\n");
    let r = c.line();
    assert!(r.starts_with("a NO [UNAVAILABLE]"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(2));
    c.send(b"b NOOP\r\n");
    assert!(c.line().starts_with("b OK"), "the session goes on");

    // An upstream that dies mid-session: `* BYE` at once.
    let mut c = Raw::login(p.plain, "bob");
    c.send(b"s SELECT INBOX\r\n");
    c.until("s");
    // SIGKILL the imap processes of this Dovecot (children of its master,
    // by PID): the connection drops without a word from the server.
    let master = std::fs::read_to_string(p.up.dir.path().join("run/master.pid")).unwrap();
    let t = Instant::now();
    let mut killed = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …
        let Some((head, tail)) = stat.rsplit_once(") ") else {
            continue;
        };
        let ppid = tail.split(' ').nth(1).unwrap_or("");
        if head.ends_with("(imap") && ppid == master.trim() {
            let pid = e.file_name().to_string_lossy().into_owned();
            std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .unwrap();
            killed += 1;
        }
    }
    assert!(killed >= 1, "no imap process found");
    let rest = c.rest();
    assert_eq!(
        rest,
        "* BYE [UNAVAILABLE] The mail server closed the connection\r\n"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn compress_is_stripped_and_refused() {
    let p = Proxied::start(Options {
        dovecot: "mail_plugins = $mail_plugins zlib\nprotocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n".into(),
        ..Options::default()
    });
    // Dovecot offers it directly…
    let mut d = Raw::greeted(p.up.imap);
    d.send(b"a LOGIN alice pw-alice\r\nb CAPABILITY\r\n");
    let direct = d.until("b").concat();
    assert!(direct.contains("COMPRESS=DEFLATE"), "{direct}");
    // …the proxy never does, and refuses the command.
    let mut c = Raw::greeted(p.plain);
    c.send(b"a LOGIN alice pw-alice\r\n");
    let login = c.until("a").concat();
    assert!(
        login.contains("[CAPABILITY") && !login.contains("COMPRESS"),
        "{login}"
    );
    c.send(b"b CAPABILITY\r\n");
    let caps = c.until("b").concat();
    assert!(
        caps.contains("* CAPABILITY") && !caps.contains("COMPRESS"),
        "{caps}"
    );
    c.send(b"c COMPRESS DEFLATE\r\nd NOOP\r\n");
    assert!(c.until("c").concat().starts_with("c NO"));
    assert!(c.until("d").concat().contains("d OK"), "still uncompressed");
}

#[test]
fn literal_edge_cases() {
    let p = Proxied::start(Options::default());
    let mut c = Raw::login(p.plain, "alice");
    // Zero-length literals: Dovecot's answer comes back, framing holds.
    c.send(b"z APPEND INBOX {0+}\r\n\r\n");
    let z = c.until("z").concat();
    assert!(
        z.starts_with("z NO") || z.starts_with("z BAD") || z.starts_with("z OK"),
        "{z}"
    );
    c.send(b"y SELECT {5+}\r\nINBOX\r\n");
    assert!(c.until("y").concat().contains("y OK"));
    c.send(b"x APPEND INBOX (\\Seen) {0}\r\n");
    let l = c.line();
    if l.starts_with('+') {
        c.send(b"\r\n");
        c.until("x");
    }
    // LITERAL+ APPEND, captured.
    let m = mail(
        "lplus@client-b.example",
        "erik@client-b.example",
        "alice@acme.example",
        "Plus",
        "body",
    );
    let mut cmd = format!("w APPEND INBOX {{{}+}}\r\n", m.len()).into_bytes();
    cmd.extend_from_slice(&m);
    cmd.extend_from_slice(b"\r\n");
    c.send(&cmd);
    assert!(c.until("w").concat().contains("w OK"));
    assert!(p
        .wait_for_record("lplus@client-b.example", DEADLINE)
        .is_some());

    // A synchronizing-literal APPEND split across TCP reads at every byte.
    let template = mail(
        "split-{}@client-c.example",
        "grace@client-c.example",
        "alice@acme.example",
        "Split",
        "x",
    );
    let n = template.len() + 4;
    let mut count = 0;
    for cut in (0..n + 40).step_by(1) {
        let m = String::from_utf8(template.clone())
            .unwrap()
            .replace("{}", &format!("{cut:04}"))
            .into_bytes();
        let tag = format!("s{cut}");
        let head = format!("{tag} APPEND INBOX {{{}}}\r\n", m.len()).into_bytes();
        c.send(&head);
        let cont = c.line();
        assert!(cont.starts_with('+'), "{cont}");
        let mut body = m.clone();
        body.extend_from_slice(b"\r\n");
        let cut = cut.min(body.len());
        c.send(&body[..cut]);
        std::thread::sleep(Duration::from_millis(2));
        c.send(&body[cut..]);
        let r = c.until(&tag).concat();
        assert!(r.contains(&format!("{tag} OK")), "{r}");
        count += 1;
    }
    // Every message arrived intact at Dovecot and was captured.
    let mut d = Raw::login(p.up.imap, "alice");
    d.send(b"s SELECT INBOX\r\nf FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])\r\n");
    let listing = d.until("f").concat();
    for cut in 0..count {
        let id = format!("split-{cut:04}@client-c.example");
        assert!(listing.contains(&id), "{id} missing upstream");
    }
    for cut in [0, 1, 17, count / 2, count - 1] {
        let id = format!("split-{cut:04}@client-c.example");
        assert!(
            p.wait_for_record(&id, DEADLINE).is_some(),
            "{id} not captured"
        );
    }
}

#[test]
fn limits_hold_with_flat_memory() {
    let p = Proxied::start(Options::default());
    // Before login: oversize literals get BAD without `+`.
    let mut c = Raw::greeted(p.plain);
    c.send(b"a APPEND INBOX {4294967295}\r\nb APPEND INBOX {99999999999}\r\nc NOOP\r\n");
    assert!(c.line().starts_with("a BAD"));
    assert!(c.line().starts_with("b BAD"));
    assert!(c.line().starts_with("c OK"));
    c.send(b"d LOGIN {5+}\r\n");
    c.send(&[b'x'; 20_000]);
    // 5 bytes were the literal; the rest is a line over 8 KiB: BYE.
    let rest = c.rest();
    assert!(rest.contains("* BYE"), "{rest:?}");

    // After login: a 1 GB literal announcement is refused, the session goes on.
    let mut c = Raw::login(p.plain, "alice");
    c.send(b"a APPEND INBOX {1073741824}\r\n");
    assert_eq!(c.line(), "a NO [TOOBIG] Literal too large\r\n");
    c.send(b"b NOOP\r\n");
    assert!(c.until("b").concat().contains("b OK"));

    // A 10 MB line without LF: BYE, connection closed.
    let mut c = Raw::login(p.plain, "alice");
    let mut w = c.w.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let chunk = vec![b'x'; 1 << 16];
        let mut sent = 0usize;
        while sent < 10 << 20 {
            if w.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let rest = c.rest();
    assert!(rest.starts_with("* BYE Command line too long"), "{rest:?}");
    // (What the writer managed to send sits in kernel socket buffers, not
    // in the proxy: its line buffer stops at imap_max_line_bytes.)
    writer.join().unwrap();
    assert!(p.metric("mailshare_imap_limit_hits_total", &[("limit", "line")]) >= 1.0);
}

#[test]
fn shutdown_sends_bye_to_idle_sessions() {
    let p = Proxied::start(Options::default());
    let mut c = Raw::login(p.plain, "alice");
    c.send(b"s SELECT INBOX\r\ni IDLE\r\n");
    c.until("s");
    assert!(c.line().starts_with('+'));
    let mut fresh = Raw::greeted(p.plain);
    p.shutdown();
    let rest = c.rest();
    assert!(rest.ends_with("* BYE Server shutting down\r\n"), "{rest:?}");
    assert!(fresh.rest().contains("* BYE Server shutting down"));
}

#[test]
fn no_credential_reaches_the_logs_even_at_trace() {
    use base64::Engine as _;
    let up = support::upstreams::Upstreams::start();
    let mut b = imap_support::Binary::start_logged(&up, "", "trace");
    // Wrong secrets (they would be logged on failure if anything is) and
    // right ones, by LOGIN and by AUTHENTICATE PLAIN.
    let secret = "Sesame-7f3a9c";
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{secret}"));
    let mut c = Raw::greeted(b.plain);
    c.send(format!("a LOGIN alice {secret}\r\n").as_bytes());
    assert!(c.until("a").concat().contains("a NO"));
    c.send(format!("b AUTHENTICATE PLAIN {b64}\r\n").as_bytes());
    assert!(c.until("b").concat().contains("b NO"));
    c.send(b"c AUTHENTICATE PLAIN\r\n");
    assert!(c.line().starts_with('+'));
    c.send(format!("{b64}\r\n").as_bytes());
    assert!(c.until("c").concat().contains("c NO"));
    let good = base64::engine::general_purpose::STANDARD.encode("\0alice\0pw-alice");
    c.send(format!("d AUTHENTICATE PLAIN {good}\r\ne LOGOUT\r\n").as_bytes());
    assert!(c.until("e").concat().contains("d OK"));
    b.stop();
    let log = std::fs::read_to_string(b.log_path()).unwrap();
    assert!(
        log.contains("IMAP login") || log.contains("TRACE"),
        "logging works: {log}"
    );
    for needle in [secret, b64.as_str(), "pw-alice", good.as_str()] {
        assert!(!log.contains(needle), "{needle} found in the log");
    }
    // The session span names who logged in, and whose mail it is.
    let ended = log
        .lines()
        .find(|l| l.contains("net::listener: session ended") && l.contains("login="))
        .unwrap_or_else(|| panic!("a session ended line: {log}"));
    assert!(
        ended.contains("protocol=imap")
            && ended.contains("login=\"alice\"")
            && ended.contains("owner=\"alice@acme.example\""),
        "{ended}"
    );
}

#[test]
fn too_many_connections_from_one_address_get_bye() {
    let p = Proxied::start(Options {
        limits: mailshare::config::Limits {
            max_connections_per_ip: 2,
            ..Default::default()
        },
        ..Options::default()
    });
    let _a = Raw::greeted(p.plain);
    let _b = Raw::greeted(p.plain);
    let mut c = Raw::connect(p.plain);
    assert_eq!(
        c.rest(),
        "* BYE [UNAVAILABLE] Too many connections from your address\r\n"
    );
    let refused = |reason| {
        p.metric(
            "mailshare_connections_refused_total",
            &[
                ("protocol", "imap"),
                // Every in-process listener is configured as 127.0.0.1:0.
                ("listener", "imap:127.0.0.1:0"),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(refused("per_ip"), 1.0);
    assert_eq!(refused("listener_full"), 0.0);
}

#[test]
fn a_full_listener_says_bye_unavailable() {
    let p = Proxied::start(Options {
        limits: mailshare::config::Limits {
            max_connections_per_listener: 2,
            max_connections_per_ip: 10,
            ..Default::default()
        },
        ..Options::default()
    });
    let refused = || {
        p.metric(
            "mailshare_connections_refused_total",
            &[("protocol", "imap"), ("reason", "listener_full")],
        )
    };
    let mut a = Raw::greeted(p.plain);
    let _b = Raw::greeted(p.plain);
    let mut c = Raw::connect(p.plain);
    assert_eq!(
        c.rest(),
        "* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
    );
    assert_eq!(refused(), 1.0);
    // Implicit TLS: no plaintext line a TLS client could not read, a close.
    let _d = Raw::connect(p.implicit);
    let _e = Raw::connect(p.implicit);
    let mut f = Raw::connect(p.implicit);
    assert_eq!(f.rest(), "");
    assert_eq!(refused(), 2.0);
    // A slot comes back when a session ends.
    a.send(b"z LOGOUT\r\n");
    a.rest();
    let end = Instant::now() + DEADLINE;
    loop {
        let mut g = Raw::connect(p.plain);
        if g.line().starts_with("* OK") {
            break;
        }
        assert!(Instant::now() < end, "never served again");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A logged-in client with a tiny receive buffer (no autotuning), so a
/// large response it does not read stalls the proxy mid-literal.
fn slow_reader(addr: std::net::SocketAddr, user: &str) -> Raw {
    let s = support::upstreams::connect_with(addr, |socket| {
        socket.set_recv_buffer_size(16 << 10).unwrap();
    });
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut c = Raw {
        r: std::io::BufReader::new(s.try_clone().unwrap()),
        w: s,
    };
    assert!(c.line().starts_with("* OK"));
    let pw = support::upstreams::password(user);
    c.send(format!("L LOGIN {user} {pw}\r\ns SELECT INBOX\r\n").as_bytes());
    assert!(c.until("s").last().unwrap().starts_with("s OK"));
    c
}

#[test]
fn an_exhausted_capture_budget_pauses_imap_and_is_counted() {
    let p = Proxied::start(Options {
        limits: mailshare::config::Limits {
            capture_memory_budget_bytes: 1 << 20,
            ..Default::default()
        },
        ..Options::default()
    });
    let mut big = mail(
        "budget-big@client-a.example",
        "bob@client-a.example",
        "alice@acme.example",
        "big",
        "",
    );
    while big.len() < 16 << 20 {
        big.extend_from_slice(format!("{:074}\r\n", big.len()).as_bytes());
    }
    let small = mail(
        "budget-small@client-a.example",
        "bob@client-a.example",
        "alice@acme.example",
        "small",
        "hello",
    );
    append_direct(&p.up, "alice", "INBOX", &[big.clone(), small]);
    let used = || p.metric("mailshare_capture_budget_used_bytes", &[]);
    let waited = || {
        p.metric(
            "mailshare_capture_budget_exhausted_total",
            &[("protocol", "imap"), ("outcome", "waited")],
        )
    };
    let poll = |what: &str, f: &dyn Fn() -> bool| {
        let end = Instant::now() + DEADLINE;
        while !f() {
            assert!(Instant::now() < end, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // A fetches the big message and does not read it: the proxy stalls
    // mid-literal holding the whole budget (a message above the budget
    // takes all of it).
    let mut a = slow_reader(p.plain, "alice");
    a.send(b"f FETCH 1 BODY.PEEK[]\r\n");
    poll("A holds the budget", &|| used() == f64::from(1 << 20));
    // B's fetch waits for the budget (backpressure), counted once.
    let mut b = Raw::login(p.plain, "alice");
    b.send(b"s SELECT INBOX\r\ng FETCH 2 BODY.PEEK[]\r\n");
    poll("B's wait is counted", &|| waited() == 1.0);
    assert_eq!(
        p.metric(
            "mailshare_capture_budget_exhausted_total",
            &[("outcome", "denied")]
        ),
        0.0,
        "waiting, not degrading"
    );
    // A reads its message; its capture releases the budget; B goes on.
    let r = a.until("f");
    assert!(r.last().unwrap().starts_with("f OK"), "A's fetch completes");
    assert!(r.concat().len() > 16 << 20);
    let r = b.until("g");
    assert!(
        r.concat().contains("budget-small@client-a.example"),
        "{r:?}"
    );
    assert!(r.last().unwrap().starts_with("g OK"));
    // Both captured (inbound: at the policy's Subject level), neither
    // degraded to headers only for want of budget.
    for id in [
        "budget-small@client-a.example",
        "budget-big@client-a.example",
    ] {
        assert_eq!(wait_stored(&p, id, Level::Subject).stored, Level::Subject);
    }
    assert_eq!(
        p.metric(
            "mailshare_imap_capture_degraded_total",
            &[("reason", "budget")]
        ),
        0.0
    );
    poll("the budget is released", &|| used() == 0.0);
    assert_eq!(waited(), 1.0);
}

/// The untagged responses to `f FETCH 1:* (UID BODY.PEEK[])` as raw
/// bytes, literals included, through `addr`.
fn fetch_raw(addr: std::net::SocketAddr, user: &str) -> Vec<u8> {
    use std::io::BufRead;
    let mut c = Raw::login(addr, user);
    c.send(b"s SELECT INBOX\r\n");
    c.until("s");
    c.send(b"f FETCH 1:* (UID BODY.PEEK[])\r\n");
    let mut out = Vec::new();
    loop {
        let mut line = Vec::new();
        c.r.read_until(b'\n', &mut line).expect("a line");
        assert!(!line.is_empty(), "closed after {} bytes", out.len());
        if line.starts_with(b"f ") {
            // Dovecot's text times the command: left out of the comparison.
            assert!(
                line.starts_with(b"f OK"),
                "{}",
                String::from_utf8_lossy(&line)
            );
            return out;
        }
        out.extend_from_slice(&line);
        if let Some(n) = imap_support::literal_size(&String::from_utf8_lossy(&line)) {
            let at = out.len();
            out.resize(at + n, 0);
            c.r.read_exact(&mut out[at..]).expect("the literal");
        }
    }
}

/// Asserts `got == want`, showing where they part.
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let show = |b: &[u8]| {
        String::from_utf8_lossy(&b[at.saturating_sub(80)..(at + 80).min(b.len())]).into_owned()
    };
    panic!(
        "{what}: {} bytes vs Dovecot's {}, first difference at {at}:\n{:?}\nvs\n{:?}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    );
}

/// Large literals nothing needs to see are spliced (plaintext legs): a
/// re-fetch of messages already captured, and any fetch of a user who is
/// not captured. The client still gets exactly Dovecot's bytes, the
/// responses after a spliced literal are framed as before, and the first
/// fetch of a captured user is still teed and captured.
#[test]
fn uncaptured_literals_are_spliced_and_arrive_unchanged() {
    let p = Proxied::start(Options::default());
    let body = |seed: usize, n: usize| -> String {
        (0..n / 64)
            .map(|i| format!("{:063}\n", i * 31 + seed).replace('\n', "\r\n"))
            .collect::<String>()
    };
    let messages: Vec<Vec<u8>> = vec![
        mail(
            "splice-1@client-a.example",
            "bob@client-a.example",
            "alice@acme.example",
            "Large one",
            &body(1, 3 << 20),
        ),
        mail(
            "splice-2@client-a.example",
            "bob@client-a.example",
            "alice@acme.example",
            "Small one",
            "short",
        ),
        mail(
            "splice-3@client-a.example",
            "bob@client-a.example",
            "alice@acme.example",
            "Large two",
            &body(2, 700 << 10),
        ),
    ];
    append_direct(&p.up, "alice", "INBOX", &messages);
    append_direct(&p.up, "dave", "INBOX", &messages);
    let spliced = || p.metric("mailshare_imap_spliced_bytes_total", &[]);

    // alice is captured: the first fetch tees every message.
    let direct = fetch_raw(p.up.imap, "alice");
    let first = fetch_raw(p.plain, "alice");
    assert_same(&first, &direct, "first fetch");
    for id in ["splice-1@client-a.example", "splice-3@client-a.example"] {
        assert!(
            p.wait_for_record(id, DEADLINE).is_some(),
            "{id} not captured"
        );
    }
    let after_first = spliced();
    assert!(
        after_first < 64.0 * 1024.0,
        "the capturing fetch spliced {after_first} bytes"
    );

    // The re-fetch: known messages, spliced after their header blocks.
    let again = fetch_raw(p.plain, "alice");
    assert_same(&again, &direct, "re-fetch");
    let refetch = spliced() - after_first;
    assert!(
        refetch > 3.0 * 1024.0 * 1024.0,
        "re-fetch spliced only {refetch} bytes"
    );

    // dave is not captured: spliced from the first fetch on.
    let direct = fetch_raw(p.up.imap, "dave");
    let before = spliced();
    let proxied = fetch_raw(p.plain, "dave");
    assert!(
        proxied == direct,
        "dave's fetch differs from Dovecot's bytes"
    );
    assert!(spliced() - before > 3.0 * 1024.0 * 1024.0);
}

/// A large message fetched in pieces, as Thunderbird does
/// (`BODY.PEEK[]<0.65536>`, then the next pieces): the first piece's
/// header block is captured as metadata (with RFC822.SIZE as the size),
/// like `BODY[HEADER]`; a first piece too short to hold the whole header
/// block captures nothing.
#[test]
fn a_message_fetched_in_pieces_is_captured_from_its_first_piece() {
    let p = Proxied::start(Options::default());
    let body = "x".repeat(75) + "\r\n";
    let big = mail(
        "pieces@client-a.example",
        "bob@client-a.example",
        "alice@acme.example",
        "In pieces",
        &body.repeat(3000),
    );
    let cut = mail(
        "cut@client-a.example",
        "bob@client-a.example",
        "alice@acme.example",
        "Cut short",
        &body.repeat(3000),
    );
    append_direct(&p.up, "alice", "INBOX", &[big.clone(), cut]);
    let mut c = Raw::login(p.plain, "alice");
    c.send(b"s SELECT INBOX\r\n");
    c.until("s");
    let mut got = Vec::new();
    let mut at = 0;
    while at < big.len() {
        let tag = format!("p{at}");
        c.send(
            format!("{tag} UID FETCH 1:1 (UID RFC822.SIZE BODY.PEEK[]<{at}.65536>)\r\n").as_bytes(),
        );
        let lines = c.until(&tag);
        assert!(lines.last().unwrap().contains("OK"), "{lines:?}");
        let piece = lines
            .iter()
            .find(|l| l.contains("BODY[]<"))
            .expect("a piece");
        let start = piece.find("}\r\n").unwrap() + 3;
        got.extend_from_slice(&piece.as_bytes()[start..]);
        at += 65536;
    }
    assert!(got == big, "the pieces make up the message");
    let r = p
        .wait_for_record("pieces@client-a.example", DEADLINE)
        .expect("captured from the first piece");
    assert_eq!(r.size, big.len() as u64, "RFC822.SIZE is the size");
    assert!(r.stored < Level::Full, "headers only: {:?}", r.stored);
    assert!(r.content.is_none());
    assert!(p.metric("mailshare_imap_captures_total", &[("source", "header")]) >= 1.0);

    // A first piece of 40 bytes ends inside the header block.
    c.send(b"q UID FETCH 2:2 (UID BODY.PEEK[]<0.40>)\r\n");
    assert!(c.until("q").last().unwrap().contains("OK"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        p.wait_for_record("cut@client-a.example", Duration::from_millis(200))
            .is_none(),
        "a cut header block is not captured"
    );
}
