//! `mailshare serve` with an `[admin]` section: the API answers on the
//! configured address with the demo tokens, SIGTERM stops it cleanly, and a
//! port already taken is an error before "mailshare ready". Every child
//! runs under a deadline.

use std::fs;
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Serve(Child);
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A config with only the store, the demo policy and `[admin]` on `listen`.
fn config(tmp: &Path, listen: SocketAddr) -> PathBuf {
    fs::copy(root().join("config/policy.toml"), tmp.join("policy.toml")).unwrap();
    let cfg = tmp.join("mailshare.toml");
    fs::write(
        &cfg,
        format!(
            "[store]\npath = \"store\"\n[policy]\npath = \"policy.toml\"\n[admin]\nlisten = \"{listen}\"\n\
             admin_tokens_sha256 = [\"cce7a2cf1ae045989cfc914fb95a41526f167a838b3c7d33745143614abace7c\"]\n\
             [log]\nformat = \"human\"\n"
        ),
    )
    .unwrap();
    cfg
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn spawn(cfg: &Path) -> (Serve, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailshare"))
        .args(["serve", "-c"])
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Serve(child), rx)
}

/// Wait for a log line containing `needle`; all lines seen so far.
fn wait_for(rx: &mpsc::Receiver<String>, needle: &str) -> Result<Vec<String>, Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let hit = line.contains(needle);
                seen.push(line);
                if hit {
                    return Ok(seen);
                }
            }
            Err(_) => return Err(seen),
        }
    }
}

fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf.split(' ').nth(1).unwrap().parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn wait_exit(serve: &mut Serve) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = serve.0.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "serve did not stop within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_answers_the_api_with_the_demo_tokens_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let cfg = config(tmp.path(), addr);
    let (mut serve, rx) = spawn(&cfg);
    let lines = wait_for(&rx, "mailshare ready").unwrap_or_else(|l| panic!("never ready: {l:#?}"));
    assert!(
        lines.iter().any(|l| l.contains("admin API listening")),
        "{lines:#?}"
    );
    assert_eq!(get(addr, "/healthz", None).0, 200);
    assert_eq!(get(addr, "/readyz", None).0, 200);
    let (status, body) = get(addr, "/api/v1/contacts", Some("demo-alice"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Client A Ltd"), "{body}");
    assert_eq!(get(addr, "/api/v1/contacts", None).0, 401);
    // Dave has left (status = "removed" in the demo policy).
    assert_eq!(get(addr, "/api/v1/contacts", Some("demo-dave")).0, 401);
    let (status, _) = get(
        addr,
        "/api/v1/contacts?as=bob%40acme.example",
        Some("demo-admin"),
    );
    assert_eq!(status, 200);
    let status = Command::new("kill")
        .args(["-TERM", &serve.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(wait_exit(&mut serve).success());
    assert!(
        TcpStream::connect(addr).is_err(),
        "the port is closed after exit"
    );
}

#[test]
fn a_taken_admin_port_fails_before_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = config(tmp.path(), taken.local_addr().unwrap());
    let (mut serve, rx) = spawn(&cfg);
    let st = wait_exit(&mut serve);
    assert!(!st.success());
    // Every line, until the reader sees the pipe close.
    let mut lines = Vec::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(10)) {
        lines.push(l);
    }
    let all = lines.join("\n");
    assert!(all.contains("binding the admin API"), "{all}");
    assert!(!all.contains("mailshare ready"), "{all}");
}
