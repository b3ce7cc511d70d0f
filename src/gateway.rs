//! What every protocol adapter shares at run time: the store, the policy in
//! force (swapped atomically on reload), the configuration, the metrics, and
//! the capture service that runs `ingest` off the I/O tasks under a memory
//! budget.
//!
//! Adapters (`admin`, `smtp`, `imap`) take an `Arc<Gateway>`; nothing here
//! knows a protocol.

use crate::config::Config;
use crate::diag::Diagnostic;
use crate::engine::{Direction, Policy};
use crate::ingest::{self, IngestError, IngestOutcome, IngestRequest};
use crate::metrics::Metrics;
use crate::store::{Durability, Store};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The policy in force. Readers take a snapshot (`current`) and keep it for
/// the decision at hand; a reload swaps in a new one without blocking them.
#[derive(Debug)]
pub struct PolicyHandle {
    inner: RwLock<Arc<Policy>>,
}

impl PolicyHandle {
    pub fn new(policy: Policy) -> PolicyHandle {
        PolicyHandle {
            inner: RwLock::new(Arc::new(policy)),
        }
    }

    /// A snapshot of the policy in force.
    pub fn current(&self) -> Arc<Policy> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Put a new policy in force.
    pub fn replace(&self, policy: Policy) {
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(policy);
    }
}

/// Default budget for bytes of messages held for capture at once, across all
/// sessions (see [`Gateway::reserve`]).
pub const DEFAULT_CAPTURE_BUDGET_BYTES: usize = 256 << 20;

/// One message to capture, owned (the adapter hands its buffer over).
#[derive(Debug)]
pub struct CaptureJob {
    pub raw: Vec<u8>,
    /// Login or address of the owner.
    pub owner: String,
    pub direction: Direction,
    pub envelope_recipients: Vec<String>,
    /// Metric label: `smtp`, `imap` or `ingest`.
    pub protocol: &'static str,
}

/// Shared run-time state of the gateway.
pub struct Gateway {
    pub store: Arc<dyn Store>,
    pub policy: PolicyHandle,
    pub policy_path: PathBuf,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
}

/// Bytes of the capture budget held by one in-flight message; released on drop.
#[derive(Debug)]
pub struct BudgetPermit {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Gateway {
    pub fn new(
        store: Arc<dyn Store>,
        policy: Policy,
        policy_path: PathBuf,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        budget_bytes: usize,
    ) -> Gateway {
        metrics.policy_users.set(policy.users.len() as i64);
        let units = budget_bytes.div_ceil(1024).clamp(1, Semaphore::MAX_PERMITS);
        Gateway {
            store,
            policy: PolicyHandle::new(policy),
            policy_path,
            config,
            metrics,
            budget: Arc::new(Semaphore::new(units)),
            budget_bytes: units * 1024,
        }
    }

    /// The capture size limit from the configuration.
    pub fn max_capture_bytes(&self) -> usize {
        usize::try_from(self.config.limits.max_capture_bytes).unwrap_or(usize::MAX)
    }

    /// Reserve `bytes` of the global capture budget before buffering a
    /// message for capture: waits while other sessions hold it (backpressure,
    /// never unbounded memory). A request above the whole budget is capped at
    /// the whole budget.
    pub async fn reserve(&self, bytes: usize) -> BudgetPermit {
        let units = bytes.min(self.budget_bytes).div_ceil(1024) as u32;
        if units == 0 {
            return BudgetPermit { _permit: None };
        }
        let permit = self.budget.clone().acquire_many_owned(units).await.ok();
        BudgetPermit { _permit: permit }
    }

    /// Like [`reserve`](Self::reserve) but gives up at once when the budget is
    /// exhausted (for callers that answer "busy" instead of waiting).
    pub fn try_reserve(&self, bytes: usize) -> Option<BudgetPermit> {
        let units = bytes.min(self.budget_bytes).div_ceil(1024) as u32;
        if units == 0 {
            return Some(BudgetPermit { _permit: None });
        }
        self.budget
            .clone()
            .try_acquire_many_owned(units)
            .ok()
            .map(|p| BudgetPermit { _permit: Some(p) })
    }

    /// Capture one message off the I/O task (parsing and the durable store
    /// write are blocking work). Counts outcomes; errors are returned for the
    /// caller to log with its session context (never with the message body).
    pub async fn capture(&self, job: CaptureJob, now: i64) -> Result<IngestOutcome, IngestError> {
        let store = self.store.clone();
        let policy = self.policy.current();
        let max = self.max_capture_bytes();
        let protocol = job.protocol;
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let req = IngestRequest {
                owner: &job.owner,
                direction: job.direction,
                envelope_recipients: &job.envelope_recipients,
                now,
                max_capture_bytes: max,
                durability: Durability::Wait,
            };
            ingest::ingest(store.as_ref(), &policy, &job.raw, &req)
        })
        .await
        .unwrap_or_else(|e| Err(IngestError::Panicked(e.to_string())));
        self.metrics
            .capture_seconds
            .with_label_values(&[protocol])
            .observe(started.elapsed().as_secs_f64());
        self.count(protocol, &result);
        result
    }

    /// Like [`capture`](Self::capture), for an adapter that must keep the
    /// bytes when the capture fails (SMTP spools them): on error the raw
    /// message comes back with the error. `headers_only_size`: `raw` holds
    /// only the header block of a message of that many bytes
    /// ([`ingest::ingest_headers`]).
    pub async fn capture_or_return(
        &self,
        job: CaptureJob,
        headers_only_size: Option<u64>,
        now: i64,
    ) -> Result<IngestOutcome, (IngestError, Vec<u8>)> {
        let store = self.store.clone();
        let policy = self.policy.current();
        let max = self.max_capture_bytes();
        let protocol = job.protocol;
        let started = Instant::now();
        let joined = tokio::task::spawn_blocking(move || {
            let req = IngestRequest {
                owner: &job.owner,
                direction: job.direction,
                envelope_recipients: &job.envelope_recipients,
                now,
                max_capture_bytes: max,
                durability: Durability::Wait,
            };
            let result = match headers_only_size {
                Some(size) => ingest::ingest_headers(store.as_ref(), &policy, &job.raw, size, &req),
                None => ingest::ingest(store.as_ref(), &policy, &job.raw, &req),
            };
            (result, job.raw)
        })
        .await;
        let (result, raw) = match joined {
            Ok((r, raw)) => (r, raw),
            Err(e) => (Err(IngestError::Panicked(e.to_string())), Vec::new()),
        };
        self.metrics
            .capture_seconds
            .with_label_values(&[protocol])
            .observe(started.elapsed().as_secs_f64());
        self.count(protocol, &result);
        result.map_err(|e| (e, raw))
    }

    /// Count one capture outcome in the metrics.
    pub fn count(&self, protocol: &str, result: &Result<IngestOutcome, IngestError>) {
        let m = &self.metrics;
        match result {
            Ok(IngestOutcome::Stored {
                stored,
                headers_only,
                ..
            }) => {
                m.captures
                    .with_label_values(&[protocol, stored.as_str()])
                    .inc();
                if *headers_only {
                    m.capture_headers_only.with_label_values(&[protocol]).inc();
                }
            }
            Ok(IngestOutcome::Skipped(reason)) => m
                .capture_skips
                .with_label_values(&[protocol, reason.as_str()])
                .inc(),
            Err(e) => m
                .capture_errors
                .with_label_values(&[protocol, e.kind()])
                .inc(),
        }
    }

    /// Re-read the policy file: a valid one is put in force, an invalid one
    /// is rejected and the running policy kept. Counted in the metrics.
    pub fn reload_policy(&self) -> Result<(), Vec<Diagnostic>> {
        self.metrics.policy_reloads.inc();
        match crate::config::load_policy(&self.policy_path) {
            Ok(p) => {
                self.metrics.policy_users.set(p.users.len() as i64);
                self.policy.replace(p);
                self.metrics.policy_stale.set(0);
                Ok(())
            }
            Err(d) => {
                self.metrics.policy_reload_failures.inc();
                self.metrics.policy_stale.set(1);
                Err(d)
            }
        }
    }
}
