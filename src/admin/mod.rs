//! The admin HTTP API of DESIGN §6: contact timelines, messages, threads,
//! search, sharing actions and access requests, plus `/healthz`, `/readyz`,
//! `/metrics` and the OpenAPI document.
//!
//! Access control is the main feature. Every record served passes
//! [`engine::visible`](crate::engine::visible) for the viewer of the request
//! under one policy snapshot, and its JSON is built for the level that gives
//! (fields above it are absent). A message the viewer may not see is a 404
//! exactly like one that does not exist, on every path (message, thread,
//! attachment, share, access request); lists skip hidden records without
//! revealing them in counts or cursors (see [`page`]); search matches only
//! text the viewer sees (see [`search`]). Who may read and act is decided in
//! [`auth`]; errors are one JSON shape ([`error`]).
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`AdminState`], the route table, [`router`], [`serve`] |
//! | `auth.rs` | bearer token → [`auth::Caller`]; `?as=` rules |
//! | `error.rs` | [`error::ApiError`] and rejection-mapping extractors |
//! | `render.rs` | JSON per level, dates, safe attachment headers |
//! | `page.rs` | limits, cursors, filling pages past hidden records |
//! | `search.rs` | matching `q` within what the viewer sees |
//! | `contacts.rs` | contacts list/get/delete, timelines |
//! | `messages.rs` | message, attachment, thread, share, search |
//! | `access.rs` | access requests |
//! | `ops.rs` | health, readiness, metrics (HTTP metrics middleware), OpenAPI |
//!
//! Store work is blocking: each handler runs its store calls in one
//! `spawn_blocking` closure ([`AdminState::blocking`]).

pub mod access;
pub mod auth;
pub mod contacts;
pub mod error;
pub mod messages;
pub mod ops;
pub mod page;
pub mod render;
pub mod search;

use crate::gateway::Gateway;
use crate::shutdown::Shutdown;
use crate::store::Store;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, MethodRouter};
use axum::{middleware, Router};
use error::ApiError;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Largest request body accepted (bodies are small JSON objects); larger → 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The OpenAPI 3.1 document of this API (`docs/openapi.json`).
pub const OPENAPI_JSON: &str = include_str!("../../docs/openapi.json");

/// What every handler shares: the gateway (store, policy, config, metrics)
/// and this API's HTTP metrics. Cheap to clone.
#[derive(Clone)]
pub struct AdminState {
    inner: Arc<StateInner>,
}

struct StateInner {
    gateway: Arc<Gateway>,
    http: ops::HttpMetrics,
}

impl AdminState {
    /// Register the API's metrics in the gateway's registry.
    ///
    /// # Errors
    /// When they are already registered there (one `AdminState` per
    /// gateway).
    pub fn new(gateway: Arc<Gateway>) -> Result<AdminState, prometheus::Error> {
        let http = ops::HttpMetrics::register(&gateway.metrics.registry)?;
        Ok(AdminState {
            inner: Arc::new(StateInner { gateway, http }),
        })
    }

    pub fn gateway(&self) -> &Gateway {
        &self.inner.gateway
    }

    pub(crate) fn http(&self) -> &ops::HttpMetrics {
        &self.inner.http
    }

    /// The admin token hashes of the configuration (none without `[admin]`).
    pub(crate) fn admin_tokens(&self) -> &[[u8; 32]] {
        self.inner
            .gateway
            .config
            .admin
            .as_ref()
            .map_or(&[][..], |a| &a.admin_tokens_sha256)
    }

    /// Run blocking store work off the async workers.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, ApiError> + Send + 'static,
    {
        let store = self.inner.gateway.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .unwrap_or_else(|e| Err(ApiError::internal(format_args!("handler task: {e}"))))
    }
}

/// Every route: method, path template, handler. The router is built from
/// this table, and a test holds it equal to `docs/openapi.json`.
fn routes() -> Vec<(&'static str, &'static str, MethodRouter<AdminState>)> {
    vec![
        ("GET", "/healthz", get(ops::healthz)),
        ("GET", "/readyz", get(ops::readyz)),
        ("GET", "/metrics", get(ops::metrics)),
        ("GET", "/api/v1/openapi.json", get(ops::openapi)),
        ("GET", "/api/v1/contacts", get(contacts::list)),
        ("GET", "/api/v1/contacts/{id}", get(contacts::get_one)),
        (
            "DELETE",
            "/api/v1/contacts/{id}",
            delete(contacts::delete_one),
        ),
        (
            "GET",
            "/api/v1/contacts/{id}/timeline",
            get(contacts::timeline),
        ),
        ("GET", "/api/v1/messages/{id}", get(messages::get_one)),
        (
            "GET",
            "/api/v1/messages/{id}/attachments/{n}",
            get(messages::attachment),
        ),
        ("POST", "/api/v1/messages/{id}/share", post(messages::share)),
        (
            "POST",
            "/api/v1/messages/{id}/access-requests",
            post(access::create),
        ),
        ("GET", "/api/v1/threads/{id}", get(messages::thread)),
        ("GET", "/api/v1/search", get(messages::search)),
        ("GET", "/api/v1/access-requests", get(access::list)),
        (
            "POST",
            "/api/v1/access-requests/{id}/approve",
            post(access::approve),
        ),
        (
            "POST",
            "/api/v1/access-requests/{id}/deny",
            post(access::deny),
        ),
    ]
}

/// `(method, path template)` of every route, in table order.
pub fn route_table() -> Vec<(&'static str, &'static str)> {
    routes().into_iter().map(|(m, p, _)| (m, p)).collect()
}

/// The API as an axum router (tests drive it in-process or over a socket).
pub fn router(state: AdminState) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in routes() {
        router = router.route(path, handler);
    }
    router
        .route_layer(middleware::from_fn(ops::mark_route))
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), ops::track))
        .with_state(state)
}

/// Serve the API on `listener` until `shutdown` fires, then finish the
/// requests in flight (the caller bounds that with its grace deadline).
///
/// # Errors
/// An I/O error of the accept loop.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.fired().await })
        .await
}
