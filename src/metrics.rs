//! The Prometheus registry and the metrics every part shares (capture, store,
//! policy). Protocol modules register their own collectors into
//! [`Metrics::registry`] from their own files. Names are
//! `mailshare_<thing>_<unit>`; labels come from bounded sets only (protocol,
//! level, result class), never a user, address, IP or Message-ID.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Latency buckets from 100 µs to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Shared metrics. Cheap to clone handles out of; create one per process.
pub struct Metrics {
    pub registry: Registry,
    /// Messages captured, by protocol (`smtp`, `imap`, `ingest`) and stored level.
    pub captures: IntCounterVec,
    /// Messages not stored for an owner, by protocol and reason (engine reasons).
    pub capture_skips: IntCounterVec,
    /// Captures that failed (parse or store), by protocol and kind.
    pub capture_errors: IntCounterVec,
    /// Parse + decide + durable store write, by protocol.
    pub capture_seconds: HistogramVec,
    /// Messages captured from headers only (over the capture size limit), by protocol.
    pub capture_headers_only: IntCounterVec,
    pub store_messages: IntGauge,
    pub store_contacts: IntGauge,
    pub store_blobs: IntGauge,
    pub store_bytes: IntGauge,
    pub store_flushes: IntGauge,
    pub policy_reloads: IntCounter,
    pub policy_reload_failures: IntCounter,
    /// 1 while the last reload attempt failed (the previous policy is running).
    pub policy_stale: IntGauge,
    pub policy_users: IntGauge,
    /// Connections refused by a listener, by protocol, listener and reason
    /// (`listener_full`, `per_ip`, `proxy_header`; see
    /// [`crate::net::listener::REFUSAL_REASONS`]).
    pub connections_refused: IntCounterVec,
    /// The capture memory budget (`[limits] capture_memory_budget_bytes`).
    pub capture_budget_bytes: IntGauge,
    /// Bytes of the capture memory budget held by messages in flight.
    pub capture_budget_used_bytes: IntGauge,
    /// Times a capture found the budget exhausted, by protocol and outcome:
    /// `waited` (the session paused until budget was free) or `denied` (the
    /// message was captured from its headers only, or not at all).
    pub capture_budget_exhausted: IntCounterVec,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

/// A latency histogram registered in `r`.
pub fn histogram_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

/// A latency histogram without labels registered in `r`.
pub fn histogram(r: &Registry, name: &str, help: &str) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        Metrics {
            captures: counter_vec(
                &r,
                "mailshare_captures_total",
                "Messages captured, by protocol and stored level.",
                &["protocol", "level"],
            ),
            capture_skips: counter_vec(
                &r,
                "mailshare_capture_skips_total",
                "Messages not stored for an owner, by protocol and reason.",
                &["protocol", "reason"],
            ),
            capture_errors: counter_vec(
                &r,
                "mailshare_capture_errors_total",
                "Captures that failed, by protocol and kind (parse, store).",
                &["protocol", "kind"],
            ),
            capture_seconds: histogram_vec(
                &r,
                "mailshare_capture_seconds",
                "Parse, decide and durable store write of one capture.",
                &["protocol"],
            ),
            capture_headers_only: counter_vec(
                &r,
                "mailshare_capture_headers_only_total",
                "Messages over the capture size limit, captured from their headers only.",
                &["protocol"],
            ),
            store_messages: gauge(&r, "mailshare_store_messages", "Messages in the store."),
            store_contacts: gauge(
                &r,
                "mailshare_store_contacts",
                "Auto-created contacts in the store.",
            ),
            store_blobs: gauge(&r, "mailshare_store_blobs", "Content-addressed blobs."),
            store_bytes: gauge(
                &r,
                "mailshare_store_size_bytes",
                "Bytes on disk: database plus blobs.",
            ),
            store_flushes: gauge(
                &r,
                "mailshare_store_flushes",
                "Group-commit flushes since the store was opened.",
            ),
            policy_reloads: counter(
                &r,
                "mailshare_policy_reloads_total",
                "Policy reload attempts (SIGHUP).",
            ),
            policy_reload_failures: counter(
                &r,
                "mailshare_policy_reload_failures_total",
                "Policy reloads rejected (the previous policy kept running).",
            ),
            policy_stale: gauge(
                &r,
                "mailshare_policy_reload_failed",
                "1 while the last policy reload failed and the previous policy is running.",
            ),
            policy_users: gauge(&r, "mailshare_policy_users", "Users in the running policy."),
            connections_refused: counter_vec(
                &r,
                "mailshare_connections_refused_total",
                "Client connections refused, by protocol, listener and reason \
                 (listener_full, per_ip, proxy_header).",
                &["protocol", "listener", "reason"],
            ),
            capture_budget_bytes: gauge(
                &r,
                "mailshare_capture_budget_bytes",
                "The capture memory budget: bytes of messages that may be held for capture at once.",
            ),
            capture_budget_used_bytes: gauge(
                &r,
                "mailshare_capture_budget_used_bytes",
                "Bytes of the capture memory budget held by messages in flight.",
            ),
            capture_budget_exhausted: counter_vec(
                &r,
                "mailshare_capture_budget_exhausted_total",
                "Captures that found the memory budget exhausted, by protocol and outcome \
                 (waited: the session paused; denied: captured from headers only or not at all).",
                &["protocol", "outcome"],
            ),
            registry: r,
        }
    }

    /// Refresh the store gauges from `stats`.
    pub fn observe_store(&self, stats: &crate::store::StoreStats) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.store_messages.set(clamp(stats.messages));
        self.store_contacts.set(clamp(stats.contacts));
        self.store_blobs.set(clamp(stats.blobs));
        self.store_bytes.set(clamp(stats.bytes_on_disk));
        self.store_flushes.set(clamp(stats.flushes));
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
