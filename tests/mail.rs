//! `mail`: facts and content of realistic fixtures, and hostile input that must
//! never panic.

use mailshare::engine::{Level, Mailbox, MessageFacts};
use mailshare::mail::{parse, parse_headers, ParseError, MAX_PARSE_STACK};
use std::path::Path;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mail")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn facts_of(raw: &[u8]) -> MessageFacts {
    parse(raw).expect("parses").facts(&[])
}

fn mb(address: &str, name: Option<&str>) -> Mailbox {
    Mailbox {
        address: address.to_string(),
        name: name.map(str::to_string),
    }
}

/// Everything the module promises for any input: no panic, size == len, and
/// the header-only path agrees with the full parse on the header facts.
fn exercise(raw: &[u8]) -> Option<MessageFacts> {
    let envelope = vec![" Rcpt@Example.COM ".to_string()];
    let headers_only = parse_headers(raw, &envelope);
    match parse(raw) {
        Ok(mail) => {
            let facts = mail.facts(&envelope);
            assert_eq!(facts.size, raw.len() as u64);
            assert_eq!(facts.envelope_recipients, ["rcpt@example.com"]);
            assert!(!facts.message_id.is_empty());
            let content = mail.content();
            assert_eq!(content.attachments.len(), facts.attachment_count as usize);
            for a in &content.attachments {
                assert!(a.content_type.contains('/'));
            }
            for m in facts
                .from
                .iter()
                .chain(&facts.sender)
                .chain(&facts.to)
                .chain(&facts.cc)
                .chain(&facts.bcc)
            {
                assert!(!m.address.is_empty());
                assert_eq!(m.address, m.address.trim().to_ascii_lowercase());
            }
            let h = headers_only.expect("header-only parse agrees that this is a message");
            assert_eq!(h.size, raw.len() as u64);
            assert_eq!(h.attachment_count, 0);
            Some(facts)
        }
        Err(ParseError::TooDeep) => {
            headers_only.expect("headers of a message too deep to parse");
            None
        }
        Err(e) => {
            assert_eq!(e, ParseError::NotAMessage);
            None
        }
    }
}

// ---------------------------------------------------------------- fixtures

#[test]
fn plain_text_fixture() {
    let raw = fixture("plain.eml");
    let mail = parse(&raw).unwrap();
    let f = mail.facts(&["alice@acme.example".into()]);
    assert_eq!(f.message_id, "CAB7x9q3f1@mail.client-a.example");
    assert!(!f.message_id_derived);
    assert_eq!(f.date, Some(1_795_166_040)); // 2026-11-20T09:14:00Z, from +0100
    assert_eq!(f.from, [mb("bob@client-a.example", Some("Bob Stone"))]);
    assert_eq!(f.to, [mb("alice@acme.example", Some("Alice Smith"))]);
    assert_eq!(f.cc, [mb("carol@acme.example", None)]);
    assert!(f.bcc.is_empty() && f.sender.is_none());
    assert_eq!(f.subject.as_deref(), Some("Q3 figures"));
    assert_eq!(f.size, raw.len() as u64);
    assert_eq!(f.attachment_count, 0);
    assert!(!f.automated);
    assert_eq!(f.share_header, None);
    let c = mail.content();
    assert!(c.text.unwrap().starts_with("Hi Alice,\n\nattached"));
    assert_eq!(c.html, None);
    assert!(c.attachments.is_empty());
}

#[test]
fn multipart_alternative_fixture() {
    let raw = fixture("alternative.eml");
    let mail = parse(&raw).unwrap();
    let f = mail.facts(&[]);
    assert_eq!(f.from, [mb("alice@acme.example", Some("Smith, Alice"))]);
    assert_eq!(
        f.to,
        [
            mb("bob@client-a.example", None),
            mb("dana@client-b.example", Some("Dana Lee"))
        ]
    );
    assert_eq!(f.date, Some(1_795_438_800)); // 08:00 -0500
    let c = mail.content();
    assert_eq!(
        c.text,
        Some("Hello Bob, hello Dana,\r\n\r\nshall we meet on Tuesday at 10:00?\r\n\r\nAlice")
    );
    // Quoted-printable decoded, soft line break joined; not converted from text.
    let html = c.html.unwrap();
    assert!(html.starts_with("<html><body style=\"font-family: sans-serif\"><p>Hello Bob"));
    assert!(html.contains("</p><p>shall we meet on <b>Tuesday</b>"));
    assert!(c.attachments.is_empty());
}

#[test]
fn attachments_fixture() {
    let raw = fixture("attachments.eml");
    let mail = parse(&raw).unwrap();
    let f = mail.facts(&[]);
    assert_eq!(f.attachment_count, 4);
    assert_eq!(f.from, [mb("carol@acme.example", Some("Carol Jones"))]);
    assert_eq!(f.to, [mb("office@client-a.example", None)]);
    let c = mail.content();
    assert_eq!(
        c.text,
        Some("Please find the engagement letter and the invoice attached.")
    );
    assert_eq!(
        c.html,
        Some("<p>Please find the engagement letter and the invoice attached.</p>")
    );
    let a: Vec<_> = c
        .attachments
        .iter()
        .map(|a| (a.name, a.content_type.as_str(), a.bytes.len()))
        .collect();
    assert_eq!(
        a,
        [
            (Some("engagement-letter.pdf"), "application/pdf", 54),
            (Some("logo.png"), "image/png", 70),
            (None, "message/rfc822", a[2].2),
            (Some("invoice.csv"), "text/csv", a[3].2),
        ]
    );
    assert!(c.attachments[0].bytes.starts_with(b"%PDF-1.4\n"));
    assert!(c.attachments[1].bytes.starts_with(b"\x89PNG\r\n"));
    let forwarded = c.attachments[2].bytes;
    assert!(forwarded.starts_with(b"From: office@client-a.example\r\n"));
    assert!(forwarded.ends_with(b"Could you send us the engagement letter?"));
    assert_eq!(c.attachments[3].bytes, b"item,amount\r\nadvice,1200");
    // The forwarded message's headers are not the outer message's facts.
    assert_eq!(f.message_id, "att-7781@acme.example");
}

#[test]
fn encoded_words_fixture() {
    let f = facts_of(&fixture("encoded-words.eml"));
    assert_eq!(
        f.from,
        [mb("renee@client-b.example", Some("Ren\u{e9}e M\u{fc}ller"))]
    );
    assert_eq!(f.to, [mb("alice@acme.example", Some("Alice Schmitt"))]);
    assert_eq!(
        f.subject.as_deref(),
        Some("Re: \u{dc}bersicht f\u{fc}r die Pr\u{fc}fung")
    );
    assert_eq!(f.date, Some(1_795_621_512));
    let raw = fixture("encoded-words.eml");
    let mail = parse(&raw).unwrap();
    assert_eq!(
        mail.content().text,
        Some("Gr\u{fc}\u{df}e aus Z\u{fc}rich!\r\n")
    );
}

#[test]
fn mailing_list_fixture() {
    let f = facts_of(&fixture("mailing-list.eml"));
    assert!(f.automated);
    assert_eq!(
        f.sender,
        Some(mb("owner-tax-news@lists.partner.example", None))
    );
    assert_eq!(
        f.from,
        [mb("news@lists.partner.example", Some("Tax Newsletter"))]
    );
    assert_eq!(f.subject.as_deref(), Some("[tax-news] December deadlines"));
}

#[test]
fn auto_reply_fixture() {
    let f = facts_of(&fixture("auto-reply.eml"));
    assert!(f.automated, "Auto-Submitted: Auto-Replied; owner-email=…");
    assert_eq!(f.in_reply_to, ["20261123130000.1234@acme.example"]);
    assert!(f.references.is_empty());
    assert_eq!(f.date, Some(1_795_438_805));
}

#[test]
fn reply_with_references_fixture() {
    let f = facts_of(&fixture("reply.eml"));
    assert!(!f.automated, "Auto-Submitted: no");
    assert_eq!(f.message_id, "reply-3@mail.client-a.example");
    assert_eq!(f.in_reply_to, ["20261123130000.1234@acme.example"]);
    assert_eq!(
        f.references,
        ["root-0@acme.example", "20261123130000.1234@acme.example"]
    );
    assert_eq!(f.subject.as_deref(), Some("Re: Meeting on Tuesday"));
    assert_eq!(f.from, [mb("bob@client-a.example", None)]);
}

#[test]
fn group_bcc_and_share_header_fixture() {
    let raw = fixture("outbound-share.eml");
    let f = parse(&raw)
        .unwrap()
        .facts(&["BOB@client-a.example".into(), "eve@client-c.example".into()]);
    // The group "Clients:" is flattened.
    assert_eq!(
        f.to,
        [
            mb("bob@client-a.example", None),
            mb("dana@client-b.example", Some("Dana Lee"))
        ]
    );
    assert_eq!(f.bcc, [mb("eve@client-c.example", None)]);
    assert_eq!(
        f.envelope_recipients,
        ["bob@client-a.example", "eve@client-c.example"]
    );
    assert_eq!(f.share_header, Some(Level::Metadata));
    assert_eq!(f.date, Some(1_795_777_200));
}

#[test]
fn missing_message_id_fixture_gets_a_derived_id() {
    let raw = fixture("no-message-id.eml");
    let f = facts_of(&raw);
    assert!(f.message_id_derived);
    let (hash, domain) = f.message_id.split_once('@').unwrap();
    assert_eq!(domain, "mailshare.invalid");
    assert_eq!(hash.len(), 64);
    assert!(hash
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(f.date, Some(1_795_860_000));
    assert_eq!(parse_headers(&raw, &[]).unwrap().message_id, f.message_id);
}

#[test]
fn every_fixture_parses_both_ways() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mail");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "eml") {
            let raw = std::fs::read(&path).unwrap();
            let full = exercise(&raw).expect("fixture is a message");
            let mut head = parse_headers(&raw, &[" Rcpt@Example.COM ".into()]).unwrap();
            head.attachment_count = full.attachment_count;
            assert_eq!(head, full, "{}", path.display());
            n += 1;
        }
    }
    assert!(n >= 9);
}

#[test]
fn html_only_and_text_only_bodies_are_not_converted() {
    let raw =
        b"From: a@x.example\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>only html</p>\r\n";
    let mail = parse(raw).unwrap();
    let c = mail.content();
    assert_eq!((c.text, c.html), (None, Some("<p>only html</p>\r\n")));
    assert!(c.attachments.is_empty());

    let raw = b"From: a@x.example\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nonly text\r\n--b--\r\n";
    let mail = parse(raw).unwrap();
    let c = mail.content();
    assert_eq!((c.text, c.html), (Some("only text"), None));
}

#[test]
fn attachment_types_are_normalised() {
    let raw = b"From: a@x.example\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nbody\r\n--b\r\nContent-Type: Application/X-Thing; name=\"a.bin\"\r\n\r\n1\r\n--b\r\nContent-Type: bogus\r\nContent-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.txt\r\n\r\n2\r\n--b\r\nContent-Type: text/pl@in\xff\r\nContent-Disposition: attachment\r\n\r\n3\r\n--b--\r\n";
    let mail = parse(raw).unwrap();
    let c = mail.content();
    assert_eq!(c.text, Some("body"));
    let a: Vec<_> = c
        .attachments
        .iter()
        .map(|a| (a.name, a.content_type.as_str(), a.bytes))
        .collect();
    assert_eq!(
        a,
        [
            (Some("a.bin"), "application/x-thing", &b"1"[..]),
            (
                Some("r\u{e9}sum\u{e9}.txt"),
                "application/octet-stream",
                &b"2"[..]
            ),
            (None, "application/octet-stream", &b"3"[..]),
        ]
    );
}

// ---------------------------------------------------------------- header rules

#[test]
fn derived_id_is_stable_across_relay_headers_and_line_endings() {
    let smtp = b"From: Bob <bob@client-a.example>\r\nTo: alice@acme.example\r\nSubject: no id\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nbody line 1\r\nbody line 2\r\n".to_vec();
    let mut imap = b"Return-Path: <bob@client-a.example>\r\nReceived: from mx.client-a.example by mail.acme.example;\r\n\tSat, 28 Nov 2026 10:00:01 +0000\r\nDKIM-Signature: v=1; a=rsa-sha256; d=client-a.example\r\n".to_vec();
    imap.extend_from_slice(&smtp);
    let lf: Vec<u8> = smtp.iter().copied().filter(|&b| b != b'\r').collect();
    let refolded = String::from_utf8(smtp.clone())
        .unwrap()
        .replace("Subject: no id", "Subject: no\r\n id")
        .into_bytes();

    let id = facts_of(&smtp).message_id;
    assert!(facts_of(&smtp).message_id_derived);
    assert_eq!(facts_of(&imap).message_id, id, "added trace headers");
    assert_eq!(facts_of(&lf).message_id, id, "LF line endings");
    assert_eq!(facts_of(&refolded).message_id, id, "refolded header");
    assert_eq!(parse_headers(&imap, &[]).unwrap().message_id, id);

    let other_body = String::from_utf8(smtp.clone())
        .unwrap()
        .replace("body line 2", "body line 3")
        .into_bytes();
    assert_ne!(facts_of(&other_body).message_id, id, "body differs");
    let other_subject = String::from_utf8(smtp.clone())
        .unwrap()
        .replace("Subject: no id", "Subject: no ids")
        .into_bytes();
    assert_ne!(facts_of(&other_subject).message_id, id, "subject differs");
    let other_to = String::from_utf8(smtp)
        .unwrap()
        .replace("To: alice@", "To: carol@")
        .into_bytes();
    assert_ne!(facts_of(&other_to).message_id, id, "recipient differs");
}

#[test]
fn blank_message_id_is_derived_and_brackets_are_stripped() {
    let f = facts_of(b"From: a@b.example\r\nMessage-ID:   \r\n\r\nx");
    assert!(f.message_id_derived);
    let f = facts_of(b"From: a@b.example\r\nMessage-ID: < abc@def.example >\r\n\r\nx");
    assert_eq!(f.message_id, "abc@def.example");
    assert!(!f.message_id_derived);
}

#[test]
fn duplicate_headers_first_wins() {
    let raw = b"Subject: first\r\nMessage-ID: <one@x.example>\r\nDate: Thu, 01 Jan 1970 00:00:10 +0000\r\nFrom: a@x.example\r\nSubject: second\r\nMessage-ID: <two@x.example>\r\nDate: Thu, 01 Jan 1970 00:00:20 +0000\r\nFrom: b@x.example\r\nTo: c@x.example\r\nTo: d@x.example, C@X.example\r\n\r\nbody";
    for _ in 0..3 {
        let f = facts_of(raw);
        assert_eq!(f.subject.as_deref(), Some("first"));
        assert_eq!(f.message_id, "one@x.example");
        assert_eq!(f.date, Some(10));
        // Address fields read every occurrence, without duplicates.
        assert_eq!(f.from, [mb("a@x.example", None), mb("b@x.example", None)]);
        assert_eq!(f.to, [mb("c@x.example", None), mb("d@x.example", None)]);
        assert_eq!(
            parse_headers(raw, &[]).unwrap().subject.as_deref(),
            Some("first")
        );
    }
}

#[test]
fn automated_rules() {
    let automated = |headers: &str| facts_of(format!("{headers}\r\n\r\nbody").as_bytes()).automated;
    assert!(automated(
        "From: a@x.example\r\nAuto-Submitted: auto-generated"
    ));
    assert!(automated(
        "From: a@x.example\r\nauto-submitted: Auto-Notified; x=y"
    ));
    assert!(!automated("From: a@x.example\r\nAuto-Submitted: No"));
    assert!(!automated(
        "From: a@x.example\r\nAuto-Submitted: no; comment=1"
    ));
    assert!(automated("From: a@x.example\r\nPrecedence: BULK"));
    assert!(automated("From: a@x.example\r\nPrecedence: junk"));
    assert!(automated("From: a@x.example\r\nPrecedence: list"));
    assert!(!automated("From: a@x.example\r\nPrecedence: first-class"));
    assert!(automated("From: a@x.example\r\nList-Id: <l.x.example>"));
    assert!(automated(
        "From: a@x.example\r\nList-Unsubscribe: <mailto:u@x.example>"
    ));
    assert!(!automated(
        "From: a@x.example\r\nList-Post: <mailto:l@x.example>"
    ));
    assert!(!automated("From: a@x.example"));
    assert!(automated("From: a@x.example\r\nAuto-Submitted:"));
}

#[test]
fn share_header_rules() {
    let share =
        |v: &str| facts_of(format!("From: a@x.example\r\n{v}\r\n\r\nb").as_bytes()).share_header;
    assert_eq!(share("X-Mailshare-Share: full"), Some(Level::Full));
    assert_eq!(share("x-mailshare-share:  HIDDEN "), Some(Level::Hidden));
    assert_eq!(share("X-Mailshare-Share: everything"), None);
    assert_eq!(share("X-Mailshare-Share:"), None);
    assert_eq!(share("X-Other: full"), None);
    // Contradictory headers: the most private valid one.
    assert_eq!(
        share("X-Mailshare-Share: full\r\nX-Mailshare-Share: subject\r\nX-Mailshare-Share: bogus"),
        Some(Level::Subject)
    );
}

#[test]
fn dates() {
    let date = |v: &str| facts_of(format!("From: a@x.example\r\n{v}\r\n\r\nb").as_bytes()).date;
    assert_eq!(date("Date: Thu, 01 Jan 1970 00:00:00 +0000"), Some(0));
    assert_eq!(date("Date: 20 Nov 2026 09:14:00 GMT"), Some(1_795_166_040));
    assert_eq!(
        date("Date: Fri, 20 Nov 2026 04:14:00 -0500"),
        Some(1_795_166_040)
    );
    assert_eq!(date(""), None);
    assert_eq!(date("Date: yesterday"), None);
    assert_eq!(date("Date: Mon, 1 Jan 1900 00:00:00 +0000"), None);
    assert_eq!(date("Date: Mon, 1 Jan 1969 00:00:00 +0000"), None);
    assert_eq!(date("Date: Mon, 1 Jan 65000 00:00:00 +0000"), None);
    assert_eq!(date("Date: Mon, 41 Foo 2026 99:99:99 +9999"), None);
}

#[test]
fn entries_without_address_are_dropped() {
    let f = facts_of(
        b"From: Nobody\r\nTo: undisclosed-recipients:;\r\nCc: \"Just A Name\", <>, real@x.example\r\nBcc:\r\n\r\nb",
    );
    assert!(f.from.is_empty());
    assert!(f.to.is_empty());
    assert_eq!(f.cc, [mb("real@x.example", None)]);
    assert!(f.bcc.is_empty());
}

// ---------------------------------------------------------------- hostile input

#[test]
fn empty_and_headerless_input_is_not_a_message() {
    assert_eq!(parse(b"").unwrap_err(), ParseError::NotAMessage);
    assert_eq!(
        parse_headers(b"", &[]).unwrap_err(),
        ParseError::NotAMessage
    );
    for raw in [&b"\r\n"[..], b"\n\n\n", b"   ", b"\r\n\r\nbody only"] {
        assert!(exercise(raw).is_none(), "{raw:?}");
    }
}

#[test]
fn garbage_bytes() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for len in [1usize, 2, 7, 64, 1000, 65_536] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        exercise(&bytes);
    }
    exercise(b"\xff\xfe\xfd\x00\x01:\r\n\r\n");
    exercise(b":::::\r\n:\r\n\r\n");
    exercise(b"From:\r\n\r\n");
    exercise(b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--\r\n");
}

#[test]
fn only_headers() {
    // No final line break: mail-parser alone would drop the last value.
    let f = exercise(b"From: a@x.example\r\nSubject: no body").unwrap();
    assert_eq!(f.subject.as_deref(), Some("no body"));
    let h = parse_headers(b"Subject: s\r\nFrom: a@x.example", &[]).unwrap();
    assert_eq!(h.from, [mb("a@x.example", None)]);
    assert_eq!(h.size, 29);
    let f = exercise(b"From: a@x.example\r\nSubject: empty body\r\n\r\n").unwrap();
    assert_eq!(f.subject.as_deref(), Some("empty body"));
    let raw = b"From: a@x.example\r\n\r\n";
    assert_eq!(parse(raw).unwrap().content().text.unwrap_or(""), "");
}

#[test]
fn truncated_mime() {
    let raw = b"From: a@x.example\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK";
    let f = exercise(raw).unwrap();
    assert_eq!(f.from, [mb("a@x.example", None)]);
    for cut in 0..raw.len() {
        exercise(&raw[..cut]);
    }
    // A nested boundary never closed, nor its parent.
    exercise(b"From: a@x.example\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>");
    // message/rfc822 cut inside its headers.
    exercise(b"From: a@x.example\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: message/rfc822\r\n\r\nFrom: b@x.example\r\nSubj");
}

#[test]
fn eight_bit_headers() {
    let f = exercise(
        "From: J\u{fc}rgen Wei\u{df} <jw@x.example>\r\nSubject: Gr\u{fc}\u{df}e \u{1f600}\r\n\r\nb"
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(f.subject.as_deref(), Some("Gr\u{fc}\u{df}e \u{1f600}"));
    assert_eq!(f.from, [mb("jw@x.example", Some("J\u{fc}rgen Wei\u{df}"))]);
    // Raw Latin-1 bytes: not UTF-8, converted lossily, never a panic.
    let f =
        exercise(b"From: J\xfcrgen <jw@x.example>\r\nSubject: Gr\xfc\xdfe\r\n\r\nK\xe4se").unwrap();
    assert!(f.subject.unwrap().starts_with("Gr"));
    assert_eq!(f.from[0].address, "jw@x.example");
}

#[test]
fn encoded_words_q_and_b() {
    let f = exercise(b"From: =?utf-8?q?Ana_Mar=C3=ADa?= <ana@x.example>\r\nTo: =?utf-8?b?w4FsdmFybw==?= <alvaro@x.example>\r\nSubject: =?iso-8859-1?q?caf=E9?= =?utf-8?B?IOKCrA==?=\r\n\r\nb").unwrap();
    assert_eq!(f.from, [mb("ana@x.example", Some("Ana Mar\u{ed}a"))]);
    assert_eq!(f.to, [mb("alvaro@x.example", Some("\u{c1}lvaro"))]);
    assert_eq!(f.subject.as_deref(), Some("caf\u{e9} \u{20ac}"));
    // Broken encoded words stay as text.
    exercise(b"Subject: =?utf-8?b?####?= =?x?q?=ZZ?= =?utf-8?q?\r\n\r\n");
}

#[test]
fn nul_bytes() {
    let raw = b"From: a\0b@x.example\r\nSub\0ject: x\r\nSubject: n\0ul\r\n\r\nbo\0dy\0";
    let f = exercise(raw).unwrap();
    assert_eq!(f.size, raw.len() as u64);
    exercise(b"\0\0\0\0\r\n\r\n\0");
    exercise(b"From: a@x.example\r\n\r\n\0\0\0");
}

#[test]
fn one_megabyte_header_line() {
    let mut raw = b"From: a@x.example\r\nSubject: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 1 << 20));
    raw.extend_from_slice(b"\r\nTo: b@x.example\r\n\r\nbody\r\n");
    let f = exercise(&raw).unwrap();
    assert_eq!(f.subject.map(|s| s.len()), Some(1 << 20));
    assert_eq!(f.to, [mb("b@x.example", None)]);
    // The same line with no line break at all.
    let mut raw = b"Subject: ".to_vec();
    raw.extend(std::iter::repeat_n(b'x', 1 << 20));
    exercise(&raw);
}

#[test]
fn ten_megabyte_body_line() {
    let mut raw = b"From: a@x.example\r\nSubject: long\r\n\r\n".to_vec();
    raw.extend(std::iter::repeat_n(b'z', 10 << 20));
    exercise(&raw).unwrap();
    let mail = parse(&raw).unwrap();
    assert_eq!(mail.content().text.map(str::len), Some(10 << 20));
}

#[test]
fn two_thousand_levels_of_multipart() {
    let depth = 2000;
    let mut raw = b"From: a@x.example\r\nSubject: deep\r\n".to_vec();
    for i in 0..depth {
        raw.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n")
                .as_bytes(),
        );
    }
    raw.extend_from_slice(b"Content-Type: text/plain\r\n\r\ninnermost\r\n");
    for i in (0..depth).rev() {
        raw.extend_from_slice(format!("--b{i}--\r\n").as_bytes());
    }
    let f = exercise(&raw).unwrap();
    assert_eq!(f.subject.as_deref(), Some("deep"));
    // Unclosed, too.
    let cut = raw.len() / 2;
    exercise(&raw[..cut]);
}

#[test]
fn two_thousand_levels_of_attached_messages() {
    let depth = 2000;
    let mut raw = Vec::new();
    for i in 0..depth {
        raw.extend_from_slice(
            format!("From: l{i}@x.example\r\nContent-Type: multipart/mixed; boundary=\"m{i}\"\r\n\r\n--m{i}\r\nContent-Type: message/rfc822\r\n\r\n").as_bytes(),
        );
    }
    raw.extend_from_slice(b"From: core@x.example\r\n\r\ncore\r\n");
    for i in (0..depth).rev() {
        raw.extend_from_slice(format!("--m{i}--\r\n").as_bytes());
    }
    let f = exercise(&raw).unwrap();
    assert_eq!(f.from, [mb("l0@x.example", None)]);
    exercise(&raw[..raw.len() / 2]);
}

#[test]
fn hundred_thousand_recipients() {
    let n = 100_000;
    let mut raw = b"From: a@x.example\r\nTo: ".to_vec();
    for i in 0..n {
        if i > 0 {
            raw.extend_from_slice(b",\r\n ");
        }
        raw.extend_from_slice(format!("User {i} <u{i}@x.example>").as_bytes());
    }
    raw.extend_from_slice(b"\r\n\r\nbody\r\n");
    let f = exercise(&raw).unwrap();
    assert_eq!(f.to.len(), n);
    assert_eq!(
        f.to[n - 1],
        mb(
            &format!("u{}@x.example", n - 1),
            Some(&format!("User {}", n - 1))
        )
    );

    // The same as 100k separate To headers.
    let mut raw = b"From: a@x.example\r\n".to_vec();
    for i in 0..n {
        raw.extend_from_slice(format!("To: u{i}@x.example\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\nbody\r\n");
    assert_eq!(exercise(&raw).unwrap().to.len(), n);
}

/// `depth` attached messages inside each other, without transfer encoding.
fn nested_messages(depth: usize) -> Vec<u8> {
    let mut raw = Vec::new();
    for _ in 0..depth {
        raw.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
    }
    raw.extend_from_slice(b"From: core@x.example\r\n\r\ncore\r\n");
    raw
}

fn base64(data: &[u8]) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    for (i, c) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.extend_from_slice(b"\r\n");
        }
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(A[(n >> 18) as usize & 63]);
        out.push(A[(n >> 12) as usize & 63]);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63]
        } else {
            b'='
        });
    }
    out
}

#[test]
fn fifty_thousand_levels_of_attached_messages_drop_without_recursion() {
    // mail-parser's own drop would recurse once per level and overflow.
    let raw = nested_messages(50_000);
    let f = exercise(&raw).unwrap();
    assert!(f.from.is_empty());
    assert_eq!(f.attachment_count, 1);
}

#[test]
fn deeply_nested_encoded_attached_messages_parse_on_a_large_stack() {
    // The parser recurses (into_owned) once per level inside an encoded
    // attached message: about 3.8 KiB per level in debug builds, so this
    // overflows a 2 MiB test thread unless parse() provides the stack.
    let inner = nested_messages(4_000);
    for (cte, body) in [
        ("base64", base64(&inner)),
        ("=?us-ascii?q?base64?=", base64(&inner)),
        ("quoted-printable", inner.clone()),
    ] {
        let mut raw = format!(
            "From: a@x.example\r\nSubject: deep\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        raw.extend_from_slice(b"\r\n--b--\r\n");
        let f = exercise(&raw).unwrap();
        assert_eq!(f.subject.as_deref(), Some("deep"), "{cte}");
        assert_eq!(f.attachment_count, 1);
    }
}

#[test]
fn risky_input_beyond_the_stack_budget_is_refused_not_crashed() {
    let mut raw = b"From: a@x.example\r\nSubject: huge\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    let line = b"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\r\n";
    while raw.len() <= MAX_PARSE_STACK / 30 {
        raw.extend_from_slice(line);
    }
    assert_eq!(parse(&raw).unwrap_err(), ParseError::TooDeep);
    let f = parse_headers(&raw, &[]).unwrap();
    assert_eq!(f.subject.as_deref(), Some("huge"));
    assert_eq!(f.size, raw.len() as u64);
}
