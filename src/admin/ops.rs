//! Operations endpoints (no auth): `/healthz`, `/readyz`, `/metrics`, the
//! OpenAPI document; and the HTTP metrics middleware.
//!
//! HTTP metrics are labelled by route *template* (`/api/v1/messages/{id}`,
//! never a raw path), method and status class: bounded sets only. Requests
//! that match no route count under `route="unmatched"`.

use super::{AdminState, OPENAPI_JSON};
use crate::metrics::histogram_vec;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus::{HistogramVec, IntCounterVec, Opts, Registry};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

/// The API's own collectors, registered in the gateway's registry.
pub struct HttpMetrics {
    /// `mailshare_http_requests_total{route, method, status}`.
    pub requests: IntCounterVec,
    /// `mailshare_http_request_duration_seconds{route, method, status}`.
    pub seconds: HistogramVec,
}

impl HttpMetrics {
    pub(crate) fn register(r: &Registry) -> Result<HttpMetrics, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "mailshare_http_requests_total",
                "Admin API requests, by route template, method and status class.",
            ),
            &["route", "method", "status"],
        )?;
        r.register(Box::new(requests.clone()))?;
        // `histogram_vec` panics on a duplicate; the counter above already
        // failed cleanly in that case.
        let seconds = histogram_vec(
            r,
            "mailshare_http_request_duration_seconds",
            "Admin API request latency until the response head, by route template, method and status class.",
            &["route", "method", "status"],
        );
        Ok(HttpMetrics { requests, seconds })
    }
}

/// The matched route template, carried from the route layer to [`track`].
#[derive(Clone)]
struct RouteLabel(Arc<str>);

/// Route layer: copy the matched template onto the response for [`track`].
pub async fn mark_route(req: Request, next: Next) -> Response {
    let label = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| RouteLabel(Arc::from(m.as_str())));
    let mut resp = next.run(req).await;
    if let Some(l) = label {
        resp.extensions_mut().insert(l);
    }
    resp
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Outer layer: count and time every request.
pub async fn track(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let started = Instant::now();
    let mut resp = next.run(req).await;
    // Responses carry mail data for one viewer: never cached by anyone
    // else, never sniffed into another type.
    let h = resp.headers_mut();
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("private, no-store"));
    h.entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    let route = resp.extensions().get::<RouteLabel>().cloned();
    let route = route.as_ref().map_or("unmatched", |r| &r.0);
    let class = status_class(resp.status());
    let m = state.http();
    m.requests.with_label_values(&[route, method, class]).inc();
    m.seconds
        .with_label_values(&[route, method, class])
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// Liveness: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the store answers and a policy is in force. (Upstream checks
/// join when the SMTP and IMAP adapters do.)
pub async fn readyz(State(state): State<AdminState>) -> Response {
    let store = state
        .blocking(|s| Ok(s.stats().is_ok()))
        .await
        .unwrap_or(false);
    let policy = state.gateway().policy.current();
    let stale = state.gateway().metrics.policy_stale.get() != 0;
    let ready = store;
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "store": if store { "ok" } else { "error" },
        "policy": if stale { "stale" } else { "ok" },
        "users": policy.users.len(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text format; store gauges are refreshed on each scrape.
pub async fn metrics(State(state): State<AdminState>) -> Response {
    match state.blocking(|s| s.stats().map_err(Into::into)).await {
        Ok(stats) => state.gateway().metrics.observe_store(&stats),
        Err(e) => tracing::warn!(code = e.code(), "store stats unavailable for /metrics"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.gateway().metrics.render(),
    )
        .into_response()
}

/// The OpenAPI document.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}
