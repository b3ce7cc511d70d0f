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
    /// An IMAP proxy (binary only): its plaintext upstream and listeners.
    pub imap: Option<(SocketAddr, Vec<ListenerSpec>)>,
    /// An admin API listener (binary only; `/metrics`).
    pub admin: bool,
    /// Extra `[limits]` lines, e.g. `smtp_bare_lf = "normalize"`.
    pub limits: Vec<String>,
    pub log_level: &'static str,
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
            limits: Vec::new(),
            log_level: "debug",
        }
    }

    pub fn limit(mut self, line: &str) -> Spec {
        self.limits.push(line.to_string());
        self
    }
}

/// Ports for the listeners of a [`Spec`] (0: any free port).
#[derive(Clone, Debug, Default)]
pub struct Ports {
    pub smtp: Vec<u16>,
    pub imap: Vec<u16>,
    pub admin: Option<u16>,
}

fn listener_toml(section: &str, l: &ListenerSpec, port: u16) -> String {
    format!(
        "\n[[{section}.listeners]]\nlisten = \"127.0.0.1:{port}\"\ntls = \"{}\"\nallow_plaintext_auth = {}\nproxy_protocol = {}\n",
        l.tls, l.allow_plaintext_auth, l.proxy_protocol
    )
}

/// Write `mailshare.toml` for `spec` into `dir`, listeners on `ports`.
pub fn write_config(dir: &Path, spec: &Spec, ports: &Ports) -> PathBuf {
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
        policy = repo().join("config/policy.toml").display(),
        cert = cert().display(),
        key = repo().join("config/tls/key.pem").display(),
        up = spec.upstream,
        up_tls = spec.upstream_tls,
        timeout = spec.upstream_timeout_secs,
    );
    if spec.upstream_tls != "none" {
        t.push_str(&format!("ca_file = \"{}\"\n", cert().display()));
    }
    for (l, port) in spec.listeners.iter().zip(&ports.smtp) {
        t.push_str(&listener_toml("smtp", l, *port));
    }
    if let Some((upstream, listeners)) = &spec.imap {
        t.push_str(&format!(
            "\n[imap.upstream]\naddress = \"{upstream}\"\ntls = \"none\"\nconnect_timeout_secs = 5\ntimeout_secs = 30\n"
        ));
        for (l, port) in listeners.iter().zip(&ports.imap) {
            t.push_str(&listener_toml("imap", l, *port));
        }
    }
    if let Some(port) = ports.admin {
        t.push_str(&format!("\n[admin]\nlisten = \"127.0.0.1:{port}\"\n"));
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
            spec.imap.is_none() && !spec.admin,
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
    /// IMAP listeners, in `Spec::imap` order.
    pub imap_addrs: Vec<SocketAddr>,
    /// The admin API (`Spec::admin`).
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
        let free =
            |n: usize| -> Vec<u16> { (0..n).map(|_| super::upstreams::free_port()).collect() };
        let ports = Ports {
            smtp: free(spec.listeners.len()),
            imap: free(spec.imap.as_ref().map_or(0, |(_, l)| l.len())),
            admin: spec.admin.then(super::upstreams::free_port),
        };
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
        let addr = |p: &u16| -> SocketAddr { ([127, 0, 0, 1], *p).into() };
        let mut b = Binary {
            addrs: ports.smtp.iter().map(addr).collect(),
            imap_addrs: ports.imap.iter().map(addr).collect(),
            admin: ports.admin.as_ref().map(addr),
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
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
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
