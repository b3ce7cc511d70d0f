//! Shared integration-test support: real upstream servers (`upstreams`),
//! mailshare in-process or as a binary (`server`), per-test deadlines,
//! and the admin API tests' store filler and HTTP client (below).
//! Include with `mod support;` from a test crate.
#![allow(dead_code)]

pub mod haproxy;
pub mod server;
pub mod upstreams;

/// Fails the whole test binary if a test runs past `secs` (a hang must never
/// stall the suite). Dropping the guard disarms it.
pub struct Deadline(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Deadline {
    pub fn new(name: &'static str, secs: u64) -> Deadline {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        std::thread::spawn(move || {
            let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
            while std::time::Instant::now() < end {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            eprintln!("test {name} exceeded its {secs} s deadline");
            kill_children();
            std::process::exit(101);
        });
        Deadline(done)
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// SIGTERM every direct child process (Dovecot's master stops its own), so
/// a test killed by its deadline leaves nothing running.
fn kill_children() {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in dir.flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid == Some(me.as_str()) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status();
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
}

// ---- admin API test helpers ------------------------------------------------

use ::mailshare::admin::{self, AdminState};
use ::mailshare::config::{AdminConfig, Config};
use ::mailshare::engine::Direction;
use ::mailshare::gateway::Gateway;
use ::mailshare::ingest::{self, IngestOutcome, IngestRequest};
use ::mailshare::metrics::Metrics;
use ::mailshare::shutdown::{self, ShutdownTrigger};
use ::mailshare::store::{Durability, SledStore, StoreOptions};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The token of a user in the test policies: `tok-<local part>`.
pub fn token(user: &str) -> String {
    format!("tok-{}", user.split('@').next().unwrap())
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// One message to capture: its owner, direction and raw bytes.
#[derive(Clone, Debug)]
pub struct Capture {
    pub owner: &'static str,
    pub direction: Direction,
    pub raw: String,
}

/// A raw RFC 5322 message with a text body and optional extras.
pub struct Eml {
    pub message_id: String,
    pub date: &'static str,
    pub from: String,
    pub to: String,
    pub cc: Option<String>,
    pub bcc: Option<String>,
    pub subject: String,
    pub body: String,
    pub in_reply_to: Option<String>,
    pub share: Option<&'static str>,
    /// (file name, content)
    pub attachment: Option<(String, String)>,
}

impl Eml {
    pub fn new(
        message_id: &str,
        date: &'static str,
        from: &str,
        to: &str,
        subject: &str,
        body: &str,
    ) -> Eml {
        Eml {
            message_id: message_id.into(),
            date,
            from: from.into(),
            to: to.into(),
            cc: None,
            bcc: None,
            subject: subject.into(),
            body: body.into(),
            in_reply_to: None,
            share: None,
            attachment: None,
        }
    }

    pub fn render(&self) -> String {
        let mut h = format!(
            "Message-ID: <{}>\r\nDate: {}\r\nFrom: {}\r\nTo: {}\r\nSubject: {}\r\nMIME-Version: 1.0\r\n",
            self.message_id, self.date, self.from, self.to, self.subject
        );
        if let Some(cc) = &self.cc {
            h.push_str(&format!("Cc: {cc}\r\n"));
        }
        if let Some(bcc) = &self.bcc {
            h.push_str(&format!("Bcc: {bcc}\r\n"));
        }
        if let Some(p) = &self.in_reply_to {
            h.push_str(&format!("In-Reply-To: <{p}>\r\nReferences: <{p}>\r\n"));
        }
        if let Some(s) = self.share {
            h.push_str(&format!("X-Mailshare-Share: {s}\r\n"));
        }
        match &self.attachment {
            None => {
                h.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
                h.push_str(&self.body);
                h.push_str("\r\n");
            }
            Some((name, content)) => {
                h.push_str("Content-Type: multipart/mixed; boundary=\"BOUNDARY\"\r\n\r\n");
                h.push_str("--BOUNDARY\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
                h.push_str(&self.body);
                h.push_str("\r\n--BOUNDARY\r\n");
                h.push_str(&format!(
                    "Content-Type: text/plain; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\n{content}\r\n"
                ));
                h.push_str("--BOUNDARY--\r\n");
            }
        }
        h
    }
}

/// A running server over its own temporary store.
pub struct Server {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Capture `mails` under `capture_policy`, then serve the API under
    /// `read_policy` (what changed in between shows read-time rules).
    pub async fn start(capture_policy: &str, read_policy: &str, mails: &[Capture]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = Path::new("policy.toml");
        let p0 = ::mailshare::config::parse_policy(path, capture_policy).expect("capture policy");
        let p1 = ::mailshare::config::parse_policy(path, read_policy).expect("read policy");
        let store = SledStore::open(&dir.path().join("store"), StoreOptions::default()).unwrap();
        for m in mails {
            let req = IngestRequest {
                owner: m.owner,
                direction: m.direction,
                envelope_recipients: &[],
                now: 1_790_000_000,
                max_capture_bytes: 1 << 20,
                durability: Durability::Wait,
            };
            let out = ingest::ingest(&store, &p0, m.raw.as_bytes(), &req).expect("ingest");
            if std::env::var_os("SUPPORT_DEBUG").is_some() {
                eprintln!("{} {:?}: {out}", m.owner, m.direction);
            }
            let _: IngestOutcome = out;
        }
        let config = Config {
            admin: Some(AdminConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                admin_tokens_sha256: vec![Sha256::digest(ADMIN_TOKEN.as_bytes()).into()],
            }),
            ..Config::default()
        };
        let gateway = Arc::new(Gateway::new(
            Arc::new(store),
            p1,
            dir.path().join("policy.toml"),
            Arc::new(config),
            Arc::new(Metrics::new()),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AdminState::new(gateway.clone()).unwrap();
        let (trigger, shutdown) = shutdown::channel();
        let task = tokio::spawn(async move {
            admin::serve(listener, state, shutdown).await.unwrap();
        });
        Server {
            addr,
            gateway,
            trigger,
            task,
            _dir: dir,
        }
    }

    /// GET with a token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        call(self.addr, "GET", path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &str) -> Resp {
        call(self.addr, "POST", path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        call(self.addr, "DELETE", path, token, None).await
    }

    /// Fire shutdown and wait for the server to stop.
    pub async fn stop(self) {
        self.trigger.fire();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops after shutdown")
            .unwrap();
    }
}

/// A response: status, headers (lowercase names), body.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.text()))
    }

    /// Asserts a JSON error body `{"error", "code"}` with this status; returns the code.
    pub fn error_code(&self, status: u16) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        self.error().1
    }

    /// `(status, code)` of a JSON error body `{"error", "code"}` (asserted).
    pub fn error(&self) -> (u16, String) {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "error bodies are JSON: {}",
            self.text()
        );
        let v = self.json();
        let obj = v.as_object().expect("error is an object");
        assert_eq!(obj.len(), 2, "only error and code: {v}");
        assert!(obj["error"].is_string(), "{v}");
        (
            self.status,
            obj["code"].as_str().expect("code is a string").to_string(),
        )
    }
}

/// One request over a fresh connection (`Connection: close`).
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Resp {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    match body {
        Some(b) => req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => req.push_str("\r\n"),
    }
    raw(addr, req.as_bytes()).await
}

/// Send raw bytes, read the whole response (the server closes).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Resp {
    let work = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        // A reset after the response (request body left unread) is fine.
        let _ = s.read_to_end(&mut buf).await;
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .expect("response within 20 s");
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Resp {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head = std::str::from_utf8(&buf[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let mut body = buf[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                .unwrap();
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    } else if let Some((_, len)) = headers.iter().find(|(n, _)| n == "content-length") {
        body.truncate(len.parse().unwrap());
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// Percent-encode a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
