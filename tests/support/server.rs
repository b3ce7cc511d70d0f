//! mailshare itself for integration tests: a configuration written to a
//! temporary directory (store, spool, policy from `config/policy.toml`, the
//! demo certificate), started either in-process through the library seam
//! (`smtp::Relay::new` + `smtp::serve` on `127.0.0.1:0`, as `app::serve`
//! does) or as the `mailshare` binary. Both stop when dropped; nothing can
//! outlive the test.

#![allow(dead_code)]

use mailshare::gateway::Gateway;
use mailshare::metrics::Metrics;
use mailshare::net::listener::{IpLimiter, ListenerOptions};
use mailshare::net::tls::ServerTls;
use mailshare::shutdown::{Drain, ShutdownTrigger};
use mailshare::store::{SledStore, Store, StoreOptions};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn cert() -> PathBuf {
    repo().join("config/tls/cert.pem")
}

/// One `[[smtp.listeners]]` or `[[imap.listeners]]`.
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    /// `starttls`, `implicit` or `none`.
    pub tls: &'static str,
    pub allow_plaintext_auth: bool,
    /// Expect a PROXY v1/v2 header from a load balancer.
    pub proxy_protocol: bool,
}

impl ListenerSpec {
    pub fn starttls() -> Self {
        ListenerSpec {
            tls: "starttls",
            allow_plaintext_auth: false,
            proxy_protocol: false,
        }
    }
    pub fn implicit() -> Self {
        ListenerSpec {
            tls: "implicit",
            allow_plaintext_auth: false,
            proxy_protocol: false,
        }
    }
    /// Plaintext with AUTH allowed (loopback tests of the protocol itself).
    pub fn plain() -> Self {
        ListenerSpec {
            tls: "none",
            allow_plaintext_auth: true,
            proxy_protocol: false,
        }
    }
    /// The same behind a PROXY-protocol load balancer.
    pub fn proxied(mut self) -> Self {
        self.proxy_protocol = true;
        self
    }
}

/// What to write into mailshare.toml.
#[derive(Clone, Debug)]
pub struct Spec {
    pub upstream: SocketAddr,
    /// `none`, `starttls` or `implicit` (verified against the demo cert).
    pub upstream_tls: &'static str,
    pub upstream_timeout_secs: u64,
    pub listeners: Vec<ListenerSpec>,
    /// `[imap]` in front of this upstream (plaintext) with these listeners
    /// (`ListenerSpec::tls` is the listener's mode). Binary only.
    pub imap: Option<(SocketAddr, Vec<ListenerSpec>)>,
    /// `[admin]` on a free port (`/metrics`). Binary only.
    pub admin: bool,
    /// `[admin]` on a free port, accepting this admin token (implies
    /// `admin`). Binary only.
    pub admin_token: Option<&'static str>,
    /// Extra `[limits]` lines, e.g. `smtp_bare_lf = "normalize"`.
    pub limits: Vec<String>,
    pub log_level: &'static str,
    /// Policy text written as `policy.toml` next to the config (rewrite it
    /// and SIGHUP to reload); default: the repository's demo policy.
    pub policy: Option<String>,
    /// `[tls]` certificate and key files; default: the demo pair.
    pub tls_files: Option<(PathBuf, PathBuf)>,
}

impl Spec {
    pub fn new(upstream: SocketAddr, listeners: Vec<ListenerSpec>) -> Spec {
        Spec {
            upstream,
            upstream_tls: "none",
            upstream_timeout_secs: 30,
            listeners,
            imap: None,
            admin: false,
            admin_token: None,
            limits: Vec::new(),
            log_level: "debug",
            policy: None,
            tls_files: None,
        }
    }

    pub fn limit(mut self, line: &str) -> Spec {
        self.limits.push(line.to_string());
        self
    }
}

/// Listener ports to write into the config (0: any free port, in-process).
#[derive(Clone, Debug, Default)]
pub struct Ports {
    /// In `Spec::listeners` order.
    pub smtp: Vec<u16>,
    /// In the order of `Spec::imap`'s listeners.
    pub imap: Vec<u16>,
    pub admin: Option<u16>,
}

impl Ports {
    /// Free ports for every listener `spec` asks for.
    pub fn free(spec: &Spec) -> Ports {
        let free = super::upstreams::free_port;
        Ports {
            smtp: spec.listeners.iter().map(|_| free()).collect(),
            imap: spec
                .imap
                .as_ref()
                .map_or_else(Vec::new, |(_, ls)| ls.iter().map(|_| free()).collect()),
            admin: (spec.admin || spec.admin_token.is_some()).then(free),
        }
    }
}

fn listener_lines(section: &str, port: u16, l: &ListenerSpec) -> String {
    format!(
        "\n[[{section}.listeners]]\nlisten = \"127.0.0.1:{port}\"\ntls = \"{}\"\nallow_plaintext_auth = {}\nproxy_protocol = {}\n",
        l.tls, l.allow_plaintext_auth, l.proxy_protocol
    )
}

/// Write `mailshare.toml` for `spec` into `dir` (and `policy.toml` when the
/// spec has its own policy), listeners on `ports`.
pub fn write_config(dir: &Path, spec: &Spec, ports: &Ports) -> PathBuf {
    let policy = match &spec.policy {
        Some(text) => {
            let p = dir.join("policy.toml");
            fs::write(&p, text).unwrap();
            p
        }
        None => repo().join("config/policy.toml"),
    };
    let (cert_file, key_file) = spec
        .tls_files
        .clone()
        .unwrap_or_else(|| (cert(), repo().join("config/tls/key.pem")));
    let mut t = format!(
        r#"[store]
path = "store"

[policy]
path = "{policy}"

[tls]
cert_file = "{cert}"
key_file = "{key}"

[smtp.upstream]
address = "{up}"
tls = "{up_tls}"
connect_timeout_secs = 5
timeout_secs = {timeout}
"#,
        policy = policy.display(),
        cert = cert_file.display(),
        key = key_file.display(),
        up = spec.upstream,
        up_tls = spec.upstream_tls,
        timeout = spec.upstream_timeout_secs,
    );
    if spec.upstream_tls != "none" {
        t.push_str(&format!("ca_file = \"{}\"\n", cert().display()));
    }
    for (l, port) in spec.listeners.iter().zip(&ports.smtp) {
        t.push_str(&listener_lines("smtp", *port, l));
    }
    if let Some((up, listeners)) = &spec.imap {
        t.push_str(&format!(
            "\n[imap.upstream]\naddress = \"{up}\"\ntls = \"none\"\nconnect_timeout_secs = 5\ntimeout_secs = 30\n"
        ));
        for (l, port) in listeners.iter().zip(&ports.imap) {
            t.push_str(&listener_lines("imap", *port, l));
        }
    }
    if let Some(port) = ports.admin {
        t.push_str(&format!("\n[admin]\nlisten = \"127.0.0.1:{port}\"\n"));
        if let Some(token) = spec.admin_token {
            t.push_str(&format!(
                "admin_tokens_sha256 = [\"{}\"]\n",
                super::sha256_hex(token)
            ));
        }
    }
    t.push_str("\n[limits]\n");
    // Generous connection limits unless the spec sets its own.
    for default in [
        "max_connections_per_ip = 512",
        "max_connections_per_listener = 1024",
    ] {
        let key = default.split(' ').next().unwrap();
        if !spec.limits.iter().any(|l| l.split(' ').next() == Some(key)) {
            t.push_str(default);
            t.push('\n');
        }
    }
    for line in &spec.limits {
        t.push_str(line);
        t.push('\n');
    }
    t.push_str(&format!(
        "\n[log]\nlevel = \"{}\"\nformat = \"json\"\n",
        spec.log_level
    ));
    let path = dir.join("mailshare.toml");
    fs::write(&path, t).unwrap();
    path
}

/// mailshare in this process.
pub struct InProcess {
    pub dir: tempfile::TempDir,
    /// Listener addresses, in `Spec::listeners` order.
    pub addrs: Vec<SocketAddr>,
    pub gateway: Arc<Gateway>,
    trigger: Option<ShutdownTrigger>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    pub fn start(spec: &Spec) -> InProcess {
        let dir = tempfile::Builder::new()
            .prefix("mailshare-test.")
            .tempdir()
            .unwrap();
        assert!(
            spec.imap.is_none() && !spec.admin && spec.admin_token.is_none(),
            "InProcess runs the SMTP relay only; use Binary"
        );
        let ports = Ports {
            smtp: vec![0u16; spec.listeners.len()],
            ..Ports::default()
        };
        let config_path = write_config(dir.path(), spec, &ports);
        let loaded = mailshare::config::load(&config_path).unwrap_or_else(|d| {
            panic!(
                "test config invalid: {:?}",
                d.iter().map(ToString::to_string).collect::<Vec<_>>()
            )
        });
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(&loaded.config.store.path, StoreOptions::default()).unwrap());
        let tls = loaded
            .config
            .tls
            .as_ref()
            .map(|t| Arc::new(ServerTls::load(&t.cert_file, &t.key_file).unwrap()));
        let config = Arc::new(loaded.config);
        let gateway = Arc::new(Gateway::new(
            store,
            loaded.policy,
            loaded.policy_path,
            config.clone(),
            Arc::new(Metrics::new()),
        ));
        let (trigger, shutdown) = mailshare::shutdown::channel();
        let (tx, rx) = std::sync::mpsc::channel();
        let gw = gateway.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let smtp = config.smtp.as_ref().expect("[smtp] configured");
                let relay = mailshare::smtp::Relay::new(gw.clone(), tls, smtp).unwrap();
                let drain = Drain::new();
                let limits = config.limits;
                let ip = IpLimiter::new(limits.max_connections_per_ip as usize);
                let mut addrs = Vec::new();
                for l in &smtp.listeners {
                    let tcp = tokio::net::TcpListener::bind(l.listen).await.unwrap();
                    addrs.push(tcp.local_addr().unwrap());
                    let mut options = ListenerOptions::new(
                        "smtp",
                        &format!("smtp:{}", l.tls),
                        limits.max_connections_per_listener as usize,
                        ip.clone(),
                        drain.clone(),
                        gw.metrics.connections_refused.clone(),
                    );
                    options.proxy_protocol = l.proxy_protocol;
                    tokio::spawn(mailshare::smtp::serve(
                        relay.clone(),
                        tcp,
                        l.clone(),
                        options,
                        shutdown.clone(),
                    ));
                }
                tx.send(addrs).unwrap();
                let mut s = shutdown.clone();
                s.fired().await;
                let _ = tokio::time::timeout(Duration::from_secs(10), drain.wait_idle()).await;
            });
            rt.shutdown_timeout(Duration::from_secs(2));
        });
        let addrs = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("listeners bound");
        InProcess {
            dir,
            addrs,
            gateway,
            trigger: Some(trigger),
            thread: Some(thread),
        }
    }

    /// SIGTERM's path: stop accepting, sessions say 421 at a safe point.
    pub fn fire_shutdown(&self) {
        if let Some(t) = &self.trigger {
            t.fire();
        }
    }

    /// Shut down and release the store; the directory (config, store,
    /// spool) is handed back for a later step.
    pub fn stop(mut self) -> tempfile::TempDir {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// The Prometheus text of this gateway's registry.
    pub fn metrics(&self) -> String {
        self.gateway.metrics.render()
    }

    /// The value of one sample, e.g. `mailshare_smtp_rejects_total{reason="nul"}` (0 if absent).
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.gateway.config.store.spool_path.clone()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `mailshare serve` binary as a child process.
pub struct Binary {
    pub dir: tempfile::TempDir,
    /// SMTP listeners, in `Spec::listeners` order.
    pub addrs: Vec<SocketAddr>,
    /// IMAP listeners, in the order of `Spec::imap`'s.
    pub imap_addrs: Vec<SocketAddr>,
    /// The admin API, when the spec has an admin token.
    pub admin: Option<SocketAddr>,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Child,
}

impl Binary {
    /// Start with extra environment (e.g. `RUST_LOG`); waits for "mailshare ready".
    pub fn start(spec: &Spec, env: &[(&str, &str)]) -> Binary {
        let dir = tempfile::Builder::new()
            .prefix("mailshare-bin.")
            .tempdir()
            .unwrap();
        let ports = Ports::free(spec);
        let config = write_config(dir.path(), spec, &ports);
        let log = dir.path().join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailshare"));
        cmd.arg("serve")
            .arg("-c")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn mailshare serve");
        let local = |p: &u16| SocketAddr::from(([127, 0, 0, 1], *p));
        let mut b = Binary {
            addrs: ports.smtp.iter().map(local).collect(),
            imap_addrs: ports.imap.iter().map(local).collect(),
            admin: ports.admin.as_ref().map(local),
            dir,
            config,
            log,
            child,
        };
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if b.log_text().contains("mailshare ready") {
                return b;
            }
            if let Ok(Some(status)) = b.child.try_wait() {
                panic!("mailshare exited ({status}): {}", b.log_text());
            }
            assert!(Instant::now() < end, "not ready: {}", b.log_text());
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log has `n` lines containing `needle`; the log text,
    /// or a panic with the log after `within`.
    pub fn wait_log(&self, needle: &str, n: usize, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            let text = self.log_text();
            if text.lines().filter(|l| l.contains(needle)).count() >= n {
                return text;
            }
            assert!(
                Instant::now() < end,
                "no {n} log line(s) with {needle:?} within {within:?}: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `policy.toml` next to the config (when the spec has a policy).
    pub fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Send a signal (`HUP`, `TERM`) by PID.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {}", self.child.id());
    }

    /// The exit status once the process has exited, or `None` after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A field of /proc/PID/status in kB (VmRSS, VmHWM).
    pub fn status_kb(&self, field: &str) -> u64 {
        let s = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM, then wait (killed after 15 s).
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        if self.wait_exit(Duration::from_secs(15)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Run a child process to completion under a deadline.
pub fn run(cmd: &mut Command, deadline: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let end = Instant::now() + deadline;
    // Drain pipes on threads so a chatty child cannot block.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}
