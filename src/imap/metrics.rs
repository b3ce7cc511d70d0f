//! IMAP metrics (`mailshare_imap_*`), registered into the gateway's
//! registry. Labels come from fixed sets only: listener names from the
//! configuration, command names from [`super::syntax::COMMAND_LABELS`],
//! directions, sources, levels and result classes. Never a user, address,
//! mailbox name or IP.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Literal sizes: 1 KiB to 1 GiB.
const SIZE_BUCKETS: &[f64] = &[
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
];

/// Handles to every IMAP metric.
#[derive(Clone)]
pub struct ImapMetrics {
    /// Open sessions by listener.
    pub sessions_open: IntGaugeVec,
    /// Sessions accepted by listener.
    pub sessions: IntCounterVec,
    /// Bytes relayed, by direction (`client_to_upstream`, `upstream_to_client`).
    pub bytes: IntCounterVec,
    /// Of the bytes relayed to clients, those spliced in the kernel.
    pub spliced_bytes: IntCounter,
    /// Client commands after login, by command.
    pub commands: IntCounterVec,
    /// From forwarding a command to its tagged response, by command.
    pub command_seconds: HistogramVec,
    /// Login attempts by result (`ok`, `rejected`, `unavailable`).
    pub logins: IntCounterVec,
    /// Connecting (TCP, TLS, greeting, STARTTLS) to the upstream.
    pub upstream_connect_seconds: Histogram,
    /// Upstream failures by kind (`connect`, `tls`, `timeout`, `protocol`, `closed`).
    pub upstream_errors: IntCounterVec,
    /// Literal sizes by direction.
    pub literal_bytes: HistogramVec,
    /// Captures by source (`fetch`, `header`, `envelope`, `append`) and
    /// result (a stored level, `skipped` or `error`).
    pub captures: IntCounterVec,
    /// Messages relayed without a content capture, by reason (`too_large`:
    /// headers only; `budget`: the session already held capture memory).
    pub capture_degraded: IntCounterVec,
    /// Limits hit, by limit (`line`, `literal`, `prelogin`, `idle`, `session`).
    pub limits: IntCounterVec,
    /// Sessions closed by shutdown.
    pub shutdown_byes: IntCounter,
}

impl ImapMetrics {
    /// Register every IMAP metric in `r`.
    ///
    /// # Panics
    /// If they are already registered there (one proxy per registry).
    pub fn new(r: &Registry) -> ImapMetrics {
        fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        }
        let sessions_open = IntGaugeVec::new(
            Opts::new(
                "mailshare_imap_sessions_open",
                "Open IMAP sessions, by listener.",
            ),
            &["listener"],
        )
        .expect("valid metric");
        r.register(Box::new(sessions_open.clone()))
            .expect("unique metric");
        let literal_bytes = HistogramVec::new(
            HistogramOpts::new(
                "mailshare_imap_literal_bytes",
                "Sizes of IMAP literals relayed, by direction.",
            )
            .buckets(SIZE_BUCKETS.to_vec()),
            &["direction"],
        )
        .expect("valid metric");
        r.register(Box::new(literal_bytes.clone()))
            .expect("unique metric");
        let shutdown_byes = IntCounter::new(
            "mailshare_imap_shutdown_byes_total",
            "IMAP sessions sent * BYE because the gateway shuts down.",
        )
        .expect("valid metric");
        r.register(Box::new(shutdown_byes.clone()))
            .expect("unique metric");
        let spliced_bytes = IntCounter::new(
            "mailshare_imap_spliced_bytes_total",
            "Of the bytes relayed to IMAP clients, those moved by splice(2) without a copy (uncaptured literals, plain TCP legs).",
        )
        .expect("valid metric");
        r.register(Box::new(spliced_bytes.clone()))
            .expect("unique metric");
        ImapMetrics {
            sessions_open,
            spliced_bytes,
            sessions: counter_vec(
                r,
                "mailshare_imap_sessions_total",
                "IMAP sessions accepted, by listener.",
                &["listener"],
            ),
            bytes: counter_vec(
                r,
                "mailshare_imap_bytes_total",
                "Bytes relayed after login, by direction.",
                &["direction"],
            ),
            commands: counter_vec(
                r,
                "mailshare_imap_commands_total",
                "IMAP commands relayed after login, by command.",
                &["command"],
            ),
            command_seconds: crate::metrics::histogram_vec(
                r,
                "mailshare_imap_command_seconds",
                "From relaying an IMAP command to the upstream's tagged response, by command.",
                &["command"],
            ),
            logins: counter_vec(
                r,
                "mailshare_imap_logins_total",
                "IMAP login attempts, by result (ok, rejected, unavailable).",
                &["result"],
            ),
            upstream_connect_seconds: crate::metrics::histogram(
                r,
                "mailshare_imap_upstream_connect_seconds",
                "Connecting to the IMAP upstream: TCP, TLS, greeting, STARTTLS.",
            ),
            upstream_errors: counter_vec(
                r,
                "mailshare_imap_upstream_errors_total",
                "IMAP upstream failures, by kind.",
                &["kind"],
            ),
            literal_bytes,
            captures: counter_vec(
                r,
                "mailshare_imap_captures_total",
                "IMAP captures, by source (fetch, header, envelope, append) and result.",
                &["source", "result"],
            ),
            capture_degraded: counter_vec(
                r,
                "mailshare_imap_capture_degraded_total",
                "Messages captured from headers only, by reason (too_large, budget).",
                &["reason"],
            ),
            limits: counter_vec(
                r,
                "mailshare_imap_limit_hits_total",
                "IMAP limits hit, by limit.",
                &["limit"],
            ),
            shutdown_byes,
        }
    }
}
