//! The test harness itself: Dovecot and smtp-sink start on loopback, accept
//! a real login, relay a real submission to the sink and store an APPEND.
//! If this fails, every protocol test would; it says why first.

mod support;

use base64::Engine as _;
use support::upstreams::{password, LineClient, Upstreams};

fn plain(login: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{login}\0{}", password(login)))
}

#[test]
fn submission_relays_to_the_sink_and_imap_stores_appends() {
    let up = Upstreams::start();

    // Submission: EHLO, AUTH PLAIN, one message.
    let mut c = LineClient::connect(up.submission);
    assert!(c.smtp_reply()[0].starts_with("220"));
    c.send(b"EHLO test.example\r\n");
    let ehlo = c.smtp_reply();
    assert!(ehlo.iter().any(|l| l.contains("AUTH")), "{ehlo:?}");
    c.send(format!("AUTH PLAIN {}\r\n", plain("alice")).as_bytes());
    assert!(c.smtp_reply()[0].starts_with("235"), "login: {}", up.log());
    c.send(b"MAIL FROM:<alice@acme.example>\r\n");
    assert!(c.smtp_reply()[0].starts_with("250"));
    c.send(b"RCPT TO:<bob@client-a.example>\r\n");
    assert!(c.smtp_reply()[0].starts_with("250"));
    c.send(b"DATA\r\n");
    assert!(c.smtp_reply()[0].starts_with("354"));
    c.send(b"From: alice@acme.example\r\nTo: bob@client-a.example\r\nSubject: harness\r\nMessage-ID: <h1@acme.example>\r\n\r\nhello sink\r\n.\r\n");
    assert!(c.smtp_reply()[0].starts_with("250"), "{}", up.log());
    c.send(b"QUIT\r\n");
    let got = up.wait_for_sink(1, std::time::Duration::from_secs(10));
    assert_eq!(got.len(), 1, "the sink got the message");
    assert!(got[0].mail_from.contains("alice@acme.example"));
    assert_eq!(got[0].rcpt_to.len(), 1);
    assert!(got[0].data.contains("Subject: harness"), "{}", got[0].data);
    assert!(got[0].data.contains("hello sink"));

    // IMAP: LOGIN, APPEND, FETCH back.
    let mut i = LineClient::connect(up.imap);
    assert!(i.line().starts_with("* OK"));
    i.send(format!("a LOGIN alice {}\r\n", password("alice")).as_bytes());
    assert!(
        i.imap_until("a").last().unwrap().starts_with("a OK"),
        "{}",
        up.log()
    );
    let msg = b"From: x@other.example\r\nSubject: appended\r\n\r\nbody\r\n";
    i.send(format!("b APPEND INBOX {{{}+}}\r\n", msg.len()).as_bytes());
    i.send(msg);
    i.send(b"\r\n");
    assert!(i.imap_until("b").last().unwrap().starts_with("b OK"));
    i.send(b"c SELECT INBOX\r\n");
    assert!(i.imap_until("c").iter().any(|l| l.contains("1 EXISTS")));
    i.send(b"d FETCH 1 BODY.PEEK[]\r\n");
    let f = i.imap_until("d").concat();
    assert!(f.contains("Subject: appended"), "{f}");
    // Drafts is a \Drafts special-use mailbox (the IMAP capture rules use it).
    i.send(b"e LIST \"\" \"*\"\r\n");
    let l = i.imap_until("e").concat();
    assert!(l.contains("\\Drafts") && l.contains("Drafts"), "{l}");
}

#[test]
fn tls_upstreams_offer_starttls_and_implicit_tls() {
    let up = support::upstreams::Upstreams::start_with(support::upstreams::UpstreamOptions {
        tls: true,
    });
    let mut c = LineClient::connect(up.submission);
    assert!(c.smtp_reply()[0].starts_with("220"));
    c.send(b"EHLO test.example\r\n");
    assert!(c.smtp_reply().iter().any(|l| l.contains("STARTTLS")));
    let mut i = LineClient::connect(up.imap);
    assert!(i.line().contains("STARTTLS"));
    // Implicit TLS ports answer a TLS ClientHello (not a plaintext greeting).
    let s = std::net::TcpStream::connect(up.imaps).expect("imaps listens");
    drop(s);
    let s = std::net::TcpStream::connect(up.submissions).expect("submissions listens");
    drop(s);
}

#[test]
fn every_test_user_logs_in_and_extra_config_wins() {
    // USERS is mirrored in scripts/upstreams (which writes the passwd file);
    // the extra config is included last, so its settings override the script's.
    let up = Upstreams::start_with_config(Default::default(), "login_greeting = Extra ready.");
    for (login, pass, _) in support::upstreams::USERS {
        let mut i = LineClient::connect(up.imap);
        let greeting = i.line();
        assert!(greeting.contains("Extra ready."), "{greeting}");
        i.send(format!("a LOGIN {login} {pass}\r\n").as_bytes());
        let reply = i.imap_until("a");
        assert!(
            reply.last().unwrap().starts_with("a OK"),
            "{login}: {reply:?}\n{}",
            up.log()
        );
    }
}
