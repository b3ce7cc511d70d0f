//! SMTP relay benchmark: messages/s, MB/s and latency through mailshare
//! (the release binary, capture on) versus directly to Dovecot submission,
//! in the same run, against the same upstream.
//!
//! Cells: concurrency 1 and 16 × 20 KB and 1 MB messages × long sessions
//! (one login, many messages) and one session per message. Each cell runs
//! `BENCH_SECS` seconds (default 3) per target, direct first. Clients
//! pipeline MAIL/RCPT/DATA as Thunderbird does; latency is MAIL to the final
//! 250 (long sessions) or connect to the final 250 (session per message).
//!
//! Dovecot relays to an smtp-sink that does not write messages to disk (the
//! test harness' dumping sink would dominate), on loopback; everything
//! shares the machine's cores (`BENCH_SINK_ARGS` adds smtp-sink options).
//! Run: `cargo bench --bench relay`.
//!
//! A reference runs in the same rounds unless `BENCH_REFERENCE=0`: HAProxy
//! in `mode tcp` in front of the same Dovecot, a relay that parses and
//! stores nothing (columns `ha/s`, `ha ratio`): what a second TCP hop alone
//! costs on this machine.

#[path = "support/cpu.rs"]
mod cpu;
#[path = "../tests/support/haproxy.rs"]
mod haproxy;
#[path = "../tests/support/upstreams.rs"]
mod upstreams;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// AUTH PLAIN for `BENCH_LOGIN` (default alice, captured at full; dave is
/// a removed user: relayed and decided, never stored).
fn plain_auth() -> String {
    let login = std::env::var("BENCH_LOGIN").unwrap_or_else(|_| "alice".into());
    let raw = format!("\0{login}\0pw-{login}");
    let raw = raw.as_bytes();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in raw.chunks(3) {
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

/// A text body of about `size` bytes, CRLF lines, no line starting with '.'.
fn body(size: usize) -> Vec<u8> {
    let line = b"The quick brown fox jumps over the lazy dog; figures for Q3 attached.\r\n";
    let mut b = Vec::with_capacity(size + line.len());
    while b.len() < size {
        b.extend_from_slice(line);
    }
    b
}

struct Conn {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
    line: String,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).unwrap();
        let (r, w) = s.into_split();
        let mut c = Conn {
            r: BufReader::new(r),
            w,
            line: String::new(),
        };
        c.expect("220").await;
        c.w.write_all(b"EHLO bench.example\r\n").await.unwrap();
        c.expect("250").await;
        c.w.write_all(format!("AUTH PLAIN {}\r\n", plain_auth()).as_bytes())
            .await
            .unwrap();
        c.expect("235").await;
        c
    }

    /// Read one (multi-line) reply; panic unless it has `code`.
    async fn expect(&mut self, code: &str) {
        loop {
            self.line.clear();
            let n = self.r.read_line(&mut self.line).await.expect("read");
            assert!(n > 0, "connection closed, expecting {code}");
            assert!(
                self.line.starts_with(code),
                "expected {code}, got {}",
                self.line
            );
            if self.line.as_bytes().get(3) != Some(&b'-') {
                return;
            }
        }
    }

    async fn send_message(&mut self, id: u64, body: &[u8]) {
        self.w
            .write_all(
                b"MAIL FROM:<alice@acme.example>\r\nRCPT TO:<office@client-a.example>\r\nDATA\r\n",
            )
            .await
            .unwrap();
        self.expect("250").await;
        self.expect("250").await;
        self.expect("354").await;
        let head = format!(
            "From: Alice <alice@acme.example>\r\nTo: office@client-a.example\r\nSubject: Bench {id}\r\nMessage-ID: <bench-{id}@acme.example>\r\nDate: Mon, 24 Nov 2025 10:00:00 +0000\r\n\r\n"
        );
        self.w.write_all(head.as_bytes()).await.unwrap();
        self.w.write_all(body).await.unwrap();
        self.w.write_all(b".\r\n").await.unwrap();
        self.expect("250").await;
    }
}

#[derive(Default)]
struct Outcome {
    messages: u64,
    bytes: u64,
    secs: f64,
    latencies: Vec<Duration>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl Outcome {
    fn absorb(&mut self, o: Outcome) {
        self.messages += o.messages;
        self.bytes += o.bytes;
        self.secs += o.secs;
        self.latencies.extend(o.latencies);
    }

    fn rate(&self) -> f64 {
        self.messages as f64 / self.secs
    }
    fn pct(&mut self, p: f64) -> f64 {
        self.latencies.sort();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies
            .get(i)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    }
}

async fn run_cell(
    addr: SocketAddr,
    concurrency: usize,
    size: usize,
    per_message: bool,
    secs: f64,
    id_base: u64,
) -> Outcome {
    let body = Arc::new(body(size));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            let mut conn: Option<Conn> = None;
            let mut n = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                if conn.is_none() {
                    conn = Some(Conn::open(addr).await);
                }
                let c = conn.as_mut().unwrap();
                let t = if per_message { t } else { Instant::now() };
                c.send_message(id_base + (w as u64) * 10_000_000 + n, &body)
                    .await;
                n += 1;
                out.latencies.push(t.elapsed());
                out.messages += 1;
                out.bytes += body.len() as u64;
                if per_message {
                    let mut c = conn.take().unwrap();
                    c.w.write_all(b"QUIT\r\n").await.unwrap();
                    c.expect("221").await;
                }
            }
            out
        }));
    }
    let mut total = Outcome::default();
    for t in tasks {
        let o = t.await.expect("worker");
        total.messages += o.messages;
        total.bytes += o.bytes;
        total.latencies.extend(o.latencies);
    }
    total.secs = start.elapsed().as_secs_f64();
    total
}

fn start_mailshare(dir: &std::path::Path, upstream: SocketAddr) -> (Child, SocketAddr) {
    let port = upstreams::free_port();
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // BENCH_CAPTURE=off: a policy whose only user no test login maps to, so
    // sessions are relayed without capture (the relay's own cost).
    let policy = if std::env::var("BENCH_CAPTURE").as_deref() == Ok("off") {
        let p = dir.join("policy.toml");
        std::fs::write(
            &p,
            "[organization]\nname = \"Bench\"\ninternal_domains = [\"acme.example\"]\n\n[[users]]\naddress = \"nobody@acme.example\"\n",
        )
        .unwrap();
        p
    } else {
        root.join("config/policy.toml")
    };
    let config = format!(
        r#"[store]
path = "store"
[policy]
path = "{}"
[smtp.upstream]
address = "{upstream}"
tls = "none"
[[smtp.listeners]]
listen = "127.0.0.1:{port}"
tls = "none"
allow_plaintext_auth = true
[limits]
max_connections_per_ip = 1024
group_commit_max_delay_ms = {delay}
[log]
level = "warn"
format = "json"
"#,
        policy.display(),
        delay = std::env::var("BENCH_GROUP_COMMIT_DELAY_MS").unwrap_or_else(|_| "0".into()),
    );
    let path = dir.join("mailshare.toml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mailshare"))
        .args(["serve", "-c"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("mailshare.log")).unwrap())
        .spawn()
        .expect("mailshare serve");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(
        upstreams::wait_for_greeting(addr, "220", Duration::from_secs(20)),
        "mailshare did not come up: {}",
        std::fs::read_to_string(dir.join("mailshare.log")).unwrap_or_default()
    );
    (child, addr)
}

fn stop(mut child: Child) {
    upstreams::terminate(&mut child, Duration::from_secs(10));
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // BENCH_FILTER: run only cells whose name contains it (e.g. "long c=16").
    let filter = std::env::var("BENCH_FILTER").unwrap_or_default();
    // A sink that accepts and forgets (no dump files).
    let sink_bin = upstreams::require("smtp-sink", "postfix");
    let sink_port = upstreams::free_port();
    let mut sink_cmd = Command::new(sink_bin);
    if is_root() {
        sink_cmd.args(["-u", "nobody"]);
    }
    // BENCH_SINK_ARGS: extra smtp-sink options, e.g. `-W .:1` to answer
    // each end of data after a second, as an MTA's content checks would.
    if let Ok(extra) = std::env::var("BENCH_SINK_ARGS") {
        sink_cmd.args(extra.split_whitespace());
    }
    let sink = sink_cmd
        .arg(format!("127.0.0.1:{sink_port}"))
        .arg("256")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink");
    let up = upstreams::Upstreams::start_with_config(
        Default::default(),
        &format!(
            "mail_max_userip_connections = 1000\ndefault_process_limit = 1000\ndefault_client_limit = 4000\nsubmission_relay_port = {sink_port}\n"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let (ms, proxy) = start_mailshare(dir.path(), up.submission);
    let reference = (std::env::var("BENCH_REFERENCE").as_deref() != Ok("0")).then(|| {
        haproxy::HaProxy::start(
            &[haproxy::Route {
                name: "submission",
                backend: up.submission,
                server_options: "",
                greeting: "220",
            }],
            1024,
        )
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "SMTP relay benchmark: {rounds} rounds x {secs} s per cell and target; capture {}; loopback, plaintext legs; load average {}",
        if std::env::var("BENCH_CAPTURE").as_deref() == Ok("off") { "off" } else { "on" },
        load_average()
    );
    println!(
        "{:<24} {:>9} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8}",
        "cell",
        "direct/s",
        "proxy/s",
        "ratio",
        "MB/s px",
        "p50 d ms",
        "p50 p ms",
        "p99 d ms",
        "p99 p ms",
        "cpu ms/msg",
        "ha/s",
        "ha ratio",
        "p50 h ms"
    );
    let mut id = 1u64;
    for per_message in [false, true] {
        for concurrency in [1usize, 16] {
            for size in [20 * 1024usize, 1024 * 1024] {
                let name = format!(
                    "{} c={concurrency} {}",
                    if per_message { "session/msg" } else { "long" },
                    if size > 100_000 { "1 MB" } else { "20 KB" }
                );
                if !filter.is_empty() && !name.contains(&filter) {
                    continue;
                }
                // Rounds alternate direct and proxy, so drift in the machine's
                // load (it is shared) hits both; rates are the median round.
                let (mut d, mut p, mut h) =
                    (Outcome::default(), Outcome::default(), Outcome::default());
                let (mut d_rates, mut p_rates, mut h_rates) = (Vec::new(), Vec::new(), Vec::new());
                let mut cpu = 0.0;
                // One cell against `addr`, with message ids of its own.
                let mut run = |addr: SocketAddr| {
                    let o = rt.block_on(run_cell(addr, concurrency, size, per_message, secs, id));
                    id += 1_000_000_000;
                    o
                };
                for _ in 0..rounds {
                    let o = run(up.submission);
                    d_rates.push(o.rate());
                    d.absorb(o);
                    let cpu0 = cpu::cpu_seconds(Some(ms.id()));
                    let o = run(proxy);
                    cpu += cpu::cpu_seconds(Some(ms.id())) - cpu0;
                    p_rates.push(o.rate());
                    p.absorb(o);
                    if let Some(ha) = &reference {
                        let o = run(ha.fronts[0]);
                        h_rates.push(o.rate());
                        h.absorb(o);
                    }
                }
                let (dr, pr) = (median(&mut d_rates), median(&mut p_rates));
                let hr = if h_rates.is_empty() {
                    f64::NAN
                } else {
                    median(&mut h_rates)
                };
                println!(
                    "{:<24} {:>9.1} {:>9.1} {:>6.3} {:>8.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.3} {:>9.1} {:>8.3} {:>8.2}",
                    name,
                    dr,
                    pr,
                    pr / dr,
                    pr * size as f64 / 1e6,
                    d.pct(0.5),
                    p.pct(0.5),
                    d.pct(0.99),
                    p.pct(0.99),
                    cpu * 1000.0 / p.messages.max(1) as f64,
                    hr,
                    hr / dr,
                    h.pct(0.5),
                );
                if std::env::var("BENCH_DEBUG").is_ok() {
                    eprintln!("  direct p90 {:.2} p999 {:.2} max {:.2}; proxy p90 {:.2} p999 {:.2} max {:.2}", d.pct(0.9), d.pct(0.999), d.pct(1.0), p.pct(0.9), p.pct(0.999), p.pct(1.0));
                }
            }
        }
    }
    println!("load average at the end: {}", load_average());
    drop(reference);
    stop(ms);
    let mut sink = sink;
    let _ = Command::new("kill")
        .args(["-TERM", &sink.id().to_string()])
        .status();
    let _ = sink.wait();
    let log = std::fs::read_to_string(dir.path().join("mailshare.log")).unwrap_or_default();
    let warnings = log
        .lines()
        .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
        .count();
    println!("mailshare warnings/errors logged: {warnings}");
    drop(up);
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
