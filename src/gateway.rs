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
use prometheus::IntGauge;
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

/// The budget is counted in units of this many bytes.
const BUDGET_UNIT: usize = 1024;

/// Bytes of the capture budget held by one in-flight message; released on
/// drop (and taken off `mailshare_capture_budget_used_bytes`).
#[derive(Debug)]
pub struct BudgetPermit {
    permit: Option<OwnedSemaphorePermit>,
    used: Option<IntGauge>,
}

impl BudgetPermit {
    fn new(permit: OwnedSemaphorePermit, used: &IntGauge) -> BudgetPermit {
        used.add(permit_bytes(&permit));
        BudgetPermit {
            permit: Some(permit),
            used: Some(used.clone()),
        }
    }

    fn empty() -> BudgetPermit {
        BudgetPermit {
            permit: None,
            used: None,
        }
    }
}

fn permit_bytes(p: &OwnedSemaphorePermit) -> i64 {
    i64::try_from(p.num_permits() * BUDGET_UNIT).unwrap_or(i64::MAX)
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        if let (Some(p), Some(used)) = (&self.permit, &self.used) {
            used.sub(permit_bytes(p));
        }
    }
}

impl Gateway {
    /// The capture memory budget is `config.limits.capture_memory_budget_bytes`.
    pub fn new(
        store: Arc<dyn Store>,
        policy: Policy,
        policy_path: PathBuf,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Gateway {
        metrics.policy_users.set(policy.users.len() as i64);
        let budget_bytes =
            usize::try_from(config.limits.capture_memory_budget_bytes).unwrap_or(usize::MAX);
        let units = budget_bytes
            .div_ceil(BUDGET_UNIT)
            .clamp(1, Semaphore::MAX_PERMITS);
        metrics
            .capture_budget_bytes
            .set(i64::try_from(units * BUDGET_UNIT).unwrap_or(i64::MAX));
        Gateway {
            store,
            policy: PolicyHandle::new(policy),
            policy_path,
            config,
            metrics,
            budget: Arc::new(Semaphore::new(units)),
            budget_bytes: units * BUDGET_UNIT,
        }
    }

    /// The capture size limit from the configuration.
    pub fn max_capture_bytes(&self) -> usize {
        usize::try_from(self.config.limits.max_capture_bytes).unwrap_or(usize::MAX)
    }

    /// Reserve `bytes` of the global capture budget before buffering a
    /// message for capture: waits while other sessions hold it (backpressure,
    /// never unbounded memory; a wait is counted for `protocol` in
    /// `mailshare_capture_budget_exhausted_total{outcome="waited"}`). A
    /// request above the whole budget is capped at the whole budget.
    pub async fn reserve(&self, bytes: usize, protocol: &'static str) -> BudgetPermit {
        if let Some(p) = self.try_reserve(bytes) {
            return p;
        }
        self.metrics
            .capture_budget_exhausted
            .with_label_values(&[protocol, "waited"])
            .inc();
        match self
            .budget
            .clone()
            .acquire_many_owned(self.units(bytes))
            .await
        {
            Ok(p) => BudgetPermit::new(p, &self.metrics.capture_budget_used_bytes),
            // The semaphore is never closed.
            Err(_) => BudgetPermit::empty(),
        }
    }

    /// Like [`reserve`](Self::reserve) but gives up at once when the budget is
    /// exhausted (for callers that degrade instead of waiting: they call
    /// [`budget_denied`](Self::budget_denied) when they do).
    pub fn try_reserve(&self, bytes: usize) -> Option<BudgetPermit> {
        let units = self.units(bytes);
        if units == 0 {
            return Some(BudgetPermit::empty());
        }
        self.budget
            .clone()
            .try_acquire_many_owned(units)
            .ok()
            .map(|p| BudgetPermit::new(p, &self.metrics.capture_budget_used_bytes))
    }

    /// Count a capture that went without (all of) its content because the
    /// budget was exhausted.
    pub fn budget_denied(&self, protocol: &'static str) {
        self.metrics
            .capture_budget_exhausted
            .with_label_values(&[protocol, "denied"])
            .inc();
    }

    /// Budget units for a request of `bytes` (capped at the whole budget).
    fn units(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.min(self.budget_bytes).div_ceil(BUDGET_UNIT)).unwrap_or(u32::MAX)
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
        match self.capture_gated(job, headers_only_size, now, None).await {
            Ok(Some(o)) => Ok(o),
            Ok(None) => Err((
                IngestError::Panicked("a capture without a verdict was refused".into()),
                Vec::new(),
            )),
            Err(e) => Err(e),
        }
    }

    /// Like [`capture_or_return`](Self::capture_or_return) for a message
    /// whose acceptance is not known yet ([`ingest::ingest_when`]): it is
    /// parsed and its blob files written now; `accepted` then says whether
    /// to store it (a dropped sender, or no word within `wait`, says no).
    /// `Ok(None)`: not accepted, nothing stored. Holds a blocking thread
    /// until the verdict comes.
    pub async fn capture_when(
        &self,
        job: CaptureJob,
        headers_only_size: Option<u64>,
        now: i64,
        accepted: std::sync::mpsc::Receiver<bool>,
        wait: std::time::Duration,
    ) -> Result<Option<IngestOutcome>, (IngestError, Vec<u8>)> {
        self.capture_gated(job, headers_only_size, now, Some((accepted, wait)))
            .await
    }

    async fn capture_gated(
        &self,
        job: CaptureJob,
        headers_only_size: Option<u64>,
        now: i64,
        accepted: Option<(std::sync::mpsc::Receiver<bool>, std::time::Duration)>,
    ) -> Result<Option<IngestOutcome>, (IngestError, Vec<u8>)> {
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
            // The wait for the verdict is not the capture's time.
            let mut waited = std::time::Duration::ZERO;
            let result = match accepted {
                Some((rx, wait)) => {
                    let mut verdict = || {
                        let t = Instant::now();
                        let yes = rx.recv_timeout(wait) == Ok(true);
                        waited += t.elapsed();
                        yes
                    };
                    ingest::ingest_when(
                        store.as_ref(),
                        &policy,
                        &job.raw,
                        headers_only_size,
                        &req,
                        &mut verdict,
                    )
                }
                None => match headers_only_size {
                    Some(size) => {
                        ingest::ingest_headers(store.as_ref(), &policy, &job.raw, size, &req)
                    }
                    None => ingest::ingest(store.as_ref(), &policy, &job.raw, &req),
                }
                .map(Some),
            };
            (result, job.raw, waited)
        })
        .await;
        let (result, raw, waited) = match joined {
            Ok(r) => r,
            Err(e) => (
                Err(IngestError::Panicked(e.to_string())),
                Vec::new(),
                std::time::Duration::ZERO,
            ),
        };
        let result = match result {
            // Not accepted: no capture to count or time.
            Ok(None) => return Ok(None),
            Ok(Some(o)) => Ok(o),
            Err(e) => Err(e),
        };
        self.metrics
            .capture_seconds
            .with_label_values(&[protocol])
            .observe(started.elapsed().saturating_sub(waited).as_secs_f64());
        self.count(protocol, &result);
        result.map(Some).map_err(|e| (e, raw))
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
        match crate::config::reload_policy(&self.config, &self.policy_path) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::store::{SledStore, StoreOptions};
    use std::time::Duration;

    fn gateway(budget: u64) -> (Gateway, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("store"), StoreOptions::default()).unwrap();
        let policy_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/policy.toml");
        let policy = crate::config::load_policy(&policy_path).unwrap();
        let config = Config {
            limits: Limits {
                capture_memory_budget_bytes: budget,
                ..Limits::default()
            },
            ..Config::default()
        };
        let g = Gateway::new(
            Arc::new(store),
            policy,
            policy_path,
            Arc::new(config),
            Arc::new(Metrics::new()),
        );
        (g, dir)
    }

    fn exhausted(g: &Gateway, protocol: &str, outcome: &str) -> u64 {
        g.metrics
            .capture_budget_exhausted
            .with_label_values(&[protocol, outcome])
            .get()
    }

    #[tokio::test]
    async fn the_budget_comes_from_the_config_and_its_use_is_measured() {
        let (g, _dir) = gateway(8192);
        let m = g.metrics.clone();
        assert_eq!(m.capture_budget_bytes.get(), 8192);
        assert_eq!(m.capture_budget_used_bytes.get(), 0);
        let a = g.try_reserve(6000).expect("fits");
        assert_eq!(m.capture_budget_used_bytes.get(), 6144, "whole KiB units");
        assert!(g.try_reserve(4096).is_none(), "only 2 KiB left");
        g.budget_denied("smtp");
        assert_eq!(exhausted(&g, "smtp", "denied"), 1);

        // A waiting reservation is counted once, and completes when the
        // budget is released.
        let g = Arc::new(g);
        let waiter = {
            let g = g.clone();
            tokio::spawn(async move { g.reserve(4096, "imap").await })
        };
        let mut counted = false;
        for _ in 0..500 {
            if exhausted(&g, "imap", "waited") == 1 {
                counted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(counted, "the wait is counted");
        assert!(!waiter.is_finished());
        drop(a);
        let b = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter gets the budget")
            .unwrap();
        assert_eq!(m.capture_budget_used_bytes.get(), 4096);
        assert_eq!(exhausted(&g, "imap", "waited"), 1);
        drop(b);
        assert_eq!(m.capture_budget_used_bytes.get(), 0);

        // No wait, no count; a request above the whole budget gets all of it.
        let all = g.reserve(1 << 30, "smtp").await;
        assert_eq!(m.capture_budget_used_bytes.get(), 8192);
        assert_eq!(exhausted(&g, "smtp", "waited"), 0);
        drop(all);
        assert_eq!(m.capture_budget_used_bytes.get(), 0);
    }
}
