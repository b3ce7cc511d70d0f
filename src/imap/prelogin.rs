//! Before login mailshare is the IMAP server: it answers the greeting,
//! CAPABILITY, NOOP, ID, LOGOUT, STARTTLS, and collects LOGIN or
//! AUTHENTICATE (PLAIN, LOGIN, XOAUTH2; SASL-IR and continuations) credentials
//! for the driver to try against the upstream. Sans-IO: bytes in
//! ([`Prelogin::input`]), events out ([`Prelogin::next_event`]).
//!
//! Commands are decoded with imap-codec's `CommandCodec` once the
//! [`Scanner`] has framed a whole message. Buffers are small and bounded
//! (lines ≤ 8 KiB, literals ≤ 4 KiB, as `LITERAL-` promises): an oversize
//! synchronizing literal is refused with a tagged BAD and no `+`, an oversize
//! non-synchronizing one or an endless line ends the connection with `* BYE`;
//! nothing is ever allocated from an announced size. Anything unparsable gets
//! a tagged BAD (or `* BAD` without a usable tag), never silence.
//!
//! Credentials live in [`Credentials`], whose `Debug` prints the login only
//! and whose secret bytes are wiped on drop.

use super::capability::{PreloginCaps, MECHANISMS};
use super::scanner::{LiteralMode, Piece, Scanner};
use imap_codec::decode::Decoder;
use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::core::AString;
use imap_codec::{AuthenticateDataCodec, CommandCodec};
use std::fmt;

/// Limits before login (fixed: no legitimate client comes near them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreloginLimits {
    /// Longest command line, CRLF included.
    pub max_line: usize,
    /// Largest literal (LITERAL- allows 4096 non-synchronizing).
    pub max_literal: u64,
    /// Largest whole command (lines plus literals).
    pub max_message: usize,
    /// Invalid commands before the connection is closed.
    pub max_bad: u32,
    /// Failed logins before the connection is closed.
    pub max_auth_failures: u32,
}

impl Default for PreloginLimits {
    fn default() -> Self {
        PreloginLimits {
            max_line: 8 * 1024,
            max_literal: 4096,
            max_message: 16 * 1024,
            max_bad: 10,
            max_auth_failures: 5,
        }
    }
}

/// Secret bytes: `Debug` never shows them, `Drop` overwrites them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The secret itself, for the one place that sends it upstream.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// What the client authenticated with, to be replayed to the upstream.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The identity the session acts as (the authorization identity when
    /// one was given, else the authentication identity): maps to the policy
    /// user. Not secret; logged.
    pub login: String,
    pub method: Method,
}

/// How to authenticate upstream.
#[derive(Clone, PartialEq, Eq)]
pub enum Method {
    /// LOGIN, AUTHENTICATE PLAIN or LOGIN: a password.
    Password {
        authzid: Vec<u8>,
        authcid: Vec<u8>,
        password: Secret,
    },
    /// AUTHENTICATE XOAUTH2: the client's whole payload, passed as is.
    XOAuth2 { payload: Secret },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = match self.method {
            Method::Password { .. } => "password",
            Method::XOAuth2 { .. } => "xoauth2",
        };
        f.debug_struct("Credentials")
            .field("login", &self.login)
            .field("method", &method)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    fn password(authzid: Vec<u8>, authcid: Vec<u8>, password: Vec<u8>) -> Credentials {
        let who = if authzid.is_empty() {
            &authcid
        } else {
            &authzid
        };
        Credentials {
            login: String::from_utf8_lossy(who).into_owned(),
            method: Method::Password {
                authzid,
                authcid,
                password: Secret::new(password),
            },
        }
    }

    /// SASL PLAIN: `authzid NUL authcid NUL password`.
    fn from_plain(raw: &[u8]) -> Option<Credentials> {
        let mut parts = raw.splitn(3, |&b| b == 0);
        let authzid = parts.next()?.to_vec();
        let authcid = parts.next()?.to_vec();
        let password = parts.next()?.to_vec();
        if authcid.is_empty() {
            return None;
        }
        Some(Credentials::password(authzid, authcid, password))
    }

    /// XOAUTH2: `user=<login>^Aauth=Bearer <token>^A^A`.
    fn from_xoauth2(raw: &[u8]) -> Option<Credentials> {
        let user = raw
            .split(|&b| b == 1)
            .find_map(|f| f.strip_prefix(b"user="))?;
        if user.is_empty() {
            return None;
        }
        Some(Credentials {
            login: String::from_utf8_lossy(user).into_owned(),
            method: Method::XOAuth2 {
                payload: Secret::new(raw.to_vec()),
            },
        })
    }
}

/// What the driver must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Read more from the client and call [`Prelogin::input`].
    NeedInput,
    /// Write these bytes to the client.
    Reply(Vec<u8>),
    /// The `OK` to STARTTLS was queued as a `Reply` before this: write it,
    /// then start TLS, unless [`Prelogin::has_pending_input`] (bytes the
    /// client sent after STARTTLS: drop the connection, CVE-2011-0411), then
    /// call [`Prelogin::tls_started`].
    StartTls,
    /// Try these credentials upstream; the answer goes to the client with
    /// this tag. Then [`Prelogin::login_failed`] or relay.
    Login {
        tag: String,
        credentials: Credentials,
    },
    /// Close the connection (after writing what was queued).
    Close,
}

#[derive(Debug)]
enum State {
    Commands,
    /// A login or STARTTLS is with the driver: nothing more is read until
    /// it reports back.
    Paused,
    /// Waiting for a SASL response line.
    Sasl {
        tag: String,
        mechanism: Sasl,
    },
    Closed,
}

#[derive(Debug)]
enum Sasl {
    Plain,
    XOAuth2,
    LoginUser,
    LoginPassword { user: Vec<u8> },
}

/// The pre-login conversation with one client.
#[derive(Debug)]
pub struct Prelogin {
    limits: PreloginLimits,
    caps: PreloginCaps,
    /// Received, not yet consumed; the first `scanned` bytes are framed.
    buf: Vec<u8>,
    scanned: usize,
    scanner: Scanner,
    state: State,
    queue: std::collections::VecDeque<Event>,
    bad: u32,
    auth_failures: u32,
    listener_starttls: bool,
    tls: bool,
    allow_plaintext_auth: bool,
}

impl Prelogin {
    /// `listener_starttls`: the listener offers STARTTLS; `tls`: TLS is
    /// already up (implicit TLS); `allow_plaintext_auth`: the listener's key.
    pub fn new(
        limits: PreloginLimits,
        listener_starttls: bool,
        tls: bool,
        allow_plaintext_auth: bool,
    ) -> Prelogin {
        let mut p = Prelogin {
            limits,
            caps: PreloginCaps {
                starttls: false,
                auth: false,
            },
            buf: Vec::new(),
            scanned: 0,
            scanner: Scanner::new(),
            state: State::Commands,
            queue: Default::default(),
            bad: 0,
            auth_failures: 0,
            listener_starttls,
            tls,
            allow_plaintext_auth,
        };
        p.caps = p.current_caps();
        p
    }

    fn current_caps(&self) -> PreloginCaps {
        PreloginCaps {
            starttls: self.listener_starttls && !self.tls,
            auth: self.tls || self.allow_plaintext_auth,
        }
    }

    /// The greeting to send first.
    pub fn greeting(&self) -> Vec<u8> {
        format!(
            "* OK [CAPABILITY {}] mailshare IMAP proxy ready\r\n",
            self.caps.list()
        )
        .into_bytes()
    }

    /// Bytes from the client. Call only after [`Event::NeedInput`]: the
    /// buffer is bounded by refusing to frame past the limits, so the
    /// caller's read size bounds what it can grow by.
    pub fn input(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not consumed (after STARTTLS: injected commands).
    pub fn has_pending_input(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Bytes the client sent after its successful login command: the first
    /// bytes of the relayed session.
    pub fn take_pending_input(&mut self) -> Vec<u8> {
        self.scanned = 0;
        std::mem::take(&mut self.buf)
    }

    /// TLS is up: state and capabilities start afresh.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.buf.clear();
        self.scanned = 0;
        self.scanner = Scanner::new();
        self.state = State::Commands;
        self.caps = self.current_caps();
    }

    /// The upstream could not be asked (the client was told so): go on
    /// without counting a failure.
    pub fn login_unavailable(&mut self) {
        if matches!(self.state, State::Paused) {
            self.state = State::Commands;
        }
    }

    /// The upstream refused the credentials (its answer was relayed).
    pub fn login_failed(&mut self) {
        if matches!(self.state, State::Paused) {
            self.state = State::Commands;
        }
        self.auth_failures += 1;
        if self.auth_failures >= self.limits.max_auth_failures {
            self.bye("Too many authentication failures");
        }
    }

    /// The next thing to do.
    pub fn next_event(&mut self) -> Event {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return e;
            }
            match self.state {
                State::Closed => return Event::Close,
                State::Paused => return Event::NeedInput,
                _ => {}
            }
            match self.frame() {
                Some(end) => self.handle_message(end),
                None if self.queue.is_empty() => return Event::NeedInput,
                None => {}
            }
        }
    }

    fn pause_with(&mut self, event: Event) {
        self.queue.push_back(event);
        self.state = State::Paused;
    }

    fn reply(&mut self, s: String) {
        self.queue.push_back(Event::Reply(s.into_bytes()));
    }

    fn bye(&mut self, text: &str) {
        self.reply(format!("* BYE {text}\r\n"));
        self.queue.push_back(Event::Close);
        self.state = State::Closed;
        self.buf.clear();
        self.scanned = 0;
    }

    fn bad(&mut self, tag: &str, text: &str) {
        self.bad += 1;
        if self.bad >= self.limits.max_bad {
            self.reply(format!("{tag} BAD {text}\r\n"));
            self.bye("Too many invalid commands");
            return;
        }
        self.reply(format!("{tag} BAD {text}\r\n"));
    }

    /// The tag of the message at the start of the buffer, if it has one.
    fn buffered_tag(&self) -> String {
        tag_of(&self.buf)
    }

    /// Frame the buffer: `Some(end)` when `buf[..end]` is a whole message.
    fn frame(&mut self) -> Option<usize> {
        loop {
            if matches!(self.state, State::Sasl { .. }) {
                self.scanner.suppress_announcement();
            }
            let step = self.scanner.step(&self.buf[self.scanned..])?;
            self.scanned += step.len;
            match step.piece {
                Piece::Line { end: false, .. } => {
                    if self.scanner.line_len() > self.limits.max_line as u64 {
                        self.bye("Command line too long");
                        return None;
                    }
                }
                Piece::Line {
                    end: true,
                    announce: None,
                } => {
                    if self.scanned > self.limits.max_message {
                        let tag = self.buffered_tag();
                        self.consume();
                        self.bad(&tag, "Command too long");
                        continue;
                    }
                    return Some(self.scanned);
                }
                Piece::Line {
                    end: true,
                    announce: Some(a),
                } => {
                    let too_big = a.size > self.limits.max_literal
                        || self.scanned as u64 + a.size > self.limits.max_message as u64;
                    match (a.mode, too_big) {
                        (LiteralMode::Sync, false) => {
                            self.reply("+ Ready for literal data\r\n".into());
                        }
                        (LiteralMode::NonSync, false) => {}
                        (LiteralMode::Sync, true) => {
                            let tag = self.buffered_tag();
                            self.scanner.cancel_literal();
                            self.consume();
                            self.bad(&tag, "Literal too large before login");
                            continue;
                        }
                        (LiteralMode::NonSync, true) => {
                            self.bye("Literal too large before login");
                            return None;
                        }
                    }
                }
                Piece::Literal { .. } => {}
            }
        }
    }

    /// Drop the framed bytes.
    fn consume(&mut self) {
        self.buf.drain(..self.scanned);
        self.scanned = 0;
    }

    fn handle_message(&mut self, end: usize) {
        let message: Vec<u8> = self.buf.drain(..end).collect();
        self.scanned = 0;
        match std::mem::replace(&mut self.state, State::Commands) {
            State::Sasl { tag, mechanism } => self.handle_sasl(tag, mechanism, &message),
            State::Commands => self.handle_command(&message),
            State::Closed => self.state = State::Closed,
            State::Paused => self.state = State::Paused,
        }
    }

    fn handle_command(&mut self, message: &[u8]) {
        let command = match CommandCodec::default().decode(message) {
            Ok((&[], c)) => c,
            _ => {
                self.bad(&tag_of(message), "Invalid command");
                return;
            }
        };
        let tag = command.tag.as_ref().to_string();
        let may_auth = self.caps.auth;
        match command.body {
            CommandBody::Capability => {
                let list = self.caps.list();
                self.reply(format!(
                    "* CAPABILITY {list}\r\n{tag} OK CAPABILITY completed\r\n"
                ));
            }
            CommandBody::Noop => self.reply(format!("{tag} OK NOOP completed\r\n")),
            CommandBody::Logout => {
                self.reply(format!("* BYE Logging out\r\n{tag} OK LOGOUT completed\r\n"));
                self.queue.push_back(Event::Close);
                self.state = State::Closed;
            }
            CommandBody::Id { .. } => self.reply(format!(
                "* ID (\"name\" \"mailshare\")\r\n{tag} OK ID completed\r\n"
            )),
            CommandBody::StartTLS => {
                if self.caps.starttls {
                    self.reply(format!("{tag} OK Begin TLS negotiation now\r\n"));
                    self.pause_with(Event::StartTls);
                } else {
                    self.bad(&tag, "STARTTLS is not available now");
                }
            }
            CommandBody::Login { username, password } if may_auth => {
                let creds = Credentials::password(
                    Vec::new(),
                    astring_bytes(&username),
                    astring_bytes(password.declassify()),
                );
                self.pause_with(Event::Login {
                    tag,
                    credentials: creds,
                });
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } if may_auth => {
                let ir = initial_response.map(|s| s.declassify().to_vec());
                self.start_sasl(tag, &mechanism, ir);
            }
            CommandBody::Login { .. } | CommandBody::Authenticate { .. } => self.reply(format!(
                "{tag} NO [PRIVACYREQUIRED] Plaintext authentication is disabled: use STARTTLS first\r\n"
            )),
            _ => self.bad(&tag, "Command not valid before login"),
        }
    }

    fn start_sasl(&mut self, tag: String, mechanism: &AuthMechanism<'_>, ir: Option<Vec<u8>>) {
        let ir = ir.map(Secret::new);
        match (mechanism, ir) {
            (AuthMechanism::Plain, Some(ir)) => self.finish_plain(tag, ir.expose()),
            (AuthMechanism::XOAuth2, Some(ir)) => self.finish_xoauth2(tag, ir.expose()),
            (AuthMechanism::Plain, None) => self.challenge(tag, Sasl::Plain, ""),
            (AuthMechanism::XOAuth2, None) => self.challenge(tag, Sasl::XOAuth2, ""),
            (AuthMechanism::Login, None) => self.challenge(tag, Sasl::LoginUser, "VXNlcm5hbWU6"),
            (AuthMechanism::Login, Some(user)) => self.challenge(
                tag,
                Sasl::LoginPassword {
                    user: user.expose().to_vec(),
                },
                "UGFzc3dvcmQ6",
            ),
            (other, _) => {
                let m = other.as_ref().to_string();
                let known = MECHANISMS.iter().any(|k| k.eq_ignore_ascii_case(&m));
                debug_assert!(!known);
                self.reply(format!(
                    "{tag} NO [CANNOT] Unsupported authentication mechanism\r\n"
                ));
            }
        }
    }

    fn challenge(&mut self, tag: String, mechanism: Sasl, text: &str) {
        self.reply(format!("+ {text}\r\n"));
        self.state = State::Sasl { tag, mechanism };
    }

    fn finish_plain(&mut self, tag: String, raw: &[u8]) {
        match Credentials::from_plain(raw) {
            Some(credentials) => self.pause_with(Event::Login { tag, credentials }),
            None => self.bad(&tag, "Invalid SASL PLAIN response"),
        }
    }

    fn finish_xoauth2(&mut self, tag: String, raw: &[u8]) {
        match Credentials::from_xoauth2(raw) {
            Some(credentials) => self.pause_with(Event::Login { tag, credentials }),
            None => self.bad(&tag, "Invalid XOAUTH2 response"),
        }
    }

    fn handle_sasl(&mut self, tag: String, mechanism: Sasl, line: &[u8]) {
        let data = match AuthenticateDataCodec::default().decode(line) {
            Ok((&[], d)) => d,
            _ => return self.bad(&tag, "Invalid SASL response"),
        };
        let raw = match data {
            AuthenticateData::Cancel => return self.bad(&tag, "Authentication cancelled"),
            AuthenticateData::Continue(s) => Secret::new(s.declassify().to_vec()),
        };
        match mechanism {
            Sasl::Plain => self.finish_plain(tag, raw.expose()),
            Sasl::XOAuth2 => self.finish_xoauth2(tag, raw.expose()),
            Sasl::LoginUser => self.challenge(
                tag,
                Sasl::LoginPassword {
                    user: raw.expose().to_vec(),
                },
                "UGFzc3dvcmQ6",
            ),
            Sasl::LoginPassword { user } => {
                if user.is_empty() {
                    return self.bad(&tag, "Invalid SASL LOGIN response");
                }
                let credentials = Credentials::password(Vec::new(), user, raw.expose().to_vec());
                self.pause_with(Event::Login { tag, credentials });
            }
        }
    }
}

/// The tag at the start of `bytes` if it has a valid one, else `*`.
fn tag_of(bytes: &[u8]) -> String {
    match bytes
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
    {
        Some(i)
            if i > 0
                && i <= 64
                && bytes[i] == b' '
                && bytes[..i].iter().all(|&b| super::syntax::is_tag_char(b)) =>
        {
            String::from_utf8_lossy(&bytes[..i]).into_owned()
        }
        _ => "*".to_string(),
    }
}

fn astring_bytes(a: &AString<'_>) -> Vec<u8> {
    match a {
        AString::Atom(atom) => atom.as_ref().as_bytes().to_vec(),
        AString::String(s) => s.as_ref().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(tls: bool, plain: bool) -> Prelogin {
        Prelogin::new(PreloginLimits::default(), true, tls, plain)
    }

    /// Feed `input`, collect events until input is needed (or the end).
    fn run(p: &mut Prelogin, input: &[u8]) -> Vec<Event> {
        p.input(input);
        let mut out = Vec::new();
        loop {
            match p.next_event() {
                Event::NeedInput => return out,
                Event::Close => {
                    out.push(Event::Close);
                    return out;
                }
                e @ (Event::Login { .. } | Event::StartTls) => {
                    out.push(e);
                    return out;
                }
                e => out.push(e),
            }
        }
    }

    fn replies(events: &[Event]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Reply(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    fn login(events: &[Event]) -> Option<(String, Credentials)> {
        events.iter().find_map(|e| match e {
            Event::Login { tag, credentials } => Some((tag.clone(), credentials.clone())),
            _ => None,
        })
    }

    fn password(c: &Credentials) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        match &c.method {
            Method::Password {
                authzid,
                authcid,
                password,
            } => (authzid.clone(), authcid.clone(), password.expose().to_vec()),
            Method::XOAuth2 { .. } => panic!("not a password"),
        }
    }

    #[test]
    fn plaintext_listener_disables_login_until_starttls() {
        let mut p = session(false, false);
        let g = String::from_utf8(p.greeting()).unwrap();
        assert!(g.contains("STARTTLS") && g.contains("LOGINDISABLED") && !g.contains("AUTH="));
        let e = run(&mut p, b"a CAPABILITY\r\nb LOGIN alice secret\r\n");
        let r = replies(&e);
        assert!(
            r.contains("* CAPABILITY IMAP4rev1 SASL-IR LITERAL- ID STARTTLS LOGINDISABLED\r\na OK")
        );
        assert!(r.contains("b NO [PRIVACYREQUIRED]"), "{r}");
        assert_eq!(login(&e), None);
        let e = run(&mut p, b"c AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n");
        assert!(replies(&e).starts_with("c NO [PRIVACYREQUIRED]"));

        let e = run(&mut p, b"d STARTTLS\r\n");
        assert_eq!(replies(&e), "d OK Begin TLS negotiation now\r\n");
        assert_eq!(e.last(), Some(&Event::StartTls));
        assert!(!p.has_pending_input());
        p.tls_started();
        let e = run(&mut p, b"e CAPABILITY\r\n");
        let r = replies(&e);
        assert!(
            r.contains("AUTH=PLAIN") && !r.contains("STARTTLS") && !r.contains("LOGINDISABLED")
        );
        let e = run(&mut p, b"f LOGIN alice \"s3cr\\\"et\"\r\n");
        let (tag, c) = login(&e).unwrap();
        assert_eq!(tag, "f");
        assert_eq!(c.login, "alice");
        assert_eq!(password(&c).2, b"s3cr\"et");
        assert!(!format!("{c:?}").contains("s3cr"), "{c:?}");
    }

    #[test]
    fn starttls_injection_is_visible_to_the_driver() {
        let mut p = session(false, false);
        let e = run(&mut p, b"a STARTTLS\r\nb CAPABILITY\r\n");
        assert_eq!(e.last(), Some(&Event::StartTls));
        assert!(
            p.has_pending_input(),
            "the driver must drop this connection"
        );
        assert!(
            !replies(&e).contains("b OK"),
            "the injected command is never answered"
        );
    }

    #[test]
    fn sasl_plain_login_xoauth2_with_and_without_initial_response() {
        let mut p = session(true, false);
        // PLAIN with SASL-IR: authzid empty, alice, secret.
        let e = run(&mut p, b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n");
        let (_, c) = login(&e).unwrap();
        assert_eq!(
            password(&c),
            (vec![], b"alice".to_vec(), b"secret".to_vec())
        );
        p.login_failed();
        // PLAIN with a continuation, and an authorization identity.
        let e = run(&mut p, b"b AUTHENTICATE PLAIN\r\n");
        assert_eq!(replies(&e), "+ \r\n");
        let e = run(&mut p, b"Ym9iAGFkbWluAHB3\r\n");
        let (tag, c) = login(&e).unwrap();
        assert_eq!((tag.as_str(), c.login.as_str()), ("b", "bob"));
        p.login_failed();
        // LOGIN mechanism: two challenges.
        let e = run(&mut p, b"c AUTHENTICATE LOGIN\r\n");
        assert_eq!(replies(&e), "+ VXNlcm5hbWU6\r\n");
        let e = run(&mut p, b"Y2Fyb2w=\r\n");
        assert_eq!(replies(&e), "+ UGFzc3dvcmQ6\r\n");
        let e = run(&mut p, b"cHc=\r\n");
        let (_, c) = login(&e).unwrap();
        assert_eq!(password(&c), (vec![], b"carol".to_vec(), b"pw".to_vec()));
        p.login_failed();
        // XOAUTH2.
        let e = run(
            &mut p,
            b"d AUTHENTICATE XOAUTH2 dXNlcj1kYXZlAWF1dGg9QmVhcmVyIHRvawEB\r\n",
        );
        let (_, c) = login(&e).unwrap();
        assert_eq!(c.login, "dave");
        assert!(matches!(c.method, Method::XOAuth2 { .. }));
        p.login_failed();
        // Cancel and garbage.
        run(&mut p, b"e AUTHENTICATE PLAIN\r\n");
        assert_eq!(
            replies(&run(&mut p, b"*\r\n")),
            "e BAD Authentication cancelled\r\n"
        );
        run(&mut p, b"f AUTHENTICATE PLAIN\r\n");
        assert!(replies(&run(&mut p, b"!!!\r\n")).starts_with("f BAD"));
        assert!(replies(&run(&mut p, b"g AUTHENTICATE CRAM-MD5\r\n")).starts_with("g NO [CANNOT]"));
    }

    #[test]
    fn literals_before_login() {
        let mut p = session(true, false);
        // A sync literal within the limit gets `+`, then the command completes.
        let e = run(&mut p, b"a LOGIN {5}\r\n");
        assert_eq!(replies(&e), "+ Ready for literal data\r\n");
        let e = run(&mut p, b"alice {6+}\r\nsecret\r\n");
        let (_, c) = login(&e).unwrap();
        assert_eq!(password(&c).1, b"alice");
        assert_eq!(password(&c).2, b"secret");
        p.login_failed();
        // Huge sync literals: BAD, never `+`, nothing buffered.
        for line in [
            &b"b APPEND INBOX {4294967295}\r\n"[..],
            b"c APPEND INBOX {99999999999}\r\n",
            b"d LOGIN {5000}\r\n",
        ] {
            let e = run(&mut p, line);
            let r = replies(&e);
            assert!(!r.contains('+'), "{r}");
            assert!(r.ends_with("BAD Literal too large before login\r\n"), "{r}");
            assert!(p.buf.is_empty());
        }
        // The session goes on.
        assert!(replies(&run(&mut p, b"e NOOP\r\n")).starts_with("e OK"));
        // A huge non-sync literal ends the connection.
        let e = run(&mut p, b"f LOGIN {99999999+}\r\n");
        assert_eq!(replies(&e), "* BYE Literal too large before login\r\n");
        assert_eq!(e.last(), Some(&Event::Close));
    }

    #[test]
    fn small_non_sync_literal_is_accepted_without_continuation() {
        let mut p = session(true, false);
        let e = run(&mut p, b"a LOGIN {5+}\r\nalice pw\r\n");
        assert_eq!(replies(&e), "");
        assert_eq!(login(&e).unwrap().1.login, "alice");
    }

    #[test]
    fn endless_line_is_refused_with_flat_memory() {
        let mut p = session(true, false);
        let chunk = vec![b'x'; 4096];
        let mut closed = false;
        for _ in 0..(10 << 20) / 4096 {
            let e = run(&mut p, &chunk);
            assert!(p.buf.len() <= 16 * 1024, "bounded: {}", p.buf.len());
            if e.last() == Some(&Event::Close) {
                assert_eq!(replies(&e), "* BYE Command line too long\r\n");
                closed = true;
                break;
            }
        }
        assert!(closed);
    }

    #[test]
    fn garbage_gets_bad_and_repeated_garbage_bye() {
        let mut p = session(true, false);
        assert_eq!(
            replies(&run(&mut p, b"a SELECT\r\n")),
            "a BAD Invalid command\r\n"
        );
        assert_eq!(
            replies(&run(&mut p, b"\x01\x02\r\n")),
            "* BAD Invalid command\r\n"
        );
        assert_eq!(
            replies(&run(&mut p, b"b SELECT INBOX\r\n")),
            "b BAD Command not valid before login\r\n"
        );
        let mut e = Vec::new();
        for _ in 0..10 {
            e = run(&mut p, b"zz\r\n");
            if e.last() == Some(&Event::Close) {
                break;
            }
        }
        assert!(replies(&e).contains("* BYE Too many invalid commands"));
    }

    #[test]
    fn logout_and_failures() {
        let mut p = session(true, false);
        for i in 0..5 {
            let e = run(&mut p, format!("t{i} LOGIN a b\r\n").as_bytes());
            assert!(login(&e).is_some());
            p.login_failed();
        }
        let e = run(&mut p, b"");
        assert!(replies(&e).contains("Too many authentication failures"));
        let mut p = session(true, false);
        let e = run(&mut p, b"z LOGOUT\r\n");
        assert_eq!(
            replies(&e),
            "* BYE Logging out\r\nz OK LOGOUT completed\r\n"
        );
        assert_eq!(e.last(), Some(&Event::Close));
    }

    #[test]
    fn pipelined_bytes_after_login_are_kept_for_the_relay() {
        let mut p = session(true, false);
        let e = run(&mut p, b"a LOGIN alice pw\r\nb SELECT INBOX\r\n");
        assert!(login(&e).is_some());
        assert_eq!(p.take_pending_input(), b"b SELECT INBOX\r\n");
    }
}
