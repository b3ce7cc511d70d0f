//! Real upstream mail servers for integration tests: a private Dovecot
//! (IMAP, IMAPS, submission, submissions) relaying to Postfix's smtp-sink,
//! each on 127.0.0.1 ports picked at start, in a temporary directory, run as
//! child processes and stopped by PID when dropped. Nothing system-wide is
//! touched; nothing is started that is not stopped. The servers are set up
//! and exec'd by `scripts/upstreams` (the one copy of dovecot.conf, shared
//! with `scripts/demo`).
//!
//! A missing binary is a test failure that says how to install it
//! (`scripts/install-deps`), never a silent skip.

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Test users: login, password, address. Logins match `config/policy.toml`.
pub const USERS: &[(&str, &str, &str)] = &[
    ("alice", "pw-alice", "alice@acme.example"),
    ("bob", "pw-bob", "bob@acme.example"),
    ("carol", "pw-carol", "carol@acme.example"),
    ("dave", "pw-dave", "dave@acme.example"),
];

/// The password of a test user.
pub fn password(login: &str) -> &'static str {
    USERS
        .iter()
        .find(|u| u.0 == login)
        .map(|u| u.1)
        .unwrap_or_else(|| panic!("no test user {login}"))
}

/// Fail with an install hint when a program is missing.
pub fn require(program: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{program} is not installed: run scripts/install-deps (or apt-get install {package}); \
         the integration tests need real upstream servers"
    );
}

/// A free TCP port on 127.0.0.1 (bound and released; `start` retries on a race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Wait until `addr` answers with a line starting with `greeting`.
pub fn wait_for_greeting(addr: SocketAddr, greeting: &str, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut line = String::new();
            if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with(greeting) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Options for [`Upstreams::start_with`].
#[derive(Clone, Debug, Default)]
pub struct UpstreamOptions {
    /// Enable TLS in Dovecot (STARTTLS on imap/submission, implicit on
    /// imaps/submissions) with the demo certificate in `config/tls/`.
    pub tls: bool,
}

/// Running Dovecot + smtp-sink. Dropping it stops both.
pub struct Upstreams {
    pub dir: tempfile::TempDir,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    pub sink: SocketAddr,
    sink_dir: PathBuf,
    dovecot: Child,
    smtp_sink: Child,
}

/// One message as smtp-sink received it.
#[derive(Clone, Debug)]
pub struct SinkMessage {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// Header and body as the client sent them (smtp-sink writes LF line ends).
    pub data: String,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl Upstreams {
    /// Plaintext upstreams (the usual test setup).
    pub fn start() -> Upstreams {
        Upstreams::start_with(UpstreamOptions::default())
    }

    pub fn start_with(options: UpstreamOptions) -> Upstreams {
        Upstreams::start_with_config(options, "")
    }

    /// Like [`start_with`](Self::start_with), with `extra` included at the
    /// end of dovecot.conf, so its settings win (e.g. `mail_max_userip_connections = 1000`: through a
    /// proxy every session comes from one address).
    pub fn start_with_config(options: UpstreamOptions, extra: &str) -> Upstreams {
        let mut last = String::new();
        for _ in 0..3 {
            match Upstreams::try_start(&options, extra) {
                Ok(u) => return u,
                Err(e) => last = e,
            }
        }
        panic!("could not start the test upstreams: {last}");
    }

    fn try_start(options: &UpstreamOptions, extra: &str) -> Result<Upstreams, String> {
        require("dovecot", "dovecot-core dovecot-imapd dovecot-submissiond");
        require("smtp-sink", "postfix");
        let dir = tempfile::Builder::new()
            .prefix("mailshare-upstreams.")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let d = dir.path();
        // scripts/upstreams writes dovecot.conf (shared with scripts/demo) and
        // execs each server, so these children are the servers themselves.
        let script = repo().join("scripts/upstreams");

        // smtp-sink: the final hop, dumping each transaction to a file.
        let sink_port = free_port();
        let smtp_sink = Command::new(&script)
            .arg("smtp-sink")
            .arg(d)
            .arg(sink_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("scripts/upstreams smtp-sink: {e}"))?;
        let sink: SocketAddr = ([127, 0, 0, 1], sink_port).into();

        // Dovecot: IMAP and submission, plus IMAPS and submissions with TLS.
        let ports = [free_port(), free_port(), free_port(), free_port()];
        if !extra.is_empty() {
            fs::write(d.join("dovecot-extra.conf"), format!("{extra}\n"))
                .map_err(|e| e.to_string())?;
        }
        let mut dovecot = Command::new(&script);
        dovecot
            .arg("dovecot")
            .arg(d)
            .args(["--imap", &ports[0].to_string()])
            .args(["--submission", &ports[2].to_string()])
            .args(["--relay", &sink_port.to_string()]);
        if options.tls {
            dovecot
                .args(["--imaps", &ports[1].to_string()])
                .args(["--submissions", &ports[3].to_string()]);
        }
        let dovecot = dovecot
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("scripts/upstreams dovecot: {e}"))?;
        let addr = |p: u16| -> SocketAddr { ([127, 0, 0, 1], p).into() };
        let mut up = Upstreams {
            imap: addr(ports[0]),
            imaps: addr(ports[1]),
            submission: addr(ports[2]),
            submissions: addr(ports[3]),
            sink,
            sink_dir: d.join("sink"),
            dovecot,
            smtp_sink,
            dir,
        };
        let ready = wait_for_greeting(up.imap, "* OK", Duration::from_secs(15))
            && wait_for_greeting(up.submission, "220", Duration::from_secs(15))
            && wait_for_greeting(up.sink, "220", Duration::from_secs(15));
        if !ready {
            let mut err = String::new();
            if let Some(mut e) = up.dovecot.stderr.take() {
                if up.dovecot.try_wait().ok().flatten().is_some() {
                    let _ = e.read_to_string(&mut err);
                }
            }
            return Err(format!(
                "upstreams did not come up: dovecot stderr: {err}; log: {}",
                up.log()
            ));
        }
        Ok(up)
    }

    /// Dovecot's log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// A user's Maildir (cur/new/tmp inside).
    pub fn maildir(&self, login: &str) -> PathBuf {
        self.dir.path().join("home").join(login).join("Maildir")
    }

    /// Every transaction smtp-sink has dumped so far, oldest first.
    pub fn sink_messages(&self) -> Vec<SinkMessage> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.sink_dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().filter_map(|f| parse_sink_dump(f)).collect()
    }

    /// Wait until smtp-sink holds at least `n` messages.
    pub fn wait_for_sink(&self, n: usize, deadline: Duration) -> Vec<SinkMessage> {
        let end = Instant::now() + deadline;
        loop {
            let m = self.sink_messages();
            if m.len() >= n || Instant::now() > end {
                return m;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// Parse smtp-sink's dump: its X-* records, its Received header, then the data.
fn parse_sink_dump(path: &Path) -> Option<SinkMessage> {
    let text = fs::read_to_string(path).ok()?;
    let mut mail_from = String::new();
    let mut rcpt_to = Vec::new();
    let mut lines = text.split_inclusive('\n');
    let mut rest_start = 0usize;
    let mut in_received = false;
    for line in lines.by_ref() {
        let l = line.trim_end_matches('\n');
        if let Some(v) = l.strip_prefix("X-Mail-Args: ") {
            mail_from = v.to_string();
        } else if let Some(v) = l.strip_prefix("X-Rcpt-Args: ") {
            rcpt_to.push(v.to_string());
        } else if l.starts_with("X-") {
        } else if l.starts_with("Received: ") {
            in_received = true;
        } else if in_received && (l.starts_with(' ') || l.starts_with('\t')) {
        } else {
            break;
        }
        rest_start += line.len();
    }
    let data = text[rest_start..].to_string();
    // smtp-sink appends an empty line after the message.
    let data = data.strip_suffix('\n').unwrap_or(&data).to_string();
    Some(SinkMessage {
        mail_from,
        rcpt_to,
        data,
    })
}

/// Stop a child we started: SIGTERM by PID (so a server can stop its own
/// children), wait up to `grace`, then SIGKILL; reaped either way.
pub fn terminate(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        for child in [&mut self.dovecot, &mut self.smtp_sink] {
            terminate(child, Duration::from_secs(5));
        }
    }
}

/// A blocking stream to `addr` from a socket `setup` configures first
/// (source address, buffer sizes: what std cannot set before connecting).
pub fn connect_with(addr: SocketAddr, setup: impl FnOnce(&tokio::net::TcpSocket)) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .expect("socket");
        setup(&socket);
        let s = tokio::time::timeout(Duration::from_secs(5), socket.connect(addr))
            .await
            .expect("connect within 5 s")
            .expect("connect");
        s.into_std().unwrap()
    });
    s.set_nonblocking(false).unwrap();
    s
}

/// A minimal line-oriented client for tests (SMTP or IMAP, plaintext).
pub struct LineClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineClient {
    pub fn connect(addr: SocketAddr) -> LineClient {
        LineClient::from_stream(
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect"),
        )
    }

    /// Connect from the local address `source` (any of 127.0.0.0/8 works
    /// on Linux: the whole block is routed to lo), so a server can tell
    /// this client from others on 127.0.0.1.
    pub fn connect_from(source: IpAddr, addr: SocketAddr) -> LineClient {
        LineClient::from_stream(connect_with(addr, |socket| {
            socket
                .bind(SocketAddr::new(source, 0))
                .unwrap_or_else(|e| panic!("bind {source}: {e}"));
        }))
    }

    pub fn from_stream(s: TcpStream) -> LineClient {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        LineClient {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// This end's address (the client's source address and port).
    pub fn local_addr(&self) -> SocketAddr {
        self.writer.local_addr().unwrap()
    }

    /// Everything until the server closes (at most 20 s of waiting).
    pub fn rest(&mut self) -> String {
        let mut v = Vec::new();
        let _ = self.reader.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    }

    /// Read one line (with its CRLF); "" at end of stream.
    pub fn line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).expect("read a line");
        l
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// The socket (for tests that write from another thread).
    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }

    /// SMTP: read the greeting, EHLO, AUTH PLAIN as a test user (asserting
    /// 235); the EHLO reply's lines.
    pub fn smtp_login(&mut self, login: &str) -> Vec<String> {
        use base64::Engine as _;
        let greeting = self.smtp_reply();
        assert!(greeting[0].starts_with("220"), "{greeting:?}");
        self.send(b"EHLO client.example\r\n");
        let ehlo = self.smtp_reply();
        let creds = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{login}\0{}", password(login)));
        self.send(format!("AUTH PLAIN {creds}\r\n").as_bytes());
        let r = self.smtp_reply();
        assert!(r[0].starts_with("235"), "{r:?}");
        ehlo
    }

    /// SMTP: read a (multi-line) reply, return its lines.
    pub fn smtp_reply(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let l = self.line();
            assert!(!l.is_empty(), "connection closed; got {out:?}");
            let last = l.as_bytes().get(3) != Some(&b'-');
            out.push(l);
            if last {
                return out;
            }
        }
    }

    /// IMAP: read until the tagged response for `tag`, return every line.
    pub fn imap_until(&mut self, tag: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let l = self.line();
            assert!(!l.is_empty(), "connection closed; got {out:?}");
            let done = l.starts_with(&format!("{tag} "));
            out.push(l);
            if done {
                return out;
            }
        }
    }
}
