//! Session tests without sockets: a scripted client and a scripted upstream.

use super::*;
use crate::smtp::data::Reservation;

struct TestHooks;

impl Budget for TestHooks {
    fn try_reserve(&self, _: usize) -> Option<Reservation> {
        Some(Box::new(()))
    }
}

impl Hooks for TestHooks {
    fn owner_for_login(&self, login: &str) -> Option<String> {
        (login == "alice").then(|| "alice@acme.example".to_string())
    }
}

const DOVECOT_EHLO: &[u8] = b"250-mail.acme.example\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250-BURL imap\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-SIZE 104857600\r\n250-STARTTLS\r\n250 PIPELINING\r\n";

struct H {
    s: Session,
    client: Vec<u8>,
    upstream: Vec<u8>,
}

fn plain_ir(login: &str, pw: &str) -> String {
    let raw = format!("\0{login}\0{pw}");
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in raw.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl H {
    fn new(opts: Options, tls: bool) -> H {
        let mut h = H {
            s: Session::new(opts, Arc::new(TestHooks), tls),
            client: Vec::new(),
            upstream: Vec::new(),
        };
        h.collect();
        h
    }

    /// A session on an implicit-TLS listener, upstream open, alice logged in.
    fn ready(opts: Options) -> H {
        let mut h = H::new(
            Options {
                listener_tls: TlsMode::Implicit,
                ..opts
            },
            true,
        );
        h.c(b"EHLO client.example\r\n");
        h.open();
        h.take_client();
        h.c(format!("AUTH PLAIN {}\r\n", plain_ir("alice", "pw-alice")).as_bytes());
        assert!(h.take_upstream().starts_with("AUTH PLAIN "));
        h.u(b"235 2.7.0 Logged in.\r\n");
        assert_eq!(h.take_client(), "235 2.7.0 Logged in.\r\n");
        assert!(h.s.authenticated());
        h
    }

    fn collect(&mut self) {
        self.client.extend(self.s.take_client_out());
        self.upstream.extend(self.s.take_upstream_out());
    }

    fn c(&mut self, b: &[u8]) {
        self.s.client_input(b);
        self.collect();
    }

    fn u(&mut self, b: &[u8]) {
        self.s.upstream_input(b);
        self.collect();
    }

    fn open(&mut self) {
        match self.s.take_effect() {
            Some(Effect::OpenUpstream { helo }) => assert_eq!(helo, "client.example"),
            other => panic!("expected OpenUpstream, got {other:?}"),
        }
        let r = Reply {
            code: 250,
            raw: DOVECOT_EHLO.to_vec(),
        };
        self.s.upstream_opened(&r);
        self.collect();
    }

    fn take_client(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.client)).into_owned()
    }

    fn take_upstream(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.upstream)).into_owned()
    }

    fn take_upstream_bytes(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.upstream)
    }

    /// The capture a finished message starts while upstream considers it.
    fn prepared(&mut self) -> CaptureRequest {
        let e = self.s.take_effect();
        self.collect();
        match e {
            Some(Effect::Prepare(req)) => req,
            other => panic!("expected Prepare, got {other:?}"),
        }
    }

    /// Upstream's 2xx for a prepared message: commit, release the reply.
    fn commit(&mut self) {
        match self.s.take_effect() {
            Some(Effect::Commit) => {}
            other => panic!("expected Commit, got {other:?}"),
        }
        self.s.capture_done();
        self.collect();
    }
}

#[test]
fn before_starttls_only_ehlo_and_starttls_work_and_pipelined_bytes_are_dropped() {
    let mut h = H::new(Options::default(), false);
    assert_eq!(h.take_client(), "220 localhost ESMTP mailshare\r\n");
    h.c(b"EHLO c\r\n");
    let ehlo = h.take_client();
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert!(h.s.take_effect().is_none(), "no upstream before TLS");
    h.c(b"AUTH PLAIN AGFsaWNlAHB3\r\nMAIL FROM:<a@b>\r\n");
    assert_eq!(
        h.take_client(),
        "530 5.7.0 Must issue a STARTTLS command first\r\n".repeat(2)
    );
    // STARTTLS with a command injected behind it in the same segment.
    h.c(b"STARTTLS\r\nNOOP\r\n");
    assert_eq!(h.take_client(), "220 2.0.0 Ready to start TLS\r\n");
    assert!(matches!(h.s.take_effect(), Some(Effect::StartTls)));
    assert!(h
        .s
        .take_events()
        .contains(&Event::DiscardedAfterStartTls { bytes: 6 }));
    h.s.tls_started();
    h.collect();
    assert_eq!(h.take_client(), "", "the injected NOOP is never answered");
    h.c(b"EHLO client.example\r\n");
    h.open();
    let ehlo = h.take_client();
    assert!(ehlo.contains("AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    assert!(
        !ehlo.contains("STARTTLS") && !ehlo.contains("BURL"),
        "{ehlo}"
    );
    assert_eq!(h.take_upstream(), "", "the opening EHLO is the driver's");
}

#[test]
fn plaintext_auth_when_allowed_and_starttls_drops_the_plaintext_upstream() {
    let mut h = H::new(
        Options {
            allow_plaintext_auth: true,
            ..Options::default()
        },
        false,
    );
    h.take_client();
    h.c(b"EHLO client.example\r\n");
    h.open();
    let ehlo = h.take_client();
    assert!(ehlo.contains("AUTH PLAIN LOGIN") && ehlo.contains("STARTTLS"));
    h.c(b"STARTTLS\r\n");
    assert!(matches!(h.s.take_effect(), Some(Effect::StartTls)));
    assert_eq!(h.take_upstream(), "QUIT\r\n");
    assert!(!h.s.upstream_wanted());
}

#[test]
fn pipelined_replies_keep_command_order_across_local_and_upstream() {
    let mut h = H::ready(Options {
        max_recipients: 2,
        ..Options::default()
    });
    h.c(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<a@x.example>\r\nRCPT TO:<B@X.example>\r\nRCPT TO:<c@x.example>\r\nDATA\r\nSubject: early\r\n");
    assert_eq!(
        h.take_upstream(),
        "MAIL FROM:<alice@acme.example>\r\nRCPT TO:<a@x.example>\r\nRCPT TO:<B@X.example>\r\nDATA\r\n"
    );
    assert_eq!(h.take_client(), "", "the first reply is upstream's");
    h.u(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
    assert_eq!(h.take_client(), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
    h.u(b"550 5.1.1 no such user\r\n354 go\r\n");
    assert_eq!(
        h.take_client(),
        "550 5.1.1 no such user\r\n452 4.5.3 Too many recipients\r\n354 go\r\n"
    );
    // The bytes sent before the 354 were held, and are message content now.
    h.c(b"\r\nbody\r\n.\r\n");
    assert_eq!(h.take_upstream(), "Subject: early\r\n\r\nbody\r\n.\r\n");
    // The capture starts while upstream considers the message.
    let req = h.prepared();
    assert_eq!(req.owner, "alice@acme.example");
    assert_eq!(req.envelope_recipients, vec!["a@x.example"]);
    h.u(b"250 2.0.0 Ok: queued\r\n");
    assert_eq!(h.take_client(), "", "held until captured");
    h.commit();
    assert_eq!(h.take_client(), "250 2.0.0 Ok: queued\r\n");
}

#[test]
fn the_share_header_reaches_capture_but_not_upstream() {
    let mut h = H::ready(Options::default());
    h.c(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<bob@client-a.example>\r\nDATA\r\n");
    h.u(b"250 ok\r\n250 ok\r\n354 go\r\n");
    h.take_upstream();
    h.take_client();
    let msg = b"From: alice@acme.example\r\nX-Mailshare-Share: metadata\r\n  folded\r\nSubject: s\r\n\r\n..dotted\r\n.\r\n";
    h.c(msg);
    assert_eq!(
        h.take_upstream(),
        "From: alice@acme.example\r\nSubject: s\r\n\r\n..dotted\r\n.\r\n"
    );
    match h.prepared().message {
        Collected::Full(raw) => assert_eq!(
            raw,
            b"From: alice@acme.example\r\nX-Mailshare-Share: metadata\r\n  folded\r\nSubject: s\r\n\r\n.dotted\r\n"
        ),
        other => panic!("{other:?}"),
    }
    h.u(b"250 2.0.0 Ok\r\n");
    h.commit();
    assert!(h.s.take_events().contains(&Event::ShareHeaderRemoved));
}

#[test]
fn smuggling_in_reject_mode_aborts_upstream_and_refuses() {
    let mut h = H::ready(Options::default());
    h.c(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<bob@client-a.example>\r\nDATA\r\n");
    h.u(b"250 ok\r\n250 ok\r\n354 go\r\n");
    h.take_upstream();
    h.take_client();
    h.c(b"Subject: s\r\n\r\nhi\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n.\r\n");
    let up = h.take_upstream_bytes();
    assert!(
        !up.windows(3).any(|w| w == b"\n.\r"),
        "no terminator reaches upstream: {:?}",
        String::from_utf8_lossy(&up)
    );
    assert!(!h.s.upstream_wanted(), "upstream connection aborted");
    assert!(h.take_client().starts_with("554 5.6.0"));
    h.c(b"RSET\r\n");
    assert!(h.take_client().starts_with("421 "));
    assert!(matches!(h.s.take_effect(), Some(Effect::Close)));
}

#[test]
fn smuggling_in_normalize_mode_yields_one_message() {
    let mut h = H::ready(Options {
        bare_line_endings: BareLineEndings::Normalize,
        ..Options::default()
    });
    h.c(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<bob@client-a.example>\r\nDATA\r\n");
    h.u(b"250 ok\r\n250 ok\r\n354 go\r\n");
    h.take_upstream();
    h.c(b"Subject: s\r\n\r\nhi\n.\nMAIL FROM:<evil@x>\r\n\r.\r\nDATA\r\n.\r\n");
    let up = h.take_upstream();
    assert_eq!(
        up,
        "Subject: s\r\n\r\nhi\r\n..\r\nMAIL FROM:<evil@x>\r\n\r\n..\r\nDATA\r\n.\r\n"
    );
    assert_eq!(up.matches("\r\n.\r\n").count(), 1);
}

#[test]
fn auth_login_takes_several_steps_and_the_login_is_the_owner() {
    let mut h = H::new(
        Options {
            listener_tls: TlsMode::Implicit,
            ..Options::default()
        },
        true,
    );
    h.c(b"EHLO client.example\r\n");
    h.open();
    h.take_client();
    h.c(b"AUTH LOGIN\r\n");
    assert_eq!(h.take_upstream(), "AUTH LOGIN\r\n");
    // A barrier: the next line is not read as a command.
    h.c(b"YWxpY2U=\r\n");
    assert_eq!(h.take_upstream(), "");
    h.u(b"334 VXNlcm5hbWU6\r\n");
    assert_eq!(h.take_client(), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(h.take_upstream(), "YWxpY2U=\r\n");
    h.u(b"334 UGFzc3dvcmQ6\r\n");
    h.c(b"cHctYWxpY2U=\r\n");
    assert_eq!(h.take_upstream(), "cHctYWxpY2U=\r\n");
    assert!(!h.s.authenticated());
    h.u(b"235 2.7.0 Logged in.\r\n");
    assert!(h.s.authenticated());
    assert!(h.s.take_events().contains(&Event::Auth { ok: true }));
    assert!(!format!("{:?}", h.s).contains("cHct"));
}

#[test]
fn a_wrong_password_is_upstreams_535_and_nothing_is_collected() {
    let mut h = H::new(
        Options {
            listener_tls: TlsMode::Implicit,
            ..Options::default()
        },
        true,
    );
    h.c(b"EHLO client.example\r\n");
    h.open();
    h.take_client();
    h.c(format!("AUTH PLAIN {}\r\n", plain_ir("alice", "nope")).as_bytes());
    h.u(b"535 5.7.8 Authentication failed\r\n");
    assert_eq!(h.take_client(), "535 5.7.8 Authentication failed\r\n");
    assert!(!h.s.authenticated());
    assert!(h.s.take_events().contains(&Event::Auth { ok: false }));
}

#[test]
fn bdat_chunks_are_rechunked_filtered_and_answered_per_client_chunk() {
    let mut h = H::ready(Options::default());
    h.c(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<bob@client-a.example>\r\n");
    h.u(b"250 ok\r\n250 ok\r\n");
    h.take_upstream();
    h.take_client();
    let first = b"X-Mailshare-Share: full\r\nSubject: b\r\n";
    let second = b"\r\nbody\r\n";
    let mut script = format!("BDAT {}\r\n", first.len()).into_bytes();
    script.extend_from_slice(first);
    script.extend_from_slice(format!("BDAT {} LAST\r\n", second.len()).as_bytes());
    script.extend_from_slice(second);
    script.extend_from_slice(b"QUIT\r\n");
    h.c(&script);
    assert_eq!(
        h.take_upstream(),
        "BDAT 12\r\nSubject: b\r\nBDAT 8 LAST\r\n\r\nbody\r\nQUIT\r\n"
    );
    h.u(b"250 2.0.0 Added 12 octets\r\n250 2.0.0 Ok\r\n");
    assert_eq!(h.take_client(), "250 2.0.0 Added 12 octets\r\n");
    // BDAT: captured after upstream's reply (its RCPT replies may still
    // have been on their way when the chunks ended).
    match h.s.take_effect() {
        Some(Effect::Capture(CaptureRequest {
            message: Collected::Full(raw),
            ..
        })) => assert_eq!(raw, [&first[..], &second[..]].concat()),
        other => panic!("{other:?}"),
    }
    h.s.capture_done();
    h.u(b"221 2.0.0 Bye\r\n");
    assert_eq!(h.take_client(), "250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n");
    assert!(matches!(h.s.take_effect(), Some(Effect::Close)));
}

#[test]
fn a_failed_bdat_piece_is_the_chunks_reply() {
    let mut h = H::ready(Options::default());
    h.c(b"BDAT 3 LAST\r\nabc");
    assert_eq!(h.take_upstream(), "BDAT 3 LAST\r\nabc");
    h.u(b"503 5.5.0 MAIL needed first\r\n");
    assert_eq!(h.take_client(), "503 5.5.0 MAIL needed first\r\n");
    assert!(h.s.take_effect().is_none(), "nothing captured");
}

#[test]
fn upstream_failures_end_the_session_cleanly() {
    // Unsolicited 421: relayed, then close.
    let mut h = H::ready(Options::default());
    h.u(b"421 4.4.2 idle too long\r\n");
    assert_eq!(h.take_client(), "421 4.4.2 idle too long\r\n");
    assert!(matches!(h.s.take_effect(), Some(Effect::Close)));

    // Lost mid-DATA: the client finishes, then hears 451.
    let mut h = H::ready(Options::default());
    h.c(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    h.u(b"250 ok\r\n250 ok\r\n354 go\r\n");
    h.take_client();
    h.c(b"Subject: x\r\n\r\npart");
    h.s.upstream_closed();
    h.collect();
    assert_eq!(h.take_client(), "");
    h.c(b" two\r\n.\r\n");
    assert!(h.take_client().starts_with("451 4.4.2"));

    // Lost with replies owed: 421 at once.
    let mut h = H::ready(Options::default());
    h.c(b"NOOP\r\n");
    h.s.upstream_closed();
    h.collect();
    assert!(h.take_client().starts_with("421 4.4.2"));
    assert!(matches!(h.s.take_effect(), Some(Effect::Close)));

    // Garbage from upstream.
    let mut h = H::ready(Options::default());
    h.c(b"NOOP\r\n");
    h.u(b"hello\r\n");
    assert!(h.take_client().starts_with("421 "));
}

#[test]
fn limits_lines_commands_size_and_bare_lf_commands() {
    // EHLO and AUTH count too.
    let mut h = H::ready(Options {
        max_commands: 4,
        max_message_bytes: 100,
        ..Options::default()
    });
    let long = format!("NOOP {}\r\n", "x".repeat(MAX_COMMAND_LINE + 10));
    h.c(long.as_bytes());
    assert_eq!(h.take_client(), "500 5.5.6 Line too long\r\n");
    h.c(b"MAIL FROM:<a@b> SIZE=1000\r\n");
    assert!(h.take_client().starts_with("552 5.3.4"));
    h.c(b"NOOP\n");
    assert!(h.take_client().starts_with("500 5.5.2 Bare LF"));
    h.c(b"NOOP\r\n");
    assert!(h.take_client().starts_with("421 4.7.0 Too many commands"));
    assert!(matches!(h.s.take_effect(), Some(Effect::Close)));

    // A message over the limit: aborted upstream, 552 at the end.
    let mut h = H::ready(Options {
        max_message_bytes: 100,
        ..Options::default()
    });
    h.c(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    h.u(b"250 ok\r\n250 ok\r\n354 go\r\n");
    h.take_client();
    h.c(format!("Subject: big\r\n\r\n{}\r\n.\r\n", "y".repeat(200)).as_bytes());
    assert!(h.take_client().starts_with("552 5.3.4"));
    assert!(!h.s.upstream_wanted());
}

#[test]
fn shutdown_waits_for_a_safe_point() {
    let mut h = H::ready(Options::default());
    h.c(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    h.u(b"250 ok\r\n250 ok\r\n354 go\r\n");
    h.take_client();
    h.take_upstream();
    h.s.shutdown();
    h.collect();
    assert_eq!(h.take_client(), "", "not in the middle of a message");
    h.c(b"Subject: s\r\n\r\nx\r\n.\r\n");
    h.prepared();
    h.u(b"250 ok\r\n");
    h.commit();
    assert_eq!(
        h.take_client(),
        "250 ok\r\n421 4.3.2 Service shutting down\r\n"
    );
    assert!(h.take_upstream().ends_with("QUIT\r\n"));
    assert!(matches!(h.s.take_effect(), Some(Effect::Close)));
}

/// A whole transaction fed one byte at a time gives the same bytes to
/// both sides as fed in one piece.
#[test]
fn a_transaction_split_at_every_byte_relays_the_same_bytes() {
    let commands = b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<bob@client-a.example>\r\nDATA\r\n";
    let message = b"From: alice@acme.example\r\nX-Mailshare-Share: subject\r\nSubject: hi\r\n\r\n..a\r\nb\r\n.\r\nRSET\r\n";
    let run = |bytewise: bool| -> (String, String) {
        let mut h = H::ready(Options::default());
        let feed = |h: &mut H, b: &[u8]| {
            if bytewise {
                for x in b {
                    h.c(std::slice::from_ref(x));
                }
            } else {
                h.c(b);
            }
        };
        feed(&mut h, commands);
        h.u(b"250 ok\r\n250 ok\r\n354 go\r\n");
        feed(&mut h, message);
        h.prepared();
        h.u(b"250 queued\r\n");
        h.commit();
        h.u(b"250 reset\r\n");
        (h.take_client(), h.take_upstream())
    };
    let whole = run(false);
    assert_eq!(run(true), whole);
    assert_eq!(
        whole.1,
        "MAIL FROM:<alice@acme.example>\r\nRCPT TO:<bob@client-a.example>\r\nDATA\r\nFrom: alice@acme.example\r\nSubject: hi\r\n\r\n..a\r\nb\r\n.\r\nRSET\r\n"
    );
    assert_eq!(
        whole.0,
        "250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n250 reset\r\n"
    );
}

#[test]
fn timeouts_answer_and_close() {
    let mut h = H::ready(Options::default());
    h.c(b"MAIL FROM:<a@b>\r\n");
    h.s.timed_out(Timeout::Upstream);
    h.collect();
    assert!(h.take_client().starts_with("421 4.4.1"));
    assert!(matches!(h.s.take_effect(), Some(Effect::Close)));
    let mut h = H::new(Options::default(), false);
    h.take_client();
    h.s.timed_out(Timeout::Login);
    h.collect();
    assert!(h.take_client().starts_with("421 4.7.0 Login timeout"));
}

/// A message upstream refuses at its end of data: the capture prepared
/// meanwhile is dropped, the client gets upstream's reply, and the next
/// message is prepared and committed as usual.
#[test]
fn a_prepared_capture_is_discarded_when_upstream_refuses_the_message() {
    let mut h = H::ready(Options::default());
    h.c(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<bob@client-a.example>\r\nDATA\r\n");
    h.u(b"250 ok\r\n250 ok\r\n354 go\r\n");
    h.take_client();
    // The end of data and a pipelined RSET in one read: the RSET waits
    // for the Prepare to be taken, then goes out.
    h.c(b"Subject: no\r\n\r\nx\r\n.\r\nRSET\r\n");
    assert!(h
        .take_upstream()
        .ends_with("DATA\r\nSubject: no\r\n\r\nx\r\n.\r\n"));
    let req = h.prepared();
    assert_eq!(req.envelope_recipients, vec!["bob@client-a.example"]);
    assert_eq!(h.take_upstream(), "RSET\r\n");
    h.u(b"554 5.7.1 Rejected by policy\r\n");
    assert!(matches!(h.s.take_effect(), Some(Effect::Discard)));
    h.u(b"250 reset\r\n");
    assert_eq!(
        h.take_client(),
        "554 5.7.1 Rejected by policy\r\n250 reset\r\n"
    );
    // The next message goes the usual way.
    h.c(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<bob@client-a.example>\r\nDATA\r\n");
    h.u(b"250 ok\r\n250 ok\r\n354 go\r\n");
    h.take_client();
    h.c(b"Subject: yes\r\n\r\nx\r\n.\r\n");
    h.prepared();
    h.u(b"250 queued\r\n");
    assert_eq!(h.take_client(), "", "held until captured");
    h.commit();
    assert_eq!(h.take_client(), "250 queued\r\n");
}

/// A BDAT transaction pipelined whole (MAIL, RCPT, BDAT LAST in one
/// write) ends before its RCPT replies arrive: it is not prepared early,
/// and its capture, after upstream's reply, has the recipients upstream
/// accepted.
#[test]
fn a_pipelined_bdat_message_is_captured_after_its_reply_with_every_recipient() {
    let mut h = H::ready(Options::default());
    h.c(b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<bob@client-a.example>\r\nRCPT TO:<hidden@client-b.example>\r\nBDAT 14 LAST\r\nSubject: p\r\n\r\n");
    assert!(h.s.take_effect().is_none(), "nothing prepared yet");
    h.u(b"250 ok\r\n250 ok\r\n250 ok\r\n250 2.0.0 Ok\r\n");
    match h.s.take_effect() {
        Some(Effect::Capture(req)) => assert_eq!(
            req.envelope_recipients,
            vec!["bob@client-a.example", "hidden@client-b.example"]
        ),
        other => panic!("{other:?}"),
    }
    h.s.capture_done();
    h.collect();
    let replies = h.take_client();
    assert!(replies.ends_with("250 2.0.0 Ok\r\n"), "{replies:?}");
}
