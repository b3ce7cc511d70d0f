//! mailshare's IMAP proxy in front of the test Dovecot: in-process through
//! the library seam ([`Proxied`], store and gateway at hand), or as the
//! `mailshare serve` binary with a temporary config ([`Binary`], for memory
//! measurements). Plus small blocking clients and a Python runner. Every
//! wait has a deadline; every child is stopped by PID.
#![allow(dead_code)]

use crate::support::upstreams::{free_port, UpstreamOptions, Upstreams};
use mailshare::config::{Config, Limits, Listener, ProxyConfig, TlsMode, Upstream};
use mailshare::engine::{self, Record};
use mailshare::gateway::Gateway;
use mailshare::imap::Proxy;
use mailshare::metrics::Metrics;
use mailshare::net::listener::IpLimiter;
use mailshare::net::tls::ServerTls;
use mailshare::shutdown::{Drain, ShutdownTrigger};
use mailshare::store::{SledStore, Store, StoreOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// How to start the proxy.
#[derive(Clone)]
pub struct Options {
    pub upstream_tls: TlsMode,
    pub limits: Limits,
    /// Extra dovecot.conf lines.
    pub dovecot: String,
    /// Point the proxy at this address instead of Dovecot.
    pub upstream_address: Option<String>,
    /// Enable TLS in Dovecot (IMAPS, STARTTLS) even when the proxy talks to
    /// it in plaintext (to compare with Dovecot's own TLS).
    pub dovecot_tls: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            upstream_tls: TlsMode::None,
            limits: Limits::default(),
            dovecot: String::new(),
            upstream_address: None,
            dovecot_tls: false,
        }
    }
}

/// Dovecot plus the proxy in this process, with one listener of each kind.
pub struct Proxied {
    pub up: Upstreams,
    pub gateway: Arc<Gateway>,
    /// `tls = "none"`, plaintext login allowed.
    pub plain: SocketAddr,
    /// `tls = "starttls"`, login only after STARTTLS.
    pub starttls: SocketAddr,
    /// `tls = "implicit"`.
    pub implicit: SocketAddr,
    trigger: ShutdownTrigger,
    rt: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl Proxied {
    pub fn start(options: Options) -> Proxied {
        let up = Upstreams::start_with_config(
            UpstreamOptions {
                tls: options.dovecot_tls || options.upstream_tls != TlsMode::None,
            },
            &options.dovecot,
        );
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SledStore::open(
                &dir.path().join("store"),
                StoreOptions {
                    cache_capacity_bytes: 16 << 20,
                    max_batch_delay: Duration::from_millis(2),
                },
            )
            .unwrap(),
        );
        let policy_path = repo().join("config/policy.toml");
        let policy = mailshare::config::load_policy(&policy_path).expect("example policy");
        let upstream_addr = match (&options.upstream_address, options.upstream_tls) {
            (Some(a), _) => a.clone(),
            (None, TlsMode::Implicit) => up.imaps.to_string(),
            (None, _) => up.imap.to_string(),
        };
        let listener = |tls, plain| Listener {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls,
            allow_plaintext_auth: plain,
            proxy_protocol: false,
        };
        let imap = ProxyConfig {
            upstream: Upstream {
                address: upstream_addr.clone(),
                host: "127.0.0.1".into(),
                port: upstream_addr.rsplit(':').next().unwrap().parse().unwrap(),
                tls: options.upstream_tls,
                ca_file: Some(repo().join("config/tls/cert.pem")),
                connect_timeout_secs: 5,
                timeout_secs: 30,
            },
            listeners: vec![
                listener(TlsMode::None, true),
                listener(TlsMode::Starttls, false),
                listener(TlsMode::Implicit, false),
            ],
        };
        let config = Config {
            imap: Some(imap.clone()),
            limits: options.limits,
            ..Config::default()
        };
        let gateway = Arc::new(Gateway::new(
            store,
            policy,
            policy_path,
            Arc::new(config),
            Arc::new(Metrics::new()),
        ));
        let tls = Arc::new(
            ServerTls::load(
                &repo().join("config/tls/cert.pem"),
                &repo().join("config/tls/key.pem"),
            )
            .unwrap(),
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (trigger, shutdown) = mailshare::shutdown::channel();
        let limiter = IpLimiter::new(
            usize::try_from(options.limits.max_connections_per_ip).unwrap_or(usize::MAX),
        );
        let addrs = rt.block_on(async {
            let proxy = Proxy::new(gateway.clone(), Some(tls), &imap, shutdown).unwrap();
            let mut addrs = Vec::new();
            for l in &imap.listeners {
                let listener = tokio::net::TcpListener::bind(l.listen).await.unwrap();
                addrs.push(listener.local_addr().unwrap());
                tokio::spawn(proxy.serve(listener, l.clone(), Drain::new(), limiter.clone()));
            }
            addrs
        });
        Proxied {
            up,
            gateway,
            plain: addrs[0],
            starttls: addrs[1],
            implicit: addrs[2],
            trigger,
            rt: Some(rt),
            _dir: dir,
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.gateway.store.as_ref()
    }

    /// SIGTERM's first step: sessions say BYE at their next safe point.
    pub fn shutdown(&self) {
        self.trigger.fire();
    }

    /// The record of a Message-ID (without brackets), once captured.
    pub fn wait_for_record(&self, message_id: &str, deadline: Duration) -> Option<Record> {
        let id = engine::message_key(message_id);
        let end = Instant::now() + deadline;
        loop {
            if let Some(r) = self.store().message(&id).unwrap() {
                return Some(r);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The sum of a metric's samples whose labels contain all `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.gateway.metrics.render(), name, labels)
    }
}

impl Drop for Proxied {
    fn drop(&mut self) {
        self.trigger.fire();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// Sum of the samples of `name` in a Prometheus text exposition whose
/// labels include every pair in `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A raw IMAP client: lines and literals, deadlines on every read.
pub struct Raw {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_nodelay(true).unwrap();
        Raw {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    /// Connect and read the greeting.
    pub fn greeted(addr: SocketAddr) -> Raw {
        let mut c = Raw::connect(addr);
        let g = c.line();
        assert!(g.starts_with("* OK"), "greeting: {g}");
        c
    }

    /// Connect, LOGIN as `user` (plaintext listener), return the client.
    pub fn login(addr: SocketAddr, user: &str) -> Raw {
        let mut c = Raw::greeted(addr);
        let pw = crate::support::upstreams::password(user);
        c.send(format!("L LOGIN {user} {pw}\r\n").as_bytes());
        let r = c.until("L");
        assert!(r.last().unwrap().starts_with("L OK"), "login: {r:?}");
        c
    }

    pub fn send(&mut self, b: &[u8]) {
        self.w.write_all(b).expect("write");
    }

    /// One line, CRLF included ("" at end of stream).
    pub fn line(&mut self) -> String {
        let mut v = Vec::new();
        self.r.read_until(b'\n', &mut v).expect("read a line");
        String::from_utf8_lossy(&v).into_owned()
    }

    /// Lines (literals read as raw bytes into the text) until `tag`'s
    /// tagged response.
    pub fn until(&mut self, tag: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let l = self.line();
            assert!(!l.is_empty(), "closed; got {out:?}");
            if let Some(n) = literal_size(&l) {
                let mut lit = vec![0u8; n];
                self.r.read_exact(&mut lit).expect("literal");
                out.push(format!("{l}{}", String::from_utf8_lossy(&lit)));
                continue;
            }
            let done = l.starts_with(&format!("{tag} "));
            out.push(l);
            if done {
                return out;
            }
        }
    }

    /// Everything until the server closes.
    pub fn rest(&mut self) -> String {
        let mut v = Vec::new();
        let _ = self.r.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    }
}

/// The size of a literal announced at the end of `line`.
pub fn literal_size(line: &str) -> Option<usize> {
    let l = line.trim_end_matches("\r\n").trim_end_matches('\n');
    let l = l.strip_suffix('}')?;
    let open = l.rfind('{')?;
    l[open + 1..].trim_end_matches('+').parse().ok()
}

/// Run a Python 3 script with arguments under a deadline; its stdout.
pub fn python(script: &str, args: &[String], deadline: Duration) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.py");
    std::fs::write(&path, script).unwrap();
    let child = Command::new("python3")
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/install-deps)");
    let out = wait_output(child, deadline, "python3");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Wait for a child with a deadline (killed and failed past it).
pub fn wait_output(mut child: Child, deadline: Duration, what: &str) -> std::process::Output {
    let end = Instant::now() + deadline;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{what} did not finish within {deadline:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// APPEND messages directly to Dovecot (no proxy), LITERAL+.
pub fn append_direct(up: &Upstreams, user: &str, mailbox: &str, messages: &[Vec<u8>]) {
    let mut c = Raw::greeted(up.imap);
    let pw = crate::support::upstreams::password(user);
    c.send(format!("L LOGIN {user} {pw}\r\n").as_bytes());
    assert!(c.until("L").last().unwrap().starts_with("L OK"));
    for (i, m) in messages.iter().enumerate() {
        let mut cmd = format!("A{i} APPEND {mailbox} {{{}+}}\r\n", m.len()).into_bytes();
        cmd.extend_from_slice(m);
        cmd.extend_from_slice(b"\r\n");
        c.send(&cmd);
        if i % 64 == 63 || i + 1 == messages.len() {
            // Collect the responses so far (pipelined).
            for j in (i + 1 - (i % 64 + 1))..=i {
                let r = c.until(&format!("A{j}"));
                assert!(r.last().unwrap().starts_with(&format!("A{j} OK")), "{r:?}");
            }
        }
    }
    c.send(b"Z LOGOUT\r\n");
}

/// `mailshare serve` with a temporary config in front of `up`.
pub struct Binary {
    pub child: Child,
    pub plain: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Binary {
    /// `limits`: extra `[limits]` lines.
    pub fn start(up: &Upstreams, limits: &str) -> Binary {
        Binary::start_logged(up, limits, "warn")
    }

    /// Like [`Binary::start`], logging at `level` to [`Binary::log_path`].
    pub fn start_logged(up: &Upstreams, limits: &str, level: &str) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::copy(
            repo().join("config/policy.toml"),
            dir.path().join("policy.toml"),
        )
        .unwrap();
        let config = format!(
            r#"[store]
path = "store"
[policy]
path = "policy.toml"
[tls]
cert_file = "{cert}"
key_file = "{key}"
[imap.upstream]
address = "{up}"
tls = "none"
[[imap.listeners]]
listen = "127.0.0.1:{port}"
tls = "none"
allow_plaintext_auth = true
[limits]
{limits}
[log]
level = "{level}"
format = "human"
"#,
            cert = repo().join("config/tls/cert.pem").display(),
            key = repo().join("config/tls/key.pem").display(),
            up = up.imap,
        );
        let path = dir.path().join("mailshare.toml");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("mailshare.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mailshare"))
            .arg("serve")
            .arg("-c")
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mailshare serve");
        let plain: SocketAddr = ([127, 0, 0, 1], port).into();
        assert!(
            crate::support::upstreams::wait_for_greeting(plain, "* OK", Duration::from_secs(30)),
            "mailshare serve did not come up"
        );
        Binary { child, plain, dir }
    }

    /// Where the process logs (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mailshare.log")
    }

    /// (VmRSS, VmHWM) in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        proc_memory(self.child.id())
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        crate::support::upstreams::terminate(&mut self.child, Duration::from_secs(40));
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// (VmRSS, VmHWM) of a process in KiB.
pub fn proc_memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Files directly inside a maildir's cur/ and new/, as contents.
pub fn maildir_contents(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for sub in ["cur", "new"] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            for e in rd.flatten() {
                out.push(std::fs::read(e.path()).unwrap());
            }
        }
    }
    out.sort();
    out
}
