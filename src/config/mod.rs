//! Configuration: `mailshare.toml` (listeners, upstreams, TLS, store, limits,
//! admin API, logging) and, through [`policy`], the policy file it names.
//!
//! The file is read into private "raw" serde structs that mirror it key for
//! key (`deny_unknown_fields`, values wrapped in [`toml::Spanned`]), then
//! validated into the public typed tree ([`Config`]) with every default filled
//! in here, in code. Validation never stops at the first problem: every
//! semantic error of both files is collected as a [`Diagnostic`] pointing at
//! the offending value, so `mailshare check` shows them all in one run. A TOML
//! syntax, type or unknown-key error stops only the file it is in.
//!
//! Relative paths in `mailshare.toml` are relative to the directory of that
//! file, not to the working directory, so `mailshare serve -c /etc/mailshare/
//! mailshare.toml` behaves the same wherever it is started from.
//!
//! Key names are part of the contract (DESIGN §4); new keys may be added,
//! existing ones are never renamed.

pub mod policy;

pub use policy::{load_policy, parse_policy};

use crate::diag::{Diagnostic, Source};
use crate::engine::Policy;
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use toml::Spanned;

/// A configuration and the policy it names, both validated.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    pub policy: Policy,
    /// The path `load` was given.
    pub config_path: PathBuf,
    /// The policy file's path, resolved against the config file's directory
    /// (what a SIGHUP reload passes to [`reload_policy`]).
    pub policy_path: PathBuf,
}

/// SIGHUP's path: re-read the policy file and check it against the running
/// configuration as `load` does at start (an admin token must not also be a
/// user's token).
///
/// # Errors
/// Every problem, as `file:line:column: message` diagnostics.
pub fn reload_policy(config: &Config, path: &Path) -> Result<Policy, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic::whole_file(
            path,
            format!("cannot read policy file: {e}"),
        )]
    })?;
    let policy = parse_policy(path, &text)?;
    let lower = text.to_ascii_lowercase();
    let diags: Vec<Diagnostic> = config
        .admin
        .iter()
        .flat_map(|admin| &admin.admin_tokens_sha256)
        .filter_map(|hash| {
            let user = policy.user_by_token_hash(hash)?;
            let offset = lower.find(&hex::encode(hash)).unwrap_or(0);
            Some(Diagnostic::at_offset(
                path,
                &text,
                offset,
                format!(
                    "token_sha256 of user {} is also an admin token hash in the configuration",
                    user.address
                ),
            ))
        })
        .collect();
    if diags.is_empty() {
        Ok(policy)
    } else {
        Err(diags)
    }
}

/// Read and validate `mailshare.toml` and the policy file it names.
///
/// # Errors
///
/// Every problem found in either file, in file order (the config file's
/// first, then the policy's), each with its position. Unreadable files and
/// TOML syntax errors stop the check of that file only: a broken policy still
/// gets the config file checked, and the reverse.
pub fn load(config_path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let text = match std::fs::read_to_string(config_path) {
        Ok(t) => t,
        Err(e) => {
            return Err(vec![Diagnostic::whole_file(
                config_path,
                format!("cannot read configuration file: {e}"),
            )])
        }
    };
    let parsed = check_config(config_path, &text);
    let mut diags = parsed.diagnostics;

    let mut policy = None;
    if let Some(policy_path) = &parsed.policy_path {
        match std::fs::read_to_string(policy_path) {
            Ok(policy_text) => match parse_policy(policy_path, &policy_text) {
                Ok(p) => policy = Some(p),
                Err(mut d) => diags.append(&mut d),
            },
            Err(e) => {
                let src = Source::new(config_path, &text);
                let message = format!("cannot read policy file {}: {e}", policy_path.display());
                diags.push(match &parsed.policy_span {
                    Some(span) => src.at(span.clone(), message),
                    None => src.at(0..0, format!("{message} (the default [policy] path)")),
                });
            }
        }
    }

    // Cross-file check: an admin token must not also be a user's token, or
    // the holder of that token would be two identities at once.
    if let (Some(config), Some(policy)) = (&parsed.config, &policy) {
        let src = Source::new(config_path, &text);
        if let Some(admin) = &config.admin {
            for (hash, span) in admin
                .admin_tokens_sha256
                .iter()
                .zip(&parsed.admin_token_spans)
            {
                if let Some(user) = policy.user_by_token_hash(hash) {
                    diags.push(src.at(
                        span.clone(),
                        format!(
                            "admin token hash is also the token_sha256 of user {} in the policy",
                            user.address
                        ),
                    ));
                }
            }
        }
    }

    // The config file's diagnostics first (the cross-file check above added
    // some after the policy's), each file's in position order.
    diags.sort_by_key(|d| d.file != config_path);

    match (parsed.config, policy, parsed.policy_path) {
        (Some(config), Some(policy), Some(policy_path)) if diags.is_empty() => Ok(Loaded {
            config,
            policy,
            config_path: config_path.to_path_buf(),
            policy_path,
        }),
        _ => {
            if diags.is_empty() {
                // Unreachable by construction; never fail open.
                diags.push(Diagnostic::whole_file(config_path, "configuration invalid"));
            }
            Err(diags)
        }
    }
}

/// Validate the text of `mailshare.toml` alone (the policy file is not read).
/// `path` is used for diagnostics and to resolve relative paths; referenced
/// certificate files are checked on disk.
///
/// # Errors
///
/// Every problem found in the file.
pub fn parse_config(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
    let parsed = check_config(path, text);
    match parsed.config {
        Some(c) if parsed.diagnostics.is_empty() => Ok(c),
        _ => Err(parsed.diagnostics),
    }
}

/// The whole of `mailshare.toml`, validated, defaults filled in, relative
/// paths resolved. `Default` is the configuration of an empty file
/// (paths relative to the working directory).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub store: StoreConfig,
    pub policy: PolicyFileConfig,
    /// The certificate served to mail clients; required when a listener uses TLS.
    pub tls: Option<TlsConfig>,
    /// The admin HTTP API; absent: no API is served.
    pub admin: Option<AdminConfig>,
    /// SMTP submission relay; absent: no SMTP listener.
    pub smtp: Option<ProxyConfig>,
    /// IMAP proxy; absent: no IMAP listener.
    pub imap: Option<ProxyConfig>,
    pub log: LogConfig,
    pub limits: Limits,
}

/// `[store]`: where captured messages live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// `path`: the store directory (sled database plus content-addressed
    /// blobs beside it). Default `data/store`, relative to the config file.
    pub path: PathBuf,
    /// `spool_path`: where a relayed message whose capture failed is kept
    /// (the `.eml` and a `.json` sidecar) until `mailshare ingest --spool`
    /// replays it. Default: `spool` beside the store directory.
    pub spool_path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from(DEFAULT_STORE_PATH),
            spool_path: PathBuf::from(DEFAULT_SPOOL_PATH),
        }
    }
}

/// `[policy]`: which policy file to load (and reload on SIGHUP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyFileConfig {
    /// `path`: default `policy.toml`, relative to the config file.
    pub path: PathBuf,
}

impl Default for PolicyFileConfig {
    fn default() -> Self {
        PolicyFileConfig {
            path: PathBuf::from(DEFAULT_POLICY_PATH),
        }
    }
}

/// `[tls]`: the certificate chain and key (PEM) served to mail clients on
/// `starttls` and `implicit` listeners; reloaded on SIGHUP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// `cert_file`: PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// `key_file`: PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `[admin]`: the JSON HTTP API and `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// `listen`: socket address, default `127.0.0.1:8025`. Bind it where only
    /// the firm's network (and monitoring, for `/metrics`) reaches.
    pub listen: SocketAddr,
    /// `admin_tokens_sha256`: SHA-256 of each admin token (64 hex digits,
    /// either case). Default: none, so only users' own tokens work.
    pub admin_tokens_sha256: Vec<[u8; 32]>,
}

/// `[smtp]` or `[imap]`: one upstream and the listeners relaying to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    pub upstream: Upstream,
    /// `[[smtp.listeners]]` / `[[imap.listeners]]`; may be empty.
    pub listeners: Vec<Listener>,
}

/// `[smtp.upstream]` / `[imap.upstream]`: the firm's real mail server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// `address`: `host:port` as written (IPv6 hosts in brackets).
    pub address: String,
    /// The host part of `address` (brackets removed); also the TLS server name.
    pub host: String,
    pub port: u16,
    /// `tls`: how to reach it, default `starttls`. `none` only for an upstream
    /// on the same host or a trusted network.
    pub tls: TlsMode,
    /// `ca_file`: PEM roots to verify the upstream's certificate; absent: the
    /// system roots.
    pub ca_file: Option<PathBuf>,
    /// `connect_timeout_secs`: TCP connect plus TLS handshake, default 10.
    pub connect_timeout_secs: u64,
    /// `timeout_secs`: longest wait for a reply the upstream owes (greeting,
    /// a command's response, the end-of-DATA reply), default 300 (RFC 5321
    /// allows servers up to 10 minutes for DATA only). Periods where the
    /// client owes the next command, such as IMAP IDLE, are governed by the
    /// client idle timeouts in [`Limits`] instead.
    pub timeout_secs: u64,
}

impl Upstream {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// `[[smtp.listeners]]` / `[[imap.listeners]]`: where mail clients connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// `listen`: socket address, e.g. `127.0.0.1:2587`.
    pub listen: SocketAddr,
    /// `tls`: `starttls` (default; ports 587 / 143), `implicit` (465 / 993) or
    /// `none`. Anything but `none` needs `[tls]`.
    pub tls: TlsMode,
    /// `allow_plaintext_auth`: accept AUTH / LOGIN before TLS is up. Default
    /// false; a `tls = "none"` listener must set it (or no one could log in),
    /// and should then only be reachable from the host or a trusted network.
    pub allow_plaintext_auth: bool,
    /// `proxy_protocol`: expect a HAProxy PROXY v1/v2 header first on every
    /// connection (behind a TCP load balancer), default false. When true, a
    /// connection without one is refused.
    pub proxy_protocol: bool,
}

/// How TLS is used on a listener or towards an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// Plain connection upgraded by STARTTLS.
    Starttls,
    /// TLS from the first byte.
    Implicit,
    /// No TLS.
    None,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Starttls => "starttls",
            TlsMode::Implicit => "implicit",
            TlsMode::None => "none",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TlsMode {
    type Err = String;
    /// Case-insensitive, like every keyword in the config files.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "starttls" => Ok(TlsMode::Starttls),
            "implicit" => Ok(TlsMode::Implicit),
            "none" => Ok(TlsMode::None),
            _ => Err(format!(
                "invalid tls {s:?}: expected starttls, implicit or none"
            )),
        }
    }
}

/// What to do with a bare LF or bare CR inside DATA (`[limits] smtp_bare_lf`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BareLineEndings {
    /// Reject the message with a 5xx (default; Postfix's
    /// `smtpd_forbid_bare_newline` in spirit).
    #[default]
    Reject,
    /// Turn each bare LF or CR into CRLF (the message is re-stuffed after).
    Normalize,
}

impl BareLineEndings {
    pub fn as_str(self) -> &'static str {
        match self {
            BareLineEndings::Reject => "reject",
            BareLineEndings::Normalize => "normalize",
        }
    }
}

impl std::str::FromStr for BareLineEndings {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "reject" => Ok(BareLineEndings::Reject),
            "normalize" | "normalise" => Ok(BareLineEndings::Normalize),
            _ => Err(format!(
                "invalid smtp_bare_lf {s:?}: expected reject or normalize"
            )),
        }
    }
}

/// `[log]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogConfig {
    /// `level`: `error`, `warn`, `info` (default), `debug` or `trace`.
    /// `RUST_LOG`, when set, overrides it.
    pub level: LogLevel,
    /// `format`: `auto` (default: human on a terminal, JSON otherwise),
    /// `human` or `json`.
    pub format: LogFormat,
}

/// The most verbose level logged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(LogLevel::Error),
            "warn" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err(format!(
                "invalid log level {s:?}: expected error, warn, info, debug or trace"
            )),
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    #[default]
    Auto,
    Human,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(LogFormat::Auto),
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "invalid log format {s:?}: expected auto, human or json"
            )),
        }
    }
}

/// `[limits]`: bounds on memory, connections and time. Every key is optional;
/// the defaults below suit a firm of up to a few hundred people on one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `max_capture_bytes`: messages up to this size are parsed and captured
    /// with content as the policy allows; a larger message is still relayed
    /// untouched but captured as metadata read from its headers only (no
    /// subject-level or full copy). Default 64 MiB.
    pub max_capture_bytes: u64,
    /// `max_header_bytes`: the most header bytes handed to the parser for one
    /// message; headers beyond it are ignored for capture (never for relay).
    /// Default 1 MiB; at most `max_capture_bytes`.
    pub max_header_bytes: u64,
    /// `max_connections_per_listener`: concurrent client sessions per
    /// listener; a connection beyond it gets the protocol's busy reply (SMTP
    /// `421 4.7.0`, IMAP `* BYE [UNAVAILABLE]`; implicit-TLS listeners just
    /// close) and is counted in `mailshare_connections_refused_total`
    /// (`reason="listener_full"`). Default 1024.
    pub max_connections_per_listener: u64,
    /// `max_connections_per_ip`: concurrent connections from one client IP
    /// (after PROXY protocol, the real client), across all listeners; at most
    /// `max_connections_per_listener`. Beyond it: the busy reply, counted
    /// with `reason="per_ip"`. Default 64 (an office behind one NAT address
    /// runs a few clients per person).
    pub max_connections_per_ip: u64,
    /// `capture_memory_budget_bytes`: bytes of messages held in memory for
    /// capture at once, across all sessions (a bound on capture memory, not
    /// on relaying; a message larger than the whole budget takes all of it
    /// and is captured alone). When it is exhausted an SMTP message is relayed
    /// without delay and captured from its headers only; an IMAP session
    /// pauses until budget is free (backpressure), or captures from headers
    /// only when waiting could deadlock it. Both are counted in
    /// `mailshare_capture_budget_exhausted_total`; the bytes in use are
    /// `mailshare_capture_budget_used_bytes`. Default 268435456 (256 MiB).
    pub capture_memory_budget_bytes: u64,
    /// `prelogin_timeout_secs`: time a client has from connecting to a
    /// successful login. Default 60.
    pub prelogin_timeout_secs: u64,
    /// `smtp_idle_timeout_secs`: longest wait for the next SMTP command or
    /// DATA bytes from the client. Default 300 (RFC 5321 §4.5.3.2.7).
    pub smtp_idle_timeout_secs: u64,
    /// `imap_idle_timeout_secs`: longest silence from an IMAP client, IDLE
    /// included. Default 1860 (RFC 9051's 30-minute autologout plus a minute:
    /// clients renew IDLE every 29 minutes).
    pub imap_idle_timeout_secs: u64,
    /// `session_timeout_secs`: total lifetime of one client session, however
    /// active. Default 86400 (a day; IMAP clients reconnect).
    pub session_timeout_secs: u64,
    /// `imap_max_line_bytes`: longest IMAP command line a client may send
    /// after login (and longest capability line accepted from the upstream);
    /// longer ones end the session with `* BYE`. Default 65536 (Dovecot's
    /// `imap_max_line_length`); at least 1024. Before login the limit is a
    /// fixed 8 KiB.
    pub imap_max_line_bytes: u64,
    /// `imap_max_literal_bytes`: largest literal (an APPENDed message, say) a
    /// client may send after login: a larger synchronizing literal is
    /// refused with `NO [TOOBIG]`, a larger non-synchronizing one ends the
    /// session. Literals are streamed, never buffered whole; messages the
    /// upstream sends are not limited. Default 268435456 (256 MiB).
    pub imap_max_literal_bytes: u64,
    /// `imap_max_pending_commands`: commands one IMAP client may have in
    /// flight; at the limit the proxy stops reading the client until the
    /// upstream answers one (backpressure, no error). Default 256.
    pub imap_max_pending_commands: u64,
    /// `shutdown_grace_secs`: on SIGTERM, how long open sessions may finish
    /// before they are closed. Default 30 (keep systemd's TimeoutStopSec above).
    pub shutdown_grace_secs: u64,
    /// `group_commit_max_delay_ms`: how long the store may hold a capture to
    /// commit it with others in one flush. An SMTP client's final 250 waits
    /// for the flush, so this adds at most that latency. Default 0 (measured
    /// best: while one flush runs the next batch gathers by itself); 1–2 ms
    /// helps only when captures arrive in sparse bursts. At most 1000.
    pub group_commit_max_delay_ms: u64,
    /// `group_commit_max_batch`: reserved for a cap on captures per flush;
    /// parsed and validated, not applied yet (batches are bounded by the
    /// number of waiting captures). Default 128.
    pub group_commit_max_batch: u64,
    /// `smtp_max_message_bytes`: the largest message the SMTP relay accepts
    /// (552 above it). The SIZE offered to clients is the smaller of this and
    /// the upstream's. Default 100 MiB.
    pub smtp_max_message_bytes: u64,
    /// `smtp_max_recipients`: RCPT commands per message (452 above it).
    /// Default 1000 (Postfix's `smtpd_recipient_limit`).
    pub smtp_max_recipients: u64,
    /// `smtp_max_commands`: commands an SMTP client may send without a
    /// message being accepted (421 and close above it); a session that keeps
    /// sending mail never reaches it. Default 1000.
    pub smtp_max_commands: u64,
    /// `smtp_bare_lf`: a bare LF or bare CR in DATA (or a command line ending
    /// in a bare LF) is `reject`ed with a 5xx (default) or `normalize`d to
    /// CRLF and the message re-dot-stuffed. Either way only CRLF.CRLF ends a
    /// message, so mailshare and the upstream always agree where it ends
    /// (SMTP smuggling).
    pub smtp_bare_lf: BareLineEndings,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_capture_bytes: 64 * 1024 * 1024,
            max_header_bytes: 1024 * 1024,
            max_connections_per_listener: 1024,
            max_connections_per_ip: 64,
            capture_memory_budget_bytes: 256 * 1024 * 1024,
            prelogin_timeout_secs: 60,
            smtp_idle_timeout_secs: 300,
            imap_idle_timeout_secs: 1860,
            session_timeout_secs: 86_400,
            imap_max_line_bytes: 64 * 1024,
            imap_max_literal_bytes: 256 * 1024 * 1024,
            imap_max_pending_commands: 256,
            shutdown_grace_secs: 30,
            group_commit_max_delay_ms: 0,
            group_commit_max_batch: 128,
            smtp_max_message_bytes: 100 * 1024 * 1024,
            smtp_max_recipients: 1000,
            smtp_max_commands: 1000,
            smtp_bare_lf: BareLineEndings::Reject,
        }
    }
}

impl Limits {
    pub fn prelogin_timeout(&self) -> Duration {
        Duration::from_secs(self.prelogin_timeout_secs)
    }
    pub fn smtp_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.smtp_idle_timeout_secs)
    }
    pub fn imap_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.imap_idle_timeout_secs)
    }
    pub fn session_timeout(&self) -> Duration {
        Duration::from_secs(self.session_timeout_secs)
    }
    /// `imap_max_line_bytes` as a buffer size.
    pub fn imap_max_line(&self) -> usize {
        usize::try_from(self.imap_max_line_bytes).unwrap_or(usize::MAX)
    }
    /// `imap_max_pending_commands` as a count.
    pub fn imap_max_pending(&self) -> usize {
        usize::try_from(self.imap_max_pending_commands).unwrap_or(usize::MAX)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
    pub fn group_commit_max_delay(&self) -> Duration {
        Duration::from_millis(self.group_commit_max_delay_ms)
    }
}

/// Default `[store] path`.
pub const DEFAULT_STORE_PATH: &str = "data/store";
/// Default `[store] spool_path` (when `path` is the default too).
pub const DEFAULT_SPOOL_PATH: &str = "data/spool";
/// Default `[policy] path`.
pub const DEFAULT_POLICY_PATH: &str = "policy.toml";
/// Default `[admin] listen`.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8025";
/// Default upstream `connect_timeout_secs`.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
/// Default upstream `timeout_secs`.
pub const DEFAULT_UPSTREAM_TIMEOUT_SECS: u64 = 300;

// ---------------------------------------------------------------------------
// Raw file structure: mirrors the file key for key.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store: Option<RawStore>,
    policy: Option<RawPathSection>,
    tls: Option<Spanned<RawTls>>,
    admin: Option<RawAdmin>,
    smtp: Option<RawProxy>,
    imap: Option<RawProxy>,
    log: Option<RawLog>,
    limits: Option<RawLimits>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPathSection {
    path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<Spanned<String>>,
    spool_path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Spanned<String>,
    key_file: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<Spanned<String>>,
    #[serde(default)]
    admin_tokens_sha256: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    upstream: Option<Spanned<RawUpstream>>,
    #[serde(default)]
    listeners: Vec<Spanned<RawListener>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    address: Spanned<String>,
    tls: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    connect_timeout_secs: Option<Spanned<u64>>,
    timeout_secs: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    listen: Spanned<String>,
    tls: Option<Spanned<String>>,
    allow_plaintext_auth: Option<bool>,
    proxy_protocol: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_capture_bytes: Option<Spanned<u64>>,
    max_header_bytes: Option<Spanned<u64>>,
    max_connections_per_listener: Option<Spanned<u64>>,
    max_connections_per_ip: Option<Spanned<u64>>,
    capture_memory_budget_bytes: Option<Spanned<u64>>,
    prelogin_timeout_secs: Option<Spanned<u64>>,
    smtp_idle_timeout_secs: Option<Spanned<u64>>,
    imap_idle_timeout_secs: Option<Spanned<u64>>,
    session_timeout_secs: Option<Spanned<u64>>,
    imap_max_line_bytes: Option<Spanned<u64>>,
    imap_max_literal_bytes: Option<Spanned<u64>>,
    imap_max_pending_commands: Option<Spanned<u64>>,
    shutdown_grace_secs: Option<Spanned<u64>>,
    group_commit_max_delay_ms: Option<Spanned<u64>>,
    group_commit_max_batch: Option<Spanned<u64>>,
    smtp_max_message_bytes: Option<Spanned<u64>>,
    smtp_max_recipients: Option<Spanned<u64>>,
    smtp_max_commands: Option<Spanned<u64>>,
    smtp_bare_lf: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------
// Validation.

/// Collects diagnostics for one file.
pub(crate) struct Report<'a> {
    pub(crate) src: Source<'a>,
    pub(crate) diags: Vec<Diagnostic>,
}

impl<'a> Report<'a> {
    pub(crate) fn new(path: &'a Path, text: &'a str) -> Self {
        Report {
            src: Source::new(path, text),
            diags: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.diags.push(self.src.at(span, message));
    }

    /// The 1-based line of a span, for "first defined at line N" hints.
    pub(crate) fn line_of(&self, span: &Range<usize>) -> usize {
        crate::diag::line_column(self.src.text, span.start).0
    }

    /// The diagnostics in file order (stable for equal positions).
    pub(crate) fn finish(mut self) -> Vec<Diagnostic> {
        self.diags.sort_by_key(|d| (d.line, d.column));
        self.diags
    }
}

/// What checking the config text produced; `config` is `Some` only when it
/// had no error.
struct Checked {
    config: Option<Config>,
    diagnostics: Vec<Diagnostic>,
    /// The resolved policy path, whenever it could be determined (even if the
    /// config file has other errors), so the policy is checked too.
    policy_path: Option<PathBuf>,
    policy_span: Option<Range<usize>>,
    admin_token_spans: Vec<Range<usize>>,
}

fn check_config(path: &Path, text: &str) -> Checked {
    let base = base_dir(path);
    let mut report = Report::new(path, text);
    let raw: RawConfig = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            report.diags.push(report.src.toml_error(&e));
            // A type error or an unknown key elsewhere should not hide the
            // policy file's errors: find its path with a lenient parse. After
            // a syntax error nothing in the file can be trusted.
            let policy_path = toml::from_str::<toml::Table>(text).ok().map(|t| {
                let p = t
                    .get("policy")
                    .and_then(|p| p.get("path"))
                    .and_then(|p| p.as_str())
                    .unwrap_or(DEFAULT_POLICY_PATH);
                base.join(p)
            });
            return Checked {
                config: None,
                diagnostics: report.finish(),
                policy_path,
                policy_span: None,
                admin_token_spans: Vec::new(),
            };
        }
    };

    let mut config = Config::default();
    let mut policy_span = None;
    let mut admin_token_spans = Vec::new();

    // [store], [policy]
    config.store.path = base.join(DEFAULT_STORE_PATH);
    if let Some(p) = raw.store.as_ref().and_then(|s| s.path.as_ref()) {
        if p.get_ref().trim().is_empty() {
            report.error(p.span(), "[store] path must not be empty");
        }
        config.store.path = base.join(p.get_ref());
    }
    config.store.spool_path = spool_beside(&config.store.path);
    if let Some(p) = raw.store.as_ref().and_then(|s| s.spool_path.as_ref()) {
        if p.get_ref().trim().is_empty() {
            report.error(p.span(), "[store] spool_path must not be empty");
        }
        config.store.spool_path = base.join(p.get_ref());
    }
    config.policy.path = base.join(DEFAULT_POLICY_PATH);
    if let Some(p) = raw.policy.as_ref().and_then(|s| s.path.as_ref()) {
        config.policy.path = base.join(p.get_ref());
        policy_span = Some(p.span());
        if p.get_ref().trim().is_empty() {
            report.error(p.span(), "[policy] path must not be empty");
        }
    }

    // [tls]
    if let Some(tls) = &raw.tls {
        let t = tls.get_ref();
        let cert = base.join(t.cert_file.get_ref());
        let key = base.join(t.key_file.get_ref());
        check_pem(
            &mut report,
            t.cert_file.span(),
            &cert,
            "cert_file",
            "CERTIFICATE-----",
        );
        check_pem(
            &mut report,
            t.key_file.span(),
            &key,
            "key_file",
            "PRIVATE KEY-----",
        );
        config.tls = Some(TlsConfig {
            cert_file: cert,
            key_file: key,
        });
    }

    // Every socket address bound, to catch two listeners on one port.
    let mut bound: HashMap<SocketAddr, Range<usize>> = HashMap::new();
    let mut claim = |report: &mut Report, addr: SocketAddr, span: Range<usize>| {
        if addr.port() == 0 {
            return;
        }
        if let Some(first) = bound.get(&addr) {
            let line = report.line_of(first);
            report.error(span, format!("{addr} is already used at line {line}"));
        } else {
            bound.insert(addr, span);
        }
    };

    // [admin]
    if let Some(admin) = &raw.admin {
        let mut listen = DEFAULT_ADMIN_LISTEN.parse().expect("valid default");
        if let Some(l) = &admin.listen {
            if let Some(a) = socket_addr(&mut report, l, "[admin] listen") {
                listen = a;
                claim(&mut report, a, l.span());
            }
        }
        let mut hashes = Vec::new();
        for h in &admin.admin_tokens_sha256 {
            match parse_sha256_hex(h.get_ref()) {
                Some(bytes) => {
                    hashes.push(bytes);
                    admin_token_spans.push(h.span());
                }
                None => report.error(
                    h.span(),
                    format!(
                        "admin_tokens_sha256 entry {:?} is not a SHA-256 hash: expected 64 hex digits",
                        h.get_ref()
                    ),
                ),
            }
        }
        config.admin = Some(AdminConfig {
            listen,
            admin_tokens_sha256: hashes,
        });
    }

    // [smtp], [imap]
    let mut needs_tls: Option<Range<usize>> = None;
    for (name, raw_proxy, slot) in [
        ("smtp", &raw.smtp, &mut config.smtp),
        ("imap", &raw.imap, &mut config.imap),
    ] {
        let Some(p) = raw_proxy else { continue };
        let upstream = match &p.upstream {
            Some(u) => check_upstream(&mut report, &base, name, u.get_ref()),
            None => {
                if let Some(first) = p.listeners.first() {
                    report.error(
                        first.span(),
                        format!("{name} listeners need an [{name}.upstream] to relay to"),
                    );
                }
                None
            }
        };
        let mut listeners = Vec::new();
        for l in &p.listeners {
            let raw_l = l.get_ref();
            let listen = socket_addr(&mut report, &raw_l.listen, "listen");
            if let Some(a) = listen {
                claim(&mut report, a, raw_l.listen.span());
            }
            let tls = match &raw_l.tls {
                Some(t) => parse_enum::<TlsMode>(&mut report, t),
                None => Some(TlsMode::Starttls),
            };
            let tls_span = raw_l.tls.as_ref().map_or(l.span(), |t| t.span());
            let allow_plaintext_auth = raw_l.allow_plaintext_auth.unwrap_or(false);
            if tls == Some(TlsMode::None) && !allow_plaintext_auth {
                report.error(
                    tls_span.clone(),
                    "a listener with tls = \"none\" needs allow_plaintext_auth = true, \
                     or no client could ever log in",
                );
            }
            if tls.is_some_and(|t| t != TlsMode::None) && needs_tls.is_none() {
                needs_tls = Some(tls_span);
            }
            if let (Some(listen), Some(tls)) = (listen, tls) {
                listeners.push(Listener {
                    listen,
                    tls,
                    allow_plaintext_auth,
                    proxy_protocol: raw_l.proxy_protocol.unwrap_or(false),
                });
            }
        }
        if let Some(upstream) = upstream {
            *slot = Some(ProxyConfig {
                upstream,
                listeners,
            });
        }
    }
    if let (Some(span), None) = (needs_tls, &raw.tls) {
        report.error(
            span,
            "this listener uses TLS but there is no [tls] section with cert_file and key_file",
        );
    }

    // [log]
    if let Some(log) = &raw.log {
        if let Some(l) = &log.level {
            if let Some(level) = parse_enum::<LogLevel>(&mut report, l) {
                config.log.level = level;
            }
        }
        if let Some(f) = &log.format {
            if let Some(format) = parse_enum::<LogFormat>(&mut report, f) {
                config.log.format = format;
            }
        }
    }

    // [limits]
    if let Some(l) = &raw.limits {
        check_limits(&mut report, l, &mut config.limits);
    }

    let diagnostics = report.finish();
    Checked {
        config: diagnostics.is_empty().then_some(config.clone()),
        diagnostics,
        policy_path: Some(config.policy.path),
        policy_span,
        admin_token_spans,
    }
}

fn check_upstream(
    report: &mut Report,
    base: &Path,
    proto: &str,
    u: &RawUpstream,
) -> Option<Upstream> {
    let address = u.address.get_ref().trim();
    let host_port = parse_host_port(address);
    if let Err(why) = &host_port {
        report.error(
            u.address.span(),
            format!("[{proto}.upstream] address {address:?} {why}"),
        );
    }
    let tls = match &u.tls {
        Some(t) => parse_enum::<TlsMode>(report, t),
        None => Some(TlsMode::Starttls),
    };
    let ca_file = u.ca_file.as_ref().map(|c| {
        let p = base.join(c.get_ref());
        check_pem(report, c.span(), &p, "ca_file", "CERTIFICATE-----");
        p
    });
    let mut secs = |v: &Option<Spanned<u64>>, key: &str, default: u64| match v {
        Some(s) if *s.get_ref() == 0 => {
            report.error(s.span(), format!("{key} must be at least 1"));
            default
        }
        Some(s) => *s.get_ref(),
        None => default,
    };
    let connect_timeout_secs = secs(
        &u.connect_timeout_secs,
        "connect_timeout_secs",
        DEFAULT_CONNECT_TIMEOUT_SECS,
    );
    let timeout_secs = secs(
        &u.timeout_secs,
        "timeout_secs",
        DEFAULT_UPSTREAM_TIMEOUT_SECS,
    );
    let (host, port) = host_port.ok()?;
    Some(Upstream {
        address: address.to_string(),
        host,
        port,
        tls: tls?,
        ca_file,
        connect_timeout_secs,
        timeout_secs,
    })
}

fn check_limits(report: &mut Report, raw: &RawLimits, limits: &mut Limits) {
    let fields: [(&Option<Spanned<u64>>, &str, &mut u64); 18] = [
        (
            &raw.max_capture_bytes,
            "max_capture_bytes",
            &mut limits.max_capture_bytes,
        ),
        (
            &raw.max_header_bytes,
            "max_header_bytes",
            &mut limits.max_header_bytes,
        ),
        (
            &raw.max_connections_per_listener,
            "max_connections_per_listener",
            &mut limits.max_connections_per_listener,
        ),
        (
            &raw.max_connections_per_ip,
            "max_connections_per_ip",
            &mut limits.max_connections_per_ip,
        ),
        (
            &raw.capture_memory_budget_bytes,
            "capture_memory_budget_bytes",
            &mut limits.capture_memory_budget_bytes,
        ),
        (
            &raw.prelogin_timeout_secs,
            "prelogin_timeout_secs",
            &mut limits.prelogin_timeout_secs,
        ),
        (
            &raw.smtp_idle_timeout_secs,
            "smtp_idle_timeout_secs",
            &mut limits.smtp_idle_timeout_secs,
        ),
        (
            &raw.imap_idle_timeout_secs,
            "imap_idle_timeout_secs",
            &mut limits.imap_idle_timeout_secs,
        ),
        (
            &raw.session_timeout_secs,
            "session_timeout_secs",
            &mut limits.session_timeout_secs,
        ),
        (
            &raw.imap_max_line_bytes,
            "imap_max_line_bytes",
            &mut limits.imap_max_line_bytes,
        ),
        (
            &raw.imap_max_literal_bytes,
            "imap_max_literal_bytes",
            &mut limits.imap_max_literal_bytes,
        ),
        (
            &raw.imap_max_pending_commands,
            "imap_max_pending_commands",
            &mut limits.imap_max_pending_commands,
        ),
        (
            &raw.shutdown_grace_secs,
            "shutdown_grace_secs",
            &mut limits.shutdown_grace_secs,
        ),
        (
            &raw.group_commit_max_delay_ms,
            "group_commit_max_delay_ms",
            &mut limits.group_commit_max_delay_ms,
        ),
        (
            &raw.group_commit_max_batch,
            "group_commit_max_batch",
            &mut limits.group_commit_max_batch,
        ),
        (
            &raw.smtp_max_message_bytes,
            "smtp_max_message_bytes",
            &mut limits.smtp_max_message_bytes,
        ),
        (
            &raw.smtp_max_recipients,
            "smtp_max_recipients",
            &mut limits.smtp_max_recipients,
        ),
        (
            &raw.smtp_max_commands,
            "smtp_max_commands",
            &mut limits.smtp_max_commands,
        ),
    ];
    // Zero is a meaningful value only for a delay.
    let zero_ok = ["group_commit_max_delay_ms"];
    for (value, key, slot) in fields {
        if let Some(v) = value {
            if *v.get_ref() == 0 && !zero_ok.contains(&key) {
                report.error(v.span(), format!("[limits] {key} must be at least 1"));
            } else {
                *slot = *v.get_ref();
            }
        }
    }
    if let Some(v) = &raw.max_header_bytes {
        if limits.max_header_bytes > limits.max_capture_bytes {
            report.error(
                v.span(),
                format!(
                    "[limits] max_header_bytes ({}) must not exceed max_capture_bytes ({})",
                    limits.max_header_bytes, limits.max_capture_bytes
                ),
            );
        }
    }
    if let Some(v) = &raw.max_connections_per_ip {
        if limits.max_connections_per_ip > limits.max_connections_per_listener {
            report.error(
                v.span(),
                format!(
                    "[limits] max_connections_per_ip ({}) must not exceed \
                     max_connections_per_listener ({})",
                    limits.max_connections_per_ip, limits.max_connections_per_listener
                ),
            );
        }
    }
    if let Some(v) = &raw.smtp_bare_lf {
        if let Some(mode) = parse_enum::<BareLineEndings>(report, v) {
            limits.smtp_bare_lf = mode;
        }
    }
    if let Some(v) = &raw.imap_max_line_bytes {
        if limits.imap_max_line_bytes < 1024 {
            report.error(
                v.span(),
                "[limits] imap_max_line_bytes must be at least 1024: \
                 ordinary IMAP commands and capability lines would not fit",
            );
        }
    }
    if let Some(v) = &raw.group_commit_max_delay_ms {
        if limits.group_commit_max_delay_ms > 1000 {
            report.error(
                v.span(),
                "[limits] group_commit_max_delay_ms must be at most 1000: \
                 SMTP clients wait for the commit before their 250",
            );
        }
    }
}

/// The default spool directory: `spool` beside the store directory.
fn spool_beside(store: &Path) -> PathBuf {
    match store.parent() {
        Some(p) => p.join("spool"),
        None => PathBuf::from("spool"),
    }
}

/// The directory relative paths in `path` are resolved against.
fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn parse_enum<T: FromStr<Err = String>>(report: &mut Report, v: &Spanned<String>) -> Option<T> {
    match v.get_ref().parse::<T>() {
        Ok(t) => Some(t),
        Err(e) => {
            report.error(v.span(), e);
            None
        }
    }
}

fn socket_addr(report: &mut Report, v: &Spanned<String>, key: &str) -> Option<SocketAddr> {
    match v.get_ref().trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            report.error(
                v.span(),
                format!(
                    "{key} {:?} is not a socket address: expected ip:port, \
                     e.g. 127.0.0.1:2587 or [::1]:2587",
                    v.get_ref()
                ),
            );
            None
        }
    }
}

/// Split `host:port` (IPv6 hosts in brackets); the error completes the
/// sentence "address … ".
fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let expected = "is not host:port, e.g. mail.example.com:587 or [2001:db8::1]:993";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(expected.into());
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("has an invalid port {port:?}")),
    };
    let host = if let Some(inner) = host.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return Err(expected.into());
        };
        if inner.parse::<Ipv6Addr>().is_err() {
            return Err(format!("has an invalid IPv6 address {inner:?}"));
        }
        inner.to_string()
    } else {
        if host.is_empty()
            || host.contains(':')
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        {
            return Err(expected.into());
        }
        if host.parse::<IpAddr>().is_err() && host.split('.').any(str::is_empty) {
            return Err(format!("has an invalid host name {host:?}"));
        }
        host.to_ascii_lowercase()
    };
    Ok((host, port))
}

/// Check that a referenced PEM file exists, is readable and holds what it
/// should (`marker` ends its `-----BEGIN …` line), so swapped or truncated
/// files are caught at check time rather than at the first TLS handshake.
fn check_pem(report: &mut Report, span: Range<usize>, path: &Path, key: &str, marker: &str) {
    // Bounded: a path pointing at a device or a huge file must not hang the check.
    const MAX_PEM_BYTES: u64 = 1024 * 1024;
    let read = std::fs::File::open(path).and_then(|f| {
        let mut bytes = Vec::new();
        f.take(MAX_PEM_BYTES).read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    match read {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let found = text
                .lines()
                .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(marker));
            if !found {
                report.error(
                    span,
                    format!(
                        "{key} {} holds no PEM \"-----BEGIN …{marker}\" block",
                        path.display()
                    ),
                );
            }
        }
        Err(e) => report.error(
            span,
            format!("{key} {} cannot be read: {e}", path.display()),
        ),
    }
}

/// 64 hex digits (either case) → the 32 bytes of a SHA-256 hash.
pub(crate) fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_accepts_names_ipv4_and_bracketed_ipv6() {
        assert_eq!(
            parse_host_port("Mail.Example.com:587"),
            Ok(("mail.example.com".into(), 587))
        );
        assert_eq!(
            parse_host_port("127.0.0.1:1143"),
            Ok(("127.0.0.1".into(), 1143))
        );
        assert_eq!(parse_host_port("[::1]:993"), Ok(("::1".into(), 993)));
        for bad in [
            "mail.example.com",
            "mail.example.com:",
            "mail.example.com:0",
            "mail.example.com:70000",
            ":587",
            "::1:993",
            "[::1:993",
            "[nope]:993",
            "mail..example:25",
            "mail example:25",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_reload_refuses_a_user_token_that_is_an_admin_token() {
        let dir = tempfile::tempdir().unwrap();
        let admin = "cd".repeat(32);
        let config = parse_config(
            &dir.path().join("mailshare.toml"),
            &format!("[admin]\nadmin_tokens_sha256 = [\"{admin}\"]\n"),
        )
        .unwrap();
        let path = dir.path().join("policy.toml");
        let policy = |token: &str| {
            format!(
                "[organization]\nname = \"A\"\ninternal_domains = [\"a.example\"]\n\n\
                 [[users]]\naddress = \"u@a.example\"\ntoken_sha256 = \"{token}\"\n"
            )
        };
        std::fs::write(&path, policy(&"ab".repeat(32))).unwrap();
        assert!(reload_policy(&config, &path).is_ok());
        std::fs::write(&path, policy(&admin.to_uppercase())).unwrap();
        let diags = reload_policy(&config, &path).unwrap_err();
        assert_eq!(diags.len(), 1);
        assert_eq!((diags[0].line, diags[0].column), (7, 17), "{}", diags[0]);
        assert!(diags[0].message.contains("u@a.example"), "{}", diags[0]);
    }

    #[test]
    fn sha256_hex_needs_exactly_64_hex_digits() {
        let h = "ab".repeat(32);
        assert_eq!(parse_sha256_hex(&h), Some([0xab; 32]));
        assert_eq!(parse_sha256_hex(&h.to_uppercase()), Some([0xab; 32]));
        assert_eq!(parse_sha256_hex(&h[..62]), None);
        assert_eq!(parse_sha256_hex(&format!("{}zz", &h[..62])), None);
    }

    #[test]
    fn an_empty_file_is_the_default_config_relative_to_its_directory() {
        let c = parse_config(Path::new("/etc/mailshare/mailshare.toml"), "").unwrap();
        assert_eq!(c.store.path, Path::new("/etc/mailshare/data/store"));
        assert_eq!(c.store.spool_path, Path::new("/etc/mailshare/data/spool"));
        assert_eq!(c.policy.path, Path::new("/etc/mailshare/policy.toml"));
        assert_eq!(c.limits, Limits::default());
        assert!(c.admin.is_none() && c.smtp.is_none() && c.imap.is_none() && c.tls.is_none());
    }

    #[test]
    fn imap_limits_have_defaults_and_bounds() {
        let d = Limits::default();
        assert_eq!(
            (
                d.imap_max_line_bytes,
                d.imap_max_literal_bytes,
                d.imap_max_pending_commands
            ),
            (65_536, 268_435_456, 256)
        );
        let c = parse_config(
            Path::new("/x/mailshare.toml"),
            "[limits]\nimap_max_line_bytes = 2048\nimap_max_literal_bytes = 1000\nimap_max_pending_commands = 8\n",
        )
        .unwrap();
        assert_eq!(c.limits.imap_max_line(), 2048);
        assert_eq!(c.limits.imap_max_literal_bytes, 1000);
        assert_eq!(c.limits.imap_max_pending(), 8);
        let e = parse_config(
            Path::new("/x/mailshare.toml"),
            "[limits]\nimap_max_line_bytes = 100\nimap_max_pending_commands = 0\n",
        )
        .unwrap_err();
        let text: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].contains("imap_max_line_bytes must be at least 1024"),
            "{text:?}"
        );
        assert!(
            text[1].contains("imap_max_pending_commands must be at least 1"),
            "{text:?}"
        );
    }
}
